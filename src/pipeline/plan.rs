//! Pure: a parsed [`Pipeline`] plus the facts of this run (project, git, command-line variables,
//! jobs named) → an ordered [`Plan`]: which jobs run, what each waits for, whose artifacts it
//! gets, its final variables and images. Evaluates `workflow: rules` and (through `decide`) job
//! `rules`/`only`/`except`, keeping each job's decision for `--list`; validates
//! `needs`/`dependencies` (unknown jobs, later stages, cycles). No I/O: the project's file list
//! (for `rules: exists`) comes in as data. Called by `cli::run`; `execute` runs the result.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::cache;
pub use super::changes::ChangedPaths;
use super::decide;
use super::error::PipelineError;
use super::facts::{RunFacts, BUILDS_DIR, DEFAULT_TIMEOUT};
use super::model::{
    AllowFailure, Artifacts, Cache, Environment, Image, Job, Location, Need, Pipeline, Service, Variable, When,
};
use super::predefined::{job_predefined, pipeline_variables};
pub use super::predefined::{project_path_from_dir, validate_project_path};
use super::variables::{self, VarSet};

/// `retry` is capped at 2 by GitLab.
const MAX_RETRY: u32 = 2;

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub pipeline_id: u64,
    pub project_dir: PathBuf,
    pub project_path: String,
    /// `/builds/<project path>`.
    pub project_dir_in_job: String,
    /// In an order where every job comes after those it waits for.
    pub jobs: Vec<PlannedJob>,
    /// Set when `workflow: rules` decided that no pipeline runs; `jobs` is empty then.
    pub excluded_by_workflow: Option<Location>,
    /// `workflow: name`, expanded (`CI_PIPELINE_NAME`).
    pub name: Option<String>,
    /// Every job of the pipeline in file order, with what its rules decided (`glci run --list`).
    pub decisions: Vec<JobDecision>,
    /// Jobs shown as skipped with the reason (`trigger: project`), for `cli` to say.
    pub notes: Vec<String>,
    /// Names set by `--env`/`--env-file`: a dotenv report does not override them.
    pub cli_variables: Vec<String>,
}

/// One job as its rules (or `only`/`except`) left it, kept or not.
#[derive(Clone, Debug, PartialEq)]
pub struct JobDecision {
    pub name: String,
    pub stage: String,
    /// `Never`: not in the pipeline.
    pub when: When,
    pub allow_failure: AllowFailure,
    /// `None`: stage order.
    pub needs: Option<Vec<String>>,
    pub reason: String,
}

/// Whether a job runs, and on what condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunWhen {
    /// When every job it waits for succeeded (or failed with `allow_failure`).
    OnSuccess,
    /// When one of them failed.
    OnFailure,
    Always,
    /// A `when: manual` job nobody named: shown, not run.
    Manual,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedJob {
    pub name: String,
    pub stage: String,
    pub location: Location,
    /// `CI_JOB_ID`.
    pub id: u64,
    /// `None` only for a job that does not run (`RunWhen::Manual`).
    pub image: Option<Image>,
    pub services: Vec<PlannedService>,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    /// Final, expanded, predefined ones included.
    pub variables: VarSet,
    /// Indices into `Plan::jobs` (all earlier in the list).
    pub waits_for: Vec<usize>,
    /// `waits_for` comes from `needs:` (not from stage order).
    pub uses_needs: bool,
    /// Indices into `Plan::jobs` whose artifacts are copied in before the job starts.
    pub artifacts_from: Vec<usize>,
    pub when: RunWhen,
    pub allow_failure: AllowFailure,
    pub timeout: Duration,
    /// Extra attempts after a failure (0–2).
    pub retry: u32,
    pub artifacts: Option<Artifacts>,
    /// `cache:` with variables expanded (`pipeline::cache::expand`).
    pub cache: Vec<Cache>,
    /// `image:` as written, when it names a variable and the job receives a dotenv report:
    /// expanded again when the job starts (`execute::dotenv`).
    pub image_template: Option<String>,
    /// `services:` names as written, under the same condition (empty otherwise).
    pub service_templates: Vec<String>,
    /// `environment:`, expanded, action and tier filled in.
    pub environment: Option<Environment>,
    /// The `coverage:` pattern (without slashes).
    pub coverage: Option<String>,
    /// `resource_group:`, expanded: jobs of one group never run at once.
    pub resource_group: Option<String>,
    /// `type: file` variables: (path in the container, contents); the variable holds the path.
    pub file_variables: Vec<(String, String)>,
    /// Said in the job's log when it starts (what was left out and why).
    pub notes: Vec<String>,
    /// `when: delayed`: waits this long once it may run.
    pub start_in: Option<Duration>,
    /// Which failures `retry` is for.
    pub retry_on: crate::pipeline::model::RetryOn,
    /// A trigger job (issue 17): the downstream pipeline it creates instead of a container
    /// (filled in by `downstream::plan`).
    pub downstream: Option<Box<PlannedDownstream>>,
    /// `needs: pipeline: $PARENT_PIPELINE_ID`: indices into the parent's `Plan::jobs` whose
    /// artifacts are copied in too (a child pipeline's job).
    pub parent_artifacts: Vec<usize>,
    /// `environment: url` as written, when it names a variable and the job receives or writes a
    /// dotenv report: expanded again with those variables (`execute::dotenv`): when it starts,
    /// into `CI_ENVIRONMENT_URL`; after it, as GitLab sets an environment's URL from the job's own report.
    pub environment_url_template: Option<String>,
}

/// The downstream pipeline of a trigger job.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedDownstream {
    /// `strategy: depend`: the trigger job's status is the child's.
    pub depend: bool,
    pub child: ChildPlan,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ChildPlan {
    /// Planned with the parent (`trigger: include` of files); its job names carry the
    /// trigger's (`trigger: job`). No jobs: GitLab cannot create it, the trigger job fails.
    Ready(Box<Plan>),
    /// A dynamic child: composed from artifacts when the trigger job starts.
    Dynamic(Box<DynamicChild>),
    /// `trigger: project` of a project mapped in `[gitlab.projects]`: its checkout's pipeline,
    /// read and planned when the trigger job starts.
    Project(Box<ProjectChild>),
}

/// A multi-project downstream pipeline to create (issue 17).
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectChild {
    /// The downstream project's path and its local checkout.
    pub project: String,
    pub dir: PathBuf,
    /// `branch:` (expanded): the ref the downstream pipeline runs for; `None`: the checkout's
    /// default branch, as GitLab runs the project's default branch.
    pub branch: Option<String>,
    /// The trigger's forwarded variables (its pipeline variables), in order.
    pub variables: Vec<(String, String)>,
    pub pipeline_id: u64,
    /// Levels below the root.
    pub depth: usize,
    /// Its job names' prefix (`trigger: `).
    pub prefix: String,
}

/// What planning a dynamic child pipeline needs once its files exist.
#[derive(Clone, Debug)]
pub struct DynamicChild {
    /// `(index into the parent's Plan::jobs, path in its artifacts)`, in the trigger's order.
    pub files: Vec<(usize, String)>,
    /// The child's facts (its pipeline id, forwarded variables, `CI_PIPELINE_SOURCE`).
    pub facts: RunFacts,
    /// Levels below the root.
    pub depth: usize,
    /// Its job names' prefix (`trigger: `).
    pub prefix: String,
    /// The prefix of the parent's job names.
    pub parent_prefix: String,
}

/// Equal when they read the same files at the same place (the facts are the run's).
impl PartialEq for DynamicChild {
    fn eq(&self, other: &Self) -> bool {
        (&self.files, self.depth, &self.prefix, self.facts.pipeline_id)
            == (&other.files, other.depth, &other.prefix, other.facts.pipeline_id)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlannedService {
    /// Expanded image name.
    pub image: String,
    /// Explicit aliases and the ones GitLab derives from the image name.
    pub aliases: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// The job's variables with the service's own on top.
    pub variables: VarSet,
    /// `docker: user` and `docker: platform`, variables expanded.
    pub user: Option<String>,
    pub platform: Option<String>,
    pub pull_policy: Vec<crate::pipeline::model::PullPolicy>,
}

fn set_of(vars: &[Variable]) -> VarSet {
    let mut set = VarSet::new();
    for v in vars {
        set.set(&v.name, v.value.clone());
    }
    set
}

fn cli_set(facts: &RunFacts) -> VarSet {
    let mut set = VarSet::new();
    for (name, value) in &facts.cli_variables {
        set.set(name, value.clone());
    }
    set
}

/// A job that passed its rules, before selection.
struct Candidate<'p> {
    job: &'p Job,
    when: When,
    allow_failure: AllowFailure,
    /// Rule variables (raw).
    rule_variables: VarSet,
    /// The job's `needs`, or its matching rule's.
    needs: Option<Vec<Need>>,
    /// `when: delayed` (the job's or its rule's): the wait.
    start_in: Option<Duration>,
}

fn error_at(location: &Location, key: impl Into<String>, message: impl Into<String>) -> PipelineError {
    PipelineError::new(&location.file, location.line.max(1), key, message)
}

/// Plans the run. Configuration problems (unknown jobs named, `needs` on missing or later jobs,
/// cycles, a job without image) are errors naming where they were written.
pub fn plan(pipeline: &Pipeline, facts: &RunFacts) -> Result<Plan, PipelineError> {
    let mut pipeline_vars = pipeline_variables(pipeline, facts);
    let global = set_of(&pipeline.variables);
    let cli = cli_set(facts);
    let project_dir_in_job = format!("{BUILDS_DIR}/{}", facts.project_path);
    let mut plan = Plan {
        pipeline_id: facts.pipeline_id,
        project_dir: facts.project_dir.clone(),
        project_path: facts.project_path.clone(),
        project_dir_in_job,
        jobs: Vec::new(),
        excluded_by_workflow: None,
        name: None,
        decisions: Vec::new(),
        notes: Vec::new(),
        cli_variables: facts.cli_variables.iter().map(|(name, _)| name.clone()).collect(),
    };

    // workflow: rules decide whether there is a pipeline at all, and add variables.
    let mut workflow_vars = VarSet::new();
    if !pipeline.workflow_rules.is_empty() {
        let vars = variables::resolve(&[(pipeline_vars.clone(), true), (global.clone(), false), (cli.clone(), true)]);
        match decide::first_match(&pipeline.workflow_rules, &vars, facts, "workflow")?.map(|(_, r)| r) {
            Some(rule) if rule.when != Some(When::Never) => workflow_vars = set_of(&rule.variables),
            Some(rule) => {
                plan.excluded_by_workflow = Some(rule.location.clone());
                return Ok(plan);
            }
            None => {
                let location = pipeline.workflow_rules[0].location.clone();
                plan.excluded_by_workflow = Some(Location { line: location.line.saturating_sub(1), ..location });
                return Ok(plan);
            }
        }
    }
    // `workflow: name` → CI_PIPELINE_NAME, with the global, workflow-rule and --env variables.
    if let Some(name) = &pipeline.name {
        let vars = variables::resolve(&[
            (pipeline_vars.clone(), true),
            (global.clone(), false),
            (workflow_vars.clone(), false),
            (cli.clone(), true),
        ]);
        let name = variables::expand(name, &|n: &str| vars.get(n).map(String::from));
        pipeline_vars.set("CI_PIPELINE_NAME", name.clone());
        plan.name = Some(name);
    }

    // Job rules: which jobs are in the pipeline.
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    let mut excluded: HashMap<&str, &Job> = HashMap::new();
    for (index, job) in pipeline.jobs.iter().enumerate() {
        let predefined = job_predefined(&pipeline_vars, job, job_id(facts.pipeline_id, index), false);
        let layers = [
            (predefined, true),
            (inherited(&global, job), false),
            (inherited(&workflow_vars, job), false),
            (set_of(&job.variables), false),
            (project_layer(facts, None), false),
            (cli.clone(), true),
        ];
        let vars = variables::resolve(&layers);
        let decision = decide::job(job, &vars, facts, !pipeline.workflow_rules.is_empty())?;
        let needs = expand_instances(decision.needs.clone(), pipeline);
        plan.decisions.push(JobDecision {
            name: job.name.clone(),
            stage: job.stage.clone(),
            when: decision.when,
            allow_failure: decision.allow_failure.clone(),
            needs: needs.as_ref().map(|n| n.iter().map(|n| n.job.clone()).collect()),
            reason: decision.reason.clone(),
        });
        if job.trigger.is_some() && decision.reason.starts_with("trigger:") {
            plan.notes.push(format!(
                "{}:{}: {}: {}",
                job.location.file.display(),
                job.location.line,
                job.name,
                decision.reason
            ));
        }
        if decision.when == When::Never {
            excluded.insert(job.name.as_str(), job);
            continue;
        }
        candidates.push(Candidate {
            job,
            when: decision.when,
            allow_failure: decision.allow_failure,
            rule_variables: decision.rule_variables,
            needs,
            start_in: decision.start_in,
        });
    }

    let by_name: HashMap<&str, usize> = candidates.iter().enumerate().map(|(i, c)| (c.job.name.as_str(), i)).collect();
    let stage_of = |c: &Candidate<'_>| pipeline.stage_index(&c.job.stage).unwrap_or(usize::MAX);
    for c in &candidates {
        if pipeline.stage_index(&c.job.stage).is_none() {
            return Err(error_at(
                &c.job.location,
                format!("{}.stage", c.job.name),
                format!("stage `{}` is not in `stages` ({})", c.job.stage, pipeline.stages.join(", ")),
            ));
        }
    }

    // What each candidate waits for, validated.
    let mut waits: Vec<Vec<usize>> = Vec::with_capacity(candidates.len());
    for c in &candidates {
        let job = c.job;
        let mine = stage_of(c);
        let list = match &c.needs {
            Some(needs) => {
                let mut list = Vec::new();
                for need in needs {
                    let key = format!("{}.needs", job.name);
                    match by_name.get(need.job.as_str()) {
                        Some(&i) => {
                            if stage_of(&candidates[i]) > mine {
                                return Err(error_at(
                                    &job.location,
                                    key,
                                    format!(
                                        "job `{}` needs `{}`, which is in a later stage (`{}`)",
                                        job.name, need.job, candidates[i].job.stage
                                    ),
                                ));
                            }
                            list.push(i);
                        }
                        None if need.optional => {}
                        // A skipped trigger job: its reason is shown, the need is dropped.
                        None if excluded.get(need.job.as_str()).is_some_and(|j| j.trigger.is_some()) => {}
                        None if excluded.contains_key(need.job.as_str()) => {
                            return Err(error_at(
                                &job.location,
                                key,
                                format!(
                                    "job `{}` needs `{}`, which its rules leave out of this pipeline \
                                     (make the need `optional: true`?)",
                                    job.name, need.job
                                ),
                            ));
                        }
                        None => {
                            return Err(error_at(
                                &job.location,
                                key,
                                format!("job `{}` needs `{}`, which is not a job of this pipeline", job.name, need.job),
                            ))
                        }
                    }
                }
                list
            }
            None => candidates.iter().enumerate().filter(|(_, o)| stage_of(o) < mine).map(|(i, _)| i).collect(),
        };
        if let Some(deps) = &job.dependencies {
            for dep in deps {
                let ok = by_name.get(dep.as_str()).is_some_and(|&i| stage_of(&candidates[i]) <= mine);
                if !ok {
                    return Err(error_at(
                        &job.location,
                        format!("{}.dependencies", job.name),
                        format!("job `{}` depends on `{dep}`, which is not a job of an earlier stage", job.name),
                    ));
                }
            }
        }
        waits.push(list);
    }
    let order = topological_order(&candidates, &waits, &stage_of)?;

    // Selection: the named jobs and, transitively, what they wait for and take artifacts from.
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    let named: BTreeSet<usize>;
    if facts.selected.is_empty() {
        chosen.extend(0..candidates.len());
        named = BTreeSet::new();
    } else {
        let mut stack = Vec::new();
        for name in &facts.selected {
            match by_name.get(name.as_str()) {
                Some(&i) => stack.push(i),
                None => {
                    // A `parallel:` job named as written: every instance its rules keep.
                    let before = stack.len();
                    stack.extend(
                        candidates.iter().enumerate().filter(|(_, c)| is_instance_of(c.job, name)).map(|(i, _)| i),
                    );
                    if stack.len() == before {
                        let left_out = excluded.get(name.as_str()).copied().or_else(|| {
                            pipeline
                                .jobs
                                .iter()
                                .find(|j| is_instance_of(j, name) && excluded.contains_key(j.name.as_str()))
                        });
                        return Err(unknown_job(pipeline, name, left_out));
                    }
                }
            }
        }
        named = stack.iter().copied().collect();
        while let Some(i) = stack.pop() {
            if !chosen.insert(i) {
                continue;
            }
            let c = &candidates[i];
            let via_needs = c.needs.is_some();
            for &w in &waits[i] {
                // Without `needs`, a manual job of an earlier stage does not block (GitLab's
                // manual jobs are allowed to fail), so it is not pulled in.
                if via_needs || candidates[w].when != When::Manual {
                    stack.push(w);
                }
            }
            for dep in c.job.dependencies.iter().flatten() {
                if let Some(&d) = by_name.get(dep.as_str()) {
                    stack.push(d);
                }
            }
        }
    }

    // Build the planned jobs in topological order.
    let mut position: HashMap<usize, usize> = HashMap::new();
    for &i in order.iter().filter(|i| chosen.contains(i)) {
        let c = &candidates[i];
        let job = c.job;
        let when = match c.when {
            When::OnSuccess => RunWhen::OnSuccess,
            When::OnFailure => RunWhen::OnFailure,
            When::Always => RunWhen::Always,
            // Named, or pulled in by a named job's `needs`/`dependencies`: it runs.
            When::Manual if !named.is_empty() => RunWhen::OnSuccess,
            When::Manual => RunWhen::Manual,
            When::Never => continue,
        };
        let index = pipeline.jobs.iter().position(|j| j.name == job.name).unwrap_or(i);
        let id = job_id(facts.pipeline_id, index);
        let predefined = job_predefined(&pipeline_vars, job, id, when != RunWhen::Manual && c.when == When::Manual);
        let mut layers = vec![
            (predefined, true),
            (inherited(&global, job), false),
            (inherited(&workflow_vars, job), false),
            (set_of(&job.variables), false),
            (c.rule_variables.clone(), false),
            (cli.clone(), true),
        ];
        // The variables file's values follow the job's environment (its scope), so the name
        // is found first, without them.
        let environment_name = job.run_keys.environment.as_ref().map(|e| {
            let vars = variables::resolve(&layers);
            variables::expand(&e.name, &|n: &str| vars.get(n).map(String::from))
        });
        layers.insert(layers.len() - 1, (project_layer(facts, environment_name.as_deref()), false));
        let vars = variables::resolve(&layers);
        let lookup = |name: &str| vars.get(name).map(String::from);
        let default_image = facts.default_image.as_ref().map(|name| Image { name: name.clone(), ..Image::default() });
        let image = job.image.as_ref().or(default_image.as_ref()).map(|img| Image {
            name: variables::expand(&img.name, &lookup),
            user: img.user.as_ref().map(|u| variables::expand(u, &lookup)),
            platform: img.platform.as_ref().map(|p| variables::expand(p, &lookup)),
            ..img.clone()
        });
        let image_missing = image.as_ref().is_none_or(|i| i.name.trim().is_empty())
            && when != RunWhen::Manual
            && job.downstream.is_none();
        let mut variables = vars.clone();
        if let Some(image) = &image {
            variables.set("CI_JOB_IMAGE", image.name.clone());
        }
        let environment = job.run_keys.environment.as_ref().map(|e| environment_variables(e, &mut variables));
        let file_variables =
            file_variables(facts, environment_name.as_deref(), &cli, &plan.project_dir_in_job, &mut variables);
        let mut notes = Vec::new();
        let mut services = Vec::new();
        for written in &job.services {
            let service = plan_service(written, &variables);
            // GitLab leaves out a service whose name expands to nothing.
            if service.image.trim().is_empty() {
                notes.push(format!(
                    "NOTE: service `{}` is empty after variable expansion: left out, as GitLab does",
                    written.name
                ));
            } else {
                services.push(service);
            }
        }
        let mut waits_for: Vec<usize> = waits[i].iter().filter_map(|w| position.get(w).copied()).collect();
        waits_for.sort_unstable();
        let artifacts_from: Vec<usize> = match (&job.dependencies, &c.needs) {
            (Some(deps), _) => {
                deps.iter().filter_map(|d| by_name.get(d.as_str())).filter_map(|d| position.get(d)).copied().collect()
            }
            (None, Some(needs)) => needs
                .iter()
                .filter(|n| n.artifacts)
                .filter_map(|n| by_name.get(n.job.as_str()))
                .filter_map(|d| position.get(d))
                .copied()
                .collect(),
            (None, None) => waits_for.clone(),
        };
        let cache = job
            .cache
            .iter()
            .map(|c| {
                cache::expand(c, &lookup, &plan.project_dir_in_job)
                    .map_err(|why| error_at(&c.location, format!("{}.cache.policy", job.name), why))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Earlier jobs' artifacts first: a later job's files win where both have one.
        let mut artifacts_from = artifacts_from;
        artifacts_from.sort_unstable();
        artifacts_from.dedup();
        // A variable from a dotenv report is known only when its job has run (issue 16).
        let gets_dotenv =
            artifacts_from.iter().any(|&p| plan.jobs[p].artifacts.as_ref().is_some_and(|a| !a.dotenv.is_empty()));
        let image_template =
            job.image.as_ref().map(|i| i.name.clone()).filter(|name| gets_dotenv && name.contains('$'));
        if image_missing && image_template.is_none() {
            return Err(error_at(
                &job.location,
                format!("{}.image", job.name),
                "no image: set `image:` on the job or under `default:`, or a default image with --default-image or \
                 `[run] default_image` (glci runs every job in a container)",
            ));
        }
        let service_templates =
            if gets_dotenv { job.services.iter().map(|s| s.name.clone()).collect() } else { Vec::new() };
        position.insert(i, plan.jobs.len());
        plan.jobs.push(PlannedJob {
            name: job.name.clone(),
            stage: job.stage.clone(),
            location: job.location.clone(),
            id,
            image,
            services,
            before_script: job.before_script.clone(),
            script: job.script.clone(),
            after_script: job.after_script.clone(),
            variables,
            waits_for,
            uses_needs: c.needs.is_some(),
            artifacts_from,
            when,
            allow_failure: c.allow_failure.clone(),
            timeout: job.timeout.unwrap_or(DEFAULT_TIMEOUT),
            retry: job.retry.min(MAX_RETRY),
            artifacts: job.artifacts.as_ref().map(|a| expand_artifacts(a, &lookup, &plan.project_dir_in_job)),
            cache,
            image_template,
            service_templates,
            environment,
            coverage: job.run_keys.coverage.clone(),
            resource_group: job.run_keys.resource_group.as_ref().map(|g| variables::expand(g, &lookup)),
            file_variables,
            notes,
            start_in: c.start_in,
            retry_on: job.run_keys.retry_on.clone(),
            downstream: None,
            parent_artifacts: Vec::new(),
            environment_url_template: job.run_keys.environment.as_ref().and_then(|e| e.url.clone()).filter(|url| {
                url.contains('$') && (gets_dotenv || job.artifacts.as_ref().is_some_and(|a| !a.dotenv.is_empty()))
            }),
        });
    }
    Ok(plan)
}

/// The variables file's values for a job in `environment` (issue 15).
fn project_layer(facts: &RunFacts, environment: Option<&str>) -> VarSet {
    let mut set = VarSet::new();
    for variable in &facts.project_variables {
        if let Some(value) = variable.value_for(environment) {
            set.set(&variable.name, value.to_string());
        }
    }
    set
}

/// `type: file` variables of the variables file that the command line does not override: each
/// becomes the path of a file beside the project (`<CI_PROJECT_DIR>.tmp/NAME`, where the runner
/// writes them), holding the value.
fn file_variables(
    facts: &RunFacts,
    environment: Option<&str>,
    cli: &VarSet,
    project_dir: &str,
    variables: &mut VarSet,
) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let all = &facts.project_variables;
    for (i, variable) in all.iter().enumerate().filter(|(_, v)| v.file) {
        // A later definition of the name (the project's over $GLCI_HOME's) decides alone.
        let overridden = all[i + 1..].iter().any(|later| later.name == variable.name);
        if overridden || cli.get(&variable.name).is_some() || variable.value_for(environment).is_none() {
            continue;
        }
        let Some(contents) = variables.get(&variable.name).map(String::from) else { continue };
        let path = format!("{project_dir}.tmp/{}", variable.name);
        variables.set(&variable.name, path.clone());
        files.retain(|(p, _): &(String, String)| *p != path);
        files.push((path, contents));
    }
    files
}

/// `environment:` expanded with the job's variables, and its `CI_ENVIRONMENT_*` set in them
/// (the URL may use `CI_ENVIRONMENT_SLUG`, so it is expanded last).
fn environment_variables(env: &Environment, vars: &mut VarSet) -> Environment {
    let name = {
        let lookup = |n: &str| vars.get(n).map(String::from);
        variables::expand(&env.name, &lookup)
    };
    let tier = env.tier.clone().unwrap_or_else(|| crate::pipeline::parse::guess_tier(&name).to_string());
    let action = env.action.clone().unwrap_or_else(|| "start".to_string());
    vars.set("CI_ENVIRONMENT_NAME", name.clone());
    vars.set("CI_ENVIRONMENT_SLUG", crate::pipeline::parse::environment_slug(&name));
    vars.set("CI_ENVIRONMENT_TIER", tier.clone());
    vars.set("CI_ENVIRONMENT_ACTION", action.clone());
    let url = env.url.as_ref().map(|u| {
        let lookup = |n: &str| vars.get(n).map(String::from);
        variables::expand(u, &lookup)
    });
    if let Some(url) = &url {
        vars.set("CI_ENVIRONMENT_URL", url.clone());
    }
    Environment { name, url, action: Some(action), tier: Some(tier) }
}

/// `artifacts: paths/exclude` with variables expanded, relative to the project (GitLab allows
/// `$CI_PROJECT_DIR/out`).
fn expand_artifacts(artifacts: &Artifacts, lookup: &dyn Fn(&str) -> Option<String>, project_dir: &str) -> Artifacts {
    let relative = |p: &String| {
        let expanded = variables::expand(p, lookup);
        match expanded.strip_prefix(project_dir) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/').to_string(),
            _ => expanded,
        }
    };
    Artifacts {
        paths: artifacts.paths.iter().map(relative).collect(),
        exclude: artifacts.exclude.iter().map(relative).collect(),
        ..artifacts.clone()
    }
}

/// The global (or workflow-rule) variables `job` takes: `inherit: variables` (GitLab applies
/// it to both, merged, before the job's own).
fn inherited(set: &VarSet, job: &Job) -> VarSet {
    match &job.inherit_variables {
        None => set.clone(),
        Some(names) => {
            let mut out = VarSet::new();
            for (name, value) in set.iter().filter(|(name, _)| names.iter().any(|n| n == name)) {
                out.set(name, value.to_string());
            }
            out
        }
    }
}

/// `rules: needs` naming a `parallel:` job by its written name → all its instances (the job's
/// own `needs` were expanded by `parse`).
fn expand_instances(needs: Option<Vec<Need>>, pipeline: &Pipeline) -> Option<Vec<Need>> {
    let needs = needs?;
    let mut out = Vec::with_capacity(needs.len());
    for need in needs {
        if pipeline.job(&need.job).is_some() {
            out.push(need);
            continue;
        }
        let instances: Vec<&Job> = pipeline.jobs.iter().filter(|j| is_instance_of(j, &need.job)).collect();
        if instances.is_empty() {
            out.push(need);
            continue;
        }
        out.extend(instances.into_iter().map(|j| Need { job: j.name.clone(), ..need.clone() }));
    }
    Some(out)
}

/// Whether `job` is one of the instances of the `parallel:` job written as `name`.
fn is_instance_of(job: &Job, name: &str) -> bool {
    job.instance.as_ref().is_some_and(|instance| instance.base == name)
}

/// `CI_JOB_ID`: unique within the run, derived from the pipeline id and the job's position.
fn job_id(pipeline_id: u64, index: usize) -> u64 {
    pipeline_id.saturating_mul(1000).saturating_add(index as u64 + 1)
}

fn unknown_job(pipeline: &Pipeline, name: &str, excluded: Option<&Job>) -> PipelineError {
    match excluded {
        Some(job) => error_at(
            &job.location,
            name,
            format!("job `{name}` is not in this pipeline: its `rules` (or `when: never`) leave it out"),
        ),
        None => {
            // A `parallel:` job once, by the name it was written with.
            let mut names: Vec<&str> = Vec::new();
            for job in &pipeline.jobs {
                let name = job.instance.as_ref().map_or(job.name.as_str(), |i| i.base.as_str());
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            PipelineError::whole_file(
                &pipeline.file,
                format!(
                    "no job named `{name}` (jobs: {})",
                    if names.is_empty() { "none".into() } else { names.join(", ") }
                ),
            )
        }
    }
}

/// Kahn's algorithm, ties broken by stage then file order; a cycle is an error naming its jobs.
fn topological_order(
    candidates: &[Candidate<'_>],
    waits: &[Vec<usize>],
    stage_of: &dyn Fn(&Candidate<'_>) -> usize,
) -> Result<Vec<usize>, PipelineError> {
    let n = candidates.len();
    let mut remaining: Vec<usize> = waits.iter().map(|w| w.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, list) in waits.iter().enumerate() {
        for &w in list {
            dependents[w].push(i);
        }
    }
    let mut ready: BTreeSet<(usize, usize)> =
        (0..n).filter(|&i| remaining[i] == 0).map(|i| (stage_of(&candidates[i]), i)).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(first) = ready.pop_first() {
        let i = first.1;
        order.push(i);
        for &d in &dependents[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.insert((stage_of(&candidates[d]), d));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    let stuck: Vec<&Candidate<'_>> = (0..n).filter(|&i| remaining[i] > 0).map(|i| &candidates[i]).collect();
    let names: Vec<&str> = stuck.iter().map(|c| c.job.name.as_str()).collect();
    let first = stuck.first().map(|c| c.job).expect("a cycle has at least one job");
    Err(error_at(
        &first.location,
        format!("{}.needs", first.name),
        format!("`needs` form a cycle among: {}", names.join(", ")),
    ))
}

fn plan_service(service: &Service, job_vars: &VarSet) -> PlannedService {
    let lookup = |name: &str| job_vars.get(name).map(String::from);
    let image = variables::expand(&service.name, &lookup);
    let mut aliases: Vec<String> = Vec::new();
    for alias in service.alias.iter().flat_map(|a| a.split(',')) {
        let alias = alias.trim();
        if !alias.is_empty() && !aliases.iter().any(|a| a == alias) {
            aliases.push(alias.to_string());
        }
    }
    for alias in default_aliases(&image) {
        if !aliases.contains(&alias) {
            aliases.push(alias);
        }
    }
    let mut variables = variables::resolve(&[(job_vars.clone(), true), (set_of(&service.variables), false)]);
    // A service is a container of its own; it does not get the job's image name.
    variables.remove("CI_JOB_IMAGE");
    PlannedService {
        image,
        aliases,
        entrypoint: service.entrypoint.clone(),
        command: service.command.clone(),
        user: service.user.as_ref().map(|u| variables::expand(u, &lookup)),
        platform: service.platform.as_ref().map(|p| variables::expand(p, &lookup)),
        pull_policy: service.pull_policy.clone(),
        variables,
    }
}

/// The aliases GitLab derives from a service image: the name without tag or digest, `/` made
/// `__` and, as a second alias, `-` (`registry/group/img:tag` → `registry__group__img`,
/// `registry-group-img`; `postgres:15` → `postgres`; a registry port is dropped).
pub fn default_aliases(image: &str) -> Vec<String> {
    let name = image.split('@').next().unwrap_or(image);
    // The runner drops a registry port (`host:5000/img` → `host/img`), then the tag.
    let name = match name.split_once('/') {
        Some((host, rest)) => match host.split_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => format!("{h}/{rest}"),
            _ => name.to_string(),
        },
        None => name.to_string(),
    };
    let name = match name.rfind(':') {
        Some(colon) => &name[..colon],
        None => name.as_str(),
    };
    let primary = name.replace('/', "__");
    let secondary = name.replace('/', "-");
    let mut out = vec![primary];
    if !out.contains(&secondary) {
        out.push(secondary);
    }
    out.retain(|a| !a.is_empty());
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
