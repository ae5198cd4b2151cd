//! Why the template declares `EMULATOR_ENDPOINT_URL` for `sam local` instead of the standard
//! `AWS_ENDPOINT_URL`: the AWS SDK does not treat an empty `AWS_ENDPOINT_URL` as unset. The
//! shared configuration drops it as an invalid URL, but each client reads it again through
//! its service configuration and takes `""` as its endpoint, and the first request panics.
//! If this test ever fails, the SDK changed and the README's `sam local` section should say so.
//!
//! One test in its own binary: it sets process variables before any thread starts.

use std::panic::AssertUnwindSafe;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Stops every request before it is sent, naming where it would have gone: whatever the
/// SDK does with the empty endpoint, nothing leaves the machine.
#[derive(Debug)]
struct NeverSend;

impl Intercept for NeverSend {
    fn name(&self) -> &'static str {
        "NeverSend"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        Err(format!("would have sent to {}", context.request().uri()).into())
    }
}

#[test]
fn the_sdk_takes_an_empty_aws_endpoint_url_as_the_endpoint_and_fails_every_call() {
    // SAFETY: the only test of this binary, before the runtime (or any thread) exists.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", "");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "empty-endpoint-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "empty-endpoint-test");
        std::env::remove_var("EMULATOR_ENDPOINT_URL");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Our loader refuses it at cold start, with a message naming it.
    let refused = runtime
        .block_on(shared::aws::load_sdk_config())
        .unwrap_err();
    assert!(
        refused.to_string().contains("AWS_ENDPOINT_URL"),
        "{refused}"
    );

    // The SDK's own loader accepts it, and the client's first call cannot be sent.
    // The expected panic is this test's subject, not news: keep it out of the output.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            assert_eq!(
                sdk.endpoint_url(),
                None,
                "the shared config drops the empty URL"
            );
            let config = aws_sdk_sqs::config::Builder::from(&sdk)
                .interceptor(NeverSend)
                .build();
            aws_sdk_sqs::Client::from_conf(config)
                .list_queues()
                .send()
                .await
                .map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())
        })
    }));
    std::panic::set_hook(hook);
    match outcome {
        Err(_panic) => {} // aws-smithy-types: "URL was unset"
        Ok(answer) => panic!(
            "the SDK no longer panics on an empty AWS_ENDPOINT_URL ({answer:?}): \
             revisit EMULATOR_ENDPOINT_URL and the README's sam local section"
        ),
    }
}
