//! Helpers for the tests in `tests/tests`: each test gets its own table (and, when it
//! needs them, bucket and queues) on the shared emulator, so tests run in parallel.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use local_runner::provision::{self, Names};
use serde_json::Value;
use shared::Services;
use shared::config::{Secret, Settings};
use tower::ServiceExt;

pub const SESSION_SECRET: &str = "integration-test-session-secret-0123456789abcdef";
pub const APP_ORIGIN: &str = "https://app.example.com";

/// One test's isolated stack.
pub struct Stack {
    pub names: Names,
    pub services: Arc<Services>,
    pub router: Router,
}

/// The emulator endpoint the test command started (`infra/test.sh`).
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the tests through infra/test.sh")
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    endpoint();
    shared::aws::load_sdk_config().await
}

/// A unique prefix, valid as a table, bucket and queue name.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A fresh table, bucket and queues; `settings` may adjust the defaults.
pub async fn stack(test: &str, adjust: impl FnOnce(&mut Settings)) -> Stack {
    let sdk = sdk_config().await;
    let names = Names::with_prefix(&unique_prefix(test));
    let provisioned = provision::ensure_all(&sdk, &names)
        .await
        .expect("provisioning the test stack");
    let mut settings = Settings::from_lookup(|name| match name {
        "TABLE_NAME" => Some(names.table.clone()),
        "BUCKET_NAME" => Some(names.bucket.clone()),
        "QUEUE_URL" => Some(provisioned.queue_url.clone()),
        "DLQ_URL" => Some(provisioned.dlq_url.clone()),
        "APP_ORIGINS" => Some(APP_ORIGIN.into()),
        "AUTH_DEV_LOGIN" => Some("1".into()),
        "MODEL_PROVIDERS" => Some("*=local".into()),
        _ => None,
    })
    .expect("test settings are valid");
    adjust(&mut settings);
    let services = Arc::new(Services::new(settings, &sdk, &Secret::new(SESSION_SECRET)));
    let router = local_runner::http_router(services.clone());
    Stack {
        names,
        services,
        router,
    }
}

/// A response, its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The problem code of an error answer.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// Sends one request through the router, as the Lambda or the local runner would.
pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("routers are infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

pub fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .expect("a valid request")
}

/// Signs in through `POST /auth/dev/login`; returns the token and the user.
pub async fn dev_login(router: &Router, email: &str) -> (String, Value) {
    let answer = send(
        router,
        request(
            Method::POST,
            "/auth/dev/login",
            None,
            Some(serde_json::json!({ "email": email, "name": "Test User" })),
        ),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "dev login: {:?}",
        answer.body
    );
    let token = answer.body["token"].as_str().expect("a token").to_string();
    (token, answer.body["user"].clone())
}
