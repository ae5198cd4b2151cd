//! Generations: validated requests, the status machine, and the view the API returns.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::catalog::{self, AspectRatio, Model};
use super::{Credits, GenerationId, UploadId};
use crate::hooks::WebhookConfig;
use crate::http::FieldError;

/// Longest prompt, in characters after trimming.
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Images per generation.
pub const MAX_IMAGES: u32 = 4;

/// A non-empty prompt of at most 4,000 characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prompt(String);

impl Prompt {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let trimmed = text.trim();
        match trimmed.chars().count() {
            0 => Err("must not be empty"),
            n if n > MAX_PROMPT_CHARS => Err("must be at most 4000 characters"),
            _ => Ok(Self(trimmed.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Prompt {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Prompt> for String {
    fn from(value: Prompt) -> Self {
        value.0
    }
}

/// A reference image as a client names it: one of their uploads, or one image of one of
/// their succeeded generations (to edit a result again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferenceImage {
    Upload(UploadId),
    Result(GenerationId, u32),
}

impl ReferenceImage {
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(upload) = UploadId::parse(text) {
            return Some(Self::Upload(upload));
        }
        let (generation, index) = text.split_once('/')?;
        let index: u32 = index.parse().ok().filter(|i| *i < MAX_IMAGES)?;
        Some(Self::Result(GenerationId::parse(generation).ok()?, index))
    }
}

impl fmt::Display for ReferenceImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upload(id) => write!(f, "{id}"),
            Self::Result(id, index) => write!(f, "{id}/{index}"),
        }
    }
}

/// The body of `POST /v1/generations`, as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateGeneration {
    pub model: String,
    pub prompt: String,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    #[serde(default)]
    pub reference_images: Vec<String>,
    /// Where to send this generation's events (checked apart: it needs name resolution).
    #[serde(default)]
    pub webhook: Option<crate::hooks::WebhookRequest>,
}

/// A generation request whose every field is valid for its model.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub model: &'static Model,
    pub prompt: Prompt,
    pub n: u32,
    pub aspect_ratio: AspectRatio,
    pub reference_images: Vec<ReferenceImage>,
    /// Set by the caller once the body's `webhook` passed its (asynchronous) checks.
    pub webhook: Option<WebhookConfig>,
}

impl GenerationRequest {
    /// Validates every field, reporting all invalid ones at once.
    pub fn parse(body: &CreateGeneration) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let model = catalog::model(&body.model);
        if model.is_none() {
            errors.push(FieldError::new("model", "unknown model"));
        }
        let prompt = Prompt::parse(&body.prompt)
            .map_err(|m| errors.push(FieldError::new("prompt", m)))
            .ok();
        let n = body.n.unwrap_or(1);
        if !(1..=i64::from(MAX_IMAGES)).contains(&n) {
            errors.push(FieldError::new("n", "must be between 1 and 4"));
        }
        let ratio_text = body.aspect_ratio.as_deref().unwrap_or("1:1");
        let aspect_ratio = AspectRatio::parse(ratio_text);
        match (model, aspect_ratio) {
            (_, None) => errors.push(FieldError::new("aspect_ratio", "must look like 16:9")),
            (Some(m), Some(r)) if !m.accepts_aspect_ratio(r) => errors.push(FieldError::new(
                "aspect_ratio",
                format!("{} does not offer {r}", m.id),
            )),
            _ => {}
        }
        let mut references = Vec::new();
        for (i, text) in body.reference_images.iter().enumerate() {
            match ReferenceImage::parse(text) {
                Some(r) if references.contains(&r) => errors.push(FieldError::new(
                    format!("reference_images[{i}]"),
                    "is listed twice",
                )),
                Some(r) => references.push(r),
                None => errors.push(FieldError::new(
                    format!("reference_images[{i}]"),
                    "must be an upload id (upl_...) or gen_.../<index>",
                )),
            }
        }
        if let Some(m) = model
            && body.reference_images.len() > usize::from(m.max_reference_images)
        {
            errors.push(FieldError::new(
                "reference_images",
                format!(
                    "{} accepts at most {} reference images",
                    m.id, m.max_reference_images
                ),
            ));
        }
        match (model, prompt, aspect_ratio, errors.is_empty()) {
            (Some(model), Some(prompt), Some(aspect_ratio), true) => Ok(Self {
                model,
                prompt,
                n: n as u32,
                aspect_ratio,
                reference_images: references,
                webhook: None,
            }),
            _ => Err(errors),
        }
    }

    /// `credits_per_image × n`.
    pub fn cost(&self) -> Credits {
        self.model
            .credits_per_image()
            .times(self.n)
            .expect("at most 4 images of at most 8 credits")
    }

    /// A stable digest of what was asked, to tell an idempotent replay from a reuse of
    /// its key with another body.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let refs: Vec<String> = self
            .reference_images
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut canonical = serde_json::json!([
            self.model.id,
            self.prompt.as_str(),
            self.n,
            self.aspect_ratio.to_string(),
            refs
        ]);
        // Only with a webhook, so that the fingerprints of requests without one stay as
        // they were (idempotency records live 24 hours across a deployment).
        if let (Some(webhook), Some(list)) = (&self.webhook, canonical.as_array_mut()) {
            list.push(serde_json::json!(webhook));
        }
        hex(&Sha256::digest(canonical.to_string().as_bytes()))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a generation is in its life. `queued` and `running` are open; the others final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Stopped at the owner's request, with the images made before it stopped.
    Canceled,
}

impl Status {
    /// The statuses a generation ends in.
    pub const FINAL: [Self; 3] = [Self::Succeeded, Self::Failed, Self::Canceled];

    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

/// One stored result image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    pub index: u32,
    /// The S3 key; never shown to clients (they get a presigned URL).
    pub key: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// The host that made it (`bfl`, `replicate`, ...); absent on images stored before
    /// hosts were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// Why a generation failed, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationError {
    pub code: String,
    pub message: String,
}

/// A generation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub id: GenerationId,
    pub user_id: super::UserId,
    pub status: Status,
    pub model: String,
    pub prompt: String,
    pub n: u32,
    pub aspect_ratio: String,
    pub reference_images: Vec<String>,
    /// The S3 keys of the reference images, resolved when the request was accepted.
    pub reference_keys: Vec<String>,
    pub cost: i64,
    pub images: Vec<StoredImage>,
    pub error: Option<GenerationError>,
    pub refunded_credits: i64,
    pub attempt: u32,
    /// The owner asked a running generation to stop: no further image is started.
    pub cancel_requested: bool,
    /// Where its events go, if its creator asked (never shown in the API view).
    pub webhook: Option<WebhookConfig>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
}

/// One image in an API answer.
#[derive(Debug, Serialize)]
pub struct ImageView {
    pub index: u32,
    pub url: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// The host that made the image (failover may move an image to another host of the
    /// same model); `null` for images stored before hosts were recorded.
    pub provider: Option<String>,
}

/// The Generation object of API.md.
#[derive(Debug, Serialize)]
pub struct GenerationView {
    pub id: GenerationId,
    pub status: Status,
    pub model: String,
    pub prompt: String,
    pub n: u32,
    pub aspect_ratio: String,
    pub reference_images: Vec<String>,
    pub cost: i64,
    pub images: Vec<ImageView>,
    pub error: Option<GenerationError>,
    pub refunded_credits: i64,
    pub cancel_requested: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
}

impl Generation {
    /// The API view; `url_of` turns a stored key into a short-lived URL.
    pub fn view(self, url_of: impl Fn(&str) -> String) -> GenerationView {
        let mut images: Vec<ImageView> = self
            .images
            .iter()
            .map(|i| ImageView {
                index: i.index,
                url: url_of(&i.key),
                content_type: i.content_type.clone(),
                width: i.width,
                height: i.height,
                provider: i.provider.clone(),
            })
            .collect();
        images.sort_by_key(|i| i.index);
        GenerationView {
            id: self.id,
            status: self.status,
            model: self.model,
            prompt: self.prompt,
            n: self.n,
            aspect_ratio: self.aspect_ratio,
            reference_images: self.reference_images,
            cost: self.cost,
            images,
            error: self.error,
            refunded_credits: self.refunded_credits,
            cancel_requested: self.cancel_requested,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(model: &str, prompt: &str) -> CreateGeneration {
        CreateGeneration {
            model: model.into(),
            prompt: prompt.into(),
            n: None,
            aspect_ratio: None,
            reference_images: vec![],
            webhook: None,
        }
    }

    #[test]
    fn defaults_are_one_square_image_without_references() {
        let request = GenerationRequest::parse(&body("nano-banana", "  a cat  ")).unwrap();
        assert_eq!(request.n, 1);
        assert_eq!(request.aspect_ratio, AspectRatio::SQUARE);
        assert_eq!(request.prompt.as_str(), "a cat");
        assert_eq!(request.cost().get(), 2);
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let mut b = body("dall-e", "   ");
        b.n = Some(5);
        b.aspect_ratio = Some("wide".into());
        b.reference_images = vec!["https://example.com/cat.png".into()];
        let errors = GenerationRequest::parse(&b).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "model",
                "prompt",
                "n",
                "aspect_ratio",
                "reference_images[0]"
            ]
        );
    }

    #[test]
    fn a_prompt_of_4000_characters_is_accepted_and_4001_refused() {
        assert!(Prompt::parse(&"é".repeat(4000)).is_ok());
        assert!(Prompt::parse(&"é".repeat(4001)).is_err());
    }

    #[test]
    fn a_ratio_the_model_lacks_and_too_many_references_are_refused() {
        let mut b = body("sora-image", "x");
        b.aspect_ratio = Some("16:9".into());
        b.reference_images = (0..5).map(|_| UploadId::new().to_string()).collect();
        let errors = GenerationRequest::parse(&b).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["aspect_ratio", "reference_images"]);
    }

    #[test]
    fn references_name_uploads_or_result_images() {
        let upload = UploadId::new();
        let generation = GenerationId::new();
        assert_eq!(
            ReferenceImage::parse(&upload.to_string()),
            Some(ReferenceImage::Upload(upload))
        );
        assert_eq!(
            ReferenceImage::parse(&format!("{generation}/2")),
            Some(ReferenceImage::Result(generation, 2))
        );
        assert_eq!(ReferenceImage::parse(&format!("{generation}/9")), None);
        assert_eq!(ReferenceImage::parse("gen_x/0"), None);
    }

    #[test]
    fn the_fingerprint_ignores_surrounding_whitespace_but_not_content() {
        let a = GenerationRequest::parse(&body("nano-banana", "a cat")).unwrap();
        let b = GenerationRequest::parse(&body("nano-banana", " a cat ")).unwrap();
        let c = GenerationRequest::parse(&body("nano-banana", "a dog")).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }
}
