//! `local-runner`: provisions the local resources, then serves every HTTP route on
//! `HOST:PORT` (default 127.0.0.1:3000). Started by `infra/run.sh`.

use std::sync::Arc;

use local_runner::provision::{self, Names};
use local_runner::pump;
use shared::Services;
use shared::aws::Clients;
use shared::aws::secrets::Secrets;
use shared::config::require_strong;
use shared::providers::{self, ProviderSettings};
use worker::Worker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let prefix = std::env::var("LOCAL_PREFIX").unwrap_or_else(|_| "nb-local".into());
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());

    let sdk = shared::aws::load_sdk_config().await?;
    let names = Names::with_prefix(&prefix);
    let provisioned = provision::ensure_all(&sdk, &names).await?;
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
    let address = listener.local_addr()?;
    let mut settings = local_runner::local_settings(&names, &provisioned)?;
    // The runner serves the web app itself: its own origin makes the app's cookie requests
    // (and sign-in redirects back to it) pass, whatever port was picked.
    settings.app_origins = local_runner::web::with_own_origin(&settings.app_origins, address)?;
    provision::ensure_bucket_cors(
        &shared::aws::s3_client(&sdk),
        &names.bucket,
        settings.app_origins.as_slice(),
    )
    .await?;
    let origins = settings.app_origins.clone();
    // The built web app (infra/run.sh sets it); without it only the API is served.
    let web_dist = std::env::var_os("WEB_DIST")
        .map(std::path::PathBuf::from)
        .filter(|dist| dist.join("index.html").is_file());
    let mut names_wanted = vec!["SESSION_SECRET"];
    names_wanted.extend_from_slice(providers::SECRET_NAMES);
    names_wanted.extend_from_slice(auth::SECRET_NAMES);
    names_wanted.extend_from_slice(shared::payments::SECRET_NAMES);
    let mut secrets = Secrets::load(&sdk, &names_wanted).await?;
    let secret = require_strong("SESSION_SECRET", secrets.take("SESSION_SECRET"))?;
    let providers = providers::build_providers(
        &settings.model_providers,
        &ProviderSettings::from_env()?,
        &mut secrets,
    )?;
    let clients = Clients::new(&sdk, None);
    let worker = Arc::new(Worker::new(&settings, &clients, providers));
    let hooks = worker
        .hooks
        .clone()
        .expect("the local stack has a hooks queue");
    let services = Arc::new(Services::new(settings, &sdk, &secret, None));
    let auth = Arc::new(auth::AuthContext::from_lookup(
        |name| std::env::var(name).ok(),
        &mut secrets,
    )?);
    let payments = Arc::new(shared::payments::Payments::from_lookup(
        |name| std::env::var(name).ok(),
        &mut secrets,
    )?);

    // The worker, fed from both queues and swept on a schedule, as deployed.
    tokio::spawn(pump::pump(
        worker.clone(),
        clients.sqs.clone(),
        provisioned.queue_url.clone(),
    ));
    tokio::spawn(pump::pump(
        worker.clone(),
        clients.sqs.clone(),
        provisioned.dlq_url.clone(),
    ));
    tokio::spawn(pump::pump_hooks(
        hooks,
        clients.sqs.clone(),
        provisioned.hooks_queue_url.clone(),
    ));
    let sweep_secs = std::env::var("SWEEP_INTERVAL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    tokio::spawn(pump::sweep_every(
        worker,
        std::time::Duration::from_secs(sweep_secs),
    ));
    // As the scheduled deletion sweep does deployed.
    tokio::spawn(pump::sweep_deletions_every(
        services.clone(),
        auth.clone(),
        std::time::Duration::from_secs(sweep_secs),
    ));

    // The line scripts and tests wait for: keep its shape.
    println!("local-runner listening on http://{address}");
    tracing::info!(%address, table = %names.table, queue = %provisioned.queue_url, "serving");
    let api = webhook::with_payments(local_runner::http_router(services, auth), payments);
    let router = local_runner::web::serve(api, &origins, web_dist);
    // The peer address is what the security log records locally, as API Gateway's
    // `sourceIp` is deployed (shared::http::client_ip).
    let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// Ctrl-C in a terminal, SIGTERM from a script.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
