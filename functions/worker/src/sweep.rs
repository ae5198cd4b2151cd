//! The one-minute schedule. It reads only the sparse open-generations index and:
//! - sends again a generation `queued` for more than `requeue_after` (a crash between the
//!   generate request's write and its send), at most once per `requeue_after`;
//! - sends again a `running` generation whose lease has expired (its worker died, was cut
//!   off, or its retry message was lost), once per lease: it is retried within the lease
//!   plus one sweep interval instead of waiting for its deadline;
//! - finishes and refunds a generation past its deadline, whoever holds it;
//! - then, from the sparse index of upcoming expiries, expires what is left of each grant
//!   whose expiry came (`expire.rs`), after this sweep's refunds.
//!
//! An item it cannot read or handle is logged with its key, counted (`SweeperSkipped`) and
//! skipped; the sweep goes on with the rest.

use serde::Serialize;
use shared::aws::dynamo::generations::OPEN_SHARDS;
use shared::aws::dynamo::work::{Finisher, OpenGeneration};
use shared::aws::sqs::GenerationJob;
use shared::domain::generation::Status;
use shared::hooks::{HookEvent, HookJob};
use time::OffsetDateTime;

use crate::Worker;
use crate::hooks::STARTED_GRACE_SECS;
use crate::job::{Ours, error};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Queued too long: sent again.
    pub requeued: usize,
    /// Running under an expired lease: sent again.
    pub recovered: usize,
    /// Past the deadline: finished and refunded.
    pub finished: usize,
    /// `expired` rows written (credits whose grant's expiry came).
    pub expired: usize,
    /// Items that could not be read or handled (and shards that could not be read).
    pub skipped: usize,
    /// Completion-webhook events sent again (their message lost).
    pub webhooks: usize,
}

enum Swept {
    Nothing,
    Requeued,
    Recovered,
    Finished,
}

impl Worker {
    pub async fn sweep(&self) -> SweepReport {
        let now = OffsetDateTime::now_utc();
        let mut report = SweepReport::default();
        let mut started = Vec::new();
        for shard in 0..OPEN_SHARDS {
            let items = match self.store.open_generations(shard, now).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(shard, error = %e, "could not read a shard of the open index; skipped");
                    shared::metrics::count("SweeperSkipped", 1, &[]);
                    report.skipped += 1;
                    continue;
                }
            };
            for item in items {
                let open = match item {
                    Ok(open) => open,
                    Err(unreadable) => {
                        tracing::error!(key = %unreadable.key, error = format!("{:#}", anyhow::Error::new(unreadable.error)), "unreadable open generation; skipped");
                        shared::metrics::count("SweeperSkipped", 1, &[]);
                        report.skipped += 1;
                        continue;
                    }
                };
                if self.started_may_be_lost(&open, now) {
                    started.push(HookJob {
                        user_id: open.user_id,
                        generation_id: open.id,
                        event: HookEvent::Started,
                    });
                }
                match self.sweep_one(&open, now).await {
                    Ok(Swept::Nothing) => {}
                    Ok(Swept::Requeued) => report.requeued += 1,
                    Ok(Swept::Recovered) => report.recovered += 1,
                    Ok(Swept::Finished) => report.finished += 1,
                    Err(ours) => {
                        tracing::error!(generation_id = %open.id, user_id = %open.user_id, error = format!("{:#}", anyhow::Error::new(ours.error)), "could not sweep a generation; skipped");
                        shared::metrics::count("SweeperSkipped", 1, &[]);
                        report.skipped += 1;
                    }
                }
            }
        }
        if let Some(hooks) = &self.hooks {
            match hooks.sweep_at(now, &started).await {
                Ok(sent) => report.webhooks = sent,
                Err(e) => {
                    tracing::error!(
                        error = format!("{:#}", anyhow::Error::new(e)),
                        "could not sweep the webhook deliveries; skipped"
                    );
                    shared::metrics::count("SweeperSkipped", 1, &[]);
                    report.skipped += 1;
                }
            }
        }
        self.expire_due(now, &mut report).await;
        report
    }

    /// A running generation that wants `generation.started`, claimed (its lease taken)
    /// longer ago than the event's grace: its event may have been lost between the claim
    /// and the send (the hooks sweep sends it if no delivery exists).
    fn started_may_be_lost(&self, open: &OpenGeneration, now: OffsetDateTime) -> bool {
        let lease = self.config.attempt_budget() + self.config.lease_margin;
        let grace = time::Duration::seconds(STARTED_GRACE_SECS);
        open.wants_started
            && open.status == Status::Running
            && open
                .lease_until
                .is_some_and(|until| until - lease + grace < now)
    }

    async fn sweep_one(&self, open: &OpenGeneration, now: OffsetDateTime) -> Result<Swept, Ours> {
        let job = GenerationJob {
            generation_id: open.id,
            user_id: open.user_id,
        };
        if open.created_at + self.config.deadline < now {
            let Some(generation) = self.store.get_generation(open.user_id, open.id).await? else {
                return Ok(Swept::Nothing);
            };
            let e = error(
                "deadline_exceeded",
                "the generation did not finish in time; its credits were refunded",
            );
            if self.finish(&generation, &[], Finisher::Deadline, e).await? {
                tracing::warn!(generation_id = %open.id, "past its deadline: finished and refunded");
                shared::metrics::count("SweeperRefunds", 1, &[]);
                return Ok(Swept::Finished);
            }
            return Ok(Swept::Nothing);
        }
        match open.status {
            Status::Queued
                if open.created_at + self.config.requeue_after < now
                    && self
                        .store
                        .mark_requeued(
                            open.user_id,
                            open.id,
                            self.config.requeue_after.as_secs() as i64,
                        )
                        .await? =>
            {
                self.queue.send(&job).await?;
                tracing::warn!(generation_id = %open.id, "queued too long: sent again");
                shared::metrics::count("SweeperRequeued", 1, &[]);
                Ok(Swept::Requeued)
            }
            Status::Running => {
                let (Some(lease_id), Some(until)) = (&open.lease_id, open.lease_until) else {
                    return Ok(Swept::Nothing);
                };
                if until >= now
                    || !self
                        .store
                        .mark_abandoned(open.user_id, open.id, lease_id, now)
                        .await?
                {
                    return Ok(Swept::Nothing);
                }
                self.queue.send(&job).await?;
                tracing::warn!(generation_id = %open.id, lease_until = %until, "lease expired without a finish: sent again");
                shared::metrics::count("SweeperRecovered", 1, &[]);
                Ok(Swept::Recovered)
            }
            _ => Ok(Swept::Nothing),
        }
    }
}
