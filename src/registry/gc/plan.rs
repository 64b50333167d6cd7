//! The pure half of `clean`: given a `storage::Inventory` and two instants, what to remove
//! from each repository ([`plan_removals`]) and which blobs to sweep ([`plan_sweep`]). No I/O;
//! `gc/mod.rs` runs the plans, re-checking every age on disk.
//!
//! Two instants (issue 14 §4): `start`, the filesystem's "now" when the clean began, and
//! `cutoff`, `start` minus the grace window. A repository `clean` is asked to remove loses every
//! tag and manifest written before `start`, whatever its age, as distribution, Harbor and zot
//! delete them at once; what a writer puts there while the clean runs stays. The grace window
//! guards only what no manifest may reference yet: layer links and blobs younger than `cutoff`
//! stay, so an image being pushed right now keeps every blob, and its manifest PUT after the
//! clean still finds them.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::GcError;
use crate::registry::names::{Digest, Name, Tag};
use crate::registry::storage::inventory::{Inventory, ManifestInfo, ManifestRefs, Repository};

/// A manifest to remove from one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRemoval {
    pub digest: Digest,
    /// Its referrer entry lives under this subject.
    pub subject: Option<Digest>,
    pub is_index: bool,
}

/// What to remove from one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPlan {
    pub name: Name,
    pub tags: Vec<Tag>,
    /// Indexes first, then the rest.
    pub manifests: Vec<ManifestRemoval>,
    pub layers: Vec<Digest>,
    /// Origin files and referrer entries whose manifest is gone.
    pub orphan_origins: Vec<Digest>,
    pub orphan_referrers: Vec<(Digest, Digest)>,
    /// The repository is one `clean` removes and no image of it stays (young layer links may:
    /// the directory goes once they are gone too).
    pub whole: bool,
    /// Tags and manifests written since `start`, in a repository being removed.
    pub kept_tags: u64,
    pub kept_manifests: u64,
    /// Layer links younger than the cutoff, in a repository being removed.
    pub kept_layers: u64,
}

impl RepoPlan {
    /// Links it removes (for progress).
    pub(super) fn len(&self) -> u64 {
        (self.tags.len() + self.manifests.len() + self.layers.len()) as u64
    }

    fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && self.manifests.is_empty()
            && self.layers.is_empty()
            && self.orphan_origins.is_empty()
            && self.orphan_referrers.is_empty()
            && !self.whole
            && self.kept_tags == 0
            && self.kept_manifests == 0
            && self.kept_layers == 0
    }
}

fn refs_of<'a>(inv: &'a Inventory, digest: &Digest) -> Option<&'a ManifestRefs> {
    match inv.manifests.get(digest) {
        Some(ManifestInfo::Parsed(refs)) => Some(refs),
        _ => None,
    }
}

/// The manifests of `repo` reachable from `roots` through index children, and every digest
/// they name.
fn closure(inv: &Inventory, repo: &Repository, roots: Vec<Digest>) -> (HashSet<Digest>, HashSet<Digest>) {
    let mut manifests = HashSet::new();
    let mut named = HashSet::new();
    let mut stack = roots;
    while let Some(d) = stack.pop() {
        if !repo.revisions.contains_key(&d) || !manifests.insert(d.clone()) {
            continue;
        }
        if let Some(refs) = refs_of(inv, &d) {
            named.extend(refs.names.iter().cloned());
            stack.extend(refs.children.iter().cloned());
        }
    }
    (manifests, named)
}

/// What `clean` removes from each repository, before any blob is swept. Repositories at
/// `project` (all when `None`) lose every tag and manifest written before `start` (and what a
/// young one reaches through an index stays with it), and every layer link older than
/// `cutoff` that no staying manifest names; every repository loses links older than `cutoff`
/// that point at nothing (a tag on a missing manifest, a revision without its bytes, an origin
/// or referrer entry without its manifest).
pub fn plan_removals(inv: &Inventory, project: Option<&Name>, start: SystemTime, cutoff: SystemTime) -> Vec<RepoPlan> {
    let mut plans = Vec::new();
    for (name, repo) in &inv.repositories {
        let selected = project.is_none_or(|p| crate::registry::names::is_under(name.as_str(), p.as_str()));
        let present = |d: &Digest| repo.revisions.contains_key(d) && inv.blobs.contains_key(d);
        let mut plan = RepoPlan {
            name: name.clone(),
            tags: Vec::new(),
            manifests: Vec::new(),
            layers: Vec::new(),
            orphan_origins: Vec::new(),
            orphan_referrers: Vec::new(),
            whole: false,
            kept_tags: 0,
            kept_manifests: 0,
            kept_layers: 0,
        };
        let removed_manifests: HashSet<Digest>;
        if selected {
            let young_tags: Vec<&Digest> =
                repo.tags.values().filter(|t| t.modified >= start).filter_map(|t| t.target.as_ref()).collect();
            let mut roots: Vec<Digest> = young_tags.into_iter().cloned().collect();
            roots.extend(repo.revisions.iter().filter(|(_, r)| r.modified >= start).map(|(d, _)| d.clone()));
            let (kept_manifests, kept_named) = closure(inv, repo, roots);
            for link in repo.tags.values() {
                if link.modified < start {
                    plan.tags.push(link.tag.clone());
                } else {
                    plan.kept_tags += 1;
                }
            }
            removed_manifests = repo.revisions.keys().filter(|d| !kept_manifests.contains(*d)).cloned().collect();
            plan.kept_manifests = kept_manifests.len() as u64;
            for (digest, link) in &repo.layers {
                if kept_named.contains(digest) {
                    continue;
                }
                if link.modified < cutoff {
                    plan.layers.push(digest.clone());
                } else {
                    plan.kept_layers += 1;
                }
            }
            // Removed: it had an image (or only old links) and keeps none. A repository holding
            // nothing but a push's young layer links was not an image to remove.
            let had_something = !plan.tags.is_empty() || kept_manifests.len() < repo.revisions.len();
            plan.whole = plan.kept_tags == 0 && kept_manifests.is_empty() && (had_something || plan.kept_layers == 0);
        } else {
            for link in repo.tags.values() {
                if link.modified < cutoff && !link.target.as_ref().is_some_and(present) {
                    plan.tags.push(link.tag.clone());
                }
            }
            removed_manifests = repo
                .revisions
                .iter()
                .filter(|(d, r)| r.modified < cutoff && !inv.blobs.contains_key(*d))
                .map(|(d, _)| d.clone())
                .collect();
        }
        for digest in &removed_manifests {
            let refs = refs_of(inv, digest);
            plan.manifests.push(ManifestRemoval {
                digest: digest.clone(),
                subject: refs.and_then(|r| r.subject.clone()),
                is_index: refs.is_some_and(|r| !r.children.is_empty()),
            });
        }
        // Indexes before the manifests they list; then by digest, for a stable order.
        plan.manifests.sort_by_key(|m| (!m.is_index, m.digest.to_string()));
        plan.layers.sort_by_key(Digest::to_string);
        let survives = |d: &Digest| repo.revisions.contains_key(d) && !removed_manifests.contains(d);
        for (digest, file) in &repo.origin_files {
            if file.modified < cutoff && !repo.revisions.contains_key(digest) {
                plan.orphan_origins.push(digest.clone());
            }
        }
        for entry in &repo.referrers {
            // Removed with its manifest (under the subject the manifest names), or an orphan.
            let removed_with_manifest = removed_manifests.contains(&entry.referrer)
                && refs_of(inv, &entry.referrer).is_some_and(|r| r.subject.as_ref() == Some(&entry.subject));
            if entry.modified < cutoff && !survives(&entry.referrer) && !removed_with_manifest {
                plan.orphan_referrers.push((entry.subject.clone(), entry.referrer.clone()));
            }
        }
        if !plan.is_empty() {
            plans.push(plan);
        }
    }
    plans
}

/// The blobs to delete, given the repositories as they are (or as `removals` would leave them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepPlan {
    /// Unmarked and older than the cutoff, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Unmarked but young: spared.
    pub kept_blobs: u64,
    pub kept_bytes: u64,
    /// Layer links (repository, digest) that will point at nothing once `blobs` are gone, or
    /// already do, and are older than the cutoff.
    pub dangling_layers: Vec<(Name, Digest)>,
}

/// Mark and plan the sweep. `removals`: pretend these were applied (a dry run).
pub fn plan_sweep(inv: &Inventory, cutoff: SystemTime, removals: &[RepoPlan]) -> Result<SweepPlan, GcError> {
    let removed: HashMap<&Name, (HashSet<&Digest>, HashSet<&Digest>)> = removals
        .iter()
        .map(|p| (&p.name, (p.manifests.iter().map(|m| &m.digest).collect(), p.layers.iter().collect())))
        .collect();
    let mut marked: HashSet<Digest> = HashSet::new();
    let mut stack: Vec<Digest> = Vec::new();
    for (name, repo) in &inv.repositories {
        let (gone_manifests, gone_layers) = removed.get(name).map(|(m, l)| (Some(m), Some(l))).unwrap_or((None, None));
        for digest in repo.revisions.keys() {
            if gone_manifests.is_some_and(|g| g.contains(digest)) || !inv.blobs.contains_key(digest) {
                continue;
            }
            if let Some(ManifestInfo::Unreadable(reason)) = inv.manifests.get(digest) {
                return Err(GcError::UnreadableManifest {
                    repository: name.to_string(),
                    digest: digest.to_string(),
                    reason: reason.clone(),
                });
            }
            stack.push(digest.clone());
        }
        for (digest, layer) in &repo.layers {
            if layer.modified >= cutoff && !gone_layers.is_some_and(|g| g.contains(digest)) {
                marked.insert(digest.clone());
            }
        }
    }
    // Everything a surviving manifest names, following manifests it names (index children).
    let mut expanded: HashSet<Digest> = HashSet::new();
    while let Some(d) = stack.pop() {
        marked.insert(d.clone());
        if !expanded.insert(d.clone()) {
            continue;
        }
        if let Some(refs) = refs_of(inv, &d) {
            stack.extend(refs.names.iter().filter(|n| !expanded.contains(*n)).cloned());
        }
    }
    let mut plan = SweepPlan::default();
    for (digest, blob) in &inv.blobs {
        if marked.contains(digest) {
            continue;
        }
        if blob.modified < cutoff {
            plan.blobs.push((digest.clone(), blob.size));
        } else {
            plan.kept_blobs += 1;
            plan.kept_bytes += blob.size;
        }
    }
    // Ordered by the hex after the shard prefix: neighbours in the list live in different
    // `blobs/<algo>/<2 hex>/` directories, so parallel removals rarely wait on one directory.
    plan.blobs.sort_by(|(a, _), (b, _)| (a.hex().get(2..), a.hex()).cmp(&(b.hex().get(2..), b.hex())));
    let swept: HashSet<&Digest> = plan.blobs.iter().map(|(d, _)| d).collect();
    for (name, repo) in &inv.repositories {
        let gone_layers = removed.get(name).map(|(_, l)| l);
        for (digest, layer) in &repo.layers {
            let dangling = swept.contains(digest) || !inv.blobs.contains_key(digest);
            if dangling && layer.modified < cutoff && !gone_layers.is_some_and(|g| g.contains(digest)) {
                plan.dangling_layers.push((name.clone(), digest.clone()));
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::storage::inventory::{BlobFile, LayerLink, Revision, TagLink};
    use std::time::{Duration, UNIX_EPOCH};

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const OLD: u64 = 100;
    const CUTOFF: u64 = 5_000;
    const YOUNG: u64 = 10_000;
    /// When the clean starts: after every write of [`inventory`].
    const START: u64 = 20_000;
    /// A write while the clean runs.
    const DURING: u64 = 30_000;

    fn manifest(inv: &mut Inventory, digest: &Digest, blobs: &[&Digest], children: &[&Digest]) {
        let blobs: Vec<Digest> = blobs.iter().map(|d| (*d).clone()).collect();
        let children: Vec<Digest> = children.iter().map(|d| (*d).clone()).collect();
        let names = blobs.iter().chain(&children).cloned().collect();
        inv.manifests.insert(
            digest.clone(),
            ManifestInfo::Parsed(ManifestRefs { media_type: "m".into(), blobs, children, subject: None, names }),
        );
    }

    fn link_manifest(repo: &mut Repository, digest: &Digest, at: u64) {
        repo.revisions.insert(digest.clone(), Revision { media_type: "m".into(), modified: t(at), origin: None });
    }

    fn tag(repo: &mut Repository, name: &str, digest: &Digest, at: u64) {
        repo.tags
            .insert(name.into(), TagLink { tag: name.parse().unwrap(), target: Some(digest.clone()), modified: t(at) });
    }

    fn layer(repo: &mut Repository, digest: &Digest, at: u64) {
        repo.layers.insert(digest.clone(), LayerLink { modified: t(at), origin: None });
    }

    /// `a/old`: an old image (manifest 1 → layer 2, shared 9). `a/new`: an index pushed just now
    /// (3 → child 4 → layer 5 uploaded just now, shared 9). `b/keep`: old image 6 → layer 7, not
    /// selected.
    /// Blob 8: old, unreferenced. Blob f: young, unreferenced (an upload in flight).
    fn inventory() -> Inventory {
        let mut inv = Inventory::default();
        for c in ['1', '2', '3', '4', '5', '6', '7', '8', '9'] {
            inv.blobs.insert(d(c), BlobFile { size: 10, modified: t(OLD) });
        }
        inv.blobs.insert(d('f'), BlobFile { size: 1, modified: t(YOUNG) });
        manifest(&mut inv, &d('1'), &[&d('2'), &d('9')], &[]);
        manifest(&mut inv, &d('3'), &[], &[&d('4')]);
        manifest(&mut inv, &d('4'), &[&d('5'), &d('9')], &[]);
        manifest(&mut inv, &d('6'), &[&d('7')], &[]);
        let mut old = Repository::default();
        link_manifest(&mut old, &d('1'), OLD);
        tag(&mut old, "v1", &d('1'), OLD);
        layer(&mut old, &d('2'), OLD);
        layer(&mut old, &d('9'), OLD);
        let mut new = Repository::default();
        // The child is old (pushed earlier, reused); the index and its tag are young.
        link_manifest(&mut new, &d('4'), OLD);
        link_manifest(&mut new, &d('3'), YOUNG);
        tag(&mut new, "latest", &d('3'), YOUNG);
        tag(&mut new, "stale", &d('3'), OLD);
        layer(&mut new, &d('5'), YOUNG);
        layer(&mut new, &d('9'), OLD);
        let mut keep = Repository::default();
        link_manifest(&mut keep, &d('6'), OLD);
        tag(&mut keep, "1", &d('6'), OLD);
        layer(&mut keep, &d('7'), OLD);
        tag(&mut keep, "dangling", &d('e'), OLD);
        inv.repositories.insert("a/old".parse().unwrap(), old);
        inv.repositories.insert("a/new".parse().unwrap(), new);
        inv.repositories.insert("b/keep".parse().unwrap(), keep);
        inv
    }

    fn names(digests: &[(Digest, u64)]) -> Vec<String> {
        digests.iter().map(|(d, _)| d.to_string()[7..8].to_string()).collect()
    }

    fn tags_of(plan: &RepoPlan) -> Vec<&str> {
        let mut tags: Vec<&str> = plan.tags.iter().map(|t| t.as_str()).collect();
        tags.sort();
        tags
    }

    fn plan<'a>(plans: &'a [RepoPlan], name: &str) -> &'a RepoPlan {
        plans.iter().find(|p| p.name.as_str() == name).unwrap()
    }

    /// Issue 14 §4: `clean --project a` right after a push removes a's images, young or old;
    /// the grace window spares only the young layer link (and so its blob), and b is untouched.
    #[test]
    fn project_clean_removes_every_image_whatever_its_age() {
        let inv = inventory();
        let plans = plan_removals(&inv, Some(&"a".parse().unwrap()), t(START), t(CUTOFF));
        let old = plan(&plans, "a/old");
        assert!(old.whole);
        assert_eq!((old.tags.len(), old.manifests.len(), old.layers.len()), (1, 1, 2));
        let new = plan(&plans, "a/new");
        assert!(new.whole);
        assert_eq!(tags_of(new), vec!["latest", "stale"]);
        // The index before its child.
        let manifests: Vec<(Digest, bool)> = new.manifests.iter().map(|m| (m.digest.clone(), m.is_index)).collect();
        assert_eq!(manifests, vec![(d('3'), true), (d('4'), false)]);
        assert_eq!(new.layers, vec![d('9')]);
        assert_eq!((new.kept_tags, new.kept_manifests, new.kept_layers), (0, 0, 1));
        // b/keep is not selected: only its dangling tag is repaired.
        let keep = plan(&plans, "b/keep");
        assert_eq!(tags_of(keep), vec!["dangling"]);
        assert!(keep.manifests.is_empty() && keep.layers.is_empty() && !keep.whole);

        let sweep = plan_sweep(&inv, t(CUTOFF), &plans).unwrap();
        // Every old blob of a goes (9 was shared by a/old and a/new only), and 8 (unreferenced);
        // 5 stays for its young layer link, f (young, unreferenced) for the grace window.
        assert_eq!(names(&sweep.blobs), vec!["1", "2", "3", "4", "8", "9"]);
        assert_eq!((sweep.kept_blobs, sweep.kept_bytes), (1, 1));
    }

    /// A tag and an index written while the clean runs stay, with the child and layers they reach.
    #[test]
    fn writes_during_the_clean_stay_with_what_they_reach() {
        let mut inv = inventory();
        let new = inv.repositories.get_mut(&"a/new".parse::<Name>().unwrap()).unwrap();
        link_manifest(new, &d('3'), DURING);
        tag(new, "latest", &d('3'), DURING);
        let plans = plan_removals(&inv, Some(&"a".parse().unwrap()), t(START), t(CUTOFF));
        let new = plan(&plans, "a/new");
        assert!(!new.whole);
        assert_eq!(tags_of(new), vec!["stale"]);
        assert!(new.manifests.is_empty() && new.layers.is_empty());
        assert_eq!((new.kept_tags, new.kept_manifests, new.kept_layers), (1, 2, 0));
        let sweep = plan_sweep(&inv, t(CUTOFF), &plans).unwrap();
        assert_eq!(names(&sweep.blobs), vec!["1", "2", "8"]);
    }

    /// A push in flight (layers up, no manifest yet) into a repository being cleaned: its young
    /// layer links stay, and it is not reported as a repository removed (it had no image).
    #[test]
    fn a_push_in_flight_keeps_its_layers_and_is_not_a_removed_repository() {
        let mut inv = inventory();
        let mut pushing = Repository::default();
        layer(&mut pushing, &d('8'), YOUNG);
        layer(&mut pushing, &d('f'), YOUNG);
        inv.repositories.insert("a/pushing".parse().unwrap(), pushing);
        let plans = plan_removals(&inv, Some(&"a".parse().unwrap()), t(START), t(CUTOFF));
        let pushing = plan(&plans, "a/pushing");
        assert!(!pushing.whole && pushing.layers.is_empty());
        assert_eq!(pushing.kept_layers, 2);
        let sweep = plan_sweep(&inv, t(CUTOFF), &plans).unwrap();
        assert!(!names(&sweep.blobs).contains(&"8".to_string()), "an old blob a push just linked was swept");
    }

    #[test]
    fn full_clean_with_zero_grace_leaves_nothing_old() {
        let inv = inventory();
        // A cutoff after everything: all repositories go whole, every blob is swept.
        let plans = plan_removals(&inv, None, t(YOUNG + 1), t(YOUNG + 1));
        assert!(plans.iter().all(|p| p.whole));
        let sweep = plan_sweep(&inv, t(YOUNG + 1), &plans).unwrap();
        assert_eq!(sweep.blobs.len(), inv.blobs.len());
        assert_eq!(sweep.kept_blobs, 0);
    }

    #[test]
    fn young_layer_links_and_unreadable_manifests_stop_deletion() {
        let mut inv = inventory();
        // A layer uploaded (link young) but not yet referenced by a manifest: its blob is old
        // (deduplicated), yet it stays.
        layer(inv.repositories.get_mut(&"b/keep".parse::<Name>().unwrap()).unwrap(), &d('8'), YOUNG);
        let sweep = plan_sweep(&inv, t(CUTOFF), &[]).unwrap();
        assert!(!names(&sweep.blobs).contains(&"8".to_string()));
        inv.manifests.insert(d('6'), ManifestInfo::Unreadable("not JSON".into()));
        assert!(matches!(plan_sweep(&inv, t(CUTOFF), &[]), Err(GcError::UnreadableManifest { .. })));
        // Unless that manifest is being removed anyway.
        let plans = plan_removals(&inv, Some(&"b".parse().unwrap()), t(START), t(CUTOFF));
        assert!(plan_sweep(&inv, t(CUTOFF), &plans).is_ok());
    }
}
