//! The model catalog: the one place that says what each model costs and accepts.

use std::fmt;

use serde::Serialize;

use super::Credits;

/// What a model can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    #[serde(rename = "text-to-image")]
    TextToImage,
    #[serde(rename = "image-edit")]
    ImageEdit,
}

/// The upstream API family that serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    Gemini,
    Bfl,
    Ark,
    OpenAi,
    /// Replicate's predictions API: an aggregator hosting every model (a second host).
    Replicate,
    /// The built-in renderer: only where a deployment selects it explicitly.
    Local,
}

impl ProviderKind {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "gemini" => Self::Gemini,
            "bfl" => Self::Bfl,
            "ark" => Self::Ark,
            "openai" => Self::OpenAi,
            "replicate" => Self::Replicate,
            "local" => Self::Local,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::Bfl => "bfl",
            Self::Ark => "ark",
            Self::OpenAi => "openai",
            Self::Replicate => "replicate",
            Self::Local => "local",
        }
    }
}

/// A width:height ratio such as `16:9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AspectRatio {
    pub width: u8,
    pub height: u8,
}

impl AspectRatio {
    pub const SQUARE: Self = Self::of(1, 1);

    pub const fn of(width: u8, height: u8) -> Self {
        Self { width, height }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (w, h) = text.split_once(':')?;
        let (width, height) = (w.parse().ok()?, h.parse().ok()?);
        (width > 0 && height > 0).then_some(Self { width, height })
    }
}

impl fmt::Display for AspectRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.width, self.height)
    }
}

impl Serialize for AspectRatio {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One model as sold: price, modes, limits.
#[derive(Debug)]
pub struct Model {
    pub id: &'static str,
    pub name: &'static str,
    credits_per_image: u32,
    pub modes: &'static [Mode],
    pub max_reference_images: u8,
    pub aspect_ratios: &'static [AspectRatio],
    /// The provider family that serves it when none is configured otherwise.
    pub default_provider: ProviderKind,
}

impl Model {
    pub fn credits_per_image(&self) -> Credits {
        Credits::new(i64::from(self.credits_per_image)).expect("catalog prices are positive")
    }

    pub fn accepts_aspect_ratio(&self, ratio: AspectRatio) -> bool {
        self.aspect_ratios.contains(&ratio)
    }
}

const BOTH: &[Mode] = &[Mode::TextToImage, Mode::ImageEdit];

const GEMINI_RATIOS: &[AspectRatio] = &[
    AspectRatio::of(1, 1),
    AspectRatio::of(2, 3),
    AspectRatio::of(3, 2),
    AspectRatio::of(3, 4),
    AspectRatio::of(4, 3),
    AspectRatio::of(4, 5),
    AspectRatio::of(5, 4),
    AspectRatio::of(9, 16),
    AspectRatio::of(16, 9),
    AspectRatio::of(21, 9),
];

const SEEDREAM_RATIOS: &[AspectRatio] = &[
    AspectRatio::of(1, 1),
    AspectRatio::of(4, 3),
    AspectRatio::of(3, 4),
    AspectRatio::of(16, 9),
    AspectRatio::of(9, 16),
    AspectRatio::of(3, 2),
    AspectRatio::of(2, 3),
    AspectRatio::of(21, 9),
];

// gpt-image sizes: 1024x1024, 1536x1024, 1024x1536.
const SORA_RATIOS: &[AspectRatio] = &[
    AspectRatio::of(1, 1),
    AspectRatio::of(3, 2),
    AspectRatio::of(2, 3),
];

// FLUX Kontext accepts ratios between 3:7 and 7:3.
const KONTEXT_RATIOS: &[AspectRatio] = &[
    AspectRatio::of(1, 1),
    AspectRatio::of(4, 3),
    AspectRatio::of(3, 4),
    AspectRatio::of(16, 9),
    AspectRatio::of(9, 16),
    AspectRatio::of(3, 2),
    AspectRatio::of(2, 3),
    AspectRatio::of(21, 9),
    AspectRatio::of(9, 21),
];

/// Every model we sell, in display order.
pub static MODELS: &[Model] = &[
    Model {
        id: "nano-banana",
        name: "Nano Banana",
        credits_per_image: 2,
        modes: BOTH,
        max_reference_images: 3,
        aspect_ratios: GEMINI_RATIOS,
        default_provider: ProviderKind::Gemini,
    },
    Model {
        id: "nano-banana-pro",
        name: "Nano Banana Pro",
        credits_per_image: 4,
        modes: BOTH,
        max_reference_images: 6,
        aspect_ratios: GEMINI_RATIOS,
        default_provider: ProviderKind::Gemini,
    },
    Model {
        id: "seedream-4.0",
        name: "Seedream 4.0",
        credits_per_image: 5,
        modes: BOTH,
        max_reference_images: 10,
        aspect_ratios: SEEDREAM_RATIOS,
        default_provider: ProviderKind::Ark,
    },
    Model {
        id: "sora-image",
        name: "Sora Image",
        credits_per_image: 6,
        modes: BOTH,
        max_reference_images: 4,
        aspect_ratios: SORA_RATIOS,
        default_provider: ProviderKind::OpenAi,
    },
    Model {
        id: "flux-kontext-pro",
        name: "FLUX.1 Kontext [pro]",
        credits_per_image: 3,
        modes: BOTH,
        max_reference_images: 1,
        aspect_ratios: KONTEXT_RATIOS,
        default_provider: ProviderKind::Bfl,
    },
    Model {
        id: "flux-kontext-max",
        name: "FLUX.1 Kontext [max]",
        credits_per_image: 8,
        modes: BOTH,
        max_reference_images: 1,
        aspect_ratios: KONTEXT_RATIOS,
        default_provider: ProviderKind::Bfl,
    },
];

/// The model with this id, if we sell it.
pub fn model(id: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_prices_match_the_contract() {
        let prices: Vec<(&str, i64)> = MODELS
            .iter()
            .map(|m| (m.id, m.credits_per_image().get()))
            .collect();
        assert_eq!(
            prices,
            [
                ("nano-banana", 2),
                ("nano-banana-pro", 4),
                ("seedream-4.0", 5),
                ("sora-image", 6),
                ("flux-kontext-pro", 3),
                ("flux-kontext-max", 8),
            ]
        );
    }

    #[test]
    fn every_model_offers_the_default_square_ratio() {
        assert!(
            MODELS
                .iter()
                .all(|m| m.accepts_aspect_ratio(AspectRatio::SQUARE))
        );
        assert_eq!(AspectRatio::parse("16:9"), Some(AspectRatio::of(16, 9)));
        assert_eq!(AspectRatio::parse("0:9"), None);
        assert_eq!(AspectRatio::parse("16x9"), None);
    }
}
