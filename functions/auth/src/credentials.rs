//! What a user makes for programs: API keys (`/v1/api-keys*`) and the webhook signing
//! secret (`/v1/webhook-secret*`). Session only: a key cannot make keys or read secrets.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::Services;
use shared::aws::dynamo::StoreError;
use shared::aws::dynamo::api_keys::{ApiKeyView, NewKeyRecord};
use shared::domain::ApiKeyId;
use shared::domain::audit::{AuditAction, AuditRecord};
use shared::domain::secrets::{MAX_API_KEYS, NewApiKey, new_webhook_secret};
use shared::http::{ApiError, JsonBody, RequestOrigin, SessionToken, SessionUser};
use time::OffsetDateTime;

/// Longest key name, in characters.
const MAX_NAME_CHARS: usize = 100;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/api-keys", post(create_key).get(list_keys))
        .route("/v1/api-keys/{id}", delete(revoke_key))
        .route("/v1/webhook-secret", get(webhook_secret))
        .route("/v1/webhook-secret/rotate", post(rotate_webhook_secret))
}

#[derive(Deserialize)]
struct NewKey {
    name: String,
}

/// The key, shown this once.
#[derive(Serialize)]
struct CreatedKey {
    id: ApiKeyId,
    name: String,
    key: String,
    prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

async fn create_key(
    State(services): State<Arc<Services>>,
    SessionToken(claims): SessionToken,
    RequestOrigin(origin): RequestOrigin,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<Response, ApiError> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::validation("name", "must be 1 to 100 characters"));
    }
    let id = ApiKeyId::new();
    let made = NewApiKey::generate();
    let now = OffsetDateTime::now_utc();
    match services
        .store
        .create_api_key(
            claims.user_id,
            claims.session_version,
            &NewKeyRecord {
                id,
                name: &name,
                hash: &made.hash,
                prefix: &made.prefix,
            },
            &origin,
            now,
        )
        .await
    {
        Ok(()) => {}
        Err(StoreError::ConditionFailed("limit")) => {
            return Err(ApiError::validation(
                "name",
                format!("at most {MAX_API_KEYS} active API keys; revoke one first"),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user_id = %claims.user_id, key_id = %id, prefix = %made.prefix, "API key created");
    let created = CreatedKey {
        id,
        name,
        prefix: made.prefix.clone(),
        key: made.key,
        created_at: now,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Serialize)]
struct KeyList {
    items: Vec<ApiKeyView>,
    next_cursor: Option<String>,
}

/// Every live key (at most ten, so one page).
async fn list_keys(
    State(services): State<Arc<Services>>,
    SessionToken(claims): SessionToken,
) -> Result<Json<KeyList>, ApiError> {
    let items = services
        .store
        .list_api_keys(claims.user_id, claims.session_version)
        .await?;
    Ok(Json(KeyList {
        items,
        next_cursor: None,
    }))
}

async fn revoke_key(
    State(services): State<Arc<Services>>,
    SessionToken(claims): SessionToken,
    RequestOrigin(origin): RequestOrigin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = ApiKeyId::parse(&id).map_err(|_| ApiError::NotFound)?;
    services
        .store
        .revoke_api_key(claims.user_id, claims.session_version, id, &origin)
        .await?;
    tracing::info!(user_id = %claims.user_id, key_id = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct SecretView {
    secret: String,
}

/// The current secret, made on the first request.
async fn webhook_secret(
    State(services): State<Arc<Services>>,
    SessionUser(user): SessionUser,
    RequestOrigin(origin): RequestOrigin,
) -> Result<Json<SecretView>, ApiError> {
    let made_by = AuditRecord::by_user(AuditAction::WebhookSecretCreated, &origin, json!({}));
    let (secrets, made) = services
        .store
        .webhook_secret(
            user.id,
            new_webhook_secret,
            &made_by,
            OffsetDateTime::now_utc(),
        )
        .await?;
    if made {
        tracing::info!(user_id = %user.id, "webhook secret created");
    }
    Ok(Json(SecretView {
        secret: secrets.current,
    }))
}

/// A new secret; events carry a signature with each secret for the next 24 hours.
async fn rotate_webhook_secret(
    State(services): State<Arc<Services>>,
    SessionUser(user): SessionUser,
    RequestOrigin(origin): RequestOrigin,
) -> Result<Json<SecretView>, ApiError> {
    let (secrets, _) = services
        .store
        .rotate_webhook_secret(
            user.id,
            new_webhook_secret(),
            &origin,
            OffsetDateTime::now_utc(),
        )
        .await?;
    tracing::info!(user_id = %user.id, "webhook secret rotated");
    Ok(Json(SecretView {
        secret: secrets.current,
    }))
}
