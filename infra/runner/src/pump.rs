//! Feeds the worker from the real queues the way the Lambda SQS event source does:
//! batches of the template's size, each with an invocation's deadline, partial batch failures (failed records stay and come back after
//! their visibility timeout), and SQS's own redrive to the DLQ after maxReceiveCount.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use worker::Worker;
use worker::hooks::Hooks;

/// Polls `queue_url` until the process ends.
pub async fn pump(worker: Arc<Worker>, sqs: aws_sdk_sqs::Client, queue_url: String) {
    let arn = match queue_arn(&sqs, &queue_url).await {
        Ok(arn) => arn,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                queue_url,
                "cannot read the queue ARN; not polling"
            );
            return;
        }
    };
    // A pause between receiving a batch and working it (`LOCAL_WORKER_DELAY_MS`), so that a
    // test can see, and cancel, a generation while it is still queued. Unset: none.
    let delay = std::env::var("LOCAL_WORKER_DELAY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or_default();
    loop {
        // Each batch is an invocation: the function's timeout from its receipt.
        let deadline = tokio::time::Instant::now() + worker.config.function_timeout;
        let batch = worker.config.records_in_parallel;
        let handled = pump_batch_with(&sqs, &queue_url, &arn, batch, |event| async {
            tokio::time::sleep(delay).await;
            worker.handle_sqs_until(event, deadline).await
        });
        if let Err(error) = handled.await {
            tracing::error!(
                error = format!("{error:#}"),
                queue_url,
                "polling failed; retrying in 1 s"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// One receive, one invocation, one delete of what succeeded. Returns how many records
/// the batch had. The invocation's deadline is the function's timeout from now, as
/// Lambda gives it; a batch is at most `records_in_parallel` records (the template's
/// `BatchSize`).
pub async fn pump_once(
    worker: &Arc<Worker>,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    arn: &str,
) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + worker.config.function_timeout;
    let batch = worker.config.records_in_parallel;
    pump_once_until(worker, sqs, queue_url, arn, batch, deadline).await
}

/// [`pump_once`] with the batch size and the invocation's deadline given (tests of the
/// budget change them).
pub async fn pump_once_until(
    worker: &Arc<Worker>,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    arn: &str,
    batch: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<usize> {
    pump_batch_with(sqs, queue_url, arn, batch, |event| {
        worker.handle_sqs_until(event, deadline)
    })
    .await
}

/// Polls the hooks queue until the process ends, delivering completion webhooks.
pub async fn pump_hooks(hooks: Arc<Hooks>, sqs: aws_sdk_sqs::Client, queue_url: String) {
    let arn = match queue_arn(&sqs, &queue_url).await {
        Ok(arn) => arn,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                queue_url,
                "cannot read the hooks queue ARN; not polling"
            );
            return;
        }
    };
    loop {
        if let Err(error) =
            pump_once_with(&sqs, &queue_url, &arn, |event| hooks.handle_sqs(event)).await
        {
            tracing::error!(
                error = format!("{error:#}"),
                queue_url,
                "polling failed; retrying in 1 s"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// [`pump_once`] with any handler of an SQS batch (the worker's, the hooks'), up to 10
/// records.
pub async fn pump_once_with<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    arn: &str,
    handle: F,
) -> anyhow::Result<usize>
where
    F: FnOnce(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = SqsBatchResponse>,
{
    pump_batch_with(sqs, queue_url, arn, 10, handle).await
}

/// One receive of up to `batch` records (at most 10), one call of `handle`, one delete of
/// what succeeded; how many records the batch had.
pub async fn pump_batch_with<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    arn: &str,
    batch: usize,
    handle: F,
) -> anyhow::Result<usize>
where
    F: FnOnce(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = SqsBatchResponse>,
{
    let batch = batch.clamp(1, 10) as i32;
    let received = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(batch)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await?;
    let messages = received.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(0);
    }
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.clone().into()))
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    let event: SqsEvent = serde_json::from_value(serde_json::json!({ "Records": records }))?;
    let response = handle(event).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    let done: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .filter(|m| {
            !m.message_id()
                .is_some_and(|id| failed.iter().any(|f| f == id))
        })
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .set_receipt_handle(m.receipt_handle().map(str::to_string))
                .build()
                .ok()
        })
        .collect();
    if !done.is_empty() {
        sqs.delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(done))
            .send()
            .await?;
    }
    Ok(messages.len())
}

pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> anyhow::Result<String> {
    sqs.get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| anyhow::anyhow!("no ARN for {queue_url}"))
}

/// Runs the sweeper every `interval`, as the one-minute schedule does.
pub async fn sweep_every(worker: Arc<Worker>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let report = worker.sweep().await;
        if report.requeued + report.recovered + report.finished + report.expired + report.skipped
            > 0
        {
            tracing::info!(
                requeued = report.requeued,
                recovered = report.recovered,
                finished = report.finished,
                expired = report.expired,
                skipped = report.skipped,
                "swept"
            );
        }
    }
}

/// Finishes account deletions whose request died, every `interval` (the deployed stack's
/// scheduled `auth` sweep).
pub async fn sweep_deletions_every(
    services: Arc<shared::Services>,
    auth: Arc<auth::AuthContext>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        if let Err(error) =
            auth::deletion::sweep_deletions(&services, &auth.billing, auth::deletion::SWEEP_AFTER)
                .await
        {
            tracing::error!(error = %error, "deletion sweep failed");
        }
    }
}
