//! API keys and webhook secrets.
//!
//! A key is two items: the lookup `APIKEY#<sha256 of the key>` / `APIKEY` (user, key id,
//! when last used), read on every keyed request, and the owner's `USER#<id>` /
//! `APIKEY#<key id>` (name, display prefix, hash) for listing and revoking. The profile's
//! `api_keys` counts the active ones under the limit, in the same transactions. Revoking
//! deletes the lookup, so the very next request with the key finds nothing.
//!
//! The webhook secret is `USER#<id>` / `WHSEC`: the current secret and, for a day after a
//! rotation, the previous one.

use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::keys::{self, PROFILE};
use super::ledger::{number, parse_time, put_new, rfc3339};
use super::tx::{Role, Tx};
use super::users::{LIVE, check_live, item_key, to_item};
use super::{DynamoStore, StoreError, landed};
use crate::domain::audit::{AuditAction, AuditRecord, Origin};
use crate::domain::secrets::MAX_API_KEYS;
use crate::domain::{ApiKeyId, UserId};

/// A key is marked used at most this often: a keyed request is one read, not a read and
/// a write.
pub const LAST_USED_RESOLUTION_SECS: i64 = 60;
/// How long a rotated-out webhook secret still signs.
pub const WEBHOOK_SECRET_OVERLAP_SECS: i64 = 24 * 3600;

const KEY_SK_PREFIX: &str = "APIKEY#";
pub(crate) const WEBHOOK_SECRET_SK: &str = "WHSEC";

fn lookup_pk(hash: &str) -> String {
    format!("APIKEY#{hash}")
}

fn owner_sk(id: ApiKeyId) -> String {
    format!("{KEY_SK_PREFIX}{id}")
}

/// What a key's lookup says: whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLookup {
    pub user_id: UserId,
    pub key_id: ApiKeyId,
    /// Unix seconds; 0 before the first use.
    #[serde(default)]
    pub last_used_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LookupItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    lookup: KeyLookup,
}

/// What is kept of a new key: never the key itself.
#[derive(Debug, Clone, Copy)]
pub struct NewKeyRecord<'a> {
    pub id: ApiKeyId,
    pub name: &'a str,
    pub hash: &'a str,
    pub prefix: &'a str,
}

/// A key as its owner lists it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OwnerItem {
    pk: String,
    sk: String,
    id: ApiKeyId,
    name: String,
    prefix: String,
    hash: String,
    created_at: String,
}

/// The secrets that sign a user's webhooks now: the current one, and the previous one
/// while its overlap lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSecrets {
    pub current: String,
    pub previous: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WebhookSecretItem {
    pk: String,
    sk: String,
    current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    /// Unix seconds until which `previous` still signs.
    #[serde(default)]
    previous_until: i64,
    created_at: String,
}

/// The secrets of a stored `WHSEC` item, as they sign now.
pub(crate) fn secrets_of(
    item: super::users::Item,
    now: OffsetDateTime,
) -> Result<WebhookSecrets, StoreError> {
    Ok(super::users::from_item::<WebhookSecretItem>(item)?.secrets(now.unix_timestamp()))
}

impl WebhookSecretItem {
    fn secrets(self, now: i64) -> WebhookSecrets {
        WebhookSecrets {
            previous: self.previous.filter(|_| self.previous_until > now),
            current: self.current,
        }
    }
}

impl DynamoStore {
    /// Records a new key (its hash only) if the session is current and the user holds
    /// fewer than the limit: `ConditionFailed("limit")` at the limit.
    pub async fn create_api_key(
        &self,
        user: UserId,
        session_version: u64,
        key: &NewKeyRecord<'_>,
        origin: &Origin,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let NewKeyRecord {
            id,
            name,
            hash,
            prefix,
        } = *key;
        let mut tx = Tx::default();
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), PROFILE)))
            .update_expression("SET api_keys = if_not_exists(api_keys, :zero) + :one")
            .condition_expression(format!(
                "session_version = :sv AND {LIVE} AND (attribute_not_exists(api_keys) OR api_keys < :max)"
            ))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":sv", number(session_version as i64))
            .expression_attribute_values(":max", number(MAX_API_KEYS))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and expression are set");
        tx.push(
            TransactWriteItem::builder().update(count).build(),
            Role::Limit {
                user,
                expected_session: Some(session_version),
                attribute: "api_keys",
                max: MAX_API_KEYS,
            },
        );
        let lookup = LookupItem {
            pk: lookup_pk(hash),
            sk: "APIKEY".into(),
            lookup: KeyLookup {
                user_id: user,
                key_id: id,
                last_used_at: 0,
            },
        };
        tx.push(
            put_new(&self.table, to_item(&lookup)),
            Role::Named("api key"),
        );
        let owner = OwnerItem {
            pk: keys::user_pk(user),
            sk: owner_sk(id),
            id,
            name: name.to_string(),
            prefix: prefix.to_string(),
            hash: hash.to_string(),
            created_at: rfc3339(now),
        };
        tx.push(
            put_new(&self.table, to_item(&owner)),
            Role::Named("api key"),
        );
        let record = AuditRecord::by_user(
            AuditAction::ApiKeyCreated,
            origin,
            json!({"key_id": id, "prefix": prefix, "name": name}),
        );
        self.push_audit(&mut tx, user, &record, now);
        self.execute(tx).await
    }

    /// The key with this hash, if it is live (a strongly consistent read: a revoked key is
    /// refused on the very next request).
    pub async fn api_key(&self, hash: &str) -> Result<Option<KeyLookup>, StoreError> {
        Ok(self
            .get_item_as::<LookupItem>(item_key(lookup_pk(hash), "APIKEY"))
            .await?
            .map(|item| item.lookup))
    }

    /// Marks the key used now, unless it was within the last minute (or was revoked).
    pub async fn touch_api_key(&self, hash: &str, now: i64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(lookup_pk(hash), "APIKEY")))
            .update_expression("SET last_used_at = :now")
            .condition_expression("attribute_exists(pk) AND last_used_at < :since")
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":since", number(now - LAST_USED_RESOLUTION_SECS))
            .send()
            .await;
        // Used within the minute, or revoked meanwhile: nothing to mark.
        landed(result)?;
        Ok(())
    }

    /// The keys of the lookups of every key the user holds (account deletion erases them).
    pub(crate) async fn api_key_lookups_of(
        &self,
        user: UserId,
    ) -> Result<Vec<super::users::Item>, StoreError> {
        let (owners, _) = self
            .query_page::<OwnerItem>(keys::user_pk(user), KEY_SK_PREFIX, 100, None)
            .await?;
        Ok(owners
            .iter()
            .map(|o| item_key(lookup_pk(&o.hash), "APIKEY"))
            .collect())
    }

    /// The user's live keys, newest first: one query, then one read of their lookups
    /// (where the last use is kept) together with the profile (the session check).
    pub async fn list_api_keys(
        &self,
        user: UserId,
        session_version: u64,
    ) -> Result<Vec<ApiKeyView>, StoreError> {
        let (owners, _) = self
            .query_page::<OwnerItem>(keys::user_pk(user), KEY_SK_PREFIX, 100, None)
            .await?;
        let mut wanted = vec![item_key(keys::user_pk(user), PROFILE)];
        wanted.extend(
            owners
                .iter()
                .map(|o| item_key(lookup_pk(&o.hash), "APIKEY")),
        );
        let found = self.batch_get(wanted).await?;
        check_live(
            found.iter().find(|item| {
                item.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some(PROFILE)
            }),
            Some(session_version),
        )?;
        let last_used = |hash: &str| {
            found
                .iter()
                .find(|item| item.get("pk").and_then(|v| v.as_s().ok()) == Some(&lookup_pk(hash)))
                .and_then(|item| item.get("last_used_at")?.as_n().ok()?.parse::<i64>().ok())
                .filter(|at| *at > 0)
                .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
        };
        Ok(owners
            .into_iter()
            .map(|o| ApiKeyView {
                id: o.id,
                last_used_at: last_used(&o.hash),
                name: o.name,
                prefix: o.prefix,
                created_at: parse_time(&o.created_at),
            })
            .collect())
    }

    /// Revokes one of the user's keys: its lookup and listing go and the count drops, in
    /// one transaction. `NotFound` for a key that is not (or no longer) the user's.
    pub async fn revoke_api_key(
        &self,
        user: UserId,
        session_version: u64,
        id: ApiKeyId,
        origin: &Origin,
    ) -> Result<(), StoreError> {
        let Some(owner) = self
            .get_item_as::<OwnerItem>(item_key(keys::user_pk(user), &owner_sk(id)))
            .await?
        else {
            return Err(StoreError::NotFound);
        };
        let mut tx = Tx::default();
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), PROFILE)))
            .update_expression("SET api_keys = api_keys - :one")
            .condition_expression(format!(
                "session_version = :sv AND {LIVE} AND api_keys > :zero"
            ))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":sv", number(session_version as i64))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and expression are set");
        tx.push(
            TransactWriteItem::builder().update(count).build(),
            Role::Balance {
                user,
                expected_session: Some(session_version),
                cost: None,
            },
        );
        for key in [
            item_key(keys::user_pk(user), &owner_sk(id)),
            item_key(lookup_pk(&owner.hash), "APIKEY"),
        ] {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression("attribute_exists(pk)")
                .build()
                .expect("table and key are set");
            tx.push(
                TransactWriteItem::builder().delete(delete).build(),
                Role::Named("api key"),
            );
        }
        let record = AuditRecord::by_user(
            AuditAction::ApiKeyRevoked,
            origin,
            json!({"key_id": id, "prefix": owner.prefix}),
        );
        self.push_audit(&mut tx, user, &record, OffsetDateTime::now_utc());
        match self.execute(tx).await {
            // Revoked meanwhile by a concurrent request: gone either way.
            Err(StoreError::ConditionFailed("api key")) => Err(StoreError::NotFound),
            other => other,
        }
    }

    /// The user's webhook secrets, the first made now (`made` is true then) if there is
    /// none yet.
    pub async fn webhook_secret(
        &self,
        user: UserId,
        fresh: impl FnOnce() -> String,
        made_by: &AuditRecord,
        now: OffsetDateTime,
    ) -> Result<(WebhookSecrets, bool), StoreError> {
        if let Some(secrets) = self.webhook_secrets(user, now).await? {
            return Ok((secrets, false));
        }
        let item = WebhookSecretItem {
            pk: keys::user_pk(user),
            sk: WEBHOOK_SECRET_SK.into(),
            current: fresh(),
            previous: None,
            previous_until: 0,
            created_at: rfc3339(now),
        };
        let mut tx = Tx::default();
        tx.push(
            put_new(&self.table, to_item(&item)),
            Role::Named("webhook secret"),
        );
        self.push_audit(&mut tx, user, made_by, now);
        match self.execute(tx).await {
            Ok(()) => Ok((item.secrets(now.unix_timestamp()), true)),
            // A concurrent first request made it: that one is the secret.
            Err(StoreError::ConditionFailed(_)) => self
                .webhook_secrets(user, now)
                .await?
                .map(|s| (s, false))
                .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("webhook secret vanished"))),
            Err(e) => Err(e),
        }
    }

    /// The secrets that sign the user's webhooks now, if any was ever made.
    pub async fn webhook_secrets(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookSecrets>, StoreError> {
        Ok(self
            .get_item_as::<WebhookSecretItem>(item_key(keys::user_pk(user), WEBHOOK_SECRET_SK))
            .await?
            .map(|item| item.secrets(now.unix_timestamp())))
    }

    /// A new current secret; the old one keeps signing for 24 hours. `made` says whether
    /// there was none before (the rotation then simply makes the first).
    pub async fn rotate_webhook_secret(
        &self,
        user: UserId,
        fresh: String,
        origin: &Origin,
        now: OffsetDateTime,
    ) -> Result<(WebhookSecrets, bool), StoreError> {
        let key = item_key(keys::user_pk(user), WEBHOOK_SECRET_SK);
        let Some(old) = self.get_item_as::<WebhookSecretItem>(key.clone()).await? else {
            let made = AuditRecord::by_user(AuditAction::WebhookSecretCreated, origin, json!({}));
            return self.webhook_secret(user, || fresh, &made, now).await;
        };
        let rotate = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET previous = :old, previous_until = :until, #c = :fresh")
            // A concurrent rotation in between would otherwise lose the secret it made.
            .condition_expression("#c = :old")
            .expression_attribute_names("#c", "current")
            .expression_attribute_values(":old", AttributeValue::S(old.current.clone()))
            .expression_attribute_values(
                ":until",
                number(now.unix_timestamp() + WEBHOOK_SECRET_OVERLAP_SECS),
            )
            .expression_attribute_values(":fresh", AttributeValue::S(fresh.clone()))
            .build()
            .expect("table, key and expression are set");
        let mut tx = Tx::default();
        tx.push(
            TransactWriteItem::builder().update(rotate).build(),
            Role::Named("rotation"),
        );
        let record = AuditRecord::by_user(AuditAction::WebhookSecretRotated, origin, json!({}));
        self.push_audit(&mut tx, user, &record, now);
        match self.execute(tx).await {
            Ok(()) => {}
            // A concurrent rotation in between: the caller asks again.
            Err(StoreError::ConditionFailed("rotation")) => return Err(StoreError::Contention),
            Err(e) => return Err(e),
        }
        Ok((
            WebhookSecrets {
                current: fresh,
                previous: Some(old.current),
            },
            false,
        ))
    }
}
