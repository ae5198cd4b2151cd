//! Google Gemini `generateContent` with image output (nano-banana, nano-banana-pro).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::http::{self, Splice, error_detail, malformed, parse_json, status_error};
use super::{ImageProvider, ImageRequest, PROVIDER_TIMEOUT, ProviderError, decode_image_base64};
use crate::config::{ConfigError, Secret};
use crate::outbound::LazyClient;

/// Finish and block reasons that mean the model refused on policy grounds.
const REFUSALS: &[&str] = &[
    "SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
];

/// The Gemini API (`generativelanguage.googleapis.com` or a compatible base URL).
#[derive(Debug, Clone)]
pub struct GeminiProvider {
    base_url: String,
    api_key: Secret,
    client: LazyClient,
    timeout: Duration,
}

impl GeminiProvider {
    /// A provider calling `{base_url}/v1beta/models/{model}:generateContent`.
    pub fn new(base_url: &str, api_key: Secret) -> Result<Self, ConfigError> {
        let (base_url, _) = http::base_url(base_url, "GEMINI_BASE_URL")?;
        Ok(Self {
            base_url,
            api_key,
            client: LazyClient::new(PROVIDER_TIMEOUT),
            timeout: PROVIDER_TIMEOUT,
        })
    }

    /// Overrides the time budget of one call (default [`PROVIDER_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The Gemini model serving one of our model ids.
    pub fn upstream_model(model: &str) -> Option<&'static str> {
        match model {
            "nano-banana" => Some("gemini-2.5-flash-image"),
            "nano-banana-pro" => Some("gemini-3-pro-image-preview"),
            _ => None,
        }
    }

    async fn call(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        let model =
            Self::upstream_model(request.model).ok_or_else(|| ProviderError::Permanent {
                code: "invalid_input",
                message: format!("model {} is not served by Gemini", request.model),
            })?;
        // The job's one encoding of each reference, spliced in as the body is sent.
        let mut splice = Splice::new();
        let mut parts = vec![json!({ "text": request.prompt })];
        parts.extend(request.references.iter().map(|reference| {
            json!({ "inline_data": {
                "mime_type": reference.content_type,
                "data": splice.hole(vec![reference.base64()]),
            }})
        }));
        let body = json!({
            "contents": [{ "role": "user", "parts": parts }],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": { "aspectRatio": request.aspect_ratio.to_string() },
            },
        });
        let url = format!("{}/v1beta/models/{model}:generateContent", self.base_url);
        let (status, answer) = http::send(
            self.client
                .get()?
                .post(url)
                .header("x-goog-api-key", self.api_key.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(splice.body(&body)),
        )
        .await?;
        if !status.is_success() {
            return Err(status_error(status, error_detail(&answer).as_deref()));
        }
        image_of(parse_json(&answer)?)
    }
}

#[async_trait::async_trait]
impl ImageProvider for GeminiProvider {
    fn name(&self) -> &'static str {
        "gemini"
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        http::within(self.timeout, self.call(request)).await
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(alias = "prompt_feedback")]
    prompt_feedback: Option<PromptFeedback>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(alias = "block_reason")]
    block_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<Content>,
    #[serde(alias = "finish_reason")]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(alias = "inline_data")]
    inline_data: Option<Blob>,
    /// Thinking models may return draft images marked as thoughts: not the result.
    #[serde(default)]
    thought: bool,
}

#[derive(Debug, Deserialize)]
struct Blob {
    data: String,
}

fn image_of(answer: Answer) -> Result<Vec<u8>, ProviderError> {
    let refused = |reason: &str| ProviderError::Permanent {
        code: "content_refused",
        message: format!("Gemini refused the request ({reason})"),
    };
    if let Some(reason) = answer.prompt_feedback.and_then(|f| f.block_reason) {
        return Err(refused(&reason));
    }
    let image = answer
        .candidates
        .iter()
        .filter_map(|c| c.content.as_ref())
        .flat_map(|c| &c.parts)
        .filter(|part| !part.thought)
        .find_map(|part| part.inline_data.as_ref());
    if let Some(blob) = image {
        return decode_image_base64(&blob.data)
            .map_err(|e| malformed(format!("Gemini image data: {e}")));
    }
    let reasons: Vec<&str> = answer
        .candidates
        .iter()
        .filter_map(|c| c.finish_reason.as_deref())
        .collect();
    if let Some(reason) = reasons.iter().find(|r| REFUSALS.contains(r)) {
        return Err(refused(reason));
    }
    Err(ProviderError::Permanent {
        code: "no_image",
        message: match reasons.first() {
            Some(reason) => format!("Gemini returned no image (finish reason {reason})"),
            None => "Gemini returned no image".into(),
        },
    })
}
