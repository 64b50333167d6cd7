//! Getting a job's or service's image onto the host: its `pull_policy` tried in order as the
//! runner's pull manager does (`always`, `if-not-present`, `never`; none given:
//! `if-not-present`, glci's default), each pull with `--platform` when `docker: platform` is
//! set, through the registry wiring when it takes the image over. Called by `execute::job`.

use super::{LogSource, Run};
use crate::docker;
use crate::pipeline::model::PullPolicy;
use crate::pipeline::plan::PlannedJob;

/// Makes sure the host has `image` by its `pull_policy`, tried in order as the runner's pull
/// manager does (executors/docker/internal/pull/manager.go; none given: `if-not-present`,
/// glci's default), pulling with `--platform` when `docker: platform` is set. The image's ID
/// when the host had it already (the `docker image inspect` that found it said), `None` when
/// it was pulled.
pub(super) fn ensure_image(
    run: &Run<'_>,
    job: &PlannedJob,
    image: &str,
    platform: Option<&str>,
    policies: &[PullPolicy],
) -> Result<Option<String>, String> {
    const DEFAULT: [PullPolicy; 1] = [PullPolicy::IfNotPresent];
    let policies = if policies.is_empty() { &DEFAULT[..] } else { policies };
    let mut failure = String::new();
    for (i, policy) in policies.iter().enumerate() {
        if i > 0 {
            run.log(
                &job.name,
                LogSource::Glci,
                format!("Attempt #{}: Trying \"{}\" pull policy", i + 1, policy.as_str()),
            );
        }
        let present = match policy {
            PullPolicy::IfNotPresent | PullPolicy::Never => docker::image_id(image).map_err(|e| e.to_string())?,
            PullPolicy::Always => None,
        };
        let result = match (policy, present) {
            (_, Some(id)) => Ok(Some(id)),
            (PullPolicy::Never, None) => Err(format!("{image} is not on this host and the pull policy is `never`")),
            (PullPolicy::IfNotPresent | PullPolicy::Always, None) => pull(run, job, image, platform).map(|()| None),
        };
        match result {
            Ok(id) => return Ok(id),
            Err(e) if policies.len() == 1 => return Err(e),
            Err(e) => {
                run.log(
                    &job.name,
                    LogSource::Glci,
                    format!("WARNING: Failed to pull image with policy \"{}\": {e}", policy.as_str()),
                );
                failure = e;
            }
        }
    }
    let names: Vec<&str> = policies.iter().map(|p| p.as_str()).collect();
    Err(format!("failed to pull image {image} with specified policies [{}]: {failure}", names.join(" ")))
}

fn pull(run: &Run<'_>, job: &PlannedJob, image: &str, platform: Option<&str>) -> Result<(), String> {
    run.log(&job.name, LogSource::Glci, format!("Pulling docker image {image} ..."));
    match run.wiring.pull(job, image, platform) {
        Some(result) => result,
        None => docker::pull_image(image, platform).map_err(|e| format!("pulling {image}: {}", e.stderr.trim())),
    }
}
