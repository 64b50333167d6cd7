//! The removals `clean` makes (`registry::gc` decides which), each one guarded: a link or blob
//! is moved aside, its age checked there, and it is put back when it was written or claimed at
//! or after the cutoff (`links::remove_if_older`, and the claims in `store.rs`). Also: the
//! filesystem's own clock (the cutoff is taken from it, so mtimes compare exactly), putting back
//! what a killed `clean` left aside, and pruning empty repository directories.

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::inventory::Aside;
use super::layout::{link_aside, GC_ASIDE_LINK};
use super::links::{is_link_temp, remove_if_older, restore_aside, Removal};
use super::{IoContext, Store, StoreError};
use crate::registry::names::{Digest, Name, Tag};

impl Store {
    /// "Now" as the filesystem stamps it (the kernel's coarse clock, not `SystemTime::now`):
    /// the mtime of a probe file created in `tmp/`.
    pub fn filesystem_now(&self) -> Result<SystemTime, StoreError> {
        let path = self.layout().tmp().join(format!("clock-{}", crate::durable::new_id()));
        fs::File::create(&path).at(&path)?;
        let modified = fs::metadata(&path).and_then(|m| m.modified()).at(&path);
        let _ = fs::remove_file(&path);
        modified
    }

    fn remove_link_if_older(&self, path: &Path, cutoff: SystemTime) -> Result<Removal, StoreError> {
        remove_if_older(path, &link_aside(path), cutoff)
    }

    pub fn remove_tag_if_older(&self, name: &Name, tag: &Tag, cutoff: SystemTime) -> Result<Removal, StoreError> {
        self.remove_link_if_older(&self.layout().tag_link(name, tag), cutoff)
    }

    /// The revision link only; `gc` removes the tags, referrer entry and origin first, in the
    /// order `delete_manifest` uses, so a kill never leaves a tag on a missing manifest.
    pub fn remove_revision_if_older(
        &self,
        name: &Name,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<Removal, StoreError> {
        self.remove_link_if_older(&self.layout().manifest_link(name, digest), cutoff)
    }

    pub fn remove_origin_if_older(
        &self,
        name: &Name,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<Removal, StoreError> {
        self.remove_link_if_older(&self.layout().manifest_origin(name, digest), cutoff)
    }

    pub fn remove_referrer_if_older(
        &self,
        name: &Name,
        subject: &Digest,
        referrer: &Digest,
        cutoff: SystemTime,
    ) -> Result<Removal, StoreError> {
        self.remove_link_if_older(&self.layout().referrer_link(name, subject, referrer), cutoff)
    }

    pub fn remove_layer_if_older(
        &self,
        name: &Name,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<Removal, StoreError> {
        self.remove_link_if_older(&self.layout().layer_link(name, digest), cutoff)
    }

    /// Deletes a blob from the content store unless it is younger than `cutoff` (written or
    /// claimed since). Moved aside (beside itself, hidden) while the age is checked.
    pub fn remove_blob_if_older(&self, digest: &Digest, cutoff: SystemTime) -> Result<Removal, StoreError> {
        let layout = self.layout();
        remove_if_older(&layout.blob(digest), &layout.blob_aside(digest), cutoff)
    }

    /// Puts back a file a killed `clean` left aside (a newer file in its place wins).
    pub fn restore_aside(&self, aside: &Aside) -> Result<(), StoreError> {
        restore_aside(&aside.aside, &aside.original)
    }

    /// Marks a `clean` as running (see `recover_interrupted_clean`).
    pub fn begin_clean(&self) -> Result<(), StoreError> {
        let path = self.layout().gc_marker();
        fs::write(&path, b"").at(&path)
    }

    /// Marks the `clean` as finished.
    pub fn end_clean(&self) -> Result<(), StoreError> {
        let path = self.layout().gc_marker();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::Io { path, source: e }),
            _ => Ok(()),
        }
    }

    /// After a `clean` was killed: puts back every file it had moved aside, so nothing it was
    /// still deciding about stays hidden until the next `clean`. Cheap when no clean was
    /// interrupted (one `stat` of the marker). Returns how many files went back.
    pub fn recover_interrupted_clean(&self) -> Result<usize, StoreError> {
        if !self.layout().gc_marker().exists() {
            return Ok(0);
        }
        let mut restored = 0;
        for aside in self.asides()? {
            self.restore_aside(&aside)?;
            restored += 1;
        }
        self.end_clean()?;
        Ok(restored)
    }

    /// Files `clean` moved aside (beside their place, `.gc-` names), in blobs and repositories.
    pub fn asides(&self) -> Result<Vec<Aside>, StoreError> {
        let layout = self.layout();
        let mut found = Vec::new();
        for root in [layout.blobs(), layout.repositories()] {
            for entry in walkdir::WalkDir::new(root).follow_links(false).into_iter().filter_map(Result::ok) {
                if entry.file_type().is_file() && entry.file_name().to_string_lossy().starts_with(GC_ASIDE_LINK) {
                    if let Some(original) = super::Layout::link_of_aside(entry.path()) {
                        found.push(Aside { aside: entry.path().to_path_buf(), original });
                    }
                }
            }
        }
        Ok(found)
    }

    /// Prunes every repository at `project` or below it (all for `None`) that holds no file at
    /// all any more: emptied by this `clean`, or by one killed before it could prune. Link temp
    /// files older than `cutoff` (left by killed writers) are removed on the way and do not
    /// count. A repository with any other file in it is left alone entirely. Bare name
    /// directories (no `_…` directory left) go only when last changed before `cutoff`: a push
    /// may have created one an instant ago and be about to fill it. Returns the names pruned.
    pub fn prune_empty_repositories(
        &self,
        project: Option<&Name>,
        cutoff: std::time::SystemTime,
    ) -> Result<Vec<Name>, StoreError> {
        let _catalog_changed = self.catalog_changes();
        let root = self.layout().repositories();
        let start = project.map(|p| self.layout().repository(p)).unwrap_or_else(|| root.clone());
        let mut roots: Vec<Name> = Vec::new();
        let mut occupied: std::collections::HashSet<Name> = std::collections::HashSet::new();
        for entry in walkdir::WalkDir::new(&start).follow_links(false).into_iter().filter_map(Result::ok) {
            let Ok(rel) = entry.path().strip_prefix(&root) else { continue };
            let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            let Some(split) = parts.iter().position(|p| p.starts_with('_')) else { continue };
            let Ok(name) = parts[..split].join("/").parse::<Name>() else { continue };
            if entry.file_type().is_dir() && split + 1 == parts.len() {
                roots.push(name);
            } else if !entry.file_type().is_dir() {
                if self.remove_stale_link_temp(&entry, cutoff) {
                    continue;
                }
                occupied.insert(name);
            }
        }
        roots.sort();
        roots.dedup();
        roots.retain(|name| !occupied.contains(name));
        for name in &roots {
            self.prune_repository(name)?;
        }
        // A clean killed half way can leave bare name directories with no `_…` directory left
        // in them; they hold nothing, so they go too (deepest first; rmdir keeps anything else).
        let mut bare: Vec<std::path::PathBuf> = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_dir() && e.path() != root)
            .filter(|e| e.metadata().ok().and_then(|m| m.modified().ok()).is_some_and(|t| t <= cutoff))
            .map(|e| e.into_path())
            .collect();
        // Removing one makes its parent young, so the parents are not judged by age: like a
        // pruned repository's, they go when nothing is left in them (`gone/` after its last
        // bare `gone/x`, which a killed clean had left behind: issue 10's "leftovers").
        bare.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in bare {
            if remove_empty_dir(&dir)? {
                self.remove_empty_parents(&dir)?;
            }
        }
        Ok(roots)
    }

    /// Removes `entry` when it is a link's temp file older than `cutoff`: its writer was killed
    /// before the rename (a kill -9 of the server mid-push), and nothing else ever removes it,
    /// so without this its repository could never be pruned. True when it was removed.
    fn remove_stale_link_temp(&self, entry: &walkdir::DirEntry, cutoff: SystemTime) -> bool {
        let stale = entry.file_name().to_str().is_some_and(is_link_temp)
            && entry.metadata().ok().and_then(|m| m.modified().ok()).is_some_and(|t| t < cutoff);
        stale && fs::remove_file(entry.path()).is_ok()
    }

    /// Removes the empty directories of a repository, bottom up, then its empty parents up to
    /// `repositories/`. A directory with anything in it stays (`rmdir` refuses), so a link
    /// written meanwhile is never lost; a writer that created a directory an instant before
    /// this removes it fails that one request with an I/O error, and only for a repository
    /// `clean` is emptying.
    pub fn prune_repository(&self, name: &Name) -> Result<(), StoreError> {
        let dir = self.layout().repository(name);
        let mut dirs: Vec<std::path::PathBuf> = walkdir::WalkDir::new(&dir)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect();
        // Deepest first.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            remove_empty_dir(&d)?;
        }
        self.remove_empty_parents(&dir)
    }

    /// Removes the empty parents of `dir`, bottom up, stopping at `repositories/` or at the
    /// first one with anything in it.
    fn remove_empty_parents(&self, dir: &Path) -> Result<(), StoreError> {
        let stop = self.layout().repositories();
        let mut parent = dir.parent();
        while let Some(p) = parent {
            if p == stop || !p.starts_with(&stop) || !remove_empty_dir(p)? {
                break;
            }
            parent = p.parent();
        }
        Ok(())
    }
}

/// True when the directory was removed (or was already gone).
fn remove_empty_dir(dir: &Path) -> Result<bool, StoreError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            Ok(false)
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::storage::Layout;
    use std::time::Duration;

    fn set_mtime(dir: &Path, at: SystemTime) {
        fs::File::open(dir).unwrap().set_modified(at).unwrap();
    }

    /// A clean killed while pruning left `gone/a` bare (no `_…` directory in it); the next one
    /// prunes `gone/b`, then `gone/a`, and `gone/` itself must go too, although the prune of
    /// `gone/b` has just made it young (issue 10: "leftover" directories after killed cleans).
    #[test]
    fn pruning_a_killed_cleans_bare_directories_removes_their_emptied_parents() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Layout::new(dir.path())).unwrap();
        let repos = store.layout().repositories();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        fs::create_dir_all(repos.join("gone/a")).unwrap();
        fs::create_dir_all(repos.join("gone/b/_manifests/tags")).unwrap();
        fs::create_dir_all(repos.join("gone/b/_layers/sha256")).unwrap();
        fs::create_dir_all(repos.join("keep/c/_manifests/tags")).unwrap();
        fs::write(repos.join("keep/c/_manifests/tags/t"), b"x").unwrap();
        for d in ["gone/a", "gone", "keep/c", "keep"] {
            set_mtime(&repos.join(d), hour_ago);
        }
        let cutoff = SystemTime::now() - Duration::from_secs(1);
        let pruned = store.prune_empty_repositories(Some(&"gone".parse().unwrap()), cutoff).unwrap();
        assert_eq!(pruned, vec!["gone/b".parse::<Name>().unwrap()]);
        assert!(!repos.join("gone").exists(), "gone/ left behind");
        assert!(repos.join("keep/c/_manifests/tags/t").exists());
        // The same with every repository selected, and a bare directory a push made just now
        // (young): that one stays, and so do its parents.
        fs::create_dir_all(repos.join("old/x")).unwrap();
        fs::create_dir_all(repos.join("old/y/_layers")).unwrap();
        fs::create_dir_all(repos.join("new/z")).unwrap();
        set_mtime(&repos.join("old/x"), hour_ago);
        set_mtime(&repos.join("old"), hour_ago);
        store.prune_empty_repositories(None, cutoff).unwrap();
        assert!(!repos.join("old").exists(), "old/ left behind");
        assert!(repos.join("new/z").is_dir(), "a young bare directory was removed");
        assert!(repos.join("keep/c/_manifests/tags/t").exists());
        assert!(repos.is_dir());
    }

    /// A server killed inside `write_atomic` leaves `.<link>.tmp-<id>`; an old one is garbage
    /// and must not keep its emptied repository from being pruned. A young one (a write in
    /// progress) stays, and so does its repository.
    #[test]
    fn stale_link_temp_files_do_not_keep_a_repository_alive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Layout::new(dir.path())).unwrap();
        let repos = store.layout().repositories();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let stale = repos.join("gone/a/_layers/sha256/.abcd.tmp-0123");
        let young = repos.join("busy/b/_manifests/tags/.v1.tmp-4567");
        for file in [&stale, &young] {
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, b"x").unwrap();
        }
        fs::File::options().write(true).open(&stale).unwrap().set_modified(hour_ago).unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(60);
        let pruned = store.prune_empty_repositories(None, cutoff).unwrap();
        assert_eq!(pruned, vec!["gone/a".parse::<Name>().unwrap()]);
        assert!(!repos.join("gone").exists(), "gone/ left behind");
        assert!(young.exists(), "a write in progress lost its temp file");
    }
}
