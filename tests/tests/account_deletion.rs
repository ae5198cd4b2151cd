//! `DELETE /v1/me`: one write marks the account deleted and revokes its sessions, so that
//! nothing acts for it from then on (no token of any version, no key, no renewal, no
//! worker); then its subscriptions are canceled at the provider (asserted on the fakes),
//! its open generations finished with their refunds, its objects and items removed. A
//! deletion whose request died is finished by a retry or the sweep; the ledger still adds
//! up (`nb-admin reconcile`).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use e2e_tests::payments::*;
use e2e_tests::{request, send, worker_for};
use serde_json::{Value, json};
use shared::aws::dynamo::payments::HeldKind;
use shared::aws::sqs::GenerationJob;
use shared::domain::GenerationId;
use shared::providers::{ImageProvider, ImageRequest, ProviderError, Providers};
use tokio::sync::Notify;

async fn delete_me(pay: &Pay, token: &str) -> e2e_tests::Answer {
    send(
        &pay.router,
        request(Method::DELETE, "/v1/me", Some(token), None),
    )
    .await
}

/// A Stripe subscription (monthly, period 0 paid) and a Creem one, both active.
async fn subscribed_at_both(pay: &Pay) {
    let period = paid_period(&pay.user, "sub_del_stripe", "cus_del", 0);
    assert_received(&pay.stripe(&period.event("evt_s_p0", "invoice.paid")).await);
    let creem = creem_subscription(
        "evt_c_p0",
        "subscription.paid",
        (T0 + 60) * 1000,
        &pay.user,
        "active",
        0,
    );
    assert_received(&pay.creem(&creem).await);
    assert_eq!(pay.balance().await, 10 + 600 + 600);
}

async fn reconcile_is_clean(pay: &Pay) {
    let report = pay
        .admin(settings(&pay.base))
        .reconcile(2, 100, Duration::ZERO)
        .await
        .unwrap();
    assert!(report.users >= 1);
    assert_eq!(
        report.mismatches,
        vec![],
        "balance = sum of the ledger for everyone"
    );
}

#[tokio::test]
async fn deleting_the_account_cancels_its_stripe_and_creem_subscriptions_at_once_at_the_provider() {
    let pay = pay_stack("del-cancel").await;
    subscribed_at_both(&pay).await;

    let deleted = delete_me(&pay, &pay.token).await;

    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    let stripe = pay.seen("/v1/subscriptions/sub_del_stripe");
    assert_eq!(
        stripe.method,
        Method::DELETE,
        "canceled now, not at period end"
    );
    assert_eq!(
        stripe.header("authorization"),
        format!("Bearer {STRIPE_KEY}")
    );
    assert_eq!(stripe.header("stripe-version"), API_VERSION);
    assert_eq!(stripe.field("prorate"), None);
    assert_eq!(stripe.field("invoice_now"), None);
    let creem = pay.seen("/v1/subscriptions/sub_creem_1/cancel");
    assert_eq!(creem.method, Method::POST);
    assert_eq!(creem.header("x-api-key"), CREEM_KEY);
    let body: Value = serde_json::from_str(&creem.body).unwrap();
    assert_eq!(body, json!({"mode": "immediate"}));
    assert!(
        pay.stack
            .services
            .store
            .subscriptions_of(pay.user_id())
            .await
            .unwrap()
            .is_empty(),
        "its subscription items are gone"
    );
    reconcile_is_clean(&pay).await;
}

#[tokio::test]
async fn after_deletion_a_renewal_grants_nothing_and_is_kept_for_an_operator() {
    let pay = pay_stack("del-renewal").await;
    subscribed_at_both(&pay).await;
    assert_eq!(
        delete_me(&pay, &pay.token).await.status,
        StatusCode::NO_CONTENT
    );
    let balance = pay.stored_balance().await;

    let renewal =
        paid_period(&pay.user, "sub_del_stripe", "cus_del", 1).event("evt_s_p1", "invoice.paid");
    let answer = pay.stripe(&renewal).await;
    let again = pay.stripe(&renewal).await;
    let creem_renewal = creem_subscription(
        "evt_c_p1",
        "subscription.paid",
        (T0 + 31 * DAY) * 1000,
        &pay.user,
        "active",
        1,
    );
    let creem_answer = pay.creem(&creem_renewal).await;

    assert_received(&answer);
    assert_received(&again);
    assert_received(&creem_answer);
    assert_eq!(pay.stored_balance().await, balance, "nothing granted");
    assert_eq!(pay.ledger_sum().await, balance);
    let held = pay.stack.services.store.held_events(10).await.unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|h| h.kind == HeldKind::DeletedAccount));
    assert!(held.iter().all(|h| h.user_id == Some(pay.user_id())));
    reconcile_is_clean(&pay).await;
}

#[tokio::test]
async fn after_deletion_a_refund_or_dispute_of_its_payment_moves_no_balance_and_is_kept_for_an_operator()
 {
    let pay = pay_stack("del-refund").await;
    let buy = stripe_purchase(
        "evt_buy",
        &pay.user,
        "credits_100",
        "pi_del",
        "cus_del",
        999,
    );
    assert_received(&pay.stripe(&buy).await);
    assert_eq!(
        delete_me(&pay, &pay.token).await.status,
        StatusCode::NO_CONTENT
    );
    let balance = pay.stored_balance().await;

    assert_received(
        &pay.stripe(&stripe_refund("evt_refund", "pi_del", 999, 999))
            .await,
    );
    let dispute = stripe_dispute(
        "evt_dispute",
        "charge.dispute.created",
        "pi_del",
        999,
        "needs_response",
    );
    assert_received(&pay.stripe(&dispute).await);

    assert_eq!(pay.stored_balance().await, balance);
    let held = pay.stack.services.store.held_events(10).await.unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|h| h.kind == HeldKind::DeletedAccount));
    reconcile_is_clean(&pay).await;
}

#[tokio::test]
async fn after_deletion_a_token_of_any_version_or_an_api_key_is_refused_on_every_route() {
    let pay = pay_stack("del-refused").await;
    pay.stack.grant(&json!({"id": pay.user}), 100).await;
    let key = send(
        &pay.router,
        request(
            Method::POST,
            "/v1/api-keys",
            Some(&pay.token),
            Some(json!({"name": "ci"})),
        ),
    )
    .await;
    assert_eq!(key.status, StatusCode::CREATED, "{:?}", key.body);
    let key = key.body["key"].as_str().unwrap().to_string();
    let created = send(
        &pay.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&pay.token),
            Some(json!({"model": "nano-banana", "prompt": "before"})),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let generation = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        delete_me(&pay, &pay.token).await.status,
        StatusCode::NO_CONTENT
    );
    let balance = pay.stored_balance().await;
    let sessions = &pay.stack.services.sessions;
    let credentials = [
        pay.token.clone(),
        sessions.issue(pay.user_id(), 1),
        sessions.issue(pay.user_id(), 2),
        key,
    ];
    let generate = json!({"model": "nano-banana", "prompt": "after"});
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/me".into(), None),
        (Method::DELETE, "/v1/me".into(), None),
        (Method::GET, "/v1/me/ledger".into(), None),
        (Method::POST, "/auth/logout".into(), None),
        (
            Method::POST,
            "/v1/uploads".into(),
            Some(json!({"content_type": "image/png", "size_bytes": 100})),
        ),
        (Method::POST, "/v1/generations".into(), Some(generate)),
        (Method::GET, "/v1/generations".into(), None),
        (Method::GET, format!("/v1/generations/{generation}"), None),
        (
            Method::POST,
            format!("/v1/generations/{generation}/cancel"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/generations/{generation}"),
            None,
        ),
        (
            Method::POST,
            "/v1/checkout".into(),
            Some(json!({"product_id": "credits_100", "provider": "stripe"})),
        ),
        (Method::POST, "/v1/billing/portal".into(), None),
        (Method::GET, "/v1/api-keys".into(), None),
        (
            Method::POST,
            "/v1/api-keys".into(),
            Some(json!({"name": "again"})),
        ),
        (Method::GET, "/v1/webhook-secret".into(), None),
    ];

    for credential in &credentials {
        for (method, path, body) in &routes {
            let answer = send(
                &pay.router,
                request(method.clone(), path, Some(credential), body.clone()),
            )
            .await;
            assert!(
                matches!(
                    answer.status,
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                ),
                "{method} {path} answered {} {:?}",
                answer.status,
                answer.body
            );
        }
    }
    assert_eq!(pay.stored_balance().await, balance, "nothing was spent");
    assert!(pay.fakes.seen("/v1/checkout/sessions").is_none());
}

/// A provider that starts an image, waits to be let go, then returns one.
struct Gated {
    started: Notify,
    release: Notify,
}

#[async_trait::async_trait]
impl ImageProvider for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }

    async fn generate(&self, _: &ImageRequest<'_>) -> Result<Vec<u8>, ProviderError> {
        self.started.notify_one();
        self.release.notified().await;
        Ok(e2e_tests::png(64, 64))
    }
}

#[tokio::test]
async fn a_worker_finishing_an_open_generation_of_a_deleted_account_stores_nothing_and_the_generation_is_refunded()
 {
    let pay = pay_stack("del-worker").await;
    let gated = Arc::new(Gated {
        started: Notify::new(),
        release: Notify::new(),
    });
    let worker = worker_for(
        &pay.stack,
        Providers::new().with("nano-banana", gated.clone()),
        |_| {},
    );
    let created = send(
        &pay.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&pay.token),
            Some(json!({"model": "nano-banana", "prompt": "racing the deletion"})),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let job = GenerationJob {
        generation_id: GenerationId::parse(created.body["id"].as_str().unwrap()).unwrap(),
        user_id: pay.user_id(),
    };
    let running = {
        let worker = worker.clone();
        let deadline = tokio::time::Instant::now() + worker.config.function_timeout;
        tokio::spawn(async move { worker.run(&job, deadline, None).await })
    };
    gated.started.notified().await;

    let deleted = delete_me(&pay, &pay.token).await;
    gated.release.notify_one();
    let outcome = running.await.unwrap();

    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    assert_eq!(outcome, worker::Outcome::Done, "no failure of ours");
    let images = pay
        .stack
        .services
        .blobs
        .list(&format!("images/{}/", pay.user))
        .await
        .unwrap();
    assert!(
        images.is_empty(),
        "the worker's image was removed: {images:?}"
    );
    let (ledger, _) = pay
        .stack
        .services
        .store
        .ledger_page(pay.user_id(), 100, None)
        .await
        .unwrap();
    let rows: Vec<(String, i64)> = ledger
        .iter()
        .map(|r| (r.reason.as_str().to_string(), r.delta))
        .collect();
    assert!(rows.contains(&("generation".into(), -2)), "{rows:?}");
    assert!(
        rows.contains(&("refund".into(), 2)),
        "refunded once: {rows:?}"
    );
    assert_eq!(rows.iter().filter(|r| r.0 == "refund").count(), 1);
    assert_eq!(pay.stored_balance().await, 10);
    assert!(
        pay.stack
            .services
            .store
            .get_generation(pay.user_id(), job.generation_id)
            .await
            .unwrap()
            .is_none()
    );
    reconcile_is_clean(&pay).await;
}

#[tokio::test]
async fn a_deletion_whose_request_died_after_marking_the_account_is_finished_by_the_sweep() {
    let pay = pay_stack("del-sweep").await;
    subscribed_at_both(&pay).await;
    let created = send(
        &pay.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&pay.token),
            Some(json!({"model": "nano-banana", "prompt": "left open"})),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let store = &pay.stack.services.store;
    let billing = &auth_with_billing(&pay.base).billing;
    // The request marks the account deleted, then dies.
    store
        .begin_deletion(pay.user_id(), 0, &Default::default())
        .await
        .unwrap();
    let me = send(
        &pay.router,
        request(Method::GET, "/v1/me", Some(&pay.token), None),
    )
    .await;
    assert_eq!(
        me.status,
        StatusCode::UNAUTHORIZED,
        "refused from the first write on"
    );
    assert!(pay.fakes.seen("/v1/subscriptions/sub_del_stripe").is_none());

    let finished = auth::deletion::sweep_deletions(&pay.stack.services, billing, Duration::ZERO)
        .await
        .unwrap();
    let again = auth::deletion::sweep_deletions(&pay.stack.services, billing, Duration::ZERO)
        .await
        .unwrap();

    assert_eq!((finished, again), (1, 0));
    assert_eq!(
        pay.seen("/v1/subscriptions/sub_del_stripe").method,
        Method::DELETE
    );
    pay.seen("/v1/subscriptions/sub_creem_1/cancel");
    let profile = store.get_user(pay.user_id()).await.unwrap().unwrap();
    assert_eq!(
        (profile.email, profile.name.as_str()),
        (None, "deleted user")
    );
    assert_eq!(
        profile.credits,
        10 + 1200,
        "the open generation was refunded"
    );
    assert!(
        store
            .open_generations_of(pay.user_id())
            .await
            .unwrap()
            .is_empty()
    );
    reconcile_is_clean(&pay).await;
}

#[tokio::test]
async fn a_retried_delete_continues_a_deletion_that_failed_at_the_provider() {
    let pay = pay_stack("del-retry").await;
    subscribed_at_both(&pay).await;
    pay.fakes
        .failing_cancels
        .store(1, std::sync::atomic::Ordering::SeqCst);

    let first = delete_me(&pay, &pay.token).await;
    let me = send(
        &pay.router,
        request(Method::GET, "/v1/me", Some(&pay.token), None),
    )
    .await;
    let retried = delete_me(&pay, &pay.token).await;
    let after = delete_me(&pay, &pay.token).await;

    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        first.body
    );
    assert_eq!(
        me.status,
        StatusCode::UNAUTHORIZED,
        "deleted from the first write on"
    );
    assert_eq!(retried.status, StatusCode::NO_CONTENT, "{:?}", retried.body);
    assert_eq!(
        after.status,
        StatusCode::UNAUTHORIZED,
        "done: nothing acts for it any more"
    );
    let cancels = pay
        .fakes
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.starts_with("/v1/subscriptions/"))
        .count();
    assert_eq!(cancels, 3, "one refused, then both canceled");
    assert_eq!(
        pay.seen("/v1/subscriptions/sub_del_stripe").method,
        Method::DELETE
    );
    pay.seen("/v1/subscriptions/sub_creem_1/cancel");
    reconcile_is_clean(&pay).await;
}
