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
    // The same binary, scheduled: finishes account deletions whose request died.
    if std::env::var("AUTH_ROLE").as_deref() == Ok("deletion-sweep") {
        let sweep =
            lambda_runtime::service_fn(|_: lambda_runtime::LambdaEvent<serde_json::Value>| {
                let (services, context) = (services.clone(), context.clone());
                async move {
                    let finished = auth::deletion::sweep_deletions(
                        &services,
                        &context.billing,
                        auth::deletion::SWEEP_AFTER,
                    )
                    .await
                    .map_err(lambda_runtime::Error::from)?;
                    Ok::<_, lambda_runtime::Error>(serde_json::json!({ "finished": finished }))
                }
            });
        return lambda_runtime::run(sweep).await;
    }
    lambda_http::run(auth::router(services, context)).await
}
