//! Blob upload sessions, on disk under `uploads/<id>/` so they survive a restart: `data` holds
//! the bytes received so far (its length is the offset), `info` the repository. The running
//! hash lives in memory between requests; after a restart it is recomputed from `data` once.
//! Requests on one session are serialized by a per-session lock.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::durable::new_id;
use crate::registry::names::{Algorithm, Digest, Name};
use crate::registry::storage::blobs::hash_prefix;
use crate::registry::storage::links::{read_link, write_atomic};
use crate::registry::storage::{BlobWriter, Hasher, IoContext, Layout, StoreError};

/// True for ids of the shape `new_id` makes; anything else never reaches the filesystem.
pub fn is_upload_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

#[derive(Debug)]
pub enum UploadError {
    /// No such session for this repository.
    Unknown,
    /// A chunk that does not start at the current offset; carries the offset.
    OutOfOrder {
        offset: u64,
    },
    /// `Content-Range` and the body disagree on the length.
    LengthMismatch,
    Store(StoreError),
}

/// One request's piece of an upload (a PATCH, or the closing PUT's body), as both backends take
/// it: the body, its `Content-Range` (inclusive start, end) and the `Content-Length` the client
/// declared (none when chunked).
pub struct UploadChunk<'a> {
    pub body: &'a mut dyn Read,
    pub range: Option<(u64, u64)>,
    pub declared_len: Option<u64>,
}

impl UploadChunk<'_> {
    /// How many bytes this chunk must bring, if the client said, for a session now at `offset`:
    /// a chunk must start at the offset, and its range and declared length must agree.
    pub fn expected_len(&self, offset: u64) -> Result<Option<u64>, UploadError> {
        let Some((start, end)) = self.range else { return Ok(self.declared_len) };
        if start != offset || end < start {
            return Err(UploadError::OutOfOrder { offset });
        }
        // `0-18446744073709551615` is 2^64 bytes: no body is that long (found by fuzzing).
        let len = (end - start).checked_add(1);
        if len.is_none() || self.declared_len.is_some_and(|n| Some(n) != len) {
            return Err(UploadError::LengthMismatch);
        }
        Ok(len)
    }
}

impl From<StoreError> for UploadError {
    fn from(e: StoreError) -> Self {
        UploadError::Store(e)
    }
}

#[derive(Default)]
struct SessionState {
    /// Hash of `data`'s bytes; `None` until recomputed after a restart or a failed write.
    hasher: Option<Hasher>,
}

pub struct Uploads {
    layout: Layout,
    live: Mutex<HashMap<String, Arc<Mutex<SessionState>>>>,
}

impl Uploads {
    pub fn new(layout: Layout) -> Uploads {
        Uploads { layout, live: Mutex::new(HashMap::new()) }
    }

    fn data(&self, id: &str) -> PathBuf {
        self.layout.upload(id).join("data")
    }

    pub fn start(&self, name: &Name) -> Result<String, StoreError> {
        let id = new_id();
        let dir = self.layout.upload(&id);
        fs::create_dir_all(&dir).at(&dir)?;
        let data = self.data(&id);
        // `info` last: a session without it is incomplete and is never resumed. One that could
        // not be written (a full disk) is removed at once rather than left to expire.
        let created =
            File::create(&data).at(&data).and_then(|_| write_atomic(&dir.join("info"), name.as_str().as_bytes()));
        if let Err(e) = created {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let state = SessionState { hasher: Some(Hasher::new(Algorithm::Sha256)) };
        self.lock_table().insert(id.clone(), Arc::new(Mutex::new(state)));
        Ok(id)
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<SessionState>>>> {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session's lock, when `id` is a session of `name`.
    fn session(&self, name: &Name, id: &str) -> Result<Arc<Mutex<SessionState>>, UploadError> {
        if !is_upload_id(id) {
            return Err(UploadError::Unknown);
        }
        let owner = read_link(&self.layout.upload(id).join("info"))?;
        if owner.as_deref() != Some(name.as_str()) || !self.data(id).is_file() {
            return Err(UploadError::Unknown);
        }
        Ok(Arc::clone(self.lock_table().entry(id.to_string()).or_default()))
    }

    /// Bytes received so far.
    pub fn offset(&self, name: &Name, id: &str) -> Result<u64, UploadError> {
        let session = self.session(name, id)?;
        let _guard = session.lock().unwrap_or_else(|p| p.into_inner());
        let data = self.data(id);
        Ok(fs::metadata(&data).at(&data)?.len())
    }

    /// Appends a chunk, which must start at the current offset. Returns the new offset.
    pub fn append(&self, name: &Name, id: &str, chunk: UploadChunk<'_>) -> Result<u64, UploadError> {
        let session = self.session(name, id)?;
        let mut state = session.lock().unwrap_or_else(|p| p.into_inner());
        self.append_locked(id, &mut state, chunk)
    }

    fn append_locked(&self, id: &str, state: &mut SessionState, chunk: UploadChunk<'_>) -> Result<u64, UploadError> {
        let mut writer = self.open_writer(id, state)?;
        let expected = match chunk.expected_len(writer.len()) {
            Ok(expected) => expected,
            Err(e) => {
                state.hasher = Some(writer.into_parts().2);
                return Err(e);
            }
        };
        let before = writer.len();
        let hasher_before = writer.hasher().clone();
        let result = writer.copy_from(chunk.body, expected);
        let copied = writer.len() - before;
        let (file, _, hasher, len) = writer.into_parts();
        match result {
            Ok(_) => {
                state.hasher = Some(hasher);
                if expected.is_some_and(|n| n != copied) {
                    return Err(UploadError::LengthMismatch);
                }
                Ok(len)
            }
            // The client's body broke: what arrived is kept (and hashed), and the session's
            // offset says where to resume.
            Err(e @ StoreError::BodyRead(_)) => {
                state.hasher = Some(hasher);
                Err(e.into())
            }
            // Our write failed (a full disk): the chunk is refused whole. Its bytes are given
            // back, so the space is free again and a retry of the same chunk continues at the
            // offset the client had. If even that fails, the hash is recomputed next time.
            Err(e) => {
                state.hasher = file.set_len(before).ok().map(|()| hasher_before);
                Err(e.into())
            }
        }
    }

    fn open_writer(&self, id: &str, state: &mut SessionState) -> Result<BlobWriter, UploadError> {
        let data = self.data(id);
        let len = fs::metadata(&data).at(&data)?.len();
        let hasher = match state.hasher.take() {
            Some(h) => h,
            None => {
                let mut file = File::open(&data).at(&data)?;
                hash_prefix(&mut file, Algorithm::Sha256, len).at(&data)?.1
            }
        };
        Ok(BlobWriter::resume(&data, hasher, len)?)
    }

    /// Appends the closing request's body (if any), checks the digest and moves the blob into
    /// the store. The session ends whether or not the digest matched.
    pub fn finish(&self, name: &Name, id: &str, chunk: UploadChunk<'_>, expected: &Digest) -> Result<u64, UploadError> {
        let session = self.session(name, id)?;
        let mut state = session.lock().unwrap_or_else(|p| p.into_inner());
        self.append_locked(id, &mut state, chunk)?;
        let writer = self.open_writer(id, &mut state)?;
        let result = writer.commit(&self.layout, expected);
        drop(state);
        self.remove(id);
        Ok(result?)
    }

    /// Cancels a session; true when it existed.
    pub fn cancel(&self, name: &Name, id: &str) -> Result<(), UploadError> {
        let session = self.session(name, id)?;
        let _guard = session.lock().unwrap_or_else(|p| p.into_inner());
        self.remove(id);
        Ok(())
    }

    fn remove(&self, id: &str) {
        let _ = fs::remove_dir_all(self.layout.upload(id));
        self.lock_table().remove(id);
    }

    /// Removes sessions untouched for `max_age` (no byte written, no request since), and blob
    /// temp files in `tmp/` as old: what a crash or an abandoned push left. With `dry_run`, only
    /// counts them. A session a request holds right now is never removed.
    pub fn expire(&self, max_age: Duration, dry_run: bool) -> Expired {
        let now = SystemTime::now();
        let old = |path: &std::path::Path| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= max_age)
                .unwrap_or(true)
        };
        let mut expired = Expired::default();
        if let Ok(entries) = fs::read_dir(self.layout.uploads()) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                let dir = entry.path();
                if !(old(&dir.join("data")) && old(&dir)) {
                    continue;
                }
                if dry_run {
                    expired.sessions += 1;
                    continue;
                }
                let live = self.lock_table().remove(&id);
                // Skip a session a request holds right now.
                if let Some(lock) = &live {
                    if lock.try_lock().is_err() {
                        self.lock_table().insert(id, Arc::clone(lock));
                        continue;
                    }
                }
                if fs::remove_dir_all(&dir).is_ok() {
                    expired.sessions += 1;
                }
            }
        }
        if let Ok(entries) = fs::read_dir(self.layout.tmp()) {
            for entry in entries.flatten() {
                let is_file = entry.file_type().is_ok_and(|t| t.is_file());
                if is_file && old(&entry.path()) && (dry_run || fs::remove_file(entry.path()).is_ok()) {
                    expired.temp_files += 1;
                }
            }
        }
        expired
    }
}

/// What [`Uploads::expire`] removed (or would remove).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub sessions: u64,
    pub temp_files: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::storage::blobs::digest_of;

    fn chunk<'a>(body: &'a mut &[u8], range: Option<(u64, u64)>, declared_len: Option<u64>) -> UploadChunk<'a> {
        UploadChunk { body, range, declared_len }
    }

    fn setup() -> (tempfile::TempDir, Uploads, Name) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.tmp()).unwrap();
        (dir, Uploads::new(layout), "a/b".parse().unwrap())
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert!(is_upload_id(&id), "{id}");
        assert!(!is_upload_id("../../etc/passwd"));
        assert!(!is_upload_id(&id.to_uppercase()));
    }

    #[test]
    fn chunks_in_order_then_finish() {
        let (_d, up, name) = setup();
        let id = up.start(&name).unwrap();
        assert_eq!(up.append(&name, &id, chunk(&mut &b"hello "[..], Some((0, 5)), Some(6))).unwrap(), 6);
        assert!(matches!(
            up.append(&name, &id, chunk(&mut &b"x"[..], Some((0, 0)), Some(1))),
            Err(UploadError::OutOfOrder { offset: 6 })
        ));
        assert!(matches!(
            up.append(&name, &id, chunk(&mut &b"x"[..], Some((7, 7)), Some(1))),
            Err(UploadError::OutOfOrder { offset: 6 })
        ));
        let digest = digest_of(Algorithm::Sha256, b"hello world");
        up.finish(&name, &id, chunk(&mut &b"world"[..], None, Some(5)), &digest).unwrap();
        assert!(matches!(up.offset(&name, &id), Err(UploadError::Unknown)));
    }

    /// Fuzzing (fuzz/fuzz_targets/range.rs) found that a `Content-Range` ending at `u64::MAX`
    /// overflowed the chunk length (a panic in debug builds, a zero-length chunk in release).
    #[test]
    fn content_range_to_u64_max_is_rejected() {
        let (_d, up, name) = setup();
        let id = up.start(&name).unwrap();
        for declared in [None, Some(0), Some(1)] {
            assert!(matches!(
                up.append(&name, &id, chunk(&mut &b"x"[..], Some((0, u64::MAX)), declared)),
                Err(UploadError::LengthMismatch)
            ));
        }
        assert_eq!(up.offset(&name, &id).unwrap(), 0);
        assert_eq!(up.append(&name, &id, chunk(&mut &b"x"[..], Some((0, 0)), None)).unwrap(), 1);
    }

    #[test]
    fn resumes_after_restart() {
        let (d, up, name) = setup();
        let id = up.start(&name).unwrap();
        up.append(&name, &id, chunk(&mut &b"abc"[..], None, None)).unwrap();
        drop(up);
        let up = Uploads::new(Layout::new(d.path()));
        assert_eq!(up.offset(&name, &id).unwrap(), 3);
        up.append(&name, &id, chunk(&mut &b"def"[..], None, None)).unwrap();
        up.finish(&name, &id, chunk(&mut &b""[..], None, None), &digest_of(Algorithm::Sha256, b"abcdef")).unwrap();
    }

    #[test]
    fn other_repository_cannot_use_session() {
        let (_d, up, name) = setup();
        let id = up.start(&name).unwrap();
        let other: Name = "c".parse().unwrap();
        assert!(matches!(up.offset(&other, &id), Err(UploadError::Unknown)));
    }
}
