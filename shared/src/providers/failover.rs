//! Failover between the configured hosts of one model (invariant 7), and a circuit breaker
//! per host.
//!
//! A model's hosts are tried in the order `MODEL_PROVIDERS` lists them, one image at a
//! time: a transient failure (timeout, 429, 5xx) moves that image to the next host; a
//! permanent one (a refusal, unusable input) is final, since another host of the same model
//! would refuse it too; the first image made wins and names its host. Never another model,
//! never the built-in renderer (configuration refuses `local` in a list).
//!
//! The breaker (one per host, in memory, per warm instance) keeps a host that is down from
//! costing every job its timeout: after `failures` consecutive transient failures it is
//! skipped for `cool_down`, then one trial call is let through; a success (or any answer
//! that shows the host is up, a refusal included) closes it, a transient failure opens it
//! again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{ImageProvider, ImageRequest, ProviderError};

/// When a host's breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive transient failures that open the breaker.
    pub failures: u32,
    /// How long an open breaker skips its host before it lets one trial call through.
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    /// Three failures in a row, thirty seconds off: a host that answers 503 to three
    /// images is not asked for a fourth for half a minute, and a host that is back is
    /// noticed within half a minute.
    fn default() -> Self {
        Self {
            failures: 3,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Past the cool-down, one trial call in flight.
    Trial,
}

/// What the breaker let a caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: call.
    Call,
    /// The one trial call after a cool-down.
    Trial,
    /// Open (or a trial is in flight): do not call this host now.
    Skip,
}

/// How a call ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// An image, or an answer that shows the host works (a refusal, bad input).
    Answered,
    /// Timeout, connection failure, 429, 5xx.
    Transient,
}

/// A change worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    Closed,
}

/// The breaker of one host: a pure state machine over the times it is given.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may go to the host at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut state = self
            .state
            .lock()
            .expect("the breaker's lock is never poisoned");
        match *state {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if now >= until => {
                *state = State::Trial;
                Admission::Trial
            }
            State::Open { .. } | State::Trial => Admission::Skip,
        }
    }

    /// Records how a call that [`Self::admit`] let through ended.
    pub fn record(&self, admission: Admission, result: CallResult, now: Instant) -> Option<Change> {
        let mut state = self
            .state
            .lock()
            .expect("the breaker's lock is never poisoned");
        let open = State::Open {
            until: now + self.policy.cool_down,
        };
        match (admission, result, *state) {
            (Admission::Skip, _, _) => None,
            (Admission::Trial, CallResult::Answered, _) => {
                *state = State::Closed { failures: 0 };
                Some(Change::Closed)
            }
            (Admission::Trial, CallResult::Transient, _) => {
                *state = open;
                Some(Change::Opened)
            }
            (Admission::Call, CallResult::Answered, State::Closed { .. }) => {
                *state = State::Closed { failures: 0 };
                None
            }
            (Admission::Call, CallResult::Transient, State::Closed { failures }) => {
                if failures + 1 >= self.policy.failures {
                    *state = open;
                    Some(Change::Opened)
                } else {
                    *state = State::Closed {
                        failures: failures + 1,
                    };
                    None
                }
            }
            // A call let through before the breaker opened: the trial decides, not it.
            (Admission::Call, _, State::Open { .. } | State::Trial) => None,
        }
    }

    /// Hands back an admission that was not used: a trial not made goes to the next caller.
    pub fn forgo(&self, admission: Admission, now: Instant) {
        let mut state = self
            .state
            .lock()
            .expect("the breaker's lock is never poisoned");
        if admission == Admission::Trial && *state == State::Trial {
            *state = State::Open { until: now };
        }
    }

    /// Whether the breaker skips its host at `now` (for tests and logs).
    pub fn is_open(&self, now: Instant) -> bool {
        match *self
            .state
            .lock()
            .expect("the breaker's lock is never poisoned")
        {
            State::Open { until } => now < until,
            State::Trial => true,
            State::Closed { .. } => false,
        }
    }
}

/// One host of a model: its adapter and its breaker (shared by every model it serves).
#[derive(Clone)]
pub struct Host {
    pub provider: Arc<dyn ImageProvider>,
    pub breaker: Arc<Breaker>,
}

/// An image and the host that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub bytes: Vec<u8>,
    pub provider: &'static str,
}

/// A model's hosts, in the order they are tried.
#[derive(Clone, Default)]
pub struct Chain {
    hosts: Vec<Host>,
}

impl Chain {
    pub(crate) fn push(&mut self, host: Host) {
        self.hosts.push(host);
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The names of the hosts, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.hosts.iter().map(|h| h.provider.name()).collect()
    }

    /// One image: each host in turn until one makes it or refuses it for good. Each call
    /// gets at most `per_call`, and none starts after `until`. A transient error means
    /// every host failed transiently, was skipped by its breaker, or time ran out.
    pub async fn generate(
        &self,
        request: &ImageRequest<'_>,
        until: Instant,
        per_call: Duration,
    ) -> Result<Made, ProviderError> {
        let mut last: Option<ProviderError> = None;
        for (position, host) in self.hosts.iter().enumerate() {
            let name = host.provider.name();
            let admission = host.breaker.admit(Instant::now());
            if admission == Admission::Skip {
                tracing::info!(
                    provider = name,
                    index = request.index,
                    "circuit open; host skipped"
                );
                last.get_or_insert_with(|| {
                    ProviderError::Transient(format!("{name} is skipped while its circuit is open"))
                });
                continue;
            }
            let budget = per_call.min(until.saturating_duration_since(Instant::now()));
            if budget < Duration::from_secs(1) {
                host.breaker.forgo(admission, Instant::now());
                return Err(last.unwrap_or_else(|| {
                    ProviderError::Transient("out of time in this attempt".into())
                }));
            }
            let started = std::time::Instant::now();
            let result = match tokio::time::timeout(budget, host.provider.generate(request)).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::Transient(format!(
                    "{name} gave no image within {:.0} s",
                    budget.as_secs_f64()
                ))),
            };
            let elapsed = started.elapsed();
            record_call(name, request, admission, &result, elapsed);
            let outcome = match &result {
                Err(ProviderError::Transient(_)) => CallResult::Transient,
                _ => CallResult::Answered,
            };
            match host.breaker.record(admission, outcome, Instant::now()) {
                Some(Change::Opened) => {
                    tracing::warn!(
                        provider = name,
                        "circuit opened: host skipped for its cool-down"
                    );
                    crate::metrics::count("ProviderCircuitOpened", 1, &[("Provider", name)]);
                }
                Some(Change::Closed) => tracing::info!(provider = name, "circuit closed"),
                None => {}
            }
            match result {
                Ok(bytes) => {
                    return Ok(Made {
                        bytes,
                        provider: name,
                    });
                }
                Err(permanent @ ProviderError::Permanent { .. }) => return Err(permanent),
                Err(transient) => {
                    if position + 1 < self.hosts.len() {
                        tracing::warn!(provider = name, index = request.index, error = %transient, "transient failure; trying the next host");
                        crate::metrics::count(
                            "ProviderFailovers",
                            1,
                            &[("Provider", name), ("Model", request.model)],
                        );
                    }
                    last = Some(transient);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| ProviderError::Transient("no provider serves this model".into())))
    }
}

fn record_call(
    name: &'static str,
    request: &ImageRequest<'_>,
    admission: Admission,
    result: &Result<Vec<u8>, ProviderError>,
    elapsed: Duration,
) {
    tracing::info!(
        provider = name,
        index = request.index,
        trial = admission == Admission::Trial,
        ok = result.is_ok(),
        latency_ms = elapsed.as_millis() as u64,
        "provider call"
    );
    crate::metrics::millis(
        "ProviderLatency",
        elapsed,
        &[("Provider", name), ("Model", request.model)],
    );
    if let Err(e) = result {
        let class = if e.is_transient() {
            "transient"
        } else {
            "permanent"
        };
        crate::metrics::count(
            "ProviderFailures",
            1,
            &[("Provider", name), ("Class", class)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(30);

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy {
            failures: 3,
            cool_down: COOL,
        })
    }

    fn fail(b: &Breaker, now: Instant) -> Option<Change> {
        let admission = b.admit(now);
        b.record(admission, CallResult::Transient, now)
    }

    #[test]
    fn a_breaker_opens_after_k_consecutive_transient_failures_and_not_before() {
        let b = breaker();
        let now = Instant::now();

        assert_eq!(fail(&b, now), None);
        assert_eq!(fail(&b, now), None);
        assert_eq!(fail(&b, now), Some(Change::Opened));

        assert_eq!(b.admit(now + COOL / 2), Admission::Skip);
        assert!(b.is_open(now + COOL / 2));
    }

    #[test]
    fn an_answer_in_between_resets_the_count() {
        let b = breaker();
        let now = Instant::now();
        fail(&b, now);
        fail(&b, now);
        let admission = b.admit(now);
        b.record(admission, CallResult::Answered, now);

        assert_eq!(fail(&b, now), None);
        assert_eq!(fail(&b, now), None);
        assert_eq!(b.admit(now), Admission::Call);
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_through_and_its_success_closes_the_breaker() {
        let b = breaker();
        let now = Instant::now();
        (0..3).for_each(|_| {
            fail(&b, now);
        });
        let later = now + COOL;

        let trial = b.admit(later);
        let meanwhile = b.admit(later);
        let closed = b.record(trial, CallResult::Answered, later);

        assert_eq!(trial, Admission::Trial);
        assert_eq!(meanwhile, Admission::Skip, "one trial at a time");
        assert_eq!(closed, Some(Change::Closed));
        assert_eq!(b.admit(later), Admission::Call);
    }

    #[test]
    fn a_failed_trial_opens_the_breaker_for_another_cool_down() {
        let b = breaker();
        let now = Instant::now();
        (0..3).for_each(|_| {
            fail(&b, now);
        });
        let later = now + COOL;

        let trial = b.admit(later);
        let reopened = b.record(trial, CallResult::Transient, later);

        assert_eq!(reopened, Some(Change::Opened));
        assert_eq!(b.admit(later + COOL / 2), Admission::Skip);
        assert_eq!(b.admit(later + COOL), Admission::Trial);
    }

    #[test]
    fn a_trial_not_made_goes_to_the_next_caller() {
        let b = breaker();
        let now = Instant::now();
        (0..3).for_each(|_| {
            fail(&b, now);
        });
        let trial = b.admit(now + COOL);

        b.forgo(trial, now + COOL);

        assert_eq!(b.admit(now + COOL), Admission::Trial);
    }

    #[test]
    fn a_late_failure_of_a_call_let_through_before_the_breaker_opened_changes_nothing() {
        let b = breaker();
        let now = Instant::now();
        let early = b.admit(now);
        (0..3).for_each(|_| {
            fail(&b, now);
        });

        assert_eq!(b.record(early, CallResult::Transient, now), None);
        assert_eq!(
            b.admit(now + COOL),
            Admission::Trial,
            "the cool-down was not extended"
        );
    }
}
