#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    shared::metrics::cold_start();
    let started = async {
        let (services, mut secrets) = shared::Services::from_env_with(auth::SECRET_NAMES).await?;
        let context =
            auth::AuthContext::from_lookup(|name| std::env::var(name).ok(), &mut secrets)?;
        anyhow::Ok((services, std::sync::Arc::new(context)))
    };
    let (services, context) = started.await.inspect_err(|e| {
        tracing::error!(error = format!("{e:#}"), "cold start failed");
    })?;
    lambda_http::run(auth::router(services, context)).await
}
