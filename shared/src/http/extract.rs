//! Extractors: JSON bodies, sessions, pagination.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{Method, header};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{ApiError, MAX_BODY_BYTES, is_json};
use crate::Services;
use crate::aws::dynamo::api_keys::LAST_USED_RESOLUTION_SECS;
use crate::domain::secrets::{api_key_hash, is_api_key};
use crate::domain::user::User;
use crate::domain::{ApiKeyId, UserId};
use crate::session::SessionClaims;

/// A JSON object body: 415 without `application/json`, 413 over 1 MiB, 400 when it is
/// not JSON or not the expected shape.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::invalid("the request body could not be read")
                }
            })?
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| ApiError::invalid("the request body is not valid JSON"))?;
        if !value.is_object() {
            return Err(ApiError::invalid("the request body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("unexpected request body: {e}")))
    }
}

/// A verified session token whose revocation has not been checked yet: a handler turns it
/// into data only through a store call that also checks `session_version` (in the same
/// read or as the condition of its write), so no extra round trip is spent. Only a
/// session: an API key on a route that takes this is `403`.
#[derive(Debug, Clone)]
pub struct SessionToken(pub SessionClaims);

impl FromRequestParts<Arc<Services>> for SessionToken {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, ApiError> {
        match credential_of(parts, services)? {
            Credential::Session(claims) => Ok(Self(claims)),
            Credential::ApiKey(_) => Err(key_refused()),
        }
    }
}

fn key_refused() -> ApiError {
    ApiError::Forbidden("an API key cannot be used on this route; sign in".into())
}

/// Who calls a route that takes a session or an API key. A session's revocation is
/// checked by the store call the handler makes (`session_version`); a key was looked up
/// here (one strongly consistent read), so it is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    /// The session's version to check; `None` for an API key.
    pub session_version: Option<u64>,
    pub api_key: Option<ApiKeyId>,
}

impl FromRequestParts<Arc<Services>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, ApiError> {
        match credential_of(parts, services)? {
            Credential::Session(claims) => Ok(Self {
                user_id: claims.user_id,
                session_version: Some(claims.session_version),
                api_key: None,
            }),
            Credential::ApiKey(key) => {
                let hash = api_key_hash(key);
                let lookup = services
                    .store
                    .api_key(&hash)
                    .await?
                    .ok_or(ApiError::Unauthorized)?;
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                if lookup.last_used_at <= now - LAST_USED_RESOLUTION_SECS {
                    services.store.touch_api_key(&hash, now).await?;
                }
                Ok(Self {
                    user_id: lookup.user_id,
                    session_version: None,
                    api_key: Some(lookup.key_id),
                })
            }
        }
    }
}

enum Credential<'a> {
    Session(SessionClaims),
    ApiKey(&'a str),
}

/// The request's session claims or API key. A cookie is sent by the browser on cross-site
/// requests too: a state-changing request authenticated by one must come from one of our
/// origins (CSRF). Keys travel only in `Authorization`.
fn credential_of<'a>(parts: &'a Parts, services: &Services) -> Result<Credential<'a>, ApiError> {
    let (token, from_cookie) = token_of(parts).ok_or(ApiError::Unauthorized)?;
    if !from_cookie && is_api_key(token) {
        return Ok(Credential::ApiKey(token));
    }
    let claims = services
        .sessions
        .verify(token)
        .map_err(|_| ApiError::Unauthorized)?;
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if from_cookie && !safe {
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if !origin.is_some_and(|o| services.settings.app_origins.allows_origin(o)) {
            return Err(ApiError::Forbidden(
                "cookie-authenticated requests must come from an allowed Origin".into(),
            ));
        }
    }
    Ok(Credential::Session(claims))
}

/// The caller's user (session or API key), read with a strongly consistent read; a
/// session whose `session_version` moved on is refused.
pub struct CurrentUser(pub User);

impl FromRequestParts<Arc<Services>> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, services).await?;
        current_user(services, caller.user_id, caller.session_version).await
    }
}

/// Like [`CurrentUser`], for routes that take only a session (an API key is `403`).
pub struct SessionUser(pub User);

impl FromRequestParts<Arc<Services>> for SessionUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &Arc<Services>,
    ) -> Result<Self, ApiError> {
        let SessionToken(claims) = SessionToken::from_request_parts(parts, services).await?;
        let CurrentUser(user) =
            current_user(services, claims.user_id, Some(claims.session_version)).await?;
        Ok(Self(user))
    }
}

async fn current_user(
    services: &Services,
    user_id: UserId,
    session_version: Option<u64>,
) -> Result<CurrentUser, ApiError> {
    // The one read check of every kind of access (session or key): live, current.
    Ok(CurrentUser(
        services.store.acting_user(user_id, session_version).await?,
    ))
}

/// The session token from `Authorization: Bearer` (preferred) or the `nb_session` cookie;
/// the flag says whether it came from the cookie.
fn token_of(parts: &Parts) -> Option<(&str, bool)> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (token.trim(), false));
    }
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("nb_session="))
        .filter(|t| !t.is_empty())
        .map(|t| (t, true))
}

/// `?limit=` (1..=100, default 20) and `?cursor=`; anything else is a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Deserialize)]
struct RawPage {
    limit: Option<String>,
    cursor: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(raw) = Query::<RawPage>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("bad query string"))?;
        let limit = match raw.limit {
            None => 20,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| ApiError::invalid("limit must be a whole number in 1..=100"))?,
        };
        Ok(Self {
            limit,
            cursor: raw.cursor.filter(|c| !c.is_empty()),
        })
    }
}
