//! The request guards every HTTP function shares: 413, 415, problem 404s.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use e2e_tests::{send, stack};
use shared::aws::dynamo::SignIn;
use shared::domain::user::Profile;

async fn nobody_signed_up_as(stack: &e2e_tests::Stack, email: &str) -> bool {
    let sign_in = SignIn {
        provider: "dev".into(),
        subject: email.into(),
        profile: Profile {
            email: Some(email.into()),
            name: "x".into(),
            avatar_url: None,
        },
        bonus: 0,
        bonus_limit: None,
        origin: Default::default(),
    };
    let (_, created) = stack.services.store.sign_in(&sign_in).await.unwrap();
    created
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413_and_writes_nothing() {
    let stack = stack("413", |_| {}).await;
    let padding = "x".repeat(1024 * 1024);
    let body = format!(r#"{{"email":"big@example.com","name":"{padding}"}}"#);

    let declared = send(
        &stack.router,
        Request::post("/auth/dev/login")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(Body::from(body.clone()))
            .unwrap(),
    )
    .await;
    // Without a declared length the extractor's limit still applies.
    let streamed = send(
        &stack.router,
        Request::post("/auth/dev/login")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap(),
    )
    .await;

    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(declared.code(), "payload_too_large");
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(nobody_signed_up_as(&stack, "big@example.com").await);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415_and_writes_nothing() {
    let stack = stack("415", |_| {}).await;
    let body = r#"{"email":"plain@example.com"}"#;

    let answer = send(
        &stack.router,
        Request::post("/auth/dev/login")
            .header("content-type", "text/plain")
            .header("content-length", body.len())
            .body(Body::from(body))
            .unwrap(),
    )
    .await;

    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "unsupported_media_type");
    assert!(nobody_signed_up_as(&stack, "plain@example.com").await);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_400() {
    let stack = stack("400", |_| {}).await;
    for body in ["[1,2]", "{not json", "\"text\""] {
        let answer = send(
            &stack.router,
            Request::post("/auth/dev/login")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.code(), "invalid_request");
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_problem_404_with_the_request_id() {
    let stack = stack("404", |_| {}).await;

    let answer = send(
        &stack.router,
        Request::get("/v1/nothing-here")
            .body(Body::empty())
            .unwrap(),
    )
    .await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["type"], "/problems/not_found");
    assert!(
        answer.body["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let wrong_method = send(
        &stack.router,
        Request::builder()
            .method(Method::DELETE)
            .uri("/v1/models")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        wrong_method.headers["content-type"],
        "application/problem+json"
    );
}
