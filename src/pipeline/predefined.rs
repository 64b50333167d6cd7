//! Pure: the variables GitLab predefines for a pipeline and a job (`CI_*`, `GITLAB_CI`), made
//! from the run's facts (project path, git commit and remote, pipeline id), and the project path
//! rules. Used by `plan`; names and meanings follow GitLab's predefined-variables reference.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::facts::{RunFacts, BUILDS_DIR, DEFAULT_TIMEOUT};
use super::model::{Job, Pipeline};
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
    // A tag pipeline when HEAD is at a tag (or `--tag`): the ref is the tag, no branch.
    let tag = facts.git.tag.clone();
    let branch = if tag.is_some() { None } else { facts.git.branch.clone() };
    let ref_name = tag.clone().or_else(|| branch.clone()).unwrap_or_else(|| sha.chars().take(8).collect());
    // GitLab protects the default branch of a new project; nothing else by default.
    let protected = branch.as_deref() == Some(default_branch.as_str());
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
    v.set("CI_API_GRAPHQL_URL", format!("{server_url}/api/graphql"));
    v.set("CI_SERVER_FQDN", host.clone());
    v.set("CI_SERVER_PORT", "443");
    v.set("CI_SERVER_SHELL_SSH_HOST", host.clone());
    let ssh_port = facts.git.remote_url.as_deref().and_then(crate::git::ssh_port_from_remote).unwrap_or(22);
    v.set("CI_SERVER_SHELL_SSH_PORT", ssh_port.to_string());
    let (major, minor, patch) = SERVER_VERSION;
    v.set("CI_SERVER_VERSION", format!("{major}.{minor}.{patch}"));
    v.set("CI_SERVER_VERSION_MAJOR", major.to_string());
    v.set("CI_SERVER_VERSION_MINOR", minor.to_string());
    v.set("CI_SERVER_VERSION_PATCH", patch.to_string());
    v.set("CI_SERVER_REVISION", "glci");
    v.set("CI_TEMPLATE_REGISTRY_HOST", "registry.gitlab.com");
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
    v.set("CI_PROJECT_ID", project_id(path).to_string());
    v.set("CI_DEFAULT_BRANCH", default_branch.clone());
    v.set("CI_COMMIT_SHA", sha.clone());
    v.set("CI_COMMIT_SHORT_SHA", sha.chars().take(8).collect::<String>());
    v.set("CI_COMMIT_BEFORE_SHA", facts.git.before_sha.clone().unwrap_or_else(|| "0".repeat(40)));
    if let Some(branch) = &branch {
        v.set("CI_COMMIT_BRANCH", branch.clone());
    }
    if let Some(tag) = &tag {
        v.set("CI_COMMIT_TAG", tag.clone());
        v.set("CI_COMMIT_TAG_MESSAGE", facts.git.tag_message.clone().unwrap_or_default());
    }
    v.set("CI_COMMIT_REF_NAME", ref_name.clone());
    v.set("CI_COMMIT_REF_SLUG", variables::slug(&ref_name));
    v.set("CI_COMMIT_REF_PROTECTED", protected.to_string());
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
    if !facts.created_at.is_empty() {
        v.set("CI_PIPELINE_CREATED_AT", facts.created_at.clone());
    }
    for (name, value) in user_variables(&facts.git) {
        v.set(name, value);
    }
    for (name, value) in runner_variables() {
        v.set(name, value);
    }
    v.set("CI_NODE_TOTAL", "1");
    for (name, value) in &facts.predefined {
        v.set(name, value.clone());
    }
    v
}

/// The GitLab version whose behaviour glci follows (`CI_SERVER_VERSION*`).
const SERVER_VERSION: (u32, u32, u32) = (17, 6, 0);

/// A stable number for a project path (`CI_PROJECT_ID`): GitLab's ids are numbers, the same
/// for every pipeline of a project.
fn project_id(path: &str) -> u64 {
    let digest = Sha256::digest(path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % 100_000_000 + 1
}

/// `GITLAB_USER_*`: the one who "pushed", from git config (`user.name`, `user.email`); the
/// login is the email's local part, as a GitLab username usually is.
fn user_variables(git: &crate::git::Facts) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    let Some(email) = git.user_email.clone() else {
        return v;
    };
    let login = email.split('@').next().unwrap_or(&email).to_string();
    v.push(("GITLAB_USER_ID", (project_id(&email) % 10_000_000).to_string()));
    v.push(("GITLAB_USER_LOGIN", login.clone()));
    v.push(("GITLAB_USER_NAME", git.user_name.clone().unwrap_or(login)));
    v.push(("GITLAB_USER_EMAIL", email));
    v
}

/// `CI_RUNNER_*`: glci is the runner.
fn runner_variables() -> Vec<(&'static str, String)> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    vec![
        ("CI_RUNNER_ID", "1".to_string()),
        ("CI_RUNNER_DESCRIPTION", "glci".to_string()),
        ("CI_RUNNER_TAGS", "[]".to_string()),
        ("CI_RUNNER_VERSION", env!("CARGO_PKG_VERSION").to_string()),
        ("CI_RUNNER_REVISION", env!("CARGO_PKG_VERSION").to_string()),
        ("CI_RUNNER_EXECUTABLE_ARCH", format!("{}/{arch}", std::env::consts::OS)),
    ]
}

/// Job-level predefined variables, on top of the pipeline's.
pub fn job_predefined(pipeline_vars: &VarSet, job: &Job, id: u64, manual: bool) -> VarSet {
    let mut v = pipeline_vars.clone();
    v.set("CI_JOB_NAME", job.name.clone());
    v.set("CI_JOB_NAME_SLUG", variables::slug(&job.name));
    v.set("CI_JOB_STAGE", job.stage.clone());
    v.set("CI_JOB_ID", id.to_string());
    v.set("CI_JOB_TIMEOUT", job.timeout.unwrap_or(DEFAULT_TIMEOUT).as_secs().to_string());
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::git::Facts;
    use crate::pipeline::facts::RunFacts;
    use crate::pipeline::parse::parse_str;
    use crate::pipeline::plan::plan;
    use crate::pipeline::variables::VarSet;

    fn facts(git: Facts) -> RunFacts {
        RunFacts {
            project_dir: PathBuf::from("/p"),
            project_path: "group/my-proj".into(),
            git,
            pipeline_id: 7,
            created_at: "2026-12-03T12:00:00Z".into(),
            ..Default::default()
        }
    }

    fn git() -> Facts {
        Facts {
            sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
            branch: Some("main".into()),
            default_branch: Some("main".into()),
            remote_url: Some("ssh://git@gitlab.example.com:2222/group/my-proj.git".into()),
            user_name: Some("Ada Lovelace".into()),
            user_email: Some("ada@example.com".into()),
            ..Default::default()
        }
    }

    /// The variables of job `name` of `yaml`, planned with `facts`.
    fn job_vars(yaml: &str, name: &str, facts: &RunFacts) -> VarSet {
        let pipeline = parse_str(yaml, Path::new("/p/.gitlab-ci.yml")).expect("parses");
        let plan = plan(&pipeline, facts).expect("plans");
        plan.jobs.into_iter().find(|j| j.name == name).expect("planned").variables
    }

    #[test]
    fn server_project_user_runner_and_job_variables() {
        let yaml = "j:\n  image: busybox\n  timeout: 10m\n  script: [x]\n";
        let v = job_vars(yaml, "j", &facts(git()));
        let get = |n: &str| v.get(n).unwrap_or_else(|| panic!("{n} unset")).to_string();
        assert_eq!(get("CI_SERVER_FQDN"), "gitlab.example.com");
        assert_eq!(get("CI_SERVER_PORT"), "443");
        assert_eq!(get("CI_SERVER_SHELL_SSH_PORT"), "2222");
        assert_eq!(get("CI_SERVER_VERSION"), "17.6.0");
        assert_eq!(get("CI_SERVER_VERSION_MAJOR"), "17");
        assert_eq!(get("CI_TEMPLATE_REGISTRY_HOST"), "registry.gitlab.com");
        assert_eq!(get("CI_PIPELINE_CREATED_AT"), "2026-12-03T12:00:00Z");
        assert_eq!(get("CI_PROJECT_TITLE"), "my-proj");
        assert_eq!(get("CI_PROJECT_VISIBILITY"), "private");
        let id = get("CI_PROJECT_ID");
        assert!(id.parse::<u64>().is_ok_and(|n| n > 0), "{id}");
        assert_eq!(job_vars(yaml, "j", &facts(git())).get("CI_PROJECT_ID"), Some(id.as_str()), "stable");
        assert_eq!(get("GITLAB_USER_NAME"), "Ada Lovelace");
        assert_eq!(get("GITLAB_USER_EMAIL"), "ada@example.com");
        assert_eq!(get("GITLAB_USER_LOGIN"), "ada");
        assert!(get("GITLAB_USER_ID").parse::<u64>().is_ok());
        assert_eq!(get("CI_JOB_TIMEOUT"), "600");
        assert_eq!(get("CI_COMMIT_REF_PROTECTED"), "true", "the default branch is protected");
        assert_eq!(get("CI_COMMIT_BEFORE_SHA"), "0".repeat(40));
        assert_eq!(get("CI_RUNNER_DESCRIPTION"), "glci");
        assert_eq!(get("CI_RUNNER_TAGS"), "[]");
        assert!(get("CI_RUNNER_EXECUTABLE_ARCH").starts_with("linux/"));
        assert!(v.get("CI_COMMIT_TAG").is_none());
    }

    #[test]
    fn a_tag_pipeline_has_the_tag_as_its_ref_and_no_branch() {
        let yaml = "j:\n  image: busybox\n  script: [x]\n  rules:\n    - if: $CI_COMMIT_TAG\n";
        let tagged = Facts { tag: Some("v1.2.0".into()), tag_message: Some("Release".into()), ..git() };
        let v = job_vars(yaml, "j", &facts(tagged));
        assert_eq!(v.get("CI_COMMIT_TAG"), Some("v1.2.0"));
        assert_eq!(v.get("CI_COMMIT_TAG_MESSAGE"), Some("Release"));
        assert_eq!(v.get("CI_COMMIT_REF_NAME"), Some("v1.2.0"));
        assert_eq!(v.get("CI_COMMIT_REF_SLUG"), Some("v1-2-0"));
        assert_eq!(v.get("CI_COMMIT_BRANCH"), None);
        assert_eq!(v.get("CI_COMMIT_REF_PROTECTED"), Some("false"));
    }

    #[test]
    fn environment_variables_expand_and_follow_gitlab() {
        let yaml = "j:\n  image: busybox\n  script: [x]\n  variables: {APP: shop}\n  environment:\n    \
                    name: review/$CI_COMMIT_REF_SLUG\n    url: https://$CI_ENVIRONMENT_SLUG.$APP.example.com\n\
                    k:\n  image: busybox\n  script: [x]\n  environment: production\n\
                    s:\n  image: busybox\n  script: [x]\n  environment: {name: qa, action: prepare, deployment_tier: staging}\n";
        let feature = Facts { branch: Some("feature/Thing".into()), ..git() };
        let v = job_vars(yaml, "j", &facts(feature.clone()));
        assert_eq!(v.get("CI_ENVIRONMENT_NAME"), Some("review/feature-thing"));
        let slug = v.get("CI_ENVIRONMENT_SLUG").expect("slug").to_string();
        assert!(slug.starts_with("review-feature-th-") && slug.len() == 24, "{slug}");
        assert_eq!(v.get("CI_ENVIRONMENT_URL"), Some(format!("https://{slug}.shop.example.com").as_str()));
        assert_eq!(v.get("CI_ENVIRONMENT_TIER"), Some("development"));
        assert_eq!(v.get("CI_ENVIRONMENT_ACTION"), Some("start"));
        let k = job_vars(yaml, "k", &facts(feature.clone()));
        assert_eq!(k.get("CI_ENVIRONMENT_SLUG"), Some("production"));
        assert_eq!(k.get("CI_ENVIRONMENT_TIER"), Some("production"));
        assert_eq!(k.get("CI_ENVIRONMENT_URL"), None);
        let s = job_vars(yaml, "s", &facts(feature));
        assert_eq!((s.get("CI_ENVIRONMENT_TIER"), s.get("CI_ENVIRONMENT_ACTION")), (Some("staging"), Some("prepare")));
    }
}
