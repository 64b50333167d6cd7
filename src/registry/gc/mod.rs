//! `clean`: remove the images of repositories (all, or a project's), then mark and sweep the
//! content store (DESIGN §4), and reclaim what crashes left (stale upload sessions and temp
//! files). The admin API (`api/admin.rs`) and `glci registry clean --storage` both call
//! [`clean`]; what to remove is planned by the pure functions of `plan.rs`, here it is done.
//! On an S3 bucket, `s3.rs` ([`clean_s3`]) carries out the same plans with the same rules.
//!
//! It runs online, next to pushes and pulls, by four rules:
//! - **Images go whatever their age** (issue 14 §4). In the repositories asked for, every tag
//!   and manifest written before the clean started goes; a write during the clean stays.
//! - **Grace window for what no manifest may reference yet.** Layer links and blobs written or
//!   claimed after the cutoff (the filesystem's "now" at the start, minus `grace`, default 1 h)
//!   are not removed, nor upload sessions and temp files touched since, so an image being
//!   pushed right now survives whole. Writers claim what they rely on (`storage/store.rs`),
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
//! Link temp files in repositories that a killed writer left (older than the cutoff) are
//! removed when the repositories are pruned; upload sessions and blob temp files untouched for
//! the grace window (and at least [`MIN_LEFTOVER_AGE`]) by `Uploads::expire`, which `glci serve`
//! also runs at start.

mod plan;
mod s3;

pub use plan::{plan_removals, plan_sweep, ManifestRemoval, RepoPlan, SweepPlan};
pub use s3::clean_s3;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::names::{Digest, Name, Tag};
use super::storage::inventory::Inventory;
use super::storage::links::Removal;
use super::storage::{Store, StoreError, StoreLock};
use super::uploads::Uploads;

/// Blobs and layer links younger than this are never removed (DESIGN §4).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Upload sessions and temp files are leftovers only once untouched this long, whatever
/// `--grace` says: a client between two chunks of a push is not a crash (`--grace 0` empties
/// the registry without failing a push that is still sending).
pub const MIN_LEFTOVER_AGE: Duration = Duration::from_secs(60);

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
    /// Upload sessions untouched for the grace window (abandoned or crashed pushes).
    #[serde(default)]
    pub uploads_removed: u64,
    /// Blob temp files as old (a write killed before its rename).
    #[serde(default)]
    pub temp_files_removed: u64,
    /// S3 only: open multipart uploads aborted, that no upload session owns any more (an
    /// instance killed mid-chunk leaves one, and its parts take storage until aborted).
    #[serde(default)]
    pub multipart_uploads_aborted: u64,
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
        self.kept.layer_links += part.kept.layer_links;
        self.kept.blobs += part.kept.blobs;
        self.kept.bytes += part.kept.bytes;
        self.repaired += part.repaired;
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Tags and manifests written while the clean ran.
    pub tags: u64,
    pub manifests: u64,
    /// Layer links younger than the grace window in the repositories removed.
    #[serde(default)]
    pub layer_links: u64,
    /// Blobs no manifest references, younger than the grace window, and their bytes.
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
// The run

/// Progress is reported every this many items.
const PROGRESS_EVERY: u64 = 512;

/// When a clean started, and that minus the grace window (both by the filesystem's clock).
#[derive(Clone, Copy, Debug)]
struct Instants {
    start: SystemTime,
    cutoff: SystemTime,
}

/// The instants and the empty report of a clean starting at `start` (by the store's clock).
fn begin(start: SystemTime, options: &CleanOptions, progress: &mut dyn FnMut(Progress)) -> (Instants, CleanReport) {
    let cutoff = start.checked_sub(options.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let report = CleanReport {
        dry_run: options.dry_run,
        project: options.project.as_ref().map(Name::to_string),
        grace_seconds: options.grace.as_secs(),
        ..CleanReport::default()
    };
    progress(Progress { phase: "scanning", done: 0, total: 0 });
    (Instants { start, cutoff }, report)
}

/// Runs `clean` on `store`, and expires `uploads`' leftovers (see the module doc). One at a
/// time per storage directory: a second caller waits for the first to finish.
pub fn clean(
    store: &Store,
    uploads: &Uploads,
    options: &CleanOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CleanReport, GcError> {
    let _lock = StoreLock::acquire(&store.layout().gc_lock_file())?;
    let start = store.filesystem_now()?;
    let (at, report) = begin(start, options, progress);
    let inv = store.inventory()?;
    let leftover_age = options.grace.max(MIN_LEFTOVER_AGE);
    if options.dry_run {
        let mut report = dry_run(&inv, options, at, report)?;
        let expired = uploads.expire(leftover_age, true);
        (report.uploads_removed, report.temp_files_removed) = (expired.sessions, expired.temp_files);
        return Ok(report);
    }
    store.begin_clean()?;
    let mut report = run_clean(store, options, at, report, inv, progress)?;
    store.end_clean()?;
    let expired = uploads.expire(leftover_age, false);
    (report.uploads_removed, report.temp_files_removed) = (expired.sessions, expired.temp_files);
    Ok(report)
}

/// What a clean would remove, from one scan: the plans, as if applied.
fn dry_run(
    inv: &Inventory,
    options: &CleanOptions,
    at: Instants,
    mut report: CleanReport,
) -> Result<CleanReport, GcError> {
    let removals = plan_removals(inv, options.project.as_ref(), at.start, at.cutoff);
    let sweep = plan_sweep(inv, at.cutoff, &removals)?;
    for plan in &removals {
        report.tags_removed += plan.tags.len() as u64;
        report.manifests_removed += plan.manifests.len() as u64;
        report.layer_links_removed += plan.layers.len() as u64;
        report.kept.tags += plan.kept_tags;
        report.kept.manifests += plan.kept_manifests;
        report.kept.layer_links += plan.kept_layers;
        if plan.whole {
            report.repositories_removed.push(plan.name.to_string());
        }
    }
    report.repaired = (inv.asides.len() + sweep.dangling_layers.len()) as u64;
    finish_sweep_report(&mut report, &sweep);
    Ok(report)
}

fn run_clean(
    store: &Store,
    options: &CleanOptions,
    at: Instants,
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
    let cutoff = at.cutoff;
    let removals = plan_removals(&inv, options.project.as_ref(), at.start, cutoff);
    drop(inv);
    let total: u64 = removals.iter().map(RepoPlan::len).sum();
    let mut done = 0u64;
    in_parallel(
        &removals,
        |plan| Ok((plan.name.to_string(), plan.len(), remove_repository_links(store, plan, at)?)),
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

/// The removals of one repository's links, each re-checking the link's age where it is kept:
/// the filesystem's (`storage/sweep.rs`) and S3's (`s3/sweep.rs`).
trait LinkRemover: Sync {
    fn tag(&self, name: &Name, tag: &Tag, before: SystemTime) -> Result<Removal, StoreError>;
    fn referrer(
        &self,
        name: &Name,
        subject: &Digest,
        referrer: &Digest,
        before: SystemTime,
    ) -> Result<Removal, StoreError>;
    fn origin(&self, name: &Name, digest: &Digest, before: SystemTime) -> Result<Removal, StoreError>;
    fn revision(&self, name: &Name, digest: &Digest, before: SystemTime) -> Result<Removal, StoreError>;
    fn layer(&self, name: &Name, digest: &Digest, before: SystemTime) -> Result<Removal, StoreError>;
}

impl LinkRemover for Store {
    fn tag(&self, name: &Name, tag: &Tag, before: SystemTime) -> Result<Removal, StoreError> {
        self.remove_tag_if_older(name, tag, before)
    }
    fn referrer(
        &self,
        name: &Name,
        subject: &Digest,
        referrer: &Digest,
        before: SystemTime,
    ) -> Result<Removal, StoreError> {
        self.remove_referrer_if_older(name, subject, referrer, before)
    }
    fn origin(&self, name: &Name, digest: &Digest, before: SystemTime) -> Result<Removal, StoreError> {
        self.remove_origin_if_older(name, digest, before)
    }
    fn revision(&self, name: &Name, digest: &Digest, before: SystemTime) -> Result<Removal, StoreError> {
        self.remove_revision_if_older(name, digest, before)
    }
    fn layer(&self, name: &Name, digest: &Digest, before: SystemTime) -> Result<Removal, StoreError> {
        self.remove_layer_if_older(name, digest, before)
    }
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

/// Applies one repository's plan in crash-safe order; returns what it did, and true when no
/// image of the repository was kept (the plan removed them all and no tag or manifest turned
/// out written since the start on its final check). Tags and manifests (with their origin and
/// referrer entry) go when written before the start; orphans and layer links when older than
/// the cutoff.
fn remove_repository_links(
    store: &impl LinkRemover,
    plan: &RepoPlan,
    at: Instants,
) -> Result<(CleanReport, bool), GcError> {
    let Instants { start, cutoff } = at;
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
        let removal = store.tag(name, tag, start)?;
        count(removal, &mut done.tags_removed, &mut done.kept.tags);
    }
    for manifest in &plan.manifests {
        if let Some(subject) = &manifest.subject {
            store.referrer(name, subject, &manifest.digest, start)?;
        }
        store.origin(name, &manifest.digest, start)?;
        let removal = store.revision(name, &manifest.digest, start)?;
        count(removal, &mut done.manifests_removed, &mut done.kept.manifests);
    }
    for (subject, referrer) in &plan.orphan_referrers {
        let removal = store.referrer(name, subject, referrer, cutoff)?;
        done.repaired += u64::from(removal == Removal::Removed);
    }
    for digest in &plan.orphan_origins {
        let removal = store.origin(name, digest, cutoff)?;
        done.repaired += u64::from(removal == Removal::Removed);
    }
    // A layer link claimed meanwhile stays (a push relies on it) without keeping an image.
    for digest in &plan.layers {
        match store.layer(name, digest, cutoff)? {
            Removal::Removed => done.layer_links_removed += 1,
            Removal::Kept => done.kept.layer_links += 1,
            Removal::Missing => {}
        }
    }
    done.kept.tags += plan.kept_tags;
    done.kept.manifests += plan.kept_manifests;
    done.kept.layer_links += plan.kept_layers;
    Ok((done, all_gone))
}
