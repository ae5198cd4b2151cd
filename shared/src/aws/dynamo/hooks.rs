//! Completion-webhook deliveries: one item per event of a generation,
//! `USER#<id>` / `HOOK#<generation>#<event>`, holding its state and every attempt.
//!
//! While an event is unsettled its item carries keys of the sparse open index
//! (`HOOKS#<shard>`, time of the next check), so the sweeper finds an event whose message
//! was lost and sends it again; a settled one (delivered, failed, dropped) leaves the index.
//! A `completed` item is created by the very transaction that ends the generation, so an
//! event cannot be lost between that write and its message.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::generations::{GenerationItem, OPEN_SHARDS, gen_sk, open_sk_prefix};
use super::keys::{self, PROFILE, SK};
use super::ledger::{number, rfc3339};
use super::tx::{Role, Tx};
use super::users::{Item, from_item, item_key, to_item};
use super::work::OPEN_INDEX;
use super::{DynamoStore, StoreError, landed, sdk_error};
use crate::aws::dynamo::api_keys::WebhookSecrets;
use crate::domain::generation::Generation;
use crate::domain::{GenerationId, UserId};
use crate::hooks::{HookEvent, HookJob};

/// A new event is checked by the sweeper this long after it became due: its own message
/// normally delivers it well before.
pub const FIRST_CHECK_SECS: i64 = 120;
/// When the sweeper re-sends an event, it looks again no sooner than this.
pub const RECHECK_SECS: i64 = 600;
/// Attempts kept on a delivery item (the last ones; the count is kept whole).
const KEPT_ATTEMPTS: usize = 20;

const HOOK_PREFIX: &str = "HOOK#";

fn hook_sk(generation: GenerationId, event: HookEvent) -> String {
    format!("{HOOK_PREFIX}{generation}#{}", event.as_str())
}

fn hooks_pk(generation: GenerationId) -> String {
    let shard = (generation.ulid().random() % u128::from(OPEN_SHARDS)) as u32;
    format!("HOOKS#{shard}")
}

fn index_sk(at_ms: i64, generation: GenerationId, event: HookEvent) -> String {
    format!("{at_ms:015}#{generation}#{}", event.as_str())
}

fn state_value(state: DeliveryState) -> AttributeValue {
    serde_dynamo::to_attribute_value(state).expect("a state serializes")
}

fn millis(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Where an event's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    /// A 2xx came back.
    Delivered,
    /// Refused by the receiver, refused by our address rules, or out of attempts.
    Failed,
    /// Nobody to deliver to any more (the generation or the account was deleted).
    Dropped,
}

impl DeliveryState {
    pub fn is_settled(self) -> bool {
        self != Self::Pending
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// RFC 3339.
    pub at: String,
    /// The receiver's status, or what happened instead (`timeout`, `connect`, `refused`).
    pub result: String,
    pub latency_ms: u64,
}

/// One event's delivery, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub user_id: UserId,
    pub generation_id: GenerationId,
    pub event: HookEvent,
    pub webhook_id: String,
    pub url: String,
    pub state: DeliveryState,
    #[serde(default)]
    pub attempt_count: u32,
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// When the event happened (RFC 3339): the body's `timestamp`.
    pub occurred_at: String,
    pub updated_at: String,
}

impl Delivery {
    pub fn job(&self) -> HookJob {
        HookJob {
            user_id: self.user_id,
            generation_id: self.generation_id,
            event: self.event,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct DeliveryItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    delivery: Delivery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_sk: Option<String>,
}

fn pending_item(job: &HookJob, url: &str, now: OffsetDateTime) -> DeliveryItem {
    DeliveryItem {
        pk: keys::user_pk(job.user_id),
        sk: hook_sk(job.generation_id, job.event),
        delivery: Delivery {
            user_id: job.user_id,
            generation_id: job.generation_id,
            event: job.event,
            webhook_id: job.webhook_id(),
            url: url.to_string(),
            state: DeliveryState::Pending,
            attempt_count: 0,
            attempts: Vec::new(),
            occurred_at: rfc3339(now),
            updated_at: rfc3339(now),
        },
        open_pk: Some(hooks_pk(job.generation_id)),
        open_sk: Some(index_sk(
            millis(now) + FIRST_CHECK_SECS * 1000,
            job.generation_id,
            job.event,
        )),
    }
}

/// Everything one delivery attempt needs, read at once.
#[derive(Debug, Clone)]
pub struct HookContext {
    /// `None` when it was deleted.
    pub generation: Option<Generation>,
    pub delivery: Option<Delivery>,
    pub secrets: Option<WebhookSecrets>,
    /// The account is gone (or deleted): nothing is sent for it again.
    pub account_gone: bool,
}

/// What an attempt leaves for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Settled(DeliveryState),
    /// Try again at this time (unix milliseconds).
    RetryAt(i64),
}

impl DynamoStore {
    /// Adds to `tx` the pending `completed` delivery of a generation that this
    /// transaction ends, if its creator asked for that event.
    pub(crate) fn push_completed_hook(
        &self,
        tx: &mut Tx,
        generation: &Generation,
        now: OffsetDateTime,
    ) {
        let Some(webhook) = generation
            .webhook
            .as_ref()
            .filter(|w| w.wants(HookEvent::Completed))
        else {
            return;
        };
        let job = HookJob {
            user_id: generation.user_id,
            generation_id: generation.id,
            event: HookEvent::Completed,
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(&pending_item(&job, &webhook.url, now))))
            .build()
            .expect("table and item are set");
        tx.push(
            TransactWriteItem::builder().put(put).build(),
            Role::Named("hook"),
        );
    }

    /// The generation, the event's delivery, the user's secrets and profile: one read.
    pub async fn hook_context(&self, job: &HookJob) -> Result<HookContext, StoreError> {
        let pk = keys::user_pk(job.user_id);
        let items = self
            .batch_get(vec![
                item_key(pk.clone(), &gen_sk(job.generation_id)),
                item_key(pk.clone(), &hook_sk(job.generation_id, job.event)),
                item_key(pk.clone(), super::api_keys::WEBHOOK_SECRET_SK),
                item_key(pk, PROFILE),
            ])
            .await?;
        let sk = |item: &Item| item.get(SK).and_then(|v| v.as_s().ok()).cloned();
        let mut context = HookContext {
            generation: None,
            delivery: None,
            secrets: None,
            account_gone: true,
        };
        let now = OffsetDateTime::now_utc();
        for item in items {
            match sk(&item).as_deref() {
                Some(PROFILE) => context.account_gone = item.contains_key("deleted_at"),
                Some(s) if s.starts_with("GEN#") => {
                    context.generation = Some(from_item::<GenerationItem>(item)?.into_generation());
                }
                Some(s) if s.starts_with(HOOK_PREFIX) => {
                    context.delivery = Some(from_item::<DeliveryItem>(item)?.delivery);
                }
                Some(super::api_keys::WEBHOOK_SECRET_SK) => {
                    context.secrets = Some(super::api_keys::secrets_of(item, now)?);
                }
                _ => {}
            }
        }
        Ok(context)
    }

    /// Records one attempt (creating the delivery if this is its first) and what comes
    /// next: a settled delivery leaves the open index; a retry is checked again after it
    /// is due.
    pub async fn record_attempt(
        &self,
        job: &HookJob,
        url: &str,
        attempt: AttemptRecord,
        next: Next,
    ) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let (state, index) = match next {
            Next::Settled(state) => (state, None),
            Next::RetryAt(at_ms) => (
                DeliveryState::Pending,
                Some(index_sk(
                    at_ms + FIRST_CHECK_SECS * 1000,
                    job.generation_id,
                    job.event,
                )),
            ),
        };
        let mut expression = String::from(
            "SET attempts = list_append(if_not_exists(attempts, :none), :attempt), \
             attempt_count = if_not_exists(attempt_count, :zero) + :one, #st = :state, \
             updated_at = :now, user_id = :user, generation_id = :gen, #ev = :event, \
             webhook_id = :wid, #url = if_not_exists(#url, :url), \
             occurred_at = if_not_exists(occurred_at, :now)",
        );
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":none".into(), AttributeValue::L(vec![])),
            (
                ":attempt".into(),
                AttributeValue::L(vec![AttributeValue::M(to_item(&attempt))]),
            ),
            (":zero".into(), number(0)),
            (":one".into(), number(1)),
            (":state".into(), state_value(state)),
            (":now".into(), AttributeValue::S(rfc3339(now))),
            (":user".into(), AttributeValue::S(job.user_id.to_string())),
            (
                ":gen".into(),
                AttributeValue::S(job.generation_id.to_string()),
            ),
            (
                ":event".into(),
                AttributeValue::S(job.event.as_str().into()),
            ),
            (":wid".into(), AttributeValue::S(job.webhook_id())),
            (":url".into(), AttributeValue::S(url.to_string())),
        ]);
        match index {
            Some(sk) => {
                expression.push_str(", open_pk = :opk, open_sk = :osk");
                values.insert(
                    ":opk".into(),
                    AttributeValue::S(hooks_pk(job.generation_id)),
                );
                values.insert(":osk".into(), AttributeValue::S(sk));
            }
            None => expression.push_str(" REMOVE open_pk, open_sk"),
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(
                keys::user_pk(job.user_id),
                &hook_sk(job.generation_id, job.event),
            )))
            .update_expression(expression)
            .expression_attribute_names("#st", "state")
            .expression_attribute_names("#url", "url")
            .expression_attribute_names("#ev", "event")
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(sdk_error)?;
        self.trim_attempts(job).await
    }

    /// Keeps the attempt list bounded: an event re-sent by an operator many times
    /// could otherwise grow its item without end.
    async fn trim_attempts(&self, job: &HookJob) -> Result<(), StoreError> {
        let key = item_key(
            keys::user_pk(job.user_id),
            &hook_sk(job.generation_id, job.event),
        );
        let Some(item) = self.get_item_as::<DeliveryItem>(key.clone()).await? else {
            return Ok(());
        };
        if item.delivery.attempts.len() <= KEPT_ATTEMPTS {
            return Ok(());
        }
        let excess = item.delivery.attempts.len() - KEPT_ATTEMPTS;
        let removals: Vec<String> = (0..excess).map(|i| format!("attempts[{i}]")).collect();
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(format!("REMOVE {}", removals.join(", ")))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// Settles an event without an attempt (nobody to deliver to): `state` and out of the
    /// index, if there is a delivery item at all.
    pub async fn settle_delivery(
        &self,
        job: &HookJob,
        state: DeliveryState,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(
                keys::user_pk(job.user_id),
                &hook_sk(job.generation_id, job.event),
            )))
            .update_expression("SET #st = :state, updated_at = :now REMOVE open_pk, open_sk")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(":state", state_value(state))
            .expression_attribute_values(
                ":now",
                AttributeValue::S(rfc3339(OffsetDateTime::now_utc())),
            )
            .send()
            .await;
        // No delivery item: nothing was ever attempted, nothing to settle.
        landed(result)?;
        Ok(())
    }

    /// A pending delivery for an event that became due without one (a `started` event
    /// whose message was lost): `false` when one exists already.
    pub async fn open_delivery(&self, job: &HookJob, url: &str) -> Result<bool, StoreError> {
        let mut tx = Tx::default();
        tx.push(
            super::ledger::put_new(
                &self.table,
                to_item(&pending_item(job, url, OffsetDateTime::now_utc())),
            ),
            Role::Named("hook"),
        );
        match self.execute(tx).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed("hook")) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Unsettled deliveries of one shard due for a check before `before`.
    pub async fn due_deliveries(
        &self,
        shard: u32,
        before: OffsetDateTime,
    ) -> Result<Vec<Delivery>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OPEN_INDEX)
            .key_condition_expression("open_pk = :p AND open_sk < :before")
            .expression_attribute_values(":p", AttributeValue::S(format!("HOOKS#{shard}")))
            .expression_attribute_values(":before", AttributeValue::S(open_sk_prefix(before)));
        self.query_all(query)
            .await?
            .into_iter()
            .map(|item| from_item::<DeliveryItem>(item).map(|i| i.delivery))
            .collect()
    }

    /// Moves an unsettled delivery's next check to `at` (the sweeper, after re-sending it).
    pub async fn recheck_delivery_at(
        &self,
        job: &HookJob,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(
                keys::user_pk(job.user_id),
                &hook_sk(job.generation_id, job.event),
            )))
            .update_expression("SET open_sk = :osk")
            .condition_expression("attribute_exists(open_pk)")
            .expression_attribute_values(
                ":osk",
                AttributeValue::S(index_sk(millis(at), job.generation_id, job.event)),
            )
            .send()
            .await;
        // Settled meanwhile (out of the index): nothing to check.
        landed(result)?;
        Ok(())
    }

    /// The deliveries of these events that exist, in one read (the sweeper's check of
    /// `started` events).
    pub async fn deliveries(&self, jobs: &[HookJob]) -> Result<Vec<Delivery>, StoreError> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        let mut found = Vec::new();
        for chunk in jobs.chunks(100) {
            let keys = chunk
                .iter()
                .map(|j| item_key(keys::user_pk(j.user_id), &hook_sk(j.generation_id, j.event)))
                .collect();
            for item in self.batch_get(keys).await? {
                found.push(from_item::<DeliveryItem>(item)?.delivery);
            }
        }
        Ok(found)
    }

    /// One user's deliveries, newest generation first (`nb-admin webhooks list`).
    pub async fn user_deliveries(&self, user: UserId) -> Result<Vec<Delivery>, StoreError> {
        let (items, _) = self
            .query_page::<DeliveryItem>(keys::user_pk(user), HOOK_PREFIX, 1000, None)
            .await?;
        Ok(items.into_iter().map(|i| i.delivery).collect())
    }

    /// Puts a settled delivery back to pending with a fresh check, so that it is sent again
    /// (`nb-admin webhooks replay`); its attempts are kept. `NotFound` without one.
    pub async fn reopen_delivery(&self, job: &HookJob) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(
                keys::user_pk(job.user_id),
                &hook_sk(job.generation_id, job.event),
            )))
            .update_expression(
                "SET #st = :pending, attempt_count = :zero, updated_at = :now, open_pk = :opk, open_sk = :osk",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#st", "state")
            .expression_attribute_values(
                ":pending",
                state_value(DeliveryState::Pending),
            )
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":now", AttributeValue::S(rfc3339(now)))
            .expression_attribute_values(":opk", AttributeValue::S(hooks_pk(job.generation_id)))
            .expression_attribute_values(
                ":osk",
                AttributeValue::S(index_sk(
                    millis(now) + FIRST_CHECK_SECS * 1000,
                    job.generation_id,
                    job.event,
                )),
            )
            .send()
            .await;
        landed(result)?.map(|_| ()).ok_or(StoreError::NotFound)
    }
}
