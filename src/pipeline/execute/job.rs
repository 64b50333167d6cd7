//! One job: its attempts (`retry`, for the failures `retry: when/exit_codes` name), each in a
//! container of its own: image pulled by its `pull_policy` (`execute::pull`),
//! services started as sidecars on a network of the job's (with their aliases), the project and
//! the artifacts it depends on copied in, `cache:` restored (`execute::cache`), `before_script` and
//! `script` run by the image's shell (bash, else sh: `script::shell_command`) under a watchdog
//! (timeout, interrupt), `after_script` in a fresh shell of the same container, the cache saved,
//! then artifacts collected. Every container and network it made is removed before it returns.

use std::fs;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, select};

use super::archive::{self, ArtifactWriter, ExtraFile};
use super::cache;
use super::coverage;
use super::dotenv;
use super::kept;
use super::pull::ensure_image;
use super::script;
use super::{failure_allowed, JobReport, JobStatus, LogSource, Run, Wiring};
use crate::docker::{self, ContainerSpec};
use crate::pipeline::model::ArtifactsWhen;
use crate::pipeline::plan::{PlannedJob, PlannedService};
use crate::pipeline::variables::VarSet;

/// GitLab gives `after_script` five minutes of its own.
const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// After a kill, how long to wait before killing again (a container may have been starting).
const KILL_RETRY: Duration = Duration::from_secs(2);
/// GitLab's `wait_for_services_timeout` default.
const SERVICE_WAIT: Duration = Duration::from_secs(30);
const SERVICE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const SERVICE_PROBE_PAUSE: Duration = Duration::from_millis(200);
/// Lines of a crashed service's log shown in the job's log.
const SERVICE_LOG_LINES: usize = 20;

/// How one attempt ended.
struct Attempt {
    status: JobStatus,
    exit_code: Option<i32>,
    reason: Option<String>,
    coverage: Option<String>,
    /// Killed at the job's `timeout`.
    timed_out: bool,
}

impl Attempt {
    fn failed(reason: impl Into<String>) -> Attempt {
        Attempt {
            status: JobStatus::Failed,
            exit_code: None,
            reason: Some(reason.into()),
            coverage: None,
            timed_out: false,
        }
    }

    fn canceled() -> Attempt {
        Attempt { status: JobStatus::Canceled, reason: Some("interrupted".into()), ..Attempt::failed("") }
    }

    /// A failure's reason by GitLab's name (`retry: when`): `job_execution_timeout`,
    /// `script_failure` when the script exited non-zero, else `runner_system_failure` (what
    /// failed was glci or docker: an image, a service, a copy).
    fn failure_reason(&self) -> &'static str {
        match (self.exit_code, self.timed_out) {
            (_, true) => "job_execution_timeout",
            (Some(_), false) => "script_failure",
            (None, false) => "runner_system_failure",
        }
    }
}

/// Runs job `index` of the plan with its retries, in concurrency slot `slot`; the report of its
/// last attempt.
pub(crate) fn run_job(run: &Run<'_>, index: usize, slot: usize) -> JobReport {
    let job = &run.plan.jobs[index];
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let result = run_attempt(run, index, attempt, slot);
        let retry = result.status == JobStatus::Failed
            && attempt <= job.retry
            && job.retry_on.allows(result.failure_reason(), result.exit_code)
            && !run.cancel.is_canceled();
        if retry {
            run.log(
                &job.name,
                LogSource::Glci,
                format!("Retrying the job (attempt {} of {})", attempt + 1, job.retry + 1),
            );
            attempt += 1;
            continue;
        }
        let allowed_failure =
            result.status == JobStatus::Failed && failure_allowed(&job.allow_failure, result.exit_code);
        return JobReport {
            job: job.name.clone(),
            stage: job.stage.clone(),
            status: result.status,
            allowed_failure,
            exit_code: result.exit_code,
            duration: Some(started.elapsed()),
            attempts: attempt,
            reason: result.reason,
            coverage: result.coverage,
            delayed: None,
            pipeline: None,
            artifacts: kept::finish(run, index),
        };
    }
}

/// A container or network name part: letters, digits, `_`, `.`, `-`.
fn name_part(text: &str) -> String {
    let cleaned: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect();
    cleaned.chars().take(40).collect::<String>().trim_matches(['-', '.']).to_string()
}

/// What an attempt created, removed when it ends.
struct Created {
    containers: Vec<String>,
    network: Option<String>,
}

impl Created {
    fn remove(&mut self) {
        let _ = docker::remove_containers(&self.containers);
        if let Some(network) = self.network.take() {
            let _ = docker::remove_networks(&[network]);
        }
    }
}

/// Removals of finished attempts' containers and networks, off the critical path: a `docker rm
/// -f` takes 0.1-0.2 s, which the next job need not wait for (issue 18). The run waits for all
/// of them before its final cleanup, so nothing is left and nothing is removed twice.
#[derive(Default)]
pub(crate) struct Removals(std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>);

impl Removals {
    fn remove_later(&self, mut created: Created) {
        if created.containers.is_empty() && created.network.is_none() {
            return;
        }
        let removal = std::thread::spawn(move || created.remove());
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(removal);
    }

    /// Returns once every removal started so far has finished.
    pub(crate) fn wait(&self) {
        let removals = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for removal in removals {
            let _ = removal.join();
        }
    }
}

fn run_attempt(run: &Run<'_>, index: usize, attempt: u32, slot: usize) -> Attempt {
    let job = &run.plan.jobs[index];
    let image = job.image.as_ref().map(|i| i.name.clone()).unwrap_or_default();
    (run.events)(super::Event::JobStarted {
        job: job.name.clone(),
        stage: job.stage.clone(),
        image: image.clone(),
        attempt,
    });
    let base = format!("glci-{}-{}-{}", run.scope(), index, name_part(&job.name));
    let base = if attempt > 1 { format!("{base}-{attempt}") } else { base };
    let mut created = Created { containers: Vec::new(), network: None };
    let result = attempt_steps(run, index, &base, slot, &mut created);
    run.removals.remove_later(created);
    let _ = fs::remove_dir_all(run.options.work_dir.join("env").join(&base));
    let attempt = match result {
        Ok(attempt) => attempt,
        Err(_) if run.cancel.is_canceled() => Attempt::canceled(),
        Err(message) => Attempt::failed(message),
    };
    let line = match (attempt.status, attempt.exit_code) {
        (JobStatus::Success, _) => "Job succeeded".to_string(),
        (JobStatus::Canceled, _) => "Job canceled".to_string(),
        (_, Some(code)) => format!("ERROR: Job failed: exit code {code}"),
        (_, None) => format!("ERROR: Job failed: {}", attempt.reason.as_deref().unwrap_or("unknown error")),
    };
    run.log(&job.name, LogSource::Glci, line);
    attempt
}

fn attempt_steps(
    run: &Run<'_>,
    index: usize,
    base: &str,
    slot: usize,
    created: &mut Created,
) -> Result<Attempt, String> {
    let applied = dotenv::apply(run, index);
    let job: &PlannedJob = &applied;
    let image = job.image.as_ref().ok_or("the job has no image")?;
    let wiring = run.wiring.job(job);
    let mut variables = job.variables.clone();
    // What the runner adds when it picks the job up.
    variables.set("CI_JOB_STARTED_AT", crate::encoding::rfc3339(std::time::SystemTime::now()));
    variables.set("CI_CONCURRENT_ID", slot.to_string());
    variables.set("CI_CONCURRENT_PROJECT_ID", slot.to_string());
    for (name, value) in &wiring.variables {
        variables.set(name, value.clone());
    }
    for note in &job.notes {
        run.log(&job.name, LogSource::Glci, note.clone());
    }
    run.log(&job.name, LogSource::Glci, format!("Using docker image {}", image.name));
    let image_id = ensure_image(run, job, &image.name, image.platform.as_deref(), &image.pull_policy)?;

    let network = if job.services.is_empty() {
        None
    } else {
        let network = base.to_string();
        docker::network_create(&network, &run.labels()).map_err(|e| e.to_string())?;
        created.network = Some(network.clone());
        let mut started = Vec::new();
        for (i, service) in job.services.iter().enumerate() {
            started.push(start_service(run, job, service, &format!("{base}-svc-{i}"), &network, created)?);
        }
        let deadline = Instant::now() + SERVICE_WAIT;
        for (service, container) in job.services.iter().zip(&started) {
            wait_for_service(run, job, service, container, &network, deadline);
        }
        Some(network)
    };
    if run.cancel.is_canceled() {
        return Ok(Attempt::canceled());
    }

    let env = write_env_file(run, &job.name, base, "job", &variables)?;
    let spec = ContainerSpec {
        name: base.to_string(),
        image: image.name.clone(),
        labels: run.labels(),
        network,
        network_aliases: Vec::new(),
        entrypoint: image.entrypoint.clone(),
        command: script::shell_command(),
        env_file: Some(env.path),
        privileged: wiring.privileged,
        user: image.user.clone(),
        platform: image.platform.clone(),
        client_env: env.client_env,
    };
    let container = create_container(spec, &wiring.networks, created)?;
    let mut wiring = wiring;
    wiring.files.extend(run.wiring.prepare(&container, image_id.as_deref(), job, None)?);

    // `type: file` variables: their files, written beside the project as the runner does.
    for (path, contents) in &job.file_variables {
        wiring.files.push(ExtraFile { path: path.clone(), contents: contents.clone().into_bytes(), mode: 0o644 });
    }
    let project_dir = &run.plan.project_dir_in_job;
    let mut step_commands = job.before_script.clone();
    step_commands.extend(job.script.iter().cloned());
    let step = script::render(&variables, &[("CI_JOB_STATUS", "running")], project_dir, None, &step_commands);
    // The runner's order is sources, cache, artifacts. Without a cache to restore, the
    // artifacts ride in the project's copy (one `docker cp` instead of one more per job).
    let with_project = job.cache.is_empty();
    let artifacts = if with_project { artifact_archives(run, job) } else { Vec::new() };
    copy_in_project(run, job, &container, &wiring, step, &artifacts)?;
    cache::restore(run, job, &container);
    if !with_project {
        copy_in_artifacts(run, job, &container)?;
    }
    if run.cancel.is_canceled() {
        return Ok(Attempt::canceled());
    }

    let coverage = Coverage::new(job.coverage.as_deref());
    let phase = run_phase(run, &job.name, &container, job.timeout, &coverage)?;
    let mut attempt = match phase {
        Phase::Exited(0) => {
            Attempt { status: JobStatus::Success, exit_code: Some(0), reason: None, ..Attempt::failed("") }
        }
        Phase::Exited(code) => Attempt { exit_code: Some(code), ..Attempt::failed(format!("exit code {code}")) },
        Phase::TimedOut => {
            Attempt { timed_out: true, ..Attempt::failed(format!("execution took longer than {}", human(job.timeout))) }
        }
        Phase::Canceled => return Ok(Attempt::canceled()),
    };

    if !job.after_script.is_empty() {
        let status = if attempt.status == JobStatus::Success { "success" } else { "failed" };
        let after = script::render(
            &variables,
            &[("CI_JOB_STATUS", status)],
            project_dir,
            Some("Running after script..."),
            &job.after_script,
        );
        copy_files(&container, &[script_file(after)])?;
        match run_phase(run, &job.name, &container, AFTER_SCRIPT_TIMEOUT, &coverage)? {
            Phase::Exited(0) => {}
            Phase::Exited(code) => run.log(
                &job.name,
                LogSource::Glci,
                format!("WARNING: after_script failed with exit code {code} (ignored)"),
            ),
            Phase::TimedOut => run.log(
                &job.name,
                LogSource::Glci,
                format!("WARNING: after_script took longer than {} (ignored)", human(AFTER_SCRIPT_TIMEOUT)),
            ),
            Phase::Canceled => return Ok(Attempt::canceled()),
        }
    }

    cache::save(run, job, &container, attempt.status);
    if let Some(spec) = &job.artifacts {
        let wanted = match spec.when {
            ArtifactsWhen::OnSuccess => attempt.status == JobStatus::Success,
            ArtifactsWhen::OnFailure => attempt.status == JobStatus::Failed,
            ArtifactsWhen::Always => true,
        };
        if wanted && (!spec.paths.is_empty() || spec.untracked) {
            if let Err(message) = collect_artifacts(run, index, &container) {
                attempt = Attempt::failed(format!("uploading artifacts: {message}"));
            }
        }
        if wanted && !spec.reports.is_empty() {
            if let Err(message) = kept::collect_reports(run, index, &container) {
                attempt = Attempt::failed(format!("uploading reports: {message}"));
            }
        }
        if wanted && !spec.dotenv.is_empty() {
            if let Err(message) = dotenv::collect(run, index, &container) {
                attempt = Attempt::failed(message);
            }
        }
        if wanted {
            if let Err(message) = kept::keep(run, index) {
                attempt = Attempt::failed(message);
            }
        }
    }
    attempt.coverage = coverage.found();
    Ok(attempt)
}

fn start_service(
    run: &Run<'_>,
    job: &PlannedJob,
    service: &PlannedService,
    name: &str,
    network: &str,
    created: &mut Created,
) -> Result<String, String> {
    let image_id = ensure_image(run, job, &service.image, service.platform.as_deref(), &service.pull_policy)?;
    let wiring: Wiring = run.wiring.service(job, service);
    let mut variables = service.variables.clone();
    for (key, value) in &wiring.variables {
        variables.set(key, value.clone());
    }
    let env = write_env_file(run, &job.name, name, "service", &variables)?;
    let spec = ContainerSpec {
        name: name.to_string(),
        image: service.image.clone(),
        labels: run.labels(),
        network: Some(network.to_string()),
        network_aliases: service.aliases.clone(),
        entrypoint: service.entrypoint.clone(),
        command: service.command.clone().unwrap_or_default(),
        env_file: Some(env.path),
        privileged: wiring.privileged,
        user: service.user.clone(),
        platform: service.platform.clone(),
        client_env: env.client_env,
    };
    let container = create_container(spec, &wiring.networks, created)?;
    let mut files = wiring.files.clone();
    files.extend(run.wiring.prepare(&container, image_id.as_deref(), job, Some(service))?);
    if !files.is_empty() {
        copy_files(&container, &files)?;
    }
    if wiring.privileged && docker::privileged_needs_fallback() {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            run.log(
                &job.name,
                LogSource::Glci,
                format!(
                    "NOTE: this host cannot grant every capability (missing: {}); privileged services run with \
                     --cap-add ALL --security-opt seccomp=unconfined instead of --privileged",
                    docker::missing_capabilities().join(", ")
                ),
            )
        });
    }
    run.log(
        &job.name,
        LogSource::Glci,
        format!("Starting service {} as {}", service.image, service.aliases.join(", ")),
    );
    docker::start(&container).map_err(|e| e.to_string())?;
    if !docker::is_running(&container).unwrap_or(true) {
        run.log(
            &job.name,
            LogSource::Glci,
            format!("WARNING: service {} exited right after it started:", service.image),
        );
        for line in docker::logs_tail(&container, SERVICE_LOG_LINES).unwrap_or_default().lines() {
            run.log(&job.name, LogSource::Glci, format!("  {line}"));
        }
    }
    Ok(container)
}

/// Waits, as GitLab's runner does, until a service accepts connections on the TCP ports its
/// image exposes, up to `deadline`; then the job starts anyway (with a warning). Connections go
/// from the host to the container's address on the job network; where the host cannot reach
/// that network (Docker Desktop, a remote engine) there is no waiting.
fn wait_for_service(
    run: &Run<'_>,
    job: &PlannedJob,
    service: &PlannedService,
    container: &str,
    network: &str,
    deadline: Instant,
) {
    let ports = match docker::image_tcp_ports(&service.image) {
        Ok(ports) if !ports.is_empty() => ports,
        _ => return,
    };
    let Some(ip) = docker::container_ip(container, network).ok().flatten().and_then(|ip| ip.parse::<IpAddr>().ok())
    else {
        return;
    };
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    run.log(&job.name, LogSource::Glci, format!("Waiting for service {} (port {})", service.image, list.join(", ")));
    let cancel = run.cancel.receiver();
    for port in ports {
        let addr = SocketAddr::new(ip, port);
        loop {
            match TcpStream::connect_timeout(&addr, SERVICE_PROBE_TIMEOUT) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(_) => return,
            }
            if Instant::now() >= deadline {
                run.log(
                    &job.name,
                    LogSource::Glci,
                    format!(
                        "WARNING: service {} does not answer on port {port} after {}; starting the job anyway",
                        service.image,
                        human(SERVICE_WAIT)
                    ),
                );
                return;
            }
            // A pause that an interrupt cuts short.
            if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) = cancel.recv_timeout(SERVICE_PROBE_PAUSE) {
                return;
            }
        }
    }
}

/// A container's environment as `docker create` gets it: a 0600 `--env-file` under the run's
/// work dir, and the multi-line values for the docker CLI's own environment (variables never go
/// into argv, where `ps` would show them). Multi-line variables the docker CLI itself would read
/// reach only the script, said once in the job's log.
struct EnvFile {
    path: std::path::PathBuf,
    client_env: Vec<(String, crate::secret::Secret)>,
}

fn write_env_file(run: &Run<'_>, job: &str, base: &str, what: &str, variables: &VarSet) -> Result<EnvFile, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let env = script::container_env(variables);
    for name in &env.script_only {
        run.log(
            job,
            LogSource::Glci,
            format!(
                "NOTE: {name} has a multi-line value and is a name the docker CLI reads itself: the {what}'s script \
                 gets it, its image's ENTRYPOINT does not"
            ),
        );
    }
    let dir = run.options.work_dir.join("env").join(base);
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("{what}.env"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    file.write_all(env.file.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let client_env = env.from_client.into_iter().map(|(name, value)| (name, value.into())).collect();
    Ok(EnvFile { path, client_env })
}

fn script_file(text: String) -> ExtraFile {
    ExtraFile { path: script::SCRIPT_PATH.into(), contents: text.into_bytes(), mode: 0o755 }
}

/// Creates a container (recorded in `created` at once, so cleanup finds it whatever happens
/// next) and joins it to the wiring's extra networks (see [`networks_of`]).
fn create_container(mut spec: ContainerSpec, networks: &[String], created: &mut Created) -> Result<String, String> {
    let (primary, extra) = networks_of(spec.network.take(), networks);
    spec.network = primary;
    let container = docker::create(&spec).map_err(|e| e.to_string())?;
    created.containers.push(container.clone());
    for network in extra {
        docker::network_connect(network, &container, &[]).map_err(|e| e.to_string())?;
    }
    Ok(container)
}

/// The network a container is created on and those it joins after: its own (a job's services
/// network) first; without one, the first of the wiring's instead of Docker's default bridge.
/// One endpoint, not the bridge plus a `network connect`: a container on two networks starts
/// 0.5-0.7 s later on a loaded 2-core machine, and the connect costs 0.1-0.3 s more (issue 18).
fn networks_of(own: Option<String>, wiring: &[String]) -> (Option<String>, &[String]) {
    match (own, wiring.split_first()) {
        (Some(own), _) => (Some(own), wiring),
        (None, Some((first, rest))) => (Some(first.clone()), rest),
        (None, None) => (None, wiring),
    }
}

fn copy_files(container: &str, files: &[ExtraFile]) -> Result<(), String> {
    docker::copy_into(container, "/", &mut |out| archive::write_files(out, files)).map_err(|e| e.to_string())
}

fn copy_in_project(
    run: &Run<'_>,
    job: &PlannedJob,
    container: &str,
    wiring: &Wiring,
    step: String,
    artifacts: &[(String, PathBuf)],
) -> Result<(), String> {
    let project_dir = &run.plan.project_dir_in_job;
    run.log(
        &job.name,
        LogSource::Glci,
        format!(
            "Copying the project into {project_dir} ({} file{})",
            run.options.files.len(),
            if run.options.files.len() == 1 { "" } else { "s" }
        ),
    );
    let mut extra = wiring.files.clone();
    extra.push(script_file(step));
    let prefix = project_dir.trim_start_matches('/');
    for (name, _) in artifacts {
        run.log(&job.name, LogSource::Glci, format!("Downloading artifacts from {name}"));
    }
    let archives: Vec<PathBuf> = artifacts.iter().map(|(_, path)| path.clone()).collect();
    docker::copy_into(container, "/", &mut |out| {
        archive::write_project(
            BufWriter::new(out),
            &run.plan.project_dir,
            &run.options.files,
            prefix,
            &extra,
            &archives,
        )
    })
    .map_err(|e| e.to_string())
}

/// The artifact archives this job downloads (whose, archive), those that exist: its own
/// pipeline's jobs, then with `needs: pipeline: $PARENT_PIPELINE_ID` the parent pipeline's
/// (issue 17).
fn artifact_archives(run: &Run<'_>, job: &PlannedJob) -> Vec<(String, PathBuf)> {
    let own = job.artifacts_from.iter().map(|&from| (run.plan.jobs[from].name.clone(), run.artifact_path(from)));
    let parent = run.parent.into_iter().flat_map(|parent| {
        job.parent_artifacts.iter().map(move |&from| {
            (format!("{} (parent pipeline)", parent.plan.jobs[from].name), parent.artifact_path(from))
        })
    });
    own.chain(parent).filter(|(_, path)| path.is_file()).collect()
}

fn copy_in_artifacts(run: &Run<'_>, job: &PlannedJob, container: &str) -> Result<(), String> {
    for (name, path) in artifact_archives(run, job) {
        let Ok(file) = fs::File::open(&path) else { continue };
        run.log(&job.name, LogSource::Glci, format!("Downloading artifacts from {name}"));
        let mut file = std::io::BufReader::new(file);
        docker::copy_into(container, "/", &mut |out| std::io::copy(&mut file, out).map(|_| ()))
            .map_err(|e| format!("artifacts of {name}: {e}"))?;
    }
    // `needs: pipeline: $PARENT_PIPELINE_ID`: the parent pipeline's jobs' artifacts (issue 17).
    if let Some(parent) = run.parent {
        for &from in &job.parent_artifacts {
            let Ok(file) = fs::File::open(parent.artifact_path(from)) else { continue };
            let name = &parent.plan.jobs[from].name;
            run.log(&job.name, LogSource::Glci, format!("Downloading artifacts from {name} (parent pipeline)"));
            let mut file = std::io::BufReader::new(file);
            docker::copy_into(container, "/", &mut |out| std::io::copy(&mut file, out).map(|_| ()))
                .map_err(|e| format!("artifacts of {name} (parent pipeline): {e}"))?;
        }
    }
    Ok(())
}

fn collect_artifacts(run: &Run<'_>, index: usize, container: &str) -> Result<(), String> {
    let job = &run.plan.jobs[index];
    let Some(spec) = &job.artifacts else { return Ok(()) };
    let project_dir = &run.plan.project_dir_in_job;
    let path = run.artifact_path(index);
    let file = fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut writer = ArtifactWriter::new(BufWriter::new(file), project_dir);
    run.log(&job.name, LogSource::Glci, "Uploading artifacts...");
    // `untracked: true`: what git tracks in the project, the rest of the work tree is collected.
    let tracked: std::collections::HashSet<String> = match spec.untracked {
        true => crate::git::tracked_files(&run.plan.project_dir).unwrap_or_default().into_iter().collect(),
        false => Default::default(),
    };
    let filter = archive::ArtifactFilter::new(spec, &tracked);
    for source in archive::artifact_sources(spec) {
        let in_container =
            if source.is_empty() { format!("{project_dir}/.") } else { format!("{project_dir}/{source}") };
        let mut keep = |rel: &str, is_dir: bool, _: Option<&str>| filter.keeps(rel, is_dir);
        let copied =
            docker::copy_from(container, &in_container, &mut |input| writer.add_filtered(input, &source, &mut keep))
                .map_err(|e| e.to_string())?;
        if copied.is_none() {
            run.log(&job.name, LogSource::Glci, format!("WARNING: {source}: no matching files"));
        }
    }
    let files = writer.files;
    writer.finish().and_then(|mut w| w.flush()).map_err(|e| format!("{}: {e}", path.display()))?;
    if files == 0 {
        let _ = fs::remove_file(&path);
        run.log(&job.name, LogSource::Glci, "WARNING: no files matched the artifacts paths");
    } else {
        let mut what = spec.paths.clone();
        if spec.untracked {
            what.push("untracked files".into());
        }
        run.log(
            &job.name,
            LogSource::Glci,
            format!("{files} file{} saved as artifacts ({})", if files == 1 { "" } else { "s" }, what.join(", ")),
        );
    }
    Ok(())
}

/// The `coverage:` value of the log so far: the last line that gives one wins (GitLab).
struct Coverage {
    regex: Option<regex::Regex>,
    last: std::sync::Mutex<Option<String>>,
}

impl Coverage {
    fn new(pattern: Option<&str>) -> Coverage {
        // The pattern compiled when the pipeline was read; a failure here cannot happen.
        Coverage { regex: pattern.and_then(|p| regex::Regex::new(p).ok()), last: std::sync::Mutex::new(None) }
    }

    fn see(&self, line: &str) {
        let Some(regex) = &self.regex else { return };
        if let Some(value) = coverage::from_line(regex, line) {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
        }
    }

    fn found(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How a script phase ended.
enum Phase {
    Exited(i32),
    TimedOut,
    Canceled,
}

/// Starts the container attached, its output going to the job's log, under a watchdog that
/// kills it at `timeout` or when the run is canceled.
fn run_phase(
    run: &Run<'_>,
    job: &str,
    container: &str,
    timeout: Duration,
    coverage: &Coverage,
) -> Result<Phase, String> {
    let timed_out = AtomicBool::new(false);
    let canceled = AtomicBool::new(false);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let code = std::thread::scope(|scope| {
        scope.spawn(|| {
            let cancel = run.cancel.receiver();
            let deadline = after(timeout);
            select! {
                recv(done_rx) -> _ => return,
                recv(cancel) -> _ => canceled.store(true, Ordering::SeqCst),
                recv(deadline) -> _ => timed_out.store(true, Ordering::SeqCst),
            }
            // Kill until the attached `docker start` returns (a kill can land before the
            // container is running; then the next one stops it).
            loop {
                let _ = docker::kill(container);
                match done_rx.recv_timeout(KILL_RETRY) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        });
        let on_line = |line: &[u8]| {
            let line = String::from_utf8_lossy(line).into_owned();
            coverage.see(&line);
            run.log(job, LogSource::Job, line)
        };
        let code = docker::start_attached(container, &on_line);
        drop(done_tx);
        code
    });
    if canceled.load(Ordering::SeqCst) {
        return Ok(Phase::Canceled);
    }
    if timed_out.load(Ordering::SeqCst) {
        return Ok(Phase::TimedOut);
    }
    code.map(Phase::Exited).map_err(|e| e.to_string())
}

/// `1h 30m`, `45s`: durations for people.
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_durations() {
        assert_eq!(name_part("test: [1, linux]"), "test---1--linux");
        assert_eq!(name_part("build"), "build");
        assert_eq!(human(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(human(Duration::from_secs(0)), "0s");
        assert_eq!(human(Duration::from_secs(61)), "1m 1s");
    }

    #[test]
    fn a_container_without_its_own_network_is_created_on_the_wirings_first() {
        let wiring = ["glci-net".to_string(), "other".to_string()];
        let (primary, extra) = networks_of(None, &wiring);
        assert_eq!(primary.as_deref(), Some("glci-net"));
        assert_eq!(extra, ["other".to_string()]);
        let (primary, extra) = networks_of(Some("job-net".into()), &wiring);
        assert_eq!(primary.as_deref(), Some("job-net"));
        assert_eq!(extra, wiring);
        assert_eq!(networks_of(None, &[]), (None, &[][..]));
    }
}
