//! Small files that link repositories to content: written whole to a temp file beside the
//! target, fsynced, renamed over it. A reader sees the old link or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::blobs::sync_dir;
use super::{IoContext, StoreError};

/// Replaces `path` with `contents` atomically, creating parent directories.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).at(parent)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("link");
    let temp = parent.join(format!(".{file_name}.tmp-{}", crate::registry::uploads::new_id()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.at(path)?;
    sync_dir(parent);
    Ok(())
}

/// The contents of a link, or `None` when it does not exist.
pub fn read_link(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(None),
        Err(e) => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Removes a link; true when it existed.
pub fn remove_link(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(false),
        Err(e) => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Names of the regular files in `dir` (not temp files), sorted; empty when `dir` is missing.
pub fn list_links(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Opens a file for reading, `None` when it does not exist.
pub fn open_existing(path: &Path) -> Result<Option<File>, StoreError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_links() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/tag");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(read_link(&p).unwrap().as_deref(), Some("two"));
        assert_eq!(list_links(&dir.path().join("a/b")).unwrap(), vec!["tag"]);
        assert!(remove_link(&p).unwrap());
        assert!(!remove_link(&p).unwrap());
        assert_eq!(read_link(&p).unwrap(), None);
    }
}
