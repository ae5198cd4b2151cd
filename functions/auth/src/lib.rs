//! Function `auth`: sign-in (Google, Facebook, Google One Tap, local dev sign-in),
//! sessions and the account (`/auth/*`, `/v1/me*`).

pub mod credentials;
pub mod deletion;
pub mod google;
pub mod oauth;
pub mod security_log;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use shared::Services;
use shared::aws::dynamo::{SignIn, StoreError};
use shared::aws::secrets::Secrets;
use shared::config::{ConfigError, Secret};
use shared::domain::audit::Origin;
use shared::domain::ledger::LedgerEntry;
use shared::domain::user::{Me, Profile, User};
use shared::http::{
    ApiError, CurrentUser, FieldError, JsonBody, Page, RequestOrigin, SessionToken,
};
use shared::outbound::LazyClient;

use crate::google::Jwks;
use crate::oauth::{LoginState, OAuthProvider, Provider};

/// The secrets this function reads (besides the session key): the sign-in providers',
/// and the payment providers' API keys (account deletion cancels subscriptions).
pub const SECRET_NAMES: &[&str] = &[
    "GOOGLE_CLIENT_SECRET",
    "FACEBOOK_APP_SECRET",
    "STRIPE_SECRET_KEY",
    "CREEM_API_KEY",
];

/// Sign-in configuration and clients, built once at cold start.
pub struct AuthContext {
    google: Option<OAuthProvider>,
    facebook: Option<OAuthProvider>,
    /// Google's client id, for One Tap (which needs no secret).
    google_client_id: Option<String>,
    facebook_graph_url: String,
    facebook_secret: Option<Secret>,
    jwks: Jwks,
    http: LazyClient,
    /// Cancels a deleted account's subscriptions.
    pub billing: shared::payments::billing::Billing,
}

impl AuthContext {
    /// Reads the provider settings (`GOOGLE_*`, `FACEBOOK_*`, `PUBLIC_API_URL`); a provider
    /// with an id but no secret (or the reverse) is a configuration error.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        secrets: &mut Secrets,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let or = |name: &str, default: &str| get(name).unwrap_or_else(|| default.to_string());
        let http = LazyClient::new(std::time::Duration::from_secs(10));
        let billing = shared::payments::billing::Billing::from_lookup(&lookup, secrets)?;
        let redirect_url = |provider: Provider| -> Result<String, ConfigError> {
            let base = get("PUBLIC_API_URL").ok_or_else(|| {
                ConfigError(
                    "PUBLIC_API_URL is not set (the API's public URL, for OAuth redirect URIs)"
                        .into(),
                )
            })?;
            Ok(format!(
                "{}/auth/{}/callback",
                base.trim_end_matches('/'),
                provider.as_str()
            ))
        };
        let pair = |id: &str,
                    secret: &str,
                    secrets: &mut Secrets|
         -> Result<Option<(String, Secret)>, ConfigError> {
            match (get(id), secrets.take(secret)) {
                (Some(id), Some(secret)) => Ok(Some((id, secret))),
                (None, None) => Ok(None),
                (Some(_), None) => Err(ConfigError(format!("{id} is set but {secret} is not"))),
                (None, Some(_)) => Err(ConfigError(format!("{secret} is set but {id} is not"))),
            }
        };
        let google = match pair("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", secrets)? {
            Some((id, secret)) => Some(OAuthProvider::new(
                Provider::Google,
                id,
                &secret,
                &or(
                    "GOOGLE_AUTH_URL",
                    "https://accounts.google.com/o/oauth2/v2/auth",
                ),
                &or("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token"),
                redirect_url(Provider::Google)?,
            )?),
            None => None,
        };
        let (facebook, facebook_secret) =
            match pair("FACEBOOK_APP_ID", "FACEBOOK_APP_SECRET", secrets)? {
                Some((id, secret)) => (
                    Some(OAuthProvider::new(
                        Provider::Facebook,
                        id,
                        &secret,
                        &or(
                            "FACEBOOK_AUTH_URL",
                            "https://www.facebook.com/v19.0/dialog/oauth",
                        ),
                        &or(
                            "FACEBOOK_TOKEN_URL",
                            "https://graph.facebook.com/v19.0/oauth/access_token",
                        ),
                        redirect_url(Provider::Facebook)?,
                    )?),
                    Some(secret),
                ),
                None => (None, None),
            };
        Ok(Self {
            google,
            facebook,
            google_client_id: get("GOOGLE_CLIENT_ID"),
            facebook_graph_url: or("FACEBOOK_GRAPH_URL", "https://graph.facebook.com/v19.0"),
            facebook_secret,
            jwks: Jwks::new(
                or(
                    "GOOGLE_JWKS_URL",
                    "https://www.googleapis.com/oauth2/v3/certs",
                ),
                http.clone(),
            ),
            http,
            billing,
        })
    }

    fn provider(&self, provider: Provider) -> Option<&OAuthProvider> {
        match provider {
            Provider::Google => self.google.as_ref(),
            Provider::Facebook => self.facebook.as_ref(),
        }
    }
}

/// This function's routes, without the shared layers (the local runner merges them).
pub fn routes(auth: Arc<AuthContext>) -> Router<Arc<Services>> {
    Router::new()
        .route("/auth/providers", get(sign_in_options))
        .route("/auth/dev/login", post(dev_login))
        .route("/auth/google/one-tap", post(one_tap))
        .route("/auth/{provider}/login", get(login))
        .route("/auth/{provider}/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/v1/me", get(me).delete(delete_account))
        .route("/v1/me/ledger", get(ledger))
        .merge(credentials::routes())
        .merge(security_log::routes())
        .layer(Extension(auth))
}

/// The complete router the Lambda serves.
pub fn router(services: Arc<Services>, auth: Arc<AuthContext>) -> Router {
    shared::http::service(routes(auth)).with_state(services)
}

#[derive(Serialize)]
struct SignedIn {
    token: String,
    user: Me,
}

fn sign_in_request(
    services: &Services,
    provider: &str,
    subject: String,
    profile: Profile,
    origin: Origin,
) -> SignIn {
    SignIn {
        provider: provider.to_string(),
        subject,
        profile,
        bonus: services.settings.signup_bonus_credits,
        // The address caps the signup bonuses of one place per day.
        bonus_limit: origin
            .ip
            .clone()
            .map(|ip| (ip, services.settings.signup_bonus_per_ip_per_day)),
        origin,
    }
}

async fn signed_in(services: &Services, sign_in: SignIn) -> Result<User, ApiError> {
    let (user, created) = services.store.sign_in(&sign_in).await?;
    if created {
        tracing::info!(user_id = %user.id, provider = %sign_in.provider, "user signed up");
        shared::metrics::count("SignUps", 1, &[("Provider", &sign_in.provider)]);
        if user.credits > 0 {
            shared::metrics::count(
                "CreditsGranted",
                user.credits as u64,
                &[("Reason", "signup_bonus")],
            );
        }
    }
    Ok(user)
}

#[derive(Serialize)]
struct SignInOption {
    id: &'static str,
    available: bool,
}

#[derive(Serialize)]
struct SignInOptions {
    items: [SignInOption; 3],
}

/// Which ways of signing in this deployment offers, so a client shows only those that
/// work (instead of probing routes that answer 503 or 404).
async fn sign_in_options(
    State(services): State<Arc<Services>>,
    Extension(auth): Extension<Arc<AuthContext>>,
) -> Json<SignInOptions> {
    let option = |id, available| SignInOption { id, available };
    Json(SignInOptions {
        items: [
            option("google", auth.google.is_some()),
            option("facebook", auth.facebook.is_some()),
            option("dev", services.settings.dev_login),
        ],
    })
}

#[derive(Deserialize)]
struct DevLogin {
    email: String,
    name: Option<String>,
}

/// Local sign-in by email alone: only where `AUTH_DEV_LOGIN=1` (never deployed).
async fn dev_login(
    State(services): State<Arc<Services>>,
    RequestOrigin(origin): RequestOrigin,
    JsonBody(body): JsonBody<DevLogin>,
) -> Result<Json<SignedIn>, ApiError> {
    if !services.settings.dev_login {
        return Err(ApiError::NotFound);
    }
    let email = body.email.trim().to_ascii_lowercase();
    let mut errors = Vec::new();
    let valid_email = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if !valid_email {
        errors.push(FieldError::new("email", "must be an email address"));
    }
    let name = match body.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => email.split('@').next().unwrap_or_default().to_string(),
    };
    if name.chars().count() > 100 {
        errors.push(FieldError::new("name", "must be at most 100 characters"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let profile = Profile {
        email: Some(email.clone()),
        name,
        avatar_url: None,
    };
    let user = signed_in(
        &services,
        sign_in_request(&services, "dev", email, profile, origin),
    )
    .await?;
    let token = services.sessions.issue(user.id, user.session_version);
    Ok(Json(SignedIn {
        token,
        user: user.into(),
    }))
}

#[derive(Deserialize)]
struct LoginQuery {
    redirect_to: Option<String>,
}

fn provider_of<'a>(
    name: &str,
    auth: &'a AuthContext,
) -> Result<(Provider, &'a OAuthProvider), ApiError> {
    let provider = Provider::parse(name).ok_or(ApiError::NotFound)?;
    let configured = auth
        .provider(provider)
        .ok_or_else(|| ApiError::Unavailable(format!("sign-in with {name} is not configured")))?;
    Ok((provider, configured))
}

/// Starts the authorization-code flow: 302 to the provider, state in `nb_oauth`.
async fn login(
    State(services): State<Arc<Services>>,
    Extension(auth): Extension<Arc<AuthContext>>,
    Path(provider): Path<String>,
    Query(query): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let (_, client) = provider_of(&provider, &auth)?;
    let redirect_to = query
        .redirect_to
        .filter(|url| services.settings.app_origins.allows_url(url))
        .ok_or_else(|| {
            ApiError::invalid("redirect_to must be an absolute URL on one of the app's origins")
        })?;
    let (url, state) = client.authorize(&redirect_to);
    let cookie = format!(
        "nb_oauth={}; Max-Age={}; Path=/auth; HttpOnly; Secure; SameSite=Lax",
        state.seal(&services.sessions),
        oauth::STATE_TTL.as_secs()
    );
    Ok(redirect(url.as_str(), &[cookie]))
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

const CLEAR_OAUTH: &str = "nb_oauth=; Max-Age=0; Path=/auth; HttpOnly; Secure; SameSite=Lax";

/// Verifies the state, exchanges the code, reads the profile, finds or creates the user,
/// and sends the browser back with its session cookie.
async fn callback(
    State(services): State<Arc<Services>>,
    Extension(auth): Extension<Arc<AuthContext>>,
    Path(provider): Path<String>,
    Query(query): Query<CallbackQuery>,
    RequestOrigin(origin): RequestOrigin,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (provider, client) = provider_of(&provider, &auth)?;
    let bad_state = || {
        ApiError::invalid("the sign-in state is missing, expired or does not match; start again")
    };
    let login = cookie(&headers, "nb_oauth")
        .and_then(|c| LoginState::open(c, &services.sessions))
        .filter(|l| l.provider == provider)
        .ok_or_else(bad_state)?;
    if let Some(error) = query.error {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        let target = with_query(&login.redirect_to, "auth_error", &code);
        return Ok(redirect(&target, &[CLEAR_OAUTH.to_string()]));
    }
    let state_matches = query.state.as_deref().is_some_and(|s| {
        subtle::ConstantTimeEq::ct_eq(s.as_bytes(), login.state.as_bytes()).into()
    });
    if !state_matches {
        return Err(bad_state());
    }
    let code = query
        .code
        .ok_or_else(|| ApiError::invalid("the callback carries no code"))?;
    let http = auth.http.get().map_err(|e| ApiError::Upstream(e.into()))?;
    let tokens = client
        .exchange(http, &code, &login.verifier)
        .await
        .map_err(|e| {
            tracing::warn!(
                provider = provider.as_str(),
                error = e,
                "code exchange refused"
            );
            ApiError::invalid("the provider did not accept the sign-in; start again")
        })?;
    let (subject, profile) = match provider {
        Provider::Google => {
            let id_token = tokens
                .extra_fields()
                .id_token
                .as_deref()
                .ok_or_else(|| ApiError::invalid("Google sent no ID token"))?;
            google_identity(&auth, client, id_token, Some(&login.nonce)).await?
        }
        Provider::Facebook => facebook_identity(&auth, oauth::access_token(&tokens)).await?,
    };
    // Single use: a replayed callback finds its state consumed and changes nothing.
    match services
        .store
        .consume_once(&format!("OAUTH#{}", login.state), login.expires)
        .await
    {
        Ok(()) => {}
        Err(StoreError::AlreadyApplied) => return Err(bad_state()),
        Err(e) => return Err(e.into()),
    }
    let user = signed_in(
        &services,
        sign_in_request(&services, provider.as_str(), subject, profile, origin),
    )
    .await?;
    let token = services.sessions.issue(user.id, user.session_version);
    let session = session_cookie(&token, services.sessions.ttl().as_secs());
    Ok(redirect(
        &login.redirect_to,
        &[session, CLEAR_OAUTH.to_string()],
    ))
}

async fn google_identity(
    auth: &AuthContext,
    client: &OAuthProvider,
    id_token: &str,
    nonce: Option<&str>,
) -> Result<(String, Profile), ApiError> {
    let claims = auth
        .jwks
        .verify(id_token, &client.client_id, nonce)
        .await
        .map_err(|e| match e {
            google::IdTokenError::Invalid(reason) => {
                tracing::warn!(reason, "Google ID token refused");
                ApiError::invalid("the Google ID token is not valid")
            }
            google::IdTokenError::KeysUnavailable(reason) => {
                ApiError::Upstream(anyhow::anyhow!(reason))
            }
        })?;
    // An unverified address is not the user's to claim.
    let email = claims.email.filter(|_| claims.email_verified);
    let name = claims
        .name
        .or_else(|| {
            email
                .as_ref()
                .and_then(|e| e.split('@').next().map(str::to_string))
        })
        .unwrap_or_else(|| "Google user".into());
    Ok((
        claims.sub,
        Profile {
            email,
            name,
            avatar_url: claims.picture,
        },
    ))
}

#[derive(Deserialize)]
struct FacebookMe {
    id: String,
    name: Option<String>,
    email: Option<String>,
    picture: Option<serde_json::Value>,
}

async fn facebook_identity(
    auth: &AuthContext,
    access_token: &str,
) -> Result<(String, Profile), ApiError> {
    use hmac::Mac;
    let secret = auth.facebook_secret.as_ref().ok_or(ApiError::NotFound)?;
    // appsecret_proof: the token alone, if stolen, cannot call the Graph API as us.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("any key length");
    mac.update(access_token.as_bytes());
    let proof: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = auth
        .http
        .get()
        .map_err(|e| ApiError::Upstream(e.into()))?
        .get(format!("{}/me", auth.facebook_graph_url))
        .query(&[
            ("fields", "id,name,email,picture"),
            ("access_token", access_token),
            ("appsecret_proof", proof.as_str()),
        ])
        .send()
        .await
        .map_err(|e| {
            ApiError::Upstream(anyhow::anyhow!("Facebook Graph API: {}", e.without_url()))
        })?;
    if !response.status().is_success() {
        return Err(ApiError::Upstream(anyhow::anyhow!(
            "Facebook Graph API answered {}",
            response.status()
        )));
    }
    let me: FacebookMe = response.json().await.map_err(|e| {
        ApiError::Upstream(anyhow::anyhow!("Facebook Graph API: {}", e.without_url()))
    })?;
    let avatar_url = me
        .picture
        .as_ref()
        .and_then(|p| p.pointer("/data/url"))
        .and_then(|u| u.as_str())
        .map(str::to_string);
    Ok((
        me.id,
        Profile {
            email: me.email,
            name: me.name.unwrap_or_else(|| "Facebook user".into()),
            avatar_url,
        },
    ))
}

#[derive(Deserialize)]
struct OneTap {
    credential: String,
}

/// Google One Tap: the same ID-token verification; answers a token (no cookie).
async fn one_tap(
    State(services): State<Arc<Services>>,
    Extension(auth): Extension<Arc<AuthContext>>,
    RequestOrigin(origin): RequestOrigin,
    JsonBody(body): JsonBody<OneTap>,
) -> Result<Json<SignedIn>, ApiError> {
    let client_id = auth
        .google_client_id
        .as_deref()
        .ok_or_else(|| ApiError::Unavailable("sign-in with Google is not configured".into()))?;
    let client = auth
        .google
        .as_ref()
        .filter(|c| c.client_id == client_id)
        .ok_or_else(|| ApiError::Unavailable("sign-in with Google is not configured".into()))?;
    let (subject, profile) = google_identity(&auth, client, &body.credential, None).await?;
    let user = signed_in(
        &services,
        sign_in_request(&services, "google", subject, profile, origin),
    )
    .await?;
    let token = services.sessions.issue(user.id, user.session_version);
    Ok(Json(SignedIn {
        token,
        user: user.into(),
    }))
}

fn session_cookie(token: &str, max_age: u64) -> String {
    format!("nb_session={token}; Max-Age={max_age}; Path=/; HttpOnly; Secure; SameSite=Lax")
}

const CLEAR_SESSION: &str = "nb_session=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Lax";

fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.query_pairs_mut().append_pair(key, value);
            parsed.to_string()
        }
        Err(_) => url.to_string(),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Revokes every session of the user (older tokens get 401 everywhere) and clears the cookie.
async fn logout(
    State(services): State<Arc<Services>>,
    SessionToken(claims): SessionToken,
    RequestOrigin(origin): RequestOrigin,
) -> Result<impl IntoResponse, ApiError> {
    services
        .store
        .revoke_sessions(claims.user_id, claims.session_version, &origin)
        .await?;
    tracing::info!(user_id = %claims.user_id, "sessions revoked");
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, CLEAR_SESSION)],
    ))
}

/// The profile, with what will expire: the ledger is read only for a user some of whose
/// credits may expire.
async fn me(
    State(services): State<Arc<Services>>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Me>, ApiError> {
    let expiring = services.store.expiring_credits(&user).await?;
    Ok(Json(Me::with_expiring(user, &expiring)))
}

/// Deletes the account (see [`deletion`]): marked deleted and every session revoked in one
/// write, then its subscriptions canceled, open generations refunded, images, uploads and
/// items removed; ledger and payment records stay without personal data. A retry by the
/// same session continues a deletion that did not finish.
async fn delete_account(
    State(services): State<Arc<Services>>,
    Extension(auth): Extension<Arc<AuthContext>>,
    SessionToken(claims): SessionToken,
    RequestOrigin(origin): RequestOrigin,
) -> Result<impl IntoResponse, ApiError> {
    deletion::delete_account(
        &services,
        &auth.billing,
        claims.user_id,
        claims.session_version,
        &origin,
    )
    .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, CLEAR_SESSION)],
    ))
}

#[derive(Serialize)]
struct List<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

async fn ledger(
    State(services): State<Arc<Services>>,
    CurrentUser(user): CurrentUser,
    page: Page,
) -> Result<Json<List<LedgerEntry>>, ApiError> {
    let (items, next_cursor) = services
        .store
        .ledger_page(user.id, page.limit, page.cursor.as_deref())
        .await?;
    Ok(Json(List { items, next_cursor }))
}
