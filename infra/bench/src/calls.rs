//! AWS calls per operation on the plain happy path, counted by the SDK interceptor
//! (`shared::aws::counting::CallCounter`) on every client the operation uses.

use anyhow::Context;
use serde::Serialize;
use shared::aws::counting::CallCounter;
use shared::domain::generation::Status;

use crate::events;
use crate::stack::Stack;

#[derive(Debug, Clone, Serialize)]
pub struct Count {
    pub operation: String,
    /// DESIGN.md's minimum.
    pub floor: Option<usize>,
    /// `None`: not measurable yet (`note` says why).
    pub measured: Option<usize>,
    pub note: String,
}

impl Count {
    fn new(operation: &str, floor: Option<usize>, measured: usize, note: &str) -> Self {
        Self {
            operation: operation.into(),
            floor,
            measured: Some(measured),
            note: note.into(),
        }
    }
}

pub async fn run() -> anyhow::Result<Vec<Count>> {
    let stack = Stack::new("calls").await?;
    let (token, user) = stack.user("calls@example.com", 1_000).await?;
    let mut counts = Vec::new();

    stack.calls.reset();
    let job = stack.generation(&token, user, 1).await?;
    counts.push(Count::new(
        "generate accept (`POST /v1/generations`, n = 1)",
        Some(2),
        stack.calls.count(),
        "TransactWriteItems + SendMessage",
    ));

    stack.calls.reset();
    let (status, _) = stack
        .send(
            "GET",
            &format!("/v1/generations/{}", job.generation_id),
            Some(&token),
            None,
        )
        .await?;
    anyhow::ensure!(status.is_success(), "read: {status}");
    counts.push(Count::new(
        "generation read (`GET /v1/generations/{id}`)",
        Some(1),
        stack.calls.count(),
        "BatchGetItem: session check + item",
    ));

    let (status, key) = stack
        .send(
            "POST",
            "/v1/api-keys",
            Some(&token),
            Some(serde_json::json!({"name": "bench"})),
        )
        .await?;
    anyhow::ensure!(status.is_success(), "api key: {status}");
    let key = key["key"].as_str().context("the key")?.to_string();
    let path = format!("/v1/generations/{}", job.generation_id);
    // The first use marks the key used (at most once a minute); count a later one.
    stack.send("GET", &path, Some(&key), None).await?;
    stack.calls.reset();
    let (status, _) = stack.send("GET", &path, Some(&key), None).await?;
    anyhow::ensure!(status.is_success(), "keyed read: {status}");
    counts.push(Count::new(
        "generation read with an API key",
        Some(2),
        stack.calls.count(),
        "GetItem of the key's hash + the session read's BatchGetItem (issue 15: at most one more)",
    ));

    stack.calls.reset();
    let (status, _) = stack.send("GET", "/v1/me", Some(&token), None).await?;
    anyhow::ensure!(status.is_success(), "me: {status}");
    counts.push(Count::new(
        "account read (`GET /v1/me`)",
        None,
        stack.calls.count(),
        "no floor in DESIGN.md; for reference",
    ));

    counts.push(crate::webhook::grant_calls(&stack).await?);

    for n in [1, 4] {
        let job = stack.generation(&token, user, n).await?;
        let counter = CallCounter::default();
        let worker = stack.worker(Some(&counter))?;
        let event = events::sqs(&stack.names.queue, &[events::job_body(&job)]);
        let deadline = tokio::time::Instant::now() + worker.config.function_timeout;
        let response = worker
            .handle(event, deadline)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            events::outcome(response.to_string().as_bytes()) == "batch ok",
            "worker: {response}"
        );
        let generation = stack
            .services
            .store
            .get_generation(job.user_id, job.generation_id)
            .await?
            .context("the generation")?;
        anyhow::ensure!(
            generation.status == Status::Succeeded && generation.images.len() == n as usize,
            "worker left the generation {:?} with {} images",
            generation.status,
            generation.images.len()
        );
        counts.push(Count::new(
            &format!("worker job, n = {n} (claim, images, finish)"),
            Some(2 + n as usize),
            counter.count(),
            "claim UpdateItem + one PutObject per image + finish TransactWriteItems (the images recorded with it)",
        ));
    }
    Ok(counts)
}
