//! The deployed shape and the contract agree: template routes = OpenAPI routes, and the
//! sample API Gateway events go through `lambda_http`'s deserialization to our routers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use e2e_tests::{send, stack};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// (METHOD, path) of every HttpApi event: `Path:` then `Method:` on the next line.
fn template_routes() -> BTreeSet<(String, String)> {
    let text = read("template.yaml");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter_map(|pair| {
            let path = pair[0].strip_prefix("Path:")?.trim();
            let method = pair[1].strip_prefix("Method:")?.trim();
            Some((
                method.trim_matches('"').to_uppercase(),
                path.trim_matches('"').to_string(),
            ))
        })
        .collect()
}

/// (METHOD, path) of every operation under `paths:` in openapi.yaml.
fn openapi_routes() -> BTreeSet<(String, String)> {
    let text = read("openapi.yaml");
    let mut routes = BTreeSet::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.starts_with("paths:");
            continue;
        }
        if !in_paths {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if indent == 2 && trimmed.starts_with('/') {
            current = Some(
                trimmed
                    .trim_end_matches(':')
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string(),
            );
        } else if indent == 4 {
            let key = trimmed.trim_end_matches(':');
            if ["get", "post", "put", "patch", "delete"].contains(&key)
                && let Some(path) = &current
            {
                routes.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn the_template_and_the_openapi_document_declare_the_same_routes() {
    let template = template_routes();
    let openapi = openapi_routes();

    assert!(template.len() >= 19, "{template:?}");
    assert_eq!(template, openapi);
}

#[tokio::test]
async fn an_api_gateway_v2_event_is_served_by_the_router() {
    let stack = stack("apigw", |_| {}).await;
    let event = read("events/apigw-v2-get-models.json");
    let request = lambda_http::request::from_str(&event).expect("a valid API Gateway v2 event");
    let request = request.map(|body| axum::body::Body::from(body.to_vec()));

    let answer = send(&stack.router, request).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["items"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn the_dev_login_event_signs_in() {
    let stack = stack("apigwlogin", |_| {}).await;
    let event = read("events/apigw-v2-post-dev-login.json");
    let request = lambda_http::request::from_str(&event).expect("a valid API Gateway v2 event");
    let request = request.map(|body| axum::body::Body::from(body.to_vec()));

    let answer = send(&stack.router, request).await;

    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["user"]["credits"], 10);
}

#[tokio::test]
async fn every_template_route_is_served_by_the_routers() {
    let stack = stack("routes", |_| {}).await;
    let id = shared::domain::GenerationId::new().to_string();

    for (method, path) in template_routes() {
        let concrete = path.replace("{provider}", "google").replace("{id}", &id);
        let request = axum::http::Request::builder()
            .method(method.as_str())
            .uri(&concrete)
            .body(axum::body::Body::empty())
            .unwrap();
        let answer = send(&stack.router, request).await;
        // Unknown routes fall back to 404 with this detail; wrong methods to a 405.
        let fell_back = answer.status == StatusCode::NOT_FOUND
            && answer.body["detail"] == "no such resource"
            && !concrete.contains(&id);
        assert!(!fell_back, "{method} {path} is not routed");
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_known_path_with_a_method_it_does_not_serve_is_405_with_allow() {
    let stack = stack("allow", |_| {}).await;
    let request = axum::http::Request::builder()
        .method("PUT")
        .uri("/v1/generations")
        .body(axum::body::Body::empty())
        .unwrap();

    let answer = send(&stack.router, request).await;

    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.code(), "method_not_allowed");
    let allow = answer.headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}
