//! How `clean` deletes from a bucket that other instances write at the same time, with no lock
//! and no conditional request: only what S3 (AWS since 2020, SeaweedFS, MinIO, Ceph RGW)
//! guarantees, that every request is atomic and strongly consistent (a read or listing after a
//! completed write sees it). README "Several instances on one bucket" states the model.
//!
//! **Clean side** ([`Doom`]). Before it deletes an object it writes a *tombstone*
//! (`_gc/doomed/<key>/<clean id>`), then checks the object: gone, or written at or after the
//! cutoff (its `LastModified`, the store's clock), and it stays. A blob is checked a second
//! way: after its tombstone, `repositories/` is listed again and a layer link or manifest
//! revision naming it written since the cutoff keeps it. The delete is sent within
//! [`DELETE_DEADLINE`] of the tombstone, or not at all; the tombstone goes last.
//!
//! **Writer side** ([`S3Store::settle`]). After writing or claiming (rewriting) a link, or to rely
//! on a blob, an instance waits while a tombstone is on the key, then checks that the key is
//! there, and writes a link again if a clean took it. Either the writer's PUT comes before the
//! clean's check (the clean sees it young and keeps it, or sees the blob's young link), or it
//! comes after the tombstone and the writer waits for the clean's verdict and repairs.
//! A tombstone older than [`TOMB_WAIT`] is a killed clean's: writers pass it, as no live clean
//! deletes that late after its tombstone; the next clean removes it.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use super::client::{Entry, S3Client};
use super::inventory::{link_key, read_all, LinkKey};
use super::store::{Keys, S3Store};
use crate::durable::new_id;
use crate::registry::names::{Digest, Name, Tag};
use crate::registry::storage::links::Removal;
use crate::registry::storage::StoreError;

/// A clean sends a delete at most this long after writing its tombstone.
pub const DELETE_DEADLINE: Duration = Duration::from_secs(15);
/// A writer waits at most this long for a tombstone to go.
pub const TOMB_WAIT: Duration = Duration::from_secs(45);
/// How often a waiting writer looks again (a remote store has no change notification).
const TOMB_POLL: Duration = Duration::from_millis(25);
/// Times a writer rewrites a link a clean keeps taking before it gives up.
const MAX_REWRITES: usize = 4;

fn gone(key: &str, what: &str) -> StoreError {
    StoreError::Io {
        path: key.into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("{what} removed by a concurrent clean")),
    }
}

/// "Now" by the store's clock: the `LastModified` of a probe object written for it. Ages are
/// compared with the store's own stamps, so the clocks of the hosts running glci do not matter.
pub fn store_now(client: &S3Client, keys: &Keys) -> Result<SystemTime, StoreError> {
    let key = format!("{}{}", keys.clock(), new_id());
    client.put_bytes(&key, b"")?;
    let stamped = modified(client, &key);
    let _ = client.delete(&key);
    stamped?.ok_or_else(|| gone(&key, "the clock probe"))
}

/// When `key` was last written, `None` when it is not there (one LIST, which gives the time in
/// the form the listing parser reads).
pub fn modified(client: &S3Client, key: &str) -> Result<Option<SystemTime>, StoreError> {
    let page = client.list_page(key, None, None, None, Some(1))?;
    Ok(page.keys.iter().find(|e| e.key == key).map(Entry::modified))
}

impl S3Store {
    /// "Now" by the store's clock (see [`store_now`]).
    pub fn store_now(&self) -> Result<SystemTime, StoreError> {
        store_now(self.client(), self.keys())
    }

    pub fn modified(&self, key: &str) -> Result<Option<SystemTime>, StoreError> {
        modified(self.client(), key)
    }

    fn tomb_prefix(&self, key: &str) -> String {
        let rel = key.strip_prefix(self.keys().prefix()).unwrap_or(key);
        format!("{}{rel}/", self.keys().doomed())
    }

    /// Waits while a clean holds a tombstone on `key` (at most [`TOMB_WAIT`]).
    fn wait_untombed(&self, key: &str) -> Result<(), StoreError> {
        let prefix = self.tomb_prefix(key);
        let since = Instant::now();
        while self.client().any_under(&prefix)? && since.elapsed() < TOMB_WAIT {
            std::thread::sleep(TOMB_POLL);
        }
        Ok(())
    }

    /// Makes sure the objects a write relies on survive any clean running now (see the module
    /// doc): each `(key, Some(bytes))` is a link just written or claimed (written again when a
    /// clean took it), each `(key, None)` an object that must be there (an error when it is not).
    pub fn settle(&self, objects: &[(String, Option<&[u8]>)]) -> Result<(), StoreError> {
        // No tombstone at all (the usual case): one LIST, then only the presence checks.
        let any_clean = self.client().any_under(&self.keys().doomed())?;
        for (key, bytes) in objects {
            let mut rewrites = 0;
            loop {
                if any_clean {
                    self.wait_untombed(key)?;
                }
                if self.client().head(key)?.is_some() {
                    break;
                }
                match bytes {
                    Some(bytes) if rewrites < MAX_REWRITES => {
                        rewrites += 1;
                        self.client().put_bytes(key, bytes)?;
                    }
                    _ => return Err(gone(key, "an object this write relies on")),
                }
            }
        }
        Ok(())
    }

    /// Rewrites the link `key` (same content) so that it is young, and settles it with `blob`:
    /// how a writer claims an old link it relies on. False when either is not there.
    pub fn claim(&self, key: &str, blob: &str) -> Result<bool, StoreError> {
        let Some(content) = self.client().get_bytes(key)? else { return Ok(false) };
        if self.client().head(blob)?.is_none() {
            return Ok(false);
        }
        self.client().put_bytes(key, &content)?;
        match self.settle(&[(key.to_string(), Some(&content)), (blob.to_string(), None)]) {
            Ok(()) => Ok(true),
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn origin_key(&self, name: &Name, digest: &Digest) -> String {
        format!("{}origins/{}/{}", self.keys().manifests(name), digest.algorithm().as_str(), digest.hex())
    }
}

/// One clean's deletions, each under a tombstone of its own.
pub struct Doom<'a> {
    store: &'a S3Store,
    id: String,
}

impl<'a> Doom<'a> {
    pub fn new(store: &'a S3Store) -> Doom<'a> {
        Doom { store, id: new_id() }
    }

    fn tomb(&self, key: &str) -> String {
        format!("{}{}", self.store.tomb_prefix(key), self.id)
    }

    /// Deletes `key` unless it is gone or was written at or after `before`.
    pub fn remove_if_older(&self, key: &str, before: SystemTime) -> Result<Removal, StoreError> {
        let tomb = self.tomb(key);
        let client = self.store.client();
        client.put_bytes(&tomb, b"")?;
        let placed = Instant::now();
        let result = (|| {
            let Some(modified) = self.store.modified(key)? else { return Ok(Removal::Missing) };
            if modified >= before || placed.elapsed() > DELETE_DEADLINE {
                return Ok(Removal::Kept);
            }
            client.delete(key)?;
            Ok(Removal::Removed)
        })();
        client.delete(&tomb)?;
        result
    }

    pub fn remove_tag_if_older(&self, name: &Name, tag: &Tag, before: SystemTime) -> Result<Removal, StoreError> {
        self.remove_if_older(&self.store.keys().tag(name, tag), before)
    }

    pub fn remove_revision_if_older(&self, name: &Name, d: &Digest, before: SystemTime) -> Result<Removal, StoreError> {
        self.remove_if_older(&self.store.keys().revision(name, d), before)
    }

    pub fn remove_origin_if_older(&self, name: &Name, d: &Digest, before: SystemTime) -> Result<Removal, StoreError> {
        self.remove_if_older(&self.store.origin_key(name, d), before)
    }

    pub fn remove_referrer_if_older(
        &self,
        name: &Name,
        subject: &Digest,
        referrer: &Digest,
        before: SystemTime,
    ) -> Result<Removal, StoreError> {
        self.remove_if_older(&self.store.keys().referrer(name, subject, referrer), before)
    }

    pub fn remove_layer_if_older(&self, name: &Name, d: &Digest, before: SystemTime) -> Result<Removal, StoreError> {
        self.remove_if_older(&self.store.keys().layer(name, d), before)
    }

    /// Deletes the blobs that are still unreferenced and older than `cutoff` (see the module
    /// doc); one result per blob, in order.
    pub fn remove_blobs_if_older(
        &self,
        blobs: &[(Digest, u64)],
        cutoff: SystemTime,
    ) -> Result<Vec<Removal>, StoreError> {
        let store = self.store;
        let keys: Vec<String> = blobs.iter().map(|(d, _)| store.keys().blob(d)).collect();
        let tombs: Vec<String> = keys.iter().map(|k| self.tomb(k)).collect();
        read_all(&tombs, |tomb| store.client().put_bytes(tomb, b"")).into_iter().collect::<Result<(), _>>()?;
        let placed = Instant::now();
        let result = (|| {
            // Links naming a blob written since the cutoff: a push or a manifest that relies on it.
            let repositories = store.keys().repositories();
            let mut claimed: HashSet<Digest> = HashSet::new();
            for entry in store.client().list_all(&repositories, None)?.keys {
                if entry.modified() < cutoff {
                    continue;
                }
                if let Some(LinkKey::Layer(_, d) | LinkKey::Revision(_, d)) =
                    entry.key.strip_prefix(&repositories).and_then(link_key)
                {
                    claimed.insert(d);
                }
            }
            let pairs: Vec<(&Digest, &String)> = blobs.iter().map(|(d, _)| d).zip(&keys).collect();
            read_all(&pairs, |(digest, key)| {
                if claimed.contains(*digest) {
                    return Ok(Removal::Kept);
                }
                let Some(modified) = store.modified(key)? else { return Ok(Removal::Missing) };
                if modified >= cutoff || placed.elapsed() > DELETE_DEADLINE {
                    return Ok(Removal::Kept);
                }
                store.client().delete(key)?;
                Ok(Removal::Removed)
            })
            .into_iter()
            .collect::<Result<Vec<Removal>, StoreError>>()
        })();
        read_all(&tombs, |tomb| store.client().delete(tomb)).into_iter().collect::<Result<(), _>>()?;
        result
    }

    /// Removes tombstones killed cleans left (written before `before`).
    pub fn remove_stale_tombs(&self, before: SystemTime) -> Result<u64, StoreError> {
        let mut removed = 0;
        for entry in self.store.client().list_all(&self.store.keys().doomed(), None)?.keys {
            if entry.modified() < before {
                self.store.client().delete(&entry.key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
