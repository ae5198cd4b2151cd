//! The schedule's expiry step: the users the sparse index of upcoming expiries names as
//! due, each replayed and expired once (see `shared::aws::dynamo::expiry`). A user it
//! cannot handle is logged, counted (`SweeperSkipped`) and left for the next sweep; the
//! entry stays until it is handled.

use shared::aws::dynamo::generations::OPEN_SHARDS;
use time::OffsetDateTime;

use crate::Worker;
use crate::sweep::SweepReport;

impl Worker {
    /// Writes every expiry due at `now`.
    pub async fn expire_due(&self, now: OffsetDateTime, report: &mut SweepReport) {
        for shard in 0..OPEN_SHARDS {
            let due = match self.store.due_expiries(shard, now).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(
                        shard,
                        error = format!("{:#}", anyhow::Error::new(e)),
                        "could not read a shard of the expiry index; skipped"
                    );
                    shared::metrics::count("SweeperSkipped", 1, &[]);
                    report.skipped += 1;
                    continue;
                }
            };
            for user in due {
                match self.store.expire_due(&user, now).await {
                    Ok(done) => report.expired += done.rows,
                    Err(e) => {
                        tracing::error!(user_id = %user.user, error = format!("{:#}", anyhow::Error::new(e)), "could not expire a user's credits; left for the next sweep");
                        shared::metrics::count("SweeperSkipped", 1, &[]);
                        report.skipped += 1;
                    }
                }
            }
        }
    }
}
