//! Ledger rows: every change of a balance has one.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::LedgerId;

/// Why a balance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerReason {
    SignupBonus,
    Generation,
    Refund,
    Purchase,
    Subscription,
    Clawback,
    /// What was left of a grant at its expiry (`ref`: the grant's row).
    Expired,
    Admin,
}

impl LedgerReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignupBonus => "signup_bonus",
            Self::Generation => "generation",
            Self::Refund => "refund",
            Self::Purchase => "purchase",
            Self::Subscription => "subscription",
            Self::Clawback => "clawback",
            Self::Expired => "expired",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for LedgerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One applied balance change, as `GET /v1/me/ledger` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: LedgerId,
    pub delta: i64,
    pub reason: LedgerReason,
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When a grant's credits expire (`null`: never, or not a grant).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}
