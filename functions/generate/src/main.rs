#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    shared::metrics::cold_start();
    let services = shared::Services::from_env().await.inspect_err(|e| {
        tracing::error!(error = format!("{e:#}"), "cold start failed");
    })?;
    lambda_http::run(generate::router(services)).await
}
