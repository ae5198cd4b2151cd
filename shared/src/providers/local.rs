//! The built-in renderer: draws a real PNG from the prompt, with no keys and no network,
//! so that the whole service runs locally. Selected only explicitly by configuration.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, Rgb, RgbImage};
use sha2::{Digest, Sha256};

use super::{ImageProvider, ImageRequest, ProviderError};
use crate::domain::catalog::AspectRatio;

/// The long side of every rendered image, in pixels.
pub const LONG_SIDE: u32 = 512;

/// Reference images are decoded only up to this size (either side) and allocation.
const MAX_REFERENCE_SIDE: u32 = 8192;
const MAX_REFERENCE_ALLOC: u64 = 256 * 1024 * 1024;

/// Draws deterministic PNGs: the same prompt, index, ratio and reference always give the
/// same bytes; different prompts give different pictures.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalRenderer;

impl LocalRenderer {
    pub fn new() -> Self {
        Self
    }

    /// The size drawn for a ratio: [`LONG_SIDE`] on the long side, the other side following
    /// the ratio (rounded), so 16:9 is 512x288.
    pub fn dimensions(ratio: AspectRatio) -> (u32, u32) {
        let (w, h) = (
            u32::from(ratio.width.max(1)),
            u32::from(ratio.height.max(1)),
        );
        let short = |num: u32, den: u32| ((LONG_SIDE * num + den / 2) / den).max(1);
        if w >= h {
            (LONG_SIDE, short(h, w))
        } else {
            (short(w, h), LONG_SIDE)
        }
    }

    /// One PNG. `reference`, if given, tints the picture towards its average colour.
    pub fn render(
        prompt: &str,
        index: u32,
        ratio: AspectRatio,
        reference: Option<&[u8]>,
    ) -> Result<Vec<u8>, ProviderError> {
        let tint = reference.map(average_colour).transpose()?;
        let seed: [u8; 32] = Sha256::new()
            .chain_update(prompt.as_bytes())
            .chain_update([0])
            .chain_update(index.to_be_bytes())
            .chain_update([ratio.width, ratio.height])
            .finalize()
            .into();
        let (width, height) = Self::dimensions(ratio);
        let picture = draw(&seed, width, height, tint);
        let mut png = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(picture)
            .write_to(&mut png, ImageFormat::Png)
            .map_err(|e| ProviderError::Transient(format!("encoding the PNG failed: {e}")))?;
        Ok(png.into_inner())
    }
}

#[async_trait::async_trait]
impl ImageProvider for LocalRenderer {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        let prompt = request.prompt.to_owned();
        let (index, ratio) = (request.index, request.aspect_ratio);
        let reference = request.references.first().map(|r| r.bytes());
        // Decoding and encoding are CPU work: keep them off the async worker threads.
        tokio::task::spawn_blocking(move || {
            Self::render(&prompt, index, ratio, reference.as_deref())
        })
        .await
        .map_err(|e| ProviderError::Transient(format!("the renderer stopped: {e}")))?
    }
}

/// A diagonal gradient between two colours from the seed, crossed by rings around a point
/// from the seed and by stripes whose angle comes from the seed.
fn draw(seed: &[u8; 32], width: u32, height: u32, tint: Option<[u8; 3]>) -> RgbImage {
    let from = [seed[0], seed[1], seed[2]];
    let to = [seed[3], seed[4], seed[5]];
    let accent = [seed[6], seed[7], seed[8]];
    let cx = i64::from(u16::from_be_bytes([seed[9], seed[10]])) * i64::from(width) / 65_536;
    let cy = i64::from(u16::from_be_bytes([seed[11], seed[12]])) * i64::from(height) / 65_536;
    let ring = 12 + i64::from(seed[13] % 40);
    let (dx, dy) = (i64::from(seed[14] % 7) + 1, i64::from(seed[15] % 7) + 1);
    let stripe = 16 + i64::from(seed[16] % 48);
    let span = i64::from(width + height).max(1);
    RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (i64::from(x), i64::from(y));
        let t = (x + y) * 255 / span;
        let mut pixel = [0u8; 3];
        for c in 0..3 {
            pixel[c] = mix(from[c], to[c], t);
        }
        let distance_squared = (x - cx).pow(2) + (y - cy).pow(2);
        if isqrt(distance_squared) / ring % 2 == 0 {
            for c in 0..3 {
                pixel[c] = mix(pixel[c], accent[c], 96);
            }
        }
        if (x * dx + y * dy) / stripe % 3 == 0 {
            for channel in &mut pixel {
                *channel = mix(*channel, 255 - *channel, 48);
            }
        }
        if let Some(tint) = tint {
            for c in 0..3 {
                pixel[c] = mix(pixel[c], tint[c], 128);
            }
        }
        Rgb(pixel)
    })
}

/// `a` moved towards `b` by `t`/255.
fn mix(a: u8, b: u8, t: i64) -> u8 {
    let t = t.clamp(0, 255);
    ((i64::from(a) * (255 - t) + i64::from(b) * t) / 255) as u8
}

fn isqrt(n: i64) -> i64 {
    (n.max(0) as f64).sqrt() as i64
}

/// The average colour of an image, decoded within size limits.
fn average_colour(bytes: &[u8]) -> Result<[u8; 3], ProviderError> {
    let invalid = |why: String| ProviderError::Permanent {
        code: "invalid_input",
        message: format!("the reference image cannot be read: {why}"),
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_REFERENCE_SIDE);
    limits.max_image_height = Some(MAX_REFERENCE_SIDE);
    limits.max_alloc = Some(MAX_REFERENCE_ALLOC);
    reader.limits(limits);
    let picture = reader.decode().map_err(|e| invalid(e.to_string()))?;
    let small = picture.thumbnail(32, 32).to_rgb8();
    let count = u64::from(small.width()) * u64::from(small.height());
    let mut sums = [0u64; 3];
    for pixel in small.pixels() {
        for (sum, channel) in sums.iter_mut().zip(pixel.0) {
            *sum += u64::from(channel);
        }
    }
    Ok(sums.map(|sum| (sum / count.max(1)) as u8))
}
