//! Durable files: the one way glci puts bytes on disk so that a crash leaves either the old
//! file or the new one, never half of one. A temp name beside the target, write, fsync,
//! rename, fsync the directory. Storage, upload sessions, TLS, the admin secret, job wiring
//! and the include cache all write through here. The ground floor: knows nothing of what the
//! files mean, and returns plain `io::Error`s for the caller to put in context.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::encoding::hex;

/// What marks the temp files of [`replace`]: `.<file name>.tmp-<id>` beside the target.
pub const TEMP_MARK: &str = ".tmp-";

/// A fresh random id (UUID v4 shape), for sessions and temp file names.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // No entropy source: fall back to time and a counter, still unique per process.
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The temp file [`replace`] writes before renaming it onto `path`: hidden, in the same
/// directory (a rename never crosses filesystems), unique.
pub fn temp_beside(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    parent.join(format!(".{file_name}{TEMP_MARK}{}", new_id()))
}

/// Replaces `path` with `contents` atomically and durably, creating parent directories. A
/// failed write leaves the old file (or none) and no temp file.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let temp = temp_beside(path);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(parent);
    Ok(())
}

/// Creates `path` (which must not exist) with `mode` from the start, so it is never briefly
/// readable by others, and fsyncs it. For secrets and keys; racing creators: one wins.
pub fn create_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// fsyncs a directory so a rename inside it survives a crash. Best effort: some filesystems
/// refuse to open directories for sync, and the data itself is already durable.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ids_are_uuid_v4_shaped_and_distinct() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4', "{a}");
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "{a}");
    }

    #[test]
    fn replace_creates_parents_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/link");
        replace(&path, b"one").unwrap();
        replace(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["link"]);
    }

    #[test]
    fn failed_replace_keeps_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temp was written.
        let path = dir.path().join("busy");
        fs::create_dir_all(path.join("inside")).unwrap();
        assert!(replace(&path, b"x").is_err());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["busy"]);
    }

    #[test]
    fn create_new_sets_the_mode_and_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        create_new(&path, b"s", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(create_new(&path, b"t", 0o600).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"s");
    }
}
