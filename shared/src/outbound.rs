//! Outbound HTTPS to third parties (image, payment and sign-in providers): one client
//! shape, built on first use.
//!
//! Building a rustls client reads the system's TLS root certificates, about 2 ms here.
//! Built at cold start, that was a third of `auth`'s and `webhook`'s init (BENCHMARKS.md),
//! paid by every cold start for a client most invocations never touch (`/v1/me`, a webhook
//! delivery). The AWS SDK's own client is unaffected: it loads its roots on its own.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long establishing a connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A reqwest client (rustls, no redirects, a connect timeout and an overall per-request
/// timeout) built by the first [`LazyClient::get`]. Clones share the one client and its
/// connection pool.
#[derive(Clone)]
pub struct LazyClient {
    inner: Arc<Inner>,
}

struct Inner {
    timeout: Duration,
    client: OnceLock<reqwest::Client>,
}

/// The client could not be built: the TLS roots could not be loaded. Nothing the caller
/// sent is at fault; it answers as it would for an unreachable provider.
#[derive(Debug, thiserror::Error)]
#[error("building the HTTPS client failed")]
pub struct ClientError(#[source] reqwest::Error);

impl LazyClient {
    pub fn new(timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                timeout,
                client: OnceLock::new(),
            }),
        }
    }

    /// The client, built now if this is its first use.
    pub fn get(&self) -> Result<&reqwest::Client, ClientError> {
        if let Some(client) = self.inner.client.get() {
            return Ok(client);
        }
        // Two first uses at once may both build; one is kept. Cheaper than a lock held
        // across the build, and harmless: the loser is dropped before it connects.
        let built = build(self.inner.timeout).map_err(ClientError)?;
        Ok(self.inner.client.get_or_init(|| built))
    }
}

impl fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyClient")
            .field("timeout", &self.inner.timeout)
            .field("built", &self.inner.client.get().is_some())
            .finish()
    }
}

fn build(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tls_backend_rustls()
        // A redirect could point anywhere, including the instance metadata endpoint; no
        // provider we call needs one followed.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .user_agent(concat!("image-backend/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_before_the_first_use_and_clones_share_the_client() {
        let lazy = LazyClient::new(Duration::from_secs(5));
        let clone = lazy.clone();
        assert!(format!("{lazy:?}").contains("built: false"));

        let first: *const reqwest::Client = lazy.get().unwrap();
        let second: *const reqwest::Client = clone.get().unwrap();

        assert_eq!(first, second);
        assert!(format!("{clone:?}").contains("built: true"));
    }
}
