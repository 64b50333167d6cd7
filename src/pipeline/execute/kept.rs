//! The artifacts a user keeps, from the job side: [`keep`] unpacks what an attempt collected
//! (the `paths` archive later jobs receive, and the `reports:` files) into the artifact store
//! (`artifact_store`, `$GLCI_HOME/artifacts/<project>/<pipeline id>/<job>/`) with the job's
//! `expire_in`; [`finish`] says where they are and copies them out to `--artifacts-dir`.
//! Called by `execute::job`; a failure here fails the job, as a failed upload does on GitLab.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use super::archive::{self, ArtifactWriter};
use super::{LogSource, Run};
use crate::docker;
use crate::pipeline::artifact_store::{self, ArtifactStore, Expiry};
use crate::pipeline::glob::Globs;
use crate::pipeline::model::Artifacts;

fn store(run: &Run<'_>) -> ArtifactStore {
    ArtifactStore::new(&run.options.artifacts_root, &run.plan.project_path, run.plan.pipeline_id)
}

/// Copies job `index`'s `reports:` files (globs; a missing one is a warning, as on GitLab) out
/// of its container into the run's reports archive.
pub(crate) fn collect_reports(run: &Run<'_>, index: usize, container: &str) -> Result<(), String> {
    let job = &run.plan.jobs[index];
    let Some(spec) = &job.artifacts else { return Ok(()) };
    let reports = Artifacts { paths: spec.reports.clone(), exclude: Vec::new(), untracked: false, ..spec.clone() };
    let project_dir = &run.plan.project_dir_in_job;
    let path = run.report_path(index);
    let file = fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut writer = ArtifactWriter::new(BufWriter::new(file), project_dir);
    let mut matched = vec![false; spec.reports.len()];
    let globs: Vec<Globs> = spec.reports.iter().map(|pattern| Globs::new(&[pattern])).collect();
    let mut keep = |rel: &str, _: bool, _: Option<&str>| {
        let mut any = false;
        for (glob, hit) in globs.iter().zip(matched.iter_mut()) {
            if glob.matches_self_or_ancestor(rel) {
                *hit = true;
                any = true;
            }
        }
        any
    };
    for source in archive::artifact_sources(&reports) {
        let in_container =
            if source.is_empty() { format!("{project_dir}/.") } else { format!("{project_dir}/{source}") };
        docker::copy_from(container, &in_container, &mut |input| writer.add_filtered(input, &source, &mut keep))
            .map_err(|e| e.to_string())?;
    }
    let files = writer.files;
    writer.finish().and_then(|mut w| w.flush()).map_err(|e| format!("{}: {e}", path.display()))?;
    for (pattern, _) in spec.reports.iter().zip(&matched).filter(|(_, hit)| !**hit) {
        run.log(&job.name, LogSource::Glci, format!("WARNING: {pattern}: no matching files (reports)"));
    }
    if files == 0 {
        let _ = fs::remove_file(&path);
    } else {
        let plural = if files == 1 { "" } else { "s" };
        run.log(&job.name, LogSource::Glci, format!("{files} report file{plural} saved with the artifacts"));
    }
    Ok(())
}

/// Keeps job `index`'s collected artifacts (any of its archives that exist) in the store.
pub(crate) fn keep(run: &Run<'_>, index: usize) -> Result<(), String> {
    let job = &run.plan.jobs[index];
    let Some(spec) = &job.artifacts else { return Ok(()) };
    let archives: Vec<PathBuf> =
        [run.artifact_path(index), run.report_path(index)].into_iter().filter(|p| p.is_file()).collect();
    if archives.is_empty() {
        return Ok(());
    }
    let expiry = artifact_store::expiry(spec.expire_in.as_deref(), std::time::SystemTime::now())
        .map_err(|e| format!("artifacts:expire_in: {e}"))?;
    let mut opened = archives
        .iter()
        .map(|p| fs::File::open(p).map(|f| Box::new(io::BufReader::with_capacity(1 << 20, f)) as Box<dyn Read>));
    let dir = store(run)
        .keep(&job.name, &run.plan.project_dir_in_job, &mut opened, expiry)
        .map_err(|e| format!("keeping the artifacts under {}: {e}", run.options.artifacts_root.display()))?;
    let until = match expiry {
        Expiry::Never => "never expire".to_string(),
        Expiry::At(at) => format!("expire {}", crate::encoding::rfc3339(at)),
    };
    run.log(&job.name, LogSource::Glci, format!("Artifacts kept in {} ({until})", dir.display()));
    Ok(())
}

/// After the job's last attempt: where its artifacts are kept (`None`: it has none), copied to
/// `--artifacts-dir DIR/<job>/` when that was asked for.
pub(crate) fn finish(run: &Run<'_>, index: usize) -> Option<PathBuf> {
    let job = &run.plan.jobs[index];
    let dir = store(run).job_dir(&job.name);
    if !dir.is_dir() {
        return None;
    }
    if let Some(out) = &run.options.artifacts_dir {
        let target = out.join(artifact_store::encode_job(&job.name));
        match artifact_store::copy_tree(&dir, &target) {
            Ok(files) => run.log(
                &job.name,
                LogSource::Glci,
                format!("Artifacts copied to {} ({files} file{})", target.display(), if files == 1 { "" } else { "s" }),
            ),
            Err(e) => run.log(
                &job.name,
                LogSource::Glci,
                format!("WARNING: --artifacts-dir: copying to {}: {e}", target.display()),
            ),
        }
    }
    Some(dir)
}
