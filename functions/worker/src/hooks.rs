//! The hooks queue: deliver one generation event per record, signed with the owner's
//! secret, recording every attempt; a failed attempt comes back after its backoff (the
//! record's visibility). And the sweeper's half: events due but unsettled whose message
//! was lost are sent again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use shared::aws::Clients;
use shared::aws::dynamo::hooks::{
    AttemptRecord, DeliveryState, FIRST_CHECK_SECS, Next, RECHECK_SECS,
};
use shared::aws::dynamo::{DynamoStore, StoreError};
use shared::aws::s3::BlobStore;
use shared::aws::sqs::JobQueue;
use shared::config::Settings;
use shared::domain::audit::{Actor, AuditAction, AuditRecord};
use shared::domain::generation::Status;
use shared::domain::secrets::new_webhook_secret;
use shared::hooks::send::{Attempt, Sender, Signed};
use shared::hooks::sign::signature_header;
use shared::hooks::target::Targets;
use shared::hooks::{HookEvent, HookJob, event_body, retry_delay};
use time::OffsetDateTime;
use tokio::task::JoinSet;

/// A failure of ours (DynamoDB, S3) comes back after this.
const OUR_RETRY: Duration = Duration::from_secs(30);

/// What the hooks handler needs.
pub struct Hooks {
    pub store: DynamoStore,
    pub blobs: BlobStore,
    pub queue: JobQueue,
    pub sender: Sender,
    /// The hooks queue (for the sweeper's re-sends and the records' backoff).
    pub queue_url: String,
    /// Waits between attempts ([`shared::hooks::default_schedule`] deployed).
    pub schedule: Vec<Duration>,
}

/// What became of one event's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Nothing more for this record: settled, a duplicate, or nobody to send to.
    Done,
    /// Deliver again after this long.
    RetryIn(Duration),
}

impl Hooks {
    /// The deployed shape: the table, bucket and queue of `settings`, the address rules
    /// of `WEBHOOK_ALLOW_LOOPBACK`, the documented backoff.
    pub fn new(settings: &Settings, clients: &Clients, queue_url: String) -> Self {
        Self {
            store: DynamoStore::new(clients.dynamo.clone(), settings.table_name.clone()),
            blobs: BlobStore::new(clients.s3.clone(), settings.bucket_name.clone()),
            queue: JobQueue::new(clients.sqs.clone(), settings.queue_url.clone()),
            sender: Sender::new(Targets::new(settings.webhook_allow_loopback)),
            queue_url,
            schedule: shared::hooks::default_schedule(),
        }
    }

    /// Whether this batch came from the hooks queue: its records' source ARN ends with
    /// the queue's name, the last part of its URL (a batch comes from one queue).
    pub fn consumes(&self, event: &SqsEvent) -> bool {
        let name = self.queue_url.rsplit('/').next().unwrap_or_default();
        event.records.first().is_some_and(|record| {
            record
                .event_source_arn
                .as_deref()
                .and_then(|arn| arn.rsplit(':').next())
                == Some(name)
        })
    }

    /// One batch from the hooks queue: every record at once (each attempt is bounded by
    /// the 10-second timeout), only those to retry listed, each with its backoff set.
    pub async fn handle_sqs(self: &Arc<Self>, event: SqsEvent) -> SqsBatchResponse {
        let mut tasks = JoinSet::new();
        // Kept outside the tasks: a panicking one returns no record, but its message
        // must still be reported as failed (else SQS deletes it).
        let mut message_ids = HashMap::new();
        for record in event.records {
            let hooks = self.clone();
            let id = record.message_id.clone();
            let handle = tasks.spawn(async move {
                let outcome = hooks.handle_record(&record).await;
                (record, outcome)
            });
            message_ids.insert(handle.id(), id);
        }
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((_, (record, Delivered::RetryIn(delay)))) => {
                    if let Some(handle) = record.receipt_handle.as_deref() {
                        let secs = delay.as_secs().clamp(1, 43_200) as i32;
                        if let Err(error) = self
                            .queue
                            .change_visibility(&self.queue_url, handle, secs)
                            .await
                        {
                            tracing::warn!(error = %error, "could not set the webhook's retry delay");
                        }
                    }
                    failures.extend(record.message_id.map(failure));
                }
                Ok((_, (_, Delivered::Done))) => {}
                Err(panic) => {
                    tracing::error!(error = %panic, "webhook delivery task panicked; its record is retried");
                    failures.extend(message_ids.remove(&panic.id()).flatten().map(failure));
                }
            }
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        response
    }

    async fn handle_record(&self, record: &SqsMessage) -> Delivered {
        let body = record.body.as_deref().unwrap_or_default();
        let Ok(job) = serde_json::from_str::<HookJob>(body) else {
            tracing::error!(message_id = ?record.message_id, "unreadable webhook record acknowledged");
            return Delivered::Done;
        };
        match self.deliver(&job).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(
                    error = format!("{:#}", anyhow::Error::new(error)),
                    generation_id = %job.generation_id,
                    event = job.event.as_str(),
                    "webhook delivery failed on our side; retrying"
                );
                Delivered::RetryIn(OUR_RETRY)
            }
        }
    }

    /// One attempt of one event, unless it is settled already or nobody is left to
    /// deliver to.
    pub async fn deliver(&self, job: &HookJob) -> Result<Delivered, StoreError> {
        let context = self.store.hook_context(job).await?;
        if context
            .delivery
            .as_ref()
            .is_some_and(|d| d.state.is_settled())
        {
            return Ok(Delivered::Done);
        }
        let wanted = context
            .generation
            .as_ref()
            .and_then(|g| g.webhook.as_ref())
            .is_some_and(|w| w.wants(job.event));
        let (Some(generation), false, true) = (context.generation, context.account_gone, wanted)
        else {
            self.store
                .settle_delivery(job, DeliveryState::Dropped)
                .await?;
            count(job.event, "dropped");
            return Ok(Delivered::Done);
        };
        let due = match job.event {
            HookEvent::Started => generation.status != Status::Queued,
            HookEvent::Completed => generation.status.is_final(),
        };
        if !due {
            // Never sent before it is due; a stray message changes nothing.
            tracing::warn!(generation_id = %job.generation_id, event = job.event.as_str(), "webhook event not due; acknowledged");
            return Ok(Delivered::Done);
        }
        let now = OffsetDateTime::now_utc();
        let secrets = match context.secrets {
            Some(secrets) => secrets,
            None => {
                // The user never asked for one: made now, so the event can be signed (the
                // user reads it with GET /v1/webhook-secret to verify).
                let made_by = AuditRecord::by(
                    Actor::System,
                    AuditAction::WebhookSecretCreated,
                    serde_json::json!({"for": "webhook delivery"}),
                );
                self.store
                    .webhook_secret(job.user_id, new_webhook_secret, &made_by, now)
                    .await?
                    .0
            }
        };
        let url = context
            .delivery
            .as_ref()
            .map(|d| d.url.clone())
            .or_else(|| generation.webhook.as_ref().map(|w| w.url.clone()))
            .expect("a wanted event has a webhook");
        let occurred_at = context
            .delivery
            .as_ref()
            .map(|d| d.occurred_at.clone())
            .unwrap_or_else(|| rfc3339(now));
        let attempts_before = context.delivery.as_ref().map_or(0, |d| d.attempt_count);
        let view = self.blobs.view(generation).await?;
        let body = event_body(job.event, &occurred_at, &view);
        let timestamp = now.unix_timestamp();
        let mut keys = vec![secrets.current.as_str()];
        keys.extend(secrets.previous.as_deref());
        let signature = signature_header(&keys, &job.webhook_id(), timestamp, &body)
            .map_err(|e| StoreError::Internal(e.into()))?;
        let signed = Signed {
            id: job.webhook_id(),
            timestamp,
            signature,
            body,
        };
        let (attempt, latency) = self.sender.send(&url, &signed).await;
        let attempts = attempts_before + 1;
        let (next, outcome, label) = match &attempt {
            Attempt::Delivered { .. } => (
                Next::Settled(DeliveryState::Delivered),
                Delivered::Done,
                "delivered",
            ),
            Attempt::Rejected { .. } | Attempt::Refused(_) => (
                Next::Settled(DeliveryState::Failed),
                Delivered::Done,
                "rejected",
            ),
            Attempt::Retry { .. } => match retry_delay(&self.schedule, attempts) {
                Some(delay) => (
                    Next::RetryAt(
                        (now.unix_timestamp_nanos() / 1_000_000) as i64 + delay.as_millis() as i64,
                    ),
                    Delivered::RetryIn(delay),
                    "retry",
                ),
                None => (
                    Next::Settled(DeliveryState::Failed),
                    Delivered::Done,
                    "exhausted",
                ),
            },
        };
        tracing::info!(
            generation_id = %job.generation_id,
            event = job.event.as_str(),
            attempt = attempts,
            result = %attempt.label(),
            latency_ms = latency.as_millis() as u64,
            outcome = label,
            "webhook attempt"
        );
        count(job.event, label);
        shared::metrics::millis("WebhookLatency", latency, &[]);
        let record = AttemptRecord {
            at: rfc3339(now),
            result: attempt.label(),
            latency_ms: latency.as_millis() as u64,
        };
        self.store.record_attempt(job, &url, record, next).await?;
        Ok(outcome)
    }

    /// The sweeper's half: unsettled events due for a check (their message lost, or a
    /// retry that never came back) are sent again, and `started` events of running
    /// generations that never got a delivery are opened and sent. Returns how many were
    /// sent; one that cannot be handled is logged, counted and skipped.
    pub async fn sweep(&self, started: &[HookJob]) -> Result<usize, StoreError> {
        self.sweep_at(OffsetDateTime::now_utc(), started).await
    }

    /// [`Hooks::sweep`] as if it were `now` (tests look into the future with it).
    pub async fn sweep_at(
        &self,
        now: OffsetDateTime,
        started: &[HookJob],
    ) -> Result<usize, StoreError> {
        let mut sent = 0;
        for shard in 0..shared::aws::dynamo::generations::OPEN_SHARDS {
            for delivery in self.store.due_deliveries(shard, now).await? {
                let job = delivery.job();
                self.queue.send_to(&self.queue_url, &job).await?;
                self.store
                    .recheck_delivery_at(&job, now + time::Duration::seconds(RECHECK_SECS))
                    .await?;
                sent += 1;
            }
        }
        let known = self.store.deliveries(started).await?;
        for job in started {
            if known.iter().any(|d| d.job() == *job) {
                continue;
            }
            let Some(url) = self.url_of(job).await? else {
                continue;
            };
            if self.store.open_delivery(job, &url).await? {
                self.queue.send_to(&self.queue_url, job).await?;
                sent += 1;
            }
        }
        if sent > 0 {
            tracing::warn!(sent, "webhook events sent again by the sweeper");
            shared::metrics::count("WebhookResent", sent as u64, &[]);
        }
        Ok(sent)
    }

    async fn url_of(&self, job: &HookJob) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get_generation(job.user_id, job.generation_id)
            .await?
            .and_then(|g| g.webhook)
            .map(|w| w.url))
    }
}

/// How long after its claim a `started` event without a delivery counts as lost.
pub const STARTED_GRACE_SECS: i64 = FIRST_CHECK_SECS;

fn count(event: HookEvent, outcome: &str) {
    shared::metrics::count(
        "WebhookDeliveries",
        1,
        &[("Event", event.as_str()), ("Outcome", outcome)],
    );
}

fn failure(id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id;
    failure
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC timestamp always formats")
}
