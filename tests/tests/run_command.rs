//! The README's run command, started as a new user would: it answers, and a dev sign-in
//! shows the bonus.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM to the script: it stops the runner and the emulator it started.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// Starts the README's run command with `env` added; where it listens.
fn start(env: &[(&str, &str)]) -> (Running, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let moto_port = free_port();
    let child = Command::new("bash")
        .arg(root.join("infra/run.sh"))
        .env("PORT", "0")
        .env("MOTO_PORT", moto_port.to_string())
        .env_remove("AWS_ENDPOINT_URL")
        .env("LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting infra/run.sh");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("local-runner listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the run command printed where it listens");
    (running, base)
}

#[tokio::test]
async fn the_run_command_serves_models_and_a_dev_sign_in_shows_the_bonus() {
    let (_running, base) = start(&[]);

    let http = reqwest::Client::new();
    let models: serde_json::Value = http
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["items"].as_array().unwrap().len(), 6);
    assert!(
        models["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["available"] == true)
    );

    let login: serde_json::Value = http
        .post(format!("{base}/auth/dev/login"))
        .json(&serde_json::json!({"email": "newcomer@example.com", "name": "New"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let me: serde_json::Value = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["credits"], 10);
    assert_eq!(me["email"], "newcomer@example.com");

    // The security log records the address the runner accepted the request from, as
    // API Gateway's `sourceIp` would be, and the caller's User-Agent.
    let made = http
        .post(format!("{base}/v1/api-keys"))
        .bearer_auth(token)
        .header("user-agent", "run-command-test/1.0")
        .json(&serde_json::json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let log: serde_json::Value = http
        .get(format!("{base}/v1/me/security-log"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let made = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "api_key_created")
        .expect("the key's entry");
    assert_eq!(made["ip"], "127.0.0.1");
    assert_eq!(made["user_agent"], "run-command-test/1.0");

    // Upload a reference, generate with it, edit the result again, delete.
    let png = e2e_tests::png(64, 48);
    let ticket: serde_json::Value = http
        .post(format!("{base}/v1/uploads"))
        .bearer_auth(token)
        .json(&serde_json::json!({"content_type": "image/png", "size_bytes": png.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = http
        .put(ticket["upload_url"].as_str().unwrap())
        .header("content-type", "image/png")
        .body(png)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let first = generate_and_wait(
        &http,
        &base,
        token,
        serde_json::json!({
            "model": "nano-banana", "prompt": "a lighthouse at dusk", "aspect_ratio": "16:9",
            "reference_images": [ticket["id"]]
        }),
    )
    .await;
    let image = &first["images"][0];
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(512), Some(288))
    );
    let bytes = http
        .get(image["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (512, 288));

    let edit = generate_and_wait(
        &http,
        &base,
        token,
        serde_json::json!({
            "model": "nano-banana", "prompt": "now at night",
            "reference_images": [format!("{}/0", first["id"].as_str().unwrap())]
        }),
    )
    .await;
    assert_eq!(edit["images"][0]["width"], 512);

    let me: serde_json::Value = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["credits"], 6);
    let ledger: serde_json::Value = http
        .get(format!("{base}/v1/me/ledger"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deltas: Vec<i64> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["delta"].as_i64().unwrap())
        .collect();
    assert_eq!(deltas, [-2, -2, 10]);
    let listed: serde_json::Value = http
        .get(format!("{base}/v1/generations"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let deleted = http
        .delete(format!(
            "{base}/v1/generations/{}",
            first["id"].as_str().unwrap()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = http
        .get(image["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "its image is deleted too");
}

/// Creates a generation and polls it until it is finished; asserts it succeeded.
async fn generate_and_wait(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let created = http
        .post(format!("{base}/v1/generations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    for _ in 0..100 {
        let generation: serde_json::Value = http
            .get(format!("{base}{location}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if generation["status"] == "succeeded" || generation["status"] == "failed" {
            assert_eq!(generation["status"], "succeeded", "{generation}");
            return generation;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the generation did not finish within 10 s");
}

/// A monthly period that ends three seconds from now, paid through a signed Stripe event:
/// the runner's sweeper (every second here) expires what is left of it.
#[tokio::test]
async fn the_run_commands_sweeper_expires_a_periods_credits_at_its_end() {
    use e2e_tests::payments::{STRIPE_KEY, STRIPE_WEBHOOK_SECRET, paid_period, stripe_signature};
    let (_running, base) = start(&[
        ("WEB", "0"),
        ("SWEEP_INTERVAL_SECS", "1"),
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_WEBHOOK_SECRET),
        ("STRIPE_PRICE_PRO_MONTHLY", "price_pro_monthly"),
        // Nothing is asked of Stripe for a paid invoice.
        ("STRIPE_BASE_URL", "http://127.0.0.1:9"),
    ]);
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{base}/auth/dev/login"))
        .json(&serde_json::json!({"email": "subscriber@example.com", "name": "Sub"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let user = login["user"]["id"].as_str().unwrap().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let end = now + 3;
    let mut event = paid_period(&user, "sub_run", "cus_run", 0).event("evt_run_p0", "invoice.paid");
    event["data"]["object"]["lines"]["data"][0]["period"] =
        serde_json::json!({"start": now - 60, "end": end});
    let body = event.to_string();
    let answer = http
        .post(format!("{base}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", stripe_signature(&body, now))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let me = |http: reqwest::Client, base: String, token: String| async move {
        http.get(format!("{base}/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let before = me(http.clone(), base.clone(), token.clone()).await;
    assert_eq!(before["credits"], 610);
    assert_eq!(before["expiring"][0]["credits"], 600);

    let mut after = before;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = me(http.clone(), base.clone(), token.clone()).await;
        if after["credits"] == 10 {
            break;
        }
    }
    assert_eq!(
        after["credits"], 10,
        "the period's credits expired: {after}"
    );
    assert_eq!(after["expiring"], serde_json::json!([]));
    let ledger: serde_json::Value = http
        .get(format!("{base}/v1/me/ledger"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = ledger["items"].as_array().unwrap();
    let grant = rows.iter().find(|r| r["reason"] == "subscription").unwrap();
    let expired: Vec<_> = rows.iter().filter(|r| r["reason"] == "expired").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["delta"], -600);
    assert_eq!(expired[0]["ref"], grant["id"]);
}
