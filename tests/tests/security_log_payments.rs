//! The security log of money: a checkout started, a payment applied (once, however often
//! its event comes), an operator's grant and replay, and a deletion that keeps the log
//! without addresses and devices.

use axum::http::{Method, StatusCode};
use e2e_tests::payments::*;
use e2e_tests::{request, send};
use serde_json::{Value, json};

async fn log(pay: &Pay, token: &str) -> Vec<Value> {
    let answer = send(
        &pay.router,
        request(
            Method::GET,
            "/v1/me/security-log?limit=100",
            Some(token),
            None,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body["items"].as_array().cloned().unwrap_or_default()
}

fn of<'a>(entries: &'a [Value], action: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["action"] == action).collect()
}

#[tokio::test]
async fn a_checkout_started_and_its_payment_applied_leave_one_entry_each_however_often_it_is_delivered()
 {
    let pay = pay_stack("audit-pay").await;
    let checkout = send(
        &pay.router,
        request(
            Method::POST,
            "/v1/checkout",
            Some(&pay.token),
            Some(json!({"product_id": "credits_100", "provider": "stripe"})),
        ),
    )
    .await;
    assert_eq!(checkout.status, StatusCode::CREATED, "{:?}", checkout.body);
    let event = stripe_purchase(
        "evt_audit",
        &pay.user,
        "credits_100",
        "pi_audit",
        "cus_a",
        999,
    );

    for _ in 0..3 {
        assert_received(&pay.stripe(&event).await);
    }
    let refused = send(
        &pay.router,
        webhook_request(
            "/webhooks/stripe",
            Some(("stripe-signature", "t=1,v1=00".into())),
            &event.to_string(),
        ),
    )
    .await;

    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let entries = log(&pay, &pay.token).await;
    let started = of(&entries, "checkout_started");
    let applied = of(&entries, "payment_applied");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["detail"]["provider"], "stripe");
    assert_eq!(started[0]["detail"]["product"], "credits_100");
    assert_eq!(applied.len(), 1, "{entries:?}");
    assert_eq!(applied[0]["actor"], "stripe");
    assert_eq!(applied[0]["detail"]["event_id"], "evt_audit");
    assert_eq!(applied[0]["detail"]["credits"], 100);
}

#[tokio::test]
async fn an_operators_grant_names_the_operator_and_the_reason_once() {
    let pay = pay_stack("audit-grant").await;
    let admin = pay.admin(settings(&pay.base));

    for _ in 0..2 {
        admin
            .grant(pay.user_id(), 25, "goodwill for ticket 9", None, false)
            .await
            .unwrap();
    }

    let entries = log(&pay, &pay.token).await;
    let grants = of(&entries, "admin_grant");
    assert_eq!(grants.len(), 1, "a grant applied once is logged once");
    assert_eq!(grants[0]["actor"], "admin:ops-ada");
    assert_eq!(grants[0]["detail"]["reason"], "goodwill for ticket 9");
    assert_eq!(grants[0]["detail"]["credits"], 25);
    let ledger = pay.stack.ledger(&pay.token).await;
    assert_eq!(ledger[0]["reason"], "admin");
}

#[tokio::test]
async fn an_operator_lists_a_users_entries_by_action_and_time() {
    let pay = pay_stack("audit-list").await;
    let admin = pay.admin(settings(&pay.base));
    admin
        .grant(pay.user_id(), 5, "goodwill for ticket 10", None, false)
        .await
        .unwrap();

    let all = admin.audit(pay.user_id(), None, None).await.unwrap();
    let grants = admin
        .audit(pay.user_id(), Some("admin_grant"), Some("2000-01-01"))
        .await
        .unwrap();
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).date();
    let later = admin
        .audit(pay.user_id(), None, Some(&tomorrow.to_string()))
        .await
        .unwrap();
    let unknown = admin.audit(pay.user_id(), Some("sign_on"), None).await;

    assert!(all.len() >= 2, "the sign-in and the grant: {all:?}");
    assert_eq!(all[0].action.as_str(), "admin_grant", "newest first");
    assert_eq!(grants.len(), 1);
    assert!(later.is_empty());
    assert!(
        unknown.is_err(),
        "an unknown action is refused, not an empty list"
    );
}

#[tokio::test]
async fn an_operators_replay_of_a_stored_event_is_logged_as_theirs() {
    let pay = pay_stack("audit-replay").await;
    let orphan = Invoice {
        user: None,
        ..paid_period(&pay.user, "sub_audit", "cus_nobody", 0)
    };
    pay.stripe(&orphan.event("evt_orphan_audit", "invoice.paid"))
        .await;
    let admin = pay.admin(settings(&pay.base));

    admin
        .replay_event(
            shared::payments::Provider::Stripe,
            "evt_orphan_audit",
            Some(pay.user_id()),
            "customer wrote in",
        )
        .await
        .unwrap();

    let entries = log(&pay, &pay.token).await;
    let replays = of(&entries, "admin_replay");
    assert_eq!(replays.len(), 1, "{entries:?}");
    assert_eq!(replays[0]["actor"], "admin:ops-ada");
    assert_eq!(replays[0]["detail"]["reason"], "customer wrote in");
    assert_eq!(replays[0]["detail"]["event_id"], "evt_orphan_audit");
    assert!(of(&entries, "payment_applied").is_empty());
}

#[tokio::test]
async fn after_deletion_the_entries_are_kept_without_address_or_device_and_end_with_the_deletion() {
    let pay = pay_stack("audit-deleted").await;
    let mut made = request(
        Method::POST,
        "/v1/api-keys",
        Some(&pay.token),
        Some(json!({"name": "k"})),
    );
    made.headers_mut()
        .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    made.headers_mut()
        .insert("user-agent", "Mozilla/5.0 (deleting)".parse().unwrap());
    send(&pay.router, made).await;
    let user = pay.user_id();
    let before = pay
        .stack
        .services
        .store
        .audit_entries(user, None, None)
        .await
        .unwrap();
    assert_eq!(
        before[0].ip.as_deref(),
        Some("203.0.113.9"),
        "the entry had an address"
    );

    let deleted = send(
        &pay.router,
        request(Method::DELETE, "/v1/me", Some(&pay.token), None),
    )
    .await;

    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    let entries = pay
        .stack
        .services
        .store
        .audit_entries(user, None, None)
        .await
        .unwrap();
    assert_eq!(entries[0].action.as_str(), "account_deleted");
    assert!(
        entries
            .iter()
            .any(|e| e.action.as_str() == "api_key_created")
    );
    assert!(entries.iter().any(|e| e.action.as_str() == "sign_in"));
    assert!(
        entries
            .iter()
            .all(|e| e.ip.is_none() && e.user_agent.is_none()),
        "{entries:?}"
    );
}

#[tokio::test]
async fn a_payment_parked_for_an_unmapped_product_is_logged_once_for_its_payer() {
    let pay = pay_stack_with("audit-parked", &["STRIPE_PRICE_PRO_YEARLY"]).await;
    let year = paid_year(&pay.user, "sub_audit_parked", "cus_audit_parked", 0);
    let event = year.event("evt_audit_parked", "invoice.paid");

    pay.stripe(&event).await;
    pay.stripe(&event).await;

    let entries = log(&pay, &pay.token).await;
    let parked = of(&entries, "payment_parked");
    assert_eq!(parked.len(), 1, "{entries:?}");
    assert_eq!(parked[0]["actor"], "stripe");
    assert_eq!(parked[0]["detail"]["event_id"], "evt_audit_parked");
    assert!(of(&entries, "payment_applied").is_empty());
}
