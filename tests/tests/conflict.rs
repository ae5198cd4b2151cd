//! `TransactionConflict`, which real DynamoDB raises for concurrent transactions on one
//! user and the emulator never does, injected with aws-smithy-mocks.

use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::types::CancellationReason;
use aws_sdk_dynamodb::types::error::TransactionCanceledException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use axum::http::{Method, StatusCode};
use e2e_tests::{request, send};
use serde_json::json;
use shared::Services;
use shared::aws::dynamo::{Applied, BalanceChange, DynamoStore, StoreError};
use shared::config::{Secret, Settings};
use shared::domain::ledger::LedgerReason;
use shared::domain::{Credits, UserId};

fn conflict() -> TransactWriteItemsError {
    TransactWriteItemsError::TransactionCanceledException(
        TransactionCanceledException::builder()
            .cancellation_reasons(CancellationReason::builder().code("None").build())
            .cancellation_reasons(
                CancellationReason::builder()
                    .code("TransactionConflict")
                    .build(),
            )
            .build(),
    )
}

fn grant() -> BalanceChange {
    BalanceChange::grant(
        UserId::new(),
        Credits::new(5).unwrap(),
        LedgerReason::Purchase,
        "order",
    )
}

#[tokio::test]
async fn a_conflicting_transaction_is_retried_with_one_token_and_then_succeeds() {
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = tokens.clone();
    let rule = mock!(Client::transact_write_items)
        .match_requests(move |req| {
            seen.lock()
                .unwrap()
                .push(req.client_request_token().map(str::to_string));
            true
        })
        .sequence()
        .error(conflict)
        .times(2)
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
    let store = DynamoStore::new(client, "table");

    let outcome = store.apply(&grant()).await;

    assert!(matches!(outcome, Ok(Applied::Applied(_))), "{outcome:?}");
    assert_eq!(rule.num_calls(), 3);
    let tokens = tokens.lock().unwrap();
    assert!(tokens[0].is_some());
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "one ClientRequestToken for every attempt"
    );
}

#[tokio::test]
async fn a_persistent_conflict_gives_up_as_contention() {
    let rule = mock!(Client::transact_write_items).then_error(conflict);
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let store = DynamoStore::new(client, "table");

    let outcome = store.apply(&grant()).await;

    assert!(
        matches!(outcome, Err(StoreError::Contention)),
        "{outcome:?}"
    );
    assert_eq!(rule.num_calls(), 5, "bounded attempts");
}

#[tokio::test]
async fn a_persistent_conflict_answers_503_not_402_or_500() {
    let no_identity = mock!(Client::get_item).then_output(|| GetItemOutput::builder().build());
    let always_conflict = mock!(Client::transact_write_items).then_error(conflict);
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&no_identity, &always_conflict]
    );
    let settings = Settings::from_lookup(|name| match name {
        "TABLE_NAME" | "BUCKET_NAME" | "QUEUE_URL" => Some("unused".into()),
        "AUTH_DEV_LOGIN" => Some("1".into()),
        _ => None,
    })
    .unwrap();
    let sessions = shared::session::SessionKeys::new(
        &Secret::new(e2e_tests::SESSION_SECRET),
        settings.session_ttl,
    );
    // Never called on this path: plain clients with no endpoint are enough.
    let offline = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let clients = shared::aws::Clients::new(&offline, None);
    let services = Arc::new(Services {
        store: DynamoStore::new(client, "table"),
        blobs: shared::aws::s3::BlobStore::new(clients.s3, "unused"),
        queue: shared::aws::sqs::JobQueue::new(clients.sqs, "unused"),
        settings,
        sessions,
        hook_targets: Default::default(),
    });

    let answer = send(
        &auth::router(
            services,
            Arc::new(auth::AuthContext::from_lookup(|_| None, &mut Default::default()).unwrap()),
        ),
        request(
            Method::POST,
            "/auth/dev/login",
            None,
            Some(json!({"email": "busy@example.com"})),
        ),
    )
    .await;

    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "unavailable");
}
