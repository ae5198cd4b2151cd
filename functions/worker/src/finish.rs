//! The one way a generation ends: [`Worker::finish`], exactly once through the store's
//! conditional transaction, whoever calls it (the holder of the lease, the DLQ, the
//! sweeper past the deadline).

use shared::aws::dynamo::StoreError;
use shared::aws::dynamo::work::Finisher;
use shared::aws::sqs::GenerationJob;
use shared::domain::generation::{Generation, GenerationError, Status, StoredImage};
use shared::hooks::HookEvent;
use tokio::time::Instant;

use crate::Worker;
use crate::batch::Outcome;
use crate::job::{Ours, error};

impl Worker {
    /// Finishes through the store (exactly once) and records what happened; `false` when
    /// someone else finished it first.
    pub(crate) async fn finish(
        &self,
        generation: &Generation,
        new_images: &[StoredImage],
        finisher: Finisher<'_>,
        e: GenerationError,
    ) -> Result<bool, Ours> {
        let ended = match self
            .store
            .finish(generation, new_images, finisher, e.clone())
            .await
        {
            Ok(ended) => ended,
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
            Err(e) => return Err(e.into()),
        };
        let Some(status) = ended else {
            tracing::info!("generation was finished by someone else");
            return Ok(false);
        };
        self.finished(generation, new_images.len(), status, &e);
        self.notify(generation, HookEvent::Completed).await;
        Ok(true)
    }

    /// After a finish that went through (once per generation): what it came to, for the
    /// operator.
    fn finished(
        &self,
        generation: &Generation,
        new_images: usize,
        status: Status,
        e: &GenerationError,
    ) {
        let k = generation.images.len() + new_images;
        let n = generation.n as usize;
        let model = [("Model", generation.model.as_str())];
        let refunded = generation.cost / i64::from(generation.n.max(1)) * (n - k.min(n)) as i64;
        if status == Status::Canceled {
            // Counted (GenerationsCanceled) when the owner asked, by the generate function.
            tracing::info!(
                images = k,
                n,
                "generation canceled at its owner's request; the rest refunded"
            );
        } else if k == n {
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
    }

    /// A record from the DLQ: finish its generation if it is still queued or its lease
    /// expired, refunding what it did not produce.
    pub async fn finish_abandoned(&self, job: &GenerationJob, deadline: Instant) -> Outcome {
        if Instant::now() + self.config.store_budget > deadline {
            return Outcome::Deferred;
        }
        let result = async {
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
            let lease = self.config.attempt_budget() + self.config.lease_margin;
            Ok(Outcome::Retry {
                delay_secs: lease.as_secs() as i32,
            })
        }
        .await;
        result.unwrap_or_else(|ours: Ours| {
            tracing::error!(error = %ours.error, "finishing a dead letter failed on our side; retrying");
            shared::metrics::count("WorkerInternalErrors", 1, &[("Cause", "store")]);
            Outcome::Retry {
                delay_secs: self.config.backoff_after(1).as_secs() as i32,
            }
        })
    }
}
