//! Payment events applied exactly once.
//!
//! Each event is one transaction: its event record (`EVENT#<provider>#<id>`, created with
//! `attribute_not_exists`, never expiring) and its whole effect — purchase, period grant,
//! subscription state, claw-back, customer mapping — so a duplicate finds the record and
//! changes nothing, and a failure leaves nothing half-applied. The effect is planned from
//! a consistent read of the items it touches; every write is conditioned on what was read
//! (a version, or absence), so a plan made stale by a concurrent event fails as a whole and
//! is made again from a fresh read. A first purchase skips the read: it is planned as if
//! nothing existed, and the same conditions catch a wrong guess (see `apply_unread`).
//!
//! Items (see DESIGN.md's data table):
//! - purchase `ORDER#<provider>#<payment id>`: keyed by the id refund and dispute events
//!   carry; a refund or dispute seen first leaves it as a tombstone, and the purchase then
//!   grants nothing.
//! - period grant `SUBGRANT#<provider>#<subscription>#<period start>`: each period once,
//!   whichever events report it, in whatever order.
//! - subscription `USER#<id>` / `SUB#<provider>#<subscription>`: status, product, period
//!   end and the provider's time of the event that set them (applied only if newer); the
//!   profile's `subscription` map mirrors the current one for `GET /v1/me`.
//! - customer `CUSTOMER#<provider>#<customer>` -> user, and `USER#<id>` /
//!   `CUSTOMER#<provider>` -> customer (for the next checkout and the portal).
//! - `UNATTRIBUTED` / `<provider>#<event id>`: an event no user could be found for, kept
//!   for an operator to replay.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::{self, PK, PROFILE, SK};
use super::ledger::{BalanceChange, number, put_new, rfc3339};
use super::tx::{Role, Tx};
use super::users::{Item, from_item, item_key, to_item};
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::ledger::LedgerReason;
use crate::domain::payment::{Provider, SubscriptionSummary};
use crate::domain::products::{self, Product};
use crate::domain::{Credits, UserId};
use crate::payments::{
    Dispute, DisputeClosed, Effect, Payer, PaymentEvent, PeriodPaid, Purchase, Refund, Refunded,
    SubscriptionState,
};

/// Plans made again after a concurrent change, before giving up with `Contention` (503,
/// so the provider retries later).
const MAX_PLANS: u32 = 6;
const UNATTRIBUTED_PK: &str = "UNATTRIBUTED";

fn event_pk(provider: Provider, id: &str) -> String {
    format!("EVENT#{provider}#{id}")
}
fn order_pk(provider: Provider, payment: &str) -> String {
    format!("ORDER#{provider}#{payment}")
}
fn customer_pk(provider: Provider, customer: &str) -> String {
    format!("CUSTOMER#{provider}#{customer}")
}
fn user_customer_sk(provider: Provider) -> String {
    format!("CUSTOMER#{provider}")
}
const SUB_PREFIX: &str = "SUB#";
fn sub_sk(provider: Provider, subscription: &str) -> String {
    format!("{SUB_PREFIX}{provider}#{subscription}")
}
fn grant_pk(provider: Provider, subscription: &str, period_start: i64) -> String {
    format!("SUBGRANT#{provider}#{subscription}#{period_start}")
}
fn unattributed_sk(provider: Provider, id: &str) -> String {
    format!("{provider}#{id}")
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Its effect and its event record were written now.
    Applied,
    /// It was applied before: nothing changed.
    Duplicate,
    /// Nothing to do for it; nothing was written.
    Ignored,
    /// No user could be found for it: stored for an operator, nothing applied.
    Unattributed,
}

/// An event kept for an operator (`UNATTRIBUTED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnattributedEvent {
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    pub reason: String,
    pub received_at: String,
}

/// A user's subscription as recorded (for the billing portal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub provider: Provider,
    pub subscription_id: String,
    pub customer_id: Option<String>,
    pub product_id: Option<String>,
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventRecord {
    pk: String,
    sk: String,
    provider: Provider,
    event_id: String,
    event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<UserId>,
    applied_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OrderState {
    Purchased,
    /// A refund or dispute came before the purchase: the purchase grants nothing.
    Tombstone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DisputeRecord {
    amount: i64,
    /// Credits this dispute took back (given back if it is won).
    clawed: i64,
    /// `open`, `won` or `lost`.
    status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderItem {
    pk: String,
    sk: String,
    provider: Provider,
    payment_id: String,
    state: OrderState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    product_id: Option<String>,
    /// Credits the purchase granted (0 when it came after a tombstone).
    credits: i64,
    /// Paid, in minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    /// Refunded so far, in minor units.
    refunded: i64,
    #[serde(default)]
    refund_ids: Vec<String>,
    /// Credits taken back for refunds so far.
    refund_clawed: i64,
    #[serde(default)]
    disputes: BTreeMap<String, DisputeRecord>,
    version: u64,
    updated_at: String,
}

impl OrderItem {
    fn new(provider: Provider, payment_id: &str, state: OrderState, now: OffsetDateTime) -> Self {
        Self {
            pk: order_pk(provider, payment_id),
            sk: "ORDER".into(),
            provider,
            payment_id: payment_id.to_string(),
            state,
            user_id: None,
            product_id: None,
            credits: 0,
            amount: None,
            currency: None,
            refunded: 0,
            refund_ids: Vec::new(),
            refund_clawed: 0,
            disputes: BTreeMap::new(),
            version: 0,
            updated_at: rfc3339(now),
        }
    }

    /// Credits still granted by this purchase (not yet taken back).
    fn unclawed(&self) -> i64 {
        let disputed: i64 = self
            .disputes
            .values()
            .filter(|d| d.status != "won")
            .map(|d| d.clawed)
            .sum();
        (self.credits - self.refund_clawed - disputed).max(0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SubItem {
    pk: String,
    sk: String,
    provider: Provider,
    subscription_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    product_id: Option<String>,
    status: String,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current_period_end: Option<i64>,
    cancel_at_period_end: bool,
    /// The provider's time of the event that set the status, in milliseconds.
    status_at_ms: i64,
    /// Breaks ties between events of the same time (see [`status_rank`]).
    status_rank: u8,
    version: u64,
    updated_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct GrantItem {
    pk: String,
    sk: String,
    user_id: UserId,
    subscription_id: String,
    period_start: i64,
    period_end: i64,
    credits: i64,
    event_id: String,
    created_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CustomerItem {
    pk: String,
    sk: String,
    provider: Provider,
    customer_id: String,
    user_id: UserId,
    created_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct UserCustomerItem {
    pk: String,
    sk: String,
    customer_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct UnattributedItem {
    pk: String,
    sk: String,
    provider: Provider,
    event_id: String,
    event_type: String,
    reason: String,
    /// The event as read (JSON of [`PaymentEvent`]): replayed through the same path.
    event: String,
    received_at: String,
}

/// Same-time events: a later stage of a subscription's life wins (an `incomplete`
/// subscription becomes `active` in the second it is created; an end is final).
fn status_rank(status: &str) -> u8 {
    match status {
        "incomplete" => 0,
        "active" => 2,
        "canceled" | "expired" | "incomplete_expired" => 3,
        _ => 1,
    }
}

/// `part` of `whole`, as a share of `credits`, rounded down; with no `whole` known, all.
fn share(credits: i64, part: i64, whole: Option<i64>) -> i64 {
    match whole {
        Some(whole) if whole > 0 => {
            let part = part.clamp(0, whole);
            (i128::from(credits) * i128::from(part) / i128::from(whole)) as i64
        }
        _ if part > 0 => credits,
        _ => 0,
    }
}

fn find<'a>(items: &'a [Item], pk: &str, sk: &str) -> Option<&'a Item> {
    items.iter().find(|i| {
        i.get(PK).and_then(|v| v.as_s().ok()).map(String::as_str) == Some(pk)
            && i.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str) == Some(sk)
    })
}

fn parse<T: serde::de::DeserializeOwned>(item: Option<&Item>) -> Result<Option<T>, StoreError> {
    item.cloned().map(from_item).transpose()
}

/// What the profile shows now: which subscription, and whether it is active.
#[derive(Debug, Clone, Default)]
struct ShownSubscription {
    key: Option<String>,
    active: bool,
}

/// The items an event's plan reads.
#[derive(Debug, Default)]
struct State {
    recorded: bool,
    user: Option<UserId>,
    shown: ShownSubscription,
    order: Option<OrderItem>,
    grant: Option<GrantItem>,
    subscription: Option<SubItem>,
    /// Who the event's customer is mapped to, if anyone.
    mapped_to: Option<UserId>,
}

/// A planned transaction, or why the event cannot be applied.
enum Plan {
    Write(Planned),
    Unattributed(String),
    Ignored(String),
}

/// A transaction and what it will have done once written.
#[derive(Default)]
struct Planned {
    tx: Tx,
    tally: Tally,
}

/// What a planned transaction does, for the metrics emitted once it is written.
#[derive(Default)]
struct Tally {
    /// A one-time purchase or a subscription period granted: (metric, product).
    sale: Option<(&'static str, &'static str)>,
    granted: Vec<(LedgerReason, i64)>,
    clawed_back: i64,
}

impl Tally {
    fn emit(&self, provider: Provider) {
        let provider = provider.as_str();
        if let Some((metric, product)) = self.sale {
            crate::metrics::count(metric, 1, &[("Provider", provider), ("Product", product)]);
        }
        for (reason, credits) in &self.granted {
            crate::metrics::count(
                "CreditsGranted",
                *credits as u64,
                &[("Reason", reason.as_str())],
            );
        }
        if self.clawed_back > 0 {
            crate::metrics::count(
                "CreditsClawedBack",
                self.clawed_back as u64,
                &[("Provider", provider)],
            );
        }
    }
}

impl DynamoStore {
    /// Applies a verified event exactly once (see the module documentation). An event no
    /// user can be found for is stored for an operator (`Unattributed`).
    pub async fn apply_payment_event(
        &self,
        event: &PaymentEvent,
    ) -> Result<EventOutcome, StoreError> {
        self.apply_event(event, None).await
    }

    /// Applies a stored unattributed event through the same path, once: a user given
    /// here is taken as its payer (an operator's decision), else attribution is tried
    /// again (metadata, then the customer mapping). The stored copy is removed once the
    /// event is applied (or found applied already).
    pub async fn replay_event(
        &self,
        provider: Provider,
        event_id: &str,
        assign_to: Option<UserId>,
    ) -> Result<EventOutcome, StoreError> {
        let key = item_key(UNATTRIBUTED_PK.into(), &unattributed_sk(provider, event_id));
        let stored: UnattributedItem = self
            .get_item_as(key.clone())
            .await?
            .ok_or(StoreError::NotFound)?;
        let event: PaymentEvent = serde_json::from_str(&stored.event)
            .map_err(|e| StoreError::Internal(anyhow::anyhow!("unreadable stored event: {e}")))?;
        let outcome = self.apply_event(&event, assign_to).await?;
        if matches!(outcome, EventOutcome::Applied | EventOutcome::Duplicate) {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Ok(outcome)
    }

    /// Events kept for an operator, oldest first.
    pub async fn unattributed_events(
        &self,
        limit: i32,
    ) -> Result<Vec<UnattributedEvent>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(UNATTRIBUTED_PK.into()))
            .limit(limit)
            .send()
            .await
            .map_err(sdk_error)?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                from_item::<UnattributedItem>(item).map(|u| UnattributedEvent {
                    provider: u.provider,
                    event_id: u.event_id,
                    event_type: u.event_type,
                    reason: u.reason,
                    received_at: u.received_at,
                })
            })
            .collect()
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

    /// The user's current subscription: an active one if any, else the latest recorded.
    pub async fn current_subscription(
        &self,
        user: UserId,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", AttributeValue::S(keys::user_pk(user)))
            .expression_attribute_values(":p", AttributeValue::S(SUB_PREFIX.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let subscriptions = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(from_item::<SubItem>)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(subscriptions
            .into_iter()
            .max_by_key(|s| {
                (
                    crate::domain::payment::is_active_status(&s.status),
                    s.status_at_ms,
                )
            })
            .map(|s| SubscriptionRecord {
                provider: s.provider,
                subscription_id: s.subscription_id,
                customer_id: s.customer_id,
                product_id: s.product_id,
                status: s.status,
            }))
    }

    async fn apply_event(
        &self,
        event: &PaymentEvent,
        assign_to: Option<UserId>,
    ) -> Result<EventOutcome, StoreError> {
        if let Effect::Ignored { why } = &event.effect {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, why, "payment event ignored");
            return Ok(EventOutcome::Ignored);
        }
        if assign_to.is_none()
            && let Some(outcome) = self.apply_unread(event).await?
        {
            return Ok(outcome);
        }
        for _ in 0..MAX_PLANS {
            let now = OffsetDateTime::now_utc();
            let state = self.read_state(event, assign_to).await?;
            if state.recorded {
                return Ok(EventOutcome::Duplicate);
            }
            let planned = match self.plan(event, &state, now)? {
                Plan::Write(planned) => planned,
                Plan::Ignored(why) => {
                    tracing::info!(event_id = %event.id, event_type = %event.event_type, why, "payment event ignored");
                    return Ok(EventOutcome::Ignored);
                }
                Plan::Unattributed(reason) => {
                    self.store_unattributed(event, &reason, now).await?;
                    tracing::error!(
                        provider = %event.provider,
                        event_id = %event.id,
                        event_type = %event.event_type,
                        reason,
                        "payment event not attributable to a user: stored for replay"
                    );
                    return Ok(EventOutcome::Unattributed);
                }
            };
            match self.execute(planned.tx).await {
                Ok(()) => {
                    planned.tally.emit(event.provider);
                    return Ok(EventOutcome::Applied);
                }
                Err(StoreError::AlreadyApplied) => return Ok(EventOutcome::Duplicate),
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

    /// The usual purchase, a first delivery whose checkout names an existing user, in
    /// one call: planned as if nothing were recorded yet, the transaction's conditions do
    /// the reading (event record new, order new, profile present, customer unmapped or
    /// this user's). `None` when that guess was wrong and nothing was written: the caller
    /// reads and plans. Other effects usually find items already there (a subscription's
    /// record, its customer), so guessing would mostly cost a failed transaction.
    async fn apply_unread(&self, event: &PaymentEvent) -> Result<Option<EventOutcome>, StoreError> {
        let Effect::Purchase(purchase) = &event.effect else {
            return Ok(None);
        };
        let Some(user) = purchase.payer.user() else {
            return Ok(None);
        };
        let state = State {
            user: Some(user),
            ..State::default()
        };
        let Plan::Write(planned) = self.plan(event, &state, OffsetDateTime::now_utc())? else {
            return Ok(None);
        };
        match self.execute(planned.tx).await {
            Ok(()) => {
                planned.tally.emit(event.provider);
                Ok(Some(EventOutcome::Applied))
            }
            Err(StoreError::AlreadyApplied) => Ok(Some(EventOutcome::Duplicate)),
            Err(StoreError::ConditionFailed(_) | StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn store_unattributed(
        &self,
        event: &PaymentEvent,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let item = UnattributedItem {
            pk: UNATTRIBUTED_PK.into(),
            sk: unattributed_sk(event.provider, &event.id),
            provider: event.provider,
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            reason: reason.to_string(),
            event: serde_json::to_string(event).expect("events always serialize"),
            received_at: rfc3339(now),
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&item)))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// One consistent read of what the event's plan needs (two when the user is known
    /// only through the customer mapping).
    async fn read_state(
        &self,
        event: &PaymentEvent,
        assign_to: Option<UserId>,
    ) -> Result<State, StoreError> {
        let provider = event.provider;
        let event_key = (event_pk(provider, &event.id), "EVENT".to_string());
        let mut wanted: Vec<(String, String)> = vec![event_key.clone()];
        let payer: Option<&Payer> = match &event.effect {
            Effect::Purchase(p) => Some(&p.payer),
            Effect::SubscriptionCheckout(p) => Some(p),
            Effect::PeriodPaid(p) => Some(&p.payer),
            Effect::SubscriptionChanged(s) => Some(&s.payer),
            _ => None,
        };
        let payment = match &event.effect {
            Effect::Purchase(p) => Some(p.payment_id.as_str()),
            Effect::PeriodPaid(p) => p.payment_id.as_deref(),
            Effect::Refund(r) => Some(r.payment_id.as_str()),
            Effect::DisputeOpened(d) => Some(d.payment_id.as_str()),
            Effect::DisputeClosed(d) => Some(d.payment_id.as_str()),
            _ => None,
        };
        let subscription = match &event.effect {
            Effect::PeriodPaid(p) => Some(p.subscription_id.as_str()),
            Effect::SubscriptionChanged(s) => Some(s.subscription_id.as_str()),
            _ => None,
        };
        let order_key = payment.map(|p| (order_pk(provider, p), "ORDER".to_string()));
        let grant_key = match &event.effect {
            Effect::PeriodPaid(p) => Some((
                grant_pk(provider, &p.subscription_id, p.period_start),
                "SUBGRANT".to_string(),
            )),
            _ => None,
        };
        let customer_key = payer
            .and_then(|p| p.customer_id.as_deref())
            .map(|c| (customer_pk(provider, c), "CUSTOMER".to_string()));
        let claimed_user = assign_to.or_else(|| payer.and_then(Payer::user));
        let user_keys = |user: UserId| {
            let mut keys = vec![(keys::user_pk(user), PROFILE.to_string())];
            if let Some(sub) = subscription {
                keys.push((keys::user_pk(user), sub_sk(provider, sub)));
            }
            keys
        };
        wanted.extend(order_key.clone());
        wanted.extend(grant_key.clone());
        wanted.extend(customer_key.clone());
        if let Some(user) = claimed_user {
            wanted.extend(user_keys(user));
        }
        let items = self.read_keys(&wanted).await?;
        let get =
            |key: &Option<(String, String)>| key.as_ref().and_then(|(pk, sk)| find(&items, pk, sk));
        let mut state = State {
            recorded: find(&items, &event_key.0, &event_key.1).is_some(),
            order: parse(get(&order_key))?,
            grant: parse(get(&grant_key))?,
            mapped_to: parse::<CustomerItem>(get(&customer_key))?.map(|c| c.user_id),
            ..State::default()
        };
        if payer.is_none() {
            return Ok(state);
        }
        // The checkout's metadata first (where that user exists), then the mapping.
        let profile_of =
            |items: &[Item], user: UserId| find(items, &keys::user_pk(user), PROFILE).cloned();
        let (user, items) = match claimed_user.filter(|u| profile_of(&items, *u).is_some()) {
            Some(user) => (Some(user), items),
            None => match state.mapped_to {
                Some(user) if Some(user) != claimed_user => {
                    (Some(user), self.read_keys(&user_keys(user)).await?)
                }
                _ => (None, items),
            },
        };
        let Some(user) = user else {
            return Ok(state);
        };
        let Some(profile) = profile_of(&items, user) else {
            return Ok(state);
        };
        state.user = Some(user);
        state.shown = ShownSubscription {
            key: profile
                .get("subscription_key")
                .and_then(|v| v.as_s().ok())
                .cloned(),
            active: profile
                .get("subscription")
                .cloned()
                .and_then(|v| serde_dynamo::from_attribute_value::<_, SubscriptionSummary>(v).ok())
                .is_some_and(|s| s.is_active()),
        };
        if let Some(sub) = subscription {
            state.subscription = parse(find(&items, &keys::user_pk(user), &sub_sk(provider, sub)))?;
        }
        Ok(state)
    }

    async fn read_keys(&self, keys: &[(String, String)]) -> Result<Vec<Item>, StoreError> {
        let mut unique: Vec<Item> = Vec::new();
        for (pk, sk) in keys {
            let key = item_key(pk.clone(), sk);
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        self.batch_get(unique).await
    }

    /// The transaction of an event's effect on `state`, its event record first.
    fn plan(
        &self,
        event: &PaymentEvent,
        state: &State,
        now: OffsetDateTime,
    ) -> Result<Plan, StoreError> {
        let mut p = Planned::default();
        let tx = &mut p.tx;
        let record = EventRecord {
            pk: event_pk(event.provider, &event.id),
            sk: "EVENT".into(),
            provider: event.provider,
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            user_id: state
                .user
                .or_else(|| state.order.as_ref().and_then(|o| o.user_id)),
            applied_at: rfc3339(now),
        };
        tx.push(put_new(&self.table, to_item(&record)), Role::Guard);
        let provider = event.provider;
        match &event.effect {
            Effect::Ignored { why } => return Ok(Plan::Ignored(why.clone())),
            Effect::Purchase(purchase) => {
                let Some(user) = state.user else {
                    return Ok(Plan::Unattributed("no user for the purchase".into()));
                };
                self.plan_purchase(&mut p, provider, purchase, user, state, now)?;
                self.plan_customer(&mut p.tx, provider, &purchase.payer, user, state, now);
            }
            Effect::SubscriptionCheckout(payer) => {
                let Some(user) = state.user else {
                    return Ok(Plan::Ignored(
                        "a subscription checkout without a known user grants nothing".into(),
                    ));
                };
                self.plan_customer(&mut p.tx, provider, payer, user, state, now);
            }
            Effect::PeriodPaid(period) => {
                let Some(user) = state.user else {
                    return Ok(Plan::Unattributed(
                        "no user for the subscription payment".into(),
                    ));
                };
                self.plan_period(&mut p, event, period, user, state, now)?;
                self.plan_customer(&mut p.tx, provider, &period.payer, user, state, now);
            }
            Effect::SubscriptionChanged(change) => {
                let Some(user) = state.user else {
                    return Ok(Plan::Unattributed("no user for the subscription".into()));
                };
                let next = self.next_subscription(event, change, state, now);
                self.push_profile(&mut p.tx, user, 0, None, next.as_ref(), state, now)?;
                self.plan_customer(&mut p.tx, provider, &change.payer, user, state, now);
            }
            Effect::Refund(refund) => self.plan_refund(&mut p, provider, refund, state, now)?,
            Effect::DisputeOpened(dispute) => {
                self.plan_dispute(&mut p, provider, dispute, state, now)?
            }
            Effect::DisputeClosed(closed) => {
                self.plan_dispute_closed(&mut p, provider, closed, state, now)?
            }
        }
        Ok(Plan::Write(p))
    }

    fn plan_purchase(
        &self,
        p: &mut Planned,
        provider: Provider,
        purchase: &Purchase,
        user: UserId,
        state: &State,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let product = product_of(&purchase.product_id)?;
        let (mut order, grants) = match &state.order {
            // Granted already, by another event of the same payment.
            Some(order) if order.state == OrderState::Purchased => return Ok(()),
            Some(tombstone) => {
                tracing::warn!(payment_id = %purchase.payment_id, "a purchase after its refund or dispute grants nothing");
                (tombstone.clone(), false)
            }
            None => (
                OrderItem::new(provider, &purchase.payment_id, OrderState::Purchased, now),
                true,
            ),
        };
        order.state = OrderState::Purchased;
        order.user_id = Some(user);
        order.product_id = Some(product.id.to_string());
        order.credits = if grants { product.credits().get() } else { 0 };
        order.amount = purchase.amount;
        order.currency = purchase.currency.clone();
        self.push_order(&mut p.tx, order, state.order.as_ref(), now);
        if grants {
            let change = BalanceChange::grant(
                user,
                product.credits(),
                LedgerReason::Purchase,
                &purchase.payment_id,
            );
            self.push_change(&mut p.tx, &change, None, false, now);
            p.tally.sale = Some(("Purchases", product.id));
            p.tally
                .granted
                .push((LedgerReason::Purchase, product.credits().get()));
        }
        Ok(())
    }

    fn plan_period(
        &self,
        p: &mut Planned,
        event: &PaymentEvent,
        period: &PeriodPaid,
        user: UserId,
        state: &State,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let provider = event.provider;
        let product = product_of(&period.product_id)?;
        let tombstoned = state
            .order
            .as_ref()
            .is_some_and(|o| o.state == OrderState::Tombstone);
        let granted_before = state.grant.as_ref().map(|g| g.credits);
        let credits = match granted_before {
            Some(_) => 0,
            None if tombstoned => 0,
            None => product.credits().get(),
        };
        if granted_before.is_none() {
            let grant = GrantItem {
                pk: grant_pk(provider, &period.subscription_id, period.period_start),
                sk: "SUBGRANT".into(),
                user_id: user,
                subscription_id: period.subscription_id.clone(),
                period_start: period.period_start,
                period_end: period.period_end,
                credits,
                event_id: event.id.clone(),
                created_at: rfc3339(now),
            };
            p.tx.push(
                put_new(&self.table, to_item(&grant)),
                Role::Named("period grant"),
            );
        }
        if let Some(payment_id) = &period.payment_id {
            let existing = state.order.as_ref();
            if existing.is_none_or(|o| o.state == OrderState::Tombstone) {
                let mut order = existing.cloned().unwrap_or_else(|| {
                    OrderItem::new(provider, payment_id, OrderState::Purchased, now)
                });
                order.state = OrderState::Purchased;
                order.user_id = Some(user);
                order.product_id = Some(product.id.to_string());
                order.credits = if tombstoned {
                    0
                } else {
                    granted_before.unwrap_or(credits)
                };
                order.amount = period.amount;
                self.push_order(&mut p.tx, order, existing, now);
            }
        }
        let change = SubscriptionState {
            payer: period.payer.clone(),
            subscription_id: period.subscription_id.clone(),
            product_id: Some(product.id.to_string()),
            status: "active".into(),
            current_period_end: Some(period.period_end),
            cancel_at_period_end: state
                .subscription
                .as_ref()
                .is_some_and(|s| s.cancel_at_period_end),
        };
        let next = self.next_subscription(event, &change, state, now);
        let reference = format!("{}#{}", period.subscription_id, period.period_start);
        let grant = (credits > 0).then_some((LedgerReason::Subscription, reference.as_str()));
        if credits > 0 {
            p.tally.sale = Some(("SubscriptionRenewals", product.id));
            p.tally.granted.push((LedgerReason::Subscription, credits));
        }
        self.push_profile(&mut p.tx, user, credits, grant, next.as_ref(), state, now)
    }

    /// The subscription item after `change`, if the event is newer than what is recorded
    /// (older news changes nothing).
    fn next_subscription(
        &self,
        event: &PaymentEvent,
        change: &SubscriptionState,
        state: &State,
        now: OffsetDateTime,
    ) -> Option<(SubItem, Option<u64>)> {
        let user = state.user?;
        let rank = status_rank(&change.status);
        let existing = state.subscription.as_ref();
        if let Some(current) = existing {
            let newer = event.occurred_at_ms > current.status_at_ms
                || (event.occurred_at_ms == current.status_at_ms && rank >= current.status_rank);
            if !newer {
                tracing::info!(event_id = %event.id, "an older subscription status: not applied");
                return None;
            }
        }
        let item = SubItem {
            pk: keys::user_pk(user),
            sk: sub_sk(event.provider, &change.subscription_id),
            provider: event.provider,
            subscription_id: change.subscription_id.clone(),
            customer_id: change
                .payer
                .customer_id
                .clone()
                .or_else(|| existing.and_then(|s| s.customer_id.clone())),
            product_id: change
                .product_id
                .clone()
                .or_else(|| existing.and_then(|s| s.product_id.clone())),
            status: change.status.clone(),
            current_period_end: change
                .current_period_end
                .or_else(|| existing.and_then(|s| s.current_period_end)),
            cancel_at_period_end: change.cancel_at_period_end,
            status_at_ms: event.occurred_at_ms,
            status_rank: rank,
            version: existing.map_or(0, |s| s.version + 1),
            updated_at: rfc3339(now),
        };
        Some((item, existing.map(|s| s.version)))
    }

    /// The profile update of a subscription flow: the balance (with its ledger row) and
    /// the `subscription` map, in one update of the one item; plus the subscription item.
    #[allow(clippy::too_many_arguments)]
    fn push_profile(
        &self,
        tx: &mut Tx,
        user: UserId,
        delta: i64,
        ledger: Option<(LedgerReason, &str)>,
        next: Option<&(SubItem, Option<u64>)>,
        state: &State,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut sets = Vec::new();
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut condition = String::from("attribute_exists(pk)");
        if delta != 0 {
            sets.push("credits = credits + :d".to_string());
            values.insert(":d".to_string(), number(delta));
        }
        if let Some((item, expected_version)) = next {
            self.push_versioned(tx, to_item(item), *expected_version, "subscription");
            let key = format!("{}#{}", item.provider, item.subscription_id);
            // The profile shows one subscription: another one's news replaces it only if
            // that one is no longer active or the news is an active subscription.
            let shows = state.shown.key.is_none()
                || state.shown.key.as_deref() == Some(key.as_str())
                || !state.shown.active
                || crate::domain::payment::is_active_status(&item.status);
            if let (true, Some(summary)) = (shows, summary_of(item, now)) {
                sets.push("#sub = :sub, #subkey = :subkey".into());
                names.insert("#sub".to_string(), "subscription".to_string());
                names.insert("#subkey".to_string(), "subscription_key".to_string());
                values.insert(
                    ":sub".to_string(),
                    serde_dynamo::to_attribute_value(&summary)
                        .expect("a subscription summary always serializes"),
                );
                values.insert(":subkey".to_string(), AttributeValue::S(key));
                names.insert("#shown".to_string(), "subscription_key".to_string());
                match &state.shown.key {
                    Some(shown) => {
                        condition.push_str(" AND #shown = :shown");
                        values.insert(":shown".to_string(), AttributeValue::S(shown.clone()));
                    }
                    None => condition.push_str(" AND attribute_not_exists(#shown)"),
                }
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(keys::user_pk(user)))
            .key(SK, AttributeValue::S(PROFILE.into()))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("table, key and expression are set");
        tx.push(
            TransactWriteItem::builder().update(update).build(),
            Role::Named("profile"),
        );
        if let Some((reason, reference)) = ledger {
            self.push_ledger_row(tx, user, delta, reason, reference, now);
        }
        Ok(())
    }

    /// Records who the customer is: the mapping is created, or left alone when it already
    /// names this user; one naming another user is kept (and logged).
    fn plan_customer(
        &self,
        tx: &mut Tx,
        provider: Provider,
        payer: &Payer,
        user: UserId,
        state: &State,
        now: OffsetDateTime,
    ) {
        let Some(customer) = payer.customer_id.as_deref() else {
            return;
        };
        match state.mapped_to {
            Some(mapped) if mapped == user => {}
            Some(_) => {
                tracing::warn!(%provider, "a customer already mapped to another user: mapping kept");
            }
            None => {
                let mapping = CustomerItem {
                    pk: customer_pk(provider, customer),
                    sk: "CUSTOMER".into(),
                    provider,
                    customer_id: customer.to_string(),
                    user_id: user,
                    created_at: rfc3339(now),
                };
                // An update, not a put: a purchase planned without a read may find the
                // mapping already there for this user, and its creation time is kept.
                let mut item = to_item(&mapping);
                let mut field = |name: &str| item.remove(name).expect("the mapping has it");
                let update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(item_key(mapping.pk.clone(), &mapping.sk)))
                    .update_expression("SET #p = :p, #c = :c, #u = :u, #t = if_not_exists(#t, :t)")
                    .condition_expression("attribute_not_exists(pk) OR #u = :u")
                    .expression_attribute_names("#p", "provider")
                    .expression_attribute_names("#c", "customer_id")
                    .expression_attribute_names("#u", "user_id")
                    .expression_attribute_names("#t", "created_at")
                    .expression_attribute_values(":p", field("provider"))
                    .expression_attribute_values(":c", field("customer_id"))
                    .expression_attribute_values(":u", field("user_id"))
                    .expression_attribute_values(":t", field("created_at"))
                    .build()
                    .expect("table, key and expression are set");
                tx.push(
                    TransactWriteItem::builder().update(update).build(),
                    Role::Named("customer"),
                );
                let reverse = UserCustomerItem {
                    pk: keys::user_pk(user),
                    sk: user_customer_sk(provider),
                    customer_id: customer.to_string(),
                };
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(to_item(&reverse)))
                    .build()
                    .expect("table and item are set");
                tx.push(
                    TransactWriteItem::builder().put(put).build(),
                    Role::Named("user customer"),
                );
            }
        }
    }

    fn plan_refund(
        &self,
        p: &mut Planned,
        provider: Provider,
        refund: &Refund,
        state: &State,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut order = state.order.clone().unwrap_or_else(|| {
            OrderItem::new(provider, &refund.payment_id, OrderState::Tombstone, now)
        });
        let refunded = match &refund.refunded {
            Refunded::Cumulative { total } => order.refunded.max(*total),
            Refunded::Single { refund_id, amount } => {
                if order.refund_ids.contains(refund_id) {
                    order.refunded
                } else {
                    order.refund_ids.push(refund_id.clone());
                    order.refunded + amount
                }
            }
        };
        order.refunded = refunded;
        if order.state == OrderState::Purchased {
            let target = share(
                order.credits,
                refunded,
                refund.payment_amount.or(order.amount),
            );
            let take = (target - order.refund_clawed).min(order.unclawed());
            if take > 0 {
                let user = order.user_id.ok_or_else(|| {
                    StoreError::Internal(anyhow::anyhow!("a purchase without its user"))
                })?;
                let change = BalanceChange::claw_back(
                    user,
                    Credits::new(take).map_err(|e| StoreError::Internal(e.into()))?,
                    &refund.payment_id,
                );
                self.push_change(&mut p.tx, &change, None, false, now);
                p.tally.clawed_back += take;
                order.refund_clawed += take;
            }
        } else {
            tracing::warn!(payment_id = %refund.payment_id, "a refund before its purchase: tombstone kept");
        }
        self.push_order(&mut p.tx, order, state.order.as_ref(), now);
        Ok(())
    }

    fn plan_dispute(
        &self,
        p: &mut Planned,
        provider: Provider,
        dispute: &Dispute,
        state: &State,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut order = state.order.clone().unwrap_or_else(|| {
            OrderItem::new(provider, &dispute.payment_id, OrderState::Tombstone, now)
        });
        if order.disputes.contains_key(&dispute.dispute_id) {
            return Ok(());
        }
        let mut clawed = 0;
        if order.state == OrderState::Purchased {
            let take = share(
                order.credits,
                dispute.amount,
                dispute.payment_amount.or(order.amount),
            )
            .min(order.unclawed());
            if take > 0 {
                let user = order.user_id.ok_or_else(|| {
                    StoreError::Internal(anyhow::anyhow!("a purchase without its user"))
                })?;
                let change = BalanceChange::claw_back(
                    user,
                    Credits::new(take).map_err(|e| StoreError::Internal(e.into()))?,
                    &dispute.payment_id,
                );
                self.push_change(&mut p.tx, &change, None, false, now);
                p.tally.clawed_back += take;
                clawed = take;
            }
        }
        order.disputes.insert(
            dispute.dispute_id.clone(),
            DisputeRecord {
                amount: dispute.amount,
                clawed,
                status: "open".into(),
            },
        );
        self.push_order(&mut p.tx, order, state.order.as_ref(), now);
        Ok(())
    }

    fn plan_dispute_closed(
        &self,
        p: &mut Planned,
        provider: Provider,
        closed: &DisputeClosed,
        state: &State,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let status = if closed.won { "won" } else { "lost" };
        let Some(existing) = &state.order else {
            if closed.won {
                // Nothing was taken back; the merchant kept the payment.
                return Ok(());
            }
            let mut order =
                OrderItem::new(provider, &closed.payment_id, OrderState::Tombstone, now);
            order.disputes.insert(
                closed.dispute_id.clone(),
                DisputeRecord {
                    amount: 0,
                    clawed: 0,
                    status: status.into(),
                },
            );
            self.push_order(&mut p.tx, order, None, now);
            return Ok(());
        };
        let mut order = existing.clone();
        let record = order
            .disputes
            .entry(closed.dispute_id.clone())
            .or_insert_with(|| DisputeRecord {
                amount: 0,
                clawed: 0,
                status: "open".into(),
            });
        if record.status != "open" {
            return Ok(());
        }
        if closed.won && record.clawed > 0 {
            let user = order.user_id.ok_or_else(|| {
                StoreError::Internal(anyhow::anyhow!("a purchase without its user"))
            })?;
            let change = BalanceChange::grant(
                user,
                Credits::new(record.clawed).map_err(|e| StoreError::Internal(e.into()))?,
                LedgerReason::Purchase,
                &closed.payment_id,
            );
            self.push_change(&mut p.tx, &change, None, false, now);
            p.tally
                .granted
                .push((LedgerReason::Purchase, record.clawed));
            record.clawed = 0;
        }
        record.status = status.into();
        self.push_order(&mut p.tx, order, Some(existing), now);
        Ok(())
    }

    /// Writes the order, conditioned on it being as read (absent, or that version).
    fn push_order(
        &self,
        tx: &mut Tx,
        mut order: OrderItem,
        read: Option<&OrderItem>,
        now: OffsetDateTime,
    ) {
        order.version = read.map_or(0, |o| o.version + 1);
        order.updated_at = rfc3339(now);
        self.push_versioned(tx, to_item(&order), read.map(|o| o.version), "order");
    }

    /// A put conditioned on the item being absent (`expected` none) or at that version.
    fn push_versioned(&self, tx: &mut Tx, item: Item, expected: Option<u64>, name: &'static str) {
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(version) => put
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", number(version as i64)),
        };
        tx.push(
            TransactWriteItem::builder()
                .put(put.build().expect("table and item are set"))
                .build(),
            Role::Named(name),
        );
    }
}

fn product_of(id: &str) -> Result<&'static Product, StoreError> {
    products::product(id)
        .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("unknown product {id:?} in an event")))
}

/// What the profile shows of a subscription (nothing until its product is known).
fn summary_of(item: &SubItem, now: OffsetDateTime) -> Option<SubscriptionSummary> {
    let product_id = item.product_id.clone()?;
    let period_end = item
        .current_period_end
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(now);
    Some(SubscriptionSummary {
        product_id,
        provider: item.provider,
        status: item.status.clone(),
        current_period_end: period_end,
        cancel_at_period_end: item.cancel_at_period_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_rounded_down_and_bounded_by_the_whole() {
        assert_eq!(share(100, 250, Some(1000)), 25);
        assert_eq!(share(100, 500, Some(999)), 50);
        assert_eq!(share(100, 2000, Some(1000)), 100);
        assert_eq!(share(100, 0, Some(1000)), 0);
        assert_eq!(share(100, 1, None), 100);
    }

    #[test]
    fn at_the_same_time_a_later_stage_of_a_subscription_wins() {
        assert!(status_rank("incomplete") < status_rank("active"));
        assert!(status_rank("active") < status_rank("canceled"));
        assert!(status_rank("past_due") < status_rank("active"));
    }
}
