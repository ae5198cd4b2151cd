//! Black Forest Labs FLUX.1 Kontext (flux-kontext-pro, flux-kontext-max): submit a task,
//! poll its `polling_url` until it is ready, then download the result at once (its signed
//! URL expires after ten minutes).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::http::{
    self, AllowedHosts, DEFAULT_MAX_DOWNLOAD_BYTES, Splice, error_detail, parse_json, status_error,
};
use super::{ImageProvider, ImageRequest, PROVIDER_TIMEOUT, ProviderError, check_image};
use crate::config::{ConfigError, Secret};
use crate::outbound::LazyClient;

/// BFL's own hosts: the API, its regional endpoints and the result delivery hosts are all
/// subdomains of these.
pub const BFL_HOSTS: &[&str] = &["bfl.ai", "bfl.ml"];

/// How long to wait between two polls by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The BFL API.
#[derive(Debug, Clone)]
pub struct BflProvider {
    base_url: String,
    api_key: Secret,
    client: LazyClient,
    timeout: Duration,
    poll_interval: Duration,
    allowed: AllowedHosts,
}

impl BflProvider {
    /// A provider submitting to `{base_url}/v1/flux-kontext-*`. Polling and result URLs
    /// must be on [`BFL_HOSTS`] or the base URL's host.
    pub fn new(base_url: &str, api_key: Secret) -> Result<Self, ConfigError> {
        let (base_url, host) = http::base_url(base_url, "BFL_BASE_URL")?;
        Ok(Self {
            base_url,
            api_key,
            client: LazyClient::new(PROVIDER_TIMEOUT),
            timeout: PROVIDER_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            allowed: AllowedHosts::new(BFL_HOSTS.iter().copied()).with_host(host),
        })
    }

    /// Overrides the time budget of one call, polling and download included (default
    /// [`PROVIDER_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Overrides the wait between polls (default [`DEFAULT_POLL_INTERVAL`]).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Lets polling and result URLs use plain HTTP to a loopback address: local fakes only.
    pub fn with_loopback_http(mut self, allow: bool) -> Self {
        self.allowed = self.allowed.with_loopback_http(allow);
        self
    }

    /// The BFL endpoint serving one of our model ids.
    pub fn upstream_model(model: &str) -> Option<&'static str> {
        match model {
            "flux-kontext-pro" => Some("flux-kontext-pro"),
            "flux-kontext-max" => Some("flux-kontext-max"),
            _ => None,
        }
    }

    async fn call(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        let endpoint =
            Self::upstream_model(request.model).ok_or_else(|| ProviderError::Permanent {
                code: "invalid_input",
                message: format!("model {} is not served by BFL", request.model),
            })?;
        let mut body = json!({
            "prompt": request.prompt,
            "aspect_ratio": request.aspect_ratio.to_string(),
            "output_format": "png",
        });
        // Kontext edits one image; the catalog allows it at most one reference.
        let mut splice = Splice::new();
        if let Some(reference) = request.references.first() {
            body["input_image"] = splice.hole(vec![reference.base64()]).into();
        }
        let (status, answer) = http::send(
            self.client
                .get()?
                .post(format!("{}/v1/{endpoint}", self.base_url))
                .header("x-key", self.api_key.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(splice.body(&body)),
        )
        .await?;
        if !status.is_success() {
            return Err(status_error(status, error_detail(&answer).as_deref()));
        }
        let task: Task = parse_json(&answer)?;
        let polling_url = match task.polling_url {
            Some(url) => url,
            // Older answers carry only the id, polled on the API host itself.
            None => {
                let mut url = url::Url::parse(&format!("{}/v1/get_result", self.base_url))
                    .map_err(|_| http::malformed("BFL task has no polling URL"))?;
                url.query_pairs_mut().append_pair("id", &task.id);
                url.into()
            }
        };
        let polling_url = self.allowed.check(&polling_url)?;
        let sample = self.poll(polling_url).await?;
        let image = http::download(
            self.client.get()?,
            &sample,
            &self.allowed,
            DEFAULT_MAX_DOWNLOAD_BYTES,
        )
        .await?;
        check_image(&image).map_err(|e| http::malformed(format!("BFL result: {e}")))?;
        Ok(image)
    }

    /// Polls until the task is ready and returns its result URL. The caller's time budget
    /// bounds the loop.
    async fn poll(&self, polling_url: url::Url) -> Result<String, ProviderError> {
        loop {
            tokio::time::sleep(self.poll_interval).await;
            let sent = http::send(
                self.client
                    .get()?
                    .get(polling_url.clone())
                    .header("x-key", self.api_key.expose()),
            )
            .await;
            let answer = match sent {
                Ok((status, answer)) if status.is_success() => answer,
                Ok((status, answer)) => {
                    match status_error(status, error_detail(&answer).as_deref()) {
                        // The task is already paid for: a hiccup while polling is no reason
                        // to give it up and submit another.
                        ProviderError::Transient(why) => {
                            tracing::warn!(provider = "bfl", %why, "poll failed; polling again");
                            continue;
                        }
                        permanent => return Err(permanent),
                    }
                }
                Err(ProviderError::Transient(why)) => {
                    tracing::warn!(provider = "bfl", %why, "poll failed; polling again");
                    continue;
                }
                Err(permanent) => return Err(permanent),
            };
            let state: TaskState = parse_json(&answer)?;
            match state.status.as_str() {
                "Ready" => {
                    return state
                        .result
                        .as_ref()
                        .and_then(|r| r.get("sample"))
                        .and_then(|s| s.as_str())
                        .map(str::to_owned)
                        .ok_or_else(|| http::malformed("BFL task is ready without a sample"));
                }
                "Request Moderated" | "Content Moderated" => {
                    return Err(ProviderError::Permanent {
                        code: "content_refused",
                        message: format!("BFL refused the request ({})", state.status),
                    });
                }
                "Error" | "Failed" => {
                    return Err(ProviderError::Permanent {
                        code: "no_image",
                        message: format!("BFL task ended with status {}", state.status),
                    });
                }
                // Pending, Processing, and "Task not found" just after submission.
                _ => {}
            }
        }
    }
}

#[async_trait::async_trait]
impl ImageProvider for BflProvider {
    fn name(&self) -> &'static str {
        "bfl"
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        http::within(self.timeout, self.call(request)).await
    }
}

#[derive(Debug, Deserialize)]
struct Task {
    id: String,
    polling_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TaskState {
    status: String,
    /// An object with `sample` when ready; other states may put anything here.
    result: Option<serde_json::Value>,
}
