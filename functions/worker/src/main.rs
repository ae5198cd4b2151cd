use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    shared::metrics::cold_start();
    let worker = worker::Worker::from_env().await.inspect_err(|e| {
        tracing::error!(error = format!("{e:#}"), "cold start failed");
    })?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let worker = worker.clone();
        let deadline = worker::deadline_from_epoch_ms(event.context.deadline);
        async move { worker.handle(event.payload, deadline).await }
    }))
    .await
}
