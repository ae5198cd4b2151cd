//! Session tokens: HS256 JWTs carrying the user id and the user's `session_version`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::domain::UserId;

const ISSUER: &str = "nano-banana-pro-ai";
const AUDIENCE: &str = "nano-banana-pro-ai/api";

/// What a valid token says. Whether the session is still valid (not revoked) is decided
/// against the user item: see `session_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    pub user_id: UserId,
    pub session_version: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sv: u64,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// The token was missing, malformed, expired, tampered or not ours.
#[derive(Debug, thiserror::Error)]
#[error("invalid session token")]
pub struct InvalidToken;

/// Issues and verifies session tokens with one key.
pub struct SessionKeys {
    /// For MACs of short-lived state (the OAuth cookie), under its own label.
    mac_key: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    pub fn new(secret: &Secret, ttl: Duration) -> Self {
        // Only HS256: a token naming any other algorithm (`none`, RS256 with our key as
        // a "public key") is refused before its signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            mac_key: secret.expose().as_bytes().to_vec(),
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token valid for the configured lifetime.
    pub fn issue(&self, user_id: UserId, session_version: u64) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            sv: session_version,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// HMAC-SHA256 of `data` under a key derived for `label`, so a MAC made for one use
    /// can never pass for another (nor for a session token).
    pub fn mac(&self, label: &str, data: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut derive =
            Hmac::<sha2::Sha256>::new_from_slice(&self.mac_key).expect("any key length");
        derive.update(label.as_bytes());
        let key = derive.finalize().into_bytes();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of a MAC made by [`SessionKeys::mac`].
    pub fn verify_mac(&self, label: &str, data: &[u8], tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.mac(label, data).ct_eq(tag).into()
    }

    pub fn verify(&self, token: &str) -> Result<SessionClaims, InvalidToken> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| InvalidToken)?;
        Ok(SessionClaims {
            user_id: UserId::parse(&data.claims.sub).map_err(|_| InvalidToken)?,
            session_version: data.claims.sv,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn keys(secret: &str) -> SessionKeys {
        SessionKeys::new(&Secret::new(secret), Duration::from_secs(3600))
    }

    const KEY: &str = "test-session-key-0123456789abcdefghijklmnop";

    #[test]
    fn an_issued_token_verifies_to_its_claims() {
        let user = UserId::new();
        let token = keys(KEY).issue(user, 3);
        let claims = keys(KEY).verify(&token).unwrap();
        assert_eq!(
            claims,
            SessionClaims {
                user_id: user,
                session_version: 3
            }
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let token = keys("another-key-0123456789abcdefghijklmnopqrs").issue(UserId::new(), 0);
        assert!(keys(KEY).verify(&token).is_err());
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"{}","sv":0,"iss":"{ISSUER}","aud":"{AUDIENCE}","iat":0,"exp":9999999999}}"#,
            UserId::new()
        ));
        assert!(keys(KEY).verify(&format!("{header}.{body}.")).is_err());
    }
}
