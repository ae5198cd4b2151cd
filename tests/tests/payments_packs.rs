//! Payments (`webhook`), one-time packs: Stripe and Creem purchases in the providers'
//! documented shapes (Stripe's pinned 2025-03-31.basil), signed here; refunds and disputes
//! of a pack; refused deliveries; checkout and portal calls against fake Stripe and Creem
//! servers on loopback; configuration and transport. Helpers: `e2e_tests::payments`.

use aws_sdk_dynamodb::types::AttributeValue;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use e2e_tests::payments::*;
use e2e_tests::{request, send};
use serde_json::json;
use shared::aws::dynamo::BalanceChange;
use shared::domain::ledger::LedgerReason;
use shared::domain::{Credits, UserId};

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
    let net: i64 = ledger
        .iter()
        .filter(|row| row["ref"] == "pi_t")
        .map(|row| row["delta"].as_i64().unwrap())
        .sum();
    assert_eq!(net, 0, "granted and taken back in one write: {ledger:?}");
    assert_eq!(pay.ledger_sum().await, 10);
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
