//! `S3Store`: the content store in an S3 bucket, shared by every instance that points at it.
//! The keys mirror the filesystem layout (`Keys`): content-addressed blobs, and per-repository
//! link objects for layers, manifest revisions, tags and referrers.
//!
//! Consistency rests on what S3 (and SeaweedFS, MinIO, Ceph RGW) guarantee: a PUT is atomic
//! (readers see the old object or the new one, never part), and a read after a completed write
//! sees it (strong read-after-write, also for listings). Order of writes is the filesystem's:
//! content, then the revision link, then the tag, so a tag always resolves to a whole manifest.
//! Two instances writing one blob write the same bytes; two writing one tag: the last wins.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::client::S3Client;
use crate::http::Body;
use crate::registry::backend::{BlobSource, OpenedManifest, Spool, Storage};
use crate::registry::manifest;
use crate::registry::names::{Digest, Name, Reference, Tag};
use crate::registry::storage::{Hasher, Origin, StoreError};

/// Object keys under the configured prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Empty, or ending in `/`.
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let trimmed = prefix.trim_matches('/');
        Keys { prefix: if trimmed.is_empty() { String::new() } else { format!("{trimmed}/") } }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn blob(&self, digest: &Digest) -> String {
        format!("{}blobs/{}/{}", self.prefix, digest.algorithm().as_str(), digest.hex())
    }

    pub fn repositories(&self) -> String {
        format!("{}repositories/", self.prefix)
    }

    pub fn repository(&self, name: &Name) -> String {
        format!("{}{name}/", self.repositories())
    }

    pub fn layer(&self, name: &Name, digest: &Digest) -> String {
        format!("{}_layers/{}/{}", self.repository(name), digest.algorithm().as_str(), digest.hex())
    }

    pub fn manifests(&self, name: &Name) -> String {
        format!("{}_manifests/", self.repository(name))
    }

    pub fn revision(&self, name: &Name, digest: &Digest) -> String {
        format!("{}revisions/{}/{}", self.manifests(name), digest.algorithm().as_str(), digest.hex())
    }

    pub fn tags(&self, name: &Name) -> String {
        format!("{}tags/", self.manifests(name))
    }

    pub fn tag(&self, name: &Name, tag: &Tag) -> String {
        format!("{}{}", self.tags(name), tag.as_str())
    }

    /// Pulled-through manifests of `name`: their Origin JSON (as on the filesystem).
    pub fn origins(&self, name: &Name) -> String {
        format!("{}origins/", self.manifests(name))
    }

    pub fn origin(&self, name: &Name, digest: &Digest) -> String {
        format!("{}{}/{}", self.origins(name), digest.algorithm().as_str(), digest.hex())
    }

    pub fn referrers(&self, name: &Name, subject: &Digest) -> String {
        format!("{}_referrers/{}/{}/", self.repository(name), subject.algorithm().as_str(), subject.hex())
    }

    pub fn referrer(&self, name: &Name, subject: &Digest, referrer: &Digest) -> String {
        format!("{}{}-{}", self.referrers(name, subject), referrer.algorithm().as_str(), referrer.hex())
    }

    pub fn uploads(&self) -> String {
        format!("{}uploads/", self.prefix)
    }

    pub fn blobs(&self) -> String {
        format!("{}blobs/", self.prefix)
    }

    /// Where `clean` marks an object it is about to delete (see `sweep.rs`).
    pub fn doomed(&self) -> String {
        format!("{}_gc/doomed/", self.prefix)
    }

    /// Probe objects `clean` reads the store's clock from.
    pub fn clock(&self) -> String {
        format!("{}_gc/clock/", self.prefix)
    }
}

#[derive(Clone)]
pub struct S3Store {
    client: Arc<S3Client>,
    keys: Keys,
    /// `[storage.s3] redirect`: blob GETs answer 307 to a presigned URL of this long.
    redirect_for: Option<Duration>,
}

impl S3Store {
    /// A store on `client`'s bucket under `prefix`; the bucket must be reachable and ours.
    pub fn open(client: Arc<S3Client>, prefix: &str, redirect_for: Option<Duration>) -> Result<S3Store, StoreError> {
        client.head_bucket()?;
        Ok(S3Store { client, keys: Keys::new(prefix), redirect_for })
    }

    pub fn client(&self) -> &Arc<S3Client> {
        &self.client
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.client.head(key)?.is_some())
    }

    pub(super) fn text(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.client.get_bytes(key)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn manifest_present(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.exists(&self.keys.revision(name, digest))? && self.exists(&self.keys.blob(digest))?)
    }

    pub(super) fn resolve(&self, name: &Name, reference: &Reference) -> Result<Option<Digest>, StoreError> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => match self.text(&self.keys.tag(name, tag))?.and_then(|t| t.parse().ok()) {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        Ok(self.manifest_present(name, &digest)?.then_some(digest))
    }

    /// Adds every repository at or under the listing prefix `dir` to `names`: a "directory"
    /// holding `_manifests/` is a repository; others (names never start with `_`) are
    /// namespaces, entered. One LIST per namespace, never one per tag or layer.
    fn collect_repositories(&self, dir: &str, names: &mut Vec<String>) -> Result<(), StoreError> {
        let listing = self.client.list_all(dir, Some("/"))?;
        for sub in listing.prefixes {
            let Some(last) = sub.strip_prefix(dir).map(|s| s.trim_end_matches('/')) else { continue };
            if last == "_manifests" {
                let name = dir.strip_prefix(&self.keys.repositories()).unwrap_or(dir).trim_end_matches('/');
                if name.parse::<Name>().is_ok() {
                    names.push(name.to_string());
                }
            } else if !last.starts_with(['_', '.']) {
                self.collect_repositories(&sub, names)?;
            }
        }
        Ok(())
    }
}

impl S3Store {
    /// Stores manifest bytes, links them into `name` (with `origin` when pulled through; a push
    /// makes it pushed content) and points `tag` at them, in the filesystem's order.
    pub(super) fn store_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        tag: Option<&Tag>,
        origin: Option<&Origin>,
    ) -> Result<(), StoreError> {
        self.client.put_bytes(&self.keys.blob(digest), bytes)?;
        if let Some(subject) = &parsed.subject {
            let descriptor = manifest::referrer_descriptor(parsed, digest, bytes.len() as u64);
            let json = serde_json::to_vec(&descriptor).unwrap_or_default();
            self.client.put_bytes(&self.keys.referrer(name, subject, digest), &json)?;
        }
        let origin_key = self.keys.origin(name, digest);
        let origin_json = origin.map(|o| serde_json::to_vec(o).unwrap_or_default());
        match &origin_json {
            Some(json) => self.client.put_bytes(&origin_key, json)?,
            None => self.client.delete(&origin_key)?,
        }
        self.client.put_bytes(&self.keys.revision(name, digest), parsed.media_type.as_bytes())?;
        let target = digest.to_string();
        if let Some(tag) = tag {
            self.client.put_bytes(&self.keys.tag(name, tag), target.as_bytes())?;
        }
        // Survive a clean running now (`sweep.rs`): each key is checked, and rewritten if taken.
        let mut written = vec![
            (self.keys.blob(digest), Some(bytes)),
            (self.keys.revision(name, digest), Some(parsed.media_type.as_bytes())),
        ];
        if let Some(json) = &origin_json {
            written.push((origin_key, Some(json.as_slice())));
        }
        if let Some(tag) = tag {
            written.push((self.keys.tag(name, tag), Some(target.as_bytes())));
        }
        self.settle(&written)
    }
}

/// The digest check before a blob becomes visible.
pub fn verify(hasher: Hasher, expected: &Digest) -> Result<(), StoreError> {
    let actual = hasher.finish();
    if &actual != expected {
        return Err(StoreError::DigestMismatch { expected: expected.to_string(), actual: actual.to_string() });
    }
    Ok(())
}

/// A blob in the bucket, sent as a streamed (ranged) GET or as a redirect.
struct S3Blob {
    client: Arc<S3Client>,
    key: String,
    len: u64,
    redirect: Option<String>,
}

impl BlobSource for S3Blob {
    fn size(&self) -> u64 {
        self.len
    }

    fn body(self: Box<Self>, start: u64, len: u64) -> Result<Body, StoreError> {
        if len == 0 {
            return Ok(Body::Empty);
        }
        let range = (start > 0 || len < self.len).then(|| (start, start + len - 1));
        // The GET starts at the first read: a HEAD (whose body is never read) costs the store
        // nothing more than the HEAD `open_blob` made.
        let reader = LazyGet { client: self.client, key: self.key, range, inner: None };
        Ok(Body::Reader { reader: Box::new(reader), len: Some(len) })
    }

    fn redirect(&self) -> Option<String> {
        self.redirect.clone()
    }
}

/// An object's GET, sent when first read.
struct LazyGet {
    client: Arc<S3Client>,
    key: String,
    range: Option<(u64, u64)>,
    inner: Option<Box<dyn Read + Send>>,
}

impl Read for LazyGet {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.inner.is_none() {
            let opened = self.client.get(&self.key, self.range).map_err(std::io::Error::other)?;
            let reader = opened.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} removed while being read", self.key))
            })?;
            self.inner = Some(reader);
        }
        match &mut self.inner {
            Some(reader) => reader.read(buf),
            None => Ok(0),
        }
    }
}

impl Storage for S3Store {
    fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self.client.head(&self.keys.blob(digest))?.map(|m| m.len))
    }

    /// A claim (`sweep.rs`): the link is written again, so no clean takes it or the blob.
    fn has_layer(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        self.claim(&self.keys.layer(name, digest), &self.keys.blob(digest))
    }

    fn link_layer(&self, name: &Name, digest: &Digest) -> Result<(), StoreError> {
        let link = self.keys.layer(name, digest);
        self.client.put_bytes(&link, b"")?;
        self.settle(&[(link, Some(b"")), (self.keys.blob(digest), None)])
    }

    fn unlink_layer(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        let key = self.keys.layer(name, digest);
        let existed = self.exists(&key)?;
        if existed {
            self.client.delete(&key)?;
        }
        Ok(existed)
    }

    fn open_blob(&self, name: &Name, digest: &Digest) -> Result<Option<Box<dyn BlobSource>>, StoreError> {
        if !self.exists(&self.keys.layer(name, digest))? {
            return Ok(None);
        }
        let key = self.keys.blob(digest);
        let Some(meta) = self.client.head(&key)? else { return Ok(None) };
        let redirect = self.redirect_for.map(|valid_for| self.client.presigned_get(&key, valid_for));
        Ok(Some(Box::new(S3Blob { client: Arc::clone(&self.client), key, len: meta.len, redirect })))
    }

    fn write_blob(&self, digest: &Digest, body: &mut dyn Read, declared: Option<u64>) -> Result<u64, StoreError> {
        let hasher = std::cell::RefCell::new(Hasher::new(digest.algorithm()));
        let mut limited: Box<dyn Read> = match declared {
            Some(n) => Box::new(body.take(n)),
            None => Box::new(body),
        };
        self.client.put_streamed(
            &self.keys.blob(digest),
            &mut limited,
            &mut |bytes| hasher.borrow_mut().update(bytes),
            &mut |total| {
                if let Some(expected) = declared.filter(|n| *n != total) {
                    return Err(StoreError::SizeMismatch { expected, actual: total });
                }
                verify(hasher.replace(Hasher::new(digest.algorithm())), digest)
            },
        )
    }

    fn put_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        tag: Option<&Tag>,
    ) -> Result<(), StoreError> {
        self.store_manifest(name, digest, bytes, parsed, tag, None)
    }

    /// A claim, as `has_layer` (an index PUT relies on its children).
    fn has_manifest(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        self.claim(&self.keys.revision(name, digest), &self.keys.blob(digest))
    }

    fn open_manifest(&self, name: &Name, reference: &Reference) -> Result<Option<OpenedManifest>, StoreError> {
        let Some(digest) = self.resolve(name, reference)? else { return Ok(None) };
        let Some(media_type) = self.text(&self.keys.revision(name, &digest))? else { return Ok(None) };
        // Manifests are size-capped on the way in: read whole, so the length is exact.
        let Some(bytes) = self.client.get_bytes(&self.keys.blob(&digest))? else { return Ok(None) };
        let len = bytes.len() as u64;
        Ok(Some(OpenedManifest { digest, media_type, len, body: Body::Bytes(bytes) }))
    }

    fn delete_manifest(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        let revision = self.keys.revision(name, digest);
        if !self.manifest_present(name, digest)? {
            return Ok(false);
        }
        // Tags first, so none is left pointing at a deleted manifest.
        let wanted = digest.to_string();
        for entry in self.client.list_all(&self.keys.tags(name), None)?.keys {
            let key = entry.key;
            if self.text(&key)?.as_deref() == Some(wanted.as_str()) {
                self.client.delete(&key)?;
            }
        }
        if let Some(bytes) = self.client.get_bytes(&self.keys.blob(digest))? {
            if let Ok(Some(subject)) = manifest::parse(&bytes, None).map(|p| p.subject) {
                self.client.delete(&self.keys.referrer(name, &subject, digest))?;
            }
        }
        self.client.delete(&self.keys.origin(name, digest))?;
        self.client.delete(&revision)?;
        Ok(true)
    }

    fn delete_tag(&self, name: &Name, tag: &Tag) -> Result<bool, StoreError> {
        let key = self.keys.tag(name, tag);
        let existed = self.exists(&key)?;
        if existed {
            self.client.delete(&key)?;
        }
        Ok(existed)
    }

    fn repository_exists(&self, name: &Name) -> Result<bool, StoreError> {
        Ok(self.client.any_under(&self.keys.manifests(name))?
            || self.client.any_under(&format!("{}_layers/", self.keys.repository(name)))?)
    }

    fn tags_page(
        &self,
        name: &Name,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Option<(Vec<String>, bool)>, StoreError> {
        if !self.repository_exists(name)? {
            return Ok(None);
        }
        let dir = self.keys.tags(name);
        let start_after = after.map(|a| format!("{dir}{a}"));
        let mut tags = Vec::new();
        let mut present: std::collections::HashMap<Digest, bool> = std::collections::HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.client.list_page(&dir, None, start_after.as_deref(), token.as_deref(), None)?;
            for entry in page.keys {
                let key = entry.key;
                let Some(tag) = key.strip_prefix(&dir).filter(|t| !t.contains('/')) else { continue };
                // A tag whose manifest is gone is not listed (as on the filesystem).
                let Some(digest) = self.text(&key)?.and_then(|t| t.parse::<Digest>().ok()) else { continue };
                let listed = match present.get(&digest) {
                    Some(known) => *known,
                    None => {
                        let known = self.manifest_present(name, &digest)?;
                        present.insert(digest, known);
                        known
                    }
                };
                if !listed {
                    continue;
                }
                if limit.is_some_and(|n| tags.len() == n) {
                    return Ok(Some((tags, true)));
                }
                tags.push(tag.to_string());
            }
            match page.next {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(Some((tags, false))),
            }
        }
    }

    fn repositories(&self) -> Result<Arc<Vec<String>>, StoreError> {
        let mut names = Vec::new();
        self.collect_repositories(&self.keys.repositories(), &mut names)?;
        names.sort();
        Ok(Arc::new(names))
    }

    fn referrers(&self, name: &Name, subject: &Digest) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        for entry in self.client.list_all(&self.keys.referrers(name, subject), None)?.keys {
            let key = entry.key;
            let Some(text) = self.text(&key)? else { continue };
            let Ok(descriptor) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            let listed = match descriptor["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) {
                Some(d) => self.manifest_present(name, &d)?,
                None => false,
            };
            if listed {
                out.push(descriptor);
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.client.bucket_name(), self.keys.prefix().trim_end_matches('/'))
    }

    // --- list/stats/clean (issue 20) ---
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }
    fn resolve(&self, name: &Name, reference: &Reference) -> Result<Option<Digest>, StoreError> {
        S3Store::resolve(self, name, reference)
    }
    fn manifest_origin(&self, name: &Name, digest: &Digest) -> Result<Option<Origin>, StoreError> {
        self.origin_at(&self.keys.origin(name, digest))
    }
    fn has_cached_manifests(&self, name: &Name) -> Result<bool, StoreError> {
        self.client.any_under(&self.keys.origins(name))
    }
    fn tag_checked_at(&self, name: &Name, tag: &Tag) -> Result<Option<SystemTime>, StoreError> {
        S3Store::tag_checked_at(self, name, tag)
    }
    fn touch_tag(&self, name: &Name, tag: &Tag, digest: &Digest, now: SystemTime) -> Result<(), StoreError> {
        S3Store::touch_tag(self, name, tag, digest, now)
    }
    fn put_cached_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        tag: Option<&Tag>,
        origin: &Origin,
    ) -> Result<(), StoreError> {
        self.store_manifest(name, digest, bytes, parsed, tag, Some(origin))
    }
    fn cache_blob(
        &self,
        name: &Name,
        digest: &Digest,
        body: &mut dyn Read,
        total: Option<u64>,
        origin: &Origin,
        spool: Arc<dyn Spool>,
    ) -> Result<u64, StoreError> {
        S3Store::cache_blob(self, name, digest, body, total, origin, spool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_filesystem_layout_under_the_prefix() {
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let name: Name = "g/p".parse().unwrap();
        for (prefix, expected) in [("", ""), ("team/", "team/"), ("/a/b/", "a/b/")] {
            let keys = Keys::new(prefix);
            assert_eq!(keys.blob(&digest), format!("{expected}blobs/sha256/{}", "a".repeat(64)));
            assert_eq!(
                keys.tag(&name, &"v1".parse().unwrap()),
                format!("{expected}repositories/g/p/_manifests/tags/v1")
            );
            assert_eq!(
                keys.layer(&name, &digest),
                format!("{expected}repositories/g/p/_layers/sha256/{}", "a".repeat(64))
            );
        }
    }
}
