//! `ApiError`: every failure a client can see, turned into the problem+json responses
//! of API.md in this one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::request_id;
use crate::aws::dynamo::StoreError;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no valid session")]
    Unauthorized,
    #[error("insufficient credits")]
    InsufficientCredits,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    /// A known path asked with a method it does not serve (the router adds `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("request body over 1 MiB")]
    PayloadTooLarge,
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("upstream failure")]
    Upstream(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::InvalidRequest(detail.into())
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::InvalidRequest(_) => (S::BAD_REQUEST, "invalid_request", "Invalid request"),
            Self::Unauthorized => (S::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::InsufficientCredits => (
                S::PAYMENT_REQUIRED,
                "insufficient_credits",
                "Insufficient credits",
            ),
            Self::Forbidden(_) => (S::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound => (S::NOT_FOUND, "not_found", "Not found"),
            Self::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            Self::Conflict { code, .. } => (S::CONFLICT, code, "Conflict"),
            Self::PayloadTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            Self::Validation(_) => (
                S::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Validation failed",
            ),
            Self::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limited", "Too many requests"),
            Self::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Self::Upstream(_) => (S::BAD_GATEWAY, "upstream", "Upstream failure"),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    /// What the client may read: never an internal cause.
    fn detail(&self) -> String {
        match self {
            Self::InvalidRequest(d) | Self::Forbidden(d) | Self::Unavailable(d) => d.clone(),
            Self::Conflict { detail, .. } => detail.clone(),
            Self::Unauthorized => "a valid session is required".into(),
            Self::InsufficientCredits => "the balance does not cover the cost".into(),
            Self::NotFound => "no such resource".into(),
            Self::MethodNotAllowed => "this path does not serve this method; see Allow".into(),
            Self::PayloadTooLarge => "the request body is larger than 1 MiB".into(),
            Self::UnsupportedMediaType => {
                "a request with a body must be sent as application/json".into()
            }
            Self::Validation(errors) => format!("{} invalid field(s)", errors.len()),
            Self::RateLimited { retry_after_secs } => {
                format!("too many requests; retry after {retry_after_secs} s")
            }
            Self::Upstream(_) => "a dependency failed; try again later".into(),
            Self::Internal(_) => "something went wrong on our side".into(),
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        match &self {
            Self::Internal(cause) | Self::Upstream(cause) => {
                tracing::error!(error = format!("{cause:#}"), code, "request failed");
            }
            Self::Unavailable(detail) => tracing::warn!(detail, "request refused: unavailable"),
            _ => {}
        }
        let problem = Problem {
            kind: format!("/problems/{code}"),
            title,
            status: status.as_u16(),
            detail: self.detail(),
            code,
            errors: match &self {
                Self::Validation(errors) => Some(errors),
                _ => None,
            },
            request_id: request_id(),
        };
        let body = serde_json::to_vec(&problem).expect("a problem always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Self::RateLimited { retry_after_secs } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InsufficientCredits => Self::InsufficientCredits,
            StoreError::SessionRevoked | StoreError::AccountDeleted => Self::Unauthorized,
            StoreError::NotFound => Self::NotFound,
            StoreError::InvalidCursor => Self::invalid("the cursor is not valid for this listing"),
            StoreError::RateLimited { retry_after_secs } => Self::RateLimited { retry_after_secs },
            StoreError::IdempotencyKeyReused => Self::Conflict {
                code: "idempotency_key_reused",
                detail: "this Idempotency-Key was used with a different request".into(),
            },
            StoreError::Contention => {
                Self::Unavailable("too much concurrent activity on this account; try again".into())
            }
            StoreError::Unavailable(cause) => {
                tracing::error!(error = format!("{cause:#}"), "storage unavailable");
                Self::Unavailable("storage is unavailable; try again".into())
            }
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}
