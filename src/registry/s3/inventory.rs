//! `S3Store::inventory`: the bucket read into the same `storage::Inventory` the filesystem
//! scan gives, so `glci registry list | stats | clean` compute on S3 exactly as on a directory
//! (`registry::usage`, `registry::gc::plan`). One listing of each of `repositories/`, `blobs/`
//! and `uploads/` (1000 keys a request, never one request per directory), then the small
//! objects whose content matters (tags, revision media types, origins, manifests) read a few
//! at a time. Times are the store's own `LastModified`, whole seconds. Reads only.

use std::collections::HashSet;

use super::client::Entry;
use super::store::S3Store;
use crate::registry::names::{Digest, Name, Tag};
use crate::registry::storage::inventory::{
    manifest_refs, BlobFile, Inventory, LayerLink, ManifestInfo, OriginFile, ReferrerEntry, Revision, TagLink,
};
use crate::registry::storage::{Origin, StoreError};

/// Objects read at once.
const READERS: usize = 8;
/// Manifests larger than this are not read (the registry accepts at most a few MiB).
const MAX_MANIFEST_READ: u64 = 64 * 1024 * 1024;

/// What a key under `repositories/` is (pure): the repository and the kind of link.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkKey {
    Tag(Name, Tag),
    Revision(Name, Digest),
    Origin(Name, Digest),
    Layer(Name, Digest),
    Referrer { name: Name, subject: Digest, referrer: Digest },
}

fn digest_from(algorithm: &str, hex: &str) -> Option<Digest> {
    format!("{algorithm}:{hex}").parse().ok()
}

/// Parses `rel`, a key relative to `repositories/`, as the filesystem inventory parses paths:
/// name components never start with `_`, and the first that does ends the name.
pub fn link_key(rel: &str) -> Option<LinkKey> {
    let parts: Vec<&str> = rel.split('/').collect();
    let split = parts.iter().position(|p| p.starts_with('_'))?;
    let name = parts[..split].join("/").parse::<Name>().ok()?;
    Some(match &parts[split..] {
        ["_manifests", "revisions", algorithm, hex] => LinkKey::Revision(name, digest_from(algorithm, hex)?),
        ["_manifests", "origins", algorithm, hex] => LinkKey::Origin(name, digest_from(algorithm, hex)?),
        ["_manifests", "tags", tag] => LinkKey::Tag(name, tag.parse().ok()?),
        ["_layers", algorithm, hex] => LinkKey::Layer(name, digest_from(algorithm, hex)?),
        ["_referrers", algorithm, subject_hex, entry] => {
            let (ref_algorithm, ref_hex) = entry.split_once('-')?;
            LinkKey::Referrer {
                name,
                subject: digest_from(algorithm, subject_hex)?,
                referrer: digest_from(ref_algorithm, ref_hex)?,
            }
        }
        _ => return None,
    })
}

/// `blobs/<algorithm>/<hex>` relative to `blobs/`.
pub fn blob_key(rel: &str) -> Option<Digest> {
    let (algorithm, hex) = rel.split_once('/')?;
    digest_from(algorithm, hex)
}

/// `f` on every item, [`READERS`] at a time; the results in the items' order.
pub fn read_all<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.is_empty() {
        return Vec::new();
    }
    let per = items.len().div_ceil(READERS);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            items.chunks(per).map(|chunk| scope.spawn(|| chunk.iter().map(&f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

impl S3Store {
    /// Lists the bucket under the prefix (see the module doc).
    pub fn inventory(&self) -> Result<Inventory, StoreError> {
        let mut inv = Inventory::default();
        let keys = self.keys().clone();
        let client = self.client();
        let repositories = client.list_all(&keys.repositories(), None)?;
        let blobs = client.list_all(&keys.blobs(), None)?;
        let uploads = client.list_all(&keys.uploads(), None)?;
        for entry in &blobs.keys {
            inv.disk_bytes += entry.size;
            let Some(digest) = entry.key.strip_prefix(&keys.blobs()).and_then(blob_key) else { continue };
            inv.blobs.insert(digest, BlobFile { size: entry.size, modified: entry.modified() });
        }
        let mut sessions = HashSet::new();
        for entry in &uploads.keys {
            inv.disk_bytes += entry.size;
            let Some((id, part)) = entry.key.strip_prefix(&keys.uploads()).and_then(|r| r.split_once('/')) else {
                continue;
            };
            sessions.insert(id.to_string());
            if part != "info" {
                inv.uploads.bytes += entry.size;
            }
        }
        inv.uploads.sessions = sessions.len() as u64;
        // Links whose content matters are read after the listing, a few at a time.
        let mut to_read: Vec<(&Entry, LinkKey)> = Vec::new();
        for entry in &repositories.keys {
            inv.disk_bytes += entry.size;
            let Some(link) = entry.key.strip_prefix(&keys.repositories()).and_then(link_key) else { continue };
            let modified = entry.modified();
            match link {
                LinkKey::Referrer { name, subject, referrer } => {
                    inv.repositories.entry(name).or_default().referrers.push(ReferrerEntry {
                        subject,
                        referrer,
                        modified,
                    });
                }
                LinkKey::Layer(name, digest) if entry.size == 0 => {
                    inv.repositories
                        .entry(name)
                        .or_default()
                        .layers
                        .insert(digest, LayerLink { modified, origin: None });
                }
                other => to_read.push((entry, other)),
            }
        }
        let texts = read_all(&to_read, |(entry, _)| self.client().get_bytes(&entry.key));
        for ((entry, link), text) in to_read.into_iter().zip(texts) {
            // A link removed between the listing and the read is gone: skip it.
            let Some(bytes) = text? else { continue };
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            let modified = entry.modified();
            let origin = || serde_json::from_str::<Origin>(&text).ok();
            match link {
                LinkKey::Tag(name, tag) => {
                    let target = text.parse::<Digest>().ok();
                    inv.repositories
                        .entry(name)
                        .or_default()
                        .tags
                        .insert(tag.as_str().to_string(), TagLink { tag, target, modified });
                }
                LinkKey::Revision(name, digest) => {
                    let revision = Revision { media_type: text.clone(), modified, origin: None };
                    inv.repositories.entry(name).or_default().revisions.insert(digest, revision);
                }
                LinkKey::Origin(name, digest) => {
                    let file = OriginFile { modified, origin: origin() };
                    inv.repositories.entry(name).or_default().origin_files.insert(digest, file);
                }
                LinkKey::Layer(name, digest) => {
                    let layer = LayerLink { modified, origin: origin() };
                    inv.repositories.entry(name).or_default().layers.insert(digest, layer);
                }
                LinkKey::Referrer { .. } => {}
            }
        }
        for repo in inv.repositories.values_mut() {
            for (digest, file) in &repo.origin_files {
                if let Some(revision) = repo.revisions.get_mut(digest) {
                    revision.origin = file.origin.clone();
                }
            }
        }
        self.read_manifests(&mut inv)?;
        Ok(inv)
    }

    /// What every manifest a revision names references (and their children's, in turn).
    fn read_manifests(&self, inv: &mut Inventory) -> Result<(), StoreError> {
        let mut wanted: Vec<(Digest, Option<String>)> = Vec::new();
        let mut seen: HashSet<Digest> = HashSet::new();
        for repo in inv.repositories.values() {
            for (digest, revision) in &repo.revisions {
                if seen.insert(digest.clone()) {
                    wanted.push((digest.clone(), Some(revision.media_type.clone())));
                }
            }
        }
        while !wanted.is_empty() {
            let present: Vec<(Digest, Option<String>)> = wanted
                .drain(..)
                .filter(|(d, _)| inv.blobs.get(d).is_some_and(|b| b.size <= MAX_MANIFEST_READ))
                .collect();
            let read = read_all(&present, |(digest, _)| self.client().get_bytes(&self.keys().blob(digest)));
            for ((digest, hint), bytes) in present.into_iter().zip(read) {
                let Some(bytes) = bytes? else { continue };
                let info = manifest_refs(&bytes, hint.as_deref().filter(|h| !h.is_empty()));
                if let ManifestInfo::Parsed(refs) = &info {
                    for child in &refs.children {
                        if seen.insert(child.clone()) {
                            wanted.push((child.clone(), None));
                        }
                    }
                }
                inv.manifests.insert(digest, info);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    #[test]
    fn keys_parse_as_the_filesystem_paths_do() {
        let hex = "a".repeat(64);
        let name: Name = "g/p/app".parse().unwrap();
        assert_eq!(
            link_key(&format!("g/p/app/_manifests/revisions/sha256/{hex}")),
            Some(LinkKey::Revision(name.clone(), d('a')))
        );
        assert_eq!(link_key("g/p/app/_manifests/tags/v1.0"), Some(LinkKey::Tag(name.clone(), "v1.0".parse().unwrap())));
        assert_eq!(link_key(&format!("g/p/app/_layers/sha256/{hex}")), Some(LinkKey::Layer(name.clone(), d('a'))));
        assert_eq!(
            link_key(&format!("g/p/app/_referrers/sha256/{hex}/sha256-{}", "b".repeat(64))),
            Some(LinkKey::Referrer { name: name.clone(), subject: d('a'), referrer: d('b') })
        );
        assert_eq!(link_key(&format!("g/p/app/_manifests/origins/sha256/{hex}")), Some(LinkKey::Origin(name, d('a'))));
        assert_eq!(link_key("g/p/app/_manifests/tags/bad tag"), None);
        assert_eq!(link_key("g/p/app/other"), None);
        assert_eq!(blob_key(&format!("sha256/{hex}")), Some(d('a')));
        assert_eq!(blob_key("sha256/zz"), None);
    }

    #[test]
    fn read_all_keeps_the_order() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(read_all(&items, |n| n * 2), items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert!(read_all(&Vec::<u32>::new(), |n| *n).is_empty());
    }
}
