//! What the deployed stack puts in front of the functions, played locally: the API's CORS
//! answers (API Gateway's `CorsConfiguration` in `template.yaml`) and the web app's static
//! files (CloudFront over the web bucket: `index.html` for the app's routes, hashed assets
//! cached for good, `index.html` never).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use shared::config::AppOrigins;
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

/// The HttpApi `CorsConfiguration` of `template.yaml`, value for value (a test reads the
/// template and compares): the origins are `APP_ORIGINS`, with credentials.
pub const CORS_ALLOW_HEADERS: &[&str] =
    &["Authorization", "Content-Type", "Idempotency-Key", "Prefer"];
pub const CORS_ALLOW_METHODS: &[&str] = &["GET", "POST", "DELETE", "OPTIONS"];
pub const CORS_EXPOSE_HEADERS: &[&str] = &["Location", "Retry-After", "Preference-Applied"];
pub const CORS_MAX_AGE_SECS: u64 = 600;

/// The first path segments the API serves; every other path belongs to the web app.
const API_PREFIXES: &[&str] = &["/v1", "/auth", "/webhooks"];

/// Answers CORS (preflights included) the way API Gateway does for the template's
/// configuration: only `origins`, with credentials, the configured headers and methods.
pub fn cors(origins: &AppOrigins) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .as_slice()
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let names = |list: &[&str]| -> Vec<HeaderName> {
        list.iter()
            .map(|h| HeaderName::from_bytes(h.as_bytes()).expect("a constant header name"))
            .collect()
    };
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_credentials(true)
        .allow_headers(names(CORS_ALLOW_HEADERS))
        .allow_methods(
            CORS_ALLOW_METHODS
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).expect("a constant method"))
                .collect::<Vec<_>>(),
        )
        .expose_headers(names(CORS_EXPOSE_HEADERS))
        .max_age(Duration::from_secs(CORS_MAX_AGE_SECS))
}

/// `origins` plus the runner's own: `http://127.0.0.1:PORT` and `http://localhost:PORT`
/// (and the bound address itself where it is neither loopback nor unspecified).
pub fn with_own_origin(
    origins: &AppOrigins,
    address: std::net::SocketAddr,
) -> Result<AppOrigins, shared::config::ConfigError> {
    let port = address.port();
    let mut all = origins.as_slice().to_vec();
    let mut own = vec![
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ];
    if !address.ip().is_loopback() && !address.ip().is_unspecified() {
        own.push(format!("http://{address}"));
    }
    for origin in own {
        if !all.contains(&origin) {
            all.push(origin);
        }
    }
    AppOrigins::parse(&all.join(","))
}

/// Whether a path is the API's (else the web app's).
pub fn is_api_path(path: &str) -> bool {
    API_PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The API (behind its CORS layer) and, where `dist` is given, the built web app on every
/// other path.
pub fn serve(api: Router, origins: &AppOrigins, dist: Option<PathBuf>) -> Router {
    let api = api.layer(cors(origins));
    let Some(dist) = dist else { return api };
    // Gzip for the app's files, as CloudFront compresses them (the API is left as Lambda
    // answers it).
    let files = tower::ServiceBuilder::new()
        .layer(CompressionLayer::new().gzip(true))
        .service(tower::service_fn(move |request: Request| {
            let dist = dist.clone();
            async move { Ok::<_, Infallible>(static_file(&dist, request).await) }
        }));
    Router::new().fallback_service(tower::service_fn(move |request: Request| {
        let api = api.clone();
        let files = files.clone();
        async move {
            if is_api_path(request.uri().path()) {
                api.oneshot(request).await
            } else {
                files.oneshot(request).await.map(|r| r.map(Body::new))
            }
        }
    }))
}

/// `Cache-Control` of a web app file: hashed build output never changes under its name,
/// everything else (`index.html` above all) is revalidated on every load.
pub fn cache_control(path: &str) -> &'static str {
    if path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

async fn static_file(dist: &Path, request: Request) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = request.uri().path().to_string();
    // An app route (no file extension) gets index.html; a missing file stays a 404, so a
    // stale asset name fails loudly instead of running HTML as a script.
    let looks_like_file = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    let index = dist.join("index.html");
    let served = if looks_like_file {
        ServeDir::new(dist).oneshot(request).await
    } else {
        ServeDir::new(dist)
            .fallback(ServeFile::new(&index))
            .oneshot(request)
            .await
    };
    let mut response = match served {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    let from_index = !looks_like_file;
    let control = if from_index {
        "no-cache"
    } else {
        cache_control(&path)
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(control));
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_the_api_prefixes_and_nothing_that_only_starts_like_them() {
        assert!(is_api_path("/v1/me"));
        assert!(is_api_path("/auth/dev/login"));
        assert!(is_api_path("/webhooks/stripe"));
        assert!(is_api_path("/v1"));
        assert!(!is_api_path("/"));
        assert!(!is_api_path("/gallery"));
        assert!(!is_api_path("/v1beta"));
        assert!(!is_api_path("/authors"));
    }

    #[test]
    fn hashed_assets_are_immutable_and_everything_else_is_revalidated() {
        assert_eq!(
            cache_control("/assets/index-3f2a.js"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cache_control("/index.html"), "no-cache");
        assert_eq!(cache_control("/favicon.svg"), "no-cache");
    }
}
