//! Key shapes of the single table.

use crate::domain::{LedgerId, UserId};

pub(crate) const PK: &str = "pk";
pub(crate) const SK: &str = "sk";
pub(crate) const PROFILE: &str = "PROFILE";
pub(crate) const IDENTITY: &str = "IDENTITY";
pub(crate) const LEDGER_PREFIX: &str = "LEDGER#";

pub(crate) fn user_pk(user: UserId) -> String {
    format!("USER#{user}")
}

pub(crate) fn ledger_sk(id: LedgerId) -> String {
    format!("{LEDGER_PREFIX}{id}")
}

pub(crate) fn identity_pk(provider: &str, subject: &str) -> String {
    format!("IDENTITY#{provider}#{subject}")
}

/// The guard item that makes a reference-keyed change apply once.
pub(crate) fn applied_sk(reason: &str, reference: &str) -> String {
    format!("APPLIED#{reason}#{reference}")
}
