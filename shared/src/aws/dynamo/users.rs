//! Users and identities.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::{self, IDENTITY, PK, PROFILE, SK};
use super::ledger::{put_new, rfc3339};
use super::tx::{Role, Tx};
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::UserId;
use crate::domain::ledger::LedgerReason;
use crate::domain::user::{Profile, User};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// A sign-in by an external identity (`provider`, `subject`).
#[derive(Debug, Clone)]
pub struct SignIn {
    pub provider: String,
    pub subject: String,
    pub profile: Profile,
    /// Credits granted when this sign-in creates the user (0 for none).
    pub bonus: i64,
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
            created_at: OffsetDateTime::parse(
                &self.created_at,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
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
            return Ok((user, false));
        }
        let now = OffsetDateTime::now_utc();
        let id = UserId::new();
        let user = UserItem {
            pk: keys::user_pk(id),
            sk: PROFILE.into(),
            id,
            email: sign_in.profile.email.clone(),
            name: sign_in.profile.name.clone(),
            avatar_url: sign_in.profile.avatar_url.clone(),
            credits: sign_in.bonus,
            session_version: 0,
            created_at: rfc3339(now),
        };
        let identity = IdentityItem {
            pk: keys::identity_pk(&sign_in.provider, &sign_in.subject),
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
        if sign_in.bonus > 0 {
            self.push_ledger_row(
                &mut tx,
                id,
                sign_in.bonus,
                LedgerReason::SignupBonus,
                &id.to_string(),
                now,
            );
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
        let Some(identity) = self.get_item_as::<IdentityItem>(key).await? else {
            return Ok(None);
        };
        self.get_user(identity.user_id).await
    }

    /// The user, read strongly consistent (a logout must take effect at once).
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
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), PROFILE)))
            .update_expression("SET session_version = session_version + :one")
            .condition_expression("session_version = :sv")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":sv", AttributeValue::N(current_version.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::SessionRevoked)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }
}
