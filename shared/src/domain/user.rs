//! Users as the API shows them.

use serde::Serialize;
use time::OffsetDateTime;

use super::UserId;
pub use super::payment::SubscriptionSummary;

/// A user's profile and balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Option<String>,
    pub name: String,
    pub avatar_url: Option<String>,
    /// The balance; below zero only after a claw-back.
    pub credits: i64,
    /// Bumped by logout: tokens carrying an older version are refused.
    pub session_version: u64,
    /// The current subscription, if any.
    pub subscription: Option<SubscriptionSummary>,
    pub created_at: OffsetDateTime,
}

/// The profile fields a sign-in provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub email: Option<String>,
    pub name: String,
    pub avatar_url: Option<String>,
}

/// `GET /v1/me`.
#[derive(Debug, Serialize)]
pub struct Me {
    pub id: UserId,
    pub email: Option<String>,
    pub name: String,
    pub avatar_url: Option<String>,
    pub credits: i64,
    pub subscription: Option<SubscriptionSummary>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<User> for Me {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            avatar_url: user.avatar_url,
            credits: user.credits,
            subscription: user.subscription,
            created_at: user.created_at,
        }
    }
}
