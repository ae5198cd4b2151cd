//! The worker's side of a generation: claim with a lease, finish exactly once (refunding
//! what was not produced) or release with the images made so far, and the sweeper's reads
//! of the open index.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use time::OffsetDateTime;

use super::generations::{GenerationItem, OPEN_SHARDS, open_sk_prefix};
use super::keys::{self, PK, SK};
use super::ledger::{BalanceChange, number, parse_time, rfc3339};
use super::tx::{Role, Tx};
use super::users::{from_item, item_key, to_item};
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::audit::AuditRecord;
use crate::domain::generation::{Generation, GenerationError, Status, StoredImage};
use crate::domain::ledger::LedgerReason;
use crate::domain::{Credits, GenerationId, UserId};

/// Name of the sparse index of open generations.
pub const OPEN_INDEX: &str = "open";

/// What a claim found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Ours until the lease expires.
    Claimed(Box<Generation>),
    /// Already succeeded or failed: nothing to do.
    Final,
    /// Another worker holds a live lease.
    Busy,
    /// No such generation (deleted, or a message that names nothing).
    Missing,
}

/// Who may finish a generation.
#[derive(Debug, Clone, Copy)]
pub enum Finisher<'a> {
    /// The worker holding this lease.
    Holder(&'a str),
    /// Anyone, if nobody holds a live lease (DLQ, a stuck claim).
    Abandoned,
    /// Anyone, past the deadline, whatever the lease.
    Deadline,
}

/// An open generation as the sweeper sees it.
#[derive(Debug, Clone)]
pub struct OpenGeneration {
    pub id: GenerationId,
    pub user_id: UserId,
    pub status: Status,
    pub created_at: OffsetDateTime,
    /// The current (or last) lease of a running one.
    pub lease_id: Option<String>,
    pub lease_until: Option<OffsetDateTime>,
    /// Its creator asked for the `generation.started` webhook event.
    pub wants_started: bool,
}

/// An item of the open index that could not be read as a generation.
#[derive(Debug, thiserror::Error)]
#[error("open-index item {key} is unreadable")]
pub struct UnreadableItem {
    /// `pk`/`sk`, for the operator.
    pub key: String,
    #[source]
    pub error: StoreError,
}

fn gen_key(user: UserId, id: GenerationId) -> super::users::Item {
    item_key(keys::user_pk(user), &format!("GEN#{id}"))
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_string())
}

impl DynamoStore {
    /// `queued`, or `running` with an expired lease, becomes `running` under a new lease
    /// (`attempt` + 1).
    pub async fn claim(
        &self,
        user: UserId,
        id: GenerationId,
        lease_id: &str,
        lease_until: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        self.claim_with(user, id, lease_id, lease_until, None).await
    }

    /// [`Self::claim`] for the `receive_count`-th delivery of the SQS message
    /// `message_id`: a lease taken for a message is also claimed again, expired or not,
    /// by a later delivery of that same message (a higher receive count). SQS hands a
    /// message out again only once its previous delivery is over (returned, or past a
    /// visibility timeout longer than any invocation), so that attempt can no longer
    /// finish, whatever kept it from giving the lease back (a panic, a store that was down
    /// for its release). A duplicate delivered alongside (the same count) is refused.
    pub async fn claim_delivery(
        &self,
        user: UserId,
        id: GenerationId,
        lease_id: &str,
        lease_until: OffsetDateTime,
        message_id: &str,
        receive_count: u32,
    ) -> Result<Claim, StoreError> {
        self.claim_with(
            user,
            id,
            lease_id,
            lease_until,
            Some((message_id, receive_count)),
        )
        .await
    }

    async fn claim_with(
        &self,
        user: UserId,
        id: GenerationId,
        lease_id: &str,
        lease_until: OffsetDateTime,
        delivery: Option<(&str, u32)>,
    ) -> Result<Claim, StoreError> {
        let now = OffsetDateTime::now_utc();
        let message_id = delivery.map(|(m, _)| m);
        let (set_message, own_message) = match delivery {
            Some(_) => (
                ", lease_message = :mid, lease_receive = :rc",
                " OR (lease_message = :mid AND lease_receive < :rc)",
            ),
            None => ("", ""),
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(gen_key(user, id)))
            .update_expression(format!(
                "SET #s = :running, lease_id = :lid, lease_until = :until, updated_at = :now{set_message} ADD attempt :one{}",
                if message_id.is_none() { " REMOVE lease_message, lease_receive" } else { "" }
            ))
            .condition_expression(format!(
                "attribute_exists(pk) AND (#s = :queued OR (#s = :running AND (lease_until < :epoch{own_message})))"
            ))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":running", s("running"))
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":lid", s(lease_id))
            .expression_attribute_values(":until", number(lease_until.unix_timestamp()))
            .expression_attribute_values(":epoch", number(now.unix_timestamp()))
            .expression_attribute_values(":now", s(&rfc3339(now)))
            .expression_attribute_values(":one", number(1));
        if let Some((message_id, receive_count)) = delivery {
            update = update
                .expression_attribute_values(":mid", s(message_id))
                .expression_attribute_values(":rc", number(i64::from(receive_count)));
        }
        let result = update
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out
                    .attributes
                    .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("no attributes")))?;
                Ok(Claim::Claimed(Box::new(
                    from_item::<GenerationItem>(item)?.into_generation(),
                )))
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => match c.item() {
                    None => Ok(Claim::Missing),
                    Some(old) => {
                        let item: GenerationItem = from_item(old.clone())?;
                        Ok(if item.status.is_final() {
                            Claim::Final
                        } else {
                            Claim::Busy
                        })
                    }
                },
                _ => Err(sdk_error(e)),
            },
        }
    }

    /// Records the images this attempt stored (so that the next one makes only the
    /// missing ones) and shortens the lease to `retry_at`, when the returned message is due
    /// again: anyone may claim from then on (that message at once, whatever the lease), and
    /// the sweeper takes it for abandoned only after it; `ConditionFailed("lease")` when the
    /// lease is no longer ours. Returns whether its owner has asked to cancel it (the
    /// holder then finishes it `canceled` at once instead of leaving it for a retry).
    pub async fn release(
        &self,
        user: UserId,
        id: GenerationId,
        lease_id: &str,
        new_images: &[StoredImage],
        retry_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let images = ImageSets::of(new_images);
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(gen_key(user, id)))
            .update_expression(format!("SET lease_until = :retry{}", images.expression))
            .condition_expression("#s = :running AND lease_id = :lid")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":running", s("running"))
            .expression_attribute_values(":lid", s(lease_id))
            .expression_attribute_values(":retry", number(retry_at.unix_timestamp()));
        for (name, value) in images.names {
            update = update.expression_attribute_names(name, value);
        }
        for (name, value) in images.values {
            update = update.expression_attribute_values(name, value);
        }
        let out = update
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map(|out| out.attributes);
        let attributes = lease_result(out)?.unwrap_or_default();
        Ok(attributes
            .get("cancel_requested")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false))
    }

    /// Ends the generation exactly once: `succeeded` with the images it has and
    /// `new_images` (refunding the missing ones) or, with none, `failed` with `error` and
    /// the whole cost refunded; a generation whose owner asked to cancel it ends `canceled`
    /// instead (with the images it has, the rest refunded). The images, the status, the
    /// refund and its ledger row, and the pending `completed` webhook delivery in one
    /// transaction. The condition (still open, who may finish, the number of images the
    /// caller read, and whether a cancel came) makes a second finisher fail: `Ok(None)`
    /// means someone else finished it or it changed meanwhile; a cancel that came after
    /// the caller's read is seen on a fresh read and the finish made `canceled`. A holder's
    /// finish for a deleted account is refused with `AccountDeleted` (its images are then
    /// nobody's to keep). `Some(status)` is what it ended as.
    pub async fn finish(
        &self,
        generation: &Generation,
        new_images: &[StoredImage],
        finisher: Finisher<'_>,
        error: GenerationError,
    ) -> Result<Option<Status>, StoreError> {
        self.finish_recorded(generation, new_images, finisher, error, None)
            .await
    }

    /// [`Self::finish`] with an entry of the owner's security log written in the same
    /// transaction (an operator's refund).
    pub async fn finish_recorded(
        &self,
        generation: &Generation,
        new_images: &[StoredImage],
        finisher: Finisher<'_>,
        error: GenerationError,
        entry: Option<&AuditRecord>,
    ) -> Result<Option<Status>, StoreError> {
        match self
            .finish_once(generation, new_images, finisher, &error, entry)
            .await?
        {
            Some(status) => Ok(Some(status)),
            None if !generation.cancel_requested => {
                // The usual reason is another finisher; the other is a cancel that came
                // after our read, which only this read tells apart.
                match self
                    .get_generation(generation.user_id, generation.id)
                    .await?
                {
                    Some(fresh)
                        if fresh.cancel_requested
                            && !fresh.status.is_final()
                            && fresh.images.len() == generation.images.len() =>
                    {
                        let mut canceled = generation.clone();
                        canceled.cancel_requested = true;
                        self.finish_once(&canceled, new_images, finisher, &error, entry)
                            .await
                    }
                    _ => Ok(None),
                }
            }
            None => Ok(None),
        }
    }

    async fn finish_once(
        &self,
        generation: &Generation,
        new_images: &[StoredImage],
        finisher: Finisher<'_>,
        error: &GenerationError,
        entry: Option<&AuditRecord>,
    ) -> Result<Option<Status>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let recorded = generation.images.len() as i64;
        let produced = recorded + new_images.len() as i64;
        let n = i64::from(generation.n.max(1));
        let refund = generation.cost / n * (n - produced.min(n));
        let (status, error) = if generation.cancel_requested {
            (Status::Canceled, super::cancel::canceled_error())
        } else if produced > 0 {
            (Status::Succeeded, error.clone())
        } else {
            (Status::Failed, error.clone())
        };
        let images = ImageSets::of(new_images);
        let mut condition = String::from("(#s = :queued OR #s = :running) AND size(images) = :k");
        if generation.cancel_requested {
            condition.push_str(" AND cancel_requested = :yes");
        } else {
            condition.push_str(
                " AND (attribute_not_exists(cancel_requested) OR cancel_requested = :no)",
            );
        }
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(gen_key(generation.user_id, generation.id)))
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":running", s("running"))
            .expression_attribute_values(":k", number(recorded))
            .expression_attribute_values(":final", s(status.as_str()))
            .expression_attribute_values(":refund", number(refund))
            .expression_attribute_values(":now", s(&rfc3339(now)))
            .expression_attribute_values(
                if generation.cancel_requested {
                    ":yes"
                } else {
                    ":no"
                },
                AttributeValue::Bool(generation.cancel_requested),
            );
        match finisher {
            Finisher::Holder(lease_id) => {
                condition.push_str(" AND lease_id = :lid");
                update = update.expression_attribute_values(":lid", s(lease_id));
            }
            Finisher::Abandoned => {
                condition.push_str(" AND (#s = :queued OR lease_until < :epoch)");
                update = update.expression_attribute_values(":epoch", number(now.unix_timestamp()));
            }
            Finisher::Deadline => {}
        }
        let set_error = if status == Status::Succeeded && refund == 0 {
            ""
        } else {
            ", #e = :error"
        };
        if !set_error.is_empty() {
            update = update
                .expression_attribute_names("#e", "error")
                .expression_attribute_values(":error", AttributeValue::M(to_item(&error)));
        }
        for (name, value) in images.names {
            update = update.expression_attribute_names(name, value);
        }
        for (name, value) in images.values {
            update = update.expression_attribute_values(name, value);
        }
        let update = update
            .update_expression(format!(
                "SET #s = :final, refunded_credits = :refund, completed_at = :now, updated_at = :now{set_error}{} REMOVE open_pk, open_sk, lease_id, lease_until, lease_message, lease_receive",
                images.expression
            ))
            .condition_expression(condition)
            .build()
            .expect("table, key and expression are set");
        let mut tx = Tx::default();
        // A worker's finish stores its images: never for a deleted account
        // (`AccountDeleted`). The profile comes first, so a refused finish says so whatever
        // else changed meanwhile (the deletion finishes open generations itself).
        let for_live_account = matches!(finisher, Finisher::Holder(_));
        if refund > 0 {
            let amount = Credits::new(refund).map_err(|e| StoreError::Internal(e.into()))?;
            let change = BalanceChange::grant(
                generation.user_id,
                amount,
                LedgerReason::Refund,
                generation.id.to_string(),
            );
            if for_live_account {
                self.push_live_change(&mut tx, &change, now);
            } else {
                self.push_change(&mut tx, &change, None, false, now);
            }
        } else if for_live_account {
            self.push_live_check(&mut tx, generation.user_id);
        }
        tx.push(
            TransactWriteItem::builder().update(update).build(),
            Role::Named("open"),
        );
        self.push_completed_hook(&mut tx, generation, now);
        if let Some(entry) = entry {
            self.push_audit(&mut tx, generation.user_id, entry, now);
        }
        match self.execute(tx).await {
            Ok(()) => Ok(Some(status)),
            Err(StoreError::ConditionFailed("open")) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Open generations of one shard created before `created_before`, oldest first; an
    /// item that does not read as a generation is returned as such, so that one bad item
    /// does not hide the others.
    pub async fn open_generations(
        &self,
        shard: u32,
        created_before: OffsetDateTime,
    ) -> Result<Vec<Result<OpenGeneration, UnreadableItem>>, StoreError> {
        debug_assert!(shard < OPEN_SHARDS);
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OPEN_INDEX)
            .key_condition_expression("open_pk = :p AND open_sk < :before")
            .expression_attribute_values(":p", s(&format!("OPEN#{shard}")))
            .expression_attribute_values(":before", s(&open_sk_prefix(created_before)));
        Ok(self
            .query_all(query)
            .await?
            .into_iter()
            .map(|item| {
                let key = [PK, SK]
                    .iter()
                    .map(|k| {
                        item.get(*k)
                            .and_then(|v| v.as_s().ok())
                            .map_or("?", |v| v.as_str())
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                let generation: GenerationItem =
                    from_item(item).map_err(|error| UnreadableItem { key, error })?;
                Ok(OpenGeneration {
                    id: generation.id,
                    user_id: generation.user_id,
                    status: generation.status,
                    created_at: parse_time(&generation.created_at),
                    lease_id: generation.lease_id,
                    lease_until: generation
                        .lease_until
                        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
                    wants_started: generation
                        .webhook
                        .as_ref()
                        .is_some_and(|w| w.wants(crate::hooks::HookEvent::Started)),
                })
            })
            .collect())
    }

    /// Marks a running generation whose lease `lease_id` expired before `now` as sent
    /// again, once per lease (a new claim makes a new lease); `false` when it is no longer
    /// running under that expired lease or was sent for it already.
    pub async fn mark_abandoned(
        &self,
        user: UserId,
        id: GenerationId,
        lease_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(gen_key(user, id)))
            .update_expression("SET requeued_lease = :lid")
            .condition_expression(
                "#s = :running AND lease_id = :lid AND lease_until < :now \
                 AND (attribute_not_exists(requeued_lease) OR requeued_lease <> :lid)",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":running", s("running"))
            .expression_attribute_values(":lid", s(lease_id))
            .expression_attribute_values(":now", number(now.unix_timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Marks a queued generation as re-enqueued now, at most once per `interval`, so that
    /// one sweep sends it once; `false` when it is no longer queued or was sent recently.
    pub async fn mark_requeued(
        &self,
        user: UserId,
        id: GenerationId,
        interval_secs: i64,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(gen_key(user, id)))
            .update_expression("SET requeued_at = :now")
            .condition_expression(
                "#s = :queued AND (attribute_not_exists(requeued_at) OR requeued_at < :since)",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":since", number(now - interval_secs))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }
}

/// `SET` clauses adding images to the `images` map, keyed by index: written with the
/// release or the finish rather than one update per image (the AWS-call floor of a job is
/// the claim, one upload per image, and the finish).
struct ImageSets {
    /// `, images.#img0 = :img0, ...` to append to a `SET` list.
    expression: String,
    names: Vec<(String, String)>,
    values: Vec<(String, AttributeValue)>,
}

impl ImageSets {
    fn of(images: &[StoredImage]) -> Self {
        let mut sets = Self {
            expression: String::new(),
            names: Vec::with_capacity(images.len()),
            values: Vec::with_capacity(images.len()),
        };
        for (i, image) in images.iter().enumerate() {
            sets.expression
                .push_str(&format!(", images.#img{i} = :img{i}"));
            sets.names
                .push((format!("#img{i}"), image.index.to_string()));
            sets.values
                .push((format!(":img{i}"), AttributeValue::M(to_item(image))));
        }
        sets
    }
}

fn lease_result<T, R: std::fmt::Debug + Send + Sync + 'static>(
    result: Result<T, aws_sdk_dynamodb::error::SdkError<UpdateItemError, R>>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => Ok(value),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Err(StoreError::ConditionFailed("lease"))
        }
        Err(e) => Err(sdk_error(e)),
    }
}
