//! The AWS adapters: the only code that touches `aws_sdk_*` types.

pub mod dynamo;
pub mod secrets;

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the SDK configuration once (region, credentials, and `AWS_ENDPOINT_URL` when
/// the emulator is in use).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An S3 client; path-style addressing when an endpoint override is set, because the
/// emulator on 127.0.0.1 has no virtual-host buckets.
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style = sdk.endpoint_url().is_some();
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
