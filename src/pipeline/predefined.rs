//! Pure: the variables GitLab predefines for a pipeline and a job (`CI_*`, `GITLAB_CI`), made
//! from the run's facts (project path, git commit and remote, pipeline id), and the project path
//! rules. Used by `plan`; names and meanings follow GitLab's predefined-variables reference.

use std::path::Path;

use super::model::{Job, Pipeline};
use super::plan::{RunFacts, BUILDS_DIR};
use super::variables::{self, VarSet};

/// The predefined variables of the pipeline (GitLab's names and meanings).
pub fn pipeline_variables(pipeline: &Pipeline, facts: &RunFacts) -> VarSet {
    variables_of_config(&pipeline.file, facts)
}

/// Predefined variables GitLab gives a pipeline only once it exists, or a job only: `include`
/// cannot use them ("Use variables with include"; gitlab-org/gitlab#467540).
const NOT_IN_INCLUDE: [&str; 8] = [
    "CI_PIPELINE_ID",
    "CI_PIPELINE_IID",
    "CI_PIPELINE_URL",
    "CI_PIPELINE_CREATED_AT",
    "CI_REGISTRY_USER",
    "CI_REGISTRY_PASSWORD",
    "CI_JOB_TOKEN",
    "DOCKER_AUTH_CONFIG",
];

/// The variables `include:` (paths, `rules: if`) sees for the pipeline file `config_file`: the
/// predefined ones it may use, then the command line's (`--env-file`, `--env`: the project and
/// pipeline variables of a local run). Never the file's own `variables:`.
pub fn include_variables(config_file: &Path, facts: &RunFacts) -> VarSet {
    let mut v = variables_of_config(config_file, facts);
    for name in NOT_IN_INCLUDE {
        v.remove(name);
    }
    for (name, value) in &facts.cli_variables {
        v.set(name, value.clone());
    }
    v
}

fn variables_of_config(config_file: &Path, facts: &RunFacts) -> VarSet {
    let mut v = VarSet::new();
    let path = facts.project_path.as_str();
    let (namespace, name) = path.rsplit_once('/').unwrap_or(("", path));
    let host = facts.git.remote_url.as_deref().and_then(crate::git::host_from_remote);
    let host = host.unwrap_or_else(|| "gitlab.com".into());
    let server_url = format!("https://{host}");
    let project_url = format!("{server_url}/{path}");
    let sha = facts.git.sha.clone().unwrap_or_else(|| "0".repeat(40));
    let default_branch = facts.git.default_branch.clone().unwrap_or_else(|| "main".into());
    let branch = facts.git.branch.clone();
    let ref_name = branch.clone().unwrap_or_else(|| sha.chars().take(8).collect());
    let config_path = config_file
        .strip_prefix(&facts.project_dir)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| ".gitlab-ci.yml".into());

    v.set("CI", "true");
    v.set("GITLAB_CI", "true");
    v.set("CI_SERVER", "yes");
    v.set("CI_SERVER_NAME", "GitLab");
    v.set("CI_SERVER_HOST", host.clone());
    v.set("CI_SERVER_PROTOCOL", "https");
    v.set("CI_SERVER_URL", server_url.clone());
    v.set("CI_API_V4_URL", format!("{server_url}/api/v4"));
    v.set("CI_BUILDS_DIR", BUILDS_DIR);
    v.set("CI_CONFIG_PATH", config_path);
    v.set("CI_DISPOSABLE_ENVIRONMENT", "true");
    v.set("CI_PROJECT_DIR", format!("{BUILDS_DIR}/{path}"));
    v.set("CI_PROJECT_PATH", path);
    v.set("CI_PROJECT_PATH_SLUG", variables::slug(path));
    v.set("CI_PROJECT_NAME", name);
    v.set("CI_PROJECT_TITLE", name);
    v.set("CI_PROJECT_NAMESPACE", namespace);
    v.set("CI_PROJECT_ROOT_NAMESPACE", namespace.split('/').next().unwrap_or(""));
    v.set("CI_PROJECT_URL", project_url.clone());
    v.set("CI_PROJECT_VISIBILITY", "private");
    v.set("CI_DEFAULT_BRANCH", default_branch);
    v.set("CI_COMMIT_SHA", sha.clone());
    v.set("CI_COMMIT_SHORT_SHA", sha.chars().take(8).collect::<String>());
    v.set("CI_COMMIT_BEFORE_SHA", "0".repeat(40));
    if let Some(branch) = &branch {
        v.set("CI_COMMIT_BRANCH", branch.clone());
    }
    v.set("CI_COMMIT_REF_NAME", ref_name.clone());
    v.set("CI_COMMIT_REF_SLUG", variables::slug(&ref_name));
    v.set("CI_COMMIT_REF_PROTECTED", "false");
    if let Some(title) = &facts.git.title {
        v.set("CI_COMMIT_TITLE", title.clone());
    }
    if let Some(message) = &facts.git.message {
        v.set("CI_COMMIT_MESSAGE", message.clone());
        v.set("CI_COMMIT_DESCRIPTION", message.split_once('\n').map(|(_, d)| d.trim_start()).unwrap_or(""));
    }
    if let Some(timestamp) = &facts.git.timestamp {
        v.set("CI_COMMIT_TIMESTAMP", timestamp.clone());
    }
    if let Some(author) = &facts.git.author {
        v.set("CI_COMMIT_AUTHOR", author.clone());
    }
    v.set("CI_PIPELINE_ID", facts.pipeline_id.to_string());
    v.set("CI_PIPELINE_IID", facts.pipeline_id.to_string());
    v.set("CI_PIPELINE_SOURCE", "push");
    v.set("CI_PIPELINE_URL", format!("{project_url}/-/pipelines/{}", facts.pipeline_id));
    v.set("CI_NODE_TOTAL", "1");
    for (name, value) in &facts.predefined {
        v.set(name, value.clone());
    }
    v
}

/// Job-level predefined variables, on top of the pipeline's.
pub fn job_predefined(pipeline_vars: &VarSet, job: &Job, id: u64, manual: bool) -> VarSet {
    let mut v = pipeline_vars.clone();
    v.set("CI_JOB_NAME", job.name.clone());
    v.set("CI_JOB_NAME_SLUG", variables::slug(&job.name));
    v.set("CI_JOB_STAGE", job.stage.clone());
    v.set("CI_JOB_ID", id.to_string());
    v.set("CI_JOB_URL", format!("{}/-/jobs/{id}", pipeline_vars.get("CI_PROJECT_URL").unwrap_or_default()));
    if manual {
        v.set("CI_JOB_MANUAL", "true");
    }
    if let Some(instance) = &job.instance {
        v.set("CI_NODE_INDEX", instance.index.to_string());
        v.set("CI_NODE_TOTAL", instance.total.to_string());
    }
    v
}

/// The project path out of a directory name when git gives none: lowercase letters, digits,
/// `.`, `_`, `-`.
pub fn project_path_from_dir(dir: &Path) -> String {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "project".into());
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches(['-', '.']).to_string();
    if cleaned.is_empty() {
        "project".into()
    } else {
        cleaned
    }
}

/// Checks a `--project` value: `segment/segment…`, each of letters, digits, `.`, `_`, `-`.
pub fn validate_project_path(path: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && path.split('/').all(|s| {
            !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{path}` is not a project path (group/project: letters, digits, `.`, `_`, `-`)"))
    }
}
