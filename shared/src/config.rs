//! Typed settings from environment variables, loaded once at cold start.
//!
//! Secrets are [`Secret`]s: their `Debug` is redacted and they have no `Display`, so a
//! stray `?config` in a log line cannot leak them.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::domain::catalog::{MODELS, ProviderKind};

/// A setting that is missing or malformed; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// A secret value. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A key that signs or verifies something we trust: at least 32 bytes and not a
/// repetition of a few characters, or the function refuses to start.
pub fn require_strong(name: &str, secret: Option<Secret>) -> Result<Secret, ConfigError> {
    let secret = secret.ok_or_else(|| {
        ConfigError(format!(
            "{name} is not set (set {name}, or {name}_PARAM to the name of an SSM parameter)"
        ))
    })?;
    let distinct = secret
        .expose()
        .bytes()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if secret.expose().len() < 32 || distinct < 10 {
        return Err(ConfigError(format!(
            "{name} is too weak: use at least 32 random bytes (for example `openssl rand -base64 48`)"
        )));
    }
    Ok(secret)
}

/// Web origins (`scheme://host[:port]`) allowed to use cookie sessions and to be
/// redirected to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppOrigins(Vec<String>);

impl AppOrigins {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut origins = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let origin = origin_of(part)
                .filter(|o| o == &part.trim_end_matches('/').to_ascii_lowercase())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "APP_ORIGINS: {part:?} is not an origin like https://app.example.com"
                    ))
                })?;
            origins.push(origin);
        }
        Ok(Self(origins))
    }

    /// Whether an `Origin` header value is one of ours.
    pub fn allows_origin(&self, origin: &str) -> bool {
        origin_of(origin).is_some_and(|o| self.0.contains(&o))
    }

    /// Whether an absolute URL points into one of our origins (no userinfo tricks).
    pub fn allows_url(&self, url: &str) -> bool {
        match url::Url::parse(url) {
            Ok(u) if u.username().is_empty() && u.password().is_none() => {
                origin_of(url).is_some_and(|o| self.0.contains(&o))
            }
            _ => false,
        }
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// The serialized origin of an absolute http(s) URL, lowercased, default port elided.
fn origin_of(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

/// Which providers host each model in this deployment, in failover order. A model absent
/// here is `available: false`; nothing falls back to another model or to `local`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelProviders(HashMap<&'static str, Vec<ProviderKind>>);

impl ModelProviders {
    /// `model=provider[,provider...]` entries separated by commas, a provider list running
    /// until the next `model=`: `nano-banana=gemini,flux-kontext-pro=bfl,replicate`. `*`
    /// stands for every model, and a later entry for a model replaces an earlier one
    /// (`*=local,sora-image=openai`). The built-in renderer serves alone: `local` in a list
    /// with another host is refused, so no job fails over to it.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut entries: Vec<(&str, Vec<ProviderKind>)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (model, provider) = match part.split_once('=') {
                Some((model, provider)) => (Some(model.trim()), provider.trim()),
                None => (None, part),
            };
            let provider = ProviderKind::parse(provider).ok_or_else(|| {
                ConfigError(format!("MODEL_PROVIDERS: unknown provider {provider:?}"))
            })?;
            match model {
                Some(model) => entries.push((model, vec![provider])),
                None => {
                    let (model, list) = entries.last_mut().ok_or_else(|| {
                        ConfigError(format!(
                            "MODEL_PROVIDERS: {part:?} does not follow a model=provider entry"
                        ))
                    })?;
                    if list.contains(&provider) {
                        return Err(ConfigError(format!(
                            "MODEL_PROVIDERS: {model} lists {part} twice"
                        )));
                    }
                    list.push(provider);
                }
            }
        }
        let mut map = HashMap::new();
        for (model, list) in entries {
            if list.len() > 1 && list.contains(&ProviderKind::Local) {
                return Err(ConfigError(format!(
                    "MODEL_PROVIDERS: {model} lists local with other hosts; the built-in \
                     renderer serves only alone, never as a failover"
                )));
            }
            match model {
                "*" => map.extend(MODELS.iter().map(|m| (m.id, list.clone()))),
                id => {
                    let model = MODELS.iter().find(|m| m.id == id).ok_or_else(|| {
                        ConfigError(format!("MODEL_PROVIDERS: unknown model {id:?}"))
                    })?;
                    map.insert(model.id, list);
                }
            }
        }
        Ok(Self(map))
    }

    /// The hosts of a model, in order (empty: not available).
    pub fn providers_for(&self, model_id: &str) -> &[ProviderKind] {
        self.0.get(model_id).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether any host is listed for the model.
    pub fn is_available(&self, model_id: &str) -> bool {
        !self.providers_for(model_id).is_empty()
    }
}

/// Every non-secret setting of the service.
#[derive(Debug, Clone)]
pub struct Settings {
    pub table_name: String,
    pub bucket_name: String,
    pub queue_url: String,
    pub dlq_url: Option<String>,
    /// The completion webhooks' queue; without it, a request for a webhook is refused.
    pub hooks_queue_url: Option<String>,
    /// `WEBHOOK_ALLOW_LOOPBACK=1`: webhooks may go to loopback addresses (local runs only).
    pub webhook_allow_loopback: bool,
    pub app_origins: AppOrigins,
    pub session_ttl: Duration,
    pub signup_bonus_credits: i64,
    pub signup_bonus_per_ip_per_day: u32,
    pub rate_limit_per_minute: u32,
    pub generation_deadline: Duration,
    pub dev_login: bool,
    pub model_providers: ModelProviders,
    /// How long security-log entries are kept.
    pub audit_retention: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required =
            |name: &str| get(name).ok_or_else(|| ConfigError(format!("{name} is not set")));
        Ok(Self {
            table_name: required("TABLE_NAME")?,
            bucket_name: required("BUCKET_NAME")?,
            queue_url: required("QUEUE_URL")?,
            dlq_url: get("DLQ_URL"),
            hooks_queue_url: get("HOOKS_QUEUE_URL"),
            webhook_allow_loopback: get("WEBHOOK_ALLOW_LOOPBACK").as_deref() == Some("1"),
            app_origins: AppOrigins::parse(&get("APP_ORIGINS").unwrap_or_default())?,
            session_ttl: duration(&get, "SESSION_TTL", 7 * 24 * 3600)?,
            signup_bonus_credits: number(&get, "SIGNUP_BONUS_CREDITS", 10, 0..=1_000_000)?,
            signup_bonus_per_ip_per_day: number(
                &get,
                "SIGNUP_BONUS_PER_IP_PER_DAY",
                3,
                0..=1_000_000,
            )? as u32,
            rate_limit_per_minute: number(&get, "RATE_LIMIT_PER_MINUTE", 10, 1..=1_000_000)? as u32,
            generation_deadline: duration(&get, "GENERATION_DEADLINE", 15 * 60)?,
            dev_login: get("AUTH_DEV_LOGIN").as_deref() == Some("1"),
            model_providers: ModelProviders::parse(&get("MODEL_PROVIDERS").unwrap_or_default())?,
            audit_retention: Duration::from_secs(
                number(&get, "AUDIT_RETENTION_DAYS", 400, 1..=36_500)? as u64 * 86_400,
            ),
        })
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ConfigError> {
    let Some(text) = get(name) else {
        return Ok(default);
    };
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ConfigError(format!(
                "{name}={text:?} is not a whole number in {}..={}",
                range.start(),
                range.end()
            ))
        })
}

/// Seconds, or a number with an `s`, `m`, `h` or `d` suffix.
fn duration(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    let Some(text) = get(name) else {
        return Ok(Duration::from_secs(default_secs));
    };
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && factor > 0)
        .map(|n| Duration::from_secs(n * factor))
        .ok_or_else(|| ConfigError(format!("{name}={text:?} is not a duration like 900 or 7d")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("TABLE_NAME", "t"),
        ("BUCKET_NAME", "b"),
        ("QUEUE_URL", "http://q"),
    ];

    #[test]
    fn defaults_follow_the_contract() {
        let settings = Settings::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(settings.session_ttl, Duration::from_secs(604_800));
        assert_eq!(settings.signup_bonus_credits, 10);
        assert_eq!(settings.rate_limit_per_minute, 10);
        assert_eq!(settings.generation_deadline, Duration::from_secs(900));
        assert!(!settings.dev_login);
        assert!(!settings.model_providers.is_available("nano-banana"));
    }

    #[test]
    fn a_missing_table_name_is_named_in_the_error() {
        let err = Settings::from_lookup(lookup(&BASE[1..])).unwrap_err();
        assert!(err.to_string().contains("TABLE_NAME"), "{err}");
    }

    #[test]
    fn durations_take_a_unit_suffix() {
        let mut pairs = BASE.to_vec();
        pairs.push(("SESSION_TTL", "2d"));
        pairs.push(("GENERATION_DEADLINE", "10m"));
        let settings = Settings::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(settings.session_ttl, Duration::from_secs(172_800));
        assert_eq!(settings.generation_deadline, Duration::from_secs(600));
    }

    #[test]
    fn a_star_selects_one_provider_for_every_model() {
        let providers = ModelProviders::parse("*=local,sora-image=openai").unwrap();
        assert_eq!(
            providers.providers_for("nano-banana"),
            [ProviderKind::Local]
        );
        assert_eq!(
            providers.providers_for("sora-image"),
            [ProviderKind::OpenAi]
        );
        assert!(ModelProviders::parse("dall-e=openai").is_err());
        assert!(ModelProviders::parse("nano-banana=magic").is_err());
    }

    #[test]
    fn a_model_takes_an_ordered_list_of_hosts_until_the_next_model() {
        let providers = ModelProviders::parse(
            "nano-banana=gemini,flux-kontext-pro=bfl,replicate,seedream-4.0=ark",
        )
        .unwrap();
        assert_eq!(
            providers.providers_for("nano-banana"),
            [ProviderKind::Gemini]
        );
        assert_eq!(
            providers.providers_for("flux-kontext-pro"),
            [ProviderKind::Bfl, ProviderKind::Replicate]
        );
        assert_eq!(providers.providers_for("seedream-4.0"), [ProviderKind::Ark]);
        assert!(providers.providers_for("sora-image").is_empty());
        assert!(!providers.is_available("sora-image"));
    }

    #[test]
    fn local_never_joins_a_failover_list_and_a_list_needs_its_model() {
        for text in [
            "flux-kontext-pro=bfl,local",
            "*=local,replicate",
            "replicate",
            "nano-banana=gemini,gemini",
        ] {
            assert!(ModelProviders::parse(text).is_err(), "{text}");
        }
        assert!(ModelProviders::parse("*=replicate,nano-banana=gemini,replicate").is_ok());
    }

    #[test]
    fn secrets_are_redacted_and_weak_ones_refused() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert!(require_strong("SESSION_SECRET", Some(secret)).is_err());
        assert!(require_strong("SESSION_SECRET", Some(Secret::new("a".repeat(64)))).is_err());
        let err = require_strong("SESSION_SECRET", None).unwrap_err();
        assert!(err.to_string().contains("SESSION_SECRET_PARAM"));
        assert!(
            require_strong(
                "SESSION_SECRET",
                Some(Secret::new("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg"))
            )
            .is_ok()
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let origins = AppOrigins::parse("https://app.example.com, http://localhost:5173").unwrap();
        assert!(origins.allows_origin("https://app.example.com"));
        assert!(origins.allows_origin("http://localhost:5173"));
        assert!(!origins.allows_origin("http://app.example.com"));
        assert!(!origins.allows_origin("https://app.example.com.evil.example"));
        assert!(!origins.allows_origin("null"));
        assert!(origins.allows_url("https://app.example.com/studio?x=1"));
        assert!(!origins.allows_url("//evil.example/"));
        assert!(!origins.allows_url("https://app.example.com@evil.example/"));
        assert!(!origins.allows_url("https://evil.example/https://app.example.com"));
        assert!(AppOrigins::parse("https://app.example.com/path").is_err());
    }
}
