//! Failover between the hosts of one model (invariant 7 as revised), against the
//! emulator: a transient failure moves an image to the next host, which the image then
//! names; a refusal is final; a host that keeps failing is skipped by its breaker until a
//! trial call finds it back; the user pays once, whatever was tried. And `GET /v1/models`
//! says a model is available when any host is listed for it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use e2e_tests::{
    Scripted, accept, accepted_generation, named, png, request, send, stack, worker_for,
};
use shared::domain::generation::Status;
use shared::providers::{BreakerPolicy, ProviderError, Providers};

fn unavailable() -> ProviderError {
    ProviderError::Transient("provider answered 503 Service Unavailable".into())
}

fn chain(first: &Arc<Scripted>, second: &Arc<Scripted>) -> Providers {
    Providers::new()
        .with("nano-banana", first.clone())
        .with("nano-banana", second.clone())
}

fn providers_of(generation: &serde_json::Value) -> Vec<String> {
    generation["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["provider"].as_str().unwrap_or("none").to_string())
        .collect()
}

#[tokio::test]
async fn when_the_first_host_answers_503_three_times_the_second_makes_the_images_which_say_so_and_the_user_pays_once()
 {
    let stack = stack("f-503", |_| {}).await;
    let first = named("primary", |_, _| Err(unavailable()));
    let second = named("secondary", |_, _| Ok(png(8, 8)));
    let worker = worker_for(&stack, chain(&first, &second), |_| {});
    let (token, user, id) =
        accepted_generation(&stack, "failover@example.com", "nano-banana", 3, &[]).await;

    let done = stack
        .pump_until(&worker, user, id, Duration::from_secs(10), |g| {
            g.status.is_final()
        })
        .await;

    assert!(done);
    let generation = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations/{id}"),
            Some(&token),
            None,
        ),
    )
    .await
    .body;
    assert_eq!(generation["status"], "succeeded");
    assert_eq!(providers_of(&generation), ["secondary"; 3]);
    assert_eq!(generation["refunded_credits"], 0);
    assert_eq!(first.calls(), 3, "the first host was asked once per image");
    assert_eq!(second.calls(), 3);
    assert_eq!(stack.balance(&token).await, 10 - 6, "one charge");
    let ledger = stack.ledger(&token).await;
    let generation_rows: Vec<&serde_json::Value> = ledger
        .iter()
        .filter(|r| r["ref"] == id.to_string())
        .collect();
    assert_eq!(generation_rows.len(), 1, "{ledger:?}");
}

#[tokio::test]
async fn the_circuit_opens_after_k_transient_failures_skips_its_host_then_lets_one_trial_through_after_the_cool_down()
 {
    let stack = stack("f-breaker", |_| {}).await;
    // Down for its first three calls, then back.
    let first = named("primary", |_, call| {
        if call < 3 {
            Err(unavailable())
        } else {
            Ok(png(8, 8))
        }
    });
    let second = named("secondary", |_, _| Ok(png(8, 8)));
    let cool_down = Duration::from_millis(1500);
    let providers = chain(&first, &second).with_breaker_policy(BreakerPolicy {
        failures: 3,
        cool_down,
    });
    let breaker = providers.chain("nano-banana").unwrap().hosts()[0]
        .breaker
        .clone();
    let worker = worker_for(&stack, providers, |c| c.images_in_parallel = 1);
    let (token, profile) = e2e_tests::dev_login(&stack.router, "breaker@example.com").await;
    stack.grant(&profile, 100).await;
    let user = shared::domain::UserId::parse(profile["id"].as_str().unwrap()).unwrap();
    let run = |id| {
        let (stack, worker) = (&stack, &worker);
        async move {
            assert!(
                stack
                    .pump_until(worker, user, id, Duration::from_secs(10), |g| {
                        g.status == Status::Succeeded
                    })
                    .await
            );
            stack.stored(user, id).await.unwrap()
        }
    };

    let tripping = run(accept(&stack, &token, "nano-banana", 3, &[]).await).await;
    let open = breaker.is_open(tokio::time::Instant::now());
    let while_open = run(accept(&stack, &token, "nano-banana", 1, &[]).await).await;
    let calls_while_open = first.calls();
    tokio::time::sleep(cool_down + Duration::from_millis(100)).await;
    let trial = run(accept(&stack, &token, "nano-banana", 1, &[]).await).await;
    let closed = !breaker.is_open(tokio::time::Instant::now());
    let after = run(accept(&stack, &token, "nano-banana", 2, &[]).await).await;

    let hosts = |g: &shared::domain::generation::Generation| -> Vec<String> {
        g.images
            .iter()
            .map(|i| i.provider.clone().unwrap())
            .collect()
    };
    assert_eq!(hosts(&tripping), ["secondary"; 3]);
    assert!(open, "three transient failures in a row opened the circuit");
    assert_eq!(calls_while_open, 3, "an open circuit skips its host");
    assert_eq!(hosts(&while_open), ["secondary"]);
    assert_eq!(
        hosts(&trial),
        ["primary"],
        "one trial call after the cool-down"
    );
    assert!(closed, "the trial's success closed the circuit");
    assert_eq!(hosts(&after), ["primary", "primary"]);
    assert_eq!(first.calls(), 3 + 1 + 2);
    assert_eq!(second.calls(), 3 + 1);
    assert_eq!(
        stack.balance(&token).await,
        110 - 2 * (3 + 1 + 1 + 2),
        "each image paid once"
    );
}

#[tokio::test]
async fn a_safety_refusal_from_the_first_host_is_final_and_refunded_and_the_second_is_never_called()
{
    let stack = stack("f-refuse", |_| {}).await;
    let first = named("primary", |_, _| {
        Err(ProviderError::Permanent {
            code: "content_refused",
            message: "blocked by safety filters".into(),
        })
    });
    let second = named("secondary", |_, _| Ok(png(8, 8)));
    let worker = worker_for(&stack, chain(&first, &second), |_| {});
    let (token, user, id) =
        accepted_generation(&stack, "refusal@example.com", "nano-banana", 2, &[]).await;

    let done = stack
        .pump_until(&worker, user, id, Duration::from_secs(10), |g| {
            g.status.is_final()
        })
        .await;

    assert!(done);
    let generation = stack.stored(user, id).await.unwrap();
    assert_eq!(generation.status, Status::Failed);
    assert_eq!(generation.error.unwrap().code, "content_refused");
    assert_eq!(generation.refunded_credits, 4);
    assert_eq!(second.calls(), 0, "a refusal is not taken elsewhere");
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test]
async fn a_model_is_available_when_any_host_is_listed_for_it_and_only_then() {
    let stack = stack("f-models", |settings| {
        settings.model_providers = shared::config::ModelProviders::parse(
            "flux-kontext-pro=bfl,replicate,nano-banana=replicate",
        )
        .unwrap();
    })
    .await;

    let models = send(
        &stack.router,
        request(Method::GET, "/v1/models", None, None),
    )
    .await;
    let (token, _) = e2e_tests::dev_login(&stack.router, "models@example.com").await;
    let unlisted = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/generations",
            Some(&token),
            Some(serde_json::json!({"model": "seedream-4.0", "prompt": "a fox"})),
        ),
    )
    .await;

    assert_eq!(models.status, StatusCode::OK);
    let available: Vec<(String, bool)> = models.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["available"].as_bool().unwrap(),
            )
        })
        .collect();
    let is = |id: &str| available.iter().find(|(m, _)| m == id).unwrap().1;
    assert!(is("flux-kontext-pro"));
    assert!(is("nano-banana"));
    assert!(!is("seedream-4.0"));
    assert!(!is("flux-kontext-max"));
    assert_eq!(unlisted.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stack.balance(&token).await, 10, "nothing charged");
}
