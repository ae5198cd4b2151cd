//! A job's reference images: read from S3 within the attempt's time, checked, encoded
//! once and shared by every image call of the job.
//!
//! A reference that is gone, over the upload limit (a provider's result may be larger
//! than an upload may) or not a PNG, JPEG or WebP image can never work: the generation
//! fails as `invalid_input` and is refunded. A failure of S3 is ours and retried.
//!
//! The encoded references of all records of a warm instance share one memory pool
//! (`WorkerConfig::reference_memory`), so that two of the largest jobs at once cannot
//! exhaust the function's memory: a record waits for its share within its references
//! time, else it is retried later.

use shared::aws::dynamo::StoreError;
use shared::aws::s3::Object;
use shared::domain::generation::{Generation, GenerationError};
use shared::providers::{Chain, ReferenceImage};
use tokio::sync::OwnedSemaphorePermit;

use crate::Worker;
use crate::images::detect;
use crate::job::{Attempt, error};

/// Largest reference image read back from S3 (uploads are capped at 10 MiB).
pub const MAX_REFERENCE_BYTES: usize = 10 * 1024 * 1024;

/// A job's references, holding their share of the memory pool until dropped.
pub(crate) struct References {
    pub images: Vec<ReferenceImage>,
    _memory: Option<OwnedSemaphorePermit>,
}

impl Worker {
    /// The references, or why the request can never work; `Err` for a failure of ours.
    pub(crate) async fn references(
        &self,
        generation: &Generation,
        chain: &Chain,
        attempt: &Attempt,
    ) -> Result<Result<References, GenerationError>, StoreError> {
        if generation.reference_keys.is_empty() {
            return Ok(Ok(References {
                images: Vec::new(),
                _memory: None,
            }));
        }
        let out_of_time = || {
            StoreError::Unavailable(anyhow::anyhow!(
                "the references were not read within {:?}",
                self.config.references_budget
            ))
        };
        // Base64 is 4/3 of the bytes; a permit is 1 KiB.
        let share = (generation.reference_keys.len() * MAX_REFERENCE_BYTES.div_ceil(3) * 4)
            .div_ceil(1024)
            .min(self.config.reference_memory / 1024)
            .max(1) as u32;
        let memory = tokio::time::timeout_at(
            attempt.references_until,
            self.reference_memory.clone().acquire_many_owned(share),
        )
        .await
        .map_err(|_| out_of_time())?
        .expect("the pool is never closed");
        let with_urls = chain
            .hosts()
            .iter()
            .any(|h| h.provider.fetches_references());
        let read = tokio::time::timeout_at(
            attempt.references_until,
            self.read_references(&generation.reference_keys, with_urls),
        )
        .await
        .map_err(|_| out_of_time())??;
        Ok(read.map(|images| References {
            images,
            _memory: Some(memory),
        }))
    }

    async fn read_references(
        &self,
        keys: &[String],
        with_urls: bool,
    ) -> Result<Result<Vec<ReferenceImage>, GenerationError>, StoreError> {
        let mut images = Vec::with_capacity(keys.len());
        for key in keys {
            let bytes = match self.blobs.get(key, MAX_REFERENCE_BYTES).await? {
                Object::Found(bytes) => bytes,
                Object::Missing => {
                    return Ok(Err(error(
                        "invalid_input",
                        "a reference image is no longer available",
                    )));
                }
                Object::TooLarge { size } => {
                    tracing::warn!(
                        size,
                        limit = MAX_REFERENCE_BYTES,
                        "reference over the limit"
                    );
                    return Ok(Err(error(
                        "invalid_input",
                        "a reference image is larger than 10 MiB",
                    )));
                }
            };
            let Some((content_type, _)) = detect(&bytes) else {
                return Ok(Err(error(
                    "invalid_input",
                    "a reference image is not a PNG, JPEG or WebP image",
                )));
            };
            // Encoded once here; the raw bytes are dropped at the end of this iteration.
            let mut image = ReferenceImage::new(&bytes, content_type);
            if with_urls {
                image = image.with_url(self.blobs.presign_download(key).await?);
            }
            images.push(image);
        }
        Ok(Ok(images))
    }
}
