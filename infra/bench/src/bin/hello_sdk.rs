//! The floor of any function that talks to AWS: the bare hello-world plus what every one of
//! ours does at cold start — load the SDK configuration once and build the DynamoDB, S3 and
//! SQS clients from it (as `shared::aws::Clients::new` does, without the crate).

use aws_config::BehaviorVersion;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let clients = (dynamo, s3, sqs);
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| {
        // Held for the life of the process, as a function's state is.
        let _held = &clients;
        async { Ok::<_, Error>(json!({ "statusCode": 200, "body": "hello" })) }
    }))
    .await
}
