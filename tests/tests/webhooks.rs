//! Completion webhooks end to end against the emulator: a generation's events go through
//! the real hooks queue to a local receiver, signed as the Standard Webhooks
//! specification says (checked here by an implementation of its own), retried with the
//! same `webhook-id`, never to a forbidden address, never following a redirect.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use e2e_tests::{Stack, dev_login, request, send, stack_with_hook_targets};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use shared::hooks::send::Sender;
use shared::hooks::target::Targets;
use worker::hooks::Hooks;

/// What one request to the receiver carried.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// A receiver on loopback answering a script of statuses (then 200); `302` redirects to
/// `redirect_to`.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receiver(script: Vec<u16>, redirect_to: Option<String>) -> Receiver {
    let received = Arc::new(Mutex::new(Vec::<Received>::new()));
    let log = received.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let log = log.clone();
        let script = script.clone();
        let redirect_to = redirect_to.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let n = {
                let mut log = log.lock().unwrap();
                log.push(Received {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body: body.to_vec(),
                });
                log.len() - 1
            };
            let status = script.get(n).copied().unwrap_or(200);
            let mut response = StatusCode::from_u16(status).unwrap().into_response();
            if let (302, Some(to)) = (status, redirect_to) {
                response
                    .headers_mut()
                    .insert("location", to.parse().unwrap());
            }
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { port, received }
}

impl Receiver {
    fn got(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

const LOOPBACK: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];

/// Names the tests use: a receiver on this machine, and names that lead somewhere
/// forbidden.
fn targets() -> Targets {
    Targets::new(true)
        .with_override("receiver.test", &LOOPBACK)
        .with_override("metadata.test", &["169.254.169.254".parse().unwrap()])
        .with_override("private.test", &["10.1.2.3".parse().unwrap()])
}

fn hooks_for(stack: &Stack, sender_targets: Targets) -> Arc<Hooks> {
    Arc::new(Hooks {
        store: stack.services.store.clone(),
        blobs: stack.services.blobs.clone(),
        queue: stack.services.queue.clone(),
        sender: Sender::new(sender_targets),
        queue_url: stack
            .services
            .settings
            .hooks_queue_url
            .clone()
            .expect("the test stack has a hooks queue"),
        schedule: vec![Duration::from_millis(100); 8],
    })
}

/// Delivers from the stack's real hooks queue until `done` holds or 30 s pass.
async fn pump_until<F, Fut>(stack: &Stack, hooks: &Arc<Hooks>, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let url = hooks.queue_url.clone();
    let arn = local_runner::pump::queue_arn(&stack.clients.sqs, &url)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await && tokio::time::Instant::now() < deadline {
        local_runner::pump::pump_once_with(&stack.clients.sqs, &url, &arn, |event| {
            hooks.handle_sqs(event)
        })
        .await
        .unwrap();
    }
}

async fn create(stack: &Stack, token: &str, webhook: Value) -> e2e_tests::Answer {
    send(
        &stack.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(token),
            Some(json!({"model": "nano-banana", "prompt": "a lighthouse", "webhook": webhook})),
        ),
    )
    .await
}

/// Creates a generation with a webhook and ends it (a cancel while queued): its
/// `completed` event is due.
async fn completed_generation(stack: &Stack, token: &str, url: &str) -> String {
    let created = create(stack, token, json!({ "url": url })).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let canceled = send(
        &stack.router,
        request(
            Method::POST,
            &format!("/v1/generations/{id}/cancel"),
            Some(token),
            None,
        ),
    )
    .await;
    assert_eq!(canceled.body["status"], "canceled");
    id
}

async fn secret(stack: &Stack, token: &str) -> String {
    send(
        &stack.router,
        request(Method::GET, "/v1/webhook-secret", Some(token), None),
    )
    .await
    .body["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The specification's verification, written from its text: the base64 secret after
/// `whsec_` keys an HMAC-SHA256 of `id.timestamp.body`; any `v1,` entry may match.
fn verifies(secret: &str, received: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    received
        .signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_generation_is_delivered_once_signed_with_the_users_secret() {
    let stack = stack_with_hook_targets("hook-ok", targets()).await;
    let hooks = hooks_for(&stack, targets());
    let receiver = receiver(vec![], None).await;
    let (token, _) = dev_login(&stack.router, "hooked@example.com").await;
    let secret = secret(&stack, &token).await;
    let url = format!("http://receiver.test:{}/hooks", receiver.port);

    let id = completed_generation(&stack, &token, &url).await;
    pump_until(&stack, &hooks, || {
        std::future::ready(!receiver.got().is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    pump_until(&stack, &hooks, || std::future::ready(true)).await;

    let got = receiver.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        verifies(&secret, &got[0]),
        "signature {:?}",
        got[0].signature
    );
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "generation.completed");
    assert_eq!(body["data"]["id"], id);
    assert_eq!(body["data"]["status"], "canceled");
    assert!(body["timestamp"].is_string());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sent_at: i64 = got[0].timestamp.parse().unwrap();
    assert!((now - sent_at).abs() < 60);
    assert!(got[0].id.starts_with("msg_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_fails_twice_gets_the_same_webhook_id_three_times() {
    let stack = stack_with_hook_targets("hook-retry", targets()).await;
    let hooks = hooks_for(&stack, targets());
    let receiver = receiver(vec![503, 500], None).await;
    let (token, user) = dev_login(&stack.router, "retried@example.com").await;
    let url = format!("http://receiver.test:{}/hooks", receiver.port);

    let id = completed_generation(&stack, &token, &url).await;
    pump_until(&stack, &hooks, || {
        std::future::ready(receiver.got().len() >= 3)
    })
    .await;

    let got = receiver.got();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|r| r.id == got[0].id));
    let user = shared::domain::UserId::parse(user["id"].as_str().unwrap()).unwrap();
    let deliveries = stack.services.store.user_deliveries(user).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].generation_id.to_string(), id);
    assert_eq!(
        deliveries[0].state,
        shared::aws::dynamo::hooks::DeliveryState::Delivered
    );
    let results: Vec<&str> = deliveries[0]
        .attempts
        .iter()
        .map(|a| a.result.as_str())
        .collect();
    assert_eq!(results, ["503", "500", "200"]);
}

#[tokio::test]
async fn a_url_that_leads_to_loopback_private_or_metadata_addresses_is_refused_at_create() {
    let strict = Targets::new(false)
        .with_override("loopback.test", &LOOPBACK)
        .with_override("metadata.test", &["169.254.169.254".parse().unwrap()])
        .with_override("private.test", &["10.1.2.3".parse().unwrap()]);
    let stack = stack_with_hook_targets("hook-refused", strict).await;
    let (token, _) = dev_login(&stack.router, "refused@example.com").await;

    for url in [
        "https://loopback.test/hook",
        "https://metadata.test/hook",
        "https://private.test/hook",
        "https://127.0.0.1/hook",
        "https://[::ffff:169.254.169.254]/hook",
        "http://example.com/not-https",
    ] {
        let answer = create(&stack, &token, json!({ "url": url })).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["errors"][0]["field"], "webhook.url", "{url}");
    }
    let bad_event = create(
        &stack,
        &token,
        json!({"url": "https://127.0.0.1/", "events": ["finished"]}),
    )
    .await;
    let fields: Vec<&str> = bad_event.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["webhook.events[0]", "webhook.url"]);
    assert_eq!(stack.balance(&token).await, 10, "nothing was charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_that_resolves_to_the_metadata_service_at_send_time_is_never_called() {
    // At create time the name resolved to a public address; by the attempt it points at
    // the metadata service (DNS rebinding): the sender's resolver refuses it.
    let at_create =
        Targets::new(true).with_override("rebind.test", &["93.184.216.34".parse().unwrap()]);
    let at_send =
        Targets::new(true).with_override("rebind.test", &["169.254.169.254".parse().unwrap()]);
    let stack = stack_with_hook_targets("hook-rebind", at_create).await;
    let hooks = hooks_for(&stack, at_send);
    let (token, user) = dev_login(&stack.router, "rebound@example.com").await;
    let user = shared::domain::UserId::parse(user["id"].as_str().unwrap()).unwrap();

    completed_generation(&stack, &token, "https://rebind.test/hook").await;
    pump_until(&stack, &hooks, || settled(&stack, user)).await;

    let deliveries = stack.services.store.user_deliveries(user).await.unwrap();
    assert_eq!(
        deliveries[0].state,
        shared::aws::dynamo::hooks::DeliveryState::Failed
    );
    assert_eq!(deliveries[0].attempts[0].result, "refused");
}

/// Whether the user's first delivery is settled.
async fn settled(stack: &Stack, user: shared::domain::UserId) -> bool {
    stack
        .services
        .store
        .user_deliveries(user)
        .await
        .unwrap()
        .first()
        .is_some_and(|d| d.state.is_settled())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_is_not_followed_and_ends_the_attempts() {
    let stack = stack_with_hook_targets("hook-redirect", targets()).await;
    let hooks = hooks_for(&stack, targets());
    let elsewhere = receiver(vec![], None).await;
    let redirecting = receiver(
        vec![302],
        Some(format!("http://127.0.0.1:{}/stolen", elsewhere.port)),
    )
    .await;
    let (token, user) = dev_login(&stack.router, "redirected@example.com").await;
    let user = shared::domain::UserId::parse(user["id"].as_str().unwrap()).unwrap();

    completed_generation(
        &stack,
        &token,
        &format!("http://receiver.test:{}/hooks", redirecting.port),
    )
    .await;
    pump_until(&stack, &hooks, || settled(&stack, user)).await;

    assert_eq!(redirecting.got().len(), 1);
    assert!(elsewhere.got().is_empty(), "the redirect was followed");
    let deliveries = stack.services.store.user_deliveries(user).await.unwrap();
    assert_eq!(
        deliveries[0].state,
        shared::aws::dynamo::hooks::DeliveryState::Failed
    );
    assert_eq!(deliveries[0].attempts[0].result, "302");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_rotation_events_carry_a_signature_with_each_secret() {
    let stack = stack_with_hook_targets("hook-rotate", targets()).await;
    let hooks = hooks_for(&stack, targets());
    let receiver = receiver(vec![], None).await;
    let (token, _) = dev_login(&stack.router, "rotated@example.com").await;
    let old = secret(&stack, &token).await;
    let new = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/webhook-secret/rotate",
            Some(&token),
            None,
        ),
    )
    .await
    .body["secret"]
        .as_str()
        .unwrap()
        .to_string();

    completed_generation(
        &stack,
        &token,
        &format!("http://receiver.test:{}/hooks", receiver.port),
    )
    .await;
    pump_until(&stack, &hooks, || {
        std::future::ready(!receiver.got().is_empty())
    })
    .await;

    let got = &receiver.got()[0];
    assert_eq!(got.signature.split(' ').count(), 2);
    assert!(verifies(&old, got) && verifies(&new, got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_whose_message_was_lost_is_sent_again_by_the_sweeper() {
    let stack = stack_with_hook_targets("hook-sweep", targets()).await;
    let hooks = hooks_for(&stack, targets());
    let receiver = receiver(vec![], None).await;
    let (token, _) = dev_login(&stack.router, "lost@example.com").await;
    completed_generation(
        &stack,
        &token,
        &format!("http://receiver.test:{}/hooks", receiver.port),
    )
    .await;
    // The message is lost: purge the hooks queue before anything delivers it.
    stack
        .clients
        .sqs
        .purge_queue()
        .queue_url(&hooks.queue_url)
        .send()
        .await
        .unwrap();

    let too_early = hooks.sweep(&[]).await.unwrap();
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(3);
    let sent = hooks.sweep_at(later, &[]).await.unwrap();
    pump_until(&stack, &hooks, || {
        std::future::ready(!receiver.got().is_empty())
    })
    .await;

    assert_eq!(
        too_early, 0,
        "an event is given its own message's time first"
    );
    assert_eq!(sent, 1);
    assert_eq!(receiver.got().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_lists_a_refused_delivery_and_sends_it_again() {
    let stack = stack_with_hook_targets("hook-admin", targets()).await;
    let hooks = hooks_for(&stack, targets());
    let receiver = receiver(vec![410], None).await;
    let (token, user) = dev_login(&stack.router, "operated@example.com").await;
    let user = shared::domain::UserId::parse(user["id"].as_str().unwrap()).unwrap();
    let id = completed_generation(
        &stack,
        &token,
        &format!("http://receiver.test:{}/hooks", receiver.port),
    )
    .await;
    pump_until(&stack, &hooks, || settled(&stack, user)).await;
    let admin = admin::Admin {
        store: stack.services.store.clone(),
        queue: stack.services.queue.clone(),
        queue_url: stack.queue_url.clone(),
        dlq_url: None,
        payments: shared::payments::PaymentSettings::from_lookup(|_| None)
            .expect("the default payment settings"),
        operator: "ops-ada".into(),
    };

    let listed = admin.webhook_deliveries(user).await.unwrap();
    let replayed = admin
        .replay_webhook(
            shared::domain::GenerationId::parse(&id).unwrap(),
            shared::hooks::HookEvent::Completed,
            &hooks.queue_url,
        )
        .await
        .unwrap();
    pump_until(&stack, &hooks, || {
        std::future::ready(receiver.got().len() >= 2)
    })
    .await;

    assert_eq!(
        listed[0].state,
        shared::aws::dynamo::hooks::DeliveryState::Failed
    );
    assert_eq!(replayed, admin::WebhookReplay::Sent);
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, got[1].id);
    let after = admin.webhook_deliveries(user).await.unwrap();
    assert_eq!(
        after[0].state,
        shared::aws::dynamo::hooks::DeliveryState::Delivered
    );
    assert_eq!(
        after[0].attempts.len(),
        2,
        "the first attempt's record is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_the_worker_runs_sends_started_then_completed_through_the_hooks_queue() {
    let stack = stack_with_hook_targets("hook-worker", targets()).await;
    let hooks = hooks_for(&stack, targets());
    let receiver = receiver(vec![], None).await;
    let (token, user) = dev_login(&stack.router, "worked@example.com").await;
    let url = format!("http://receiver.test:{}/hooks", receiver.port);
    let created = create(
        &stack,
        &token,
        json!({"url": url, "events": ["started", "completed"]}),
    )
    .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let worker = e2e_tests::worker_for(
        &stack,
        shared::providers::Providers::new().with(
            "nano-banana",
            e2e_tests::scripted(|_, _| Ok(e2e_tests::png(32, 32))),
        ),
        |_| {},
    );
    let job = shared::aws::sqs::GenerationJob {
        generation_id: shared::domain::GenerationId::parse(&id).unwrap(),
        user_id: shared::domain::UserId::parse(user["id"].as_str().unwrap()).unwrap(),
    };

    let deadline = tokio::time::Instant::now() + worker.config.function_timeout;
    assert_eq!(
        worker.run(&job, deadline, None).await,
        worker::Outcome::Done
    );
    pump_until(&stack, &hooks, || {
        std::future::ready(receiver.got().len() >= 2)
    })
    .await;

    let types: Vec<(String, String)> = receiver
        .got()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (
                body["type"].as_str().unwrap().to_string(),
                body["data"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(types.len(), 2, "{types:?}");
    assert!(
        types.contains(&("generation.started".into(), "running".into()))
            || types.contains(&("generation.started".into(), "succeeded".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("generation.completed".into(), "succeeded".into())),
        "{types:?}"
    );
    let deliveries = stack
        .services
        .store
        .user_deliveries(job.user_id)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 2);
    assert!(
        deliveries
            .iter()
            .all(|d| d.state == shared::aws::dynamo::hooks::DeliveryState::Delivered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_invocation_from_the_hooks_queue_delivers_instead_of_running_jobs() {
    let stack = stack_with_hook_targets("hook-dispatch", targets()).await;
    let receiver = receiver(vec![], None).await;
    let (token, _) = dev_login(&stack.router, "dispatched@example.com").await;
    completed_generation(
        &stack,
        &token,
        &format!("http://receiver.test:{}/hooks", receiver.port),
    )
    .await;
    let mut worker = worker::Worker::new(
        &stack.services.settings,
        &stack.clients,
        shared::providers::Providers::new(),
    );
    worker.hooks = Some(hooks_for(&stack, targets()));
    let worker = Arc::new(worker);
    let url = worker.hooks.as_ref().unwrap().queue_url.clone();
    let arn = local_runner::pump::queue_arn(&stack.clients.sqs, &url)
        .await
        .unwrap();
    let received = stack
        .clients
        .sqs
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let message = &received.messages()[0];
    let event = json!({"Records": [{
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
    }]});

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = worker.handle(event, deadline).await.unwrap();

    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(
        receiver.got().len(),
        1,
        "delivered by the worker's entry point"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_started_event_lost_after_the_claim_is_sent_by_the_sweeper_once() {
    let stack = stack_with_hook_targets("hook-started", targets()).await;
    let hooks = hooks_for(&stack, targets());
    let receiver = receiver(vec![], None).await;
    let (token, user) = dev_login(&stack.router, "started@example.com").await;
    let url = format!("http://receiver.test:{}/hooks", receiver.port);
    let created = create(&stack, &token, json!({"url": url, "events": ["started"]})).await;
    let user_id = shared::domain::UserId::parse(user["id"].as_str().unwrap()).unwrap();
    let id = shared::domain::GenerationId::parse(created.body["id"].as_str().unwrap()).unwrap();
    let mut worker = worker::Worker::new(
        &stack.services.settings,
        &stack.clients,
        shared::providers::Providers::new(),
    );
    worker.hooks = Some(hooks.clone());
    // Claimed 130 s ago (its lease runs for the attempt and margin from then), and the
    // claim's send never happened.
    let lease = worker.config.attempt_budget() + worker.config.lease_margin;
    let until = time::OffsetDateTime::now_utc() + lease - time::Duration::seconds(130);
    stack
        .services
        .store
        .claim(user_id, id, "lease", until)
        .await
        .unwrap();

    let first = worker.sweep().await;
    let second = worker.sweep().await;
    pump_until(&stack, &hooks, || {
        std::future::ready(!receiver.got().is_empty())
    })
    .await;

    assert_eq!(first.webhooks, 1, "{first:?}");
    assert_eq!(second.webhooks, 0, "its delivery is open: not sent twice");
    let body: Value = serde_json::from_slice(&receiver.got()[0].body).unwrap();
    assert_eq!(body["type"], "generation.started");
    assert_eq!(body["data"]["status"], "running");
}
