//! `clean` on an S3 bucket: the same plans (`plan.rs`), rules and report as on a directory
//! (`mod.rs`), carried out by `s3::sweep::Doom`, whose deletions are safe against the other
//! instances writing the bucket meanwhile (tombstones, then the age re-checked on the store's
//! clock; README "Several instances on one bucket"). Two cleans at once, from any instances,
//! each delete only what both find old and unreferenced. Nothing is locked, so nothing waits.
//! Last, the multipart uploads killed instances left open are aborted (`s3::multipart`).

use std::time::SystemTime;

use super::{
    begin, dry_run, in_parallel, plan_removals, plan_sweep, remove_repository_links, CleanOptions, CleanReport,
    GcError, Instants, LinkRemover, Progress, RepoPlan, MIN_LEFTOVER_AGE, PROGRESS_EVERY,
};
use crate::registry::backend::UploadSessions;
use crate::registry::names::{Digest, Name, Tag};
use crate::registry::s3::sweep::{Doom, TOMB_WAIT};
use crate::registry::s3::S3Store;
use crate::registry::storage::links::Removal;
use crate::registry::storage::StoreError;

/// Blobs tombstoned, re-checked and deleted together: one listing of `repositories/` each.
const BLOB_BATCH: usize = 256;

impl LinkRemover for Doom<'_> {
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

/// Runs `clean` on `store` and expires `uploads`' leftovers, as `gc::clean` does on a
/// directory. `start` and the cutoff are the store's clock.
pub fn clean_s3(
    store: &S3Store,
    uploads: &dyn UploadSessions,
    options: &CleanOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CleanReport, GcError> {
    let start = store.store_now()?;
    let (at, report) = begin(start, options, progress);
    let inv = store.inventory()?;
    let leftover_age = options.grace.max(MIN_LEFTOVER_AGE);
    let mut report = if options.dry_run {
        dry_run(&inv, options, at, report)?
    } else {
        drop(inv);
        run(store, options, at, report, progress)?
    };
    let expired = uploads.expire(leftover_age, options.dry_run);
    report.uploads_removed = expired.sessions;
    // Multipart uploads no session owns any more: the sessions left after the expiry (a dry
    // run removed none, so those an expiry would keep: written to within `leftover_age`).
    let sessions = if options.dry_run {
        store.upload_sessions(Some(start.checked_sub(leftover_age).unwrap_or(SystemTime::UNIX_EPOCH)))?
    } else {
        store.upload_sessions(None)?
    };
    report.multipart_uploads_aborted = store.abort_orphaned_uploads(&sessions, at.cutoff, start, options.dry_run)?;
    Ok(report)
}

fn run(
    store: &S3Store,
    options: &CleanOptions,
    at: Instants,
    mut report: CleanReport,
    progress: &mut dyn FnMut(Progress),
) -> Result<CleanReport, GcError> {
    let doom = Doom::new(store);
    // Tombstones of a clean killed long enough ago that no writer waits on them any more.
    let stale = at.start.checked_sub(TOMB_WAIT * 2).unwrap_or(SystemTime::UNIX_EPOCH);
    report.repaired += doom.remove_stale_tombs(stale)?;
    let inv = store.inventory()?;
    let removals = plan_removals(&inv, options.project.as_ref(), at.start, at.cutoff);
    drop(inv);
    let total: u64 = removals.iter().map(RepoPlan::len).sum();
    let mut done = 0u64;
    in_parallel(
        &removals,
        |plan| Ok((plan.name.to_string(), plan.len(), remove_repository_links(&doom, plan, at)?)),
        |(name, len, (partial, whole))| {
            report.add(&partial);
            if whole {
                report.repositories_removed.push(name);
            }
            done += len;
            progress(Progress { phase: "removing repositories", done, total });
        },
    )?;
    progress(Progress { phase: "marking", done: 0, total: 0 });
    let inv = store.inventory()?;
    let sweep = plan_sweep(&inv, at.cutoff, &[])?;
    drop(inv);
    let total = sweep.blobs.len() as u64;
    let mut done = 0u64;
    progress(Progress { phase: "deleting blobs", done, total });
    for batch in sweep.blobs.chunks(BLOB_BATCH) {
        let removals = doom.remove_blobs_if_older(batch, at.cutoff)?;
        for ((_, size), removal) in batch.iter().zip(removals) {
            if removal == Removal::Removed {
                report.blobs_removed += 1;
                report.bytes_reclaimed += size;
            }
        }
        done += batch.len() as u64;
        if done % PROGRESS_EVERY == 0 || done == total {
            progress(Progress { phase: "deleting blobs", done, total });
        }
    }
    in_parallel(
        &sweep.dangling_layers,
        |(name, digest)| doom.remove_layer_if_older(name, digest, at.cutoff).map_err(GcError::from),
        |removal| report.repaired += u64::from(removal == Removal::Removed),
    )?;
    report.kept.blobs = sweep.kept_blobs;
    report.kept.bytes = sweep.kept_bytes;
    report.repositories_removed.sort();
    Ok(report)
}
