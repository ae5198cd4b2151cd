//! Helpers of the payment and account-deletion tests: fake Stripe and Creem APIs on
//! loopback that record what they were sent, events signed as the providers sign them,
//! and the providers' documented event shapes (`tests/fixtures/{stripe,creem}`, see the
//! README there for the pages they come from).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Sha256;
use shared::aws::secrets::Secrets;
use shared::domain::UserId;
use shared::payments::{PaymentSettings, Payments};

use crate::{Answer, Stack, dev_login, request, send};

pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_test_stripe_0123456789abcdefghijkl";
pub const CREEM_WEBHOOK_SECRET: &str = "whsec_test_creem_0123456789abcdefghijklm";
pub const STRIPE_KEY: &str = "sk_test_fake_key";
pub const CREEM_KEY: &str = "creem_test_fake_key";
pub const API_VERSION: &str = "2025-03-31.basil";
pub const DAY: i64 = 86_400;
/// A fixed past time for event ordering (signatures use the present).
pub const T0: i64 = 1_760_000_000;

// ---------------------------------------------------------------- fake providers

/// A request a fake provider received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Seen {
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// What the fakes received, and how many cancels they should still refuse (with a 500).
#[derive(Debug, Clone, Default)]
pub struct Fakes {
    pub log: Arc<Mutex<Vec<Seen>>>,
    pub failing_cancels: Arc<AtomicUsize>,
}

impl Fakes {
    /// The last request to `path`.
    pub fn seen(&self, path: &str) -> Option<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.path == path)
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.log.lock().unwrap().is_empty()
    }
}

/// Fake Stripe and Creem APIs on one loopback port, answering in their documented
/// shapes: checkout, portal, and subscription cancel (Stripe `DELETE
/// /v1/subscriptions/{id}`, Creem `POST /v1/subscriptions/{id}/cancel`).
pub async fn fake_providers() -> (String, Fakes) {
    let fakes = Fakes::default();
    let seen = fakes.clone();
    let app = Router::new().fallback(move |request: AxumRequest| {
        let fakes = seen.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_string();
            fakes.log.lock().unwrap().push(Seen {
                method: parts.method.clone(),
                path: path.clone(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let cancel = path.starts_with("/v1/subscriptions/");
            if cancel
                && fakes
                    .failing_cancels
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": {"type": "api_error", "message": "try again"}}).to_string(),
                )
                    .into_response();
            }
            let answer = match (parts.method.as_str(), path.as_str()) {
                (_, "/v1/checkout/sessions") => json!({
                    "id": "cs_test_a1", "object": "checkout.session",
                    "url": "https://checkout.stripe.com/c/pay/cs_test_a1", "status": "open"
                }),
                (_, "/v1/billing_portal/sessions") => json!({
                    "id": "bps_test_1", "object": "billing_portal.session",
                    "url": "https://billing.stripe.com/p/session/test_1"
                }),
                (_, "/v1/checkouts") => json!({
                    "id": "ch_test_1", "object": "checkout", "status": "pending", "mode": "test",
                    "checkout_url": "https://creem.io/test/checkout/prod_credits_100/ch_test_1"
                }),
                (_, "/v1/customers/billing") => json!({
                    "customer_portal_link": "https://creem.io/test/my-orders/login/portal_1"
                }),
                ("DELETE", p) if p.starts_with("/v1/subscriptions/") => json!({
                    "id": p.trim_start_matches("/v1/subscriptions/"), "object": "subscription",
                    "status": "canceled", "cancel_at_period_end": false,
                    "canceled_at": 1_760_000_000, "ended_at": 1_760_000_000
                }),
                ("POST", p) if p.starts_with("/v1/subscriptions/") && p.ends_with("/cancel") => {
                    json!({
                        "id": p.trim_start_matches("/v1/subscriptions/").trim_end_matches("/cancel"),
                        "object": "subscription", "status": "canceled", "mode": "test",
                        "canceled_at": "2025-10-09T08:53:20.000Z"
                    })
                }
                _ => return (StatusCode::NOT_FOUND, "{}").into_response(),
            };
            (StatusCode::OK, answer.to_string()).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, fakes)
}

/// Payment settings with every product mapped but those in `unmapped`, both providers
/// pointing at `base`.
pub fn settings_without(base: &str, unmapped: &'static [&'static str]) -> PaymentSettings {
    let base = base.to_string();
    PaymentSettings::from_lookup(move |name| {
        if unmapped.contains(&name) {
            return None;
        }
        let value = match name {
            "STRIPE_BASE_URL" | "CREEM_BASE_URL" => base.as_str(),
            "CREEM_TEST_MODE" => "1",
            "STRIPE_PRICE_CREDITS_100" => "price_credits_100",
            "STRIPE_PRICE_CREDITS_500" => "price_credits_500",
            "STRIPE_PRICE_PRO_MONTHLY" => "price_pro_monthly",
            "STRIPE_PRICE_PRO_YEARLY" => "price_pro_yearly",
            "CREEM_PRODUCT_CREDITS_100" => "prod_credits_100",
            "CREEM_PRODUCT_CREDITS_500" => "prod_credits_500",
            "CREEM_PRODUCT_PRO_MONTHLY" => "prod_pro_monthly",
            "CREEM_PRODUCT_PRO_YEARLY" => "prod_pro_yearly",
            _ => return None,
        };
        Some(value.to_string())
    })
    .expect("valid payment settings")
}

/// Payment settings with every product mapped.
pub fn settings(base: &str) -> PaymentSettings {
    settings_without(base, &[])
}

fn secrets() -> Secrets {
    Secrets::from_pairs([
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
        ("CREEM_API_KEY", CREEM_KEY),
        ("CREEM_WEBHOOK_SECRET", CREEM_WEBHOOK_SECRET),
    ])
}

pub fn payments_with(settings: PaymentSettings) -> Arc<Payments> {
    Arc::new(Payments::new(settings, &mut secrets()).expect("valid payment secrets"))
}

pub fn payments(base: &str) -> Arc<Payments> {
    payments_with(settings(base))
}

/// The auth function's context with the payment API keys, pointed at `base` (so that
/// account deletion cancels there).
pub fn auth_with_billing(base: &str) -> Arc<auth::AuthContext> {
    let base = base.to_string();
    let context = auth::AuthContext::from_lookup(
        move |name| match name {
            "STRIPE_BASE_URL" | "CREEM_BASE_URL" => Some(base.clone()),
            "CREEM_TEST_MODE" => Some("1".into()),
            _ => None,
        },
        &mut secrets(),
    )
    .expect("a valid auth configuration");
    Arc::new(context)
}

/// A stack whose router serves payments and account deletion through the fake providers,
/// and a signed-in user (10 credits of signup bonus).
pub struct Pay {
    pub stack: Stack,
    pub router: Router,
    pub fakes: Fakes,
    pub base: String,
    pub token: String,
    pub user: String,
}

pub async fn pay_stack(test: &str) -> Pay {
    pay_stack_with(test, &[]).await
}

/// Like [`pay_stack`], with the webhook's configuration lacking the ids in `unmapped`.
pub async fn pay_stack_with(test: &str, unmapped: &'static [&'static str]) -> Pay {
    let (base, fakes) = fake_providers().await;
    let stack = crate::stack_with_auth(test, |_| {}, auth_with_billing(&base)).await;
    let router = webhook::with_payments(
        stack.router.clone(),
        payments_with(settings_without(&base, unmapped)),
    );
    let (token, user) = dev_login(&stack.router, &format!("{test}@example.com")).await;
    let user = user["id"].as_str().unwrap().to_string();
    Pay {
        stack,
        router,
        fakes,
        base,
        token,
        user,
    }
}

impl Pay {
    pub async fn balance(&self) -> i64 {
        self.stack.balance(&self.token).await
    }

    pub async fn me(&self) -> Value {
        send(
            &self.router,
            request(Method::GET, "/v1/me", Some(&self.token), None),
        )
        .await
        .body
    }

    pub async fn stripe(&self, event: &Value) -> Answer {
        send(&self.router, stripe_request(&event.to_string(), now())).await
    }

    pub async fn creem(&self, event: &Value) -> Answer {
        send(&self.router, creem_request(&event.to_string())).await
    }

    pub fn user_id(&self) -> UserId {
        UserId::parse(&self.user).unwrap()
    }

    /// The balance as the store holds it (also for a deleted account's tombstone).
    pub async fn stored_balance(&self) -> i64 {
        self.stack
            .services
            .store
            .get_user(self.user_id())
            .await
            .unwrap()
            .expect("the profile")
            .credits
    }

    pub async fn ledger_sum(&self) -> i64 {
        self.stack
            .services
            .store
            .ledger_sum(self.user_id())
            .await
            .unwrap()
    }

    pub fn seen(&self, path: &str) -> Seen {
        self.fakes
            .seen(path)
            .unwrap_or_else(|| panic!("nothing was sent to {path}"))
    }

    /// The operator's command on this stack, with the webhook's payment ids (or
    /// `settings`).
    pub fn admin(&self, settings: PaymentSettings) -> admin::Admin {
        let config = &self.stack.services.settings;
        admin::Admin {
            store: self.stack.services.store.clone(),
            queue: shared::aws::sqs::JobQueue::new(
                self.stack.clients.sqs.clone(),
                config.queue_url.clone(),
            ),
            queue_url: config.queue_url.clone(),
            dlq_url: config.dlq_url.clone(),
            payments: settings,
            operator: "ops-ada".into(),
        }
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

pub fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

pub fn stripe_signature(body: &str, t: i64) -> String {
    let sig = hmac_hex(
        STRIPE_WEBHOOK_SECRET,
        &[t.to_string().as_bytes(), b".", body.as_bytes()],
    );
    format!("t={t},v1={sig}")
}

pub fn stripe_request(body: &str, t: i64) -> Request<Body> {
    webhook_request(
        "/webhooks/stripe",
        Some(("stripe-signature", stripe_signature(body, t))),
        body,
    )
}

pub fn creem_request(body: &str) -> Request<Body> {
    let sig = hmac_hex(CREEM_WEBHOOK_SECRET, &[body.as_bytes()]);
    webhook_request("/webhooks/creem", Some(("creem-signature", sig)), body)
}

pub fn webhook_request(path: &str, signature: Option<(&str, String)>, body: &str) -> Request<Body> {
    let mut builder = Request::post(path).header("content-type", "application/json; charset=utf-8");
    if let Some((name, value)) = signature {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

pub fn assert_received(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body, json!({"received": true}));
}

/// A documented event shape from `tests/fixtures`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------- Stripe events (basil)

pub fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "api_version": API_VERSION, "created": created,
        "type": kind, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object}
    })
}

/// `checkout.session.completed` of a one-time product, paid: keyed by its payment intent.
pub fn stripe_purchase(
    id: &str,
    user: &str,
    product: &str,
    pi: &str,
    customer: &str,
    amount: i64,
) -> Value {
    stripe_event(
        id,
        "checkout.session.completed",
        now(),
        json!({
            "id": format!("cs_test_{pi}"), "object": "checkout.session", "mode": "payment",
            "status": "complete", "payment_status": "paid",
            "client_reference_id": user, "customer": customer, "payment_intent": pi,
            "amount_subtotal": amount, "amount_total": amount, "currency": "usd",
            "metadata": {"user_id": user, "product_id": product},
            "subscription": null, "invoice": null, "livemode": false, "created": now()
        }),
    )
}

pub fn stripe_subscription_checkout(
    id: &str,
    user: &str,
    sub: &str,
    customer: &str,
    created: i64,
) -> Value {
    stripe_event(
        id,
        "checkout.session.completed",
        created,
        json!({
            "id": format!("cs_test_{sub}"), "object": "checkout.session", "mode": "subscription",
            "status": "complete", "payment_status": "paid",
            "client_reference_id": user, "customer": customer, "payment_intent": null,
            "subscription": sub, "amount_total": 2999, "currency": "usd",
            "metadata": {"user_id": user, "product_id": "pro_monthly"}
        }),
    )
}

/// An invoice event in basil's shape (`tests/fixtures/stripe/invoice.paid.json`): the
/// subscription under `parent.subscription_details` (with the metadata our checkout set),
/// the price under the line's `pricing.price_details`, the period on the line; no payment.
pub struct Invoice<'a> {
    pub user: Option<&'a str>,
    pub sub: &'a str,
    pub customer: &'a str,
    pub reason: &'a str,
    pub amount_paid: i64,
    pub period: i64,
    pub proration: bool,
    pub price: &'a str,
    /// Days a period lasts.
    pub days: i64,
}

impl Invoice<'_> {
    pub fn period_start(&self) -> i64 {
        T0 + self.days * DAY * self.period
    }

    pub fn invoice_id(&self) -> String {
        format!("in_{}_{}", self.sub, self.period)
    }

    pub fn event(&self, id: &str, kind: &str) -> Value {
        let start = self.period_start();
        let end = start + self.days * DAY;
        let mut event = fixture("stripe/invoice.paid.json");
        event["id"] = json!(id);
        event["type"] = json!(kind);
        event["created"] = json!(start + 60);
        let invoice = &mut event["data"]["object"];
        invoice["id"] = json!(self.invoice_id());
        invoice["customer"] = json!(self.customer);
        invoice["billing_reason"] = json!(self.reason);
        invoice["amount_due"] = json!(self.amount_paid);
        invoice["amount_paid"] = json!(self.amount_paid);
        invoice["amount_remaining"] = json!(0);
        invoice["period_start"] = json!(start - self.days * DAY);
        invoice["period_end"] = json!(start);
        let details = &mut invoice["parent"]["subscription_details"];
        details["subscription"] = json!(self.sub);
        details["metadata"] = match self.user {
            Some(user) => json!({"user_id": user, "product_id": "pro_monthly"}),
            None => json!({}),
        };
        let line = &mut invoice["lines"]["data"][0];
        line["id"] = json!(format!("il_{}_{}", self.sub, self.period));
        line["amount"] = json!(self.amount_paid);
        line["invoice"] = json!(self.invoice_id());
        line["period"] = json!({"start": start, "end": end});
        line["pricing"]["price_details"]["price"] = json!(self.price);
        line["parent"]["subscription_item_details"]["subscription"] = json!(self.sub);
        line["parent"]["subscription_item_details"]["proration"] = json!(self.proration);
        event
    }

    /// `invoice_payment.paid` for this invoice (`tests/fixtures/stripe/
    /// invoice_payment.paid.json`): what ties it to the PaymentIntent `pi`.
    pub fn payment(&self, id: &str, pi: &str) -> Value {
        let mut event = fixture("stripe/invoice_payment.paid.json");
        event["id"] = json!(id);
        event["created"] = json!(self.period_start() + 61);
        let payment = &mut event["data"]["object"];
        payment["id"] = json!(format!("inpay_{}", self.invoice_id()));
        payment["invoice"] = json!(self.invoice_id());
        payment["amount_paid"] = json!(self.amount_paid);
        payment["amount_requested"] = json!(self.amount_paid);
        payment["payment"]["payment_intent"] = json!(pi);
        event
    }
}

pub fn paid_period<'a>(user: &'a str, sub: &'a str, customer: &'a str, period: i64) -> Invoice<'a> {
    Invoice {
        user: Some(user),
        sub,
        customer,
        reason: if period == 0 {
            "subscription_create"
        } else {
            "subscription_cycle"
        },
        amount_paid: 2999,
        period,
        proration: false,
        price: "price_pro_monthly",
        days: 30,
    }
}

/// A yearly period (7,200 credits) paid 299.99.
pub fn paid_year<'a>(user: &'a str, sub: &'a str, customer: &'a str, period: i64) -> Invoice<'a> {
    Invoice {
        amount_paid: 29_999,
        price: "price_pro_yearly",
        days: 365,
        ..paid_period(user, sub, customer, period)
    }
}

/// `customer.subscription.*` in basil's shape: the period on the subscription item.
pub fn stripe_subscription(
    id: &str,
    kind: &str,
    created: i64,
    user: &str,
    sub: &str,
    status: &str,
    cancel_at_period_end: bool,
) -> Value {
    stripe_event(
        id,
        kind,
        created,
        json!({
            "id": sub, "object": "subscription", "customer": "cus_sub", "status": status,
            "cancel_at_period_end": cancel_at_period_end, "cancel_at": null,
            "metadata": {"user_id": user, "product_id": "pro_monthly"},
            "items": {"object": "list", "data": [{
                "id": "si_1", "object": "subscription_item",
                "current_period_start": T0, "current_period_end": T0 + 30 * DAY,
                "price": {"id": "price_pro_monthly", "object": "price", "unit_amount": 2999}
            }]}
        }),
    )
}

/// `charge.refunded` (`tests/fixtures/stripe/charge.refunded.json`): basil's Charge names
/// its PaymentIntent, and the total refunded so far; no invoice.
pub fn stripe_refund(id: &str, pi: &str, amount: i64, refunded: i64) -> Value {
    let mut event = fixture("stripe/charge.refunded.json");
    event["id"] = json!(id);
    event["created"] = json!(now());
    let charge = &mut event["data"]["object"];
    charge["id"] = json!(format!("ch_{pi}"));
    charge["amount"] = json!(amount);
    charge["amount_captured"] = json!(amount);
    charge["amount_refunded"] = json!(refunded);
    charge["refunded"] = json!(refunded == amount);
    charge["payment_intent"] = json!(pi);
    event
}

/// A `charge.dispute.*` event (`tests/fixtures/stripe/charge.dispute.created.json`) with
/// the dispute in `status`.
pub fn stripe_dispute(id: &str, kind: &str, pi: &str, amount: i64, status: &str) -> Value {
    let mut event = fixture("stripe/charge.dispute.created.json");
    event["id"] = json!(id);
    event["type"] = json!(kind);
    event["created"] = json!(now());
    let dispute = &mut event["data"]["object"];
    dispute["id"] = json!(format!("du_{pi}"));
    dispute["amount"] = json!(amount);
    dispute["charge"] = json!(format!("ch_{pi}"));
    dispute["payment_intent"] = json!(pi);
    dispute["status"] = json!(status);
    if status.starts_with("warning_") {
        // An inquiry: no funds withdrawn, the payment can still be refunded.
        dispute["balance_transactions"] = json!([]);
        dispute["is_charge_refundable"] = json!(true);
    }
    event
}

// ---------------------------------------------------------------- Creem events

pub fn creem_event(id: &str, kind: &str, created_ms: i64, object: Value) -> Value {
    json!({"id": id, "eventType": kind, "created_at": created_ms, "object": object})
}

pub fn creem_purchase(id: &str, user: &str, order: &str, mode: &str) -> Value {
    creem_event(
        id,
        "checkout.completed",
        now() * 1000,
        json!({
            "id": format!("ch_{order}"), "object": "checkout", "request_id": "chk_1",
            "status": "completed", "mode": mode,
            "order": {"id": order, "object": "order", "customer": "cust_1",
                "product": "prod_credits_100", "amount": 999, "amount_paid": 999,
                "currency": "USD", "status": "paid", "type": "onetime", "mode": mode},
            "product": {"id": "prod_credits_100", "object": "product", "price": 999,
                "currency": "USD", "billing_type": "onetime", "mode": mode},
            "customer": {"id": "cust_1", "object": "customer", "email": "buyer@example.com", "mode": mode},
            "metadata": {"user_id": user, "product_id": "credits_100"}
        }),
    )
}

/// A Creem subscription event; `subscription.paid` as documented
/// (`tests/fixtures/creem/subscription.paid.json`): the period's transaction in
/// `last_transaction_id`.
pub fn creem_subscription(
    id: &str,
    kind: &str,
    created_ms: i64,
    user: &str,
    status: &str,
    period: i64,
) -> Value {
    creem_subscription_of(
        "sub_creem_1",
        "prod_pro_monthly",
        30,
        id,
        kind,
        created_ms,
        user,
        status,
        period,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn creem_subscription_of(
    sub: &str,
    product: &str,
    days: i64,
    id: &str,
    kind: &str,
    created_ms: i64,
    user: &str,
    status: &str,
    period: i64,
) -> Value {
    let start = T0 + days * DAY * period;
    let mut event = fixture("creem/subscription.paid.json");
    event["id"] = json!(id);
    event["eventType"] = json!(kind);
    event["created_at"] = json!(created_ms);
    let object = &mut event["object"];
    object["id"] = json!(sub);
    object["status"] = json!(status);
    object["mode"] = json!("test");
    object["product"]["id"] = json!(product);
    object["customer"]["id"] = json!("cust_sub");
    object["last_transaction_id"] = json!(format!("tran_{sub}_{period}"));
    object["current_period_start_date"] = json!(rfc3339(start));
    object["current_period_end_date"] = json!(rfc3339(start + days * DAY));
    object["next_transaction_date"] = json!(rfc3339(start + days * DAY));
    object["metadata"] = json!({"user_id": user, "product_id": "pro_monthly"});
    event
}

pub fn creem_refund(id: &str, refund: &str, order: &str, amount: i64) -> Value {
    creem_event(
        id,
        "refund.created",
        now() * 1000,
        json!({
            "id": refund, "object": "refund", "status": "succeeded", "mode": "test",
            "refund_amount": amount, "refund_currency": "USD", "reason": "requested_by_customer",
            "transaction": {"id": "tran_1", "object": "transaction", "amount": 999,
                "amount_paid": 999, "currency": "USD", "type": "payment", "order": order,
                "status": "refunded", "mode": "test"},
            "order": {"id": order, "object": "order", "amount": 999, "currency": "USD", "mode": "test"},
            "customer": {"id": "cust_1", "object": "customer", "mode": "test"}
        }),
    )
}

/// `refund.created` of a subscription payment, as documented
/// (`tests/fixtures/creem/refund.created.json`): the transaction and its subscription.
pub fn creem_subscription_refund(id: &str, transaction: &str, paid: i64, refunded: i64) -> Value {
    let mut event = fixture("creem/refund.created.json");
    event["id"] = json!(id);
    event["created_at"] = json!(now() * 1000);
    let object = &mut event["object"];
    object["id"] = json!(format!("ref_{id}"));
    object["refund_amount"] = json!(refunded);
    object["transaction"]["id"] = json!(transaction);
    object["transaction"]["amount"] = json!(paid);
    object["transaction"]["amount_paid"] = json!(paid);
    event
}

/// `dispute.created`, as documented (`tests/fixtures/creem/dispute.created.json`).
pub fn creem_dispute(id: &str, transaction: &str, amount: i64) -> Value {
    let mut event = fixture("creem/dispute.created.json");
    event["id"] = json!(id);
    event["created_at"] = json!(now() * 1000);
    let object = &mut event["object"];
    object["id"] = json!(format!("disp_{id}"));
    object["amount"] = json!(amount);
    object["transaction"]["id"] = json!(transaction);
    event
}
