//! One job's map (after `include`, `extends` and `!reference`) → [`Job`], with `default:`
//! applied; also reads `default:` itself into [`Defaults`]. Owns the list of job keys: which
//! are used, which are accepted and ignored because they mean nothing locally (`tags`,
//! `environment`, ...), and which are refused with a hint (`secrets`, `run`). `trigger:` is
//! read here ([`Downstream`]); a child's `include:` is kept as written for `mod.rs` to compose
//! (`child.rs`). Also makes
//! the instances of a `parallel:` job ([`instances`]). Pure.

use std::time::Duration;

use super::accepted::{self, AcceptedNote};
use super::cache;
use super::needs;
use super::policy;
use super::read::{self, Combo, Field, WhenIn, MAX_PARALLEL};
use super::retry;
use super::rule;
use super::run_keys;
use super::yaml::{Entry, Node, Value};
use crate::pipeline::error::PipelineError;
use crate::pipeline::model::{
    AllowFailure, ArtifactInclude, Artifacts, Cache, Downstream, DownstreamKind, Image, Instance, Job, Location,
    RetryOn, Service, Variable, When,
};

/// The stage of a job without `stage:`.
pub const DEFAULT_STAGE: &str = "test";

/// Job keys glci reads.
const USED_KEYS: [&str; 27] = [
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dependencies",
    "environment",
    "except",
    "extends",
    "image",
    "inherit",
    "needs",
    "only",
    "parallel",
    "trigger",
    "type",
    "resource_group",
    "retry",
    "rules",
    "script",
    "services",
    "stage",
    "start_in",
    "timeout",
    "variables",
    "when",
];

/// Job keys accepted and ignored: they have no local meaning (`accepted` checks their values
/// and says so in a note).
const IGNORED_KEYS: [&str; 10] = [
    "dast_configuration",
    "hooks",
    "id_tokens",
    "identity",
    "interruptible",
    "manual_confirmation",
    "pages",
    "publish",
    "release",
    "tags",
];

/// Job keys GitLab knows that glci refuses, and why.
fn unsupported(key: &str) -> Option<&'static str> {
    Some(match key {
        "secrets" => "`secrets` (external secret providers) are not supported: pass values with --env",
        "run" => "`run` (CI steps) is not supported",
        _ => return None,
    })
}

/// `default:` keys glci reads, then those accepted and ignored.
const DEFAULT_KEYS: [&str; 8] =
    ["after_script", "artifacts", "before_script", "cache", "image", "retry", "services", "timeout"];
const DEFAULT_IGNORED_KEYS: [&str; 5] = ["hooks", "id_tokens", "identity", "interruptible", "tags"];

/// `default:` (and the deprecated top-level `image`, `services`, `before_script`,
/// `after_script`), typed. A job takes each value it does not set itself (no deep merge).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    pub image: Option<Image>,
    pub services: Option<Vec<Service>>,
    pub before_script: Option<Vec<String>>,
    pub after_script: Option<Vec<String>>,
    pub artifacts: Option<Artifacts>,
    pub timeout: Option<Duration>,
    pub retry: Option<(u32, RetryOn)>,
    pub cache: Option<Vec<Cache>>,
}

impl Defaults {
    /// Reads the `default:` map.
    pub fn read(field: &Field) -> Result<Defaults, PipelineError> {
        let mut accepted: Vec<&str> = DEFAULT_KEYS.iter().chain(&DEFAULT_IGNORED_KEYS).copied().collect();
        accepted.sort_unstable();
        field.check_keys(&accepted)?;
        let mut defaults = Defaults::default();
        for entry in field.map()?.iter() {
            defaults.set(&entry.key, &Field::entry(&field.key, entry))?;
        }
        Ok(defaults)
    }

    /// Sets one key (of `default:` or a deprecated top-level one); ignored keys are checked
    /// by the caller.
    pub fn set(&mut self, key: &str, field: &Field) -> Result<(), PipelineError> {
        match key {
            "image" => self.image = Some(read::image(field)?),
            "services" => self.services = Some(read::services(field)?),
            "before_script" => self.before_script = Some(read::script(field)?),
            "after_script" => self.after_script = Some(read::script(field)?),
            "artifacts" => self.artifacts = Some(read::artifacts(field)?),
            "timeout" => self.timeout = Some(read::timeout(field)?),
            "retry" => self.retry = Some(retry::retry(field)?),
            "cache" => self.cache = Some(cache::caches(field)?),
            _ => {}
        }
        Ok(())
    }

    /// Only the keys `inherit: default: [...]` names (all when `None`).
    fn only(&self, keys: Option<&[String]>) -> Defaults {
        let Some(keys) = keys else {
            return self.clone();
        };
        let has = |k: &str| keys.iter().any(|key| key == k);
        Defaults {
            image: self.image.clone().filter(|_| has("image")),
            services: self.services.clone().filter(|_| has("services")),
            before_script: self.before_script.clone().filter(|_| has("before_script")),
            after_script: self.after_script.clone().filter(|_| has("after_script")),
            artifacts: self.artifacts.clone().filter(|_| has("artifacts")),
            timeout: self.timeout.filter(|_| has("timeout")),
            retry: self.retry.clone().filter(|_| has("retry")),
            cache: self.cache.clone().filter(|_| has("cache")),
        }
    }
}

/// A job and the lines `mod.rs` validates against the whole pipeline.
#[derive(Clone, Debug)]
pub struct ParsedJob {
    pub job: Job,
    /// Line and key of `stage:`; `None` when the job took the default stage.
    pub stage_at: Option<(usize, String)>,
    /// Line and key of each of `job.needs`, in the same order.
    pub needs_at: Vec<(usize, String)>,
    /// Line and key of each of `job.dependencies`, in the same order.
    pub dependencies_at: Vec<(usize, String)>,
    /// `parallel:`, until [`instances`] expands it.
    pub parallel: Option<Parallel>,
    /// For each of `job.needs`: the `parallel: matrix` values it selects, with the job named.
    pub needs_matrix: Vec<Option<(String, Combo)>>,
    /// The matrix values of this instance of a `parallel: matrix` job.
    pub matrix: Combo,
    /// Notes on what was left out (`file:line: key: why`).
    pub notes: Vec<String>,
    /// `trigger: include` of files, as written: composed into the child pipeline by `mod.rs`.
    pub child_include: Option<Node>,
    /// Keys accepted and ignored, said once per pipeline (`accepted::summarize`).
    pub accepted: Vec<AcceptedNote>,
}

/// A job's `parallel:`.
#[derive(Clone, Debug, PartialEq)]
pub enum Parallel {
    /// `parallel: N`: jobs `name 1/N` … `name N/N`.
    Count(u32),
    /// `parallel: matrix`: one job per combination, `name: [v1, v2]`, with those variables.
    Matrix(Vec<Combo>),
}

/// Reads the job at top-level `entry`, taking from `defaults` what it does not set.
pub fn read(entry: &Entry, defaults: &Defaults) -> Result<ParsedJob, PipelineError> {
    let name = entry.key.as_str();
    let field = Field::entry("", entry);
    let Value::Map(map) = &entry.value.value else {
        return Err(field.error(format!(
            "`{name}` is not a job: expected a map with `script`, found {} \
             (top-level keys other than stages, variables, default, workflow, include, image, services, \
             before_script, after_script and cache are jobs)",
            entry.value.value.kind()
        )));
    };
    // GitLab's Processable: `validates :name, length: { maximum: 255 }`.
    if name.chars().count() > 255 {
        return Err(field.error("a job name is at most 255 characters"));
    }
    let mut job = Job {
        name: name.to_owned(),
        location: field.location(),
        stage: DEFAULT_STAGE.to_owned(),
        image: None,
        services: Vec::new(),
        before_script: Vec::new(),
        script: Vec::new(),
        after_script: Vec::new(),
        variables: Vec::new(),
        needs: None,
        dependencies: None,
        artifacts: None,
        rules: Vec::new(),
        when: When::OnSuccess,
        allow_failure: AllowFailure::No,
        timeout: None,
        retry: 0,
        instance: None,
        inherit_variables: None,
        only: None,
        except: None,
        cache: Vec::new(),
        run_keys: Default::default(),
        trigger: None,
        downstream: None,
        pipeline_needs: Vec::new(),
    };
    let mut parsed = ParsedJob {
        job: job.clone(),
        stage_at: None,
        needs_at: Vec::new(),
        dependencies_at: Vec::new(),
        parallel: None,
        needs_matrix: Vec::new(),
        matrix: Vec::new(),
        notes: Vec::new(),
        child_include: None,
        accepted: Vec::new(),
    };
    let mut own = Defaults::default();
    let mut script = None;
    let mut allow_failure = None;
    let mut delayed_at: Option<Field> = None;
    let mut start_in_at: Option<Field> = None;
    let mut inherit_default: Option<Option<Vec<String>>> = None;
    let mut type_at: Option<Field> = None;
    for entry in map.iter() {
        let f = Field::entry(name, entry);
        let key = entry.key.as_str();
        match key {
            "script" => {
                let lines = read::script(&f)?;
                if lines.is_empty() {
                    return Err(f.error("script is empty"));
                }
                script = Some(lines);
            }
            "image" | "services" | "before_script" | "after_script" | "artifacts" | "timeout" | "retry" | "cache" => {
                own.set(key, &f)?;
                match key {
                    "image" | "services" => parsed.accepted.extend(accepted::kubernetes(&f)?),
                    "artifacts" => parsed.accepted.extend(accepted::artifacts(&f)?),
                    _ => {}
                }
            }
            "stage" => {
                job.stage = f.name("a stage name")?;
                parsed.stage_at = Some((f.line, f.key.clone()));
            }
            // GitLab's deprecated name of `stage`, used when `stage` is not given.
            "type" => type_at = Some(f.clone()),
            "variables" => job.variables = read::variables(&f)?,
            "needs" => {
                let read = needs::needs(&f)?;
                parsed.notes.extend(read.notes);
                job.pipeline_needs = read.pipelines;
                parsed.needs_at = read.needs.iter().map(|n| (n.line, n.key.clone())).collect();
                parsed.needs_matrix = read.needs.iter().map(|n| n.matrix.clone()).collect();
                job.needs = Some(read.needs.into_iter().map(|n| n.need).collect());
            }
            "dependencies" => {
                let deps = read::dependencies(&f)?;
                parsed.dependencies_at = deps.iter().map(|(_, line, key)| (*line, key.clone())).collect();
                job.dependencies = Some(deps.into_iter().map(|(dep, _, _)| dep).collect());
            }
            "rules" => job.rules = rule::rules(&f, false)?,
            "only" => job.only = Some(policy::policy(&f)?),
            "trigger" => {
                let read = trigger(&f)?;
                job.trigger = match &read.downstream.kind {
                    DownstreamKind::Project { project, .. } => Some(project.clone()),
                    _ => None,
                };
                job.downstream = Some(Box::new(read.downstream));
                parsed.child_include = read.include;
            }
            "except" => job.except = Some(policy::policy(&f)?),
            // `when: delayed` runs as on_success after `start_in` (issue 15).
            "when" if matches!(&f.node.value, Value::Str(s) if s == "delayed") => delayed_at = Some(f.clone()),
            // GitLab's job `when` is one of on_success, on_failure, always, manual, delayed.
            "when" if matches!(&f.node.value, Value::Str(s) if s == "never") => {
                return Err(f.error(
                    "`when: never` is for `rules` and `workflow: rules`; a job takes on_success, on_failure, \
                     always, manual or delayed",
                ))
            }
            "when" => job.when = read::when(&f, WhenIn::Job)?,
            "start_in" => {
                job.run_keys.start_in = Some(run_keys::start_in(&f)?);
                start_in_at = Some(f.clone());
            }
            "allow_failure" => allow_failure = Some(read::allow_failure(&f)?),
            "inherit" => (inherit_default, job.inherit_variables) = inherit(&f)?,
            "parallel" => parsed.parallel = Some(parallel(&f)?),
            "environment" => {
                let (environment, notes) = run_keys::environment(&f)?;
                job.run_keys.environment = Some(environment);
                job.run_keys.notes.extend(notes);
            }
            "coverage" => job.run_keys.coverage = Some(run_keys::coverage(&f)?),
            "resource_group" => job.run_keys.resource_group = Some(run_keys::resource_group(&f)?),
            "extends" => {}
            _ if IGNORED_KEYS.contains(&key) => parsed.accepted.extend(accepted::check(key, &f)?),
            _ => {
                let message = match unsupported(key) {
                    Some(why) => why.to_owned(),
                    None => {
                        let mut accepted: Vec<&str> = USED_KEYS.iter().chain(&IGNORED_KEYS).copied().collect();
                        accepted.sort_unstable();
                        format!("unknown key (accepted: {})", accepted.join(", "))
                    }
                };
                return Err(f.error(message));
            }
        }
    }
    if !job.rules.is_empty() || map.get("rules").is_some() {
        for key in ["only", "except", "start_in"] {
            if let Some(entry) = map.get(key) {
                // GitLab: "config key may not be used with `rules`: only".
                return Err(Field::entry(name, entry).error(format!("`{key}` may not be used with `rules`")));
            }
        }
    }
    if let (Some(f), None) = (&type_at, &parsed.stage_at) {
        job.stage = f.name("a stage name")?;
        parsed.stage_at = Some((f.line, f.key.clone()));
    }
    if job.downstream.is_some() {
        if let Some(entry) = map.get("script") {
            return Err(Field::entry(name, entry).error("a `trigger` job runs no `script` (GitLab refuses both)"));
        }
    }
    let script = script.or_else(|| job.downstream.as_ref().map(|_| Vec::new()));
    match (&delayed_at, &start_in_at) {
        (Some(when), None) => return Err(when.error("`when: delayed` needs `start_in` (how long to wait)")),
        (None, Some(start_in)) => return Err(start_in.error("`start_in` is used only with `when: delayed`")),
        _ => {}
    }
    let Some(script) = script else {
        return Err(field.error(format!(
            "`{name}` has no `script` (every job needs one; names starting with `.` are templates, not jobs)"
        )));
    };
    let inherited = match inherit_default {
        None => defaults.clone(),
        Some(keys) => defaults.only(keys.as_deref()),
    };
    job.script = script;
    job.image = own.image.or(inherited.image);
    job.services = own.services.or(inherited.services).unwrap_or_default();
    job.before_script = own.before_script.or(inherited.before_script).unwrap_or_default();
    job.after_script = own.after_script.or(inherited.after_script).unwrap_or_default();
    job.artifacts = own.artifacts.or(inherited.artifacts);
    job.timeout = own.timeout.or(inherited.timeout);
    (job.retry, job.run_keys.retry_on) = own.retry.or(inherited.retry).unwrap_or_default();
    job.cache = own.cache.or(inherited.cache).unwrap_or_default();
    // GitLab: a manual job may fail unless it says otherwise.
    job.allow_failure =
        allow_failure.unwrap_or(if job.when == When::Manual { AllowFailure::Yes } else { AllowFailure::No });
    parsed.job = job;
    Ok(parsed)
}

/// `trigger:` as read: the downstream, and a child's `include:` as written.
struct ReadTrigger {
    downstream: Downstream,
    include: Option<Node>,
}

/// `trigger:` a project path, `{project, branch, strategy, forward}` or `{include, strategy,
/// forward}` (GitLab's `trigger` keyword). `include` takes what `include:` takes (a path, or a
/// list of `local`/`template`/`project`/`remote`/`component` entries) or `{artifact, job}`
/// entries (a dynamic child pipeline); GitLab refuses the two mixed.
fn trigger(field: &Field) -> Result<ReadTrigger, PipelineError> {
    let location = Location { file: field.node.file.to_path_buf(), line: field.line };
    let mut downstream = Downstream {
        kind: DownstreamKind::Child(Box::default()),
        depend: false,
        forward_yaml_variables: true,
        forward_pipeline_variables: false,
        location,
    };
    if let Value::Str(_) = field.node.value {
        let project = field.name("a project path")?;
        downstream.kind = DownstreamKind::Project { project, branch: None };
        return Ok(ReadTrigger { downstream, include: None });
    }
    field.check_keys(&["project", "branch", "strategy", "forward", "include"])?;
    if let Some(strategy) = field.get("strategy")? {
        let value = strategy.string()?;
        if !["depend", "mirror"].contains(&value.as_str()) {
            return Err(strategy.error(format!("unknown value {value:?} (use depend or mirror)")));
        }
        downstream.depend = true;
    }
    if let Some(forward) = field.get("forward")? {
        forward.check_keys(&["yaml_variables", "pipeline_variables"])?;
        if let Some(f) = forward.get("yaml_variables")? {
            downstream.forward_yaml_variables = f.boolean()?;
        }
        if let Some(f) = forward.get("pipeline_variables")? {
            downstream.forward_pipeline_variables = f.boolean()?;
        }
    }
    let include = field.get("include")?;
    let project = field.get("project")?;
    match (include, project) {
        (Some(_), Some(project)) => {
            Err(project.error("a trigger takes `include` (a child pipeline) or `project`, not both"))
        }
        (None, None) => Err(field.error("missing `project` (or `include`)")),
        (None, Some(project)) => {
            let branch = field.get("branch")?.map(|b| b.string()).transpose()?;
            downstream.kind = DownstreamKind::Project { project: project.name("a project path")?, branch };
            Ok(ReadTrigger { downstream, include: None })
        }
        (Some(include), None) => {
            if let Some(branch) = field.get("branch")? {
                return Err(branch.error("`branch` is for `trigger: project`; a child pipeline runs this ref"));
            }
            match artifact_includes(&include)? {
                Some(artifacts) => {
                    downstream.kind = DownstreamKind::Dynamic(artifacts);
                    Ok(ReadTrigger { downstream, include: None })
                }
                None => Ok(ReadTrigger { downstream, include: Some(include.node.clone()) }),
            }
        }
    }
}

/// The `{artifact, job}` entries of a `trigger: include`, or `None` when it has none.
fn artifact_includes(include: &Field) -> Result<Option<Vec<ArtifactInclude>>, PipelineError> {
    let items = match &include.node.value {
        Value::Seq(_) => include.items("a list of files to include")?,
        Value::Map(_) => vec![include.clone()],
        _ => return Ok(None),
    };
    let is_artifact = |item: &Field| matches!(&item.node.value, Value::Map(m) if m.get("artifact").is_some());
    if !items.iter().any(is_artifact) {
        return Ok(None);
    }
    let mut out = Vec::new();
    for item in &items {
        if !is_artifact(item) {
            return Err(item.error(
                "a dynamic child pipeline's `include` lists only `{artifact, job}` entries (GitLab refuses them \
                 mixed with other files)",
            ));
        }
        item.check_keys(&["artifact", "job"])?;
        let path = item.get("artifact")?.ok_or_else(|| item.error("missing `artifact`"))?;
        let job = item.get("job")?.ok_or_else(|| item.error("missing `job` (the job whose artifact it is)"))?;
        let path = path.name("a file path in the job's artifacts")?;
        out.push(ArtifactInclude {
            job: job.name("a job name")?,
            path: path.trim_start_matches("./").to_string(),
            location: Location { file: item.node.file.to_path_buf(), line: item.line },
            key: item.key.clone(),
        });
    }
    Ok(Some(out))
}

/// `parallel:` a number of jobs (1 to 200) or `{matrix: [...]}`.
fn parallel(field: &Field) -> Result<Parallel, PipelineError> {
    match &field.node.value {
        Value::Int(n) => match u32::try_from(*n) {
            Ok(count) if (1..=MAX_PARALLEL).contains(&(count as usize)) => Ok(Parallel::Count(count)),
            _ => Err(field.error(format!("`parallel` takes 1 to {MAX_PARALLEL} jobs, not {n}"))),
        },
        Value::Map(_) => {
            field.check_keys(&["matrix"])?;
            let matrix = field.get("matrix")?.ok_or_else(|| field.error("missing `matrix`"))?;
            Ok(Parallel::Matrix(read::matrix(&matrix)?))
        }
        _ => Err(field.expected(&format!("a number of jobs (1 to {MAX_PARALLEL}) or {{matrix: [...]}}"))),
    }
}

/// The jobs a parsed job stands for: itself, or the instances of its `parallel:`, named as
/// GitLab does (`build 1/2`, `build: [aws, app1]`), matrix values set as job variables (over
/// same-named ones).
pub fn instances(mut parsed: ParsedJob) -> Vec<ParsedJob> {
    let Some(parallel) = parsed.parallel.take() else {
        return vec![parsed];
    };
    let base = parsed.job.name.clone();
    let named: Vec<(String, Combo)> = match parallel {
        Parallel::Count(n) => (1..=n).map(|i| (format!("{base} {i}/{n}"), Vec::new())).collect(),
        Parallel::Matrix(combos) => combos.into_iter().map(|c| (read::instance_name(&base, &c), c)).collect(),
    };
    let total = u32::try_from(named.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(named.len());
    for (index, (name, combo)) in (1..).zip(named) {
        let mut instance = parsed.clone();
        instance.matrix = combo.clone();
        let job = &mut instance.job;
        job.name = name;
        job.instance = Some(Instance { base: base.clone(), index, total });
        for (name, value) in combo {
            match job.variables.iter_mut().find(|v| v.name == name) {
                Some(v) => v.value = value,
                None => job.variables.push(Variable { name, value }),
            }
        }
        out.push(instance);
    }
    out
}

/// Which `default:` keys and global variables a job takes.
type Inherit = (Option<Option<Vec<String>>>, Option<Vec<String>>);

/// `inherit:`; returns which `default:` keys the job takes (`None` all of them, unchanged;
/// `Some(None)` all; `Some(Some(list))` only those, an empty list for `default: false`) and
/// which global variables (`None` all; `Some(list)` only those, empty for `variables: false`).
fn inherit(field: &Field) -> Result<Inherit, PipelineError> {
    field.check_keys(&["default", "variables"])?;
    let variables = match field.get("variables")? {
        None => None,
        Some(f) => match &f.node.value {
            Value::Bool(true) => None,
            Value::Bool(false) => Some(Vec::new()),
            Value::Seq(_) => Some(f.strings()?),
            _ => return Err(f.expected("true, false or a list of variable names")),
        },
    };
    let Some(default) = field.get("default")? else {
        return Ok((None, variables));
    };
    let default = match &default.node.value {
        Value::Bool(true) => Some(None),
        Value::Bool(false) => Some(Some(Vec::new())),
        Value::Seq(_) => {
            let keys = default.strings()?;
            if let Some(bad) =
                keys.iter().find(|k| !DEFAULT_KEYS.contains(&k.as_str()) && !DEFAULT_IGNORED_KEYS.contains(&k.as_str()))
            {
                return Err(default.error(format!("`{bad}` is not a `default:` key")));
            }
            Some(Some(keys))
        }
        _ => return Err(default.expected("true, false or a list of default keys")),
    };
    Ok((default, variables))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::rc::Rc;

    use crate::pipeline::model::{Image, Need, Variable};
    use crate::pipeline::parse::yaml::{self, Map};

    fn top(text: &str) -> Map {
        let file: Rc<Path> = Rc::from(Path::new("ci.yml"));
        match yaml::load(text, &file).unwrap().value {
            Value::Map(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn job_with(text: &str, defaults: &Defaults) -> Result<ParsedJob, PipelineError> {
        let map = top(text);
        let entry = map.iter().next().unwrap();
        read(entry, defaults)
    }

    fn job(text: &str) -> Job {
        job_with(text, &Defaults::default()).unwrap_or_else(|e| panic!("{text}: {e}")).job
    }

    fn job_err(text: &str) -> PipelineError {
        job_with(text, &Defaults::default()).expect_err(text)
    }

    fn defaults(text: &str) -> Defaults {
        let map = top(text);
        let entry = map.get("default").unwrap();
        Defaults::read(&Field::entry("", entry)).unwrap()
    }

    #[test]
    fn minimal_job_takes_gitlab_defaults() {
        let j = job("\n\nbuild:\n  script: make\n");
        assert_eq!(j.name, "build");
        assert_eq!(j.location.line, 3);
        assert_eq!(j.stage, "test");
        assert_eq!(j.script, ["make"]);
        assert_eq!(j.when, When::OnSuccess);
        assert_eq!(j.allow_failure, AllowFailure::No);
        assert_eq!((j.needs, j.dependencies, j.artifacts, j.timeout, j.retry), (None, None, None, None, 0));
        assert!(j.rules.is_empty() && j.services.is_empty() && j.variables.is_empty());
    }

    #[test]
    fn every_used_key() {
        let j = job(
            "build:\n  stage: build\n  image: alpine\n  services: [redis]\n  before_script: [b]\n  script: [s]\n  \
             after_script: a\n  variables: {A: 1}\n  needs: [x]\n  dependencies: [x]\n  artifacts: {paths: [d]}\n  \
             rules: [{when: always}]\n  when: on_failure\n  allow_failure: {exit_codes: 3}\n  timeout: 1h\n  retry: 1\n  \
             extends: .x\n  tags: [docker]\n  cache: {paths: [c]}\n  interruptible: true\n  environment: prod\n  \
             coverage: /x/\n  resource_group: r\n",
        );
        assert_eq!(j.stage, "build");
        assert_eq!(j.image, Some(Image { name: "alpine".into(), ..Image::default() }));
        assert_eq!(j.services.len(), 1);
        assert_eq!((j.before_script, j.script, j.after_script), (vec!["b".into()], vec!["s".into()], vec!["a".into()]));
        assert_eq!(j.variables, [Variable { name: "A".into(), value: "1".into() }]);
        assert_eq!(j.needs, Some(vec![Need { job: "x".into(), artifacts: true, optional: false }]));
        assert_eq!(j.dependencies, Some(vec!["x".into()]));
        assert_eq!(j.artifacts.map(|a| a.paths), Some(vec!["d".into()]));
        assert_eq!(j.rules.len(), 1);
        assert_eq!(j.when, When::OnFailure);
        assert_eq!(j.allow_failure, AllowFailure::ExitCodes(vec![3]));
        assert_eq!(j.timeout, Some(Duration::from_secs(3600)));
        assert_eq!(j.retry, 1);
    }

    #[test]
    fn manual_jobs_may_fail_unless_they_say_otherwise() {
        assert_eq!(job("j:\n  script: x\n  when: manual\n").allow_failure, AllowFailure::Yes);
        assert_eq!(job("j:\n  script: x\n  when: manual\n  allow_failure: false\n").allow_failure, AllowFailure::No);
    }

    #[test]
    fn needs_empty_list_and_lines() {
        let p = job_with("j:\n  script: x\n  needs: []\n", &Defaults::default()).unwrap();
        assert_eq!(p.job.needs, Some(vec![]));
        let p = job_with("j:\n  script: x\n  stage: build\n  needs:\n    - a\n    - job: b\n", &Defaults::default())
            .unwrap();
        assert_eq!(p.needs_at, [(5, "j.needs[0]".to_owned()), (6, "j.needs[1]".to_owned())]);
        assert_eq!(p.stage_at, Some((3, "j.stage".to_owned())));
    }

    #[test]
    fn defaults_fill_what_the_job_leaves_out() {
        let d = defaults(
            "default:\n  image: ruby\n  services: [pg]\n  before_script: [setup]\n  after_script: [cleanup]\n  \
             artifacts: {paths: [log]}\n  timeout: 10m\n  retry: 2\n  tags: [x]\n  interruptible: true\n  cache: {}\n",
        );
        let j = job_with("j:\n  script: x\n  image: alpine\n  before_script: []\n", &d).unwrap().job;
        assert_eq!(j.image.map(|i| i.name), Some("alpine".into()));
        assert!(j.before_script.is_empty(), "an explicit empty list overrides the default");
        assert_eq!(j.after_script, ["cleanup"]);
        assert_eq!(j.services.len(), 1);
        assert_eq!(j.artifacts.map(|a| a.paths), Some(vec!["log".into()]));
        assert_eq!((j.timeout, j.retry), (Some(Duration::from_secs(600)), 2));
    }

    #[test]
    fn inherit_default() {
        let d = defaults("default:\n  image: ruby\n  before_script: [setup]\n");
        let j = job_with("j:\n  script: x\n  inherit: {default: false}\n", &d).unwrap().job;
        assert_eq!((j.image, j.before_script.len()), (None, 0));
        let j = job_with("j:\n  script: x\n  inherit: {default: [image]}\n", &d).unwrap().job;
        assert_eq!((j.image.map(|i| i.name), j.before_script.len()), (Some("ruby".into()), 0));
        let j = job_with("j:\n  script: x\n  inherit: {default: true, variables: true}\n", &d).unwrap().job;
        assert_eq!((j.before_script, j.inherit_variables), (vec!["setup".to_string()], None));
        let j = job_with("j:\n  script: x\n  inherit:\n    variables: false\n", &d).unwrap().job;
        assert_eq!((j.image.map(|i| i.name), j.inherit_variables), (Some("ruby".into()), Some(vec![])));
        let j = job_with("j:\n  script: x\n  inherit: {variables: [A, B]}\n", &d).unwrap().job;
        assert_eq!(j.inherit_variables, Some(vec!["A".to_string(), "B".to_string()]));
        let e = job_with("j:\n  script: x\n  inherit:\n    variables: {A: 1}\n", &d).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(4), "j.inherit.variables"));
        assert!(e.message.contains("true, false or a list of variable names"), "{e}");
        let e = job_with("j:\n  script: x\n  inherit: {default: [imag]}\n", &d).unwrap_err();
        assert!(e.message.contains("`imag` is not a `default:` key"), "{e}");
    }

    #[test]
    fn cache_from_default_unless_the_job_sets_or_refuses_it() {
        let d = defaults("default:\n  image: ruby\n  cache: {key: deps, paths: [vendor/]}\n");
        let j = job_with("j:\n  script: x\n", &d).unwrap().job;
        assert_eq!(j.cache.len(), 1);
        assert_eq!(j.cache[0].paths, ["vendor/"]);
        let j = job_with("j:\n  script: x\n  cache: [{paths: [a]}, {key: b, paths: [b]}]\n", &d).unwrap().job;
        assert_eq!(j.cache.len(), 2);
        let j = job_with("j:\n  script: x\n  cache: []\n", &d).unwrap().job;
        assert!(j.cache.is_empty());
        let j = job_with("j:\n  script: x\n  inherit: {default: [image]}\n", &d).unwrap().job;
        assert!(j.cache.is_empty());
        let j = job_with("j:\n  script: x\n  inherit: {default: [cache]}\n", &d).unwrap().job;
        assert_eq!(j.cache.len(), 1);
        let e = job_with("j:\n  script: x\n  cache: {key: ../../x}\n", &d).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "j.cache.key"));
    }

    #[test]
    fn default_errors() {
        let map = top("default:\n  image: ruby\n  variables: {A: 1}\n");
        let e = Defaults::read(&Field::entry("", map.get("default").unwrap())).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "default.variables"));
        assert!(e.message.contains("unknown key (accepted: after_script, artifacts, before_script, cache"), "{e}");
        let map = top("default:\n  image: [x]\n");
        let e = Defaults::read(&Field::entry("", map.get("default").unwrap())).unwrap_err();
        assert_eq!(e.key, "default.image");
    }

    fn names(jobs: &[ParsedJob]) -> Vec<&str> {
        jobs.iter().map(|p| p.job.name.as_str()).collect()
    }

    fn instances_of(text: &str) -> Vec<ParsedJob> {
        instances(job_with(text, &Defaults::default()).unwrap_or_else(|e| panic!("{text}: {e}")))
    }

    #[test]
    fn parallel_count_makes_numbered_instances() {
        let jobs = instances_of("build:\n  script: x\n  stage: build\n  variables: {A: a}\n  parallel: 3\n");
        assert_eq!(names(&jobs), ["build 1/3", "build 2/3", "build 3/3"]);
        for (i, p) in jobs.iter().enumerate() {
            let instance = p.job.instance.as_ref().unwrap();
            assert_eq!((instance.base.as_str(), instance.index, instance.total), ("build", i as u32 + 1, 3));
            assert_eq!(p.job.stage, "build");
            assert_eq!(p.job.variables, [Variable { name: "A".into(), value: "a".into() }]);
            assert_eq!(p.stage_at, Some((3, "build.stage".to_owned())));
            assert_eq!(p.parallel, None);
        }
        assert_eq!(names(&instances_of("t:\n  script: x\n  parallel: 1\n")), ["t 1/1"]);
        assert_eq!(instances_of("t:\n  script: x\n  parallel: 200\n").len(), 200);
        let plain = instances_of("t:\n  script: x\n");
        assert_eq!((names(&plain), plain[0].job.instance.clone()), (vec!["t"], None));
    }

    #[test]
    fn parallel_matrix_makes_the_product_of_each_entry() {
        let jobs = instances_of(
            "deploy:\n  script: x\n  variables: {PROVIDER: none, KEEP: k}\n  parallel:\n    matrix:\n      \
             - PROVIDER: aws\n        STACK: [monitoring, app1]\n      - PROVIDER: [gcp, 10]\n        STACK: data\n",
        );
        assert_eq!(
            names(&jobs),
            ["deploy: [aws, monitoring]", "deploy: [aws, app1]", "deploy: [gcp, data]", "deploy: [10, data]"]
        );
        let vars = |p: &ParsedJob| -> Vec<(String, String)> {
            p.job.variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect()
        };
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
        };
        assert_eq!(vars(&jobs[1]), pairs(&[("PROVIDER", "aws"), ("KEEP", "k"), ("STACK", "app1")]));
        assert_eq!(vars(&jobs[3]), pairs(&[("PROVIDER", "10"), ("KEEP", "k"), ("STACK", "data")]));
        let nodes: Vec<(u32, u32)> =
            jobs.iter().map(|p| p.job.instance.as_ref().map(|i| (i.index, i.total)).unwrap()).collect();
        assert_eq!(nodes, [(1, 4), (2, 4), (3, 4), (4, 4)]);
        // The limit counts every entry's instances.
        let e = job_err(
            "t:\n  script: x\n  parallel:\n    matrix:\n      - {A: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], \
             B: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n      - {A: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], \
             B: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], C: [x, y]}\n",
        );
        assert_eq!((e.line, e.key.as_str()), (Some(6), "t.parallel.matrix[1].C"));
        assert!(e.message.contains("the matrix makes more than 200 jobs"), "{e}");
    }

    #[test]
    fn job_errors_name_line_and_key() {
        let cases = [
            ("build:\n  stage: build\n", 1, "build", "`build` has no `script`"),
            ("build:\n  script: []\n", 2, "build.script", "script is empty"),
            ("build:\n  script: {a: b}\n", 2, "build.script", "expected a string or a list of strings"),
            (
                "build:\n  script: x\n  scripts: y\n",
                3,
                "build.scripts",
                "unknown key (accepted: after_script, allow_failure",
            ),
            ("build:\n  script: x\n  rules: []\n  only: [main]\n", 4, "build.only", "may not be used with `rules`"),
            ("build:\n  script: x\n  except: [main]\n  rules: [{when: always}]\n", 3, "build.except", "with `rules`"),
            ("build:\n  script: x\n  parallel: 0\n", 3, "build.parallel", "`parallel` takes 1 to 200 jobs, not 0"),
            ("build:\n  script: x\n  parallel: 201\n", 3, "build.parallel", "takes 1 to 200 jobs, not 201"),
            ("build:\n  script: x\n  parallel: -2\n", 3, "build.parallel", "not -2"),
            ("build:\n  script: x\n  parallel: '3'\n", 3, "build.parallel", "expected a number of jobs (1 to 200)"),
            ("build:\n  script: x\n  parallel: 2.5\n", 3, "build.parallel", "found a number"),
            ("build:\n  script: x\n  parallel: [2]\n", 3, "build.parallel", "or {matrix: [...]}, found a list"),
            ("build:\n  script: x\n  parallel: {}\n", 3, "build.parallel", "missing `matrix`"),
            (
                "build:\n  script: x\n  parallel: {count: 2}\n",
                3,
                "build.parallel.count",
                "unknown key (accepted: matrix)",
            ),
            ("build:\n  script: x\n  parallel:\n    matrix: []\n", 4, "build.parallel.matrix", "the matrix is empty"),
            (
                "build:\n  script: x\n  parallel:\n    matrix: A\n",
                4,
                "build.parallel.matrix",
                "expected a list of maps",
            ),
            (
                "build:\n  script: x\n  parallel:\n    matrix:\n      - {}\n",
                5,
                "build.parallel.matrix[0]",
                "empty matrix entry",
            ),
            (
                "build:\n  script: x\n  parallel:\n    matrix:\n      - A\n",
                5,
                "build.parallel.matrix[0]",
                "expected a map",
            ),
            (
                "build:\n  script: x\n  parallel:\n    matrix:\n      - A: []\n",
                5,
                "build.parallel.matrix[0].A",
                "no values",
            ),
            (
                "build:\n  script: x\n  parallel:\n    matrix:\n      - A: [{x: 1}]\n",
                5,
                "build.parallel.matrix[0].A[0]",
                "expected a string, found a map",
            ),
            (
                "build:\n  script: x\n  parallel:\n    matrix:\n      - A: {x: 1}\n",
                5,
                "build.parallel.matrix[0].A",
                "expected a string or a list of strings",
            ),
            (
                "build:\n  script: x\n  parallel:\n    matrix:\n      - A B: x\n",
                5,
                "build.parallel.matrix[0].A B",
                "invalid variable name",
            ),
            (
                "b:\n  trigger: {include: x.yml, project: g/p}\n",
                2,
                "b.trigger.project",
                "`include` (a child pipeline) or `project`, not both",
            ),
            (
                "b:\n  trigger: {include: x.yml, branch: main}\n",
                2,
                "b.trigger.branch",
                "`branch` is for `trigger: project`",
            ),
            ("b:\n  trigger: {include: x.yml, strategy: wait}\n", 2, "b.trigger.strategy", "use depend or mirror"),
            (
                "b:\n  trigger:\n    include:\n      - artifact: g.yml\n        job: gen\n      - local: x.yml\n",
                6,
                "b.trigger.include[1]",
                "only `{artifact, job}` entries",
            ),
            ("b:\n  trigger:\n    include: [{artifact: g.yml}]\n", 3, "b.trigger.include[0]", "missing `job`"),
            ("b:\n  trigger: {project: g/p, strategy: wait}\n", 2, "b.trigger.strategy", "use depend or mirror"),
            ("b:\n  trigger: {branch: main}\n", 2, "b.trigger", "missing `project`"),
            ("b:\n  script: x\n  trigger: g/p\n", 2, "b.script", "runs no `script`"),
            ("build:\n  script: x\n  secrets: {}\n", 3, "build.secrets", "--env"),
            ("build:\n  script: x\n  when: delayed\n", 3, "build.when", "needs `start_in`"),
            ("build:\n  script: x\n  start_in: 1h\n", 3, "build.start_in", "only with `when: delayed`"),
            ("build:\n  script: x\n  when: delayed\n  start_in: 8 days\n", 4, "build.start_in", "a week or less"),
            ("build:\n  script: x\n  stage: [a]\n", 3, "build.stage", "expected a stage name"),
            ("build: echo\n", 1, "build", "`build` is not a job: expected a map with `script`, found a string"),
            ("build:\n", 1, "build", "found null"),
        ];
        for (text, line, key, want) in cases {
            let e = job_err(text);
            assert_eq!((e.line, e.key.as_str()), (Some(line), key), "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
        }
        // The accepted list names the ignored keys too.
        let e = job_err("build:\n  script: x\n  scripts: y\n");
        assert!(e.message.contains("tags") && e.message.contains("when") && !e.message.contains("secrets"), "{e}");
    }
}
