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

#[tokio::test]
async fn the_run_command_serves_models_and_a_dev_sign_in_shows_the_bonus() {
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
}
