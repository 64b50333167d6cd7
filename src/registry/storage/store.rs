//! `Store`: repository-level operations over blobs and links. Order of writes is what makes
//! the store crash-safe: content first, then the revision link, then the tag, so every tag
//! resolves to a complete manifest whatever moment a kill -9 picks.
//!
//! Claims: an online `clean` (`registry::gc`) never removes a link or blob modified after its
//! cutoff. Whatever a writer is about to rely on (a blob a manifest PUT references, a layer a
//! client HEADed before skipping its upload, a mount source) is claimed first (`links::touch`),
//! and a failed claim means "not there". `gc` moves a file aside before its final age check,
//! so a claim either lands before that check or fails.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, ChangesOnDrop};
use super::links::{list_links, open_existing, read_link, remove_link, touch, write_atomic};
use super::tag_names::TagNames;
use super::{BlobWriter, IoContext, Layout, StoreError};
use crate::registry::manifest;
use crate::registry::names::{Digest, Name, Reference, Tag};

#[derive(Clone)]
pub struct Store {
    layout: Layout,
    tag_names: std::sync::Arc<TagNames>,
    catalog: std::sync::Arc<Catalog>,
}

/// Where pulled-through content came from (DESIGN §4): absent for pushed content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The upstream host name, e.g. `registry-1.docker.io`.
    pub upstream: String,
    /// Unix seconds.
    pub fetched_at: u64,
}

fn read_origin(path: &std::path::Path) -> Result<Option<Origin>, StoreError> {
    Ok(read_link(path)?.filter(|t| !t.is_empty()).and_then(|t| serde_json::from_str(&t).ok()))
}

/// A manifest found by name and reference, ready to stream.
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub file: File,
    pub len: u64,
}

impl Store {
    /// Opens (creating when needed) a store rooted at the layout's root.
    pub fn open(layout: Layout) -> Result<Store, StoreError> {
        for dir in [layout.root().join("blobs"), layout.repositories(), layout.uploads(), layout.tmp()] {
            fs::create_dir_all(&dir).at(&dir)?;
        }
        let store = Store { layout, tag_names: std::sync::Arc::default(), catalog: std::sync::Arc::default() };
        // A `clean` killed mid-way may have hidden files it was still deciding about.
        store.recover_interrupted_clean()?;
        Ok(store)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Size of a blob in the global content store, whatever repository holds it.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.layout.blob(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// True when `name` may serve the blob and it is there; claims both (see the module doc), so
    /// a manifest PUT that checked its blobs here cannot lose them to a concurrent `clean`.
    pub fn has_layer(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        Ok(touch(&self.layout.layer_link(name, digest))? && touch(&self.layout.blob(digest))?)
    }

    /// Opens a blob that `name` may serve. Claims the link and the blob: a client that HEADs a
    /// layer and then skips its upload relies on both staying until its manifest PUT.
    /// A claim that cannot be made (a read-only filesystem) does not stop the read.
    pub fn open_blob(&self, name: &Name, digest: &Digest) -> Result<Option<(File, u64)>, StoreError> {
        let link = self.layout.layer_link(name, digest);
        let linked = match touch(&link) {
            Ok(linked) => linked,
            Err(_) => read_link(&link)?.is_some(),
        };
        if !linked {
            return Ok(None);
        }
        let path = self.layout.blob(digest);
        let _ = touch(&path);
        match open_existing(&path)? {
            Some(file) => {
                let len = file.metadata().at(&path)?.len();
                Ok(Some((file, len)))
            }
            None => Ok(None),
        }
    }

    /// Lets `name` serve the blob. `origin` is `None` for pushed content; a pushed link is
    /// never downgraded to a cached one.
    pub fn link_layer(&self, name: &Name, digest: &Digest, origin: Option<&Origin>) -> Result<(), StoreError> {
        let path = self.layout.layer_link(name, digest);
        // Claimed, like the link below: a mount or a re-upload makes both young again.
        touch(&self.layout.blob(digest))?;
        match (read_link(&path)?, origin) {
            // Already linked, and not a cached link a push upgrades: claim it (rewritten if it
            // went away between the read and the claim).
            (Some(text), cached) if (cached.is_some() || text.is_empty()) && touch(&path)? => Ok(()),
            (_, None) => write_atomic(&path, b""),
            (_, Some(origin)) => write_atomic(&path, &serde_json::to_vec(origin).unwrap_or_default()),
        }
    }

    /// Where a blob of `name` came from; `None` when pushed (or not there).
    pub fn layer_origin(&self, name: &Name, digest: &Digest) -> Result<Option<Origin>, StoreError> {
        read_origin(&self.layout.layer_link(name, digest))
    }

    /// True when some manifest of `name` was pulled through (has an origin).
    pub fn has_cached_manifests(&self, name: &Name) -> bool {
        let dir = self.layout.manifests_dir(name).join("origins");
        walkdir::WalkDir::new(dir).min_depth(2).max_depth(2).into_iter().flatten().any(|e| e.file_type().is_file())
    }

    /// Where a manifest of `name` came from; `None` when pushed.
    pub fn manifest_origin(&self, name: &Name, digest: &Digest) -> Result<Option<Origin>, StoreError> {
        read_origin(&self.layout.manifest_origin(name, digest))
    }

    /// When a tag was last written or revalidated upstream.
    pub fn tag_checked_at(&self, name: &Name, tag: &Tag) -> Option<std::time::SystemTime> {
        fs::metadata(self.layout.tag_link(name, tag)).and_then(|m| m.modified()).ok()
    }

    /// Records that an upstream had `tag` at its digest at `now` (what `tag_checked_at` reads).
    pub fn touch_tag(&self, name: &Name, tag: &Tag, now: std::time::SystemTime) -> Result<(), StoreError> {
        let path = self.layout.tag_link(name, tag);
        let file = fs::File::options().write(true).open(&path).at(&path)?;
        file.set_modified(now).at(&path)
    }

    pub fn unlink_layer(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        remove_link(&self.layout.layer_link(name, digest))
    }

    /// Stores manifest bytes under their digest, links them into `name`, and points `tag` at
    /// them. Referrer entries are written before the revision link so a listed manifest
    /// always has its referrer entry.
    pub fn put_manifest(
        &self,
        name: &Name,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        tag: Option<&Tag>,
        origin: Option<&Origin>,
    ) -> Result<(), StoreError> {
        // However this ends, the repository may exist now.
        let _catalog_changed = ChangesOnDrop(&self.catalog);
        let mut writer = BlobWriter::temp(&self.layout, digest.algorithm())?;
        writer.copy_from(&mut &bytes[..], None)?;
        writer.commit(&self.layout, digest)?;
        if let Some(subject) = &parsed.subject {
            let descriptor = manifest::referrer_descriptor(parsed, digest, bytes.len() as u64);
            let json = serde_json::to_vec(&descriptor).unwrap_or_default();
            write_atomic(&self.layout.referrer_link(name, subject, digest), &json)?;
        }
        let origin_path = self.layout.manifest_origin(name, digest);
        match origin {
            Some(origin) => write_atomic(&origin_path, &serde_json::to_vec(origin).unwrap_or_default())?,
            None => {
                remove_link(&origin_path)?;
            }
        }
        write_atomic(&self.layout.manifest_link(name, digest), parsed.media_type.as_bytes())?;
        if let Some(tag) = tag {
            write_atomic(&self.layout.tag_link(name, tag), digest.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// The digest a reference names in `name`, when the manifest is there.
    pub fn resolve(&self, name: &Name, reference: &Reference) -> Result<Option<Digest>, StoreError> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => match read_link(&self.layout.tag_link(name, tag))? {
                Some(text) => match text.parse::<Digest>() {
                    Ok(d) => d,
                    Err(_) => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        Ok(self.manifest_present(name, &digest)?.then_some(digest))
    }

    /// True when `name` holds the manifest; claims its revision link and bytes (an index PUT
    /// checks its children here). Read paths use `manifest_present`, which writes nothing.
    pub fn has_manifest(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        Ok(touch(&self.layout.manifest_link(name, digest))? && touch(&self.layout.blob(digest))?)
    }

    fn manifest_present(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        Ok(read_link(&self.layout.manifest_link(name, digest))?.is_some() && self.blob_size(digest)?.is_some())
    }

    pub fn open_manifest(&self, name: &Name, reference: &Reference) -> Result<Option<StoredManifest>, StoreError> {
        let Some(digest) = self.resolve(name, reference)? else { return Ok(None) };
        let Some(media_type) = read_link(&self.layout.manifest_link(name, &digest))? else { return Ok(None) };
        let path = self.layout.blob(&digest);
        let Some(file) = open_existing(&path)? else { return Ok(None) };
        let len = file.metadata().at(&path)?.len();
        Ok(Some(StoredManifest { digest, media_type, file, len }))
    }

    /// Reads a stored manifest whole (manifests are size-capped on the way in).
    pub fn read_manifest(&self, name: &Name, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        match self.open_manifest(name, &Reference::Digest(digest.clone()))? {
            Some(mut m) => {
                let mut bytes = Vec::with_capacity(m.len as usize);
                m.file.read_to_end(&mut bytes).at(&self.layout.blob(digest))?;
                Ok(Some(bytes))
            }
            None => Ok(None),
        }
    }

    /// Deletes a manifest from `name`: its tags go first (so none dangles), then its referrer
    /// entry, then the revision link. True when it existed.
    pub fn delete_manifest(&self, name: &Name, digest: &Digest) -> Result<bool, StoreError> {
        let Some(bytes) = self.read_manifest(name, digest)? else { return Ok(false) };
        for tag in self.tags(name)?.unwrap_or_default() {
            if let Ok(tag) = tag.parse::<Tag>() {
                let link = self.layout.tag_link(name, &tag);
                if read_link(&link)?.as_deref() == Some(digest.to_string().as_str()) {
                    remove_link(&link)?;
                }
            }
        }
        if let Ok(parsed) = manifest::parse(&bytes, None) {
            if let Some(subject) = parsed.subject {
                remove_link(&self.layout.referrer_link(name, &subject, digest))?;
            }
        }
        remove_link(&self.layout.manifest_origin(name, digest))?;
        remove_link(&self.layout.manifest_link(name, digest))
    }

    pub fn delete_tag(&self, name: &Name, tag: &Tag) -> Result<bool, StoreError> {
        remove_link(&self.layout.tag_link(name, tag))
    }

    pub fn repository_exists(&self, name: &Name) -> bool {
        self.layout.manifests_dir(name).is_dir() || self.layout.repository(name).join("_layers").is_dir()
    }

    /// Tags of `name`, sorted; `None` when the repository is unknown.
    pub fn tags(&self, name: &Name) -> Result<Option<Vec<String>>, StoreError> {
        Ok(self.tags_page(name, None, None)?.map(|(tags, _)| tags))
    }

    /// One page of `name`'s tags: those sorting after `after`, at most `limit`, and whether more
    /// follow; `None` when the repository is unknown. Only the page's tags (and one more) have
    /// their links read and their manifests checked, and the sorted names of a large, settled
    /// tags directory are kept between pages (`tag_names`), so a page costs the same whatever
    /// the number of tags.
    pub fn tags_page(
        &self,
        name: &Name,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Option<(Vec<String>, bool)>, StoreError> {
        if !self.repository_exists(name) {
            return Ok(None);
        }
        let tags_dir = self.layout.tags_dir(name);
        let mut tags = Vec::new();
        // Many tags share a few manifests: check each digest once per listing.
        let mut present: std::collections::HashMap<Digest, bool> = std::collections::HashMap::new();
        let names = self.tag_names.sorted(&tags_dir)?;
        let first = after.map_or(0, |a| names.partition_point(|t| t.as_str() <= a));
        for tag in &names[first..] {
            // A tag whose manifest is gone (deleted underneath it) is not listed.
            let Some(digest) = read_link(&tags_dir.join(tag))?.and_then(|t| t.parse::<Digest>().ok()) else {
                continue;
            };
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
            tags.push(tag.clone());
        }
        Ok(Some((tags, false)))
    }

    /// Every repository holding at least one manifest, sorted. The walk descends namespaces
    /// only: a repository's own `_manifests`, `_layers`, … directories (names never start with
    /// `_`) are seen, not entered, so the cost follows the number of repositories, not of tags
    /// and layers (issue 9: the catalog walked every link file).
    ///
    /// The list is kept between calls until a manifest put or a prune may have changed it
    /// (`catalog.rs`).
    pub fn repositories(&self) -> Result<std::sync::Arc<Vec<String>>, StoreError> {
        self.catalog.repositories(|| {
            let root = self.layout.repositories();
            let mut names = Vec::new();
            collect_repositories(&root, &root, &mut names)?;
            names.sort();
            Ok(names)
        })
    }

    /// For pruning (`sweep.rs`): marks the catalog out of date when the returned guard drops.
    pub(super) fn catalog_changes(&self) -> ChangesOnDrop<'_> {
        ChangesOnDrop(&self.catalog)
    }

    /// Descriptors of the manifests in `name` whose subject is `subject`.
    pub fn referrers(&self, name: &Name, subject: &Digest) -> Result<Vec<serde_json::Value>, StoreError> {
        let dir = self.layout.referrers_dir(name, subject);
        let mut out = Vec::new();
        for entry in list_links(&dir)? {
            let Some(text) = read_link(&dir.join(&entry))? else { continue };
            let Ok(descriptor) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            // Listed only while the referrer itself is still in the repository.
            let listed = descriptor["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .map(|d| self.manifest_present(name, &d))
                .transpose()?
                .unwrap_or(false);
            if listed {
                out.push(descriptor);
            }
        }
        Ok(out)
    }
}

/// Adds to `names` every repository at or under `dir` (a directory in `root`). A directory that
/// vanishes during the walk (a concurrent delete or clean) is skipped; symlinks are not followed.
fn collect_repositories(root: &Path, dir: &Path, names: &mut Vec<String>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(()),
        Err(e) => return Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
    };
    for entry in entries {
        let entry = entry.at(dir)?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let file_name = entry.file_name();
        if file_name == "_manifests" {
            if let Ok(rel) = dir.strip_prefix(root) {
                let name = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                if name.parse::<Name>().is_ok() {
                    names.push(name);
                }
            }
        } else if !file_name.to_string_lossy().starts_with(['_', '.']) {
            collect_repositories(root, &entry.path(), names)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

    fn store_with(repos: &[(&str, &[&str])]) -> (tempfile::TempDir, Store, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Layout::new(dir.path())).unwrap();
        let parsed = manifest::parse(MANIFEST, None).unwrap();
        let digest = crate::registry::storage::blobs::digest_of(crate::registry::names::Algorithm::Sha256, MANIFEST);
        for (repo, tags) in repos {
            let name: Name = repo.parse().unwrap();
            store.put_manifest(&name, &digest, MANIFEST, &parsed, None, None).unwrap();
            for tag in *tags {
                store.put_manifest(&name, &digest, MANIFEST, &parsed, Some(&tag.parse().unwrap()), None).unwrap();
            }
        }
        (dir, store, digest)
    }

    #[test]
    fn catalog_lists_nested_repositories_and_only_those_with_manifests() {
        let (_dir, store, _) = store_with(&[("a", &["t"]), ("a/b", &[]), ("x/y/z", &["t"])]);
        let repos = store.layout().repositories();
        // Layers only (a push that has not put its manifest yet): not a repository to list.
        fs::create_dir_all(repos.join("layers-only/_layers/sha256")).unwrap();
        // A namespace directory with nothing in it, and stray files: ignored.
        fs::create_dir_all(repos.join("empty/ns")).unwrap();
        fs::write(repos.join("x/stray"), b"").unwrap();
        assert_eq!(*store.repositories().unwrap(), ["a", "a/b", "x/y/z"]);
    }

    /// The catalog is kept between requests, and still sees a push and a prune at once.
    #[test]
    fn the_kept_catalog_follows_manifest_puts_and_prunes() {
        let (_dir, store, digest) = store_with(&[("a", &["t"]), ("a/b", &[])]);
        let first = store.repositories().unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &store.repositories().unwrap()), "walked again");
        let parsed = manifest::parse(MANIFEST, None).unwrap();
        store.put_manifest(&"c".parse().unwrap(), &digest, MANIFEST, &parsed, None, None).unwrap();
        assert_eq!(*store.repositories().unwrap(), ["a", "a/b", "c"]);
        let gone: Name = "a/b".parse().unwrap();
        assert!(store.delete_manifest(&gone, &digest).unwrap());
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(store.prune_empty_repositories(Some(&gone), later).unwrap(), [gone]);
        assert_eq!(*store.repositories().unwrap(), ["a", "c"]);
    }

    #[test]
    fn a_tags_page_starts_after_last_holds_n_and_skips_dangling_tags() {
        let (_dir, store, _) = store_with(&[("r", &["a", "b", "c", "d", "e"])]);
        let name: Name = "r".parse().unwrap();
        // `c` points at a manifest that is not in the repository: never listed, never counted.
        let other = crate::registry::storage::blobs::digest_of(crate::registry::names::Algorithm::Sha256, b"gone");
        write_atomic(&store.layout().tag_link(&name, &"c".parse().unwrap()), other.to_string().as_bytes()).unwrap();
        let page = |after, n| store.tags_page(&name, after, n).unwrap().unwrap();
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(page(None, None), (strings(&["a", "b", "d", "e"]), false));
        assert_eq!(page(None, Some(2)), (strings(&["a", "b"]), true));
        assert_eq!(page(Some("b"), Some(2)), (strings(&["d", "e"]), false));
        assert_eq!(page(Some("bb"), Some(1)), (strings(&["d"]), true));
        assert_eq!(page(None, Some(0)), (strings(&[]), true));
        assert_eq!(page(Some("e"), Some(3)), (strings(&[]), false));
        assert!(store.tags_page(&"nope".parse().unwrap(), None, None).unwrap().is_none());
    }
}
