//! The worker against the emulator: claims, leases, partial results, exactly-once
//! refunds, the DLQ and the sweeper. Providers are scripted in-process; their HTTP
//! adapters have their own tests against fake servers (shared/tests/providers.rs).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use e2e_tests::{
    Scripted, Stack, dev_login, png, request, scripted, send, sqs_event, stack, worker_for,
};
use serde_json::{Value, json};
use shared::domain::generation::Status;
use shared::domain::{GenerationId, UserId};
use shared::providers::{ProviderError, Providers};

fn serving(provider: &Arc<Scripted>) -> Providers {
    Providers::new().with("nano-banana", provider.clone())
}

fn refused() -> ProviderError {
    ProviderError::Permanent {
        code: "content_refused",
        message: "blocked by safety filters".into(),
    }
}

/// Signs in and creates a generation through the API; returns the token and the job.
async fn accepted(stack: &Stack, email: &str, n: u32) -> (String, Value) {
    let (token, user) = dev_login(&stack.router, email).await;
    let answer = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&token),
            Some(json!({"model": "nano-banana", "prompt": "a fox", "n": n})),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    (
        token,
        json!({"generation_id": answer.body["id"], "user_id": user["id"]}),
    )
}

async fn generation(stack: &Stack, token: &str, job: &Value) -> Value {
    let path = format!("/v1/generations/{}", job["generation_id"].as_str().unwrap());
    send(
        &stack.router,
        request(Method::GET, &path, Some(token), None),
    )
    .await
    .body
}

fn ids(job: &Value) -> (UserId, GenerationId) {
    (
        UserId::parse(job["user_id"].as_str().unwrap()).unwrap(),
        GenerationId::parse(job["generation_id"].as_str().unwrap()).unwrap(),
    )
}

fn refunds(ledger: &[Value]) -> Vec<i64> {
    ledger
        .iter()
        .filter(|r| r["reason"] == "refund")
        .map(|r| r["delta"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_delivered_three_times_at_once_is_processed_once() {
    let stack = stack("w-dup", |_| {}).await;
    let provider = scripted(|_, _| {
        std::thread::sleep(Duration::from_millis(50));
        Ok(png(8, 8))
    });
    let worker = worker_for(&stack, serving(&provider), |_| {});
    let (token, job) = accepted(&stack, "dup@example.com", 1).await;

    let deliveries: Vec<_> = (0..3)
        .map(|_| {
            let worker = worker.clone();
            let event = sqs_event(&stack, std::slice::from_ref(&job), false);
            tokio::spawn(async move { worker.handle_sqs(event).await })
        })
        .collect();
    for delivery in deliveries {
        assert!(delivery.await.unwrap().batch_item_failures.is_empty());
    }

    assert_eq!(provider.calls(), 1);
    let generation = generation(&stack, &token, &job).await;
    assert_eq!(generation["status"], "succeeded");
    assert_eq!(generation["images"].as_array().unwrap().len(), 1);
    assert_eq!(stack.balance(&token).await, 8);
}

#[tokio::test]
async fn a_generation_claimed_by_a_worker_that_died_is_completed_after_its_lease_expires() {
    let stack = stack("w-lease", |_| {}).await;
    let provider = scripted(|_, _| Ok(png(8, 8)));
    let worker = worker_for(&stack, serving(&provider), |_| {});
    let (token, job) = accepted(&stack, "lease@example.com", 1).await;
    let user = UserId::parse(job["user_id"].as_str().unwrap()).unwrap();
    let id = GenerationId::parse(job["generation_id"].as_str().unwrap()).unwrap();
    // A worker claims with a short lease, then dies.
    let lease_until = time::OffsetDateTime::now_utc() + Duration::from_secs(1);
    stack
        .services
        .store
        .claim(user, id, "dead-worker", lease_until)
        .await
        .unwrap();

    let while_leased = worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), false))
        .await;
    let untouched = generation(&stack, &token, &job).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let redelivered = worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), false))
        .await;

    assert!(
        while_leased.batch_item_failures.is_empty(),
        "a live holder's job is acknowledged"
    );
    assert_eq!(untouched["status"], "running");
    assert!(redelivered.batch_item_failures.is_empty());
    let done = generation(&stack, &token, &job).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn a_permanent_refusal_fails_and_refunds_once_through_redelivery_and_the_dlq() {
    let stack = stack("w-refuse", |_| {}).await;
    let provider = scripted(|_, _| Err(refused()));
    let worker = worker_for(&stack, serving(&provider), |_| {});
    let (token, job) = accepted(&stack, "refuse@example.com", 2).await;

    let first = worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), false))
        .await;
    let again = worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), false))
        .await;
    let from_dlq = worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), true))
        .await;

    for response in [&first, &again, &from_dlq] {
        assert!(response.batch_item_failures.is_empty());
    }
    let generation = generation(&stack, &token, &job).await;
    assert_eq!(generation["status"], "failed");
    assert_eq!(generation["refunded_credits"], 4);
    assert_eq!(generation["error"]["code"], "content_refused");
    assert!(generation["completed_at"].is_string());
    assert_eq!(refunds(&stack.ledger(&token).await), [4]);
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test]
async fn with_three_images_and_the_third_refused_two_are_kept_and_one_is_refunded() {
    let stack = stack("w-partial", |_| {}).await;
    let provider = scripted(|request, _| {
        if request.index == 2 {
            Err(refused())
        } else {
            Ok(png(8, 8))
        }
    });
    let worker = worker_for(&stack, serving(&provider), |_| {});
    let (token, job) = accepted(&stack, "partial@example.com", 3).await;

    worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), false))
        .await;

    let generation = generation(&stack, &token, &job).await;
    assert_eq!(generation["status"], "succeeded");
    let indexes: Vec<i64> = generation["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1]);
    assert_eq!(generation["refunded_credits"], 2);
    assert_eq!(generation["images"][0]["content_type"], "image/png");
    assert_eq!(generation["images"][0]["width"], 8);
    assert_eq!(refunds(&stack.ledger(&token).await), [2]);
    assert_eq!(stack.balance(&token).await, 10 - 6 + 2);
}

#[tokio::test]
async fn a_job_of_four_images_takes_six_aws_calls_the_claim_four_uploads_and_the_finish() {
    let stack = stack("w-calls", |_| {}).await;
    let provider = scripted(|_, _| Ok(png(8, 8)));
    let worker = worker_for(&stack, serving(&provider), |_| {});
    let (token, job) = accepted(&stack, "calls@example.com", 4).await;
    let event = sqs_event(&stack, std::slice::from_ref(&job), false);

    stack.calls.reset();
    let response = worker.handle_sqs(event).await;
    let calls = stack.calls.count();

    assert!(response.batch_item_failures.is_empty());
    assert_eq!(calls, 6, "UpdateItem + 4 x PutObject + TransactWriteItems");
    let generation = generation(&stack, &token, &job).await;
    assert_eq!(generation["status"], "succeeded");
    assert_eq!(generation["images"].as_array().unwrap().len(), 4);
    assert_eq!(stack.balance(&token).await, 2);
}

#[tokio::test]
async fn a_transient_failure_then_success_keeps_the_first_image_and_charges_nothing_extra() {
    let stack = stack("w-transient", |_| {}).await;
    let provider = scripted(|request, call| match (request.index, call) {
        (1, call) if call < 2 => Err(ProviderError::Transient("HTTP 503".into())),
        _ => Ok(png(8, 8)),
    });
    let worker = worker_for(&stack, serving(&provider), |c| {
        e2e_tests::short_times(c);
        c.images_in_parallel = 1;
    });
    let (token, job) = accepted(&stack, "transient@example.com", 2).await;
    let (user, id) = ids(&job);

    // Through the real queue: the first delivery fails transiently and is returned with
    // its backoff; the redelivery makes the missing image.
    stack.pump_once(&worker).await;
    let after_first = generation(&stack, &token, &job).await;
    let succeeded = stack
        .pump_until(&worker, user, id, Duration::from_secs(15), |g| {
            g.status == Status::Succeeded
        })
        .await;

    assert!(
        succeeded,
        "the returned message was processed after its backoff"
    );
    assert_eq!(after_first["status"], "running");
    assert_eq!(after_first["images"].as_array().unwrap().len(), 1);
    let done = generation(&stack, &token, &job).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["refunded_credits"], 0);
    let first_url = after_first["images"][0]["url"]
        .as_str()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    assert!(
        done["images"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with(&first_url),
        "image 0 kept from attempt 1"
    );
    assert!(
        done["images"][1]["url"]
            .as_str()
            .unwrap()
            .contains("/2-1.png"),
        "image 1 made by attempt 2"
    );
    assert_eq!(
        provider.calls(),
        3,
        "only the missing image was asked again"
    );
    assert_eq!(stack.balance(&token).await, 6);
}

#[tokio::test]
async fn transient_failures_on_the_last_attempt_fail_and_refund() {
    let stack = stack("w-exhaust", |_| {}).await;
    let provider = scripted(|_, _| Err(ProviderError::Transient("HTTP 429".into())));
    let worker = worker_for(&stack, serving(&provider), |c| {
        e2e_tests::short_times(c);
        c.max_attempts = 2;
    });
    let (token, job) = accepted(&stack, "exhaust@example.com", 1).await;
    let (user, id) = ids(&job);

    let ended = stack
        .pump_until(&worker, user, id, Duration::from_secs(15), |g| {
            g.status.is_final()
        })
        .await;

    assert!(ended);
    assert_eq!(provider.calls(), 2, "one call per attempt");
    let generation = generation(&stack, &token, &job).await;
    assert_eq!(generation["status"], "failed");
    assert_eq!(generation["error"]["code"], "provider_unavailable");
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test]
async fn a_dlq_record_of_a_generation_never_run_fails_it_and_refunds() {
    let stack = stack("w-dlq", |_| {}).await;
    let provider = scripted(|_, _| Ok(png(8, 8)));
    let worker = worker_for(&stack, serving(&provider), |_| {});
    let (token, job) = accepted(&stack, "dlq@example.com", 1).await;

    worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), true))
        .await;
    worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), true))
        .await;

    let generation = generation(&stack, &token, &job).await;
    assert_eq!(generation["status"], "failed");
    assert_eq!(generation["error"]["code"], "retries_exhausted");
    assert_eq!(provider.calls(), 0);
    assert_eq!(refunds(&stack.ledger(&token).await), [2]);
}

#[tokio::test]
async fn the_sweeper_sends_again_a_generation_whose_message_was_never_sent() {
    let stack = stack("w-sweep-send", |_| {}).await;
    let provider = scripted(|_, _| Ok(png(8, 8)));
    // A second's wait: the requeue marker has whole-second resolution.
    let worker = worker_for(&stack, serving(&provider), |c| {
        c.requeue_after = Duration::from_secs(1)
    });
    let (_token, _job) = accepted(&stack, "sweep@example.com", 1).await;
    // The request's own message stands for the one a crash lost: drain it.
    let received = stack
        .clients
        .sqs
        .receive_message()
        .queue_url(&stack.queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(received.messages().len(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let first = worker.sweep().await;
    let second = worker.sweep().await;

    assert_eq!(first.requeued, 1);
    assert_eq!(second.requeued, 0, "sent once per interval");
    assert_eq!(stack.queue_depth().await, 1);
}

#[tokio::test]
async fn the_sweeper_refunds_a_generation_past_its_deadline_once() {
    let stack = stack("w-sweep-deadline", |_| {}).await;
    let provider = scripted(|_, _| Ok(png(8, 8)));
    let worker = worker_for(&stack, serving(&provider), |c| {
        c.deadline = Duration::ZERO;
        c.requeue_after = Duration::ZERO;
    });
    let (token, job) = accepted(&stack, "deadline@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let first = worker.sweep().await;
    let second = worker.sweep().await;

    assert_eq!((first.finished, second.finished), (1, 0));
    let generation = generation(&stack, &token, &job).await;
    assert_eq!(generation["status"], "failed");
    assert_eq!(generation["error"]["code"], "deadline_exceeded");
    assert_eq!(refunds(&stack.ledger(&token).await), [2]);
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test]
async fn the_sam_sample_sqs_event_gets_a_well_formed_batch_response() {
    let stack = stack("w-hello", |_| {}).await;
    let worker = worker_for(&stack, Providers::new(), |_| {});
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("events/sqs-hello.json")).unwrap())
            .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let answer = worker.handle(event, deadline).await.unwrap();

    assert_eq!(answer, json!({"batchItemFailures": []}));
}

#[tokio::test]
async fn the_scheduled_event_runs_the_sweeper() {
    let stack = stack("w-schedule", |_| {}).await;
    let worker = worker_for(&stack, Providers::new(), |_| {});
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("events/schedule.json")).unwrap())
            .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let answer = worker.handle(event, deadline).await.unwrap();

    assert_eq!(
        answer,
        json!({"requeued": 0, "recovered": 0, "finished": 0, "expired": 0, "skipped": 0, "webhooks": 0})
    );
}

#[tokio::test]
async fn images_that_would_start_past_the_provider_window_are_left_for_the_next_delivery() {
    let stack = stack("w-budget", |_| {}).await;
    let provider = scripted(|_, _| {
        std::thread::sleep(Duration::from_millis(1200));
        Ok(png(8, 8))
    });
    let worker = worker_for(&stack, serving(&provider), |c| {
        c.images_in_parallel = 1;
        c.references_budget = Duration::ZERO;
        c.provider_timeout = Duration::from_millis(1800);
    });
    let (token, job) = accepted(&stack, "budget@example.com", 2).await;

    let first = worker
        .handle_sqs(sqs_event(&stack, std::slice::from_ref(&job), false))
        .await;

    assert_eq!(
        first.batch_item_failures.len(),
        1,
        "the rest is retried, not cut off"
    );
    assert_eq!(provider.calls(), 1);
    let partial = generation(&stack, &token, &job).await;
    assert_eq!(partial["status"], "running");
    assert_eq!(partial["images"].as_array().unwrap().len(), 1);
}

/// The lines of one resource of template.yaml (from `  Name:` to the next resource).
fn resource(template: &str, name: &str) -> Vec<String> {
    let mut lines = template.lines().skip_while(|l| *l != format!("  {name}:"));
    let first = lines.next().expect("the resource is in the template");
    std::iter::once(first)
        .chain(lines.take_while(|l| {
            let top = !l.is_empty() && !l.starts_with(' ');
            let next = l.starts_with("  ") && !l.starts_with("   ") && !l.starts_with("  #");
            !top && !next
        }))
        .map(str::to_string)
        .collect()
}

fn number(lines: &[String], key: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} is set"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is a number"))
}

#[tokio::test]
async fn the_template_and_the_worker_agree_on_the_times_that_keep_every_job_moving() {
    let stack = stack("w-times", |_| {}).await;
    let worker = worker_for(&stack, Providers::new(), |_| {});
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let template = std::fs::read_to_string(root.join("template.yaml")).unwrap();
    let function = resource(&template, "WorkerFunction");
    let queue = resource(&template, "GenerationQueue");
    let config = &worker.config;

    let timeout = number(&function, "Timeout");
    let visibility = number(&queue, "VisibilityTimeout");
    let lease = config.attempt_budget() + config.lease_margin;

    assert_eq!(Duration::from_secs(timeout), config.function_timeout);
    assert_eq!(
        number(&function, "BatchSize"),
        config.records_in_parallel as u64,
        "every record of a batch starts at once"
    );
    assert!(
        config.attempt_budget() + Duration::from_secs(2) < config.function_timeout,
        "a whole attempt fits an invocation"
    );
    assert!(
        visibility >= 6 * timeout,
        "AWS: visibility at least 6 x the timeout"
    );
    assert_eq!(
        visibility.to_string(),
        local_runner::provision::VISIBILITY_TIMEOUT_SECS
    );
    assert_eq!(
        number(&queue, "maxReceiveCount"),
        u64::from(local_runner::provision::MAX_RECEIVE_COUNT)
    );
    assert!(
        u64::from(local_runner::provision::MAX_RECEIVE_COUNT) > u64::from(config.max_attempts),
        "room for records returned unclaimed before the DLQ"
    );
    assert!(
        lease + Duration::from_secs(60) < config.deadline / 2,
        "a dead worker's job is retried (lease + one sweep) well inside the deadline"
    );
}
