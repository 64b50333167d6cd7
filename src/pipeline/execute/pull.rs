//! Getting a job's or service's image onto the host: its `pull_policy` tried in order as the
//! runner's pull manager does (`always`, `if-not-present`, `never`; none given:
//! `if-not-present`, glci's default), each pull with `--platform` when `docker: platform` is
//! set, through the registry wiring when it takes the image over. Called by `execute::job`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{LogSource, Run};
use crate::docker;
use crate::pipeline::model::PullPolicy;
use crate::pipeline::plan::PlannedJob;

/// The image IDs `docker image inspect` found on the host during a run (and its child
/// pipelines), by image name. A tag on the host moves during a run only by glci's own pulls
/// (jobs never get the host's Docker socket), and a pull forgets the name: so a pipeline's
/// later jobs of one image skip the inspect (issue 18: ~15 ms on each job's critical path).
#[derive(Default)]
pub(crate) struct FoundImages(Mutex<HashMap<String, String>>);

impl FoundImages {
    fn id(&self, image: &str) -> Result<Option<String>, String> {
        if let Some(id) = self.lock().get(image) {
            return Ok(Some(id.clone()));
        }
        let found = docker::image_id(image).map_err(|e| e.to_string())?;
        if let Some(id) = &found {
            self.lock().insert(image.to_string(), id.clone());
        }
        Ok(found)
    }

    fn forget(&self, image: &str) {
        self.lock().remove(image);
    }

    /// A poisoned lock still holds a consistent map: entries are inserted whole.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

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
            PullPolicy::IfNotPresent | PullPolicy::Never => run.found_images.id(image)?,
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
    run.found_images.forget(image);
    match run.wiring.pull(job, image, platform) {
        Some(result) => result,
        None => docker::pull_image(image, platform).map_err(|e| format!("pulling {image}: {}", e.stderr.trim())),
    }
}
