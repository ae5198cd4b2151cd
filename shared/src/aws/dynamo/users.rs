//! Users and identities.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::{self, IDENTITY, PK, PROFILE, SK};
use super::ledger::{parse_time, put_new, rfc3339};
use super::tx::{Role, Tx};
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::UserId;
use crate::domain::ledger::LedgerReason;
use crate::domain::user::{Profile, User};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The condition of every write that acts for a user (a debit, an upload, a worker's
/// finish, a payment's grant): the account is not deleted. Deleting marks the profile
/// first, so from that write on nothing acts for it, whatever token or key it comes with.
pub(crate) const LIVE: &str = "attribute_not_exists(deleted_at)";

/// Whether a profile item is a deleted account's tombstone.
pub(crate) fn is_deleted(profile: &Item) -> bool {
    profile.contains_key("deleted_at")
}

/// The check of every read that acts for a user: the profile exists, is not deleted and,
/// for a session, names the session's version (`None`: an API key, looked up already).
pub(crate) fn check_live(
    profile: Option<&Item>,
    session_version: Option<u64>,
) -> Result<(), StoreError> {
    let Some(profile) = profile else {
        return Err(StoreError::SessionRevoked);
    };
    if is_deleted(profile) {
        return Err(StoreError::AccountDeleted);
    }
    let current = profile
        .get("session_version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<u64>().ok());
    match session_version {
        Some(expected) if current != Some(expected) => Err(StoreError::SessionRevoked),
        _ => Ok(()),
    }
}

/// A sign-in by an external identity (`provider`, `subject`).
#[derive(Debug, Clone)]
pub struct SignIn {
    pub provider: String,
    pub subject: String,
    pub profile: Profile,
    /// Credits granted when this sign-in creates the user (0 for none).
    pub bonus: i64,
    /// Where the sign-in came from, with the most bonuses one address gets per day.
    pub bonus_limit: Option<(String, u32)>,
    /// The request, for the security log's `sign_in` entry.
    pub origin: crate::domain::audit::Origin,
}

impl SignIn {
    fn audit(&self, new_account: bool) -> crate::domain::audit::AuditRecord {
        crate::domain::audit::AuditRecord::by_user(
            crate::domain::audit::AuditAction::SignIn,
            &self.origin,
            serde_json::json!({"provider": self.provider, "new_account": new_account}),
        )
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::domain::generation::hex(&Sha256::digest(text.as_bytes()))
}

#[derive(Debug, Serialize, Deserialize)]
struct UserItem {
    pk: String,
    sk: String,
    id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    avatar_url: Option<String>,
    credits: i64,
    session_version: u64,
    created_at: String,
    /// The identity items that map to this user, removed with the account.
    #[serde(default)]
    identities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
    /// The current subscription, kept by the payment transactions that change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subscription: Option<crate::domain::payment::SubscriptionSummary>,
    /// Some grant's credits may still expire (kept by the grants and the expiry step).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    has_expiring: bool,
}

impl UserItem {
    fn into_user(self) -> User {
        User {
            id: self.id,
            email: self.email,
            name: self.name,
            avatar_url: self.avatar_url,
            credits: self.credits,
            session_version: self.session_version,
            subscription: self.subscription,
            created_at: parse_time(&self.created_at),
            has_expiring: self.has_expiring,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IdentityItem {
    pk: String,
    sk: String,
    user_id: UserId,
    created_at: String,
}

impl DynamoStore {
    /// The user of this identity, created on its first sign-in together with the identity
    /// mapping and the bonus ledger row in one transaction; concurrent first sign-ins make
    /// one user and one bonus. The flag says whether this call created the user.
    pub async fn sign_in(&self, sign_in: &SignIn) -> Result<(User, bool), StoreError> {
        if let Some(user) = self.user_of_identity(sign_in).await? {
            // A sign-in of a known user writes nothing else: its entry is a write of its
            // own (the only one; a new user's is in the transaction that makes it).
            self.append_audit(user.id, &sign_in.audit(false)).await?;
            return Ok((user, false));
        }
        let with_bonus = sign_in.bonus > 0;
        match self.create_user(sign_in, with_bonus).await {
            // This identity had a bonus before (an account deleted and made again), or its
            // address used up today's bonuses: the account is made without one.
            Err(StoreError::ConditionFailed("bonus marker" | "bonus per address")) => {
                tracing::info!("signup without bonus: already granted to this identity or address");
                self.create_user(sign_in, false).await
            }
            other => other,
        }
    }

    async fn create_user(
        &self,
        sign_in: &SignIn,
        with_bonus: bool,
    ) -> Result<(User, bool), StoreError> {
        let now = OffsetDateTime::now_utc();
        let id = UserId::new();
        let identity_pk = keys::identity_pk(&sign_in.provider, &sign_in.subject);
        let bonus = if with_bonus { sign_in.bonus } else { 0 };
        let user = UserItem {
            pk: keys::user_pk(id),
            sk: PROFILE.into(),
            id,
            email: sign_in.profile.email.clone(),
            name: sign_in.profile.name.clone(),
            avatar_url: sign_in.profile.avatar_url.clone(),
            credits: bonus,
            session_version: 0,
            created_at: rfc3339(now),
            identities: vec![identity_pk.clone()],
            deleted_at: None,
            subscription: None,
            has_expiring: false,
        };
        let identity = IdentityItem {
            pk: identity_pk.clone(),
            sk: IDENTITY.into(),
            user_id: id,
            created_at: rfc3339(now),
        };
        let mut tx = Tx::default();
        tx.push(
            put_new(&self.table, to_item(&identity)),
            Role::Named("identity"),
        );
        tx.push(put_new(&self.table, to_item(&user)), Role::Named("user"));
        self.push_audit(&mut tx, id, &sign_in.audit(true), now);
        if with_bonus {
            self.push_ledger_row(
                &mut tx,
                id,
                bonus,
                LedgerReason::SignupBonus,
                &id.to_string(),
                super::ledger::RowMeta::default(),
                now,
            );
            // Kept after account deletion (a hash, no personal data): one bonus per identity.
            let marker = item_key(format!("BONUS#{}", sha256_hex(&identity_pk)), "BONUS");
            tx.push(put_new(&self.table, marker), Role::Named("bonus marker"));
            if let Some((address, per_day)) = &sign_in.bonus_limit {
                let day = now.unix_timestamp() / 86_400;
                let counter = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(item_key(
                        format!("BONUSIP#{}", sha256_hex(address)),
                        &format!("DAY#{day}"),
                    )))
                    .update_expression("ADD #c :one SET expires_at = :exp")
                    .condition_expression("attribute_not_exists(pk) OR #c < :limit")
                    .expression_attribute_names("#c", "count")
                    .expression_attribute_values(":one", AttributeValue::N("1".into()))
                    .expression_attribute_values(
                        ":exp",
                        AttributeValue::N(((day + 2) * 86_400).to_string()),
                    )
                    .expression_attribute_values(":limit", AttributeValue::N(per_day.to_string()))
                    .build()
                    .expect("table, key and expression are set");
                tx.push(
                    TransactWriteItem::builder().update(counter).build(),
                    Role::Named("bonus per address"),
                );
            }
        }
        match self.execute(tx).await {
            Ok(()) => Ok((user.into_user(), true)),
            // Another first sign-in of the same identity won the race: use its user.
            Err(StoreError::ConditionFailed("identity")) => self
                .user_of_identity(sign_in)
                .await?
                .map(|user| (user, false))
                .ok_or_else(|| {
                    StoreError::Internal(anyhow::anyhow!("identity exists without its user"))
                }),
            Err(e) => Err(e),
        }
    }

    async fn user_of_identity(&self, sign_in: &SignIn) -> Result<Option<User>, StoreError> {
        let key = item_key(
            keys::identity_pk(&sign_in.provider, &sign_in.subject),
            IDENTITY,
        );
        let Some(identity) = self.get_item_as::<IdentityItem>(key.clone()).await? else {
            return Ok(None);
        };
        let user = self.get_user_item(identity.user_id).await?;
        if user.as_ref().is_some_and(is_deleted) {
            // Its account was deleted and its clean-up has not removed the mapping yet:
            // the identity is free, and signing in makes a new user.
            let freed = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression("user_id = :u")
                .expression_attribute_values(":u", AttributeValue::S(identity.user_id.to_string()))
                .send()
                .await;
            return match freed {
                Ok(_) => Ok(None),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    Ok(None)
                }
                Err(e) => Err(sdk_error(e)),
            };
        }
        user.map(from_item::<UserItem>)
            .transpose()
            .map(|u| u.map(UserItem::into_user))
    }

    /// The user a request acts for, read strongly consistent (a logout or a deletion takes
    /// effect at once): refused when deleted or, for a session, revoked.
    pub async fn acting_user(
        &self,
        id: UserId,
        session_version: Option<u64>,
    ) -> Result<User, StoreError> {
        let item = self.get_user_item(id).await?;
        check_live(item.as_ref(), session_version)?;
        let item = item.expect("check_live refuses a missing profile");
        Ok(from_item::<UserItem>(item)?.into_user())
    }

    /// The user, read strongly consistent (a logout must take effect at once); a deleted
    /// account's tombstone too (for the operator).
    pub async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self
            .get_item_as::<UserItem>(item_key(keys::user_pk(id), PROFILE))
            .await?
            .map(UserItem::into_user))
    }

    pub(crate) async fn get_user_item(&self, id: UserId) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(id), PROFILE)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.item)
    }

    /// Items of one partition whose sort key starts with `prefix`, newest (highest) first;
    /// the cursor is the opaque sort key of the last item returned.
    pub(crate) async fn query_page<T: DeserializeOwned>(
        &self,
        pk: String,
        prefix: &str,
        limit: u32,
        start_after: Option<String>,
    ) -> Result<(Vec<T>, Option<String>), StoreError> {
        let start = start_after.map(|sk| item_key(pk.clone(), &sk));
        // One more than asked tells whether a next page exists without another call.
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", AttributeValue::S(pk))
            .expression_attribute_values(":p", AttributeValue::S(prefix.into()))
            .scan_index_forward(false)
            .limit(limit as i32 + 1)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(sdk_error)?;
        let mut items = out.items.unwrap_or_default();
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .and_then(|i| i.get(SK))
                .and_then(|v| v.as_s().ok())
                .map(|sk| URL_SAFE_NO_PAD.encode(sk))
        } else {
            None
        };
        let rows = items.into_iter().map(from_item).collect::<Result<_, _>>()?;
        Ok((rows, next))
    }
}

impl DynamoStore {
    /// Every item of every page of `query`.
    pub(crate) async fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut pages = query.into_paginator().send();
        while let Some(page) = pages.next().await {
            items.extend(page.map_err(sdk_error)?.items.unwrap_or_default());
        }
        Ok(items)
    }
}

/// The sort key a cursor stands for; a cursor of another listing is refused.
pub(crate) fn decode_cursor(cursor: &str, prefix: &str) -> Result<String, StoreError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|sk| sk.starts_with(prefix) && sk.len() < 200)
        .ok_or(StoreError::InvalidCursor)
}

pub(crate) fn item_key(pk: String, sk: &str) -> Item {
    HashMap::from([
        (PK.to_string(), AttributeValue::S(pk)),
        (SK.to_string(), AttributeValue::S(sk.to_string())),
    ])
}

pub(crate) fn to_item<T: Serialize>(value: &T) -> Item {
    serde_dynamo::to_item(value).expect("our item types always serialize")
}

pub(crate) fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("unreadable item: {e}")))
}

impl DynamoStore {
    /// Revokes every session of the user by bumping `session_version`, if the caller's
    /// session is still the current one (else `SessionRevoked`).
    pub async fn revoke_sessions(
        &self,
        user: UserId,
        current_version: u64,
        origin: &crate::domain::audit::Origin,
    ) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let bump = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), PROFILE)))
            .update_expression("SET session_version = session_version + :one")
            .condition_expression(format!("session_version = :sv AND {LIVE}"))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":sv", AttributeValue::N(current_version.to_string()))
            .build()
            .expect("table, key and expression are set");
        let mut tx = Tx::default();
        tx.push(
            TransactWriteItem::builder().update(bump).build(),
            Role::Named("session"),
        );
        let entry = crate::domain::audit::AuditRecord::by_user(
            crate::domain::audit::AuditAction::Logout,
            origin,
            serde_json::json!({}),
        );
        self.push_audit(&mut tx, user, &entry, now);
        match self.execute(tx).await {
            Err(StoreError::ConditionFailed("session")) => Err(StoreError::SessionRevoked),
            other => other,
        }
    }
}

impl DynamoStore {
    /// Marks `key` used until `expires_at` (epoch seconds); `AlreadyApplied` if it was.
    pub async fn consume_once(&self, key: &str, expires_at: i64) -> Result<(), StoreError> {
        use sha2::{Digest, Sha256};
        let pk = format!(
            "ONCE#{}",
            crate::domain::generation::hex(&Sha256::digest(key.as_bytes()))
        );
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(pk))
            .item(SK, AttributeValue::S("ONCE".into()))
            .item("expires_at", AttributeValue::N(expires_at.to_string()))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::AlreadyApplied)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }
}
