//! Function `webhook`: products, checkout and payment webhooks (`/v1/products`,
//! `/v1/checkout`, `/v1/billing/portal`, `/webhooks/*`).

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shared::Services;
use shared::domain::products::{PRODUCTS, Product};

/// This function's routes, without the shared layers (the local runner merges them).
pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/products", get(products))
}

/// The complete router the Lambda serves.
pub fn router(services: Arc<Services>) -> Router {
    shared::http::service(routes()).with_state(services)
}

#[derive(Serialize)]
struct Products {
    items: &'static [Product],
}

async fn products() -> Json<Products> {
    Json(Products { items: PRODUCTS })
}
