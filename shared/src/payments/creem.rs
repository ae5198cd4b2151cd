//! Creem: `creem-signature` verification (hex HMAC-SHA256 of the raw body; Creem signs no
//! timestamp, so applied event ids are kept for good), events whose test/live mode must
//! match the configuration, and the checkout, customer-portal and cancel APIs
//! (`x-api-key`).
//!
//! Which payment a refund or dispute is about: a one-time purchase is keyed by its order
//! (`checkout.completed` `order.id`); a subscription period by the transaction that paid it
//! (`subscription.paid` `last_transaction_id`), which `refund.created` and
//! `dispute.created` name as `transaction.id` (with the `subscription` they concern).

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::{
    CheckoutRequest, CheckoutSession, Dispute, DisputeStage, Effect, PaidBy, ParseError, Payer,
    PaymentEvent, PeriodPaid, ProductIds, Provider, ProviderError, Purchase, Refund, Refunded,
    SubscriptionState, UnmappedProduct, VerifyError, id_of, send_json, text,
};
use crate::config::Secret;
use crate::domain::products::{self, Product, ProductKind};
use crate::outbound::LazyClient;

/// Creem, configured with its key, webhook secret, mode and product ids.
#[derive(Debug)]
pub struct Creem {
    api: CreemApi,
    webhook_secret: Secret,
    reader: EventReader,
}

/// Creem's API with the key: checkout, portal, cancel.
#[derive(Debug, Clone)]
pub struct CreemApi {
    http: LazyClient,
    base_url: String,
    api_key: Secret,
    products: ProductIds,
}

/// Reads verified events (no secret needed; see the Stripe reader).
#[derive(Debug, Clone)]
pub struct EventReader {
    test_mode: bool,
    products: ProductIds,
}

/// Verifies `creem-signature`: the hex HMAC-SHA256 of the raw body under `secret`,
/// compared in constant time.
pub fn verify_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), VerifyError> {
    let header = header.ok_or(VerifyError::Missing)?;
    let given = hex::decode(header.trim()).map_err(|_| VerifyError::Malformed)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(given.as_slice())) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn malformed(what: &str) -> ParseError {
    ParseError::Malformed(what.to_string())
}

/// A Creem time: RFC 3339 text, or milliseconds since the epoch; in Unix seconds.
fn unix_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(OffsetDateTime::unix_timestamp)
        }
        Value::Number(n) => n
            .as_i64()
            .map(|n| if n > 100_000_000_000 { n / 1000 } else { n }),
        _ => None,
    }
}

/// The payment a refund or dispute is about: a subscription's transaction (what
/// `subscription.paid` named as `last_transaction_id`), else the one-time purchase's order.
fn payment_of(object: &Value) -> Option<String> {
    let transaction = &object["transaction"];
    let of_subscription = object["subscription"].is_object()
        || object["subscription"].is_string()
        || transaction["type"].as_str() == Some("invoice")
        || id_of(&transaction["subscription"]).is_some();
    let order = id_of(&object["order"]).or_else(|| id_of(&transaction["order"]));
    if of_subscription {
        id_of(transaction).or(order)
    } else {
        order
            .or_else(|| id_of(transaction))
            .or_else(|| id_of(&object["checkout"]))
    }
}

/// The event's test/live mode: on the object, else on what it carries. Creem's documented
/// `subscription.paid`, `refund.created` and `dispute.created` payloads state none; their
/// signature, made with the secret of one mode's dashboard, is then what tells.
fn mode_of(object: &Value) -> Option<&str> {
    object["mode"].as_str().or_else(|| {
        [
            "order",
            "product",
            "customer",
            "transaction",
            "subscription",
        ]
        .iter()
        .find_map(|key| object[*key]["mode"].as_str())
    })
}

/// The amount of the payment a refund or dispute is about, on the same basis (taxes
/// included) as the refunded amount where Creem reports it.
fn payment_amount_of(object: &Value) -> Option<i64> {
    object["transaction"]["amount_paid"]
        .as_i64()
        .or_else(|| object["order"]["amount_paid"].as_i64())
        .or_else(|| object["order"]["amount"].as_i64())
}

impl Creem {
    pub fn new(api: CreemApi, test_mode: bool, webhook_secret: Secret) -> Self {
        let reader = EventReader::new(test_mode, api.products.clone());
        Self {
            api,
            webhook_secret,
            reader,
        }
    }

    /// Verifies a webhook delivery (see [`verify_signature`]).
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
        verify_signature(self.webhook_secret.expose(), header, body)
    }

    /// Whether the product is sold through Creem here.
    pub fn offers(&self, product_id: &str) -> bool {
        self.api.products.provider_id(product_id).is_some()
    }

    /// Reads a verified event; one of the other mode is refused.
    pub fn parse_event(&self, body: &[u8]) -> Result<PaymentEvent, ParseError> {
        self.reader.parse_event(body)
    }

    pub fn api(&self) -> &CreemApi {
        &self.api
    }

    pub async fn create_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError> {
        self.api.create_checkout(request).await
    }

    pub async fn create_portal(&self, customer_id: &str) -> Result<String, ProviderError> {
        self.api.create_portal(customer_id).await
    }
}

impl EventReader {
    pub fn new(test_mode: bool, products: ProductIds) -> Self {
        Self {
            test_mode,
            products,
        }
    }

    /// Whether an event's `mode` is the configured one (test events in test mode only,
    /// live events in live mode only); an event that states no mode is taken as its
    /// signature's.
    fn mode_matches(&self, mode: Option<&str>) -> bool {
        match mode {
            Some("test" | "sandbox" | "local") => self.test_mode,
            Some("prod" | "live") => !self.test_mode,
            Some(_) => false,
            None => true,
        }
    }

    /// Our product for Creem's id, else the one our checkout's metadata names (of the kind
    /// the event is about).
    fn product(
        &self,
        provider_product: Option<String>,
        metadata: &Value,
        kind: ProductKind,
        unmapped: &impl Fn(String) -> ParseError,
    ) -> Result<&'static Product, ParseError> {
        let mapped = provider_product
            .as_deref()
            .and_then(|p| self.products.product_of(p))
            .filter(|p| p.kind == kind);
        if let Some(product) = mapped {
            return Ok(product);
        }
        let named = text(&metadata["product_id"])
            .and_then(|p| products::product(&p))
            .filter(|p| p.kind == kind);
        match (named, provider_product) {
            (Some(product), provider_product) => {
                tracing::warn!(
                    provider_product,
                    product = product.id,
                    "a Creem product no id is configured for: resolved from the checkout's metadata"
                );
                Ok(product)
            }
            (None, Some(provider_product)) => Err(unmapped(provider_product)),
            (None, None) => Err(malformed("an event without its product")),
        }
    }

    /// Reads a verified event; one of the other mode is refused.
    pub fn parse_event(&self, body: &[u8]) -> Result<PaymentEvent, ParseError> {
        let event: Value =
            serde_json::from_slice(body).map_err(|_| malformed("the body is not JSON"))?;
        let id = text(&event["id"]).ok_or_else(|| malformed("no event id"))?;
        let event_type = text(&event["eventType"]).ok_or_else(|| malformed("no eventType"))?;
        let occurred_at_ms = event["created_at"]
            .as_i64()
            .ok_or_else(|| malformed("no created_at"))?;
        let object = &event["object"];
        if !object.is_object() {
            return Err(malformed("no object"));
        }
        if !self.mode_matches(mode_of(object)) {
            return Err(ParseError::WrongMode);
        }
        let unmapped = |provider_product: String| {
            ParseError::UnknownProduct(UnmappedProduct {
                event_id: id.clone(),
                event_type: event_type.clone(),
                provider_product,
            })
        };
        let effect = match event_type.as_str() {
            "checkout.completed" => self.checkout_completed(object, &unmapped)?,
            "subscription.paid" => self.subscription_paid(object, &unmapped)?,
            "subscription.active"
            | "subscription.update"
            | "subscription.canceled"
            | "subscription.expired"
            | "subscription.trialing"
            | "subscription.paused"
            | "subscription.past_due"
            | "subscription.unpaid"
            | "subscription.scheduled_cancel" => self.subscription_changed(object)?,
            "refund.created" => Effect::Refund(Refund {
                payment_id: payment_of(object)
                    .ok_or_else(|| malformed("a refund without its payment"))?,
                refunded: Refunded::Single {
                    refund_id: text(&object["id"])
                        .ok_or_else(|| malformed("a refund without id"))?,
                    amount: object["refund_amount"]
                        .as_i64()
                        .ok_or_else(|| malformed("a refund without refund_amount"))?,
                },
                payment_amount: payment_amount_of(object),
            }),
            // A chargeback: Creem's disputes withdraw the funds when they open.
            "dispute.created" => Effect::Dispute(Dispute {
                payment_id: payment_of(object)
                    .ok_or_else(|| malformed("a dispute without its payment"))?,
                dispute_id: text(&object["id"]).ok_or_else(|| malformed("a dispute without id"))?,
                amount: object["amount"]
                    .as_i64()
                    .ok_or_else(|| malformed("a dispute without amount"))?,
                payment_amount: payment_amount_of(object),
                stage: DisputeStage::Chargeback,
            }),
            other => Effect::Ignored {
                why: format!("event type {other} is not acted on"),
            },
        };
        Ok(PaymentEvent {
            provider: Provider::Creem,
            id,
            event_type,
            occurred_at_ms,
            effect,
        })
    }

    fn payer(object: &Value) -> Payer {
        Payer {
            user_id: text(&object["metadata"]["user_id"])
                .or_else(|| text(&object["subscription"]["metadata"]["user_id"])),
            customer_id: id_of(&object["customer"]).or_else(|| id_of(&object["order"]["customer"])),
        }
    }

    /// A completed checkout: a one-time product is a purchase keyed by its order; a
    /// subscription product grants nothing here (`subscription.paid` does).
    fn checkout_completed(
        &self,
        checkout: &Value,
        unmapped: &impl Fn(String) -> ParseError,
    ) -> Result<Effect, ParseError> {
        let provider_product =
            id_of(&checkout["product"]).or_else(|| id_of(&checkout["order"]["product"]));
        let payer = Self::payer(checkout);
        let recurring = checkout["product"]["billing_type"].as_str() == Some("recurring")
            || checkout["order"]["type"].as_str() == Some("recurring")
            || checkout["subscription"].is_object();
        let mapped_kind = provider_product
            .as_deref()
            .and_then(|p| self.products.product_of(p))
            .map(|p| p.kind);
        let kind = mapped_kind.unwrap_or(if recurring {
            ProductKind::Subscription
        } else {
            ProductKind::OneTime
        });
        let product = self.product(provider_product, &checkout["metadata"], kind, unmapped)?;
        if product.kind == ProductKind::Subscription {
            return Ok(Effect::SubscriptionCheckout(payer));
        }
        let order = &checkout["order"];
        Ok(Effect::Purchase(Purchase {
            payer,
            payment_id: id_of(order)
                .or_else(|| id_of(&checkout["id"]))
                .ok_or_else(|| malformed("a checkout without its order"))?,
            product_id: product.id.to_string(),
            amount: order["amount_paid"]
                .as_i64()
                .or_else(|| order["amount"].as_i64()),
            currency: text(&order["currency"]),
        }))
    }

    /// A paid subscription period: product and period from the subscription.
    fn subscription_paid(
        &self,
        subscription: &Value,
        unmapped: &impl Fn(String) -> ParseError,
    ) -> Result<Effect, ParseError> {
        let product = self.product(
            id_of(&subscription["product"]),
            &subscription["metadata"],
            ProductKind::Subscription,
            unmapped,
        )?;
        // The transaction that paid the period: refunds and disputes name it.
        let transaction = &subscription["last_transaction"];
        let paid_by = text(&subscription["last_transaction_id"])
            .or_else(|| id_of(transaction))
            .map(|payment_id| PaidBy::Payment { payment_id })
            .unwrap_or(PaidBy::Unknown);
        Ok(Effect::PeriodPaid(PeriodPaid {
            payer: Self::payer(subscription),
            subscription_id: text(&subscription["id"])
                .ok_or_else(|| malformed("a subscription without id"))?,
            product_id: product.id.to_string(),
            period_start: unix_seconds(&subscription["current_period_start_date"])
                .ok_or_else(|| malformed("a subscription without current_period_start_date"))?,
            period_end: unix_seconds(&subscription["current_period_end_date"])
                .ok_or_else(|| malformed("a subscription without current_period_end_date"))?,
            paid_by,
            amount: transaction["amount_paid"]
                .as_i64()
                .or_else(|| transaction["amount"].as_i64()),
        }))
    }

    fn subscription_changed(&self, subscription: &Value) -> Result<Effect, ParseError> {
        let status = text(&subscription["status"])
            .ok_or_else(|| malformed("a subscription without status"))?;
        // Creem's "scheduled_cancel" is an active subscription that ends with its period.
        let (status, scheduled) = match status.as_str() {
            "scheduled_cancel" => ("active".to_string(), true),
            _ => (status, false),
        };
        Ok(Effect::SubscriptionChanged(SubscriptionState {
            payer: Self::payer(subscription),
            subscription_id: text(&subscription["id"])
                .ok_or_else(|| malformed("a subscription without id"))?,
            product_id: id_of(&subscription["product"])
                .and_then(|p| self.products.product_of(&p))
                .map(|p| p.id.to_string()),
            status,
            current_period_end: unix_seconds(&subscription["current_period_end_date"]),
            cancel_at_period_end: scheduled
                || subscription["cancel_at_period_end"]
                    .as_bool()
                    .unwrap_or(false),
        }))
    }
}

impl CreemApi {
    pub fn new(http: LazyClient, base_url: &str, api_key: Secret, products: ProductIds) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            products,
        }
    }

    /// Cancels a subscription at once (`POST /v1/subscriptions/{id}/cancel` with
    /// `mode: immediate`: no further period is billed). One Creem no longer knows (404)
    /// counts as canceled.
    pub async fn cancel_subscription(&self, subscription_id: &str) -> Result<(), ProviderError> {
        let request = self
            .http
            .get()?
            .post(format!(
                "{}/v1/subscriptions/{}/cancel",
                self.base_url,
                super::url_segment(subscription_id)
            ))
            .header("x-api-key", self.api_key.expose())
            .json(&json!({ "mode": "immediate" }));
        match send_json(Provider::Creem, request).await {
            Ok(_) => Ok(()),
            Err(ProviderError::Upstream(e)) if super::is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a checkout for the configured product, with a `request_id` and the user
    /// and product in `metadata`; its `checkout_url`.
    pub async fn create_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutSession, ProviderError> {
        let product = self
            .products
            .provider_id(request.product.id)
            .ok_or_else(|| {
                ProviderError::NotOffered(format!(
                    "{} is not sold through Creem here",
                    request.product.id
                ))
            })?;
        let mut body = json!({
            "product_id": product,
            "request_id": format!("chk_{}", ulid::Ulid::new()),
            "success_url": request.success_url,
            "metadata": {
                "user_id": request.user.to_string(),
                "product_id": request.product.id,
            },
        });
        if let Some(email) = &request.email {
            body["customer"] = json!({ "email": email });
        }
        let answer = send_json(
            Provider::Creem,
            self.http
                .get()?
                .post(format!("{}/v1/checkouts", self.base_url))
                .header("x-api-key", self.api_key.expose())
                .json(&body),
        )
        .await?;
        match (text(&answer["id"]), text(&answer["checkout_url"])) {
            (Some(session_id), Some(url)) => Ok(CheckoutSession { session_id, url }),
            _ => Err(ProviderError::Upstream(anyhow::anyhow!(
                "creem: a checkout without id or checkout_url"
            ))),
        }
    }

    /// The customer's portal link.
    pub async fn create_portal(&self, customer_id: &str) -> Result<String, ProviderError> {
        let answer = send_json(
            Provider::Creem,
            self.http
                .get()?
                .post(format!("{}/v1/customers/billing", self.base_url))
                .header("x-api-key", self.api_key.expose())
                .json(&json!({ "customer_id": customer_id })),
        )
        .await?;
        text(&answer["customer_portal_link"]).ok_or_else(|| {
            ProviderError::Upstream(anyhow::anyhow!("creem: a portal answer without its link"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_creem_0123456789abcdefghijklmn";

    fn sign(body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    fn creem(test_mode: bool) -> EventReader {
        EventReader::new(
            test_mode,
            ProductIds::from_pairs(&[("credits_100", "prod_100"), ("pro_monthly", "prod_month")]),
        )
    }

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        let body = br#"{"id":"evt_1"}"#;
        assert_eq!(verify_signature(SECRET, Some(&sign(body)), body), Ok(()));
        assert_eq!(
            verify_signature(SECRET, Some(&sign(b"other")), body),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_signature(SECRET, None, body),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify_signature(SECRET, Some("not hex"), body),
            Err(VerifyError::Malformed)
        );
    }

    fn checkout(mode: &str) -> Vec<u8> {
        json!({
            "id": "evt_1", "eventType": "checkout.completed", "created_at": 1_728_734_325_927_i64,
            "object": {
                "id": "ch_1", "object": "checkout", "request_id": "chk_1", "status": "completed",
                "order": {"id": "ord_1", "customer": "cust_1", "product": "prod_100",
                          "amount": 999, "currency": "USD", "status": "paid", "type": "onetime", "mode": mode},
                "product": {"id": "prod_100", "billing_type": "onetime", "mode": mode},
                "customer": {"id": "cust_1", "object": "customer", "mode": mode},
                "metadata": {"user_id": "usr_x", "product_id": "credits_100"},
                "mode": mode
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_one_time_checkout_is_a_purchase_keyed_by_its_order() {
        let event = creem(true).parse_event(&checkout("test")).unwrap();
        let Effect::Purchase(purchase) = event.effect else {
            panic!("{event:?}")
        };
        assert_eq!(purchase.payment_id, "ord_1");
        assert_eq!(purchase.product_id, "credits_100");
        assert_eq!(purchase.payer.customer_id.as_deref(), Some("cust_1"));
        assert_eq!(purchase.payer.user_id.as_deref(), Some("usr_x"));
    }

    #[test]
    fn an_event_of_the_other_mode_is_refused() {
        assert!(matches!(
            creem(false).parse_event(&checkout("test")),
            Err(ParseError::WrongMode)
        ));
        assert!(matches!(
            creem(true).parse_event(&checkout("prod")),
            Err(ParseError::WrongMode)
        ));
        assert!(creem(false).parse_event(&checkout("prod")).is_ok());
    }

    #[test]
    fn creem_times_are_read_as_unix_seconds() {
        assert_eq!(
            unix_seconds(&json!("2024-10-12T11:58:38.000Z")),
            Some(1_728_734_318)
        );
        assert_eq!(
            unix_seconds(&json!(1_728_734_318_000_i64)),
            Some(1_728_734_318)
        );
    }
}
