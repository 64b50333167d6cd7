//! Blob bytes: streamed into a file while the digest is computed on the fly, then verified,
//! fsynced and renamed into `blobs/`. A blob is never visible under its digest before its bytes
//! have been checked against it. Writeback starts while the bytes stream (`sync_file_range`),
//! so the final fsync waits only for the tail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256, Sha512};

use super::{IoContext, Layout, StoreError};
use crate::durable::{new_id, sync_dir};
use crate::encoding::hex;
use crate::registry::names::{Algorithm, Digest};

/// Bytes copied per read/hash/write step: large enough that syscalls and hand-offs are few
/// (4096 per GiB), small enough that an upload holds 1 MiB in all (issue 9: peak RSS).
const COPY_BUF: usize = 256 * 1024;
/// Bodies longer than this are hashed on a second thread.
const PIPELINE_AFTER: u64 = 4 * 1024 * 1024;
/// Buffers in flight between the receiving and the hashing thread.
const PIPELINE_BUFFERS: usize = 4;
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
    /// Called after every write with the length so far (pull-through readers follow the file
    /// as it grows).
    on_write: Option<Box<dyn Fn(u64) + Send>>,
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
        let path = dir.join(format!("blob-{}", new_id()));
        // Readable too: `reader` hands out handles that follow the file while it is written.
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).at(&path)?;
        let guard = TempGuard(Some(path.clone()));
        Ok(BlobWriter { file, path, hasher: Hasher::new(algorithm), len: 0, synced: 0, _guard: guard, on_write: None })
    }

    /// Appends to an existing partial file whose first `len` bytes `hasher` has already seen.
    pub fn resume(path: &Path, hasher: Hasher, len: u64) -> Result<BlobWriter, StoreError> {
        let mut file = OpenOptions::new().write(true).open(path).at(path)?;
        file.set_len(len).at(path)?;
        file.seek(SeekFrom::Start(len)).at(path)?;
        Ok(BlobWriter {
            file,
            path: path.to_path_buf(),
            hasher,
            len,
            synced: len,
            _guard: TempGuard(None),
            on_write: None,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// A handle on the same file for positional reads (`FileExt::read_at`): it shares the
    /// write offset, so it must never be read with `Read::read`.
    pub fn reader(&self) -> Result<File, StoreError> {
        self.file.try_clone().at(&self.path)
    }

    /// Runs `callback` with the file's length after every write to it.
    pub fn on_write(&mut self, callback: Box<dyn Fn(u64) + Send>) {
        self.on_write = Some(callback);
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
    ///
    /// Small bodies are copied inline. Past `PIPELINE_AFTER` bytes the hashing moves to a second
    /// thread, so receiving and writing overlap with SHA-256 (which alone runs at about the
    /// speed of the network on loopback). A body known to be that long, that nobody follows
    /// while it is written (an upload, not a pull-through), is pipelined from its first byte:
    /// a 16 MiB PATCH spent a quarter of itself in the inline phase (issue 9: chunked pushes
    /// ran at 60% of monolithic ones).
    pub fn copy_from(&mut self, reader: &mut dyn Read, limit: Option<u64>) -> Result<u64, StoreError> {
        let mut copied = 0u64;
        if self.on_write.is_none() && limit.is_some_and(|l| l >= PIPELINE_AFTER) {
            return self.copy_pipelined(reader, limit, copied);
        }
        // The first MiBs are written as they arrive (a pull-through client waiting for its first
        // byte follows this file); after that, full buffers keep writes and hand-offs few.
        {
            let (mut small, mut pages);
            let buf: &mut [u8] = match limit {
                Some(l) if l < COPY_BUF as u64 => {
                    small = vec![0u8; l as usize];
                    &mut small
                }
                _ => {
                    pages = PageBuf::new(COPY_BUF).at(&self.path)?;
                    &mut pages
                }
            };
            while copied < PIPELINE_AFTER {
                match self.read_some(reader, buf, limit, copied, false)? {
                    0 => return Ok(copied),
                    n => {
                        self.write_chunk(&buf[..n])?;
                        self.hasher.update(&buf[..n]);
                        copied += n as u64;
                    }
                }
            }
        }
        self.copy_pipelined(reader, limit, copied)
    }

    /// Reads once, or with `fill` as much of `buf` as the body gives (up to `limit`), so a body
    /// that arrives in small pieces (docker's 32 KiB chunks) is still written and hashed in
    /// large blocks.
    fn read_some(
        &self,
        reader: &mut dyn Read,
        buf: &mut [u8],
        limit: Option<u64>,
        copied: u64,
        fill: bool,
    ) -> Result<usize, StoreError> {
        let want = match limit {
            Some(l) => (l - copied).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        let mut filled = 0;
        while filled < want {
            match reader.read(&mut buf[filled..want]) {
                Ok(0) => break,
                Ok(n) if !fill => return Ok(n),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::BodyRead(e)),
            }
        }
        Ok(filled)
    }

    fn copy_pipelined(
        &mut self,
        reader: &mut dyn Read,
        limit: Option<u64>,
        mut copied: u64,
    ) -> Result<u64, StoreError> {
        let (to_hasher, hasher_in) = crossbeam_channel::bounded::<(PageBuf, usize)>(PIPELINE_BUFFERS);
        let (to_reader, free_buffers) = crossbeam_channel::bounded::<PageBuf>(PIPELINE_BUFFERS);
        for _ in 0..PIPELINE_BUFFERS {
            let _ = to_reader.send(PageBuf::new(COPY_BUF).at(&self.path)?);
        }
        let mut hasher = self.hasher.clone();
        let (result, hasher) = std::thread::scope(|scope| {
            let hashing = scope.spawn(move || {
                for (buf, n) in hasher_in.iter() {
                    hasher.update(&buf[..n]);
                    if to_reader.send(buf).is_err() {
                        break;
                    }
                }
                hasher
            });
            let result = (|| loop {
                let Ok(mut buf) = free_buffers.recv() else { return Ok(copied) };
                let n = self.read_some(reader, &mut buf, limit, copied, true)?;
                if n == 0 {
                    return Ok(copied);
                }
                self.write_chunk(&buf[..n])?;
                copied += n as u64;
                if to_hasher.send((buf, n)).is_err() {
                    return Ok(copied);
                }
            })();
            drop(to_hasher);
            (result, hashing.join())
        });
        match hasher {
            Ok(h) => self.hasher = h,
            // The hashing thread cannot panic on bytes; if it did, the state is unknown.
            Err(_) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source: io::Error::other("hashing thread failed"),
                })
            }
        }
        result
    }

    /// Writes bytes to the file (the caller hashes them).
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes).at(&self.path)?;
        self.len += bytes.len() as u64;
        if let Some(callback) = &self.on_write {
            callback(self.len);
        }
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
    /// On a mismatch, or any failure before the rename (a full disk at the fsync or at the
    /// shard directory), the file is removed and nothing becomes visible.
    pub fn commit(self, layout: &Layout, expected: &Digest) -> Result<u64, StoreError> {
        let (file, path, hasher, len) = self.into_parts();
        let result = (|| {
            let actual = if hasher.algorithm() == expected.algorithm() {
                hasher.finish()
            } else {
                // The session hashed with another algorithm than the client finally names: rehash.
                hash_file(File::open(&path).at(&path)?, expected.algorithm()).at(&path)?
            };
            finish_commit(layout, &path, file, len, expected, actual)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&path);
        }
        result
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
    // Same digest, same bytes: the existing file is as good, and already durable. Claiming it
    // (mtime → now) keeps an online `clean` off it (`registry::gc`); a failed claim means it is
    // gone (or going), so ours goes into place.
    if super::links::touch(&target).unwrap_or(false) {
        let _ = fs::remove_file(path);
        return Ok(len);
    }
    file.sync_all().at(path)?;
    drop(file);
    let parent = target.parent().unwrap_or(layout.root());
    fs::create_dir_all(parent).at(parent)?;
    fs::rename(path, &target).at(&target)?;
    // Young from the moment it is visible, whenever its bytes were written (grace window).
    let _ = super::links::touch(&target);
    sync_dir(parent);
    Ok(len)
}

/// A copy buffer of its own anonymous pages, unmapped when dropped. Not heap: glibc keeps a
/// freed block this large in the arena of the thread that freed it (its mmap threshold rises
/// to the largest block freed), so every worker that once took a push kept ~5 MiB resident
/// (issue 9: 64 PATCHes on fresh connections left glci at 94 MiB VmHWM). The pages of a
/// mapping go back to the kernel at `munmap`, whatever thread ends the upload.
struct PageBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: PageBuf owns its mapping exclusively, like a Box<[u8]>.
unsafe impl Send for PageBuf {}

impl PageBuf {
    fn new(len: usize) -> io::Result<PageBuf> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(PageBuf { ptr, len })
    }
}

impl std::ops::Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable (zero-filled at first) for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and writable; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
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
    fn pipelined_copy_hashes_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let data: Vec<u8> = (0..(PIPELINE_AFTER as usize * 3 + 12345)).map(|i| (i * 31 % 253) as u8).collect();
        // A reader that returns odd-sized pieces, like a socket.
        struct Jagged<'a>(&'a [u8]);
        impl Read for Jagged<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(77_777);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut w = BlobWriter::temp(&layout, Algorithm::Sha256).unwrap();
        assert_eq!(w.copy_from(&mut Jagged(&data), None).unwrap(), data.len() as u64);
        let expected = digest_of(Algorithm::Sha256, &data);
        assert_eq!(w.hasher().clone().finish(), expected);
        // With a limit shorter than the data, exactly the limit is taken.
        let mut w = BlobWriter::temp(&layout, Algorithm::Sha256).unwrap();
        let limit = PIPELINE_AFTER + 5;
        assert_eq!(w.copy_from(&mut Jagged(&data), Some(limit)).unwrap(), limit);
        assert_eq!(w.hasher().clone().finish(), digest_of(Algorithm::Sha256, &data[..limit as usize]));
        w.commit(&layout, &digest_of(Algorithm::Sha256, &data[..limit as usize])).unwrap();
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
