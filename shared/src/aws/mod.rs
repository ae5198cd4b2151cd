//! The AWS adapters: the only code that touches `aws_sdk_*` types.

pub mod counting;
pub mod dynamo;
pub mod s3;
pub mod secrets;
pub mod sqs;

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the SDK configuration once (region, credentials, and `AWS_ENDPOINT_URL` when
/// the emulator is in use).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An S3 client; path-style addressing when an endpoint override is set, because the
/// emulator on 127.0.0.1 has no virtual-host buckets.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    Clients::new(sdk, None).s3
}

/// The three clients, built once from one SDK configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    pub dynamo: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Clients {
    /// With `counter`, every request any of them sends is counted.
    pub fn new(sdk: &SdkConfig, counter: Option<&counting::CallCounter>) -> Self {
        let mut dynamo = aws_sdk_dynamodb::config::Builder::from(sdk);
        let mut s3 =
            aws_sdk_s3::config::Builder::from(sdk).force_path_style(sdk.endpoint_url().is_some());
        let mut sqs = aws_sdk_sqs::config::Builder::from(sdk);
        if let Some(counter) = counter {
            dynamo = dynamo.interceptor(counter.clone());
            s3 = s3.interceptor(counter.clone());
            sqs = sqs.interceptor(counter.clone());
        }
        Self {
            dynamo: aws_sdk_dynamodb::Client::from_conf(dynamo.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
        }
    }
}
