//! Security-log entries: `USER#<id>` / `AUDIT#<ulid>`, put by the transaction of the action
//! they record, kept `AUDIT_RETENTION_DAYS` by the table's TTL (`expires_at`; reads skip an
//! expired entry the lazy TTL has not removed yet).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys;
use super::ledger::{parse_time, put_new, rfc3339};
use super::tx::{Role, Tx};
use super::users::{decode_cursor, item_key, to_item};
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::audit::{AuditAction, AuditEntry, AuditRecord};
use crate::domain::{AuditId, UserId};

/// API.md's default: 400 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(400 * 86_400);

const AUDIT_PREFIX: &str = "AUDIT#";

#[derive(Debug, Serialize, Deserialize)]
struct AuditItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    entry: StoredEntry,
    expires_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredEntry {
    id: AuditId,
    action: AuditAction,
    actor: crate::domain::audit::Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(default)]
    detail: serde_json::Value,
    created_at: String,
}

impl StoredEntry {
    fn view(self) -> AuditEntry {
        AuditEntry {
            id: self.id,
            action: self.action,
            actor: self.actor,
            ip: self.ip,
            user_agent: self.user_agent,
            request_id: self.request_id,
            detail: self.detail,
            created_at: parse_time(&self.created_at),
        }
    }
}

impl DynamoStore {
    /// Adds `record`'s entry for `user` to `tx`: it lands if and only if the action does.
    pub(crate) fn push_audit(
        &self,
        tx: &mut Tx,
        user: UserId,
        record: &AuditRecord,
        now: OffsetDateTime,
    ) {
        let id = AuditId::new();
        let item = AuditItem {
            pk: keys::user_pk(user),
            sk: format!("{AUDIT_PREFIX}{id}"),
            entry: StoredEntry {
                id,
                action: record.action,
                actor: record.actor.clone(),
                ip: record.origin.ip.clone(),
                user_agent: record.origin.user_agent.clone(),
                request_id: record.origin.request_id.clone(),
                detail: record.detail.clone(),
                created_at: rfc3339(now),
            },
            expires_at: now.unix_timestamp() + self.audit_retention.as_secs() as i64,
        };
        tx.push(
            put_new(&self.table, to_item(&item)),
            Role::Named("audit entry"),
        );
    }

    /// Writes one entry on its own, for an action whose write is not ours to join
    /// (there is none: a sign-in that finds its user, an operator's replay).
    pub async fn append_audit(&self, user: UserId, record: &AuditRecord) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        self.push_audit(&mut tx, user, record, OffsetDateTime::now_utc());
        self.execute(tx).await
    }

    /// One page of the user's entries, newest first; expired ones are left out.
    pub async fn audit_page(
        &self,
        user: UserId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<AuditEntry>, Option<String>), StoreError> {
        let start = cursor.map(|c| decode_cursor(c, AUDIT_PREFIX)).transpose()?;
        let (items, next) = self
            .query_page::<AuditItem>(keys::user_pk(user), AUDIT_PREFIX, limit, start)
            .await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        Ok((
            items
                .into_iter()
                .filter(|i| i.expires_at > now)
                .map(|i| i.entry.view())
                .collect(),
            next,
        ))
    }

    /// Every live entry of the user, newest first (`nb-admin audit list`), of `action`
    /// and since `since` when given.
    pub async fn audit_entries(
        &self,
        user: UserId,
        action: Option<AuditAction>,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = self.audit_page(user, 100, cursor.as_deref()).await?;
            entries.extend(page.into_iter().filter(|e| {
                action.is_none_or(|a| e.action == a) && since.is_none_or(|s| e.created_at >= s)
            }));
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(entries),
            }
        }
    }

    /// Removes `ip` and `user_agent` from every entry of the user (account deletion keeps
    /// the log without what identifies the person's devices).
    pub async fn anonymise_audit(&self, user: UserId) -> Result<usize, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", AttributeValue::S(keys::user_pk(user)))
            .expression_attribute_values(":p", AttributeValue::S(AUDIT_PREFIX.into()))
            .projection_expression("sk, ip, user_agent");
        let mut changed = 0;
        for item in self.query_all(query).await? {
            if !item.contains_key("ip") && !item.contains_key("user_agent") {
                continue;
            }
            let Some(sk) = item.get("sk").and_then(|v| v.as_s().ok()) else {
                continue;
            };
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item_key(keys::user_pk(user), sk)))
                .update_expression("REMOVE ip, user_agent")
                .send()
                .await
                .map_err(sdk_error)?;
            changed += 1;
        }
        Ok(changed)
    }
}
