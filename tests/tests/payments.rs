//! Payments (`webhook`): Stripe and Creem events in the providers' documented shapes
//! (Stripe's pinned 2025-03-31.basil), signed here; checkout and portal calls against fake
//! Stripe and Creem servers on loopback.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use axum::Router;
use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::IntoResponse;
use e2e_tests::{APP_ORIGIN, Answer, Stack, dev_login, request, send, stack};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Sha256;
use shared::aws::dynamo::payments::EventOutcome;
use shared::aws::dynamo::{BalanceChange, StoreError};
use shared::aws::secrets::Secrets;
use shared::domain::ledger::LedgerReason;
use shared::domain::{Credits, UserId};
use shared::payments::{PaymentSettings, Payments, Provider};

const STRIPE_WEBHOOK_SECRET: &str = "whsec_test_stripe_0123456789abcdefghijkl";
const CREEM_WEBHOOK_SECRET: &str = "whsec_test_creem_0123456789abcdefghijklm";
const STRIPE_KEY: &str = "sk_test_fake_key";
const CREEM_KEY: &str = "creem_test_fake_key";
const API_VERSION: &str = "2025-03-31.basil";
const DAY: i64 = 86_400;
/// A fixed past time for event ordering (signatures use the present).
const T0: i64 = 1_760_000_000;

// ---------------------------------------------------------------- fake providers

/// A request the fake provider received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Fake Stripe and Creem APIs on one loopback port, answering in their shapes.
async fn fake_providers() -> (String, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let app = Router::new().fallback(move |request: AxumRequest| {
        let seen = seen.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_string();
            seen.lock().unwrap().push(Seen {
                path: path.clone(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let answer = match path.as_str() {
                "/v1/checkout/sessions" => json!({
                    "id": "cs_test_a1", "object": "checkout.session",
                    "url": "https://checkout.stripe.com/c/pay/cs_test_a1", "status": "open"
                }),
                "/v1/billing_portal/sessions" => json!({
                    "id": "bps_test_1", "object": "billing_portal.session",
                    "url": "https://billing.stripe.com/p/session/test_1"
                }),
                "/v1/checkouts" => json!({
                    "id": "ch_test_1", "object": "checkout", "status": "pending", "mode": "test",
                    "checkout_url": "https://creem.io/test/checkout/prod_credits_100/ch_test_1"
                }),
                "/v1/customers/billing" => json!({
                    "customer_portal_link": "https://creem.io/test/my-orders/login/portal_1"
                }),
                _ => return (StatusCode::NOT_FOUND, "{}").into_response(),
            };
            (StatusCode::OK, answer.to_string()).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, log)
}

/// Payment settings with every product mapped, both providers pointing at `base`.
fn settings(base: &str) -> PaymentSettings {
    let base = base.to_string();
    PaymentSettings::from_lookup(move |name| {
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

fn payments(base: &str) -> Arc<Payments> {
    let mut secrets = Secrets::from_pairs([
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
        ("CREEM_API_KEY", CREEM_KEY),
        ("CREEM_WEBHOOK_SECRET", CREEM_WEBHOOK_SECRET),
    ]);
    Arc::new(Payments::new(settings(base), &mut secrets).expect("valid payment secrets"))
}

/// A stack whose router serves payments through the fake providers, and a signed-in
/// user (10 credits of signup bonus).
struct Pay {
    stack: Stack,
    router: Router,
    log: Log,
    token: String,
    user: String,
}

async fn pay_stack(test: &str) -> Pay {
    let stack = stack(test, |_| {}).await;
    let (base, log) = fake_providers().await;
    let router = webhook::with_payments(stack.router.clone(), payments(&base));
    let (token, user) = dev_login(&stack.router, &format!("{test}@example.com")).await;
    let user = user["id"].as_str().unwrap().to_string();
    Pay {
        stack,
        router,
        log,
        token,
        user,
    }
}

impl Pay {
    async fn balance(&self) -> i64 {
        self.stack.balance(&self.token).await
    }

    async fn me(&self) -> Value {
        send(
            &self.router,
            request(Method::GET, "/v1/me", Some(&self.token), None),
        )
        .await
        .body
    }

    async fn stripe(&self, event: &Value) -> Answer {
        send(&self.router, stripe_request(&event.to_string(), now())).await
    }

    async fn creem(&self, event: &Value) -> Answer {
        send(&self.router, creem_request(&event.to_string())).await
    }

    fn user_id(&self) -> UserId {
        UserId::parse(&self.user).unwrap()
    }

    async fn ledger_sum(&self) -> i64 {
        self.stack
            .services
            .store
            .ledger_sum(self.user_id())
            .await
            .unwrap()
    }

    fn seen(&self, path: &str) -> Seen {
        self.log
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.path == path)
            .cloned()
            .unwrap_or_else(|| panic!("nothing was sent to {path}"))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn stripe_signature(body: &str, t: i64) -> String {
    let sig = hmac_hex(
        STRIPE_WEBHOOK_SECRET,
        &[t.to_string().as_bytes(), b".", body.as_bytes()],
    );
    format!("t={t},v1={sig}")
}

fn stripe_request(body: &str, t: i64) -> Request<Body> {
    webhook_request(
        "/webhooks/stripe",
        Some(("stripe-signature", stripe_signature(body, t))),
        body,
    )
}

fn creem_request(body: &str) -> Request<Body> {
    let sig = hmac_hex(CREEM_WEBHOOK_SECRET, &[body.as_bytes()]);
    webhook_request("/webhooks/creem", Some(("creem-signature", sig)), body)
}

fn webhook_request(path: &str, signature: Option<(&str, String)>, body: &str) -> Request<Body> {
    let mut builder = Request::post(path).header("content-type", "application/json; charset=utf-8");
    if let Some((name, value)) = signature {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

fn assert_received(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body, json!({"received": true}));
}

// ---------------------------------------------------------------- Stripe events (basil)

fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "api_version": API_VERSION, "created": created,
        "type": kind, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object}
    })
}

/// `checkout.session.completed` of a one-time product, paid: keyed by its payment intent.
fn stripe_purchase(
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

fn stripe_subscription_checkout(
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

/// An invoice event in basil's shape: the subscription under
/// `parent.subscription_details` (with the metadata our checkout set), the price under the
/// line's `pricing.price_details`, the period on the line.
struct Invoice<'a> {
    user: Option<&'a str>,
    sub: &'a str,
    customer: &'a str,
    reason: &'a str,
    amount_paid: i64,
    period: i64,
    proration: bool,
    price: &'a str,
}

impl Invoice<'_> {
    fn period_start(&self) -> i64 {
        T0 + 30 * DAY * self.period
    }

    fn event(&self, id: &str, kind: &str) -> Value {
        let start = self.period_start();
        let end = start + 30 * DAY;
        let metadata = match self.user {
            Some(user) => json!({"user_id": user, "product_id": "pro_monthly"}),
            None => json!({}),
        };
        stripe_event(
            id,
            kind,
            start + 60,
            json!({
                "id": format!("in_{}_{}", self.sub, self.period), "object": "invoice",
                "customer": self.customer, "billing_reason": self.reason, "status": "paid",
                "amount_due": self.amount_paid, "amount_paid": self.amount_paid, "currency": "usd",
                "period_start": start - 30 * DAY, "period_end": start,
                "parent": {"type": "subscription_details", "quote_details": null,
                    "subscription_details": {"subscription": self.sub, "metadata": metadata}},
                "lines": {"object": "list", "has_more": false, "data": [{
                    "id": format!("il_{}_{}", self.sub, self.period), "object": "line_item",
                    "amount": self.amount_paid, "currency": "usd",
                    "period": {"start": start, "end": end},
                    "pricing": {"type": "price_details", "unit_amount_decimal": "2999",
                        "price_details": {"price": self.price, "product": "prod_stripe_pro"}},
                    "parent": {"type": "subscription_item_details", "invoice_item_details": null,
                        "subscription_item_details": {"subscription": self.sub,
                            "subscription_item": "si_1", "proration": self.proration,
                            "invoice_item": null}},
                    "quantity": 1
                }]}
            }),
        )
    }
}

fn paid_period<'a>(user: &'a str, sub: &'a str, customer: &'a str, period: i64) -> Invoice<'a> {
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
    }
}

/// `customer.subscription.*` in basil's shape: the period on the subscription item.
fn stripe_subscription(
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

/// `charge.refunded`: the payment intent, and the total refunded so far.
fn stripe_refund(id: &str, pi: &str, amount: i64, refunded: i64) -> Value {
    stripe_event(
        id,
        "charge.refunded",
        now(),
        json!({
            "id": format!("ch_{pi}"), "object": "charge", "amount": amount,
            "amount_captured": amount, "amount_refunded": refunded,
            "refunded": refunded == amount, "payment_intent": pi, "currency": "usd",
            "status": "succeeded", "paid": true
        }),
    )
}

fn stripe_dispute(id: &str, kind: &str, pi: &str, amount: i64, status: &str) -> Value {
    stripe_event(
        id,
        kind,
        now(),
        json!({
            "id": format!("dp_{pi}"), "object": "dispute", "amount": amount, "currency": "usd",
            "charge": format!("ch_{pi}"), "payment_intent": pi, "reason": "fraudulent",
            "status": status
        }),
    )
}

// ---------------------------------------------------------------- Creem events

fn creem_event(id: &str, kind: &str, created_ms: i64, object: Value) -> Value {
    json!({"id": id, "eventType": kind, "created_at": created_ms, "object": object})
}

fn creem_purchase(id: &str, user: &str, order: &str, mode: &str) -> Value {
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

fn creem_subscription(
    id: &str,
    kind: &str,
    created_ms: i64,
    user: &str,
    status: &str,
    period: i64,
) -> Value {
    let start = T0 + 30 * DAY * period;
    let iso = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    creem_event(
        id,
        kind,
        created_ms,
        json!({
            "id": "sub_creem_1", "object": "subscription", "status": status, "mode": "test",
            "product": {"id": "prod_pro_monthly", "object": "product", "billing_type": "recurring", "mode": "test"},
            "customer": {"id": "cust_sub", "object": "customer", "mode": "test"},
            "collection_method": "charge_automatically",
            "last_transaction_id": format!("tran_{period}"),
            "current_period_start_date": iso(start),
            "current_period_end_date": iso(start + 30 * DAY),
            "canceled_at": null,
            "metadata": {"user_id": user, "product_id": "pro_monthly"}
        }),
    )
}

fn creem_refund(id: &str, refund: &str, order: &str, amount: i64) -> Value {
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

// ---------------------------------------------------------------- purchases

#[tokio::test]
async fn a_one_time_purchase_through_stripe_raises_the_balance_by_its_credits_and_the_ledger_names_the_order()
 {
    let pay = pay_stack("pay-stripe-buy").await;

    let answer = pay
        .stripe(&stripe_purchase(
            "evt_1",
            &pay.user,
            "credits_100",
            "pi_buy",
            "cus_1",
            999,
        ))
        .await;

    assert_received(&answer);
    assert_eq!(pay.balance().await, 110);
    let ledger = pay.stack.ledger(&pay.token).await;
    assert_eq!(ledger[0]["delta"], 100);
    assert_eq!(ledger[0]["reason"], "purchase");
    assert_eq!(ledger[0]["ref"], "pi_buy");
    assert_eq!(pay.ledger_sum().await, 110);
}

#[tokio::test]
async fn a_one_time_purchase_through_creem_raises_the_balance_by_its_credits_and_the_ledger_names_the_order()
 {
    let pay = pay_stack("pay-creem-buy").await;

    let answer = pay
        .creem(&creem_purchase("evt_c1", &pay.user, "ord_buy", "test"))
        .await;

    assert_received(&answer);
    assert_eq!(pay.balance().await, 110);
    let ledger = pay.stack.ledger(&pay.token).await;
    assert_eq!(ledger[0]["delta"], 100);
    assert_eq!(ledger[0]["reason"], "purchase");
    assert_eq!(ledger[0]["ref"], "ord_buy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_event_delivered_twenty_times_ten_of_them_concurrently_is_applied_once() {
    let pay = pay_stack("pay-dup").await;
    let body =
        stripe_purchase("evt_dup", &pay.user, "credits_500", "pi_dup", "cus_1", 3999).to_string();

    let concurrent: Vec<_> = (0..10)
        .map(|_| {
            let router = pay.router.clone();
            let body = body.clone();
            tokio::spawn(async move { send(&router, stripe_request(&body, now())).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in concurrent {
        statuses.push(task.await.unwrap());
    }
    for _ in 0..10 {
        statuses.push(send(&pay.router, stripe_request(&body, now())).await.status);
    }

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(pay.balance().await, 510);
    assert_eq!(pay.ledger_sum().await, 510);
    let purchases = pay
        .stack
        .ledger(&pay.token)
        .await
        .into_iter()
        .filter(|row| row["reason"] == "purchase")
        .count();
    assert_eq!(purchases, 1);
}

#[tokio::test]
async fn a_second_purchase_by_the_same_user_is_not_blocked_by_the_customer_mapping() {
    let pay = pay_stack("pay-second").await;

    let first = pay
        .stripe(&stripe_purchase(
            "evt_a",
            &pay.user,
            "credits_100",
            "pi_a",
            "cus_same",
            999,
        ))
        .await;
    let second = pay
        .stripe(&stripe_purchase(
            "evt_b",
            &pay.user,
            "credits_100",
            "pi_b",
            "cus_same",
            999,
        ))
        .await;

    assert_received(&first);
    assert_received(&second);
    assert_eq!(pay.balance().await, 210);
}

/// The `created_at` of the `CUSTOMER#stripe#<customer>` mapping.
async fn mapping_created_at(pay: &Pay, customer: &str) -> String {
    let item = pay
        .stack
        .clients
        .dynamo
        .get_item()
        .table_name(&pay.stack.names.table)
        .key(
            "pk",
            AttributeValue::S(format!("CUSTOMER#stripe#{customer}")),
        )
        .key("sk", AttributeValue::S("CUSTOMER".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the mapping exists");
    item["created_at"].as_s().unwrap().clone()
}

#[tokio::test]
async fn a_second_purchase_keeps_the_customer_mapping_as_first_recorded() {
    let pay = pay_stack("pay-mapping-kept").await;
    let buy =
        |id: &str, pi: &str| stripe_purchase(id, &pay.user, "credits_100", pi, "cus_kept", 999);
    assert_received(&pay.stripe(&buy("evt_k1", "pi_k1")).await);
    let created = mapping_created_at(&pay, "cus_kept").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    assert_received(&pay.stripe(&buy("evt_k2", "pi_k2")).await);

    assert_eq!(mapping_created_at(&pay, "cus_kept").await, created);
    assert_eq!(pay.balance().await, 210);
}

#[tokio::test]
async fn a_first_purchase_is_granted_in_one_aws_call_and_its_redelivery_in_one_more() {
    let pay = pay_stack("pay-one-call").await;
    let event = stripe_purchase(
        "evt_one",
        &pay.user,
        "credits_100",
        "pi_one",
        "cus_one",
        999,
    );

    pay.stack.calls.reset();
    let first = pay.stripe(&event).await;
    let first_calls = pay.stack.calls.count();
    pay.stack.calls.reset();
    let again = pay.stripe(&event).await;
    let again_calls = pay.stack.calls.count();

    assert_received(&first);
    assert_received(&again);
    assert_eq!(first_calls, 1, "one TransactWriteItems, no read");
    assert_eq!(
        again_calls, 1,
        "the event record's condition answers the duplicate"
    );
    assert_eq!(pay.balance().await, 110);
    assert_eq!(pay.ledger_sum().await, 110);
}

#[tokio::test]
async fn a_purchase_naming_an_unknown_user_goes_to_the_user_its_customer_is_mapped_to() {
    let pay = pay_stack("pay-mapped").await;
    let first = stripe_purchase("evt_m1", &pay.user, "credits_100", "pi_m1", "cus_m", 999);
    assert_received(&pay.stripe(&first).await);
    let stranger = UserId::new().to_string();

    let answer = pay
        .stripe(&stripe_purchase(
            "evt_m2",
            &stranger,
            "credits_100",
            "pi_m2",
            "cus_m",
            999,
        ))
        .await;

    assert_received(&answer);
    assert_eq!(pay.balance().await, 210);
    assert_eq!(pay.ledger_sum().await, 210);
}

// ---------------------------------------------------------------- refusals

async fn assert_refused(pay: &Pay, request: Request<Body>) {
    let answer = send(&pay.router, request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert_eq!(answer.code(), "invalid_request");
    assert_eq!(pay.balance().await, 10, "nothing changed");
}

fn purchase_body(pay: &Pay) -> String {
    stripe_purchase("evt_x", &pay.user, "credits_100", "pi_x", "cus_1", 999).to_string()
}

#[tokio::test]
async fn a_bad_stripe_signature_is_refused_with_400_and_changes_nothing() {
    let pay = pay_stack("pay-badsig").await;
    let body = purchase_body(&pay);
    let forged = format!(
        "t={},v1={}",
        now(),
        hmac_hex("whsec_someone_else", &[body.as_bytes()])
    );

    assert_refused(
        &pay,
        webhook_request(
            "/webhooks/stripe",
            Some(("stripe-signature", forged)),
            &body,
        ),
    )
    .await;
}

#[tokio::test]
async fn a_signature_for_another_body_is_refused_with_400_and_changes_nothing() {
    let pay = pay_stack("pay-otherbody").await;
    let body = purchase_body(&pay);
    let other =
        stripe_purchase("evt_x", &pay.user, "credits_500", "pi_x", "cus_1", 3999).to_string();
    let signature = stripe_signature(&other, now());

    assert_refused(
        &pay,
        webhook_request(
            "/webhooks/stripe",
            Some(("stripe-signature", signature)),
            &body,
        ),
    )
    .await;
}

#[tokio::test]
async fn a_webhook_without_its_signature_header_is_refused_with_400_and_changes_nothing() {
    let pay = pay_stack("pay-nosig").await;

    assert_refused(
        &pay,
        webhook_request("/webhooks/stripe", None, &purchase_body(&pay)),
    )
    .await;
    let creem = creem_purchase("evt_c", &pay.user, "ord_x", "test").to_string();
    assert_refused(&pay, webhook_request("/webhooks/creem", None, &creem)).await;
}

#[tokio::test]
async fn a_stripe_timestamp_301_seconds_old_is_refused_with_400_and_changes_nothing() {
    let pay = pay_stack("pay-old").await;

    assert_refused(&pay, stripe_request(&purchase_body(&pay), now() - 301)).await;
}

#[tokio::test]
async fn malformed_json_with_a_valid_signature_is_refused_with_400_and_changes_nothing() {
    let pay = pay_stack("pay-malformed").await;

    assert_refused(&pay, stripe_request("{\"id\": \"evt_1\", \"type\":", now())).await;
    assert_refused(&pay, creem_request("not json at all")).await;
}

#[tokio::test]
async fn a_creem_event_in_the_other_mode_is_refused_with_400_and_changes_nothing() {
    let pay = pay_stack("pay-mode").await;
    let live = creem_purchase("evt_live", &pay.user, "ord_live", "prod").to_string();

    assert_refused(&pay, creem_request(&live)).await;
}

#[tokio::test]
async fn a_bad_creem_signature_is_refused_with_400_and_changes_nothing() {
    let pay = pay_stack("pay-creem-badsig").await;
    let body = creem_purchase("evt_c", &pay.user, "ord_x", "test").to_string();
    let forged = hmac_hex("whsec_someone_else_entirely", &[body.as_bytes()]);

    assert_refused(
        &pay,
        webhook_request("/webhooks/creem", Some(("creem-signature", forged)), &body),
    )
    .await;
}

// ---------------------------------------------------------------- subscriptions

#[tokio::test]
async fn a_renewal_reported_by_both_invoice_paid_and_invoice_payment_succeeded_grants_once() {
    let pay = pay_stack("pay-renewal-twice").await;
    let user = pay.user.clone();

    assert_received(
        &pay.stripe(&paid_period(&user, "sub_1", "cus_s", 0).event("evt_p0", "invoice.paid"))
            .await,
    );
    let renewal = paid_period(&user, "sub_1", "cus_s", 1);
    assert_received(
        &pay.stripe(&renewal.event("evt_p1_paid", "invoice.paid"))
            .await,
    );
    assert_received(
        &pay.stripe(&renewal.event("evt_p1_succeeded", "invoice.payment_succeeded"))
            .await,
    );

    assert_eq!(pay.balance().await, 10 + 600 + 600);
    let grants = pay
        .stack
        .ledger(&pay.token)
        .await
        .into_iter()
        .filter(|row| row["reason"] == "subscription")
        .count();
    assert_eq!(grants, 2);
}

#[tokio::test]
async fn a_zero_dollar_invoice_and_a_proration_invoice_grant_nothing() {
    let pay = pay_stack("pay-zero").await;
    let user = pay.user.clone();
    let trial = Invoice {
        amount_paid: 0,
        ..paid_period(&user, "sub_trial", "cus_t", 0)
    };
    let proration = Invoice {
        reason: "subscription_update",
        amount_paid: 1500,
        proration: true,
        ..paid_period(&user, "sub_trial", "cus_t", 1)
    };
    let proration_on_a_cycle = Invoice {
        proration: true,
        ..paid_period(&user, "sub_trial", "cus_t", 2)
    };

    assert_received(&pay.stripe(&trial.event("evt_trial", "invoice.paid")).await);
    assert_received(
        &pay.stripe(&proration.event("evt_prorate", "invoice.paid"))
            .await,
    );
    assert_received(
        &pay.stripe(&proration_on_a_cycle.event("evt_prorate2", "invoice.paid"))
            .await,
    );

    assert_eq!(pay.balance().await, 10);
}

#[tokio::test]
async fn a_renewal_before_its_checkout_completion_grants_each_period_once_and_ends_active() {
    let pay = pay_stack("pay-order-renewal").await;
    let user = pay.user.clone();
    let first = paid_period(&user, "sub_o", "cus_o", 0);
    let second = paid_period(&user, "sub_o", "cus_o", 1);

    assert_received(&pay.stripe(&second.event("evt_p1", "invoice.paid")).await);
    assert_received(
        &pay.stripe(&stripe_subscription_checkout(
            "evt_cs", &user, "sub_o", "cus_o", T0,
        ))
        .await,
    );
    assert_received(&pay.stripe(&first.event("evt_p0", "invoice.paid")).await);
    assert_received(
        &pay.stripe(&second.event("evt_p1_again", "invoice.payment_succeeded"))
            .await,
    );

    assert_eq!(pay.balance().await, 10 + 1200);
    let subscription = &pay.me().await["subscription"];
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["product_id"], "pro_monthly");
    let period_two_end =
        time::OffsetDateTime::from_unix_timestamp(second.period_start() + 30 * DAY)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(subscription["current_period_end"], period_two_end);
}

#[tokio::test]
async fn a_cancellation_before_its_payment_ends_canceled_with_the_paid_period_granted() {
    let pay = pay_stack("pay-order-cancel").await;
    let user = pay.user.clone();
    let period = paid_period(&user, "sub_c", "cus_c", 0);
    let paid_at = period.period_start() + 60;

    let cancel = stripe_subscription(
        "evt_del",
        "customer.subscription.deleted",
        paid_at + 3600,
        &user,
        "sub_c",
        "canceled",
        false,
    );
    assert_received(&pay.stripe(&cancel).await);
    assert_received(&pay.stripe(&period.event("evt_paid", "invoice.paid")).await);

    assert_eq!(pay.balance().await, 610);
    assert_eq!(pay.me().await["subscription"]["status"], "canceled");
}

#[tokio::test]
async fn period_twos_retry_after_period_three_grants_no_period_twice_and_keeps_period_three_current()
 {
    let pay = pay_stack("pay-order-retry").await;
    let user = pay.user.clone();
    let periods: Vec<Invoice> = (0..3)
        .map(|p| paid_period(&user, "sub_r", "cus_r", p))
        .collect();

    for (i, period) in periods.iter().enumerate() {
        assert_received(
            &pay.stripe(&period.event(&format!("evt_{i}"), "invoice.paid"))
                .await,
        );
    }
    assert_received(
        &pay.stripe(&periods[1].event("evt_1_retry", "invoice.payment_succeeded"))
            .await,
    );

    assert_eq!(pay.balance().await, 10 + 3 * 600);
    let subscription = &pay.me().await["subscription"];
    assert_eq!(subscription["status"], "active");
    let period_three_end =
        time::OffsetDateTime::from_unix_timestamp(periods[2].period_start() + 30 * DAY)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(subscription["current_period_end"], period_three_end);
}

#[tokio::test]
async fn me_shows_the_current_subscription_and_an_older_status_does_not_replace_a_newer_one() {
    let pay = pay_stack("pay-me-sub").await;
    let user = pay.user.clone();
    assert_eq!(pay.me().await["subscription"], Value::Null);
    let start = paid_period(&user, "sub_m", "cus_m", 0);
    assert_received(&pay.stripe(&start.event("evt_p0", "invoice.paid")).await);

    let cancel_later = stripe_subscription(
        "evt_upd_new",
        "customer.subscription.updated",
        T0 + 2 * DAY,
        &user,
        "sub_m",
        "active",
        true,
    );
    let stale_past_due = stripe_subscription(
        "evt_upd_old",
        "customer.subscription.updated",
        T0 + DAY,
        &user,
        "sub_m",
        "past_due",
        false,
    );
    assert_received(&pay.stripe(&cancel_later).await);
    assert_received(&pay.stripe(&stale_past_due).await);

    let subscription = &pay.me().await["subscription"];
    assert_eq!(subscription["provider"], "stripe");
    assert_eq!(subscription["product_id"], "pro_monthly");
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["cancel_at_period_end"], true);
    assert!(subscription["current_period_end"].is_string());
}

#[tokio::test]
async fn a_creem_subscription_is_granted_by_subscription_paid_not_by_its_checkout() {
    let pay = pay_stack("pay-creem-sub").await;
    let user = pay.user.clone();
    let mut checkout = creem_purchase("evt_chk", &user, "ord_sub", "test");
    checkout["object"]["product"]["id"] = json!("prod_pro_monthly");
    checkout["object"]["order"]["product"] = json!("prod_pro_monthly");

    assert_received(&pay.creem(&checkout).await);
    assert_eq!(pay.balance().await, 10);
    let paid_at = (T0 + 60) * 1000;
    assert_received(
        &pay.creem(&creem_subscription(
            "evt_paid",
            "subscription.paid",
            paid_at,
            &user,
            "active",
            0,
        ))
        .await,
    );
    assert_received(
        &pay.creem(&creem_subscription(
            "evt_paid_again",
            "subscription.paid",
            paid_at + 5,
            &user,
            "active",
            0,
        ))
        .await,
    );
    assert_eq!(pay.balance().await, 610);
    assert_received(
        &pay.creem(&creem_subscription(
            "evt_cancel",
            "subscription.canceled",
            paid_at + 1000,
            &user,
            "canceled",
            0,
        ))
        .await,
    );

    let subscription = &pay.me().await["subscription"];
    assert_eq!(subscription["provider"], "creem");
    assert_eq!(subscription["status"], "canceled");
}

// ---------------------------------------------------------------- refunds and disputes

#[tokio::test]
async fn two_partial_refunds_of_25_percent_each_claw_back_half_the_credits() {
    let pay = pay_stack("pay-partial").await;
    pay.stripe(&stripe_purchase(
        "evt_buy",
        &pay.user,
        "credits_100",
        "pi_p",
        "cus_1",
        1000,
    ))
    .await;

    assert_received(
        &pay.stripe(&stripe_refund("evt_r1", "pi_p", 1000, 250))
            .await,
    );
    assert_eq!(pay.balance().await, 85);
    assert_received(
        &pay.stripe(&stripe_refund("evt_r2", "pi_p", 1000, 500))
            .await,
    );
    // The first refund's event again, late and under a new id: already counted.
    assert_received(
        &pay.stripe(&stripe_refund("evt_r1_late", "pi_p", 1000, 250))
            .await,
    );

    assert_eq!(pay.balance().await, 60);
    let ledger = pay.stack.ledger(&pay.token).await;
    let clawbacks: Vec<i64> = ledger
        .iter()
        .filter(|row| row["reason"] == "clawback")
        .map(|row| row["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(clawbacks, vec![-25, -25]);
    assert_eq!(pay.ledger_sum().await, 60);
}

#[tokio::test]
async fn creem_partial_refunds_add_up_and_each_refund_counts_once() {
    let pay = pay_stack("pay-creem-refund").await;
    pay.creem(&creem_purchase("evt_buy", &pay.user, "ord_r", "test"))
        .await;

    assert_received(
        &pay.creem(&creem_refund("evt_r1", "ref_1", "ord_r", 250))
            .await,
    );
    assert_received(
        &pay.creem(&creem_refund("evt_r1_again", "ref_1", "ord_r", 250))
            .await,
    );
    assert_received(
        &pay.creem(&creem_refund("evt_r2", "ref_2", "ord_r", 250))
            .await,
    );

    // 250 and 500 of 999: 25 then 50 credits in all.
    assert_eq!(pay.balance().await, 60);
}

#[tokio::test]
async fn a_refund_after_the_credits_were_spent_makes_the_balance_negative_and_generation_is_refused_with_402()
 {
    let pay = pay_stack("pay-negative").await;
    pay.stripe(&stripe_purchase(
        "evt_buy",
        &pay.user,
        "credits_100",
        "pi_n",
        "cus_1",
        999,
    ))
    .await;
    let spend = BalanceChange::debit(
        pay.user_id(),
        Credits::new(108).unwrap(),
        LedgerReason::Generation,
        "spent",
    );
    pay.stack.services.store.apply(&spend).await.unwrap();

    assert_received(
        &pay.stripe(&stripe_refund("evt_full", "pi_n", 999, 999))
            .await,
    );

    assert_eq!(pay.balance().await, -98);
    assert_eq!(pay.ledger_sum().await, -98);
    let generation = send(
        &pay.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&pay.token),
            Some(json!({"model": "nano-banana", "prompt": "a cat"})),
        ),
    )
    .await;
    assert_eq!(
        generation.status,
        StatusCode::PAYMENT_REQUIRED,
        "{:?}",
        generation.body
    );
    assert_eq!(generation.code(), "insufficient_credits");
}

#[tokio::test]
async fn a_refund_before_its_purchase_leaves_a_tombstone_and_the_purchase_then_grants_nothing() {
    let pay = pay_stack("pay-tombstone").await;

    assert_received(
        &pay.stripe(&stripe_refund("evt_refund", "pi_t", 999, 999))
            .await,
    );
    assert_received(
        &pay.stripe(&stripe_purchase(
            "evt_buy",
            &pay.user,
            "credits_100",
            "pi_t",
            "cus_1",
            999,
        ))
        .await,
    );

    assert_eq!(pay.balance().await, 10);
    let ledger = pay.stack.ledger(&pay.token).await;
    assert!(
        ledger.iter().all(|row| row["reason"] != "purchase"),
        "{ledger:?}"
    );
}

#[tokio::test]
async fn a_won_dispute_gives_back_what_the_dispute_clawed_back() {
    let pay = pay_stack("pay-dispute").await;
    pay.stripe(&stripe_purchase(
        "evt_buy",
        &pay.user,
        "credits_100",
        "pi_d",
        "cus_1",
        999,
    ))
    .await;

    assert_received(
        &pay.stripe(&stripe_dispute(
            "evt_dc",
            "charge.dispute.created",
            "pi_d",
            999,
            "needs_response",
        ))
        .await,
    );
    assert_eq!(pay.balance().await, 10);
    assert_received(
        &pay.stripe(&stripe_dispute(
            "evt_dw",
            "charge.dispute.closed",
            "pi_d",
            999,
            "won",
        ))
        .await,
    );
    assert_received(
        &pay.stripe(&stripe_dispute(
            "evt_dw2",
            "charge.dispute.closed",
            "pi_d",
            999,
            "won",
        ))
        .await,
    );

    assert_eq!(pay.balance().await, 110);
    assert_eq!(pay.ledger_sum().await, 110);
}

#[tokio::test]
async fn a_lost_dispute_keeps_what_it_clawed_back() {
    let pay = pay_stack("pay-dispute-lost").await;
    pay.stripe(&stripe_purchase(
        "evt_buy",
        &pay.user,
        "credits_100",
        "pi_l",
        "cus_1",
        999,
    ))
    .await;

    pay.stripe(&stripe_dispute(
        "evt_dc",
        "charge.dispute.created",
        "pi_l",
        999,
        "needs_response",
    ))
    .await;
    assert_received(
        &pay.stripe(&stripe_dispute(
            "evt_dl",
            "charge.dispute.closed",
            "pi_l",
            999,
            "lost",
        ))
        .await,
    );

    assert_eq!(pay.balance().await, 10);
}

// ---------------------------------------------------------------- attribution and replay

#[tokio::test]
async fn an_unattributable_event_is_stored_and_its_replay_applies_it_once() {
    let pay = pay_stack("pay-replay").await;
    let orphan = Invoice {
        user: None,
        ..paid_period(&pay.user, "sub_orphan", "cus_late", 0)
    };

    assert_received(
        &pay.stripe(&orphan.event("evt_orphan", "invoice.paid"))
            .await,
    );
    assert_eq!(pay.balance().await, 10);
    let stored = pay
        .stack
        .services
        .store
        .unattributed_events(10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_id, "evt_orphan");
    assert_eq!(stored[0].provider, Provider::Stripe);

    // The cause is fixed: a later purchase by the user records that customer.
    pay.stripe(&stripe_purchase(
        "evt_buy",
        &pay.user,
        "credits_100",
        "pi_late",
        "cus_late",
        999,
    ))
    .await;
    assert_eq!(pay.balance().await, 110);
    let store = &pay.stack.services.store;
    let replayed = store
        .replay_event(Provider::Stripe, "evt_orphan", None)
        .await
        .unwrap();
    let again = store
        .replay_event(Provider::Stripe, "evt_orphan", None)
        .await;
    let redelivered = pay
        .stripe(&orphan.event("evt_orphan", "invoice.paid"))
        .await;

    assert_eq!(replayed, EventOutcome::Applied);
    assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
    assert_received(&redelivered);
    assert_eq!(pay.balance().await, 710);
    assert!(store.unattributed_events(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_operator_can_replay_an_unattributable_event_to_a_named_user() {
    let pay = pay_stack("pay-replay-user").await;
    let orphan = Invoice {
        user: None,
        ..paid_period(&pay.user, "sub_orphan", "cus_unknown", 0)
    };
    pay.stripe(&orphan.event("evt_orphan", "invoice.paid"))
        .await;

    let store = &pay.stack.services.store;
    let replayed = store
        .replay_event(Provider::Stripe, "evt_orphan", Some(pay.user_id()))
        .await
        .unwrap();

    assert_eq!(replayed, EventOutcome::Applied);
    assert_eq!(pay.balance().await, 610);
    assert_eq!(pay.me().await["subscription"]["status"], "active");
}

#[tokio::test]
async fn the_admin_command_lists_and_replays_an_unattributed_event_once_even_when_run_twice() {
    let pay = pay_stack("pay-admin-replay").await;
    let orphan = Invoice {
        user: None,
        ..paid_period(&pay.user, "sub_admin", "cus_nobody", 0)
    };
    pay.stripe(&orphan.event("evt_admin", "invoice.paid")).await;
    let settings = &pay.stack.services.settings;
    let admin = admin::Admin {
        store: pay.stack.services.store.clone(),
        queue: shared::aws::sqs::JobQueue::new(
            pay.stack.clients.sqs.clone(),
            settings.queue_url.clone(),
        ),
        queue_url: settings.queue_url.clone(),
        dlq_url: settings.dlq_url.clone(),
    };

    let listed = admin.unattributed_events(10).await.unwrap();
    let without_user = admin
        .replay_event(Provider::Stripe, "evt_admin", None)
        .await
        .unwrap();
    let first = admin
        .replay_event(Provider::Stripe, "evt_admin", Some(pay.user_id()))
        .await
        .unwrap();
    let second = admin
        .replay_event(Provider::Stripe, "evt_admin", Some(pay.user_id()))
        .await
        .unwrap();

    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, "evt_admin");
    assert_eq!(without_user, admin::ReplayOutcome::StillUnattributed);
    assert_eq!(first, admin::ReplayOutcome::Applied);
    assert_eq!(second, admin::ReplayOutcome::NotStored);
    assert_eq!(pay.balance().await, 610);
    assert!(admin.unattributed_events(10).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- checkout and portal

fn checkout_body(product: &str, provider: &str) -> Value {
    json!({
        "product_id": product, "provider": provider,
        "success_url": format!("{APP_ORIGIN}/billing/done"),
        "cancel_url": format!("{APP_ORIGIN}/billing")
    })
}

async fn checkout(pay: &Pay, body: Value) -> Answer {
    send(
        &pay.router,
        request(Method::POST, "/v1/checkout", Some(&pay.token), Some(body)),
    )
    .await
}

#[tokio::test]
async fn a_stripe_checkout_sends_the_price_metadata_urls_and_pinned_api_version_to_stripe() {
    let pay = pay_stack("pay-co-stripe").await;

    let answer = checkout(&pay, checkout_body("credits_100", "stripe")).await;

    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(
        answer.body,
        json!({"provider": "stripe", "session_id": "cs_test_a1",
               "url": "https://checkout.stripe.com/c/pay/cs_test_a1"})
    );
    let sent = pay.seen("/v1/checkout/sessions");
    assert_eq!(sent.header("authorization"), format!("Bearer {STRIPE_KEY}"));
    assert_eq!(sent.header("stripe-version"), API_VERSION);
    assert!(
        sent.header("content-type")
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(sent.field("mode").as_deref(), Some("payment"));
    assert_eq!(
        sent.field("line_items[0][price]").as_deref(),
        Some("price_credits_100")
    );
    assert_eq!(sent.field("line_items[0][quantity]").as_deref(), Some("1"));
    assert_eq!(sent.field("client_reference_id"), Some(pay.user.clone()));
    assert_eq!(sent.field("metadata[user_id]"), Some(pay.user.clone()));
    assert_eq!(
        sent.field("metadata[product_id]").as_deref(),
        Some("credits_100")
    );
    assert_eq!(
        sent.field("success_url"),
        Some(format!("{APP_ORIGIN}/billing/done"))
    );
    assert_eq!(
        sent.field("cancel_url"),
        Some(format!("{APP_ORIGIN}/billing"))
    );
    assert_eq!(sent.field("customer"), None);
}

#[tokio::test]
async fn a_stripe_subscription_checkout_carries_the_subscription_metadata_and_the_known_customer() {
    let pay = pay_stack("pay-co-sub").await;
    pay.stripe(&stripe_purchase(
        "evt_buy",
        &pay.user,
        "credits_100",
        "pi_k",
        "cus_known",
        999,
    ))
    .await;

    let answer = checkout(&pay, checkout_body("pro_monthly", "stripe")).await;

    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    let sent = pay.seen("/v1/checkout/sessions");
    assert_eq!(sent.field("mode").as_deref(), Some("subscription"));
    assert_eq!(
        sent.field("line_items[0][price]").as_deref(),
        Some("price_pro_monthly")
    );
    assert_eq!(
        sent.field("subscription_data[metadata][user_id]"),
        Some(pay.user.clone())
    );
    assert_eq!(
        sent.field("subscription_data[metadata][product_id]")
            .as_deref(),
        Some("pro_monthly")
    );
    assert_eq!(sent.field("customer").as_deref(), Some("cus_known"));
}

#[tokio::test]
async fn a_creem_checkout_sends_the_product_a_request_id_and_the_metadata_to_creem() {
    let pay = pay_stack("pay-co-creem").await;

    let answer = checkout(&pay, checkout_body("credits_100", "creem")).await;

    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.body["provider"], "creem");
    assert_eq!(answer.body["session_id"], "ch_test_1");
    assert_eq!(
        answer.body["url"],
        "https://creem.io/test/checkout/prod_credits_100/ch_test_1"
    );
    let sent = pay.seen("/v1/checkouts");
    assert_eq!(sent.header("x-api-key"), CREEM_KEY);
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(body["product_id"], "prod_credits_100");
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(body["metadata"]["user_id"], pay.user.as_str());
    assert_eq!(body["metadata"]["product_id"], "credits_100");
    assert_eq!(body["success_url"], format!("{APP_ORIGIN}/billing/done"));
}

#[tokio::test]
async fn checkout_urls_off_the_app_origins_and_unknown_products_are_refused_with_422() {
    let pay = pay_stack("pay-co-422").await;
    let mut body = checkout_body("credits_100", "stripe");
    body["success_url"] = json!("https://evil.example/steal");

    let off_origin = checkout(&pay, body).await;
    let unknown = checkout(&pay, checkout_body("credits_1000000", "paypal")).await;

    assert_eq!(off_origin.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(off_origin.body["errors"][0]["field"], "success_url");
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.body["errors"].as_array().unwrap().len(), 2);
    assert!(
        pay.log.lock().unwrap().is_empty(),
        "nothing was sent to a provider"
    );
}

#[tokio::test]
async fn a_subscription_checkout_while_subscribed_is_refused_with_409_already_subscribed() {
    let pay = pay_stack("pay-co-409").await;
    let user = pay.user.clone();
    pay.stripe(&paid_period(&user, "sub_a", "cus_a", 0).event("evt_p0", "invoice.paid"))
        .await;

    let yearly = checkout(&pay, checkout_body("pro_yearly", "creem")).await;
    let credits = checkout(&pay, checkout_body("credits_500", "stripe")).await;

    assert_eq!(yearly.status, StatusCode::CONFLICT, "{:?}", yearly.body);
    assert_eq!(yearly.code(), "already_subscribed");
    assert_eq!(
        credits.status,
        StatusCode::CREATED,
        "one-time packs are still sold"
    );
}

#[tokio::test]
async fn the_billing_portal_opens_stripes_portal_for_the_subscriptions_customer() {
    let pay = pay_stack("pay-portal").await;
    let user = pay.user.clone();
    pay.stripe(&paid_period(&user, "sub_p", "cus_portal", 0).event("evt_p0", "invoice.paid"))
        .await;

    let answer = send(
        &pay.router,
        request(Method::POST, "/v1/billing/portal", Some(&pay.token), None),
    )
    .await;

    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(
        answer.body["url"],
        "https://billing.stripe.com/p/session/test_1"
    );
    let sent = pay.seen("/v1/billing_portal/sessions");
    assert_eq!(sent.field("customer").as_deref(), Some("cus_portal"));
    assert_eq!(sent.header("stripe-version"), API_VERSION);
    assert_eq!(sent.field("return_url"), Some(format!("{APP_ORIGIN}/")));
}

#[tokio::test]
async fn the_billing_portal_of_a_creem_subscription_is_creems_customer_link() {
    let pay = pay_stack("pay-portal-creem").await;
    let user = pay.user.clone();
    pay.creem(&creem_subscription(
        "evt_paid",
        "subscription.paid",
        T0 * 1000,
        &user,
        "active",
        0,
    ))
    .await;

    let answer = send(
        &pay.router,
        request(Method::POST, "/v1/billing/portal", Some(&pay.token), None),
    )
    .await;

    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(
        answer.body["url"],
        "https://creem.io/test/my-orders/login/portal_1"
    );
    let sent: Value = serde_json::from_str(&pay.seen("/v1/customers/billing").body).unwrap();
    assert_eq!(sent["customer_id"], "cust_sub");
}

#[tokio::test]
async fn the_billing_portal_without_a_subscription_is_404() {
    let pay = pay_stack("pay-portal-404").await;

    let answer = send(
        &pay.router,
        request(Method::POST, "/v1/billing/portal", Some(&pay.token), None),
    )
    .await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------- configuration, failures, transport

#[tokio::test]
async fn without_keys_checkout_and_webhooks_answer_503_and_the_catalog_still_lists() {
    let stack = stack("pay-disabled", |_| {}).await;
    let (token, user) = dev_login(&stack.router, "disabled@example.com").await;
    let body = stripe_purchase(
        "evt_1",
        user["id"].as_str().unwrap(),
        "credits_100",
        "pi_1",
        "cus_1",
        999,
    )
    .to_string();

    let products = send(
        &stack.router,
        request(Method::GET, "/v1/products", None, None),
    )
    .await;
    let checkout = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/checkout",
            Some(&token),
            Some(checkout_body("credits_100", "stripe")),
        ),
    )
    .await;
    let stripe = send(&stack.router, stripe_request(&body, now())).await;
    let creem = send(&stack.router, creem_request(&body)).await;

    assert_eq!(products.status, StatusCode::OK);
    assert_eq!(products.body["items"].as_array().unwrap().len(), 4);
    for answer in [&checkout, &stripe, &creem] {
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{:?}",
            answer.body
        );
        assert_eq!(answer.code(), "unavailable");
    }
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test]
async fn a_webhook_while_dynamodb_is_unreachable_answers_5xx_and_applies_nothing() {
    let pay = pay_stack("pay-outage").await;
    let unreachable = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:1")
        .load()
        .await;
    let services = Arc::new(shared::Services::new(
        pay.stack.services.settings.clone(),
        &unreachable,
        &shared::config::Secret::new(e2e_tests::SESSION_SECRET),
        None,
    ));
    let (base, _) = fake_providers().await;
    let broken = webhook::router(services, payments(&base));
    let body =
        stripe_purchase("evt_outage", &pay.user, "credits_100", "pi_o", "cus_1", 999).to_string();

    let during = send(&broken, stripe_request(&body, now())).await;
    let balance_during = pay.balance().await;
    let after = send(&pay.router, stripe_request(&body, now())).await;

    assert!(during.status.is_server_error(), "{:?}", during.status);
    assert_eq!(balance_during, 10);
    assert_received(&after);
    assert_eq!(pay.balance().await, 110);
}

#[tokio::test]
async fn a_base64_encoded_api_gateway_event_is_verified_over_the_decoded_body() {
    use base64::Engine;
    let pay = pay_stack("pay-apigw").await;
    let body =
        stripe_purchase("evt_gw", &pay.user, "credits_100", "pi_gw", "cus_1", 999).to_string();
    let event = json!({
        "version": "2.0", "routeKey": "POST /webhooks/stripe", "rawPath": "/webhooks/stripe",
        "rawQueryString": "",
        "headers": {"content-type": "application/json; charset=utf-8",
                    "stripe-signature": stripe_signature(&body, now())},
        "requestContext": {"accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
            "domainPrefix": "api", "http": {"method": "POST", "path": "/webhooks/stripe",
            "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "Stripe/1.0"},
            "requestId": "req-1", "routeKey": "POST /webhooks/stripe", "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 1_767_225_600_000_i64},
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
        "isBase64Encoded": true
    });
    let request =
        lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event");
    let request = request.map(|body| Body::from(body.to_vec()));

    let answer = send(&pay.router, request).await;

    assert_received(&answer);
    assert_eq!(pay.balance().await, 110);
}
