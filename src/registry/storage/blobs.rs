//! Blob bytes: streamed into a file while the digest is computed on the fly, then verified,
//! fsynced and renamed into `blobs/`. A blob is never visible under its digest before its bytes
//! have been checked against it. Writeback starts while the bytes stream (`sync_file_range`),
//! so the final fsync waits only for the tail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256, Sha512};

use super::{IoContext, Layout, StoreError};
use crate::registry::names::{Algorithm, Digest};

/// Bytes copied per read/hash/write step.
const COPY_BUF: usize = 1024 * 1024;
/// Start writeback after this many unsynced bytes.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, bytes) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest::new(algorithm, hex(&bytes))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The digest of a small in-memory value (manifests).
pub fn digest_of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
    let mut h = Hasher::new(algorithm);
    h.update(bytes);
    h.finish()
}

/// A file being filled with blob bytes, hashing everything written to it.
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    hasher: Hasher,
    len: u64,
    synced: u64,
    _guard: TempGuard,
}

/// Removes a temp file when the writer is dropped before it was committed (a failed or
/// abandoned request), so `tmp/` does not fill up.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

impl BlobWriter {
    /// A new temp file under `tmp/`, removed again unless committed.
    pub fn temp(layout: &Layout, algorithm: Algorithm) -> Result<BlobWriter, StoreError> {
        let dir = layout.tmp();
        fs::create_dir_all(&dir).at(&dir)?;
        let path = dir.join(format!("blob-{}", crate::registry::uploads::new_id()));
        let file = OpenOptions::new().write(true).create_new(true).open(&path).at(&path)?;
        let guard = TempGuard(Some(path.clone()));
        Ok(BlobWriter { file, path, hasher: Hasher::new(algorithm), len: 0, synced: 0, _guard: guard })
    }

    /// Appends to an existing partial file whose first `len` bytes `hasher` has already seen.
    pub fn resume(path: &Path, hasher: Hasher, len: u64) -> Result<BlobWriter, StoreError> {
        let mut file = OpenOptions::new().write(true).open(path).at(path)?;
        file.set_len(len).at(path)?;
        file.seek(SeekFrom::Start(len)).at(path)?;
        Ok(BlobWriter { file, path: path.to_path_buf(), hasher, len, synced: len, _guard: TempGuard(None) })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hash state so far (for upload sessions that continue later).
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Copies `reader` to the end, at most `limit` bytes; returns how many were copied.
    /// A read failure is the client's (`BodyRead`), a write failure ours (`Io`); either way the
    /// bytes written so far are hashed, so the hash state matches the file.
    pub fn copy_from(&mut self, reader: &mut dyn Read, limit: Option<u64>) -> Result<u64, StoreError> {
        let mut buf = vec![0u8; COPY_BUF];
        let mut copied = 0u64;
        loop {
            let want = match limit {
                Some(l) if l - copied < buf.len() as u64 => (l - copied) as usize,
                _ => buf.len(),
            };
            if want == 0 {
                return Ok(copied);
            }
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => return Ok(copied),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::BodyRead(e)),
            };
            self.write_chunk(&buf[..n])?;
            copied += n as u64;
        }
    }

    fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes).at(&self.path)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        if self.len - self.synced >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.synced, self.len - self.synced);
            self.synced = self.len;
        }
        Ok(())
    }

    /// Takes the writer apart; the file is kept (upload sessions keep theirs between requests).
    pub fn into_parts(mut self) -> (File, PathBuf, Hasher, u64) {
        self._guard.0 = None;
        (self.file, self.path, self.hasher, self.len)
    }

    /// Verifies the content against `expected` and moves it into place under its digest.
    /// On a mismatch the file is removed and nothing becomes visible.
    pub fn commit(self, layout: &Layout, expected: &Digest) -> Result<u64, StoreError> {
        let (file, path, hasher, len) = self.into_parts();
        let actual = if hasher.algorithm() == expected.algorithm() {
            hasher.finish()
        } else {
            // The session hashed with another algorithm than the client finally names: rehash.
            hash_file(File::open(&path).at(&path)?, expected.algorithm()).at(&path)?
        };
        finish_commit(layout, &path, file, len, expected, actual)
    }
}

fn finish_commit(
    layout: &Layout,
    path: &Path,
    file: File,
    len: u64,
    expected: &Digest,
    actual: Digest,
) -> Result<u64, StoreError> {
    if &actual != expected {
        let _ = fs::remove_file(path);
        return Err(StoreError::DigestMismatch { expected: expected.to_string(), actual: actual.to_string() });
    }
    let target = layout.blob(expected);
    if target.exists() {
        // Same digest, same bytes: the existing file is as good, and already durable.
        let _ = fs::remove_file(path);
        return Ok(len);
    }
    file.sync_all().at(path)?;
    drop(file);
    let parent = target.parent().unwrap_or(layout.root());
    fs::create_dir_all(parent).at(parent)?;
    fs::rename(path, &target).at(&target)?;
    sync_dir(parent);
    Ok(len)
}

/// Hashes a whole file (resuming an upload after a restart, or a late algorithm switch).
pub fn hash_file(mut file: File, algorithm: Algorithm) -> io::Result<Digest> {
    Ok(hash_prefix(&mut file, algorithm, u64::MAX)?.0)
}

/// Hashes the first `limit` bytes of `file`; returns the hasher state and how many bytes it saw.
pub fn hash_prefix(file: &mut File, algorithm: Algorithm, limit: u64) -> io::Result<(Digest, Hasher, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; COPY_BUF];
    let mut seen = 0u64;
    let mut reader = file.take(limit);
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        seen += n as u64;
    }
    Ok((hasher.clone().finish(), hasher, seen))
}

/// Asks the kernel to start writing `len` bytes at `offset` back to disk, without waiting.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid open descriptor and plain integers; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// fsyncs a directory so a rename inside it survives a crash. Best effort: some filesystems
/// refuse to open directories for sync, and the data itself is already durable.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest() {
        assert_eq!(
            digest_of(Algorithm::Sha256, b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn commit_verifies_and_places() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let mut w = BlobWriter::temp(&layout, Algorithm::Sha256).unwrap();
        w.copy_from(&mut &b"hello"[..], None).unwrap();
        let good = digest_of(Algorithm::Sha256, b"hello");
        w.commit(&layout, &good).unwrap();
        assert_eq!(fs::read(layout.blob(&good)).unwrap(), b"hello");

        let mut w = BlobWriter::temp(&layout, Algorithm::Sha256).unwrap();
        w.copy_from(&mut &b"other"[..], None).unwrap();
        let temp = w.path().to_path_buf();
        assert!(matches!(w.commit(&layout, &good), Err(StoreError::DigestMismatch { .. })));
        assert!(!temp.exists());
    }

    #[test]
    fn sha512_commit_after_sha256_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let mut w = BlobWriter::temp(&layout, Algorithm::Sha256).unwrap();
        w.copy_from(&mut &b"abc"[..], None).unwrap();
        let d = digest_of(Algorithm::Sha512, b"abc");
        w.commit(&layout, &d).unwrap();
        assert!(layout.blob(&d).exists());
    }
}
