//! Runs a [`Plan`] through `docker.rs`: a scheduler that starts each job when what it waits for
//! has finished (at most `parallel` at once), decides `when:` from their outcome, and reports
//! every step as an [`Event`] (the CLI renders them; nothing here prints). Each container and
//! network a run creates carries the label `glci.run=<run id>`; whatever happens (success,
//! failure, interrupt through [`Cancel`]) they are all removed before [`execute`] returns.
//! The registry wiring (a later issue) plugs in through [`JobWiring`]. A trigger job runs its
//! child pipeline through the same scheduler (`downstream.rs`, issue 17); the run ends when
//! every child has too. Each job's artifacts are kept under `$GLCI_HOME/artifacts` (`kept`,
//! `artifact_store`) after the run's work dir is gone.

mod archive;
mod cache;
mod coverage;
mod dotenv;
mod downstream;
mod job;
mod kept;
mod pull;
mod script;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub use archive::{project_files, ExtraFile};
pub use downstream::{ChildConfigs, NoChildConfigs};

use super::model::AllowFailure;
use super::plan::{Plan, PlannedJob, PlannedService, RunWhen};
use crate::docker;

/// What one job (or service) container gets beyond what the plan says: the seam for the
/// registry wiring (DESIGN §10: `CI_REGISTRY*` variables, CA and config files, extra networks).
#[derive(Clone, Debug, Default)]
pub struct Wiring {
    /// Added on top of the job's variables (they win).
    pub variables: Vec<(String, String)>,
    /// Copied into the container before it starts.
    pub files: Vec<ExtraFile>,
    /// Networks the container joins besides its own (e.g. `glci-net`).
    pub networks: Vec<String>,
    pub privileged: bool,
}

/// Decides the [`Wiring`] of job and service containers. [`NoWiring`] gives nothing.
pub trait JobWiring: Sync {
    fn job(&self, _job: &PlannedJob) -> Wiring {
        Wiring::default()
    }
    fn service(&self, _job: &PlannedJob, _service: &PlannedService) -> Wiring {
        Wiring::default()
    }
    /// Files that depend on what the created (not yet started) `container` holds, e.g. the
    /// image's CA bundle with the registry CA appended; copied in before it starts, after
    /// [`Wiring::files`]. `service` is `None` for the job's own container. `image_id` is the ID
    /// of the image it was created from when the pull step found it on the host (saves asking
    /// Docker again), `None` when that is not known.
    fn prepare(
        &self,
        _container: &str,
        _image_id: Option<&str>,
        _job: &PlannedJob,
        _service: Option<&PlannedService>,
    ) -> Result<Vec<ExtraFile>, String> {
        Ok(Vec::new())
    }
    /// Takes over pulling an image the host lacks (DESIGN §10: `glci-mock:39741/…` is pulled
    /// through `127.0.0.1:39741` and re-tagged); `None` leaves it to `docker pull`. `platform`
    /// is `image: docker: platform` (`docker pull --platform`).
    fn pull(&self, _job: &PlannedJob, _image: &str, _platform: Option<&str>) -> Option<Result<(), String>> {
        None
    }
}

/// No wiring: jobs get exactly what the pipeline says.
pub struct NoWiring;

impl JobWiring for NoWiring {}

#[derive(Clone, Debug)]
pub struct Options {
    /// Labels containers and networks; part of their names.
    pub run_id: String,
    /// Jobs running at once (at least 1).
    pub parallel: usize,
    /// The project's files (see [`project_files`]), copied into every job.
    pub files: Vec<String>,
    /// Where artifacts and env files live during the run; removed at the end.
    pub work_dir: PathBuf,
    /// `cache_store::root`: the caches of every project (`$GLCI_HOME/cache`).
    pub cache_root: PathBuf,
    /// `artifact_store::root`: the kept artifacts of every project (`$GLCI_HOME/artifacts`).
    pub artifacts_root: PathBuf,
    /// `glci run --artifacts-dir DIR`: each job's artifacts are copied out to `DIR/<job>/`.
    pub artifacts_dir: Option<PathBuf>,
}

/// A job's end state, as GitLab names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Success,
    Failed,
    /// Not run: what it waits for did not allow it (`when:` did not match).
    Skipped,
    /// A `when: manual` job nobody named.
    Manual,
    /// Stopped by an interrupt, or never started because of one.
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Canceled => "canceled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobReport {
    pub job: String,
    pub stage: String,
    pub status: JobStatus,
    /// Failed, but `allow_failure` let the pipeline go on.
    pub allowed_failure: bool,
    pub exit_code: Option<i32>,
    /// `None` when the job never ran.
    pub duration: Option<Duration>,
    pub attempts: u32,
    /// Why it failed or was skipped, for people.
    pub reason: Option<String>,
    /// The percentage `coverage:` found in the log (the number as written, e.g. `81.50`).
    pub coverage: Option<String>,
    /// `when: delayed`: how long it waited before it started.
    pub delayed: Option<Duration>,
    /// The child pipeline it belongs to (its trigger job's name, `a: b` when nested); `None`
    /// for the root pipeline's jobs.
    pub pipeline: Option<String>,
    /// Where its artifacts are kept (`$GLCI_HOME/artifacts/...`), when it has any.
    pub artifacts: Option<PathBuf>,
}

/// Where a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// The job's own output.
    Job,
    /// glci's notes about the job (image, services, artifacts, errors).
    Glci,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    PipelineStarted {
        run_id: String,
        pipeline_id: u64,
        jobs: Vec<(String, String)>,
    },
    JobStarted {
        job: String,
        stage: String,
        image: String,
        attempt: u32,
    },
    Log {
        job: String,
        source: LogSource,
        line: String,
    },
    JobFinished(JobReport),
    PipelineFinished {
        status: PipelineStatus,
        duration: Duration,
        jobs: Vec<JobReport>,
    },
    /// An event of child pipeline `pipeline` (its trigger job's name).
    Downstream {
        pipeline: String,
        event: Box<Event>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineStatus {
    Success,
    Failed,
    Canceled,
}

impl PipelineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
        }
    }
}

/// The interrupt switch: set once (Ctrl-C), seen by every running job's watchdog at once (its
/// channel disconnects), no polling.
pub struct Cancel {
    flag: AtomicBool,
    sender: Mutex<Option<Sender<()>>>,
    receiver: Receiver<()>,
}

impl Default for Cancel {
    fn default() -> Self {
        let (sender, receiver) = crossbeam_channel::bounded(0);
        Cancel { flag: AtomicBool::new(false), sender: Mutex::new(Some(sender)), receiver }
    }
}

impl Cancel {
    pub fn new() -> Self {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
    }

    pub fn is_canceled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Disconnects (a `recv` returns `Err`) when the run is canceled.
    pub fn receiver(&self) -> Receiver<()> {
        self.receiver.clone()
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: PipelineStatus,
    pub jobs: Vec<JobReport>,
    /// Problems while removing the run's containers and networks (they may be left behind).
    pub cleanup_errors: Vec<String>,
}

/// Everything a running job needs from the run, shared by reference.
pub(crate) struct Run<'a> {
    pub plan: &'a Plan,
    pub options: &'a Options,
    pub wiring: &'a dyn JobWiring,
    pub events: &'a (dyn Fn(Event) + Sync),
    pub cancel: &'a Cancel,
    pub removals: job::Removals,
    /// The root pipeline's events (a child's go there wrapped in [`Event::Downstream`]).
    pub outer: &'a (dyn Fn(Event) + Sync),
    pub children: &'a dyn ChildConfigs,
    /// A child pipeline's name (its trigger job's); `None` for the root.
    pub pipeline: Option<String>,
    /// A child pipeline's parent run (`needs: pipeline: $PARENT_PIPELINE_ID` artifacts).
    pub parent: Option<&'a Run<'a>>,
    /// Shared with child pipelines.
    pub found_images: &'a pull::FoundImages,
}

impl Run<'_> {
    pub fn log(&self, job: &str, source: LogSource, line: impl Into<String>) {
        (self.events)(Event::Log { job: job.to_string(), source, line: line.into() });
    }

    pub fn labels(&self) -> Vec<(String, String)> {
        vec![(docker::RUN_LABEL.to_string(), self.options.run_id.clone())]
    }

    /// Where a job's artifacts are kept during the run.
    pub fn artifact_path(&self, index: usize) -> PathBuf {
        self.options.work_dir.join("artifacts").join(format!("{index}.tar"))
    }

    /// Where a job's `reports:` files are kept during the run (not handed to later jobs, as on
    /// GitLab, where dependent jobs download the `archive` only).
    pub fn report_path(&self, index: usize) -> PathBuf {
        self.options.work_dir.join("artifacts").join(format!("{index}.reports.tar"))
    }
    /// What names this pipeline's containers: the run id, and a child's pipeline id.
    pub fn scope(&self) -> String {
        match self.pipeline {
            None => self.options.run_id.clone(),
            Some(_) => format!("{}-{}", self.options.run_id, self.plan.pipeline_id),
        }
    }
}

/// What a job's thread tells the scheduler.
pub(crate) enum Done {
    /// Job `index` finished (in concurrency slot `slot`; trigger jobs take none).
    Job(usize, Option<usize>, JobReport),
    /// The child pipeline of trigger job `index` finished: every report of it.
    Child(usize, Vec<JobReport>),
}

/// What the jobs a job waits for amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    Success,
    Failed,
    /// All of them were skipped (or are manual jobs that did not run, with `needs`).
    Skipped,
}

fn upstream(job: &PlannedJob, reports: &[Option<JobReport>], uses_needs: bool) -> Upstream {
    let mut any = false;
    let mut all_skipped = true;
    for &w in &job.waits_for {
        let Some(report) = reports.get(w).and_then(Option::as_ref) else { continue };
        match report.status {
            JobStatus::Failed if !report.allowed_failure => return Upstream::Failed,
            JobStatus::Canceled => return Upstream::Failed,
            // A manual job nobody ran does not block a later stage, but a `needs` on it does.
            JobStatus::Manual if !uses_needs => continue,
            JobStatus::Skipped | JobStatus::Manual => any = true,
            JobStatus::Success | JobStatus::Failed => {
                any = true;
                all_skipped = false;
            }
        }
    }
    if any && all_skipped {
        Upstream::Skipped
    } else {
        Upstream::Success
    }
}

fn not_run(job: &PlannedJob, status: JobStatus, reason: &str) -> JobReport {
    JobReport {
        job: job.name.clone(),
        stage: job.stage.clone(),
        status,
        allowed_failure: false,
        exit_code: None,
        duration: None,
        attempts: 0,
        reason: Some(reason.to_string()),
        coverage: None,
        delayed: None,
        pipeline: None,
        artifacts: None,
    }
}

/// Whether a job's failure with `exit_code` is allowed.
pub(crate) fn failure_allowed(allow: &AllowFailure, exit_code: Option<i32>) -> bool {
    match allow {
        AllowFailure::No => false,
        AllowFailure::Yes => true,
        AllowFailure::ExitCodes(codes) => exit_code.is_some_and(|c| codes.contains(&c)),
    }
}

/// Runs the plan, its child pipelines with it (`children` composes dynamic ones). `events` is
/// called from several threads. Returns when every job has finished and everything the run
/// created is removed. The outcome's status is the root pipeline's as GitLab sees it, failed
/// too when a child pipeline failed (the run's exit status is honest about it).
pub fn execute(
    plan: &Plan,
    options: &Options,
    wiring: &dyn JobWiring,
    children: &dyn ChildConfigs,
    events: &(dyn Fn(Event) + Sync),
    cancel: &Cancel,
) -> Outcome {
    let started = Instant::now();
    let found_images = pull::FoundImages::default();
    let run = Run {
        plan,
        options,
        wiring,
        events,
        cancel,
        removals: job::Removals::default(),
        outer: events,
        children,
        pipeline: None,
        parent: None,
        found_images: &found_images,
    };
    events(Event::PipelineStarted {
        run_id: options.run_id.clone(),
        pipeline_id: plan.pipeline_id,
        jobs: plan.jobs.iter().map(|j| (j.name.clone(), j.stage.clone())).collect(),
    });
    let _ = std::fs::create_dir_all(options.work_dir.join("artifacts"));

    let reports = schedule(&run);
    run.removals.wait();

    let cleanup_errors = cleanup(&options.run_id);
    let _ = std::fs::remove_dir_all(&options.work_dir);
    let status = status_of(cancel, reports.iter());
    events(Event::PipelineFinished { status, duration: started.elapsed(), jobs: reports.clone() });
    Outcome { status, jobs: reports, cleanup_errors }
}

/// A pipeline's status from its reports: canceled, failed when a job failed (not allowed to).
pub(crate) fn status_of<'r>(cancel: &Cancel, mut reports: impl Iterator<Item = &'r JobReport>) -> PipelineStatus {
    if cancel.is_canceled() {
        PipelineStatus::Canceled
    } else if reports.any(|r| r.status == JobStatus::Failed && !r.allowed_failure) {
        PipelineStatus::Failed
    } else {
        PipelineStatus::Success
    }
}

/// Starts jobs as their waits finish, at most `parallel` at a time; one scoped thread per job
/// (a trigger job's thread runs its child pipeline and takes no slot). The reports of the
/// plan's jobs in order, each trigger job's child's right after it.
pub(crate) fn schedule(run: &Run<'_>) -> Vec<JobReport> {
    let jobs = &run.plan.jobs;
    let mut reports: Vec<Option<JobReport>> = vec![None; jobs.len()];
    let mut child_reports: Vec<Vec<JobReport>> = vec![Vec::new(); jobs.len()];
    let mut children_running = 0usize;
    let mut started = vec![false; jobs.len()];
    let parallel = run.options.parallel.max(1);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    // The runner's concurrency slots (`CI_CONCURRENT_ID`): the lowest free one per job.
    let mut slots = vec![false; parallel];
    // `resource_group`: the groups a running job holds; another job of one waits for it.
    let mut held: Vec<Option<String>> = vec![None; jobs.len()];
    let mut said_waiting = vec![false; jobs.len()];
    std::thread::scope(|scope| {
        let mut running = 0usize;
        loop {
            // Settle every job whose waits are over; start those that run, as slots allow.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for (i, job) in jobs.iter().enumerate() {
                    if started[i] || !job.waits_for.iter().all(|&w| reports[w].is_some()) {
                        continue;
                    }
                    let decided = decide(run, job, &reports);
                    match decided {
                        Some(report) => {
                            let report = JobReport { pipeline: run.pipeline.clone(), ..report };
                            started[i] = true;
                            (run.events)(Event::JobFinished(report.clone()));
                            reports[i] = Some(report);
                            progressed = true;
                        }
                        None if job.downstream.is_some() => {
                            started[i] = true;
                            children_running += 1;
                            let tx = done_tx.clone();
                            scope.spawn(move || downstream::run_trigger(run, i, &tx));
                        }
                        None if running < parallel && !in_use(&held, job.resource_group.as_deref()) => {
                            started[i] = true;
                            held[i] = job.resource_group.clone();
                            running += 1;
                            let slot = slots.iter().position(|busy| !busy).unwrap_or(0);
                            slots[slot] = true;
                            let tx = done_tx.clone();
                            scope.spawn(move || {
                                let report = match job.start_in {
                                    Some(delay) => delayed(run, job, delay, || job::run_job(run, i, slot)),
                                    None => job::run_job(run, i, slot),
                                };
                                let _ = tx.send(Done::Job(i, Some(slot), report));
                            });
                        }
                        None => {
                            if let Some(group) = job.resource_group.as_deref() {
                                if !said_waiting[i] && in_use(&held, Some(group)) {
                                    said_waiting[i] = true;
                                    run.log(&job.name, LogSource::Glci, format!("Waiting for resource: {group}"));
                                }
                            }
                        }
                    }
                }
            }
            if running == 0 && children_running == 0 {
                break;
            }
            match done_rx.recv() {
                Ok(Done::Job(i, slot, report)) => {
                    if let Some(slot) = slot {
                        running -= 1;
                        slots[slot] = false;
                        held[i] = None;
                    }
                    let report = JobReport { pipeline: run.pipeline.clone(), ..report };
                    (run.events)(Event::JobFinished(report.clone()));
                    reports[i] = Some(report);
                }
                Ok(Done::Child(i, reports)) => {
                    children_running -= 1;
                    child_reports[i] = reports;
                }
                Err(_) => break,
            }
        }
    });
    let mut out = Vec::with_capacity(jobs.len());
    for ((report, job), children) in reports.into_iter().zip(jobs).zip(child_reports) {
        let report = report.unwrap_or_else(|| not_run(job, JobStatus::Canceled, "the run stopped before it"));
        out.push(JobReport { pipeline: run.pipeline.clone(), ..report });
        out.extend(children);
    }
    out
}

/// `when: delayed`: waits `delay` (an interrupt cuts it short: the job is canceled), then runs.
fn delayed(run: &Run<'_>, job: &PlannedJob, delay: Duration, start: impl FnOnce() -> JobReport) -> JobReport {
    run.log(&job.name, LogSource::Glci, format!("Delayed job: starts in {} (when: delayed)", job::human(delay)));
    if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) = run.cancel.receiver().recv_timeout(delay) {
        return not_run(job, JobStatus::Canceled, "interrupted while delayed");
    }
    JobReport { delayed: Some(delay), ..start() }
}

/// Whether a running job holds resource group `group`.
fn in_use(held: &[Option<String>], group: Option<&str>) -> bool {
    group.is_some_and(|g| held.iter().flatten().any(|h| h == g))
}

/// For a job whose waits are over: `Some(report)` when it does not run, `None` when it runs.
fn decide(run: &Run<'_>, job: &PlannedJob, reports: &[Option<JobReport>]) -> Option<JobReport> {
    if run.cancel.is_canceled() {
        return Some(not_run(job, JobStatus::Canceled, "interrupted"));
    }
    if job.when == RunWhen::Manual {
        return Some(not_run(job, JobStatus::Manual, "manual job: name it to run it (`glci run JOB`)"));
    }
    let up = upstream(job, reports, job.uses_needs);
    let runs = matches!(
        (job.when, up),
        (RunWhen::Always, _) | (RunWhen::OnSuccess, Upstream::Success) | (RunWhen::OnFailure, Upstream::Failed)
    );
    if runs {
        return None;
    }
    let reason = match (job.when, up) {
        (RunWhen::OnFailure, _) => "when: on_failure, and nothing before it failed",
        (_, Upstream::Failed) => "a job it waits for failed",
        _ => "the jobs it waits for were skipped",
    };
    Some(not_run(job, JobStatus::Skipped, reason))
}

/// Removes every container and network labelled with this run; the errors, if any.
pub fn cleanup(run_id: &str) -> Vec<String> {
    let mut errors = Vec::new();
    match docker::containers_labelled(docker::RUN_LABEL, run_id) {
        Ok(ids) => {
            if let Err(e) = docker::remove_containers(&ids) {
                errors.push(e.to_string());
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    match docker::networks_labelled(docker::RUN_LABEL, run_id) {
        Ok(ids) => {
            if let Err(e) = docker::remove_networks(&ids) {
                errors.push(e.to_string());
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_failure_by_exit_code() {
        assert!(!failure_allowed(&AllowFailure::No, Some(1)));
        assert!(failure_allowed(&AllowFailure::Yes, None));
        assert!(failure_allowed(&AllowFailure::ExitCodes(vec![3, 4]), Some(4)));
        assert!(!failure_allowed(&AllowFailure::ExitCodes(vec![3]), Some(1)));
        assert!(!failure_allowed(&AllowFailure::ExitCodes(vec![3]), None));
    }
}
