//! `GET /v1/models` and `GET /v1/products`: the catalogs as the contract lists them.

use axum::http::{Method, StatusCode};
use e2e_tests::{request, send, stack};
use shared::config::ModelProviders;

#[tokio::test]
async fn models_list_prices_and_availability_from_configuration() {
    let stack = stack("models", |s| {
        s.model_providers = ModelProviders::parse("nano-banana=local").unwrap();
    })
    .await;

    let answer = send(
        &stack.router,
        request(Method::GET, "/v1/models", None, None),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    let items = answer.body["items"].as_array().unwrap();
    let summary: Vec<(&str, i64, bool)> = items
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap(),
                m["credits_per_image"].as_i64().unwrap(),
                m["available"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("nano-banana", 2, true),
            ("nano-banana-pro", 4, false),
            ("seedream-4.0", 5, false),
            ("sora-image", 6, false),
            ("flux-kontext-pro", 3, false),
            ("flux-kontext-max", 8, false),
        ]
    );
    assert_eq!(
        items[0]["modes"],
        serde_json::json!(["text-to-image", "image-edit"])
    );
    assert!(
        items[0]["aspect_ratios"]
            .as_array()
            .unwrap()
            .contains(&"1:1".into())
    );
}

#[tokio::test]
async fn products_list_the_default_catalog() {
    let stack = stack("products", |_| {}).await;

    let answer = send(
        &stack.router,
        request(Method::GET, "/v1/products", None, None),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    let items = answer.body["items"].as_array().unwrap();
    let ids: Vec<_> = items
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["credits"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("credits_100", 100),
            ("credits_500", 500),
            ("pro_monthly", 600),
            ("pro_yearly", 7200)
        ]
    );
    assert_eq!(items[2]["kind"], "subscription");
    assert_eq!(items[2]["interval"], "month");
    assert_eq!(items[0]["interval"], serde_json::Value::Null);
    assert!(items[0]["price"]["amount"].as_u64().is_some());
}
