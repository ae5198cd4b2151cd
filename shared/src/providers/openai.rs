//! An OpenAI-compatible images API (sora-image): `images/generations` for text to image,
//! `images/edits` (multipart) when there are reference images.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::json;

use super::http::{
    self, AllowedHosts, DEFAULT_MAX_DOWNLOAD_BYTES, malformed, parse_json, shorten, status_error,
};
use super::{ImageProvider, ImageRequest, PROVIDER_TIMEOUT, ProviderError, decode_image_base64};
use crate::config::{ConfigError, Secret};
use crate::domain::catalog::AspectRatio;
use crate::outbound::LazyClient;

/// The upstream model used unless configuration names another.
pub const DEFAULT_IMAGE_MODEL: &str = "gpt-image-1";

/// An OpenAI-compatible images endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    base_url: String,
    api_key: Secret,
    model: String,
    client: LazyClient,
    timeout: Duration,
    allowed: AllowedHosts,
}

impl OpenAiProvider {
    /// A provider calling `{base_url}/v1/images/...` with the upstream `model`. Result URLs
    /// (when the endpoint answers with `url` rather than `b64_json`) must be on the base
    /// URL's host unless [`Self::with_result_hosts`] says otherwise.
    pub fn new(base_url: &str, api_key: Secret, model: &str) -> Result<Self, ConfigError> {
        let (base_url, host) = http::base_url(base_url, "OPENAI_BASE_URL")?;
        let model = model.trim();
        if model.is_empty() {
            return Err(ConfigError("OPENAI_IMAGE_MODEL is empty".into()));
        }
        Ok(Self {
            base_url,
            api_key,
            model: model.to_owned(),
            client: LazyClient::new(PROVIDER_TIMEOUT),
            timeout: PROVIDER_TIMEOUT,
            allowed: AllowedHosts::new([host]),
        })
    }

    /// Overrides the time budget of one call (default [`PROVIDER_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Also accepts result URLs on these hosts (and their subdomains).
    pub fn with_result_hosts<S: Into<String>>(
        mut self,
        hosts: impl IntoIterator<Item = S>,
    ) -> Self {
        for host in hosts {
            self.allowed = self.allowed.with_host(host);
        }
        self
    }

    /// Lets result URLs use plain HTTP to a loopback address: local fakes only.
    pub fn with_loopback_http(mut self, allow: bool) -> Self {
        self.allowed = self.allowed.with_loopback_http(allow);
        self
    }

    /// The `size` asked for: gpt-image offers a square, a landscape and a portrait size.
    pub fn size_for(ratio: AspectRatio) -> Option<&'static str> {
        Some(match (ratio.width, ratio.height) {
            (1, 1) => "1024x1024",
            (3, 2) => "1536x1024",
            (2, 3) => "1024x1536",
            _ => return None,
        })
    }

    async fn call(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        let size =
            Self::size_for(request.aspect_ratio).ok_or_else(|| ProviderError::Permanent {
                code: "invalid_input",
                message: format!(
                    "the images endpoint does not offer aspect ratio {}",
                    request.aspect_ratio
                ),
            })?;
        let builder = if request.references.is_empty() {
            self.client
                .get()?
                .post(format!("{}/v1/images/generations", self.base_url))
                .json(&json!({
                    "model": self.model,
                    "prompt": request.prompt,
                    "n": 1,
                    "size": size,
                }))
        } else {
            let mut form = Form::new()
                .text("model", self.model.clone())
                .text("prompt", request.prompt.to_owned())
                .text("n", "1")
                .text("size", size);
            for (i, reference) in request.references.iter().enumerate() {
                let extension = reference
                    .content_type
                    .strip_prefix("image/")
                    .unwrap_or("png");
                // Decoded once per job from the shared encoding; each call streams it.
                let bytes = reference.bytes();
                let length = bytes.len() as u64;
                let part = Part::stream_with_length(bytes, length)
                    .file_name(format!("reference-{i}.{extension}"))
                    .mime_str(reference.content_type)
                    .map_err(|_| ProviderError::Permanent {
                        code: "invalid_input",
                        message: format!(
                            "reference image type {} is not a MIME type",
                            reference.content_type
                        ),
                    })?;
                form = form.part("image[]", part);
            }
            self.client
                .get()?
                .post(format!("{}/v1/images/edits", self.base_url))
                .multipart(form)
        };
        let (status, answer) = http::send(builder.bearer_auth(self.api_key.expose())).await?;
        if !status.is_success() {
            let error = serde_json::from_slice::<ErrorAnswer>(&answer)
                .ok()
                .map(|a| a.error);
            if let Some(error) = &error
                && is_refusal(error)
            {
                return Err(ProviderError::Permanent {
                    code: "content_refused",
                    message: format!(
                        "the images endpoint refused the request ({})",
                        error.code.as_deref().unwrap_or("safety system")
                    ),
                });
            }
            let detail = error.and_then(|e| e.message).map(|m| shorten(&m));
            return Err(status_error(status, detail.as_deref()));
        }
        let answer: Answer = parse_json(&answer)?;
        let Some(item) = answer.data.into_iter().next() else {
            return Err(ProviderError::Permanent {
                code: "no_image",
                message: "the images endpoint returned no image".into(),
            });
        };
        if let Some(data) = item.b64_json {
            return decode_image_base64(&data)
                .map_err(|e| malformed(format!("images endpoint data: {e}")));
        }
        if let Some(url) = item.url {
            let image = http::download(
                self.client.get()?,
                &url,
                &self.allowed,
                DEFAULT_MAX_DOWNLOAD_BYTES,
            )
            .await?;
            super::check_image(&image)
                .map_err(|e| malformed(format!("images endpoint result: {e}")))?;
            return Ok(image);
        }
        Err(malformed(
            "the images endpoint answered neither b64_json nor url",
        ))
    }
}

#[async_trait::async_trait]
impl ImageProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        http::within(self.timeout, self.call(request)).await
    }
}

fn is_refusal(error: &ApiError) -> bool {
    matches!(
        error.code.as_deref(),
        Some("content_policy_violation" | "moderation_blocked")
    ) || error
        .message
        .as_deref()
        // Some compatible endpoints send the refusal with no code.
        .is_some_and(|m| m.contains("safety system"))
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    data: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    b64_json: Option<String>,
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ApiError,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    /// A string for OpenAI; some compatible endpoints send a number.
    #[serde(default, deserialize_with = "string_or_number")]
    code: Option<String>,
    message: Option<String>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}
