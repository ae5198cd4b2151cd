//! The payment items as stored, and their keys (see DESIGN.md's data table).

use serde::{Deserialize, Serialize};

use crate::domain::UserId;
use crate::payments::Provider;
use crate::payments::rules::{InvoiceLink, Order, PeriodGrant, Subscription};

pub(super) fn event_pk(provider: Provider, id: &str) -> String {
    format!("EVENT#{provider}#{id}")
}
pub(super) const EVENT_SK: &str = "EVENT";

pub(super) fn order_pk(provider: Provider, payment: &str) -> String {
    format!("ORDER#{provider}#{payment}")
}
pub(super) const ORDER_SK: &str = "ORDER";

pub(super) fn grant_pk(provider: Provider, subscription: &str, period_start: i64) -> String {
    format!("SUBGRANT#{provider}#{subscription}#{period_start}")
}
pub(super) const GRANT_SK: &str = "SUBGRANT";

pub(super) fn invoice_pk(provider: Provider, invoice: &str) -> String {
    format!("INVOICE#{provider}#{invoice}")
}
pub(super) const INVOICE_SK: &str = "INVOICE";

pub(super) fn customer_pk(provider: Provider, customer: &str) -> String {
    format!("CUSTOMER#{provider}#{customer}")
}
pub(super) const CUSTOMER_SK: &str = "CUSTOMER";

/// The user's side of the customer mapping (`USER#<id>`): for the next checkout and the
/// portal.
pub(super) fn user_customer_sk(provider: Provider) -> String {
    format!("CUSTOMER#{provider}")
}

pub(crate) const SUB_PREFIX: &str = "SUB#";
pub(super) fn sub_sk(provider: Provider, subscription: &str) -> String {
    format!("{SUB_PREFIX}{provider}#{subscription}")
}

/// Events kept for an operator: unattributed, parked, held for a deleted account.
pub(super) const HELD_PK: &str = "HELD";
pub(super) fn held_sk(provider: Provider, id: &str) -> String {
    format!("{provider}#{id}")
}

/// Marks an event applied; written only together with its effect.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct EventRecord {
    pub pk: String,
    pub sk: String,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// Recorded for an operator instead of applied (a deleted account).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    pub applied_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OrderItem {
    pub pk: String,
    pub sk: String,
    #[serde(flatten)]
    pub order: Order,
    pub version: u64,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SubItem {
    pub pk: String,
    pub sk: String,
    #[serde(flatten)]
    pub subscription: Subscription,
    pub version: u64,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct GrantItem {
    pub pk: String,
    pub sk: String,
    #[serde(flatten)]
    pub grant: PeriodGrant,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct InvoiceItem {
    pub pk: String,
    pub sk: String,
    #[serde(flatten)]
    pub link: InvoiceLink,
    pub version: u64,
    pub updated_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CustomerItem {
    pub pk: String,
    pub sk: String,
    pub provider: Provider,
    pub customer_id: String,
    pub user_id: UserId,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct UserCustomerItem {
    pub pk: String,
    pub sk: String,
    pub customer_id: String,
}

/// Why an event is kept for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldKind {
    /// No user could be found for it; replay applies it once the cause is fixed.
    Unattributed,
    /// It names a product no id is configured for; replay reads it again once it is.
    Parked,
    /// Money moved for a deleted account; nothing was applied (refund at the provider if
    /// due). Replaying it only acknowledges it.
    DeletedAccount,
}

impl HeldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unattributed => "unattributed",
            Self::Parked => "parked",
            Self::DeletedAccount => "deleted_account",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct HeldItem {
    pub pk: String,
    pub sk: String,
    pub kind: HeldKind,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The event as read (JSON of `PaymentEvent`): replayed through the same path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The verified body as received, for an event that could not be read (parked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub received_at: String,
}
