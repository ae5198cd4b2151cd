//! The SDK hello-world as the functions could build it on Lambda: region and credentials
//! taken from the environment Lambda sets, instead of the default provider chains (which
//! read profile files and build an STS client, TLS roots and all, for web identity).

use aws_config::BehaviorVersion;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::region::RegionProviderChain;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let region = RegionProviderChain::first_try(
        aws_config::environment::EnvironmentVariableRegionProvider::new(),
    );
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .load()
        .await;
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
