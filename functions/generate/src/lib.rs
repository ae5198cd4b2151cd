//! Function `generate`: models, uploads and generations (`/v1/models`, `/v1/uploads`,
//! `/v1/generations*`).

pub mod wait;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::Services;
use shared::aws::dynamo::cancel::Canceled;
use shared::aws::dynamo::generations::{UPLOAD_TTL_SECS, idempotency_sk};
use shared::aws::dynamo::{Accepted, NewGeneration, StoreError, Upload};
use shared::aws::s3::UPLOAD_URL_TTL;
use shared::aws::sqs::GenerationJob;
use shared::domain::catalog::{AspectRatio, MODELS, Mode};
use shared::domain::generation::{
    CreateGeneration, Generation, GenerationRequest, GenerationView, ReferenceImage,
};
use shared::domain::{GenerationId, UploadId, UserId};
use shared::hooks::{HookEvent, WebhookConfig};
use shared::http::{ApiError, Caller, CurrentUser, FieldError, JsonBody, Page};
use time::OffsetDateTime;

/// Largest reference image a client may upload.
pub const MAX_UPLOAD_BYTES: i64 = 10 * 1024 * 1024;
const UPLOAD_TYPES: &[&str] = &["image/png", "image/jpeg", "image/webp"];

/// This function's routes, without the shared layers (the local runner merges them).
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/uploads", post(create_upload))
        .route(
            "/v1/generations",
            post(create_generation).get(list_generations),
        )
        .route(
            "/v1/generations/{id}",
            get(read_generation).delete(delete_generation),
        )
        .route("/v1/generations/{id}/cancel", post(cancel_generation))
}

/// The complete router the Lambda serves.
pub fn router(services: Arc<Services>) -> Router {
    shared::http::service(routes()).with_state(services)
}

#[derive(Serialize)]
struct ModelView {
    id: &'static str,
    name: &'static str,
    credits_per_image: i64,
    modes: &'static [Mode],
    max_reference_images: u8,
    aspect_ratios: &'static [AspectRatio],
    /// False where this deployment configures no provider for the model.
    available: bool,
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
}

#[derive(Serialize)]
struct Listing<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

async fn models(State(services): State<Arc<Services>>) -> Json<Items<ModelView>> {
    let providers = &services.settings.model_providers;
    Json(Items {
        items: MODELS
            .iter()
            .map(|m| ModelView {
                id: m.id,
                name: m.name,
                credits_per_image: m.credits_per_image().get(),
                modes: m.modes,
                max_reference_images: m.max_reference_images,
                aspect_ratios: m.aspect_ratios,
                // Any listed host makes it available; the worker refuses to start without
                // the key of a host it lists.
                available: providers.is_available(m.id),
            })
            .collect(),
    })
}

#[derive(Deserialize)]
struct NewUpload {
    content_type: String,
    size_bytes: i64,
}

#[derive(Serialize)]
struct UploadTicket {
    id: UploadId,
    upload_url: String,
    method: &'static str,
    headers: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// A presigned PUT for one reference image, with its type and exact size signed.
async fn create_upload(
    State(services): State<Arc<Services>>,
    claims: Caller,
    JsonBody(body): JsonBody<NewUpload>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    if !UPLOAD_TYPES.contains(&body.content_type.as_str()) {
        errors.push(FieldError::new(
            "content_type",
            "must be image/png, image/jpeg or image/webp",
        ));
    }
    if !(1..=MAX_UPLOAD_BYTES).contains(&body.size_bytes) {
        errors.push(FieldError::new(
            "size_bytes",
            "must be between 1 and 10485760 (10 MiB)",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let id = UploadId::new();
    let key = format!("uploads/{}/{id}", claims.user_id);
    let presigned = services
        .blobs
        .presign_upload(&key, &body.content_type, body.size_bytes)
        .await?;
    let now = OffsetDateTime::now_utc();
    let upload = Upload {
        id,
        key,
        content_type: body.content_type.clone(),
        size_bytes: body.size_bytes,
        expires_at: now.unix_timestamp() + UPLOAD_TTL_SECS,
    };
    services
        .store
        .put_upload(claims.user_id, claims.session_version, &upload)
        .await?;
    let mut headers = serde_json::Map::new();
    headers.insert("Content-Type".into(), body.content_type.into());
    headers.insert("Content-Length".into(), body.size_bytes.to_string().into());
    for (name, value) in presigned.headers {
        if !name.eq_ignore_ascii_case("content-type")
            && !name.eq_ignore_ascii_case("content-length")
        {
            headers.insert(name, value.into());
        }
    }
    let ticket = UploadTicket {
        id,
        upload_url: presigned.url,
        method: "PUT",
        headers,
        expires_at: now + UPLOAD_URL_TTL,
    };
    Ok((StatusCode::CREATED, Json(ticket)).into_response())
}

/// Validate, price, charge and record in one transaction, then enqueue: 202 (after
/// waiting for the result, with `Prefer: wait`).
async fn create_generation(
    State(services): State<Arc<Services>>,
    claims: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateGeneration>,
) -> Result<Response, ApiError> {
    let request = validated(&services, &body).await?;
    let idempotency_key = idempotency_key(&headers)?;
    if !services
        .settings
        .model_providers
        .is_available(request.model.id)
    {
        return Err(ApiError::Unavailable(format!(
            "{} is not available in this deployment",
            request.model.id
        )));
    }
    let reference_keys =
        resolve_references(&services, claims.user_id, &request.reference_images).await?;
    let new = NewGeneration {
        user: claims.user_id,
        session_version: claims.session_version,
        request: &request,
        reference_keys,
        idempotency: idempotency_key.map(|key| (idempotency_sk(key), request.fingerprint())),
        rate_limit_per_minute: services.settings.rate_limit_per_minute,
    };
    let wait = wait::preferred(&headers);
    let generation = match services.store.accept_generation(&new).await? {
        Accepted::Replay(generation) => {
            tracing::info!(generation_id = %generation.id, "idempotent replay");
            return accepted(&services, generation, wait).await;
        }
        Accepted::New(generation) => generation,
    };
    tracing::info!(
        generation_id = %generation.id,
        model = %generation.model,
        cost = generation.cost,
        "generation accepted"
    );
    shared::metrics::count("GenerationsAccepted", 1, &[("Model", &generation.model)]);
    shared::metrics::count(
        "CreditsSpent",
        generation.cost as u64,
        &[("Model", &generation.model)],
    );
    let job = GenerationJob {
        generation_id: generation.id,
        user_id: generation.user_id,
    };
    if let Err(error) = services.queue.send(&job).await {
        tracing::error!(error = format!("{:#}", anyhow::Error::new(error)), generation_id = %generation.id, "enqueue failed");
        let idempotency = new.idempotency.as_ref().map(|(sk, _)| sk.as_str());
        let refunded = services.store.fail_unsent(&generation, idempotency).await?;
        if refunded {
            shared::metrics::count(
                "CreditsRefunded",
                generation.cost as u64,
                &[("Reason", "enqueue_failed")],
            );
            notify_completed(&services, &generation).await;
            return Err(ApiError::Unavailable(
                "the generation could not be queued; nothing was charged".into(),
            ));
        }
        // A worker (sent by the sweeper) already holds it: it is on its way.
    }
    accepted(&services, generation, wait).await
}

/// Every field of the body checked, the webhook's URL by where it resolves to; all the
/// invalid ones reported in one `422`.
async fn validated(
    services: &Services,
    body: &CreateGeneration,
) -> Result<GenerationRequest, ApiError> {
    let parsed = GenerationRequest::parse(body);
    let webhook = match &body.webhook {
        None => Ok(None),
        Some(_) if services.settings.hooks_queue_url.is_none() => {
            return Err(ApiError::Unavailable(
                "completion webhooks are not available in this deployment".into(),
            ));
        }
        Some(webhook) => WebhookConfig::parse(webhook, &services.hook_targets)
            .await
            .map(Some),
    };
    match (parsed, webhook) {
        (Ok(mut request), Ok(webhook)) => {
            request.webhook = webhook;
            Ok(request)
        }
        (parsed, webhook) => {
            let mut errors = parsed.err().unwrap_or_default();
            errors.extend(webhook.err().unwrap_or_default());
            Err(ApiError::Validation(errors))
        }
    }
}

/// Sends the `completed` event of a generation this request ended (its delivery was
/// recorded with the end, so a failed send is only late: the sweeper sends it again).
async fn notify_completed(services: &Services, generation: &Generation) {
    let url = services.settings.hooks_queue_url.as_deref();
    services
        .queue
        .send_event(url, generation, HookEvent::Completed)
        .await;
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters, when present.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| {
            (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        })
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid("Idempotency-Key must be 1 to 255 printable ASCII characters")
        })
}

async fn accepted(
    services: &Services,
    generation: Generation,
    wait: Option<u64>,
) -> Result<Response, ApiError> {
    let location = format!("/v1/generations/{}", generation.id);
    let generation = wait::until_final(services, generation, wait).await?;
    let view = view(services, generation).await?;
    let mut response = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response();
    wait::applied(&mut response, wait);
    Ok(response)
}

/// The S3 keys of the reference images: the caller's own unexpired uploads, present in S3
/// with the declared type and size, or images of the caller's own succeeded generations.
async fn resolve_references(
    services: &Services,
    user: UserId,
    references: &[ReferenceImage],
) -> Result<Vec<String>, ApiError> {
    if references.is_empty() {
        return Ok(vec![]);
    }
    let upload_ids: Vec<UploadId> = references
        .iter()
        .filter_map(|r| match r {
            ReferenceImage::Upload(id) => Some(*id),
            ReferenceImage::Result(..) => None,
        })
        .collect();
    let generation_ids: Vec<GenerationId> = references
        .iter()
        .filter_map(|r| match r {
            ReferenceImage::Result(id, _) => Some(*id),
            ReferenceImage::Upload(_) => None,
        })
        .collect();
    let (uploads, generations) = services
        .store
        .references(user, &upload_ids, &generation_ids)
        .await?;
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    for (i, reference) in references.iter().enumerate() {
        let field = format!("reference_images[{i}]");
        match reference {
            ReferenceImage::Upload(id) => {
                let Some(upload) = uploads.iter().find(|u| u.id == *id) else {
                    errors.push(FieldError::new(field, "no such upload"));
                    continue;
                };
                match services.blobs.head(&upload.key).await? {
                    None => errors.push(FieldError::new(field, "the upload was never completed")),
                    Some(object)
                        if object.size != upload.size_bytes
                            || object.content_type.as_deref()
                                != Some(upload.content_type.as_str()) =>
                    {
                        errors.push(FieldError::new(
                            field,
                            "the uploaded file does not match its declared type and size",
                        ))
                    }
                    Some(_) => keys.push(upload.key.clone()),
                }
            }
            ReferenceImage::Result(id, index) => {
                let image = generations
                    .iter()
                    .find(|g| {
                        g.id == *id && g.status == shared::domain::generation::Status::Succeeded
                    })
                    .and_then(|g| g.images.iter().find(|img| img.index == *index));
                match image {
                    Some(image) => keys.push(image.key.clone()),
                    None => errors.push(FieldError::new(field, "no such image")),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// The API view, with presigned image URLs (signed locally: no AWS call).
async fn view(services: &Services, generation: Generation) -> Result<GenerationView, ApiError> {
    Ok(services.blobs.view(generation).await?)
}

fn parse_id(id: &str) -> Result<GenerationId, ApiError> {
    // A malformed id names nothing: the same 404 as another user's.
    GenerationId::parse(id).map_err(|_| ApiError::NotFound)
}

async fn read_generation(
    State(services): State<Arc<Services>>,
    claims: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let generation = services
        .store
        .get_generation_checked(claims.user_id, claims.session_version, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let wait = wait::preferred(&headers);
    let generation = wait::until_final(&services, generation, wait).await?;
    let mut response = Json(view(&services, generation).await?).into_response();
    wait::applied(&mut response, wait);
    Ok(response)
}

/// `queued` -> `canceled` and refunded at once; `running` -> marked for its worker to
/// stop; a final one is `409 not_cancelable`.
async fn cancel_generation(
    State(services): State<Arc<Services>>,
    claims: Caller,
    Path(id): Path<String>,
) -> Result<Json<GenerationView>, ApiError> {
    let id = parse_id(&id)?;
    let canceled = services
        .store
        .cancel_generation(claims.user_id, claims.session_version, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let generation = match canceled {
        Canceled::Queued(generation) => {
            tracing::info!(generation_id = %id, refunded = generation.cost, "queued generation canceled");
            notify_completed(&services, &generation).await;
            shared::metrics::count("GenerationsCanceled", 1, &[("State", "queued")]);
            shared::metrics::count(
                "CreditsRefunded",
                generation.cost as u64,
                &[("Reason", "canceled")],
            );
            *generation
        }
        Canceled::Requested(generation) => {
            tracing::info!(generation_id = %id, "cancel requested of a running generation");
            shared::metrics::count("GenerationsCanceled", 1, &[("State", "running")]);
            *generation
        }
        Canceled::AlreadyFinal(status) => {
            return Err(ApiError::Conflict {
                code: "not_cancelable",
                detail: format!("the generation has already ended ({})", status.as_str()),
            });
        }
    };
    Ok(Json(view(&services, generation).await?))
}

async fn list_generations(
    State(services): State<Arc<Services>>,
    CurrentUser(user): CurrentUser,
    page: Page,
) -> Result<Json<Listing<GenerationView>>, ApiError> {
    let (generations, next_cursor) = services
        .store
        .list_generations(user.id, page.limit, page.cursor.as_deref())
        .await?;
    let mut items = Vec::with_capacity(generations.len());
    for generation in generations {
        items.push(view(&services, generation).await?);
    }
    Ok(Json(Listing { items, next_cursor }))
}

/// A finished generation and its images are deleted; an open one is 409.
async fn delete_generation(
    State(services): State<Arc<Services>>,
    claims: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let generation = services
        .store
        .get_generation_checked(claims.user_id, claims.session_version, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let still_open = || ApiError::Conflict {
        code: "generation_not_finished",
        detail: "a queued or running generation cannot be deleted".into(),
    };
    if !generation.status.is_final() {
        return Err(still_open());
    }
    // Images first: if the item went first and this failed, nothing would point at them.
    let keys: Vec<String> = generation.images.iter().map(|i| i.key.clone()).collect();
    services.blobs.delete(&keys).await?;
    match services
        .store
        .delete_finished_generation(claims.user_id, id)
        .await
    {
        Ok(()) | Err(StoreError::NotFound) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::ConditionFailed(_)) => Err(still_open()),
        Err(e) => Err(e.into()),
    }
}
