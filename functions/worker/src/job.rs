//! One record of the generation queue: claim, produce the missing images, finish.
//!
//! Every way an attempt ends moves the job forward (invariant 8):
//! - all images made, or a permanent refusal, or the last attempt: the one exactly-once
//!   finish (`succeeded` with k images and the rest refunded, or `failed` and refunded);
//! - a transient provider failure: the lease is released with the images made so far and
//!   shortened to when the message is due again, and the message comes back after its
//!   backoff;
//! - a failure of ours (DynamoDB, S3, a finish that did not go through): the same release,
//!   best effort. If even that fails, the returned message claims again anyway (the lease
//!   names its message), and if the message is lost the sweeper sends the job again once
//!   the lease has expired;
//! - a worker that dies: its lease expires (it never outlives the attempt by more than
//!   `lease_margin`) and the sweeper sends the job again.

use shared::aws::dynamo::StoreError;
use shared::aws::dynamo::cancel::canceled_error;
use shared::aws::dynamo::work::{Claim, Finisher};
use shared::aws::sqs::GenerationJob;
use shared::domain::generation::{Generation, GenerationError, StoredImage};
use shared::hooks::HookEvent;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::Worker;
use crate::batch::Outcome;
use crate::images::Produced;

/// The clock of one attempt, fixed at its claim.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub lease_id: String,
    /// Reading the references ends by then.
    pub references_until: Instant,
    /// No provider call starts or runs past it.
    pub providers_until: Instant,
}

/// A failure of ours during an attempt, with the images already stored (recorded by the
/// release so that the retry does not make them again).
pub(crate) struct Ours {
    pub error: StoreError,
    pub images: Vec<StoredImage>,
}

impl From<StoreError> for Ours {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            images: Vec::new(),
        }
    }
}

impl Worker {
    /// Claims the job if a whole attempt fits before `deadline`, produces the missing
    /// images and finishes it. `delivery` is the SQS message it came in and its receive
    /// count: later deliveries of that message may claim again, whatever this attempt
    /// left behind.
    pub async fn run(
        &self,
        job: &GenerationJob,
        deadline: Instant,
        delivery: Option<(&str, u32)>,
    ) -> Outcome {
        let started = Instant::now();
        let budget = self.config.attempt_budget();
        if started + budget > deadline {
            tracing::info!(
                left_ms = deadline.saturating_duration_since(started).as_millis() as u64,
                "no whole attempt fits in this invocation; returned unclaimed"
            );
            return Outcome::Deferred;
        }
        let attempt = Attempt {
            lease_id: ulid::Ulid::new().to_string(),
            references_until: started + self.config.references_budget,
            providers_until: started + self.config.references_budget + self.config.provider_timeout,
        };
        let lease_until = OffsetDateTime::now_utc() + budget + self.config.lease_margin;
        let claimed = match delivery {
            Some((message, receive_count)) => {
                self.store
                    .claim_delivery(
                        job.user_id,
                        job.generation_id,
                        &attempt.lease_id,
                        lease_until,
                        message,
                        receive_count,
                    )
                    .await
            }
            None => {
                self.store
                    .claim(
                        job.user_id,
                        job.generation_id,
                        &attempt.lease_id,
                        lease_until,
                    )
                    .await
            }
        };
        let generation = match claimed {
            Ok(Claim::Claimed(generation)) => *generation,
            Ok(Claim::Final | Claim::Missing) => return Outcome::Done,
            Ok(Claim::Busy) => {
                tracing::info!("another worker holds the lease; acknowledged");
                return Outcome::Done;
            }
            Err(error) => {
                // Nothing was claimed: the message simply comes back.
                log_ours(&error, "claim");
                let delay_secs = self.config.backoff_after(1).as_secs() as i32;
                return Outcome::Retry { delay_secs };
            }
        };
        self.claimed(&generation).await;
        match self.attempt(&generation, &attempt).await {
            Ok(outcome) => outcome,
            Err(ours) => {
                log_ours(&ours.error, "attempt");
                self.retry_later(&generation, &attempt, &ours.images).await
            }
        }
    }

    /// Right after a claim: the first one (`attempt == 1`) sends the `generation.started`
    /// event (a lost send is found by the sweeper).
    async fn claimed(&self, generation: &Generation) {
        tracing::info!(
            attempt = generation.attempt,
            images = generation.images.len(),
            n = generation.n,
            "claimed"
        );
        if generation.attempt == 1 {
            self.notify(generation, HookEvent::Started).await;
        }
    }

    /// The work of one claimed attempt, up to its finish or release.
    async fn attempt(&self, generation: &Generation, attempt: &Attempt) -> Result<Outcome, Ours> {
        let finisher = Finisher::Holder(&attempt.lease_id);
        let now = OffsetDateTime::now_utc();
        if generation.cancel_requested {
            // Asked during an earlier attempt: it ends with what that attempt kept.
            self.finish(generation, &[], finisher, canceled_error())
                .await?;
            return Ok(Outcome::Done);
        }
        if generation.created_at + self.config.deadline < now {
            let e = error("deadline_exceeded", "the generation did not finish in time");
            self.finish(generation, &[], finisher, e).await?;
            return Ok(Outcome::Done);
        }
        if generation.attempt > self.config.max_attempts {
            // Claimed more often than it may be attempted without ever finishing (each
            // attempt died or failed on our side): end it with what it has.
            let e = error(
                "retries_exhausted",
                "the generation could not be completed; its credits were refunded",
            );
            self.finish(generation, &[], finisher, e).await?;
            return Ok(Outcome::Done);
        }
        let Some(chain) = self.providers.chain(&generation.model) else {
            let e = error("unavailable", "this model is not available");
            self.finish(generation, &[], finisher, e).await?;
            return Ok(Outcome::Done);
        };
        let references = match self.references(generation, chain, attempt).await? {
            Ok(references) => references,
            Err(e) => {
                self.finish(generation, &[], finisher, e).await?;
                return Ok(Outcome::Done);
            }
        };
        let produced = self
            .produce(generation, chain, &references.images, attempt)
            .await;
        drop(references);
        let Produced {
            images,
            permanent,
            transient,
            ours,
            canceled,
        } = produced;
        if let Some(error) = ours {
            return Err(Ours { error, images });
        }
        if canceled {
            // The finish sees the cancel on its item and ends it `canceled`.
            let mut asked = generation.clone();
            asked.cancel_requested = true;
            self.finish_keeping(&asked, images, finisher, canceled_error())
                .await?;
            return Ok(Outcome::Done);
        }
        if let Some(permanent) = permanent {
            self.finish_keeping(generation, images, finisher, permanent)
                .await?;
            return Ok(Outcome::Done);
        }
        match transient {
            None => {
                let e = error("none", "every image was produced");
                self.finish_keeping(generation, images, finisher, e).await?;
                Ok(Outcome::Done)
            }
            Some(reason) if generation.attempt >= self.config.max_attempts => {
                tracing::warn!(reason, attempt = generation.attempt, "last attempt failed");
                let e = error(
                    "provider_unavailable",
                    "the image provider kept failing; try again later",
                );
                self.finish_keeping(generation, images, finisher, e).await?;
                Ok(Outcome::Done)
            }
            Some(reason) => {
                tracing::warn!(
                    reason,
                    attempt = generation.attempt,
                    "transient failure; retrying"
                );
                Ok(self.retry_later(generation, attempt, &images).await)
            }
        }
    }

    /// Finishes with the images this attempt stored; if the finish does not go through,
    /// they are handed to the release so that the retry keeps them.
    async fn finish_keeping(
        &self,
        generation: &Generation,
        images: Vec<StoredImage>,
        finisher: Finisher<'_>,
        e: GenerationError,
    ) -> Result<bool, Ours> {
        match self.finish(generation, &images, finisher, e).await {
            Ok(finished) => Ok(finished),
            Err(ours) => Err(Ours {
                error: ours.error,
                images,
            }),
        }
    }

    /// Gives the lease back with the images stored so far, due again after the backoff,
    /// and returns the record for then. A release that fails changes nothing for the
    /// retry: the returned message claims again (the lease names it).
    async fn retry_later(
        &self,
        generation: &Generation,
        attempt: &Attempt,
        images: &[StoredImage],
    ) -> Outcome {
        let delay = self.config.backoff_after(generation.attempt);
        let retry_at = OffsetDateTime::now_utc() + delay + self.config.lease_margin;
        match self
            .store
            .release(
                generation.user_id,
                generation.id,
                &attempt.lease_id,
                images,
                retry_at,
            )
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                // Its owner asked to cancel it: no retry, it ends now with what it has.
                let mut asked = generation.clone();
                asked.images.extend_from_slice(images);
                asked.cancel_requested = true;
                let finisher = Finisher::Holder(&attempt.lease_id);
                match self.finish(&asked, &[], finisher, canceled_error()).await {
                    Ok(_) => return Outcome::Done,
                    // The images are recorded: the returned message finishes it.
                    Err(ours) => log_ours(&ours.error, "finish of a canceled generation"),
                }
            }
            Err(StoreError::ConditionFailed(_)) => {
                tracing::info!("the lease was no longer ours at the release");
                self.remove_unrecorded(generation, images).await;
            }
            Err(e) => log_ours(&e, "release"),
        }
        tracing::info!(
            attempt = generation.attempt,
            delay_secs = delay.as_secs(),
            kept = images.len(),
            "returned for a retry"
        );
        Outcome::Retry {
            delay_secs: delay.as_secs().min(i32::MAX as u64) as i32,
        }
    }
}

impl Worker {
    /// The images this attempt stored that the generation does not hold: the lease went to
    /// another attempt (which makes its own under its own keys), or the generation or its
    /// account is gone; nobody will ever show them. Read first, because a finish whose
    /// answer was lost may have recorded them after all.
    async fn remove_unrecorded(&self, generation: &Generation, images: &[StoredImage]) {
        if images.is_empty() {
            return;
        }
        let recorded: Vec<String> = match self
            .store
            .get_generation(generation.user_id, generation.id)
            .await
        {
            Ok(fresh) => fresh
                .map(|g| g.images.into_iter().map(|i| i.key).collect())
                .unwrap_or_default(),
            Err(e) => return log_ours(&e, "reading before removing unrecorded images"),
        };
        let keys: Vec<String> = images
            .iter()
            .map(|i| i.key.clone())
            .filter(|k| !recorded.contains(k))
            .collect();
        if keys.is_empty() {
            return;
        }
        match self.blobs.delete(&keys).await {
            Ok(()) => tracing::info!(
                removed = keys.len(),
                "unrecorded images of this attempt removed"
            ),
            Err(e) => log_ours(&e, "removing unrecorded images"),
        }
    }
}

fn log_ours(error: &StoreError, during: &str) {
    if !matches!(error, StoreError::ConditionFailed(_)) {
        shared::metrics::count("WorkerInternalErrors", 1, &[("Cause", "store")]);
    }
    tracing::error!(
        during,
        error = format!("{:#}", anyhow::Error::msg(chain(error))),
        "a failure of ours; the job is retried after its backoff"
    );
}

/// The error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn error(code: &str, message: &str) -> GenerationError {
    GenerationError {
        code: code.to_string(),
        message: message.to_string(),
    }
}
