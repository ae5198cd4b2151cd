//! The image provider adapters against fake servers answering in each provider's
//! documented shape, the guarded download helper, the local renderer and the wiring from
//! configuration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use shared::aws::secrets::Secrets;
use shared::config::{ModelProviders, Secret};
use shared::domain::catalog::AspectRatio;
use shared::outbound::LazyClient;
use shared::providers::http::{self, AllowedHosts};
use shared::providers::{
    ArkProvider, BflProvider, GeminiProvider, ImageProvider, ImageRequest, LocalRenderer,
    OpenAiProvider, ProviderError, ProviderSettings, ReferenceImage, ReplicateModels,
    ReplicateProvider, build_providers,
};

// ---------------------------------------------------------------------------------------
// A fake upstream: records every request and answers through a closure.

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    /// Path and query.
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the adapter sent JSON")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    delay: Duration,
    location: Option<String>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self::bytes(status, "application/json", body.to_string().into_bytes())
    }

    fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            body,
            delay: Duration::ZERO,
            location: None,
        }
    }

    fn redirect(to: String) -> Self {
        Self {
            location: Some(to),
            ..Self::bytes(302, "text/plain", Vec::new())
        }
    }

    fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Responder = dyn Fn(&Recorded, &str) -> Reply + Send + Sync;

struct FakeState {
    base: String,
    requests: Mutex<Vec<Recorded>>,
    respond: Box<Responder>,
}

struct Fake {
    base: String,
    state: Arc<FakeState>,
}

impl Fake {
    /// Starts a server on 127.0.0.1; `respond` gets each request and the server's base URL.
    async fn start(respond: impl Fn(&Recorded, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(FakeState {
            base: base.clone(),
            requests: Mutex::new(Vec::new()),
            respond: Box::new(respond),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }

    /// A server answering every request the same way.
    async fn always(reply: impl Fn() -> Reply + Send + Sync + 'static) -> Self {
        Self::start(move |_, _| reply()).await
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected one request: {requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

async fn handle(State(state): State<Arc<FakeState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body: body.to_vec(),
    };
    let reply = (state.respond)(&recorded, &state.base);
    state.requests.lock().unwrap().push(recorded);
    tokio::time::sleep(reply.delay).await;
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response();
    if let Some(location) = reply.location {
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
    }
    response
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// The timeout of the tests that time out: far below `SLOW`.
const SHORT: Duration = Duration::from_millis(300);
/// The timeout of every other test: an answer that is prompt on an idle machine may take
/// seconds on a loaded one, and must not turn into a timeout there.
const ROOMY: Duration = Duration::from_secs(4);
const SLOW: Duration = Duration::from_secs(5);

/// A real PNG for fakes to return.
fn png(seed: &str) -> Vec<u8> {
    LocalRenderer::render(seed, 0, AspectRatio::SQUARE, None).unwrap()
}

fn reference(seed: &str) -> ReferenceImage {
    ReferenceImage::new(&png(seed), "image/png")
}

fn request<'a>(
    model: &'a str,
    ratio: AspectRatio,
    references: &'a [ReferenceImage],
) -> ImageRequest<'a> {
    ImageRequest {
        model,
        prompt: "a banana wearing a tuxedo",
        aspect_ratio: ratio,
        references,
        index: 0,
    }
}

fn code(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::Permanent { code, .. } => code,
        ProviderError::Transient(_) => "transient",
    }
}

fn key() -> Secret {
    Secret::new("test-key-123")
}

// ---------------------------------------------------------------------------------------
// Gemini.

fn gemini(fake: &Fake) -> GeminiProvider {
    GeminiProvider::new(&fake.base, key())
        .unwrap()
        .with_timeout(ROOMY)
}

fn gemini_image_answer(thought: &[u8], image: &[u8]) -> Value {
    json!({
        "candidates": [{
            "content": { "role": "model", "parts": [
                { "text": "Drafting...", "thought": true },
                { "inlineData": { "mimeType": "image/png", "data": STANDARD.encode(thought) }, "thought": true },
                { "text": "Here is your banana." },
                { "inlineData": { "mimeType": "image/png", "data": STANDARD.encode(image) } },
            ]},
            "finishReason": "STOP",
        }],
        "usageMetadata": { "promptTokenCount": 10 },
    })
}

#[tokio::test]
async fn gemini_sends_prompt_references_and_ratio_and_returns_the_final_image() {
    let (draft, image) = (png("draft"), png("final"));
    let answer = gemini_image_answer(&draft, &image);
    let fake = Fake::always(move || Reply::json(200, answer.clone())).await;
    let references = [reference("ref")];

    let got = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::of(16, 9), &references))
        .await
        .unwrap();

    assert_eq!(got, image, "the thought image is skipped");
    let sent = fake.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.5-flash-image:generateContent"
    );
    assert_eq!(sent.header("x-goog-api-key"), Some("test-key-123"));
    let body = sent.json();
    assert_eq!(body["contents"][0]["role"], "user");
    let parts = &body["contents"][0]["parts"];
    assert_eq!(parts[0]["text"], "a banana wearing a tuxedo");
    assert_eq!(parts[1]["inline_data"]["mime_type"], "image/png");
    assert_eq!(
        parts[1]["inline_data"]["data"],
        STANDARD.encode(references[0].bytes())
    );
    assert_eq!(
        body["generationConfig"]["responseModalities"],
        json!(["TEXT", "IMAGE"])
    );
    assert_eq!(
        body["generationConfig"]["imageConfig"]["aspectRatio"],
        "16:9"
    );
}

#[tokio::test]
async fn gemini_pro_calls_gemini_3_pro_image_and_reads_snake_case_inline_data() {
    let image = png("pro");
    let answer = json!({ "candidates": [{ "content": { "parts": [
        { "inline_data": { "mime_type": "image/png", "data": STANDARD.encode(&image) } },
    ]}}]});
    let fake = Fake::always(move || Reply::json(200, answer.clone())).await;

    let got = gemini(&fake)
        .generate(&request("nano-banana-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap();

    assert_eq!(got, image);
    let sent = fake.only_request();
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-3-pro-image-preview:generateContent"
    );
    assert_eq!(
        sent.json()["contents"][0]["parts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn gemini_blocked_prompt_is_a_permanent_refusal() {
    let fake = Fake::always(|| {
        Reply::json(
            200,
            json!({ "promptFeedback": { "blockReason": "PROHIBITED_CONTENT" } }),
        )
    })
    .await;
    let error = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "content_refused", "{error}");
}

#[tokio::test]
async fn gemini_image_safety_finish_reason_is_a_permanent_refusal() {
    let fake = Fake::always(|| {
        Reply::json(
            200,
            json!({ "candidates": [{ "finishReason": "IMAGE_SAFETY", "content": { "parts": [] } }] }),
        )
    })
    .await;
    let error = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "content_refused", "{error}");
}

#[tokio::test]
async fn gemini_text_only_answer_is_a_permanent_no_image() {
    let fake = Fake::always(|| {
        Reply::json(
            200,
            json!({ "candidates": [{ "finishReason": "STOP", "content": { "parts": [{ "text": "I cannot draw." }] } }] }),
        )
    })
    .await;
    let error = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "no_image", "{error}");
}

#[tokio::test]
async fn gemini_rate_limit_is_transient() {
    let fake = Fake::always(|| {
        Reply::json(
            429,
            json!({ "error": { "code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED" } }),
        )
    })
    .await;
    let error = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn gemini_server_error_is_transient() {
    let fake = Fake::always(|| {
        Reply::json(
            500,
            json!({ "error": { "code": 500, "message": "Internal error", "status": "INTERNAL" } }),
        )
    })
    .await;
    let error = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn gemini_bad_request_is_permanent_invalid_input() {
    let fake = Fake::always(|| {
        Reply::json(
            400,
            json!({ "error": { "code": 400, "message": "Unsupported aspect ratio", "status": "INVALID_ARGUMENT" } }),
        )
    })
    .await;
    let error = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "invalid_input", "{error}");
    assert!(
        error.to_string().contains("Unsupported aspect ratio"),
        "{error}"
    );
}

#[tokio::test]
async fn gemini_slow_answer_times_out_as_transient() {
    let answer = gemini_image_answer(&png("a"), &png("b"));
    let fake = Fake::always(move || Reply::json(200, answer.clone()).after(SLOW)).await;
    let error = gemini(&fake)
        .with_timeout(SHORT)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn gemini_malformed_json_is_a_permanent_malformed_response() {
    let fake =
        Fake::always(|| Reply::bytes(200, "application/json", b"{\"candidates\": [".to_vec()))
            .await;
    let error = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
}

#[tokio::test]
async fn gemini_image_data_that_is_not_an_image_is_malformed() {
    let fake = Fake::always(|| {
        Reply::json(
            200,
            json!({ "candidates": [{ "content": { "parts": [
                { "inlineData": { "mimeType": "image/png", "data": STANDARD.encode(b"not a picture") } },
            ]}}]}),
        )
    })
    .await;
    let error = gemini(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
}

// ---------------------------------------------------------------------------------------
// BFL FLUX Kontext.

fn bfl(fake: &Fake) -> BflProvider {
    BflProvider::new(&fake.base, key())
        .unwrap()
        .with_poll_interval(Duration::from_millis(10))
        .with_timeout(Duration::from_secs(5))
        .with_loopback_http(true)
}

/// A BFL fake: the submission answers with a polling URL on the fake; each poll answers
/// the next of `statuses` (the last repeats), `Ready` pointing at a sample on the fake.
async fn bfl_fake(statuses: &'static [&'static str], sample: Vec<u8>) -> Fake {
    let polls = AtomicUsize::new(0);
    Fake::start(move |req, base| {
        if req.path.starts_with("/v1/flux-kontext-") {
            Reply::json(
                200,
                json!({ "id": "task-1", "polling_url": format!("{base}/v1/get_result?id=task-1") }),
            )
        } else if req.path.starts_with("/v1/get_result") {
            let n = polls.fetch_add(1, Ordering::SeqCst);
            let status = statuses[n.min(statuses.len() - 1)];
            let mut answer = json!({ "id": "task-1", "status": status, "result": null });
            if status == "Ready" {
                answer["result"] =
                    json!({ "sample": format!("{base}/delivery/sample.png?sig=abc") });
            }
            Reply::json(200, answer)
        } else if req.path.starts_with("/delivery/sample.png") {
            Reply::bytes(200, "image/png", sample.clone())
        } else {
            Reply::json(404, json!({ "detail": "Not Found" }))
        }
    })
    .await
}

#[tokio::test]
async fn bfl_polls_pending_pending_ready_then_downloads_the_sample() {
    let image = png("kontext");
    let fake = bfl_fake(&["Pending", "Pending", "Ready"], image.clone()).await;
    let references = [reference("edit me")];

    let got = bfl(&fake)
        .generate(&request(
            "flux-kontext-pro",
            AspectRatio::of(16, 9),
            &references,
        ))
        .await
        .unwrap();

    assert_eq!(got, image);
    let sent = fake.requests();
    let paths: Vec<&str> = sent.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/flux-kontext-pro",
            "/v1/get_result?id=task-1",
            "/v1/get_result?id=task-1",
            "/v1/get_result?id=task-1",
            "/delivery/sample.png?sig=abc",
        ]
    );
    let submit = &sent[0];
    assert_eq!(submit.method, "POST");
    assert_eq!(submit.header("x-key"), Some("test-key-123"));
    let body = submit.json();
    assert_eq!(body["prompt"], "a banana wearing a tuxedo");
    assert_eq!(body["aspect_ratio"], "16:9");
    assert_eq!(body["output_format"], "png");
    assert_eq!(body["input_image"], STANDARD.encode(references[0].bytes()));
    for poll in &sent[1..4] {
        assert_eq!(poll.method, "GET");
        assert_eq!(poll.header("x-key"), Some("test-key-123"));
    }
    assert_eq!(
        sent[4].header("x-key"),
        None,
        "the key is not sent to the result URL"
    );
}

#[tokio::test]
async fn bfl_max_uses_its_own_endpoint_and_sends_no_input_image_without_references() {
    let fake = bfl_fake(&["Ready"], png("max")).await;
    bfl(&fake)
        .generate(&request("flux-kontext-max", AspectRatio::SQUARE, &[]))
        .await
        .unwrap();
    let submit = &fake.requests()[0];
    assert_eq!(submit.path, "/v1/flux-kontext-max");
    assert!(submit.json().get("input_image").is_none());
}

#[tokio::test]
async fn bfl_moderated_request_is_a_permanent_refusal() {
    let fake = bfl_fake(&["Pending", "Request Moderated"], Vec::new()).await;
    let error = bfl(&fake)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "content_refused", "{error}");
}

#[tokio::test]
async fn bfl_moderated_content_is_a_permanent_refusal() {
    let fake = bfl_fake(&["Content Moderated"], Vec::new()).await;
    let error = bfl(&fake)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "content_refused", "{error}");
}

#[tokio::test]
async fn bfl_error_status_is_permanent() {
    let fake = bfl_fake(&["Pending", "Error"], Vec::new()).await;
    let error = bfl(&fake)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error}");
}

#[tokio::test]
async fn bfl_rate_limit_is_transient() {
    let fake = Fake::always(|| {
        Reply::json(
            429,
            json!({ "detail": "You have exceeded the number of active tasks" }),
        )
    })
    .await;
    let error = bfl(&fake)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(fake.only_request().path, "/v1/flux-kontext-pro");
}

#[tokio::test]
async fn bfl_server_error_is_transient() {
    let fake =
        Fake::always(|| Reply::json(500, json!({ "detail": "Internal Server Error" }))).await;
    let error = bfl(&fake)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn bfl_task_that_stays_pending_times_out_as_transient() {
    let fake = bfl_fake(&["Pending"], Vec::new()).await;
    let error = bfl(&fake)
        .with_timeout(SHORT)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(fake.requests().len() > 3, "it kept polling");
}

#[tokio::test]
async fn bfl_slow_submission_times_out_as_transient() {
    let fake = Fake::always(|| {
        Reply::json(
            200,
            json!({ "id": "t", "polling_url": "https://api.bfl.ai/x" }),
        )
        .after(SLOW)
    })
    .await;
    let error = bfl(&fake)
        .with_timeout(SHORT)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn bfl_malformed_json_is_a_permanent_malformed_response() {
    let fake = Fake::always(|| Reply::bytes(200, "application/json", b"<html>".to_vec())).await;
    let error = bfl(&fake)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
}

#[tokio::test]
async fn bfl_polling_url_on_a_foreign_host_is_refused() {
    let fake = Fake::always(|| {
        Reply::json(
            200,
            json!({ "id": "t", "polling_url": "https://metadata.evil.example/v1/get_result?id=t" }),
        )
    })
    .await;
    let error = bfl(&fake)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
    assert_eq!(fake.requests().len(), 1, "nothing was fetched from it");
}

// ---------------------------------------------------------------------------------------
// BytePlus ARK (Seedream 4.0).

fn ark(fake: &Fake) -> ArkProvider {
    ArkProvider::new(&fake.base, key())
        .unwrap()
        .with_timeout(ROOMY)
}

fn ark_image_answer(image: &[u8]) -> Value {
    json!({
        "model": "seedream-4-0-250828",
        "created": 1_757_321_139,
        "data": [{ "b64_json": STANDARD.encode(image), "size": "2560x1440" }],
        "usage": { "generated_images": 1, "output_tokens": 16384, "total_tokens": 16384 },
    })
}

#[tokio::test]
async fn ark_sends_a_seedream_request_without_watermark_and_returns_the_b64_image() {
    let image = png("seedream");
    let answer = ark_image_answer(&image);
    let fake = Fake::always(move || Reply::json(200, answer.clone())).await;
    let references = [reference("one"), reference("two")];

    let got = ark(&fake)
        .generate(&request(
            "seedream-4.0",
            AspectRatio::of(16, 9),
            &references,
        ))
        .await
        .unwrap();

    assert_eq!(got, image);
    let sent = fake.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/api/v3/images/generations");
    assert_eq!(sent.header("authorization"), Some("Bearer test-key-123"));
    let body = sent.json();
    assert_eq!(body["model"], "seedream-4-0-250828");
    assert_eq!(body["prompt"], "a banana wearing a tuxedo");
    assert_eq!(body["size"], "2560x1440");
    assert_eq!(body["response_format"], "b64_json");
    assert_eq!(body["watermark"], false);
    assert_eq!(body["sequential_image_generation"], "disabled");
    let images = body["image"]
        .as_array()
        .expect("several references: an array");
    assert_eq!(images.len(), 2);
    assert_eq!(
        images[1],
        format!(
            "data:image/png;base64,{}",
            STANDARD.encode(references[1].bytes())
        )
    );
}

#[tokio::test]
async fn ark_single_reference_is_sent_as_one_data_url_and_none_is_omitted() {
    let answer = ark_image_answer(&png("x"));
    let fake = Fake::always(move || Reply::json(200, answer.clone())).await;
    let references = [reference("only")];
    let provider = ark(&fake);
    provider
        .generate(&request("seedream-4.0", AspectRatio::of(2, 3), &references))
        .await
        .unwrap();
    provider
        .generate(&request("seedream-4.0", AspectRatio::SQUARE, &[]))
        .await
        .unwrap();
    let sent = fake.requests();
    let with = sent[0].json();
    assert!(
        with["image"]
            .as_str()
            .is_some_and(|s| s.starts_with("data:image/png;base64,"))
    );
    assert_eq!(with["size"], "1664x2496");
    let without = sent[1].json();
    assert!(without.get("image").is_none());
    assert_eq!(without["size"], "2048x2048");
}

#[tokio::test]
async fn ark_sensitive_content_is_a_permanent_refusal() {
    let fake = Fake::always(|| {
        Reply::json(
            400,
            json!({ "error": {
                "code": "OutputImageSensitiveContentDetected",
                "message": "The request failed because the output image may contain sensitive information.",
                "param": "", "type": "BadRequest",
            }}),
        )
    })
    .await;
    let error = ark(&fake)
        .generate(&request("seedream-4.0", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "content_refused", "{error}");
}

#[tokio::test]
async fn ark_other_bad_request_is_permanent_invalid_input() {
    let fake = Fake::always(|| {
        Reply::json(
            400,
            json!({ "error": { "code": "InvalidParameter", "message": "size is invalid", "param": "size", "type": "BadRequest" } }),
        )
    })
    .await;
    let error = ark(&fake)
        .generate(&request("seedream-4.0", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "invalid_input", "{error}");
}

#[tokio::test]
async fn ark_rate_limit_is_transient() {
    let fake = Fake::always(|| {
        Reply::json(
            429,
            json!({ "error": { "code": "RateLimitExceeded.EndpointRPMExceeded", "message": "slow down", "type": "TooManyRequests" } }),
        )
    })
    .await;
    let error = ark(&fake)
        .generate(&request("seedream-4.0", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn ark_server_error_is_transient() {
    let fake = Fake::always(|| {
        Reply::json(
            500,
            json!({ "error": { "code": "InternalServiceError", "message": "oops" } }),
        )
    })
    .await;
    let error = ark(&fake)
        .generate(&request("seedream-4.0", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn ark_slow_answer_times_out_as_transient() {
    let answer = ark_image_answer(&png("slow"));
    let fake = Fake::always(move || Reply::json(200, answer.clone()).after(SLOW)).await;
    let error = ark(&fake)
        .with_timeout(SHORT)
        .generate(&request("seedream-4.0", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn ark_malformed_json_is_a_permanent_malformed_response() {
    let fake = Fake::always(|| Reply::json(200, json!({ "data": "nope" }))).await;
    let error = ark(&fake)
        .generate(&request("seedream-4.0", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
}

#[tokio::test]
async fn ark_answer_without_images_is_a_permanent_no_image() {
    let fake = Fake::always(|| Reply::json(200, json!({ "model": "m", "data": [] }))).await;
    let error = ark(&fake)
        .generate(&request("seedream-4.0", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "no_image", "{error}");
}

// ---------------------------------------------------------------------------------------
// OpenAI-compatible images (sora-image).

fn openai(fake: &Fake) -> OpenAiProvider {
    OpenAiProvider::new(&fake.base, key(), "gpt-image-1")
        .unwrap()
        .with_timeout(ROOMY)
        .with_loopback_http(true)
}

#[tokio::test]
async fn openai_generates_with_the_configured_model_and_size() {
    let image = png("sora");
    let answer =
        json!({ "created": 1_713_833_628, "data": [{ "b64_json": STANDARD.encode(&image) }] });
    let fake = Fake::always(move || Reply::json(200, answer.clone())).await;

    let got = openai(&fake)
        .generate(&request("sora-image", AspectRatio::of(3, 2), &[]))
        .await
        .unwrap();

    assert_eq!(got, image);
    let sent = fake.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/images/generations");
    assert_eq!(sent.header("authorization"), Some("Bearer test-key-123"));
    let body = sent.json();
    assert_eq!(body["model"], "gpt-image-1");
    assert_eq!(body["prompt"], "a banana wearing a tuxedo");
    assert_eq!(body["n"], 1);
    assert_eq!(body["size"], "1536x1024");
}

#[tokio::test]
async fn openai_references_go_to_edits_as_multipart_image_parts() {
    let image = png("edited");
    let answer = json!({ "data": [{ "b64_json": STANDARD.encode(&image) }] });
    let fake = Fake::always(move || Reply::json(200, answer.clone())).await;
    let references = [reference("a"), reference("b")];

    let got = openai(&fake)
        .generate(&request("sora-image", AspectRatio::of(2, 3), &references))
        .await
        .unwrap();

    assert_eq!(got, image);
    let sent = fake.only_request();
    assert_eq!(sent.path, "/v1/images/edits");
    assert_eq!(sent.header("authorization"), Some("Bearer test-key-123"));
    assert!(
        sent.header("content-type")
            .is_some_and(|t| t.starts_with("multipart/form-data; boundary="))
    );
    let text = sent.text();
    for expected in [
        "name=\"model\"\r\n\r\ngpt-image-1\r\n",
        "name=\"prompt\"\r\n\r\na banana wearing a tuxedo\r\n",
        "name=\"n\"\r\n\r\n1\r\n",
        "name=\"size\"\r\n\r\n1024x1536\r\n",
        "name=\"image[]\"; filename=\"reference-0.png\"",
        "name=\"image[]\"; filename=\"reference-1.png\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?}");
    }
    assert_eq!(text.matches("Content-Type: image/png").count(), 2);
}

#[tokio::test]
async fn openai_url_result_is_downloaded_from_the_provider_host() {
    let image = png("by url");
    let served = image.clone();
    let fake = Fake::start(move |req, base| {
        if req.path == "/v1/images/generations" {
            Reply::json(
                200,
                json!({ "data": [{ "url": format!("{base}/files/out.png?sig=1") }] }),
            )
        } else {
            Reply::bytes(200, "image/png", served.clone())
        }
    })
    .await;

    let got = openai(&fake)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap();

    assert_eq!(got, image);
    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].path, "/files/out.png?sig=1");
    assert_eq!(
        sent[1].header("authorization"),
        None,
        "the key stays with the API"
    );
}

#[tokio::test]
async fn openai_url_result_on_a_foreign_host_is_refused() {
    let fake = Fake::always(|| {
        Reply::json(
            200,
            json!({ "data": [{ "url": "https://files.evil.example/out.png" }] }),
        )
    })
    .await;
    let error = openai(&fake)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
}

#[tokio::test]
async fn openai_content_policy_violation_is_a_permanent_refusal() {
    for refusal in ["content_policy_violation", "moderation_blocked"] {
        let fake = Fake::always(move || {
            Reply::json(
                400,
                json!({ "error": {
                    "message": "Your request was rejected by the safety system.",
                    "type": "image_generation_user_error", "param": null, "code": refusal,
                }}),
            )
        })
        .await;
        let error = openai(&fake)
            .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
            .await
            .unwrap_err();
        assert_eq!(code(&error), "content_refused", "{refusal}: {error}");
    }
}

#[tokio::test]
async fn openai_other_bad_request_is_permanent_invalid_input() {
    let fake = Fake::always(|| {
        Reply::json(
            400,
            json!({ "error": { "message": "Invalid size", "type": "invalid_request_error", "param": "size", "code": null } }),
        )
    })
    .await;
    let error = openai(&fake)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "invalid_input", "{error}");
}

#[tokio::test]
async fn openai_rate_limit_is_transient() {
    let fake = Fake::always(|| {
        Reply::json(
            429,
            json!({ "error": { "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded" } }),
        )
    })
    .await;
    let error = openai(&fake)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn openai_server_error_is_transient() {
    let fake = Fake::always(|| {
        Reply::json(
            500,
            json!({ "error": { "message": "The server had an error", "type": "server_error" } }),
        )
    })
    .await;
    let error = openai(&fake)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn openai_slow_answer_times_out_as_transient() {
    let answer = json!({ "data": [{ "b64_json": STANDARD.encode(png("late")) }] });
    let fake = Fake::always(move || Reply::json(200, answer.clone()).after(SLOW)).await;
    let error = openai(&fake)
        .with_timeout(SHORT)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn openai_malformed_json_is_a_permanent_malformed_response() {
    let fake = Fake::always(|| Reply::bytes(200, "application/json", b"{]".to_vec())).await;
    let error = openai(&fake)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
}

// ---------------------------------------------------------------------------------------
// The local renderer.

fn decoded_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG signature");
    let picture = image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap();
    (picture.width(), picture.height())
}

#[tokio::test]
async fn local_renderer_draws_pngs_sized_by_the_aspect_ratio() {
    let renderer = LocalRenderer::new();
    for (ratio, size) in [
        (AspectRatio::of(1, 1), (512, 512)),
        (AspectRatio::of(16, 9), (512, 288)),
        (AspectRatio::of(9, 16), (288, 512)),
        (AspectRatio::of(3, 2), (512, 341)),
        (AspectRatio::of(21, 9), (512, 219)),
    ] {
        let png = renderer
            .generate(&request("nano-banana", ratio, &[]))
            .await
            .unwrap();
        assert_eq!(decoded_size(&png), size, "{ratio}");
    }
    assert_eq!(renderer.name(), "local");
}

#[test]
fn local_renderer_is_deterministic_and_prompts_and_indexes_differ() {
    let draw = |prompt: &str, index: u32| {
        LocalRenderer::render(prompt, index, AspectRatio::of(16, 9), None).unwrap()
    };
    assert_eq!(draw("a red fox", 0), draw("a red fox", 0));
    assert_ne!(draw("a red fox", 0), draw("a blue fox", 0));
    assert_ne!(draw("a red fox", 0), draw("a red fox", 1));
}

#[test]
fn local_renderer_tints_from_a_reference_and_refuses_an_unreadable_one() {
    let plain = LocalRenderer::render("p", 0, AspectRatio::SQUARE, None).unwrap();
    let reference = png("reference");
    let tinted = LocalRenderer::render("p", 0, AspectRatio::SQUARE, Some(&reference)).unwrap();
    assert_ne!(plain, tinted);
    assert_eq!(decoded_size(&tinted), (512, 512));
    let error =
        LocalRenderer::render("p", 0, AspectRatio::SQUARE, Some(b"not an image")).unwrap_err();
    assert_eq!(code(&error), "invalid_input", "{error}");
}

// ---------------------------------------------------------------------------------------
// Replicate (predictions API, every model).

fn replicate(fake: &Fake) -> ReplicateProvider {
    ReplicateProvider::new(&fake.base, key(), ReplicateModels::default())
        .unwrap()
        .with_wait(5)
        .with_poll_interval(Duration::from_millis(10))
        .with_timeout(Duration::from_secs(5))
        .with_loopback_http(true)
}

/// A prediction object as Replicate returns it.
fn prediction(base: &str, status: &str, output: Value, error: Value) -> Value {
    json!({
        "id": "ufawqhfynnddngldkgtslldrkq",
        "model": "black-forest-labs/flux-kontext-pro",
        "version": "hidden",
        "input": {},
        "logs": "",
        "output": output,
        "error": error,
        "status": status,
        "created_at": "2025-06-01T12:00:00.000Z",
        "urls": {
            "cancel": format!("{base}/v1/predictions/ufawqhfynnddngldkgtslldrkq/cancel"),
            "get": format!("{base}/v1/predictions/ufawqhfynnddngldkgtslldrkq"),
        }
    })
}

/// A Replicate fake: the create answers `created` (201) with the first of `statuses`; each
/// poll answers the next (the last repeats); `succeeded` points at an output on the fake.
async fn replicate_fake(statuses: &'static [&'static str], output: Vec<u8>) -> Fake {
    let seen = AtomicUsize::new(0);
    Fake::start(move |req, base| {
        let answer = |n: usize| {
            let status = statuses[n.min(statuses.len() - 1)];
            let out = if status == "succeeded" {
                json!([format!("{base}/delivery/pbxt/abc/output.png")])
            } else {
                Value::Null
            };
            prediction(base, status, out, Value::Null)
        };
        if req.method == "POST" && req.path.ends_with("/predictions") {
            Reply::json(201, answer(seen.fetch_add(1, Ordering::SeqCst)))
        } else if req.path.starts_with("/v1/predictions/") {
            Reply::json(200, answer(seen.fetch_add(1, Ordering::SeqCst)))
        } else if req.path.starts_with("/delivery/") {
            Reply::bytes(200, "image/png", output.clone())
        } else {
            Reply::json(
                404,
                json!({ "title": "Not found", "detail": "Not found", "status": 404 }),
            )
        }
    })
    .await
}

#[tokio::test]
async fn replicate_creates_a_prediction_with_prefer_wait_and_downloads_its_output_at_once() {
    let image = png("replicate");
    let fake = replicate_fake(&["succeeded"], image.clone()).await;
    let references = [reference("edit me")];

    let got = replicate(&fake)
        .generate(&request(
            "flux-kontext-pro",
            AspectRatio::of(16, 9),
            &references,
        ))
        .await
        .unwrap();

    assert_eq!(got, image);
    let sent = fake.requests();
    let paths: Vec<&str> = sent.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/models/black-forest-labs/flux-kontext-pro/predictions",
            "/delivery/pbxt/abc/output.png",
        ]
    );
    let create = &sent[0];
    assert_eq!(create.method, "POST");
    assert_eq!(create.header("authorization"), Some("Bearer test-key-123"));
    assert_eq!(create.header("prefer"), Some("wait=5"));
    assert_eq!(create.header("content-type"), Some("application/json"));
    assert_eq!(
        create.header("content-length"),
        Some(create.body.len().to_string().as_str()),
        "the spliced body is sent with its length"
    );
    let body = create.json();
    assert_eq!(body["input"]["prompt"], "a banana wearing a tuxedo");
    assert_eq!(body["input"]["aspect_ratio"], "16:9");
    assert_eq!(body["input"]["output_format"], "png");
    assert_eq!(
        body["input"]["input_image"],
        format!(
            "data:image/png;base64,{}",
            STANDARD.encode(references[0].bytes())
        )
    );
    assert_eq!(
        sent[1].header("authorization"),
        None,
        "the token is not sent to the delivery host"
    );
}

#[tokio::test]
async fn replicate_polls_urls_get_while_starting_and_processing_until_succeeded() {
    let fake = replicate_fake(&["starting", "processing", "succeeded"], png("poll")).await;

    replicate(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap();

    let sent = fake.requests();
    let paths: Vec<&str> = sent.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/models/google/nano-banana/predictions",
            "/v1/predictions/ufawqhfynnddngldkgtslldrkq",
            "/v1/predictions/ufawqhfynnddngldkgtslldrkq",
            "/delivery/pbxt/abc/output.png",
        ]
    );
    for poll in &sent[1..3] {
        assert_eq!(poll.method, "GET");
        assert_eq!(poll.header("authorization"), Some("Bearer test-key-123"));
    }
    assert!(sent[0].json()["input"].get("image_input").is_none());
}

#[tokio::test]
async fn replicate_sends_each_model_the_input_its_family_takes() {
    let fake = replicate_fake(&["succeeded"], png("families")).await;
    let provider = replicate(&fake);
    let references = [
        reference("one"),
        reference("two").with_url("https://bucket.s3.amazonaws.com/uploads/two?X-Amz-Signature=x"),
    ];

    for model in ["seedream-4.0", "nano-banana-pro"] {
        provider
            .generate(&request(model, AspectRatio::of(4, 3), &references))
            .await
            .unwrap();
    }

    let creates: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(
        creates[0].path,
        "/v1/models/bytedance/seedream-4/predictions"
    );
    let seedream = creates[0].json();
    assert_eq!(seedream["input"]["size"], "2K");
    assert_eq!(seedream["input"]["max_images"], 1);
    assert_eq!(seedream["input"]["aspect_ratio"], "4:3");
    let images = seedream["input"]["image_input"].as_array().unwrap();
    assert_eq!(
        images[0],
        format!(
            "data:image/png;base64,{}",
            STANDARD.encode(references[0].bytes())
        )
    );
    assert_eq!(
        images[1], "https://bucket.s3.amazonaws.com/uploads/two?X-Amz-Signature=x",
        "a reference with a signed URL is fetched by Replicate itself"
    );
    assert_eq!(
        creates[1].path,
        "/v1/models/google/nano-banana-pro/predictions"
    );
    assert_eq!(
        creates[1].json()["input"]["image_input"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn replicate_failed_with_a_safety_error_is_a_permanent_refusal() {
    let fake = Fake::start(|_, base| {
        Reply::json(
            201,
            prediction(
                base,
                "failed",
                Value::Null,
                json!("E005: The input or output was flagged as sensitive. Please try again with different inputs."),
            ),
        )
    })
    .await;
    let error = replicate(&fake)
        .generate(&request("flux-kontext-pro", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "content_refused", "{error}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn replicate_failed_while_starting_is_transient_and_other_failures_are_no_image() {
    let timeout = Fake::always(|| {
        Reply::json(
            201,
            prediction(
                "https://api.replicate.com",
                "failed",
                Value::Null,
                json!("E6716: Timeout starting prediction"),
            ),
        )
    })
    .await;
    let broken = Fake::always(|| {
        Reply::json(
            201,
            prediction(
                "https://api.replicate.com",
                "failed",
                Value::Null,
                json!("CUDA out of bounds"),
            ),
        )
    })
    .await;
    let request = request("nano-banana", AspectRatio::SQUARE, &[]);
    let transient = replicate(&timeout).generate(&request).await.unwrap_err();
    let permanent = replicate(&broken).generate(&request).await.unwrap_err();
    assert!(transient.is_transient(), "{transient}");
    assert_eq!(code(&permanent), "no_image", "{permanent}");
}

#[tokio::test]
async fn replicate_canceled_prediction_is_transient() {
    let fake = replicate_fake(&["starting", "canceled"], Vec::new()).await;
    let error = replicate(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn replicate_invalid_input_422_is_permanent() {
    let fake = Fake::always(|| {
        Reply::json(
            422,
            json!({
                "title": "Input validation failed",
                "detail": "- input.aspect_ratio: aspect_ratio must be one of the following: ...",
                "status": 422,
                "invalid_fields": [{"type": "enum", "field": "input.aspect_ratio", "description": "..."}]
            }),
        )
    })
    .await;
    let error = replicate(&fake)
        .generate(&request("nano-banana", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "invalid_input", "{error}");
    assert!(error.to_string().contains("aspect_ratio"), "{error}");
}

#[tokio::test]
async fn replicate_throttled_429_and_server_errors_are_transient() {
    let throttled = Fake::always(|| {
        Reply::json(
            429,
            json!({ "detail": "Request was throttled. Expected available in 1 second." }),
        )
    })
    .await;
    let down =
        Fake::always(|| Reply::bytes(502, "text/html", b"<html>Bad gateway</html>".to_vec())).await;
    let unpaid = Fake::always(|| {
        Reply::json(402, json!({ "title": "Payment required", "detail": "You have insufficient credit", "status": 402 }))
    })
    .await;
    let request = request("nano-banana", AspectRatio::SQUARE, &[]);
    for fake in [&throttled, &down, &unpaid] {
        let error = replicate(fake).generate(&request).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
    }
    let error = replicate(&throttled).generate(&request).await.unwrap_err();
    assert!(error.to_string().contains("throttled"), "{error}");
}

#[tokio::test]
async fn replicate_output_off_its_delivery_host_and_polling_off_its_api_host_are_refused() {
    let foreign_output = Fake::always(|| {
        Reply::json(
            201,
            prediction(
                "http://127.0.0.1:9",
                "succeeded",
                json!("https://evil.example/output.png"),
                Value::Null,
            ),
        )
    })
    .await;
    let foreign_poll = Fake::always(|| {
        Reply::json(
            201,
            prediction(
                "https://metadata.evil.example",
                "starting",
                Value::Null,
                Value::Null,
            ),
        )
    })
    .await;
    let request = request("nano-banana", AspectRatio::SQUARE, &[]);
    let not_fetched =
        ReplicateProvider::new(&foreign_output.base, key(), ReplicateModels::default())
            .unwrap()
            .with_timeout(SHORT);
    let error = not_fetched.generate(&request).await.unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
    let error = replicate(&foreign_poll)
        .generate(&request)
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
    assert_eq!(
        foreign_poll.requests().len(),
        1,
        "nothing was fetched from it"
    );
    assert!(
        ReplicateProvider::new(
            "https://api.replicate.com",
            key(),
            ReplicateModels::default()
        )
        .is_ok()
    );
    let delivery = AllowedHosts::new(shared::providers::replicate::DELIVERY_HOSTS.iter().copied());
    assert!(
        delivery
            .check("https://pbxt.replicate.delivery/abc/out.png")
            .is_ok()
    );
    assert!(
        delivery
            .check("https://replicate.delivery.evil.example/out.png")
            .is_err()
    );
}

#[tokio::test]
async fn replicate_sora_image_needs_a_configured_model() {
    let fake = replicate_fake(&["succeeded"], png("sora")).await;
    let error = replicate(&fake)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "invalid_input", "{error}");
    assert!(fake.requests().is_empty());
    let models = ReplicateModels::from_lookup(|name| {
        (name == "REPLICATE_MODEL_SORA_IMAGE").then(|| "acme/gpt-image".to_string())
    })
    .unwrap();
    ReplicateProvider::new(&fake.base, key(), models)
        .unwrap()
        .with_loopback_http(true)
        .generate(&request("sora-image", AspectRatio::SQUARE, &[]))
        .await
        .unwrap();
    let create = &fake.requests()[0];
    assert_eq!(create.path, "/v1/models/acme/gpt-image/predictions");
    assert_eq!(create.json()["input"]["number_of_images"], 1);
}

// ---------------------------------------------------------------------------------------
// The download helper.

const CAP: usize = 1024;

#[tokio::test]
async fn download_refuses_http_to_a_non_loopback_host() {
    let client = LazyClient::new(SHORT);
    let client = client.get().unwrap();
    let allowed = AllowedHosts::new(["bfl.ai"]).with_loopback_http(true);
    let error = http::download(client, "http://delivery.bfl.ai/x.png", &allowed, CAP)
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
    assert!(error.to_string().contains("https"), "{error}");
}

#[tokio::test]
async fn download_refuses_a_host_that_is_not_allowed() {
    let client = LazyClient::new(SHORT);
    let client = client.get().unwrap();
    let allowed = AllowedHosts::new(["bfl.ai"]);
    for url in [
        "https://evil.example/x.png",
        "https://evilbfl.ai/x.png",
        "https://bfl.ai.evil.example/x.png",
        "https://user:pw@delivery.bfl.ai/x.png",
        "http://127.0.0.1:9/x.png",
        "file:///etc/passwd",
    ] {
        let error = http::download(client, url, &allowed, CAP)
            .await
            .unwrap_err();
        assert_eq!(code(&error), "malformed_response", "{url}: {error}");
    }
    assert!(allowed.check("https://bfl.ai/x.png").is_ok());
    assert!(
        allowed
            .check("https://Delivery-EU1.BFL.ai/r/x.png?sig=1")
            .is_ok()
    );
}

#[tokio::test]
async fn download_does_not_follow_a_redirect() {
    let fake = Fake::start(|req, base| {
        if req.path == "/start" {
            Reply::redirect(format!("{base}/image.png"))
        } else {
            Reply::bytes(200, "image/png", png("target"))
        }
    })
    .await;
    let client = LazyClient::new(SHORT);
    let client = client.get().unwrap();
    let allowed = AllowedHosts::default().with_loopback_http(true);
    let error = http::download(
        client,
        &format!("{}/start", fake.base),
        &allowed,
        CAP * 1024,
    )
    .await
    .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
    assert_eq!(fake.only_request().path, "/start");
}

#[tokio::test]
async fn download_refuses_a_body_over_the_cap() {
    let fake = Fake::always(|| Reply::bytes(200, "image/png", vec![7; CAP + 1])).await;
    let client = LazyClient::new(SHORT);
    let client = client.get().unwrap();
    let allowed = AllowedHosts::default().with_loopback_http(true);
    let url = format!("{}/big.png", fake.base);
    let error = http::download(client, &url, &allowed, CAP)
        .await
        .unwrap_err();
    assert_eq!(code(&error), "malformed_response", "{error}");
    let exact = http::download(client, &url, &allowed, CAP + 1)
        .await
        .unwrap();
    assert_eq!(exact.len(), CAP + 1);
}

#[tokio::test]
async fn download_maps_server_errors_to_transient() {
    let fake = Fake::always(|| Reply::bytes(503, "text/plain", b"busy".to_vec())).await;
    let client = LazyClient::new(SHORT);
    let client = client.get().unwrap();
    let allowed = AllowedHosts::default().with_loopback_http(true);
    let error = http::download(client, &format!("{}/x", fake.base), &allowed, CAP)
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
}

// ---------------------------------------------------------------------------------------
// Wiring from configuration.

fn settings(pairs: &[(&str, &str)]) -> Result<ProviderSettings, shared::config::ConfigError> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ProviderSettings::from_lookup(move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

#[test]
fn provider_settings_default_to_the_public_endpoints() {
    let settings = settings(&[]).unwrap();
    assert_eq!(
        settings.gemini_base_url,
        "https://generativelanguage.googleapis.com"
    );
    assert_eq!(settings.bfl_base_url, "https://api.bfl.ai");
    assert_eq!(
        settings.ark_base_url,
        "https://ark.ap-southeast.bytepluses.com"
    );
    assert_eq!(settings.openai_base_url, "https://api.openai.com");
    assert_eq!(settings.openai_image_model, "gpt-image-1");
    assert!(!settings.allow_loopback);
}

#[test]
fn provider_settings_allow_plain_http_only_to_loopback_when_asked() {
    let local = [("GEMINI_BASE_URL", "http://127.0.0.1:8081/")];
    assert!(
        settings(&local)
            .unwrap_err()
            .to_string()
            .contains("GEMINI_BASE_URL")
    );
    let allowed = settings(&[local[0], ("PROVIDER_ALLOW_LOOPBACK", "1")]).unwrap();
    assert_eq!(allowed.gemini_base_url, "http://127.0.0.1:8081");
    assert!(allowed.allow_loopback);
    assert!(
        settings(&[
            ("BFL_BASE_URL", "http://bfl.example"),
            ("PROVIDER_ALLOW_LOOPBACK", "1")
        ])
        .is_err()
    );
    assert!(settings(&[("ARK_BASE_URL", "not a url")]).is_err());
}

#[test]
fn a_selected_provider_without_its_key_is_an_error_naming_the_key() {
    let models = ModelProviders::parse("nano-banana=gemini,flux-kontext-pro=bfl").unwrap();
    let mut secrets = Secrets::from_pairs([("GEMINI_API_KEY", "g")]);
    let error = build_providers(&models, &ProviderSettings::default(), &mut secrets).unwrap_err();
    assert!(error.to_string().contains("BFL_API_KEY"), "{error}");
}

#[test]
fn providers_are_built_per_model_and_unselected_models_are_unavailable() {
    let models =
        ModelProviders::parse("nano-banana=gemini,nano-banana-pro=gemini,sora-image=openai,seedream-4.0=ark,flux-kontext-max=local")
            .unwrap();
    let mut secrets = Secrets::from_pairs([
        ("GEMINI_API_KEY", "g"),
        ("OPENAI_API_KEY", "o"),
        ("ARK_API_KEY", "a"),
    ]);
    let providers = build_providers(&models, &ProviderSettings::default(), &mut secrets).unwrap();
    let name = |model: &str| providers.chain(model).map(|c| c.names());
    assert_eq!(name("nano-banana"), Some(vec!["gemini"]));
    assert_eq!(name("nano-banana-pro"), Some(vec!["gemini"]));
    assert_eq!(name("sora-image"), Some(vec!["openai"]));
    assert_eq!(name("seedream-4.0"), Some(vec!["ark"]));
    assert_eq!(name("flux-kontext-max"), Some(vec!["local"]));
    assert_eq!(
        name("flux-kontext-pro"),
        None,
        "no silent fallback to local"
    );
    let first = |model: &str| providers.chain(model).unwrap().hosts()[0].clone();
    assert!(Arc::ptr_eq(
        &first("nano-banana").provider,
        &first("nano-banana-pro").provider
    ));
    assert!(
        Arc::ptr_eq(
            &first("nano-banana").breaker,
            &first("nano-banana-pro").breaker
        ),
        "one breaker per host, whatever model it serves"
    );
    assert!(secrets.take("GEMINI_API_KEY").is_none(), "keys are taken");
}

#[test]
fn every_model_runs_locally_with_no_keys() {
    let models = ModelProviders::parse("*=local").unwrap();
    let providers = build_providers(
        &models,
        &ProviderSettings::default(),
        &mut Secrets::default(),
    )
    .unwrap();
    for model in shared::domain::catalog::MODELS {
        assert_eq!(
            providers.chain(model.id).map(|c| c.names()),
            Some(vec!["local"])
        );
    }
}

#[test]
fn a_provider_that_cannot_serve_a_model_is_a_configuration_error() {
    let models = ModelProviders::parse("nano-banana=bfl").unwrap();
    let mut secrets = Secrets::from_pairs([("BFL_API_KEY", "b")]);
    let error = build_providers(&models, &ProviderSettings::default(), &mut secrets).unwrap_err();
    assert!(error.to_string().contains("nano-banana"), "{error}");
}

#[test]
fn a_model_with_two_hosts_gets_a_chain_in_that_order_and_each_host_needs_its_key() {
    let models =
        ModelProviders::parse("flux-kontext-pro=bfl,replicate,nano-banana=replicate").unwrap();
    let mut secrets = Secrets::from_pairs([("BFL_API_KEY", "b"), ("REPLICATE_API_TOKEN", "r")]);
    let providers = build_providers(&models, &ProviderSettings::default(), &mut secrets).unwrap();
    assert_eq!(
        providers.chain("flux-kontext-pro").map(|c| c.names()),
        Some(vec!["bfl", "replicate"])
    );
    assert_eq!(
        providers.chain("nano-banana").map(|c| c.names()),
        Some(vec!["replicate"])
    );
    assert!(providers.chain("flux-kontext-max").is_none());

    let mut without = Secrets::from_pairs([("BFL_API_KEY", "b")]);
    let error = build_providers(&models, &ProviderSettings::default(), &mut without).unwrap_err();
    assert!(error.to_string().contains("REPLICATE_API_TOKEN"), "{error}");
}

#[test]
fn replicate_serves_sora_image_only_with_a_model_configured() {
    let models = ModelProviders::parse("sora-image=openai,replicate").unwrap();
    let mut secrets = Secrets::from_pairs([("OPENAI_API_KEY", "o"), ("REPLICATE_API_TOKEN", "r")]);
    let error = build_providers(&models, &ProviderSettings::default(), &mut secrets).unwrap_err();
    assert!(error.to_string().contains("sora-image"), "{error}");

    let configured = settings(&[("REPLICATE_MODEL_SORA_IMAGE", "acme/gpt-image")]).unwrap();
    let mut secrets = Secrets::from_pairs([("OPENAI_API_KEY", "o"), ("REPLICATE_API_TOKEN", "r")]);
    let providers = build_providers(&models, &configured, &mut secrets).unwrap();
    assert_eq!(
        providers.chain("sora-image").map(|c| c.names()),
        Some(vec!["openai", "replicate"])
    );
    assert_eq!(
        settings(&[]).unwrap().replicate_base_url,
        "https://api.replicate.com"
    );
}
