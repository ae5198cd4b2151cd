//! Spawning a function as Lambda does (its own Runtime API, the usual environment) and
//! measuring it: time to the first poll and to the first response, and peak memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio::process::{Child, Command};

use crate::events;
use crate::runtime::{ReplyKind, RuntimeApi};

/// How long one invocation may take before the run is called failed (the worker's
/// largest job included).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(180);

/// Something to spawn: a function, a hello-world floor, or the Node comparison.
#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// `AWS_EXECUTION_ENV`: `AWS_Lambda_provided.al2023` or `AWS_Lambda_nodejs20.x`.
    pub execution_env: &'static str,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, as in template.yaml.
    pub memory_mb: u32,
    /// The function's timeout in template.yaml: each invocation's deadline is this far off.
    pub timeout: Duration,
    /// The function's own settings (table, queue, secret, ...).
    pub env: Vec<(String, String)>,
}

impl Subject {
    pub fn rust(name: &str, program: PathBuf, memory_mb: u32) -> Self {
        Self {
            name: name.to_string(),
            program,
            args: vec![],
            cwd: None,
            execution_env: "AWS_Lambda_provided.al2023",
            memory_mb,
            timeout: Duration::from_secs(29),
            env: vec![],
        }
    }

    pub fn node(name: &str, node: PathBuf, dir: &Path, script: &str) -> Self {
        Self {
            name: name.to_string(),
            program: node,
            args: vec![script.to_string()],
            cwd: Some(dir.to_path_buf()),
            execution_env: "AWS_Lambda_nodejs20.x",
            memory_mb: 256,
            timeout: Duration::from_secs(29),
            env: vec![(
                "NODE_PATH".into(),
                dir.join("node_modules").display().to_string(),
            )],
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_env(mut self, env: &[(String, String)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    /// The environment Lambda gives a function (with fixed fake credentials), plus the
    /// function's own variables; nothing is inherited but `PATH`.
    fn command(&self, api: &RuntimeApi, log: &Path) -> anyhow::Result<Command> {
        let mut command = Command::new(&self.program);
        command.args(&self.args).env_clear();
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let task_root = self
            .program
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let stream = format!(
            "2025/01/01/[$LATEST]{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let fixed = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("LANG", "en_US.UTF-8".into()),
            ("TZ", ":UTC".into()),
            ("LAMBDA_TASK_ROOT", task_root),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
            ("_HANDLER", "bootstrap".into()),
            ("AWS_EXECUTION_ENV", self.execution_env.into()),
            ("AWS_LAMBDA_RUNTIME_API", api.address()),
            ("AWS_LAMBDA_FUNCTION_NAME", self.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                self.memory_mb.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", self.name),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "ASIABENCHBENCHBENCH00".into()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "bench/bench/bench/bench/bench/bench/bench0".into(),
            ),
            ("AWS_SESSION_TOKEN", "bench-session-token".into()),
        ];
        for (name, value) in fixed {
            command.env(name, value);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        Ok(command)
    }
}

/// One spawn: from `spawn()` to the first `GET /next`, and to the first response.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    pub to_next: Duration,
    pub to_response: Duration,
}

/// Spawns `subject`, hands it `event`, and times its cold start. Returns the timings and
/// what the event's answer was (a status for the tally).
pub async fn cold_start(
    subject: &Subject,
    event: &Bytes,
    logs: &Path,
) -> anyhow::Result<(ColdStart, String)> {
    let mut api = RuntimeApi::start_with_timeout(&subject.name, subject.timeout).await?;
    api.push(event.clone());
    let log = logs.join(format!("{}.log", subject.name));
    let mut command = subject.command(&api, &log)?;
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {}", subject.program.display()))?;
    let answer = next_answer(&mut api, &mut child, subject, &log).await;
    stop(child).await;
    let answer = answer?;
    if answer.kind != ReplyKind::Response {
        anyhow::bail!(
            "{} answered with {} (log: {})",
            subject.name,
            answer.outcome,
            log.display()
        );
    }
    let to_next = api
        .first_next()
        .context("a response without a poll")?
        .duration_since(spawned);
    Ok((
        ColdStart {
            to_next,
            to_response: answer.at.duration_since(spawned),
        },
        answer.outcome,
    ))
}

struct Answer {
    at: Instant,
    kind: ReplyKind,
    outcome: String,
}

/// The next thing the function posts; an init error or an exit is an error.
async fn next_answer(
    api: &mut RuntimeApi,
    child: &mut Child,
    subject: &Subject,
    log: &Path,
) -> anyhow::Result<Answer> {
    tokio::select! {
        reply = api.reply(INVOCATION_TIMEOUT) => {
            let reply = reply?;
            let outcome = match reply.kind {
                ReplyKind::Response => events::outcome(&reply.body),
                ReplyKind::Error => "invocation error".to_string(),
                ReplyKind::InitError => anyhow::bail!(
                    "{} failed its init: {} (log: {})",
                    subject.name,
                    String::from_utf8_lossy(&reply.body),
                    log.display()
                ),
            };
            Ok(Answer { at: reply.at, kind: reply.kind, outcome })
        }
        status = child.wait() => {
            anyhow::bail!("{} exited before answering ({status:?}); log: {}", subject.name, log.display())
        }
    }
}

async fn stop(mut child: Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Peak memory over a run of invocations.
#[derive(Debug, Clone)]
pub struct Memory {
    /// `VmHWM`: the peak resident set, KiB.
    pub peak_kib: u64,
    /// `VmRSS` at the end, KiB.
    pub end_kib: u64,
    pub invocations: usize,
    pub elapsed: Duration,
    /// Answers by outcome (`200`, `batch ok`, ...).
    pub outcomes: BTreeMap<String, usize>,
}

/// Spawns `subject`, feeds it `events` one at a time (as Lambda does), and reads its peak
/// resident memory from `/proc/<pid>/status` after the last answer.
pub async fn memory(subject: &Subject, events: Vec<Bytes>, logs: &Path) -> anyhow::Result<Memory> {
    let mut api = RuntimeApi::start_with_timeout(&subject.name, subject.timeout).await?;
    let invocations = events.len();
    for event in events {
        api.push(event);
    }
    let log = logs.join(format!("{}-memory.log", subject.name));
    let mut command = subject.command(&api, &log)?;
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {}", subject.program.display()))?;
    let pid = child.id().context("no pid")?;
    let mut outcomes = BTreeMap::new();
    for _ in 0..invocations {
        let answer = next_answer(&mut api, &mut child, subject, &log).await?;
        *outcomes.entry(answer.outcome).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    stop(child).await;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        peak_kib: field("VmHWM:")?,
        end_kib: field("VmRSS:")?,
        invocations,
        elapsed,
        outcomes,
    })
}
