//! Payments: Stripe and Creem behind one shape. Each provider module verifies its webhook
//! signatures over the raw body, reads its events into one [`PaymentEvent`], and calls its
//! checkout, customer-portal and cancel APIs. What an event does to balances and
//! subscriptions is decided in one place, the pure [`rules`]; the store
//! (`aws::dynamo::payments`) reads the state an event needs and writes what they decide.

pub mod billing;
pub mod creem;
pub mod rules;
pub mod stripe;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aws::secrets::Secrets;
use crate::config::{ConfigError, Secret, require_strong};
use crate::domain::UserId;
use crate::domain::products::{PRODUCTS, Product};
use crate::outbound::{ClientError, LazyClient};

pub use crate::domain::payment::{Provider, SubscriptionSummary};

/// The secrets the payment routes read (besides the session key).
pub const SECRET_NAMES: &[&str] = &[
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "CREEM_API_KEY",
    "CREEM_WEBHOOK_SECRET",
];

/// How far a Stripe signature's timestamp may be from now.
pub const STRIPE_TOLERANCE_SECS: i64 = 300;

/// Our product ids and a provider's ids for them (Stripe prices, Creem products), from
/// configuration: never inferred from an amount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductIds(Vec<(&'static str, String)>);

impl ProductIds {
    /// `{prefix}{PRODUCT_ID}` for every catalog product (`STRIPE_PRICE_CREDITS_100`, ...);
    /// a product without a variable is not sold through that provider.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        prefix: &str,
    ) -> Result<Self, ConfigError> {
        let mut pairs: Vec<(&'static str, String)> = Vec::new();
        for product in PRODUCTS {
            let name = format!("{prefix}{}", product.id.to_ascii_uppercase());
            if let Some(value) = get(&name) {
                let value = value.trim().to_string();
                if pairs.iter().any(|(_, v)| *v == value) {
                    return Err(ConfigError(format!(
                        "{name}: {value:?} is configured for two products"
                    )));
                }
                pairs.push((product.id, value));
            }
        }
        Ok(Self(pairs))
    }

    pub fn from_pairs(pairs: &[(&'static str, &str)]) -> Self {
        Self(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
    }

    /// The provider's id for our product.
    pub fn provider_id(&self, product_id: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, _)| *p == product_id)
            .map(|(_, v)| v.as_str())
    }

    /// Our product for the provider's id.
    pub fn product_of(&self, provider_id: &str) -> Option<&'static Product> {
        self.0
            .iter()
            .find(|(_, v)| v == provider_id)
            .and_then(|(p, _)| crate::domain::products::product(p))
    }
}

/// The non-secret payment settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSettings {
    pub stripe_base_url: String,
    pub stripe_api_version: String,
    pub stripe_prices: ProductIds,
    pub creem_base_url: String,
    /// Test mode accepts only Creem test events; live mode only live ones.
    pub creem_test_mode: bool,
    pub creem_products: ProductIds,
}

impl PaymentSettings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let creem_test_mode = match get("CREEM_TEST_MODE").as_deref().map(str::trim) {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(ConfigError(format!(
                    "CREEM_TEST_MODE={other:?} must be 1 (test) or 0 (live)"
                )));
            }
        };
        let default_creem = if creem_test_mode {
            "https://test-api.creem.io"
        } else {
            "https://api.creem.io"
        };
        Ok(Self {
            stripe_base_url: base_url(&get, "STRIPE_BASE_URL", "https://api.stripe.com")?,
            stripe_api_version: get("STRIPE_API_VERSION")
                .unwrap_or_else(|| "2025-03-31.basil".into()),
            stripe_prices: ProductIds::from_lookup(&get, "STRIPE_PRICE_")?,
            creem_base_url: base_url(&get, "CREEM_BASE_URL", default_creem)?,
            creem_test_mode,
            creem_products: ProductIds::from_lookup(&get, "CREEM_PRODUCT_")?,
        })
    }
}

impl PaymentSettings {
    /// Stripe's API with this key.
    pub fn stripe_api(&self, http: &LazyClient, key: Secret) -> stripe::StripeApi {
        stripe::StripeApi::new(
            http.clone(),
            &self.stripe_base_url,
            &self.stripe_api_version,
            key,
            self.stripe_prices.clone(),
        )
    }

    /// Creem's API with this key.
    pub fn creem_api(&self, http: &LazyClient, key: Secret) -> creem::CreemApi {
        creem::CreemApi::new(
            http.clone(),
            &self.creem_base_url,
            key,
            self.creem_products.clone(),
        )
    }

    /// Reads a verified event of `provider` with this configuration (an operator's replay
    /// of an event parked for an unmapped product).
    pub fn parse_event(&self, provider: Provider, body: &[u8]) -> Result<PaymentEvent, ParseError> {
        match provider {
            Provider::Stripe => {
                stripe::EventReader::new(&self.stripe_api_version, self.stripe_prices.clone())
                    .parse_event(body)
            }
            Provider::Creem => {
                creem::EventReader::new(self.creem_test_mode, self.creem_products.clone())
                    .parse_event(body)
            }
        }
    }
}

fn base_url(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: &str,
) -> Result<String, ConfigError> {
    let value = get(name).unwrap_or_else(|| default.to_string());
    match url::Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            Ok(value.trim_end_matches('/').to_string())
        }
        _ => Err(ConfigError(format!(
            "{name}={value:?} is not an http(s) URL"
        ))),
    }
}

/// The configured providers. One without both its API key and its webhook secret is
/// `None`: its checkout answers 503 and its webhook refuses every event.
#[derive(Debug)]
pub struct Payments {
    pub stripe: Option<stripe::Stripe>,
    pub creem: Option<creem::Creem>,
}

impl Payments {
    /// Settings through `lookup`, keys and webhook secrets taken from `secrets`. A webhook
    /// secret that is set must be strong.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        secrets: &mut Secrets,
    ) -> Result<Self, ConfigError> {
        let settings = PaymentSettings::from_lookup(lookup)?;
        Self::new(settings, secrets)
    }

    pub fn new(settings: PaymentSettings, secrets: &mut Secrets) -> Result<Self, ConfigError> {
        let http = LazyClient::new(Duration::from_secs(15));
        let stripe = pair(secrets, "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET")?.map(
            |(key, webhook_secret)| {
                stripe::Stripe::new(settings.stripe_api(&http, key), webhook_secret)
            },
        );
        let creem =
            pair(secrets, "CREEM_API_KEY", "CREEM_WEBHOOK_SECRET")?.map(|(key, webhook_secret)| {
                creem::Creem::new(
                    settings.creem_api(&http, key),
                    settings.creem_test_mode,
                    webhook_secret,
                )
            });
        Ok(Self { stripe, creem })
    }

    /// No provider configured (every payment route but the catalog answers 503).
    pub fn disabled() -> Self {
        Self {
            stripe: None,
            creem: None,
        }
    }

    /// Whether a provider is configured.
    pub fn enabled(&self, provider: Provider) -> bool {
        match provider {
            Provider::Stripe => self.stripe.is_some(),
            Provider::Creem => self.creem.is_some(),
        }
    }
}

/// Both secrets of a provider, or neither (a provider with one of them is disabled, with
/// a warning naming the missing one).
fn pair(
    secrets: &mut Secrets,
    key: &str,
    webhook: &str,
) -> Result<Option<(Secret, Secret)>, ConfigError> {
    match (secrets.take(key), secrets.take(webhook)) {
        (Some(k), Some(w)) => Ok(Some((k, require_strong(webhook, Some(w))?))),
        (None, None) => Ok(None),
        (Some(_), None) => {
            tracing::warn!(
                missing = webhook,
                "payment provider disabled: {key} is set but {webhook} is not"
            );
            Ok(None)
        }
        (None, Some(_)) => {
            tracing::warn!(
                missing = key,
                "payment provider disabled: {webhook} is set but {key} is not"
            );
            Ok(None)
        }
    }
}

/// Why a webhook's signature was refused (all `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the signature's timestamp is outside the tolerance")]
    Expired,
}

/// Why a verified event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or not the documented shape (400).
    #[error("the event is not in the expected shape: {0}")]
    Malformed(String),
    /// A Creem event of the other mode (test vs live) than configured (400).
    #[error("the event's mode does not match the configured mode")]
    WrongMode,
    /// A product or price id that configuration does not map: the event is parked for an
    /// operator (answered 200, so that the provider stops retrying) and replayed once the
    /// mapping is configured.
    #[error("no product is configured for the provider's id {:?}", .0.provider_product)]
    UnknownProduct(UnmappedProduct),
}

/// A verified event that names a product we have no mapping for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmappedProduct {
    pub event_id: String,
    pub event_type: String,
    /// The provider's price or product id.
    pub provider_product: String,
}

/// Who paid, as the event says: the user id our checkout put in its metadata, and the
/// provider's customer id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    /// Unverified text from the checkout's metadata (`client_reference_id`, `user_id`).
    pub user_id: Option<String>,
    pub customer_id: Option<String>,
}

impl Payer {
    /// The user named by the metadata, if it is a well-formed user id.
    pub fn user(&self) -> Option<UserId> {
        self.user_id.as_deref().and_then(|u| UserId::parse(u).ok())
    }
}

/// A one-time product paid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub payer: Payer,
    /// The id later refund and dispute events carry (Stripe: the payment intent; Creem:
    /// the order).
    pub payment_id: String,
    pub product_id: String,
    /// Paid, in minor units.
    pub amount: Option<i64>,
    pub currency: Option<String>,
}

/// What paid a subscription period, as far as its event says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum PaidBy {
    /// The payment refunds and disputes of this period will carry (Creem: the
    /// subscription's `last_transaction_id`).
    Payment { payment_id: String },
    /// An invoice whose payment another event names (Stripe basil: `invoice_payment.paid`
    /// ties the invoice to its PaymentIntent; webhook invoices carry no `payments`).
    Invoice { invoice_id: String },
    /// Not named: refunds and disputes of this period cannot be tied to it.
    Unknown,
}

/// One paid billing period of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodPaid {
    pub payer: Payer,
    pub subscription_id: String,
    pub product_id: String,
    /// Unix seconds.
    pub period_start: i64,
    pub period_end: i64,
    pub paid_by: PaidBy,
    /// Paid, in minor units.
    pub amount: Option<i64>,
}

/// The payment of an invoice (Stripe `invoice_payment.paid`): links the invoice's period
/// to the PaymentIntent that refunds and disputes carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePayment {
    pub invoice_id: String,
    pub payment_id: String,
    pub amount: Option<i64>,
}

/// A subscription's state as an event reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    pub payer: Payer,
    pub subscription_id: String,
    /// Our product, where the event names a configured one.
    pub product_id: Option<String>,
    pub status: String,
    /// Unix seconds.
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

/// How much of a payment has been refunded, as the event says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Refunded {
    /// The total refunded so far (Stripe's `amount_refunded`): refunds add up by taking
    /// the largest total seen.
    Cumulative { total: i64 },
    /// One refund (Creem's `refund.created`): each id counts once.
    Single { refund_id: String, amount: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub payment_id: String,
    pub refunded: Refunded,
    /// The payment's amount, in minor units, as the refund event reports it.
    pub payment_amount: Option<i64>,
}

/// Where a dispute stands. Stripe's inquiries (`warning_*`) withdraw no funds: only a
/// chargeback (and its loss) takes credits back; a won dispute gives them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStage {
    /// `warning_needs_response`, `warning_under_review`: no funds withdrawn.
    Inquiry,
    /// `needs_response`, `under_review`, or funds withdrawn.
    Chargeback,
    /// `warning_closed` or `prevented`: closed without a loss.
    ClosedWithoutLoss,
    /// `won`, or funds reinstated.
    Won,
    /// `lost`: the funds stay with the cardholder.
    Lost,
}

impl DisputeStage {
    /// Later stages replace earlier ones, whatever order their events arrive in; a
    /// closed dispute never reopens.
    pub fn rank(self) -> u8 {
        match self {
            Self::Inquiry => 0,
            Self::Chargeback => 1,
            Self::ClosedWithoutLoss | Self::Won | Self::Lost => 2,
        }
    }

    /// Whether the funds are (still) taken.
    pub fn takes_funds(self) -> bool {
        matches!(self, Self::Chargeback | Self::Lost)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    pub payment_id: String,
    pub dispute_id: String,
    pub amount: i64,
    pub payment_amount: Option<i64>,
    pub stage: DisputeStage,
}

/// What an event means for us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Grant a one-time product's credits (`purchase`), once per payment.
    Purchase(Purchase),
    /// A subscription's checkout completed: it grants nothing (its invoices do), but
    /// tells which user the customer is.
    SubscriptionCheckout(Payer),
    /// Grant a subscription period's credits (`subscription`), once per period; the
    /// subscription is active until the period's end.
    PeriodPaid(PeriodPaid),
    /// An invoice's payment: which payment later refunds and disputes of its period name.
    InvoicePayment(InvoicePayment),
    /// A status change, applied only if newer than what is recorded.
    SubscriptionChanged(SubscriptionState),
    /// Claw back in proportion to the amount refunded.
    Refund(Refund),
    /// A dispute opened, moved on or closed: a chargeback claws back in proportion to
    /// the amount disputed, a won one gives it back, an inquiry takes nothing.
    Dispute(Dispute),
    /// Nothing to do (an event type or state we do not act on).
    Ignored { why: String },
}

/// A verified provider event, read into what it means for us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub provider: Provider,
    /// The provider's event id: an event applies once per (provider, id).
    pub id: String,
    pub event_type: String,
    /// The provider's time of the event, in milliseconds since the epoch; status changes
    /// apply only if newer than the recorded one.
    pub occurred_at_ms: i64,
    pub effect: Effect,
}

/// A checkout to start for a signed-in user.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub user: UserId,
    pub email: Option<String>,
    pub product: &'static Product,
    pub success_url: String,
    pub cancel_url: String,
    /// The user's customer at this provider, when one is known.
    pub customer_id: Option<String>,
}

/// A provider's hosted checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub session_id: String,
    pub url: String,
}

/// Why a call to a provider's API did not produce what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// This provider does not sell the product here (no id configured): 503.
    #[error("{0}")]
    NotOffered(String),
    /// The provider failed or answered something unexpected: 502.
    #[error("the payment provider failed")]
    Upstream(#[source] anyhow::Error),
}

impl From<ClientError> for ProviderError {
    fn from(error: ClientError) -> Self {
        ProviderError::Upstream(error.into())
    }
}

/// Sends a request and reads a JSON answer; a non-2xx status is an upstream failure whose
/// message carries the provider's error text (never our key).
pub(crate) async fn send_json(
    provider: Provider,
    request: reqwest::RequestBuilder,
) -> Result<serde_json::Value, ProviderError> {
    let upstream = |e: anyhow::Error| ProviderError::Upstream(e.context(provider.as_str()));
    let response = request
        .send()
        .await
        .map_err(|e| upstream(anyhow::Error::new(e.without_url())))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| upstream(anyhow::Error::new(e.without_url())))?;
    if !status.is_success() {
        let snippet: String = text.chars().take(300).collect();
        return Err(upstream(anyhow::anyhow!("answered {status}: {snippet}")));
    }
    serde_json::from_str(&text).map_err(|e| upstream(anyhow::anyhow!("answered non-JSON: {e}")))
}

/// Whether a provider's failure was its `404`: the thing asked about is gone.
pub(crate) fn is_not_found(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.to_string().starts_with("answered 404"))
}

/// An id as one URL path segment (ids are ASCII words; anything else is escaped).
pub(crate) fn url_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// A string field, or the `id` of an expanded object in its place.
pub(crate) fn id_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("id").and_then(id_of),
        _ => None,
    }
}

pub(crate) fn text(value: &serde_json::Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn settings_default_to_the_live_apis_and_the_pinned_stripe_version() {
        let settings = PaymentSettings::from_lookup(lookup(&[])).unwrap();
        assert_eq!(settings.stripe_base_url, "https://api.stripe.com");
        assert_eq!(settings.stripe_api_version, "2025-03-31.basil");
        assert_eq!(settings.creem_base_url, "https://api.creem.io");
        assert!(!settings.creem_test_mode);
        assert_eq!(settings.stripe_prices.provider_id("credits_100"), None);
    }

    #[test]
    fn creem_test_mode_selects_the_test_api_and_ids_map_both_ways() {
        let settings = PaymentSettings::from_lookup(lookup(&[
            ("CREEM_TEST_MODE", "1"),
            ("CREEM_PRODUCT_PRO_MONTHLY", "prod_month"),
            ("STRIPE_PRICE_CREDITS_100", "price_100"),
        ]))
        .unwrap();
        assert_eq!(settings.creem_base_url, "https://test-api.creem.io");
        assert_eq!(
            settings.creem_products.provider_id("pro_monthly"),
            Some("prod_month")
        );
        assert_eq!(
            settings.stripe_prices.product_of("price_100").map(|p| p.id),
            Some("credits_100")
        );
        assert!(settings.stripe_prices.product_of("price_999").is_none());
    }

    #[test]
    fn one_provider_id_for_two_products_and_a_bad_mode_are_refused() {
        assert!(
            PaymentSettings::from_lookup(lookup(&[
                ("STRIPE_PRICE_CREDITS_100", "price_x"),
                ("STRIPE_PRICE_CREDITS_500", "price_x"),
            ]))
            .is_err()
        );
        assert!(PaymentSettings::from_lookup(lookup(&[("CREEM_TEST_MODE", "yes")])).is_err());
    }

    #[test]
    fn a_provider_with_only_one_of_its_secrets_is_disabled() {
        let mut secrets = Secrets::from_pairs([
            ("STRIPE_SECRET_KEY", "sk_test_123"),
            ("CREEM_API_KEY", "creem_test_123"),
            (
                "CREEM_WEBHOOK_SECRET",
                "whsec_0123456789abcdefghijklmnopqrstuv",
            ),
        ]);
        let payments = Payments::from_lookup(lookup(&[]), &mut secrets).unwrap();
        assert!(!payments.enabled(Provider::Stripe));
        assert!(payments.enabled(Provider::Creem));
    }

    #[test]
    fn a_weak_webhook_secret_is_refused() {
        let mut secrets = Secrets::from_pairs([
            ("STRIPE_SECRET_KEY", "sk_test_123"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_short"),
        ]);
        assert!(Payments::from_lookup(lookup(&[]), &mut secrets).is_err());
    }
}
