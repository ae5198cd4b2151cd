//! The one executor of `TransactWriteItems`: retries conflicts, classifies cancellations.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, TransactWriteItem};
use rand::Rng;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::{DynamoStore, StoreError, sdk_error};
use crate::domain::UserId;

/// Attempts per transaction, the first included. Conflicts on one user are short-lived
/// (another transaction on the same item), so a few jittered retries settle them.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// What an item of a transaction stands for, to turn its failed condition into an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// The user's balance update: fails on a short balance, a revoked session, or no user.
    Balance {
        user: UserId,
        expected_session: Option<u64>,
        cost: Option<i64>,
    },
    /// A counter on the profile kept under `max` (the API keys a user holds): fails on a
    /// revoked session, no user, or a full count (`ConditionFailed("limit")`).
    Limit {
        user: UserId,
        expected_session: Option<u64>,
        attribute: &'static str,
        max: i64,
    },
    /// A profile update with conditions of its own (what the profile shows): fails with
    /// `AccountDeleted` on a deleted account, `NotFound` without one, else
    /// `ConditionFailed("profile")` (the caller plans again from a fresh read).
    Profile { user: UserId },
    /// A reference-keyed guard: fails when the change was applied already.
    Guard,
    /// Any other conditioned item; its name is reported.
    Named(&'static str),
}

/// A transaction under construction: items and what each stands for.
#[derive(Debug, Default)]
pub(crate) struct Tx {
    items: Vec<TransactWriteItem>,
    roles: Vec<Role>,
}

impl Tx {
    pub(crate) fn push(&mut self, item: TransactWriteItem, role: Role) {
        self.items.push(item);
        self.roles.push(role);
    }
}

impl DynamoStore {
    /// Runs one transaction. `TransactionConflict` (and an in-progress duplicate) is
    /// retried with jitter, reusing one `ClientRequestToken` so that a retry of a write
    /// that did land is not applied twice; a persistent conflict is `Contention`.
    pub(crate) async fn execute(&self, tx: Tx) -> Result<(), StoreError> {
        let token = ulid::Ulid::new().to_string();
        for attempt in 1..=MAX_ATTEMPTS {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(tx.items.clone()))
                .client_request_token(&token)
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(error) => self.retryable(error, &tx.roles).await?,
            }
            tracing::warn!(attempt, "transaction conflicted; retrying");
            crate::metrics::count("TransactionConflictRetries", 1, &[]);
            if attempt < MAX_ATTEMPTS {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(StoreError::Contention)
    }

    /// `Ok` when the failure is worth another attempt, else the answer to give.
    async fn retryable(
        &self,
        error: SdkError<TransactWriteItemsError, HttpResponse>,
        roles: &[Role],
    ) -> Result<(), StoreError> {
        let service = match error {
            SdkError::ServiceError(service) => service,
            other => return Err(sdk_error(other)),
        };
        match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancel) => {
                let reasons = cancel.cancellation_reasons();
                let failed_at = |i: &usize| reasons[*i].code() == Some("ConditionalCheckFailed");
                // "Already applied" outranks every other answer: a repeat changes nothing,
                // whatever the balance is now.
                let failed = (0..reasons.len())
                    .filter(failed_at)
                    .find(|i| matches!(roles.get(*i), Some(Role::Guard)))
                    .or_else(|| (0..reasons.len()).find(failed_at));
                if let Some(index) = failed {
                    return match self.classify(roles[index], &reasons[index]).await? {
                        Some(answer) => Err(answer),
                        // The condition holds on a fresh read: it lost a race; try again.
                        None => Ok(()),
                    };
                }
                let transient = reasons.iter().any(|r| {
                    matches!(
                        r.code(),
                        Some(
                            "TransactionConflict"
                                | "ThrottlingError"
                                | "ProvisionedThroughputExceeded"
                        )
                    )
                });
                if transient {
                    Ok(())
                } else {
                    let codes: Vec<_> =
                        reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
                    Err(StoreError::Internal(anyhow::anyhow!(
                        "transaction cancelled for reasons {codes:?}"
                    )))
                }
            }
            TransactWriteItemsError::TransactionInProgressException(_) => Ok(()),
            _ => Err(sdk_error(SdkError::ServiceError(service))),
        }
    }

    /// The domain answer for a failed condition, or `None` if it holds on a fresh read.
    async fn classify(
        &self,
        role: Role,
        reason: &CancellationReason,
    ) -> Result<Option<StoreError>, StoreError> {
        match role {
            Role::Guard => Ok(Some(StoreError::AlreadyApplied)),
            Role::Named(name) => Ok(Some(StoreError::ConditionFailed(name))),
            Role::Profile { user } => {
                let old = match reason.item() {
                    Some(item) => Some(item.clone()),
                    None => self.get_user_item(user).await?,
                };
                Ok(Some(match old {
                    None => StoreError::NotFound,
                    Some(old) if super::users::is_deleted(&old) => StoreError::AccountDeleted,
                    Some(_) => StoreError::ConditionFailed("profile"),
                }))
            }
            Role::Balance {
                user,
                expected_session,
                cost,
            } => {
                // ALL_OLD returns the item as it was; where it is missing, read it.
                let old = match reason.item() {
                    Some(item) => Some(item.clone()),
                    None => self.get_user_item(user).await?,
                };
                Ok(balance_failure(old.as_ref(), expected_session, cost))
            }
            Role::Limit {
                user,
                expected_session,
                attribute,
                max,
            } => {
                let old = match reason.item() {
                    Some(item) => Some(item.clone()),
                    None => self.get_user_item(user).await?,
                };
                if let Some(answer) = balance_failure(old.as_ref(), expected_session, None) {
                    return Ok(Some(answer));
                }
                let count = old
                    .as_ref()
                    .and_then(|o| o.get(attribute))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
                    .unwrap_or(0);
                Ok((count >= max).then_some(StoreError::ConditionFailed("limit")))
            }
        }
    }
}

fn balance_failure(
    old: Option<&HashMap<String, AttributeValue>>,
    expected_session: Option<u64>,
    cost: Option<i64>,
) -> Option<StoreError> {
    let Some(old) = old else {
        return Some(match expected_session {
            Some(_) => StoreError::SessionRevoked,
            None => StoreError::NotFound,
        });
    };
    // A deleted account is refused whatever the token: its version moved on too, but a
    // token naming the new one must not act either.
    if super::users::is_deleted(old) {
        return Some(StoreError::AccountDeleted);
    }
    let number = |name: &str| {
        old.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    if let Some(expected) = expected_session
        && number("session_version") != Some(expected as i64)
    {
        return Some(StoreError::SessionRevoked);
    }
    if let Some(cost) = cost
        && number("credits").is_none_or(|credits| credits < cost)
    {
        return Some(StoreError::InsufficientCredits);
    }
    None
}

fn backoff(attempt: u32) -> Duration {
    // Full jitter over an exponentially growing window: 25, 50, 100, 200 ms.
    let cap = 25u64 << (attempt - 1).min(4);
    Duration::from_millis(rand::rng().random_range(1..=cap))
}
