//! `POST /v1/generations/{id}/cancel` against the emulator: a queued generation ends
//! canceled and refunded exactly once, also when a worker claims it at the same moment.

use axum::http::{Method, StatusCode};
use e2e_tests::{Stack, dev_login, request, send, stack};
use serde_json::{Value, json};
use shared::aws::dynamo::work::Claim;
use shared::domain::{GenerationId, UserId};

async fn create(stack: &Stack, token: &str, n: u32) -> Value {
    let answer = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(token),
            Some(json!({"model": "nano-banana", "prompt": "a heron", "n": n})),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    answer.body
}

async fn cancel(stack: &Stack, token: &str, id: &str) -> e2e_tests::Answer {
    send(
        &stack.router,
        request(
            Method::POST,
            &format!("/v1/generations/{id}/cancel"),
            Some(token),
            None,
        ),
    )
    .await
}

fn ids(generation: &Value, user: &Value) -> (UserId, GenerationId) {
    (
        UserId::parse(user["id"].as_str().unwrap()).unwrap(),
        GenerationId::parse(generation["id"].as_str().unwrap()).unwrap(),
    )
}

async fn ledger_adds_up(stack: &Stack, token: &str) {
    let rows = stack.ledger(token).await;
    let sum: i64 = rows.iter().map(|r| r["delta"].as_i64().unwrap()).sum();
    assert_eq!(sum, stack.balance(token).await, "{rows:?}");
}

#[tokio::test]
async fn a_queued_generation_is_canceled_with_its_whole_cost_refunded_once() {
    let stack = stack("cancel-queued", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "cancel@example.com").await;
    let generation = create(&stack, &token, 2).await;
    let id = generation["id"].as_str().unwrap();
    assert_eq!(stack.balance(&token).await, 6);

    let first = cancel(&stack, &token, id).await;
    let again = cancel(&stack, &token, id).await;

    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["status"], "canceled");
    assert_eq!(first.body["refunded_credits"], 4);
    assert_eq!(first.body["error"]["code"], "canceled");
    assert!(first.body["completed_at"].is_string());
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "not_cancelable");
    assert_eq!(stack.balance(&token).await, 10);
    let refunds: Vec<Value> = stack
        .ledger(&token)
        .await
        .into_iter()
        .filter(|r| r["reason"] == "refund")
        .collect();
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["ref"], id);
    let read = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations/{id}"),
            Some(&token),
            None,
        ),
    )
    .await;
    assert_eq!(read.body["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_a_workers_claim_either_refunds_once_or_marks_it_running() {
    let stack = stack("cancel-race", |s| s.rate_limit_per_minute = 100).await;
    let (token, user) = dev_login(&stack.router, "race@example.com").await;
    stack.grant(&user, 200).await;
    let (mut canceled_queued, mut marked_running) = (0, 0);

    for round in 0..20 {
        let generation = create(&stack, &token, 1).await;
        let (user_id, id) = ids(&generation, &user);
        let store = stack.services.store.clone();
        let claim = tokio::spawn(async move {
            let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
            store
                .claim(user_id, id, &format!("lease-{round}"), until)
                .await
        });
        let answer = cancel(&stack, &token, &id.to_string()).await;
        let claim = claim.await.unwrap().unwrap();

        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        match (answer.body["status"].as_str().unwrap(), claim) {
            ("canceled", Claim::Final) => canceled_queued += 1,
            ("running", Claim::Claimed(_)) => {
                assert_eq!(answer.body["cancel_requested"], true);
                marked_running += 1;
            }
            (status, claim) => panic!("cancel saw {status}, the claim {claim:?}"),
        }
    }

    // Each canceled one refunded its 2 credits once; each running one is not refunded yet.
    assert_eq!(canceled_queued + marked_running, 20);
    assert_eq!(
        stack.balance(&token).await,
        210 - 2 * marked_running as i64,
        "canceled {canceled_queued}, running {marked_running}"
    );
    ledger_adds_up(&stack, &token).await;
}

#[tokio::test]
async fn a_running_generation_is_marked_and_keeps_its_credits_until_its_worker_ends_it() {
    let stack = stack("cancel-running", |_| {}).await;
    let (token, user) = dev_login(&stack.router, "running@example.com").await;
    let generation = create(&stack, &token, 1).await;
    let (user_id, id) = ids(&generation, &user);
    let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
    stack
        .services
        .store
        .claim(user_id, id, "lease", until)
        .await
        .unwrap();

    let answer = cancel(&stack, &token, &id.to_string()).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "running");
    assert_eq!(answer.body["cancel_requested"], true);
    assert_eq!(answer.body["refunded_credits"], 0);
    assert_eq!(stack.balance(&token).await, 8);
}

#[tokio::test]
async fn another_users_generation_cannot_be_canceled_or_even_seen() {
    let stack = stack("cancel-other", |_| {}).await;
    let (owner, _) = dev_login(&stack.router, "owner@example.com").await;
    let (other, _) = dev_login(&stack.router, "other@example.com").await;
    let generation = create(&stack, &owner, 1).await;
    let id = generation["id"].as_str().unwrap();

    let answer = cancel(&stack, &other, id).await;
    let unknown = cancel(&stack, &other, &GenerationId::new().to_string()).await;
    let malformed = cancel(&stack, &other, "gen_nope").await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
    assert_eq!(stack.balance(&owner).await, 8);
    assert_eq!(stack.balance(&other).await, 10);
}

#[tokio::test]
async fn a_canceled_generation_can_be_deleted() {
    let stack = stack("cancel-delete", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "tidy@example.com").await;
    let generation = create(&stack, &token, 1).await;
    let id = generation["id"].as_str().unwrap();
    cancel(&stack, &token, id).await;

    let deleted = send(
        &stack.router,
        request(
            Method::DELETE,
            &format!("/v1/generations/{id}"),
            Some(&token),
            None,
        ),
    )
    .await;

    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
}
