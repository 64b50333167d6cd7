//! `clean`: remove repositories (all, or a project's), then mark and sweep the content store
//! (DESIGN §4). The admin API (`api/admin.rs`) and `glci registry clean --storage` both call
//! [`clean`]; the plans are pure functions of a `storage::Inventory`.
//!
//! It runs online, next to pushes and pulls, by three rules:
//! - **Grace window.** Nothing written or claimed after the cutoff (the filesystem's "now" at
//!   the start, minus `grace`, default 1 h) is removed: not a tag, manifest or layer link in a
//!   repository being removed, nor a blob. Writers claim what they rely on (`storage/store.rs`),
//!   and every removal re-checks the age after moving the file out of sight
//!   (`storage/links.rs` `remove_if_older`), so a claim either lands first or fails.
//! - **Mark after removing.** Blobs are marked from a fresh scan taken after the repositories
//!   were removed: every blob any surviving manifest in any repository names (indexes
//!   followed), and every blob a young layer link points to. A surviving manifest we cannot
//!   read stops the sweep: what it references is unknown.
//! - **Order.** Tags, then manifests (indexes before their children; referrer entry and origin
//!   before the revision link), then layer links, then blobs, then links left pointing at
//!   swept blobs. A kill -9 anywhere leaves no tag on a missing manifest and no referenced blob
//!   missing. Files it had moved aside are put back when the store is next opened (a server
//!   start, any `--storage` command: `Store::recover_interrupted_clean`); the next run
//!   finishes the job.
//!
//! Upload sessions (`uploads/`) and blob temp files (`tmp/`) are never touched here; link temp
//! files in repositories that a killed writer left (older than the cutoff) are removed when the
//! repositories are pruned.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::names::{Digest, Name, Tag};
use super::storage::inventory::{Inventory, ManifestInfo, Repository};
use super::storage::links::Removal;
use super::storage::{Store, StoreError, StoreLock};

/// Blobs and links younger than this are never removed (DESIGN §4).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
pub struct CleanOptions {
    /// Remove only the repositories at this path or below it; `None`: all of them.
    pub project: Option<Name>,
    pub grace: Duration,
    /// Report what would go; change nothing.
    pub dry_run: bool,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions { project: None, grace: DEFAULT_GRACE, dry_run: false }
    }
}

/// `glci registry clean --json`: what was (or, with `dry_run`, would be) removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanReport {
    pub dry_run: bool,
    pub project: Option<String>,
    pub grace_seconds: u64,
    /// Repositories left with nothing (sorted).
    pub repositories_removed: Vec<String>,
    pub tags_removed: u64,
    pub manifests_removed: u64,
    pub layer_links_removed: u64,
    pub blobs_removed: u64,
    /// Bytes of the blobs removed.
    pub bytes_reclaimed: u64,
    /// Spared by the grace window.
    pub kept: Kept,
    /// Leftovers repaired: files a killed clean moved aside, dangling links.
    pub repaired: u64,
}

impl CleanReport {
    /// Adds the counts of a part of the run.
    fn add(&mut self, part: &CleanReport) {
        self.tags_removed += part.tags_removed;
        self.manifests_removed += part.manifests_removed;
        self.layer_links_removed += part.layer_links_removed;
        self.blobs_removed += part.blobs_removed;
        self.bytes_reclaimed += part.bytes_reclaimed;
        self.kept.tags += part.kept.tags;
        self.kept.manifests += part.kept.manifests;
        self.kept.blobs += part.kept.blobs;
        self.kept.bytes += part.kept.bytes;
        self.repaired += part.repaired;
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub tags: u64,
    pub manifests: u64,
    pub blobs: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum GcError {
    Store(StoreError),
    /// A manifest that stays cannot be read, so what it references is unknown: no blob is
    /// deleted until it is fixed or deleted.
    UnreadableManifest {
        repository: String,
        digest: String,
        reason: String,
    },
}

impl fmt::Display for GcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcError::Store(e) => write!(f, "{e}"),
            GcError::UnreadableManifest { repository, digest, reason } => write!(
                f,
                "manifest {digest} in {repository} cannot be read ({reason}); no blob was deleted \
                 (delete that manifest, then clean again)"
            ),
        }
    }
}

impl std::error::Error for GcError {}

impl From<StoreError> for GcError {
    fn from(e: StoreError) -> Self {
        GcError::Store(e)
    }
}

/// Where a long run is, for a progress line on a terminal.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

// ---------------------------------------------------------------------------------------------
// Plans (pure)

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
    /// The repository is one `clean` removes and nothing of it is young.
    pub whole: bool,
    pub kept_tags: u64,
    pub kept_manifests: u64,
}

impl RepoPlan {
    /// Links it removes (for progress).
    fn len(&self) -> u64 {
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
    }
}

fn refs_of<'a>(inv: &'a Inventory, digest: &Digest) -> Option<&'a super::storage::inventory::ManifestRefs> {
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
/// `project` (all when `None`) lose every tag, manifest and layer link older than `cutoff`
/// that nothing young keeps; every repository loses old links that point at nothing (a tag
/// on a missing manifest, a revision without its bytes, an origin or referrer entry without
/// its manifest).
pub fn plan_removals(inv: &Inventory, project: Option<&Name>, cutoff: SystemTime) -> Vec<RepoPlan> {
    let mut plans = Vec::new();
    for (name, repo) in &inv.repositories {
        let selected = project.is_none_or(|p| crate::auth::is_under(name.as_str(), p.as_str()));
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
        };
        let removed_manifests: HashSet<Digest>;
        if selected {
            let young_tags: Vec<&Digest> =
                repo.tags.values().filter(|t| t.modified >= cutoff).filter_map(|t| t.target.as_ref()).collect();
            let mut roots: Vec<Digest> = young_tags.into_iter().cloned().collect();
            roots.extend(repo.revisions.iter().filter(|(_, r)| r.modified >= cutoff).map(|(d, _)| d.clone()));
            let (kept_manifests, kept_named) = closure(inv, repo, roots);
            for link in repo.tags.values() {
                if link.modified < cutoff {
                    plan.tags.push(link.tag.clone());
                } else {
                    plan.kept_tags += 1;
                }
            }
            removed_manifests = repo.revisions.keys().filter(|d| !kept_manifests.contains(*d)).cloned().collect();
            plan.kept_manifests = kept_manifests.len() as u64;
            plan.layers = repo
                .layers
                .iter()
                .filter(|(d, l)| l.modified < cutoff && !kept_named.contains(*d))
                .map(|(d, _)| d.clone())
                .collect();
            plan.whole = plan.kept_tags == 0
                && kept_manifests.is_empty()
                && plan.layers.len() == repo.layers.len()
                && repo.origin_files.values().all(|o| o.modified < cutoff)
                && repo.referrers.iter().all(|r| r.modified < cutoff);
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

// ---------------------------------------------------------------------------------------------
// The run

/// Progress is reported every this many items.
const PROGRESS_EVERY: u64 = 512;

/// Runs `clean` on `store` (see the module doc). One at a time per storage directory: a second
/// caller waits for the first to finish.
pub fn clean(
    store: &Store,
    options: &CleanOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CleanReport, GcError> {
    let _lock = StoreLock::acquire(&store.layout().gc_lock_file())?;
    let cutoff = store.filesystem_now()?.checked_sub(options.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = CleanReport {
        dry_run: options.dry_run,
        project: options.project.as_ref().map(Name::to_string),
        grace_seconds: options.grace.as_secs(),
        ..CleanReport::default()
    };
    progress(Progress { phase: "scanning", done: 0, total: 0 });
    let inv = store.inventory()?;
    if options.dry_run {
        let removals = plan_removals(&inv, options.project.as_ref(), cutoff);
        let sweep = plan_sweep(&inv, cutoff, &removals)?;
        for plan in &removals {
            report.tags_removed += plan.tags.len() as u64;
            report.manifests_removed += plan.manifests.len() as u64;
            report.layer_links_removed += plan.layers.len() as u64;
            report.kept.tags += plan.kept_tags;
            report.kept.manifests += plan.kept_manifests;
            if plan.whole {
                report.repositories_removed.push(plan.name.to_string());
            }
        }
        report.repaired = (inv.asides.len() + sweep.dangling_layers.len()) as u64;
        finish_sweep_report(&mut report, &sweep);
        return Ok(report);
    }
    store.begin_clean()?;
    let report = run_clean(store, options, cutoff, report, inv, progress)?;
    store.end_clean()?;
    Ok(report)
}

fn run_clean(
    store: &Store,
    options: &CleanOptions,
    cutoff: SystemTime,
    mut report: CleanReport,
    mut inv: Inventory,
    progress: &mut dyn FnMut(Progress),
) -> Result<CleanReport, GcError> {
    if !inv.asides.is_empty() {
        for aside in &inv.asides {
            store.restore_aside(aside)?;
        }
        report.repaired += inv.asides.len() as u64;
        inv = store.inventory()?;
    }
    let removals = plan_removals(&inv, options.project.as_ref(), cutoff);
    drop(inv);
    let total: u64 = removals.iter().map(RepoPlan::len).sum();
    let mut done = 0u64;
    in_parallel(
        &removals,
        |plan| Ok((plan.name.to_string(), plan.len(), remove_repository_links(store, plan, cutoff)?)),
        |(name, len, (partial, whole))| {
            report.add(&partial);
            if whole {
                report.repositories_removed.push(name);
            }
            done += len;
            progress(Progress { phase: "removing repositories", done, total });
        },
    )?;
    // Repositories left without a file (this run's, or a killed run's) lose their directories,
    // so the catalog no longer lists them.
    store.prune_empty_repositories(options.project.as_ref(), cutoff)?;
    progress(Progress { phase: "marking", done: 0, total: 0 });
    let inv = store.inventory()?;
    let sweep = plan_sweep(&inv, cutoff, &[])?;
    drop(inv);
    let total = sweep.blobs.len() as u64;
    let mut done = 0u64;
    in_parallel(
        &sweep.blobs,
        |(digest, size)| Ok((store.remove_blob_if_older(digest, cutoff)?, *size)),
        |(removal, size)| {
            if removal == Removal::Removed {
                report.blobs_removed += 1;
                report.bytes_reclaimed += size;
            }
            done += 1;
            if done % PROGRESS_EVERY == 0 || done == total {
                progress(Progress { phase: "deleting blobs", done, total });
            }
        },
    )?;
    in_parallel(
        &sweep.dangling_layers,
        |(name, digest)| store.remove_layer_if_older(name, digest, cutoff).map_err(GcError::from),
        |removal| report.repaired += u64::from(removal == Removal::Removed),
    )?;
    report.kept.blobs = sweep.kept_blobs;
    report.kept.bytes = sweep.kept_bytes;
    report.repositories_removed.sort();
    Ok(report)
}

/// At most this many threads remove files at once.
const MAX_WORKERS: usize = 4;
/// Items a worker takes at a time (and results it hands back at once).
const BATCH: usize = 256;

/// Runs `work` on every item on a few threads and folds the results here, a batch at a time.
/// Removals wait on the filesystem (its journal, directory locks) more than on the CPU, so a
/// few in flight at once go faster than one after another. Stops at the first error.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R, GcError> + Sync,
    mut fold: impl FnMut(R),
) -> Result<(), GcError> {
    let workers = std::thread::available_parallelism()
        .map_or(MAX_WORKERS, |n| n.get() * 2)
        .clamp(2, MAX_WORKERS)
        .min(items.len().div_ceil(BATCH));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (results, finished) = std::sync::mpsc::channel::<Result<Vec<R>, GcError>>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (results, next, failed, work) = (results.clone(), &next, &failed, &work);
            scope.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let start = next.fetch_add(BATCH, Ordering::Relaxed);
                    let Some(batch) = items.get(start..(start + BATCH).min(items.len())) else { break };
                    if batch.is_empty() || results.send(batch.iter().map(&work).collect()).is_err() {
                        break;
                    }
                }
            });
        }
        drop(results);
        let mut first_error = None;
        for result in finished {
            match result {
                Ok(batch) => batch.into_iter().for_each(&mut fold),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

fn finish_sweep_report(report: &mut CleanReport, sweep: &SweepPlan) {
    report.blobs_removed = sweep.blobs.len() as u64;
    report.bytes_reclaimed = sweep.blobs.iter().map(|(_, size)| size).sum();
    report.kept.blobs = sweep.kept_blobs;
    report.kept.bytes = sweep.kept_bytes;
    report.repositories_removed.sort();
}

/// Applies one repository's plan in crash-safe order; returns what it did, and true when
/// nothing of the repository was kept (the plan removed it whole and no item turned out young
/// on its final check).
fn remove_repository_links(store: &Store, plan: &RepoPlan, cutoff: SystemTime) -> Result<(CleanReport, bool), GcError> {
    let name = &plan.name;
    let mut done = CleanReport::default();
    let mut all_gone = plan.whole;
    let mut count = |removal: Removal, removed: &mut u64, kept: &mut u64| match removal {
        Removal::Removed => *removed += 1,
        Removal::Kept => {
            all_gone = false;
            *kept += 1;
        }
        Removal::Missing => {}
    };
    for tag in &plan.tags {
        let removal = store.remove_tag_if_older(name, tag, cutoff)?;
        count(removal, &mut done.tags_removed, &mut done.kept.tags);
    }
    for manifest in &plan.manifests {
        if let Some(subject) = &manifest.subject {
            store.remove_referrer_if_older(name, subject, &manifest.digest, cutoff)?;
        }
        store.remove_origin_if_older(name, &manifest.digest, cutoff)?;
        let removal = store.remove_revision_if_older(name, &manifest.digest, cutoff)?;
        count(removal, &mut done.manifests_removed, &mut done.kept.manifests);
    }
    for (subject, referrer) in &plan.orphan_referrers {
        let removal = store.remove_referrer_if_older(name, subject, referrer, cutoff)?;
        done.repaired += u64::from(removal == Removal::Removed);
    }
    for digest in &plan.orphan_origins {
        let removal = store.remove_origin_if_older(name, digest, cutoff)?;
        done.repaired += u64::from(removal == Removal::Removed);
    }
    let mut kept_layers = 0;
    for digest in &plan.layers {
        let removal = store.remove_layer_if_older(name, digest, cutoff)?;
        count(removal, &mut done.layer_links_removed, &mut kept_layers);
    }
    done.kept.tags += plan.kept_tags;
    done.kept.manifests += plan.kept_manifests;
    Ok((done, all_gone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::storage::inventory::{BlobFile, LayerLink, ManifestRefs, Revision, TagLink};
    use std::time::UNIX_EPOCH;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const OLD: u64 = 100;
    const YOUNG: u64 = 10_000;
    const CUTOFF: u64 = 5_000;

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
    /// (3 → child 4 → layer 5, shared 9). `b/keep`: old image 6 → layer 7, not selected.
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
        layer(&mut new, &d('5'), OLD);
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

    #[test]
    fn project_clean_keeps_young_closures_and_other_projects() {
        let inv = inventory();
        let plans = plan_removals(&inv, Some(&"a".parse().unwrap()), t(CUTOFF));
        let old = plans.iter().find(|p| p.name.as_str() == "a/old").unwrap();
        assert!(old.whole);
        assert_eq!((old.tags.len(), old.manifests.len(), old.layers.len()), (1, 1, 2));
        let new = plans.iter().find(|p| p.name.as_str() == "a/new").unwrap();
        assert!(!new.whole);
        // Only the old tag goes; the young index keeps its old child and its layers.
        assert_eq!(new.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(), vec!["stale"]);
        assert!(new.manifests.is_empty() && new.layers.is_empty());
        assert_eq!((new.kept_tags, new.kept_manifests), (1, 2));
        // b/keep is not selected: only its dangling tag is repaired.
        let keep = plans.iter().find(|p| p.name.as_str() == "b/keep").unwrap();
        assert_eq!(keep.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(), vec!["dangling"]);
        assert!(keep.manifests.is_empty() && keep.layers.is_empty());

        let sweep = plan_sweep(&inv, t(CUTOFF), &plans).unwrap();
        // 1 (a/old's manifest), 2 (its layer) and 8 (unreferenced) go; 9 is shared with a/new.
        assert_eq!(names(&sweep.blobs), vec!["1", "2", "8"]);
        assert_eq!((sweep.kept_blobs, sweep.kept_bytes), (1, 1));
    }

    #[test]
    fn full_clean_with_zero_grace_leaves_nothing_old() {
        let inv = inventory();
        // A cutoff after everything: all repositories go whole, every blob is swept.
        let plans = plan_removals(&inv, None, t(YOUNG + 1));
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
        let plans = plan_removals(&inv, Some(&"b".parse().unwrap()), t(CUTOFF));
        assert!(plan_sweep(&inv, t(CUTOFF), &plans).is_ok());
    }
}
