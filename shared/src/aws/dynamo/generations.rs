//! Generations, uploads, idempotency records and rate windows.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, TransactWriteItem, Update,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::{self, PK, PROFILE, SK};
use super::ledger::{BalanceChange, number, parse_time, put_new, rfc3339};
use super::tx::{Role, Tx};
use super::users::{Item, LIVE, check_live, decode_cursor, from_item, item_key, to_item};
use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::generation::{
    Generation, GenerationError, GenerationRequest, Status, StoredImage,
};
use crate::domain::ledger::LedgerReason;
use crate::domain::{Credits, GenerationId, UploadId, UserId};

/// Shards of the open-generations index, so the sweeper's queries spread over partitions.
pub const OPEN_SHARDS: u32 = 10;
/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;
/// How long an upload can be referenced.
pub const UPLOAD_TTL_SECS: i64 = 24 * 3600;

const GEN_PREFIX: &str = "GEN#";

pub(crate) fn gen_sk(id: GenerationId) -> String {
    format!("{GEN_PREFIX}{id}")
}

fn upload_sk(id: UploadId) -> String {
    format!("UPLOAD#{id}")
}

/// Fixed-width creation time first, so that the sweeper's `open_sk < cutoff` compares
/// times (RFC 3339 text trims trailing zeros of its fraction and does not sort).
pub(crate) fn open_sk(created: OffsetDateTime, id: GenerationId) -> String {
    format!("{}#{id}", open_sk_prefix(created))
}

pub(crate) fn open_sk_prefix(at: OffsetDateTime) -> String {
    format!("{:015}", at.unix_timestamp_nanos() / 1_000_000)
}

pub(crate) fn open_pk(id: GenerationId) -> String {
    let shard = (id.ulid().random() % u128::from(OPEN_SHARDS)) as u32;
    format!("OPEN#{shard}")
}

/// A generation as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GenerationItem {
    pub pk: String,
    pub sk: String,
    pub id: GenerationId,
    pub user_id: UserId,
    pub status: Status,
    pub model: String,
    pub prompt: String,
    pub n: u32,
    pub aspect_ratio: String,
    pub reference_images: Vec<String>,
    pub reference_keys: Vec<String>,
    pub cost: i64,
    /// Keyed by the image index, so each image is recorded on its own.
    #[serde(default)]
    pub images: HashMap<String, StoredImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<GenerationError>,
    #[serde(default)]
    pub refunded_credits: i64,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_sk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued_at: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<crate::hooks::WebhookConfig>,
}

impl GenerationItem {
    pub(crate) fn into_generation(self) -> Generation {
        let mut images: Vec<StoredImage> = self.images.into_values().collect();
        images.sort_by_key(|i| i.index);
        Generation {
            id: self.id,
            user_id: self.user_id,
            status: self.status,
            model: self.model,
            prompt: self.prompt,
            n: self.n,
            aspect_ratio: self.aspect_ratio,
            reference_images: self.reference_images,
            reference_keys: self.reference_keys,
            cost: self.cost,
            images,
            error: self.error,
            refunded_credits: self.refunded_credits,
            attempt: self.attempt,
            cancel_requested: self.cancel_requested,
            webhook: self.webhook,
            created_at: parse_time(&self.created_at),
            updated_at: parse_time(&self.updated_at),
            completed_at: self.completed_at.as_deref().map(parse_time),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyItem {
    pk: String,
    sk: String,
    fingerprint: String,
    generation_id: GenerationId,
    expires_at: i64,
}

/// An upload a user may reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub id: UploadId,
    pub key: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub expires_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct UploadItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    upload: Upload,
}

/// A request to accept: everything is validated and priced; references are resolved.
#[derive(Debug, Clone)]
pub struct NewGeneration<'a> {
    pub user: UserId,
    /// The session to check in the debit's condition; `None` for an API key (looked up
    /// already).
    pub session_version: Option<u64>,
    pub request: &'a GenerationRequest,
    pub reference_keys: Vec<String>,
    /// The hashed `Idempotency-Key` and the request's fingerprint.
    pub idempotency: Option<(String, String)>,
    pub rate_limit_per_minute: u32,
}

/// The outcome of accepting a generation.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Charged and written as `queued`; to be enqueued now.
    New(Generation),
    /// The same idempotency key and body were accepted before: that generation.
    Replay(Generation),
}

/// Hash of an idempotency key, as its sort key.
pub fn idempotency_sk(key: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "IDEMP#{}",
        crate::domain::generation::hex(&Sha256::digest(key.as_bytes()))
    )
}

impl DynamoStore {
    /// One transaction: the debit (covered by the balance, session still current), the
    /// generation as `queued` with its open-index key, its ledger row, the idempotency
    /// record (absent or expired before) and the rate window's count (under the limit).
    pub async fn accept_generation(&self, new: &NewGeneration<'_>) -> Result<Accepted, StoreError> {
        let now = OffsetDateTime::now_utc();
        let cost = new.request.cost();
        let id = GenerationId::new();
        let idempotency_sk = new.idempotency.as_ref().map(|(hash, _)| hash.clone());
        let mut tx = Tx::default();
        // Order matters: the first failed condition answers, and a replay (idempotency)
        // or the rate limit must win over a short balance.
        if let Some((sk, fingerprint)) = &new.idempotency {
            let record = IdempotencyItem {
                pk: keys::user_pk(new.user),
                sk: sk.clone(),
                fingerprint: fingerprint.clone(),
                generation_id: id,
                expires_at: now.unix_timestamp() + IDEMPOTENCY_TTL_SECS,
            };
            let put = aws_sdk_dynamodb::types::Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_item(&record)))
                .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
                .expression_attribute_values(":now", number(now.unix_timestamp()))
                .build()
                .expect("table and item are set");
            tx.push(
                TransactWriteItem::builder().put(put).build(),
                Role::Named("idempotency"),
            );
        }
        let minute = now.unix_timestamp() / 60;
        let rate = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(
                keys::user_pk(new.user),
                &format!("RATE#{minute}"),
            )))
            .update_expression("ADD #c :one SET expires_at = :exp")
            .condition_expression("attribute_not_exists(pk) OR #c < :limit")
            .expression_attribute_names("#c", "count")
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":exp", number((minute + 2) * 60))
            .expression_attribute_values(":limit", number(i64::from(new.rate_limit_per_minute)))
            .build()
            .expect("table, key and expression are set");
        tx.push(
            TransactWriteItem::builder().update(rate).build(),
            Role::Named("rate"),
        );
        let debit = BalanceChange::debit(new.user, cost, LedgerReason::Generation, id.to_string());
        self.push_change(&mut tx, &debit, new.session_version, false, now);
        let item = GenerationItem {
            pk: keys::user_pk(new.user),
            sk: gen_sk(id),
            id,
            user_id: new.user,
            status: Status::Queued,
            model: new.request.model.id.to_string(),
            prompt: new.request.prompt.as_str().to_string(),
            n: new.request.n,
            aspect_ratio: new.request.aspect_ratio.to_string(),
            reference_images: new
                .request
                .reference_images
                .iter()
                .map(ToString::to_string)
                .collect(),
            reference_keys: new.reference_keys.clone(),
            cost: cost.get(),
            images: HashMap::new(),
            error: None,
            refunded_credits: 0,
            attempt: 0,
            lease_until: None,
            created_at: rfc3339(now),
            updated_at: rfc3339(now),
            completed_at: None,
            open_pk: Some(open_pk(id)),
            open_sk: Some(open_sk(now, id)),
            idempotency_sk: idempotency_sk.clone(),
            lease_id: None,
            requeued_at: None,
            cancel_requested: false,
            webhook: new.request.webhook.clone(),
        };
        tx.push(
            put_new(&self.table, to_item(&item)),
            Role::Named("generation"),
        );
        match self.execute(tx).await {
            Ok(()) => Ok(Accepted::New(item.into_generation())),
            Err(StoreError::ConditionFailed("rate")) => Err(StoreError::RateLimited {
                retry_after_secs: (60 - now.unix_timestamp() % 60) as u64,
            }),
            Err(StoreError::ConditionFailed("idempotency")) => {
                let (sk, fingerprint) = new.idempotency.as_ref().expect("only with a key");
                self.replay(new.user, new.session_version, sk, fingerprint)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    /// The generation an earlier request with this key made, if the body was the same and
    /// the caller may still act: the record is read with the profile, and a revoked session
    /// or a deleted account is refused before anything of the generation is returned.
    async fn replay(
        &self,
        user: UserId,
        session_version: Option<u64>,
        sk: &str,
        fingerprint: &str,
    ) -> Result<Accepted, StoreError> {
        let items = self
            .batch_get(vec![
                item_key(keys::user_pk(user), PROFILE),
                item_key(keys::user_pk(user), sk),
            ])
            .await?;
        check_live(
            items.iter().find(|i| sk_of(i) == Some(PROFILE)),
            session_version,
        )?;
        let record = items
            .into_iter()
            .find(|i| sk_of(i) == Some(sk))
            .map(from_item::<IdempotencyItem>)
            .transpose()?;
        let Some(record) = record else {
            // Freed (an enqueue failed) between our write and this read: ask again.
            return Err(StoreError::Contention);
        };
        if record.fingerprint != fingerprint {
            return Err(StoreError::IdempotencyKeyReused);
        }
        match self.get_generation(user, record.generation_id).await? {
            Some(generation) => Ok(Accepted::Replay(generation)),
            None => Err(StoreError::IdempotencyKeyReused),
        }
    }

    /// After an enqueue failed: the generation fails, its cost comes back and its
    /// idempotency key is freed, in one transaction conditioned on it still being
    /// `queued`. `false` when a worker took it in the meantime (nothing changed).
    pub async fn fail_unsent(
        &self,
        generation: &Generation,
        idempotency_sk: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = Tx::default();
        let error = GenerationError {
            code: "enqueue_failed".into(),
            message: "the job could not be queued; its credits were refunded".into(),
        };
        self.push_end_queued(&mut tx, generation, Status::Failed, &error, None, now)?;
        if let Some(sk) = idempotency_sk {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(item_key(keys::user_pk(generation.user_id), sk)))
                .build()
                .expect("table and key are set");
            tx.push(
                TransactWriteItem::builder().delete(delete).build(),
                Role::Named("idempotency"),
            );
        }
        match self.execute(tx).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed("queued")) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds to `tx` the end of a generation that never ran: `status` with `error`, its
    /// whole cost refunded (the refund's balance update checking `session`, when given),
    /// out of the open index; conditioned on it still being `queued`, so a worker's claim
    /// and this end exclude each other (`ConditionFailed("queued")`).
    pub(crate) fn push_end_queued(
        &self,
        tx: &mut Tx,
        generation: &Generation,
        status: Status,
        error: &GenerationError,
        session: Option<u64>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(generation.user_id), &gen_sk(generation.id))))
            .update_expression(
                "SET #s = :final, #e = :error, refunded_credits = :cost, completed_at = :now, updated_at = :now REMOVE open_pk, open_sk",
            )
            .condition_expression("#s = :queued")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#e", "error")
            .expression_attribute_values(":final", AttributeValue::S(status.as_str().into()))
            .expression_attribute_values(":queued", AttributeValue::S("queued".into()))
            .expression_attribute_values(":error", AttributeValue::M(to_item(error)))
            .expression_attribute_values(":cost", number(generation.cost))
            .expression_attribute_values(":now", AttributeValue::S(rfc3339(now)))
            .build()
            .expect("table, key and expression are set");
        tx.push(
            TransactWriteItem::builder().update(update).build(),
            Role::Named("queued"),
        );
        let refund = BalanceChange::grant(
            generation.user_id,
            Credits::new(generation.cost).map_err(|e| StoreError::Internal(e.into()))?,
            LedgerReason::Refund,
            generation.id.to_string(),
        );
        self.push_change(tx, &refund, session, false, now);
        self.push_completed_hook(tx, generation, now);
        Ok(())
    }

    /// The user's generation, or `None` (another user's id is simply not found).
    pub async fn get_generation(
        &self,
        user: UserId,
        id: GenerationId,
    ) -> Result<Option<Generation>, StoreError> {
        Ok(self
            .get_item_as::<GenerationItem>(item_key(keys::user_pk(user), &gen_sk(id)))
            .await?
            .map(GenerationItem::into_generation))
    }

    /// The generation, read together with the user item in one `BatchGetItem` so that a
    /// revoked session (`session_version` moved on) is refused without another call. With
    /// `None` (an API key, looked up already) the user item need only exist.
    pub async fn get_generation_checked(
        &self,
        user: UserId,
        session_version: Option<u64>,
        id: GenerationId,
    ) -> Result<Option<Generation>, StoreError> {
        let profile = item_key(keys::user_pk(user), PROFILE);
        let generation = item_key(keys::user_pk(user), &gen_sk(id));
        let items = self.batch_get(vec![profile, generation]).await?;
        check_live(
            items.iter().find(|i| sk_of(i) == Some(PROFILE)),
            session_version,
        )?;
        items
            .into_iter()
            .find(|i| sk_of(i).is_some_and(|sk| sk.starts_with(GEN_PREFIX)))
            .map(|i| from_item::<GenerationItem>(i).map(GenerationItem::into_generation))
            .transpose()
    }

    /// Reads items in one `BatchGetItem` (strongly consistent), retrying what DynamoDB
    /// leaves unprocessed.
    pub(crate) async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::new();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Internal(e.into()))?,
        );
        for _ in 0..5 {
            let Some(request) = pending.take() else { break };
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(sdk_error)?;
            if let Some(mut responses) = out.responses {
                found.extend(responses.remove(&self.table).unwrap_or_default());
            }
            pending = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table));
        }
        match pending {
            None => Ok(found),
            Some(_) => Err(StoreError::Unavailable(anyhow::anyhow!(
                "BatchGetItem left keys unprocessed"
            ))),
        }
    }

    /// The user's generations, newest first.
    pub async fn list_generations(
        &self,
        user: UserId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Generation>, Option<String>), StoreError> {
        let start = cursor.map(|c| decode_cursor(c, GEN_PREFIX)).transpose()?;
        let (items, next) = self
            .query_page::<GenerationItem>(keys::user_pk(user), GEN_PREFIX, limit, start)
            .await?;
        Ok((
            items
                .into_iter()
                .map(GenerationItem::into_generation)
                .collect(),
            next,
        ))
    }

    /// Deletes a finished generation's item; `ConditionFailed("finished")` when it is
    /// still open, `NotFound` when there is none.
    pub async fn delete_finished_generation(
        &self,
        user: UserId,
        id: GenerationId,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), &gen_sk(id))))
            .condition_expression(
                "attribute_exists(pk) AND (#s = :ok OR #s = :failed OR #s = :canceled)",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":ok", AttributeValue::S("succeeded".into()))
            .expression_attribute_values(":failed", AttributeValue::S("failed".into()))
            .expression_attribute_values(":canceled", AttributeValue::S("canceled".into()))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c)) => {
                    if c.item().is_some() {
                        Err(StoreError::ConditionFailed("finished"))
                    } else {
                        Err(StoreError::NotFound)
                    }
                }
                _ => Err(sdk_error(e)),
            },
        }
    }

    /// Records an upload the user may reference until it expires, if the session is still
    /// current (or, for an API key, the user exists): one transaction (a condition check on
    /// the user and the put).
    pub async fn put_upload(
        &self,
        user: UserId,
        session_version: Option<u64>,
        upload: &Upload,
    ) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        let mut check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(keys::user_pk(user), PROFILE)))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            );
        check = match session_version {
            Some(version) => check
                .condition_expression(format!("session_version = :sv AND {LIVE}"))
                .expression_attribute_values(":sv", number(version as i64)),
            None => check.condition_expression(format!("attribute_exists(pk) AND {LIVE}")),
        };
        tx.push(
            TransactWriteItem::builder()
                .condition_check(check.build().expect("table, key and condition are set"))
                .build(),
            Role::Balance {
                user,
                expected_session: session_version,
                cost: None,
            },
        );
        let item = UploadItem {
            pk: keys::user_pk(user),
            sk: upload_sk(upload.id),
            upload: upload.clone(),
        };
        tx.push(put_new(&self.table, to_item(&item)), Role::Named("upload"));
        self.execute(tx).await
    }

    /// The user's unexpired uploads and generations among these ids, in one read.
    pub async fn references(
        &self,
        user: UserId,
        uploads: &[UploadId],
        generations: &[GenerationId],
    ) -> Result<(Vec<Upload>, Vec<Generation>), StoreError> {
        let keys = reference_item_keys(user, uploads, generations);
        if keys.is_empty() {
            return Ok((vec![], vec![]));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut found_uploads = Vec::new();
        let mut found_generations = Vec::new();
        // BatchGetItem takes at most 100 keys; a request has at most 10 references.
        for item in self.batch_get(keys).await? {
            match sk_of(&item) {
                Some(sk) if sk.starts_with("UPLOAD#") => {
                    let upload = from_item::<UploadItem>(item)?.upload;
                    if upload.expires_at > now {
                        found_uploads.push(upload);
                    }
                }
                Some(sk) if sk.starts_with(GEN_PREFIX) => {
                    found_generations.push(from_item::<GenerationItem>(item)?.into_generation());
                }
                _ => {}
            }
        }
        Ok((found_uploads, found_generations))
    }

    pub(crate) async fn get_item_as<T: serde::de::DeserializeOwned>(
        &self,
        key: Item,
    ) -> Result<Option<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        out.item.map(from_item).transpose()
    }
}

/// The keys to read for these references, each once, in the order first named: two
/// images of one generation (`gen_A/0`, `gen_B/0`, `gen_A/1`) are one item, and
/// `BatchGetItem` refuses a request that names a key twice.
pub(crate) fn reference_item_keys(
    user: UserId,
    uploads: &[UploadId],
    generations: &[GenerationId],
) -> Vec<Item> {
    let sks = uploads
        .iter()
        .map(|u| upload_sk(*u))
        .chain(generations.iter().map(|g| gen_sk(*g)));
    let mut seen = std::collections::HashSet::new();
    sks.filter(|sk| seen.insert(sk.clone()))
        .map(|sk| item_key(keys::user_pk(user), &sk))
        .collect()
}

fn sk_of(item: &Item) -> Option<&str> {
    item.get(SK).and_then(|v| v.as_s().ok()).map(String::as_str)
}

#[allow(dead_code)]
fn pk_of(item: &Item) -> Option<&str> {
    item.get(PK).and_then(|v| v.as_s().ok()).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sks(keys: &[Item]) -> Vec<String> {
        keys.iter().map(|k| sk_of(k).unwrap().to_string()).collect()
    }

    #[test]
    fn two_images_of_one_generation_name_its_item_once_even_when_not_adjacent() {
        let user = UserId::new();
        let (a, b) = (GenerationId::new(), GenerationId::new());
        let upload = UploadId::new();

        let keys = reference_item_keys(user, &[upload, upload], &[a, b, a]);

        assert_eq!(
            sks(&keys),
            [upload_sk(upload), gen_sk(a), gen_sk(b)],
            "each key once, in the order first named"
        );
        assert!(
            keys.iter()
                .all(|k| k.get(PK) == Some(&AttributeValue::S(keys::user_pk(user))))
        );
    }
}
