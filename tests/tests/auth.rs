//! Sign-in against fake Google and Facebook servers on loopback (a test RSA key and its
//! JWKS): the authorization-code flow with PKCE, One Tap, every refusal, logout, account
//! deletion and the per-address bonus cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Form, Query, State};
use axum::http::{Method, Request, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e_tests::{Answer, Stack, dev_login, request, send, stack, stack_with_auth};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::aws::dynamo::SignIn;
use shared::aws::secrets::Secrets;
use shared::domain::user::Profile;

const CLIENT_ID: &str = "test-client.apps.googleusercontent.com";
const APP: &str = "https://app.example.com/studio";

#[derive(Default)]
struct Fake {
    /// code -> ID token the token endpoint answers with.
    id_tokens: HashMap<String, String>,
    token_requests: Vec<HashMap<String, String>>,
    jwks_fetches: usize,
}

type Shared = Arc<Mutex<Fake>>;

async fn fake_providers() -> (String, Shared) {
    let fake: Shared = Arc::default();
    let app = axum::Router::new()
        .route(
            "/google/token",
            post(|State(fake): State<Shared>, Form(form): Form<HashMap<String, String>>| async move {
                let mut fake = fake.lock().unwrap();
                fake.token_requests.push(form.clone());
                match form.get("code").and_then(|c| fake.id_tokens.get(c).cloned()) {
                    Some(id_token) => (
                        StatusCode::OK,
                        axum::Json(json!({"access_token": "ya29.test", "token_type": "Bearer", "expires_in": 3599, "id_token": id_token})),
                    ),
                    None => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"}))),
                }
            }),
        )
        .route(
            "/google/jwks",
            get(|State(fake): State<Shared>| async move {
                fake.lock().unwrap().jwks_fetches += 1;
                let jwks: Value = serde_json::from_str(include_str!("../fixtures/google-jwks.json")).unwrap();
                axum::Json(jwks)
            }),
        )
        .route(
            "/facebook/token",
            post(|State(fake): State<Shared>, Form(form): Form<HashMap<String, String>>| async move {
                fake.lock().unwrap().token_requests.push(form.clone());
                if form.get("code").map(String::as_str) == Some("fb-good") {
                    (StatusCode::OK, axum::Json(json!({"access_token": "fb-token", "token_type": "bearer", "expires_in": 5183944})))
                } else {
                    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"message": "bad code", "type": "OAuthException"}})))
                }
            }),
        )
        .route(
            "/facebook/me",
            get(|Query(query): Query<HashMap<String, String>>| async move {
                assert_eq!(query.get("access_token").map(String::as_str), Some("fb-token"));
                assert!(query.contains_key("appsecret_proof"));
                assert_eq!(query.get("fields").map(String::as_str), Some("id,name,email,picture"));
                axum::Json(json!({"id": "fb-1001", "name": "Fay Book", "picture": {"data": {"url": "https://cdn.example/fay.jpg"}}}))
            }),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, fake)
}

async fn auth_stack(
    test: &str,
    adjust: impl FnOnce(&mut shared::config::Settings),
) -> (Stack, Shared) {
    let (base, fake) = fake_providers().await;
    let lookup = |name: &str| -> Option<String> {
        Some(match name {
            "GOOGLE_CLIENT_ID" => CLIENT_ID.into(),
            "FACEBOOK_APP_ID" => "fb-app".into(),
            "PUBLIC_API_URL" => "https://api.example.com".into(),
            "GOOGLE_AUTH_URL" => "https://accounts.example/authorize".into(),
            "GOOGLE_TOKEN_URL" => format!("{base}/google/token"),
            "GOOGLE_JWKS_URL" => format!("{base}/google/jwks"),
            "FACEBOOK_AUTH_URL" => "https://www.facebook.example/dialog/oauth".into(),
            "FACEBOOK_TOKEN_URL" => format!("{base}/facebook/token"),
            "FACEBOOK_GRAPH_URL" => format!("{base}/facebook"),
            _ => return None,
        })
    };
    let mut secrets = Secrets::from_pairs([
        ("GOOGLE_CLIENT_SECRET", "g-secret"),
        ("FACEBOOK_APP_SECRET", "fb-secret"),
    ]);
    let context = auth::AuthContext::from_lookup(lookup, &mut secrets).unwrap();
    (stack_with_auth(test, adjust, Arc::new(context)).await, fake)
}

fn id_token(claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-kid-1".into());
    let key = EncodingKey::from_rsa_pem(include_bytes!("../fixtures/google-test-key.pem")).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(sub: &str, nonce: Option<&str>) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = json!({
        "iss": "https://accounts.google.com", "aud": CLIENT_ID, "sub": sub,
        "email": format!("{sub}@gmail.example"), "email_verified": true, "name": "Gee User",
        "picture": "https://lh3.example/photo.jpg", "iat": now, "exp": now + 3600
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    claims
}

/// A started login: the cookie, the state and the nonce the provider would see.
struct Started {
    cookie: String,
    state: String,
    nonce: Option<String>,
    location: url::Url,
}

async fn start_login(stack: &Stack, provider: &str) -> Started {
    let answer = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/auth/{provider}/login?redirect_to={}", urlencode(APP)),
            None,
            None,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FOUND, "{:?}", answer.body);
    let location = url::Url::parse(answer.headers["location"].to_str().unwrap()).unwrap();
    let query: HashMap<_, _> = location.query_pairs().into_owned().collect();
    let set_cookie = answer.headers["set-cookie"].to_str().unwrap();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("Secure")
            && set_cookie.contains("SameSite=Lax")
    );
    let cookie = set_cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("nb_oauth=")
        .unwrap()
        .to_string();
    Started {
        cookie,
        state: query["state"].clone(),
        nonce: query.get("nonce").cloned(),
        location,
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn callback(stack: &Stack, provider: &str, query: &str, cookie: Option<&str>) -> Answer {
    let mut builder = Request::get(format!("/auth/{provider}/callback?{query}"));
    if let Some(cookie) = cookie {
        builder = builder.header("cookie", format!("nb_oauth={cookie}"));
    }
    send(&stack.router, builder.body(Body::empty()).unwrap()).await
}

fn session_of(answer: &Answer) -> String {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("nb_session="))
        .and_then(|c| c.split(';').next())
        .filter(|t| !t.is_empty())
        .expect("a session cookie")
        .to_string()
}

async fn google_login(stack: &Stack, fake: &Shared, sub: &str, code: &str) -> Answer {
    let started = start_login(stack, "google").await;
    let token = id_token(claims(sub, started.nonce.as_deref()));
    fake.lock().unwrap().id_tokens.insert(code.into(), token);
    callback(
        stack,
        "google",
        &format!("code={code}&state={}", started.state),
        Some(&started.cookie),
    )
    .await
}

/// True when no user exists yet for this Google subject (nothing was written for it).
async fn nobody_for(stack: &Stack, sub: &str) -> bool {
    let sign_in = SignIn {
        provider: "google".into(),
        subject: sub.into(),
        profile: Profile {
            email: None,
            name: "probe".into(),
            avatar_url: None,
        },
        bonus: 0,
        bonus_limit: None,
        origin: Default::default(),
    };
    stack.services.store.sign_in(&sign_in).await.unwrap().1
}

#[tokio::test]
async fn a_google_login_creates_the_user_once_with_the_bonus_and_pkce() {
    let (stack, fake) = auth_stack("a-google", |_| {}).await;

    let first = google_login(&stack, &fake, "g-100", "code-1").await;
    let second = google_login(&stack, &fake, "g-100", "code-2").await;

    assert_eq!(first.status, StatusCode::FOUND, "{:?}", first.body);
    assert_eq!(first.headers["location"], APP);
    let cookie = first
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        cookie.contains("nb_session=") && cookie.contains("HttpOnly; Secure; SameSite=Lax"),
        "{cookie}"
    );
    let (a, b) = (session_of(&first), session_of(&second));
    let me_a = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&a), None),
    )
    .await
    .body;
    let me_b = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&b), None),
    )
    .await
    .body;
    assert_eq!(me_a["id"], me_b["id"]);
    assert_eq!(me_b["credits"], 10);
    assert_eq!(me_b["email"], "g-100@gmail.example");
    assert_eq!(stack.ledger(&b).await.len(), 1);
    let (exchange, jwks_fetches) = {
        let recorded = fake.lock().unwrap();
        (recorded.token_requests[0].clone(), recorded.jwks_fetches)
    };
    let verifier = &exchange["code_verifier"];
    assert_eq!(
        exchange["redirect_uri"],
        "https://api.example.com/auth/google/callback"
    );
    assert_eq!(jwks_fetches, 1, "JWKS fetched once and cached");
    let started = start_login(&stack, "google").await;
    let query: HashMap<_, _> = started.location.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["client_id"], CLIENT_ID);
    assert!(query["scope"].contains("openid"));
    let challenge_of_first = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    assert_eq!(challenge_of_first.len(), query["code_challenge"].len());
}

#[tokio::test]
async fn a_facebook_login_without_an_email_creates_the_user_once() {
    let (stack, _fake) = auth_stack("a-facebook", |_| {}).await;

    let mut sessions = Vec::new();
    for _ in 0..2 {
        let started = start_login(&stack, "facebook").await;
        assert!(
            started
                .location
                .as_str()
                .starts_with("https://www.facebook.example/dialog/oauth")
        );
        let answer = callback(
            &stack,
            "facebook",
            &format!("code=fb-good&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FOUND, "{:?}", answer.body);
        sessions.push(session_of(&answer));
    }

    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&sessions[1]), None),
    )
    .await
    .body;
    let first = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&sessions[0]), None),
    )
    .await
    .body;
    assert_eq!(me["id"], first["id"]);
    assert_eq!(me["email"], Value::Null);
    assert_eq!(me["name"], "Fay Book");
    assert_eq!(me["avatar_url"], "https://cdn.example/fay.jpg");
    assert_eq!(me["credits"], 10);
}

#[tokio::test]
async fn bad_or_missing_state_is_refused_with_nothing_written() {
    let (stack, fake) = auth_stack("a-state", |_| {}).await;
    let started = start_login(&stack, "google").await;
    fake.lock().unwrap().id_tokens.insert(
        "c".into(),
        id_token(claims("g-state", started.nonce.as_deref())),
    );
    let expired = {
        let mut state =
            auth::oauth::LoginState::open(&started.cookie, &stack.services.sessions).unwrap();
        state.expires = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
        state.seal(&stack.services.sessions)
    };
    let tampered = format!("{}x", started.cookie);

    let cases = [
        (
            "missing cookie",
            callback(
                &stack,
                "google",
                &format!("code=c&state={}", started.state),
                None,
            )
            .await,
        ),
        (
            "state mismatch",
            callback(
                &stack,
                "google",
                "code=c&state=someone-elses",
                Some(&started.cookie),
            )
            .await,
        ),
        (
            "expired state",
            callback(
                &stack,
                "google",
                &format!("code=c&state={}", started.state),
                Some(&expired),
            )
            .await,
        ),
        (
            "tampered cookie",
            callback(
                &stack,
                "google",
                &format!("code=c&state={}", started.state),
                Some(&tampered),
            )
            .await,
        ),
        (
            "other provider's cookie",
            callback(
                &stack,
                "facebook",
                &format!("code=c&state={}", started.state),
                Some(&started.cookie),
            )
            .await,
        ),
    ];

    for (what, answer) in &cases {
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{what}: {:?}",
            answer.body
        );
    }
    assert!(nobody_for(&stack, "g-state").await);
}

#[tokio::test]
async fn a_replayed_callback_is_refused() {
    let (stack, fake) = auth_stack("a-replay", |_| {}).await;
    let started = start_login(&stack, "google").await;
    fake.lock().unwrap().id_tokens.insert(
        "c".into(),
        id_token(claims("g-replay", started.nonce.as_deref())),
    );
    let query = format!("code=c&state={}", started.state);

    let first = callback(&stack, "google", &query, Some(&started.cookie)).await;
    let replay = callback(&stack, "google", &query, Some(&started.cookie)).await;

    assert_eq!(first.status, StatusCode::FOUND);
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_provider_error_redirects_back_with_auth_error() {
    let (stack, _) = auth_stack("a-denied", |_| {}).await;
    let started = start_login(&stack, "google").await;

    let answer = callback(
        &stack,
        "google",
        &format!("error=access_denied&state={}", started.state),
        Some(&started.cookie),
    )
    .await;

    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(
        answer.headers["location"],
        format!("{APP}?auth_error=access_denied")
    );
}

#[tokio::test]
async fn id_tokens_that_are_not_googles_for_us_are_refused_with_nothing_written() {
    let (stack, fake) = auth_stack("a-idtoken", |_| {}).await;
    let other_key =
        EncodingKey::from_rsa_pem(include_bytes!("../fixtures/other-test-key.pem")).unwrap();
    let public_as_secret =
        EncodingKey::from_secret(include_bytes!("../fixtures/google-test-key.pub.pem"));
    let with = |edit: &dyn Fn(&mut Value), nonce: &str| {
        let mut c = claims("g-bad", Some(nonce));
        edit(&mut c);
        id_token(c)
    };
    type MakeToken = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, MakeToken)> = vec![
        (
            "wrong aud",
            Box::new(move |n: &str| with(&|c| c["aud"] = json!("someone-else"), n)),
        ),
        (
            "wrong iss",
            Box::new(move |n: &str| with(&|c| c["iss"] = json!("https://evil.example"), n)),
        ),
        (
            "expired",
            Box::new(move |n: &str| with(&|c| c["exp"] = json!(1_000_000), n)),
        ),
        (
            "wrong nonce",
            Box::new(move |_: &str| with(&|_| {}, "not-the-nonce")),
        ),
        (
            "unknown kid",
            Box::new(move |n: &str| {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some("kid-nobody-knows".into());
                let key =
                    EncodingKey::from_rsa_pem(include_bytes!("../fixtures/google-test-key.pem"))
                        .unwrap();
                jsonwebtoken::encode(&header, &claims("g-bad", Some(n)), &key).unwrap()
            }),
        ),
        (
            "another key",
            Box::new(move |n: &str| {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some("test-kid-1".into());
                jsonwebtoken::encode(&header, &claims("g-bad", Some(n)), &other_key).unwrap()
            }),
        ),
        (
            "alg none",
            Box::new(move |n: &str| {
                let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"test-kid-1"}"#);
                let body = URL_SAFE_NO_PAD.encode(claims("g-bad", Some(n)).to_string());
                format!("{head}.{body}.")
            }),
        ),
        (
            "HS256 with the public key as secret",
            Box::new(move |n: &str| {
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("test-kid-1".into());
                jsonwebtoken::encode(&header, &claims("g-bad", Some(n)), &public_as_secret).unwrap()
            }),
        ),
    ];

    for (i, (what, make)) in cases.iter().enumerate() {
        let started = start_login(&stack, "google").await;
        let code = format!("bad-{i}");
        fake.lock()
            .unwrap()
            .id_tokens
            .insert(code.clone(), make(started.nonce.as_deref().unwrap()));
        let answer = callback(
            &stack,
            "google",
            &format!("code={code}&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{what}: {:?}",
            answer.body
        );
        // One Tap carries no nonce of ours; every other defect is refused there too.
        if *what != "wrong nonce" {
            let one_tap = send(
                &stack.router,
                request(
                    Method::POST,
                    "/auth/google/one-tap",
                    None,
                    Some(json!({"credential": make("")})),
                ),
            )
            .await;
            assert_eq!(one_tap.status, StatusCode::BAD_REQUEST, "one tap, {what}");
        }
    }
    assert!(nobody_for(&stack, "g-bad").await);
}

#[tokio::test]
async fn redirects_outside_the_app_origins_are_refused() {
    let (stack, _) = auth_stack("a-redirect", |_| {}).await;

    for target in [
        "https://evil.example/",
        "//evil.example/x",
        "https://app.example.com@evil.example/",
        "http://app.example.com/",
        "https://app.example.com.evil.example/",
        "/relative",
        "javascript:alert(1)",
    ] {
        let answer = send(
            &stack.router,
            request(
                Method::GET,
                &format!("/auth/google/login?redirect_to={}", urlencode(target)),
                None,
                None,
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{target}");
        assert!(answer.headers.get("set-cookie").is_none());
    }
}

#[tokio::test]
async fn one_tap_answers_a_token_without_a_cookie() {
    let (stack, _) = auth_stack("a-onetap", |_| {}).await;

    let answer = send(
        &stack.router,
        request(
            Method::POST,
            "/auth/google/one-tap",
            None,
            Some(json!({"credential": id_token(claims("g-tap", None))})),
        ),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(answer.headers.get("set-cookie").is_none());
    assert_eq!(answer.body["user"]["credits"], 10);
    let token = answer.body["token"].as_str().unwrap();
    assert_eq!(stack.balance(token).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_first_sign_ins_of_one_account_make_one_user_and_one_bonus() {
    let (stack, _) = auth_stack("a-race", |_| {}).await;
    let credential = id_token(claims("g-race", None));

    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let router = stack.router.clone();
            let credential = credential.clone();
            tokio::spawn(async move {
                send(
                    &router,
                    request(
                        Method::POST,
                        "/auth/google/one-tap",
                        None,
                        Some(json!({"credential": credential})),
                    ),
                )
                .await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut token = String::new();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        ids.insert(answer.body["user"]["id"].clone());
        token = answer.body["token"].as_str().unwrap().to_string();
    }

    assert_eq!(ids.len(), 1);
    assert_eq!(stack.ledger(&token).await.len(), 1);
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test]
async fn logout_revokes_old_tokens_on_every_function() {
    let (stack, _) = auth_stack("a-logout", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "bye@example.com").await;

    let logout = send(
        &stack.router,
        request(Method::POST, "/auth/logout", Some(&token), None),
    )
    .await;

    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    for (method, path, body) in [
        (Method::GET, "/v1/me", None),
        (Method::GET, "/v1/generations", None),
        (
            Method::POST,
            "/v1/generations",
            Some(json!({"model": "nano-banana", "prompt": "x"})),
        ),
        (
            Method::POST,
            "/v1/checkout",
            Some(json!({"product_id": "credits_100", "provider": "stripe"})),
        ),
    ] {
        let answer = send(
            &stack.router,
            request(method.clone(), path, Some(&token), body),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

#[tokio::test]
async fn signup_bonuses_are_capped_per_address_per_day() {
    let stack = stack("a-ipcap", |_| {}).await;
    let login_from = |email: &'static str, ip: &'static str| {
        let router = stack.router.clone();
        async move {
            let answer = send(
                &router,
                Request::post("/auth/dev/login")
                    .header("content-type", "application/json")
                    .header("x-forwarded-for", ip)
                    .body(Body::from(json!({"email": email}).to_string()))
                    .unwrap(),
            )
            .await;
            answer.body["user"]["credits"].as_i64().unwrap()
        }
    };

    let mut credits = Vec::new();
    for email in [
        "f1@example.com",
        "f2@example.com",
        "f3@example.com",
        "f4@example.com",
    ] {
        credits.push(login_from(email, "203.0.113.7").await);
    }
    let elsewhere = login_from("f5@example.com", "198.51.100.2").await;

    assert_eq!(credits, [10, 10, 10, 0]);
    assert_eq!(elsewhere, 10);
}

#[tokio::test]
async fn deleting_the_account_removes_images_and_personal_data_and_keeps_the_ledger() {
    let (stack, _) = auth_stack("a-delete", |_| {}).await;
    let credential = id_token(claims("g-delete", None));
    let tap = || {
        request(
            Method::POST,
            "/auth/google/one-tap",
            None,
            Some(json!({"credential": credential.clone()})),
        )
    };
    let signed = send(&stack.router, tap()).await;
    let token = signed.body["token"].as_str().unwrap().to_string();
    let user_id =
        shared::domain::UserId::parse(signed.body["user"]["id"].as_str().unwrap()).unwrap();
    let worker = e2e_tests::worker_for(
        &stack,
        shared::providers::Providers::new().with(
            "nano-banana",
            Arc::new(shared::providers::LocalRenderer::new()),
        ),
        |_| {},
    );
    let created = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&token),
            Some(json!({"model": "nano-banana", "prompt": "bye"})),
        ),
    )
    .await;
    let job = json!({"generation_id": created.body["id"], "user_id": user_id.to_string()});
    worker
        .handle_sqs(e2e_tests::sqs_event(&stack, &[job], false))
        .await;
    let before = stack
        .services
        .blobs
        .list(&format!("images/{user_id}/"))
        .await
        .unwrap();
    assert_eq!(before.len(), 1);

    let deleted = send(
        &stack.router,
        request(Method::DELETE, "/v1/me", Some(&token), None),
    )
    .await;

    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(&token), None),
    )
    .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert!(
        stack
            .services
            .blobs
            .list(&format!("images/{user_id}/"))
            .await
            .unwrap()
            .is_empty()
    );
    let profile = stack
        .services
        .store
        .get_user(user_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((profile.email, profile.avatar_url), (None, None));
    assert_eq!(profile.name, "deleted user");
    let (ledger, _) = stack
        .services
        .store
        .ledger_page(user_id, 100, None)
        .await
        .unwrap();
    assert_eq!(
        ledger.len(),
        2,
        "the bonus and the generation's debit remain"
    );
    assert_eq!(
        stack.services.store.ledger_sum(user_id).await.unwrap(),
        profile.credits
    );
    let again = send(&stack.router, tap()).await;
    assert_ne!(
        again.body["user"]["id"], signed.body["user"]["id"],
        "a new user"
    );
    assert_eq!(
        again.body["user"]["credits"], 0,
        "no second signup bonus for the same account"
    );
}
