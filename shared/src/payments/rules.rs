//! The payment rules, as pure functions: given the state the store read for one event and
//! the event, what it does — credits granted or taken back, the purchase's bookkeeping,
//! a period granted, a subscription's status, the customer mapping — or why it does
//! nothing (a duplicate, an event for nobody we know, a deleted account).
//!
//! The DynamoDB adapter (`aws::dynamo::payments`) reads [`State`] for the keys
//! [`wanted`] names, calls [`decide`] and writes the [`Effects`] in one transaction, each
//! write conditioned on what was read; so a rule is tested here in milliseconds and the
//! emulator tests check the conditions and races.
//!
//! What makes any order of delivery end the same: a payment's claw-back is a function of
//! everything known about it ([`Order::claw_target`]: the refunded share plus the shares of
//! the disputes that took funds, never more than was granted), and each event moves the
//! balance by the difference to what was taken before. A refund or dispute seen before its
//! purchase is remembered on the order (a tombstone), so the purchase, when it comes,
//! grants and takes back in the same write.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    Dispute, DisputeStage, Effect, InvoicePayment, PaidBy, Payer, PaymentEvent, PeriodPaid,
    Provider, Purchase, Refund, Refunded, SubscriptionState,
};
use crate::domain::UserId;
use crate::domain::ledger::LedgerReason;
use crate::domain::payment::{SubscriptionSummary, is_active_status};
use crate::domain::products::{self, ProductKind};

/// What a payment bought, once known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub user_id: UserId,
    pub credits: i64,
    /// The grant's ledger reference: the payment for a pack, `<subscription>#<period
    /// start>` for a period.
    pub reference: String,
    pub product_id: String,
    /// When its credits expire (unix seconds); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// One dispute of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeRecord {
    pub amount: i64,
    pub stage: DisputeStage,
}

/// One payment, keyed by the id its refunds and disputes carry (Stripe: the
/// PaymentIntent; Creem: the order, or the transaction of a subscription payment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub provider: Provider,
    pub payment_id: String,
    /// What it bought; `None` while only refunds or disputes were seen (a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// Paid, in minor units: the whole that refunds and disputes are shares of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The largest cumulative refund total seen (Stripe's `amount_refunded`).
    #[serde(default)]
    pub refunded_total: i64,
    /// Single refunds by id (Creem's `refund.created`).
    #[serde(default)]
    pub refunds: BTreeMap<String, i64>,
    #[serde(default)]
    pub disputes: BTreeMap<String, DisputeRecord>,
    /// Credits taken back so far, net of what won disputes gave back.
    #[serde(default)]
    pub clawed: i64,
}

impl Order {
    pub fn new(provider: Provider, payment_id: &str) -> Self {
        Self {
            provider,
            payment_id: payment_id.to_string(),
            grant: None,
            amount: None,
            currency: None,
            refunded_total: 0,
            refunds: BTreeMap::new(),
            disputes: BTreeMap::new(),
            clawed: 0,
        }
    }

    /// Refunded so far, in minor units.
    pub fn refunded(&self) -> i64 {
        self.refunded_total.max(self.refunds.values().sum())
    }

    /// The credits that should be taken back, given everything known about the payment:
    /// the refunded share plus the share of each dispute that took funds, never more than
    /// the purchase granted.
    pub fn claw_target(&self) -> i64 {
        let Some(grant) = &self.grant else { return 0 };
        let refunded = share(grant.credits, self.refunded(), self.amount);
        let disputed: i64 = self
            .disputes
            .values()
            .filter(|d| d.stage.takes_funds())
            .map(|d| share(grant.credits, d.amount, self.amount))
            .sum();
        (refunded + disputed).min(grant.credits)
    }

    /// Who the payment's credits went to.
    pub fn owner(&self) -> Option<UserId> {
        self.grant.as_ref().map(|g| g.user_id)
    }
}

/// A subscription period granted (`SUBGRANT`): each period once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodGrant {
    pub user_id: UserId,
    pub subscription_id: String,
    pub period_start: i64,
    pub period_end: i64,
    pub credits: i64,
    pub product_id: String,
    pub event_id: String,
}

impl PeriodGrant {
    fn grant(&self) -> Grant {
        Grant {
            user_id: self.user_id,
            credits: self.credits,
            reference: period_reference(&self.subscription_id, self.period_start),
            product_id: self.product_id.clone(),
            expires_at: products::product(&self.product_id).and_then(|p| p.expiry(self.period_end)),
        }
    }
}

/// The ledger reference of a period's grant.
pub fn period_reference(subscription_id: &str, period_start: i64) -> String {
    format!("{subscription_id}#{period_start}")
}

/// An invoice's two halves, whichever arrives first (Stripe): the period it granted
/// (`invoice.paid`) and the payment that paid it (`invoice_payment.paid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLink {
    pub invoice_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

impl InvoiceLink {
    fn new(invoice_id: &str) -> Self {
        Self {
            invoice_id: invoice_id.to_string(),
            payment_id: None,
            amount: None,
            grant: None,
        }
    }
}

/// A user's subscription as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub provider: Provider,
    pub subscription_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    pub status: String,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// The provider's time of the event that set the status, in milliseconds.
    pub status_at_ms: i64,
    /// Breaks ties between events of the same time (see [`status_rank`]).
    pub status_rank: u8,
}

impl Subscription {
    /// The key the profile names the subscription it shows by.
    pub fn key(&self) -> String {
        format!("{}#{}", self.provider, self.subscription_id)
    }

    /// What the profile shows of it (nothing until its product is known).
    pub fn summary(&self, now_unix: i64) -> Option<SubscriptionSummary> {
        let product_id = self.product_id.clone()?;
        let period_end = self.current_period_end.unwrap_or(now_unix);
        Some(SubscriptionSummary {
            product_id,
            provider: self.provider,
            status: self.status.clone(),
            current_period_end: time::OffsetDateTime::from_unix_timestamp(period_end)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            cancel_at_period_end: self.cancel_at_period_end,
        })
    }
}

/// Same-time events: a later stage of a subscription's life wins (an `incomplete`
/// subscription becomes `active` in the second it is created; an end is final).
pub fn status_rank(status: &str) -> u8 {
    match status {
        "incomplete" => 0,
        "active" => 2,
        "canceled" | "expired" | "incomplete_expired" => 3,
        _ => 1,
    }
}

/// `part` of `whole`, as a share of `credits`, rounded down; with no `whole` known, all.
pub fn share(credits: i64, part: i64, whole: Option<i64>) -> i64 {
    match whole {
        Some(whole) if whole > 0 => {
            let part = part.clamp(0, whole);
            (i128::from(credits) * i128::from(part) / i128::from(whole)) as i64
        }
        _ if part > 0 => credits,
        _ => 0,
    }
}

/// The account an event's payer resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub user_id: UserId,
    pub deleted: bool,
}

/// What the profile shows now: which subscription, and whether it is active.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    pub key: Option<String>,
    pub active: bool,
}

/// What the store read for one event (absent items are `None`).
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The event was applied before.
    pub recorded: bool,
    /// The payer, for events that name one (metadata first, then the customer mapping).
    pub account: Option<Account>,
    /// The order of the payment the event names (see [`wanted`] and [`linked_payment`]).
    pub order: Option<Order>,
    pub period: Option<PeriodGrant>,
    pub invoice: Option<InvoiceLink>,
    pub subscription: Option<Subscription>,
    pub shown: Shown,
    /// Who the event's customer is mapped to, if anyone.
    pub mapped_to: Option<UserId>,
    /// Users known to be deleted: read, or learned from a write their tombstone refused.
    pub deleted: BTreeSet<UserId>,
}

impl State {
    fn is_deleted(&self, user: UserId) -> bool {
        self.deleted.contains(&user) || self.account.is_some_and(|a| a.user_id == user && a.deleted)
    }
}

/// The keys an event's state is read from; the adapter reads them in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub payer: Option<&'a Payer>,
    /// The order (payment id) read directly.
    pub payment: Option<&'a str>,
    /// The period grant: (subscription, period start).
    pub period: Option<(&'a str, i64)>,
    pub invoice: Option<&'a str>,
    pub subscription: Option<&'a str>,
}

/// What to read for `event`. A Stripe period's payment is known only once its invoice
/// link is read: [`linked_payment`] names that second read.
pub fn wanted(event: &PaymentEvent) -> Wanted<'_> {
    let mut wanted = Wanted::default();
    match &event.effect {
        Effect::Purchase(p) => {
            wanted.payer = Some(&p.payer);
            wanted.payment = Some(&p.payment_id);
        }
        Effect::SubscriptionCheckout(payer) => wanted.payer = Some(payer),
        Effect::PeriodPaid(p) => {
            wanted.payer = Some(&p.payer);
            wanted.period = Some((&p.subscription_id, p.period_start));
            wanted.subscription = Some(&p.subscription_id);
            match &p.paid_by {
                PaidBy::Payment { payment_id } => wanted.payment = Some(payment_id),
                PaidBy::Invoice { invoice_id } => wanted.invoice = Some(invoice_id),
                PaidBy::Unknown => {}
            }
        }
        Effect::InvoicePayment(i) => {
            wanted.invoice = Some(&i.invoice_id);
            wanted.payment = Some(&i.payment_id);
        }
        Effect::SubscriptionChanged(s) => {
            wanted.payer = Some(&s.payer);
            wanted.subscription = Some(&s.subscription_id);
        }
        Effect::Refund(r) => wanted.payment = Some(&r.payment_id),
        Effect::Dispute(d) => wanted.payment = Some(&d.payment_id),
        Effect::Ignored { .. } => {}
    }
    wanted
}

/// The payment a period's invoice link names, when [`wanted`] could not name it before
/// the link was read.
pub fn linked_payment<'a>(
    event: &PaymentEvent,
    invoice: Option<&'a InvoiceLink>,
) -> Option<&'a str> {
    match &event.effect {
        Effect::PeriodPaid(PeriodPaid {
            paid_by: PaidBy::Invoice { .. },
            ..
        }) => invoice.and_then(|l| l.payment_id.as_deref()),
        _ => None,
    }
}

/// One change of a balance, with its ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditChange {
    pub user_id: UserId,
    /// Positive for grants, negative for claw-backs; never zero.
    pub delta: i64,
    pub reason: LedgerReason,
    pub reference: String,
    /// A grant's expiry (unix seconds); `None`: never.
    pub expires_at: Option<i64>,
    /// For a claw-back or a restore: the reference of the grant it acts on.
    pub source: Option<String>,
}

/// Credits given for a payment: a pack, a paid period, or what a won dispute gives back.
/// Every grant of the payment rules goes through here (where a grant's expiry belongs).
pub fn grant(user_id: UserId, credits: i64, reason: LedgerReason, reference: &str) -> CreditChange {
    debug_assert!(credits > 0);
    CreditChange {
        user_id,
        delta: credits,
        reason,
        reference: reference.to_string(),
        expires_at: None,
        source: None,
    }
}

/// Credits taken back for a refunded or disputed payment, whatever the balance.
fn claw_back(user_id: UserId, credits: i64, reference: &str) -> CreditChange {
    debug_assert!(credits > 0);
    CreditChange {
        user_id,
        delta: -credits,
        reason: LedgerReason::Clawback,
        reference: reference.to_string(),
        expires_at: None,
        source: None,
    }
}

/// The profile's current subscription, replaced: `expected` is what the profile must
/// still show (the write's condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Show {
    pub key: String,
    pub summary: SubscriptionSummary,
    pub expected: Option<String>,
}

/// The customer mapping to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerLink {
    pub customer_id: String,
    pub user_id: UserId,
}

/// A sale, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sale {
    Purchase(&'static str),
    Renewal(&'static str),
}

/// What an event does, to be written in one transaction with its event record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Kept on the event record.
    pub user_id: Option<UserId>,
    pub credits: Vec<CreditChange>,
    /// The order after the event (written conditioned on the one read).
    pub order: Option<Order>,
    /// A period granted now (created: each period once).
    pub period: Option<PeriodGrant>,
    pub invoice: Option<InvoiceLink>,
    pub subscription: Option<Subscription>,
    pub show: Option<Show>,
    pub customer: Option<CustomerLink>,
    pub sale: Option<Sale>,
}

/// What to do with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Applied before: nothing changes.
    Duplicate,
    /// Nothing to do; nothing is written.
    Ignore(String),
    /// No user could be found for it: stored for an operator.
    Unattributed(String),
    /// Money moved for a deleted account: no balance changes; the event is recorded for
    /// an operator, and a subscription it shows still billing is to be canceled.
    Held {
        user_id: UserId,
        reason: String,
        cancel: Option<String>,
    },
    /// Write these effects with the event record.
    Apply(Box<Effects>),
    /// The event contradicts the catalog (a bug of ours, not the provider's).
    Invalid(String),
}

/// What `event` does, given `state`. `now_unix` dates a shown subscription whose period
/// end is not known yet.
pub fn decide(event: &PaymentEvent, state: &State, now_unix: i64) -> Decision {
    if state.recorded {
        return Decision::Duplicate;
    }
    let provider = event.provider;
    match &event.effect {
        Effect::Ignored { why } => Decision::Ignore(why.clone()),
        Effect::Purchase(purchase) => decide_purchase(provider, purchase, state),
        Effect::SubscriptionCheckout(payer) => match state.account {
            None => Decision::Ignore(
                "a subscription checkout without a known user grants nothing".into(),
            ),
            Some(account) if account.deleted => {
                Decision::Ignore("a subscription checkout of a deleted account".into())
            }
            Some(account) => Decision::Apply(Box::new(Effects {
                user_id: Some(account.user_id),
                customer: customer_link(payer, account.user_id, state),
                ..Effects::default()
            })),
        },
        Effect::PeriodPaid(period) => decide_period(event, period, state, now_unix),
        Effect::InvoicePayment(payment) => decide_invoice_payment(provider, payment, state),
        Effect::SubscriptionChanged(change) => {
            let Some(account) = state.account else {
                return Decision::Unattributed("no user for the subscription".into());
            };
            if account.deleted {
                return if is_active_status(&change.status) {
                    Decision::Held {
                        user_id: account.user_id,
                        reason: format!("a deleted account's subscription is {}", change.status),
                        cancel: Some(change.subscription_id.clone()),
                    }
                } else {
                    Decision::Ignore("a deleted account's subscription ended".into())
                };
            }
            let mut effects = Effects {
                user_id: Some(account.user_id),
                customer: customer_link(&change.payer, account.user_id, state),
                ..Effects::default()
            };
            subscription_news(event, change, state, now_unix, &mut effects);
            Decision::Apply(Box::new(effects))
        }
        Effect::Refund(refund) => decide_refund(provider, refund, state),
        Effect::Dispute(dispute) => decide_dispute(provider, dispute, state),
    }
}

fn decide_purchase(provider: Provider, purchase: &Purchase, state: &State) -> Decision {
    let Some(account) = state.account else {
        return Decision::Unattributed("no user for the purchase".into());
    };
    if account.deleted {
        return Decision::Held {
            user_id: account.user_id,
            reason: "a purchase for a deleted account".into(),
            cancel: None,
        };
    }
    let Some(product) =
        products::product(&purchase.product_id).filter(|p| p.kind == ProductKind::OneTime)
    else {
        return Decision::Invalid(format!(
            "{:?} is not a one-time product",
            purchase.product_id
        ));
    };
    let mut effects = Effects {
        user_id: Some(account.user_id),
        customer: customer_link(&purchase.payer, account.user_id, state),
        ..Effects::default()
    };
    let mut order = state
        .order
        .clone()
        .unwrap_or_else(|| Order::new(provider, &purchase.payment_id));
    // Granted already by another event of the same payment: only the record is written.
    if order.grant.is_none() {
        let credits = product.credits().get();
        order.grant = Some(Grant {
            user_id: account.user_id,
            credits,
            reference: purchase.payment_id.clone(),
            product_id: product.id.to_string(),
            expires_at: None,
        });
        order.amount = purchase.amount.or(order.amount);
        order.currency = purchase.currency.clone().or(order.currency);
        effects.credits.push(grant(
            account.user_id,
            credits,
            LedgerReason::Purchase,
            &purchase.payment_id,
        ));
        effects.sale = Some(Sale::Purchase(product.id));
        settle(&mut order, &mut effects.credits);
        effects.order = Some(order);
    }
    Decision::Apply(Box::new(effects))
}

fn decide_period(
    event: &PaymentEvent,
    period: &PeriodPaid,
    state: &State,
    now_unix: i64,
) -> Decision {
    let Some(account) = state.account else {
        return Decision::Unattributed("no user for the subscription payment".into());
    };
    if account.deleted {
        return Decision::Held {
            user_id: account.user_id,
            reason: "a renewal for a deleted account".into(),
            cancel: Some(period.subscription_id.clone()),
        };
    }
    let Some(product) =
        products::product(&period.product_id).filter(|p| p.kind == ProductKind::Subscription)
    else {
        return Decision::Invalid(format!("{:?} is not a subscription", period.product_id));
    };
    let mut effects = Effects {
        user_id: Some(account.user_id),
        customer: customer_link(&period.payer, account.user_id, state),
        ..Effects::default()
    };
    let granted = match &state.period {
        Some(granted) => granted.clone(),
        None => {
            let granted = PeriodGrant {
                user_id: account.user_id,
                subscription_id: period.subscription_id.clone(),
                period_start: period.period_start,
                period_end: period.period_end,
                credits: product.credits().get(),
                product_id: product.id.to_string(),
                event_id: event.id.clone(),
            };
            let reference = period_reference(&period.subscription_id, period.period_start);
            effects.credits.push(CreditChange {
                expires_at: product.expiry(granted.period_end),
                ..grant(
                    account.user_id,
                    granted.credits,
                    LedgerReason::Subscription,
                    &reference,
                )
            });
            effects.sale = Some(Sale::Renewal(product.id));
            effects.period = Some(granted.clone());
            granted
        }
    };
    let payment_id = match &period.paid_by {
        PaidBy::Payment { payment_id } => Some(payment_id.as_str()),
        PaidBy::Invoice { invoice_id } => {
            let mut link = state
                .invoice
                .clone()
                .unwrap_or_else(|| InvoiceLink::new(invoice_id));
            if link.grant.is_none() {
                link.grant = Some(granted.grant());
                effects.invoice = Some(link);
            }
            state.invoice.as_ref().and_then(|l| l.payment_id.as_deref())
        }
        PaidBy::Unknown => None,
    };
    if let Some(payment_id) = payment_id {
        let amount = state
            .invoice
            .as_ref()
            .and_then(|l| l.amount)
            .or(period.amount);
        link_order(
            state,
            event.provider,
            payment_id,
            &granted.grant(),
            amount,
            &mut effects,
        );
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
    subscription_news(event, &change, state, now_unix, &mut effects);
    Decision::Apply(Box::new(effects))
}

fn decide_invoice_payment(provider: Provider, payment: &InvoicePayment, state: &State) -> Decision {
    let mut link = state
        .invoice
        .clone()
        .unwrap_or_else(|| InvoiceLink::new(&payment.invoice_id));
    match &link.payment_id {
        None => {
            link.payment_id = Some(payment.payment_id.clone());
            link.amount = payment.amount;
        }
        Some(known) if *known == payment.payment_id => {}
        Some(_) => {
            // Subscription invoices are paid by one PaymentIntent; several partial
            // payments of one invoice are not something we sell.
            return Decision::Ignore("a second payment of one invoice".into());
        }
    }
    let mut effects = Effects {
        user_id: link.grant.as_ref().map(|g| g.user_id),
        ..Effects::default()
    };
    if let Some(granted) = link.grant.clone() {
        link_order(
            state,
            provider,
            &payment.payment_id,
            &granted,
            payment.amount,
            &mut effects,
        );
    }
    if state.invoice.as_ref() != Some(&link) {
        effects.invoice = Some(link);
    }
    held_if_deleted(state, effects, "a claw-back for a deleted account")
}

/// Ties a period's grant to the payment that paid it, taking back at once what refunds or
/// disputes seen before (a tombstone) say.
fn link_order(
    state: &State,
    provider: Provider,
    payment_id: &str,
    granted: &Grant,
    amount: Option<i64>,
    effects: &mut Effects,
) {
    let mut order = state
        .order
        .clone()
        .filter(|o| o.payment_id == payment_id)
        .unwrap_or_else(|| Order::new(provider, payment_id));
    if order.grant.is_some() {
        return;
    }
    order.grant = Some(granted.clone());
    order.amount = order.amount.or(amount);
    settle(&mut order, &mut effects.credits);
    effects.order = Some(order);
}

fn decide_refund(provider: Provider, refund: &Refund, state: &State) -> Decision {
    let mut order = state
        .order
        .clone()
        .unwrap_or_else(|| Order::new(provider, &refund.payment_id));
    match &refund.refunded {
        Refunded::Cumulative { total } => order.refunded_total = order.refunded_total.max(*total),
        Refunded::Single { refund_id, amount } => {
            order.refunds.entry(refund_id.clone()).or_insert(*amount);
        }
    }
    order.amount = order.amount.or(refund.payment_amount);
    let mut effects = Effects {
        user_id: order.owner(),
        ..Effects::default()
    };
    settle(&mut order, &mut effects.credits);
    effects.order = Some(order);
    held_if_deleted(state, effects, "a refund for a deleted account")
}

fn decide_dispute(provider: Provider, dispute: &Dispute, state: &State) -> Decision {
    let mut order = state
        .order
        .clone()
        .unwrap_or_else(|| Order::new(provider, &dispute.payment_id));
    let record = order
        .disputes
        .entry(dispute.dispute_id.clone())
        .or_insert(DisputeRecord {
            amount: dispute.amount,
            stage: dispute.stage,
        });
    if dispute.stage.rank() > record.stage.rank() {
        record.stage = dispute.stage;
    }
    if record.amount <= 0 {
        record.amount = dispute.amount;
    }
    order.amount = order.amount.or(dispute.payment_amount);
    let mut effects = Effects {
        user_id: order.owner(),
        ..Effects::default()
    };
    settle(&mut order, &mut effects.credits);
    effects.order = Some(order);
    held_if_deleted(state, effects, "a dispute for a deleted account")
}

/// Moves the balance by the difference between what the order should have taken back and
/// what it has: a claw-back, or (a won dispute) credits given back.
fn settle(order: &mut Order, credits: &mut Vec<CreditChange>) {
    let target = order.claw_target();
    let delta = target - order.clawed;
    if let Some(granted) = &order.grant {
        let owner = granted.user_id;
        // Both act on the grant they take back or restore; a restore keeps its expiry.
        let source = Some(granted.reference.clone());
        if delta > 0 {
            credits.push(CreditChange {
                source,
                ..claw_back(owner, delta, &order.payment_id)
            });
        } else if delta < 0 {
            credits.push(CreditChange {
                source,
                expires_at: granted.expires_at,
                ..grant(owner, -delta, LedgerReason::Purchase, &order.payment_id)
            });
        }
        order.clawed = target;
    }
}

/// Effects that would move a deleted account's balance are held instead.
fn held_if_deleted(state: &State, effects: Effects, reason: &str) -> Decision {
    match effects.credits.iter().find(|c| state.is_deleted(c.user_id)) {
        Some(change) => Decision::Held {
            user_id: change.user_id,
            reason: reason.to_string(),
            cancel: None,
        },
        None => Decision::Apply(Box::new(effects)),
    }
}

/// The mapping is created when absent; one naming this user is left alone; one naming
/// another user is kept (the first purchase decided).
fn customer_link(payer: &Payer, user: UserId, state: &State) -> Option<CustomerLink> {
    let customer = payer.customer_id.as_deref()?;
    match state.mapped_to {
        None => Some(CustomerLink {
            customer_id: customer.to_string(),
            user_id: user,
        }),
        Some(mapped) if mapped == user => None,
        Some(_) => {
            tracing::warn!("a customer already mapped to another user: mapping kept");
            None
        }
    }
}

/// The subscription after `change`, if the event is newer than what is recorded (older
/// news changes nothing), and what the profile then shows.
fn subscription_news(
    event: &PaymentEvent,
    change: &SubscriptionState,
    state: &State,
    now_unix: i64,
    effects: &mut Effects,
) {
    let rank = status_rank(&change.status);
    let existing = state.subscription.as_ref();
    if let Some(current) = existing {
        let newer = event.occurred_at_ms > current.status_at_ms
            || (event.occurred_at_ms == current.status_at_ms && rank >= current.status_rank);
        if !newer {
            tracing::info!(event_id = %event.id, "an older subscription status: not applied");
            return;
        }
    }
    let next = Subscription {
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
    };
    // The profile shows one subscription: another one's news replaces it only if that
    // one is no longer active or the news is of an active subscription.
    let key = next.key();
    let shows = state.shown.key.is_none()
        || state.shown.key.as_deref() == Some(key.as_str())
        || !state.shown.active
        || is_active_status(&next.status);
    if shows && let Some(summary) = next.summary(now_unix) {
        effects.show = Some(Show {
            key,
            summary,
            expected: state.shown.key.clone(),
        });
    }
    effects.subscription = Some(next);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(effect: Effect) -> PaymentEvent {
        PaymentEvent {
            provider: Provider::Stripe,
            id: "evt_1".into(),
            event_type: "test".into(),
            occurred_at_ms: 1_000,
            effect,
        }
    }

    fn granted(credits: i64, amount: i64) -> Order {
        Order {
            grant: Some(Grant {
                user_id: UserId::new(),
                credits,
                reference: "pi_1".into(),
                product_id: "pro_yearly".into(),
                expires_at: None,
            }),
            amount: Some(amount),
            ..Order::new(Provider::Stripe, "pi_1")
        }
    }

    fn dispute(stage: DisputeStage) -> Effect {
        Effect::Dispute(Dispute {
            payment_id: "pi_1".into(),
            dispute_id: "dp_1".into(),
            amount: 29_999,
            payment_amount: None,
            stage,
        })
    }

    fn deltas(decision: &Decision) -> Vec<i64> {
        match decision {
            Decision::Apply(effects) => effects.credits.iter().map(|c| c.delta).collect(),
            other => panic!("{other:?}"),
        }
    }

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

    #[test]
    fn an_inquiry_takes_nothing_and_a_chargeback_of_a_yearly_period_takes_all_of_it() {
        let state = State {
            order: Some(granted(7200, 29_999)),
            ..State::default()
        };

        let inquiry = decide(&event(dispute(DisputeStage::Inquiry)), &state, 0);
        let chargeback = decide(&event(dispute(DisputeStage::Chargeback)), &state, 0);

        assert_eq!(deltas(&inquiry), Vec::<i64>::new());
        assert_eq!(deltas(&chargeback), vec![-7200]);
    }

    #[test]
    fn a_won_dispute_gives_back_what_its_chargeback_took() {
        let mut order = granted(7200, 29_999);
        order.disputes.insert(
            "dp_1".into(),
            DisputeRecord {
                amount: 29_999,
                stage: DisputeStage::Chargeback,
            },
        );
        order.clawed = 7200;
        let state = State {
            order: Some(order),
            ..State::default()
        };

        let won = decide(&event(dispute(DisputeStage::Won)), &state, 0);

        assert_eq!(deltas(&won), vec![7200]);
    }

    #[test]
    fn a_closed_dispute_is_not_reopened_by_a_late_event_of_an_earlier_stage() {
        let mut order = granted(7200, 29_999);
        order.disputes.insert(
            "dp_1".into(),
            DisputeRecord {
                amount: 29_999,
                stage: DisputeStage::Won,
            },
        );
        let state = State {
            order: Some(order),
            ..State::default()
        };

        let late = decide(&event(dispute(DisputeStage::Chargeback)), &state, 0);

        assert_eq!(deltas(&late), Vec::<i64>::new());
    }

    #[test]
    fn refunds_and_disputes_together_never_take_back_more_than_was_granted() {
        let mut order = granted(100, 1000);
        order.refunded_total = 1000;
        order.clawed = 100;
        let state = State {
            order: Some(order),
            ..State::default()
        };

        let chargeback = decide(&event(dispute(DisputeStage::Chargeback)), &state, 0);

        assert_eq!(deltas(&chargeback), Vec::<i64>::new());
    }

    #[test]
    fn a_refund_of_a_deleted_accounts_payment_is_held_for_an_operator() {
        let order = granted(100, 1000);
        let owner = order.owner().unwrap();
        let state = State {
            order: Some(order),
            deleted: BTreeSet::from([owner]),
            ..State::default()
        };
        let refund = Effect::Refund(Refund {
            payment_id: "pi_1".into(),
            refunded: Refunded::Cumulative { total: 500 },
            payment_amount: Some(1000),
        });

        let decision = decide(&event(refund), &state, 0);

        assert!(matches!(decision, Decision::Held { user_id, .. } if user_id == owner));
    }
}
