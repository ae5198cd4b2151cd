//! Function `auth`: sign-in, sessions and the account (`/auth/*`, `/v1/me*`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::Services;
use shared::aws::dynamo::SignIn;
use shared::domain::ledger::LedgerEntry;
use shared::domain::user::{Me, Profile};
use shared::http::{ApiError, CurrentUser, FieldError, JsonBody, Page, SessionToken};

/// This function's routes, without the shared layers (the local runner merges them).
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/auth/dev/login", post(dev_login))
        .route("/auth/logout", post(logout))
        .route("/v1/me", get(me))
        .route("/v1/me/ledger", get(ledger))
}

/// The complete router the Lambda serves.
pub fn router(services: Arc<Services>) -> Router {
    shared::http::service(routes()).with_state(services)
}

#[derive(Deserialize)]
struct DevLogin {
    email: String,
    name: Option<String>,
}

#[derive(Serialize)]
struct SignedIn {
    token: String,
    user: Me,
}

/// Local sign-in by email alone: only where `AUTH_DEV_LOGIN=1` (never deployed).
async fn dev_login(
    State(services): State<Arc<Services>>,
    JsonBody(body): JsonBody<DevLogin>,
) -> Result<Json<SignedIn>, ApiError> {
    if !services.settings.dev_login {
        return Err(ApiError::NotFound);
    }
    let email = body.email.trim().to_ascii_lowercase();
    let mut errors = Vec::new();
    let valid_email = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if !valid_email {
        errors.push(FieldError::new("email", "must be an email address"));
    }
    let name = match body.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => email.split('@').next().unwrap_or_default().to_string(),
    };
    if name.chars().count() > 100 {
        errors.push(FieldError::new("name", "must be at most 100 characters"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let sign_in = SignIn {
        provider: "dev".into(),
        subject: email.clone(),
        profile: Profile {
            email: Some(email),
            name,
            avatar_url: None,
        },
        bonus: services.settings.signup_bonus_credits,
    };
    let (user, created) = services.store.sign_in(&sign_in).await?;
    if created {
        tracing::info!(user_id = %user.id, "user signed up (dev login)");
    }
    let token = services.sessions.issue(user.id, user.session_version);
    Ok(Json(SignedIn {
        token,
        user: user.into(),
    }))
}

/// Revokes every session of the user (older tokens get 401 everywhere) and clears the cookie.
async fn logout(
    State(services): State<Arc<Services>>,
    SessionToken(claims): SessionToken,
) -> Result<impl IntoResponse, ApiError> {
    services
        .store
        .revoke_sessions(claims.user_id, claims.session_version)
        .await?;
    tracing::info!(user_id = %claims.user_id, "sessions revoked");
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            "nb_session=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Lax",
        )],
    ))
}

async fn me(CurrentUser(user): CurrentUser) -> Json<Me> {
    Json(user.into())
}

#[derive(Serialize)]
struct List<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

async fn ledger(
    State(services): State<Arc<Services>>,
    CurrentUser(user): CurrentUser,
    page: Page,
) -> Result<Json<List<LedgerEntry>>, ApiError> {
    let (items, next_cursor) = services
        .store
        .ledger_page(user.id, page.limit, page.cursor.as_deref())
        .await?;
    Ok(Json(List { items, next_cursor }))
}
