//! Payments (`webhook`): checkout and billing portal calls against fake Stripe and Creem
//! servers on loopback (what was sent to them), a provider without keys, an outage of
//! ours, and API Gateway's base64 bodies.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use e2e_tests::payments::*;
use e2e_tests::{APP_ORIGIN, Answer, dev_login, request, send, stack};
use serde_json::{Value, json};

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
    assert!(pay.fakes.is_empty(), "nothing was sent to a provider");
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
