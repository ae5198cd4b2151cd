//! JSON logs through `tracing`.
//!
//! The Lambda runtime opens a span carrying `requestId` around every invocation and the
//! HTTP layer opens one carrying `request_id`; lines are printed with their span list, so
//! every line names the request it belongs to.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; `RUST_LOG` filters (default `info`),
/// `LOG_FORMAT=pretty` gives human-readable lines for local runs.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stdout);
    let result = if std::env::var("LOG_FORMAT").as_deref() == Ok("pretty") {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .without_time()
            .try_init()
    };
    // A second init (tests, the local runner hosting several functions) keeps the first.
    drop(result);
}
