//! What the pull-through cache (`proxy`) needs of the S3 store beyond the OCI API, kept as the
//! filesystem keeps it: a cached manifest's origin (`_manifests/origins/<algo>/<hex>`, Origin
//! JSON), a cached layer's origin (the JSON in its `_layers/…` link; a pushed link is empty),
//! and when a cached tag was last checked upstream (as the tag link's mtime on disk: the
//! `x-amz-meta-glci-checked-at` a revalidation writes the tag with, on the proxy's clock, else
//! the tag object's `Last-Modified`). Every instance on the bucket sees
//! the same, so a miss cached through one is served by all without asking the upstream again.
//!
//! A blob being cached streams into a multipart upload while it is hashed (one part in memory)
//! and is completed only when its length and digest match: a cut or wrong upstream body leaves
//! nothing in the bucket (S3 drops an aborted upload's parts). Nobody can read an unfinished
//! upload, so the bytes also go to a spool file in the local temp directory, unlinked as soon as
//! it is open (it vanishes with its last reader), which `proxy::fetch` follows exactly as it
//! follows the filesystem's temp file. Two instances caching one blob at once upload the same
//! bytes to one key: S3 makes the last completion visible, whole either way.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::store::{verify, S3Store};
use crate::durable::new_id;
use crate::registry::backend::Spool;
use crate::registry::names::{Digest, Name, Tag};
use crate::registry::storage::{Hasher, Origin, StoreError};

impl S3Store {
    pub(super) fn origin_at(&self, key: &str) -> Result<Option<Origin>, StoreError> {
        Ok(self.text(key)?.filter(|t| !t.is_empty()).and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// The time stamped by the last revalidation (on the proxy's clock), else the tag object's
    /// `Last-Modified` (a tag written by a push or a fetch).
    pub(super) fn tag_checked_at(&self, name: &Name, tag: &Tag) -> Result<Option<SystemTime>, StoreError> {
        let Some(stamped) = self.client().head_metadata(&self.keys().tag(name, tag), CHECKED_AT)? else {
            return Ok(None);
        };
        let checked = stamped.value.as_deref().and_then(parse_unix_secs);
        Ok(checked.or_else(|| stamped.last_modified.as_deref().and_then(parse_http_date)))
    }

    /// The tag written again with the digest the upstream just confirmed, stamped with `now`:
    /// S3 has no way to touch an object (nor to set `Last-Modified`), and writing what the
    /// upstream says is right even if the tag moved here meanwhile.
    pub(super) fn touch_tag(&self, name: &Name, tag: &Tag, digest: &Digest, now: SystemTime) -> Result<(), StoreError> {
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let key = self.keys().tag(name, tag);
        self.client().put_bytes_with_metadata(&key, digest.to_string().as_bytes(), CHECKED_AT, &format!("{secs:.3}"))
    }

    pub(super) fn cache_blob(
        &self,
        name: &Name,
        digest: &Digest,
        body: &mut dyn Read,
        total: Option<u64>,
        origin: &Origin,
        spool: Arc<dyn Spool>,
    ) -> Result<u64, StoreError> {
        let (file, path) = spool_file()?;
        let follower = file.try_clone().map_err(|e| StoreError::Io { path: path.clone(), source: e })?;
        spool.started(Arc::new(follower));
        let mut limited: Box<dyn Read> = match total {
            Some(n) => Box::new(body.take(n)),
            None => Box::new(body),
        };
        let mut tee = Tee { body: &mut limited, file, spool, stored: 0, failed: None };
        let hasher = RefCell::new(Hasher::new(digest.algorithm()));
        let stored = self.client().put_streamed(
            &self.keys().blob(digest),
            &mut tee,
            &mut |bytes| hasher.borrow_mut().update(bytes),
            &mut |copied| {
                if let Some(expected) = total.filter(|t| *t != copied) {
                    return Err(StoreError::SizeMismatch { expected, actual: copied });
                }
                verify(hasher.replace(Hasher::new(digest.algorithm())), digest)
            },
        );
        // The spool's own failure (a full local disk) is ours, not the upstream's.
        if let Some(source) = tee.failed.take() {
            return Err(StoreError::Io { path, source });
        }
        let copied = stored?;
        self.link_cached_layer(name, digest, origin)?;
        Ok(copied)
    }

    /// Lets `name` serve a cached blob; a link already there (pushed, or cached before) keeps
    /// its content and is written again (young: a clean running now keeps it, `sweep.rs`).
    fn link_cached_layer(&self, name: &Name, digest: &Digest, origin: &Origin) -> Result<(), StoreError> {
        let key = self.keys().layer(name, digest);
        let content = match self.client().get_bytes(&key)? {
            Some(existing) => existing,
            None => serde_json::to_vec(origin).unwrap_or_default(),
        };
        self.client().put_bytes(&key, &content)?;
        self.settle(&[(key, Some(&content)), (self.keys().blob(digest), None)])
    }
}

/// A new file in the temp directory, already unlinked: it lives as long as a handle on it.
fn spool_file() -> Result<(File, PathBuf), StoreError> {
    let path = std::env::temp_dir().join(format!("glci-pull-{}", new_id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| StoreError::Io { path: path.clone(), source: e })?;
    std::fs::remove_file(&path).map_err(|e| StoreError::Io { path: path.clone(), source: e })?;
    Ok((file, path))
}

/// Reads the upstream's body for the upload, writing every piece to the spool first and then
/// telling its readers.
struct Tee<'a> {
    body: &'a mut dyn Read,
    file: File,
    spool: Arc<dyn Spool>,
    stored: u64,
    failed: Option<io::Error>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read(buf)?;
        if n > 0 {
            if let Err(e) = self.file.write_all(&buf[..n]) {
                let message = format!("spool file: {e}");
                self.failed = Some(e);
                return Err(io::Error::other(message));
            }
            self.stored += n as u64;
            self.spool.advanced(self.stored);
        }
        Ok(n)
    }
}

/// The user metadata a revalidated tag carries: when it was last checked, in Unix seconds.
const CHECKED_AT: &str = "glci-checked-at";

fn parse_unix_secs(text: &str) -> Option<SystemTime> {
    let secs = text.trim().parse::<f64>().ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::try_from_secs_f64(secs).ok()?)
}

/// An HTTP date as S3 sends `Last-Modified` (IMF-fixdate: `Thu, 03 Dec 2026 17:26:23 GMT`).
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let format = time::format_description::parse_borrowed::<1>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    let parsed = time::PrimitiveDateTime::parse(text.trim(), &format).ok()?.assume_utc();
    let secs = u64::try_from(parsed.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Tue, 01 Dec 2020 20:43:11 GMT").unwrap();
        assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_606_855_391);
        assert!(parse_http_date("2020-12-01T20:43:11Z").is_none());
        assert!(parse_http_date("").is_none());
        let stamped = parse_unix_secs("1606855391.250").unwrap();
        assert_eq!(stamped.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis(), 1_606_855_391_250);
        assert!(parse_unix_secs("-1").is_none() && parse_unix_secs("soon").is_none());
    }

    struct Counted(std::sync::atomic::AtomicUsize);

    impl Spool for Counted {
        fn started(&self, _file: Arc<File>) {}
        fn advanced(&self, stored: u64) {
            self.0.store(stored as usize, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Every byte read is in the spool before its readers hear of it.
    #[test]
    fn the_tee_spools_what_it_reads() {
        let (file, _) = spool_file().unwrap();
        let reader = file.try_clone().unwrap();
        let counted = Arc::new(Counted(std::sync::atomic::AtomicUsize::new(0)));
        let mut body: &[u8] = b"some upstream bytes";
        let mut tee = Tee { body: &mut body, file, spool: counted.clone(), stored: 0, failed: None };
        let mut out = Vec::new();
        tee.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"some upstream bytes");
        let mut spooled = vec![0u8; out.len()];
        std::os::unix::fs::FileExt::read_exact_at(&reader, &mut spooled, 0).unwrap();
        assert_eq!(spooled, out);
        assert_eq!(counted.0.load(std::sync::atomic::Ordering::Relaxed), out.len(), "the readers heard of every byte");
    }
}
