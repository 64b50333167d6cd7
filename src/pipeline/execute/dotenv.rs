//! `artifacts: reports: dotenv` across jobs: [`collect`] reads a finished job's dotenv files
//! out of its container (`pipeline::dotenv` parses them; a bad file fails the job, as GitLab
//! refuses the upload) and keeps the variables in the run's work dir; [`apply`] gives a job
//! that receives that job's artifacts (`dependencies`, `needs` unless `artifacts: false`) those
//! variables above its job and global ones and below `--env`, with `image:`, `services:` and
//! `environment: url` (`CI_ENVIRONMENT_URL`) expanded again with them. Called by `execute::job`.

use std::borrow::Cow;
use std::fs;
use std::io::Read;
use std::path::PathBuf;

use super::{LogSource, Run};
use crate::docker;
use crate::pipeline::dotenv;
use crate::pipeline::plan::{default_aliases, PlannedJob};
use crate::pipeline::variables;

fn path(run: &Run<'_>, index: usize) -> PathBuf {
    run.options.work_dir.join("dotenv").join(format!("{index}.json"))
}

/// Reads job `index`'s dotenv reports from `container`; a missing file is a warning.
pub(crate) fn collect(run: &Run<'_>, index: usize, container: &str) -> Result<(), String> {
    let job = &run.plan.jobs[index];
    let Some(spec) = &job.artifacts else { return Ok(()) };
    let mut found = Vec::new();
    for file in &spec.dotenv {
        let in_container = format!("{}/{}", run.plan.project_dir_in_job, file.trim_start_matches("./"));
        let bytes = docker::copy_from(container, &in_container, &mut |input| {
            let mut archive = tar::Archive::new(input);
            let mut entries = archive.entries()?;
            let mut bytes = Vec::new();
            if let Some(entry) = entries.next() {
                // One byte over the limit is enough to refuse it.
                entry?.take(dotenv::MAX_SIZE as u64 + 1).read_to_end(&mut bytes)?;
            }
            Ok(bytes)
        })
        .map_err(|e| format!("dotenv report {file}: {e}"))?;
        match bytes {
            None => run.log(&job.name, LogSource::Glci, format!("WARNING: dotenv report {file}: no such file")),
            Some(bytes) => dotenv::parse(file, &bytes, &mut found).map_err(|why| format!("dotenv report {why}"))?,
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    run.log(
        &job.name,
        LogSource::Glci,
        format!(
            "dotenv report: {} variable{} for later jobs ({})",
            found.len(),
            if found.len() == 1 { "" } else { "s" },
            found.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
        ),
    );
    // GitLab's dynamic environment URL: the job's own report completes its `environment: url`.
    if let (Some(template), Some(environment)) = (&job.environment_url_template, &job.environment) {
        let lookup = |name: &str| {
            found
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| job.variables.get(name).map(String::from))
        };
        let url = variables::expand(template, &lookup);
        run.log(
            &job.name,
            LogSource::Glci,
            format!("Environment {}: {url} (environment: url, with the dotenv report)", environment.name),
        );
    }
    let target = path(run, index);
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string(&found).map_err(|e| e.to_string())?;
    fs::write(&target, text).map_err(|e| format!("{}: {e}", target.display()))
}

/// Job `index` with the dotenv variables of the jobs whose artifacts it receives (later jobs
/// win), unless `--env` set the same name.
pub(crate) fn apply<'a>(run: &'a Run<'_>, index: usize) -> Cow<'a, PlannedJob> {
    let job = &run.plan.jobs[index];
    let mut received: Vec<(String, String)> = Vec::new();
    for &from in &job.artifacts_from {
        let Ok(text) = fs::read_to_string(path(run, from)) else { continue };
        let Ok(pairs) = serde_json::from_str::<Vec<(String, String)>>(&text) else { continue };
        received.extend(pairs);
    }
    received.retain(|(name, _)| !run.plan.cli_variables.contains(name));
    if received.is_empty() {
        return Cow::Borrowed(job);
    }
    let mut job = job.clone();
    for (name, value) in &received {
        job.variables.set(name, value.clone());
    }
    let vars = job.variables.clone();
    let lookup = |name: &str| vars.get(name).map(String::from);
    if let (Some(template), Some(image)) = (&job.image_template, job.image.as_mut()) {
        image.name = variables::expand(template, &lookup);
    }
    if let (Some(template), Some(environment)) = (&job.environment_url_template, job.environment.as_mut()) {
        let url = variables::expand(template, &lookup);
        job.variables.set("CI_ENVIRONMENT_URL", url.clone());
        environment.url = Some(url);
    }
    let image_name = job.image.as_ref().map(|i| i.name.clone());
    if let Some(name) = image_name {
        job.variables.set("CI_JOB_IMAGE", name);
    }
    let templates = job.service_templates.clone();
    for (service, template) in job.services.iter_mut().zip(&templates) {
        for (name, value) in &received {
            service.variables.set(name, value.clone());
        }
        let image = variables::expand(template, &lookup);
        if image == service.image {
            continue;
        }
        let stale = default_aliases(&service.image);
        service.aliases.retain(|a| !stale.contains(a));
        for alias in default_aliases(&image) {
            if !service.aliases.contains(&alias) {
                service.aliases.push(alias);
            }
        }
        service.image = image;
    }
    Cow::Owned(job)
}
