//! Payment events applied exactly once: the adapter of [`crate::payments::rules`].
//!
//! Each event is one transaction: its event record (`EVENT#<provider>#<id>`, created with
//! `attribute_not_exists`, never expiring) and its whole effect, so a duplicate finds the
//! record and changes nothing, and a failure leaves nothing half-applied. The state is
//! read consistently ([`read`]), the rules decide, and every write is conditioned on what
//! was read ([`write`]): a plan made stale by a concurrent event fails as a whole and is
//! made again from a fresh read. A first purchase skips the read: it is planned as if
//! nothing existed, and the same conditions catch a wrong guess (see `apply_unread`).
//!
//! Every balance change is conditioned on the account not being deleted: an event for a
//! deleted account moves nothing and is kept for an operator ([`held`]).

mod held;
mod items;
mod read;
mod write;

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use crate::domain::audit::AuditRecord;

pub use held::{HeldEvent, Reread};
pub use items::HeldKind;
use items::{SUB_PREFIX, SubItem, UserCustomerItem, sub_sk, user_customer_sk};

use super::keys;
use super::users::{from_item, item_key};
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::UserId;
use crate::domain::payment::is_active_status;
use crate::payments::rules::{self, Account, Decision, State};
use crate::payments::{Effect, PaymentEvent, Provider};

/// Plans made again after a concurrent change, before giving up with `Contention` (503,
/// so the provider retries later).
const MAX_PLANS: u32 = 6;

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Its effect and its event record were written now.
    Applied,
    /// It was applied before: nothing changed.
    Duplicate,
    /// Nothing to do for it; nothing was written.
    Ignored,
    /// No user could be found for it: stored for an operator, nothing applied.
    Unattributed,
    /// It names a product no id is configured for: kept to be read again.
    Parked,
    /// Money moved for a deleted account: recorded for an operator, nothing applied. A
    /// subscription it shows still billing is named, to be canceled.
    Held { cancel: Option<String> },
}

/// A user's subscription as recorded (for the billing portal and account deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub provider: Provider,
    pub subscription_id: String,
    pub customer_id: Option<String>,
    pub product_id: Option<String>,
    pub status: String,
}

impl SubscriptionRecord {
    /// Whether it may still bill (not ended at the provider).
    pub fn may_bill(&self) -> bool {
        !matches!(
            self.status.as_str(),
            "canceled" | "expired" | "incomplete_expired"
        )
    }
}

impl DynamoStore {
    /// Applies a verified event exactly once (see the module documentation).
    pub async fn apply_payment_event(
        &self,
        event: &PaymentEvent,
    ) -> Result<EventOutcome, StoreError> {
        apply_event(self, event, None, None).await
    }

    /// The user's customer id at `provider`, once a payment named one.
    pub async fn payment_customer(
        &self,
        user: UserId,
        provider: Provider,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_item_as::<UserCustomerItem>(item_key(
                keys::user_pk(user),
                &user_customer_sk(provider),
            ))
            .await?
            .map(|c| c.customer_id))
    }

    /// The user's subscriptions, as recorded.
    pub async fn subscriptions_of(
        &self,
        user: UserId,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", AttributeValue::S(keys::user_pk(user)))
            .expression_attribute_values(":p", AttributeValue::S(SUB_PREFIX.into()))
            .consistent_read(true);
        let mut items = self
            .query_all(query)
            .await?
            .into_iter()
            .map(from_item::<SubItem>)
            .collect::<Result<Vec<_>, _>>()?;
        // An active one first, then the latest.
        items.sort_by_key(|s| {
            std::cmp::Reverse((
                is_active_status(&s.subscription.status),
                s.subscription.status_at_ms,
            ))
        });
        Ok(items
            .into_iter()
            .map(|s| SubscriptionRecord {
                provider: s.subscription.provider,
                subscription_id: s.subscription.subscription_id,
                customer_id: s.subscription.customer_id,
                product_id: s.subscription.product_id,
                status: s.subscription.status,
            })
            .collect())
    }

    /// The user's current subscription: an active one if any, else the latest recorded.
    pub async fn current_subscription(
        &self,
        user: UserId,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        Ok(self.subscriptions_of(user).await?.into_iter().next())
    }

    /// Records that we canceled the subscription at the provider (a retried deletion
    /// skips it).
    pub async fn mark_subscription_canceled(
        &self,
        user: UserId,
        provider: Provider,
        subscription_id: &str,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(
                keys::user_pk(user),
                &sub_sk(provider, subscription_id),
            )))
            .update_expression("SET #s = :canceled")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":canceled", AttributeValue::S("canceled".into()))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception())
                {
                    Ok(())
                } else {
                    Err(sdk_error(e))
                }
            })
    }
}

/// Reads, decides and writes, again from a fresh read when the write finds the state
/// changed; `assign_to` is an operator's choice of payer.
async fn apply_event(
    store: &DynamoStore,
    event: &PaymentEvent,
    assign_to: Option<UserId>,
    operator: Option<&AuditRecord>,
) -> Result<EventOutcome, StoreError> {
    if let Effect::Ignored { why } = &event.effect {
        tracing::info!(event_id = %event.id, event_type = %event.event_type, why, "payment event ignored");
        return Ok(EventOutcome::Ignored);
    }
    if assign_to.is_none()
        && operator.is_none()
        && let Some(outcome) = apply_unread(store, event).await?
    {
        return Ok(outcome);
    }
    let mut deleted = BTreeSet::new();
    for _ in 0..MAX_PLANS {
        let now = OffsetDateTime::now_utc();
        let read = store.read_state(event, assign_to, &deleted).await?;
        let effects = match rules::decide(event, &read.state, now.unix_timestamp()) {
            Decision::Duplicate => return Ok(EventOutcome::Duplicate),
            Decision::Ignore(why) => {
                tracing::info!(event_id = %event.id, event_type = %event.event_type, why, "payment event ignored");
                return Ok(EventOutcome::Ignored);
            }
            Decision::Invalid(why) => {
                return Err(StoreError::Internal(anyhow::anyhow!(
                    "payment event {} contradicts the catalog: {why}",
                    event.id
                )));
            }
            Decision::Unattributed(reason) => {
                store.store_unattributed(event, &reason, now).await?;
                tracing::error!(
                    provider = %event.provider,
                    event_id = %event.id,
                    event_type = %event.event_type,
                    reason,
                    "payment event not attributable to a user: stored for replay"
                );
                return Ok(EventOutcome::Unattributed);
            }
            Decision::Held {
                user_id,
                reason,
                cancel,
            } => {
                return match store
                    .execute(store.held_tx(event, user_id, &reason, now))
                    .await
                {
                    Ok(()) => {
                        tracing::error!(
                            provider = %event.provider,
                            event_id = %event.id,
                            event_type = %event.event_type,
                            %user_id,
                            reason,
                            "payment event for a deleted account: nothing applied, kept for an operator"
                        );
                        Ok(EventOutcome::Held { cancel })
                    }
                    Err(StoreError::AlreadyApplied) => Ok(EventOutcome::Duplicate),
                    Err(e) => Err(e),
                };
            }
            Decision::Apply(effects) => effects,
        };
        let tx = store.effects_tx(event, &effects, read.versions, operator, now);
        match store.execute(tx).await {
            Ok(()) => {
                write::emit(event.provider, &effects);
                return Ok(EventOutcome::Applied);
            }
            Err(StoreError::AlreadyApplied) => return Ok(EventOutcome::Duplicate),
            // The account was deleted between the read and the write.
            Err(StoreError::AccountDeleted) => {
                deleted.extend(effects.credits.iter().map(|c| c.user_id));
                deleted.extend(effects.user_id);
                tracing::info!(event_id = %event.id, "the payer's account is deleted; replanning");
            }
            // What the plan read changed meanwhile: plan again from a fresh read.
            Err(StoreError::ConditionFailed(what)) => {
                tracing::info!(what, event_id = %event.id, "payment plan went stale; replanning");
            }
            Err(StoreError::NotFound) => {
                tracing::info!(event_id = %event.id, "the payer vanished; replanning");
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contention)
}

/// The usual purchase, a first delivery whose checkout names an existing user, in one
/// call: planned as if nothing were recorded yet, the transaction's conditions do the
/// reading (event record new, order new, profile present and not deleted, customer
/// unmapped or this user's). `None` when that guess was wrong and nothing was written:
/// the caller reads and plans. Other effects usually find items already there (a
/// subscription's record, its customer), so guessing would mostly cost a failed
/// transaction.
async fn apply_unread(
    store: &DynamoStore,
    event: &PaymentEvent,
) -> Result<Option<EventOutcome>, StoreError> {
    let Effect::Purchase(purchase) = &event.effect else {
        return Ok(None);
    };
    let Some(user) = purchase.payer.user() else {
        return Ok(None);
    };
    let state = State {
        account: Some(Account {
            user_id: user,
            deleted: false,
        }),
        ..State::default()
    };
    let now = OffsetDateTime::now_utc();
    let Decision::Apply(effects) = rules::decide(event, &state, now.unix_timestamp()) else {
        return Ok(None);
    };
    let tx = store.effects_tx(event, &effects, read::Versions::default(), None, now);
    match store.execute(tx).await {
        Ok(()) => {
            write::emit(event.provider, &effects);
            Ok(Some(EventOutcome::Applied))
        }
        Err(StoreError::AlreadyApplied) => Ok(Some(EventOutcome::Duplicate)),
        Err(StoreError::ConditionFailed(_) | StoreError::NotFound | StoreError::AccountDeleted) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
