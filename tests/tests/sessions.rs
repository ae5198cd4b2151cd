//! Session tokens on every authenticated route: only a valid, current token passes.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e_tests::{APP_ORIGIN, SESSION_SECRET, dev_login, request, send, stack};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

/// Every authenticated route that exists, with a request that would otherwise succeed.
const AUTHENTICATED: &[(Method, &str)] = &[
    (Method::GET, "/v1/me"),
    (Method::GET, "/v1/me/ledger"),
    (Method::POST, "/auth/logout"),
];

fn sign(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(user: &str, exp_offset: i64, aud: &str) -> serde_json::Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({"sub": user, "sv": 0, "iss": "nano-banana-pro-ai", "aud": aud, "iat": now, "exp": now + exp_offset})
}

#[tokio::test]
async fn bad_tokens_get_401_problem_json_on_every_authenticated_route() {
    let stack = stack("tokens", |_| {}).await;
    let (good, user) = dev_login(&stack.router, "tokens@example.com").await;
    let user = user["id"].as_str().unwrap();
    let aud = "nano-banana-pro-ai/api";
    let (head, rest) = good.split_once('.').unwrap();
    let (body, _signature) = rest.split_once('.').unwrap();
    let unsigned_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let bad_tokens = [
        ("expired", sign(claims(user, -3600, aud), SESSION_SECRET)),
        (
            "tampered",
            format!("{head}.{body}x.{}", &rest[body.len() + 1..]),
        ),
        (
            "another key",
            sign(
                claims(user, 3600, aud),
                "some-other-secret-0123456789abcdefghijkl",
            ),
        ),
        ("alg none", format!("{unsigned_header}.{body}.")),
        (
            "wrong audience",
            sign(claims(user, 3600, "someone-else"), SESSION_SECRET),
        ),
        (
            "stale session version",
            sign(
                json!({"sv": 7})
                    .as_object()
                    .map(|extra| {
                        let mut c = claims(user, 3600, aud);
                        c.as_object_mut().unwrap().extend(extra.clone());
                        c
                    })
                    .unwrap(),
                SESSION_SECRET,
            ),
        ),
        ("garbage", "not-a-jwt".to_string()),
    ];

    for (method, path) in AUTHENTICATED {
        for (what, token) in &bad_tokens {
            let answer = send(
                &stack.router,
                request(method.clone(), path, Some(token), None),
            )
            .await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{what} on {method} {path}"
            );
            assert_eq!(answer.code(), "unauthorized");
            assert_eq!(answer.headers["content-type"], "application/problem+json");
        }
        let missing = send(&stack.router, request(method.clone(), path, None, None)).await;
        assert_eq!(
            missing.status,
            StatusCode::UNAUTHORIZED,
            "no token on {path}"
        );
    }
    // The good token still works: the refusals above changed nothing.
    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&good), None),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
}

fn with_cookie(method: Method, path: &str, token: &str, origin: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", format!("theme=dark; nb_session={token}"));
    if let Some(origin) = origin {
        builder = builder.header("origin", origin);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn the_session_cookie_authenticates_reads() {
    let stack = stack("cookie", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "cookie@example.com").await;

    let me = send(
        &stack.router,
        with_cookie(Method::GET, "/v1/me", &token, None),
    )
    .await;

    assert_eq!(me.status, StatusCode::OK);
}

#[tokio::test]
async fn a_cookie_request_that_changes_state_from_a_foreign_origin_is_forbidden_and_changes_nothing()
 {
    let stack = stack("csrf", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "csrf@example.com").await;

    let foreign = send(
        &stack.router,
        with_cookie(
            Method::POST,
            "/auth/logout",
            &token,
            Some("https://evil.example"),
        ),
    )
    .await;
    let missing = send(
        &stack.router,
        with_cookie(Method::POST, "/auth/logout", &token, None),
    )
    .await;

    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert_eq!(foreign.code(), "forbidden");
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&token), None),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "the session was not revoked");
}

#[tokio::test]
async fn logout_from_our_origin_revokes_every_session() {
    let stack = stack("logout", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "logout@example.com").await;
    let (other_token, _) = dev_login(&stack.router, "logout@example.com").await;

    let answer = send(
        &stack.router,
        with_cookie(Method::POST, "/auth/logout", &token, Some(APP_ORIGIN)),
    )
    .await;

    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let cleared = answer.headers["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("nb_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    for t in [&token, &other_token] {
        let me = send(&stack.router, request(Method::GET, "/v1/me", Some(t), None)).await;
        assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    }
    let (fresh, _) = dev_login(&stack.router, "logout@example.com").await;
    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&fresh), None),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "a new sign-in works again");
}

#[tokio::test]
async fn after_logout_an_idempotent_replay_with_the_old_token_and_a_known_key_is_refused_with_401()
{
    let stack = stack("replay-after-logout", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "replay@example.com").await;
    let create = || {
        let mut request = request(
            Method::POST,
            "/v1/generations",
            Some(&token),
            Some(json!({"model": "nano-banana", "prompt": "a known key"})),
        );
        request
            .headers_mut()
            .insert("idempotency-key", "known-key-1".parse().unwrap());
        request
    };
    let first = send(&stack.router, create()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    let replay = send(&stack.router, create()).await;
    assert_eq!(
        replay.status,
        StatusCode::ACCEPTED,
        "a replay while signed in"
    );
    let logout = send(
        &stack.router,
        request(Method::POST, "/auth/logout", Some(&token), None),
    )
    .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);

    let after = send(&stack.router, create()).await;

    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{:?}", after.body);
    assert_eq!(after.code(), "unauthorized");
    assert!(
        after.body.get("images").is_none(),
        "nothing of the generation"
    );
}
