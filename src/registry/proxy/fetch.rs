//! Single-flight blob downloads that stream while they are written (DESIGN §7). The first miss
//! of a digest starts one download thread; every client that misses the same digest meanwhile
//! (the first one included) reads the growing temp file through a `FollowReader`, so the first
//! byte leaves after one upstream round trip and the upstream is asked once. The download goes
//! on if clients leave; the blob becomes visible only after its digest is verified.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use crate::http::Growing;
use crate::registry::error::ApiError;
use crate::registry::names::{Digest, Name};

/// How far a download has got.
#[derive(Default)]
struct Progress {
    /// The file being written (a read handle); set once the upstream answered.
    file: Option<Arc<File>>,
    /// The upstream's announced length, when it sent one.
    total: Option<u64>,
    /// Set once the first bytes are stored, or the download ended: a failure before any byte
    /// is stored (the upstream, or a full disk) is still answered as an error status.
    started: bool,
    /// How many bytes the file holds.
    stored: u64,
    /// Set at the end: `Ok` = verified and committed.
    outcome: Option<Result<(), ApiError>>,
}

pub struct Download {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// What a client learns once the upstream has answered.
pub enum Start {
    /// Stream `total` (or until the end) bytes with a `FollowReader`.
    Streaming { reader: FollowReader, total: Option<u64> },
    /// The download failed before a body started (not found upstream, unreachable...).
    Failed(ApiError),
}

impl Download {
    fn new() -> Download {
        Download { progress: Mutex::new(Progress::default()), changed: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the download thread when the upstream's body starts.
    pub fn started(&self, file: Arc<File>, total: Option<u64>) {
        let mut p = self.lock();
        p.file = Some(file);
        p.total = total;
    }

    /// Called by the download thread after each write (`stored` bytes in all), so readers
    /// look again.
    pub fn advanced(&self, stored: u64) {
        let mut p = self.lock();
        p.stored = stored;
        p.started = true;
        drop(p);
        self.changed.notify_all();
    }

    /// Called by the download thread at the end.
    pub fn finished(&self, outcome: Result<(), ApiError>) {
        let mut p = self.lock();
        p.started = true;
        p.outcome = Some(outcome);
        drop(p);
        self.changed.notify_all();
    }

    /// Blocks until the upstream has answered, then hands out a reader.
    pub fn wait_start(self: &Arc<Self>) -> Start {
        let mut p = self.lock();
        while !p.started {
            p = self.changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        match (&p.file, &p.outcome) {
            (_, Some(Err(e))) if p.stored == 0 => Start::Failed(e.clone()),
            (Some(file), _) => Start::Streaming {
                reader: FollowReader {
                    download: Arc::clone(self),
                    file: Arc::clone(file),
                    position: 0,
                    total: p.total,
                },
                total: p.total,
            },
            (None, Some(Err(e))) => Start::Failed(e.clone()),
            (None, _) => Start::Failed(ApiError::internal("pull-through", &"download ended without a body")),
        }
    }
}

/// Reads a file that another thread is still writing, waiting for more bytes until the
/// download's outcome is known. Fails (so the client sees a broken transfer, never wrong
/// bytes silently) when the download fails, e.g. on a digest mismatch. The last byte of an
/// announced length is held back until the blob is verified and stored: a client never gets a
/// complete body whose digest turns out wrong, and once it has one, the blob is in the store.
pub struct FollowReader {
    download: Arc<Download>,
    file: Arc<File>,
    position: u64,
    total: Option<u64>,
}

impl FollowReader {
    /// Waits until bytes from `from` on may be sent and returns where they end (`from` at the
    /// end): the bytes stored so far, short of the held-back last one until the outcome is in.
    fn wait_sendable(&self, from: u64) -> io::Result<u64> {
        let mut p = self.download.lock();
        loop {
            let verified = match &p.outcome {
                Some(Ok(())) => true,
                Some(Err(e)) => return Err(io::Error::other(e.message.clone())),
                None => false,
            };
            let end = match self.total {
                Some(total) if !verified => p.stored.min(total.saturating_sub(1)),
                Some(total) => p.stored.min(total),
                None => p.stored,
            };
            // Everything was stored before the outcome was set: once verified, this is the end.
            if end > from || verified {
                return Ok(end.max(from));
            }
            // Checked and waited under one lock: a write or the outcome wakes it.
            p = self.download.changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let end = self.wait_sendable(self.position)?;
        let room = (end - self.position).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..room], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Growing for FollowReader {
    fn file(&self) -> &File {
        &self.file
    }
    fn sendable_end(&mut self, from: u64) -> io::Result<u64> {
        self.wait_sendable(from)
    }
}

/// The downloads in flight, by repository and digest. Per repository, because the upstream
/// decides per repository who may read a blob: a client of one repository never receives bytes
/// fetched for another.
#[derive(Default)]
pub struct Inflight {
    downloads: Mutex<HashMap<(Name, Digest), Arc<Download>>>,
}

impl Inflight {
    /// Joins the download of `digest` for `name`, or starts one with `start` (which must
    /// arrange for `Inflight::remove`, then `Download::finished`, to be called).
    pub fn join_or_start(&self, name: &Name, digest: &Digest, start: impl FnOnce(Arc<Download>)) -> Arc<Download> {
        let key = (name.clone(), digest.clone());
        let mut downloads = self.downloads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = downloads.get(&key) {
            return Arc::clone(existing);
        }
        let download = Arc::new(Download::new());
        downloads.insert(key, Arc::clone(&download));
        drop(downloads);
        start(Arc::clone(&download));
        download
    }

    pub fn remove(&self, name: &Name, digest: &Digest) {
        self.downloads.lock().unwrap_or_else(|p| p.into_inner()).remove(&(name.clone(), digest.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn follower_reads_while_the_writer_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut writer = File::create(&path).unwrap();
        let download = Arc::new(Download::new());
        download.started(Arc::new(File::open(&path).unwrap()), Some(6));
        let d = Arc::clone(&download);
        let t = std::thread::spawn(move || {
            for (piece, stored) in [(&b"abc"[..], 3), (b"def", 6)] {
                std::thread::sleep(Duration::from_millis(20));
                writer.write_all(piece).unwrap();
                d.advanced(stored);
            }
            d.finished(Ok(()));
        });
        // The response starts with the first stored byte.
        let Start::Streaming { mut reader, total } = download.wait_start() else { panic!("streaming") };
        assert_eq!(total, Some(6));
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        t.join().unwrap();
        assert_eq!(out, b"abcdef");
    }

    #[test]
    fn the_last_byte_waits_for_verification() {
        use crate::registry::error::OciCode;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        for verified in [true, false] {
            let download = Arc::new(Download::new());
            download.started(Arc::new(File::open(&path).unwrap()), Some(6));
            download.advanced(6);
            let Start::Streaming { mut reader, .. } = download.wait_start() else { panic!("streaming") };
            // All six bytes are written, but the digest is not checked yet.
            let mut first = [0u8; 16];
            assert_eq!(reader.read(&mut first).unwrap(), 5);
            let d = Arc::clone(&download);
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                d.finished(if verified {
                    Ok(())
                } else {
                    Err(ApiError::new(OciCode::DigestInvalid, "digest mismatch"))
                });
            });
            let mut rest = Vec::new();
            let result = reader.read_to_end(&mut rest);
            t.join().unwrap();
            if verified {
                assert_eq!(result.unwrap(), 1);
                assert_eq!(rest, b"f");
            } else {
                assert!(result.is_err());
                assert!(rest.is_empty());
            }
        }
    }

    /// What a sendfile(2) sender of the growing file is told: the stored bytes, one short of
    /// an announced end until the outcome is in, then the end.
    #[test]
    fn sendable_ranges_follow_the_stored_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcdef").unwrap();
        let download = Arc::new(Download::new());
        download.started(Arc::new(File::open(&path).unwrap()), Some(6));
        download.advanced(4);
        let Start::Streaming { mut reader, .. } = download.wait_start() else { panic!("streaming") };
        assert_eq!(reader.sendable_end(0).unwrap(), 4);
        assert_eq!(reader.sendable_end(2).unwrap(), 4);
        download.advanced(6);
        assert_eq!(reader.sendable_end(4).unwrap(), 5);
        let d = Arc::clone(&download);
        let t = std::thread::spawn(move || d.finished(Ok(())));
        assert_eq!(reader.sendable_end(5).unwrap(), 6);
        t.join().unwrap();
        assert_eq!(reader.sendable_end(6).unwrap(), 6, "the end");
    }

    #[test]
    fn a_failed_download_fails_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"partial").unwrap();
        let download = Arc::new(Download::new());
        download.started(Arc::new(File::open(&path).unwrap()), None);
        download.advanced(7);
        let Start::Streaming { mut reader, .. } = download.wait_start() else { panic!("streaming") };
        download.finished(Err(ApiError::new(crate::registry::error::OciCode::DigestInvalid, "digest mismatch")));
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).is_err());
        let failed = Arc::new(Download::new());
        failed.finished(Err(ApiError::new(crate::registry::error::OciCode::BlobUnknown, "not found")));
        assert!(matches!(failed.wait_start(), Start::Failed(_)));
        // Failing before the first byte was stored (a full disk) is still an error status.
        let early = Arc::new(Download::new());
        early.started(Arc::new(File::open(&path).unwrap()), Some(7));
        early.finished(Err(ApiError::new(crate::registry::error::OciCode::Unknown, "disk full").with_status(507)));
        assert!(matches!(early.wait_start(), Start::Failed(e) if e.status == 507));
    }
}
