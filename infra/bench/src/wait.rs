//! `Prefer: wait` against polling: how long after a generation becomes final each kind of
//! client learns it. A provider that takes a random 0.5-2.5 s (so results never line up
//! with a poll), the worker fed from the real queue; per generation one client holds a
//! `Prefer: wait=25` read open (again until final) while another reads every second.
//! The delay is the answer's arrival minus the item's `completed_at`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde::Serialize;
use shared::providers::{ImageProvider, ImageRequest, LocalRenderer, ProviderError, Providers};
use time::OffsetDateTime;

use crate::stack::Stack;
use crate::stats;

#[derive(Debug, Clone, Serialize)]
pub struct WaitFigures {
    pub generations: usize,
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    /// AWS calls (reads) a waiting client cost per generation (median).
    pub wait_reads: f64,
    pub poll_p50_ms: f64,
    pub poll_p99_ms: f64,
    pub poll_reads: f64,
}

/// The local renderer after a random pause.
struct Unhurried(LocalRenderer);

#[async_trait::async_trait]
impl ImageProvider for Unhurried {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        let pause = rand::rng().random_range(500..2500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        self.0.generate(request).await
    }
}

pub async fn run(generations: usize) -> anyhow::Result<WaitFigures> {
    let stack = Arc::new(Stack::new("wait").await?);
    let providers = Providers::new().with("nano-banana", Arc::new(Unhurried(LocalRenderer::new())));
    let worker = Arc::new(worker::Worker::new(
        &stack.services.settings,
        &stack.clients(None),
        providers,
    ));
    let pump = tokio::spawn(local_runner::pump::pump(
        worker,
        stack.clients(None).sqs,
        stack.provisioned.queue_url.clone(),
    ));
    let result = measure(&stack, generations).await;
    pump.abort();
    result
}

async fn measure(stack: &Arc<Stack>, generations: usize) -> anyhow::Result<WaitFigures> {
    let (token, user) = stack.user("wait@example.com", 1_000_000).await?;
    let mut figures = Vec::new();
    // One kind of client at a time, so that the call counter counts only its reads.
    for wait in [true, false] {
        let (mut delays, mut reads) = (vec![], vec![]);
        for _ in 0..generations {
            let job = stack.generation(&token, user, 1).await?;
            let path = format!("/v1/generations/{}", job.generation_id);
            stack.calls.reset();
            let arrived = until_final(stack, &token, &path, wait).await?;
            reads.push(stack.calls.count() as f64);
            let generation = stack
                .services
                .store
                .get_generation(job.user_id, job.generation_id)
                .await?
                .context("the generation")?;
            let done = generation.completed_at.context("completed_at")?;
            delays.push(millis_between(done, arrived));
        }
        figures.push((
            stats::percentile(&delays, 50.0),
            stats::percentile(&delays, 99.0),
            stats::median(&reads),
        ));
    }
    Ok(WaitFigures {
        generations,
        wait_p50_ms: figures[0].0,
        wait_p99_ms: figures[0].1,
        wait_reads: figures[0].2,
        poll_p50_ms: figures[1].0,
        poll_p99_ms: figures[1].1,
        poll_reads: figures[1].2,
    })
}

/// Reads until the answer is final, with `Prefer: wait=25` or once a second; when the
/// final answer arrived.
async fn until_final(
    stack: &Stack,
    token: &str,
    path: &str,
    wait: bool,
) -> anyhow::Result<OffsetDateTime> {
    let started = Instant::now();
    loop {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "never final");
        let (status, body) = if wait {
            stack
                .send_with("GET", path, Some(token), &[("prefer", "wait=25")])
                .await?
        } else {
            stack.send("GET", path, Some(token), None).await?
        };
        anyhow::ensure!(status.is_success(), "read: {status} {body}");
        if ["succeeded", "failed", "canceled"].contains(&body["status"].as_str().unwrap_or("")) {
            return Ok(OffsetDateTime::now_utc());
        }
        if !wait {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn millis_between(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).as_seconds_f64() * 1000.0
}
