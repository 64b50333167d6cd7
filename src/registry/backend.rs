//! The two storage backends behind one pair of traits: what the OCI API handlers need of the
//! content store (`Storage`) and of upload sessions (`UploadSessions`). The filesystem store
//! (`storage::Store`, `uploads::Uploads`) implements them by delegation, unchanged; the S3 store
//! (`s3`) implements them over an object store shared by several instances.
//!
//! Pull-through (`proxy`) and push-through (`mirror`) work on both through the methods in the
//! last block of `Storage`. `list`, `stats` and `clean` reach either store through
//! `filesystem()` or `as_any()`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::http::Body;
use crate::registry::manifest;
use crate::registry::names::{Digest, Name, Reference, Tag};
use crate::registry::storage::{BlobWriter, Origin, Store, StoreError};
use crate::registry::uploads::{Expired, UploadChunk, UploadError, Uploads};

/// A manifest found by name and reference, ready to send.
pub struct OpenedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub len: u64,
    pub body: Body,
}

/// A blob found in a repository: its length, and how to send (part of) it.
pub trait BlobSource: Send {
    fn size(&self) -> u64;
    /// The bytes `start..start + len` as a response body.
    fn body(self: Box<Self>, start: u64, len: u64) -> Result<Body, StoreError>;
    /// A URL the client may fetch the blob from directly (S3 `redirect = true`).
    fn redirect(&self) -> Option<String> {
        None
    }
}

/// What the OCI API needs of the content store. Every method has the meaning of the
/// filesystem `Store`'s method of the same name.
pub trait Storage: Send + Sync {
    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;
    fn has_layer(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError>;
    /// Lets `name` serve a pushed blob.
    fn link_layer(&self, name: &Name, digest: &Digest) -> Result<(), StoreError>;
    fn unlink_layer(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError>;
    fn open_blob(&self, name: &Name, digest: &Digest) -> Result<Option<Box<dyn BlobSource>>, StoreError>;
    /// Stores a blob streamed from `body` under `digest`, visible only once its digest is
    /// verified. `declared` is the length the client announced: a shorter body is a
    /// `SizeMismatch` and nothing is stored.
    fn write_blob(&self, digest: &Digest, body: &mut dyn Read, declared: Option<u64>) -> Result<u64, StoreError>;
    fn put_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        tag: Option<&Tag>,
    ) -> Result<(), StoreError>;
    fn has_manifest(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError>;
    fn open_manifest(&self, name: &Name, reference: &Reference) -> Result<Option<OpenedManifest>, StoreError>;
    fn delete_manifest(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError>;
    fn delete_tag(&self, name: &Name, tag: &Tag) -> Result<bool, StoreError>;
    fn repository_exists(&self, name: &Name) -> Result<bool, StoreError>;
    fn tags_page(
        &self,
        name: &Name,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Option<(Vec<String>, bool)>, StoreError>;
    fn repositories(&self) -> Result<Arc<Vec<String>>, StoreError>;
    fn referrers(&self, name: &Name, subject: &Digest) -> Result<Vec<serde_json::Value>, StoreError>;
    /// The filesystem store, for the features only it has.
    fn filesystem(&self) -> Option<&Store> {
        None
    }
    /// Where the data is, for the log (`/path`, `s3://bucket/prefix`).
    fn describe(&self) -> String;

    // --- list/stats/clean (issue 20) ---
    /// The store itself, for `list`, `stats` and `clean` on S3 (`api/admin.rs` downcasts it;
    /// naming `S3Store` here would make `backend` and `s3` import each other).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    // Pull-through (`proxy`) and push-through (`mirror`).

    /// Another handle on the same store, for a thread of its own (a pull-through download).
    fn shared(&self) -> Arc<dyn Storage>;
    /// The digest `reference` names in `name`, when the whole manifest is there.
    fn resolve(&self, name: &Name, reference: &Reference) -> Result<Option<Digest>, StoreError>;
    /// Where a manifest of `name` was pulled through from; `None` when pushed.
    fn manifest_origin(&self, name: &Name, digest: &Digest) -> Result<Option<Origin>, StoreError>;
    /// True when some manifest of `name` was pulled through.
    fn has_cached_manifests(&self, name: &Name) -> Result<bool, StoreError>;
    /// When a tag was last written or revalidated upstream.
    fn tag_checked_at(&self, name: &Name, tag: &Tag) -> Result<Option<SystemTime>, StoreError>;
    /// Records that the upstream had `tag` at `digest` at `now` (what `tag_checked_at` reads;
    /// the proxy's clock, which a test may move ahead).
    fn touch_tag(&self, name: &Name, tag: &Tag, digest: &Digest, now: SystemTime) -> Result<(), StoreError>;
    /// `put_manifest` for a manifest fetched from `origin`.
    fn put_cached_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        tag: Option<&Tag>,
        origin: &Origin,
    ) -> Result<(), StoreError>;
    /// Stores a blob streamed from an upstream and links it into `name` with its origin, while
    /// `spool` lets clients read the bytes as they arrive. At most `total` bytes are read when
    /// given, and fewer is a `SizeMismatch`; nothing is stored unless the digest matches. A
    /// failure to read `body` is a `BodyRead` (the upstream's), one to store an `Io` (ours).
    fn cache_blob(
        &self,
        name: &Name,
        digest: &Digest,
        body: &mut dyn Read,
        total: Option<u64>,
        origin: &Origin,
        spool: Arc<dyn Spool>,
    ) -> Result<u64, StoreError>;
}

/// How a blob being pulled through is read while it is written (`proxy::fetch` follows it).
pub trait Spool: Send + Sync {
    /// The bytes will be in `file` (read with positional reads only); called once, first.
    fn started(&self, file: Arc<File>);
    /// More bytes are in the file: `stored` in all.
    fn advanced(&self, stored: u64);
}

/// Upload sessions (chunked and streamed pushes), kept where the backend keeps its data.
pub trait UploadSessions: Send + Sync {
    fn start(&self, name: &Name) -> Result<String, StoreError>;
    fn offset(&self, name: &Name, id: &str) -> Result<u64, UploadError>;
    /// Appends a chunk at the session's offset; returns the new offset.
    fn append(&self, name: &Name, id: &str, chunk: UploadChunk<'_>) -> Result<u64, UploadError>;
    /// Appends the closing chunk, checks the digest and makes the blob; the session ends.
    fn finish(&self, name: &Name, id: &str, chunk: UploadChunk<'_>, expected: &Digest) -> Result<u64, UploadError>;
    fn cancel(&self, name: &Name, id: &str) -> Result<(), UploadError>;
    /// Removes sessions untouched for `max_age` (see `Uploads::expire`).
    fn expire(&self, max_age: Duration, dry_run: bool) -> Expired;
    fn filesystem(&self) -> Option<&Uploads> {
        None
    }
}

struct FileBlob {
    file: File,
    len: u64,
}

impl BlobSource for FileBlob {
    fn size(&self) -> u64 {
        self.len
    }

    fn body(mut self: Box<Self>, start: u64, len: u64) -> Result<Body, StoreError> {
        if start > 0 {
            self.file.seek(SeekFrom::Start(start)).map_err(|e| StoreError::Io { path: "blob".into(), source: e })?;
        }
        Ok(Body::File { file: self.file, len })
    }
}

impl Storage for Store {
    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Store::blob_size(self, digest)
    }
    fn has_layer(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        Store::has_layer(self, name, digest)
    }
    fn link_layer(&self, name: &Name, digest: &Digest) -> Result<(), StoreError> {
        Store::link_layer(self, name, digest, None)
    }
    fn unlink_layer(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        Store::unlink_layer(self, name, digest)
    }
    fn open_blob(&self, name: &Name, digest: &Digest) -> Result<Option<Box<dyn BlobSource>>, StoreError> {
        Ok(Store::open_blob(self, name, digest)?.map(|(file, len)| Box::new(FileBlob { file, len }) as _))
    }
    fn write_blob(&self, digest: &Digest, body: &mut dyn Read, declared: Option<u64>) -> Result<u64, StoreError> {
        let mut writer = BlobWriter::temp(self.layout(), digest.algorithm())?;
        let copied = writer.copy_from(body, declared)?;
        if let Some(expected) = declared.filter(|n| *n != copied) {
            return Err(StoreError::SizeMismatch { expected, actual: copied });
        }
        writer.commit(self.layout(), digest)
    }
    fn put_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        tag: Option<&Tag>,
    ) -> Result<(), StoreError> {
        Store::put_manifest(self, name, digest, bytes, parsed, tag, None)
    }
    fn has_manifest(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        Store::has_manifest(self, name, digest)
    }
    fn open_manifest(&self, name: &Name, reference: &Reference) -> Result<Option<OpenedManifest>, StoreError> {
        Ok(Store::open_manifest(self, name, reference)?.map(|m| OpenedManifest {
            digest: m.digest,
            media_type: m.media_type,
            len: m.len,
            body: Body::File { file: m.file, len: m.len },
        }))
    }
    fn delete_manifest(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        Store::delete_manifest(self, name, digest)
    }
    fn delete_tag(&self, name: &Name, tag: &Tag) -> Result<bool, StoreError> {
        Store::delete_tag(self, name, tag)
    }
    fn repository_exists(&self, name: &Name) -> Result<bool, StoreError> {
        Ok(Store::repository_exists(self, name))
    }
    fn tags_page(
        &self,
        name: &Name,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Option<(Vec<String>, bool)>, StoreError> {
        Store::tags_page(self, name, after, limit)
    }
    fn repositories(&self) -> Result<Arc<Vec<String>>, StoreError> {
        Store::repositories(self)
    }
    fn referrers(&self, name: &Name, subject: &Digest) -> Result<Vec<serde_json::Value>, StoreError> {
        Store::referrers(self, name, subject)
    }
    fn filesystem(&self) -> Option<&Store> {
        Some(self)
    }
    fn describe(&self) -> String {
        self.layout().root().display().to_string()
    }

    fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }
    fn resolve(&self, name: &Name, reference: &Reference) -> Result<Option<Digest>, StoreError> {
        Store::resolve(self, name, reference)
    }
    fn manifest_origin(&self, name: &Name, digest: &Digest) -> Result<Option<Origin>, StoreError> {
        Store::manifest_origin(self, name, digest)
    }
    fn has_cached_manifests(&self, name: &Name) -> Result<bool, StoreError> {
        Ok(Store::has_cached_manifests(self, name))
    }
    fn tag_checked_at(&self, name: &Name, tag: &Tag) -> Result<Option<SystemTime>, StoreError> {
        Ok(Store::tag_checked_at(self, name, tag))
    }
    fn touch_tag(&self, name: &Name, tag: &Tag, _digest: &Digest, now: SystemTime) -> Result<(), StoreError> {
        // The link already holds the digest: its mtime is the time checked.
        Store::touch_tag(self, name, tag, now)
    }
    fn put_cached_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        tag: Option<&Tag>,
        origin: &Origin,
    ) -> Result<(), StoreError> {
        Store::put_manifest(self, name, digest, bytes, parsed, tag, Some(origin))
    }
    fn cache_blob(
        &self,
        name: &Name,
        digest: &Digest,
        body: &mut dyn Read,
        total: Option<u64>,
        origin: &Origin,
        spool: Arc<dyn Spool>,
    ) -> Result<u64, StoreError> {
        // Clients follow the temp file itself: no second copy of the bytes.
        let mut writer = BlobWriter::temp(self.layout(), digest.algorithm())?;
        spool.started(Arc::new(writer.reader()?));
        writer.on_write(Box::new(move |stored| spool.advanced(stored)));
        let copied = writer.copy_from(body, total)?;
        if let Some(expected) = total.filter(|t| *t != copied) {
            return Err(StoreError::SizeMismatch { expected, actual: copied });
        }
        writer.commit(self.layout(), digest)?;
        Store::link_layer(self, name, digest, Some(origin))?;
        Ok(copied)
    }
}

impl UploadSessions for Uploads {
    fn start(&self, name: &Name) -> Result<String, StoreError> {
        Uploads::start(self, name)
    }
    fn offset(&self, name: &Name, id: &str) -> Result<u64, UploadError> {
        Uploads::offset(self, name, id)
    }
    fn append(&self, name: &Name, id: &str, chunk: UploadChunk<'_>) -> Result<u64, UploadError> {
        Uploads::append(self, name, id, chunk)
    }
    fn finish(&self, name: &Name, id: &str, chunk: UploadChunk<'_>, expected: &Digest) -> Result<u64, UploadError> {
        Uploads::finish(self, name, id, chunk, expected)
    }
    fn cancel(&self, name: &Name, id: &str) -> Result<(), UploadError> {
        Uploads::cancel(self, name, id)
    }
    fn expire(&self, max_age: Duration, dry_run: bool) -> Expired {
        Uploads::expire(self, max_age, dry_run)
    }
    fn filesystem(&self) -> Option<&Uploads> {
        Some(self)
    }
}
