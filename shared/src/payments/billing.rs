//! Canceling subscriptions at the provider, with the API keys only (no webhook secret):
//! what account deletion needs, so the function that deletes accounts holds no more than
//! that.

use std::time::Duration;

use super::{PaymentSettings, Provider, ProviderError, creem, stripe};
use crate::aws::secrets::Secrets;
use crate::config::ConfigError;
use crate::outbound::LazyClient;

/// The secrets canceling needs.
pub const SECRET_NAMES: &[&str] = &["STRIPE_SECRET_KEY", "CREEM_API_KEY"];

/// The providers' cancel APIs; one without its key is `None`.
#[derive(Debug, Clone)]
pub struct Billing {
    pub stripe: Option<stripe::StripeApi>,
    pub creem: Option<creem::CreemApi>,
}

impl Billing {
    /// Settings through `lookup`, keys from `secrets` (left there: in the local runner the
    /// webhook routes read the same keys).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        secrets: &Secrets,
    ) -> Result<Self, ConfigError> {
        let settings = PaymentSettings::from_lookup(lookup)?;
        let http = LazyClient::new(Duration::from_secs(15));
        Ok(Self {
            stripe: secrets
                .get("STRIPE_SECRET_KEY")
                .map(|key| settings.stripe_api(&http, key)),
            creem: secrets
                .get("CREEM_API_KEY")
                .map(|key| settings.creem_api(&http, key)),
        })
    }

    /// No provider can be reached.
    pub fn disabled() -> Self {
        Self {
            stripe: None,
            creem: None,
        }
    }

    /// Cancels the subscription at once; one the provider no longer knows counts as
    /// canceled. A provider without its key is `NotOffered`.
    pub async fn cancel(
        &self,
        provider: Provider,
        subscription_id: &str,
    ) -> Result<(), ProviderError> {
        let missing =
            || ProviderError::NotOffered(format!("{provider} has no API key here to cancel with"));
        match provider {
            Provider::Stripe => {
                self.stripe
                    .as_ref()
                    .ok_or_else(missing)?
                    .cancel_subscription(subscription_id)
                    .await
            }
            Provider::Creem => {
                self.creem
                    .as_ref()
                    .ok_or_else(missing)?
                    .cancel_subscription(subscription_id)
                    .await
            }
        }
    }
}
