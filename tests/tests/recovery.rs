//! Invariant 8, against the emulator's real queue: every job moves forward. A failure of
//! ours after the claim, a panicking adapter, a batch too long for its invocation and a
//! worker that dies after its claim each end with the generation succeeded (or, for bad
//! references, failed and refunded) and the provider called once per missing image. The
//! jobs are sent by the generate route itself and received with the local runner's pump,
//! so visibility, redelivery and backoff are SQS's own; the worker's times are shortened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_types::config_bag::ConfigBag;
use e2e_tests::{
    Scripted, Stack, accept, accepted_generation, dev_login, png, scripted, short_times, stack,
    worker_for,
};
use shared::aws::Clients;
use shared::domain::generation::Status;
use shared::domain::{GenerationId, UserId};
use shared::providers::{ImageProvider, ImageRequest, ProviderError, Providers};

fn serving(provider: &Arc<Scripted>) -> Providers {
    Providers::new().with("nano-banana", provider.clone())
}

fn succeeded(g: &shared::domain::generation::Generation) -> bool {
    g.status == Status::Succeeded
}

/// Fails the first `TransactWriteItems` (a worker's finish) before it is sent: a
/// construction failure, which the SDK does not retry. An injected store error, no fake
/// store.
#[derive(Debug, Clone, Default)]
struct FailFirstTransaction {
    failed: Arc<AtomicBool>,
}

impl Intercept for FailFirstTransaction {
    fn name(&self) -> &'static str {
        "FailFirstTransaction"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let transaction = context
            .input()
            .downcast_ref::<TransactWriteItemsInput>()
            .is_some();
        if transaction && !self.failed.swap(true, Ordering::SeqCst) {
            return Err("injected failure of TransactWriteItems".into());
        }
        Ok(())
    }
}

/// The stack's clients, with `fail` on the DynamoDB one.
async fn clients_failing(stack: &Stack, fail: FailFirstTransaction) -> Clients {
    let sdk = e2e_tests::sdk_config().await;
    let dynamo = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(fail)
        .build();
    Clients {
        dynamo: aws_sdk_dynamodb::Client::from_conf(dynamo),
        s3: stack.clients.s3.clone(),
        sqs: stack.clients.sqs.clone(),
    }
}

#[tokio::test]
async fn a_finish_that_fails_once_is_retried_after_its_backoff_and_succeeds_with_one_provider_call_per_image()
 {
    let stack = stack("r-finish", |_| {}).await;
    let provider = scripted(|_, _| Ok(png(8, 8)));
    let fail = FailFirstTransaction::default();
    let clients = clients_failing(&stack, fail.clone()).await;
    let base = worker::Worker::new(&stack.services.settings, &clients, serving(&provider));
    let mut config = base.config.clone();
    short_times(&mut config);
    let worker = Arc::new(base.with_config(config));
    let (token, user, id) =
        accepted_generation(&stack, "finish@example.com", "nano-banana", 2, &[]).await;

    stack.pump_once(&worker).await;
    let after_first = stack.stored(user, id).await.unwrap();
    let done = stack
        .pump_until(&worker, user, id, Duration::from_secs(20), succeeded)
        .await;

    assert!(
        fail.failed.load(Ordering::SeqCst),
        "the finish was failed once"
    );
    assert_eq!(after_first.status, Status::Running);
    assert_eq!(
        after_first.images.len(),
        2,
        "the lease was given back with the images made"
    );
    assert!(done, "the returned message was processed after its backoff");
    let generation = stack.stored(user, id).await.unwrap();
    assert_eq!(generation.images.len(), 2);
    assert_eq!(generation.refunded_credits, 0);
    assert_eq!(provider.calls(), 2, "one provider call per image");
    assert_eq!(stack.balance(&token).await, 10 - 4, "charged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_panics_on_its_first_call_has_its_record_returned_and_retried_and_the_rest_of_the_batch_is_unaffected()
 {
    let stack = stack("r-panic", |_| {}).await;
    let panicking = scripted(|_, call| {
        if call == 0 {
            panic!("a bug in an adapter");
        }
        Ok(png(8, 8))
    });
    let healthy = scripted(|_, _| Ok(png(8, 8)));
    let providers = Providers::new()
        .with("nano-banana", panicking.clone())
        .with("nano-banana-pro", healthy.clone());
    let worker = worker_for(&stack, providers, short_times);
    let (token, user) = dev_login(&stack.router, "panic@example.com").await;
    let user = UserId::parse(user["id"].as_str().unwrap()).unwrap();
    let doomed = accept(&stack, &token, "nano-banana", 1, &[]).await;
    let other = accept(&stack, &token, "nano-banana-pro", 1, &[]).await;

    let other_done = stack
        .pump_until(&worker, user, other, Duration::from_secs(10), succeeded)
        .await;
    let after_panic = stack.stored(user, doomed).await.unwrap();
    let doomed_done = stack
        .pump_until(&worker, user, doomed, Duration::from_secs(20), succeeded)
        .await;

    assert!(other_done, "the rest of the batch is unaffected");
    assert_eq!(healthy.calls(), 1);
    assert_ne!(after_panic.status, Status::Failed);
    assert!(doomed_done, "the panicked record came back and succeeded");
    assert_eq!(panicking.calls(), 2, "the panicked call, then the retry");
    assert_eq!(stack.balance(&token).await, 10 - 2 - 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_records_cannot_all_fit_in_the_invocation_returns_the_late_ones_unclaimed_and_leaves_none_running()
 {
    let stack = stack("r-budget", |_| {}).await;
    let provider = scripted(|_, _| {
        std::thread::sleep(Duration::from_millis(1000));
        Ok(png(8, 8))
    });
    let worker = worker_for(&stack, serving(&provider), |c| {
        c.records_in_parallel = 1;
        // A whole attempt: 0.5 + 1.5 + 1 = 3 s.
        c.references_budget = Duration::from_millis(500);
        c.provider_timeout = Duration::from_millis(1500);
        c.store_budget = Duration::from_secs(1);
    });
    let (token, user) = dev_login(&stack.router, "budget@example.com").await;
    let user = UserId::parse(user["id"].as_str().unwrap()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(accept(&stack, &token, "nano-banana", 1, &[]).await);
    }
    let arn = stack.queue_arn().await;

    // One invocation of three records with 7 s left (5 s once it keeps time to answer):
    // one record at a time, so the third cannot start a whole attempt in time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(7);
    let received = local_runner::pump::pump_once_until(
        &worker,
        &stack.clients.sqs,
        &stack.queue_url,
        &arn,
        3,
        deadline,
    )
    .await
    .unwrap();
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(stack.stored(user, *id).await.unwrap());
    }
    let visible_again = stack.queue_depth().await;

    assert_eq!(received, 3);
    let count = |s: Status| statuses.iter().filter(|g| g.status == s).count();
    assert_eq!(count(Status::Running), 0, "none is left running");
    assert!(count(Status::Succeeded) >= 1, "{statuses:?}");
    assert!(count(Status::Queued) >= 1, "the late ones were not claimed");
    assert!(
        statuses
            .iter()
            .filter(|g| g.status == Status::Queued)
            .all(|g| g.attempt == 0)
    );
    assert_eq!(
        visible_again,
        count(Status::Queued),
        "returned at once, not after the visibility timeout"
    );
    for id in ids {
        assert!(
            stack
                .pump_until(&worker, user, id, Duration::from_secs(20), succeeded)
                .await
        );
    }
    assert_eq!(provider.calls(), 3);
}

/// A provider whose first call never ends (until its task is dropped).
struct HangsOnce {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ImageProvider for HangsOnce {
    fn name(&self) -> &'static str {
        "hangs-once"
    }

    async fn generate(&self, _request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(png(8, 8))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_after_claiming_is_sent_again_by_the_sweeper_after_its_lease_and_succeeds_well_before_the_deadline()
 {
    let stack = stack("r-death", |_| {}).await;
    let provider = Arc::new(HangsOnce {
        calls: AtomicUsize::new(0),
    });
    let worker = worker_for(
        &stack,
        Providers::new().with("nano-banana", provider.clone()),
        short_times,
    );
    let (_token, user, id) =
        accepted_generation(&stack, "death@example.com", "nano-banana", 1, &[]).await;
    let lease = worker.config.attempt_budget() + worker.config.lease_margin;

    // A worker claims and is mid-call when it stops: its task is dropped, as a killed
    // process stops, with the message still in flight for the visibility timeout.
    let dying = {
        let (worker, sqs, url) = (
            worker.clone(),
            stack.clients.sqs.clone(),
            stack.queue_url.clone(),
        );
        let arn = stack.queue_arn().await;
        tokio::spawn(async move { local_runner::pump::pump_once(&worker, &sqs, &url, &arn).await })
    };
    let claimed_by = Instant::now() + Duration::from_secs(10);
    while provider.calls.load(Ordering::SeqCst) == 0 && Instant::now() < claimed_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dying.abort();
    let died = Instant::now();
    let claimed = stack.stored(user, id).await.unwrap();

    let mut recovered = 0;
    let until = died + Duration::from_secs(60);
    let mut done = false;
    while !done && Instant::now() < until {
        recovered += worker.sweep().await.recovered;
        stack.pump_once(&worker).await;
        done = stack.stored(user, id).await.is_some_and(|g| succeeded(&g));
    }
    let took = died.elapsed();

    assert_eq!(claimed.status, Status::Running);
    assert!(done, "recovered after the lease");
    assert_eq!(recovered, 1, "sent again once for its lease");
    assert!(
        took >= lease.saturating_sub(Duration::from_secs(2)),
        "not before the lease expired: {took:?}"
    );
    assert!(
        took < lease + Duration::from_secs(15),
        "within the lease and a sweep or two: {took:?}, well before the 900 s deadline"
    );
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_sweep_skips_and_counts_an_open_item_it_cannot_read_and_goes_on_with_the_rest() {
    let stack = stack("r-sweep-skip", |_| {}).await;
    let worker = worker_for(&stack, Providers::new(), |c| {
        c.requeue_after = Duration::from_secs(1)
    });
    let (_token, _user, _id) =
        accepted_generation(&stack, "skip@example.com", "nano-banana", 1, &[]).await;
    // The request's own message stands for one a crash lost: drain it.
    let drained = stack
        .clients
        .sqs
        .receive_message()
        .queue_url(&stack.queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(drained.messages().len(), 1);
    // An item in the open index that is no generation (a hand edit, an old shape).
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.to_string());
    for shard in [0, 5] {
        stack
            .clients
            .dynamo
            .put_item()
            .table_name(&stack.names.table)
            .item("pk", s("USER#usr_broken"))
            .item("sk", s(&format!("GEN#broken-{shard}")))
            .item("open_pk", s(&format!("OPEN#{shard}")))
            .item("open_sk", s("000000000000001#gen_broken"))
            .item("status", s("queued"))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = worker.sweep().await;

    assert_eq!(report.skipped, 2, "{report:?}");
    assert_eq!(report.requeued, 1, "the rest was swept: {report:?}");
    assert_eq!(stack.queue_depth().await, 1);
}

/// A succeeded generation of `token`'s user whose image 0 then holds `bytes`; its
/// reference id (`gen_.../0`).
async fn result_holding(
    stack: &Stack,
    worker: &Arc<worker::Worker>,
    token: &str,
    user: UserId,
    bytes: Vec<u8>,
) -> (String, GenerationId) {
    let source = accept(stack, token, "nano-banana", 1, &[]).await;
    assert!(
        stack
            .pump_until(worker, user, source, Duration::from_secs(10), succeeded)
            .await
    );
    let key = stack.stored(user, source).await.unwrap().images[0]
        .key
        .clone();
    stack
        .services
        .blobs
        .put(&key, "image/png", bytes)
        .await
        .unwrap();
    (format!("{source}/0"), source)
}

#[tokio::test]
async fn a_reference_over_ten_mib_fails_the_generation_as_invalid_input_and_refunds_it() {
    let stack = stack("r-big-ref", |_| {}).await;
    let provider = scripted(|_, _| Ok(png(8, 8)));
    let worker = worker_for(&stack, serving(&provider), short_times);
    let (token, user) = dev_login(&stack.router, "bigref@example.com").await;
    let user = UserId::parse(user["id"].as_str().unwrap()).unwrap();
    // A provider's result may be larger than an upload may be.
    let (reference, _) = result_holding(
        &stack,
        &worker,
        &token,
        user,
        vec![0x89; 10 * 1024 * 1024 + 1],
    )
    .await;

    let id = accept(&stack, &token, "nano-banana", 2, &[reference]).await;
    let ended = stack
        .pump_until(&worker, user, id, Duration::from_secs(15), |g| {
            g.status.is_final()
        })
        .await;

    assert!(ended, "a permanent failure, not a retry loop");
    let generation = stack.stored(user, id).await.unwrap();
    assert_eq!(generation.status, Status::Failed);
    assert_eq!(generation.error.unwrap().code, "invalid_input");
    assert_eq!(generation.refunded_credits, 4);
    assert_eq!(provider.calls(), 1, "only the source image was made");
    assert_eq!(stack.balance(&token).await, 10 - 2);
}

#[tokio::test]
async fn a_reference_that_is_not_an_image_fails_the_generation_as_invalid_input_and_refunds_it() {
    let stack = stack("r-bad-ref", |_| {}).await;
    let provider = scripted(|_, _| Ok(png(8, 8)));
    let worker = worker_for(&stack, serving(&provider), short_times);
    let (token, user) = dev_login(&stack.router, "badref@example.com").await;
    let user = UserId::parse(user["id"].as_str().unwrap()).unwrap();
    let (reference, _) = result_holding(
        &stack,
        &worker,
        &token,
        user,
        b"GIF89a not what it says".to_vec(),
    )
    .await;

    let id = accept(&stack, &token, "nano-banana", 1, &[reference]).await;
    let ended = stack
        .pump_until(&worker, user, id, Duration::from_secs(15), |g| {
            g.status.is_final()
        })
        .await;

    assert!(ended);
    let generation = stack.stored(user, id).await.unwrap();
    assert_eq!(generation.status, Status::Failed);
    assert_eq!(generation.error.unwrap().code, "invalid_input");
    assert_eq!(generation.refunded_credits, 2);
    assert_eq!(stack.balance(&token).await, 10 - 2);
}
