//! One SQS batch within the invocation's deadline.
//!
//! Records run concurrently (up to `records_in_parallel`). A record is claimed only when
//! a whole attempt still fits before the deadline ([`crate::job`]); one that does not is
//! handed back at once, unclaimed. A record task that panics, or that is still running
//! when the invocation must answer, is a batch item failure: its message comes back after
//! a backoff and its next delivery claims again (the lease remembers the message). Only
//! the records to retry are listed; the rest of the batch is deleted by SQS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use shared::aws::sqs::GenerationJob;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::Worker;

/// Kept before the invocation's deadline to answer SQS and change visibilities.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledge: done, or nothing left for this message to do.
    Done,
    /// Deliver again after this many seconds.
    Retry { delay_secs: i32 },
    /// Not claimed: no whole attempt fits in what is left of the invocation. Back to the
    /// queue at once, for another invocation.
    Deferred,
}

/// Where a record came from, kept outside its task so that a panic still answers for it.
struct Delivery {
    message_id: Option<String>,
    receipt_handle: Option<String>,
    queue_url: String,
}

impl Worker {
    /// [`Self::handle_sqs_until`] with the function's whole timeout ahead, as an
    /// invocation starts.
    pub async fn handle_sqs(self: &Arc<Self>, event: SqsEvent) -> SqsBatchResponse {
        let deadline = Instant::now() + self.config.function_timeout;
        self.handle_sqs_until(event, deadline).await
    }

    /// Processes the records concurrently (bounded), none past `deadline`, and lists only
    /// those to retry.
    pub async fn handle_sqs_until(
        self: &Arc<Self>,
        event: SqsEvent,
        deadline: Instant,
    ) -> SqsBatchResponse {
        let answer_by = deadline.checked_sub(ANSWER_MARGIN).unwrap_or(deadline);
        let permits = Arc::new(Semaphore::new(self.config.records_in_parallel.max(1)));
        let mut tasks = JoinSet::new();
        let mut deliveries = HashMap::new();
        for record in event.records {
            let delivery = Delivery {
                message_id: record.message_id.clone(),
                receipt_handle: record.receipt_handle.clone(),
                queue_url: self.queue_url_of(&record),
            };
            let worker = self.clone();
            let permits = permits.clone();
            let task = tasks.spawn(async move {
                let Ok(permit) = tokio::time::timeout_at(answer_by, permits.acquire_owned()).await
                else {
                    return Outcome::Deferred;
                };
                let _permit = permit.expect("never closed");
                // A record still running when the invocation must answer is given up
                // here, as Lambda would cut it off: its message comes back and claims again.
                match tokio::time::timeout_at(answer_by, worker.handle_record(&record, answer_by))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::error!(message_id = ?record.message_id, "record still running at the invocation's end; returned");
                        shared::metrics::count(
                            "WorkerInternalErrors",
                            1,
                            &[("Cause", "overrun")],
                        );
                        Outcome::Retry {
                            delay_secs: worker.config.backoff_after(1).as_secs() as i32,
                        }
                    }
                }
            });
            deliveries.insert(task.id(), delivery);
        }
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            let (task, outcome) = match joined {
                Ok((task, outcome)) => (task, outcome),
                Err(error) => {
                    // A panic: a batch item failure, so that the message is not deleted.
                    tracing::error!(error = %error, "record task panicked; its message is returned");
                    shared::metrics::count("WorkerInternalErrors", 1, &[("Cause", "panic")]);
                    let delay_secs = self.config.backoff_after(1).as_secs() as i32;
                    (error.id(), Outcome::Retry { delay_secs })
                }
            };
            let Some(delivery) = deliveries.remove(&task) else {
                continue;
            };
            let delay_secs = match outcome {
                Outcome::Done => continue,
                Outcome::Retry { delay_secs } => delay_secs,
                Outcome::Deferred => {
                    shared::metrics::count("RecordsDeferred", 1, &[]);
                    0
                }
            };
            let Some(id) = delivery.message_id.clone() else {
                continue;
            };
            self.postpone(&delivery, delay_secs).await;
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failures.push(failure);
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        response
    }

    /// One record, all of whose work ends by `ends_by`.
    async fn handle_record(&self, record: &SqsMessage, ends_by: Instant) -> Outcome {
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
        async {
            if from_dlq {
                self.finish_abandoned(&job, ends_by).await
            } else {
                let receive_count = record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let delivery = record.message_id.as_deref().map(|m| (m, receive_count));
                self.run(&job, ends_by, delivery).await
            }
        }
        .instrument(span)
        .await
    }

    fn is_dlq(&self, arn: Option<&str>) -> bool {
        let queue_name = |url: &str| url.rsplit('/').next().map(str::to_string);
        let source = arn.and_then(|a| a.rsplit(':').next()).map(str::to_string);
        source.is_some() && self.config.dlq_url.as_deref().and_then(queue_name) == source
    }

    /// Sets when the record comes back; if that fails, the queue's own visibility timeout
    /// brings it back later (and the lease, the sweeper).
    async fn postpone(&self, delivery: &Delivery, delay_secs: i32) {
        let Some(handle) = delivery.receipt_handle.as_deref() else {
            return;
        };
        if let Err(error) = self
            .queue
            .change_visibility(&delivery.queue_url, handle, delay_secs)
            .await
        {
            tracing::warn!(error = %error, delay_secs, "could not set when the record comes back");
        }
    }

    fn queue_url_of(&self, record: &SqsMessage) -> String {
        match &self.config.dlq_url {
            Some(dlq) if self.is_dlq(record.event_source_arn.as_deref()) => dlq.clone(),
            _ => self.config.queue_url.clone(),
        }
    }
}
