//! What the registry holds, computed from a `storage::Inventory` with no I/O: the rows of
//! `glci registry list` and the figures of `glci registry stats`. The report types are the JSON
//! the admin API answers (`api/admin.rs`) and what `--json` prints; README "Managing the
//! registry" documents every field, so change them only by adding fields.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::names::{Digest, Name};
use super::storage::inventory::{Inventory, ManifestInfo, Repository};
use super::storage::Origin;

/// `glci registry list --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReport {
    /// The `--project` given, if any.
    pub project: Option<String>,
    pub images: Vec<Image>,
}

/// One row: a tag, or a manifest no tag, index or subject accounts for (`tag: null`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    pub media_type: String,
    /// Bytes the registry holds for this image: the manifest and, each once, every blob and
    /// child manifest it references (a pull-through image may not have all its layers yet).
    pub size: u64,
    /// `pushed` or `cached` (pulled through).
    pub origin: OriginKind,
    /// For `cached`: the upstream host it came from.
    pub upstream: Option<String>,
    /// RFC 3339 UTC: when the tag was last pushed (or fetched/revalidated upstream).
    pub updated_at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    Pushed,
    Cached,
}

/// `glci registry stats --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Repositories holding at least one manifest.
    pub repositories: u64,
    /// Tags that resolve to a manifest.
    pub tags: u64,
    /// Distinct manifests (by digest) across repositories.
    pub manifests: u64,
    /// Files in the content store (layers, configs and manifests, each digest once).
    pub blobs: u64,
    /// Their total size.
    pub content_bytes: u64,
    /// Space allocated on disk for the whole storage directory.
    pub disk_bytes: u64,
    /// Content some repository holds as pushed.
    pub pushed_bytes: u64,
    /// Content held only as pulled through, total and per upstream host.
    pub cached_bytes: u64,
    pub cached_by_upstream: BTreeMap<String, u64>,
    /// Content no repository links or manifest references: what `clean` reclaims once it is
    /// older than the grace window.
    pub unreferenced_bytes: u64,
    /// What per-repository copies would cost on top: each blob's size times (repositories
    /// holding it − 1).
    pub dedup_saved_bytes: u64,
    /// Upload sessions in progress (or abandoned and not yet expired) and their bytes.
    pub upload_sessions: u64,
    pub upload_bytes: u64,
    /// The filesystem of the storage directory; `null` when it cannot be asked.
    pub filesystem: Option<FilesystemReport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemReport {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// What a manifest points to, for sizes: config and layers, child manifests; for a type we do
/// not model, every digest it names except its subject.
fn size_refs(info: &ManifestInfo) -> Vec<Digest> {
    match info {
        ManifestInfo::Parsed(refs) if refs.blobs.is_empty() && refs.children.is_empty() => {
            refs.names.iter().filter(|d| Some(*d) != refs.subject.as_ref()).cloned().collect()
        }
        ManifestInfo::Parsed(refs) => refs.blobs.iter().chain(&refs.children).cloned().collect(),
        ManifestInfo::Unreadable(_) => Vec::new(),
    }
}

/// Bytes held for a manifest and everything it references, each digest once.
pub fn image_size(inv: &Inventory, digest: &Digest) -> u64 {
    let mut seen = HashSet::new();
    let mut stack = vec![digest.clone()];
    let mut total = 0;
    while let Some(d) = stack.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        if let Some(blob) = inv.blobs.get(&d) {
            total += blob.size;
        }
        if let Some(info) = inv.manifests.get(&d) {
            stack.extend(size_refs(info));
        }
    }
    total
}

fn present(inv: &Inventory, repo: &Repository, digest: &Digest) -> bool {
    repo.revisions.contains_key(digest) && inv.blobs.contains_key(digest)
}

fn origin_fields(origin: Option<&Origin>) -> (OriginKind, Option<String>) {
    match origin {
        Some(o) => (OriginKind::Cached, Some(o.upstream.clone())),
        None => (OriginKind::Pushed, None),
    }
}

/// The rows of `list`: repositories at `project` or below it, sorted by repository, then
/// tags in order, then untagged manifests by digest.
pub fn list(inv: &Inventory, project: Option<&Name>) -> ListReport {
    let mut images = Vec::new();
    for (name, repo) in inv.selected(project) {
        let mut tagged = HashSet::new();
        for link in repo.tags.values() {
            let Some(digest) = link.target.as_ref().filter(|d| present(inv, repo, d)) else { continue };
            tagged.insert(digest.clone());
            let revision = &repo.revisions[digest];
            let (origin, upstream) = origin_fields(revision.origin.as_ref());
            images.push(Image {
                repository: name.to_string(),
                tag: Some(link.tag.to_string()),
                digest: digest.to_string(),
                media_type: revision.media_type.clone(),
                size: image_size(inv, digest),
                origin,
                upstream,
                updated_at: crate::encoding::rfc3339(link.modified),
            });
        }
        // Manifests reached some other way (an index's children, a subject's referrers) are
        // part of the row that reaches them.
        let mut reached: HashSet<&Digest> = HashSet::new();
        for digest in repo.revisions.keys() {
            if let Some(ManifestInfo::Parsed(refs)) = inv.manifests.get(digest) {
                reached.extend(refs.children.iter());
                if refs.subject.is_some() {
                    reached.insert(digest);
                }
            }
        }
        let mut untagged: Vec<(&Digest, _)> = repo
            .revisions
            .iter()
            .filter(|(d, _)| present(inv, repo, d) && !tagged.contains(*d) && !reached.contains(d))
            .collect();
        untagged.sort_by_key(|(d, _)| d.to_string());
        for (digest, revision) in untagged {
            let (origin, upstream) = origin_fields(revision.origin.as_ref());
            images.push(Image {
                repository: name.to_string(),
                tag: None,
                digest: digest.to_string(),
                media_type: revision.media_type.clone(),
                size: image_size(inv, digest),
                origin,
                upstream,
                updated_at: crate::encoding::rfc3339(revision.modified),
            });
        }
    }
    ListReport { project: project.map(Name::to_string), images }
}

/// How one piece of content is held.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Held {
    Pushed,
    /// Only pulled through; the upstream (the first by name when several).
    Cached(String),
}

fn hold(map: &mut HashMap<Digest, Held>, digest: &Digest, how: Held) {
    map.entry(digest.clone()).and_modify(|h| *h = (*h).clone().min(how.clone())).or_insert(how);
}

fn held_as(origin: Option<&Origin>) -> Held {
    match origin {
        Some(o) => Held::Cached(o.upstream.clone()),
        None => Held::Pushed,
    }
}

/// The figures of `stats`.
pub fn stats(inv: &Inventory) -> StatsReport {
    let mut report = StatsReport {
        repositories: 0,
        tags: 0,
        manifests: 0,
        blobs: inv.blobs.len() as u64,
        content_bytes: inv.blobs.values().map(|b| b.size).sum(),
        disk_bytes: inv.disk_bytes,
        pushed_bytes: 0,
        cached_bytes: 0,
        cached_by_upstream: BTreeMap::new(),
        unreferenced_bytes: 0,
        dedup_saved_bytes: 0,
        upload_sessions: inv.uploads.sessions,
        upload_bytes: inv.uploads.bytes,
        filesystem: inv.filesystem.map(|f| FilesystemReport { free_bytes: f.free_bytes, total_bytes: f.total_bytes }),
    };
    let mut manifests: HashSet<&Digest> = HashSet::new();
    // How each digest is held, and by how many repositories.
    let mut held: HashMap<Digest, Held> = HashMap::new();
    let mut holders: HashMap<&Digest, u64> = HashMap::new();
    for repo in inv.repositories.values() {
        let mut here: HashSet<&Digest> = HashSet::new();
        let mut any_manifest = false;
        for (digest, revision) in &repo.revisions {
            if !inv.blobs.contains_key(digest) {
                continue;
            }
            any_manifest = true;
            manifests.insert(digest);
            here.insert(digest);
            hold(&mut held, digest, held_as(revision.origin.as_ref()));
        }
        for (digest, layer) in &repo.layers {
            if inv.blobs.contains_key(digest) {
                here.insert(digest);
                hold(&mut held, digest, held_as(layer.origin.as_ref()));
            }
        }
        report.repositories += u64::from(any_manifest);
        report.tags +=
            repo.tags.values().filter(|t| t.target.as_ref().is_some_and(|d| present(inv, repo, d))).count() as u64;
        for digest in here {
            *holders.entry(digest).or_default() += 1;
        }
    }
    // Content a manifest references without a link of its own is held as that manifest is.
    let mut inherited: Vec<(Digest, Held)> = Vec::new();
    for digest in &manifests {
        if let (Some(how), Some(ManifestInfo::Parsed(refs))) = (held.get(*digest), inv.manifests.get(*digest)) {
            for named in &refs.names {
                if !held.contains_key(named) {
                    inherited.push((named.clone(), how.clone()));
                }
            }
        }
    }
    for (digest, how) in inherited {
        hold(&mut held, &digest, how);
    }
    report.manifests = manifests.len() as u64;
    for (digest, blob) in &inv.blobs {
        match held.get(digest) {
            Some(Held::Pushed) => report.pushed_bytes += blob.size,
            Some(Held::Cached(upstream)) => {
                report.cached_bytes += blob.size;
                *report.cached_by_upstream.entry(upstream.clone()).or_default() += blob.size;
            }
            None => report.unreferenced_bytes += blob.size,
        }
        let n = holders.get(digest).copied().unwrap_or(0);
        report.dedup_saved_bytes += blob.size * n.saturating_sub(1);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::storage::inventory::{BlobFile, LayerLink, ManifestRefs, Revision, TagLink};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Two repositories sharing a layer: `g/p/app` pushed (tag v1 → manifest m), `hub/alpine`
    /// cached (tag 3 → manifest n); one blob nobody references.
    fn inventory() -> Inventory {
        let mut inv = Inventory::default();
        let (m, n, config, layer, shared, junk) = (d('1'), d('2'), d('3'), d('4'), d('5'), d('6'));
        for (digest, size) in [(&m, 100), (&n, 200), (&config, 10), (&layer, 1000), (&shared, 5000), (&junk, 7)] {
            inv.blobs.insert(digest.clone(), BlobFile { size, modified: t(0) });
        }
        let refs = |blobs: Vec<Digest>| {
            ManifestInfo::Parsed(ManifestRefs {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                names: blobs.clone(),
                blobs,
                ..ManifestRefs::default()
            })
        };
        inv.manifests.insert(m.clone(), refs(vec![config.clone(), layer.clone(), shared.clone()]));
        inv.manifests.insert(n.clone(), refs(vec![config.clone(), shared.clone()]));
        let cached = Origin { upstream: "registry-1.docker.io".into(), fetched_at: 5 };
        let repo = |manifest: &Digest, tag: &str, origin: Option<Origin>, layers: Vec<&Digest>| {
            let mut r = Repository::default();
            r.revisions.insert(
                manifest.clone(),
                Revision {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    modified: t(1),
                    origin: origin.clone(),
                },
            );
            r.tags.insert(
                tag.into(),
                TagLink { tag: tag.parse().unwrap(), target: Some(manifest.clone()), modified: t(1_700_000_000) },
            );
            for l in layers {
                r.layers.insert(l.clone(), LayerLink { modified: t(1), origin: origin.clone() });
            }
            r
        };
        inv.repositories.insert("g/p/app".parse().unwrap(), repo(&m, "v1", None, vec![&config, &layer, &shared]));
        inv.repositories.insert("hub/alpine".parse().unwrap(), repo(&n, "3", Some(cached), vec![&config, &shared]));
        inv
    }

    #[test]
    fn list_rows_sizes_and_origins() {
        let inv = inventory();
        let all = list(&inv, None);
        assert_eq!(all.images.len(), 2);
        let app = &all.images[0];
        assert_eq!((app.repository.as_str(), app.tag.as_deref()), ("g/p/app", Some("v1")));
        assert_eq!(app.size, 100 + 10 + 1000 + 5000);
        assert_eq!((app.origin, app.upstream.as_deref()), (OriginKind::Pushed, None));
        assert_eq!(app.updated_at, "2023-11-14T22:13:20Z");
        let alpine = &all.images[1];
        assert_eq!((alpine.origin, alpine.upstream.as_deref()), (OriginKind::Cached, Some("registry-1.docker.io")));
        let scoped = list(&inv, Some(&"g".parse().unwrap()));
        assert_eq!(scoped.images.len(), 1);
        assert_eq!(scoped.project.as_deref(), Some("g"));
        assert!(list(&inv, Some(&"g/p/ap".parse().unwrap())).images.is_empty());
    }

    #[test]
    fn stats_split_pushed_cached_and_dedup() {
        let s = stats(&inventory());
        assert_eq!((s.repositories, s.tags, s.manifests, s.blobs), (2, 2, 2, 6));
        assert_eq!(s.content_bytes, 100 + 200 + 10 + 1000 + 5000 + 7);
        // config and shared are held pushed by g/p/app: pushed wins.
        assert_eq!(s.pushed_bytes, 100 + 10 + 1000 + 5000);
        assert_eq!(s.cached_bytes, 200);
        assert_eq!(s.cached_by_upstream.get("registry-1.docker.io"), Some(&200));
        assert_eq!(s.unreferenced_bytes, 7);
        assert_eq!(s.dedup_saved_bytes, 10 + 5000);
    }
}
