//! The generation API (`generate`): charge and enqueue atomically, idempotency, rate
//! limits, references, isolation between users, deletion.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use e2e_tests::{Answer, Stack, dev_login, request, send, stack};
use serde_json::{Value, json};
use shared::config::ModelProviders;

async fn create(stack: &Stack, token: &str, body: Value) -> Answer {
    send(
        &stack.router,
        request(Method::POST, "/v1/generations", Some(token), Some(body)),
    )
    .await
}

async fn create_with_key(stack: &Stack, token: &str, key: &str, body: Value) -> Answer {
    let request = Request::post("/v1/generations")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    send(&stack.router, request).await
}

fn cat() -> Value {
    json!({"model": "nano-banana", "prompt": "a cat in a hat"})
}

#[tokio::test]
async fn an_accepted_generation_is_charged_queued_and_located_in_two_aws_calls() {
    let stack = stack("gen-happy", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "happy@example.com").await;

    stack.calls.reset();
    let answer = create(
        &stack,
        &token,
        json!({"model": "nano-banana-pro", "prompt": "a cat", "n": 2}),
    )
    .await;
    let calls = stack.calls.count();

    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(calls, 2, "one TransactWriteItems and one SendMessage");
    let id = answer.body["id"].as_str().unwrap();
    assert!(id.starts_with("gen_"));
    assert_eq!(answer.headers["location"], format!("/v1/generations/{id}"));
    assert_eq!(answer.body["status"], "queued");
    assert_eq!(answer.body["cost"], 8);
    assert_eq!(answer.body["n"], 2);
    assert_eq!(answer.body["aspect_ratio"], "1:1");
    assert_eq!(answer.body["refunded_credits"], 0);
    assert_eq!(answer.body["images"], json!([]));
    assert_eq!(answer.body["completed_at"], Value::Null);
    assert_eq!(stack.balance(&token).await, 2);
    let ledger = stack.ledger(&token).await;
    assert_eq!(ledger[0]["delta"], -8);
    assert_eq!(ledger[0]["reason"], "generation");
    assert_eq!(ledger[0]["ref"], id);
    assert_eq!(stack.queue_depth().await, 1);
}

#[tokio::test]
async fn reading_a_generation_is_one_aws_call_and_shows_it() {
    let stack = stack("gen-read", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "read@example.com").await;
    let created = create(&stack, &token, cat()).await;
    let id = created.body["id"].as_str().unwrap();

    stack.calls.reset();
    let read = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations/{id}"),
            Some(&token),
            None,
        ),
    )
    .await;

    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        stack.calls.count(),
        1,
        "one BatchGetItem checks the session and reads the item"
    );
    assert_eq!(read.body["id"], id);
    assert_eq!(read.body["prompt"], "a cat in a hat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_at_cost_two_on_a_balance_of_100_accept_exactly_fifty() {
    let stack = stack("gen-race", |s| s.rate_limit_per_minute = 1000).await;
    let (token, user) = dev_login(&stack.router, "race@example.com").await;
    stack.grant(&user, 90).await;
    assert_eq!(stack.balance(&token).await, 100);

    let requests: Vec<_> = (0..200)
        .map(|_| {
            let router = stack.router.clone();
            let token = token.clone();
            tokio::spawn(async move {
                send(
                    &router,
                    request(Method::POST, "/v1/generations", Some(&token), Some(cat())),
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }

    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::PAYMENT_REQUIRED)
        .count();
    assert_eq!((accepted, refused), (50, 150), "{statuses:?}");
    assert_eq!(stack.balance(&token).await, 0);
    let user_id = shared::domain::UserId::parse(user["id"].as_str().unwrap()).unwrap();
    assert_eq!(stack.services.store.ledger_sum(user_id).await.unwrap(), 0);
    assert_eq!(stack.queue_depth().await, 50);
}

/// Waits out the end of a minute so that a test counting one rate window stays in it.
async fn early_in_a_minute() {
    let second = time::OffsetDateTime::now_utc().unix_timestamp() % 60;
    if second > 45 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - second) as u64)).await;
    }
}

#[tokio::test]
async fn the_eleventh_accepted_request_in_a_minute_is_429_and_a_402_does_not_count() {
    let stack = stack("gen-rate", |_| {}).await;
    let (token, user) = dev_login(&stack.router, "rate@example.com").await;
    early_in_a_minute().await;

    // 10 credits: five of cost 2, then a refusal for want of credits.
    for _ in 0..5 {
        assert_eq!(
            create(&stack, &token, cat()).await.status,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        create(&stack, &token, cat()).await.status,
        StatusCode::PAYMENT_REQUIRED
    );
    stack.grant(&user, 100).await;
    for _ in 0..5 {
        assert_eq!(
            create(&stack, &token, cat()).await.status,
            StatusCode::ACCEPTED
        );
    }
    let eleventh = create(&stack, &token, cat()).await;

    assert_eq!(eleventh.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(eleventh.code(), "rate_limited");
    let retry_after: u64 = eleventh.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(stack.balance(&token).await, 90, "the 429 charged nothing");
    assert_eq!(stack.queue_depth().await, 10);
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_return_the_same_generation_charged_once() {
    let stack = stack("gen-idem", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "idem@example.com").await;

    let first = create_with_key(&stack, &token, "key-1", cat()).await;
    let second = create_with_key(&stack, &token, "key-1", cat()).await;
    let other_body = create_with_key(
        &stack,
        &token,
        "key-1",
        json!({"model": "nano-banana", "prompt": "a dog"}),
    )
    .await;

    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(other_body.status, StatusCode::CONFLICT);
    assert_eq!(other_body.code(), "idempotency_key_reused");
    assert_eq!(stack.balance(&token).await, 8);
    assert_eq!(stack.queue_depth().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_requests_with_one_key_make_one_generation() {
    let stack = stack("gen-idem-race", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "idemrace@example.com").await;

    let requests: Vec<_> = (0..10)
        .map(|_| {
            let router = stack.router.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let request = Request::post("/v1/generations")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", "same-key")
                    .body(Body::from(cat().to_string()))
                    .unwrap();
                send(&router, request).await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for r in requests {
        let answer = r.await.unwrap();
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        ids.insert(answer.body["id"].as_str().unwrap().to_string());
    }

    assert_eq!(ids.len(), 1);
    assert_eq!(stack.balance(&token).await, 8);
    assert_eq!(stack.queue_depth().await, 1);
}

#[tokio::test]
async fn an_enqueue_failure_refunds_frees_the_key_and_answers_503() {
    let stack = stack("gen-noqueue", |s| {
        s.queue_url = format!("{}/123456789012/no-such-queue", e2e_tests::endpoint());
    })
    .await;
    let (token, _) = dev_login(&stack.router, "noqueue@example.com").await;

    let answer = create_with_key(&stack, &token, "key-x", cat()).await;
    let again = create_with_key(
        &stack,
        &token,
        "key-x",
        json!({"model": "nano-banana", "prompt": "other"}),
    )
    .await;

    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.code(), "unavailable");
    assert_eq!(
        again.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the key was freed: not 409"
    );
    assert_eq!(stack.balance(&token).await, 10);
    let ledger = stack.ledger(&token).await;
    let sum: i64 = ledger.iter().map(|r| r["delta"].as_i64().unwrap()).sum();
    assert_eq!(sum, 10);
    assert_eq!(ledger.iter().filter(|r| r["reason"] == "refund").count(), 2);
    let list = send(
        &stack.router,
        request(Method::GET, "/v1/generations", Some(&token), None),
    )
    .await;
    let first = &list.body["items"][0];
    assert_eq!(first["status"], "failed");
    assert_eq!(first["refunded_credits"], 2);
    assert_eq!(first["error"]["code"], "enqueue_failed");
}

#[tokio::test]
async fn invalid_fields_are_422_with_every_field_named_and_nothing_charged() {
    let stack = stack("gen-invalid", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "invalid@example.com").await;

    let answer = create(
        &stack,
        &token,
        json!({"model": "flux-kontext-pro", "prompt": " ", "n": 5, "aspect_ratio": "5:1", "reference_images": ["x", "y"]}),
    )
    .await;
    let unknown = create(&stack, &token, json!({"model": "dall-e", "prompt": "x"})).await;
    let long = create(
        &stack,
        &token,
        json!({"model": "nano-banana", "prompt": "x".repeat(4001)}),
    )
    .await;
    let not_object = send(
        &stack.router,
        Request::post("/v1/generations")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from("[]"))
            .unwrap(),
    )
    .await;

    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.code(), "validation_failed");
    let fields: Vec<&str> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "prompt",
            "n",
            "aspect_ratio",
            "reference_images[0]",
            "reference_images[1]",
            "reference_images"
        ]
    );
    assert_eq!(unknown.body["errors"][0]["field"], "model");
    assert_eq!(long.body["errors"][0]["field"], "prompt");
    assert_eq!(not_object.status, StatusCode::BAD_REQUEST);
    assert_eq!(stack.balance(&token).await, 10);
    assert_eq!(stack.queue_depth().await, 0);
}

#[tokio::test]
async fn a_model_without_a_provider_is_503_and_charges_nothing() {
    let stack = stack("gen-unavailable", |s| {
        s.model_providers = ModelProviders::parse("nano-banana=local").unwrap();
    })
    .await;
    let (token, _) = dev_login(&stack.router, "unavailable@example.com").await;

    let answer = create(
        &stack,
        &token,
        json!({"model": "sora-image", "prompt": "x"}),
    )
    .await;

    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "unavailable");
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test]
async fn another_user_cannot_read_list_delete_or_reference_what_is_not_theirs() {
    let stack = stack("gen-isolation", |_| {}).await;
    let (alice, _) = dev_login(&stack.router, "alice@example.com").await;
    let (bob, _) = dev_login(&stack.router, "bob@example.com").await;
    let theirs = create(&stack, &alice, cat()).await;
    let id = theirs.body["id"].as_str().unwrap();
    let upload = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/uploads",
            Some(&alice),
            Some(json!({"content_type": "image/png", "size_bytes": 100})),
        ),
    )
    .await;
    let upload_id = upload.body["id"].as_str().unwrap();

    let read = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations/{id}"),
            Some(&bob),
            None,
        ),
    )
    .await;
    let missing = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations/{}", shared::domain::GenerationId::new()),
            Some(&bob),
            None,
        ),
    )
    .await;
    let delete = send(
        &stack.router,
        request(
            Method::DELETE,
            &format!("/v1/generations/{id}"),
            Some(&bob),
            None,
        ),
    )
    .await;
    let list = send(
        &stack.router,
        request(Method::GET, "/v1/generations", Some(&bob), None),
    )
    .await;
    let reference = create(
        &stack,
        &bob,
        json!({"model": "nano-banana", "prompt": "x", "reference_images": [upload_id, format!("{id}/0")]}),
    )
    .await;

    assert_eq!(read.status, StatusCode::NOT_FOUND);
    assert_eq!(
        read.body["detail"], missing.body["detail"],
        "indistinguishable from a missing id"
    );
    assert_eq!(delete.status, StatusCode::NOT_FOUND);
    assert_eq!(list.body["items"], json!([]));
    assert_eq!(reference.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = reference.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["reference_images[0]", "reference_images[1]"]);
    assert_eq!(stack.balance(&bob).await, 10);
    let still_there = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations/{id}"),
            Some(&alice),
            None,
        ),
    )
    .await;
    assert_eq!(still_there.status, StatusCode::OK);
}

#[tokio::test]
async fn an_upload_is_a_presigned_put_of_exactly_the_declared_type_and_size() {
    let stack = stack("gen-upload", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "upload@example.com").await;
    let png = tiny_png();

    let ticket = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/uploads",
            Some(&token),
            Some(json!({"content_type": "image/png", "size_bytes": png.len()})),
        ),
    )
    .await;

    assert_eq!(ticket.status, StatusCode::CREATED, "{:?}", ticket.body);
    assert!(ticket.body["id"].as_str().unwrap().starts_with("upl_"));
    assert_eq!(ticket.body["method"], "PUT");
    let url = ticket.body["upload_url"].as_str().unwrap();
    let signed = url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-SignedHeaders")
        .map(|(_, v)| v.to_string())
        .unwrap();
    assert!(signed.split(';').any(|h| h == "content-type"), "{signed}");
    assert!(signed.split(';').any(|h| h == "content-length"), "{signed}");
    assert_eq!(ticket.body["headers"]["Content-Type"], "image/png");
    assert_eq!(
        ticket.body["headers"]["Content-Length"],
        png.len().to_string()
    );

    let put = reqwest::Client::new()
        .put(url)
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let upload_id = ticket.body["id"].as_str().unwrap();
    let generation = create(
        &stack,
        &token,
        json!({"model": "nano-banana", "prompt": "make it blue", "reference_images": [upload_id]}),
    )
    .await;
    assert_eq!(
        generation.status,
        StatusCode::ACCEPTED,
        "{:?}",
        generation.body
    );
    assert_eq!(generation.body["reference_images"], json!([upload_id]));
}

#[tokio::test]
async fn an_upload_that_does_not_match_its_declaration_cannot_be_referenced() {
    let stack = stack("gen-upload-bad", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "uploadbad@example.com").await;
    let ticket = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/uploads",
            Some(&token),
            Some(json!({"content_type": "image/png", "size_bytes": 10})),
        ),
    )
    .await;
    let never = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/uploads",
            Some(&token),
            Some(json!({"content_type": "image/webp", "size_bytes": 10})),
        ),
    )
    .await;
    // The emulator does not check signatures: a PUT of another size lands there.
    reqwest::Client::new()
        .put(ticket.body["upload_url"].as_str().unwrap())
        .header("content-type", "image/png")
        .body(vec![0u8; 11])
        .send()
        .await
        .unwrap();

    let answer = create(
        &stack,
        &token,
        json!({"model": "nano-banana", "prompt": "x", "reference_images": [ticket.body["id"], never.body["id"]]}),
    )
    .await;

    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.body["errors"][0]["field"], "reference_images[0]");
    assert_eq!(answer.body["errors"][1]["field"], "reference_images[1]");
    assert_eq!(stack.balance(&token).await, 10);
}

#[tokio::test]
async fn uploads_refuse_other_types_and_sizes_over_ten_mebibytes() {
    let stack = stack("gen-upload-limits", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "limits@example.com").await;

    let answer = send(
        &stack.router,
        request(
            Method::POST,
            "/v1/uploads",
            Some(&token),
            Some(json!({"content_type": "image/gif", "size_bytes": 10 * 1024 * 1024 + 1})),
        ),
    )
    .await;

    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["content_type", "size_bytes"]);
}

#[tokio::test]
async fn an_open_generation_cannot_be_deleted_and_a_finished_one_is_gone() {
    let stack = stack("gen-delete", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "delete@example.com").await;
    let created = create(&stack, &token, cat()).await;
    let id = created.body["id"].as_str().unwrap();
    let path = format!("/v1/generations/{id}");

    let open = send(
        &stack.router,
        request(Method::DELETE, &path, Some(&token), None),
    )
    .await;
    let generation = stack
        .services
        .store
        .get_generation(
            shared::domain::UserId::parse(&token_user(&stack, &token).await).unwrap(),
            shared::domain::GenerationId::parse(id).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        stack
            .services
            .store
            .fail_unsent(&generation, None)
            .await
            .unwrap()
    );
    let finished = send(
        &stack.router,
        request(Method::DELETE, &path, Some(&token), None),
    )
    .await;
    let after = send(
        &stack.router,
        request(Method::GET, &path, Some(&token), None),
    )
    .await;

    assert_eq!(open.status, StatusCode::CONFLICT);
    assert_eq!(finished.status, StatusCode::NO_CONTENT);
    assert_eq!(after.status, StatusCode::NOT_FOUND);
    assert_eq!(
        stack.balance(&token).await,
        10,
        "the failed one was refunded; deleting changes no credits"
    );
}

async fn token_user(stack: &Stack, token: &str) -> String {
    let me = send(
        &stack.router,
        request(Method::GET, "/v1/me", Some(token), None),
    )
    .await;
    me.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_list_is_newest_first_with_cursor_pagination() {
    let stack = stack("gen-list", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "list@example.com").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let answer = create(
            &stack,
            &token,
            json!({"model": "nano-banana", "prompt": format!("p{i}")}),
        )
        .await;
        ids.push(answer.body["id"].as_str().unwrap().to_string());
    }

    let first = send(
        &stack.router,
        request(Method::GET, "/v1/generations?limit=2", Some(&token), None),
    )
    .await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = send(
        &stack.router,
        request(
            Method::GET,
            &format!("/v1/generations?limit=2&cursor={cursor}"),
            Some(&token),
            None,
        ),
    )
    .await;

    let listed: Vec<&str> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["items"].as_array().unwrap())
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    assert_eq!(second.body["next_cursor"], Value::Null);
    let bad = send(
        &stack.router,
        request(Method::GET, "/v1/generations?limit=0", Some(&token), None),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_generation_request_as_an_api_gateway_event_is_accepted() {
    let stack = stack("gen-apigw", |_| {}).await;
    let (token, _) = dev_login(&stack.router, "apigw@example.com").await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let event = std::fs::read_to_string(root.join("events/apigw-v2-post-generation.json"))
        .unwrap()
        .replace("REPLACE_WITH_TOKEN", &token);
    let request = lambda_http::request::from_str(&event).expect("a valid API Gateway v2 event");
    let request = request.map(|body| Body::from(body.to_vec()));

    let answer = send(&stack.router, request).await;

    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(stack.balance(&token).await, 8);
}

fn tiny_png() -> Vec<u8> {
    // 1x1 transparent PNG.
    base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    )
    .unwrap()
}
