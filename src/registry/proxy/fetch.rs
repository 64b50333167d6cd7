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
use std::time::Duration;

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
    /// Bumped by every write, so a reader that found nothing new cannot miss the next one.
    generation: u64,
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

    /// Called by the download thread after each write, so readers look again.
    pub fn advanced(&self) {
        let mut p = self.lock();
        p.generation += 1;
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
            (_, Some(Err(e))) if p.generation == 0 => Start::Failed(e.clone()),
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

impl Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (verified, generation) = {
                let p = self.download.lock();
                match &p.outcome {
                    Some(Ok(())) => (true, p.generation),
                    Some(Err(e)) => return Err(io::Error::other(e.message.clone())),
                    None => (false, p.generation),
                }
            };
            let end = match self.total {
                Some(total) if verified => total,
                Some(total) => total.saturating_sub(1),
                None => u64::MAX,
            };
            let room = end.saturating_sub(self.position).min(buf.len() as u64) as usize;
            if room > 0 {
                let n = self.file.read_at(&mut buf[..room], self.position)?;
                if n > 0 {
                    self.position += n as u64;
                    return Ok(n);
                }
            }
            if verified {
                // Everything was written before the outcome was set: this is the end.
                return Ok(0);
            }
            let p = self.download.lock();
            if p.outcome.is_none() && p.generation == generation {
                // Woken by each write; the timeout only guards against a missed wakeup.
                let _ = self.download.changed.wait_timeout(p, Duration::from_millis(50));
            }
        }
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

    #[test]
    fn follower_reads_while_the_writer_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut writer = File::create(&path).unwrap();
        let download = Arc::new(Download::new());
        download.started(Arc::new(File::open(&path).unwrap()), Some(6));
        let d = Arc::clone(&download);
        let t = std::thread::spawn(move || {
            for piece in [&b"abc"[..], b"def"] {
                std::thread::sleep(Duration::from_millis(20));
                writer.write_all(piece).unwrap();
                d.advanced();
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
            download.advanced();
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

    #[test]
    fn a_failed_download_fails_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"partial").unwrap();
        let download = Arc::new(Download::new());
        download.started(Arc::new(File::open(&path).unwrap()), None);
        download.advanced();
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
