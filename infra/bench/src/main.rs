//! `bench`: the benchmarks of issue 7, run by `infra/bench.sh` (see BENCHMARKS.md).
//!
//! 1. cold start: each function and the floors (bare and SDK hello-worlds, Node 20 with the
//!    v3 SDK) spawned interleaved against a loopback Lambda Runtime API;
//! 2. peak resident memory over many invocations;
//! 3. AWS calls per operation against DESIGN.md's floors;
//! 4. bootstrap sizes (built by the script; measured here);
//! 5. local end to end with the `local` provider, next to the emulator's own latency;
//! 6. `Prefer: wait` against polling every second: how soon a final result is seen.
//!
//! Items 2 (for the functions), 3 and 5 need the emulator (`AWS_ENDPOINT_URL`).

mod calls;
mod e2e;
mod events;
mod expiry;
mod jobs;
mod process;
mod report;
mod stack;
mod stats;
mod wait;
mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use serde_json::Value;

use bench::runtime;

use crate::process::Subject;
use crate::report::{Results, SizeRow, Spawns};

/// The functions, their memory sizes in template.yaml, in report order.
pub const FUNCTIONS: &[(&str, u32)] = &[
    ("auth", 256),
    ("generate", 256),
    ("webhook", 256),
    ("worker", 512),
];

/// A function's timeout in template.yaml.
pub fn timeout_of(function: &str) -> Duration {
    Duration::from_secs(if function == "worker" { 180 } else { 29 })
}
pub const HELLO_BARE: &str = "hello-bare";
pub const HELLO_SDK: &str = "hello-sdk";
/// Not a floor: the SDK hello-world with the init fix BENCHMARKS.md proposes.
pub const HELLO_SDK_LEAN: &str = "hello-sdk-lean";
pub const NODE: &str = "node20-sdk-v3";

struct Options {
    quick: bool,
    bins: PathBuf,
    node_dir: Option<PathBuf>,
    spawns: usize,
    invocations: usize,
    sizes: Vec<(String, PathBuf)>,
    out: Option<PathBuf>,
    report: Option<PathBuf>,
    logs: PathBuf,
    /// Extra variables for every spawned subject (to profile: `SSL_CERT_FILE=...`).
    env: Vec<(String, String)>,
    /// Which of `init,memory,calls,e2e,wait,recovery` to run (sizes are reported whenever given).
    sections: Vec<String>,
    /// Lines for the report's notes (infra/bench.sh: how long `sam build` took).
    notes: Vec<String>,
}

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: bench --bins DIR [--quick] [--node-dir DIR] [--spawns N] [--invocations N]\n\
         \x20            [--size LABEL=DIR]... [--out FILE.json] [--report FILE.md] [--logs DIR]\n\
         \x20            [--env NAME=VALUE]... [--sections init,memory,calls,e2e,wait,recovery,expiry] [--note TEXT]...\n\
         Run it through infra/bench.sh, which builds, starts the emulator and sets AWS_ENDPOINT_URL."
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut bins = None;
    let mut node_dir = None;
    let mut spawns = None;
    let mut invocations = None;
    let mut sizes = Vec::new();
    let mut out = None;
    let mut report = None;
    let mut logs = None;
    let mut env = Vec::new();
    let mut sections = "init,memory,calls,e2e,wait,recovery,expiry".to_string();
    let mut notes = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--quick" => quick = true,
            "--bins" => bins = Some(PathBuf::from(value())),
            "--node-dir" => node_dir = Some(PathBuf::from(value())),
            "--spawns" => spawns = Some(value().parse().unwrap_or_else(|_| usage())),
            "--invocations" => invocations = Some(value().parse().unwrap_or_else(|_| usage())),
            "--size" => {
                let v = value();
                let (label, dir) = v.split_once('=').unwrap_or_else(|| usage());
                sizes.push((label.to_string(), PathBuf::from(dir)));
            }
            "--out" => out = Some(PathBuf::from(value())),
            "--report" => report = Some(PathBuf::from(value())),
            "--env" => {
                let v = value();
                let (name, value) = v.split_once('=').unwrap_or_else(|| usage());
                env.push((name.to_string(), value.to_string()));
            }
            "--sections" => sections = value(),
            "--note" => notes.push(value()),
            "--logs" => logs = Some(PathBuf::from(value())),
            _ => usage(),
        }
    }
    Options {
        quick,
        bins: bins.unwrap_or_else(|| usage()),
        node_dir,
        spawns: spawns.unwrap_or(if quick { 3 } else { 20 }),
        invocations: invocations.unwrap_or(if quick { 50 } else { 1000 }),
        sizes,
        out,
        report,
        logs: logs.unwrap_or_else(|| std::env::temp_dir().join("nb-bench-logs")),
        env,
        sections: sections.split(',').map(str::to_string).collect(),
        notes,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options();
    std::fs::create_dir_all(&options.logs)?;
    let emulator = std::env::var("AWS_ENDPOINT_URL").ok();
    let mut results = Results::new(options.quick);
    results.notes.extend(options.notes.iter().cloned());

    let floors = floor_subjects(&options)?;
    let functions = function_subjects(&options, &init_env())?;
    if floors.iter().all(|s| s.name != NODE) {
        results.notes.push(
            "Node 20 was not measured (BENCH_NODE=0, or node or infra/bench/node/node_modules missing)".into(),
        );
    }
    if !options.env.is_empty() {
        let names: Vec<&str> = options.env.iter().map(|(k, _)| k.as_str()).collect();
        results
            .notes
            .push(format!("every subject ran with {} set", names.join(", ")));
    }

    if options.runs("init") {
        eprintln!(
            "bench: cold start, {} spawns each, interleaved",
            options.spawns
        );
        let subjects: Vec<(Subject, Bytes)> = floors
            .iter()
            .map(|s| (s.clone(), floor_event()))
            .chain(functions.iter().map(|s| (s.clone(), cold_event(&s.name))))
            .collect();
        results.cold_start = cold_starts(&subjects, options.spawns, &options.logs).await?;
        // The profile of the full run: the same with the system bundle named in
        // SSL_CERT_FILE, so that the TLS roots come from one file instead of the bundle
        // plus every file of the certificate directory.
        if let (false, Some(bundle)) = (options.quick, cert_bundle()) {
            eprintln!("bench: cold start again with SSL_CERT_FILE={bundle}");
            let env = [("SSL_CERT_FILE".to_string(), bundle.to_string())];
            let rust: Vec<(Subject, Bytes)> = subjects
                .iter()
                .filter(|(s, _)| s.name != NODE)
                .map(|(s, e)| (s.clone().with_env(&env), e.clone()))
                .collect();
            results.cold_start_cert_file =
                cold_starts(&rust, options.spawns, &options.logs).await?;
            results.cert_file = Some(bundle.to_string());
        }
    }

    if options.runs("memory") {
        eprintln!(
            "bench: peak memory, {} invocations each",
            options.invocations
        );
        for subject in &floors {
            let events = vec![floor_event(); options.invocations];
            let memory = process::memory(subject, events, &options.logs).await?;
            results.memory.push(report::MemoryRow::new(
                &subject.name,
                "the same API Gateway event",
                memory,
            ));
        }
        if emulator.is_some() {
            memory_of_functions(&options, &mut results).await?;
            let jobs = if options.quick { 1 } else { 3 };
            let subject = function_subjects(&options, &init_env())?
                .into_iter()
                .find(|s| s.name == "worker")
                .context("the worker is a subject")?;
            let (row, largest) = jobs::largest_job_memory(&subject, jobs, &options.logs).await?;
            results.memory.push(row);
            results.largest = Some(largest);
        }
    }

    if emulator.is_none() {
        results.notes.push(
            "AWS_ENDPOINT_URL is not set: the functions' memory, the AWS calls and the \
             end-to-end run were skipped"
                .into(),
        );
    } else {
        if options.runs("calls") {
            eprintln!("bench: AWS calls per operation");
            results.calls = calls::run().await?;
        }
        if options.runs("expiry") {
            let samples = if options.quick { 1 } else { 5 };
            eprintln!("bench: the expiry step for a month of rows, {samples} samples");
            results.expiry = Some(expiry::run(samples).await?);
        }
        if options.runs("recovery") {
            let runs = if options.quick { 1 } else { 5 };
            eprintln!("bench: a worker's death to its generation's success, {runs} runs");
            results.recovery = Some(jobs::death_to_success(runs).await?);
        }
        if options.runs("e2e") {
            eprintln!("bench: local end to end");
            let plan = if options.quick {
                e2e::Plan {
                    sequential: 5,
                    burst: 20,
                    concurrency: 4,
                    floor_samples: 30,
                    time_limit: Duration::from_secs(30),
                }
            } else {
                e2e::Plan {
                    sequential: 50,
                    burst: 200,
                    concurrency: 8,
                    floor_samples: 300,
                    time_limit: Duration::from_secs(180),
                }
            };
            let (runs, floors) = e2e::run(&plan).await?;
            results.e2e = runs;
            results.emulator = floors;
        }
        if options.runs("wait") {
            eprintln!("bench: Prefer: wait against polling every second");
            results.wait = Some(wait::run(if options.quick { 3 } else { 40 }).await?);
        }
    }

    for (label, dir) in &options.sizes {
        for name in [HELLO_BARE, HELLO_SDK, HELLO_SDK_LEAN]
            .into_iter()
            .chain(FUNCTIONS.iter().map(|(n, _)| *n))
        {
            let path = [dir.join(name).join("bootstrap"), dir.join(name)]
                .into_iter()
                .find(|p| p.is_file());
            if let Some(path) = path {
                results.sizes.push(SizeRow {
                    build: label.clone(),
                    name: name.to_string(),
                    bytes: std::fs::metadata(&path)?.len(),
                });
            }
        }
    }

    // The in-process services print their metrics (EMF lines) on stdout: the report goes
    // to a file of its own when asked.
    let text = report::markdown(&results);
    match &options.report {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{text}"),
    }
    if let Some(out) = &options.out {
        std::fs::write(out, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// What the floors answer: the same API Gateway request as `generate`'s first event.
fn floor_event() -> Bytes {
    json_bytes(&events::http("GET", "/v1/models", None, None))
}

/// The first event of a cold start: answered without any AWS call.
fn cold_event(function: &str) -> Bytes {
    json_bytes(&match function {
        // No token: 401 before any read.
        "auth" => events::http("GET", "/v1/me", None, None),
        "generate" => events::http("GET", "/v1/models", None, None),
        "webhook" => events::http("GET", "/v1/products", None, None),
        // A body that is no job: acknowledged without a call.
        _ => events::sqs("bench-generations", &["Hello from SQS!".to_string()]),
    })
}

/// The settings of a deployed function, with values that need no AWS call at cold start
/// (secrets from the environment, as locally) and no endpoint override, as deployed.
fn init_env() -> Vec<(String, String)> {
    let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/bench-generations";
    [
        ("TABLE_NAME", "bench".to_string()),
        ("BUCKET_NAME", "bench-images".into()),
        ("QUEUE_URL", queue.into()),
        ("DLQ_URL", format!("{queue}-dlq")),
        ("SESSION_SECRET", stack::session_secret()),
        ("APP_ORIGINS", stack::APP_ORIGIN.into()),
        ("MODEL_PROVIDERS", "*=local".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(webhook::payment_env())
    .collect()
}

/// The system's CA bundle, where there is one.
fn cert_bundle() -> Option<&'static str> {
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file())
}

fn floor_subjects(options: &Options) -> anyhow::Result<Vec<Subject>> {
    let mut subjects = Vec::new();
    for name in [HELLO_BARE, HELLO_SDK] {
        subjects
            .push(Subject::rust(name, binary(&options.bins, name)?, 256).with_env(&options.env));
    }
    if let Some(dir) = &options.node_dir
        && dir.join("node_modules").is_dir()
        && let Some(node) = which("node")
    {
        subjects.push(Subject::node(NODE, node, dir, "init.js").with_env(&options.env));
    }
    if let Ok(lean) = binary(&options.bins, HELLO_SDK_LEAN) {
        subjects.push(Subject::rust(HELLO_SDK_LEAN, lean, 256).with_env(&options.env));
    }
    Ok(subjects)
}

fn function_subjects(options: &Options, env: &[(String, String)]) -> anyhow::Result<Vec<Subject>> {
    FUNCTIONS
        .iter()
        .map(|(name, memory)| {
            Ok(Subject::rust(name, binary(&options.bins, name)?, *memory)
                .with_timeout(timeout_of(name))
                // As template.yaml deploys them.
                .with_env(&[("RUST_LOG".into(), "info".into())])
                .with_env(env)
                .with_env(&options.env))
        })
        .collect()
}

fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build it first (infra/bench.sh does)",
        path.display()
    );
    Ok(path)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Round-robin over the subjects, `spawns` rounds: every subject sees the same machine.
async fn cold_starts(
    subjects: &[(Subject, Bytes)],
    spawns: usize,
    logs: &Path,
) -> anyhow::Result<Vec<Spawns>> {
    let mut all: Vec<Spawns> = subjects.iter().map(|(s, _)| Spawns::new(&s.name)).collect();
    // One untimed round first: page cache and dynamic loader warm for everyone alike.
    for (subject, event) in subjects {
        process::cold_start(subject, event, logs).await?;
    }
    for _ in 0..spawns {
        for ((subject, event), spawns) in subjects.iter().zip(all.iter_mut()) {
            let (timing, outcome) = process::cold_start(subject, event, logs).await?;
            spawns.push(timing, outcome);
        }
    }
    Ok(all)
}

/// Each function over `invocations` representative events against the emulator.
///
/// Each function gets a table of its own: the emulator copies a whole table for every item
/// of every transaction (its rollback), so one shared table would slow each run by what
/// the runs before it wrote.
async fn memory_of_functions(options: &Options, results: &mut Results) -> anyhow::Result<()> {
    let count = options.invocations;
    for (name, _) in FUNCTIONS {
        let stack = stack::Stack::new(&format!("memory-{name}")).await?;
        let env: Vec<(String, String)> = stack
            .function_env()
            .into_iter()
            .chain(webhook::payment_env())
            .collect();
        let subject = function_subjects(options, &env)?
            .into_iter()
            .find(|s| s.name == *name)
            .context("every function is a subject")?;
        let (token, user) = stack.user("memory@example.com", 1_000_000).await?;
        let read = stack.generation(&token, user, 1).await?;
        let (events, what): (Vec<Value>, String) = match subject.name.as_str() {
            "auth" => (
                (0..count)
                    .map(|i| match i % 3 {
                        0 => events::http("GET", "/v1/me", Some(&token), None),
                        1 => events::http("GET", "/v1/me/ledger", Some(&token), None),
                        _ => events::http("GET", "/v1/me", None, None),
                    })
                    .collect(),
                "GET /v1/me, GET /v1/me/ledger, GET /v1/me without a token, in turn".into(),
            ),
            "generate" => {
                let body =
                    serde_json::json!({"model": "nano-banana", "prompt": "a lighthouse at dawn"});
                let one = format!("/v1/generations/{}", read.generation_id);
                (
                    (0..count)
                        .map(|i| match i % 4 {
                            0 => events::http("GET", "/v1/models", None, None),
                            1 => events::http("POST", "/v1/generations", Some(&token), Some(&body)),
                            2 => events::http("GET", &one, Some(&token), None),
                            _ => events::http("GET", "/v1/generations", Some(&token), None),
                        })
                        .collect(),
                    "GET /v1/models, POST /v1/generations, GET one, GET the list, in turn".into(),
                )
            }
            "webhook" => webhook::memory_events(user, count),
            _ => {
                eprintln!("bench: accepting {count} generations (n = 4) for the worker");
                let mut bodies = Vec::with_capacity(count);
                for _ in 0..count {
                    let job = stack.generation(&token, user, 4).await?;
                    bodies.push(events::sqs(&stack.names.queue, &[events::job_body(&job)]));
                }
                (
                    bodies,
                    "one SQS record per invocation: a generation at n = 4, `local` renderer".into(),
                )
            }
        };
        eprintln!("bench: memory of {}", subject.name);
        let memory = process::memory(
            &subject,
            events.iter().map(json_bytes).collect(),
            &options.logs,
        )
        .await?;
        results
            .memory
            .push(report::MemoryRow::new(&subject.name, &what, memory));
    }
    Ok(())
}
