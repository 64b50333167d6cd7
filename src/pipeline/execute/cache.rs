//! A job's `cache:` against its container, as gitlab-runner does it: [`restore`] after the
//! checkout is copied in and before `before_script` (the key, then `fallback_keys`, then
//! `CACHE_FALLBACK_KEY`; `policy: push` skips it), [`save`] after `after_script` as `when` and
//! `policy` allow. Archives stream between `docker cp` and the host store (`cache_store`),
//! never whole in memory. Entries are relative to the project dir; a path outside it or a
//! symlink pointing out of it is refused with a warning naming job and key. As with the
//! runner, cache problems are warnings: they never fail the job. Called by `execute::job`.

use std::fs;
use std::io::{self, BufReader};

use super::archive::ArtifactWriter;
use super::{JobStatus, LogSource, Run};
use crate::docker;
use crate::pipeline::cache::{check_key, files_key, inside_project, link_stays_inside, parse_policy};
use crate::pipeline::cache_store::CacheStore;
use crate::pipeline::glob::{self, Globs};
use crate::pipeline::model::{ArtifactsWhen, Cache, CacheKey, CachePolicy};
use crate::pipeline::plan::PlannedJob;

fn store(run: &Run<'_>) -> CacheStore {
    CacheStore::new(&run.options.cache_root, &run.plan.project_path)
}

fn policy(cache: &Cache) -> CachePolicy {
    parse_policy(&cache.policy).unwrap_or(CachePolicy::PullPush)
}

/// The key a cache is stored under: the expanded string, or the digest of `key: files`.
fn primary_key(run: &Run<'_>, cache: &Cache) -> Result<String, String> {
    let key = match &cache.key {
        CacheKey::Name(name) if name.is_empty() => "default".to_string(),
        CacheKey::Name(name) => name.clone(),
        CacheKey::Files { files, prefix } => {
            let ids: Vec<String> = files.iter().flat_map(|pattern| file_ids(run, pattern)).collect();
            files_key(prefix.as_deref(), &ids)
        }
    };
    check_key(&key)?;
    Ok(key)
}

/// For each project file `pattern` names: the last commit that changed it when it is committed
/// as it is (GitLab's choice), else the SHA-1 of its contents, so a local edit changes the key
/// as the commit of that edit would on GitLab.
fn file_ids(run: &Run<'_>, pattern: &str) -> Vec<String> {
    let dir = &run.plan.project_dir;
    let glob = Globs::new(&[pattern]);
    run.options
        .files
        .iter()
        .filter(|f| glob.matches(f))
        .filter_map(|f| {
            crate::git::last_commit_if_clean(dir, f).or_else(|| {
                let bytes = fs::read(dir.join(f)).ok()?;
                let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &bytes);
                Some(crate::encoding::hex(digest.as_ref()))
            })
        })
        .collect()
}

/// Extracts the first cache found among each cache's key and fallbacks into the project dir.
pub(crate) fn restore(run: &Run<'_>, job: &PlannedJob, container: &str) {
    if job.cache.is_empty() {
        return;
    }
    let log = |line: String| run.log(&job.name, LogSource::Glci, line);
    log("Restoring cache".into());
    let store = store(run);
    let global_fallback = job.variables.get("CACHE_FALLBACK_KEY").filter(|k| !k.is_empty()).map(String::from);
    for cache in &job.cache {
        if policy(cache) == CachePolicy::Push {
            log(format!("Not downloading cache {} due to policy", describe(&cache.key)));
            continue;
        }
        let primary = match primary_key(run, cache) {
            Ok(key) => key,
            Err(why) => {
                log(format!("WARNING: job {}: {why}; this cache is not restored", job.name));
                continue;
            }
        };
        let mut candidates = vec![(primary, false)];
        candidates.extend(cache.fallback_keys.iter().cloned().map(|k| (k, true)));
        candidates.extend(global_fallback.iter().cloned().map(|k| (k, true)));
        let mut restored = false;
        for (key, fallback) in candidates {
            if let Err(why) = check_key(&key) {
                log(format!("WARNING: job {}: fallback {why}; skipped", job.name));
                continue;
            }
            log(format!("Checking cache for {}{key}...", if fallback { "fallback key " } else { "" }));
            let Some((file, size)) = store.open(&key) else {
                log(format!("WARNING: Cache {key} not found"));
                continue;
            };
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let copied = docker::copy_into(container, &run.plan.project_dir_in_job, &mut |out| {
                io::copy(&mut reader, out).map(|_| ())
            });
            match copied {
                Ok(()) => log(format!("Successfully extracted cache {key} ({})", human_size(size))),
                Err(e) => log(format!("WARNING: job {}: extracting cache {key}: {e}", job.name)),
            }
            restored = true;
            break;
        }
        if !restored {
            log("Failed to extract cache: no cache under the key or its fallbacks".into());
        }
    }
}

/// Archives each cache the job's outcome and policy allow into the store.
pub(crate) fn save(run: &Run<'_>, job: &PlannedJob, container: &str, status: JobStatus) {
    let saving: Vec<&Cache> = job
        .cache
        .iter()
        .filter(|c| match c.when {
            ArtifactsWhen::OnSuccess => status == JobStatus::Success,
            ArtifactsWhen::OnFailure => status == JobStatus::Failed,
            ArtifactsWhen::Always => matches!(status, JobStatus::Success | JobStatus::Failed),
        })
        .collect();
    if saving.is_empty() {
        return;
    }
    let log = |line: String| run.log(&job.name, LogSource::Glci, line);
    log(format!("Saving cache for {} job", if status == JobStatus::Success { "successful" } else { "failed" }));
    for cache in saving {
        if policy(cache) == CachePolicy::Pull {
            log(format!("Not uploading cache {} due to policy", describe(&cache.key)));
            continue;
        }
        let key = match primary_key(run, cache) {
            Ok(key) => key,
            Err(why) => {
                log(format!("WARNING: job {}: {why}; this cache is not saved", job.name));
                continue;
            }
        };
        log(format!("Creating cache {key}..."));
        match save_one(run, job, container, cache, &key) {
            Ok(Some((files, bytes, size))) => log(format!(
                "Created cache {key}: {files} file{} ({} of files, archive {})",
                if files == 1 { "" } else { "s" },
                human_size(bytes),
                human_size(size)
            )),
            Ok(None) => log(format!("WARNING: cache {key}: no matching files; nothing saved")),
            Err(why) => log(format!("WARNING: job {}: cache {key} not saved: {why}", job.name)),
        }
    }
}

/// `Some((files, bytes of files, archive size))`, `None` when nothing matched (the previous
/// archive, if any, stays).
fn save_one(
    run: &Run<'_>,
    job: &PlannedJob,
    container: &str,
    cache: &Cache,
    key: &str,
) -> Result<Option<(usize, u64, u64)>, String> {
    let log = |line: String| run.log(&job.name, LogSource::Glci, line);
    let mut paths = Vec::new();
    for path in &cache.paths {
        match inside_project(path) {
            Some(p) => paths.push(p),
            None => log(format!(
                "WARNING: job {}, cache {key}: {path} is outside the project ({}); refused",
                job.name, run.plan.project_dir_in_job
            )),
        }
    }
    let tracked: Option<std::collections::HashSet<String>> = if cache.untracked {
        Some(crate::git::tracked_files(&run.plan.project_dir).unwrap_or_default().into_iter().collect())
    } else {
        None
    };
    let mut sources: Vec<String> = paths.iter().map(|p| glob::literal_prefix(p)).collect();
    if tracked.is_some() {
        sources.push(String::new());
    }
    sources.sort();
    sources.dedup();
    let all = sources.clone();
    sources.retain(|b| !all.iter().any(|o| o != b && (o.is_empty() || b.starts_with(&format!("{o}/")))));
    if sources.is_empty() {
        return Ok(None);
    }
    let project_dir = &run.plan.project_dir_in_job;
    let mut refused = Vec::new();
    let globs = Globs::new(&paths);
    let mut keep = |rel: &str, is_dir: bool, link: Option<&str>| {
        let untracked = || {
            tracked.as_ref().is_some_and(|t| !is_dir && !t.contains(rel) && rel != ".git" && !rel.starts_with(".git/"))
        };
        let wanted = globs.matches_self_or_ancestor(rel) || untracked();
        if !wanted {
            return false;
        }
        match link {
            Some(target) if !link_stays_inside(rel, target, project_dir) => {
                refused.push(format!("{rel} -> {target}"));
                false
            }
            _ => true,
        }
    };
    let mut counts = (0, 0);
    let store = store(run);
    let size = store
        .save(key, &mut |out| {
            let mut writer = ArtifactWriter::new(out, "");
            for source in &sources {
                let in_container =
                    if source.is_empty() { format!("{project_dir}/.") } else { format!("{project_dir}/{source}") };
                docker::copy_from(container, &in_container, &mut |input| writer.add_filtered(input, source, &mut keep))
                    .map_err(io::Error::other)?;
            }
            counts = (writer.files, writer.bytes);
            if writer.files == 0 {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no files"));
            }
            writer.finish().map(|_| ())
        })
        .map(Some)
        .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(None) } else { Err(e.to_string()) })?;
    for link in refused {
        log(format!("WARNING: job {}, cache {key}: symlink {link} points outside the project; refused", job.name));
    }
    Ok(size.map(|size| (counts.0, counts.1, size)))
}

fn describe(key: &CacheKey) -> String {
    match key {
        CacheKey::Name(name) => name.clone(),
        CacheKey::Files { files, .. } => format!("(key: files {})", files.join(", ")),
    }
}

/// `12.3 MiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
