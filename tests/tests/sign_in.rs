//! `POST /auth/dev/login`: one user and one bonus per identity, whatever the races.

use axum::http::{Method, StatusCode};
use e2e_tests::{dev_login, request, send, stack};
use serde_json::json;

#[tokio::test]
async fn the_first_sign_in_grants_the_bonus_once_and_the_second_finds_the_same_user() {
    let stack = stack("devlogin", |_| {}).await;

    let (_, first) = dev_login(&stack.router, "ada@example.com").await;
    let (token, second) = dev_login(&stack.router, "ADA@example.com").await;

    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["credits"], 10);
    let ledger = send(
        &stack.router,
        request(Method::GET, "/v1/me/ledger", Some(&token), None),
    )
    .await;
    assert_eq!(ledger.status, StatusCode::OK);
    assert_eq!(ledger.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(ledger.body["items"][0]["reason"], "signup_bonus");
    assert_eq!(ledger.body["items"][0]["delta"], 10);
    assert_eq!(ledger.body["next_cursor"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_racing_first_sign_ins_make_one_user_with_one_bonus() {
    let stack = stack("race", |_| {}).await;

    let logins = (0..10).map(|_| {
        let router = stack.router.clone();
        tokio::spawn(async move { dev_login(&router, "grace@example.com").await })
    });
    let mut users = Vec::new();
    for login in logins.collect::<Vec<_>>() {
        users.push(login.await.unwrap());
    }

    let ids: std::collections::HashSet<_> = users.iter().map(|(_, u)| u["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "one user");
    let token = &users[0].0;
    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(token), None),
    )
    .await;
    assert_eq!(me.body["credits"], 10);
    let ledger = send(
        &stack.router,
        request(Method::GET, "/v1/me/ledger", Some(token), None),
    )
    .await;
    assert_eq!(
        ledger.body["items"].as_array().unwrap().len(),
        1,
        "one bonus row"
    );
}

#[tokio::test]
async fn dev_login_is_not_found_unless_enabled() {
    let stack = stack("nodev", |s| s.dev_login = false).await;

    let answer = send(
        &stack.router,
        request(
            Method::POST,
            "/auth/dev/login",
            None,
            Some(json!({"email": "a@example.com"})),
        ),
    )
    .await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "not_found");
}

#[tokio::test]
async fn a_malformed_email_is_a_validation_failure_naming_the_field() {
    let stack = stack("bademail", |_| {}).await;

    let answer = send(
        &stack.router,
        request(
            Method::POST,
            "/auth/dev/login",
            None,
            Some(json!({"email": "not-an-email"})),
        ),
    )
    .await;

    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.body["errors"][0]["field"], "email");
    assert_eq!(
        answer.headers["content-type"], "application/problem+json",
        "errors are problem+json"
    );
}

#[tokio::test]
async fn the_ledger_pages_newest_first_with_an_opaque_cursor() {
    let stack = stack("pages", |_| {}).await;
    let (token, user) = dev_login(&stack.router, "pages@example.com").await;
    let user_id = shared::domain::UserId::parse(user["id"].as_str().unwrap()).unwrap();
    for i in 0..4 {
        let grant = shared::aws::dynamo::BalanceChange::grant(
            user_id,
            shared::domain::Credits::new(i + 1).unwrap(),
            shared::domain::ledger::LedgerReason::Admin,
            format!("grant-{i}"),
        );
        stack.services.store.apply(&grant).await.unwrap();
    }

    let first = send(
        &stack.router,
        request(Method::GET, "/v1/me/ledger?limit=2", Some(&token), None),
    )
    .await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/me/ledger?limit=2&cursor={cursor}"),
            Some(&token),
            None,
        ),
    )
    .await;
    let third_cursor = second.body["next_cursor"]
        .as_str()
        .expect("a third page")
        .to_string();
    let third = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/me/ledger?limit=2&cursor={third_cursor}"),
            Some(&token),
            None,
        ),
    )
    .await;

    let deltas: Vec<i64> = [&first, &second, &third]
        .iter()
        .flat_map(|a| {
            a.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["delta"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(deltas, [4, 3, 2, 1, 10]);
    assert_eq!(third.body["next_cursor"], serde_json::Value::Null);
    let bad = send(
        &stack.router,
        request(
            Method::GET,
            "/v1/me/ledger?cursor=garbage",
            Some(&token),
            None,
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let too_many = send(
        &stack.router,
        request(Method::GET, "/v1/me/ledger?limit=101", Some(&token), None),
    )
    .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
}
