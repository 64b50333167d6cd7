//! The host side of `cache:`: one tar per project and key under `$GLCI_HOME/cache/`, laid out
//! as `<project, '/' as %2F>/<sha256(key), 32 hex>/{key,cache.tar}` so a key is never a path
//! and projects never share a directory. A save streams into a temp file of the same
//! directory (`durable`'s temp name), fsyncs it and renames it over `cache.tar`: concurrent saves of one key leave one
//! whole archive (the last rename), a kill mid-save leaves the previous one. Restores read
//! `cache.tar` and set its mtime (the "last used" of `glci cache list`). Used by
//! `execute::cache` (jobs) and `cli::cache` (list, clear); nothing else touches this tree.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::durable;

const ARCHIVE: &str = "cache.tar";
const KEY_FILE: &str = "key";
/// A temp file older than this belongs to a save that died (a live one writes all the time).
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// The caches of one project.
#[derive(Clone, Debug)]
pub struct CacheStore {
    dir: PathBuf,
}

/// One stored cache, for `glci cache list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCache {
    pub project: String,
    pub key: String,
    pub size: u64,
    pub last_used: SystemTime,
}

/// `$GLCI_HOME/cache`.
pub fn root(home: &Path) -> PathBuf {
    home.join("cache")
}

pub(crate) fn encode_project(project: &str) -> String {
    project.replace('%', "%25").replace('/', "%2F")
}

pub(crate) fn decode_project(name: &str) -> String {
    name.replace("%2F", "/").replace("%25", "%")
}

impl CacheStore {
    pub fn new(root: &Path, project: &str) -> CacheStore {
        CacheStore { dir: root.join(encode_project(project)) }
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        let digest = Sha256::digest(key.as_bytes());
        let name = crate::encoding::hex(&digest[..16]);
        self.dir.join(name)
    }

    /// The archive of `key`, when there is one; marks it used.
    pub fn open(&self, key: &str) -> Option<(fs::File, u64)> {
        let path = self.entry_dir(key).join(ARCHIVE);
        let file = fs::File::open(&path).ok()?;
        let size = file.metadata().ok()?.len();
        if let Ok(writable) = fs::OpenOptions::new().write(true).open(&path) {
            let _ = writable.set_modified(SystemTime::now());
        }
        Some((file, size))
    }

    /// Streams a new archive of `key` through `write`, then makes it the cache atomically;
    /// its size. On any error the previous archive stays and the temp file is removed.
    pub fn save(&self, key: &str, write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<u64> {
        let dir = self.entry_dir(key);
        fs::create_dir_all(&dir)?;
        remove_stale_temps(&dir);
        let archive = dir.join(ARCHIVE);
        // Streamed, so not `durable::replace` (which takes the bytes): its steps, by hand.
        let temp = durable::temp_beside(&archive);
        let result = (|| {
            let file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            write(&mut out)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            let size = file.metadata()?.len();
            // The key beside the archive, whole or not at all for a reader.
            durable::replace(&dir.join(KEY_FILE), key.as_bytes())?;
            fs::rename(&temp, &archive)?;
            durable::sync_dir(&dir);
            Ok(size)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Removes `key`'s cache, or every cache of the project; how many were removed.
    pub fn clear(&self, key: Option<&str>) -> io::Result<usize> {
        match key {
            Some(key) => {
                let dir = self.entry_dir(key);
                if !dir.join(ARCHIVE).exists() {
                    return Ok(0);
                }
                fs::remove_dir_all(dir)?;
                Ok(1)
            }
            None => {
                let count = self.list().len();
                match fs::remove_dir_all(&self.dir) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(count),
                }
            }
        }
    }

    /// This project's caches, by key.
    pub fn list(&self) -> Vec<StoredCache> {
        let project = self.dir.file_name().map(|n| decode_project(&n.to_string_lossy())).unwrap_or_default();
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let dir = entry.path();
            let Ok(meta) = fs::metadata(dir.join(ARCHIVE)) else { continue };
            let Ok(key) = fs::read_to_string(dir.join(KEY_FILE)) else { continue };
            out.push(StoredCache {
                project: project.clone(),
                key,
                size: meta.len(),
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// Every project's caches, by project then key.
pub fn list_all(root: &Path) -> Vec<StoredCache> {
    let mut out = Vec::new();
    let mut projects: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| decode_project(&e.file_name().to_string_lossy()))
        .collect();
    projects.sort();
    for project in projects {
        out.extend(CacheStore::new(root, &project).list());
    }
    out
}

fn remove_stale_temps(dir: &Path) {
    let now = SystemTime::now();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        // `durable`'s temp names (`.cache.tar.tmp-<id>`), and the `.tmp-<hex>.tar` of older glci.
        if !entry.file_name().to_string_lossy().contains(durable::TEMP_MARK) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_TEMP);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(store: &CacheStore, key: &str, bytes: &[u8]) -> io::Result<u64> {
        store.save(key, &mut |out| out.write_all(bytes))
    }

    #[test]
    fn save_open_list_clear() {
        let home = tempfile::tempdir().expect("tempdir");
        let store = CacheStore::new(&root(home.path()), "g/p");
        assert!(store.open("deps").is_none());
        assert_eq!(save(&store, "deps", b"one").expect("save"), 3);
        assert_eq!(save(&store, "deps", b"two!").expect("save"), 4);
        save(&store, "other key", b"x").expect("save");
        let (_, size) = store.open("deps").expect("open");
        assert_eq!(size, 4);
        let keys: Vec<String> = store.list().into_iter().map(|c| c.key).collect();
        assert_eq!(keys, ["deps", "other key"]);
        let other = CacheStore::new(&root(home.path()), "g/p2");
        assert!(other.open("deps").is_none(), "projects never share caches");
        save(&other, "deps", b"y").expect("save");
        let all: Vec<(String, String)> = list_all(&root(home.path())).into_iter().map(|c| (c.project, c.key)).collect();
        assert_eq!(all[0], ("g/p".to_string(), "deps".to_string()));
        assert_eq!(all.len(), 3);
        assert_eq!(store.clear(Some("deps")).expect("clear"), 1);
        assert_eq!(store.clear(Some("deps")).expect("clear"), 0);
        assert_eq!(store.clear(None).expect("clear all"), 1);
        assert_eq!(list_all(&root(home.path())).len(), 1);
    }

    #[test]
    fn a_failed_save_keeps_the_previous_cache_and_no_temp() {
        let home = tempfile::tempdir().expect("tempdir");
        let store = CacheStore::new(&root(home.path()), "g/p");
        save(&store, "k", b"good").expect("save");
        let failed = store.save("k", &mut |out| {
            out.write_all(b"partial")?;
            Err(io::Error::other("docker cp died"))
        });
        assert!(failed.is_err());
        let (mut file, size) = store.open("k").expect("open");
        let mut text = String::new();
        io::Read::read_to_string(&mut file, &mut text).expect("read");
        assert_eq!((text.as_str(), size), ("good", 4));
        let names: Vec<String> = fs::read_dir(store.entry_dir("k"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(durable::TEMP_MARK)), "{names:?}");
    }
}
