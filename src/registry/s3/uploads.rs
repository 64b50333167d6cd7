//! Upload sessions in the bucket, so a push started on one instance continues on any other (or
//! after a restart): `uploads/<id>/info` names the repository, and every chunk a PATCH (or the
//! closing PUT) brings is an object `uploads/<id>/<offset, 20 digits>`. The session's offset is
//! the length of the contiguous run of chunks from 0; a chunk streams into its object as S3
//! multipart parts while it is hashed. The running hash stays in memory between requests on one
//! instance; another instance (or a restart) recomputes it once by reading the chunks back.
//!
//! Closing checks the digest first, then makes the blob: a server-side copy of a single chunk
//! (what Docker sends: one streamed PATCH), or the chunks streamed into one multipart upload.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::client::{Entry, S3Client};
use super::store::{verify, Keys};
use crate::durable::new_id;
use crate::registry::backend::UploadSessions;
use crate::registry::names::{Algorithm, Digest, Name};
use crate::registry::storage::{Hasher, StoreError};
use crate::registry::uploads::{is_upload_id, Expired, UploadChunk, UploadError};

/// S3's limit for one `CopyObject`.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// The hash of a session's first `offset` bytes, as this instance last saw them.
struct Running {
    offset: u64,
    hasher: Hasher,
}

pub struct S3Uploads {
    client: Arc<S3Client>,
    keys: Keys,
    /// Per-session locks (one request at a time per session on this instance) with the hash.
    live: Mutex<HashMap<String, Arc<Mutex<Option<Running>>>>>,
}

/// A chunk object: where it starts and how long it is.
#[derive(Clone, Debug, PartialEq)]
struct Chunk {
    key: String,
    offset: u64,
    len: u64,
}

/// The contiguous run of chunks from offset 0 among a session's objects (other keys, and
/// chunks past a gap, are ignored), and the offset it reaches.
fn contiguous(session_prefix: &str, entries: &[Entry]) -> (Vec<Chunk>, u64) {
    let mut chunks: Vec<Chunk> = entries
        .iter()
        .filter_map(|e| {
            let name = e.key.strip_prefix(session_prefix)?;
            let offset = (name.len() == 20).then(|| name.parse::<u64>().ok()).flatten()?;
            Some(Chunk { key: e.key.clone(), offset, len: e.size })
        })
        .collect();
    chunks.sort_by_key(|c| c.offset);
    let mut reached = 0;
    let mut run = Vec::new();
    for chunk in chunks {
        if chunk.offset != reached {
            continue;
        }
        reached += chunk.len;
        run.push(chunk);
    }
    (run, reached)
}

impl S3Uploads {
    pub fn new(client: Arc<S3Client>, keys: Keys) -> S3Uploads {
        S3Uploads { client, keys, live: Mutex::new(HashMap::new()) }
    }

    fn session_prefix(&self, id: &str) -> String {
        format!("{}{id}/", self.keys.uploads())
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<Option<Running>>>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session(&self, name: &Name, id: &str) -> Result<Arc<Mutex<Option<Running>>>, UploadError> {
        if !is_upload_id(id) {
            return Err(UploadError::Unknown);
        }
        let owner = self.client.get_bytes(&format!("{}info", self.session_prefix(id)))?;
        if owner.as_deref() != Some(name.as_str().as_bytes()) {
            return Err(UploadError::Unknown);
        }
        Ok(Arc::clone(self.lock_table().entry(id.to_string()).or_default()))
    }

    fn chunks(&self, id: &str) -> Result<(Vec<Chunk>, u64), StoreError> {
        let prefix = self.session_prefix(id);
        let listing = self.client.list_all(&prefix, None)?;
        Ok(contiguous(&prefix, &listing.keys))
    }

    /// Streams the session's bytes (its chunks, in order).
    fn read_chunks(&self, chunks: &[Chunk]) -> Result<Box<dyn Read>, StoreError> {
        let mut reader: Box<dyn Read> = Box::new(std::io::empty());
        for chunk in chunks {
            let Some(part) = self.client.get(&chunk.key, None)? else {
                return Err(gone(&chunk.key));
            };
            reader = Box::new(reader.chain(part));
        }
        Ok(reader)
    }

    /// The hash of the session's first `offset` bytes: the one kept here when it is current,
    /// otherwise recomputed from the chunks (another instance wrote some, or we restarted).
    fn hasher_at(&self, state: &mut Option<Running>, chunks: &[Chunk], offset: u64) -> Result<Hasher, StoreError> {
        if let Some(running) = state.take().filter(|r| r.offset == offset) {
            return Ok(running.hasher);
        }
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut reader = self.read_chunks(chunks)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| StoreError::Io { path: "upload chunks".into(), source: e })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher)
    }

    fn append_locked(
        &self,
        name: &Name,
        id: &str,
        state: &mut Option<Running>,
        chunk: UploadChunk<'_>,
    ) -> Result<(Vec<Chunk>, u64), UploadError> {
        let (mut chunks, offset) = self.chunks(id)?;
        let expected = chunk.expected_len(offset)?;
        let body = chunk.body;
        let hasher = std::cell::RefCell::new(self.hasher_at(state, &chunks, offset)?);
        let before = hasher.borrow().clone();
        let key = format!("{}{offset:020}", self.session_prefix(id));
        let limited: Box<dyn Read> = match expected {
            Some(n) => Box::new(body.take(n)),
            None => Box::new(body),
        };
        let info = format!("{}info", self.session_prefix(id));
        let beat = || {
            let _ = self.client.put_bytes(&info, name.as_str().as_bytes());
        };
        let mut limited = Heartbeat { inner: limited, last: Instant::now(), beat: &beat };
        let written =
            self.client.put_streamed(
                &key,
                &mut limited,
                &mut |b| hasher.borrow_mut().update(b),
                &mut |n| match expected {
                    Some(e) if e != n => Err(StoreError::SizeMismatch { expected: e, actual: n }),
                    _ => Ok(()),
                },
            );
        match written {
            Ok(len) => {
                let end = offset + len;
                *state = Some(Running { offset: end, hasher: hasher.into_inner() });
                chunks.push(Chunk { key, offset, len });
                Ok((chunks, end))
            }
            // The chunk is refused whole (nothing was created): the offset stays where it was.
            Err(StoreError::SizeMismatch { .. }) => {
                *state = Some(Running { offset, hasher: before });
                Err(UploadError::LengthMismatch)
            }
            Err(e) => {
                *state = Some(Running { offset, hasher: before });
                Err(e.into())
            }
        }
    }

    fn remove(&self, id: &str) {
        if let Ok(listing) = self.client.list_all(&self.session_prefix(id), None) {
            // `info` last: a session is known until its chunks are gone.
            let mut keys: Vec<_> = listing.keys.into_iter().map(|e| e.key).collect();
            keys.sort_by_key(|k| k.ends_with("/info"));
            for key in keys {
                let _ = self.client.delete(&key);
            }
        }
        self.lock_table().remove(id);
    }

    /// Makes the blob from the verified chunks.
    fn assemble(&self, chunks: &[Chunk], total: u64, digest: &Digest) -> Result<(), StoreError> {
        let blob = self.keys.blob(digest);
        if self.client.head(&blob)?.is_some_and(|m| m.len == total) {
            return Ok(());
        }
        let whole: Vec<&Chunk> = chunks.iter().filter(|c| c.len > 0).collect();
        match whole.as_slice() {
            [] => self.client.put_bytes(&blob, b""),
            [only] if only.len <= MAX_COPY => self.client.copy(&only.key, &blob),
            _ => {
                let mut reader = self.read_chunks(chunks)?;
                let hasher = std::cell::RefCell::new(Hasher::new(digest.algorithm()));
                self.client
                    .put_streamed(&blob, &mut reader, &mut |b| hasher.borrow_mut().update(b), &mut |_| {
                        verify(hasher.replace(Hasher::new(digest.algorithm())), digest)
                    })
                    .map(|_| ())
            }
        }
    }
}

/// While a chunk streams in, its session's `info` is written again every [`HEARTBEAT`]: a push
/// in flight (on any instance) always looks touched to `clean`, which only expires sessions
/// untouched for a minute or more (`gc::MIN_LEFTOVER_AGE`), even while a long chunk is still
/// filling its first part and nothing of it is in the store yet.
struct Heartbeat<'a> {
    inner: Box<dyn Read + 'a>,
    last: Instant,
    beat: &'a dyn Fn(),
}

/// How often a session in use is marked as touched.
const HEARTBEAT: Duration = Duration::from_secs(20);

impl Read for Heartbeat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.last.elapsed() >= HEARTBEAT {
            (self.beat)();
            self.last = Instant::now();
        }
        self.inner.read(buf)
    }
}

fn gone(key: &str) -> StoreError {
    StoreError::Io {
        path: key.into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "upload chunk removed underneath the session"),
    }
}

impl UploadSessions for S3Uploads {
    fn start(&self, name: &Name) -> Result<String, StoreError> {
        let id = new_id();
        self.client.put_bytes(&format!("{}info", self.session_prefix(&id)), name.as_str().as_bytes())?;
        let running = Running { offset: 0, hasher: Hasher::new(Algorithm::Sha256) };
        self.lock_table().insert(id.clone(), Arc::new(Mutex::new(Some(running))));
        Ok(id)
    }

    fn offset(&self, name: &Name, id: &str) -> Result<u64, UploadError> {
        let session = self.session(name, id)?;
        let _guard = session.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.chunks(id)?.1)
    }

    fn append(&self, name: &Name, id: &str, chunk: UploadChunk<'_>) -> Result<u64, UploadError> {
        let session = self.session(name, id)?;
        let mut state = session.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.append_locked(name, id, &mut state, chunk)?.1)
    }

    fn finish(&self, name: &Name, id: &str, chunk: UploadChunk<'_>, expected: &Digest) -> Result<u64, UploadError> {
        let session = self.session(name, id)?;
        let mut state = session.lock().unwrap_or_else(|p| p.into_inner());
        let (chunks, total) = self.append_locked(name, id, &mut state, chunk)?;
        let hasher = self.hasher_at(&mut state, &chunks, total)?;
        let result = if hasher.algorithm() == expected.algorithm() {
            verify(hasher, expected).and_then(|()| self.assemble(&chunks, total, expected))
        } else {
            // A sha512 upload: hashed again with its own algorithm while it is assembled.
            let mut reader = self.read_chunks(&chunks)?;
            let own = std::cell::RefCell::new(Hasher::new(expected.algorithm()));
            self.client
                .put_streamed(&self.keys.blob(expected), &mut reader, &mut |b| own.borrow_mut().update(b), &mut |_| {
                    verify(own.replace(Hasher::new(expected.algorithm())), expected)
                })
                .map(|_| ())
        };
        drop(state);
        self.remove(id);
        result?;
        Ok(total)
    }

    fn cancel(&self, name: &Name, id: &str) -> Result<(), UploadError> {
        let session = self.session(name, id)?;
        let _guard = session.lock().unwrap_or_else(|p| p.into_inner());
        self.remove(id);
        Ok(())
    }

    fn expire(&self, max_age: Duration, dry_run: bool) -> Expired {
        // Ages by the store's clock, as it stamps the chunks (the hosts' clocks may differ).
        let now = super::sweep::store_now(&self.client, &self.keys).unwrap_or_else(|_| SystemTime::now());
        let mut expired = Expired::default();
        let Ok(sessions) = self.client.list_all(&self.keys.uploads(), Some("/")) else { return expired };
        for prefix in sessions.prefixes {
            let id = prefix.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
            let Ok(listing) = self.client.list_all(&prefix, None) else { continue };
            let newest = listing.keys.iter().filter_map(Entry::listed_time).max();
            let old = newest.is_none_or(|t| now.duration_since(t).unwrap_or_default() >= max_age);
            let held = self.lock_table().get(&id).is_some_and(|lock| lock.try_lock().is_err());
            if !old || held {
                continue;
            }
            if !dry_run {
                self.remove(&id);
            }
            expired.sessions += 1;
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, size: u64) -> Entry {
        Entry { key: key.into(), size, last_modified: String::new() }
    }

    #[test]
    fn the_offset_is_the_contiguous_run_of_chunks_from_zero() {
        let p = "u/id/";
        let entries = [
            entry("u/id/info", 3),
            entry("u/id/00000000000000000005", 7),
            entry("u/id/00000000000000000000", 5),
            // Past a gap (a chunk whose predecessor is missing): not counted.
            entry("u/id/00000000000000000100", 1),
        ];
        let (run, offset) = contiguous(p, &entries);
        assert_eq!(offset, 12);
        assert_eq!(run.iter().map(|c| c.offset).collect::<Vec<_>>(), [0, 5]);
        assert_eq!(contiguous(p, &[entry("u/id/info", 1)]).1, 0);
    }
}
