//! The results, as JSON and as the Markdown tables of BENCHMARKS.md, with each of the
//! issue's targets stated as met or missed (information only: nothing here fails a run).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::calls::Count;
use crate::e2e;
use crate::process::{ColdStart, Memory};
use crate::stats::median;
use crate::{FUNCTIONS, HELLO_SDK, NODE};

#[derive(Debug, Serialize)]
pub struct Results {
    pub quick: bool,
    pub cold_start: Vec<Spawns>,
    /// The same spawns with `SSL_CERT_FILE` naming `cert_file` (full run only).
    pub cold_start_cert_file: Vec<Spawns>,
    pub cert_file: Option<String>,
    pub memory: Vec<MemoryRow>,
    pub calls: Vec<Count>,
    pub sizes: Vec<SizeRow>,
    pub e2e: Vec<e2e::Run>,
    pub emulator: Vec<e2e::Floor>,
    pub wait: Option<crate::wait::WaitFigures>,
    /// The worker's largest job (its memory row is in `memory`).
    pub largest: Option<crate::jobs::Largest>,
    pub recovery: Option<crate::jobs::Recovery>,
    pub expiry: Option<crate::expiry::ExpiryCost>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            cold_start: vec![],
            cold_start_cert_file: vec![],
            cert_file: None,
            memory: vec![],
            calls: vec![],
            sizes: vec![],
            e2e: vec![],
            emulator: vec![],
            wait: None,
            largest: None,
            recovery: None,
            expiry: None,
            notes: vec![],
        }
    }
}

/// One subject's cold starts, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Spawns {
    pub name: String,
    pub to_next_ms: Vec<f64>,
    pub to_response_ms: Vec<f64>,
    pub outcomes: BTreeMap<String, usize>,
}

impl Spawns {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            to_next_ms: vec![],
            to_response_ms: vec![],
            outcomes: BTreeMap::new(),
        }
    }

    pub fn push(&mut self, timing: ColdStart, outcome: String) {
        self.to_next_ms.push(timing.to_next.as_secs_f64() * 1000.0);
        self.to_response_ms
            .push(timing.to_response.as_secs_f64() * 1000.0);
        *self.outcomes.entry(outcome).or_insert(0) += 1;
    }
}

#[derive(Debug, Serialize)]
pub struct MemoryRow {
    pub name: String,
    pub events: String,
    pub invocations: usize,
    pub peak_kib: u64,
    pub end_kib: u64,
    pub seconds: f64,
    pub outcomes: BTreeMap<String, usize>,
}

impl MemoryRow {
    pub fn new(name: &str, events: &str, memory: Memory) -> Self {
        Self {
            name: name.into(),
            events: events.into(),
            invocations: memory.invocations,
            peak_kib: memory.peak_kib,
            end_kib: memory.end_kib,
            seconds: memory.elapsed.as_secs_f64(),
            outcomes: memory.outcomes,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SizeRow {
    pub build: String,
    pub name: String,
    pub bytes: u64,
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn outcomes(map: &BTreeMap<String, usize>) -> String {
    map.iter()
        .map(|(k, v)| format!("{v}× {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The two init targets of one function's median first poll, in one configuration: against
/// the SDK hello-world measured the same way, and against Node.
fn init_targets(
    targets: &mut Vec<String>,
    name: &str,
    how: &str,
    poll: f64,
    sdk: Option<f64>,
    node: Option<f64>,
) {
    if let Some(b) = sdk {
        targets.push(format!(
            "init of `{name}` {how} ≤ 1.3× the SDK hello-world: {} ({:.2}×)",
            verdict(poll <= 1.3 * b),
            poll / b
        ));
    }
    if let Some(n) = node {
        targets.push(format!(
            "init of `{name}` {how} ≤ 1/20 of Node: {} (1/{:.0})",
            verdict(poll * 20.0 <= n),
            n / poll
        ));
    }
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let mut targets: Vec<String> = Vec::new();
    let is_function = |name: &str| FUNCTIONS.iter().any(|(n, _)| *n == name);

    if !r.cold_start.is_empty() {
        let spawns = r.cold_start[0].to_next_ms.len();
        let _ = writeln!(
            s,
            "### 1. Cold start (median of {spawns} spawns each, interleaved)\n"
        );
        let _ = writeln!(
            s,
            "| subject | spawn → first poll (ms) | spawn → first response (ms) | poll vs SDK hello | poll vs Node | first event answered |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
        let of = |name: &str| r.cold_start.iter().find(|x| x.name == name);
        let sdk = of(HELLO_SDK).map(|x| median(&x.to_next_ms));
        let node = of(NODE).map(|x| median(&x.to_next_ms));
        for x in &r.cold_start {
            let poll = median(&x.to_next_ms);
            let vs_sdk = sdk.map(|b| format!("{:.2}×", poll / b)).unwrap_or_default();
            let vs_node = match (node, x.name.as_str()) {
                (_, NODE) | (None, _) => String::new(),
                (Some(n), _) => format!("1/{:.0}", n / poll),
            };
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {} | {} | {} |",
                x.name,
                poll,
                median(&x.to_response_ms),
                vs_sdk,
                vs_node,
                outcomes(&x.outcomes)
            );
            if is_function(&x.name) {
                init_targets(
                    &mut targets,
                    &x.name,
                    "without `SSL_CERT_FILE`",
                    poll,
                    sdk,
                    node,
                );
            }
        }
        s.push('\n');
    }

    if let (Some(bundle), false) = (&r.cert_file, r.cold_start_cert_file.is_empty()) {
        let _ = writeln!(
            s,
            "As deployed: `template.yaml` sets `SSL_CERT_FILE` (AL2023's bundle), so the TLS roots \
             come from that one file instead of the file and every file of the certificate \
             directory. The same spawns with `SSL_CERT_FILE={bundle}` (Node as measured above):\n"
        );
        let _ = writeln!(
            s,
            "| subject | first poll (ms) | without it (ms) | saved (ms) | poll vs SDK hello | poll vs Node |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        let node = r
            .cold_start
            .iter()
            .find(|x| x.name == NODE)
            .map(|x| median(&x.to_next_ms));
        let sdk = r
            .cold_start_cert_file
            .iter()
            .find(|x| x.name == HELLO_SDK)
            .map(|x| median(&x.to_next_ms));
        for x in &r.cold_start_cert_file {
            let poll = median(&x.to_next_ms);
            let before = r
                .cold_start
                .iter()
                .find(|y| y.name == x.name)
                .map(|y| median(&y.to_next_ms))
                .unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "| {} | {poll:.2} | {before:.2} | {:.2} | {} | {} |",
                x.name,
                before - poll,
                sdk.map(|b| format!("{:.2}×", poll / b)).unwrap_or_default(),
                node.map(|n| format!("1/{:.0}", n / poll))
                    .unwrap_or_default()
            );
            if is_function(&x.name) {
                init_targets(&mut targets, &x.name, "as deployed", poll, sdk, node);
            }
        }
        s.push('\n');
    }

    if !r.memory.is_empty() {
        let _ = writeln!(s, "### 2. Peak resident memory (VmHWM)\n");
        let _ = writeln!(
            s,
            "| subject | invocations | events | answers | peak RSS (MiB) | vs SDK hello | RSS at end (MiB) | run (s) |"
        );
        let _ = writeln!(s, "|---|---:|---|---|---:|---:|---:|---:|");
        let sdk = r
            .memory
            .iter()
            .find(|m| m.name == HELLO_SDK)
            .map(|m| m.peak_kib as f64);
        for m in &r.memory {
            let vs = sdk
                .map(|b| format!("{:.2}×", m.peak_kib as f64 / b))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {:.1} |",
                m.name,
                m.invocations,
                m.events,
                outcomes(&m.outcomes),
                m.peak_kib as f64 / 1024.0,
                vs,
                m.end_kib as f64 / 1024.0,
                m.seconds
            );
            match (m.name.as_str(), sdk) {
                ("worker (largest job)", _) => targets.push(format!(
                    "worker peak RSS with the largest job < half its MemorySize (256 MiB): {} ({:.1} MiB)",
                    verdict(m.peak_kib < 256 * 1024),
                    m.peak_kib as f64 / 1024.0
                )),
                ("worker", _) => targets.push(format!(
                    "worker peak RSS < 128 MB at n = 4: {} ({:.1} MiB)",
                    verdict((m.peak_kib * 1024) < 128_000_000),
                    m.peak_kib as f64 / 1024.0
                )),
                (name, Some(b)) if is_function(name) => targets.push(format!(
                    "peak RSS of `{name}` ≤ 2× the SDK hello-world: {} ({:.2}×)",
                    verdict(m.peak_kib as f64 <= 2.0 * b),
                    m.peak_kib as f64 / b
                )),
                _ => {}
            }
        }
        s.push('\n');
    }

    if !r.calls.is_empty() {
        let _ = writeln!(s, "### 3. AWS calls per operation (happy path)\n");
        let _ = writeln!(s, "| operation | floor | measured | | what |");
        let _ = writeln!(s, "|---|---:|---:|---|---|");
        for c in &r.calls {
            let floor = c.floor.map(|f| f.to_string()).unwrap_or("—".into());
            let (measured, state) = match (c.measured, c.floor) {
                (None, _) => ("—".to_string(), "pending".to_string()),
                (Some(m), None) => (m.to_string(), String::new()),
                (Some(m), Some(f)) => (m.to_string(), verdict(m <= f).to_string()),
            };
            let _ = writeln!(
                s,
                "| {} | {floor} | {measured} | {state} | {} |",
                c.operation, c.note
            );
            if let Some(f) = c.floor {
                targets.push(match c.measured {
                    Some(m) => format!(
                        "AWS calls of {} at the floor ({f}): {} ({m})",
                        c.operation,
                        verdict(m <= f)
                    ),
                    None => format!("AWS calls of {}: pending", c.operation),
                });
            }
        }
        s.push('\n');
    }

    if !r.sizes.is_empty() {
        let _ = writeln!(s, "### 4. Stripped `bootstrap` sizes\n");
        let _ = writeln!(s, "| build | binary | MiB | vs SDK hello |");
        let _ = writeln!(s, "|---|---|---:|---:|");
        for x in &r.sizes {
            let sdk = r
                .sizes
                .iter()
                .find(|y| y.build == x.build && y.name == HELLO_SDK)
                .map(|y| y.bytes as f64);
            let ratio = sdk.map(|b| x.bytes as f64 / b);
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {} |",
                x.build,
                x.name,
                mib(x.bytes as f64),
                ratio.map(|q| format!("{q:.2}×")).unwrap_or_default()
            );
            if let (true, Some(q)) = (is_function(&x.name), ratio) {
                targets.push(format!(
                    "{} `{}` bootstrap ≤ 1.3× the SDK hello-world: {} ({q:.2}×)",
                    x.build,
                    x.name,
                    verdict(q <= 1.3)
                ));
            }
        }
        s.push('\n');
    }

    if !r.e2e.is_empty() {
        let _ = writeln!(
            s,
            "### 5. Local end to end, `local` provider (request → `succeeded`)\n"
        );
        let _ = writeln!(
            s,
            "| run | generations (n = 1) | clients | succeeded | wall (s) | generations/s | p50 (ms) | p99 (ms) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for x in &r.e2e {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} |",
                x.label,
                x.generations,
                x.concurrency,
                x.succeeded,
                x.seconds,
                x.per_second,
                x.p50_ms,
                x.p99_ms
            );
        }
        let _ = writeln!(
            s,
            "\nThe emulator's own round trip (the floor), one call at a time:\n"
        );
        let _ = writeln!(s, "| call | samples | p50 (ms) | p99 (ms) |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for f in &r.emulator {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {:.2} |",
                f.call, f.samples, f.p50_ms, f.p99_ms
            );
        }
        s.push('\n');
    }

    if let Some(w) = &r.wait {
        let _ = writeln!(
            s,
            "### 6. `Prefer: wait` against polling every second ({} generations each)\n",
            w.generations
        );
        let _ = writeln!(
            s,
            "Delay from the generation's `completed_at` to the client holding the final answer.\n"
        );
        let _ = writeln!(
            s,
            "| client | p50 (ms) | p99 (ms) | AWS calls per generation (median) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| `Prefer: wait=25` | {:.0} | {:.0} | {:.0} |",
            w.wait_p50_ms, w.wait_p99_ms, w.wait_reads
        );
        let _ = writeln!(
            s,
            "| a read every second | {:.0} | {:.0} | {:.0} |",
            w.poll_p50_ms, w.poll_p99_ms, w.poll_reads
        );
        s.push('\n');
    }

    if let Some(l) = &r.largest {
        let _ = writeln!(
            s,
            "The largest job: {} job(s), {} succeeded with {} images each; {} provider calls; each reference {:.2} MiB; the largest request body the fake read {:.1} MiB (the references as base64 data URLs, spliced from the job's one encoding).\n",
            l.jobs,
            l.succeeded,
            crate::jobs::N,
            l.provider_calls,
            mib(l.reference_bytes as f64),
            mib(l.largest_request_bytes as f64),
        );
    }

    if let Some(x) = &r.expiry {
        let _ = writeln!(
            s,
            "### 8. The expiry step, a subscriber with a month of rows\n"
        );
        let _ = writeln!(
            s,
            "| step | ledger rows read | AWS calls | credits expired | median (ms) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for step in &x.steps {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} |",
                step.what, step.rows_read, step.calls, step.expired_credits, step.ms
            );
        }
        let _ = writeln!(
            s,
            "\n{} sample(s); AWS calls of the step count the user's index shard, `BatchGetItem` (profile + checkpoint), the ledger `Query` (its pages) and one `TransactWriteItems`. `GET /v1/me` for a subscriber: {} calls.\n",
            x.samples, x.me_calls
        );
    }

    if let Some(x) = &r.recovery {
        let _ = writeln!(s, "### 7. A worker's death to its generation's success\n");
        let _ = writeln!(
            s,
            "| settings | attempt (s) | lease after the claim (s) | sweep every (s) | bound: lease + sweep (s) | measured median (s) | measured max (s) | runs |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut sorted = x.measured_s.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        let max = sorted.last().copied().unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "| short (measured) | {:.0} | {:.0} | {:.0} | {:.0} | {median:.1} | {max:.1} | {} |",
            x.short_attempt_s,
            x.short_lease_s,
            x.short_sweep_s,
            x.short_lease_s + x.short_sweep_s,
            sorted.len()
        );
        let _ = writeln!(
            s,
            "| template (computed) | {:.0} | {:.0} | {:.0} | {:.0} | | | |",
            x.template_attempt_s,
            x.template_lease_s,
            x.template_sweep_s,
            x.template_lease_s + x.template_sweep_s,
        );
        let _ = writeln!(
            s,
            "\nThe bound counts a death right after the claim; the new attempt then starts at the pickup after it (Lambda's poller, or the pump's next receive) and takes what the image takes. The deadline is {:.0} s.\n",
            x.template_deadline_s
        );
        targets.push(format!(
            "death to success with short settings within lease + one sweep + 5 s ({:.0} s): {} (max {max:.1} s)",
            x.short_lease_s + x.short_sweep_s + 5.0,
            verdict(max <= x.short_lease_s + x.short_sweep_s + 5.0)
        ));
    }

    if !targets.is_empty() {
        let _ = writeln!(s, "### Targets\n");
        for t in &targets {
            let _ = writeln!(s, "- {t}");
        }
        s.push('\n');
    }
    for note in &r.notes {
        let _ = writeln!(s, "Note: {note}");
    }
    s
}
