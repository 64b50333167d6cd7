//! The repository list behind `/v2/_catalog`, kept between requests. Walking every namespace
//! costs per repository (0.9 s at 100,000); a page should not (issue 9).
//!
//! The list is valid while no repository can have appeared or gone: the store bumps a
//! generation after every write that may add one (a manifest put) and after every prune that
//! may remove one, and a list is kept with the generation read before its walk began, so a
//! write racing with the walk leaves it stale by one generation, never trusted. The storage
//! directory is locked to this process while it serves, but a hand edit is still possible:
//! a list is trusted for `MAX_AGE` at most.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::StoreError;

const MAX_AGE: Duration = Duration::from_secs(10);

struct Listed {
    generation: u64,
    at: Instant,
    names: Arc<Vec<String>>,
}

#[derive(Default)]
pub struct Catalog {
    generation: AtomicU64,
    listed: Mutex<Option<Listed>>,
}

impl Catalog {
    /// Marks the list out of date; call after the write that may change it has completed.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The list, from `walk` unless a list of the current generation is young enough.
    pub fn repositories(
        &self,
        walk: impl FnOnce() -> Result<Vec<String>, StoreError>,
    ) -> Result<Arc<Vec<String>>, StoreError> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(listed) = self.lock().as_ref() {
            if listed.generation == generation && listed.at.elapsed() < MAX_AGE {
                return Ok(Arc::clone(&listed.names));
            }
        }
        let names = Arc::new(walk()?);
        *self.lock() = Some(Listed { generation, at: Instant::now(), names: Arc::clone(&names) });
        Ok(names)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Listed>> {
        self.listed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Bumps the catalog's generation when dropped: on every way out of a prune, errors included.
pub struct ChangesOnDrop<'a>(pub &'a Catalog);

impl Drop for ChangesOnDrop<'_> {
    fn drop(&mut self) {
        self.0.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_reused_until_a_change() {
        let catalog = Catalog::default();
        let walks = std::cell::Cell::new(0);
        let walk = || {
            walks.set(walks.get() + 1);
            Ok(vec![format!("r{}", walks.get())])
        };
        assert_eq!(*catalog.repositories(walk).unwrap(), ["r1"]);
        assert_eq!(*catalog.repositories(walk).unwrap(), ["r1"]);
        assert_eq!(walks.get(), 1);
        catalog.changed();
        assert_eq!(*catalog.repositories(walk).unwrap(), ["r2"]);
        drop(ChangesOnDrop(&catalog));
        assert_eq!(*catalog.repositories(walk).unwrap(), ["r3"]);
    }

    #[test]
    fn a_change_during_the_walk_leaves_the_list_untrusted() {
        let catalog = Catalog::default();
        let first = catalog
            .repositories(|| {
                // A manifest put lands while the walk runs (and the walk missed it).
                catalog.changed();
                Ok(vec!["old".to_string()])
            })
            .unwrap();
        assert_eq!(*first, ["old"]);
        let again = catalog.repositories(|| Ok(vec!["old".to_string(), "new".to_string()])).unwrap();
        assert_eq!(*again, ["old", "new"]);
    }
}
