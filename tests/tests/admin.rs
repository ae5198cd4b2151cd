//! `nb-admin` against the emulator: each command does its work once, also when run twice.

use std::time::Duration;

use admin::{Admin, GrantOutcome, RefundOutcome};
use aws_sdk_sqs::types::QueueAttributeName;
use axum::http::{Method, StatusCode};
use e2e_tests::{Stack, dev_login, request, send, stack};
use serde_json::json;
use shared::aws::dynamo::DynamoStore;
use shared::aws::sqs::JobQueue;
use shared::domain::{GenerationId, UserId};

fn admin_for(stack: &Stack) -> Admin {
    let settings = &stack.services.settings;
    Admin {
        store: DynamoStore::new(stack.clients.dynamo.clone(), settings.table_name.clone()),
        queue: JobQueue::new(stack.clients.sqs.clone(), settings.queue_url.clone()),
        queue_url: settings.queue_url.clone(),
        dlq_url: settings.dlq_url.clone(),
        payments: shared::payments::PaymentSettings::from_lookup(|_| None)
            .expect("the default payment settings"),
        operator: "ops-ada".into(),
    }
}

fn user_of(value: &serde_json::Value) -> UserId {
    UserId::parse(value["id"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn reconcile_passes_on_a_consistent_table_and_reports_an_injected_mismatch() {
    let stack = stack("adm-reconcile", |_| {}).await;
    let admin = admin_for(&stack);
    for i in 0..5 {
        dev_login(&stack.router, &format!("r{i}@example.com")).await;
    }
    let (token, victim) = dev_login(&stack.router, "victim@example.com").await;
    send(
        &stack.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&token),
            Some(json!({"model": "nano-banana", "prompt": "x"})),
        ),
    )
    .await;

    let clean = admin.reconcile(3, 2, Duration::ZERO).await.unwrap();
    // A balance changed behind the ledger's back.
    stack
        .clients
        .dynamo
        .update_item()
        .table_name(&stack.names.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!(
                "USER#{}",
                victim["id"].as_str().unwrap()
            )),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("PROFILE".into()),
        )
        .update_expression("SET credits = credits + :x")
        .expression_attribute_values(":x", aws_sdk_dynamodb::types::AttributeValue::N("5".into()))
        .send()
        .await
        .unwrap();
    let dirty = admin.reconcile(3, 2, Duration::ZERO).await.unwrap();

    assert_eq!(clean.users, 6);
    assert!(clean.mismatches.is_empty(), "{:?}", clean.mismatches);
    assert_eq!(dirty.mismatches.len(), 1);
    assert_eq!(dirty.mismatches[0].user, user_of(&victim));
    assert_eq!(
        (dirty.mismatches[0].balance, dirty.mismatches[0].ledger_sum),
        (13, 8)
    );
}

#[tokio::test]
async fn a_grant_run_twice_applies_once_and_records_who_and_why() {
    let stack = stack("adm-grant", |_| {}).await;
    let admin = admin_for(&stack);
    let (token, user) = dev_login(&stack.router, "grant@example.com").await;

    let dry = admin
        .grant(user_of(&user), 50, "goodwill for ticket 42", None, true)
        .await
        .unwrap();
    let first = admin
        .grant(user_of(&user), 50, "goodwill for ticket 42", None, false)
        .await
        .unwrap();
    let second = admin
        .grant(user_of(&user), 50, "goodwill for ticket 42", None, false)
        .await
        .unwrap();
    let removal = admin
        .grant(user_of(&user), -20, "duplicate purchase", None, false)
        .await
        .unwrap();

    assert_eq!(dry, GrantOutcome::DryRun);
    assert!(matches!(first, GrantOutcome::Applied(_)));
    assert_eq!(second, GrantOutcome::AlreadyApplied);
    assert!(matches!(removal, GrantOutcome::Applied(_)));
    assert_eq!(stack.balance(&token).await, 40);
    let ledger = stack.ledger(&token).await;
    assert_eq!(ledger.iter().filter(|r| r["reason"] == "admin").count(), 2);
    let rows = stack
        .clients
        .dynamo
        .query()
        .table_name(&stack.names.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :l)")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{}", user_of(&user))),
        )
        .expression_attribute_values(
            ":l",
            aws_sdk_dynamodb::types::AttributeValue::S("LEDGER#".into()),
        )
        .send()
        .await
        .unwrap();
    let notes: Vec<String> = rows
        .items()
        .iter()
        .filter_map(|i| i.get("note").and_then(|n| n.as_s().ok()).cloned())
        .collect();
    assert!(
        notes.contains(&"by ops-ada: goodwill for ticket 42".to_string()),
        "{notes:?}"
    );
}

#[tokio::test]
async fn refunding_a_stuck_generation_twice_refunds_once() {
    let stack = stack("adm-refund", |_| {}).await;
    let admin = admin_for(&stack);
    let (token, _) = dev_login(&stack.router, "stuck@example.com").await;
    let created = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&token),
            Some(json!({"model": "nano-banana-pro", "prompt": "x"})),
        ),
    )
    .await;
    let id = GenerationId::parse(created.body["id"].as_str().unwrap()).unwrap();

    let dry = admin
        .refund_generation(id, "stuck for a day", true)
        .await
        .unwrap();
    let first = admin
        .refund_generation(id, "stuck for a day", false)
        .await
        .unwrap();
    let second = admin
        .refund_generation(id, "stuck for a day", false)
        .await
        .unwrap();

    assert_eq!(dry, RefundOutcome::WouldRefund { credits: 4 });
    assert_eq!(first, RefundOutcome::Refunded { credits: 4 });
    assert_eq!(second, RefundOutcome::AlreadyFinished);
    assert_eq!(stack.balance(&token).await, 10);
    let shown = admin.generation(id).await.unwrap().unwrap();
    assert_eq!(shown.error.unwrap().code, "refunded_by_operator");
    let read = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations/{id}"),
            Some(&token),
            None,
        ),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["refunded_credits"], 4);
    let log = send(
        &stack.router,
        request(Method::GET, "/v1/me/security-log", Some(&token), None),
    )
    .await;
    let refunds: Vec<&serde_json::Value> = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "admin_refund")
        .collect();
    assert_eq!(refunds.len(), 1, "{:?}", log.body);
    assert_eq!(refunds[0]["actor"], "admin:ops-ada");
    assert_eq!(refunds[0]["detail"]["reason"], "stuck for a day");
    assert_eq!(refunds[0]["detail"]["credits"], 4);
}

async fn depth(stack: &Stack, url: &str) -> usize {
    let out = stack
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn dlq_replay_run_twice_moves_each_message_once() {
    let stack = stack("adm-dlq", |_| {}).await;
    let admin = admin_for(&stack);
    let dlq = stack.services.settings.dlq_url.clone().unwrap();
    for i in 0..3 {
        stack
            .clients
            .sqs
            .send_message()
            .queue_url(&dlq)
            .message_body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
    }

    let first = admin.dlq_replay(100, false).await.unwrap();
    let second = admin.dlq_replay(100, false).await.unwrap();

    assert_eq!((first, second), (3, 0));
    assert_eq!(depth(&stack, &dlq).await, 0);
    assert_eq!(stack.queue_depth().await, 3);
}

#[tokio::test]
async fn a_user_is_found_by_email_or_id_with_recent_ledger() {
    let stack = stack("adm-user", |_| {}).await;
    let admin = admin_for(&stack);
    let (_, user) = dev_login(&stack.router, "Show.Me@example.com").await;

    let by_email = admin
        .user_report("show.me@example.com")
        .await
        .unwrap()
        .unwrap();
    let by_id = admin
        .user_report(user["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();

    assert_eq!(by_email.user.id, user_of(&user));
    assert_eq!(by_id.user.credits, 10);
    assert_eq!(by_id.recent_ledger.len(), 1);
    assert!(
        admin
            .user_report("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn every_subcommand_has_help() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let binary = root.join("target/debug/nb-admin");
    assert!(
        binary.exists(),
        "built by infra/test.sh (cargo build --workspace --bins)"
    );
    for args in [
        vec!["--help"],
        vec!["reconcile", "--help"],
        vec!["grant", "--help"],
        vec!["generation", "show", "--help"],
        vec!["generation", "refund", "--help"],
        vec!["dlq", "replay", "--help"],
        vec!["events", "list", "--help"],
        vec!["events", "replay", "--help"],
        vec!["user", "show", "--help"],
        vec!["audit", "list", "--help"],
    ] {
        let out = std::process::Command::new(&binary)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let failing = std::process::Command::new(&binary)
        .args(["generation", "show", "not-an-id"])
        .env("TABLE_NAME", "x")
        .output()
        .unwrap();
    assert!(
        !failing.status.success(),
        "a bad id fails with a non-zero exit"
    );
}
