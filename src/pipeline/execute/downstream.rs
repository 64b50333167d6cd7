//! A trigger job (issue 17): no container; it creates its child pipeline (planned with the
//! parent, or for a dynamic child composed now from the artifact files through
//! [`ChildConfigs`] and planned by `pipeline::downstream`), then runs it with the parent's
//! scheduler in the same run. Without `strategy: depend` the trigger job succeeds once the
//! child is created (GitLab's bridge job); with it, its status is the child's. A child that
//! cannot be created (no jobs, filtered out by `workflow: rules`, a file missing from the
//! artifacts) fails the trigger job with GitLab's reason. A `trigger: project` of a mapped
//! project reads and plans that checkout's pipeline (through [`ChildConfigs`]) and runs it the
//! same way, with that project's files. The child's events go out wrapped in
//! [`Event::Downstream`], its reports carry the pipeline's name.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::{Done, Event, JobReport, JobStatus, LogSource, Options, PipelineStatus, Run};
use crate::pipeline::downstream;
use crate::pipeline::model::Pipeline;
use crate::pipeline::plan::{ChildPlan, DynamicChild, Plan, ProjectChild};

/// What only `cli` can read for a downstream pipeline: the include sources of the run.
pub trait ChildConfigs: Sync {
    /// Composes a dynamic child pipeline from its files `(name, text)`, `depth` levels below
    /// the root.
    fn load(&self, files: &[(String, String)], depth: usize) -> Result<Pipeline, String>;
    /// Reads and plans the pipeline of a mapped project's checkout (`trigger: project`); the
    /// plan and that project's files (copied into its jobs).
    fn load_project(&self, child: &ProjectChild) -> Result<(Plan, Vec<String>), String>;
}

/// No way to compose downstream pipelines: their trigger jobs fail saying so.
pub struct NoChildConfigs;

impl ChildConfigs for NoChildConfigs {
    fn load(&self, _files: &[(String, String)], _depth: usize) -> Result<Pipeline, String> {
        Err("dynamic child pipelines are composed by `glci run`".into())
    }
    fn load_project(&self, child: &ProjectChild) -> Result<(Plan, Vec<String>), String> {
        Err(format!("the pipeline of project `{}` is read by `glci run`", child.project))
    }
}

/// The largest child configuration read from an artifact (GitLab's artifact reader limit).
const MAX_CONFIG_BYTES: u64 = 5 * 1024 * 1024;

/// Runs trigger job `index`: sends its report and then (exactly once) its child's reports.
pub(crate) fn run_trigger(run: &Run<'_>, index: usize, done: &Sender<Done>) {
    let job = &run.plan.jobs[index];
    let started = Instant::now();
    (run.events)(Event::JobStarted {
        job: job.name.clone(),
        stage: job.stage.clone(),
        image: String::new(),
        attempt: 1,
    });
    let report = |status: JobStatus, reason: Option<String>| JobReport {
        job: job.name.clone(),
        stage: job.stage.clone(),
        status,
        allowed_failure: status == JobStatus::Failed && super::failure_allowed(&job.allow_failure, None),
        exit_code: None,
        duration: Some(started.elapsed()),
        attempts: 1,
        reason,
        coverage: None,
        delayed: None,
        pipeline: None,
        artifacts: None,
    };
    let Some(planned) = job.downstream.as_deref() else {
        let _ = done.send(Done::Job(index, None, report(JobStatus::Failed, Some("no downstream pipeline".into()))));
        let _ = done.send(Done::Child(index, Vec::new()));
        return;
    };
    let child = match &planned.child {
        ChildPlan::Ready(plan) => creatable(plan).map(|()| ((**plan).clone(), None)),
        ChildPlan::Dynamic(dynamic) => dynamic_plan(run, index, dynamic).map(|plan| (plan, None)),
        ChildPlan::Project(project) => {
            run.children.load_project(project).and_then(|(plan, files)| creatable(&plan).map(|()| (plan, Some(files))))
        }
    };
    let (child, files) = match child {
        Ok(child) => child,
        Err(why) => {
            let reason = format!("downstream pipeline can not be created: {why}");
            run.log(&job.name, LogSource::Glci, format!("ERROR: {reason}"));
            let _ = done.send(Done::Job(index, None, report(JobStatus::Failed, Some(reason))));
            let _ = done.send(Done::Child(index, Vec::new()));
            return;
        }
    };
    let how = if planned.depend { "strategy: depend, this job follows it" } else { "this job does not wait for it" };
    let what = match &planned.child {
        ChildPlan::Project(project) => format!("downstream pipeline of project `{}`", project.project),
        _ => "child pipeline".to_string(),
    };
    let n = child.jobs.len();
    run.log(
        &job.name,
        LogSource::Glci,
        format!("Created {what} #{} with {n} job{} ({how})", child.pipeline_id, plural(n)),
    );
    if !planned.depend {
        let _ = done.send(Done::Job(index, None, report(JobStatus::Success, None)));
    }
    let name = job.name.clone();
    let (status, reports) = run_child(run, &child, &name, files);
    if planned.depend {
        let (status, reason) = match status {
            PipelineStatus::Success => (JobStatus::Success, None),
            PipelineStatus::Failed => {
                (JobStatus::Failed, Some("the downstream pipeline failed (strategy: depend)".into()))
            }
            PipelineStatus::Canceled => (JobStatus::Canceled, Some("the downstream pipeline was canceled".into())),
        };
        let _ = done.send(Done::Job(index, None, report(status, reason)));
    }
    let _ = done.send(Done::Child(index, reports));
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// GitLab creates no pipeline without jobs.
fn creatable(plan: &Plan) -> Result<(), String> {
    if plan.excluded_by_workflow.is_some() {
        return Err("Pipeline filtered out by workflow rules.".into());
    }
    if plan.jobs.is_empty() {
        return Err("No stages / jobs for this pipeline.".into());
    }
    Ok(())
}

/// A dynamic child: its files out of the artifacts of the jobs named, composed and planned.
fn dynamic_plan(run: &Run<'_>, index: usize, dynamic: &DynamicChild) -> Result<Plan, String> {
    let mut files = Vec::new();
    for (from, path) in &dynamic.files {
        let producer = &run.plan.jobs[*from].name;
        let prefix = run.plan.project_dir_in_job.trim_matches('/');
        let text = artifact_file(&run.artifact_path(*from), &format!("{prefix}/{path}"))
            .map_err(|e| format!("reading `{path}` from the artifacts of `{producer}`: {e}"))?
            .ok_or_else(|| format!("`{path}` is not in the artifacts of job `{producer}`"))?;
        files.push((format!("{producer}: {path}"), text));
    }
    let pipeline = run.children.load(&files, dynamic.depth)?;
    let plan = downstream::plan_dynamic(&pipeline, dynamic, run.plan, index).map_err(|e| e.to_string())?;
    creatable(&plan)?;
    Ok(plan)
}

/// The text of entry `name` of the artifact tar at `tar`; `None` when it has no such file.
fn artifact_file(tar: &Path, name: &str) -> std::io::Result<Option<String>> {
    let file = match std::fs::File::open(tar) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_string();
        if path != name || !entry.header().entry_type().is_file() {
            continue;
        }
        if entry.size() > MAX_CONFIG_BYTES {
            return Err(std::io::Error::other(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let mut text = String::new();
        entry.take(MAX_CONFIG_BYTES).read_to_string(&mut text)?;
        return Ok(Some(text));
    }
    Ok(None)
}

/// Runs `child` (of trigger job `name`; `files`: another project's, else this one's) to the
/// end; its status and every report, nested children's included.
fn run_child(run: &Run<'_>, child: &Plan, name: &str, files: Option<Vec<String>>) -> (PipelineStatus, Vec<JobReport>) {
    let started = Instant::now();
    let outer = run.outer;
    let wrap = |event: Event| outer(Event::Downstream { pipeline: name.to_string(), event: Box::new(event) });
    let options = Options {
        work_dir: run.options.work_dir.join("pipelines").join(child.pipeline_id.to_string()),
        files: files.unwrap_or_else(|| run.options.files.clone()),
        ..run.options.clone()
    };
    let _ = std::fs::create_dir_all(options.work_dir.join("artifacts"));
    let child_run = Run {
        plan: child,
        options: &options,
        wiring: run.wiring,
        events: &wrap,
        cancel: run.cancel,
        removals: super::job::Removals::default(),
        outer,
        children: run.children,
        pipeline: Some(name.to_string()),
        parent: Some(run),
        found_images: run.found_images,
    };
    wrap(Event::PipelineStarted {
        run_id: options.run_id.clone(),
        pipeline_id: child.pipeline_id,
        jobs: child.jobs.iter().map(|j| (j.name.clone(), j.stage.clone())).collect(),
    });
    let reports = super::schedule(&child_run);
    child_run.removals.wait();
    let status = super::status_of(run.cancel, reports.iter().filter(|r| r.pipeline.as_deref() == Some(name)));
    wrap(Event::PipelineFinished { status, duration: started.elapsed(), jobs: reports.clone() });
    (status, reports)
}
