//! Events kept for an operator (`HELD`): unattributed ones (no user found), parked ones
//! (a product no id is configured for; kept as the verified body, to be read again),
//! and those of deleted accounts (recorded, nothing applied). `nb-admin events list`
//! shows them; `nb-admin events replay` applies one once.

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use time::OffsetDateTime;

use crate::domain::audit::{AuditAction, AuditRecord};

use super::items::*;
use super::{EventOutcome, apply_event};
use crate::aws::dynamo::ledger::rfc3339;
use crate::aws::dynamo::tx::{Role, Tx};
use crate::aws::dynamo::users::{from_item, item_key, to_item};
use crate::aws::dynamo::{DynamoStore, StoreError, sdk_error};
use crate::domain::UserId;
use crate::payments::{ParseError, PaymentEvent, Provider, UnmappedProduct};

/// An event kept for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEvent {
    pub kind: HeldKind,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    pub reason: String,
    pub user_id: Option<UserId>,
    pub received_at: String,
}

/// What replaying a held event needs to read it again: the payment settings of the day
/// (a parked event's product may be mapped now).
pub trait Reread {
    fn reread(&self, provider: Provider, body: &[u8]) -> Result<PaymentEvent, ParseError>;
}

impl Reread for crate::payments::PaymentSettings {
    fn reread(&self, provider: Provider, body: &[u8]) -> Result<PaymentEvent, ParseError> {
        self.parse_event(provider, body)
    }
}

impl DynamoStore {
    /// Keeps a verified event that names a product no id is configured for, to be read
    /// again once the mapping is fixed: `Parked`, or `Duplicate` when it was applied
    /// before (a redelivery after an operator's replay).
    pub async fn park_event(
        &self,
        provider: Provider,
        unmapped: &UnmappedProduct,
        body: &[u8],
    ) -> Result<EventOutcome, StoreError> {
        let recorded = self
            .get_item_as::<serde_json::Value>(item_key(
                event_pk(provider, &unmapped.event_id),
                EVENT_SK,
            ))
            .await?;
        if recorded.is_some() {
            return Ok(EventOutcome::Duplicate);
        }
        let item = HeldItem {
            pk: HELD_PK.into(),
            sk: held_sk(provider, &unmapped.event_id),
            kind: HeldKind::Parked,
            provider,
            event_id: unmapped.event_id.clone(),
            event_type: unmapped.event_type.clone(),
            reason: format!(
                "no product is configured for {:?}",
                unmapped.provider_product
            ),
            user_id: None,
            event: None,
            body: Some(String::from_utf8_lossy(body).into_owned()),
            received_at: rfc3339(OffsetDateTime::now_utc()),
        };
        // The payer's security log says the payment waits, when the body names them (the
        // metadata our checkout set); the event is kept either way.
        let Some(user) = payer_hint(body) else {
            self.put_held(item).await?;
            return Ok(EventOutcome::Parked);
        };
        let mut tx = Tx::default();
        // Parked once: a redelivery of a parked event finds it there and logs nothing more.
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(&item)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table and item are set");
        tx.push(
            TransactWriteItem::builder().put(put).build(),
            Role::Named("held"),
        );
        let entry = AuditRecord::by(
            super::write::provider_actor(provider),
            AuditAction::PaymentParked,
            serde_json::json!({
                "provider": provider,
                "event_id": unmapped.event_id,
                "event_type": unmapped.event_type,
                "product": unmapped.provider_product,
            }),
        );
        self.push_audit(&mut tx, user, &entry, OffsetDateTime::now_utc());
        match self.execute(tx).await {
            Ok(()) | Err(StoreError::ConditionFailed("held")) => Ok(EventOutcome::Parked),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn store_unattributed(
        &self,
        event: &PaymentEvent,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.put_held(held_item(event, HeldKind::Unattributed, reason, None, now))
            .await
    }

    async fn put_held(&self, item: HeldItem) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&item)))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// A deleted account's event: recorded as handled (so its redeliveries are duplicates)
    /// and kept for an operator, in one transaction; no balance changes.
    pub(super) fn held_tx(
        &self,
        event: &PaymentEvent,
        user: UserId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Tx {
        let mut tx = Tx::default();
        self.push_event_record(&mut tx, event, Some(user), true, now);
        let item = held_item(event, HeldKind::DeletedAccount, reason, Some(user), now);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(&item)))
            .build()
            .expect("table and item are set");
        tx.push(
            TransactWriteItem::builder().put(put).build(),
            Role::Named("held"),
        );
        tx
    }

    /// Events kept for an operator, oldest first within each provider.
    pub async fn held_events(&self, limit: i32) -> Result<Vec<HeldEvent>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(HELD_PK.into()))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await
            .map_err(sdk_error)?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                from_item::<HeldItem>(item).map(|h| HeldEvent {
                    kind: h.kind,
                    provider: h.provider,
                    event_id: h.event_id,
                    event_type: h.event_type,
                    reason: h.reason,
                    user_id: h.user_id,
                    received_at: h.received_at,
                })
            })
            .collect()
    }

    /// Applies a held event through the same path, once: a user given here is taken as
    /// its payer (an operator's decision), else attribution is tried again; a parked one
    /// is read again with `settings`. The stored copy is removed once the event is applied
    /// (or found applied already); `NotFound` when nothing is stored under that id. A
    /// deleted account's event is only acknowledged (removed; `Held`).
    pub async fn replay_event(
        &self,
        provider: Provider,
        event_id: &str,
        assign_to: Option<UserId>,
        settings: &dyn Reread,
        operator: &AuditRecord,
    ) -> Result<EventOutcome, StoreError> {
        let key = item_key(HELD_PK.into(), &held_sk(provider, event_id));
        let stored: HeldItem = self
            .get_item_as(key.clone())
            .await?
            .ok_or(StoreError::NotFound)?;
        let remove = || async {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .send()
                .await
                .map_err(sdk_error)
        };
        // Nothing can apply to a deleted account: replaying acknowledges it.
        if stored.kind == HeldKind::DeletedAccount {
            remove().await?;
            return Ok(EventOutcome::Held { cancel: None });
        }
        let event: PaymentEvent = match (&stored.event, &stored.body) {
            (Some(event), _) => serde_json::from_str(event).map_err(|e| {
                StoreError::Internal(anyhow::anyhow!("unreadable stored event: {e}"))
            })?,
            (None, Some(body)) => match settings.reread(provider, body.as_bytes()) {
                Ok(event) => event,
                Err(ParseError::UnknownProduct(_)) => return Ok(EventOutcome::Parked),
                Err(e) => {
                    return Err(StoreError::Internal(anyhow::anyhow!(
                        "a parked event no longer reads: {e}"
                    )));
                }
            },
            (None, None) => {
                return Err(StoreError::Internal(anyhow::anyhow!(
                    "a held event without its content"
                )));
            }
        };
        let outcome = apply_event(self, &event, assign_to, Some(operator)).await?;
        // Held again or still unattributed: the applying wrote the copy kept now.
        if matches!(
            outcome,
            EventOutcome::Applied | EventOutcome::Duplicate | EventOutcome::Ignored
        ) {
            remove().await?;
        }
        Ok(outcome)
    }
}

fn held_item(
    event: &PaymentEvent,
    kind: HeldKind,
    reason: &str,
    user_id: Option<UserId>,
    now: OffsetDateTime,
) -> HeldItem {
    HeldItem {
        pk: HELD_PK.into(),
        sk: held_sk(event.provider, &event.id),
        kind,
        provider: event.provider,
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        reason: reason.to_string(),
        user_id,
        event: Some(serde_json::to_string(event).expect("events always serialize")),
        body: None,
        received_at: rfc3339(now),
    }
}

/// The user our checkout named in an event's metadata (`client_reference_id`, or any
/// `user_id` of a metadata object), read from the raw body of an event that could not be
/// read whole.
fn payer_hint(body: &[u8]) -> Option<UserId> {
    fn find(value: &serde_json::Value) -> Option<UserId> {
        match value {
            serde_json::Value::Object(map) => map
                .iter()
                .find_map(|(key, v)| match (key.as_str(), v.as_str()) {
                    ("client_reference_id" | "user_id", Some(text)) => UserId::parse(text).ok(),
                    _ => None,
                })
                .or_else(|| map.values().find_map(find)),
            serde_json::Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    find(&serde_json::from_slice(body).ok()?)
}
