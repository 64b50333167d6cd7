//! Small files that link repositories to content: written whole to a temp file beside the
//! target, fsynced, renamed over it. A reader sees the old link or the new one, never a torn one.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::{IoContext, StoreError};

use crate::durable::TEMP_MARK;

/// True for the name of a `write_atomic` temp file. One older than any write in progress was
/// left by a writer killed before its rename: garbage, which `clean` removes.
pub fn is_link_temp(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.contains(TEMP_MARK) && !file_name.starts_with(super::layout::GC_ASIDE_LINK)
}

/// Replaces `path` with `contents` atomically, creating parent directories
/// (`durable::replace`: its temp file is `.<link>.tmp-<id>`).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    crate::durable::replace(path, contents).at(path)
}

/// Links up to this long are read with one `read(2)` into the stack.
const SHORT_LINK: usize = 512;

/// The contents of a link, or `None` when it does not exist.
///
/// It is on the hot read paths (a manifest GET reads three links, a tags list two per tag), so
/// it costs only `open`, one `read` and `close`. `fs::read` adds a `statx` for its size hint
/// and a second `read` to see EOF (issue 9: 5 → 3 syscalls per link). A link is renamed into
/// place whole (`write_atomic`), and a read of a regular file returns fewer bytes than asked
/// only at its end, so a short read is the whole link; a full buffer reads on to EOF.
pub fn read_link(path: &Path) -> Result<Option<String>, StoreError> {
    use std::io::Read;
    let io_error = |e: io::Error| StoreError::Io { path: path.to_path_buf(), source: e };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let mut buf = [0u8; SHORT_LINK];
    let n = loop {
        match file.read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        }
    };
    let text = if n < SHORT_LINK {
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    } else {
        let mut bytes = buf.to_vec();
        file.read_to_end(&mut bytes).map_err(io_error)?;
        String::from_utf8_lossy(&bytes).trim().to_string()
    };
    Ok(Some(text))
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

/// Claims a link or blob for an online `clean` (`registry::gc`): sets its mtime to now, so the
/// grace window protects it. One `utimensat(2)`, atomic against a concurrent rename; false when
/// the file is not there (then the caller must not rely on it).
pub fn touch(path: &Path) -> Result<bool, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Ok(false);
    };
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
    ];
    // SAFETY: a NUL-terminated path and a two-element timespec array, as utimensat(2) wants.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Ok(false),
        _ => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// The mtime of a file, `None` when it does not exist.
pub fn modified(path: &Path) -> Result<Option<SystemTime>, StoreError> {
    match fs::symlink_metadata(path).and_then(|m| m.modified()) {
        Ok(t) => Ok(Some(t)),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// What [`remove_if_older`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Written or claimed at or after the cutoff: left in place.
    Kept,
    /// Not there (any more).
    Missing,
}

/// Removes `path` unless it was modified at or after `cutoff`, without racing a writer.
///
/// The file is first renamed to `aside` (same filesystem), out of every reader's sight, and its
/// mtime is checked *there*: a claim ([`touch`]) or rewrite that landed before the rename shows
/// as a young mtime and the file is put back (`link(2)`, so a newer file written meanwhile wins);
/// a claim after the rename finds nothing and fails, so its writer does not rely on the file. A
/// kill between the rename and the decision leaves `aside`, which [`restore_aside`] puts back.
pub fn remove_if_older(path: &Path, aside: &Path, cutoff: SystemTime) -> Result<Removal, StoreError> {
    match fs::rename(path, aside) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(Removal::Missing)
        }
        Err(e) => return Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
    let young = match modified(aside) {
        Ok(Some(t)) => t >= cutoff,
        // Cannot tell: keep it.
        Ok(None) | Err(_) => true,
    };
    if young {
        restore_aside(aside, path)?;
        return Ok(Removal::Kept);
    }
    fs::remove_file(aside).at(aside)?;
    Ok(Removal::Removed)
}

/// Puts a file moved aside by [`remove_if_older`] back at `path`, unless a newer one is there.
pub fn restore_aside(aside: &Path, path: &Path) -> Result<(), StoreError> {
    match fs::hard_link(aside, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && !aside.exists() => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The directory went away (pruned): recreate it and put the file back.
            let parent = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(parent).at(parent)?;
            return fs::rename(aside, path).at(path);
        }
        // A filesystem without hard links: rename back (may replace a newer copy of a link).
        Err(_) => return fs::rename(aside, path).at(path),
    }
    match fs::remove_file(aside) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io { path: aside.to_path_buf(), source: e }),
    }
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
        assert!(is_link_temp(".tag.tmp-0a1b") && !is_link_temp("tag") && !is_link_temp(".gc-tag"));
        assert!(remove_link(&p).unwrap());
        assert!(!remove_link(&p).unwrap());
        assert_eq!(read_link(&p).unwrap(), None);
        // Longer than one read's buffer: read on to the end.
        let long = "x".repeat(SHORT_LINK * 3 + 7);
        write_atomic(&p, long.as_bytes()).unwrap();
        assert_eq!(read_link(&p).unwrap(), Some(long));
        write_atomic(&p, &b"y".repeat(SHORT_LINK)).unwrap();
        assert_eq!(read_link(&p).unwrap().map(|t| t.len()), Some(SHORT_LINK));
    }

    #[test]
    fn touch_and_guarded_removal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("link");
        let aside = dir.path().join(".gc-link");
        assert!(!touch(&p).unwrap());
        write_atomic(&p, b"x").unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        let cutoff = SystemTime::now() - std::time::Duration::from_secs(3600);
        // Claimed: young again, so kept, and nothing is left aside.
        assert!(touch(&p).unwrap());
        assert_eq!(remove_if_older(&p, &aside, cutoff).unwrap(), Removal::Kept);
        assert!(p.exists() && !aside.exists());
        File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        assert_eq!(remove_if_older(&p, &aside, cutoff).unwrap(), Removal::Removed);
        assert!(!p.exists() && !aside.exists());
        assert_eq!(remove_if_older(&p, &aside, cutoff).unwrap(), Removal::Missing);
        // A leftover from a killed clean goes back, unless a newer file took its place.
        fs::write(&aside, b"old").unwrap();
        restore_aside(&aside, &p).unwrap();
        assert_eq!(read_link(&p).unwrap().as_deref(), Some("old"));
        fs::write(&aside, b"older").unwrap();
        restore_aside(&aside, &p).unwrap();
        assert_eq!(read_link(&p).unwrap().as_deref(), Some("old"));
        assert!(!aside.exists());
    }
}
