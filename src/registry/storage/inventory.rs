//! `Store::inventory`: one read-only pass over the storage root that collects everything
//! `glci registry list | stats | clean` need: every repository's tags, manifest revisions,
//! layer links, origins and referrer entries (with their mtimes), every blob's size and mtime,
//! the references inside every manifest, upload sessions, disk use and free space, and files a
//! killed `clean` left aside. No decisions here: `registry::usage` and `registry::gc` compute
//! from the result; this file only reads (paths as `layout.rs` documents them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::layout::GC_ASIDE_LINK;
use super::store::Origin;
use super::{Layout, Store, StoreError};
use crate::registry::manifest;
use crate::registry::names::{Digest, Name, Tag};

/// Manifests larger than this are not read (the registry accepts at most a few MiB).
const MAX_MANIFEST_READ: u64 = 64 * 1024 * 1024;

/// Everything on disk, as one snapshot.
#[derive(Debug, Default)]
pub struct Inventory {
    pub repositories: BTreeMap<Name, Repository>,
    /// Files of the content store (layers, configs and manifests).
    pub blobs: HashMap<Digest, BlobFile>,
    /// What each manifest references; every manifest a revision link names, and their children.
    pub manifests: HashMap<Digest, ManifestInfo>,
    pub uploads: UploadUsage,
    /// Files a killed `clean` moved aside and never put back or removed.
    pub asides: Vec<Aside>,
    /// Allocated bytes of everything under the root.
    pub disk_bytes: u64,
    /// Space on the filesystem holding the root; `None` when `statvfs` fails.
    pub filesystem: Option<FilesystemUsage>,
}

/// The links of one repository.
#[derive(Debug, Default)]
pub struct Repository {
    /// By tag, sorted.
    pub tags: BTreeMap<String, TagLink>,
    pub revisions: HashMap<Digest, Revision>,
    pub layers: HashMap<Digest, LayerLink>,
    /// Origin files by manifest digest (a revision's origin is also in `Revision::origin`).
    pub origin_files: HashMap<Digest, OriginFile>,
    pub referrers: Vec<ReferrerEntry>,
}

#[derive(Debug, Clone)]
pub struct TagLink {
    pub tag: Tag,
    /// `None` when the link does not hold a digest.
    pub target: Option<Digest>,
    /// Last written (push) or revalidated upstream (pull-through).
    pub modified: SystemTime,
}

#[derive(Debug, Clone)]
pub struct Revision {
    pub media_type: String,
    pub modified: SystemTime,
    /// `None`: pushed.
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone)]
pub struct LayerLink {
    pub modified: SystemTime,
    /// `None`: pushed.
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone)]
pub struct OriginFile {
    pub modified: SystemTime,
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone)]
pub struct ReferrerEntry {
    pub subject: Digest,
    pub referrer: Digest,
    pub modified: SystemTime,
}

#[derive(Debug, Clone, Copy)]
pub struct BlobFile {
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug, Clone)]
pub enum ManifestInfo {
    Parsed(ManifestRefs),
    /// The bytes are there but are not a manifest we can read: what it references is unknown.
    Unreadable(String),
}

#[derive(Debug, Clone, Default)]
pub struct ManifestRefs {
    pub media_type: String,
    /// Config and layers (image manifests).
    pub blobs: Vec<Digest>,
    /// Manifests an index lists.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// Every digest the document names anywhere (`digest`, `blobSum` fields): what `clean`
    /// keeps, so a manifest type we do not model still keeps what it points to.
    pub names: Vec<Digest>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct UploadUsage {
    pub sessions: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct FilesystemUsage {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// A file `clean` moved aside: `original` is where it belongs.
#[derive(Debug, Clone)]
pub struct Aside {
    pub aside: PathBuf,
    pub original: PathBuf,
}

impl Inventory {
    /// The repositories at `project` or below it (all of them for `None`).
    pub fn selected<'a>(&'a self, project: Option<&'a Name>) -> impl Iterator<Item = (&'a Name, &'a Repository)> {
        self.repositories.iter().filter(move |(name, _)| {
            project.is_none_or(|p| crate::registry::names::is_under(name.as_str(), p.as_str()))
        })
    }
}

fn read_small(path: &Path) -> Option<String> {
    fs::read(path).ok().map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

fn digest_from(algorithm: &str, hex: &str) -> Option<Digest> {
    format!("{algorithm}:{hex}").parse().ok()
}

/// Every string under a `digest` or `blobSum` key, anywhere in the document.
fn named_digests(value: &serde_json::Value, out: &mut Vec<Digest>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("digest" | "blobSum", serde_json::Value::String(s)) => {
                        if let Ok(d) = s.parse::<Digest>() {
                            out.push(d);
                        }
                    }
                    _ => named_digests(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| named_digests(v, out)),
        _ => {}
    }
}

/// Reads what a manifest references (pure but for the bytes given).
pub fn manifest_refs(bytes: &[u8], media_type_hint: Option<&str>) -> ManifestInfo {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return ManifestInfo::Unreadable(format!("not JSON: {e}")),
    };
    let mut names = Vec::new();
    named_digests(&value, &mut names);
    let mut refs = ManifestRefs { names, ..ManifestRefs::default() };
    match manifest::parse(bytes, media_type_hint) {
        Ok(parsed) => {
            refs.media_type = parsed.media_type;
            refs.blobs = parsed.blobs;
            refs.children = parsed.children;
            refs.subject = parsed.subject;
        }
        Err(_) => refs.media_type = media_type_hint.unwrap_or_default().to_string(),
    }
    ManifestInfo::Parsed(refs)
}

/// Threads that scan at once (file metadata and small reads: latency more than CPU).
const SCAN_WORKERS: usize = 4;

fn scan_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2).clamp(1, SCAN_WORKERS)
}

/// Walks the tree under `root` on a few threads (symlinks not followed), calling `visit` with
/// each file's path and metadata (`DirEntry::metadata`: an `fstatat` relative to its directory,
/// no full path lookup), and adding every entry's allocated bytes to the returned total.
/// Entries that vanish during the walk (a concurrent delete or clean) are skipped.
fn walk<T: Send>(
    root: &Path,
    visit: impl Fn(&Path, &fs::Metadata) -> Option<T> + Sync,
) -> Result<(Vec<T>, u64), StoreError> {
    use std::sync::{Condvar, Mutex};
    struct Queue {
        dirs: Vec<PathBuf>,
        busy: usize,
        error: Option<StoreError>,
    }
    let queue = Mutex::new(Queue { dirs: vec![root.to_path_buf()], busy: 0, error: None });
    let wake = Condvar::new();
    let lock = || queue.lock().unwrap_or_else(|p| p.into_inner());
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..scan_workers())
            .map(|_| {
                scope.spawn(|| {
                    let (mut found, mut disk) = (Vec::new(), 0u64);
                    loop {
                        let dir = {
                            let mut q = lock();
                            loop {
                                if q.error.is_some() {
                                    break None;
                                }
                                if let Some(dir) = q.dirs.pop() {
                                    q.busy += 1;
                                    break Some(dir);
                                }
                                if q.busy == 0 {
                                    break None;
                                }
                                q = wake.wait(q).unwrap_or_else(|p| p.into_inner());
                            }
                        };
                        let Some(dir) = dir else {
                            wake.notify_all();
                            return (found, disk);
                        };
                        let mut subdirs = Vec::new();
                        let outcome = read_entries(&dir, &mut |path, meta| {
                            disk += meta.blocks() * 512;
                            if meta.is_dir() {
                                subdirs.push(path);
                            } else if meta.is_file() {
                                found.extend(visit(&path, meta));
                            }
                        });
                        let mut q = lock();
                        q.busy -= 1;
                        q.dirs.extend(subdirs);
                        if let Err(e) = outcome {
                            q.error.get_or_insert(e);
                        }
                        drop(q);
                        wake.notify_all();
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect::<Vec<_>>()
    });
    if let Some(e) = lock().error.take() {
        return Err(e);
    }
    let mut all = Vec::new();
    let mut disk = 0;
    for (found, bytes) in results {
        all.extend(found);
        disk += bytes;
    }
    Ok((all, disk))
}

/// Calls `each` with every entry of `dir` and its metadata; a missing `dir` has none.
fn read_entries(dir: &Path, each: &mut dyn FnMut(PathBuf, &fs::Metadata)) -> Result<(), StoreError> {
    let gone = |e: &io::Error| matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
        };
        match entry.metadata() {
            Ok(meta) => each(entry.path(), &meta),
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(StoreError::Io { path: entry.path(), source: e }),
        }
    }
    Ok(())
}

/// One file of a repository, as the walk finds it.
enum RepoFile {
    Revision(Digest, Revision),
    Origin(Digest, OriginFile),
    Tag(TagLink),
    Layer(Digest, LayerLink),
    Referrer(ReferrerEntry),
}

/// What a file under `repositories/` is, from its path (relative to `root`) and metadata.
fn repository_file(root: &Path, path: &Path, meta: &fs::Metadata) -> Option<Result<(Name, RepoFile), Aside>> {
    let file_name = path.file_name()?.to_str()?;
    if file_name.starts_with(GC_ASIDE_LINK) {
        return Layout::link_of_aside(path).map(|original| Err(Aside { aside: path.to_path_buf(), original }));
    }
    if file_name.starts_with('.') {
        // A link being written (`write_atomic`'s temp file).
        return None;
    }
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    // Repository name components never start with `_`; the first that does ends the name.
    let split = parts.iter().position(|p| p.starts_with('_'))?;
    let name = parts[..split].join("/").parse::<Name>().ok()?;
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let file = match &parts[split..] {
        ["_manifests", "revisions", algorithm, hex] => {
            let media_type = read_small(path).unwrap_or_default();
            // The origin is attached once its own file has been seen too.
            RepoFile::Revision(digest_from(algorithm, hex)?, Revision { media_type, modified, origin: None })
        }
        ["_manifests", "origins", algorithm, hex] => {
            let origin = read_small(path).and_then(|t| serde_json::from_str::<Origin>(&t).ok());
            RepoFile::Origin(digest_from(algorithm, hex)?, OriginFile { modified, origin })
        }
        ["_manifests", "tags", tag] => {
            let tag = tag.parse::<Tag>().ok()?;
            let target = read_small(path).and_then(|t| t.parse::<Digest>().ok());
            RepoFile::Tag(TagLink { tag, target, modified })
        }
        ["_layers", algorithm, hex] => {
            let origin = if meta.len() == 0 {
                None
            } else {
                read_small(path).and_then(|t| serde_json::from_str::<Origin>(&t).ok())
            };
            RepoFile::Layer(digest_from(algorithm, hex)?, LayerLink { modified, origin })
        }
        ["_referrers", algorithm, subject_hex, entry_name] => {
            let subject = digest_from(algorithm, subject_hex)?;
            let (ref_algorithm, ref_hex) = entry_name.split_once('-')?;
            let referrer = digest_from(ref_algorithm, ref_hex)?;
            RepoFile::Referrer(ReferrerEntry { subject, referrer, modified })
        }
        _ => return None,
    };
    Some(Ok((name, file)))
}

impl Store {
    /// Scans the whole root (see the module doc). Reads only.
    pub fn inventory(&self) -> Result<Inventory, StoreError> {
        let layout = self.layout();
        let mut inv = Inventory::default();
        self.scan_repositories(&mut inv)?;
        self.scan_blobs(&mut inv)?;
        self.scan_manifests(&mut inv);
        scan_uploads(layout, &mut inv)?;
        scan_tmp(layout, &mut inv)?;
        inv.filesystem = filesystem_usage(layout.root());
        Ok(inv)
    }

    fn scan_repositories(&self, inv: &mut Inventory) -> Result<(), StoreError> {
        let root = self.layout().repositories();
        let (files, disk) = walk(&root, |path, meta| repository_file(&root, path, meta))?;
        inv.disk_bytes += disk;
        for file in files {
            let (name, file) = match file {
                Ok(found) => found,
                Err(aside) => {
                    inv.asides.push(aside);
                    continue;
                }
            };
            let repo = inv.repositories.entry(name).or_default();
            match file {
                RepoFile::Revision(digest, revision) => {
                    repo.revisions.insert(digest, revision);
                }
                RepoFile::Origin(digest, origin) => {
                    repo.origin_files.insert(digest, origin);
                }
                RepoFile::Tag(link) => {
                    repo.tags.insert(link.tag.as_str().to_string(), link);
                }
                RepoFile::Layer(digest, link) => {
                    repo.layers.insert(digest, link);
                }
                RepoFile::Referrer(entry) => repo.referrers.push(entry),
            }
        }
        for repo in inv.repositories.values_mut() {
            for (digest, file) in &repo.origin_files {
                if let Some(revision) = repo.revisions.get_mut(digest) {
                    revision.origin = file.origin.clone();
                }
            }
        }
        Ok(())
    }

    fn scan_blobs(&self, inv: &mut Inventory) -> Result<(), StoreError> {
        let root = self.layout().blobs();
        let (files, disk) = walk(&root, |path, meta| {
            let name = path.file_name()?.to_str()?;
            if name.starts_with(GC_ASIDE_LINK) {
                return Layout::link_of_aside(path).map(|original| Err(Aside { aside: path.to_path_buf(), original }));
            }
            // blobs/<algorithm>/<2 hex>/<hex>
            let algorithm = path.parent()?.parent()?.file_name()?.to_str()?;
            let digest = digest_from(algorithm, name)?;
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some(Ok((digest, BlobFile { size: meta.len(), modified })))
        })?;
        inv.disk_bytes += disk;
        inv.blobs.reserve(files.len());
        for file in files {
            match file {
                Ok((digest, blob)) => {
                    inv.blobs.insert(digest, blob);
                }
                Err(aside) => inv.asides.push(aside),
            }
        }
        Ok(())
    }

    /// Reads every manifest a revision names (and, through indexes, their children), a few at
    /// a time.
    fn scan_manifests(&self, inv: &mut Inventory) {
        let mut hints: HashMap<Digest, String> = HashMap::new();
        for repo in inv.repositories.values() {
            for (digest, revision) in &repo.revisions {
                hints.entry(digest.clone()).or_insert_with(|| revision.media_type.clone());
            }
        }
        let mut round: Vec<Digest> = hints.keys().cloned().collect();
        let mut seen: HashSet<Digest> = round.iter().cloned().collect();
        while !round.is_empty() {
            let read = |digest: &Digest| -> Option<ManifestInfo> {
                let blob = inv.blobs.get(digest)?;
                if blob.size > MAX_MANIFEST_READ {
                    return Some(ManifestInfo::Unreadable(format!("{} bytes: too large for a manifest", blob.size)));
                }
                match read_whole(&self.layout().blob(digest)) {
                    Ok(bytes) => Some(manifest_refs(&bytes, hints.get(digest).map(String::as_str))),
                    // Deleted since the blob scan: nothing to read, nothing it keeps.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => Some(ManifestInfo::Unreadable(e.to_string())),
                }
            };
            let chunk = round.len().div_ceil(scan_workers()).max(1);
            let parsed: Vec<(Digest, ManifestInfo)> = std::thread::scope(|scope| {
                let handles: Vec<_> = round
                    .chunks(chunk)
                    .map(|part| {
                        let read = &read;
                        scope.spawn(move || {
                            part.iter().filter_map(|d| read(d).map(|i| (d.clone(), i))).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
            });
            let mut next = Vec::new();
            for (digest, info) in parsed {
                if let ManifestInfo::Parsed(refs) = &info {
                    next.extend(refs.children.iter().filter(|c| seen.insert((*c).clone())).cloned());
                }
                inv.manifests.insert(digest, info);
            }
            round = next;
        }
    }
}

fn read_whole(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(MAX_MANIFEST_READ).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn scan_uploads(layout: &Layout, inv: &mut Inventory) -> Result<(), StoreError> {
    let root = layout.uploads();
    let mut sessions = Vec::new();
    read_entries(&root, &mut |path, meta| {
        inv.disk_bytes += meta.blocks() * 512;
        if meta.is_dir() {
            sessions.push(path);
        }
    })?;
    inv.uploads.sessions = sessions.len() as u64;
    for session in sessions {
        read_entries(&session, &mut |path, meta| {
            inv.disk_bytes += meta.blocks() * 512;
            if path.file_name().is_some_and(|n| n == "data") {
                inv.uploads.bytes += meta.len();
            }
        })?;
    }
    Ok(())
}

fn scan_tmp(layout: &Layout, inv: &mut Inventory) -> Result<(), StoreError> {
    read_entries(&layout.tmp(), &mut |_, meta| inv.disk_bytes += meta.blocks() * 512)
}

/// Free and total bytes of the filesystem holding `path`.
pub fn filesystem_usage(path: &Path) -> Option<FilesystemUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some(FilesystemUsage { free_bytes: st.f_bavail as u64 * unit, total_bytes: st.f_blocks as u64 * unit })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn refs_of_known_and_unknown_manifest_types() {
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"c","digest":"{A}","size":1}},"layers":[{{"mediaType":"l","digest":"{B}","size":2}}]}}"#,
            manifest::OCI_MANIFEST
        );
        let ManifestInfo::Parsed(refs) = manifest_refs(image.as_bytes(), None) else { panic!("parsed") };
        assert_eq!(refs.blobs.len(), 2);
        assert_eq!(refs.names.len(), 2);
        // A schema1-like document: nothing modelled, but its blobSums are still named.
        let schema1 = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{A}"}}]}}"#);
        let ManifestInfo::Parsed(refs) = manifest_refs(schema1.as_bytes(), Some("application/x-schema1")) else {
            panic!("parsed")
        };
        assert!(refs.blobs.is_empty());
        assert_eq!(refs.names, vec![A.parse::<Digest>().unwrap()]);
        assert!(matches!(manifest_refs(b"{not json", None), ManifestInfo::Unreadable(_)));
    }
}
