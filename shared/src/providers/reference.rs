//! Reference images as the adapters send them: base64-encoded once per job and shared by
//! every image call of that job.
//!
//! Most upstream APIs take references inline as base64 (Gemini, ARK, BFL, Replicate's data
//! URLs). Encoding for every call made a seedream job with ten 10 MiB references and n = 4
//! build four ~133 MiB bodies; now the encoding is made once, kept as [`Bytes`] (cheap to
//! clone), and spliced into each request body without a copy (`http::Splice`). The raw bytes
//! are not kept beside it: an adapter that sends them raw (OpenAI's multipart edits, the local
//! renderer) decodes them once, on first use.

use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

/// A reference image, read from S3 (the caller's own upload or result) and size-checked.
#[derive(Clone)]
pub struct ReferenceImage {
    /// Detected from the bytes.
    pub content_type: &'static str,
    base64: Bytes,
    raw: Arc<OnceLock<Bytes>>,
    url: Option<String>,
}

impl ReferenceImage {
    /// Encodes `bytes` once; the caller may drop them afterwards.
    pub fn new(bytes: &[u8], content_type: &'static str) -> Self {
        Self {
            content_type,
            base64: Bytes::from(STANDARD.encode(bytes)),
            raw: Arc::new(OnceLock::new()),
            url: None,
        }
    }

    /// Also names a short-lived URL the provider may fetch the image from itself (a
    /// presigned S3 GET of the caller's own object). Never logged.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The standard base64 of the image, shared (cloning it copies nothing).
    pub fn base64(&self) -> Bytes {
        self.base64.clone()
    }

    /// `data:<type>;base64,` — what goes before [`Self::base64`] in a data URL.
    pub fn data_url_prefix(&self) -> Bytes {
        Bytes::from(format!("data:{};base64,", self.content_type))
    }

    /// The image's bytes, decoded from the shared base64 on first use and kept from then on.
    pub fn bytes(&self) -> Bytes {
        self.raw
            .get_or_init(|| {
                Bytes::from(
                    STANDARD
                        .decode(&self.base64)
                        .expect("the base64 was encoded by Self::new"),
                )
            })
            .clone()
    }

    /// The URL given with [`Self::with_url`], if any.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The length of the base64 text: what the image costs in memory and on the wire.
    pub fn encoded_len(&self) -> usize {
        self.base64.len()
    }
}

impl fmt::Debug for ReferenceImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the image nor its (signed) URL belongs in a log line.
        f.debug_struct("ReferenceImage")
            .field("content_type", &self.content_type)
            .field("encoded_len", &self.base64.len())
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_come_back_from_the_one_encoding_and_clones_share_it() {
        let image = ReferenceImage::new(b"\x89PNG not really", "image/png");
        let clone = image.clone();

        assert_eq!(&image.bytes()[..], b"\x89PNG not really");
        assert_eq!(image.base64().as_ptr(), clone.base64().as_ptr());
        assert_eq!(
            image.bytes().as_ptr(),
            clone.bytes().as_ptr(),
            "decoded once"
        );
        assert_eq!(&image.data_url_prefix()[..], b"data:image/png;base64,");
    }

    #[test]
    fn debug_shows_neither_the_image_nor_its_url() {
        let image = ReferenceImage::new(b"secret pixels", "image/png")
            .with_url("https://bucket.s3.amazonaws.com/x?X-Amz-Signature=abc");
        let text = format!("{image:?}");
        assert!(!text.contains("Signature"), "{text}");
        assert!(!text.contains(&STANDARD.encode(b"secret pixels")), "{text}");
    }
}
