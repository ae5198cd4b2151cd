//! Payment providers and subscriptions as the API shows them.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A payment provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Stripe,
    Creem,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Creem => "creem",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stripe" => Some(Self::Stripe),
            "creem" => Some(Self::Creem),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statuses in which the user still has the subscription (a new checkout for another
/// one is refused with `already_subscribed`).
const ACTIVE_STATUSES: &[&str] = &["active", "trialing", "past_due"];

/// Whether a provider's subscription status means the user still has the subscription.
pub fn is_active_status(status: &str) -> bool {
    ACTIVE_STATUSES.contains(&status)
}

/// The user's current subscription, as `GET /v1/me` shows it (denormalized onto the
/// profile by the transactions that change the subscription).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSummary {
    pub product_id: String,
    pub provider: Provider,
    /// The provider's status (`active`, `trialing`, `past_due`, `canceled`, ...).
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub current_period_end: OffsetDateTime,
    pub cancel_at_period_end: bool,
}

impl SubscriptionSummary {
    /// Whether this subscription still runs (so another cannot be bought).
    pub fn is_active(&self) -> bool {
        is_active_status(&self.status)
    }
}
