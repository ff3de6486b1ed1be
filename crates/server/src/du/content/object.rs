//! The object storage backend of the content store (cargo feature `object-store`): blobs as
//! objects `<prefix>/blobs/<hex>` in an S3-compatible bucket or an Azure Blob container, reached
//! with `object_store`.
//!
//! Content is still received, sized and hashed into a local staging file by
//! [`super::ContentStore::put_stream`]; only a verified file is uploaded here, in one request when
//! it is small and as a multipart upload otherwise. A failed multipart upload is aborted, so an
//! object that exists is always complete. Objects are immutable: a blob already present is not
//! uploaded again.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt as _;

use super::ContentError;

/// Content up to this size is uploaded with a single request; larger content in parts of this
/// size (S3 wants at least 5 MiB for every part but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at the same time.
const PARTS_IN_FLIGHT: usize = 4;

/// Blobs in an object store under a prefix.
#[derive(Debug, Clone)]
pub(super) struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/blobs`.
    blobs: ObjectPath,
}

impl ObjectBlobs {
    /// Blobs under `<prefix>/blobs` of `store`. The prefix is a `/`-separated path; leading and
    /// trailing slashes are ignored.
    pub(super) fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self, ContentError> {
        let prefix = prefix.trim_matches('/');
        let prefix = ObjectPath::parse(prefix).map_err(|error| ContentError::Url {
            url: prefix.to_owned(),
            reason: format!("not a valid object prefix: {error}"),
        })?;
        Ok(Self { store, blobs: prefix.join("blobs") })
    }

    /// Opens `s3://bucket/prefix` (settings from the `AWS_*` environment variables) or
    /// `az://container/prefix` / `azure://container/prefix` (from `AZURE_*`), then applies
    /// `options` (`object_store` configuration keys such as `aws_endpoint`) over the environment.
    pub(super) fn open_url(url: &str, options: &[(&str, &str)]) -> Result<Self, ContentError> {
        let invalid = |reason: String| ContentError::Url { url: url.to_owned(), reason };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("expected s3://bucket/prefix or az://container/prefix".to_owned()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket or container name".to_owned()));
        }
        let store: Arc<dyn ObjectStore> = match scheme.to_ascii_lowercase().as_str() {
            "s3" => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in options {
                    let key: AmazonS3ConfigKey =
                        key.parse().map_err(|_| invalid(format!("unknown S3 setting {key}")))?;
                    builder = builder.with_config(key, *value);
                }
                Arc::new(builder.build().map_err(|error| invalid(error.to_string()))?)
            }
            "az" | "azure" => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(bucket);
                for (key, value) in options {
                    let key: AzureConfigKey =
                        key.parse().map_err(|_| invalid(format!("unknown Azure setting {key}")))?;
                    builder = builder.with_config(key, *value);
                }
                Arc::new(builder.build().map_err(|error| invalid(error.to_string()))?)
            }
            other => return Err(invalid(format!("unknown scheme {other}: expected s3 or az"))),
        };
        Self::new(store, prefix).map_err(|error| match error {
            ContentError::Url { reason, .. } => invalid(reason),
            other => other,
        })
    }

    /// Uploads the verified file at `staged` (`size` bytes) as blob `id`, unless that blob exists.
    /// A multipart upload that fails is aborted.
    pub(super) async fn upload(&self, staged: &std::path::Path, id: &str, size: u64) -> Result<(), ContentError> {
        let location = self.location(id);
        match self.store.head(&location).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let mut file = tokio::fs::File::open(staged).await?;
        if size <= PART_SIZE as u64 {
            let bytes = read_part(&mut file).await?;
            check_length(bytes.len() as u64, size)?;
            self.store.put(&location, PutPayload::from(bytes)).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&location).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        match send_parts(&mut writer, &mut file, size).await {
            Ok(()) => {
                // `finish` aborts the upload itself when completing it fails.
                writer.finish().await?;
                Ok(())
            }
            Err(error) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(blob = id, error = %abort, "aborting a multipart upload failed");
                }
                Err(error)
            }
        }
    }

    /// Size of blob `id`, or `None` when it is missing.
    pub(super) async fn size(&self, id: &str) -> Result<Option<u64>, ContentError> {
        match self.store.head(&self.location(id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes blob `id`; one that is missing is fine.
    pub(super) async fn delete(&self, id: &str) -> Result<(), ContentError> {
        match self.store.delete(&self.location(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The whole of blob `id` if it has at most `limit` bytes.
    pub(super) async fn read(&self, id: &str, limit: u64) -> Result<Vec<u8>, ContentError> {
        let result = match self.store.get(&self.location(id)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(ContentError::NotFound(id.to_owned())),
            Err(error) => return Err(error.into()),
        };
        if result.meta.size > limit {
            return Err(ContentError::TooLarge { limit });
        }
        Ok(result.bytes().await?.to_vec())
    }

    /// A stream of `length` (at least 1) bytes of blob `id` from `start`.
    pub(super) async fn range(&self, id: &str, start: u64, length: u64) -> Result<super::ByteStream, ContentError> {
        let options = GetOptions { range: Some(GetRange::Bounded(start..start + length)), ..GetOptions::default() };
        match self.store.get_opts(&self.location(id), options).await {
            Ok(result) => Ok(Box::pin(result.into_stream().map_err(std::io::Error::other))),
            Err(object_store::Error::NotFound { .. }) => Err(ContentError::NotFound(id.to_owned())),
            Err(error) => Err(error.into()),
        }
    }

    /// Where blob `id` (already validated) is stored.
    fn location(&self, id: &str) -> ObjectPath {
        self.blobs.clone().join(id)
    }
}

/// Sends the file in parts, with at most [`PARTS_IN_FLIGHT`] uploads running at once.
async fn send_parts(writer: &mut WriteMultipart, file: &mut tokio::fs::File, size: u64) -> Result<(), ContentError> {
    let mut sent: u64 = 0;
    loop {
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        let part = read_part(file).await?;
        if part.is_empty() {
            return check_length(sent, size);
        }
        sent += part.len() as u64;
        writer.put(part);
    }
}

/// Reads up to [`PART_SIZE`] bytes, fewer only at the end of the file.
async fn read_part(file: &mut tokio::fs::File) -> std::io::Result<Bytes> {
    let mut buffer = BytesMut::with_capacity(PART_SIZE);
    while buffer.len() < PART_SIZE {
        if file.read_buf(&mut buffer).await? == 0 {
            break;
        }
    }
    Ok(buffer.freeze())
}

/// The staged file must still hold exactly the bytes that were checked.
fn check_length(read: u64, size: u64) -> Result<(), ContentError> {
    if read == size {
        return Ok(());
    }
    Err(std::io::Error::other(format!("the staged file changed: {read} bytes instead of {size}")).into())
}
