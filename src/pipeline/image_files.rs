//! Files of a job's image that the registry wiring reads before a container starts (its CA
//! bundles, `/etc/buildkit/buildkitd.toml`, a DinD service's `/etc/docker/daemon.json`), read
//! once per image and run (issue 18: each read is a `docker cp`, ~0.1-0.25 s on a loaded
//! 2-core machine, four of them per job). Keyed by the image ID of the created container, so
//! a tag that moves during the run is read again. The reads an image still lacks run at once
//! (one `docker cp` each, side by side), and jobs of one image starting together read it
//! once: the others wait for that read. Docker work through `docker.rs`; called by `wiring`
//! only.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use crate::docker;

/// A file's contents, `None` when the image has no regular file there.
type Contents = Option<Vec<u8>>;

#[derive(Default)]
pub struct ImageFiles {
    /// (image ID, path) → what the image has there.
    read: Mutex<HashMap<(String, String), Contents>>,
    /// Image ID → the lock its reads are made under (one reader per image at a time).
    reading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl ImageFiles {
    /// `paths` in `container`'s image (the container created, not started), in order: from this
    /// run's earlier reads of the same image, or read now. `image_id` is the image's ID when
    /// the caller knows it (else one `docker inspect` of the container finds it).
    pub fn read_all(&self, container: &str, image_id: Option<&str>, paths: &[&str]) -> Result<Vec<Contents>, String> {
        let image = match image_id {
            Some(id) => id.to_string(),
            None => docker::container_image_id(container).map_err(|e| e.to_string())?,
        };
        let image_lock = lock(&self.reading).entry(image.clone()).or_default().clone();
        let _reading = lock(&image_lock);
        let missing: Vec<&str> = {
            let read = lock(&self.read);
            paths.iter().copied().filter(|path| !read.contains_key(&(image.clone(), path.to_string()))).collect()
        };
        let fresh: Vec<Result<Contents, String>> = std::thread::scope(|scope| {
            let readers: Vec<_> =
                missing.iter().map(|path| scope.spawn(move || read_regular_file(container, path))).collect();
            readers
                .into_iter()
                .map(|reader| reader.join().unwrap_or_else(|_| Err("reading an image file panicked".into())))
                .collect()
        });
        let mut read = lock(&self.read);
        for (path, contents) in missing.iter().zip(fresh) {
            read.insert((image.clone(), path.to_string()), contents?);
        }
        Ok(paths.iter().map(|path| read.get(&(image.clone(), path.to_string())).cloned().flatten()).collect())
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
