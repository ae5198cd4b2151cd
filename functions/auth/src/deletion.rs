//! `DELETE /v1/me`, and the sweep that finishes deletions whose request died.
//!
//! The order (see `shared::aws::dynamo::deletion`): one write marks the account deleted
//! and revokes every session, so nothing acts for it from then on; then its subscriptions
//! are canceled at the provider (at once), its open generations finished with their
//! refunds, its images and uploads deleted, its items erased. Each step may run again, so
//! a retried request or the sweep continues what a crash left.

use std::time::Duration;

use shared::Services;
use shared::aws::dynamo::StoreError;
use shared::aws::dynamo::deletion::DeletionStart;
use shared::aws::dynamo::work::Finisher;
use shared::domain::UserId;
use shared::domain::audit::Origin;
use shared::domain::generation::GenerationError;
use shared::http::ApiError;
use shared::payments::billing::Billing;
use time::OffsetDateTime;

/// A deletion older than this with its steps not done is the sweep's (younger ones may
/// still be running in their request).
pub const SWEEP_AFTER: Duration = Duration::from_secs(120);

/// Why the steps after the first did not all finish (the account is deleted all the
/// same; a retry or the sweep continues).
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    #[error("canceling {provider} subscription failed")]
    Cancel {
        provider: shared::payments::Provider,
        #[source]
        cause: shared::payments::ProviderError,
    },
    #[error("storage failed")]
    Store(#[from] StoreError),
}

/// Deletes the account of the session `session_version`; a retry by that session
/// continues an unfinished deletion. Any other session, and any session once the
/// deletion is done, is `401`.
pub async fn delete_account(
    services: &Services,
    billing: &Billing,
    user: UserId,
    session_version: u64,
    origin: &Origin,
) -> Result<(), ApiError> {
    let start = services
        .store
        .begin_deletion(user, session_version, origin)
        .await?;
    if start == DeletionStart::Started {
        tracing::info!(user_id = %user, "account marked deleted; sessions revoked");
    }
    finish_deletion(services, billing, user).await.map_err(|e| {
        tracing::error!(
            user_id = %user,
            error = format!("{:#}", anyhow::Error::new(e)),
            "account deletion started but not finished; a retry or the sweep continues it"
        );
        ApiError::Unavailable(
            "the account is deleted; finishing its clean-up failed and is retried".into(),
        )
    })
}

/// The steps after the first, each safe to run again.
pub async fn finish_deletion(
    services: &Services,
    billing: &Billing,
    user: UserId,
) -> Result<(), DeletionError> {
    let store = &services.store;
    for subscription in store.subscriptions_of(user).await? {
        if !subscription.may_bill() {
            continue;
        }
        billing
            .cancel(subscription.provider, &subscription.subscription_id)
            .await
            .map_err(|cause| DeletionError::Cancel {
                provider: subscription.provider,
                cause,
            })?;
        store
            .mark_subscription_canceled(user, subscription.provider, &subscription.subscription_id)
            .await?;
        tracing::info!(user_id = %user, provider = %subscription.provider, "subscription canceled for a deleted account");
    }
    for generation in store.open_generations_of(user).await? {
        let error = GenerationError {
            code: "account_deleted".into(),
            message: "the account was deleted; the credits were refunded".into(),
        };
        // Whatever a worker does meanwhile: its finish is refused for a deleted account,
        // so this one (or an earlier run of it) refunds exactly once.
        if store
            .finish(&generation, &[], Finisher::Deadline, error)
            .await?
            .is_some()
        {
            tracing::info!(generation_id = %generation.id, "open generation of a deleted account finished and refunded");
        }
    }
    for prefix in [format!("images/{user}/"), format!("uploads/{user}/")] {
        let keys = services.blobs.list(&prefix).await?;
        services.blobs.delete(&keys).await?;
    }
    store.erase_account(user).await?;
    tracing::info!(user_id = %user, "account deleted");
    shared::metrics::count("AccountsDeleted", 1, &[]);
    Ok(())
}

/// Finishes every deletion started more than `older_than` ago (the scheduled sweep:
/// [`SWEEP_AFTER`]) and not done; one that fails again is logged and left for the next
/// sweep. How many finished.
pub async fn sweep_deletions(
    services: &Services,
    billing: &Billing,
    older_than: Duration,
) -> Result<usize, StoreError> {
    let cutoff = OffsetDateTime::now_utc() - older_than;
    let mut finished = 0;
    for user in services.store.pending_deletions(cutoff).await? {
        match finish_deletion(services, billing, user).await {
            Ok(()) => finished += 1,
            Err(e) => {
                shared::metrics::count("AccountDeletionsStuck", 1, &[]);
                tracing::error!(
                    user_id = %user,
                    error = format!("{:#}", anyhow::Error::new(e)),
                    "a deleted account's clean-up failed again"
                );
            }
        }
    }
    Ok(finished)
}
