//! Credentials a user holds: API keys (`nbk_…`) and webhook signing secrets (`whsec_…`).
//!
//! An API key is shown once and only its SHA-256 is stored, so a leaked table cannot act
//! as anyone; a webhook secret must be stored (we sign with it) and is shown on request.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every API key starts with this, so a bearer token is told from a session at a glance.
pub const API_KEY_PREFIX: &str = "nbk_";
/// Characters of a key kept for display (`nbk_` and 8 more).
pub const API_KEY_DISPLAY_CHARS: usize = 12;
/// Active keys a user may hold.
pub const MAX_API_KEYS: i64 = 10;
/// Random bytes in a key and in a webhook secret.
const SECRET_BYTES: usize = 32;

/// A freshly made API key: the key (shown once), its hash (stored) and its display prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub key: String,
    pub hash: String,
    pub prefix: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl NewApiKey {
    /// `nbk_` + 32 random bytes (base64url), from the operating system's CSPRNG via
    /// `rand`'s thread generator.
    pub fn generate() -> Self {
        let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes()));
        Self {
            hash: api_key_hash(&key),
            prefix: key.chars().take(API_KEY_DISPLAY_CHARS).collect(),
            key,
        }
    }
}

/// Whether a bearer token is an API key rather than a session token.
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

/// The stored form of a key: hex SHA-256. Keys carry 256 random bits, so a plain hash
/// (no salt, no stretching) is what makes lookup by hash possible and is still safe.
pub fn api_key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// `whsec_` + base64 of 32 random bytes, as the Standard Webhooks specification writes them.
pub fn new_webhook_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random_bytes()))
}

fn random_bytes() -> [u8; SECRET_BYTES] {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_its_prefix_enough_randomness_and_a_hash_that_is_not_the_key() {
        let key = NewApiKey::generate();
        assert!(is_api_key(&key.key));
        assert_eq!(key.prefix.len(), 12);
        assert!(key.key.starts_with(&key.prefix));
        let random = URL_SAFE_NO_PAD
            .decode(&key.key[API_KEY_PREFIX.len()..])
            .unwrap();
        assert_eq!(random.len(), 32);
        assert_eq!(key.hash, api_key_hash(&key.key));
        assert!(!key.hash.contains(&key.key[4..]));
        assert_ne!(NewApiKey::generate().key, key.key);
        assert!(!format!("{key:?}").contains(&key.key));
    }

    #[test]
    fn a_webhook_secret_is_32_random_bytes_in_base64() {
        let secret = new_webhook_secret();
        let bytes = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }
}
