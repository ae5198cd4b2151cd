//! A minimal Lambda Runtime API on loopback: hands out queued events on
//! `GET /2018-06-01/runtime/invocation/next` and records what the function posts back
//! (`/response`, `/error`, `/runtime/init/error`), with the time each arrived.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

const PREFIX: &str = "/2018-06-01/runtime";

/// What the function posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Response,
    Error,
    InitError,
}

#[derive(Debug)]
pub struct Reply {
    pub kind: ReplyKind,
    pub at: Instant,
    pub body: Bytes,
}

struct Invocation {
    request_id: String,
    body: Bytes,
}

struct Shared {
    events: Mutex<mpsc::UnboundedReceiver<Invocation>>,
    first_next: OnceLock<Instant>,
    replies: mpsc::UnboundedSender<Reply>,
    function_arn: String,
    /// The function's timeout: every invocation's deadline is this far from its start.
    timeout: Duration,
}

/// One Runtime API, serving one function process.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Invocation>,
    replies: mpsc::UnboundedReceiver<Reply>,
    server: JoinHandle<()>,
    sequence: u64,
}

impl RuntimeApi {
    /// Listens on 127.0.0.1 (a free port) for the function `name`; each invocation's
    /// deadline is Lambda's longest timeout (900 s) away.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_with_timeout(name, Duration::from_secs(900)).await
    }

    /// [`Self::start`] for a function whose invocations each get `timeout` until their
    /// deadline, as Lambda gives them (the template's `Timeout`).
    pub async fn start_with_timeout(name: &str, timeout: Duration) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (replies_tx, replies_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: Mutex::new(events_rx),
            first_next: OnceLock::new(),
            replies: replies_tx,
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
            timeout,
        });
        let app = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next))
            .route(
                &format!("{PREFIX}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
            .route(&format!("{PREFIX}/init/error"), post(init_error))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            // Ends when the task is aborted (on drop).
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            shared,
            events: events_tx,
            replies: replies_rx,
            server,
            sequence: 0,
        })
    }

    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Queues one event; returns its request id.
    pub fn push(&mut self, body: impl Into<Bytes>) -> String {
        self.sequence += 1;
        let request_id = format!("{:08x}-bench-{:012}", std::process::id(), self.sequence);
        let invocation = Invocation {
            request_id: request_id.clone(),
            body: body.into(),
        };
        // The receiver lives as long as `self`.
        let _ = self.events.send(invocation);
        request_id
    }

    /// When the function first asked for an event.
    pub fn first_next(&self) -> Option<Instant> {
        self.shared.first_next.get().copied()
    }

    /// The next thing the function posted, within `timeout`.
    pub async fn reply(&mut self, timeout: Duration) -> anyhow::Result<Reply> {
        match tokio::time::timeout(timeout, self.replies.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => anyhow::bail!("the runtime API stopped"),
            Err(_) => anyhow::bail!("no reply within {timeout:?}"),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.first_next.get_or_init(Instant::now);
    let Some(invocation) = shared.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + shared.timeout.as_millis();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", invocation.request_id);
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        shared.function_arn.clone(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-65f0c0de-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=0".into(),
    );
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, invocation.body).into_response()
}

fn record(shared: &Shared, kind: ReplyKind, body: Bytes) -> StatusCode {
    let _ = shared.replies.send(Reply {
        kind,
        at: Instant::now(),
        body,
    });
    StatusCode::ACCEPTED
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    record(&shared, ReplyKind::Response, body)
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    record(&shared, ReplyKind::Error, body)
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    record(&shared, ReplyKind::InitError, body)
}
