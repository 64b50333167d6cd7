//! The pipeline as plain data: what `parse` produces from `.gitlab-ci.yml` (with `include`,
//! `extends`, anchors, `!reference` and `default` already resolved) and what `plan` and
//! `execute` consume. No behaviour here beyond small accessors.

use std::path::PathBuf;
use std::time::Duration;

/// Where something was written, for error messages (`file:line`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pipeline {
    /// The top-level file (includes are merged in).
    pub file: PathBuf,
    /// In order, `.pre` first and `.post` last (GitLab's defaults when `stages` is absent:
    /// `.pre, build, test, deploy, .post`).
    pub stages: Vec<String>,
    /// Global `variables`, in file order.
    pub variables: Vec<Variable>,
    /// `workflow: rules`; empty when absent.
    pub workflow_rules: Vec<Rule>,
    /// Visible jobs (not `.hidden`), in file order, fully resolved; a `parallel:` job is
    /// replaced by its instances.
    pub jobs: Vec<Job>,
    /// `workflow: name` as written (variables expanded by `plan` into `CI_PIPELINE_NAME`).
    pub name: Option<String>,
    /// What was left out and why, one `file:line: key: message` each (cross-project `needs`):
    /// `cli` shows them as notes.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    /// The `value` (also of the `{value, description}` form); not yet expanded.
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    /// `image: {entrypoint: [...]}`; `Some(vec![])` means "no entrypoint" (`[""]` in YAML).
    pub entrypoint: Option<Vec<String>>,
    /// `image: {docker: {user: U}}`: the user (name or uid[:gid]) the job's container runs as.
    pub user: Option<String>,
    /// `image: {docker: {platform: P}}`: the platform (`linux/arm64`) the image is run for.
    pub platform: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// `alias`, possibly several separated by commas as GitLab allows.
    pub alias: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub variables: Vec<Variable>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowFailure {
    No,
    Yes,
    /// `allow_failure: {exit_codes: [..]}`: only these exit codes are allowed.
    ExitCodes(Vec<i32>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub job: String,
    /// `needs: [{job, artifacts: false}]` turns artifact download off.
    pub artifacts: bool,
    pub optional: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactsWhen {
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifacts {
    /// Paths relative to the project dir; globs (`*`, `**`, `?`) allowed.
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub when: ArtifactsWhen,
    /// As written (checked: `never` or a duration); kept artifacts expire by it (`artifact_store`).
    pub expire_in: Option<String>,
    /// `reports: dotenv:` files (relative to the project): variables for later jobs.
    pub dotenv: Vec<String>,
    /// Forms accepted that glci does not act on, one note each, with `file:line: key`, for
    /// `cli` to say once.
    pub notes: Vec<String>,
    /// `untracked: true`: also every file of the job's work tree git does not track (ignored
    /// ones included, as the runner's `git ls-files -o`), less `exclude`.
    pub untracked: bool,
    /// The other `reports:` files (`junit`, `coverage_report: path`, ...; globs allowed), and the
    /// dotenv ones: kept with the job's artifacts, not handed to later jobs.
    pub reports: Vec<String>,
}

/// One entry of `rules:` (job or workflow).
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `if:`, parsed; `None` = always matches (as far as `if` goes).
    pub condition: Option<super::rules::Expr>,
    /// `exists:` globs, relative to the project dir; empty = no `exists` clause.
    pub exists: Vec<String>,
    pub when: Option<When>,
    pub allow_failure: Option<bool>,
    pub variables: Vec<Variable>,
    pub location: Location,
    /// `changes:` (a list of globs or `{paths, compare_to}`); `None` = no `changes` clause.
    pub changes: Option<Changes>,
    /// `needs:` of a job rule: when the rule matches, they replace the job's `needs`.
    pub needs: Option<Vec<Need>>,
}

/// `rules: changes` (also `only/except: changes`): true when a file matching one of `paths`
/// differs from the comparison base (see `pipeline::changes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// Globs relative to the project dir; variables expanded when the rule is evaluated.
    pub paths: Vec<String>,
    /// `compare_to:` a ref (variables allowed), with where it was written; `None` = the run's
    /// default base.
    pub compare_to: Option<(String, Location)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub name: String,
    pub location: Location,
    pub stage: String,
    pub image: Option<Image>,
    pub services: Vec<Service>,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    /// Job variables (after `extends`/`default` merging), in order; they override globals.
    pub variables: Vec<Variable>,
    /// `None`: wait for all jobs of earlier stages. `Some(vec![])`: start at once.
    pub needs: Option<Vec<Need>>,
    /// `None`: artifacts of every job this one waits for.
    pub dependencies: Option<Vec<String>>,
    pub artifacts: Option<Artifacts>,
    /// Empty: no `rules:` (the job's own `when` decides).
    pub rules: Vec<Rule>,
    pub when: When,
    pub allow_failure: AllowFailure,
    pub timeout: Option<Duration>,
    /// `retry: N` or `retry: {max: N}` (0–2).
    pub retry: u32,
    /// Set on each job made from a `parallel:` job (which is not itself in `Pipeline::jobs`).
    pub instance: Option<Instance>,
    /// `inherit: variables`: `None` takes every global variable (`true`), `Some(names)` only
    /// those (`false` is an empty list).
    pub inherit_variables: Option<Vec<String>>,
    /// `only:` / `except:` (never together with `rules`).
    pub only: Option<Policy>,
    pub except: Option<Policy>,
    /// `cache:` (its own or `default:`'s), up to four.
    pub cache: Vec<Cache>,
    /// `environment`, `coverage`, `resource_group` (issue 15).
    pub run_keys: RunKeys,
    /// `trigger: project` (a multi-project pipeline): the downstream project's path. Such a job
    /// runs no container; `decide` leaves it out with the reason.
    pub trigger: Option<String>,
    /// `trigger:` (issue 17): the downstream pipeline the job creates instead of running a
    /// container; for `trigger: project` `trigger` holds the path too.
    pub downstream: Option<Box<Downstream>>,
    /// `needs: [{pipeline, job}]`: a job of another pipeline (`$PARENT_PIPELINE_ID`: the parent's).
    pub pipeline_needs: Vec<PipelineNeed>,
}

/// A job's `trigger:`: what the downstream pipeline is and how the trigger job follows it
/// (GitLab's `trigger` keyword: `include`, `project`, `strategy`, `forward`).
#[derive(Clone, Debug, PartialEq)]
pub struct Downstream {
    pub kind: DownstreamKind,
    /// `strategy: depend` (or `mirror`): the trigger job's status is the downstream pipeline's.
    /// Otherwise the trigger job succeeds once the pipeline is created.
    pub depend: bool,
    /// `forward: yaml_variables` (GitLab's default `true`): the trigger job's variables (its
    /// own and the global ones it inherits) become the downstream's pipeline variables.
    pub forward_yaml_variables: bool,
    /// `forward: pipeline_variables` (default `false`): this run's `--env`/`--env-file` values
    /// go on to the downstream pipeline.
    pub forward_pipeline_variables: bool,
    /// Where `trigger:` was written.
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DownstreamKind {
    /// `trigger: include` of files (local, template, project, remote, component): a child
    /// pipeline composed when the parent's file is read.
    Child(Box<Pipeline>),
    /// `trigger: include: [{artifact, job}]`: a dynamic child pipeline, composed from those
    /// jobs' artifacts when the trigger job starts.
    Dynamic(Vec<ArtifactInclude>),
    /// `trigger: project`: a multi-project pipeline, `branch:` as written.
    Project { project: String, branch: Option<String> },
}

/// One `{artifact: path, job: name}` of a dynamic child pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactInclude {
    pub job: String,
    pub path: String,
    pub location: Location,
    pub key: String,
}

/// `needs: [{pipeline: $PARENT_PIPELINE_ID, job: x}]`, as written (`pipeline` expanded by `plan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineNeed {
    pub pipeline: String,
    pub job: String,
    pub artifacts: bool,
    pub location: Location,
    pub key: String,
    /// What `cli` says when `pipeline` is not this pipeline's parent: the need is left out.
    pub note: String,
}

/// The job keys that shape how a job runs, not what it runs (issue 15).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunKeys {
    pub environment: Option<Environment>,
    /// The `coverage:` pattern, without its slashes (checked to compile).
    pub coverage: Option<String>,
    pub resource_group: Option<String>,
    /// `when: delayed` + `start_in`: how long the job waits once it may run.
    pub start_in: Option<Duration>,
    /// Keys GitLab accepts that mean nothing locally: one note each, `file:line: key: why`.
    pub notes: Vec<String>,
}

/// `environment:`, not yet expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    pub url: Option<String>,
    /// `start` (GitLab's default) when `None`.
    pub action: Option<String>,
    /// `deployment_tier`; guessed from the name when `None`, as GitLab does.
    pub tier: Option<String>,
}

/// `only:` or `except:`: the array form is `refs`; each key present is one condition (`only`
/// needs all of them, `except` excludes on any), as GitLab's `Gitlab::Ci::Build::Policy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Ref patterns: names, `/regex/`, keywords (`branches`, `tags`, `merge_requests`,
    /// `schedules`, ...), each optionally `@group/project`.
    pub refs: Option<Vec<String>>,
    /// `variables:` expressions; one that holds satisfies it.
    pub variables: Option<Vec<super::rules::Expr>>,
    pub changes: Option<Changes>,
    /// `kubernetes: active`.
    pub kubernetes: bool,
    pub location: Location,
}

/// One of the jobs `parallel: N` or `parallel: matrix` makes of a job: `build 1/2`, or
/// `build: [aws, app1]` (with the matrix values among the job's variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The job's name as written (`build`): naming it selects every instance.
    pub base: String,
    /// `CI_NODE_INDEX`, 1-based.
    pub index: u32,
    /// `CI_NODE_TOTAL`.
    pub total: u32,
}

impl Pipeline {
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Position of a stage in `stages`.
    pub fn stage_index(&self, stage: &str) -> Option<usize> {
        self.stages.iter().position(|s| s == stage)
    }
}

/// How a cache is used: restored and saved (`pull-push`, GitLab's default), only restored, only
/// saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachePolicy {
    PullPush,
    Pull,
    Push,
}

/// `cache: key:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheKey {
    /// A string, variables not yet expanded (`default` when the key is left out).
    Name(String),
    /// `key: {files: [..], prefix}`: from the last commits of up to two files (`cache_key`).
    Files { files: Vec<String>, prefix: Option<String> },
}

/// One entry of a job's `cache:` (GitLab allows up to four).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    pub key: CacheKey,
    /// Relative to the project dir; globs (`*`, `**`, `?`) allowed.
    pub paths: Vec<String>,
    /// Also every file of the build dir git does not track.
    pub untracked: bool,
    /// As written: a policy, or a variable (`$POLICY`) `plan` expands and checks.
    pub policy: String,
    pub when: ArtifactsWhen,
    /// Tried in order when `key` has no cache; `CACHE_FALLBACK_KEY` comes after them.
    pub fallback_keys: Vec<String>,
    /// Accepted: there are no protected branches locally.
    pub unprotect: bool,
    pub location: Location,
}

/// A variable of the variables file (issue 15): a project/group CI/CD variable on GitLab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectVariable {
    pub name: String,
    /// `type: file`: the job gets the path of a file holding the value.
    pub file: bool,
    /// `(environment scope, value)`; `*` is every job.
    pub values: Vec<(String, String)>,
}

impl ProjectVariable {
    /// The value for a job in `environment` (`None`: no `environment:`), as GitLab picks
    /// among scopes: the exact name, else the most specific (longest) matching wildcard, else
    /// `*`. A job without an environment only sees `*`.
    pub fn value_for(&self, environment: Option<&str>) -> Option<&str> {
        let matching = self.values.iter().filter(|(scope, _)| match environment {
            _ if scope == "*" => true,
            Some(env) => scope_matches(scope, env),
            None => false,
        });
        let best = matching.max_by_key(|(scope, _)| {
            let exact = environment == Some(scope.as_str());
            (exact, scope.len())
        });
        best.map(|(_, value)| value.as_str())
    }
}

/// An environment scope: `*` matches any run of characters, the rest literally.
fn scope_matches(scope: &str, name: &str) -> bool {
    let parts: Vec<&str> = scope.split('*').collect();
    if parts.len() == 1 {
        return scope == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}
