//! The images of one attempt: each missing image through its model's hosts in failover
//! order (`shared::providers::failover`), stored under its attempt's key as it arrives.
//! The caller records them with the finish or the release (one write for all).

use std::collections::HashSet;
use std::io::Cursor;

use futures_util::StreamExt;
use shared::aws::dynamo::StoreError;
use shared::domain::catalog::AspectRatio;
use shared::domain::generation::{Generation, GenerationError, StoredImage};
use shared::providers::{Chain, ImageRequest, Made, ProviderError, ReferenceImage};
use tokio::time::Instant;

use crate::Worker;
use crate::job::{Attempt, error};

/// The shortest provider call worth starting.
const MIN_CALL: std::time::Duration = std::time::Duration::from_secs(1);

/// What an attempt's images came to.
#[derive(Default)]
pub(crate) struct Produced {
    /// Stored, not yet recorded.
    pub images: Vec<StoredImage>,
    /// A refusal or an unusable answer: final.
    pub permanent: Option<GenerationError>,
    /// Worth another attempt.
    pub transient: Option<String>,
    /// A failure of ours (storing an image).
    pub ours: Option<StoreError>,
    /// Its owner asked to cancel it: images not yet started were not started.
    pub canceled: bool,
}

/// Why an image was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Too little of the provider window is left: the next attempt makes it.
    OutOfTime,
    /// Its owner asked to cancel it.
    Canceled,
}

/// Why one image was not produced.
enum Failure {
    Held(Hold),
    Provider(ProviderError),
    Unreadable,
    Ours(StoreError),
}

impl Worker {
    /// Calls the hosts for every missing image (bounded), uploading each as it arrives.
    pub(crate) async fn produce(
        &self,
        generation: &Generation,
        chain: &Chain,
        references: &[ReferenceImage],
        attempt: &Attempt,
    ) -> Produced {
        let have: HashSet<u32> = generation.images.iter().map(|i| i.index).collect();
        let missing: Vec<u32> = (0..generation.n).filter(|i| !have.contains(i)).collect();
        let aspect_ratio =
            AspectRatio::parse(&generation.aspect_ratio).unwrap_or(AspectRatio::SQUARE);
        let slots = self.config.images_in_parallel.max(1);
        let results: Vec<Result<StoredImage, Failure>> =
            futures_util::stream::iter(missing.into_iter().enumerate())
                .map(|(position, index)| async move {
                    // The first `slots` images start with the claim, which read the item; one
                    // that waited for a slot looks again whether a cancel came meanwhile.
                    self.may_start_image(generation, position >= slots, attempt)
                        .await
                        .map_err(Failure::Held)?;
                    let request = ImageRequest {
                        model: &generation.model,
                        prompt: &generation.prompt,
                        aspect_ratio,
                        references,
                        index,
                    };
                    let made = chain
                        .generate(
                            &request,
                            attempt.providers_until,
                            self.config.provider_timeout,
                        )
                        .await
                        .map_err(Failure::Provider)?;
                    self.store_image(generation, index, made).await
                })
                .buffer_unordered(slots)
                .collect()
                .await;
        let mut produced = Produced::default();
        for result in results {
            match result {
                Ok(image) => produced.images.push(image),
                Err(Failure::Held(Hold::Canceled)) => produced.canceled = true,
                Err(Failure::Held(Hold::OutOfTime)) => {
                    produced
                        .transient
                        .get_or_insert_with(|| "out of time in this attempt".into());
                }
                Err(Failure::Ours(e)) => produced.ours = Some(e),
                Err(Failure::Provider(ProviderError::Transient(reason))) => {
                    produced.transient = Some(reason)
                }
                Err(Failure::Provider(ProviderError::Permanent { code, message })) => {
                    tracing::warn!(code, message, "provider refused");
                    produced
                        .permanent
                        .get_or_insert_with(|| error(code, &client_message(code)));
                }
                Err(Failure::Unreadable) => {
                    produced.permanent.get_or_insert_with(|| {
                        error(
                            "malformed_response",
                            "the provider returned something that is not an image",
                        )
                    });
                }
            }
        }
        produced.images.sort_by_key(|i| i.index);
        produced
    }

    /// May the attempt start an image now? The one checkpoint before each provider call:
    /// the time left in the attempt's provider window and, for an image that `waited` for
    /// a slot, a cancel asked since the claim (one read; unreadable, the image is made:
    /// the finish still ends it `canceled`).
    async fn may_start_image(
        &self,
        generation: &Generation,
        waited: bool,
        attempt: &Attempt,
    ) -> Result<(), Hold> {
        if attempt
            .providers_until
            .saturating_duration_since(Instant::now())
            < MIN_CALL
        {
            return Err(Hold::OutOfTime);
        }
        if waited {
            match self
                .store
                .get_generation(generation.user_id, generation.id)
                .await
            {
                Ok(Some(fresh)) if fresh.cancel_requested => return Err(Hold::Canceled),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not read for a cancel; the image is made")
                }
            }
        }
        Ok(())
    }

    async fn store_image(
        &self,
        generation: &Generation,
        index: u32,
        made: Made,
    ) -> Result<StoredImage, Failure> {
        let (content_type, (width, height)) = detect(&made.bytes).ok_or(Failure::Unreadable)?;
        let extension = content_type.trim_start_matches("image/");
        // The attempt in the key: a stale worker can never overwrite a newer one's image.
        let key = format!(
            "images/{}/{}/{}-{index}.{extension}",
            generation.user_id, generation.id, generation.attempt
        );
        self.blobs
            .put(&key, content_type, made.bytes)
            .await
            .map_err(Failure::Ours)?;
        Ok(StoredImage {
            index,
            key,
            content_type: content_type.to_string(),
            width,
            height,
            provider: Some(made.provider.to_string()),
        })
    }
}

/// The content type and dimensions, from the bytes themselves (never the provider's word).
pub fn detect(bytes: &[u8]) -> Option<(&'static str, (u32, u32))> {
    let format = image::guess_format(bytes).ok()?;
    let content_type = match format {
        image::ImageFormat::Png => "image/png",
        image::ImageFormat::Jpeg => "image/jpeg",
        image::ImageFormat::WebP => "image/webp",
        _ => return None,
    };
    let dimensions = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .ok()?;
    Some((content_type, dimensions))
}

/// What a client reads for a provider's refusal (the provider's own words go to the log).
fn client_message(code: &str) -> String {
    match code {
        "content_refused" => "the provider refused this request under its content policy",
        "invalid_input" => "the provider could not use this input",
        "no_image" => "the provider returned no image",
        _ => "the provider's answer could not be used",
    }
    .to_string()
}
