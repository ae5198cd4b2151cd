//! One delivery attempt to a customer's receiver: through the guarded resolver, no
//! redirects, no proxy, 10 seconds in all, at most 64 KiB of the answer read.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use url::Url;

use super::target::{Refused, Targets};

/// A 2xx within this delivers; anything slower is a timeout, retried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Of a receiver's answer we read at most this (for the attempt's record); the rest is
/// dropped unread.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx: delivered.
    Delivered { status: u16 },
    /// A timeout, connection failure, `408`, `429` or `5xx`: try again later.
    Retry {
        status: Option<u16>,
        error: Option<String>,
    },
    /// Any other answer (a redirect included): the receiver said no; no further attempt.
    Rejected { status: u16 },
    /// The URL may not be called (what it resolves to now is forbidden): no attempt made.
    Refused(Refused),
}

impl Attempt {
    /// The status, or a short word for what happened instead.
    pub fn label(&self) -> String {
        match self {
            Self::Delivered { status } | Self::Rejected { status } => status.to_string(),
            Self::Retry {
                status: Some(status),
                ..
            } => status.to_string(),
            Self::Retry { error, .. } => error.clone().unwrap_or_else(|| "error".into()),
            Self::Refused(_) => "refused".into(),
        }
    }
}

/// An event ready to send: body and the three Standard Webhooks headers.
#[derive(Debug, Clone)]
pub struct Signed {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: Vec<u8>,
}

/// Sends webhook attempts; its clients are built on first use (no TLS roots at cold start).
#[derive(Debug)]
pub struct Sender {
    targets: Targets,
    https: OnceLock<reqwest::Client>,
    http: OnceLock<reqwest::Client>,
}

impl Sender {
    pub fn new(targets: Targets) -> Self {
        Self {
            targets,
            https: OnceLock::new(),
            http: OnceLock::new(),
        }
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// One attempt, timed.
    pub async fn send(&self, url: &str, event: &Signed) -> (Attempt, Duration) {
        let started = Instant::now();
        let attempt = self.attempt(url, event).await;
        (attempt, started.elapsed())
    }

    async fn attempt(&self, url: &str, event: &Signed) -> Attempt {
        let url = match self.targets.parse(url) {
            Ok(url) => url,
            Err(refused) => return Attempt::Refused(refused),
        };
        // IP literals never reach a resolver: check them here. Names are checked by the
        // client's resolver as it connects.
        if let Some(refused) = self.literal_refused(&url).await {
            return Attempt::Refused(refused);
        }
        let client = match self.client(url.scheme()) {
            Ok(client) => client,
            Err(e) => {
                return Attempt::Retry {
                    status: None,
                    error: Some(format!("client: {e}")),
                };
            }
        };
        let response = client
            .post(url.as_str())
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", event.timestamp.to_string())
            .header("webhook-signature", &event.signature)
            .body(event.body.clone())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => return failure(&e),
        };
        let status = response.status().as_u16();
        // Read a bounded part of the answer within the same overall timeout.
        let mut response = response;
        let mut read = 0usize;
        while read < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        classify(status)
    }

    async fn literal_refused(&self, url: &Url) -> Option<Refused> {
        match url.host()? {
            url::Host::Domain(_) => None,
            _ => self.targets.resolve(url).await.err(),
        }
    }

    fn client(&self, scheme: &str) -> Result<&reqwest::Client, reqwest::Error> {
        let (cell, scheme) = match scheme {
            "http" => (&self.http, "http"),
            _ => (&self.https, "https"),
        };
        if let Some(client) = cell.get() {
            return Ok(client);
        }
        let built = reqwest::Client::builder()
            .tls_backend_rustls()
            .dns_resolver(self.targets.resolver(scheme))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to an address we never checked.
            .no_proxy()
            // No kept-alive connection: every attempt resolves and checks again.
            .pool_max_idle_per_host(0)
            .connect_timeout(ATTEMPT_TIMEOUT)
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!(
                "NanoBananaPro-Webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(cell.get_or_init(|| built))
    }
}

/// 2xx delivers; 408, 429 and 5xx are worth another attempt; anything else ends them.
pub fn classify(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered { status },
        408 | 429 | 500..=599 => Attempt::Retry {
            status: Some(status),
            error: None,
        },
        _ => Attempt::Rejected { status },
    }
}

fn failure(error: &reqwest::Error) -> Attempt {
    // The resolver's refusal travels inside the connect error.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return match refused {
                Refused::Unresolvable => Attempt::Retry {
                    status: None,
                    error: Some("dns".into()),
                },
                other => Attempt::Refused(other.clone()),
            };
        }
        source = e.source();
    }
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    };
    Attempt::Retry {
        status: None,
        error: Some(kind.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_timeouts_408_429_and_5xx_are_retried() {
        assert_eq!(classify(200), Attempt::Delivered { status: 200 });
        assert_eq!(classify(204), Attempt::Delivered { status: 204 });
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(status), Attempt::Retry { .. }),
                "{status}"
            );
        }
        for status in [301, 302, 400, 401, 404, 410, 422] {
            assert_eq!(classify(status), Attempt::Rejected { status });
        }
    }
}
