//! Function `worker`: runs generations from SQS (main queue and DLQ) and sweeps the open
//! ones on a schedule. One binary, three event sources.

pub mod hooks;

use std::collections::HashSet;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;
use serde::Serialize;
use shared::aws::Clients;
use shared::aws::dynamo::work::{Claim, Finisher};
use shared::aws::dynamo::{DynamoStore, StoreError};
use shared::aws::s3::BlobStore;
use shared::aws::secrets::Secrets;
use shared::aws::sqs::{GenerationJob, JobQueue};
use shared::config::Settings;
use shared::domain::catalog::AspectRatio;
use shared::domain::generation::{Generation, GenerationError, StoredImage};
use shared::providers::{
    self, ImageProvider, ImageRequest, ProviderError, ProviderSettings, Providers, ReferenceImage,
};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

/// Largest reference image read back from S3 (uploads are capped at 10 MiB).
const MAX_REFERENCE_BYTES: usize = 10 * 1024 * 1024;

/// How the worker runs; the defaults fit the template's 180 s function timeout.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue_url: String,
    pub dlq_url: Option<String>,
    /// A claim's lease: longer than one invocation can run, so a live worker keeps it.
    pub lease: Duration,
    pub deadline: Duration,
    /// Claims before a transient failure becomes final (the queue's maxReceiveCount).
    pub max_attempts: u32,
    pub records_in_parallel: usize,
    pub images_in_parallel: usize,
    /// Budget for one image, polling included.
    pub provider_timeout: Duration,
    /// Budget for all of one record's provider calls: under the function timeout (180 s),
    /// with room left to store the images and finish. A call that would start past it is
    /// left for the next delivery (a transient failure), so no invocation is cut off.
    pub record_budget: Duration,
    /// A generation queued this long without a worker is sent again.
    pub requeue_after: Duration,
}

impl WorkerConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            queue_url: settings.queue_url.clone(),
            dlq_url: settings.dlq_url.clone(),
            lease: Duration::from_secs(200),
            deadline: settings.generation_deadline,
            max_attempts: 5,
            records_in_parallel: 4,
            images_in_parallel: 4,
            provider_timeout: providers::PROVIDER_TIMEOUT,
            record_budget: Duration::from_secs(150),
            requeue_after: Duration::from_secs(120),
        }
    }
}

/// Everything a worker invocation needs, built once at cold start.
pub struct Worker {
    pub store: DynamoStore,
    pub blobs: BlobStore,
    pub queue: JobQueue,
    pub providers: Providers,
    pub config: WorkerConfig,
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledge: done, or nothing left for this message to do.
    Done,
    /// Deliver again after this many seconds.
    Retry { delay_secs: i32 },
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub requeued: usize,
    pub finished: usize,
}

impl Worker {
    /// Settings, the provider keys this deployment's `MODEL_PROVIDERS` needs (environment
    /// or SSM), and one set of clients.
    pub async fn from_env() -> anyhow::Result<Arc<Self>> {
        let settings = Settings::from_env()?;
        let sdk = shared::aws::load_sdk_config().await?;
        let mut secrets = Secrets::load(&sdk, providers::SECRET_NAMES).await?;
        let providers = providers::build_providers(
            &settings.model_providers,
            &ProviderSettings::from_env()?,
            &mut secrets,
        )?;
        Ok(Arc::new(Self::new(
            &settings,
            &Clients::new(&sdk, None),
            providers,
        )))
    }

    pub fn new(settings: &Settings, clients: &Clients, providers: Providers) -> Self {
        Self {
            store: DynamoStore::new(clients.dynamo.clone(), settings.table_name.clone()),
            blobs: BlobStore::new(clients.s3.clone(), settings.bucket_name.clone()),
            queue: JobQueue::new(clients.sqs.clone(), settings.queue_url.clone()),
            providers,
            config: WorkerConfig::from_settings(settings),
        }
    }

    /// The Lambda entry: an SQS batch (main queue or DLQ) or the one-minute schedule.
    pub async fn handle(
        self: &Arc<Self>,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, lambda_runtime::Error> {
        if payload.get("Records").is_some() {
            let event: SqsEvent = serde_json::from_value(payload)?;
            return Ok(serde_json::to_value(self.handle_sqs(event).await)?);
        }
        if payload.get("source").and_then(|s| s.as_str()) == Some("aws.events") {
            return Ok(serde_json::to_value(self.sweep().await?)?);
        }
        Err("unrecognised event: expected SQS records or a scheduled event".into())
    }

    /// Processes the records concurrently (bounded) and lists only those to retry.
    pub async fn handle_sqs(self: &Arc<Self>, event: SqsEvent) -> SqsBatchResponse {
        let permits = Arc::new(Semaphore::new(self.config.records_in_parallel));
        let mut tasks = JoinSet::new();
        for record in event.records {
            let worker = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("never closed");
                let outcome = worker.handle_record(&record).await;
                (record, outcome)
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (record, outcome) = match joined {
                Ok(done) => done,
                Err(panic) => {
                    // The record stays in flight and comes back: nothing is lost.
                    tracing::error!(error = %panic, "record task failed");
                    continue;
                }
            };
            if let Outcome::Retry { delay_secs } = outcome {
                let Some(id) = record.message_id.clone() else {
                    continue;
                };
                self.postpone(&record, delay_secs).await;
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failures.push(failure);
            }
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        response
    }

    async fn handle_record(&self, record: &SqsMessage) -> Outcome {
        let body = record.body.as_deref().unwrap_or_default();
        let Ok(job) = serde_json::from_str::<GenerationJob>(body) else {
            // It can never succeed: acknowledge it rather than let it cycle to the DLQ.
            tracing::error!(message_id = ?record.message_id, "unparseable record acknowledged");
            return Outcome::Done;
        };
        let from_dlq = self.is_dlq(record.event_source_arn.as_deref());
        if from_dlq {
            shared::metrics::count("DlqArrivals", 1, &[]);
        }
        let span = tracing::info_span!("job", generation_id = %job.generation_id, user_id = %job.user_id, from_dlq);
        let result = async {
            if from_dlq {
                self.finish_abandoned(&job).await
            } else {
                self.run(&job).await
            }
        }
        .instrument(span)
        .await;
        match result {
            Ok(outcome) => outcome,
            Err(error) => {
                // Our own failure (DynamoDB, S3): retry the record later, never drop it.
                tracing::error!(
                    error = format!("{:#}", anyhow::Error::new(error)),
                    "job failed on our side; retrying"
                );
                Outcome::Retry { delay_secs: 30 }
            }
        }
    }

    fn is_dlq(&self, arn: Option<&str>) -> bool {
        let queue_name = |url: &str| url.rsplit('/').next().map(str::to_string);
        let source = arn.and_then(|a| a.rsplit(':').next()).map(str::to_string);
        source.is_some() && self.config.dlq_url.as_deref().and_then(queue_name) == source
    }

    /// Applies a retry's backoff to the record's queue; if that fails, the queue's own
    /// visibility timeout brings it back later.
    async fn postpone(&self, record: &SqsMessage, delay_secs: i32) {
        let (Some(handle), queue_url) =
            (record.receipt_handle.as_deref(), self.queue_url_of(record))
        else {
            return;
        };
        if let Err(error) = self
            .queue
            .change_visibility(&queue_url, handle, delay_secs)
            .await
        {
            tracing::warn!(error = %error, "could not set the retry delay");
        }
    }

    fn queue_url_of(&self, record: &SqsMessage) -> String {
        match &self.config.dlq_url {
            Some(dlq) if self.is_dlq(record.event_source_arn.as_deref()) => dlq.clone(),
            _ => self.config.queue_url.clone(),
        }
    }

    /// Claim, produce the missing images, finish.
    pub async fn run(&self, job: &GenerationJob) -> Result<Outcome, StoreError> {
        let lease_id = ulid::Ulid::new().to_string();
        let now = OffsetDateTime::now_utc();
        let generation = match self
            .store
            .claim(
                job.user_id,
                job.generation_id,
                &lease_id,
                now + self.config.lease,
            )
            .await?
        {
            Claim::Claimed(generation) => *generation,
            Claim::Final | Claim::Missing => return Ok(Outcome::Done),
            Claim::Busy => {
                tracing::info!("another worker holds the lease; acknowledged");
                return Ok(Outcome::Done);
            }
        };
        let finisher = Finisher::Holder(&lease_id);
        if generation.created_at + self.config.deadline < now {
            self.finish(
                &generation,
                &[],
                finisher,
                error("deadline_exceeded", "the generation did not finish in time"),
            )
            .await?;
            return Ok(Outcome::Done);
        }
        let Some(provider) = self.providers.for_model(&generation.model) else {
            let e = error("unavailable", "this model is not available");
            self.finish(&generation, &[], finisher, e).await?;
            return Ok(Outcome::Done);
        };
        let references = match self.references(&generation).await? {
            Ok(references) => references,
            Err(e) => {
                self.finish(&generation, &[], finisher, e).await?;
                return Ok(Outcome::Done);
            }
        };
        let produced = self.produce(&generation, provider, &references).await;
        let new_images = produced.images.as_slice();
        if let Some(permanent) = produced.permanent {
            self.finish(&generation, new_images, finisher, permanent)
                .await?;
            return Ok(Outcome::Done);
        }
        match produced.transient {
            None => {
                self.finish(
                    &generation,
                    new_images,
                    finisher,
                    error("none", "every image was produced"),
                )
                .await?;
                Ok(Outcome::Done)
            }
            Some(reason) if generation.attempt >= self.config.max_attempts => {
                tracing::warn!(reason, attempt = generation.attempt, "last attempt failed");
                let e = error(
                    "provider_unavailable",
                    "the image provider kept failing; try again later",
                );
                self.finish(&generation, new_images, finisher, e).await?;
                Ok(Outcome::Done)
            }
            Some(reason) => {
                let delay_secs = backoff_secs(generation.attempt);
                tracing::warn!(
                    reason,
                    attempt = generation.attempt,
                    delay_secs,
                    "transient failure; retrying"
                );
                match self
                    .store
                    .release(job.user_id, job.generation_id, &lease_id, new_images)
                    .await
                {
                    Ok(()) | Err(StoreError::ConditionFailed(_)) => {}
                    Err(e) => return Err(e),
                }
                Ok(Outcome::Retry { delay_secs })
            }
        }
    }

    /// The reference images, read from S3 with a size limit; a missing one is a
    /// permanent failure of the request.
    async fn references(
        &self,
        generation: &Generation,
    ) -> Result<Result<Vec<ReferenceImage>, GenerationError>, StoreError> {
        let mut references = Vec::new();
        for key in &generation.reference_keys {
            let Some(bytes) = self.blobs.get(key, MAX_REFERENCE_BYTES).await? else {
                return Ok(Err(error(
                    "invalid_input",
                    "a reference image is no longer available",
                )));
            };
            let Some((content_type, _)) = detect(&bytes) else {
                return Ok(Err(error(
                    "invalid_input",
                    "a reference image is not a PNG, JPEG or WebP image",
                )));
            };
            references.push(ReferenceImage {
                bytes,
                content_type,
            });
        }
        Ok(Ok(references))
    }

    /// Calls the provider for every missing image (bounded), uploading each as it
    /// arrives; the caller records them with the finish or the release.
    async fn produce(
        &self,
        generation: &Generation,
        provider: Arc<dyn ImageProvider>,
        references: &[ReferenceImage],
    ) -> Produced {
        let have: HashSet<u32> = generation.images.iter().map(|i| i.index).collect();
        let missing: Vec<u32> = (0..generation.n).filter(|i| !have.contains(i)).collect();
        let aspect_ratio =
            AspectRatio::parse(&generation.aspect_ratio).unwrap_or(AspectRatio::SQUARE);
        let deadline = tokio::time::Instant::now() + self.config.record_budget;
        let attempts = futures_util::stream::iter(missing)
            .map(|index| {
                let provider = provider.clone();
                async move {
                    let budget = self
                        .config
                        .provider_timeout
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    if budget < Duration::from_secs(1) {
                        return Err(Failure::Provider(ProviderError::Transient(
                            "out of time in this invocation".into(),
                        )));
                    }
                    let request = ImageRequest {
                        model: &generation.model,
                        prompt: &generation.prompt,
                        aspect_ratio,
                        references,
                        index,
                    };
                    let started = std::time::Instant::now();
                    let result =
                        match tokio::time::timeout(budget, provider.generate(&request)).await {
                            Ok(result) => result,
                            Err(_) => Err(ProviderError::Transient("timed out".into())),
                        };
                    tracing::info!(
                        provider = provider.name(),
                        index,
                        ok = result.is_ok(),
                        latency_ms = started.elapsed().as_millis() as u64,
                        "provider call"
                    );
                    shared::metrics::millis(
                        "ProviderLatency",
                        started.elapsed(),
                        &[("Provider", provider.name()), ("Model", &generation.model)],
                    );
                    if let Err(e) = &result {
                        let class = if e.is_transient() {
                            "transient"
                        } else {
                            "permanent"
                        };
                        shared::metrics::count(
                            "ProviderFailures",
                            1,
                            &[("Provider", provider.name()), ("Class", class)],
                        );
                    }
                    match result {
                        Ok(bytes) => self.store_image(generation, index, bytes).await,
                        Err(e) => Err(Failure::Provider(e)),
                    }
                }
            })
            .buffer_unordered(self.config.images_in_parallel);
        let results: Vec<_> = attempts.collect().await;
        let mut produced = Produced::default();
        for result in results {
            match result {
                Ok(image) => produced.images.push(image),
                Err(Failure::Ours(e)) => {
                    produced.transient = Some(format!("storing the image failed: {e}"))
                }
                Err(Failure::Provider(ProviderError::Transient(reason))) => {
                    produced.transient = Some(reason)
                }
                Err(Failure::Provider(ProviderError::Permanent { code, message })) => {
                    tracing::warn!(code, message, "provider refused");
                    produced
                        .permanent
                        .get_or_insert_with(|| error(code, &client_message(code)));
                }
                Err(Failure::Unreadable) => {
                    produced.permanent.get_or_insert_with(|| {
                        error(
                            "malformed_response",
                            "the provider returned something that is not an image",
                        )
                    });
                }
            }
        }
        produced
    }

    async fn store_image(
        &self,
        generation: &Generation,
        index: u32,
        bytes: Vec<u8>,
    ) -> Result<StoredImage, Failure> {
        let (content_type, (width, height)) = detect(&bytes).ok_or(Failure::Unreadable)?;
        let extension = content_type.trim_start_matches("image/");
        // The attempt in the key: a stale worker can never overwrite a newer one's image.
        let key = format!(
            "images/{}/{}/{}-{index}.{extension}",
            generation.user_id, generation.id, generation.attempt
        );
        self.blobs
            .put(&key, content_type, bytes)
            .await
            .map_err(Failure::Ours)?;
        Ok(StoredImage {
            index,
            key,
            content_type: content_type.to_string(),
            width,
            height,
        })
    }

    /// Finishes through the store (exactly once) and records what happened; `false` when
    /// someone else finished it first.
    async fn finish(
        &self,
        generation: &Generation,
        new_images: &[StoredImage],
        finisher: Finisher<'_>,
        e: GenerationError,
    ) -> Result<bool, StoreError> {
        let finished = match self
            .store
            .finish(generation, new_images, finisher, e.clone())
            .await
        {
            Ok(finished) => finished,
            // The account was deleted while its images were made: they are nobody's now,
            // and its deletion refunds the generation.
            Err(StoreError::AccountDeleted) => {
                let keys: Vec<String> = new_images.iter().map(|i| i.key.clone()).collect();
                self.blobs.delete(&keys).await?;
                tracing::warn!(
                    images = keys.len(),
                    "the account was deleted: nothing stored, its images removed"
                );
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let k = generation.images.len() + new_images.len();
        let model = [("Model", generation.model.as_str())];
        if !finished {
            tracing::info!("generation was finished by someone else");
            return Ok(false);
        }
        let n = generation.n as usize;
        let refunded = generation.cost / i64::from(generation.n.max(1)) * (n - k.min(n)) as i64;
        if k == n {
            tracing::info!(images = k, "generation succeeded");
            shared::metrics::count("GenerationsSucceeded", 1, &model);
        } else if k > 0 {
            tracing::warn!(images = k, n, code = %e.code, "generation finished short; the rest refunded");
            shared::metrics::count("GenerationsSucceeded", 1, &model);
            shared::metrics::count("GenerationsPartiallyRefunded", 1, &model);
        } else {
            tracing::warn!(code = %e.code, "generation failed; refunded");
            shared::metrics::count("GenerationsFailed", 1, &model);
        }
        if refunded > 0 {
            shared::metrics::count(
                "CreditsRefunded",
                refunded as u64,
                &[("Reason", "generation")],
            );
        }
        Ok(true)
    }

    /// A record from the DLQ: finish its generation if it is still queued or its lease
    /// expired, refunding what it did not produce.
    pub async fn finish_abandoned(&self, job: &GenerationJob) -> Result<Outcome, StoreError> {
        let Some(generation) = self
            .store
            .get_generation(job.user_id, job.generation_id)
            .await?
        else {
            return Ok(Outcome::Done);
        };
        if generation.status.is_final() {
            return Ok(Outcome::Done);
        }
        let e = error(
            "retries_exhausted",
            "the generation could not be completed; its credits were refunded",
        );
        if self
            .finish(&generation, &[], Finisher::Abandoned, e)
            .await?
        {
            tracing::warn!(
                images = generation.images.len(),
                "abandoned generation finished from the DLQ"
            );
            return Ok(Outcome::Done);
        }
        // A live worker still holds it: look again after its lease.
        Ok(Outcome::Retry {
            delay_secs: self.config.lease.as_secs() as i32,
        })
    }

    /// Re-enqueues generations queued for too long (a crash between the generate
    /// request's write and its send) and finishes those past the deadline. Reads only the
    /// sparse open-generations index.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut report = SweepReport::default();
        for shard in 0..shared::aws::dynamo::generations::OPEN_SHARDS {
            for open in self
                .store
                .open_generations(shard, now - self.config.requeue_after)
                .await?
            {
                if open.created_at + self.config.deadline < now {
                    let Some(generation) = self.store.get_generation(open.user_id, open.id).await?
                    else {
                        continue;
                    };
                    let e = error(
                        "deadline_exceeded",
                        "the generation did not finish in time; its credits were refunded",
                    );
                    if self.finish(&generation, &[], Finisher::Deadline, e).await? {
                        tracing::warn!(generation_id = %open.id, "past its deadline: finished and refunded");
                        shared::metrics::count("SweeperRefunds", 1, &[]);
                        report.finished += 1;
                    }
                } else if open.status == shared::domain::generation::Status::Queued
                    && self
                        .store
                        .mark_requeued(
                            open.user_id,
                            open.id,
                            self.config.requeue_after.as_secs() as i64,
                        )
                        .await?
                {
                    let job = GenerationJob {
                        generation_id: open.id,
                        user_id: open.user_id,
                    };
                    self.queue.send(&job).await?;
                    tracing::warn!(generation_id = %open.id, "queued too long: sent again");
                    shared::metrics::count("SweeperRequeued", 1, &[]);
                    report.requeued += 1;
                }
            }
        }
        Ok(report)
    }
}

#[derive(Default)]
struct Produced {
    images: Vec<StoredImage>,
    permanent: Option<GenerationError>,
    transient: Option<String>,
}

/// Why one image was not produced.
enum Failure {
    Provider(ProviderError),
    Unreadable,
    Ours(StoreError),
}

/// The content type and dimensions, from the bytes themselves (never the provider's word).
pub fn detect(bytes: &[u8]) -> Option<(&'static str, (u32, u32))> {
    let format = image::guess_format(bytes).ok()?;
    let content_type = match format {
        image::ImageFormat::Png => "image/png",
        image::ImageFormat::Jpeg => "image/jpeg",
        image::ImageFormat::WebP => "image/webp",
        _ => return None,
    };
    let dimensions = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .ok()?;
    Some((content_type, dimensions))
}

fn error(code: &str, message: &str) -> GenerationError {
    GenerationError {
        code: code.to_string(),
        message: message.to_string(),
    }
}

/// What a client reads for a provider's refusal (the provider's own words go to the log).
fn client_message(code: &str) -> String {
    match code {
        "content_refused" => "the provider refused this request under its content policy",
        "invalid_input" => "the provider could not use this input",
        "no_image" => "the provider returned no image",
        _ => "the provider's answer could not be used",
    }
    .to_string()
}

/// 20 s, 40 s, 80 s, ... capped at 5 minutes.
fn backoff_secs(attempt: u32) -> i32 {
    (10i32 << attempt.clamp(1, 5)).min(300)
}
