//! Business and technical metrics as CloudWatch Embedded Metric Format lines.
//!
//! One JSON line per event on stdout, which Lambda already ships to CloudWatch Logs, where
//! EMF turns it into metrics: no API call, no buffer to flush, nothing on the request path
//! but a formatted write. The names, units and dimensions are listed in the README.

use std::io::Write;

use serde_json::{Map, Value, json};

/// Every metric of the service lives in this namespace.
pub const NAMESPACE: &str = "NanoBananaPro";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// One documented metric: the README's table is this list.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub unit: Unit,
    pub dimensions: &'static [&'static str],
    pub meaning: &'static str,
}

const fn spec(
    name: &'static str,
    unit: Unit,
    dimensions: &'static [&'static str],
    meaning: &'static str,
) -> MetricSpec {
    MetricSpec {
        name,
        unit,
        dimensions,
        meaning,
    }
}

/// Every metric the service emits.
pub const CATALOG: &[MetricSpec] = &[
    spec(
        "SignUps",
        Unit::Count,
        &["Provider"],
        "new users, by sign-in provider",
    ),
    spec(
        "GenerationsAccepted",
        Unit::Count,
        &["Model"],
        "generations charged and queued",
    ),
    spec(
        "GenerationsSucceeded",
        Unit::Count,
        &["Model"],
        "generations finished with at least one image",
    ),
    spec(
        "GenerationsFailed",
        Unit::Count,
        &["Model"],
        "generations finished with no image (fully refunded)",
    ),
    spec(
        "GenerationsPartiallyRefunded",
        Unit::Count,
        &["Model"],
        "succeeded with fewer images than asked",
    ),
    spec(
        "GenerationsCanceled",
        Unit::Count,
        &["State"],
        "cancels asked, by the state they found (queued: refunded at once; running: marked)",
    ),
    spec(
        "CreditsSpent",
        Unit::Count,
        &["Model"],
        "credits debited for generations",
    ),
    spec(
        "CreditsRefunded",
        Unit::Count,
        &["Reason"],
        "credits given back (generation, enqueue_failed, canceled)",
    ),
    spec(
        "CreditsGranted",
        Unit::Count,
        &["Reason"],
        "credits granted (signup_bonus, purchase, subscription)",
    ),
    spec(
        "CreditsClawedBack",
        Unit::Count,
        &["Provider"],
        "credits taken back for refunds and disputes",
    ),
    spec(
        "CreditsExpired",
        Unit::Count,
        &[],
        "credits left of grants whose expiry came (the sweeper's expiry step)",
    ),
    spec(
        "Purchases",
        Unit::Count,
        &["Provider", "Product"],
        "one-time purchases applied",
    ),
    spec(
        "SubscriptionRenewals",
        Unit::Count,
        &["Provider", "Product"],
        "subscription periods granted",
    ),
    spec(
        "WebhookEvents",
        Unit::Count,
        &["Provider", "Outcome"],
        "applied, duplicate, refused, unattributed, parked, deleted_account, ignored",
    ),
    spec(
        "WebhookDeliveries",
        Unit::Count,
        &["Event", "Outcome"],
        "completion webhook attempts: delivered, retry, rejected, exhausted, dropped",
    ),
    spec(
        "WebhookLatency",
        Unit::Milliseconds,
        &[],
        "one completion webhook attempt, until the receiver answered or it failed",
    ),
    spec(
        "WebhookResent",
        Unit::Count,
        &[],
        "completion webhook events the sweeper sent again (their message was lost)",
    ),
    spec(
        "RouteLatency",
        Unit::Milliseconds,
        &["Route"],
        "time to answer, per route",
    ),
    spec(
        "ServerErrors",
        Unit::Count,
        &["Route"],
        "5xx answers, per route",
    ),
    spec(
        "ProviderLatency",
        Unit::Milliseconds,
        &["Provider", "Model"],
        "one image provider call, per model (and the host that served it)",
    ),
    spec(
        "ProviderFailures",
        Unit::Count,
        &["Provider", "Class"],
        "failed provider calls, transient or permanent",
    ),
    spec(
        "TransactionConflictRetries",
        Unit::Count,
        &[],
        "DynamoDB transactions retried after TransactionConflict",
    ),
    spec(
        "DlqArrivals",
        Unit::Count,
        &[],
        "records the worker received from the DLQ",
    ),
    spec(
        "SweeperRequeued",
        Unit::Count,
        &[],
        "generations the sweeper sent again",
    ),
    spec(
        "SweeperRefunds",
        Unit::Count,
        &[],
        "generations the sweeper finished past their deadline",
    ),
    spec(
        "AccountsDeleted",
        Unit::Count,
        &[],
        "account deletions finished (subscriptions canceled, generations refunded, data removed)",
    ),
    spec(
        "AccountDeletionsStuck",
        Unit::Count,
        &[],
        "deleted accounts whose clean-up failed again in a sweep",
    ),
    spec(
        "SweeperRecovered",
        Unit::Count,
        &[],
        "running generations whose lease expired (their worker died or ran out of time), sent again",
    ),
    spec(
        "SweeperSkipped",
        Unit::Count,
        &[],
        "open generations a sweep could not read or handle (logged with their key); the sweep went on",
    ),
    spec(
        "RecordsDeferred",
        Unit::Count,
        &[],
        "SQS records returned unclaimed: no whole attempt fitted in the invocation's time left",
    ),
    spec(
        "WorkerInternalErrors",
        Unit::Count,
        &["Cause"],
        "failures of ours during a job (store, panic, overrun), each retried after its backoff",
    ),
    spec(
        "ProviderFailovers",
        Unit::Count,
        &["Provider", "Model"],
        "images moved to the next host of their model after a transient failure of this one",
    ),
    spec(
        "ProviderCircuitOpened",
        Unit::Count,
        &["Provider"],
        "times a host's circuit opened: skipped for its cool-down after consecutive transient failures",
    ),
    spec(
        "ColdStarts",
        Unit::Count,
        &["Function"],
        "function instances started",
    ),
];

/// The EMF document for one value of `name` with `dimensions`.
pub fn document(
    name: &str,
    value: f64,
    unit: Unit,
    dimensions: &[(&str, &str)],
    timestamp_ms: i64,
) -> Value {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": [{"Name": name, "Unit": unit.as_str()}],
            }],
        }),
    );
    for (key, value) in dimensions {
        root.insert((*key).to_string(), Value::String((*value).to_string()));
    }
    root.insert(name.to_string(), json!(value));
    Value::Object(root)
}

/// Emits one metric value now. Only a metric of [`CATALOG`] may be emitted (checked in
/// debug builds): the README's table and the template's dashboard are held to the catalog.
pub fn emit(name: &str, value: f64, unit: Unit, dimensions: &[(&str, &str)]) {
    debug_assert!(
        CATALOG.iter().any(|m| m.name == name
            && m.unit == unit
            && m.dimensions
                .iter()
                .copied()
                .eq(dimensions.iter().map(|(k, _)| *k))),
        "metric {name} is not in the catalog with these dimensions"
    );
    let now = time::OffsetDateTime::now_utc();
    let timestamp_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let mut line = document(name, value, unit, dimensions, timestamp_ms).to_string();
    line.push('\n');
    // A metric lost to a closed stdout must never fail the request it describes.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// Counts one occurrence (or `n`).
pub fn count(name: &str, n: u64, dimensions: &[(&str, &str)]) {
    emit(name, n as f64, Unit::Count, dimensions);
}

/// Records a duration.
pub fn millis(name: &str, elapsed: std::time::Duration, dimensions: &[(&str, &str)]) {
    emit(
        name,
        elapsed.as_secs_f64() * 1000.0,
        Unit::Milliseconds,
        dimensions,
    );
}

/// The function's name under Lambda, `local` elsewhere.
pub fn function_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into())
}

/// Once per process, at cold start.
pub fn cold_start() {
    count("ColdStarts", 1, &[("Function", &function_name())]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_metric_makes_a_valid_emf_line() {
        for metric in CATALOG {
            let dimensions: Vec<(&str, &str)> =
                metric.dimensions.iter().map(|d| (*d, "x")).collect();
            let line = document(metric.name, 3.0, metric.unit, &dimensions, 1).to_string();
            let parsed: Value = serde_json::from_str(&line).unwrap();
            let directive = &parsed["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], NAMESPACE);
            assert_eq!(directive["Metrics"][0]["Name"], metric.name);
            assert!(parsed[metric.name].is_number());
            for d in metric.dimensions {
                assert_eq!(
                    parsed[*d], "x",
                    "{}: dimension {d} has a value",
                    metric.name
                );
            }
        }
    }

    #[test]
    fn the_readme_lists_every_metric() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        for metric in CATALOG {
            assert!(
                readme.contains(&format!("`{}`", metric.name)),
                "README lacks {}",
                metric.name
            );
        }
    }

    /// The dashboard as template.yaml writes it: the `DashboardBody: !Sub |` block, each
    /// `${...}` substitution replaced by a placeholder.
    fn dashboard() -> Value {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
                .unwrap();
        let mut lines = template.lines();
        lines
            .by_ref()
            .find(|l| l.trim_end().ends_with("DashboardBody: !Sub |"))
            .expect("template.yaml has a `DashboardBody: !Sub |` block");
        let block: Vec<&str> = lines
            .take_while(|l| l.is_empty() || l.starts_with("        "))
            .collect();
        let mut text = block.join("\n");
        while let Some(start) = text.find("${") {
            let end = start + text[start..].find('}').expect("a closed ${...}");
            text.replace_range(start..=end, "substituted");
        }
        serde_json::from_str(&text).expect("the dashboard body is JSON")
    }

    /// (namespace, metric) of every metric the dashboard graphs, SEARCH expressions included.
    fn dashboard_metrics() -> Vec<(String, String)> {
        let mut found = Vec::new();
        for widget in dashboard()["widgets"].as_array().unwrap() {
            let mut namespace = String::new();
            for row in widget["properties"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                match &row[0] {
                    Value::String(ns) => {
                        if ns != "." {
                            namespace = ns.clone();
                        }
                        found.push((namespace.clone(), row[1].as_str().unwrap().to_string()));
                    }
                    Value::Object(math) => {
                        let expression = math["expression"].as_str().unwrap();
                        let Some(schema) = expression.split('{').nth(1) else {
                            continue;
                        };
                        let namespace = schema.split([',', '}']).next().unwrap();
                        for part in expression.split("MetricName=\"").skip(1) {
                            let name = part.split('"').next().unwrap();
                            found.push((namespace.to_string(), name.to_string()));
                        }
                    }
                    other => panic!("a metric row starting with {other}"),
                }
            }
        }
        found
    }

    #[test]
    fn every_catalogued_metric_is_on_the_dashboard_and_nothing_else_of_ours() {
        let graphed = dashboard_metrics();
        for metric in CATALOG {
            assert!(
                graphed
                    .iter()
                    .any(|(ns, name)| ns == NAMESPACE && name == metric.name),
                "the dashboard (template.yaml) does not show {}",
                metric.name
            );
        }
        for (ns, name) in &graphed {
            if ns == NAMESPACE {
                assert!(
                    CATALOG.iter().any(|m| m.name == name),
                    "the dashboard shows {name}, which the service never emits"
                );
            }
        }
    }

    #[test]
    fn the_dashboards_success_rate_covers_every_model_of_the_catalog() {
        let widgets = dashboard();
        let rate = widgets["widgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| {
                w["properties"]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("success rate"))
            })
            .expect("a success-rate widget");
        let rows = rate["properties"]["metrics"].as_array().unwrap();
        for model in crate::domain::catalog::MODELS {
            for metric in ["GenerationsSucceeded", "GenerationsFailed"] {
                assert!(
                    rows.iter().any(|r| r[0] == NAMESPACE
                        && r[1] == metric
                        && r[2] == "Model"
                        && r[3] == model.id),
                    "the success rate lacks {metric} of {}",
                    model.id
                );
            }
        }
    }

    #[test]
    fn a_document_names_its_metric_dimensions_and_value() {
        let doc = document(
            "GenerationsAccepted",
            1.0,
            Unit::Count,
            &[("Model", "nano-banana")],
            42,
        );
        assert_eq!(doc["_aws"]["Timestamp"], 42);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Model"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "GenerationsAccepted", "Unit": "Count"}])
        );
        assert_eq!(doc["Model"], "nano-banana");
        assert_eq!(doc["GenerationsAccepted"], 1.0);
    }
}
