//! `Prefer: wait=N` (RFC 7240): hold the answer until the generation is final or N
//! seconds have passed, reading the item with a growing interval.
//!
//! What a wait costs: one strongly consistent `GetItem` per poll — at most 54 for a
//! 25-second wait (100 ms, growing by half up to 500 ms) — and the function's time while
//! it waits (billed like any Lambda duration). A result is seen at most one interval
//! (≤ 500 ms) after it lands (BENCHMARKS.md has the measured delay, against polling).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use shared::Services;
use shared::domain::generation::Generation;
use shared::http::ApiError;

/// The longest wait honoured: under API Gateway's 30-second integration timeout.
pub const MAX_WAIT_SECS: u64 = 25;
// A 1-second cap measured no better than a client polling every second (p50 462 ms vs
// 483 ms): half a second halves the delay for about twice the reads, which cost far less
// than the function's waiting time.
const FIRST_POLL: Duration = Duration::from_millis(100);
const LONGEST_POLL: Duration = Duration::from_millis(500);

/// The wait the request prefers, capped at 25 s; `None` without a valid `wait=N`.
pub fn preferred(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse)
}

/// `wait=N` among a `Prefer` header's comma-separated preferences (parameters after `;`
/// ignored); a value that is not a positive integer is no preference.
fn parse(value: &str) -> Option<u64> {
    value.split(',').find_map(|preference| {
        let token = preference.split(';').next()?.trim();
        let (name, seconds) = token.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("wait") {
            return None;
        }
        let seconds = seconds.trim().trim_matches('"');
        if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digits only: an overflow is just a very long wait, capped like any other.
        let n = seconds.parse::<u64>().unwrap_or(u64::MAX);
        (n > 0).then_some(n.min(MAX_WAIT_SECS))
    })
}

/// The generation once final, or as it is when the wait runs out (or at once without
/// a wait).
pub async fn until_final(
    services: &Services,
    mut generation: Generation,
    wait: Option<u64>,
) -> Result<Generation, ApiError> {
    let Some(seconds) = wait else {
        return Ok(generation);
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut interval = FIRST_POLL;
    while !generation.status.is_final() {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 3 / 2).min(LONGEST_POLL);
        match services
            .store
            .get_generation(generation.user_id, generation.id)
            .await?
        {
            Some(fresh) => generation = fresh,
            // Deleted meanwhile (only a final one can be): answer what was last seen.
            None => break,
        }
    }
    Ok(generation)
}

/// `Preference-Applied: wait=N` where a wait was honoured.
pub fn applied(response: &mut Response, wait: Option<u64>) {
    if let Some(seconds) = wait {
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_str(&format!("wait={seconds}")).expect("digits are a header"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_read_among_other_preferences_and_capped_at_25() {
        assert_eq!(parse("wait=10"), Some(10));
        assert_eq!(parse("respond-async, wait=5"), Some(5));
        assert_eq!(parse("WAIT = 7 ; foo=bar"), Some(7));
        assert_eq!(parse("wait=100"), Some(25));
        assert_eq!(parse("wait=99999999999999999999999"), Some(25));
    }

    #[test]
    fn a_wait_that_is_not_a_positive_integer_is_ignored() {
        for value in [
            "wait=0",
            "wait=-3",
            "wait=1.5",
            "wait=",
            "wait=soon",
            "respond-async",
        ] {
            assert_eq!(parse(value), None, "{value}");
        }
    }
}
