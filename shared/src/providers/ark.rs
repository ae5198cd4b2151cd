//! BytePlus ModelArk image generation (seedream-4.0).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self, Splice, malformed, parse_json, shorten, status_error};
use super::{ImageProvider, ImageRequest, PROVIDER_TIMEOUT, ProviderError, decode_image_base64};
use crate::config::{ConfigError, Secret};
use crate::domain::catalog::AspectRatio;
use crate::outbound::LazyClient;

/// The ModelArk model id of Seedream 4.0.
pub const SEEDREAM_MODEL: &str = "seedream-4-0-250828";

/// The ModelArk API (`ark.ap-southeast.bytepluses.com` or a compatible base URL).
#[derive(Debug, Clone)]
pub struct ArkProvider {
    base_url: String,
    api_key: Secret,
    client: LazyClient,
    timeout: Duration,
}

impl ArkProvider {
    /// A provider calling `{base_url}/api/v3/images/generations`.
    pub fn new(base_url: &str, api_key: Secret) -> Result<Self, ConfigError> {
        let (base_url, _) = http::base_url(base_url, "ARK_BASE_URL")?;
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

    /// The pixel size Seedream is asked for: about four megapixels in each ratio it offers.
    pub fn size_for(ratio: AspectRatio) -> Option<&'static str> {
        Some(match (ratio.width, ratio.height) {
            (1, 1) => "2048x2048",
            (4, 3) => "2304x1728",
            (3, 4) => "1728x2304",
            (16, 9) => "2560x1440",
            (9, 16) => "1440x2560",
            (3, 2) => "2496x1664",
            (2, 3) => "1664x2496",
            (21, 9) => "3024x1296",
            _ => return None,
        })
    }

    async fn call(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        if request.model != "seedream-4.0" {
            return Err(ProviderError::Permanent {
                code: "invalid_input",
                message: format!("model {} is not served by ARK", request.model),
            });
        }
        let size =
            Self::size_for(request.aspect_ratio).ok_or_else(|| ProviderError::Permanent {
                code: "invalid_input",
                message: format!(
                    "Seedream does not offer aspect ratio {}",
                    request.aspect_ratio
                ),
            })?;
        let mut body = json!({
            "model": SEEDREAM_MODEL,
            "prompt": request.prompt,
            "size": size,
            "response_format": "b64_json",
            "watermark": false,
            "sequential_image_generation": "disabled",
        });
        // The job's one encoding of each reference, spliced in as the body is sent.
        let mut splice = Splice::new();
        let mut images: Vec<Value> = request
            .references
            .iter()
            .map(|r| splice.hole(vec![r.data_url_prefix(), r.base64()]).into())
            .collect();
        // One reference is sent as a string, several as an array.
        match images.len() {
            0 => {}
            1 => body["image"] = images.swap_remove(0),
            _ => body["image"] = images.into(),
        }
        let (status, answer) = http::send(
            self.client
                .get()?
                .post(format!("{}/api/v3/images/generations", self.base_url))
                .bearer_auth(self.api_key.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(splice.body(&body)),
        )
        .await?;
        // Refusals come as 400 with an error object; read it before the status.
        if let Ok(Answer {
            error: Some(error), ..
        }) = serde_json::from_slice::<Answer>(&answer)
        {
            return Err(error_of(status, &error));
        }
        if !status.is_success() {
            return Err(status_error(status, None));
        }
        let answer: Answer = parse_json(&answer)?;
        let mut refusal = None;
        for item in &answer.data {
            if let Some(data) = &item.b64_json {
                return decode_image_base64(data)
                    .map_err(|e| malformed(format!("ARK image data: {e}")));
            }
            if let Some(error) = &item.error {
                refusal.get_or_insert_with(|| error_of(status, error));
            }
        }
        Err(refusal.unwrap_or_else(|| ProviderError::Permanent {
            code: "no_image",
            message: "ARK returned no image".into(),
        }))
    }
}

#[async_trait::async_trait]
impl ImageProvider for ArkProvider {
    fn name(&self) -> &'static str {
        "ark"
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        http::within(self.timeout, self.call(request)).await
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    data: Vec<Item>,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct Item {
    b64_json: Option<String>,
    /// Set instead of an image when one image of a batch failed.
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

fn error_of(status: reqwest::StatusCode, error: &ApiError) -> ProviderError {
    // OutputImageSensitiveContentDetected, InputTextSensitiveContentDetected,
    // InputImageRiskDetected, ...
    if error.code.contains("Sensitive") || error.code.contains("Risk") {
        return ProviderError::Permanent {
            code: "content_refused",
            message: format!("ARK refused the request ({})", error.code),
        };
    }
    let detail = shorten(&format!("{}: {}", error.code, error.message));
    if status.is_success() {
        // An error object in a 200 answer: the request was understood but not served.
        return ProviderError::Permanent {
            code: "no_image",
            message: format!("ARK returned an error: {detail}"),
        };
    }
    status_error(status, Some(&detail))
}
