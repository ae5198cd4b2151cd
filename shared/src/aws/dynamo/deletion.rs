//! Deleting an account, in an order that lets nothing act in between and that a crash
//! cannot leave half-done.
//!
//! 1. [`begin_deletion`](DynamoStore::begin_deletion): one write marks the profile deleted
//!    and bumps its session version. From then on every read (the extractors,
//!    `check_live`) and every write acting for the user (`LIVE`: debits, uploads, a
//!    worker's finish, payment grants) refuses it, whatever token or key comes.
//!    The profile also enters the `open` index under `DELETING`, where the sweep finds a
//!    deletion whose request died.
//! 2. The caller cancels the subscriptions at the provider, finishes open generations with
//!    their refunds ([`open_generations_of`](DynamoStore::open_generations_of) and the
//!    worker's exactly-once finish), and deletes the objects.
//! 3. [`erase_account`](DynamoStore::erase_account): the items go, the profile keeps only
//!    its id, balance and ledger (so the ledger still adds up) and leaves the index.
//!
//! Every step may run again: a retried `DELETE /v1/me` with the session that asked, or the
//! sweep, continues where the last one stopped.

use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, TransactWriteItem, Update, WriteRequest,
};
use time::OffsetDateTime;

use super::generations::{GenerationItem, open_sk_prefix};
use super::keys::{self, IDENTITY, PROFILE, SK};
use super::ledger::{number, rfc3339};
use super::tx::{Role, Tx};
use super::users::{Item, from_item, item_key};
use super::work::OPEN_INDEX;
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::UserId;
use crate::domain::audit::{AuditAction, AuditRecord, Origin};
use crate::domain::generation::Generation;

/// The `open` index partition of deletions not yet finished.
const DELETING: &str = "DELETING";

/// What the user's partition loses: generations, uploads, request records, rate windows,
/// subscriptions and the customer mappings on the user's side. Ledger rows and their
/// guards stay (no personal data; the balance must still equal their sum).
const ERASED_PREFIXES: &[&str] = &[
    "GEN#",
    "UPLOAD#",
    "IDEMP#",
    "RATE#",
    "SUB#",
    "CUSTOMER#",
    "APIKEY#",
    "WHSEC",
    "HOOK#",
];

/// How a deletion request found the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionStart {
    /// Marked deleted now.
    Started,
    /// Marked before by this same session, not finished yet: continue.
    Continuing,
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_string())
}

impl DynamoStore {
    /// Step 1, one write: the profile is marked deleted and its session version bumped,
    /// if `session_version` is current, with the security log's `account_deleted` entry.
    /// A retry by the session that asked, before the deletion finished, is `Continuing`;
    /// any other session (or a finished deletion) is `SessionRevoked`.
    pub async fn begin_deletion(
        &self,
        user: UserId,
        session_version: u64,
        origin: &Origin,
    ) -> Result<DeletionStart, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mark = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), PROFILE)))
            .update_expression(
                "SET deleted_at = :now, deleted_by_session = :sv, deletion = :pending, \
                 session_version = session_version + :one, open_pk = :deleting, open_sk = :since",
            )
            .condition_expression("session_version = :sv AND attribute_not_exists(deleted_at)")
            .expression_attribute_values(":now", s(&rfc3339(now)))
            .expression_attribute_values(":sv", number(session_version as i64))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":deleting", s(DELETING))
            .expression_attribute_values(":since", s(&format!("{}#{user}", open_sk_prefix(now))))
            .build()
            .expect("table, key and expression are set");
        let mut tx = Tx::default();
        tx.push(
            TransactWriteItem::builder().update(mark).build(),
            Role::Named("deletion"),
        );
        // Kept without the address and device, like every entry of a deleted account.
        let entry = AuditRecord::by_user(
            AuditAction::AccountDeleted,
            &Origin {
                ip: None,
                user_agent: None,
                request_id: origin.request_id.clone(),
            },
            serde_json::json!({}),
        );
        self.push_audit(&mut tx, user, &entry, now);
        match self.execute(tx).await {
            Ok(()) => return Ok(DeletionStart::Started),
            Err(StoreError::ConditionFailed("deletion")) => {}
            Err(e) => return Err(e),
        }
        let old = self.get_user_item(user).await?;
        let field = |name: &str| old.as_ref().and_then(|o| o.get(name));
        let asked_by_this_session = field("deleted_by_session")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            == Some(session_version);
        let pending = field("deletion")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
            == Some("pending");
        if asked_by_this_session && pending {
            Ok(DeletionStart::Continuing)
        } else {
            Err(StoreError::SessionRevoked)
        }
    }

    /// The user's generations still queued or running.
    pub async fn open_generations_of(&self, user: UserId) -> Result<Vec<Generation>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :gen)")
            .filter_expression("#s = :queued OR #s = :running")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":pk", s(&keys::user_pk(user)))
            .expression_attribute_values(":gen", s("GEN#"))
            .expression_attribute_values(":queued", s("queued"))
            .expression_attribute_values(":running", s("running"))
            .consistent_read(true);
        self.query_all(query)
            .await?
            .into_iter()
            .map(|item| from_item::<GenerationItem>(item).map(GenerationItem::into_generation))
            .collect()
    }

    /// Step 3: the user's items and identities go; the profile keeps its id, balance and
    /// session version, marked `deletion: done`, out of the index. Run again, it finds
    /// less to do.
    pub async fn erase_account(&self, user: UserId) -> Result<(), StoreError> {
        let Some(profile) = self.get_user_item(user).await? else {
            return Err(StoreError::NotFound);
        };
        let everything = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&keys::user_pk(user)))
            .projection_expression("pk, sk");
        let mut erased: Vec<Item> = self
            .query_all(everything)
            .await?
            .into_iter()
            .filter(|item| {
                item.get(SK)
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|sk| ERASED_PREFIXES.iter().any(|p| sk.starts_with(p)))
            })
            .collect();
        // API keys: their lookups (keyed by the hash) go first, so that a key can never
        // be found without its owner's listing having been found too.
        let lookups = self.api_key_lookups_of(user).await?;
        erased.splice(0..0, lookups);
        self.delete_all(erased).await?;
        self.anonymise_audit(user).await?;
        let identities: Vec<String> = profile
            .get("identities")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default();
        for identity in identities {
            // Only this user's: the same sign-in may already belong to a new account.
            let deleted = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(item_key(identity, IDENTITY)))
                .condition_expression("user_id = :u")
                .expression_attribute_values(":u", s(&user.to_string()))
                .send()
                .await;
            if let Err(e) = deleted
                && !e
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception())
            {
                return Err(sdk_error(e));
            }
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), PROFILE)))
            .update_expression(
                "SET #n = :gone, deletion = :done, identities = :none \
                 REMOVE email, avatar_url, subscription, subscription_key, open_pk, open_sk",
            )
            .condition_expression("attribute_exists(deleted_at)")
            .expression_attribute_names("#n", "name")
            .expression_attribute_values(":gone", s("deleted user"))
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":none", AttributeValue::L(vec![]))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// Accounts whose deletion started before `started_before` and has not finished.
    pub async fn pending_deletions(
        &self,
        started_before: OffsetDateTime,
    ) -> Result<Vec<UserId>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OPEN_INDEX)
            .key_condition_expression("open_pk = :p AND open_sk < :before")
            .expression_attribute_values(":p", s(DELETING))
            .expression_attribute_values(":before", s(&open_sk_prefix(started_before)));
        Ok(self
            .query_all(query)
            .await?
            .into_iter()
            .filter_map(|item| {
                item.get("id")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|id| UserId::parse(id).ok())
            })
            .collect())
    }

    /// Deletes items 25 at a time (`BatchWriteItem`), retrying what DynamoDB leaves
    /// unprocessed.
    async fn delete_all(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        for chunk in keys.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|key| {
                    let key = item_key(
                        key[keys::PK].as_s().cloned().unwrap_or_default(),
                        key[SK].as_s().map(String::as_str).unwrap_or_default(),
                    );
                    WriteRequest::builder()
                        .delete_request(
                            DeleteRequest::builder()
                                .set_key(Some(key))
                                .build()
                                .expect("the key is set"),
                        )
                        .build()
                })
                .collect();
            for attempt in 0..5 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(StoreError::Unavailable(anyhow::anyhow!(
                    "BatchWriteItem left items unprocessed"
                )));
            }
        }
        Ok(())
    }
}
