//! Image providers: one trait, one adapter per upstream API, chosen per model by
//! configuration (`MODEL_PROVIDERS`, an ordered list of hosts per model). A transient failure
//! of one host moves the image to the next host of the same model ([`failover`]); nothing
//! falls back to another model or to the built-in renderer: a model without a configured
//! provider is not available.

pub mod ark;
pub mod bfl;
pub mod failover;
pub mod gemini;
pub mod http;
pub mod local;
pub mod openai;
mod reference;
pub mod replicate;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::aws::secrets::Secrets;
use crate::config::{ConfigError, ModelProviders};
use crate::domain::catalog::{AspectRatio, MODELS, ProviderKind};

pub use ark::ArkProvider;
pub use bfl::BflProvider;
pub use failover::{Breaker, BreakerPolicy, Chain, Host, Made};
pub use gemini::GeminiProvider;
pub use http::AllowedHosts;
pub use local::LocalRenderer;
pub use openai::OpenAiProvider;
pub use reference::ReferenceImage;
pub use replicate::{ReplicateModels, ReplicateProvider};

/// What to draw: one image per call.
#[derive(Debug, Clone)]
pub struct ImageRequest<'a> {
    /// Our model id (`nano-banana`, `flux-kontext-pro`, ...); each adapter maps it.
    pub model: &'a str,
    pub prompt: &'a str,
    pub aspect_ratio: AspectRatio,
    pub references: &'a [ReferenceImage],
    /// Which of the generation's images this is (0-based); lets `local` vary its output.
    pub index: u32,
}

/// Why a provider produced no image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying later: timeout, connection failure, 429, 5xx.
    #[error("transient provider failure: {0}")]
    Transient(String),
    /// Retrying cannot help: refusal (safety), invalid input, no image, malformed answer.
    /// `code` is shown to the client (`content_refused`, `invalid_input`, `no_image`,
    /// `malformed_response`).
    #[error("permanent provider failure ({code}): {message}")]
    Permanent { code: &'static str, message: String },
}

impl ProviderError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// One upstream image API.
#[async_trait::async_trait]
pub trait ImageProvider: Send + Sync {
    /// `gemini`, `bfl`, `ark`, `openai`, `local`.
    fn name(&self) -> &'static str;

    /// One image's bytes (PNG, JPEG or WebP; the caller detects which from the bytes).
    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError>;

    /// Whether it fetches references from a URL itself ([`ReferenceImage::url`]) rather
    /// than taking them inline; the worker then signs one for each.
    fn fetches_references(&self) -> bool {
        false
    }
}

/// The longest a single provider call may take, polling included; the worker's budget per
/// record stays under the function timeout (180 s).
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The secrets holding provider API keys, for [`Secrets::load`].
pub const SECRET_NAMES: &[&str] = &[
    "GEMINI_API_KEY",
    "BFL_API_KEY",
    "ARK_API_KEY",
    "OPENAI_API_KEY",
    "REPLICATE_API_TOKEN",
];

/// Where the providers are and how they are reached; keys are separate ([`Secrets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    pub gemini_base_url: String,
    pub bfl_base_url: String,
    pub ark_base_url: String,
    pub openai_base_url: String,
    pub openai_image_model: String,
    /// Extra hosts the OpenAI-compatible endpoint's result URLs may point to
    /// (`OPENAI_RESULT_HOSTS`, comma-separated); its base URL's host is always allowed.
    pub openai_result_hosts: Vec<String>,
    pub replicate_base_url: String,
    /// The Replicate model serving each of ours (`REPLICATE_MODEL_*`).
    pub replicate_models: ReplicateModels,
    /// `PROVIDER_ALLOW_LOOPBACK=1`: plain HTTP to loopback addresses, for base URLs and
    /// result URLs alike. Only for local fakes; never set in a deployment.
    pub allow_loopback: bool,
}

impl ProviderSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let allow_loopback = get("PROVIDER_ALLOW_LOOPBACK").as_deref() == Some("1");
        // A key must never travel in clear text: plain HTTP only to a local fake.
        let base = |name: &str, default: &str| -> Result<String, ConfigError> {
            let text = get(name).unwrap_or_else(|| default.to_owned());
            let (url, _) = http::base_url(&text, name)?;
            let local = AllowedHosts::default()
                .with_loopback_http(true)
                .check(&url)
                .is_ok();
            if url.starts_with("https://") || (allow_loopback && local) {
                Ok(url)
            } else {
                Err(ConfigError(format!(
                    "{name}={text:?} must be https (plain http only to a loopback address with PROVIDER_ALLOW_LOOPBACK=1)"
                )))
            }
        };
        Ok(Self {
            gemini_base_url: base(
                "GEMINI_BASE_URL",
                "https://generativelanguage.googleapis.com",
            )?,
            bfl_base_url: base("BFL_BASE_URL", "https://api.bfl.ai")?,
            ark_base_url: base("ARK_BASE_URL", "https://ark.ap-southeast.bytepluses.com")?,
            openai_base_url: base("OPENAI_BASE_URL", "https://api.openai.com")?,
            openai_image_model: get("OPENAI_IMAGE_MODEL")
                .unwrap_or_else(|| openai::DEFAULT_IMAGE_MODEL.to_owned()),
            openai_result_hosts: get("OPENAI_RESULT_HOSTS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect(),
            replicate_base_url: base("REPLICATE_BASE_URL", "https://api.replicate.com")?,
            replicate_models: ReplicateModels::from_lookup(get)?,
            allow_loopback,
        })
    }
}

impl Default for ProviderSettings {
    /// The public endpoints.
    fn default() -> Self {
        Self::from_lookup(|_| None).expect("the default provider settings are valid")
    }
}

/// The hosts serving each model of this deployment, by our model id, in failover order;
/// one breaker per distinct adapter, shared by the models it serves.
#[derive(Clone, Default)]
pub struct Providers {
    chains: HashMap<String, Chain>,
    policy: BreakerPolicy,
}

impl Providers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `provider` as the next host of `model` (tests use it to plug in fakes). An
    /// adapter added for several models keeps one breaker.
    pub fn with(mut self, model: impl Into<String>, provider: Arc<dyn ImageProvider>) -> Self {
        let breaker = self
            .chains
            .values()
            .flat_map(|c| c.hosts())
            .find(|h| Arc::ptr_eq(&h.provider, &provider))
            .map(|h| Arc::clone(&h.breaker))
            .unwrap_or_else(|| Arc::new(Breaker::new(self.policy)));
        self.chains
            .entry(model.into())
            .or_default()
            .push(Host { provider, breaker });
        self
    }

    /// Gives every host a fresh breaker with `policy` (tests shorten the cool-down).
    pub fn with_breaker_policy(mut self, policy: BreakerPolicy) -> Self {
        self.policy = policy;
        let mut fresh: Vec<(Arc<dyn ImageProvider>, Arc<Breaker>)> = Vec::new();
        for chain in self.chains.values_mut() {
            let hosts: Vec<Host> = chain.hosts().to_vec();
            let mut rebuilt = Chain::default();
            for host in hosts {
                let breaker = match fresh.iter().find(|(p, _)| Arc::ptr_eq(p, &host.provider)) {
                    Some((_, b)) => Arc::clone(b),
                    None => {
                        let b = Arc::new(Breaker::new(policy));
                        fresh.push((Arc::clone(&host.provider), Arc::clone(&b)));
                        b
                    }
                };
                rebuilt.push(Host {
                    provider: host.provider,
                    breaker,
                });
            }
            *chain = rebuilt;
        }
        self
    }

    /// The hosts of a model, or `None`: the model is not available here.
    pub fn chain(&self, model: &str) -> Option<&Chain> {
        self.chains.get(model).filter(|c| !c.hosts().is_empty())
    }

    /// Whether a model has a provider.
    pub fn is_available(&self, model: &str) -> bool {
        self.chain(model).is_some()
    }
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        let mut models: Vec<_> = self.chains.iter().collect();
        models.sort_by_key(|(model, _)| model.as_str());
        for (model, chain) in models {
            map.entry(model, &chain.names());
        }
        map.finish()
    }
}

/// One adapter per provider kind that `model_providers` selects, shared by its models, in
/// each model's order. A selected provider whose key is missing is an error naming the key:
/// nothing falls back to another provider or to the local renderer. Keys are taken out of
/// `secrets`.
pub fn build_providers(
    model_providers: &ModelProviders,
    settings: &ProviderSettings,
    secrets: &mut Secrets,
) -> Result<Providers, ConfigError> {
    let mut built: HashMap<ProviderKind, Arc<dyn ImageProvider>> = HashMap::new();
    let mut providers = Providers::new();
    for model in MODELS {
        for &kind in model_providers.providers_for(model.id) {
            if !serves(kind, model.id, settings) {
                return Err(ConfigError(format!(
                    "MODEL_PROVIDERS: {} cannot be served by {}",
                    model.id,
                    kind.as_str()
                )));
            }
            let provider = match built.get(&kind) {
                Some(provider) => Arc::clone(provider),
                None => {
                    let provider = build_one(kind, settings, secrets, model.id)?;
                    built.insert(kind, Arc::clone(&provider));
                    provider
                }
            };
            providers = providers.with(model.id, provider);
        }
    }
    Ok(providers)
}

/// Whether an adapter knows how to serve one of our models.
fn serves(kind: ProviderKind, model: &str, settings: &ProviderSettings) -> bool {
    match kind {
        ProviderKind::Gemini => GeminiProvider::upstream_model(model).is_some(),
        ProviderKind::Bfl => BflProvider::upstream_model(model).is_some(),
        ProviderKind::Ark => model == "seedream-4.0",
        ProviderKind::OpenAi => model == "sora-image",
        ProviderKind::Replicate => ReplicateProvider::serves(&settings.replicate_models, model),
        ProviderKind::Local => true,
    }
}

fn build_one(
    kind: ProviderKind,
    settings: &ProviderSettings,
    secrets: &mut Secrets,
    model: &str,
) -> Result<Arc<dyn ImageProvider>, ConfigError> {
    let mut key = |name: &str| {
        secrets
            .take(name)
            .filter(|k| !k.expose().trim().is_empty())
            .ok_or_else(|| {
                ConfigError(format!(
                    "{name} is not set, but MODEL_PROVIDERS has {model} served by {} \
                     (set {name}, or {name}_PARAM to the name of an SSM parameter)",
                    kind.as_str()
                ))
            })
    };
    Ok(match kind {
        ProviderKind::Gemini => Arc::new(GeminiProvider::new(
            &settings.gemini_base_url,
            key("GEMINI_API_KEY")?,
        )?),
        ProviderKind::Bfl => Arc::new(
            BflProvider::new(&settings.bfl_base_url, key("BFL_API_KEY")?)?
                .with_loopback_http(settings.allow_loopback),
        ),
        ProviderKind::Ark => Arc::new(ArkProvider::new(
            &settings.ark_base_url,
            key("ARK_API_KEY")?,
        )?),
        ProviderKind::OpenAi => Arc::new(
            OpenAiProvider::new(
                &settings.openai_base_url,
                key("OPENAI_API_KEY")?,
                &settings.openai_image_model,
            )?
            .with_result_hosts(settings.openai_result_hosts.iter().cloned())
            .with_loopback_http(settings.allow_loopback),
        ),
        ProviderKind::Replicate => Arc::new(
            ReplicateProvider::new(
                &settings.replicate_base_url,
                key("REPLICATE_API_TOKEN")?,
                settings.replicate_models.clone(),
            )?
            .with_loopback_http(settings.allow_loopback),
        ),
        ProviderKind::Local => Arc::new(LocalRenderer::new()),
    })
}

/// Checks that bytes are an image we store (PNG, JPEG or WebP), by their signature.
pub(crate) fn check_image(bytes: &[u8]) -> Result<(), String> {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP) => Ok(()),
        Ok(other) => Err(format!("unexpected image format {other:?}")),
        Err(_) => Err("not an image".into()),
    }
}

/// Decodes a base64 image (standard alphabet, or URL-safe from some compatible endpoints)
/// and checks that it is an image.
pub(crate) fn decode_image_base64(data: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let data = data.trim();
    let bytes = STANDARD
        .decode(data)
        .or_else(|_| URL_SAFE.decode(data))
        .map_err(|e| format!("not base64: {e}"))?;
    check_image(&bytes)?;
    Ok(bytes)
}
