//! Pure data: the facts of one run besides the pipeline file (project, git, command-line
//! variables, jobs named, what changed, the instance's project-file lister) and the runner's
//! fixed places (`BUILDS_DIR`, `DEFAULT_TIMEOUT`). `predefined` derives GitLab's `CI_*`
//! variables from them, `plan` and `decide` read them; `cli::run` fills them in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::changes::ChangedPaths;
use super::model::ProjectVariable;

/// GitLab's default job timeout (a project setting there; one hour by default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Where projects live inside job containers (`CI_BUILDS_DIR`).
pub const BUILDS_DIR: &str = "/builds";

/// What the plan needs to know about this run besides the pipeline.
#[derive(Clone, Debug, Default)]
pub struct RunFacts {
    /// The project directory on the host (where `.gitlab-ci.yml` and the sources are).
    pub project_dir: PathBuf,
    /// `group/sub/project`, or just the directory name.
    pub project_path: String,
    pub git: crate::git::Facts,
    /// Files of the project, relative, `/`-separated (for `rules: exists`).
    pub files: Vec<String>,
    /// `--env-file` then `--env`, in order: later wins.
    pub cli_variables: Vec<(String, String)>,
    /// Jobs named on the command line; empty = the whole pipeline.
    pub selected: Vec<String>,
    pub pipeline_id: u64,
    /// More predefined variables (the registry's `CI_REGISTRY*`, issue 8): as GitLab's, a
    /// pipeline's own variables win over them, and `image:` can use them.
    pub predefined: Vec<(String, String)>,
    /// What changed, for `rules: changes` (empty default: unknown, every `changes` holds).
    pub changes: ChangedPaths,
    /// When the pipeline was created (RFC 3339 UTC): `CI_PIPELINE_CREATED_AT`.
    pub created_at: String,
    /// The variables file's (`$GLCI_HOME/variables.yml`, then `.glci-variables.yml`; later
    /// wins): above the pipeline's variables, below the command line's.
    pub project_variables: Vec<ProjectVariable>,
    /// `--default-image` / `[run] default_image`: the image of a job that names none (the
    /// runner's configured default image).
    pub default_image: Option<String>,
    /// Lists another project's files at a ref, for a job's `rules: exists: {project, ref}`
    /// (`cli` asks the GitLab instance); `None`: such a rule is an error.
    pub project_files: ProjectFiles,
    /// `[gitlab.projects]`: the projects a `trigger: project` job can run, by path → checkout.
    pub projects: BTreeMap<String, PathBuf>,
}

/// `(project, ref)` → the project's files at that ref, or why they cannot be had.
pub type ProjectFilesFn = dyn Fn(&str, &str) -> Result<Vec<String>, String> + Send + Sync;

/// See [`RunFacts::project_files`].
#[derive(Clone, Default)]
pub struct ProjectFiles(pub Option<Arc<ProjectFilesFn>>);

impl std::fmt::Debug for ProjectFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ProjectFiles(instance)" } else { "ProjectFiles(none)" })
    }
}
