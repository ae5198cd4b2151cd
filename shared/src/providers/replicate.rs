//! Replicate's predictions API: one aggregator that hosts every model we sell, used as a
//! second host of a model (`MODEL_PROVIDERS=flux-kontext-pro=bfl,replicate`) or as its only
//! one.
//!
//! `POST /v1/models/{owner}/{name}/predictions` with `Prefer: wait=N` answers with the
//! finished prediction when the model is done within N seconds, else with one that is
//! `starting` or `processing`, which is then polled at its `urls.get` (on the API host
//! only). `succeeded` carries the output as one URL or a list of URLs on
//! `replicate.delivery` (or a subdomain): the image is downloaded from there at once (inputs
//! and outputs are deleted after an hour), without credentials and without following a
//! redirect. Errors are problem details (`{"title", "detail", "status"}`): 422 is bad input
//! (permanent), 429 and 5xx are transient, and so are 401, 402 and 403: the account cannot
//! run it now (token, billing), which is no fault of the request, so the image fails over.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{
    self, AllowedHosts, DEFAULT_MAX_DOWNLOAD_BYTES, Splice, error_detail, parse_json, status_error,
};
use super::{ImageProvider, ImageRequest, PROVIDER_TIMEOUT, ProviderError, check_image};
use crate::config::{ConfigError, Secret};
use crate::outbound::LazyClient;

/// Where Replicate serves output files from (and its subdomains).
pub const DELIVERY_HOSTS: &[&str] = &["replicate.delivery"];

/// How long the create call asks Replicate to hold the answer (`Prefer: wait`, 1..=60 s).
pub const DEFAULT_WAIT_SECS: u64 = 60;

/// How long to wait between two polls by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Our model ids, the variable naming the Replicate model that serves each, and its
/// default. `sora-image` has none: Replicate's `openai/gpt-image-1` bills a caller's own
/// OpenAI key, which would make it another path to OpenAI rather than another host.
pub const MODEL_SETTINGS: &[(&str, &str, Option<&str>)] = &[
    (
        "nano-banana",
        "REPLICATE_MODEL_NANO_BANANA",
        Some("google/nano-banana"),
    ),
    (
        "nano-banana-pro",
        "REPLICATE_MODEL_NANO_BANANA_PRO",
        Some("google/nano-banana-pro"),
    ),
    (
        "seedream-4.0",
        "REPLICATE_MODEL_SEEDREAM_4_0",
        Some("bytedance/seedream-4"),
    ),
    ("sora-image", "REPLICATE_MODEL_SORA_IMAGE", None),
    (
        "flux-kontext-pro",
        "REPLICATE_MODEL_FLUX_KONTEXT_PRO",
        Some("black-forest-labs/flux-kontext-pro"),
    ),
    (
        "flux-kontext-max",
        "REPLICATE_MODEL_FLUX_KONTEXT_MAX",
        Some("black-forest-labs/flux-kontext-max"),
    ),
];

/// The Replicate model (`owner/name`) serving each of our model ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateModels(HashMap<&'static str, String>);

impl ReplicateModels {
    /// From `REPLICATE_MODEL_*` (through `lookup`), with the defaults of [`MODEL_SETTINGS`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut map = HashMap::new();
        for (model, variable, default) in MODEL_SETTINGS {
            let value = lookup(variable)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .or_else(|| default.map(str::to_owned));
            let Some(value) = value else { continue };
            let valid = value.split_once('/').is_some_and(|(owner, name)| {
                [owner, name].iter().all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                })
            });
            if !valid {
                return Err(ConfigError(format!(
                    "{variable}={value:?} is not a Replicate model like owner/name"
                )));
            }
            map.insert(*model, value);
        }
        Ok(Self(map))
    }

    /// The Replicate model for one of our ids, if this deployment has one.
    pub fn get(&self, model: &str) -> Option<&str> {
        self.0.get(model).map(String::as_str)
    }
}

impl Default for ReplicateModels {
    fn default() -> Self {
        Self::from_lookup(|_| None).expect("the default Replicate models are valid")
    }
}

/// The Replicate API.
#[derive(Debug, Clone)]
pub struct ReplicateProvider {
    base_url: String,
    api_key: Secret,
    models: ReplicateModels,
    client: LazyClient,
    timeout: Duration,
    wait_secs: u64,
    poll_interval: Duration,
    /// `urls.get` must be on the API host itself: the token goes there.
    api_host: AllowedHosts,
    delivery: AllowedHosts,
}

impl ReplicateProvider {
    /// A provider creating predictions at `{base_url}/v1/models/{owner}/{name}/predictions`.
    pub fn new(
        base_url: &str,
        api_key: Secret,
        models: ReplicateModels,
    ) -> Result<Self, ConfigError> {
        let (base_url, host) = http::base_url(base_url, "REPLICATE_BASE_URL")?;
        Ok(Self {
            base_url,
            api_key,
            models,
            client: LazyClient::new(PROVIDER_TIMEOUT),
            timeout: PROVIDER_TIMEOUT,
            wait_secs: DEFAULT_WAIT_SECS,
            poll_interval: DEFAULT_POLL_INTERVAL,
            api_host: AllowedHosts::new([host]),
            delivery: AllowedHosts::new(DELIVERY_HOSTS.iter().copied()),
        })
    }

    /// Overrides the time budget of one call, polling and download included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Overrides `Prefer: wait` (clamped to 1..=60 s, Replicate's range).
    pub fn with_wait(mut self, secs: u64) -> Self {
        self.wait_secs = secs.clamp(1, 60);
        self
    }

    /// Overrides the wait between polls.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Lets polling and output URLs use plain HTTP to a loopback address: local fakes only.
    pub fn with_loopback_http(mut self, allow: bool) -> Self {
        self.api_host = self.api_host.with_loopback_http(allow);
        self.delivery = self.delivery.with_loopback_http(allow);
        self
    }

    /// Whether this deployment names a Replicate model for one of our ids.
    pub fn serves(models: &ReplicateModels, model: &str) -> bool {
        models.get(model).is_some()
    }

    async fn call(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        let upstream = self
            .models
            .get(request.model)
            .ok_or_else(|| ProviderError::Permanent {
                code: "invalid_input",
                message: format!("model {} is not served by Replicate here", request.model),
            })?;
        let mut splice = Splice::new();
        let body = json!({ "input": input_for(request, &mut splice) });
        let client = self.client.get()?;
        let (status, answer) = http::send(
            client
                .post(format!(
                    "{}/v1/models/{upstream}/predictions",
                    self.base_url
                ))
                .bearer_auth(self.api_key.expose())
                .header("prefer", format!("wait={}", self.wait_secs))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(splice.body(&body)),
        )
        .await?;
        if !status.is_success() {
            return Err(answer_error(status, &answer));
        }
        let mut prediction: Prediction = parse_json(&answer)?;
        loop {
            if let Some(url) = prediction.finished()? {
                let image =
                    http::download(client, &url, &self.delivery, DEFAULT_MAX_DOWNLOAD_BYTES)
                        .await?;
                check_image(&image)
                    .map_err(|e| http::malformed(format!("Replicate output: {e}")))?;
                return Ok(image);
            }
            let get = prediction
                .urls
                .as_ref()
                .and_then(|u| u.get.as_deref())
                .ok_or_else(|| http::malformed("Replicate prediction has no urls.get"))?;
            let get = self.api_host.check(get)?;
            prediction = self.poll(get).await?;
        }
    }

    /// The prediction once more, after the poll interval; a transient failure of the poll
    /// itself is retried (the prediction is already paid for).
    async fn poll(&self, url: url::Url) -> Result<Prediction, ProviderError> {
        loop {
            tokio::time::sleep(self.poll_interval).await;
            let sent = http::send(
                self.client
                    .get()?
                    .get(url.clone())
                    .bearer_auth(self.api_key.expose()),
            )
            .await;
            match sent {
                Ok((status, answer)) if status.is_success() => return parse_json(&answer),
                Ok((status, answer)) => match answer_error(status, &answer) {
                    ProviderError::Transient(why) => {
                        tracing::warn!(provider = "replicate", %why, "poll failed; polling again");
                    }
                    permanent => return Err(permanent),
                },
                Err(ProviderError::Transient(why)) => {
                    tracing::warn!(provider = "replicate", %why, "poll failed; polling again");
                }
                Err(permanent) => return Err(permanent),
            }
        }
    }
}

#[async_trait::async_trait]
impl ImageProvider for ReplicateProvider {
    fn name(&self) -> &'static str {
        "replicate"
    }

    fn fetches_references(&self) -> bool {
        true
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        http::within(self.timeout, self.call(request)).await
    }
}

/// The model's input, by the family of our model id. References go as the URL the worker
/// signed for them when there is one (Replicate fetches it; data URLs are meant for small
/// files), else as a data URL spliced from the job's one encoding.
fn input_for(request: &ImageRequest<'_>, splice: &mut Splice) -> Value {
    let references: Vec<Value> = request
        .references
        .iter()
        .map(|r| match r.url() {
            Some(url) => Value::String(url.to_owned()),
            None => Value::String(splice.hole(vec![r.data_url_prefix(), r.base64()])),
        })
        .collect();
    let ratio = request.aspect_ratio.to_string();
    let mut input = json!({ "prompt": request.prompt, "aspect_ratio": ratio });
    let list = |input: &mut Value, field: &str| {
        if !references.is_empty() {
            input[field] = Value::Array(references.clone());
        }
    };
    match request.model {
        "seedream-4.0" => {
            input["size"] = "2K".into();
            input["max_images"] = 1.into();
            input["sequential_image_generation"] = "disabled".into();
            list(&mut input, "image_input");
        }
        "flux-kontext-pro" | "flux-kontext-max" => {
            input["output_format"] = "png".into();
            // Kontext edits one image; the catalog allows it at most one reference.
            if let Some(first) = references.first() {
                input["input_image"] = first.clone();
            }
        }
        "sora-image" => {
            input["output_format"] = "png".into();
            input["number_of_images"] = 1.into();
            list(&mut input, "input_images");
        }
        // nano-banana, nano-banana-pro
        _ => {
            input["output_format"] = "png".into();
            list(&mut input, "image_input");
        }
    }
    input
}

/// A non-success answer to a create or a poll.
fn answer_error(status: reqwest::StatusCode, body: &[u8]) -> ProviderError {
    let detail = error_detail(body);
    match status.as_u16() {
        401..=403 => ProviderError::Transient(format!(
            "Replicate refused our account ({status}): {}",
            detail.as_deref().unwrap_or("no detail")
        )),
        _ => status_error(status, detail.as_deref()),
    }
}

#[derive(Debug, Deserialize)]
struct Prediction {
    status: String,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Value,
    urls: Option<Urls>,
}

#[derive(Debug, Deserialize)]
struct Urls {
    get: Option<String>,
}

impl Prediction {
    /// The output URL once there is one; an error once the prediction ended without one;
    /// `None` while it runs.
    fn finished(&self) -> Result<Option<String>, ProviderError> {
        let output = match &self.output {
            Value::String(url) => Some(url.clone()),
            Value::Array(items) => items.iter().find_map(|v| v.as_str()).map(str::to_owned),
            _ => None,
        };
        match self.status.as_str() {
            "failed" => Err(failure(&self.error)),
            "canceled" | "aborted" => Err(ProviderError::Transient(format!(
                "the Replicate prediction was {}",
                self.status
            ))),
            "succeeded" => output.map(Some).ok_or_else(|| ProviderError::Permanent {
                code: "no_image",
                message: "Replicate succeeded without an output".into(),
            }),
            // starting, processing: file outputs may come before the status says so.
            _ => Ok(output),
        }
    }
}

/// A failed prediction: a safety refusal is final, an infrastructure error (E1000 unknown,
/// E6716 timeout starting, an interruption) worth another try, anything else a model that
/// made no image of this input.
fn failure(error: &Value) -> ProviderError {
    let text = match error {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let lower = text.to_ascii_lowercase();
    let short = http::shorten(&text);
    if ["nsfw", "sensitive", "safety", "flagged", "e005", "moderat"]
        .iter()
        .any(|w| lower.contains(w))
    {
        ProviderError::Permanent {
            code: "content_refused",
            message: format!("Replicate refused the request: {short}"),
        }
    } else if [
        "e1000",
        "e6716",
        "timed out",
        "timeout",
        "interrupted",
        "retry",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        ProviderError::Transient(format!("the Replicate prediction failed: {short}"))
    } else {
        ProviderError::Permanent {
            code: "no_image",
            message: format!("the Replicate prediction failed: {short}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_come_from_configuration_and_must_look_like_owner_slash_name() {
        let models = ReplicateModels::from_lookup(|name| match name {
            "REPLICATE_MODEL_SORA_IMAGE" => Some("acme/gpt-image".into()),
            "REPLICATE_MODEL_NANO_BANANA" => Some(" google/nano-banana-2 ".into()),
            _ => None,
        })
        .unwrap();

        assert_eq!(models.get("sora-image"), Some("acme/gpt-image"));
        assert_eq!(models.get("nano-banana"), Some("google/nano-banana-2"));
        assert_eq!(
            models.get("flux-kontext-max"),
            Some("black-forest-labs/flux-kontext-max")
        );
        assert_eq!(ReplicateModels::default().get("sora-image"), None);
        for bad in ["nano", "a/b/c", "/x", "a b/c"] {
            assert!(
                ReplicateModels::from_lookup(
                    |name| (name == "REPLICATE_MODEL_NANO_BANANA").then(|| bad.to_string())
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn failed_predictions_are_sorted_into_refusals_retries_and_no_image() {
        let code = |e: ProviderError| match e {
            ProviderError::Permanent { code, .. } => code,
            ProviderError::Transient(_) => "transient",
        };
        assert_eq!(
            code(failure(&json!(
                "NSFW content detected. Try a different prompt."
            ))),
            "content_refused"
        );
        assert_eq!(
            code(failure(&json!("E6716: Timeout starting prediction"))),
            "transient"
        );
        assert_eq!(
            code(failure(&json!("CUDA error: device-side assert"))),
            "no_image"
        );
        assert_eq!(code(failure(&Value::Null)), "no_image");
    }
}
