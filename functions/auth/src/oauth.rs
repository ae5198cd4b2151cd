//! The authorization-code flow with PKCE for Google and Facebook, and the short-lived,
//! MAC'd `nb_oauth` cookie that carries its state between login and callback.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, Secret};
use shared::session::SessionKeys;

/// The cookie's lifetime: long enough to sign in, short enough to be useless later.
pub const STATE_TTL: Duration = Duration::from_secs(600);
const COOKIE_LABEL: &str = "nb_oauth";

/// Google or Facebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Google,
    Facebook,
}

impl Provider {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "google" => Some(Self::Google),
            "facebook" => Some(Self::Facebook),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Facebook => "facebook",
        }
    }
}

/// The `id_token` Google adds to its token response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdTokenField {
    #[serde(default)]
    pub id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

pub type TokenAnswer = StandardTokenResponse<IdTokenField, BasicTokenType>;

type Client = oauth2::Client<
    BasicErrorResponse,
    TokenAnswer,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// One provider's OAuth endpoints and credentials.
pub struct OAuthProvider {
    pub provider: Provider,
    pub client_id: String,
    client: Client,
}

impl OAuthProvider {
    pub fn new(
        provider: Provider,
        client_id: String,
        secret: &Secret,
        auth_url: &str,
        token_url: &str,
        redirect_url: String,
    ) -> Result<Self, ConfigError> {
        let bad = |what: &str, e: url::ParseError| {
            ConfigError(format!("{} {what}: {e}", provider.as_str()))
        };
        let client = oauth2::Client::new(ClientId::new(client_id.clone()))
            .set_client_secret(ClientSecret::new(secret.expose().to_string()))
            .set_auth_uri(
                AuthUrl::new(auth_url.to_string()).map_err(|e| bad("authorization URL", e))?,
            )
            .set_token_uri(TokenUrl::new(token_url.to_string()).map_err(|e| bad("token URL", e))?)
            .set_redirect_uri(RedirectUrl::new(redirect_url).map_err(|e| bad("redirect URL", e))?);
        Ok(Self {
            provider,
            client_id,
            client,
        })
    }

    /// Where to send the browser, and the state to remember in the cookie.
    pub fn authorize(&self, redirect_to: &str) -> (url::Url, LoginState) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = CsrfToken::new_random().secret().clone();
        let mut request = self
            .client
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge);
        request = match self.provider {
            Provider::Google => request
                .add_scope(Scope::new("openid".into()))
                .add_scope(Scope::new("email".into()))
                .add_scope(Scope::new("profile".into()))
                .add_extra_param("nonce", nonce.clone()),
            Provider::Facebook => request
                .add_scope(Scope::new("email".into()))
                .add_scope(Scope::new("public_profile".into())),
        };
        let (url, state) = request.url();
        let expires = time::OffsetDateTime::now_utc().unix_timestamp() + STATE_TTL.as_secs() as i64;
        let login = LoginState {
            provider: self.provider,
            state: state.secret().clone(),
            verifier: verifier.secret().clone(),
            nonce,
            redirect_to: redirect_to.to_string(),
            expires,
        };
        (url, login)
    }

    /// Exchanges the code (with the PKCE verifier) for tokens.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        code: &str,
        verifier: &str,
    ) -> Result<TokenAnswer, String> {
        let http = http.clone();
        let send = move |request: oauth2::HttpRequest| {
            let http = http.clone();
            async move {
                let (parts, body) = request.into_parts();
                let response = http
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await?;
                let mut builder = http::Response::builder().status(response.status());
                for (name, value) in response.headers() {
                    builder = builder.header(name, value);
                }
                let body = response.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>(
                    builder
                        .body(body)
                        .expect("status and headers come from a response"),
                )
            }
        };
        self.client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&send)
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::ServerResponse(r) => {
                    format!("the provider refused the code: {}", r.error())
                }
                other => format!("the token exchange failed: {other}"),
            })
    }
}

/// What the login remembers for the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub provider: Provider,
    pub state: String,
    pub verifier: String,
    pub nonce: String,
    pub redirect_to: String,
    pub expires: i64,
}

impl LoginState {
    /// `base64(json).base64(mac)`: the browser keeps it, nobody can forge or alter it.
    pub fn seal(&self, keys: &SessionKeys) -> String {
        let json = serde_json::to_vec(self).expect("login state serializes");
        let tag = keys.mac(COOKIE_LABEL, &json);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The state if the cookie is ours, intact and unexpired.
    pub fn open(cookie: &str, keys: &SessionKeys) -> Option<Self> {
        let (body, tag) = cookie.split_once('.')?;
        let json = URL_SAFE_NO_PAD.decode(body).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !keys.verify_mac(COOKIE_LABEL, &json, &tag) {
            return None;
        }
        let state: Self = serde_json::from_slice(&json).ok()?;
        (state.expires > time::OffsetDateTime::now_utc().unix_timestamp()).then_some(state)
    }
}

/// The access token of a token answer.
pub fn access_token(answer: &TokenAnswer) -> &str {
    answer.access_token().secret()
}
