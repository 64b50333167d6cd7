//! Files of a job's image that the registry wiring reads before a container starts (its CA
//! bundles, `/etc/buildkit/buildkitd.toml`, a DinD service's `/etc/docker/daemon.json`), read
//! once per image and run (issue 18: each read is a `docker cp`, ~0.1-0.25 s on a loaded
//! 2-core machine, four of them per job). Keyed by the image ID of the created container, so
//! a tag that moves during the run is read again. Docker work through `docker.rs`; called by
//! `wiring` only.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use crate::docker;

/// A file's contents, `None` when the image has no regular file there.
type Contents = Option<Vec<u8>>;

#[derive(Default)]
pub struct ImageFiles {
    /// (image ID, path) → what the image has there.
    read: Mutex<HashMap<(String, String), Contents>>,
    /// Container → its image ID (one `docker inspect` per container).
    images: Mutex<HashMap<String, String>>,
}

impl ImageFiles {
    /// `path` in `container`'s image (the container created, not started): from this run's
    /// earlier read of the same image, or read now.
    pub fn read(&self, container: &str, path: &str) -> Result<Contents, String> {
        let key = (self.image_of(container)?, path.to_string());
        if let Some(known) = lock(&self.read).get(&key) {
            return Ok(known.clone());
        }
        let contents = read_regular_file(container, path)?;
        lock(&self.read).insert(key, contents.clone());
        Ok(contents)
    }

    fn image_of(&self, container: &str) -> Result<String, String> {
        if let Some(image) = lock(&self.images).get(container) {
            return Ok(image.clone());
        }
        let image = docker::container_image_id(container).map_err(|e| e.to_string())?;
        lock(&self.images).insert(container.to_string(), image.clone());
        Ok(image)
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
