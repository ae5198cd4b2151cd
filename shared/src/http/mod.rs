//! The HTTP layer shared by `auth`, `generate` and `webhook`: problem responses, request
//! guards (size, content type), session extraction and the request-id span.

pub mod error;
pub mod extract;

use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

pub use error::{ApiError, FieldError};

use crate::domain::audit::Origin;
pub use extract::{Caller, CurrentUser, JsonBody, Page, SessionToken, SessionUser};

/// Largest request body we read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, if any (set by [`service`]).
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Wraps a function's routes with what every route shares: a problem+json 404/405, the
/// 413/415 guards, and a span naming the request so every log line carries its id.
pub fn service<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(guard_body))
        .layer(middleware::from_fn(request_context))
}

async fn request_context(request: Request, next: Next) -> Response {
    // Under Lambda, the invocation's request id; locally (no Lambda context), a fresh one.
    let id = request
        .extensions()
        .get::<lambda_http::Context>()
        .map(|c| c.request_id.clone())
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    // The path only: query strings can carry OAuth codes and state.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path()
    );
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| format!("{} {}", request.method(), p.as_str()))
        .unwrap_or_else(|| "unmatched".into());
    REQUEST_ID
        .scope(id, async move {
            let response = next.run(request).await;
            tracing::info!(
                status = response.status().as_u16(),
                latency_ms = started.elapsed().as_millis() as u64,
                "request served"
            );
            crate::metrics::millis("RouteLatency", started.elapsed(), &[("Route", &route)]);
            if response.status().is_server_error() {
                crate::metrics::count("ServerErrors", 1, &[("Route", &route)]);
            }
            response
        })
        .instrument(span)
        .await
}

/// 413 for a declared body over 1 MiB, 415 for a body that is not JSON (webhooks excepted:
/// providers choose their own content type), before any handler runs.
async fn guard_body(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    let has_body = length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    let carries_body = !matches!(*request.method(), Method::GET | Method::HEAD);
    if has_body
        && carries_body
        && !request.uri().path().starts_with("/webhooks/")
        && !is_json(request.headers())
    {
        return ApiError::UnsupportedMediaType.into_response();
    }
    next.run(request).await
}

/// The caller's address: API Gateway's `sourceIp` under Lambda; locally the first
/// `X-Forwarded-For` entry (tests), else the peer the local runner accepted.
pub fn client_ip(parts: &axum::http::request::Parts) -> Option<String> {
    if let Some(context) = api_gateway(parts) {
        return context.http.source_ip.clone();
    }
    parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|ip| ip.trim().to_string())
        .filter(|ip| !ip.is_empty())
        .or_else(|| {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|peer| peer.0.ip().to_string())
        })
}

fn api_gateway(
    parts: &axum::http::request::Parts,
) -> Option<&lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext> {
    match parts
        .extensions
        .get::<lambda_http::request::RequestContext>()?
    {
        lambda_http::request::RequestContext::ApiGatewayV2(context) => Some(context),
        _ => None,
    }
}

/// Where the request came from, for the security log: address, user agent (API
/// Gateway's `userAgent`, locally the header; cut at 512 characters) and request id.
#[derive(Debug, Clone, Default)]
pub struct RequestOrigin(pub Origin);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let agent = match api_gateway(parts) {
            Some(context) => context.http.user_agent.clone(),
            None => parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        Ok(Self(Origin::new(
            client_ip(parts),
            agent.as_deref(),
            request_id(),
        )))
    }
}

pub(crate) fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}
