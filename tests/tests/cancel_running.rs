//! Cancelling a running generation against the emulator: the worker starts no further
//! image, keeps the ones already being made, and ends it `canceled` through its one
//! exactly-once finish, refunding the images not made. And, with the same gated provider,
//! an attempt whose generation vanished under it leaves no image behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use e2e_tests::{Stack, accepted_generation, request, send, stack, worker_for};
use serde_json::Value;
use shared::aws::sqs::GenerationJob;
use shared::domain::generation::Status;
use shared::domain::{GenerationId, UserId};
use shared::providers::{ImageProvider, ImageRequest, ProviderError, Providers};
use tokio::sync::{Notify, Semaphore};

/// A provider that counts the images it starts, then waits to be let go and answers
/// with an image (or a transient failure).
struct Gated {
    started: AtomicUsize,
    started_one: Notify,
    release: Semaphore,
    transient: bool,
    /// Only images from this index on fail (with `transient`).
    transient_from: u32,
}

impl Gated {
    /// With `transient`, images from index `transient_from` on fail for now.
    fn new(transient: bool, transient_from: u32) -> Arc<Self> {
        Arc::new(Self {
            started: AtomicUsize::new(0),
            started_one: Notify::new(),
            release: Semaphore::new(0),
            transient,
            transient_from,
        })
    }

    async fn until_started(&self, count: usize) {
        while self.started.load(Ordering::SeqCst) < count {
            tokio::time::timeout(Duration::from_secs(10), self.started_one.notified())
                .await
                .expect("the worker starts its images");
        }
    }
}

#[async_trait::async_trait]
impl ImageProvider for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }

    async fn generate(&self, request: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.started_one.notify_one();
        self.release.acquire().await.unwrap().forget();
        if self.transient && request.index >= self.transient_from {
            return Err(ProviderError::Transient("the host is overloaded".into()));
        }
        Ok(e2e_tests::png(64, 64))
    }
}

async fn cancel(stack: &Stack, token: &str, id: GenerationId) -> e2e_tests::Answer {
    send(
        &stack.router,
        request(
            Method::POST,
            &format!("/v1/generations/{id}/cancel"),
            Some(token),
            None,
        ),
    )
    .await
}

/// Starts the worker on the generation in the background, as its queue would.
fn run(
    worker: &Arc<worker::Worker>,
    user: UserId,
    id: GenerationId,
) -> tokio::task::JoinHandle<worker::Outcome> {
    let worker = worker.clone();
    let job = GenerationJob {
        generation_id: id,
        user_id: user,
    };
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + worker.config.function_timeout;
        worker.run(&job, deadline, None).await
    })
}

/// A stack, a gated provider for nano-banana, a worker using it (with `slots` images at
/// once) and a generation of `n` images accepted for a new user.
struct Arranged {
    stack: Stack,
    gated: Arc<Gated>,
    worker: Arc<worker::Worker>,
    token: String,
    user: UserId,
    id: GenerationId,
}

async fn arrange(test: &str, n: u32, transient: bool, slots: usize) -> Arranged {
    let stack = stack(test, |_| {}).await;
    let gated = Gated::new(transient, 0);
    let worker = worker_for(
        &stack,
        Providers::new().with("nano-banana", gated.clone()),
        |c| c.images_in_parallel = slots,
    );
    let email = format!("{test}@example.com");
    let (token, user, id) = accepted_generation(&stack, &email, "nano-banana", n, &[]).await;
    Arranged {
        stack,
        gated,
        worker,
        token,
        user,
        id,
    }
}

impl Arranged {
    /// Runs the worker, asks to cancel once `started` images are being made, then lets
    /// them finish: the cancel's answer and the worker's outcome.
    async fn cancel_after(&self, started: usize) -> (e2e_tests::Answer, worker::Outcome) {
        let running = run(&self.worker, self.user, self.id);
        self.gated.until_started(started).await;
        let asked = cancel(&self.stack, &self.token, self.id).await;
        self.gated.release.add_permits(started);
        (asked, running.await.unwrap())
    }
}

async fn refund_rows(stack: &Stack, token: &str) -> Vec<Value> {
    let rows = stack.ledger(token).await;
    let sum: i64 = rows.iter().map(|r| r["delta"].as_i64().unwrap()).sum();
    assert_eq!(
        sum,
        stack.balance(token).await,
        "the ledger adds up: {rows:?}"
    );
    rows.into_iter()
        .filter(|r| r["reason"] == "refund")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_while_two_of_four_images_are_made_keeps_those_two_and_refunds_the_others() {
    let arranged = arrange("cancel-run-four", 4, false, 2).await;

    let (asked, outcome) = arranged.cancel_after(2).await;

    let Arranged {
        stack,
        gated,
        token,
        user,
        id,
        ..
    } = arranged;

    assert_eq!(asked.status, StatusCode::OK, "{:?}", asked.body);
    assert_eq!(asked.body["cancel_requested"], true);
    assert_eq!(outcome, worker::Outcome::Done);
    assert_eq!(
        gated.started.load(Ordering::SeqCst),
        2,
        "no further image started"
    );
    let ended = stack.stored(user, id).await.unwrap();
    assert_eq!(ended.status, Status::Canceled);
    assert_eq!(ended.images.len(), 2);
    assert_eq!(
        ended.refunded_credits, 4,
        "two images of 2 credits refunded"
    );
    let refunds = refund_rows(&stack, &token).await;
    assert_eq!(refunds.len(), 1, "refunded once: {refunds:?}");
    assert_eq!(refunds[0]["delta"], 4);
    assert_eq!(stack.balance(&token).await, 10 - 8 + 4);
    let again = cancel(&stack, &token, id).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "not_cancelable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_while_the_only_image_is_made_ends_canceled_with_it_and_refunds_nothing() {
    let arranged = arrange("cancel-run-one", 1, false, 4).await;

    let (asked, outcome) = arranged.cancel_after(1).await;

    let Arranged {
        stack,
        token,
        user,
        id,
        ..
    } = arranged;
    assert_eq!(asked.body["cancel_requested"], true, "{:?}", asked.body);

    assert_eq!(outcome, worker::Outcome::Done);
    let ended = stack.stored(user, id).await.unwrap();
    assert_eq!(ended.status, Status::Canceled, "the finish saw the cancel");
    assert_eq!(ended.images.len(), 1);
    assert_eq!(ended.refunded_credits, 0);
    assert!(refund_rows(&stack, &token).await.is_empty());
    let read = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations/{id}"),
            Some(&token),
            None,
        ),
    )
    .await;
    assert_eq!(read.body["status"], "canceled");
    assert_eq!(read.body["images"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_during_an_attempt_that_fails_for_now_ends_it_at_once_instead_of_a_retry() {
    let arranged = arrange("cancel-run-retry", 2, true, 4).await;

    let (asked, outcome) = arranged.cancel_after(2).await;

    let Arranged {
        stack,
        token,
        user,
        id,
        ..
    } = arranged;
    assert_eq!(asked.body["cancel_requested"], true, "{:?}", asked.body);

    assert_eq!(outcome, worker::Outcome::Done, "not returned for a retry");
    let ended = stack.stored(user, id).await.unwrap();
    assert_eq!(ended.status, Status::Canceled);
    assert!(ended.images.is_empty());
    assert_eq!(ended.refunded_credits, 4);
    assert_eq!(stack.balance(&token).await, 10);
    assert_eq!(refund_rows(&stack, &token).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_canceled_between_attempts_ends_at_its_next_claim_without_a_provider_call() {
    let Arranged {
        stack,
        gated,
        worker,
        token,
        user,
        id,
    } = arrange("cancel-run-claim", 1, false, 4).await;
    // An earlier attempt's lease, expired: the cancel marks it, the next claim sees it.
    let expired = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    stack
        .services
        .store
        .claim(user, id, "earlier", expired)
        .await
        .unwrap();
    cancel(&stack, &token, id).await;

    let outcome = run(&worker, user, id).await.unwrap();

    assert_eq!(outcome, worker::Outcome::Done);
    assert_eq!(gated.started.load(Ordering::SeqCst), 0);
    let ended = stack.stored(user, id).await.unwrap();
    assert_eq!(ended.status, Status::Canceled);
    assert_eq!(ended.refunded_credits, 2);
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_of_an_attempt_whose_generation_vanished_before_its_release_are_removed() {
    let stack = stack("cancel-run-vanished", |_| {}).await;
    let gated = Gated::new(true, 1);
    let worker = worker_for(
        &stack,
        Providers::new().with("nano-banana", gated.clone()),
        |_| {},
    );
    let (_, user, id) =
        accepted_generation(&stack, "vanished@example.com", "nano-banana", 2, &[]).await;
    let running = run(&worker, user, id);
    gated.until_started(2).await;
    // The item goes away under the attempt (an account deletion's erase does this).
    stack
        .clients
        .dynamo
        .delete_item()
        .table_name(&stack.services.settings.table_name)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{user}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("GEN#{id}")),
        )
        .send()
        .await
        .unwrap();

    gated.release.add_permits(2);
    running.await.unwrap();

    let left = stack
        .services
        .blobs
        .list(&format!("images/{user}/"))
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "the unrecorded image was removed: {left:?}"
    );
}
