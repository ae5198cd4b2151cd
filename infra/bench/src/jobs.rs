//! The worker's own figures (issue 13): its peak memory with the largest job a user may
//! ask for, and the time from a worker's death to the generation's success.
//!
//! - Largest job: seedream-4.0 with ten 10 MiB reference uploads and n = 4, run by the
//!   worker binary (spawned under the bench's Runtime API, as for the other memory rows)
//!   through the real ARK adapter against a local fake that reads every body to its end
//!   and answers with a 1024 × 1024 image. Every byte the worker holds is its own: the
//!   references read once and encoded once, four request bodies spliced from them, four
//!   answers.
//! - Death to success: in-process, the local runner's pump and the sweeper with short
//!   settings; a worker claims, is mid-call when its task is dropped (as a killed process
//!   stops: nothing runs after it), and the clock runs until the generation is
//!   `succeeded`. The same arithmetic with the template's settings gives the deployed
//!   bound, printed beside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::json;
use shared::domain::generation::Status;
use shared::providers::{ImageProvider, ImageRequest, ProviderError, Providers};

use crate::process::{self, Subject};
use crate::report::MemoryRow;
use crate::stack::Stack;
use crate::{events, json_bytes};

/// The largest job: as many references as seedream-4.0 takes, each as large as an upload
/// may be, and the most images.
pub const REFERENCES: usize = 10;
pub const N: u32 = 4;
const REFERENCE_LIMIT: usize = 10 * 1024 * 1024;

/// The template's Sweeper schedule (`rate(1 minute)`).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// A PNG of noise (incompressible) of at most `limit` bytes, as close to it as a square
/// allows.
fn noise_png(side: u32, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let pixels: Vec<u8> = (0..side as usize * side as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let image = image::RgbImage::from_raw(side, side, pixels).expect("the buffer fits");
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encoding a PNG");
    bytes
}

fn largest_reference() -> Vec<u8> {
    // 1865² × 3 bytes of noise: a PNG just under the 10 MiB upload limit.
    let mut side = 1866;
    loop {
        let png = noise_png(side, 0x5eed);
        if png.len() <= REFERENCE_LIMIT {
            return png;
        }
        side -= 4;
    }
}

#[derive(Default)]
struct FakeArk {
    image_b64: String,
    calls: AtomicUsize,
    largest_body: AtomicU64,
}

/// BytePlus ARK's `images/generations`, reading each body to its end (never holding it).
async fn ark(State(fake): State<Arc<FakeArk>>, mut body: Body) -> impl IntoResponse {
    let mut total = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
        }
    }
    fake.calls.fetch_add(1, Ordering::SeqCst);
    fake.largest_body.fetch_max(total, Ordering::SeqCst);
    axum::Json(json!({ "data": [{ "b64_json": fake.image_b64 }] }))
}

/// The figures of the largest job's run.
#[derive(Debug, Clone, Serialize)]
pub struct Largest {
    pub jobs: usize,
    pub reference_bytes: usize,
    pub largest_request_bytes: u64,
    pub provider_calls: usize,
    pub succeeded: usize,
}

/// Runs `jobs` largest jobs through the worker binary, one per invocation; its memory row.
pub async fn largest_job_memory(
    subject: &Subject,
    jobs: usize,
    logs: &std::path::Path,
) -> anyhow::Result<(MemoryRow, Largest)> {
    let stack = Stack::new("memory-worker-largest").await?;
    let fake = Arc::new(FakeArk {
        image_b64: base64::engine::general_purpose::STANDARD.encode(noise_png(1024, 7)),
        ..FakeArk::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ark_url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/api/v3/images/generations", axum::routing::post(ark))
        .with_state(fake.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (token, user) = stack.user("largest@example.com", 1_000_000).await?;
    let reference = largest_reference();
    let mut uploads = Vec::with_capacity(REFERENCES);
    for _ in 0..REFERENCES {
        uploads.push(upload(&stack, &token, &reference).await?);
    }
    eprintln!(
        "bench: {jobs} largest job(s): {REFERENCES} references of {:.2} MiB, n = {N}",
        reference.len() as f64 / 1048576.0
    );
    let mut bodies = Vec::with_capacity(jobs);
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        let (status, body) = stack
            .send(
                "POST",
                "/v1/generations",
                Some(&token),
                Some(json!({
                    "model": "seedream-4.0",
                    "prompt": "the same lighthouse, ten ways",
                    "n": N,
                    "reference_images": uploads,
                })),
            )
            .await?;
        anyhow::ensure!(status.as_u16() == 202, "generate: {status} {body}");
        let id = shared::domain::GenerationId::parse(body["id"].as_str().context("an id")?)?;
        let job = shared::aws::sqs::GenerationJob {
            generation_id: id,
            user_id: user,
        };
        bodies.push(json_bytes(&events::sqs(
            &stack.names.queue,
            &[events::job_body(&job)],
        )));
        ids.push(id);
    }
    let env: Vec<(String, String)> = stack
        .function_env()
        .into_iter()
        .chain([
            ("MODEL_PROVIDERS".into(), "seedream-4.0=ark".into()),
            ("ARK_BASE_URL".into(), ark_url),
            ("ARK_API_KEY".into(), "bench-ark-key".into()),
            ("PROVIDER_ALLOW_LOOPBACK".into(), "1".into()),
        ])
        .collect();
    let subject = subject.clone().with_env(&env);
    let memory = process::memory(&subject, bodies, logs).await;
    server.abort();
    let memory = memory?;
    let mut succeeded = 0;
    for id in &ids {
        let generation = stack
            .services
            .store
            .get_generation(user, *id)
            .await?
            .context("the generation")?;
        if generation.status == Status::Succeeded && generation.images.len() == N as usize {
            succeeded += 1;
        }
    }
    let row = MemoryRow::new(
        "worker (largest job)",
        &format!(
            "one seedream-4.0 job per invocation: {REFERENCES} × 10 MiB references, n = {N}, the ARK adapter against a local fake"
        ),
        memory,
    );
    Ok((
        row,
        Largest {
            jobs,
            reference_bytes: reference.len(),
            largest_request_bytes: fake.largest_body.load(Ordering::SeqCst),
            provider_calls: fake.calls.load(Ordering::SeqCst),
            succeeded,
        },
    ))
}

/// One upload of `bytes` (`POST /v1/uploads`, then the object put where its presigned URL
/// points); its id.
async fn upload(stack: &Stack, token: &str, bytes: &[u8]) -> anyhow::Result<String> {
    let (status, body) = stack
        .send(
            "POST",
            "/v1/uploads",
            Some(token),
            Some(json!({ "content_type": "image/png", "size_bytes": bytes.len() })),
        )
        .await?;
    anyhow::ensure!(status.as_u16() == 201, "upload: {status} {body}");
    let url = url_path(body["upload_url"].as_str().context("an upload URL")?)?;
    let key = url
        .strip_prefix(&format!("/{}/", stack.names.bucket))
        .context("a path-style URL into the bucket")?;
    stack
        .services
        .blobs
        .put(key, "image/png", bytes.to_vec())
        .await?;
    Ok(body["id"].as_str().context("an upload id")?.to_string())
}

fn url_path(url: &str) -> anyhow::Result<String> {
    let rest = url.split_once("://").context("an absolute URL")?.1;
    let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
    Ok(format!("/{}", path.split('?').next().unwrap_or("")))
}

/// A provider whose first call never ends (until its task is dropped), then answers.
struct HangsOnce {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ImageProvider for HangsOnce {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        shared::providers::LocalRenderer::render(
            request.prompt,
            request.index,
            request.aspect_ratio,
            None,
        )
    }
}

/// Death to success, measured and computed.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    /// With the short settings of the measurement.
    pub short_attempt_s: f64,
    pub short_lease_s: f64,
    pub short_sweep_s: f64,
    pub measured_s: Vec<f64>,
    /// From the template's settings.
    pub template_attempt_s: f64,
    pub template_lease_s: f64,
    pub template_sweep_s: f64,
    pub template_deadline_s: f64,
}

/// `runs` deaths, each of a worker mid-call on a fresh generation.
pub async fn death_to_success(runs: usize) -> anyhow::Result<Recovery> {
    let stack = Stack::new("recovery").await?;
    let provider_of = || {
        Arc::new(HangsOnce {
            calls: AtomicUsize::new(0),
        })
    };
    let template = worker::WorkerConfig::from_settings(&stack.services.settings);
    let sweep_every = Duration::from_secs(1);
    let (token, user) = stack.user("recovery@example.com", 1_000_000).await?;
    let arn = local_runner::pump::queue_arn(&stack.clients(None).sqs, &stack.provisioned.queue_url)
        .await?;
    let mut measured = Vec::with_capacity(runs);
    let mut short_lease = Duration::ZERO;
    let mut short_attempt = Duration::ZERO;
    for _ in 0..runs {
        let provider = provider_of();
        let base =
            stack.worker_with(None, Providers::new().with("nano-banana", provider.clone()))?;
        let mut config = base.config.clone();
        config.references_budget = Duration::from_secs(1);
        config.provider_timeout = Duration::from_secs(3);
        config.store_budget = Duration::from_secs(1);
        config.lease_margin = Duration::from_secs(1);
        config.function_timeout = Duration::from_secs(10);
        short_attempt = config.attempt_budget();
        short_lease = config.attempt_budget() + config.lease_margin;
        let worker = Arc::new(base.with_config(config));
        let job = stack.generation(&token, user, 1).await?;
        let sqs = stack.clients(None).sqs;
        let url = stack.provisioned.queue_url.clone();

        let dying = {
            let (worker, sqs, url, arn) = (worker.clone(), sqs.clone(), url.clone(), arn.clone());
            tokio::spawn(
                async move { local_runner::pump::pump_once(&worker, &sqs, &url, &arn).await },
            )
        };
        let claim_by = Instant::now() + Duration::from_secs(20);
        while provider.calls.load(Ordering::SeqCst) == 0 {
            anyhow::ensure!(Instant::now() < claim_by, "the job was never claimed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        dying.abort();
        let died = Instant::now();
        let sweeper = tokio::spawn(local_runner::pump::sweep_every(worker.clone(), sweep_every));
        let give_up = died + short_lease * 4 + Duration::from_secs(30);
        let outcome = loop {
            local_runner::pump::pump_once(&worker, &sqs, &url, &arn).await?;
            let generation = stack
                .services
                .store
                .get_generation(user, job.generation_id)
                .await?
                .context("the generation")?;
            if generation.status == Status::Succeeded {
                break Ok(died.elapsed());
            }
            if Instant::now() > give_up {
                break Err(anyhow::anyhow!("not recovered within {:?}", give_up - died));
            }
        };
        sweeper.abort();
        measured.push(outcome?.as_secs_f64());
    }
    Ok(Recovery {
        short_attempt_s: short_attempt.as_secs_f64(),
        short_lease_s: short_lease.as_secs_f64(),
        short_sweep_s: sweep_every.as_secs_f64(),
        measured_s: measured,
        template_attempt_s: template.attempt_budget().as_secs_f64(),
        template_lease_s: (template.attempt_budget() + template.lease_margin).as_secs_f64(),
        template_sweep_s: SWEEP_INTERVAL.as_secs_f64(),
        template_deadline_s: template.deadline.as_secs_f64(),
    })
}
