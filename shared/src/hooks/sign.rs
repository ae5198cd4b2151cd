//! Signatures as the Standard Webhooks specification defines them: `v1,` + base64 of
//! HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the secret's
//! bytes (the base64 after `whsec_`). Several signatures travel space-separated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret is not `whsec_` + base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret must be whsec_ followed by base64")]
pub struct BadSecret;

/// One `v1,<signature>` of `body` sent as message `id` at `timestamp` (unix seconds).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| BadSecret)?;
    if key.is_empty() {
        return Err(BadSecret);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header: one signature per secret (the current one first, and
/// during a rotation's overlap the previous one), space-separated.
pub fn signature_header(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let signatures = secrets
        .iter()
        .map(|secret| sign(secret, id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's own vector (its reference libraries' "sign function works").
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_signer_reproduces_the_specifications_test_vector() {
        assert_eq!(sign(SECRET, ID, TIMESTAMP, BODY).unwrap(), EXPECTED);
        // The prefix is optional in the specification's libraries too.
        assert_eq!(sign(&SECRET[6..], ID, TIMESTAMP, BODY).unwrap(), EXPECTED);
    }

    #[test]
    fn any_change_to_id_time_or_body_changes_the_signature() {
        assert_ne!(
            sign(SECRET, "msg_other", TIMESTAMP, BODY).unwrap(),
            EXPECTED
        );
        assert_ne!(sign(SECRET, ID, TIMESTAMP + 1, BODY).unwrap(), EXPECTED);
        assert_ne!(sign(SECRET, ID, TIMESTAMP, b"{}").unwrap(), EXPECTED);
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_space_separated() {
        let other = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkhIQ==";
        let header = signature_header(&[other, SECRET], ID, TIMESTAMP, BODY).unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], EXPECTED);
        assert!(parts[0].starts_with("v1,") && parts[0] != EXPECTED);
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused() {
        assert_eq!(sign("whsec_***", ID, TIMESTAMP, BODY), Err(BadSecret));
        assert_eq!(sign("whsec_", ID, TIMESTAMP, BODY), Err(BadSecret));
    }
}
