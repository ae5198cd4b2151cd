//! The local runner plays what the deployed stack puts in front of the functions: CORS as
//! the template's HttpApi `CorsConfiguration` answers it, the bucket's CORS rule, and the
//! web app's files (SPA fallback, cache headers). These tests read `template.yaml` and
//! hold the runner to it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use http_body_util::BodyExt;
use local_runner::provision;
use local_runner::web;
use shared::config::AppOrigins;
use tower::ServiceExt;

const ORIGIN: &str = "https://app.example.com";

fn template() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("template.yaml");
    std::fs::read_to_string(path).expect("template.yaml")
}

/// The `Key: value` lines of the block that follows the line `marker`, read up to the first
/// line indented no deeper than the marker (the template keeps these blocks flat).
fn block(text: &str, marker: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == marker)
        .unwrap_or_else(|| panic!("template.yaml has no {marker}"));
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(lines[start]);
    lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .filter_map(|l| {
            let (key, value) = l.trim().trim_start_matches("- ").split_once(':')?;
            Some((key.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn value<'a>(block: &'a [(String, String)], key: &str) -> &'a str {
    block
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in the CORS block"))
}

/// `[A, B, "C"]` as a set, lowercased (header names and methods compare that way).
fn list(text: &str) -> BTreeSet<String> {
    text.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_ascii_lowercase()).collect()
}

fn header_set(headers: &HeaderMap, name: &str) -> BTreeSet<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The template's HttpApi CORS (the first `CorsConfiguration:`, under `HttpApi`).
fn api_cors() -> Vec<(String, String)> {
    let text = template();
    let at = text.find("  HttpApi:\n").expect("the HttpApi resource");
    block(&text[at..], "CorsConfiguration:")
}

/// The image bucket's CORS rule (`CorsRules:` under `ImageBucket`).
fn bucket_cors() -> Vec<(String, String)> {
    let text = template();
    let at = text
        .find("  ImageBucket:\n")
        .expect("the ImageBucket resource");
    block(&text[at..], "CorsRules:")
}

/// A stand-in for the API behind the runner's layers: one route that exposes headers.
fn api() -> Router {
    Router::new().route(
        "/v1/generations",
        get(|| async {
            (
                StatusCode::ACCEPTED,
                [
                    (header::LOCATION, "/v1/generations/gen_1"),
                    (header::RETRY_AFTER, "3"),
                ],
            )
                .into_response()
        }),
    )
}

fn dist() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nb-dist-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><div id=root></div>").unwrap();
    std::fs::write(dir.join("assets/index-abc123.js"), "console.log(1)").unwrap();
    std::fs::write(dir.join("favicon.svg"), "<svg/>").unwrap();
    dir
}

fn runner() -> Router {
    let origins = AppOrigins::parse(ORIGIN).unwrap();
    web::serve(api(), &origins, Some(dist()))
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/v1/generations")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type,idempotency-key,prefer",
        )
        .body(Body::empty())
        .unwrap()
}

#[test]
fn the_runner_s_cors_settings_are_the_template_s() {
    let cors = api_cors();
    // The runner answers APP_ORIGINS; deployed, that variable is built from the very list
    // the API's CORS allows: the app's CloudFront URL and the AppOrigins parameter.
    let origins = value(&cors, "AllowOrigins");
    assert!(origins.contains("WebDistribution.DomainName") && origins.contains("AppOrigins"));
    let app_origins = template()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("APP_ORIGINS:")
                .map(str::trim)
                .map(String::from)
        })
        .expect("APP_ORIGINS in the template");
    assert_eq!(app_origins, format!("!Join [\",\", {origins}]"));
    assert_eq!(value(&cors, "AllowCredentials"), "true");
    assert_eq!(
        list(value(&cors, "AllowHeaders")),
        set(web::CORS_ALLOW_HEADERS)
    );
    assert_eq!(
        list(value(&cors, "AllowMethods")),
        set(web::CORS_ALLOW_METHODS)
    );
    assert_eq!(
        list(value(&cors, "ExposeHeaders")),
        set(web::CORS_EXPOSE_HEADERS)
    );
    assert_eq!(value(&cors, "MaxAge"), web::CORS_MAX_AGE_SECS.to_string());
    // API.md names these exactly.
    assert_eq!(
        set(web::CORS_ALLOW_HEADERS),
        set(&["Authorization", "Content-Type", "Idempotency-Key", "Prefer"])
    );
    assert_eq!(
        set(web::CORS_EXPOSE_HEADERS),
        set(&["Location", "Retry-After", "Preference-Applied"])
    );
}

#[test]
fn the_emulator_bucket_s_cors_rule_is_the_template_s() {
    let rule = bucket_cors();
    assert_eq!(
        value(&rule, "AllowedOrigins"),
        value(&api_cors(), "AllowOrigins"),
        "the bucket allows the API's origins"
    );
    assert_eq!(
        list(value(&rule, "AllowedMethods")),
        set(provision::BUCKET_CORS_METHODS)
    );
    assert_eq!(
        list(value(&rule, "AllowedHeaders")),
        set(provision::BUCKET_CORS_HEADERS)
    );
    assert_eq!(
        list(value(&rule, "ExposedHeaders")),
        set(provision::BUCKET_CORS_EXPOSE)
    );
    assert_eq!(
        value(&rule, "MaxAge"),
        provision::BUCKET_CORS_MAX_AGE_SECS.to_string()
    );
}

#[tokio::test]
async fn a_preflight_from_an_app_origin_is_answered_as_the_template_configures() {
    let cors = api_cors();
    let (status, headers, _) = send(&runner(), preflight(ORIGIN)).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], ORIGIN);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(
        header_set(&headers, "access-control-allow-methods"),
        list(value(&cors, "AllowMethods"))
    );
    assert_eq!(
        header_set(&headers, "access-control-allow-headers"),
        list(value(&cors, "AllowHeaders"))
    );
    assert_eq!(
        headers[header::ACCESS_CONTROL_MAX_AGE],
        value(&cors, "MaxAge")
    );
}

#[tokio::test]
async fn a_preflight_from_another_origin_gets_no_cors_grant() {
    let (_, headers, _) = send(&runner(), preflight("https://evil.example")).await;
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn an_api_answer_to_an_app_origin_exposes_the_template_s_headers() {
    let cors = api_cors();
    let request = Request::builder()
        .uri("/v1/generations")
        .header(header::ORIGIN, ORIGIN)
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&runner(), request).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], ORIGIN);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(
        header_set(&headers, "access-control-expose-headers"),
        list(value(&cors, "ExposeHeaders"))
    );
}

#[tokio::test]
async fn the_app_s_routes_get_index_html_never_cached() {
    let router = runner();
    for path in [
        "/",
        "/gallery",
        "/gallery/gen_01JAAAAAAAAAAAAAAAAAAAAAAA",
        "/buy/success",
    ] {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let (status, headers, body) = send(&router, request).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.contains("id=root"), "{path} serves index.html");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
}

#[tokio::test]
async fn hashed_assets_are_cached_for_good_and_a_missing_one_is_a_404() {
    let router = runner();
    let request = Request::builder()
        .uri("/assets/index-abc123.js")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "console.log(1)");
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    let request = Request::builder()
        .uri("/assets/index-gone.js")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains("id=root"), "no HTML for a missing script");
    let request = Request::builder()
        .uri("/favicon.svg")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&router, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
}

#[tokio::test]
async fn the_app_s_files_are_gzipped_for_a_browser_that_accepts_it() {
    let request = Request::builder()
        .uri("/")
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&runner(), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
}

#[tokio::test]
async fn api_paths_never_fall_back_to_the_app() {
    let request = Request::builder()
        .uri("/v1/nothing-here")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&runner(), request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains("id=root"));
}

#[tokio::test]
async fn the_emulator_bucket_answers_a_browser_upload_preflight_from_the_app() {
    let sdk = e2e_tests::sdk_config().await;
    let s3 = shared::aws::s3_client(&sdk);
    let bucket = e2e_tests::unique_prefix("webcors");
    provision::ensure_bucket(&s3, &bucket).await.unwrap();
    provision::ensure_bucket_cors(&s3, &bucket, &[ORIGIN.to_string()])
        .await
        .unwrap();
    let answer = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/{bucket}/uploads/x", e2e_tests::endpoint()),
        )
        .header("origin", ORIGIN)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(answer.headers()["access-control-allow-origin"], ORIGIN);
    let methods = header_set(answer.headers(), "access-control-allow-methods");
    assert_eq!(methods, set(provision::BUCKET_CORS_METHODS));
}
