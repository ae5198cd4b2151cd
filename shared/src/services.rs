//! The state an HTTP function builds once at cold start and lends to every request.

use std::sync::Arc;

use aws_config::SdkConfig;

use crate::aws::Clients;
use crate::aws::counting::CallCounter;
use crate::aws::dynamo::DynamoStore;
use crate::aws::s3::BlobStore;
use crate::aws::secrets::Secrets;
use crate::aws::sqs::JobQueue;
use crate::config::{Secret, Settings, require_strong};
use crate::hooks::target::Targets;
use crate::session::SessionKeys;

/// Settings, storage, queue and session keys: shared by every request of a function.
#[derive(Debug)]
pub struct Services {
    pub settings: Settings,
    pub store: DynamoStore,
    pub blobs: BlobStore,
    pub queue: JobQueue,
    pub sessions: SessionKeys,
    /// Where completion webhooks may go (checked at create time).
    pub hook_targets: Targets,
}

impl Services {
    /// Reads settings and the session secret (from the environment or SSM) and builds the
    /// clients from one SDK configuration. Fails with a message naming what is missing.
    pub async fn from_env() -> anyhow::Result<Arc<Self>> {
        Ok(Self::from_env_with(&[]).await?.0)
    }

    /// Like `from_env`, also reading the function's own `secret_names` in the same single
    /// SSM call; returns those for the function to take.
    pub async fn from_env_with(secret_names: &[&str]) -> anyhow::Result<(Arc<Self>, Secrets)> {
        let settings = Settings::from_env()?;
        let sdk = crate::aws::load_sdk_config().await?;
        let mut names = vec!["SESSION_SECRET"];
        names.extend_from_slice(secret_names);
        let mut secrets = Secrets::load(&sdk, &names).await?;
        let secret = require_strong("SESSION_SECRET", secrets.take("SESSION_SECRET"))?;
        Ok((Arc::new(Self::new(settings, &sdk, &secret, None)), secrets))
    }

    /// With `counter`, every AWS call is counted (tests, benchmarks).
    pub fn new(
        settings: Settings,
        sdk: &SdkConfig,
        session_secret: &Secret,
        counter: Option<&CallCounter>,
    ) -> Self {
        let clients = Clients::new(sdk, counter);
        Self {
            store: DynamoStore::new(clients.dynamo, settings.table_name.clone())
                .with_audit_retention(settings.audit_retention),
            blobs: BlobStore::new(clients.s3, settings.bucket_name.clone()),
            queue: JobQueue::new(clients.sqs, settings.queue_url.clone()),
            sessions: SessionKeys::new(session_secret, settings.session_ttl),
            hook_targets: Targets::new(settings.webhook_allow_loopback),
            settings,
        }
    }
}
