//! The local runner: every HTTP route of `auth`, `generate` and `webhook` on one port,
//! through the same routers the Lambdas serve, against the local AWS emulator.

pub mod provision;
pub mod pump;
pub mod web;

use std::sync::Arc;

use axum::Router;
use shared::Services;
use shared::config::{ConfigError, Settings};

/// The three HTTP functions' routes behind the shared layers, as one router.
pub fn http_router(services: Arc<Services>, auth: Arc<auth::AuthContext>) -> Router {
    let routes = auth::routes(auth)
        .merge(generate::routes())
        .merge(webhook::routes());
    shared::http::service(routes).with_state(services)
}

/// Settings from the environment, with the names and URLs of the provisioned resources.
pub fn local_settings(
    names: &provision::Names,
    provisioned: &provision::Provisioned,
) -> Result<Settings, ConfigError> {
    Settings::from_lookup(|name| match name {
        "TABLE_NAME" => Some(names.table.clone()),
        "BUCKET_NAME" => Some(names.bucket.clone()),
        "QUEUE_URL" => Some(provisioned.queue_url.clone()),
        "DLQ_URL" => Some(provisioned.dlq_url.clone()),
        "HOOKS_QUEUE_URL" => Some(provisioned.hooks_queue_url.clone()),
        other => std::env::var(other).ok(),
    })
}
