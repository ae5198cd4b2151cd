//! The security log: what was done to an account and by whom (API.md, "Security log").
//! An entry is written in the same transaction as the action it records, so an applied
//! action always has its entry and a refused one never does.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use super::AuditId;

/// The longest user agent kept, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 512;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    SignIn,
    Logout,
    AccountDeleted,
    ApiKeyCreated,
    ApiKeyRevoked,
    WebhookSecretCreated,
    WebhookSecretRotated,
    CheckoutStarted,
    PaymentApplied,
    PaymentParked,
    AdminGrant,
    AdminRefund,
    AdminReplay,
}

impl AuditAction {
    pub const ALL: [Self; 13] = [
        Self::SignIn,
        Self::Logout,
        Self::AccountDeleted,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::WebhookSecretCreated,
        Self::WebhookSecretRotated,
        Self::CheckoutStarted,
        Self::PaymentApplied,
        Self::PaymentParked,
        Self::AdminGrant,
        Self::AdminRefund,
        Self::AdminReplay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::Logout => "logout",
            Self::AccountDeleted => "account_deleted",
            Self::ApiKeyCreated => "api_key_created",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::WebhookSecretCreated => "webhook_secret_created",
            Self::WebhookSecretRotated => "webhook_secret_rotated",
            Self::CheckoutStarted => "checkout_started",
            Self::PaymentApplied => "payment_applied",
            Self::PaymentParked => "payment_parked",
            Self::AdminGrant => "admin_grant",
            Self::AdminRefund => "admin_refund",
            Self::AdminReplay => "admin_replay",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Who did it: `user`, `admin:<name>`, `stripe`, `creem` or `system`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    User,
    /// An operator through `nb-admin`, by name.
    Admin(String),
    Stripe,
    Creem,
    System,
}

impl Actor {
    /// An operator; the name is cut to 64 visible characters (it is shown to the user).
    pub fn admin(name: &str) -> Self {
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        Self::Admin(if name.is_empty() {
            "operator".into()
        } else {
            name
        })
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "user" => Self::User,
            "stripe" => Self::Stripe,
            "creem" => Self::Creem,
            "system" => Self::System,
            other => Self::Admin(other.strip_prefix("admin:")?.to_string()),
        })
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User => f.write_str("user"),
            Self::Admin(name) => write!(f, "admin:{name}"),
            Self::Stripe => f.write_str("stripe"),
            Self::Creem => f.write_str("creem"),
            Self::System => f.write_str("system"),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not an actor"))
    }
}

/// Where a request came from, as the log keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl Origin {
    pub fn new(ip: Option<String>, user_agent: Option<&str>, request_id: Option<String>) -> Self {
        Self {
            ip,
            user_agent: user_agent
                .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect::<String>())
                .filter(|ua| !ua.is_empty()),
            request_id,
        }
    }
}

/// An entry to write with an action. `detail` names what the action touched (provider,
/// key id and prefix, product, event id, credits) and never a secret, a token or a key.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub action: AuditAction,
    pub actor: Actor,
    pub origin: Origin,
    pub detail: serde_json::Value,
}

impl AuditRecord {
    /// An action of the signed-in user, from this request.
    pub fn by_user(action: AuditAction, origin: &Origin, detail: serde_json::Value) -> Self {
        Self {
            action,
            actor: Actor::User,
            origin: origin.clone(),
            detail,
        }
    }

    /// An action of a provider or of the system: no request of the user's.
    pub fn by(actor: Actor, action: AuditAction, detail: serde_json::Value) -> Self {
        Self {
            action,
            actor,
            origin: Origin::default(),
            detail,
        }
    }
}

/// One entry as `GET /v1/me/security-log` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: AuditId,
    pub action: AuditAction,
    pub actor: Actor,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_read_as_api_md_writes_them() {
        for (actor, text) in [
            (Actor::User, "user"),
            (Actor::admin("ada"), "admin:ada"),
            (Actor::Stripe, "stripe"),
            (Actor::Creem, "creem"),
            (Actor::System, "system"),
        ] {
            assert_eq!(actor.to_string(), text);
            assert_eq!(Actor::parse(text), Some(actor));
        }
        assert_eq!(Actor::parse("root"), None);
        assert_eq!(Actor::admin(""), Actor::Admin("operator".into()));
        assert_eq!(Actor::admin("a b\nc"), Actor::Admin("abc".into()));
    }

    #[test]
    fn every_action_has_its_name_and_the_user_agent_is_cut_at_512() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::json!(action.as_str())
            );
        }
        let origin = Origin::new(None, Some(&"x".repeat(600)), None);
        assert_eq!(origin.user_agent.unwrap().len(), 512);
    }
}
