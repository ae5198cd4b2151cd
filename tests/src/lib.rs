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
use shared::aws::Clients;
use shared::aws::counting::CallCounter;
use shared::aws::dynamo::BalanceChange;
use shared::config::{Secret, Settings};
use shared::domain::ledger::LedgerReason;
use shared::domain::{Credits, UserId};
use shared::hooks::target::Targets;
use tower::ServiceExt;

pub mod payments;

pub const SESSION_SECRET: &str = "integration-test-session-secret-0123456789abcdef";
pub const APP_ORIGIN: &str = "https://app.example.com";

/// One test's isolated stack.
pub struct Stack {
    pub names: Names,
    pub services: Arc<Services>,
    pub router: Router,
    /// Counts every AWS call the services make.
    pub calls: CallCounter,
    pub clients: Clients,
    pub queue_url: String,
}

/// The emulator endpoint the test command started (`infra/test.sh`).
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the tests through infra/test.sh")
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    endpoint();
    shared::aws::load_sdk_config()
        .await
        .expect("the SDK configuration loads")
}

/// A unique prefix, valid as a table, bucket and queue name.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A fresh table, bucket and queues; `settings` may adjust the defaults.
pub async fn stack(test: &str, adjust: impl FnOnce(&mut Settings)) -> Stack {
    let auth =
        auth::AuthContext::from_lookup(|_| None, &mut shared::aws::secrets::Secrets::default())
            .expect("no sign-in providers is a valid configuration");
    stack_with_auth(test, adjust, Arc::new(auth)).await
}

/// Like [`stack`], with sign-in providers configured (fake ones, in the auth tests).
pub async fn stack_with_auth(
    test: &str,
    adjust: impl FnOnce(&mut Settings),
    auth: Arc<auth::AuthContext>,
) -> Stack {
    stack_with_targets(test, adjust, auth, None).await
}

/// A stack whose webhook checks use `targets` (a local receiver's name, a name that
/// resolves somewhere forbidden).
pub async fn stack_with_hook_targets(test: &str, targets: Targets) -> Stack {
    let auth =
        auth::AuthContext::from_lookup(|_| None, &mut shared::aws::secrets::Secrets::default())
            .expect("no sign-in providers is a valid configuration");
    stack_with_targets(test, |_| {}, Arc::new(auth), Some(targets)).await
}

async fn stack_with_targets(
    test: &str,
    adjust: impl FnOnce(&mut Settings),
    auth: Arc<auth::AuthContext>,
    targets: Option<Targets>,
) -> Stack {
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
        "HOOKS_QUEUE_URL" => Some(provisioned.hooks_queue_url.clone()),
        "APP_ORIGINS" => Some(APP_ORIGIN.into()),
        "AUTH_DEV_LOGIN" => Some("1".into()),
        "MODEL_PROVIDERS" => Some("*=local".into()),
        _ => None,
    })
    .expect("test settings are valid");
    adjust(&mut settings);
    let calls = CallCounter::default();
    let queue_url = settings.queue_url.clone();
    let mut services = Services::new(settings, &sdk, &Secret::new(SESSION_SECRET), Some(&calls));
    if let Some(targets) = targets {
        services.hook_targets = targets;
    }
    let services = Arc::new(services);
    let router = local_runner::http_router(services.clone(), auth);
    // Counted too: a worker built from them shows in `calls`.
    let clients = Clients::new(&sdk, Some(&calls));
    Stack {
        names,
        services,
        router,
        calls,
        clients,
        queue_url,
    }
}

impl Stack {
    /// Adds credits to a user outside any flow (an admin grant).
    pub async fn grant(&self, user: &Value, credits: i64) {
        let user = UserId::parse(user["id"].as_str().expect("a user id")).expect("a user id");
        let change = BalanceChange::grant(
            user,
            Credits::new(credits).expect("positive"),
            LedgerReason::Admin,
            ulid::Ulid::new().to_string(),
        );
        self.services.store.apply(&change).await.expect("grant");
    }

    /// Messages waiting on the generation queue.
    pub async fn queue_depth(&self) -> usize {
        let attributes = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .expect("queue attributes");
        attributes
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub async fn balance(&self, token: &str) -> i64 {
        let me = send(
            &self.router,
            request(Method::GET, "/v1/me", Some(token), None),
        )
        .await;
        assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
        me.body["credits"].as_i64().expect("credits")
    }

    /// The ledger's rows, newest first (up to 100).
    pub async fn ledger(&self, token: &str) -> Vec<Value> {
        let page = send(
            &self.router,
            request(Method::GET, "/v1/me/ledger?limit=100", Some(token), None),
        )
        .await;
        page.body["items"].as_array().cloned().unwrap_or_default()
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

/// A worker on this stack's table, bucket and queues, with the given providers.
pub fn worker_for(
    stack: &Stack,
    providers: shared::providers::Providers,
    adjust: impl FnOnce(&mut worker::WorkerConfig),
) -> Arc<worker::Worker> {
    let worker = worker::Worker::new(&stack.services.settings, &stack.clients, providers);
    let mut config = worker.config.clone();
    adjust(&mut config);
    Arc::new(worker.with_config(config))
}

/// An SQS event as Lambda delivers it, one record per job, from the queue (or the DLQ).
pub fn sqs_event(
    stack: &Stack,
    jobs: &[Value],
    from_dlq: bool,
) -> aws_lambda_events::event::sqs::SqsEvent {
    let queue = if from_dlq {
        &stack.names.dlq
    } else {
        &stack.names.queue
    };
    let records: Vec<Value> = jobs
        .iter()
        .map(|job| {
            serde_json::json!({
                "messageId": ulid::Ulid::new().to_string(),
                "receiptHandle": "not-a-real-handle",
                "body": job.to_string(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("a valid SQS event")
}

/// A small real PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb([200, 120, 40]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encoding a PNG");
    bytes
}

/// Feeds `worker` from this stack's real queue in the background, as the local runner
/// does, until the returned task is dropped or aborted.
pub fn pump_queue(stack: &Stack, worker: Arc<worker::Worker>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(local_runner::pump::pump(
        worker,
        stack.clients.sqs.clone(),
        stack.queue_url.clone(),
    ))
}

type Script = dyn Fn(
        &shared::providers::ImageRequest<'_>,
        usize,
    ) -> Result<Vec<u8>, shared::providers::ProviderError>
    + Send
    + Sync;

/// A provider whose answers follow a script of (request, call number), counting its calls.
pub struct Scripted {
    name: &'static str,
    pub calls: std::sync::atomic::AtomicUsize,
    script: Box<Script>,
}

impl Scripted {
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl shared::providers::ImageProvider for Scripted {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn generate(
        &self,
        request: &shared::providers::ImageRequest<'_>,
    ) -> Result<Vec<u8>, shared::providers::ProviderError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (self.script)(request, call)
    }
}

/// A provider named `scripted` answering through `script`.
pub fn scripted(
    script: impl Fn(
        &shared::providers::ImageRequest<'_>,
        usize,
    ) -> Result<Vec<u8>, shared::providers::ProviderError>
    + Send
    + Sync
    + 'static,
) -> Arc<Scripted> {
    named("scripted", script)
}

/// A scripted provider with a name of its own (a host in a failover chain).
pub fn named(
    name: &'static str,
    script: impl Fn(
        &shared::providers::ImageRequest<'_>,
        usize,
    ) -> Result<Vec<u8>, shared::providers::ProviderError>
    + Send
    + Sync
    + 'static,
) -> Arc<Scripted> {
    Arc::new(Scripted {
        name,
        calls: std::sync::atomic::AtomicUsize::new(0),
        script: Box::new(script),
    })
}

/// Short worker times for tests that go through the real queue's backoffs and leases:
/// an attempt of 4 s, a lease 1 s past it, retries after 1 s.
pub fn short_times(config: &mut worker::WorkerConfig) {
    config.references_budget = std::time::Duration::from_secs(1);
    config.provider_timeout = std::time::Duration::from_secs(2);
    config.store_budget = std::time::Duration::from_secs(1);
    config.lease_margin = std::time::Duration::from_secs(1);
    config.backoff = std::time::Duration::from_secs(1);
    config.max_backoff = std::time::Duration::from_secs(2);
    config.function_timeout = std::time::Duration::from_secs(10);
}

impl Stack {
    /// The generation queue's ARN (what the Lambda event source puts in each record).
    pub async fn queue_arn(&self) -> String {
        local_runner::pump::queue_arn(&self.clients.sqs, &self.queue_url)
            .await
            .expect("the queue's ARN")
    }

    /// One receive from the real queue and one invocation of `worker`, as the Lambda
    /// event source (and the local runner) does it; how many records the batch had.
    pub async fn pump_once(&self, worker: &Arc<worker::Worker>) -> usize {
        let arn = self.queue_arn().await;
        local_runner::pump::pump_once(worker, &self.clients.sqs, &self.queue_url, &arn)
            .await
            .expect("one receive and its invocation")
    }

    /// Pumps until `done` holds for the generation or `within` passes; whether it held.
    pub async fn pump_until(
        &self,
        worker: &Arc<worker::Worker>,
        user: UserId,
        id: shared::domain::GenerationId,
        within: std::time::Duration,
        done: impl Fn(&shared::domain::generation::Generation) -> bool,
    ) -> bool {
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            if self.stored(user, id).await.is_some_and(|g| done(&g)) {
                return true;
            }
            self.pump_once(worker).await;
        }
        self.stored(user, id).await.is_some_and(|g| done(&g))
    }

    /// The generation as stored.
    pub async fn stored(
        &self,
        user: UserId,
        id: shared::domain::GenerationId,
    ) -> Option<shared::domain::generation::Generation> {
        self.services
            .store
            .get_generation(user, id)
            .await
            .expect("reading the generation")
    }
}

/// Signs in, creates a generation of `model` through the API (its message is then on the
/// real queue); the token, the user and the generation's id.
pub async fn accepted_generation(
    stack: &Stack,
    email: &str,
    model: &str,
    n: u32,
    references: &[String],
) -> (String, UserId, shared::domain::GenerationId) {
    let (token, user) = dev_login(&stack.router, email).await;
    let user = UserId::parse(user["id"].as_str().expect("a user id")).expect("a user id");
    let id = accept(stack, &token, model, n, references).await;
    (token, user, id)
}

/// Creates a generation for an existing user through the API; its id.
pub async fn accept(
    stack: &Stack,
    token: &str,
    model: &str,
    n: u32,
    references: &[String],
) -> shared::domain::GenerationId {
    let answer = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(token),
            Some(serde_json::json!({
                "model": model,
                "prompt": "a fox in the snow",
                "n": n,
                "reference_images": references,
            })),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    shared::domain::GenerationId::parse(answer.body["id"].as_str().expect("an id"))
        .expect("a generation id")
}
