//! Files of a job's image that the registry wiring reads before a container starts (its CA
//! bundles, `/etc/buildkit/buildkitd.toml`, a DinD service's `/etc/docker/daemon.json`), read
//! once per image and run (issue 18: each read is a `docker cp`, ~0.1-0.25 s on a loaded
//! 2-core machine, four of them per job). Keyed by the image ID of the created container, so
//! a tag that moves during the run is read again. The reads an image still lacks run at once
//! (one `docker cp` each, side by side), and jobs of one image starting together read it
//! once: the others wait for that read. Docker work through `docker.rs`; made by `cli/run.rs`,
//! used by `wiring` only.
//!
//! An image ID names the image's config, and the config names its layers, so what an ID has
//! at a path never changes: with a keep directory (`$GLCI_HOME/image-files`) the reads outlive
//! the run, and a later run of the same image reads no file with `docker cp` (issue 18: the
//! first job of a run waited ~40 ms for them). At most [`KEPT_IMAGES`] images are kept.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::docker;

/// Images whose files the keep directory holds; the least recently read go first.
const KEPT_IMAGES: usize = 64;

/// A file's contents, `None` when the image has no regular file there.
type Contents = Option<Vec<u8>>;

#[derive(Default)]
pub struct ImageFiles {
    /// (image ID, path) → what the image has there.
    read: Mutex<HashMap<(String, String), Contents>>,
    /// Image ID → the lock its reads are made under (one reader per image at a time).
    reading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Where reads are kept across runs; `None`: this run only.
    keep: Option<PathBuf>,
}

impl ImageFiles {
    /// Reads kept in `dir` across runs (created when first needed).
    pub fn kept_in(dir: PathBuf) -> ImageFiles {
        ImageFiles { keep: Some(dir), ..ImageFiles::default() }
    }

    /// `paths` in `container`'s image (the container created, not started), in order: from this
    /// run's earlier reads of the same image, or read now. `image_id` is the image's ID when
    /// the caller knows it (else one `docker inspect` of the container finds it).
    /// `platform` is the container's (`docker: platform`): under Docker's containerd image store
    /// an image ID names a multi-platform index, whose platforms' files may differ.
    pub fn read_all(
        &self,
        container: &str,
        image_id: Option<&str>,
        platform: Option<&str>,
        paths: &[&str],
    ) -> Result<Vec<Contents>, String> {
        let id = match image_id {
            Some(id) => id.to_string(),
            None => docker::container_image_id(container).map_err(|e| e.to_string())?,
        };
        let image = match platform {
            Some(platform) => format!("{id}@{platform}"),
            None => id,
        };
        let image_lock = lock(&self.reading).entry(image.clone()).or_default().clone();
        let _reading = lock(&image_lock);
        let kept = self.keep.as_deref().and_then(|dir| image_dir(dir, &image));
        let unread: Vec<&str> = {
            let read = lock(&self.read);
            paths.iter().copied().filter(|path| !read.contains_key(&(image.clone(), path.to_string()))).collect()
        };
        // Disk and docker work under the image's lock only; the map's lock (every image's) is
        // taken to insert what was found.
        let mut found: Vec<(&str, Contents)> = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        for path in unread {
            match kept.as_deref().and_then(|kept| read_kept(kept, path)) {
                Some(contents) => found.push((path, contents)),
                None => missing.push(path),
            }
        }
        if let (Some(kept), false) = (&kept, found.is_empty()) {
            // Its folder's mtime says when it was last read, for [`prune`].
            let _ = std::fs::File::open(kept).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
        let fresh: Vec<Result<Contents, String>> = std::thread::scope(|scope| {
            let readers: Vec<_> =
                missing.iter().map(|path| scope.spawn(move || read_regular_file(container, path))).collect();
            readers
                .into_iter()
                .map(|reader| reader.join().unwrap_or_else(|_| Err("reading an image file panicked".into())))
                .collect()
        });
        let mut failure = None;
        for (path, contents) in missing.iter().zip(fresh) {
            match contents {
                Ok(contents) => {
                    if let Some(kept) = &kept {
                        keep(kept, path, &contents);
                    }
                    found.push((path, contents));
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let (Some(dir), Some(kept), false) = (self.keep.as_deref(), &kept, missing.is_empty()) {
            prune(dir, kept);
        }
        let mut read = lock(&self.read);
        for (path, contents) in found {
            read.insert((image.clone(), path.to_string()), contents);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(paths.iter().map(|path| read.get(&(image.clone(), path.to_string())).cloned().flatten()).collect())
    }
}

/// The keep directory's folder for an image ID and platform (`sha256:HEX` → `sha256-HEX`,
/// `sha256:HEX@linux/arm64` → `sha256-HEX@linux_arm64`); `None` for a key that is not of that
/// form, so nothing outside the keep directory is ever named.
fn image_dir(dir: &Path, image: &str) -> Option<PathBuf> {
    let (id, platform) = match image.split_once('@') {
        Some((id, platform)) => (id, Some(platform)),
        None => (image, None),
    };
    let (algorithm, hex) = id.split_once(':')?;
    let plain = |s: &str, also: &[u8]| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || also.contains(&b))
    };
    if !plain(algorithm, &[]) || !plain(hex, &[]) || platform.is_some_and(|p| !plain(p, b"/")) {
        return None;
    }
    let platform = platform.map(|p| format!("@{}", p.replace('/', "_"))).unwrap_or_default();
    Some(dir.join(format!("{algorithm}-{hex}{platform}")))
}

/// A kept file's name: the path's hash (paths hold slashes).
fn kept_name(path: &str) -> String {
    crate::encoding::hex(&Sha256::digest(path.as_bytes()))[..32].to_string()
}

/// What is kept for `path`: the path, then `+` and the contents or `-` for none.
fn encode_kept(path: &str, contents: &Contents) -> Vec<u8> {
    let mut bytes = format!("{path}\n").into_bytes();
    match contents {
        Some(file) => {
            bytes.push(b'+');
            bytes.extend_from_slice(file);
        }
        None => bytes.push(b'-'),
    }
    bytes
}

/// The contents [`encode_kept`] wrote for `path`; `None` when the bytes are for another path or
/// not of that form.
fn decode_kept(path: &str, bytes: &[u8]) -> Option<Contents> {
    let rest = bytes.strip_prefix(path.as_bytes())?.strip_prefix(b"\n")?;
    match rest.split_first()? {
        (b'+', file) => Some(Some(file.to_vec())),
        (b'-', []) => Some(None),
        _ => None,
    }
}

fn read_kept(kept: &Path, path: &str) -> Option<Contents> {
    decode_kept(path, &std::fs::read(kept.join(kept_name(path))).ok()?)
}

/// Only a cache: a home that cannot keep it costs a later run the `docker cp` again.
fn keep(kept: &Path, path: &str, contents: &Contents) {
    let _ = crate::durable::replace(&kept.join(kept_name(path)), &encode_kept(path, contents));
}

/// Keeps the [`KEPT_IMAGES`] most recently read images (`just_read` is one of them).
fn prune(dir: &Path, just_read: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut images: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path() != just_read)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if images.len() < KEPT_IMAGES {
        return;
    }
    images.sort();
    for (_, old) in &images[..images.len() + 1 - KEPT_IMAGES] {
        let _ = std::fs::remove_dir_all(old);
    }
}

/// A poisoned lock still holds a consistent map: entries are inserted whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file of a (created, not yet started) container; `None` when absent or not a regular file.
fn read_regular_file(container: &str, path: &str) -> Result<Contents, String> {
    let read = docker::copy_from(container, path, &mut |input| {
        let mut archive = tar::Archive::new(input);
        let mut entries = archive.entries()?;
        match entries.next() {
            Some(entry) => {
                let mut entry = entry?;
                if entry.header().entry_type() != tar::EntryType::Regular {
                    return Ok(None);
                }
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                Ok(Some(bytes))
            }
            None => Ok(None),
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(read.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_decode_only_for_their_path() {
        let bundle = Some(b"-----BEGIN CERTIFICATE-----\n".to_vec());
        let kept = encode_kept("/etc/ssl/cert.pem", &bundle);
        assert_eq!(decode_kept("/etc/ssl/cert.pem", &kept), Some(bundle));
        assert_eq!(decode_kept("/etc/ssl/cert.pe", &kept), None);
        assert_eq!(decode_kept("/etc/x", &encode_kept("/etc/x", &None)), Some(None));
        assert_eq!(decode_kept("/etc/x", b"/etc/x\n-trailing"), None);
        assert_eq!(decode_kept("/etc/x", b"/etc/x\n"), None, "a torn write is no answer");
        assert_eq!(decode_kept("/etc/x", &encode_kept("/etc/x", &Some(Vec::new()))), Some(Some(Vec::new())));
    }

    #[test]
    fn only_image_ids_name_a_kept_folder() {
        let dir = Path::new("/h/image-files");
        assert_eq!(image_dir(dir, "sha256:0a1b"), Some(dir.join("sha256-0a1b")));
        assert_eq!(image_dir(dir, "sha256:0a1b@linux/arm64/v8"), Some(dir.join("sha256-0a1b@linux_arm64_v8")));
        for bad in ["sha256:../x", "sha256:", "0a1b", "sha256:0A1B", "a/b:c", "sha256:0a@../x", "sha256:0a@"] {
            assert_eq!(image_dir(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn prune_keeps_the_most_recent_images() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(10_000);
        for i in 0..KEPT_IMAGES + 3 {
            let image = dir.path().join(format!("sha256-{i:04}"));
            std::fs::create_dir(&image).unwrap();
            let when = t0 + std::time::Duration::from_secs(i as u64);
            std::fs::File::open(&image).unwrap().set_modified(when).unwrap();
        }
        let just_read = dir.path().join("sha256-0000");
        prune(dir.path(), &just_read);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left.len(), KEPT_IMAGES);
        assert_eq!(left[0], "sha256-0000", "the image just read stays");
        assert_eq!(left[1], format!("sha256-{:04}", 4), "the oldest others went");
    }
}
