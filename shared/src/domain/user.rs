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
    /// Some grant's credits may still expire (`GET /v1/me` then says what and when).
    pub has_expiring: bool,
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
    /// What will expire and when, soonest first.
    pub expiring: Vec<Expiring>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Credits that will expire together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expiring {
    pub credits: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Me {
    /// `user` with what will expire: (unix seconds, credits), soonest first.
    pub fn with_expiring(user: User, expiring: &[(i64, i64)]) -> Self {
        let mut me = Self::from(user);
        me.expiring = expiring
            .iter()
            .filter_map(|&(at, credits)| {
                Some(Expiring {
                    credits,
                    expires_at: OffsetDateTime::from_unix_timestamp(at).ok()?,
                })
            })
            .collect();
        me
    }
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
            expiring: Vec::new(),
            created_at: user.created_at,
        }
    }
}
