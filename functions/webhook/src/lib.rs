//! Function `webhook`: products, checkout, billing portal and the payment providers'
//! webhooks (`/v1/products`, `/v1/checkout`, `/v1/billing/portal`, `/webhooks/*`).

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use shared::Services;
use shared::aws::dynamo::payments::EventOutcome;
use shared::domain::audit::{AuditAction, AuditRecord};
use shared::domain::products::{self, PRODUCTS, Product, ProductKind};
use shared::http::{ApiError, FieldError, JsonBody, MAX_BODY_BYTES, RequestOrigin, SessionUser};
use shared::payments::{
    CheckoutRequest, CheckoutSession, ParseError, PaymentEvent, Payments, Provider, ProviderError,
    VerifyError,
};
use time::OffsetDateTime;

/// This function's routes, without the shared layers (the local runner merges them).
/// The payment providers come from [`with_payments`]; without it every provider is
/// disabled (checkout and webhooks answer 503, the catalog still lists).
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/products", get(products))
        .route("/v1/checkout", post(checkout))
        .route("/v1/billing/portal", post(billing_portal))
        .route("/webhooks/stripe", post(stripe_webhook))
        .route("/webhooks/creem", post(creem_webhook))
}

/// The complete router the Lambda serves.
pub fn router(services: Arc<Services>, payments: Arc<Payments>) -> Router {
    with_payments(
        shared::http::service(routes()).with_state(services),
        payments,
    )
}

/// Lends the configured payment providers to this function's routes in `router`.
pub fn with_payments(router: Router, payments: Arc<Payments>) -> Router {
    router.layer(Extension(payments))
}

static DISABLED: LazyLock<Arc<Payments>> = LazyLock::new(|| Arc::new(Payments::disabled()));

/// The configured providers (none where the router was built without them).
struct PaymentProviders(Arc<Payments>);

impl<S: Send + Sync> FromRequestParts<S> for PaymentProviders {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(
            parts
                .extensions
                .get::<Arc<Payments>>()
                .cloned()
                .unwrap_or_else(|| DISABLED.clone()),
        ))
    }
}

#[derive(Serialize)]
struct ProductView {
    #[serde(flatten)]
    product: &'static Product,
    /// The configured providers that sell it here: a client offers only these.
    providers: Vec<Provider>,
}

#[derive(Serialize)]
struct Products {
    items: Vec<ProductView>,
}

async fn products(PaymentProviders(payments): PaymentProviders) -> Json<Products> {
    let items = PRODUCTS
        .iter()
        .map(|product| ProductView {
            product,
            providers: [
                (
                    Provider::Stripe,
                    payments.stripe.as_ref().map(|s| s.offers(product.id)),
                ),
                (
                    Provider::Creem,
                    payments.creem.as_ref().map(|c| c.offers(product.id)),
                ),
            ]
            .into_iter()
            .filter_map(|(provider, offered)| (offered == Some(true)).then_some(provider))
            .collect(),
        })
        .collect();
    Json(Products { items })
}

fn not_configured(provider: Provider) -> ApiError {
    ApiError::Unavailable(format!("payments through {provider} are not configured"))
}

fn provider_failed(error: ProviderError) -> ApiError {
    match error {
        ProviderError::NotOffered(detail) => ApiError::Unavailable(detail),
        ProviderError::Upstream(cause) => ApiError::Upstream(cause),
    }
}

#[derive(Deserialize)]
struct NewCheckout {
    product_id: String,
    provider: String,
    success_url: Option<String>,
    cancel_url: Option<String>,
}

#[derive(Serialize)]
struct CheckoutView {
    provider: Provider,
    session_id: String,
    url: String,
}

/// A hosted checkout of one product through one provider, for the signed-in user.
async fn checkout(
    State(services): State<Arc<Services>>,
    PaymentProviders(payments): PaymentProviders,
    SessionUser(user): SessionUser,
    RequestOrigin(origin): RequestOrigin,
    JsonBody(body): JsonBody<NewCheckout>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let product = products::product(&body.product_id);
    if product.is_none() {
        errors.push(FieldError::new("product_id", "no such product"));
    }
    let provider = Provider::parse(&body.provider);
    if provider.is_none() {
        errors.push(FieldError::new("provider", "must be stripe or creem"));
    }
    let origins = &services.settings.app_origins;
    let mut url = |field: &str, given: Option<String>| match given {
        Some(url) if origins.allows_url(&url) => Some(url),
        Some(_) => {
            errors.push(FieldError::new(
                field,
                "must be on one of the app's origins",
            ));
            None
        }
        None => match origins.as_slice().first() {
            Some(origin) => Some(format!("{origin}/")),
            None => {
                errors.push(FieldError::new(
                    field,
                    "required (no app origin is configured)",
                ));
                None
            }
        },
    };
    let success_url = url("success_url", body.success_url);
    let cancel_url = url("cancel_url", body.cancel_url);
    let (Some(product), Some(provider), Some(success_url), Some(cancel_url), true) = (
        product,
        provider,
        success_url,
        cancel_url,
        errors.is_empty(),
    ) else {
        return Err(ApiError::Validation(errors));
    };
    let offered = match provider {
        Provider::Stripe => payments.stripe.as_ref().map(|s| s.offers(product.id)),
        Provider::Creem => payments.creem.as_ref().map(|c| c.offers(product.id)),
    };
    match offered {
        None => return Err(not_configured(provider)),
        Some(false) => {
            return Err(ApiError::Unavailable(format!(
                "{} is not sold through {provider} here",
                product.id
            )));
        }
        Some(true) => {}
    }
    if product.kind == ProductKind::Subscription
        && user.subscription.as_ref().is_some_and(|s| s.is_active())
    {
        return Err(ApiError::Conflict {
            code: "already_subscribed",
            detail: "you already have an active subscription; manage it in the billing portal"
                .into(),
        });
    }
    let mut request = CheckoutRequest {
        user: user.id,
        email: user.email.clone(),
        product,
        success_url,
        cancel_url,
        customer_id: None,
    };
    let session: CheckoutSession = match (provider, &payments.stripe, &payments.creem) {
        (Provider::Stripe, Some(stripe), _) => {
            request.customer_id = services
                .store
                .payment_customer(user.id, Provider::Stripe)
                .await?;
            stripe.create_checkout(&request).await
        }
        (Provider::Creem, _, Some(creem)) => creem.create_checkout(&request).await,
        _ => return Err(not_configured(provider)),
    }
    .map_err(provider_failed)?;
    tracing::info!(%provider, product = product.id, "checkout created");
    // No write of ours starts a checkout: its entry is a write of its own, after the
    // provider made the session (a failed one leaves none).
    let entry = AuditRecord::by_user(
        AuditAction::CheckoutStarted,
        &origin,
        serde_json::json!({"provider": provider, "product": product.id, "session_id": session.session_id}),
    );
    services.store.append_audit(user.id, &entry).await?;
    let view = CheckoutView {
        provider,
        session_id: session.session_id,
        url: session.url,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Serialize)]
struct PortalView {
    url: String,
}

/// The provider's customer portal for the user's subscription (cancel, change the card,
/// invoices); 404 without one.
async fn billing_portal(
    State(services): State<Arc<Services>>,
    PaymentProviders(payments): PaymentProviders,
    SessionUser(user): SessionUser,
) -> Result<Response, ApiError> {
    let subscription = services
        .store
        .current_subscription(user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let customer = subscription.customer_id.ok_or(ApiError::NotFound)?;
    let return_url = services
        .settings
        .app_origins
        .as_slice()
        .first()
        .map(|o| format!("{o}/"));
    let url = match subscription.provider {
        Provider::Stripe => {
            let stripe = payments
                .stripe
                .as_ref()
                .ok_or_else(|| not_configured(Provider::Stripe))?;
            stripe.create_portal(&customer, return_url.as_deref()).await
        }
        Provider::Creem => {
            let creem = payments
                .creem
                .as_ref()
                .ok_or_else(|| not_configured(Provider::Creem))?;
            creem.create_portal(&customer).await
        }
    }
    .map_err(provider_failed)?;
    Ok((StatusCode::CREATED, Json(PortalView { url })).into_response())
}

#[derive(Serialize)]
struct Ack {
    received: bool,
}

/// The raw body, exactly as sent (what the signature covers); 413 over 1 MiB.
async fn raw_body(body: Body) -> Result<Bytes, ApiError> {
    Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge
            } else {
                ApiError::invalid("the request body could not be read")
            }
        })
}

fn signature_refused(provider: Provider, error: VerifyError) -> ApiError {
    tracing::warn!(%provider, reason = %error, "webhook refused: bad signature");
    count_event(provider, "refused");
    ApiError::invalid(format!("webhook signature refused: {error}"))
}

/// A verified event we cannot read: one naming a product no id is configured for is
/// parked for an operator and acknowledged (Stripe would retry it for days, Creem gives up
/// within a day and the payment would be lost to us); anything else is a 400.
async fn event_unreadable(
    services: &Services,
    provider: Provider,
    body: &[u8],
    error: ParseError,
) -> Result<Json<Ack>, ApiError> {
    match error {
        ParseError::UnknownProduct(unmapped) => {
            if services.store.park_event(provider, &unmapped, body).await?
                == EventOutcome::Duplicate
            {
                count_event(provider, "duplicate");
                return Ok(Json(Ack { received: true }));
            }
            tracing::error!(
                %provider,
                event_id = %unmapped.event_id,
                event_type = %unmapped.event_type,
                provider_product = %unmapped.provider_product,
                "webhook parked: no product is configured for its id; map it, then nb-admin events replay"
            );
            count_event(provider, "parked");
            Ok(Json(Ack { received: true }))
        }
        other => {
            tracing::warn!(%provider, reason = %other, "webhook refused: unreadable event");
            count_event(provider, "refused");
            Err(ApiError::invalid(other.to_string()))
        }
    }
}

fn count_event(provider: Provider, outcome: &str) {
    shared::metrics::count(
        "WebhookEvents",
        1,
        &[("Provider", provider.as_str()), ("Outcome", outcome)],
    );
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Applies a verified event once; a duplicate, an ignored type or an event kept for an
/// operator (unattributable, or a deleted account's) is acknowledged too. A failure of ours
/// is a 5xx.
async fn receive(
    services: &Services,
    payments: &Payments,
    event: PaymentEvent,
) -> Result<Json<Ack>, ApiError> {
    let outcome = services.store.apply_payment_event(&event).await?;
    if let EventOutcome::Held {
        cancel: Some(subscription),
    } = &outcome
    {
        cancel_for_deleted_account(payments, event.provider, subscription).await;
    }
    tracing::info!(
        provider = %event.provider,
        event_id = %event.id,
        event_type = %event.event_type,
        outcome = ?outcome,
        "webhook received"
    );
    let outcome = match outcome {
        EventOutcome::Applied => "applied",
        EventOutcome::Duplicate => "duplicate",
        EventOutcome::Ignored => "ignored",
        EventOutcome::Unattributed => "unattributed",
        EventOutcome::Parked => "parked",
        EventOutcome::Held { .. } => "deleted_account",
    };
    count_event(event.provider, outcome);
    Ok(Json(Ack { received: true }))
}

/// A subscription still billing a deleted account (one its deletion did not know of, such
/// as a checkout completed moments before): canceled at once. A failure is logged; the
/// event is kept for an operator either way.
async fn cancel_for_deleted_account(payments: &Payments, provider: Provider, subscription: &str) {
    let result = match provider {
        Provider::Stripe => match &payments.stripe {
            Some(stripe) => stripe.api().cancel_subscription(subscription).await,
            None => return,
        },
        Provider::Creem => match &payments.creem {
            Some(creem) => creem.api().cancel_subscription(subscription).await,
            None => return,
        },
    };
    match result {
        Ok(()) => tracing::warn!(%provider, "a deleted account's subscription canceled"),
        Err(e) => tracing::error!(
            %provider,
            error = format!("{:#}", anyhow::Error::new(e)),
            "could not cancel a deleted account's subscription: cancel it by hand"
        ),
    }
}

/// `POST /webhooks/stripe`: `Stripe-Signature` verified over the raw body first.
async fn stripe_webhook(
    State(services): State<Arc<Services>>,
    PaymentProviders(payments): PaymentProviders,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Ack>, ApiError> {
    let stripe = payments
        .stripe
        .as_ref()
        .ok_or_else(|| not_configured(Provider::Stripe))?;
    let body = raw_body(body).await?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    stripe
        .verify(header(&headers, "stripe-signature"), &body, now)
        .map_err(|e| signature_refused(Provider::Stripe, e))?;
    match stripe.parse_event(&body) {
        Ok(event) => receive(&services, &payments, event).await,
        Err(e) => event_unreadable(&services, Provider::Stripe, &body, e).await,
    }
}

/// `POST /webhooks/creem`: `creem-signature` verified over the raw body first; an event
/// of the other mode (test vs live) is refused.
async fn creem_webhook(
    State(services): State<Arc<Services>>,
    PaymentProviders(payments): PaymentProviders,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Ack>, ApiError> {
    let creem = payments
        .creem
        .as_ref()
        .ok_or_else(|| not_configured(Provider::Creem))?;
    let body = raw_body(body).await?;
    creem
        .verify(header(&headers, "creem-signature"), &body)
        .map_err(|e| signature_refused(Provider::Creem, e))?;
    match creem.parse_event(&body) {
        Ok(event) => receive(&services, &payments, event).await,
        Err(e) => event_unreadable(&services, Provider::Creem, &body, e).await,
    }
}
