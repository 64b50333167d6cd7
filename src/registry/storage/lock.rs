//! Exclusive locks on a storage root, with `flock(2)` on a file inside it (paths from
//! `layout.rs`): `glci serve` holds `<root>/.lock` for its lifetime, so `glci registry …
//! --storage DIR` (which works on the files directly) can refuse while a server owns the
//! directory, and a second server cannot start on it. `clean` holds `<root>/.gc.lock` while it
//! runs. The kernel drops a lock when its holder exits, kill -9 included, so none goes stale.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::{IoContext, StoreError};

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    path: PathBuf,
}

impl StoreLock {
    /// Takes the lock, or returns `None` at once when another process (or another open of the
    /// file in this one) holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<StoreLock>, StoreError> {
        Self::acquire_with(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    /// Takes the lock, waiting for the holder to release it.
    pub fn acquire(path: &Path) -> Result<StoreLock, StoreError> {
        Self::acquire_with(path, libc::LOCK_EX)?.ok_or_else(|| StoreError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::WouldBlock, "lock not granted"),
        })
    }

    fn acquire_with(path: &Path, operation: libc::c_int) -> Result<Option<StoreLock>, StoreError> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).at(path)?;
        loop {
            // SAFETY: flock(2) on a descriptor we own, with plain flags.
            let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
            if rc == 0 {
                return Ok(Some(StoreLock { _file: file, path: path.to_path_buf() }));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(StoreError::Io { path: path.to_path_buf(), source: e }),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let held = StoreLock::try_acquire(&path).unwrap().expect("free lock");
        // flock locks belong to the open file, so a second open in this process conflicts too.
        assert!(StoreLock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(StoreLock::try_acquire(&path).unwrap().is_some());
        assert!(StoreLock::acquire(&path).is_ok());
    }
}
