//! Open multipart uploads nobody will complete: an instance killed mid-chunk (or mid-assembly)
//! leaves its S3 multipart upload open, and its parts cost storage until it is aborted.
//! `clean` lists them (`ListMultipartUploads` under the prefix) and aborts those
//! [`orphaned`] picks, by the store's clock as every age in a clean.
//!
//! A chunk's upload (`uploads/<id>/<offset>`) belongs to its session: it is kept while the
//! session is there (a chunk streaming in rewrites the session's `info` every 20 s, so a live
//! session is never expired), and aborted once the session is gone (finished, cancelled or
//! expired) and the upload is older than the grace window. A blob's upload (`blobs/…`: a
//! session assembling, a pull-through streaming) has no heartbeat, so it is aborted only when
//! it is also older than [`UNOWNED_MIN_AGE`], far longer than any transfer. Uploads under other
//! keys are not glci's and are never touched.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::client::OpenUpload;
use super::store::{Keys, S3Store};
use crate::encoding::parse_rfc3339;
use crate::registry::storage::StoreError;

/// Least age of an open upload on a blob key before `clean` aborts it.
pub const UNOWNED_MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// The upload session a key belongs to: `<id>` of `uploads/<id>/…` (pure).
pub fn session_of<'a>(keys: &Keys, key: &'a str) -> Option<&'a str> {
    let rel = key.strip_prefix(&keys.uploads())?;
    rel.split_once('/').map(|(id, _)| id).filter(|id| !id.is_empty())
}

/// The uploads to abort (pure): see the module doc. `sessions` are the upload sessions still
/// there after the clean's expiry, `cutoff` is the start of the grace window and `now` the
/// clean's start, both by the store's clock. An upload whose time does not parse is kept.
pub fn orphaned<'a>(
    uploads: &'a [OpenUpload],
    keys: &Keys,
    sessions: &HashSet<String>,
    cutoff: SystemTime,
    now: SystemTime,
) -> Vec<&'a OpenUpload> {
    let unowned_cutoff = now.checked_sub(UNOWNED_MIN_AGE).unwrap_or(SystemTime::UNIX_EPOCH).min(cutoff);
    uploads
        .iter()
        .filter(|upload| {
            let Some(initiated) = parse_rfc3339(&upload.initiated) else { return false };
            match session_of(keys, &upload.key) {
                Some(id) => !sessions.contains(id) && initiated < cutoff,
                None => upload.key.starts_with(&keys.blobs()) && initiated < unowned_cutoff,
            }
        })
        .collect()
}

impl S3Store {
    /// The upload sessions in the bucket; with `active_since`, only those with an object
    /// written since then (the ones an expiry by that age keeps).
    pub fn upload_sessions(&self, active_since: Option<SystemTime>) -> Result<HashSet<String>, StoreError> {
        let mut sessions = HashSet::new();
        for entry in self.client().list_all(&self.keys().uploads(), None)?.keys {
            let young = match active_since {
                Some(since) => parse_rfc3339(&entry.last_modified).is_none_or(|t| t >= since),
                None => true,
            };
            if let Some(id) = session_of(self.keys(), &entry.key).filter(|_| young) {
                sessions.insert(id.to_string());
            }
        }
        Ok(sessions)
    }

    /// Aborts (or with `dry_run` only counts) the [`orphaned`] multipart uploads under the
    /// prefix; returns how many.
    pub fn abort_orphaned_uploads(
        &self,
        sessions: &HashSet<String>,
        cutoff: SystemTime,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let open = self.client().list_multipart_uploads(self.keys().prefix())?;
        let doomed = orphaned(&open, self.keys(), sessions, cutoff, now);
        if !dry_run {
            for upload in &doomed {
                self.client().abort_multipart_upload(&upload.key, &upload.upload_id)?;
            }
        }
        Ok(doomed.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(key: &str, initiated: &str) -> OpenUpload {
        OpenUpload { key: key.into(), upload_id: format!("id-{key}"), initiated: initiated.into() }
    }

    #[test]
    fn only_old_uploads_no_session_owns_are_orphaned() {
        let keys = Keys::new("p/");
        let at = |text: &str| parse_rfc3339(text).unwrap();
        let (cutoff, now) = (at("2026-12-03T12:00:00Z"), at("2026-12-03T12:00:00Z"));
        let sessions: HashSet<String> = ["live".to_string()].into();
        let open = [
            upload("p/uploads/live/00000000000000000000", "2026-12-03T10:00:00Z"),
            upload("p/uploads/gone/00000000000000000000", "2026-12-03T10:00:00Z"),
            upload("p/uploads/gone/00000000000000000007", "2026-12-03T12:00:00Z"),
            upload("p/uploads/gone/00000000000000000009", "not a time"),
            upload("p/blobs/sha256/aa", "2026-12-03T10:00:00Z"),
            upload("p/blobs/sha256/bb", "2026-12-01T10:00:00Z"),
            upload("other/thing", "2020-01-01T00:00:00Z"),
        ];
        let picked: Vec<&str> = orphaned(&open, &keys, &sessions, cutoff, now).iter().map(|u| u.key.as_str()).collect();
        assert_eq!(picked, ["p/uploads/gone/00000000000000000000", "p/blobs/sha256/bb"]);
        assert_eq!(session_of(&keys, "p/uploads/x/info"), Some("x"));
        assert_eq!(session_of(&keys, "p/blobs/sha256/aa"), None);
    }
}
