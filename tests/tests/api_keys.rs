//! API keys against the emulator: made by a session, shown once, stored only as a hash,
//! accepted on the routes API.md lists and refused (403) elsewhere, revoked at once.

use axum::http::{Method, StatusCode};
use e2e_tests::{Answer, Stack, dev_login, request, send, stack};
use serde_json::{Value, json};

async fn make_key(stack: &Stack, token: &str, name: &str) -> Answer {
    send(
        &stack.router,
        request(
            Method::POST,
            "/v1/api-keys",
            Some(token),
            Some(json!({ "name": name })),
        ),
    )
    .await
}

async fn signed_in_with_key(stack: &Stack, email: &str) -> (String, String, Value) {
    let (token, _) = dev_login(&stack.router, email).await;
    let made = make_key(stack, &token, "render server").await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let key = made.body["key"].as_str().unwrap().to_string();
    (token, key, made.body)
}

fn cat() -> Value {
    json!({"model": "nano-banana", "prompt": "a cat in a hat"})
}

#[tokio::test]
async fn a_key_is_shown_once_with_its_prefix_and_listed_without_it() {
    let stack = stack("keys-made", |_| {}).await;
    let (token, key, made) = signed_in_with_key(&stack, "maker@example.com").await;

    let listed = send(
        &stack.router,
        request(Method::GET, "/v1/api-keys", Some(&token), None),
    )
    .await;

    assert!(key.starts_with("nbk_") && key.len() >= 4 + 43, "{key}");
    assert_eq!(made["prefix"], &key[..12]);
    assert!(made["id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(listed.status, StatusCode::OK);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "render server");
    assert_eq!(items[0]["prefix"], made["prefix"]);
    assert_eq!(items[0]["last_used_at"], Value::Null);
    assert!(items[0].get("key").is_none());
    assert!(!listed.body.to_string().contains(&key));
}

#[tokio::test]
async fn a_key_can_generate_read_and_upload_but_not_manage_the_account() {
    let stack = stack("keys-routes", |_| {}).await;
    let (_, key, _) = signed_in_with_key(&stack, "program@example.com").await;

    let created = send(
        &stack.router,
        request(Method::POST, "/v1/generations", Some(&key), Some(cat())),
    )
    .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap();
    for path in [
        format!("/v1/generations/{id}"),
        "/v1/generations".to_string(),
        "/v1/me".to_string(),
        "/v1/me/ledger".to_string(),
    ] {
        let answer = send(&stack.router, request(Method::GET, &path, Some(&key), None)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
    }
    let upload = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/uploads",
            Some(&key),
            Some(json!({"content_type": "image/png", "size_bytes": 100})),
        ),
    )
    .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{:?}", upload.body);
    let cancel = send(
        &stack.router,
        request(
            Method::POST,
            &format!("/v1/generations/{id}/cancel"),
            Some(&key),
            None,
        ),
    )
    .await;
    assert_eq!(cancel.status, StatusCode::OK, "{:?}", cancel.body);

    let refused = [
        (Method::DELETE, "/v1/me", None),
        (Method::POST, "/auth/logout", None),
        (
            Method::POST,
            "/v1/api-keys",
            Some(json!({"name": "another"})),
        ),
        (Method::GET, "/v1/api-keys", None),
        (Method::GET, "/v1/webhook-secret", None),
        (Method::POST, "/v1/webhook-secret/rotate", None),
        (
            Method::POST,
            "/v1/checkout",
            Some(json!({"product_id": "credits_100", "provider": "stripe"})),
        ),
        (Method::POST, "/v1/billing/portal", None),
    ];
    for (method, path, body) in refused {
        let answer = send(
            &stack.router,
            request(method.clone(), path, Some(&key), body),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            answer.body
        );
        assert_eq!(answer.code(), "forbidden");
    }
    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&key), None),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "the account is still there");
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_next_request() {
    let stack = stack("keys-revoke", |_| {}).await;
    let (token, key, made) = signed_in_with_key(&stack, "revoker@example.com").await;
    let id = made["id"].as_str().unwrap();
    let before = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&key), None),
    )
    .await;

    let revoked = send(
        &stack.router,
        request(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            Some(&token),
            None,
        ),
    )
    .await;
    let after = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&key), None),
    )
    .await;
    let again = send(
        &stack.router,
        request(
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            Some(&token),
            None,
        ),
    )
    .await;

    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_eleventh_active_key_is_refused_until_one_is_revoked() {
    let stack = stack("keys-limit", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "hoarder@example.com").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let made = make_key(&stack, &token, &format!("key {i}")).await;
        assert_eq!(made.status, StatusCode::CREATED, "{i}: {:?}", made.body);
        ids.push(made.body["id"].as_str().unwrap().to_string());
    }

    let eleventh = make_key(&stack, &token, "one too many").await;
    send(
        &stack.router,
        request(
            Method::DELETE,
            &format!("/v1/api-keys/{}", ids[3]),
            Some(&token),
            None,
        ),
    )
    .await;
    let replacement = make_key(&stack, &token, "replacement").await;

    assert_eq!(eleventh.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(eleventh.code(), "validation_failed");
    assert_eq!(replacement.status, StatusCode::CREATED);
}

#[tokio::test]
async fn only_the_keys_hash_is_in_the_table() {
    let stack = stack("keys-hash", |_| {}).await;
    let (_, key, _) = signed_in_with_key(&stack, "careful@example.com").await;

    let scan = stack
        .clients
        .dynamo
        .scan()
        .table_name(&stack.names.table)
        .send()
        .await
        .unwrap();
    let everything = format!("{:?}", scan.items());

    assert!(!everything.contains(&key[4..]), "the key itself is stored");
    assert!(everything.contains(&shared::domain::secrets::api_key_hash(&key)));
}

#[tokio::test]
async fn a_keyed_read_costs_one_read_more_than_a_session_and_marks_the_key_used_once_a_minute() {
    let stack = stack("keys-calls", |_| {}).await;
    let (token, key, _) = signed_in_with_key(&stack, "counted@example.com").await;
    let created = send(
        &stack.router,
        request(Method::POST, "/v1/generations", Some(&token), Some(cat())),
    )
    .await;
    let path = format!("/v1/generations/{}", created.body["id"].as_str().unwrap());
    let read = |credential: String| {
        let router = stack.router.clone();
        let path = path.clone();
        async move {
            send(
                &router,
                request(Method::GET, &path, Some(&credential), None),
            )
            .await
        }
    };

    read(key.clone()).await; // the first use marks the key used
    stack.calls.reset();
    read(token.clone()).await;
    let session_calls = stack.calls.count();
    stack.calls.reset();
    let keyed = read(key.clone()).await;
    let key_calls = stack.calls.count();

    assert_eq!(keyed.status, StatusCode::OK);
    assert_eq!(session_calls, 1);
    assert_eq!(
        key_calls, 2,
        "the key's lookup, then the same read as a session"
    );
    let listed = send(
        &stack.router,
        request(Method::GET, "/v1/api-keys", Some(&token), None),
    )
    .await;
    assert!(listed.body["items"][0]["last_used_at"].is_string());
}

#[tokio::test]
async fn logout_leaves_keys_working() {
    let stack = stack("keys-logout", |_| {}).await;
    let (token, key, _) = signed_in_with_key(&stack, "leaver@example.com").await;

    let logout = send(
        &stack.router,
        request(Method::POST, "/auth/logout", Some(&token), None),
    )
    .await;
    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&key), None),
    )
    .await;
    let old_session = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&token), None),
    )
    .await;

    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(old_session.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_made_up_key_is_401() {
    let stack = stack("keys-fake", |_| {}).await;
    let fake = format!("nbk_{}", "A".repeat(43));

    let answer = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&fake), None),
    )
    .await;

    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_webhook_secret_is_made_once_and_rotation_replaces_it() {
    let stack = stack("whsec", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "hooks@example.com").await;
    let get = || {
        let router = stack.router.clone();
        let token = token.clone();
        async move {
            send(
                &router,
                request(Method::GET, "/v1/webhook-secret", Some(&token), None),
            )
            .await
        }
    };

    let first = get().await;
    let second = get().await;
    let rotated = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/webhook-secret/rotate",
            Some(&token),
            None,
        ),
    )
    .await;
    let after = get().await;

    let secret = first.body["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(second.body["secret"], secret);
    assert_ne!(rotated.body["secret"], secret);
    assert_eq!(after.body["secret"], rotated.body["secret"]);
    let user = shared::domain::UserId::parse(
        send(
            &stack.router,
            request(Method::GET, "/v1/me", Some(&token), None),
        )
        .await
        .body["id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let secrets = stack
        .services
        .store
        .webhook_secrets(user, time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        secrets.previous.as_deref(),
        Some(secret),
        "the old one signs for a day"
    );
}
