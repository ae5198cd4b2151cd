//! The Lambda events the benchmark feeds the functions: API Gateway HTTP API (v2) requests
//! and SQS batches, in the shapes Lambda delivers (as in `events/`).

use serde_json::{Value, json};
use shared::aws::sqs::GenerationJob;

/// An API Gateway v2 request event.
pub fn http(method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Value {
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut headers = serde_json::Map::new();
    headers.insert("accept".into(), "application/json".into());
    headers.insert(
        "host".into(),
        "abcdef1234.execute-api.us-east-1.amazonaws.com".into(),
    );
    headers.insert("user-agent".into(), "bench/1".into());
    headers.insert("x-forwarded-for".into(), "203.0.113.10".into());
    headers.insert("x-forwarded-port".into(), "443".into());
    headers.insert("x-forwarded-proto".into(), "https".into());
    if let Some(token) = token {
        headers.insert("authorization".into(), format!("Bearer {token}").into());
    }
    if body.is_some() {
        headers.insert("content-type".into(), "application/json".into());
    }
    let now = time::OffsetDateTime::now_utc();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path_only,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abcdef1234",
            "http": {
                "method": method,
                "path": path_only,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "bench/1"
            },
            "requestId": ulid::Ulid::new().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2025:12:00:00 +0000",
            "timeEpoch": now.unix_timestamp() * 1000
        },
        "isBase64Encoded": false
    });
    if !query.is_empty() {
        let params: serde_json::Map<String, Value> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect();
        event["queryStringParameters"] = Value::Object(params);
    }
    if let Some(body) = body {
        event["body"] = Value::from(body.to_string());
    }
    event
}

/// An SQS batch of one record per body, from the queue named `queue`.
pub fn sqs(queue: &str, bodies: &[String]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .map(|body| {
            json!({
                "messageId": ulid::Ulid::new().to_string(),
                "receiptHandle": "not-a-real-handle",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1523232000000",
                    "SenderId": "123456789012",
                    "ApproximateFirstReceiveTimestamp": "1523232000001"
                },
                "messageAttributes": {},
                "md5OfBody": "7b270e59b47ff90a553787216d55d91d",
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// One worker job as its SQS record body.
pub fn job_body(job: &GenerationJob) -> String {
    serde_json::to_string(job).expect("a job always serializes")
}

/// What a reply says, for the tally: the HTTP status of an API Gateway response, the
/// number of failed records of an SQS batch response, or `other`.
pub fn outcome(reply: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(reply) else {
        return "unparsed".into();
    };
    if let Some(status) = value.get("statusCode").and_then(Value::as_u64) {
        return status.to_string();
    }
    if let Some(failures) = value.get("batchItemFailures").and_then(Value::as_array) {
        return if failures.is_empty() {
            "batch ok".into()
        } else {
            format!("{} failed records", failures.len())
        };
    }
    "other".into()
}
