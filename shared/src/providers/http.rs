//! HTTP plumbing shared by the provider adapters: one client shape, the mapping of
//! transport and status failures onto [`ProviderError`], and the guarded download of
//! provider result URLs.
//!
//! Result URLs come from provider answers, so they are treated as untrusted: HTTPS only,
//! only the provider's own hosts, no redirects (a redirect could point anywhere, including
//! the instance metadata endpoint), and a size cap enforced while the body streams in.

use std::future::Future;
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use url::{Host, Url};

use super::ProviderError;
use crate::config::ConfigError;
use crate::outbound::ClientError;

/// The largest result image [`download`] accepts by default.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: usize = 20 * 1024 * 1024;

/// The largest JSON answer read from a provider API. Answers carry base64 images, and a
/// 4K PNG is about 30 MB once encoded, so this is larger than the download cap.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Provider error texts are shown to the client and logged: keep them short.
const MAX_DETAIL_CHARS: usize = 300;

/// The hosts a provider's result URLs may point to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    hosts: Vec<String>,
    allow_loopback_http: bool,
}

impl AllowedHosts {
    /// URLs whose host equals one of `hosts` or is a subdomain of one (`api.us1.bfl.ai`
    /// for `bfl.ai`), over HTTPS.
    pub fn new<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        Self {
            hosts: hosts
                .into_iter()
                .map(|h| h.into().trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            allow_loopback_http: false,
        }
    }

    /// Also accept `http://127.0.0.1:*`, `http://[::1]:*` and `http://localhost:*`, whatever
    /// the list says. Only for tests and local fakes: never on in a deployment.
    pub fn with_loopback_http(mut self, allow: bool) -> Self {
        self.allow_loopback_http = allow;
        self
    }

    /// Adds a host to the list.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.hosts.extend(Self::new([host]).hosts);
        self
    }

    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The parsed URL if it may be fetched; otherwise why not (a permanent
    /// `malformed_response`: the provider answered with a URL we will not follow).
    pub fn check(&self, text: &str) -> Result<Url, ProviderError> {
        let refuse = |why: &str| ProviderError::Permanent {
            code: "malformed_response",
            message: format!("provider result URL refused: {why}"),
        };
        let url = Url::parse(text).map_err(|_| refuse("not an absolute URL"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("it carries credentials"));
        }
        let host = url.host().ok_or_else(|| refuse("it has no host"))?;
        let loopback = match &host {
            Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
            Host::Ipv4(ip) => ip.is_loopback(),
            Host::Ipv6(ip) => ip.is_loopback(),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback && self.allow_loopback_http => {}
            _ => return Err(refuse("only https is allowed")),
        }
        if loopback && self.allow_loopback_http {
            return Ok(url);
        }
        let name = match host {
            Host::Domain(name) => name.trim_end_matches('.').to_ascii_lowercase(),
            other => other.to_string(),
        };
        let allowed = self.hosts.iter().any(|allowed| {
            name == *allowed
                || name
                    .strip_suffix(allowed.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.'))
        });
        if allowed {
            Ok(url)
        } else {
            Err(refuse("its host is not one of the provider's"))
        }
    }
}

/// Fetches a provider result URL: only if `allowed` accepts it, without following
/// redirects, and refusing bodies over `max_bytes` (checked while streaming, so a lying or
/// absent `Content-Length` does not matter). No credentials are sent: result URLs are
/// signed on their own.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    allowed: &AllowedHosts,
    max_bytes: usize,
) -> Result<Vec<u8>, ProviderError> {
    let url = allowed.check(url)?;
    let response = client.get(url).send().await.map_err(request_error)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(ProviderError::Permanent {
            code: "malformed_response",
            message: format!("provider result URL answered {status}; redirects are not followed"),
        });
    }
    if !status.is_success() {
        // A signed result URL that is gone or forbidden will not come back by retrying the
        // download; the answer itself is unusable.
        return Err(match status_error(status, None) {
            transient @ ProviderError::Transient(_) => transient,
            ProviderError::Permanent { .. } => ProviderError::Permanent {
                code: "malformed_response",
                message: format!("provider result URL answered {status}"),
            },
        });
    }
    read_capped(response, max_bytes).await
}

/// No client means no call: as for an unreachable provider, a later attempt may do better.
impl From<ClientError> for ProviderError {
    fn from(error: ClientError) -> Self {
        ProviderError::Transient(chain(&error))
    }
}

/// Sends a request and reads its body (capped at [`MAX_RESPONSE_BYTES`]), whatever the
/// status: each adapter reads its provider's error shape before falling back to
/// [`status_error`].
pub(crate) async fn send(request: RequestBuilder) -> Result<(StatusCode, Vec<u8>), ProviderError> {
    let response = request.send().await.map_err(request_error)?;
    let status = response.status();
    let body = read_capped(response, MAX_RESPONSE_BYTES).await?;
    Ok((status, body))
}

async fn read_capped(mut response: Response, max_bytes: usize) -> Result<Vec<u8>, ProviderError> {
    let too_large = || ProviderError::Permanent {
        code: "malformed_response",
        message: format!("provider answer is larger than {max_bytes} bytes"),
    };
    let declared = response.content_length().unwrap_or(0);
    if declared > max_bytes as u64 {
        return Err(too_large());
    }
    // Trust the declared length only as a hint for the first allocation.
    let mut body = Vec::with_capacity(declared as usize);
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport failure: timeouts, connection errors and interrupted bodies are worth a
/// retry; an unusable request is not.
pub(crate) fn request_error(error: reqwest::Error) -> ProviderError {
    // Result URLs are signed: keep them out of messages and logs.
    let error = error.without_url();
    if error.is_timeout() {
        return ProviderError::Transient("provider request timed out".into());
    }
    if error.is_builder() {
        return ProviderError::Permanent {
            code: "invalid_input",
            message: format!("provider request could not be built: {}", chain(&error)),
        };
    }
    if error.is_connect() {
        return ProviderError::Transient(format!(
            "could not connect to the provider: {}",
            chain(&error)
        ));
    }
    ProviderError::Transient(format!("provider request failed: {}", chain(&error)))
}

/// An error and its sources on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A non-success status: 408, 429 and 5xx are worth a retry, any other 4xx is the
/// request's fault, and a redirect is an answer we do not follow.
pub(crate) fn status_error(status: StatusCode, detail: Option<&str>) -> ProviderError {
    let message = match detail {
        Some(detail) => format!("provider answered {status}: {detail}"),
        None => format!("provider answered {status}"),
    };
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        ProviderError::Transient(message)
    } else if status.is_client_error() {
        ProviderError::Permanent {
            code: "invalid_input",
            message,
        }
    } else {
        ProviderError::Permanent {
            code: "malformed_response",
            message,
        }
    }
}

/// Parses a JSON answer; anything that does not fit `T` is a malformed answer.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| malformed(format!("unexpected answer: {e}")))
}

/// The human-readable message of a JSON error answer (`error.message`, `error` as a string,
/// `message` or `detail`), shortened.
pub(crate) fn error_detail(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = [
        value.pointer("/error/message"),
        value.get("error"),
        value.get("message"),
        value.get("detail"),
    ]
    .into_iter()
    .flatten()
    .find_map(|v| v.as_str())?;
    Some(shorten(text))
}

pub(crate) fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(MAX_DETAIL_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

pub(crate) fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::Permanent {
        code: "malformed_response",
        message: message.into(),
    }
}

/// Runs `call` within `limit`; running out of time is transient.
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ProviderError::Transient(format!(
            "the provider gave no result within {:.1} s",
            limit.as_secs_f64()
        )))
    })
}

/// A configured base URL: absolute http(s) with a host, no query; returned without its
/// trailing slash so that endpoint paths can be appended.
pub(crate) fn base_url(text: &str, what: &str) -> Result<(String, String), ConfigError> {
    let invalid = || {
        ConfigError(format!(
            "{what}: {text:?} is not a base URL like https://host"
        ))
    };
    let url = Url::parse(text.trim()).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(invalid());
    }
    let host = url.host_str().ok_or_else(invalid)?.to_ascii_lowercase();
    Ok((url.as_str().trim_end_matches('/').to_owned(), host))
}

/// A JSON request body whose large string values (base64 references) are shared buffers
/// spliced in as they are sent, so that each of a job's image calls sends the references
/// its job encoded once without building a copy of them ([`super::ReferenceImage`]).
///
/// The JSON is built with a placeholder ([`Splice::hole`]) where each large value goes and
/// serialized as usual (it is small); [`Splice::body`] then cuts it at the placeholders and
/// interleaves the shared parts. A placeholder carries a random token, so no prompt can
/// contain one by chance or design; the parts are base64 and `data:` prefixes, which JSON
/// strings hold without escaping.
pub(crate) struct Splice {
    token: String,
    holes: Vec<Vec<bytes::Bytes>>,
}

impl Splice {
    pub(crate) fn new() -> Self {
        Self {
            token: format!("nbsplice{:032x}n", rand::random::<u128>()),
            holes: Vec::new(),
        }
    }

    /// A string to put in the JSON where the concatenation of `parts` belongs.
    pub(crate) fn hole(&mut self, parts: Vec<bytes::Bytes>) -> String {
        self.holes.push(parts);
        format!("{}{}z", self.token, self.holes.len() - 1)
    }

    /// The body to send: `value` serialized, each placeholder replaced by its parts.
    pub(crate) fn body(self, value: &serde_json::Value) -> reqwest::Body {
        let text = value.to_string();
        let mut chunks = Vec::with_capacity(1 + 2 * self.holes.len());
        let mut holes: Vec<Option<Vec<bytes::Bytes>>> = self.holes.into_iter().map(Some).collect();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(&self.token) {
            let after = &rest[at + self.token.len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let hole = after[..digits]
                .parse::<usize>()
                .ok()
                .filter(|_| after.as_bytes().get(digits) == Some(&b'z'))
                .and_then(|i| holes.get_mut(i).and_then(Option::take));
            let Some(parts) = hole else {
                // Not one of ours (or used twice): keep the text as it is.
                let keep = at + self.token.len();
                chunks.push(bytes::Bytes::copy_from_slice(&rest.as_bytes()[..keep]));
                rest = &rest[keep..];
                continue;
            };
            chunks.push(bytes::Bytes::copy_from_slice(&rest.as_bytes()[..at]));
            chunks.extend(parts);
            rest = &after[digits + 1..];
        }
        chunks.push(bytes::Bytes::copy_from_slice(rest.as_bytes()));
        reqwest::Body::wrap(Chunks::new(chunks))
    }
}

/// A body made of shared chunks, of a known length (sent with `Content-Length`).
struct Chunks {
    chunks: std::collections::VecDeque<bytes::Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<bytes::Bytes>) -> Self {
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            remaining,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.remaining -= chunk.len() as u64;
        }
        std::task::Poll::Ready(next.map(|chunk| Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(body: reqwest::Body) -> String {
        let collected = http_body_util::BodyExt::collect(body).await.unwrap();
        String::from_utf8(collected.to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_spliced_body_is_the_json_with_each_hole_filled_by_its_shared_parts() {
        let shared = bytes::Bytes::from_static(b"QUJD");
        let mut splice = Splice::new();
        let one = splice.hole(vec![
            bytes::Bytes::from_static(b"data:image/png;base64,"),
            shared.clone(),
        ]);
        let two = splice.hole(vec![shared.clone()]);
        let value = serde_json::json!({"prompt": "say \"hi\"", "images": [one, two]});

        let body = splice.body(&value);
        let size = http_body::Body::size_hint(&body).exact();
        let text = text(body).await;

        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"prompt": "say \"hi\"", "images": ["data:image/png;base64,QUJD", "QUJD"]})
        );
        assert_eq!(size, Some(text.len() as u64));
    }

    #[tokio::test]
    async fn a_prompt_that_imitates_a_placeholder_is_sent_as_written() {
        let mut splice = Splice::new();
        let hole = splice.hole(vec![bytes::Bytes::from_static(b"AAAA")]);
        let imitation = "nbsplice00000000000000000000000000000000n0z".to_string();
        let value = serde_json::json!({"prompt": imitation, "image": hole});

        let parsed: serde_json::Value =
            serde_json::from_str(&text(splice.body(&value)).await).unwrap();

        assert_eq!(parsed["prompt"], imitation);
        assert_eq!(parsed["image"], "AAAA");
    }
}
