//! `sam-local-check PLAN.json`: invokes every event of events/ the way `sam local invoke`
//! would, without Docker, and asserts each answer (infra/sam-local-check.sh runs it).
//!
//! For each event, in the manifest's order: a fresh process of the function's binary (a
//! cold container, as `sam local invoke` starts one per call) behind a loopback Lambda
//! Runtime API, with exactly the environment the SAM CLI computed for that function
//! (plan.py) plus the runtime plumbing a container has (`AWS_LAMBDA_RUNTIME_API`, `PATH`,
//! `LAMBDA_TASK_ROOT`); then the answer is held to the manifest: HTTP status and problem
//! code (and named body fields), the SQS batch response, a scheduled run's success.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use bench::runtime::{ReplyKind, RuntimeApi};
use local_runner::provision::{self, Names};
use serde::Deserialize;
use serde_json::Value;

const INVOCATION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
struct Plan {
    emulator: String,
    mapped: String,
    placeholders: Placeholders,
    functions: BTreeMap<String, Function>,
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Placeholders {
    token: String,
    generation: String,
    user: String,
    key: String,
}

#[derive(Debug, Deserialize)]
struct Function {
    binary: String,
    env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Event {
    file: String,
    function: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    session: bool,
    #[serde(default)]
    revokes_session: bool,
    expect: Value,
}

/// What the run has learned so far: the session and the latest generation.
#[derive(Debug, Default)]
struct State {
    token: Option<String>,
    user: Option<String>,
    generation: Option<String>,
    api_key: Option<String>,
}

struct Check {
    plan: Plan,
    bins: PathBuf,
    events_dir: PathBuf,
    logs: PathBuf,
    invocations: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(plan), Some(bins), Some(events_dir), Some(logs)) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        eprintln!(
            "usage: sam-local-check PLAN.json BINS_DIR EVENTS_DIR LOGS_DIR (infra/sam-local-check.sh)"
        );
        std::process::exit(2);
    };
    let plan: Plan = serde_json::from_str(
        &std::fs::read_to_string(&plan).with_context(|| format!("reading {plan}"))?,
    )?;
    std::fs::create_dir_all(&logs)?;
    let mut check = Check {
        plan,
        bins: bins.into(),
        events_dir: events_dir.into(),
        logs: logs.into(),
        invocations: 0,
    };
    println!("sam-local-check: {}", check.plan.mapped);
    check.provision().await?;

    let mut state = State::default();
    let mut failures = Vec::new();
    let events = std::mem::take(&mut check.plan.events);
    for event in &events {
        let trigger = event
            .route
            .as_deref()
            .or(event.source.as_deref())
            .unwrap_or("?");
        match check.run(event, &mut state).await {
            Ok(answer) => println!(
                "  ok    {:<17} {:<36} {trigger}: {answer}",
                event.function, event.file
            ),
            Err(e) => {
                println!(
                    "  FAIL  {:<17} {:<36} {trigger}: {e:#}",
                    event.function, event.file
                );
                failures.push(event.file.clone());
            }
        }
    }
    println!(
        "sam-local-check: {} passed, {} failed ({} cold invocations; logs in {})",
        events.len() - failures.len(),
        failures.len(),
        check.invocations,
        check.logs.display()
    );
    if !failures.is_empty() {
        bail!("events that did not answer as events/manifest.json says: {failures:?}");
    }
    Ok(())
}

impl Check {
    /// The table, bucket and queues env.json names, on the emulator (as `infra/run.sh`
    /// creates them for a person).
    async fn provision(&self) -> anyhow::Result<()> {
        let worker = self
            .plan
            .functions
            .values()
            .find(|f| f.env.contains_key("DLQ_URL"))
            .context("no function has DLQ_URL")?;
        let last = |url: &str| url.rsplit('/').next().unwrap_or_default().to_string();
        let env = |name: &str| worker.env.get(name).cloned().unwrap_or_default();
        let hooks_queue = last(&env("HOOKS_QUEUE_URL"));
        let names = Names {
            table: env("TABLE_NAME"),
            bucket: env("BUCKET_NAME"),
            queue: last(&env("QUEUE_URL")),
            dlq: last(&env("DLQ_URL")),
            hooks_dlq: format!("{hooks_queue}-dlq"),
            hooks_queue,
        };
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.plan.emulator)
            .load()
            .await;
        let provisioned = provision::ensure_all(&sdk, &names).await?;
        for (what, url) in [
            ("QUEUE_URL", &provisioned.queue_url),
            ("DLQ_URL", &provisioned.dlq_url),
        ] {
            if worker.env.get(what) != Some(url) {
                bail!("events/env.json's {what} is not the queue's URL on the emulator ({url})");
            }
        }
        Ok(())
    }

    async fn run(&mut self, event: &Event, state: &mut State) -> anyhow::Result<String> {
        if event.session && state.token.is_none() {
            self.sign_in(state)
                .await
                .context("signing in for the session")?;
        }
        let text = std::fs::read_to_string(self.events_dir.join(&event.file))?;
        let text = self.substitute(text, state);
        let reply = self.invoke(&event.function, &event.file, text).await?;
        let outcome = self.judge(event, &reply, state);
        if event.revokes_session {
            state.token = None;
        }
        outcome
    }

    /// The dev login event, as any other event: its answer carries the session.
    async fn sign_in(&mut self, state: &mut State) -> anyhow::Result<()> {
        let file = "apigw-v2-post-dev-login.json";
        let text = std::fs::read_to_string(self.events_dir.join(file))?;
        let reply = self.invoke("AuthFunction", file, text).await?;
        let answer = http_answer(&reply)?;
        remember(&answer.body, state);
        state
            .token
            .as_ref()
            .map(|_| ())
            .context("the dev login gave no token")
    }

    fn substitute(&self, text: String, state: &State) -> String {
        let p = &self.plan.placeholders;
        let mut text = text;
        if let Some(token) = &state.token {
            text = text.replace(&p.token, token);
        }
        if let (Some(generation), Some(user)) = (&state.generation, &state.user) {
            text = text
                .replace(&p.generation, generation)
                .replace(&p.user, user);
        }
        if let Some(key) = &state.api_key {
            text = text.replace(&p.key, key);
        }
        text
    }

    /// One cold invocation: spawn, hand over the event, take the reply, stop.
    async fn invoke(&mut self, function: &str, file: &str, event: String) -> anyhow::Result<Value> {
        let spec = self
            .plan
            .functions
            .get(function)
            .with_context(|| format!("{function} is not in the plan"))?;
        let program = self.bins.join(&spec.binary);
        let mut api = RuntimeApi::start(function).await?;
        api.push(event);
        self.invocations += 1;
        let log = self.logs.join(format!(
            "{:02}-{}.log",
            self.invocations,
            file.trim_end_matches(".json")
        ));
        let out = std::fs::File::create(&log)?;
        let mut command = tokio::process::Command::new(&program);
        command.env_clear().envs(&spec.env);
        // What the container adds to sam local's variables: its runtime API and paths.
        let plumbing = [
            ("AWS_LAMBDA_RUNTIME_API", api.address()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("LANG", "en_US.UTF-8".into()),
            ("TZ", ":UTC".into()),
            ("_HANDLER", "bootstrap".into()),
            ("LAMBDA_TASK_ROOT", self.bins.display().to_string()),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
        ];
        command.envs(plumbing);
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        let reply = tokio::select! {
            reply = api.reply(INVOCATION_TIMEOUT) => reply,
            status = child.wait() => Err(anyhow::anyhow!("{function} exited before answering ({status:?})")),
        };
        let _ = child.start_kill();
        let _ = child.wait().await;
        let reply = reply.with_context(|| format!("log: {}", log.display()))?;
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        match reply.kind {
            ReplyKind::Response => Ok(body),
            ReplyKind::Error => bail!("invocation error {body} (log: {})", log.display()),
            ReplyKind::InitError => bail!("init error {body} (log: {})", log.display()),
        }
    }

    fn judge(&self, event: &Event, reply: &Value, state: &mut State) -> anyhow::Result<String> {
        let expect = &event.expect;
        if let Some(status) = expect.get("status") {
            let answer = http_answer(reply)?;
            remember(&answer.body, state);
            let mut said = format!("{}", answer.status);
            if Some(answer.status) != status.as_u64() {
                bail!(
                    "status {} (expected {status}); body {}",
                    answer.status,
                    answer.body
                );
            }
            if let Some(code) = expect.get("code") {
                if answer.body.get("code") != Some(code) || !answer.problem {
                    bail!(
                        "not the problem {code}: {} {}",
                        answer.content_type,
                        answer.body
                    );
                }
                said.push_str(&format!(" {}", code.as_str().unwrap_or_default()));
            }
            if let Some(Value::Object(fields)) = expect.get("json") {
                for (key, want) in fields {
                    if answer.body.get(key) != Some(want) {
                        bail!("{key} is {:?}, expected {want}", answer.body.get(key));
                    }
                    said.push_str(&format!(" {key}={want}"));
                }
            }
            return Ok(said);
        }
        if let Some(failures) = expect.get("batchItemFailures") {
            let got = reply.get("batchItemFailures");
            if got != Some(failures) {
                bail!("batch response {reply} (expected batchItemFailures {failures})");
            }
            return Ok(format!("batchItemFailures {failures}"));
        }
        if expect.get("response") == Some(&Value::Bool(true)) {
            return Ok(format!("answered {reply}"));
        }
        bail!("events/manifest.json: nothing to expect in {expect}")
    }
}

struct HttpAnswer {
    status: u64,
    content_type: String,
    problem: bool,
    body: Value,
}

/// An API Gateway v2 response object, as `lambda_http` writes it.
fn http_answer(reply: &Value) -> anyhow::Result<HttpAnswer> {
    let status = reply
        .get("statusCode")
        .and_then(Value::as_u64)
        .with_context(|| format!("not an HTTP answer: {reply}"))?;
    let content_type = reply
        .pointer("/headers/content-type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let text = reply
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let body = if reply.get("isBase64Encoded") == Some(&Value::Bool(true)) {
        Value::String("<binary>".into())
    } else {
        serde_json::from_str(text).unwrap_or(Value::Null)
    };
    Ok(HttpAnswer {
        status,
        problem: content_type.starts_with("application/problem+json"),
        content_type,
        body,
    })
}

/// A sign-in answer holds the session; an accepted generation and a new API key are the
/// ones to follow.
fn remember(body: &Value, state: &mut State) {
    if let (Some(token), Some(user)) = (
        body.get("token").and_then(Value::as_str),
        body.pointer("/user/id").and_then(Value::as_str),
    ) {
        state.token = Some(token.to_string());
        state.user = Some(user.to_string());
    }
    match body.get("id").and_then(Value::as_str) {
        Some(id) if id.starts_with("gen_") => state.generation = Some(id.to_string()),
        Some(id) if id.starts_with("key_") => state.api_key = Some(id.to_string()),
        _ => {}
    }
}
