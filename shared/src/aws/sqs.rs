//! The generation queue (and sends to the hooks queue).

use aws_sdk_sqs::Client;
use serde::{Deserialize, Serialize};

use super::dynamo::{StoreError, sdk_error};
use crate::domain::generation::Generation;
use crate::domain::{GenerationId, UserId};
use crate::hooks::{HookEvent, HookJob};

/// The message that asks a worker to run a generation; it carries the owner because the
/// generation's key starts with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationJob {
    pub generation_id: GenerationId,
    pub user_id: UserId,
}

/// Sends jobs to the queue.
#[derive(Debug, Clone)]
pub struct JobQueue {
    client: Client,
    url: String,
}

impl JobQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Postpones a received message's next delivery (a retry with backoff).
    pub async fn change_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        secs: i32,
    ) -> Result<(), StoreError> {
        self.client
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// Moves up to `max` messages from `from` to `to` (each sent before it is deleted, so
    /// a failure in between duplicates rather than loses: the worker's claim makes a
    /// duplicate harmless). Returns how many moved.
    pub async fn move_messages(
        &self,
        from: &str,
        to: &str,
        max: usize,
    ) -> Result<usize, StoreError> {
        let mut moved = 0;
        while moved < max {
            let batch = (max - moved).min(10) as i32;
            let received = self
                .client
                .receive_message()
                .queue_url(from)
                .max_number_of_messages(batch)
                .visibility_timeout(60)
                .send()
                .await
                .map_err(sdk_error)?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let (Some(body), Some(handle)) = (message.body(), message.receipt_handle()) else {
                    continue;
                };
                self.client
                    .send_message()
                    .queue_url(to)
                    .message_body(body)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                self.client
                    .delete_message()
                    .queue_url(from)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// One `SendMessage` to the generation queue.
    pub async fn send(&self, job: &GenerationJob) -> Result<(), StoreError> {
        self.send_to(&self.url, job).await
    }

    /// Queues `event` of `generation` on the hooks queue at `hooks_url` if its creator
    /// asked for it. The write that made it due has recorded (or lets the sweeper find)
    /// it, so a failed send only makes it late: logged, not returned.
    pub async fn send_event(
        &self,
        hooks_url: Option<&str>,
        generation: &Generation,
        event: HookEvent,
    ) {
        let (Some(url), Some(job)) = (hooks_url, HookJob::wanted(generation, event)) else {
            return;
        };
        if let Err(error) = self.send_to(url, &job).await {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::new(error)),
                generation_id = %generation.id,
                event = event.as_str(),
                "webhook event not queued; the sweeper will send it"
            );
        }
    }

    /// One `SendMessage` of `message` (as JSON) to another queue of ours (the hooks queue).
    pub async fn send_to(&self, url: &str, message: &impl Serialize) -> Result<(), StoreError> {
        let body = serde_json::to_string(message).expect("our messages always serialize");
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
}
