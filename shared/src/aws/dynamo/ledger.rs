//! The credit ledger: builds the items of a balance change (balance update + ledger row,
//! and a guard for reference-keyed changes) for the flows to put into their own single
//! transaction, and applies a change on its own where nothing else is written with it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::{self, LEDGER_PREFIX, PK, PROFILE, SK};
use super::tx::{Role, Tx};
use super::{DynamoStore, StoreError};
use crate::domain::ledger::{LedgerEntry, LedgerReason};
use crate::domain::{Credits, LedgerId, UserId};

/// One change of a user's balance, named by what caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceChange {
    pub user: UserId,
    /// Positive for grants and refunds, negative for debits and claw-backs.
    delta: i64,
    /// Debits must be covered by the balance; claw-backs need not be.
    covered: bool,
    pub reason: LedgerReason,
    pub reference: String,
    /// Who made an operator's change and why (kept on the ledger row, never shown to users).
    pub note: Option<String>,
}

impl BalanceChange {
    /// An operator's correction, up or down, whatever the balance; applied once per
    /// reference, with who did it and why on the row.
    pub fn admin(
        user: UserId,
        delta: i64,
        reference: impl Into<String>,
        note: impl Into<String>,
    ) -> Self {
        Self {
            user,
            delta,
            covered: false,
            reason: LedgerReason::Admin,
            reference: reference.into(),
            note: Some(note.into()),
        }
    }

    /// Adds credits (a bonus, a purchase, a refund).
    pub fn grant(
        user: UserId,
        amount: Credits,
        reason: LedgerReason,
        reference: impl Into<String>,
    ) -> Self {
        Self {
            user,
            delta: amount.get(),
            covered: false,
            reason,
            reference: reference.into(),
            note: None,
        }
    }

    /// Spends credits; refused when the balance does not cover them.
    pub fn debit(
        user: UserId,
        amount: Credits,
        reason: LedgerReason,
        reference: impl Into<String>,
    ) -> Self {
        Self {
            user,
            delta: -amount.get(),
            covered: true,
            reason,
            reference: reference.into(),
            note: None,
        }
    }

    /// Takes credits back whatever the balance (a refunded or disputed payment).
    pub fn claw_back(user: UserId, amount: Credits, reference: impl Into<String>) -> Self {
        Self {
            user,
            delta: -amount.get(),
            covered: false,
            reason: LedgerReason::Clawback,
            reference: reference.into(),
            note: None,
        }
    }

    pub fn delta(&self) -> i64 {
        self.delta
    }
}

/// The outcome of a reference-keyed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied(LedgerId),
    /// A change with this reason and reference was applied before; nothing changed now.
    AlreadyApplied,
}

/// A ledger row as stored. It holds no personal data, so it outlives account deletion.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LedgerRow {
    pub(crate) pk: String,
    pub(crate) sk: String,
    pub(crate) id: LedgerId,
    pub(crate) delta: i64,
    pub(crate) reason: LedgerReason,
    #[serde(rename = "ref")]
    pub(crate) reference: String,
    pub(crate) created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// A grant's expiry, unix seconds (not `expires_at`: that is the table's TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) credits_expire_at: Option<i64>,
    /// A claw-back's or a restore's grant (its reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<String>,
}

impl LedgerRow {
    /// The row as the expiry replay reads it.
    pub(crate) fn replayed(&self) -> crate::domain::expiry::Row {
        crate::domain::expiry::Row {
            id: self.id.to_string(),
            delta: self.delta,
            reason: self.reason,
            reference: self.reference.clone(),
            at: parse_time(&self.created_at).unix_timestamp(),
            expires_at: self.credits_expire_at,
            source: self.source.clone(),
        }
    }

    pub(crate) fn entry(self) -> LedgerEntry {
        LedgerEntry {
            id: self.id,
            delta: self.delta,
            reason: self.reason,
            reference: self.reference,
            created_at: parse_time(&self.created_at),
            expires_at: self
                .credits_expire_at
                .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok()),
        }
    }
}

/// What a ledger row says besides its amount and reason.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowMeta<'a> {
    pub(crate) expires_at: Option<i64>,
    pub(crate) source: Option<&'a str>,
}

/// The profile's counter of balance changes: every write that moves `credits` adds one in
/// the same update, so the expiry step's write, conditioned on the count it read, fails
/// when anything moved the balance since.
pub(crate) const BUMP_VERSION: &str = "ADD balance_version :one";

/// Our own timestamps read back; one we did not write reads as the epoch rather than
/// failing a whole listing.
pub(crate) fn parse_time(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC timestamp always formats")
}

impl DynamoStore {
    /// Applies `change` at most once per (reason, reference): a repeat is reported as
    /// `AlreadyApplied` and changes nothing. A debit is refused with `InsufficientCredits`
    /// when the balance does not cover it.
    pub async fn apply(&self, change: &BalanceChange) -> Result<Applied, StoreError> {
        self.apply_recorded(change, None).await
    }

    /// [`apply`](Self::apply), with `entry` in the user's security log in the same
    /// transaction (an operator's grant): both land, or neither.
    pub async fn apply_recorded(
        &self,
        change: &BalanceChange,
        entry: Option<&crate::domain::audit::AuditRecord>,
    ) -> Result<Applied, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = Tx::default();
        let id = self.push_change(&mut tx, change, None, true, now);
        if let Some(entry) = entry {
            self.push_audit(&mut tx, change.user, entry, now);
        }
        match self.execute(tx).await {
            Ok(()) => Ok(Applied::Applied(id)),
            Err(StoreError::AlreadyApplied) => Ok(Applied::AlreadyApplied),
            Err(e) => Err(e),
        }
    }

    /// Adds the items of `change` to `tx`: the balance update (conditioned on the user
    /// existing, the balance covering a debit and, when given, the session version; a debit
    /// or a session's change also on the account not being deleted), the ledger row, and
    /// with `guarded` a guard item keyed by the reference.
    pub(crate) fn push_change(
        &self,
        tx: &mut Tx,
        change: &BalanceChange,
        expected_session: Option<u64>,
        guarded: bool,
        now: OffsetDateTime,
    ) -> LedgerId {
        // A request acts for a live account only: a debit always comes from one.
        let live = change.covered || expected_session.is_some();
        self.push_balance(tx, change, expected_session, guarded, live, now)
    }

    /// Like [`push_change`](Self::push_change), refused (`AccountDeleted`) for a deleted
    /// account: a change made on the account's behalf, such as a worker's refund.
    pub(crate) fn push_live_change(
        &self,
        tx: &mut Tx,
        change: &BalanceChange,
        now: OffsetDateTime,
    ) -> LedgerId {
        self.push_balance(tx, change, None, false, true, now)
    }

    /// A check that the user's account is not deleted (`AccountDeleted`), for a
    /// transaction that does not change the balance.
    pub(crate) fn push_live_check(&self, tx: &mut Tx, user: UserId) {
        let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(keys::user_pk(user)))
            .key(SK, AttributeValue::S(PROFILE.into()))
            .condition_expression(format!("attribute_exists(pk) AND {}", super::users::LIVE))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and condition are set");
        tx.push(
            TransactWriteItem::builder().condition_check(check).build(),
            Role::Balance {
                user,
                expected_session: None,
                cost: None,
            },
        );
    }

    fn push_balance(
        &self,
        tx: &mut Tx,
        change: &BalanceChange,
        expected_session: Option<u64>,
        guarded: bool,
        live: bool,
        now: OffsetDateTime,
    ) -> LedgerId {
        let mut condition = String::from("attribute_exists(pk)");
        let mut values = HashMap::from([
            (":d".to_string(), number(change.delta)),
            (":one".to_string(), number(1)),
        ]);
        if live {
            condition.push_str(" AND ");
            condition.push_str(super::users::LIVE);
        }
        if change.covered {
            condition.push_str(" AND credits >= :cost");
            values.insert(":cost".into(), number(-change.delta));
        }
        if let Some(version) = expected_session {
            condition.push_str(" AND session_version = :sv");
            values.insert(":sv".into(), number(version as i64));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(keys::user_pk(change.user)))
            .key(SK, AttributeValue::S(PROFILE.into()))
            .update_expression(format!("SET credits = credits + :d {BUMP_VERSION}"))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and expression are set");
        tx.push(
            TransactWriteItem::builder().update(update).build(),
            Role::Balance {
                user: change.user,
                expected_session,
                cost: change.covered.then_some(-change.delta),
            },
        );
        let id = LedgerId::new();
        let row = LedgerRow {
            pk: keys::user_pk(change.user),
            sk: keys::ledger_sk(id),
            id,
            delta: change.delta,
            reason: change.reason,
            reference: change.reference.clone(),
            created_at: rfc3339(now),
            note: change.note.clone(),
            credits_expire_at: None,
            source: None,
        };
        self.push_row(tx, row);
        if guarded {
            let guard = HashMap::from([
                (
                    PK.to_string(),
                    AttributeValue::S(keys::user_pk(change.user)),
                ),
                (
                    SK.to_string(),
                    AttributeValue::S(keys::applied_sk(change.reason.as_str(), &change.reference)),
                ),
                ("ledger_id".to_string(), AttributeValue::S(id.to_string())),
            ]);
            tx.push(put_new(&self.table, guard), Role::Guard);
        }
        id
    }

    /// Adds a ledger row to `tx`. Its transaction must be conditioned on what caused it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_ledger_row(
        &self,
        tx: &mut Tx,
        user: UserId,
        delta: i64,
        reason: LedgerReason,
        reference: &str,
        meta: RowMeta<'_>,
        now: OffsetDateTime,
    ) -> LedgerId {
        let id = LedgerId::new();
        self.push_ledger_row_as(tx, id, user, delta, reason, reference, meta, now);
        id
    }

    /// [`push_ledger_row`](Self::push_ledger_row) with the row's id chosen by the caller.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_ledger_row_as(
        &self,
        tx: &mut Tx,
        id: LedgerId,
        user: UserId,
        delta: i64,
        reason: LedgerReason,
        reference: &str,
        meta: RowMeta<'_>,
        now: OffsetDateTime,
    ) {
        let row = LedgerRow {
            pk: keys::user_pk(user),
            sk: keys::ledger_sk(id),
            id,
            delta,
            reason,
            reference: reference.to_string(),
            created_at: rfc3339(now),
            note: None,
            credits_expire_at: meta.expires_at,
            source: meta.source.map(str::to_string),
        };
        self.push_row(tx, row);
    }

    fn push_row(&self, tx: &mut Tx, row: LedgerRow) {
        let item = serde_dynamo::to_item(row).expect("a ledger row always serializes");
        tx.push(put_new(&self.table, item), Role::Named("ledger row"));
    }

    /// One page of a user's ledger, newest first, and the cursor of the next page.
    pub async fn ledger_page(
        &self,
        user: UserId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<LedgerEntry>, Option<String>), StoreError> {
        let start = cursor
            .map(|c| super::users::decode_cursor(c, LEDGER_PREFIX))
            .transpose()?;
        let (rows, next) = self
            .query_page::<LedgerRow>(keys::user_pk(user), LEDGER_PREFIX, limit, start)
            .await?;
        let entries = rows.into_iter().map(LedgerRow::entry).collect();
        Ok((entries, next))
    }

    /// The sum of a user's ledger deltas (invariant 1 says it equals the balance).
    pub async fn ledger_sum(&self, user: UserId) -> Result<i64, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", AttributeValue::S(keys::user_pk(user)))
            .expression_attribute_values(":p", AttributeValue::S(LEDGER_PREFIX.into()))
            .projection_expression("delta")
            .consistent_read(true);
        Ok(self
            .query_all(query)
            .await?
            .iter()
            .filter_map(|item| item.get("delta")?.as_n().ok()?.parse::<i64>().ok())
            .sum())
    }
}

pub(crate) fn number(n: i64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// A put that must create its item (a fresh id, a guard, an identity).
pub(crate) fn put_new(table: &str, item: HashMap<String, AttributeValue>) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .expect("table and item are set");
    TransactWriteItem::builder().put(put).build()
}
