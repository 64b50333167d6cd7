//! The filesystem store: content-addressed blobs plus per-repository links (DESIGN §4).
//! Only this module and `registry::uploads` (its `uploads/` sessions) touch the storage root.
//! Every write is temp file → fsync → rename (`durable`), so a kill at any point leaves either
//! the old state or the new one, never half of either.

pub mod blobs;
mod catalog;
pub mod inventory;
pub mod layout;
pub mod links;
pub mod lock;
pub mod store;
pub mod sweep;
mod tag_names;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use blobs::{BlobWriter, Hasher};
pub use inventory::Inventory;
pub use layout::Layout;
pub use lock::StoreLock;
pub use store::{Origin, Store, StoredManifest};

#[derive(Debug)]
pub enum StoreError {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// The client's body failed while we read it (disconnect, bad framing).
    BodyRead(io::Error),
    DigestMismatch {
        expected: String,
        actual: String,
    },
    SizeMismatch {
        expected: u64,
        actual: u64,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::BodyRead(e) => write!(f, "reading the request body: {e}"),
            StoreError::DigestMismatch { expected, actual } => write!(f, "digest {actual} does not match {expected}"),
            StoreError::SizeMismatch { expected, actual } => write!(f, "size {actual} does not match {expected}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Our own write failed because the filesystem under the store is full (or over quota): the
    /// client is told so (507), not given a generic server error.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => is_storage_full(source),
            _ => false,
        }
    }
}

/// `ENOSPC` or `EDQUOT`, however the error reached us.
pub fn is_storage_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Attaches the path to an io error.
pub trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io { path: path.to_path_buf(), source })
    }
}
