//! Completion webhooks: a generation's `started` and `completed` events, sent to the URL
//! its creator named, signed as the Standard Webhooks specification says, at least once.
//!
//! The flow: the write that makes an event due (the worker's claim, any finish) is
//! followed by a message on the hooks queue; the worker binary's hooks handler delivers it
//! with growing backoff (the message's visibility), recording every attempt. A message
//! lost between the write and the send is found by the sweeper, which re-sends events
//! due and unsettled (the generation stays in the sparse `hooks` index until all of its
//! events are settled). A slow or dead receiver costs the hooks queue, never the worker.

pub mod send;
pub mod sign;
pub mod target;

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::domain::{GenerationId, UserId};
use crate::http::FieldError;
use target::Targets;

/// A generation event a customer may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// The worker first claimed it.
    Started,
    /// It is final: `succeeded`, `failed` or `canceled`.
    Completed,
}

impl HookEvent {
    pub const ALL: [Self; 2] = [Self::Started, Self::Completed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Completed => "completed",
        }
    }

    /// The body's `type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Started => "generation.started",
            Self::Completed => "generation.completed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// `webhook` of the create body, as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookRequest {
    pub url: String,
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// A generation's webhook, validated: where, and which events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    pub url: String,
    pub events: Vec<HookEvent>,
}

impl WebhookConfig {
    /// Checks the shape and, by resolving its host, where the URL leads; every problem
    /// is a `webhook.*` field error (a `422`).
    pub async fn parse(
        request: &WebhookRequest,
        targets: &Targets,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut events = Vec::new();
        match &request.events {
            None => events.push(HookEvent::Completed),
            Some(names) if names.is_empty() => errors.push(FieldError::new(
                "webhook.events",
                "must name at least one event",
            )),
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    match HookEvent::parse(name) {
                        Some(event) if !events.contains(&event) => events.push(event),
                        Some(_) => errors.push(FieldError::new(
                            format!("webhook.events[{i}]"),
                            "is listed twice",
                        )),
                        None => errors.push(FieldError::new(
                            format!("webhook.events[{i}]"),
                            "must be started or completed",
                        )),
                    }
                }
            }
        }
        match targets.parse(request.url.trim()) {
            Err(refused) => errors.push(FieldError::new("webhook.url", refused.to_string())),
            Ok(url) => {
                if let Err(refused) = targets.resolve(&url).await {
                    errors.push(FieldError::new("webhook.url", refused.to_string()));
                }
            }
        }
        if errors.is_empty() {
            events.sort_by_key(|e| HookEvent::ALL.iter().position(|a| a == e));
            Ok(Self {
                url: request.url.trim().to_string(),
                events,
            })
        } else {
            Err(errors)
        }
    }

    pub fn wants(&self, event: HookEvent) -> bool {
        self.events.contains(&event)
    }
}

/// A message on the hooks queue: deliver this event of this generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookJob {
    pub user_id: UserId,
    pub generation_id: GenerationId,
    pub event: HookEvent,
}

impl HookJob {
    /// The job of `event` for `generation`, if its creator asked for that event.
    pub fn wanted(
        generation: &crate::domain::generation::Generation,
        event: HookEvent,
    ) -> Option<Self> {
        generation
            .webhook
            .as_ref()
            .filter(|w| w.wants(event))
            .map(|_| Self {
                user_id: generation.user_id,
                generation_id: generation.id,
                event,
            })
    }

    /// `webhook-id`: the same on every attempt of one event.
    pub fn webhook_id(&self) -> String {
        format!("msg_{}_{}", self.generation_id.ulid(), self.event.as_str())
    }
}

/// Waits after the 1st, 2nd, ... failed attempt: about 5 s, 30 s, 2 min, 10 min, 30 min,
/// then hourly; the last attempt comes about 3.7 hours after the first (API.md: at least 2).
pub const RETRY_DELAYS_SECS: &[u64] = &[5, 30, 120, 600, 1800, 3600, 3600, 3600];

/// The deployed schedule, as durations.
pub fn default_schedule() -> Vec<Duration> {
    RETRY_DELAYS_SECS
        .iter()
        .map(|s| Duration::from_secs(*s))
        .collect()
}

/// The wait before the next attempt after `attempts` failed ones, by `schedule` (with
/// ±20 % jitter, so a receiver that comes back is not met by every event at once);
/// `None`: the schedule is over, give up.
pub fn retry_delay(schedule: &[Duration], attempts: u32) -> Option<Duration> {
    let base = *schedule.get((attempts as usize).checked_sub(1)?)?;
    let jitter = rand::rng().random_range(0.8..=1.2);
    Some(base.mul_f64(jitter))
}

/// The body: `{"type", "timestamp", "data": Generation}`.
pub fn event_body(event: HookEvent, timestamp: &str, generation: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": event.type_name(),
        "timestamp": timestamp,
        "data": generation,
    }))
    .expect("a generation view always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_documented_schedule_for_more_than_two_hours_then_stop() {
        let schedule = default_schedule();
        let near = |attempts: u32, secs: f64| {
            let delay = retry_delay(&schedule, attempts).unwrap().as_secs_f64();
            assert!(
                (secs * 0.8..=secs * 1.2).contains(&delay),
                "{attempts}: {delay}"
            );
        };
        near(1, 5.0);
        near(2, 30.0);
        near(3, 120.0);
        near(4, 600.0);
        near(5, 1800.0);
        near(6, 3600.0);
        assert!(retry_delay(&schedule, 0).is_none());
        assert!(retry_delay(&schedule, schedule.len() as u32 + 1).is_none());
        let total: u64 = RETRY_DELAYS_SECS.iter().sum();
        assert!(total as f64 * 0.8 > 2.0 * 3600.0, "{total}");
    }

    #[tokio::test]
    async fn events_default_to_completed_and_bad_ones_are_named() {
        let targets =
            Targets::new(false).with_override("hooks.example", &["93.184.216.34".parse().unwrap()]);
        let request = |events: Option<Vec<&str>>| WebhookRequest {
            url: "https://hooks.example/x".into(),
            events: events.map(|e| e.into_iter().map(String::from).collect()),
        };

        let default = WebhookConfig::parse(&request(None), &targets)
            .await
            .unwrap();
        let both = WebhookConfig::parse(&request(Some(vec!["completed", "started"])), &targets)
            .await
            .unwrap();
        let bad = WebhookConfig::parse(
            &request(Some(vec!["finished", "started", "started"])),
            &targets,
        )
        .await
        .unwrap_err();

        assert_eq!(default.events, [HookEvent::Completed]);
        assert_eq!(both.events, [HookEvent::Started, HookEvent::Completed]);
        let fields: Vec<_> = bad.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["webhook.events[0]", "webhook.events[2]"]);
    }

    #[tokio::test]
    async fn a_url_that_resolves_to_the_metadata_service_is_a_field_error() {
        let targets = Targets::new(false)
            .with_override("sneaky.example", &["169.254.169.254".parse().unwrap()]);
        let request = WebhookRequest {
            url: "https://sneaky.example/hook".into(),
            events: None,
        };

        let errors = WebhookConfig::parse(&request, &targets).await.unwrap_err();

        assert_eq!(errors[0].field, "webhook.url");
    }

    #[test]
    fn the_webhook_id_is_one_per_event_of_a_generation() {
        let job = HookJob {
            user_id: UserId::new(),
            generation_id: GenerationId::new(),
            event: HookEvent::Started,
        };
        let completed = HookJob {
            event: HookEvent::Completed,
            ..job
        };
        assert_eq!(job.webhook_id(), job.webhook_id());
        assert_ne!(job.webhook_id(), completed.webhook_id());
        assert!(job.webhook_id().starts_with("msg_"));
    }
}
