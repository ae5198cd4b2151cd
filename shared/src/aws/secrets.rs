//! Secrets: from the environment locally; deployed, from SSM Parameter Store
//! (SecureString, or a Secrets Manager secret through `/aws/reference/secretsmanager/…`),
//! read once at cold start in one batched call.

use std::collections::HashMap;

use aws_config::SdkConfig;

use crate::config::{ConfigError, Secret};

/// The secrets a function asked for; absent ones are `None`.
#[derive(Debug, Default)]
pub struct Secrets(HashMap<String, Secret>);

impl Secrets {
    /// For each name `X`: the variable `X` itself when it is non-empty, or else the SSM
    /// parameter named by `X_PARAM` when that is non-empty. Only the names given are read:
    /// each function asks for its own.
    ///
    /// The template declares `X` empty beside `X_PARAM` (so that `sam local`, which passes
    /// only declared variables, can fill `X` in from `events/env.json`): empty means unset.
    pub async fn load(sdk: &SdkConfig, names: &[&str]) -> Result<Self, ConfigError> {
        Self::load_from(sdk, names, |name| std::env::var(name).ok()).await
    }

    /// [`Secrets::load`] through `lookup` instead of the process environment.
    pub async fn load_from(
        sdk: &SdkConfig,
        names: &[&str],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut found = HashMap::new();
        let mut wanted: HashMap<String, String> = HashMap::new();
        for name in names {
            if let Some(value) = env(name) {
                found.insert(name.to_string(), Secret::new(value));
            } else if let Some(param) = env(&format!("{name}_PARAM")) {
                wanted.insert(param, name.to_string());
            }
        }
        if !wanted.is_empty() {
            let client = aws_sdk_ssm::Client::new(sdk);
            let params: Vec<String> = wanted.keys().cloned().collect();
            // GetParameters takes at most 10 names per call.
            for chunk in params.chunks(10) {
                let out = client
                    .get_parameters()
                    .set_names(Some(chunk.to_vec()))
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| {
                        ConfigError(format!(
                            "reading secrets from SSM failed: {}",
                            aws_smithy_types::error::display::DisplayErrorContext(e)
                        ))
                    })?;
                if let Some(missing) = out.invalid_parameters().first() {
                    return Err(ConfigError(format!(
                        "SSM parameter {missing} (for {}) does not exist",
                        wanted[missing]
                    )));
                }
                for p in out.parameters() {
                    if let (Some(name), Some(value)) = (p.name(), p.value())
                        && let Some(var) = wanted.get(name)
                    {
                        found.insert(var.clone(), Secret::new(value));
                    }
                }
            }
        }
        Ok(Self(found))
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), Secret::new(v)))
                .collect(),
        )
    }

    pub fn take(&mut self, name: &str) -> Option<Secret> {
        self.0.remove(name)
    }

    /// A copy of one, left for another part of the same process to take.
    pub fn get(&self, name: &str) -> Option<Secret> {
        self.0.get(name).cloned()
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

    /// No endpoint and no credentials: any SSM call would fail the load.
    fn offline_sdk() -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build()
    }

    #[tokio::test]
    async fn a_non_empty_variable_is_the_secret_and_its_parameter_is_not_read() {
        let env = [
            ("SESSION_SECRET", "from-the-variable"),
            ("SESSION_SECRET_PARAM", "/not/read"),
        ];
        let mut secrets = Secrets::load_from(&offline_sdk(), &["SESSION_SECRET"], lookup(&env))
            .await
            .unwrap();
        assert_eq!(
            secrets.take("SESSION_SECRET").unwrap().expose(),
            "from-the-variable"
        );
    }

    #[tokio::test]
    async fn empty_variables_are_unset_and_read_nothing() {
        // What a deployed stack without the optional secret looks like: both declared empty.
        let env = [
            ("STRIPE_WEBHOOK_SECRET", ""),
            ("STRIPE_WEBHOOK_SECRET_PARAM", ""),
            ("SESSION_SECRET", " "),
        ];
        let mut secrets = Secrets::load_from(
            &offline_sdk(),
            &["STRIPE_WEBHOOK_SECRET", "SESSION_SECRET"],
            lookup(&env),
        )
        .await
        .unwrap();
        assert!(secrets.take("STRIPE_WEBHOOK_SECRET").is_none());
        assert!(secrets.take("SESSION_SECRET").is_none());
    }
}
