use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    shared::metrics::cold_start();
    let started = async {
        let (services, mut secrets) =
            shared::Services::from_env_with(shared::payments::SECRET_NAMES).await?;
        let payments =
            shared::payments::Payments::from_lookup(|name| std::env::var(name).ok(), &mut secrets)?;
        anyhow::Ok((services, Arc::new(payments)))
    };
    let (services, payments) = started.await.inspect_err(|e| {
        tracing::error!(error = format!("{e:#}"), "cold start failed");
    })?;
    lambda_http::run(webhook::router(services, payments)).await
}
