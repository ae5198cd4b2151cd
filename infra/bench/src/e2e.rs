//! Local end to end with the `local` provider: the HTTP routers and the worker in-process,
//! the worker fed from the real queue by the local runner's pump (as `infra/run.sh` does),
//! against the emulator; next to the emulator's own per-call latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use shared::domain::catalog::AspectRatio;
use shared::domain::generation::Status;
use shared::domain::{GenerationId, UserId};
use shared::providers::LocalRenderer;
use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::stack::Stack;
use crate::stats;

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub label: String,
    pub generations: usize,
    pub n: u32,
    pub concurrency: usize,
    pub succeeded: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub call: String,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub struct Plan {
    /// One at a time: the latency of a lone generation.
    pub sequential: usize,
    /// All at once from `concurrency` clients: throughput, and latency under load.
    pub burst: usize,
    pub concurrency: usize,
    pub floor_samples: usize,
    pub time_limit: Duration,
}

pub async fn run(plan: &Plan) -> anyhow::Result<(Vec<Run>, Vec<Floor>)> {
    let stack = Arc::new(Stack::new("e2e").await?);
    let floors = floors(&stack, plan.floor_samples).await?;

    let worker = stack.worker(None)?;
    let sqs = stack.clients(None).sqs;
    let pump = tokio::spawn(local_runner::pump::pump(
        worker,
        sqs,
        stack.provisioned.queue_url.clone(),
    ));
    let result = async {
        let mut runs = Vec::new();
        let (token, user) = stack.user("e2e-0@example.com", 1_000_000).await?;
        let users = vec![(token, user)];
        runs.push(
            generations(
                &stack,
                &users,
                plan.sequential,
                1,
                plan.time_limit,
                "one at a time",
            )
            .await?,
        );
        let mut users = Vec::new();
        for i in 1..=4 {
            users.push(
                stack
                    .user(&format!("e2e-{i}@example.com"), 1_000_000)
                    .await?,
            );
        }
        runs.push(
            generations(
                &stack,
                &users,
                plan.burst,
                plan.concurrency,
                plan.time_limit,
                "burst",
            )
            .await?,
        );
        anyhow::Ok(runs)
    }
    .await;
    pump.abort();
    Ok((result?, floors))
}

/// Accepts `count` generations (n = 1) through `POST /v1/generations` from `concurrency`
/// clients spread over `users`, and waits until every one is final.
async fn generations(
    stack: &Arc<Stack>,
    users: &[(String, UserId)],
    count: usize,
    concurrency: usize,
    time_limit: Duration,
    label: &str,
) -> anyhow::Result<Run> {
    let deadline = Instant::now() + time_limit;
    let started = OffsetDateTime::now_utc();
    let mut sent: HashMap<GenerationId, (UserId, OffsetDateTime)> = HashMap::new();
    if concurrency <= 1 {
        let (token, user) = &users[0];
        for _ in 0..count {
            let at = OffsetDateTime::now_utc();
            let job = stack.generation(token, *user, 1).await?;
            sent.insert(job.generation_id, (*user, at));
            // Wait for this one before sending the next.
            loop {
                anyhow::ensure!(Instant::now() < deadline, "{label}: out of time");
                let generation = stack
                    .services
                    .store
                    .get_generation(*user, job.generation_id)
                    .await?
                    .context("the generation")?;
                if generation.status.is_final() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    } else {
        let mut clients = JoinSet::new();
        let per_client = count.div_ceil(concurrency);
        for c in 0..concurrency {
            let (token, user) = users[c % users.len()].clone();
            let quota = per_client.min(count.saturating_sub(c * per_client));
            let stack = stack.clone();
            clients.spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..quota {
                    let at = OffsetDateTime::now_utc();
                    let job = stack.generation(&token, user, 1).await?;
                    mine.push((job.generation_id, user, at));
                }
                anyhow::Ok(mine)
            });
        }
        while let Some(done) = clients.join_next().await {
            for (id, user, at) in done?? {
                sent.insert(id, (user, at));
            }
        }
    }

    // Every user's newest generations, read a page at a time until all are final.
    let mut finished: HashMap<GenerationId, (Status, OffsetDateTime)> = HashMap::new();
    while finished.len() < sent.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{label}: {} of {} generations final after {time_limit:?}",
            finished.len(),
            sent.len()
        );
        for (_, user) in users {
            let (page, _) = stack
                .services
                .store
                .list_generations(*user, 100, None)
                .await?;
            for generation in page {
                if let (true, Some(done)) = (generation.status.is_final(), generation.completed_at)
                    && sent.contains_key(&generation.id)
                {
                    finished.insert(generation.id, (generation.status, done));
                }
            }
        }
        if finished.len() < sent.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut latencies: Vec<f64> = Vec::new();
    let mut last = started;
    let mut succeeded = 0;
    for (id, (status, done)) in &finished {
        let (_, at) = sent[id];
        latencies.push((*done - at).as_seconds_f64() * 1000.0);
        last = last.max(*done);
        if *status == Status::Succeeded {
            succeeded += 1;
        }
    }
    let seconds = (last - started).as_seconds_f64();
    Ok(Run {
        label: label.into(),
        generations: count,
        n: 1,
        concurrency,
        succeeded,
        seconds,
        per_second: count as f64 / seconds,
        p50_ms: stats::percentile(&latencies, 50.0),
        p99_ms: stats::percentile(&latencies, 99.0),
    })
}

/// The emulator's own round trip for the calls a generation makes, one at a time.
async fn floors(stack: &Stack, samples: usize) -> anyhow::Result<Vec<Floor>> {
    let (_, user) = stack.user("floor@example.com", 10).await?;
    let clients = stack.clients(None);
    let png = LocalRenderer::render("a lighthouse at dawn", 0, AspectRatio::SQUARE, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut floors = Vec::new();

    let mut times = Vec::new();
    for _ in 0..samples {
        let t = Instant::now();
        clients
            .dynamo
            .get_item()
            .table_name(&stack.names.table)
            .key("pk", AttributeValue::S(format!("USER#{user}")))
            .key("sk", AttributeValue::S("PROFILE".into()))
            .send()
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    floors.push(floor("DynamoDB GetItem (a profile)", &times));

    let mut times = Vec::new();
    for i in 0..samples {
        let t = Instant::now();
        clients
            .s3
            .put_object()
            .bucket(&stack.names.bucket)
            .key(format!("floor/{i}.png"))
            .content_type("image/png")
            .body(png.clone().into())
            .send()
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    floors.push(floor(
        &format!("S3 PutObject ({} KiB PNG)", png.len() / 1024),
        &times,
    ));

    let mut times = Vec::new();
    for _ in 0..samples {
        let t = Instant::now();
        clients
            .sqs
            .send_message()
            .queue_url(&stack.provisioned.dlq_url)
            .message_body("{}")
            .send()
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    floors.push(floor("SQS SendMessage", &times));
    Ok(floors)
}

fn floor(call: &str, times: &[f64]) -> Floor {
    Floor {
        call: call.into(),
        samples: times.len(),
        p50_ms: stats::percentile(times, 50.0),
        p99_ms: stats::percentile(times, 99.0),
    }
}
