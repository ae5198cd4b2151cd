//! `Prefer: wait=N` on create and read: the answer comes when the generation is final or
//! after N seconds, with `Preference-Applied`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use e2e_tests::{Stack, dev_login, png, pump_queue, send, stack, worker_for};
use serde_json::{Value, json};
use shared::providers::{ImageProvider, ImageRequest, LocalRenderer, ProviderError, Providers};

fn with_prefer(
    method: Method,
    path: &str,
    token: &str,
    prefer: &str,
    body: Option<Value>,
) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("prefer", prefer);
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

fn cat() -> Value {
    json!({"model": "nano-banana", "prompt": "a cat in a hat"})
}

/// Takes its time: longer than any wait the tests ask for.
struct Slow;

#[async_trait::async_trait]
impl ImageProvider for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    async fn generate(&self, _: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        tokio::time::sleep(Duration::from_secs(20)).await;
        Ok(png(8, 8))
    }
}

fn running_with(stack: &Stack, provider: Arc<dyn ImageProvider>) -> tokio::task::JoinHandle<()> {
    let worker = worker_for(
        stack,
        Providers::new().with("nano-banana", provider),
        |_| {},
    );
    pump_queue(stack, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_that_waits_answers_with_the_finished_generation() {
    let stack = stack("wait-create", |_| {}).await;
    let pump = running_with(&stack, Arc::new(LocalRenderer::new()));
    let (token, _) = dev_login(&stack.router, "waiter@example.com").await;

    let answer = send(
        &stack.router,
        with_prefer(
            Method::POST,
            "/v1/generations",
            &token,
            "wait=20",
            Some(cat()),
        ),
    )
    .await;
    pump.abort();

    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "succeeded", "{:?}", answer.body);
    assert_eq!(answer.body["images"].as_array().unwrap().len(), 1);
    assert_eq!(answer.headers["preference-applied"], "wait=20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_that_waits_gives_the_current_state_when_its_time_is_up() {
    let stack = stack("wait-read", |_| {}).await;
    let pump = running_with(&stack, Arc::new(Slow));
    let (token, _) = dev_login(&stack.router, "patient@example.com").await;
    let created = send(
        &stack.router,
        with_prefer(
            Method::POST,
            "/v1/generations",
            &token,
            "respond-async",
            Some(cat()),
        ),
    )
    .await;
    assert!(created.headers.get("preference-applied").is_none());
    let path = format!("/v1/generations/{}", created.body["id"].as_str().unwrap());

    let started = Instant::now();
    let answer = send(
        &stack.router,
        with_prefer(Method::GET, &path, &token, "wait=2", None),
    )
    .await;
    let waited = started.elapsed();
    pump.abort();

    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        ["queued", "running"].contains(&answer.body["status"].as_str().unwrap()),
        "{:?}",
        answer.body
    );
    assert_eq!(answer.headers["preference-applied"], "wait=2");
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
}

#[tokio::test]
async fn a_wait_over_25_seconds_is_taken_as_25_and_a_bad_one_is_ignored() {
    let stack = stack("wait-cap", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "capped@example.com").await;
    let created = send(
        &stack.router,
        with_prefer(
            Method::POST,
            "/v1/generations",
            &token,
            "wait=soon",
            Some(cat()),
        ),
    )
    .await;
    let id = created.body["id"].as_str().unwrap();
    // Cancel it so that a waiting read of it is final at once.
    send(
        &stack.router,
        e2e_tests::request(
            Method::POST,
            &format!("/v1/generations/{id}/cancel"),
            Some(&token),
            None,
        ),
    )
    .await;

    let answer = send(
        &stack.router,
        with_prefer(
            Method::GET,
            &format!("/v1/generations/{id}"),
            &token,
            "wait=90",
            None,
        ),
    )
    .await;

    assert!(created.headers.get("preference-applied").is_none());
    assert_eq!(answer.body["status"], "canceled");
    assert_eq!(answer.headers["preference-applied"], "wait=25");
}
