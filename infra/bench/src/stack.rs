//! A stack of its own on the emulator (table, bucket, queues, provisioned by the local
//! runner's code), the HTTP routers over it in-process, and the helpers that create
//! users and generations through those routers.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use local_runner::provision::{self, Names, Provisioned};
use serde_json::{Value, json};
use shared::Services;
use shared::aws::Clients;
use shared::aws::counting::CallCounter;
use shared::aws::dynamo::BalanceChange;
use shared::aws::sqs::GenerationJob;
use shared::config::{Secret, Settings};
use shared::domain::ledger::LedgerReason;
use shared::domain::{Credits, GenerationId, UserId};
use tower::ServiceExt;

pub const APP_ORIGIN: &str = "https://app.example.com";

pub struct Stack {
    pub names: Names,
    pub provisioned: Provisioned,
    pub sdk: aws_config::SdkConfig,
    pub services: Arc<Services>,
    pub router: Router,
    /// Counts every AWS call `services` makes.
    pub calls: CallCounter,
    pub secret: String,
}

/// A fresh session key: 52 characters of two ULIDs (160 random bits).
pub fn session_secret() -> String {
    format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new())
}

impl Stack {
    /// Provisions `bench-<what>-<ulid>` on the emulator named by `AWS_ENDPOINT_URL`.
    pub async fn new(what: &str) -> anyhow::Result<Self> {
        let sdk = shared::aws::load_sdk_config().await?;
        let prefix = format!(
            "bench-{what}-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let names = Names::with_prefix(&prefix);
        let provisioned = provision::ensure_all(&sdk, &names)
            .await
            .context("provisioning the benchmark's stack on the emulator")?;
        let secret = session_secret();
        let settings = Settings::from_lookup(|name| {
            Self::setting(&names, &provisioned, &secret, name).or_else(|| match name {
                // In-process only: the spawned functions never serve dev sign-in.
                "AUTH_DEV_LOGIN" => Some("1".into()),
                _ => None,
            })
        })?;
        let calls = CallCounter::default();
        let services = Arc::new(Services::new(
            settings,
            &sdk,
            &Secret::new(secret.clone()),
            Some(&calls),
        ));
        let auth = auth::AuthContext::from_lookup(
            |_| None,
            &mut shared::aws::secrets::Secrets::default(),
        )?;
        let router = local_runner::http_router(services.clone(), Arc::new(auth));
        Ok(Self {
            names,
            provisioned,
            sdk,
            services,
            router,
            calls,
            secret,
        })
    }

    fn setting(
        names: &Names,
        provisioned: &Provisioned,
        secret: &str,
        name: &str,
    ) -> Option<String> {
        Some(match name {
            "TABLE_NAME" => names.table.clone(),
            "BUCKET_NAME" => names.bucket.clone(),
            "QUEUE_URL" => provisioned.queue_url.clone(),
            "DLQ_URL" => provisioned.dlq_url.clone(),
            "SESSION_SECRET" => secret.to_string(),
            "APP_ORIGINS" => APP_ORIGIN.into(),
            "MODEL_PROVIDERS" => "*=local".into(),
            // The benchmark sends far more than a person may in a minute.
            "RATE_LIMIT_PER_MINUTE" => "1000000".into(),
            _ => return None,
        })
    }

    /// The variables a spawned function needs to use this stack.
    pub fn function_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            "TABLE_NAME",
            "BUCKET_NAME",
            "QUEUE_URL",
            "DLQ_URL",
            "SESSION_SECRET",
            "APP_ORIGINS",
            "MODEL_PROVIDERS",
            "RATE_LIMIT_PER_MINUTE",
        ]
        .iter()
        .filter_map(|name| {
            Self::setting(&self.names, &self.provisioned, &self.secret, name)
                .map(|v| (name.to_string(), v))
        })
        .collect();
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            env.push(("AWS_ENDPOINT_URL".into(), endpoint));
        }
        env
    }

    /// Clients on this stack, counting into `counter` when given.
    pub fn clients(&self, counter: Option<&CallCounter>) -> Clients {
        Clients::new(&self.sdk, counter)
    }

    /// Sends one request through the routers; the status and the JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.request(method, path, token, body, &[]).await
    }

    /// A bodiless request with extra headers (`Prefer`).
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.request(method, path, token, None, headers).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))?,
            None => request.body(Body::empty())?,
        };
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// A user signed in through dev sign-in, granted `credits`: (token, id).
    pub async fn user(&self, email: &str, credits: i64) -> anyhow::Result<(String, UserId)> {
        let (status, body) = self
            .send(
                "POST",
                "/auth/dev/login",
                None,
                Some(json!({ "email": email, "name": "Bench" })),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "dev sign-in: {status} {body}");
        let token = body["token"].as_str().context("a token")?.to_string();
        let user = UserId::parse(body["user"]["id"].as_str().context("a user id")?)?;
        let change = BalanceChange::grant(
            user,
            Credits::new(credits)?,
            LedgerReason::Admin,
            ulid::Ulid::new().to_string(),
        );
        self.services.store.apply(&change).await?;
        Ok((token, user))
    }

    /// Accepts one generation through `POST /v1/generations`; its job.
    pub async fn generation(
        &self,
        token: &str,
        user: UserId,
        n: u32,
    ) -> anyhow::Result<GenerationJob> {
        let (status, body) = self
            .send(
                "POST",
                "/v1/generations",
                Some(token),
                Some(json!({ "model": "nano-banana", "prompt": "a lighthouse at dawn", "n": n })),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::ACCEPTED, "generate: {status} {body}");
        let id = GenerationId::parse(body["id"].as_str().context("an id")?)?;
        Ok(GenerationJob {
            generation_id: id,
            user_id: user,
        })
    }

    /// A worker on this stack with the `local` renderer for every model.
    pub fn worker(&self, counter: Option<&CallCounter>) -> anyhow::Result<Arc<worker::Worker>> {
        let providers = shared::providers::build_providers(
            &self.services.settings.model_providers,
            &shared::providers::ProviderSettings::from_lookup(|_| None)?,
            &mut shared::aws::secrets::Secrets::default(),
        )?;
        Ok(Arc::new(self.worker_with(counter, providers)?))
    }

    /// A worker on this stack with these providers (its configuration still to adjust).
    pub fn worker_with(
        &self,
        counter: Option<&CallCounter>,
        providers: shared::providers::Providers,
    ) -> anyhow::Result<worker::Worker> {
        Ok(worker::Worker::new(
            &self.services.settings,
            &self.clients(counter),
            providers,
        ))
    }
}
