//! Images in S3: presigned uploads and downloads, reference checks, result storage.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::dynamo::{StoreError, sdk_error};

/// How long a presigned upload URL is valid.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a presigned image URL is valid.
pub const IMAGE_URL_TTL: Duration = Duration::from_secs(60 * 60);

/// A presigned request a client performs itself.
#[derive(Debug, Clone)]
pub struct PresignedUpload {
    pub url: String,
    /// Headers the client must send exactly (they are part of the signature).
    pub headers: Vec<(String, String)>,
}

/// What S3 says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub content_type: Option<String>,
    pub size: i64,
}

/// What [`BlobStore::get`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Found(Vec<u8>),
    Missing,
    /// Over the limit asked for (at least `size` bytes): not read further.
    TooLarge {
        size: usize,
    },
}

/// The image bucket.
#[derive(Debug, Clone)]
pub struct BlobStore {
    client: Client,
    bucket: String,
}

impl BlobStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// A PUT of exactly `size` bytes of `content_type` to `key`: both are signed, so S3
    /// refuses any other type or length.
    pub async fn presign_upload(
        &self,
        key: &str,
        content_type: &str,
        size: i64,
    ) -> Result<PresignedUpload, StoreError> {
        let config = PresigningConfig::expires_in(UPLOAD_URL_TTL)
            .map_err(|e| StoreError::Internal(e.into()))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(size)
            .presigned(config)
            .await
            .map_err(sdk_error)?;
        Ok(PresignedUpload {
            url: request.uri().to_string(),
            headers: request
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    /// A GET URL valid for an hour. Signing is local: no call to S3.
    pub async fn presign_download(&self, key: &str) -> Result<String, StoreError> {
        let config = PresigningConfig::expires_in(IMAGE_URL_TTL)
            .map_err(|e| StoreError::Internal(e.into()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(sdk_error)?;
        Ok(request.uri().to_string())
    }

    /// The API view of a generation, its images as presigned GET URLs (signed here: no
    /// AWS call).
    pub async fn view(
        &self,
        generation: crate::domain::generation::Generation,
    ) -> Result<crate::domain::generation::GenerationView, StoreError> {
        let mut urls = std::collections::HashMap::new();
        for image in &generation.images {
            urls.insert(image.key.clone(), self.presign_download(&image.key).await?);
        }
        Ok(generation.view(|key| urls.get(key).cloned().unwrap_or_default()))
    }

    /// The object's type and size, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                content_type: out.content_type,
                size: out.content_length.unwrap_or(0),
            })),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(sdk_error(e)),
        }
    }

    pub async fn put(
        &self,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// The object's bytes, if it exists and holds at most `max_bytes` (checked against the
    /// declared length first, then while it streams in).
    pub async fn get(&self, key: &str, max_bytes: usize) -> Result<Object, StoreError> {
        let mut out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(Object::Missing);
            }
            Err(e) => return Err(sdk_error(e)),
        };
        let declared = out.content_length.unwrap_or(0).max(0) as usize;
        if declared > max_bytes {
            return Ok(Object::TooLarge { size: declared });
        }
        let mut bytes = Vec::with_capacity(declared);
        while let Some(chunk) = out
            .body
            .try_next()
            .await
            .map_err(|e| StoreError::Unavailable(e.into()))?
        {
            if bytes.len() + chunk.len() > max_bytes {
                return Ok(Object::TooLarge {
                    size: bytes.len() + chunk.len(),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Object::Found(bytes))
    }

    /// Deletes the objects (missing ones are fine), in batches of 1,000.
    pub async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Internal(e.into()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::Internal(e.into()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(sdk_error)?;
            if let Some(error) = out.errors().first() {
                return Err(StoreError::Unavailable(anyhow::anyhow!(
                    "deleting {:?} failed: {:?}",
                    error.key(),
                    error.code()
                )));
            }
        }
        Ok(())
    }

    /// Every key under `prefix` (for account deletion).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_error)?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }
}
