//! The update content store: files that update manifests point at, kept as content-addressed
//! blobs (`blobs/<lower-case hex SHA-256>`) under one root directory. Storage only: a blob is
//! opened ([`ContentStore::open_blob`]) for its size and entity tag and read by byte range;
//! the REST layer (`rest::du::blob`) turns that into HTTP downloads with `Range` and `ETag`.
//!
//! The blobs live on the local file system by default. With the cargo feature `object-store`,
//! [`ContentStore::open_url`] keeps them in an S3-compatible bucket or an Azure Blob container
//! instead (`<prefix>/blobs/<hex>`, see the `object` module); staging stays local, so every check
//! below is the same for both backends.
//!
//! Content arrives as a stream (an upload body, a file being imported). [`ContentStore::put_stream`]
//! writes it to a private temporary file in `staging/` while computing its size and SHA-256 in the
//! same single pass, checks both against what the caller expects, and only then moves the file into
//! `blobs/` with a rename, so a blob that exists is always complete and has the hash in its name.
//! Any failure (a wrong size or hash, a source that errors, a limit exceeded, the caller dropping the
//! future) removes the temporary file.
//!
//! The pass is a small pipeline. The calling task reads the source, counts and checks the bytes
//! against the limit, and hands each chunk (a reference-counted `Bytes`, never copied) to two
//! blocking threads: one hashes it (`ring`, which uses the CPU's SHA extensions when present), the
//! other writes it. So reading the next chunk, hashing this one and writing the one before all run at
//! once, and the runtime's workers never spend time hashing. (Hashing on the calling task instead
//! makes reading and hashing take turns; on a 2-core VM that was the slower design.) The writer
//! starts a background `fdatasync` every 32 MiB, so the disk writes while content still arrives
//! and the sync before the final rename is short. `examples/hash_throughput.rs` measures the pass.
//! With an object store, the commit is an upload of the verified staging file instead of a rename.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::mpsc;

use crate::ids::hex;

#[cfg(feature = "object-store")]
mod object;

/// SHA-256 and size a blob must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 digest.
    pub sha256: [u8; 32],
}

/// A stored blob: content-addressed by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// SHA-256 digest of the content.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

impl Blob {
    /// The blob's id: the lower-case hex SHA-256.
    pub fn id(&self) -> String {
        hex(&self.sha256)
    }

    /// The SHA-256 in standard base64 with padding, as update manifests carry it.
    pub fn sha256_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.sha256)
    }
}

/// A content store failure.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The content does not have the expected size. When the content is longer than expected,
    /// reading stops as soon as that is known, and `actual` is the number of bytes read by then.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Expected size in bytes.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// The content does not have the expected SHA-256 (both in base64).
    #[error("sha-256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// Expected digest, base64.
        expected: String,
        /// Digest of the content received, base64.
        actual: String,
    },
    /// The content is longer than the limit; reading stopped as soon as it was exceeded.
    #[error("content exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// No such blob, or an id that cannot name one.
    #[error("blob {0} not found")]
    NotFound(String),
    /// The input stream failed.
    #[error("reading the content failed: {0}")]
    Source(String),
    /// The file system failed.
    #[error("content store i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The object store failed.
    #[cfg(feature = "object-store")]
    #[error("object store error: {0}")]
    Object(#[from] object_store::Error),
    /// A content URL that names no store this build can open.
    #[error("content url {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What [`ContentStore::open_url`] answers in a build without the `object-store` feature.
pub const NO_OBJECT_STORAGE: &str = "this duhub was built without object storage; rebuild with --features object-store";

/// Blobs named by their hex SHA-256, in `blobs/` under one root directory on the local file
/// system or in an object store; `staging/` under the root directory holds the temporary files of
/// uploads in progress.
///
/// One process owns a root: [`ContentStore::open`] and [`ContentStore::open_url`] clear `staging/`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    staging: PathBuf,
    backend: Backend,
}

/// Where complete blobs are kept.
#[derive(Debug, Clone)]
enum Backend {
    /// Files in this directory.
    Local { blobs: PathBuf },
    /// Objects in an object store.
    #[cfg(feature = "object-store")]
    Object(object::ObjectBlobs),
}

/// Chunk size for reading from an `AsyncRead` and for buffering writes.
const CHUNK: usize = 1024 * 1024;
/// Chunks in flight from the reading task to each of the hasher and writer threads.
const CHANNEL_DEPTH: usize = 8;
/// Bytes written between two syncs started in the background while content is arriving.
const WRITEBACK_STEP: u64 = 32 * 1024 * 1024;
/// Read size of a blob's byte stream.
const READ_CHUNK: usize = 256 * 1024;

impl ContentStore {
    /// Creates `<root>/blobs` and `<root>/staging` (mode 0700 on unix) if missing, and removes
    /// whatever an interrupted run left in `staging`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ContentError> {
        let root = root.into();
        let blobs = root.join("blobs");
        create_private_dir(&blobs)?;
        Self::with_backend(&root, Backend::Local { blobs })
    }

    /// Keeps blobs in the object store `url` names: `s3://bucket/prefix` (credentials, region and
    /// endpoint from the standard `AWS_*` environment variables, such as `AWS_ENDPOINT` and
    /// `AWS_ALLOW_HTTP=true` for MinIO; path-style requests unless
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`) or `az://container/prefix` / `azure://...` (from
    /// `AZURE_*`). `options` are `object_store` configuration keys and values applied over the
    /// environment (`("aws_endpoint", "http://127.0.0.1:9000")`). Uploads are staged in
    /// `<root>/staging`, as with [`ContentStore::open`].
    ///
    /// Without the cargo feature `object-store` this is [`ContentError::Url`] with
    /// [`NO_OBJECT_STORAGE`].
    pub fn open_url(url: &str, root: impl Into<PathBuf>, options: &[(&str, &str)]) -> Result<Self, ContentError> {
        #[cfg(feature = "object-store")]
        {
            let blobs = object::ObjectBlobs::open_url(url, options)?;
            Self::with_backend(&root.into(), Backend::Object(blobs))
        }
        #[cfg(not(feature = "object-store"))]
        {
            let _ = (root, options);
            Err(ContentError::Url { url: url.to_owned(), reason: NO_OBJECT_STORAGE.to_owned() })
        }
    }

    /// Keeps blobs in `store` under `<prefix>/blobs`, staging uploads in `<root>/staging`.
    #[cfg(feature = "object-store")]
    pub fn with_object_store(
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        prefix: &str,
        root: impl Into<PathBuf>,
    ) -> Result<Self, ContentError> {
        let blobs = object::ObjectBlobs::new(store, prefix)?;
        Self::with_backend(&root.into(), Backend::Object(blobs))
    }

    /// Creates `<root>/staging` and removes whatever an interrupted run left in it.
    fn with_backend(root: &Path, backend: Backend) -> Result<Self, ContentError> {
        let store = Self { staging: root.join("staging"), backend };
        create_private_dir(&store.staging)?;
        for entry in std::fs::read_dir(&store.staging)? {
            let entry = entry?;
            let removed = if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())
            } else {
                std::fs::remove_file(entry.path())
            };
            match removed {
                Ok(()) => tracing::debug!(path = %entry.path().display(), "removed a leftover staging file"),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(store)
    }

    /// Streams `source` into the store, computing its size and SHA-256 in the same single pass.
    ///
    /// `limit` caps the bytes read: [`ContentError::TooLarge`] as soon as it is exceeded. With
    /// `expected`, a different size or hash is an error (reading stops as soon as the content is
    /// longer than expected). On any error, or when the future is dropped, nothing is left behind.
    /// On success the file is synced and renamed to `blobs/<hex>` (if that blob already exists, the
    /// new copy is dropped) and the directory synced; with an object store, it is uploaded to
    /// `<prefix>/blobs/<hex>` (unless that object exists) and removed.
    pub async fn put_stream<S, E>(
        &self,
        source: S,
        expected: Option<Expected>,
        limit: u64,
    ) -> Result<Blob, ContentError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let staged = self.create_staged()?;
        let file = staged.file.try_clone()?;
        let (write_sender, write_receiver) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let writer = tokio::task::spawn_blocking(move || write_chunks(file, write_receiver));
        let (hash_sender, hash_receiver) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let hasher = tokio::task::spawn_blocking(move || hash_chunks(hash_receiver));

        let pumped = pump(source, [&hash_sender, &write_sender], expected, limit).await;
        drop((hash_sender, write_sender));
        let joined =
            |error: tokio::task::JoinError| std::io::Error::other(format!("a pipeline thread failed: {error}"));
        let written = writer.await.map_err(joined)?;
        let sha256 = hasher.await.map_err(joined)?;
        let size = match (pumped, written) {
            (Ok(size), Ok(())) => size,
            (Err(Pump::Content(error)), _) => return Err(error),
            (_, Err(error)) => return Err(error.into()),
            (Err(Pump::PipelineGone), Ok(())) => {
                return Err(std::io::Error::other("a pipeline thread stopped early").into());
            }
        };

        let blob = Blob { sha256, size };
        if let Some(expected) = expected {
            if expected.size != size {
                return Err(ContentError::SizeMismatch { expected: expected.size, actual: size });
            }
            if expected.sha256 != sha256 {
                let engine = &base64::engine::general_purpose::STANDARD;
                return Err(ContentError::HashMismatch {
                    expected: engine.encode(expected.sha256),
                    actual: blob.sha256_base64(),
                });
            }
        }

        // The commit runs to the end even if this future is dropped, so a blob is either fully
        // in place or absent, and the staging file is always gone.
        let failed = |error: tokio::task::JoinError| std::io::Error::other(format!("the commit failed: {error}"));
        match &self.backend {
            Backend::Local { blobs } => {
                let destination = blobs.join(blob.id());
                let blobs_dir = blobs.clone();
                tokio::task::spawn_blocking(move || staged.commit(&destination, &blobs_dir))
                    .await
                    .map_err(failed)??;
            }
            #[cfg(feature = "object-store")]
            Backend::Object(objects) => {
                let (objects, id) = (objects.clone(), blob.id());
                // Dropping `staged` at the end of the task removes the staging file.
                tokio::spawn(async move { objects.upload(&staged.path, &id, size).await }).await.map_err(failed)??;
            }
        }
        Ok(blob)
    }

    /// Same as [`ContentStore::put_stream`], reading from an `AsyncRead` in 1 MiB chunks.
    pub async fn put_reader<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        expected: Option<Expected>,
        limit: u64,
    ) -> Result<Blob, ContentError> {
        self.put_stream(ChunkReader::new(reader), expected, limit).await
    }

    /// Whether a blob with this id is stored (an id that cannot name a blob is not).
    pub async fn contains(&self, id: &str) -> Result<bool, ContentError> {
        match self.size(id).await {
            Ok(_) => Ok(true),
            Err(ContentError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Size of a stored blob.
    pub async fn size(&self, id: &str) -> Result<u64, ContentError> {
        let id = valid_id(id)?;
        match &self.backend {
            Backend::Local { blobs } => match tokio::fs::metadata(blobs.join(id)).await {
                Ok(metadata) if metadata.is_file() => Ok(metadata.len()),
                Ok(_) => Err(ContentError::NotFound(id.to_owned())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    Err(ContentError::NotFound(id.to_owned()))
                }
                Err(error) => Err(error.into()),
            },
            #[cfg(feature = "object-store")]
            Backend::Object(objects) => objects.size(id).await?.ok_or_else(|| ContentError::NotFound(id.to_owned())),
        }
    }

    /// Removes a blob; one that is missing is fine. An id that cannot name a blob is
    /// [`ContentError::NotFound`].
    pub async fn delete(&self, id: &str) -> Result<(), ContentError> {
        let id = valid_id(id)?;
        match &self.backend {
            Backend::Local { blobs } => match tokio::fs::remove_file(blobs.join(id)).await {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error.into()),
            },
            #[cfg(feature = "object-store")]
            Backend::Object(objects) => objects.delete(id).await,
        }
    }

    /// The whole content of a small blob (a manifest): [`ContentError::TooLarge`] when it has more
    /// than `limit` bytes, [`ContentError::NotFound`] when it is missing.
    pub async fn read(&self, id: &str, limit: u64) -> Result<Vec<u8>, ContentError> {
        let id = valid_id(id)?;
        match &self.backend {
            Backend::Local { blobs } => {
                let file = match tokio::fs::File::open(blobs.join(id)).await {
                    Ok(file) => file,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        return Err(ContentError::NotFound(id.to_owned()));
                    }
                    Err(error) => return Err(error.into()),
                };
                let mut bytes = Vec::new();
                file.take(limit.saturating_add(1)).read_to_end(&mut bytes).await?;
                if bytes.len() as u64 > limit {
                    return Err(ContentError::TooLarge { limit });
                }
                Ok(bytes)
            }
            #[cfg(feature = "object-store")]
            Backend::Object(objects) => objects.read(id, limit).await,
        }
    }

    /// Path of a blob in a local store. Ids must be 64 lower-case hex characters; anything else is
    /// [`ContentError::NotFound`], so no id can name a path outside the store. A store in an
    /// object store has no paths: an `Unsupported` [`ContentError::Io`].
    pub fn path(&self, id: &str) -> Result<PathBuf, ContentError> {
        let id = valid_id(id)?;
        match &self.backend {
            Backend::Local { blobs } => Ok(blobs.join(id)),
            #[cfg(feature = "object-store")]
            Backend::Object(_) => {
                Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "blobs in an object store have no local path")
                    .into())
            }
        }
    }

    /// Opens a stored blob for reading: [`ContentError::NotFound`] when it is missing or the
    /// id cannot name a blob.
    pub async fn open_blob(&self, id: &str) -> Result<OpenBlob, ContentError> {
        let id = valid_id(id)?;
        let missing = || ContentError::NotFound(id.to_owned());
        let (size, source) = match &self.backend {
            Backend::Local { blobs } => {
                let file = match tokio::fs::File::open(blobs.join(id)).await {
                    Ok(file) => file,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                    Err(error) => return Err(error.into()),
                };
                let size = file.metadata().await?.len();
                (size, BlobSource::File(file))
            }
            #[cfg(feature = "object-store")]
            Backend::Object(objects) => {
                let size = objects.size(id).await?.ok_or_else(missing)?;
                (size, BlobSource::Object(objects.clone()))
            }
        };
        Ok(OpenBlob { id: id.to_owned(), size, source })
    }

    fn create_staged(&self) -> Result<Staged, ContentError> {
        let mut random = [0u8; 16];
        crate::ids::fill_random(&mut random);
        let path = self.staging.join(format!("{}.part", hex(&random)));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(&path)?;
        Ok(Staged { path, file, keep: false })
    }
}

/// A stream of a blob's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A stored blob, opened: its facts (id, size, entity tag) and its bytes by range.
pub struct OpenBlob {
    id: String,
    size: u64,
    source: BlobSource,
}

/// Where an [`OpenBlob`] reads its bytes from.
enum BlobSource {
    /// The open blob file.
    File(tokio::fs::File),
    /// The object store, read with a ranged GET once the range is known.
    #[cfg(feature = "object-store")]
    Object(object::ObjectBlobs),
}

impl OpenBlob {
    /// The blob id (hex SHA-256).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A strong entity tag: the quoted id. Content-addressed, so it changes exactly when the
    /// bytes do.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.id)
    }

    /// `length` bytes from `start` (both within the blob), as a stream; an empty stream when
    /// `length` is 0.
    pub async fn read_range(self, start: u64, length: u64) -> Result<ByteStream, ContentError> {
        if length == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        match self.source {
            BlobSource::File(mut file) => {
                if start > 0 {
                    file.seek(std::io::SeekFrom::Start(start)).await?;
                }
                Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(file.take(length), READ_CHUNK)))
            }
            #[cfg(feature = "object-store")]
            BlobSource::Object(objects) => objects.range(&self.id, start, length).await,
        }
    }
}

/// `id` if it can name a blob: 64 lower-case hex characters. Anything else is
/// [`ContentError::NotFound`], so no id can name a path outside the store.
fn valid_id(id: &str) -> Result<&str, ContentError> {
    let valid = id.len() == 64 && id.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return Err(ContentError::NotFound(id.to_owned()));
    }
    Ok(id)
}

/// A temporary file in `staging/`, removed on drop unless committed.
struct Staged {
    path: PathBuf,
    file: std::fs::File,
    keep: bool,
}

impl Staged {
    /// Syncs the file and moves it to `destination` (or drops it when that blob already exists),
    /// then syncs the blobs directory.
    fn commit(mut self, destination: &Path, blobs_dir: &Path) -> std::io::Result<()> {
        self.file.sync_all()?;
        if destination.is_file() {
            return Ok(()); // Drop removes the staged copy.
        }
        std::fs::rename(&self.path, destination)?;
        self.keep = true;
        sync_dir(blobs_dir)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep
            && let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "removing a staging file failed");
        }
    }
}

/// Why reading the source stopped early.
enum Pump {
    /// The content or its source is at fault.
    Content(ContentError),
    /// The hasher or the writer thread hung up: it failed, and its own result says why.
    PipelineGone,
}

/// Reads `source` to the end, counting the bytes and passing each chunk on to the hasher and the
/// writer (`sinks`).
async fn pump<S, E>(
    mut source: S,
    sinks: [&mpsc::Sender<Bytes>; 2],
    expected: Option<Expected>,
    limit: u64,
) -> Result<u64, Pump>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut size: u64 = 0;
    while let Some(chunk) = source.next().await {
        let chunk = chunk.map_err(|error| Pump::Content(ContentError::Source(error.to_string())))?;
        if chunk.is_empty() {
            continue;
        }
        size = size.saturating_add(chunk.len() as u64);
        if size > limit {
            return Err(Pump::Content(ContentError::TooLarge { limit }));
        }
        if let Some(expected) = expected
            && size > expected.size
        {
            return Err(Pump::Content(ContentError::SizeMismatch { expected: expected.size, actual: size }));
        }
        for sink in sinks {
            sink.send(chunk.clone()).await.map_err(|_| Pump::PipelineGone)?;
        }
    }
    Ok(size)
}

/// The hasher thread: the SHA-256 of every chunk it receives until the sender hangs up.
fn hash_chunks(mut receiver: mpsc::Receiver<Bytes>) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    while let Some(chunk) = receiver.blocking_recv() {
        context.update(&chunk);
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(context.finish().as_ref());
    sha256
}

/// The writer thread: writes every chunk it receives until the sender hangs up.
///
/// Every [`WRITEBACK_STEP`] bytes it asks a flusher thread to `fdatasync` what has been written so
/// far, so the disk writes while the content is still arriving and the final sync in
/// [`Staged::commit`] has little left to do. Both threads share one open file description, so an
/// error the flusher sees is returned from here (a later sync would not report it again).
fn write_chunks(file: std::fs::File, mut receiver: mpsc::Receiver<Bytes>) -> std::io::Result<()> {
    let (hint_sender, hint_receiver) = std::sync::mpsc::sync_channel::<()>(1);
    let file = &file;
    std::thread::scope(|scope| {
        let flusher = scope.spawn(move || {
            while hint_receiver.recv().is_ok() {
                file.sync_data()?;
            }
            Ok::<_, std::io::Error>(())
        });
        let written = (|| {
            let mut writer = std::io::BufWriter::with_capacity(CHUNK, file);
            let mut unsynced: u64 = 0;
            while let Some(chunk) = receiver.blocking_recv() {
                writer.write_all(&chunk)?;
                unsynced += chunk.len() as u64;
                if unsynced >= WRITEBACK_STEP {
                    unsynced = 0;
                    // A hint already waiting covers this one too; a gone flusher failed, and
                    // joining it below says why.
                    if let Err(std::sync::mpsc::TrySendError::Disconnected(())) = hint_sender.try_send(()) {
                        break;
                    }
                }
            }
            writer.flush()
        })();
        drop(hint_sender);
        let flushed = flusher.join().unwrap_or_else(|_| Err(std::io::Error::other("the flusher thread panicked")));
        flushed.and(written)
    })
}

/// An `AsyncRead` as a stream of chunks of up to [`CHUNK`] bytes, each filled as far as the reader
/// allows before it is passed on (fewer, larger chunks for the hashing and writing pipeline).
struct ChunkReader<R> {
    reader: R,
    buffer: bytes::BytesMut,
    done: bool,
}

impl<R> ChunkReader<R> {
    fn new(reader: R) -> Self {
        Self { reader, buffer: bytes::BytesMut::new(), done: false }
    }
}

impl<R: AsyncRead + Unpin> Stream for ChunkReader<R> {
    type Item = std::io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.buffer.capacity() == 0 {
            this.buffer.reserve(CHUNK);
        }
        while this.buffer.len() < CHUNK {
            match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut this.reader), context, &mut this.buffer) {
                Poll::Ready(Ok(0)) => {
                    this.done = true;
                    break;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                // Pass on what has been read so far rather than wait with it.
                Poll::Pending if this.buffer.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        if this.buffer.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(this.buffer.split().freeze())))
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Test support shared with the REST layer's download tests: a store of each backend in a
/// temporary directory, and a macro that runs a test on every backend.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use super::ContentStore;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Which backend a test runs against.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Kind {
        /// Files in `<root>/blobs`.
        Local,
        /// An in-memory `object_store` under the prefix [`PREFIX`]: the object code path without
        /// a server.
        #[cfg(feature = "object-store")]
        Object,
    }

    #[cfg(feature = "object-store")]
    pub(crate) const PREFIX: &str = "duhub/content";

    /// A store of one backend in a temporary root directory.
    pub(crate) struct Fixture {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) store: ContentStore,
        #[cfg(feature = "object-store")]
        pub(crate) memory: Option<std::sync::Arc<object_store::memory::InMemory>>,
    }

    impl Fixture {
        pub(crate) fn open(kind: Kind) -> Self {
            let dir = tempfile::tempdir().unwrap();
            match kind {
                Kind::Local => {
                    let store = ContentStore::open(dir.path()).unwrap();
                    #[cfg(feature = "object-store")]
                    return Self { dir, store, memory: None };
                    #[cfg(not(feature = "object-store"))]
                    Self { dir, store }
                }
                #[cfg(feature = "object-store")]
                Kind::Object => {
                    let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
                    let store = ContentStore::with_object_store(memory.clone(), PREFIX, dir.path()).unwrap();
                    Self { dir, store, memory: Some(memory) }
                }
            }
        }

        /// The same backend opened again, as after a restart.
        pub(crate) fn reopen(&self) -> ContentStore {
            #[cfg(feature = "object-store")]
            if let Some(memory) = &self.memory {
                return ContentStore::with_object_store(memory.clone(), PREFIX, self.dir.path()).unwrap();
            }
            ContentStore::open(self.dir.path()).unwrap()
        }

        /// The ids of the stored blobs, sorted. For the object backend, also checks that nothing
        /// but blobs is stored.
        pub(crate) async fn blobs(&self) -> Vec<String> {
            #[cfg(feature = "object-store")]
            if let Some(memory) = &self.memory {
                use futures_util::TryStreamExt as _;
                use object_store::ObjectStore as _;
                let objects: Vec<_> = memory.list(None).try_collect().await.unwrap();
                let mut ids: Vec<String> = objects
                    .iter()
                    .map(|object| {
                        let location = object.location.to_string();
                        let id = location.strip_prefix(&format!("{PREFIX}/blobs/")).unwrap_or_else(|| {
                            panic!("{location} is not a blob");
                        });
                        id.to_owned()
                    })
                    .collect();
                ids.sort();
                return ids;
            }
            entries(&self.dir.path().join("blobs"))
        }

        /// Asserts that nothing is in `staging/` and exactly `blobs` are stored.
        pub(crate) async fn assert_files(&self, blobs: &[&str]) {
            assert_eq!(entries(&self.dir.path().join("staging")), Vec::<String>::new());
            assert_eq!(self.blobs().await, blobs.iter().map(|id| id.to_string()).collect::<Vec<_>>());
        }
    }

    /// Instantiates each `test(kind: Kind)` for every backend: `local::<test>` and, with the
    /// `object-store` feature, `object::<test>`.
    macro_rules! backends {
        ($($test:ident),* $(,)?) => {
            mod local {
                $(
                    #[tokio::test]
                    async fn $test() {
                        super::$test(super::Kind::Local).await;
                    }
                )*
            }
            #[cfg(feature = "object-store")]
            mod object {
                $(
                    #[tokio::test]
                    async fn $test() {
                        super::$test(super::Kind::Object).await;
                    }
                )*
            }
        };
    }
    pub(crate) use backends;
}

#[cfg(test)]
mod tests {
    use super::testing::{Fixture, Kind, backends};
    use super::*;
    use futures_util::FutureExt as _;

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        digest
    }

    fn chunks(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin + use<> {
        let parts: Vec<_> = parts.iter().map(|part| Ok(Bytes::copy_from_slice(part))).collect();
        futures_util::stream::iter(parts)
    }

    backends! {
        put_stores_the_content_under_its_hash,
        put_with_the_expected_size_and_hash,
        put_reader_hashes_many_chunks,
        put_larger_than_a_writeback_step,
        puts_are_send,
        put_reader_of_nothing,
        size_mismatch_leaves_nothing,
        hash_mismatch_leaves_nothing,
        too_large_stops_reading_and_leaves_nothing,
        failing_source_leaves_nothing,
        dropped_put_leaves_nothing,
        same_content_twice_is_one_blob,
        open_clears_staging_and_keeps_blobs,
        delete_and_missing_blobs,
        read_returns_small_blobs,
        ids_must_be_lower_case_hex,
    }

    async fn put_stores_the_content_under_its_hash(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let blob = store.put_stream(chunks(&[b"hello ", b"", b"world"]), None, 1024).await.unwrap();
        assert_eq!(blob.id(), "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(blob.sha256_base64(), "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=");
        assert_eq!(blob.size, 11);
        fixture.assert_files(&[&blob.id()]).await;
        assert_eq!(store.read(&blob.id(), 11).await.unwrap(), b"hello world");
        assert!(store.contains(&blob.id()).await.unwrap());
        assert_eq!(store.size(&blob.id()).await.unwrap(), 11);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&fixture.dir.path().join("staging")), 0o700);
            if kind == Kind::Local {
                assert_eq!(mode(&fixture.dir.path().join("blobs")), 0o700);
                assert_eq!(mode(&store.path(&blob.id()).unwrap()), 0o600);
            }
        }
    }

    async fn put_with_the_expected_size_and_hash(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let expected = Expected { size: 11, sha256: sha256(b"hello world") };
        let blob = store.put_stream(chunks(&[b"hello world"]), Some(expected), 11).await.unwrap();
        assert_eq!(blob, Blob { sha256: expected.sha256, size: 11 });
        fixture.assert_files(&[&blob.id()]).await;
    }

    async fn put_reader_hashes_many_chunks(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let content: Vec<u8> = (0..3 * CHUNK + 5).map(|index| (index % 251) as u8).collect();
        let expected = Expected { size: content.len() as u64, sha256: sha256(&content) };
        let blob = store.put_reader(&content[..], Some(expected), u64::MAX).await.unwrap();
        assert_eq!(blob.sha256, expected.sha256);
        fixture.assert_files(&[&blob.id()]).await;
        assert_eq!(store.read(&blob.id(), u64::MAX).await.unwrap(), content);
    }

    async fn put_larger_than_a_writeback_step(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let size = WRITEBACK_STEP * 2 + 3;
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let block = [7u8; 4096];
        for _ in 0..size / 4096 {
            context.update(&block);
        }
        context.update(&block[..(size % 4096) as usize]);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(context.finish().as_ref());
        let reader = tokio::io::AsyncReadExt::take(tokio::io::repeat(7), size);
        let blob = store.put_reader(reader, Some(Expected { size, sha256 }), size).await.unwrap();
        assert_eq!(blob, Blob { sha256, size });
        fixture.assert_files(&[&blob.id()]).await;
        assert_eq!(store.size(&blob.id()).await.unwrap(), size);
    }

    /// Upload handlers run on a multi-threaded runtime, so their futures must be `Send`.
    async fn puts_are_send(kind: Kind) {
        fn assert_send<T: Send>(_: &T) {}
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let body = axum::body::Body::from("content").into_data_stream();
        assert_send(&store.put_stream(body, None, 100));
        assert_send(&store.put_reader(tokio::io::empty(), None, 100));
    }

    async fn put_reader_of_nothing(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let blob = store.put_reader(tokio::io::empty(), None, 0).await.unwrap();
        assert_eq!(blob.id(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(blob.size, 0);
        fixture.assert_files(&[&blob.id()]).await;
    }

    async fn size_mismatch_leaves_nothing(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let shorter = Expected { size: 12, sha256: sha256(b"hello world") };
        let error = store.put_stream(chunks(&[b"hello world"]), Some(shorter), 100).await.unwrap_err();
        assert!(matches!(error, ContentError::SizeMismatch { expected: 12, actual: 11 }), "{error:?}");
        assert_eq!(error.to_string(), "size mismatch: expected 12 bytes, got 11");
        let longer = Expected { size: 5, sha256: sha256(b"hello") };
        let error = store.put_stream(chunks(&[b"hello", b" world", b"!"]), Some(longer), 100).await.unwrap_err();
        assert!(matches!(error, ContentError::SizeMismatch { expected: 5, actual: 11 }), "{error:?}");
        fixture.assert_files(&[]).await;
    }

    async fn hash_mismatch_leaves_nothing(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let expected = Expected { size: 11, sha256: sha256(b"hello WORLD") };
        let error = store.put_stream(chunks(&[b"hello world"]), Some(expected), 100).await.unwrap_err();
        let ContentError::HashMismatch { expected: wanted, actual } = &error else { panic!("{error:?}") };
        assert_eq!(wanted, &base64::engine::general_purpose::STANDARD.encode(sha256(b"hello WORLD")));
        assert_eq!(actual, "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=");
        fixture.assert_files(&[]).await;
    }

    async fn too_large_stops_reading_and_leaves_nothing(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        // After the chunk that crosses the limit the stream fails; reaching that would be a
        // source error instead.
        let source = chunks(&[b"0123", b"4567", b"89"]).chain(futures_util::stream::iter([Err("read too far".into())]));
        let error = store.put_stream(source, None, 9).await.unwrap_err();
        assert!(matches!(error, ContentError::TooLarge { limit: 9 }), "{error:?}");
        let error = store.put_reader(&[7u8; 100][..], None, 99).await.unwrap_err();
        assert!(matches!(error, ContentError::TooLarge { limit: 99 }), "{error:?}");
        // Exactly the limit is fine.
        let blob = store.put_reader(&[7u8; 99][..], None, 99).await.unwrap();
        fixture.assert_files(&[&blob.id()]).await;
    }

    async fn failing_source_leaves_nothing(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let source = chunks(&[b"hello"]).chain(futures_util::stream::iter([Err("connection reset".to_owned())]));
        let error = store.put_stream(source, None, 100).await.unwrap_err();
        assert!(matches!(&error, ContentError::Source(message) if message == "connection reset"), "{error:?}");
        fixture.assert_files(&[]).await;
    }

    async fn dropped_put_leaves_nothing(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let source = chunks(&[b"hello"]).chain(futures_util::stream::pending());
        let put = store.put_stream(source, None, 100);
        assert!(put.now_or_never().is_none());
        fixture.assert_files(&[]).await;
    }

    async fn same_content_twice_is_one_blob(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let first = store.put_stream(chunks(&[b"same"]), None, 100).await.unwrap();
        let second = store.put_reader(&b"same"[..], None, 100).await.unwrap();
        assert_eq!(first, second);
        fixture.assert_files(&[&first.id()]).await;
    }

    async fn open_clears_staging_and_keeps_blobs(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let blob = store.put_stream(chunks(&[b"kept"]), None, 100).await.unwrap();
        std::fs::write(fixture.dir.path().join("staging/leftover.part"), b"half").unwrap();
        std::fs::create_dir(fixture.dir.path().join("staging/leftover-dir")).unwrap();
        let store = fixture.reopen();
        fixture.assert_files(&[&blob.id()]).await;
        assert!(store.contains(&blob.id()).await.unwrap());
    }

    async fn delete_and_missing_blobs(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let blob = store.put_stream(chunks(&[b"gone soon"]), None, 100).await.unwrap();
        store.delete(&blob.id()).await.unwrap();
        fixture.assert_files(&[]).await;
        assert!(!store.contains(&blob.id()).await.unwrap());
        store.delete(&blob.id()).await.unwrap();
        assert!(matches!(store.size(&blob.id()).await, Err(ContentError::NotFound(id)) if id == blob.id()));
        assert!(matches!(store.read(&blob.id(), 100).await, Err(ContentError::NotFound(id)) if id == blob.id()));
    }

    async fn read_returns_small_blobs(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let blob = store.put_reader(&b"{\"manifest\": 1}"[..], None, 100).await.unwrap();
        assert_eq!(store.read(&blob.id(), 15).await.unwrap(), b"{\"manifest\": 1}");
        let error = store.read(&blob.id(), 14).await.unwrap_err();
        assert!(matches!(error, ContentError::TooLarge { limit: 14 }), "{error:?}");
        let empty = store.put_reader(tokio::io::empty(), None, 0).await.unwrap();
        assert_eq!(store.read(&empty.id(), 0).await.unwrap(), b"");
    }

    async fn ids_must_be_lower_case_hex(kind: Kind) {
        let fixture = Fixture::open(kind);
        let store = &fixture.store;
        let id = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        match kind {
            Kind::Local => assert_eq!(store.path(id).unwrap(), fixture.dir.path().join("blobs").join(id)),
            #[cfg(feature = "object-store")]
            Kind::Object => assert!(matches!(store.path(id), Err(ContentError::Io(_)))),
        }
        for bad in [
            "../x",
            "",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "../../../../../../../../../../../../../../../../../../etc/passwd",
            "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(matches!(store.path(bad), Err(ContentError::NotFound(_))), "{bad:?}");
            assert!(!store.contains(bad).await.unwrap(), "{bad:?}");
            assert!(matches!(store.size(bad).await, Err(ContentError::NotFound(_))), "{bad:?}");
            assert!(matches!(store.read(bad, 100).await, Err(ContentError::NotFound(_))), "{bad:?}");
            assert!(matches!(store.delete(bad).await, Err(ContentError::NotFound(_))), "{bad:?}");
        }
    }

    #[cfg(not(feature = "object-store"))]
    #[test]
    fn a_content_url_needs_the_object_store_feature() {
        let dir = tempfile::tempdir().unwrap();
        let error = ContentStore::open_url("s3://bucket/prefix", dir.path(), &[]).unwrap_err();
        assert_eq!(error.to_string(), format!("content url s3://bucket/prefix: {NO_OBJECT_STORAGE}"));
    }

    #[cfg(feature = "object-store")]
    #[test]
    fn content_urls_name_a_bucket_or_container() {
        // object_store's HTTP client is reqwest with rustls and no built-in crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let options = [("aws_region", "us-east-1"), ("aws_access_key_id", "a"), ("aws_secret_access_key", "b")];
        for url in ["s3://bucket", "s3://bucket/", "s3://bucket/a/b/"] {
            ContentStore::open_url(url, dir.path(), &options).unwrap();
        }
        for (url, reason) in [
            ("bucket/prefix", "expected s3://bucket/prefix or az://container/prefix"),
            ("s3:///prefix", "no bucket or container name"),
            ("gs://bucket/prefix", "unknown scheme gs: expected s3 or az"),
            ("s3://bucket/a//b", "not a valid object prefix"),
        ] {
            let error = ContentStore::open_url(url, dir.path(), &options).unwrap_err();
            assert!(
                matches!(&error, ContentError::Url { url: named, reason: why } if named == url && why.starts_with(reason)),
                "{url}: {error:?}"
            );
        }
        let error = ContentStore::open_url("s3://bucket/p", dir.path(), &[("no_such_key", "1")]).unwrap_err();
        assert!(error.to_string().contains("unknown S3 setting no_such_key"), "{error}");
    }
}
