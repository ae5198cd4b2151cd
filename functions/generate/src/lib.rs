//! Function `generate`: models, uploads and generations (`/v1/models`, `/v1/uploads`,
//! `/v1/generations*`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use shared::Services;
use shared::domain::catalog::{AspectRatio, MODELS, Mode};

/// This function's routes, without the shared layers (the local runner merges them).
pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/models", get(models))
}

/// The complete router the Lambda serves.
pub fn router(services: Arc<Services>) -> Router {
    shared::http::service(routes()).with_state(services)
}

#[derive(Serialize)]
struct ModelView {
    id: &'static str,
    name: &'static str,
    credits_per_image: i64,
    modes: &'static [Mode],
    max_reference_images: u8,
    aspect_ratios: &'static [AspectRatio],
    /// False where this deployment configures no provider for the model.
    available: bool,
}

#[derive(Serialize)]
struct Models {
    items: Vec<ModelView>,
}

async fn models(State(services): State<Arc<Services>>) -> Json<Models> {
    let providers = &services.settings.model_providers;
    Json(Models {
        items: MODELS
            .iter()
            .map(|m| ModelView {
                id: m.id,
                name: m.name,
                credits_per_image: m.credits_per_image().get(),
                modes: m.modes,
                max_reference_images: m.max_reference_images,
                aspect_ratios: m.aspect_ratios,
                available: providers.provider_for(m.id).is_some(),
            })
            .collect(),
    })
}
