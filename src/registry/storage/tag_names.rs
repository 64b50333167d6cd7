//! The sorted tag names of large repositories, kept between listings, so a page of a tags list
//! costs one `stat` and a binary search instead of reading and sorting the whole directory
//! (issue 9: a page of a 100,000-tag repository took 45 ms, all of it the directory).
//!
//! An entry is valid while the tags directory keeps its identity (device, inode) and mtime:
//! every tag written, moved over or removed changes the directory's mtime, whoever does it.
//! A timestamp has a clock tick's granularity, so a change in the same tick as the read could
//! leave the mtime as it was; a list is therefore kept only when read well after the
//! directory's last change (the "racy" rule git applies to its index).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::links::list_links;
use super::{IoContext, StoreError};
use crate::registry::names::Tag;

/// Smaller directories are read each time: cheap, and they would only take memory here.
const MIN_CACHED: usize = 256;
/// Names kept in all; beyond it the cache starts again empty (about 10 MiB at the limit).
const MAX_CACHED: usize = 300_000;
/// How long after a directory's last change a read of it is trusted to have seen that change.
const SETTLED: Duration = Duration::from_secs(1);

struct Entry {
    identity: (u64, u64),
    modified: SystemTime,
    names: Arc<Vec<String>>,
}

#[derive(Default)]
pub struct TagNames {
    entries: Mutex<HashMap<PathBuf, Entry>>,
}

impl TagNames {
    /// The valid tag names in `dir`, sorted; empty when there is no such directory.
    pub fn sorted(&self, dir: &Path) -> Result<Arc<Vec<String>>, StoreError> {
        let meta = match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => meta,
            Ok(_) => return Ok(Arc::default()),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Ok(Arc::default())
            }
            Err(e) => return Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
        };
        let identity = (meta.dev(), meta.ino());
        let modified = meta.modified().at(dir)?;
        if let Some(entry) = self.lock().get(dir) {
            if entry.identity == identity && entry.modified == modified {
                return Ok(Arc::clone(&entry.names));
            }
        }
        let read_at = SystemTime::now();
        let names: Vec<String> = list_links(dir)?.into_iter().filter(|t| t.parse::<Tag>().is_ok()).collect();
        let names = Arc::new(names);
        let settled = read_at.duration_since(modified).is_ok_and(|age| age > SETTLED);
        if settled && names.len() >= MIN_CACHED {
            let mut entries = self.lock();
            let held: usize = entries.values().map(|e| e.names.len()).sum();
            if held + names.len() > MAX_CACHED {
                entries.clear();
            }
            entries.insert(dir.to_path_buf(), Entry { identity, modified, names: Arc::clone(&names) });
        }
        Ok(names)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags_dir(count: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..count {
            fs::write(dir.path().join(format!("t-{i:04}")), b"x").unwrap();
        }
        // A temp file of an atomic write, and a name no tag can have: never listed.
        fs::write(dir.path().join(".t-0001.tmp-1"), b"x").unwrap();
        fs::write(dir.path().join("-bad"), b"x").unwrap();
        dir
    }

    fn age(dir: &Path, by: Duration) {
        fs::File::open(dir).unwrap().set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn a_settled_large_directory_is_read_once_and_reread_after_any_change() {
        let dir = tags_dir(MIN_CACHED);
        age(dir.path(), Duration::from_secs(10));
        let cache = TagNames::default();
        let first = cache.sorted(dir.path()).unwrap();
        assert_eq!(first.len(), MIN_CACHED);
        assert_eq!(first[0], "t-0000");
        assert!(Arc::ptr_eq(&first, &cache.sorted(dir.path()).unwrap()), "not served from the cache");
        // A new tag changes the directory's mtime: the next listing sees it.
        fs::write(dir.path().join("t-9999"), b"x").unwrap();
        let after_add = cache.sorted(dir.path()).unwrap();
        assert_eq!(after_add.last().map(String::as_str), Some("t-9999"));
        // Changed just now: not settled, so read again every time until it is.
        assert!(!Arc::ptr_eq(&after_add, &cache.sorted(dir.path()).unwrap()));
        fs::remove_file(dir.path().join("t-0000")).unwrap();
        assert_eq!(cache.sorted(dir.path()).unwrap()[0], "t-0001");
    }

    #[test]
    fn a_change_keeping_the_mtime_is_not_missed_when_the_read_was_racy() {
        let dir = tags_dir(MIN_CACHED);
        let cache = TagNames::default();
        // Read right after the directory changed: not kept.
        let first = cache.sorted(dir.path()).unwrap();
        assert!(!Arc::ptr_eq(&first, &cache.sorted(dir.path()).unwrap()));
        // Even a change that restores the old mtime is then seen.
        let modified = fs::metadata(dir.path()).unwrap().modified().unwrap();
        fs::write(dir.path().join("t-9999"), b"x").unwrap();
        fs::File::open(dir.path()).unwrap().set_modified(modified).unwrap();
        assert_eq!(cache.sorted(dir.path()).unwrap().len(), MIN_CACHED + 1);
    }

    #[test]
    fn small_and_missing_directories() {
        let dir = tags_dir(3);
        age(dir.path(), Duration::from_secs(10));
        let cache = TagNames::default();
        let names = cache.sorted(dir.path()).unwrap();
        assert_eq!(*names, ["t-0000", "t-0001", "t-0002"]);
        assert!(!Arc::ptr_eq(&names, &cache.sorted(dir.path()).unwrap()), "small lists are not kept");
        assert!(cache.sorted(&dir.path().join("nope")).unwrap().is_empty());
    }
}
