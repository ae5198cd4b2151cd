//! Google ID tokens: RS256 signatures by a key from Google's JWKS, chosen by `kid`.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use shared::outbound::LazyClient;
use tokio::sync::RwLock;

/// Both spellings Google uses for its issuer.
const ISSUERS: &[&str] = &["https://accounts.google.com", "accounts.google.com"];
/// Unknown `kid`s refetch the keys at most this often: a flood of forged tokens must not
/// become a flood of requests to Google.
const REFRESH_FLOOR: Duration = Duration::from_secs(60);

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is invalid: {0}")]
    Invalid(String),
    #[error("Google's keys could not be fetched: {0}")]
    KeysUnavailable(String),
}

/// The claims we use from a verified ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct GoogleClaims {
    pub sub: String,
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    pub name: Option<String>,
    pub picture: Option<String>,
    pub nonce: Option<String>,
}

/// Google's signing keys, fetched once and kept across invocations.
pub struct Jwks {
    url: String,
    http: LazyClient,
    cache: RwLock<Option<(JwkSet, Instant)>>,
}

impl Jwks {
    pub fn new(url: String, http: LazyClient) -> Self {
        Self {
            url,
            http,
            cache: RwLock::new(None),
        }
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, IdTokenError> {
        if let Some(key) = self.cached(kid).await? {
            return Ok(key);
        }
        {
            let cache = self.cache.read().await;
            if let Some((_, fetched)) = cache.as_ref()
                && fetched.elapsed() < REFRESH_FLOOR
            {
                return Err(IdTokenError::Invalid(format!("unknown key id {kid:?}")));
            }
        }
        let set: JwkSet = self
            .http
            .get()
            .map_err(|e| IdTokenError::KeysUnavailable(format!("{:#}", anyhow::Error::from(e))))?
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| IdTokenError::KeysUnavailable(e.to_string()))?
            .json()
            .await
            .map_err(|e| IdTokenError::KeysUnavailable(e.to_string()))?;
        *self.cache.write().await = Some((set, Instant::now()));
        self.cached(kid)
            .await?
            .ok_or_else(|| IdTokenError::Invalid(format!("unknown key id {kid:?}")))
    }

    async fn cached(&self, kid: &str) -> Result<Option<DecodingKey>, IdTokenError> {
        let cache = self.cache.read().await;
        let Some(jwk) = cache.as_ref().and_then(|(set, _)| set.find(kid)) else {
            return Ok(None);
        };
        DecodingKey::from_jwk(jwk)
            .map(Some)
            .map_err(|e| IdTokenError::Invalid(format!("unusable key: {e}")))
    }

    /// Verifies signature (RS256 only), issuer, audience and expiry; and the nonce when
    /// one is expected.
    pub async fn verify(
        &self,
        token: &str,
        client_id: &str,
        nonce: Option<&str>,
    ) -> Result<GoogleClaims, IdTokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| IdTokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(IdTokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| IdTokenError::Invalid("no key id".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(ISSUERS);
        validation.set_audience(&[client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<GoogleClaims>(token, &key, &validation)
            .map_err(|e| IdTokenError::Invalid(e.to_string()))?
            .claims;
        if let Some(expected) = nonce
            && claims.nonce.as_deref() != Some(expected)
        {
            return Err(IdTokenError::Invalid("nonce mismatch".into()));
        }
        Ok(claims)
    }
}
