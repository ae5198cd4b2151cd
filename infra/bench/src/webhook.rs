//! The webhook's grant: a signed Stripe `checkout.session.completed` for a paid one-time
//! credit pack, as Stripe sends it, through the webhook function's own router.

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::body::Body;
use axum::http::Request;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use shared::domain::UserId;
use tower::ServiceExt;

use crate::calls::Count;
use crate::events;
use crate::stack::Stack;

const STRIPE_SECRET_KEY: &str = "sk_test_bench_not_a_real_key";

/// This run's webhook signing secret (strong, random).
fn webhook_secret() -> &'static str {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(|| format!("whsec_{}", crate::stack::session_secret()))
}

/// The payment settings the webhook function is deployed with (fake keys: nothing here
/// calls Stripe or Creem).
pub fn payment_env() -> Vec<(String, String)> {
    vec![
        ("STRIPE_SECRET_KEY".into(), STRIPE_SECRET_KEY.into()),
        ("STRIPE_WEBHOOK_SECRET".into(), webhook_secret().into()),
    ]
}

fn payments() -> anyhow::Result<shared::payments::Payments> {
    let env = payment_env();
    let mut secrets = shared::aws::secrets::Secrets::from_pairs(
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    Ok(shared::payments::Payments::from_lookup(
        |_| None,
        &mut secrets,
    )?)
}

/// A paid checkout of `credits_100` by `user`: (body, `Stripe-Signature`).
fn purchase(user: UserId) -> (String, String) {
    let id = ulid::Ulid::new().to_string().to_lowercase();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = json!({
        "id": format!("evt_{id}"),
        "object": "event",
        "type": "checkout.session.completed",
        "created": now,
        "livemode": false,
        "data": {"object": {
            "id": format!("cs_{id}"),
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "status": "complete",
            "client_reference_id": user.to_string(),
            "metadata": {"user_id": user.to_string(), "product_id": "credits_100"},
            "payment_intent": format!("pi_{id}"),
            "amount_total": 999,
            "currency": "usd"
        }}
    })
    .to_string();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(webhook_secret().as_bytes()).expect("any key length");
    mac.update(format!("{now}.").as_bytes());
    mac.update(body.as_bytes());
    let signature = format!("t={now},v1={}", hex::encode(mac.finalize().into_bytes()));
    (body, signature)
}

/// `POST /webhooks/stripe` with a signed purchase, counted.
pub async fn grant_calls(stack: &Stack) -> anyhow::Result<Count> {
    let (_, user) = stack.user("grant@example.com", 1).await?;
    let router = webhook::router(stack.services.clone(), Arc::new(payments()?));
    let (body, signature) = purchase(user);
    let request = Request::post("/webhooks/stripe")
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(Body::from(body))?;
    stack.calls.reset();
    let response = router.oneshot(request).await?;
    let calls = stack.calls.count();
    anyhow::ensure!(
        response.status().is_success(),
        "the webhook answered {}",
        response.status()
    );
    let profile = stack
        .services
        .store
        .get_user(user)
        .await?
        .context("the paying user")?;
    anyhow::ensure!(
        profile.credits >= 100,
        "the purchase granted nothing ({} credits)",
        profile.credits
    );
    Ok(Count {
        operation: "webhook grant (`POST /webhooks/stripe`, a paid checkout)".into(),
        floor: Some(1),
        measured: Some(calls),
        note: "TransactWriteItems (event record, order, grant, ledger row, customer mapping), no read first".into(),
    })
}

/// The webhook's memory run: the catalog and signed purchases, in turn.
pub fn memory_events(user: UserId, count: usize) -> (Vec<Value>, String) {
    let events = (0..count)
        .map(|i| {
            if i % 2 == 0 {
                events::http("GET", "/v1/products", None, None)
            } else {
                let (body, signature) = purchase(user);
                let mut event = events::http("POST", "/webhooks/stripe", None, None);
                event["headers"]["stripe-signature"] = Value::from(signature);
                event["headers"]["content-type"] = Value::from("application/json");
                event["body"] = Value::from(body);
                event
            }
        })
        .collect();
    (
        events,
        "GET /v1/products and a signed Stripe purchase (a grant), in turn".into(),
    )
}
