//! Pure: the plan of a pipeline with its child pipelines (issue 17). [`plan`] plans the root
//! (`plan::plan`), then each trigger job's child as GitLab creates it: its own pipeline id,
//! `CI_PIPELINE_SOURCE=parent_pipeline`, as pipeline variables the trigger job's YAML
//! variables (`forward: yaml_variables`, default true: the job's own and the global ones it
//! inherits, expanded as the trigger job sees them) then this run's `--env` values
//! (`forward: pipeline_variables`, default false) — GitLab's `Ci::Bridge#downstream_variables`
//! order, later wins. A child's jobs are named `trigger: job`. `needs: pipeline:
//! $PARENT_PIPELINE_ID` in a child resolves to the parent's job (its artifacts); for any other
//! pipeline the need is left out with its note. A dynamic child (`{artifact, job}`) is planned
//! by [`plan_dynamic`] when the trigger job starts. Called by `cli::run` and `execute`.

use super::error::PipelineError;
use super::facts::RunFacts;
use super::model::{Downstream, DownstreamKind, Job, Location, Pipeline};
use super::plan::{self, ChildPlan, DynamicChild, Plan, PlannedDownstream, PlannedJob, ProjectChild};
use super::variables;

/// The parent of a child being planned.
struct Parent<'p> {
    plan: &'p Plan,
    /// The trigger job's index in `plan.jobs`.
    trigger: usize,
    /// The prefix of the parent's job names (empty for the root).
    prefix: &'p str,
}

fn error_at(location: &Location, key: impl Into<String>, message: impl Into<String>) -> PipelineError {
    PipelineError::new(&location.file, location.line.max(1), key, message)
}

/// Plans `pipeline` and, into its trigger jobs, their child pipelines.
pub fn plan(pipeline: &Pipeline, facts: &RunFacts) -> Result<Plan, PipelineError> {
    tree(pipeline, facts, "", 0, None)
}

/// Plans a multi-project downstream pipeline (`trigger: project`): the checkout's `pipeline`
/// with its own `facts`, its jobs named with `prefix`, `depth` levels below the root.
pub fn plan_project(pipeline: &Pipeline, facts: &RunFacts, prefix: &str, depth: usize) -> Result<Plan, PipelineError> {
    tree(pipeline, facts, prefix, depth, None)
}

/// Plans a dynamic child from its composed `pipeline`; `parent` is the plan holding trigger
/// job `trigger`.
pub fn plan_dynamic(
    pipeline: &Pipeline,
    child: &DynamicChild,
    parent: &Plan,
    trigger: usize,
) -> Result<Plan, PipelineError> {
    let parent = Parent { plan: parent, trigger, prefix: &child.parent_prefix };
    tree(pipeline, &child.facts, &child.prefix, child.depth, Some(parent))
}

fn tree(
    pipeline: &Pipeline,
    facts: &RunFacts,
    prefix: &str,
    depth: usize,
    parent: Option<Parent<'_>>,
) -> Result<Plan, PipelineError> {
    let mut plan = plan::plan(pipeline, facts)?;
    let original: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    pipeline_needs(&mut plan, pipeline, parent.as_ref())?;
    if !prefix.is_empty() {
        for job in &mut plan.jobs {
            job.name = format!("{prefix}{}", job.name);
        }
        for decision in &mut plan.decisions {
            decision.name = format!("{prefix}{}", decision.name);
        }
    }
    for (i, name) in original.iter().enumerate() {
        let Some(job) = pipeline.job(name) else { continue };
        let Some(downstream) = job.downstream.as_deref() else { continue };
        let child_prefix = format!("{}: ", plan.jobs[i].name);
        let child_facts = child_facts(pipeline, job, &plan.jobs[i], facts, downstream, i);
        let child = match &downstream.kind {
            DownstreamKind::Child(child) => {
                let parent = Parent { plan: &plan, trigger: i, prefix };
                let planned = tree(child, &child_facts, &child_prefix, depth + 1, Some(parent))?;
                let shown = child_prefix.trim_end_matches(": ");
                plan.notes.extend(planned.notes.iter().map(|n| format!("child pipeline `{shown}`: {n}")));
                ChildPlan::Ready(Box::new(planned))
            }
            DownstreamKind::Dynamic(includes) => {
                let mut files = Vec::new();
                for include in includes {
                    let key = format!("{}.job", include.key);
                    let from = plan.jobs.iter().position(|j| j.name == format!("{prefix}{}", include.job));
                    let Some(from) = from else {
                        return Err(error_at(
                            &include.location,
                            key,
                            format!("job `{}` is not in this pipeline (its artifact is the child's file)", include.job),
                        ));
                    };
                    if !waits_for(&plan, i, from) {
                        return Err(error_at(
                            &include.location,
                            key,
                            format!(
                                "trigger job `{name}` does not wait for `{}`: add it to `{name}`'s `needs` (or put it \
                                 in an earlier stage), so its artifact exists when the child pipeline is created",
                                include.job
                            ),
                        ));
                    }
                    files.push((from, include.path.clone()));
                }
                ChildPlan::Dynamic(Box::new(DynamicChild {
                    files,
                    facts: child_facts,
                    depth: depth + 1,
                    prefix: child_prefix,
                    parent_prefix: prefix.to_string(),
                }))
            }
            // An unmapped project: `decide` left the job out with the reason.
            DownstreamKind::Project { project, branch } => {
                let Some(dir) = facts.projects.get(project) else { continue };
                let lookup = |n: &str| plan.jobs[i].variables.get(n).map(String::from);
                ChildPlan::Project(Box::new(ProjectChild {
                    project: project.clone(),
                    dir: dir.clone(),
                    branch: branch.as_ref().map(|b| variables::expand(b, &lookup)),
                    variables: child_facts.cli_variables,
                    pipeline_id: child_facts.pipeline_id,
                    depth: depth + 1,
                    prefix: child_prefix,
                }))
            }
        };
        plan.jobs[i].downstream = Some(Box::new(PlannedDownstream { depend: downstream.depend, child }));
    }
    Ok(plan)
}

/// The facts of the child of trigger job `trigger` (planned as `planned`, `index` in its plan).
fn child_facts(
    pipeline: &Pipeline,
    trigger: &Job,
    planned: &PlannedJob,
    facts: &RunFacts,
    downstream: &Downstream,
    index: usize,
) -> RunFacts {
    let mut forwarded = Vec::new();
    if downstream.forward_yaml_variables {
        let globals = pipeline.variables.iter().filter(|v| match &trigger.inherit_variables {
            None => true,
            Some(names) => names.contains(&v.name),
        });
        for variable in globals.chain(&trigger.variables) {
            if let Some(value) = planned.variables.get(&variable.name) {
                forwarded.retain(|(name, _): &(String, String)| *name != variable.name);
                forwarded.push((variable.name.clone(), value.to_string()));
            }
        }
    }
    if downstream.forward_pipeline_variables {
        forwarded.extend(facts.cli_variables.iter().cloned());
    }
    let mut predefined = facts.predefined.clone();
    predefined.push(("CI_PIPELINE_SOURCE".into(), "parent_pipeline".into()));
    RunFacts {
        pipeline_id: facts.pipeline_id.saturating_mul(1000).saturating_add(index as u64 + 1),
        cli_variables: forwarded,
        predefined,
        selected: Vec::new(),
        ..facts.clone()
    }
}

/// Whether job `from` of `plan` waits for job `target`, directly or through others.
fn waits_for(plan: &Plan, from: usize, target: usize) -> bool {
    let mut stack = vec![from];
    let mut seen = vec![false; plan.jobs.len()];
    while let Some(i) = stack.pop() {
        for &w in &plan.jobs[i].waits_for {
            if w == target {
                return true;
            }
            if !std::mem::replace(&mut seen[w], true) {
                stack.push(w);
            }
        }
    }
    false
}

/// `needs: [{pipeline, job}]`: the parent's job when `pipeline` expands to the parent's id
/// (its artifacts copied in), else the need is left out with its note.
fn pipeline_needs(plan: &mut Plan, pipeline: &Pipeline, parent: Option<&Parent<'_>>) -> Result<(), PipelineError> {
    let mut notes = Vec::new();
    for planned in &mut plan.jobs {
        let Some(job) = pipeline.job(&planned.name) else { continue };
        for need in &job.pipeline_needs {
            let id = variables::expand(&need.pipeline, &|n: &str| planned.variables.get(n).map(String::from));
            let Some(parent) = parent.filter(|p| id == p.plan.pipeline_id.to_string()) else {
                notes.push(need.note.clone());
                continue;
            };
            let trigger = &parent.plan.jobs[parent.trigger].name;
            let wanted = format!("{}{}", parent.prefix, need.job);
            let Some(from) = parent.plan.jobs.iter().position(|j| j.name == wanted) else {
                return Err(error_at(
                    &need.location,
                    need.key.clone(),
                    format!("job `{}` is not a job of the parent pipeline", need.job),
                ));
            };
            if !waits_for(parent.plan, parent.trigger, from) {
                return Err(error_at(
                    &need.location,
                    need.key.clone(),
                    format!(
                        "job `{}` of the parent pipeline has not finished when trigger job `{trigger}` creates this \
                         pipeline: make `{trigger}` need it (or put it in an earlier stage)",
                        need.job
                    ),
                ));
            }
            if need.artifacts {
                planned.parent_artifacts.push(from);
            }
        }
    }
    plan.notes.extend(notes);
    Ok(())
}

#[cfg(test)]
#[path = "downstream_tests.rs"]
mod tests;
