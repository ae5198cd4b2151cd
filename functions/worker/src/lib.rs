//! Function `worker`: runs generations from SQS (main queue and DLQ) and sweeps the open
//! ones on a schedule. One binary, three event sources.
//!
//! - [`batch`]: an SQS batch within the invocation's deadline: which records may start,
//!   panics and overruns as batch item failures, retry backoffs.
//! - [`job`]: one record: claim, produce the missing images, finish exactly once (or give
//!   the lease back for a retry).
//! - [`images`]: the images of one attempt, each through its model's hosts in failover
//!   order, stored as they arrive.
//! - [`references`]: the reference images, read and encoded once per job.
//! - [`sweep`]: the schedule: stale queued and abandoned running generations sent again,
//!   those past their deadline finished and refunded.
//! - [`hooks`]: the completion-webhook queue's deliveries.

pub mod batch;
mod expire;
mod finish;
pub mod hooks;
mod images;
pub mod job;
mod references;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use shared::aws::Clients;
use shared::aws::dynamo::DynamoStore;
use shared::aws::s3::BlobStore;
use shared::aws::secrets::Secrets;
use shared::aws::sqs::JobQueue;
use shared::config::Settings;
use shared::domain::generation::Generation;
use shared::hooks::HookEvent;
use shared::providers::{self, ProviderSettings, Providers};
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use batch::Outcome;
pub use images::detect;
pub use sweep::SweepReport;

/// How the worker runs. The defaults are chosen with `template.yaml`'s timings (its
/// comment beside `WorkerFunction` says why each is what it is).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue_url: String,
    pub dlq_url: Option<String>,
    /// `GENERATION_DEADLINE`: a generation not finished by then is failed and refunded.
    pub deadline: Duration,
    /// Claims of a generation before a transient failure becomes final.
    pub max_attempts: u32,
    /// Records of a batch run at once (the template's `BatchSize` is the same, so that
    /// every record of a batch starts at once).
    pub records_in_parallel: usize,
    pub images_in_parallel: usize,
    /// Time for reading a job's reference images from S3.
    pub references_budget: Duration,
    /// Time for one provider call, polling included; the provider window of an attempt.
    pub provider_timeout: Duration,
    /// Time kept after the provider window for the uploads and the finish (or release).
    pub store_budget: Duration,
    /// Added to the end of an attempt to make its lease: clock skew between workers and
    /// DynamoDB, and the last write.
    pub lease_margin: Duration,
    /// Backoff of the first retry; it doubles each attempt, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A generation queued this long without a worker is sent again.
    pub requeue_after: Duration,
    /// The function's timeout: the deadline the local runner gives an invocation.
    pub function_timeout: Duration,
    /// Encoded reference bytes all records of one instance may hold at once.
    pub reference_memory: usize,
}

impl WorkerConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            queue_url: settings.queue_url.clone(),
            dlq_url: settings.dlq_url.clone(),
            deadline: settings.generation_deadline,
            max_attempts: 5,
            records_in_parallel: 4,
            images_in_parallel: 4,
            references_budget: Duration::from_secs(20),
            provider_timeout: providers::PROVIDER_TIMEOUT,
            store_budget: Duration::from_secs(15),
            lease_margin: Duration::from_secs(15),
            backoff: Duration::from_secs(20),
            max_backoff: Duration::from_secs(300),
            requeue_after: Duration::from_secs(120),
            function_timeout: Duration::from_secs(180),
            // One largest job (ten 10 MiB references, ~134 MiB encoded) and some room,
            // in a 512 MB function: two such jobs at once would not fit beside their images.
            reference_memory: 160 * 1024 * 1024,
        }
    }

    /// One whole attempt: references, the provider window, uploads and the finish. A
    /// record is claimed only when this much time is left in the invocation.
    pub fn attempt_budget(&self) -> Duration {
        self.references_budget + self.provider_timeout + self.store_budget
    }

    /// The backoff after the `attempt`-th claim: `backoff`, doubled each attempt, capped.
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << attempt.clamp(1, 16).saturating_sub(1));
        doubled.min(self.max_backoff)
    }
}

/// Everything a worker invocation needs, built once at cold start.
pub struct Worker {
    pub store: DynamoStore,
    pub blobs: BlobStore,
    pub queue: JobQueue,
    pub providers: Providers,
    pub config: WorkerConfig,
    /// The completion webhooks' handler (where the deployment has a hooks queue): the
    /// worker sends their events and delivers them from the same binary.
    pub hooks: Option<Arc<hooks::Hooks>>,
    /// Permits of 1 KiB of encoded references, shared by the records of this instance.
    reference_memory: Arc<Semaphore>,
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
        let config = WorkerConfig::from_settings(settings);
        Self {
            store: DynamoStore::new(clients.dynamo.clone(), settings.table_name.clone()),
            blobs: BlobStore::new(clients.s3.clone(), settings.bucket_name.clone()),
            queue: JobQueue::new(clients.sqs.clone(), settings.queue_url.clone()),
            providers,
            reference_memory: Arc::new(Semaphore::new(config.reference_memory / 1024)),
            hooks: settings
                .hooks_queue_url
                .clone()
                .map(|url| Arc::new(hooks::Hooks::new(settings, clients, url))),
            config,
        }
    }

    /// Queues a webhook event of `generation` if it asked for it (after the write that
    /// made the event due).
    pub(crate) async fn notify(&self, generation: &Generation, event: HookEvent) {
        let url = self.hooks.as_ref().map(|h| h.queue_url.as_str());
        self.queue.send_event(url, generation, event).await;
    }

    /// Replaces the configuration (tests shorten its times); the reference memory pool
    /// follows it.
    pub fn with_config(mut self, config: WorkerConfig) -> Self {
        self.reference_memory = Arc::new(Semaphore::new(config.reference_memory / 1024));
        self.config = config;
        self
    }

    /// The Lambda entry: an SQS batch (main queue or DLQ) or the one-minute schedule.
    /// `deadline` is when the invocation is cut off (`LambdaEvent.context.deadline`).
    pub async fn handle(
        self: &Arc<Self>,
        payload: serde_json::Value,
        deadline: Instant,
    ) -> Result<serde_json::Value, lambda_runtime::Error> {
        if payload.get("Records").is_some() {
            let event: SqsEvent = serde_json::from_value(payload)?;
            if let Some(hooks) = self.hooks.as_ref().filter(|h| h.consumes(&event)) {
                return Ok(serde_json::to_value(hooks.handle_sqs(event).await)?);
            }
            return Ok(serde_json::to_value(
                self.handle_sqs_until(event, deadline).await,
            )?);
        }
        if payload.get("source").and_then(|s| s.as_str()) == Some("aws.events") {
            return Ok(serde_json::to_value(self.sweep().await)?);
        }
        Err("unrecognised event: expected SQS records or a scheduled event".into())
    }
}

/// The instant a Lambda deadline (milliseconds since the epoch) falls on.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WorkerConfig {
        let settings = Settings::from_lookup(|name| match name {
            "TABLE_NAME" | "BUCKET_NAME" | "QUEUE_URL" => Some("x".into()),
            _ => None,
        })
        .unwrap();
        WorkerConfig::from_settings(&settings)
    }

    #[test]
    fn a_whole_attempt_fits_the_function_timeout_with_room_for_late_starters() {
        let config = config();
        assert_eq!(config.attempt_budget(), Duration::from_secs(155));
        assert!(config.attempt_budget() < config.function_timeout);
    }

    #[test]
    fn backoff_doubles_from_twenty_seconds_up_to_five_minutes() {
        let config = config();
        let secs: Vec<u64> = (1..=7).map(|a| config.backoff_after(a).as_secs()).collect();
        assert_eq!(secs, [20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(config.backoff_after(0).as_secs(), 20);
    }

    #[test]
    fn a_lambda_deadline_in_the_past_is_now() {
        let before = Instant::now();
        assert!(deadline_from_epoch_ms(0) >= before);
        assert!(deadline_from_epoch_ms(0) <= Instant::now());
    }
}
