//! The expiry step: the adapter of [`crate::domain::expiry`].
//!
//! A grant that expires writes, in its own transaction, an entry of a sparse, sharded index
//! (`open_pk = EXPIRY#<0..9>`, `open_sk = <expiry>#<user>`, on the `open` index the
//! open-generations and deliveries share) and marks the profile `has_expiring`. The
//! sweeper reads the shards for entries due, and for each user: reads the profile (its
//! balance and `balance_version`) and the checkpoint (the replay's state after the last
//! expiry) in one `BatchGetItem`, the ledger rows since the checkpoint in one `Query`,
//! replays them, and writes the `expired` rows, the balance, the new checkpoint and the
//! index's changes in one transaction conditioned on `balance_version` being the one read.
//! Any balance change meanwhile (a debit, a refund, another sweeper's expiry) bumped it, so
//! the write fails and is decided again from a fresh read: each expiry lands once.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::generations::OPEN_SHARDS;
use super::keys::{self, LEDGER_PREFIX, PROFILE, SK};
use super::ledger::{LedgerRow, RowMeta, number, rfc3339};
use super::tx::{Role, Tx};
use super::users::{Item, from_item, item_key, to_item};
use super::work::OPEN_INDEX;
use super::{DynamoStore, StoreError};
use crate::domain::expiry::{ExpiryCheck, GrantLeft, Replay};
use crate::domain::ledger::LedgerReason;
use crate::domain::{LedgerId, UserId};

/// The profile's flag: some grant's credits may still expire (`GET /v1/me` replays only
/// then).
pub(crate) const HAS_EXPIRING: &str = "has_expiring";
const CHECKPOINT: &str = "EXPIRY";
const ENTRY_PREFIX: &str = "EXPIRES#";
/// Decisions made again after a concurrent balance change, before leaving the user to the
/// next sweep.
const MAX_ROUNDS: u32 = 8;

fn shard_pk(user: UserId) -> String {
    format!(
        "EXPIRY#{}",
        (user.ulid().random() % u128::from(OPEN_SHARDS)) as u32
    )
}

/// Unix seconds, zero-padded so that text order is time order.
fn padded(at: i64) -> String {
    format!("{:012}", at.max(0))
}

/// One entry of the index of upcoming expiries.
#[derive(Debug, Serialize, Deserialize)]
struct EntryItem {
    pk: String,
    sk: String,
    open_pk: String,
    open_sk: String,
    user_id: UserId,
    at: i64,
}

/// The replay's state after the last expiry step, with what it was decided from.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointItem {
    pk: String,
    sk: String,
    /// [`Replay`] as JSON (one attribute, read back whole).
    replay: String,
    updated_at: String,
}

/// A user with expiries due, as the index names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueUser {
    pub user: UserId,
    /// The entries found (their sort keys), removed once handled.
    entries: Vec<String>,
}

/// What the expiry step did for one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// `expired` rows written.
    pub rows: usize,
    pub credits: i64,
    /// Ledger rows read for the replay.
    pub rows_read: usize,
    /// Decisions made again after a concurrent change.
    pub retries: u32,
}

/// The state read for one user.
struct Read {
    replay: Replay,
    rows: usize,
    version: Option<i64>,
    credits: i64,
    has_expiring: bool,
}

impl DynamoStore {
    /// Adds the index entry of a grant expiring at `at` (and is harmless when there).
    pub(crate) fn push_expiry_entry(&self, tx: &mut Tx, user: UserId, at: i64) {
        let entry = EntryItem {
            pk: keys::user_pk(user),
            sk: format!("{ENTRY_PREFIX}{}", padded(at)),
            open_pk: shard_pk(user),
            open_sk: format!("{}#{user}", padded(at)),
            user_id: user,
            at,
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(&entry)))
            .build()
            .expect("table and item are set");
        tx.push(
            TransactWriteItem::builder().put(put).build(),
            Role::Named("expiry entry"),
        );
    }

    /// The users of one shard with an expiry due at `now`.
    pub async fn due_expiries(
        &self,
        shard: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<DueUser>, StoreError> {
        debug_assert!(shard < OPEN_SHARDS);
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OPEN_INDEX)
            .key_condition_expression("open_pk = :p AND open_sk < :before")
            .expression_attribute_values(":p", AttributeValue::S(format!("EXPIRY#{shard}")))
            .expression_attribute_values(
                ":before",
                AttributeValue::S(padded(now.unix_timestamp() + 1)),
            );
        let mut users: BTreeMap<UserId, Vec<String>> = BTreeMap::new();
        for item in self.query_all(query).await? {
            let entry: EntryItem = from_item(item)?;
            users.entry(entry.user_id).or_default().push(entry.sk);
        }
        Ok(users
            .into_iter()
            .map(|(user, entries)| DueUser { user, entries })
            .collect())
    }

    /// Writes the `expired` rows due for `due.user` at `now` (see the module documentation);
    /// exactly once, whoever else runs it or moves the balance at the same time.
    pub async fn expire_due(
        &self,
        due: &DueUser,
        now: OffsetDateTime,
    ) -> Result<Expired, StoreError> {
        let user = due.user;
        let at = now.unix_timestamp();
        for round in 0..MAX_ROUNDS {
            let Some(read) = self.read_replay(user, true).await? else {
                // No profile at all: nothing to expire, nothing to look at again.
                if !due.entries.is_empty() {
                    self.execute(self.entries_tx(user, &due.entries)).await?;
                }
                return Ok(Expired::default());
            };
            if read.replay.balance() != read.credits {
                // A change landed between the two reads: read again.
                tokio::time::sleep(std::time::Duration::from_millis(20 << round.min(4))).await;
                continue;
            }
            let mut replay = read.replay;
            let expiries = replay.due(at);
            let total: i64 = expiries.iter().map(|d| d.credits).sum();
            let mut tx = self.entries_tx(user, &due.entries);
            let mut previous = replay
                .through
                .as_deref()
                .and_then(|id| LedgerId::parse(id).ok());
            for expiry in &expiries {
                let id = LedgerId::after(previous);
                previous = Some(id);
                self.push_ledger_row_as(
                    &mut tx,
                    id,
                    user,
                    -expiry.credits,
                    LedgerReason::Expired,
                    &expiry.grant,
                    RowMeta::default(),
                    now,
                );
                replay.apply(&crate::domain::expiry::Row {
                    id: id.to_string(),
                    delta: -expiry.credits,
                    reason: LedgerReason::Expired,
                    reference: expiry.grant.clone(),
                    at,
                    expires_at: None,
                    source: None,
                });
            }
            replay.prune(at);
            let recheck = replay.refund_may_reopen(at);
            if recheck {
                // Due at the next sweep (the entries deleted now are all at or before `at`).
                self.push_expiry_entry(&mut tx, user, at + 1);
            }
            let keep_flag = recheck || replay.has_expiring();
            self.push_version_update(
                &mut tx,
                user,
                read.version,
                total,
                keep_flag,
                read.has_expiring,
            );
            self.push_checkpoint(&mut tx, user, &replay, now);
            match self.execute(tx).await {
                Ok(()) => {
                    if total > 0 {
                        crate::metrics::count("CreditsExpired", total as u64, &[]);
                        tracing::info!(user_id = %user, credits = total, rows = expiries.len(), "credits expired");
                    }
                    return Ok(Expired {
                        rows: expiries.len(),
                        credits: total,
                        rows_read: read.rows,
                        retries: round,
                    });
                }
                Err(StoreError::ConditionFailed("balance version")) => {
                    tracing::info!(user_id = %user, "balance moved during the expiry step; deciding again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contention)
    }

    /// Removes the handled index entries.
    fn entries_tx(&self, user: UserId, entries: &[String]) -> Tx {
        let mut tx = Tx::default();
        for sk in entries {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(item_key(keys::user_pk(user), sk)))
                .build()
                .expect("table and key are set");
            tx.push(
                TransactWriteItem::builder().delete(delete).build(),
                Role::Named("expiry entry"),
            );
        }
        tx
    }

    /// The profile's part of the expiry: the balance less what expired, and the flag, only
    /// if `balance_version` is still the one read.
    fn push_version_update(
        &self,
        tx: &mut Tx,
        user: UserId,
        version: Option<i64>,
        expired: i64,
        keep_flag: bool,
        has_flag: bool,
    ) {
        let mut values = HashMap::new();
        let mut sets = Vec::new();
        let mut clauses = Vec::new();
        if expired > 0 {
            sets.push("credits = credits - :x".to_string());
            values.insert(":x".to_string(), number(expired));
            values.insert(":one".to_string(), number(1));
            clauses.push(super::ledger::BUMP_VERSION.to_string());
        }
        if keep_flag && !has_flag {
            sets.push(format!("{HAS_EXPIRING} = :t"));
            values.insert(":t".to_string(), AttributeValue::Bool(true));
        }
        if !sets.is_empty() {
            clauses.insert(0, format!("SET {}", sets.join(", ")));
        }
        if !keep_flag && has_flag {
            clauses.push(format!("REMOVE {HAS_EXPIRING}"));
        }
        let condition = match version {
            Some(v) => {
                values.insert(":v".to_string(), number(v));
                "balance_version = :v"
            }
            None => "attribute_exists(pk) AND attribute_not_exists(balance_version)",
        };
        let key = item_key(keys::user_pk(user), PROFILE);
        let item = if clauses.is_empty() {
            let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression(condition)
                .set_expression_attribute_values((!values.is_empty()).then_some(values))
                .build()
                .expect("table, key and condition are set");
            TransactWriteItem::builder().condition_check(check).build()
        } else {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression(clauses.join(" "))
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .build()
                .expect("table, key and expression are set");
            TransactWriteItem::builder().update(update).build()
        };
        tx.push(item, Role::Named("balance version"));
    }

    fn push_checkpoint(&self, tx: &mut Tx, user: UserId, replay: &Replay, now: OffsetDateTime) {
        let item = CheckpointItem {
            pk: keys::user_pk(user),
            sk: CHECKPOINT.into(),
            replay: serde_json::to_string(replay).expect("a replay always serializes"),
            updated_at: rfc3339(now),
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(&item)))
            .build()
            .expect("table and item are set");
        tx.push(
            TransactWriteItem::builder().put(put).build(),
            Role::Named("expiry checkpoint"),
        );
    }

    /// The profile and the replay of its ledger: from the checkpoint when `from_checkpoint`
    /// (falling back to the whole ledger when the checkpoint and the rows since do not sum
    /// to the balance read), else from the first row. `None`: no profile.
    async fn read_replay(
        &self,
        user: UserId,
        from_checkpoint: bool,
    ) -> Result<Option<Read>, StoreError> {
        let pk = keys::user_pk(user);
        let mut found = self
            .batch_get(vec![
                item_key(pk.clone(), PROFILE),
                item_key(pk.clone(), CHECKPOINT),
            ])
            .await?;
        let sk_of = |item: &Item| item.get(SK).and_then(|v| v.as_s().ok()).cloned();
        let profile_at = found
            .iter()
            .position(|i| sk_of(i).as_deref() == Some(PROFILE));
        let Some(profile) = profile_at.map(|i| found.swap_remove(i)) else {
            return Ok(None);
        };
        let checkpoint = found
            .into_iter()
            .find(|i| sk_of(i).as_deref() == Some(CHECKPOINT))
            .map(from_item::<CheckpointItem>)
            .transpose()?
            .and_then(|c| serde_json::from_str::<Replay>(&c.replay).ok())
            .filter(|_| from_checkpoint);
        let number_of = |name: &str| {
            profile
                .get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
        };
        let credits = number_of("credits").unwrap_or(0);
        let version = number_of("balance_version");
        let has_expiring = profile
            .get(HAS_EXPIRING)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false);
        let (replay, rows) = match checkpoint {
            Some(mut replay) => {
                let rows = self.ledger_rows(user, replay.through.as_deref()).await?;
                let count = rows.len();
                for row in &rows {
                    replay.apply(&row.replayed());
                }
                if replay.balance() == credits {
                    (replay, count)
                } else {
                    let rows = self.ledger_rows(user, None).await?;
                    let (replay, _) = Replay::of(rows.iter().map(LedgerRow::replayed));
                    (replay, count + rows.len())
                }
            }
            None => {
                let rows = self.ledger_rows(user, None).await?;
                let (replay, _) = Replay::of(rows.iter().map(LedgerRow::replayed));
                (replay, rows.len())
            }
        };
        Ok(Some(Read {
            replay,
            rows,
            version,
            credits,
            has_expiring,
        }))
    }

    /// The user's ledger rows in order, those after `after` (a row id) only when given.
    async fn ledger_rows(
        &self,
        user: UserId,
        after: Option<&str>,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let from = match after {
            Some(id) => format!("{LEDGER_PREFIX}{id}"),
            None => LEDGER_PREFIX.to_string(),
        };
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", AttributeValue::S(keys::user_pk(user)))
            .expression_attribute_values(":from", AttributeValue::S(from.clone()))
            .expression_attribute_values(":to", AttributeValue::S(format!("{LEDGER_PREFIX}~")))
            .consistent_read(true);
        self.query_all(query)
            .await?
            .into_iter()
            .filter(|item| {
                item.get(SK).and_then(|v| v.as_s().ok()) != Some(&from) || after.is_none()
            })
            .map(from_item::<LedgerRow>)
            .collect()
    }

    /// What will expire and when, soonest first (`GET /v1/me`): nothing is read unless the
    /// profile says some grant may expire.
    pub async fn expiring_credits(
        &self,
        user: &crate::domain::user::User,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        if !user.has_expiring {
            return Ok(Vec::new());
        }
        Ok(self
            .read_replay(user.id, true)
            .await?
            .map(|read| read.replay.expiring())
            .unwrap_or_default())
    }

    /// Every grant still kept by the replay of the whole ledger, with what is left of it
    /// (the operator's `user show`).
    pub async fn grants_left(&self, user: UserId) -> Result<Vec<GrantLeft>, StoreError> {
        let rows = self.ledger_rows(user, None).await?;
        let (replay, _) = Replay::of(rows.iter().map(LedgerRow::replayed));
        Ok(replay.grants().to_vec())
    }

    /// The replay of the whole ledger against the `expired` rows it has (the operator's
    /// `reconcile`): each recorded expiry compared with what was left of its grant, and
    /// the expiries due since before `overdue_before` that no row records.
    pub async fn check_expiries(
        &self,
        user: UserId,
        overdue_before: OffsetDateTime,
    ) -> Result<ExpiryReport, StoreError> {
        let rows = self.ledger_rows(user, None).await?;
        let (replay, checks) = Replay::of(rows.iter().map(LedgerRow::replayed));
        Ok(ExpiryReport {
            wrong: checks
                .into_iter()
                .filter(|c| c.recorded != c.expected)
                .collect(),
            missing: replay
                .due(overdue_before.unix_timestamp())
                .into_iter()
                .map(|d| (d.grant, d.credits))
                .collect(),
        })
    }
}

/// What replaying a ledger says of its `expired` rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Recorded expiries that differ from what was left of their grant.
    pub wrong: Vec<ExpiryCheck>,
    /// (grant row, credits) that should have expired by then and have not.
    pub missing: Vec<(String, i64)>,
}

impl ExpiryReport {
    pub fn is_clean(&self) -> bool {
        self.wrong.is_empty() && self.missing.is_empty()
    }
}
