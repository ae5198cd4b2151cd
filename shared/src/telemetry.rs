//! JSON logs through `tracing`.
//!
//! The Lambda runtime opens a span carrying `requestId` around every invocation and the
//! HTTP layer opens one carrying `request_id`; lines are printed with their span list, so
//! every line names the request it belongs to.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the global subscriber once; `RUST_LOG` filters (default `info`),
/// `LOG_FORMAT=pretty` gives human-readable lines for local runs.
pub fn init() {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stdout);
    let registry = tracing_subscriber::registry().with(filter);
    let result = if std::env::var("LOG_FORMAT").as_deref() == Ok("pretty") {
        registry.with(fmt).try_init()
    } else {
        registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .without_time(),
            )
            .try_init()
    };
    // A second init (tests, the local runner hosting several functions) keeps the first.
    drop(result);
}

/// `RUST_LOG` as a list of `target=level` and a default `level` (`info` when unset or
/// unreadable). `Targets` rather than `EnvFilter`: the same syntax for what we use, without
/// the regex engine that span-field filters need (about 1 MiB of every bootstrap).
fn filter(rust_log: Option<&str>) -> Targets {
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => info(),
        Some(text) => text.parse().unwrap_or_else(|e| {
            eprintln!("RUST_LOG={text:?} is not a list of target=level ({e}); using info");
            info()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_sets_the_default_and_per_target_levels() {
        let filter = filter(Some("warn,worker=debug"));

        assert!(filter.would_enable("worker", &Level::DEBUG));
        assert!(!filter.would_enable("shared", &Level::INFO));
        assert!(filter.would_enable("shared", &Level::WARN));
    }

    #[test]
    fn an_unset_or_unreadable_rust_log_means_info() {
        for value in [None, Some(""), Some("worker=[span]=loud")] {
            let filter = filter(value);

            assert!(filter.would_enable("shared", &Level::INFO), "{value:?}");
            assert!(!filter.would_enable("shared", &Level::DEBUG), "{value:?}");
        }
    }
}
