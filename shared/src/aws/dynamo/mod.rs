//! The DynamoDB adapter: one table, single-table design (see DESIGN.md's data table).
//!
//! Condition failures become domain answers here, like a unique-constraint mapping in a
//! SQL service: a short balance is `InsufficientCredits`, a bumped `session_version` is
//! `SessionRevoked`, an already-applied reference is `AlreadyApplied`.

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod cancel;
pub mod deletion;
pub mod expiry;
pub mod generations;
pub mod hooks;
mod keys;
pub mod ledger;
pub mod payments;
mod tx;
mod users;
pub mod work;

use std::fmt::Debug;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

pub use generations::{Accepted, NewGeneration, Upload};
pub use ledger::{Applied, BalanceChange};
pub use users::SignIn;

/// Why a storage operation did not happen. Every variant but the last three is a domain
/// answer; those are failures of ours.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the balance does not cover the cost")]
    InsufficientCredits,
    #[error("the session was revoked")]
    SessionRevoked,
    /// The account is deleted: nothing acts for it any more (401 on a request; a payment
    /// event for it is held for an operator; a worker's finish stores nothing).
    #[error("the account is deleted")]
    AccountDeleted,
    #[error("not found")]
    NotFound,
    #[error("already applied")]
    AlreadyApplied,
    #[error("condition `{0}` does not hold")]
    ConditionFailed(&'static str),
    #[error("the pagination cursor is not valid")]
    InvalidCursor,
    #[error("over the rate limit")]
    RateLimited { retry_after_secs: u64 },
    #[error("the idempotency key was used with another request")]
    IdempotencyKeyReused,
    #[error("the transaction kept conflicting with concurrent ones")]
    Contention,
    #[error("AWS is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("AWS request failed")]
    Internal(#[source] anyhow::Error),
}

/// The service's table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// How long security-log entries are kept (`AUDIT_RETENTION_DAYS`, by the table's TTL).
    audit_retention: std::time::Duration,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            audit_retention: audit::DEFAULT_RETENTION,
        }
    }

    /// Keeps security-log entries this long.
    pub fn with_audit_retention(mut self, retention: std::time::Duration) -> Self {
        self.audit_retention = retention;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

/// Throttling, timeouts and connection failures are worth retrying later (503); anything
/// else is a bug or a misconfiguration (500).
pub(crate) fn sdk_error<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    let transient = match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => true,
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some(
                "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
            )
        ),
        _ => false,
    };
    let cause = anyhow::Error::new(
        aws_smithy_types::error::display::DisplayErrorContext(error).to_string_error(),
    );
    if transient {
        StoreError::Unavailable(cause)
    } else {
        StoreError::Internal(cause)
    }
}

/// A conditional write's result as a domain answer: `Some` when it landed, `None` when its
/// condition did not hold (`ConditionalCheckFailedException`), else the failure.
pub(crate) fn landed<O, E, R>(result: Result<O, SdkError<E, R>>) -> Result<Option<O>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(SdkError::ServiceError(e))
            if e.err().code() == Some("ConditionalCheckFailedException") =>
        {
            Ok(None)
        }
        Err(e) => Err(sdk_error(e)),
    }
}

/// `DisplayErrorContext` renders the whole chain; keep it as a plain error message.
trait ToStringError {
    fn to_string_error(&self) -> PlainError;
}

impl<E: std::error::Error> ToStringError
    for aws_smithy_types::error::display::DisplayErrorContext<E>
{
    fn to_string_error(&self) -> PlainError {
        PlainError(self.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PlainError(String);
