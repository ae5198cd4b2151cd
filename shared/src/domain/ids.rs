//! Prefixed ULID identifiers (`usr_`, `gen_`, `upl_`, `led_`, `key_`, `aud_`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// The text was not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} id")]
pub struct InvalidId {
    pub kind: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id; ULIDs sort by creation time, so newest-first listings need no index.
            pub fn new() -> Self {
                Self(Ulid::new())
            }

            pub fn ulid(&self) -> Ulid {
                self.0
            }

            /// Accepts exactly `<prefix><26-char ULID>`.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                let invalid = || InvalidId { kind: $kind };
                let rest = text.strip_prefix($prefix).ok_or_else(invalid)?;
                if rest.len() != 26 {
                    return Err(invalid());
                }
                Ulid::from_string(rest).map(Self).map_err(|_| invalid())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A user (`usr_…`).
    UserId, "usr_", "user"
);
prefixed_id!(
    /// A generation job (`gen_…`).
    GenerationId, "gen_", "generation"
);
prefixed_id!(
    /// An uploaded reference image (`upl_…`).
    UploadId, "upl_", "upload"
);
prefixed_id!(
    /// A ledger row (`led_…`).
    LedgerId, "led_", "ledger"
);
prefixed_id!(
    /// An API key (`key_…`); the key itself (`nbk_…`) is never stored.
    ApiKeyId, "key_", "API key"
);
prefixed_id!(
    /// A security-log entry (`aud_…`).
    AuditId, "aud_", "audit entry"
);

impl LedgerId {
    /// A new id that sorts after `previous` (a row that must come after the rows it was
    /// decided from, whatever another writer's clock said).
    pub fn after(previous: Option<LedgerId>) -> Self {
        let fresh = Ulid::new();
        match previous.and_then(|p| p.0.increment()) {
            Some(next) if next > fresh => Self(next),
            _ => Self(fresh),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text() {
        let id = UserId::new();
        assert_eq!(UserId::parse(&id.to_string()), Ok(id));
        assert!(id.to_string().starts_with("usr_"));
    }

    #[test]
    fn an_id_with_another_prefix_is_refused() {
        let id = GenerationId::new().to_string();
        assert!(UserId::parse(&id).is_err());
        assert!(UserId::parse("usr_").is_err());
        assert!(UserId::parse("usr_not-a-ulid-at-all-xxxxxxxx").is_err());
        assert!(UserId::parse(&format!("usr_{}x", Ulid::new())).is_err());
    }
}
