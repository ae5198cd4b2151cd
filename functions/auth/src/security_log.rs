//! `GET /v1/me/security-log`: the caller's own entries, newest first. Session only.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shared::Services;
use shared::domain::audit::AuditEntry;
use shared::http::{ApiError, Page, SessionUser};

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/me/security-log", get(security_log))
}

#[derive(Serialize)]
struct Entries {
    items: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

async fn security_log(
    State(services): State<Arc<Services>>,
    SessionUser(user): SessionUser,
    page: Page,
) -> Result<Json<Entries>, ApiError> {
    let (items, next_cursor) = services
        .store
        .audit_page(user.id, page.limit, page.cursor.as_deref())
        .await?;
    Ok(Json(Entries { items, next_cursor }))
}
