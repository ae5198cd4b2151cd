//! Creates the local resources idempotently, with the settings of `template.yaml`.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, CorsConfiguration, CorsRule, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;

/// Names of one stack's resources.
#[derive(Debug, Clone)]
pub struct Names {
    pub table: String,
    pub bucket: String,
    pub queue: String,
    pub dlq: String,
    pub hooks_queue: String,
    pub hooks_dlq: String,
}

impl Names {
    /// `prefix`, `prefix-images`, `prefix-generations`, `prefix-generations-dlq`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            table: prefix.to_string(),
            bucket: format!("{prefix}-images"),
            queue: format!("{prefix}-generations"),
            dlq: format!("{prefix}-generations-dlq"),
            hooks_queue: format!("{prefix}-hooks"),
            hooks_dlq: format!("{prefix}-hooks-dlq"),
        }
    }
}

/// Where the queues ended up.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub queue_url: String,
    pub dlq_url: String,
    pub hooks_queue_url: String,
    pub hooks_dlq_url: String,
}

// template.yaml: worker timeout 180 s, visibility 6x that, 8 receives (5 attempts and
// room for records returned unclaimed), DLQ kept longer. A test keeps them equal.
pub const VISIBILITY_TIMEOUT_SECS: &str = "1080";
pub const QUEUE_RETENTION_SECS: &str = "345600";
pub const DLQ_RETENTION_SECS: &str = "1209600";
pub const MAX_RECEIVE_COUNT: u32 = 8;
pub const OPEN_INDEX: &str = "open";

pub async fn ensure_all(sdk: &SdkConfig, names: &Names) -> anyhow::Result<Provisioned> {
    ensure_table(&aws_sdk_dynamodb::Client::new(sdk), &names.table).await?;
    ensure_bucket(&shared::aws::s3_client(sdk), &names.bucket).await?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let (queue_url, dlq_url) = ensure_queues(&sqs, &names.queue, &names.dlq, &GENERATIONS).await?;
    let (hooks_queue_url, hooks_dlq_url) =
        ensure_queues(&sqs, &names.hooks_queue, &names.hooks_dlq, &HOOKS).await?;
    Ok(Provisioned {
        queue_url,
        dlq_url,
        hooks_queue_url,
        hooks_dlq_url,
    })
}

/// A queue and its DLQ, as template.yaml defines them.
pub struct QueueSettings {
    visibility_timeout_secs: &'static str,
    retention_secs: &'static str,
    dlq_retention_secs: &'static str,
    max_receive_count: u32,
}

const GENERATIONS: QueueSettings = QueueSettings {
    visibility_timeout_secs: VISIBILITY_TIMEOUT_SECS,
    retention_secs: QUEUE_RETENTION_SECS,
    dlq_retention_secs: DLQ_RETENTION_SECS,
    max_receive_count: MAX_RECEIVE_COUNT,
};

// template.yaml's HooksQueue: the same visibility (the worker function consumes it);
// more receives than the backoff schedule has attempts; kept longer than that schedule.
const HOOKS: QueueSettings = QueueSettings {
    visibility_timeout_secs: VISIBILITY_TIMEOUT_SECS,
    retention_secs: QUEUE_RETENTION_SECS,
    dlq_retention_secs: DLQ_RETENTION_SECS,
    max_receive_count: 20,
};

pub async fn ensure_table(client: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<()> {
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("name and type are set")
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("name and type are set")
    };
    let open_index = GlobalSecondaryIndex::builder()
        .index_name(OPEN_INDEX)
        .key_schema(key("open_pk", KeyType::Hash))
        .key_schema(key("open_sk", KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .attribute_definitions(attribute("open_pk"))
        .attribute_definitions(attribute("open_sk"))
        .global_secondary_indexes(open_index)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("creating table {table}"))),
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

pub async fn ensure_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<()> {
    match client.create_bucket().bucket(bucket).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error().is_some_and(|e| {
                e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
            }) => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("creating bucket {bucket}"))),
    }
    let expire_uploads = LifecycleRule::builder()
        .id("expire-uploads")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("uploads/").build())
        .expiration(LifecycleExpiration::builder().days(1).build())
        .build()?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(expire_uploads)
                .build()?,
        )
        .send()
        .await
        .map_err(|e| anyhow::Error::new(e).context("configuring the bucket lifecycle"))?;
    Ok(())
}

/// The image bucket's `CorsConfiguration` of `template.yaml` (rule `WebApp`), value for
/// value (a test compares): the browser PUTs uploads to presigned URLs and reads images.
pub const BUCKET_CORS_METHODS: &[&str] = &["PUT", "GET"];
pub const BUCKET_CORS_HEADERS: &[&str] = &["*"];
pub const BUCKET_CORS_EXPOSE: &[&str] = &["ETag"];
pub const BUCKET_CORS_MAX_AGE_SECS: i32 = 3000;

/// Gives the bucket the template's CORS rule for the web app's origins.
pub async fn ensure_bucket_cors(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    origins: &[String],
) -> anyhow::Result<()> {
    if origins.is_empty() {
        return Ok(());
    }
    let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let rule = CorsRule::builder()
        .id("WebApp")
        .set_allowed_origins(Some(origins.to_vec()))
        .set_allowed_methods(Some(strings(BUCKET_CORS_METHODS)))
        .set_allowed_headers(Some(strings(BUCKET_CORS_HEADERS)))
        .set_expose_headers(Some(strings(BUCKET_CORS_EXPOSE)))
        .max_age_seconds(BUCKET_CORS_MAX_AGE_SECS)
        .build()?;
    client
        .put_bucket_cors()
        .bucket(bucket)
        .cors_configuration(CorsConfiguration::builder().cors_rules(rule).build()?)
        .send()
        .await
        .map_err(|e| anyhow::Error::new(e).context("configuring the bucket's CORS"))?;
    Ok(())
}

pub async fn ensure_queues(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    dlq: &str,
    settings: &QueueSettings,
) -> anyhow::Result<(String, String)> {
    let dlq_url = client
        .create_queue()
        .queue_name(dlq)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            settings.dlq_retention_secs,
        )
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            settings.visibility_timeout_secs,
        )
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("no URL for the DLQ"))?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| anyhow::anyhow!("no ARN for the DLQ"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": settings.max_receive_count,
    });
    let queue_url = client
        .create_queue()
        .queue_name(queue)
        .attributes(
            QueueAttributeName::MessageRetentionPeriod,
            settings.retention_secs,
        )
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            settings.visibility_timeout_secs,
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("no URL for the queue"))?;
    Ok((queue_url, dlq_url))
}
