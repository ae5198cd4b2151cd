//! The AWS adapters: the only code that touches `aws_sdk_*` types.

pub mod counting;
pub mod dynamo;
pub mod s3;
pub mod secrets;
pub mod sqs;

use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::ConfigError;

/// The variable `sam local` sets to reach the emulator: the template declares it empty.
pub const EMULATOR_ENDPOINT_URL: &str = "EMULATOR_ENDPOINT_URL";

/// Loads the SDK configuration once: region, credentials, and the emulator's endpoint when
/// one is given (`AWS_ENDPOINT_URL`, read by the SDK itself, or [`EMULATOR_ENDPOINT_URL`]).
pub async fn load_sdk_config() -> Result<SdkConfig, ConfigError> {
    let loader = aws_config::defaults(BehaviorVersion::latest());
    let loader = match endpoint_override(|name| std::env::var(name).ok())? {
        Some(url) => loader.endpoint_url(url),
        None => loader,
    };
    Ok(loader.load().await)
}

/// The endpoint to set on the SDK configuration, if any.
///
/// `sam local` gives a function only the variables the template declares, so the template
/// declares `EMULATOR_ENDPOINT_URL` empty and `events/env.json` fills it in; it counts only
/// when non-empty. It cannot be the standard `AWS_ENDPOINT_URL`: the SDK takes a declared
/// but empty `AWS_ENDPOINT_URL` as the endpoint of every client and panics on the first
/// request ("URL was unset"; `tests/tests/sdk_endpoint.rs`), which in a deployed stack
/// would break every AWS call. So an empty `AWS_ENDPOINT_URL` is refused here, at cold
/// start, with a message, and a non-empty one is left to the SDK (it wins over this).
pub fn endpoint_override(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    if lookup("AWS_ENDPOINT_URL").is_some_and(|v| v.trim().is_empty()) {
        return Err(ConfigError(
            "AWS_ENDPOINT_URL is set but empty: unset it (the AWS SDK would take the empty \
             value as the endpoint of every call)"
                .into(),
        ));
    }
    let Some(url) = lookup(EMULATOR_ENDPOINT_URL).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let url = url.trim();
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(Some(url.to_string())),
        _ => Err(ConfigError(format!(
            "{EMULATOR_ENDPOINT_URL}={url:?} is not an http(s) URL like http://127.0.0.1:4566"
        ))),
    }
}

/// An S3 client; path-style addressing when an endpoint override is set, because the
/// emulator on 127.0.0.1 has no virtual-host buckets.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    Clients::new(sdk, None).s3
}

/// The three clients, built once from one SDK configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    pub dynamo: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Clients {
    /// With `counter`, every request any of them sends is counted.
    pub fn new(sdk: &SdkConfig, counter: Option<&counting::CallCounter>) -> Self {
        let mut dynamo = aws_sdk_dynamodb::config::Builder::from(sdk);
        let mut s3 =
            aws_sdk_s3::config::Builder::from(sdk).force_path_style(sdk.endpoint_url().is_some());
        let mut sqs = aws_sdk_sqs::config::Builder::from(sdk);
        if let Some(counter) = counter {
            dynamo = dynamo.interceptor(counter.clone());
            s3 = s3.interceptor(counter.clone());
            sqs = sqs.interceptor(counter.clone());
        }
        Self {
            dynamo: aws_sdk_dynamodb::Client::from_conf(dynamo.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn an_empty_emulator_endpoint_is_no_override() {
        assert_eq!(endpoint_override(lookup(&[])).unwrap(), None);
        assert_eq!(
            endpoint_override(lookup(&[(EMULATOR_ENDPOINT_URL, "")])).unwrap(),
            None
        );
        assert_eq!(
            endpoint_override(lookup(&[(EMULATOR_ENDPOINT_URL, "  ")])).unwrap(),
            None
        );
    }

    #[test]
    fn a_non_empty_emulator_endpoint_is_the_override() {
        let url = endpoint_override(lookup(&[(
            EMULATOR_ENDPOINT_URL,
            "http://host.docker.internal:4566",
        )]))
        .unwrap();
        assert_eq!(url.as_deref(), Some("http://host.docker.internal:4566"));
    }

    #[test]
    fn a_malformed_emulator_endpoint_stops_the_function_with_its_name() {
        let err = endpoint_override(lookup(&[(EMULATOR_ENDPOINT_URL, "host:4566")])).unwrap_err();
        assert!(err.to_string().contains(EMULATOR_ENDPOINT_URL), "{err}");
    }

    #[test]
    fn an_empty_standard_endpoint_variable_is_refused_at_cold_start() {
        let err = endpoint_override(lookup(&[("AWS_ENDPOINT_URL", "")])).unwrap_err();
        assert!(err.to_string().contains("AWS_ENDPOINT_URL"), "{err}");
        // A real one is the SDK's to read.
        assert_eq!(
            endpoint_override(lookup(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")])).unwrap(),
            None
        );
    }
}
