//! Secrets deployed in SSM Parameter Store are read at cold start, in one call, and a
//! missing one stops the function with a message naming it.

use e2e_tests::sdk_config;
use shared::aws::secrets::Secrets;

#[tokio::test]
async fn a_secret_named_by_its_param_variable_is_read_from_ssm_as_a_secure_string() {
    let sdk = sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let name = format!("/nb/test/{}", ulid::Ulid::new());
    ssm.put_parameter()
        .name(&name)
        .value("s3cr3t-from-ssm-0123456789abcdefghijkl")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    // SAFETY: nextest runs each test in its own process; nothing else reads these.
    unsafe {
        std::env::set_var("NB_TEST_SECRET_PARAM", &name);
        std::env::remove_var("NB_TEST_SECRET");
    }

    let mut secrets = Secrets::load(&sdk, &["NB_TEST_SECRET"]).await.unwrap();

    let secret = secrets.take("NB_TEST_SECRET").expect("loaded from SSM");
    assert_eq!(secret.expose(), "s3cr3t-from-ssm-0123456789abcdefghijkl");
    assert_eq!(format!("{secret:?}"), "Secret([redacted])");
}

#[tokio::test]
async fn a_param_naming_a_missing_parameter_stops_the_function_with_its_name() {
    let sdk = sdk_config().await;
    // SAFETY: as above.
    unsafe {
        std::env::set_var("NB_MISSING_SECRET_PARAM", "/nb/test/does-not-exist");
        std::env::remove_var("NB_MISSING_SECRET");
    }

    let error = Secrets::load(&sdk, &["NB_MISSING_SECRET"])
        .await
        .unwrap_err();

    assert!(
        error.to_string().contains("/nb/test/does-not-exist"),
        "{error}"
    );
}

#[tokio::test]
async fn an_empty_variable_falls_back_to_the_parameter_it_is_declared_beside() {
    // The template declares SESSION_SECRET empty (for sam local) next to its _PARAM.
    let sdk = sdk_config().await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let name = format!("/nb/test/{}", ulid::Ulid::new());
    ssm.put_parameter()
        .name(&name)
        .value("s3cr3t-behind-an-empty-variable-0123456789")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let env = |var: &str| match var {
        "NB_DECLARED_SECRET" => Some(String::new()),
        "NB_DECLARED_SECRET_PARAM" => Some(name.clone()),
        _ => None,
    };

    let mut secrets = Secrets::load_from(&sdk, &["NB_DECLARED_SECRET"], env)
        .await
        .unwrap();

    let secret = secrets.take("NB_DECLARED_SECRET").expect("read from SSM");
    assert_eq!(
        secret.expose(),
        "s3cr3t-behind-an-empty-variable-0123456789"
    );
}
