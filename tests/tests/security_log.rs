//! The security log against the emulator: each action leaves exactly one entry, written
//! with the action; a refused action leaves none; a user sees only their own; an API key
//! may not read it.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use e2e_tests::{Stack, dev_login, request, send, stack};
use serde_json::{Value, json};

async fn log(stack: &Stack, token: &str) -> Vec<Value> {
    let answer = send(
        &stack.router,
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

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

/// A request from a browser somewhere: an address and a user agent.
fn from_browser(method: Method, path: &str, token: &str, body: Option<Value>) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("user-agent", "Mozilla/5.0 (test)");
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

#[tokio::test]
async fn making_and_revoking_a_key_and_a_secret_leave_one_entry_each_with_where_from() {
    let stack = stack("audit-keys", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "audited@example.com").await;
    let before = log(&stack, &token).await.len();

    let made = send(
        &stack.router,
        from_browser(
            Method::POST,
            "/v1/api-keys",
            &token,
            Some(json!({"name": "ci"})),
        ),
    )
    .await;
    let key = made.body["key"].as_str().unwrap().to_string();
    let id = made.body["id"].as_str().unwrap().to_string();
    send(
        &stack.router,
        from_browser(Method::DELETE, &format!("/v1/api-keys/{id}"), &token, None),
    )
    .await;
    send(
        &stack.router,
        from_browser(Method::GET, "/v1/webhook-secret", &token, None),
    )
    .await;
    send(
        &stack.router,
        from_browser(Method::GET, "/v1/webhook-secret", &token, None),
    )
    .await;
    send(
        &stack.router,
        from_browser(Method::POST, "/v1/webhook-secret/rotate", &token, None),
    )
    .await;

    let entries = log(&stack, &token).await;
    let new = &entries[..entries.len() - before];
    assert_eq!(
        actions(new),
        [
            "webhook_secret_rotated",
            "webhook_secret_created",
            "api_key_revoked",
            "api_key_created"
        ]
    );
    let created = &new[3];
    assert_eq!(created["actor"], "user");
    assert_eq!(created["ip"], "203.0.113.7");
    assert_eq!(created["user_agent"], "Mozilla/5.0 (test)");
    assert_eq!(created["detail"]["key_id"], id.as_str());
    assert_eq!(created["detail"]["prefix"], &key[..12]);
    assert!(created["id"].as_str().unwrap().starts_with("aud_"));
    let everything = serde_json::to_string(&entries).unwrap();
    assert!(!everything.contains(&key), "the key itself is in the log");
    assert!(!everything.contains("whsec_"), "a secret is in the log");
}

#[tokio::test]
async fn a_refused_action_leaves_no_entry() {
    let stack = stack("audit-refused", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "limited@example.com").await;
    for i in 0..10 {
        let made = send(
            &stack.router,
            request(
                Method::POST,
                "/v1/api-keys",
                Some(&token),
                Some(json!({"name": format!("k{i}")})),
            ),
        )
        .await;
        assert_eq!(made.status, StatusCode::CREATED);
    }
    let before = log(&stack, &token).await.len();

    let eleventh = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/api-keys",
            Some(&token),
            Some(json!({"name": "k10"})),
        ),
    )
    .await;
    let unnamed = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/api-keys",
            Some(&token),
            Some(json!({"name": " "})),
        ),
    )
    .await;

    assert_eq!(eleventh.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unnamed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(log(&stack, &token).await.len(), before);
}

#[tokio::test]
async fn a_user_never_sees_another_users_entries_and_a_key_may_not_read_the_log() {
    let stack = stack("audit-own", |_| {}).await;
    let (ada, _) = dev_login(&stack.router, "ada@example.com").await;
    let (bob, _) = dev_login(&stack.router, "bob@example.com").await;
    let made = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/api-keys",
            Some(&ada),
            Some(json!({"name": "ada's"})),
        ),
    )
    .await;
    let key = made.body["key"].as_str().unwrap();

    let bobs = log(&stack, &bob).await;
    let keyed = send(
        &stack.router,
        request(Method::GET, "/v1/me/security-log", Some(key), None),
    )
    .await;

    assert!(!actions(&bobs).contains(&"api_key_created"), "{bobs:?}");
    assert_eq!(keyed.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn each_sign_in_and_the_logout_leave_one_entry_each() {
    let stack = stack("audit-sign-in", |_| {}).await;
    let login = |email: &str| {
        Request::builder()
            .method(Method::POST)
            .uri("/auth/dev/login")
            .header("content-type", "application/json")
            .header("x-forwarded-for", "198.51.100.4")
            .header("user-agent", "curl/8")
            .body(Body::from(json!({"email": email}).to_string()))
            .unwrap()
    };
    let first = send(&stack.router, login("twice@example.com")).await;
    let second = send(&stack.router, login("twice@example.com")).await;
    let token = second.body["token"].as_str().unwrap().to_string();
    let entries_before_logout = log(&stack, &token).await;

    let logout = send(
        &stack.router,
        from_browser(Method::POST, "/auth/logout", &token, None),
    )
    .await;
    let (fresh, _) = dev_login(&stack.router, "twice@example.com").await;
    let entries = log(&stack, &fresh).await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_eq!(actions(&entries_before_logout), ["sign_in", "sign_in"]);
    assert_eq!(entries_before_logout[1]["detail"]["new_account"], true);
    assert_eq!(entries_before_logout[0]["detail"]["new_account"], false);
    assert_eq!(entries_before_logout[0]["detail"]["provider"], "dev");
    assert_eq!(entries_before_logout[0]["ip"], "198.51.100.4");
    assert_eq!(entries_before_logout[0]["user_agent"], "curl/8");
    assert_eq!(
        actions(&entries),
        ["sign_in", "logout", "sign_in", "sign_in"]
    );
    assert_eq!(entries[1]["ip"], "203.0.113.7");
}

#[tokio::test]
async fn a_refused_logout_leaves_no_entry() {
    let stack = stack("audit-logout-refused", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "gone@example.com").await;
    send(
        &stack.router,
        request(Method::POST, "/auth/logout", Some(&token), None),
    )
    .await;
    let (fresh, _) = dev_login(&stack.router, "gone@example.com").await;
    let before = log(&stack, &fresh).await.len();

    let again = send(
        &stack.router,
        request(Method::POST, "/auth/logout", Some(&token), None),
    )
    .await;

    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(log(&stack, &fresh).await.len(), before);
}
