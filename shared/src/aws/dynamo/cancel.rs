//! Cancelling a generation at its owner's request.
//!
//! A `queued` one ends `canceled` with its whole cost refunded in one transaction
//! conditioned on it still being queued, so a worker's claim (conditioned on the same
//! status) and the cancel exclude each other: whichever lands first wins, and the other
//! sees what it did. A `running` one is only marked `cancel_requested`; its worker starts
//! no further image and finishes it `canceled` through the one exactly-once finish.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use time::OffsetDateTime;

use super::generations::{GenerationItem, gen_sk};
use super::keys;
use super::ledger::rfc3339;
use super::tx::Tx;
use super::users::{from_item, item_key};
use super::{DynamoStore, StoreError, landed};
use crate::domain::generation::{Generation, GenerationError, Status};
use crate::domain::{GenerationId, UserId};

/// Reads and writes before a cancel racing a worker gives up (each retry follows a change
/// of status, of which a generation has at most three).
const ATTEMPTS: usize = 4;

/// What a cancel did.
#[derive(Debug, Clone)]
pub enum Canceled {
    /// It was queued: now `canceled`, its whole cost refunded.
    Queued(Box<Generation>),
    /// It was running: marked; its worker finishes it `canceled`.
    Requested(Box<Generation>),
    /// It had already ended: nothing changed.
    AlreadyFinal(Status),
}

/// The error a canceled generation carries.
pub fn canceled_error() -> GenerationError {
    GenerationError {
        code: "canceled".into(),
        message: "canceled at your request; the credits of the images not made were refunded"
            .into(),
    }
}

impl DynamoStore {
    /// Cancels the caller's generation; `None` when there is no such generation of theirs.
    /// `session` is checked like on every read (`None` for an API key).
    pub async fn cancel_generation(
        &self,
        user: UserId,
        session: Option<u64>,
        id: GenerationId,
    ) -> Result<Option<Canceled>, StoreError> {
        for _ in 0..ATTEMPTS {
            let Some(generation) = self.get_generation_checked(user, session, id).await? else {
                return Ok(None);
            };
            match generation.status {
                Status::Queued => {
                    let now = OffsetDateTime::now_utc();
                    let error = canceled_error();
                    let mut tx = Tx::default();
                    self.push_end_queued(
                        &mut tx,
                        &generation,
                        Status::Canceled,
                        &error,
                        session,
                        now,
                    )?;
                    match self.execute(tx).await {
                        Ok(()) => {
                            let mut ended = generation;
                            ended.status = Status::Canceled;
                            ended.refunded_credits = ended.cost;
                            ended.error = Some(error);
                            ended.updated_at = now;
                            ended.completed_at = Some(now);
                            return Ok(Some(Canceled::Queued(Box::new(ended))));
                        }
                        // A worker claimed it meanwhile: cancel it as running.
                        Err(StoreError::ConditionFailed("queued")) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Status::Running => match self.request_cancel(user, id).await? {
                    Some(marked) => return Ok(Some(Canceled::Requested(Box::new(marked)))),
                    // It ended meanwhile: report what it ended as.
                    None => continue,
                },
                status => return Ok(Some(Canceled::AlreadyFinal(status))),
            }
        }
        Err(StoreError::Contention)
    }

    /// Marks a running generation; `None` when it is no longer running.
    async fn request_cancel(
        &self,
        user: UserId,
        id: GenerationId,
    ) -> Result<Option<Generation>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), &gen_sk(id))))
            .update_expression("SET cancel_requested = :yes, updated_at = :now")
            .condition_expression("#s = :running")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":running", AttributeValue::S("running".into()))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(
                ":now",
                AttributeValue::S(rfc3339(OffsetDateTime::now_utc())),
            )
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let Some(out) = landed(result)? else {
            return Ok(None);
        };
        let item = out
            .attributes
            .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("no attributes")))?;
        Ok(Some(from_item::<GenerationItem>(item)?.into_generation()))
    }
}
