//! `glci run`: flags → pipeline (`parse::load_with`, includes from the project) → plan (with git facts, `--env`, `--project`)
//! → `execute`, its events rendered live on stdout (text or `--json`). SIGINT/SIGTERM cancel the
//! run: jobs stop, every container and network of the run is removed; a second signal quits at
//! once. Exit codes (cli/error.rs): 0 passed, 1 a job failed or the run was interrupted,
//! 2 a configuration error (the one-line `file:line: key: message`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::output::stderr_line;
use super::sources::{load_pipeline, variables_files, with_sources};
use super::{composed, downstream as downstream_cli, print_stdout, CliError};
use crate::auth::Auth;
use crate::config::{current_exe, docker_config_dir, glci_home, mock_names, process_env, Config};
use crate::mock;
use crate::pipeline::execute::{self, Cancel, JobWiring, NoWiring, Options, PipelineStatus};
use crate::pipeline::facts::{ProjectFiles, RunFacts};
use crate::pipeline::image_files::ImageFiles;
use crate::pipeline::wiring::{self, Registry, RegistryWiring};
use crate::pipeline::{changes, downstream, event_format, parse, plan, variables};
use crate::secret::Secret;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Jobs to run, with the jobs they need; the whole pipeline when none is named.
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
    /// The pipeline file.
    #[arg(short = 'f', long = "file", value_name = "FILE", default_value = ".gitlab-ci.yml")]
    pub file: PathBuf,
    /// Jobs running at once [default: the number of CPUs].
    #[arg(short = 'j', long = "parallel", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// A variable for every job, over the pipeline's own (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A value for an input of the pipeline file's `spec: inputs` header (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub input: Vec<String>,
    /// Remote includes from the include cache only; one that is not cached is an error.
    #[arg(long)]
    pub offline: bool,
    /// Variables from a file of KEY=VALUE lines (`--env` wins over it).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The project path (`group/project`): CI_PROJECT_PATH and /builds/<path>
    /// [default: from the git remote `origin`, else the directory name].
    #[arg(long, value_name = "PATH")]
    pub project: Option<String>,
    /// Line-delimited JSON events on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// No registry for the jobs: no CI_REGISTRY* variables, no CA, no glci-mock started.
    #[arg(long, conflicts_with_all = ["registry", "registry_user", "registry_password", "registry_password_stdin", "push_through"])]
    pub no_registry: bool,
    /// Point CI_REGISTRY* at this registry (host[:port]) instead of the embedded one; nothing
    /// is mounted [default: `[registry] url` of the global config].
    #[arg(long, value_name = "HOST")]
    pub registry: Option<String>,
    /// CI_REGISTRY_USER for --registry [default: `[registry] username`].
    #[arg(long, value_name = "USER")]
    pub registry_user: Option<String>,
    /// CI_REGISTRY_PASSWORD for --registry. Visible to other users in `ps`: prefer
    /// --registry-password-stdin or the GLCI_REGISTRY_PASSWORD environment variable
    /// [default: `[registry] password`].
    #[arg(long, value_name = "PASSWORD")]
    pub registry_password: Option<String>,
    /// Read the --registry password from the first line of stdin.
    #[arg(long, conflicts_with = "registry_password")]
    pub registry_password_stdin: bool,
    /// The run's job tokens mirror what they push to the upstream registry (push-through)
    /// [default: `[registry] push_through`].
    #[arg(long, conflicts_with_all = ["registry"])]
    pub push_through: bool,
    /// Run as a tag pipeline for tag NAME (CI_COMMIT_TAG; no CI_COMMIT_BRANCH)
    /// [default: the tag HEAD is at, if any].
    #[arg(long, value_name = "NAME", conflicts_with = "branch")]
    pub tag: Option<String>,
    /// The image of jobs that name none and have no `default: image` [default: `[run] default_image`].
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
    /// Run as a branch pipeline for branch NAME (CI_COMMIT_BRANCH) [default: the checked-out branch].
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// `rules: changes` compares the work tree with this ref (branch, tag or SHA) [default: the
    /// merge base with the default branch; on the default branch, the previous commit].
    #[arg(long, value_name = "REF")]
    pub changes_against: Option<String>,
    /// List every job (stage, when, needs, allow_failure, whether its rules keep it and why)
    /// instead of running the pipeline; with --json one object per line.
    #[arg(long, conflicts_with = "preview")]
    pub list: bool,
    /// Print the composed configuration (includes merged, extends and !reference resolved) as
    /// GitLab's full configuration view shows it, instead of running; --json prints it as JSON.
    #[arg(long)]
    pub preview: bool,
    /// Copy each job's artifacts out to DIR/<job>/ as the job finishes (they are kept under
    /// $GLCI_HOME/artifacts either way).
    #[arg(long, value_name = "DIR")]
    pub artifacts_dir: Option<PathBuf>,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(message.into())
}

/// Which registry the jobs get, from the flags and the global config (flags win).
enum RegistryChoice {
    None,
    Embedded { push_through: bool },
    External { host: String, username: String, password: Secret },
}

fn registry_choice(args: &RunArgs, config: &Config) -> Result<RegistryChoice, CliError> {
    if args.no_registry {
        return Ok(RegistryChoice::None);
    }
    let host = args.registry.clone().or_else(|| config.registry.url.clone());
    let Some(host) = host.filter(|h| !h.trim().is_empty()) else {
        if args.registry_user.is_some() || args.registry_password.is_some() || args.registry_password_stdin {
            return Err(usage("--registry-user/--registry-password need --registry (or [registry] url)"));
        }
        return Ok(RegistryChoice::Embedded { push_through: args.push_through || config.registry.push_through });
    };
    if args.push_through {
        return Err(usage("--push-through works with the embedded registry, not with [registry] url"));
    }
    let host = host.trim().trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let username = args.registry_user.clone().or_else(|| config.registry.username.clone()).unwrap_or_default();
    let password = if args.registry_password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| usage(format!("--registry-password-stdin: {e}")))?;
        Secret::new(line.trim_end_matches(['\r', '\n']).to_string())
    } else if let Some(password) = &args.registry_password {
        Secret::new(password.clone())
    } else if let Some(password) = process_env("GLCI_REGISTRY_PASSWORD").filter(|p| !p.is_empty()) {
        Secret::new(password)
    } else {
        config.registry.password.clone().unwrap_or_else(|| Secret::new(String::new()))
    };
    Ok(RegistryChoice::External { host: host.to_string(), username, password })
}

pub fn run(args: RunArgs, config: &Config) -> Result<(), CliError> {
    let choice = registry_choice(&args, config)?;
    let file = std::path::absolute(&args.file).map_err(|e| usage(format!("{}: {e}", args.file.display())))?;
    if !file.is_file() {
        return Err(usage(format!(
            "{}: no such file (glci run reads .gitlab-ci.yml in the current directory; -f names another)",
            args.file.display()
        )));
    }

    let file_dir = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let project_dir = crate::git::toplevel(&file_dir).unwrap_or(file_dir);
    let project_dir = project_dir.canonicalize().unwrap_or(project_dir);
    let mut git = crate::git::facts(&project_dir);
    if let Some(tag) = &args.tag {
        check_ref_name("--tag", tag)?;
        if git.tag.as_deref() != Some(tag.as_str()) {
            git.tag_message = None;
        }
        git.tag = Some(tag.clone());
    }
    if let Some(branch) = &args.branch {
        check_ref_name("--branch", branch)?;
        git.branch = Some(branch.clone());
        git.tag = None;
        git.tag_message = None;
    }
    let project_path = match &args.project {
        Some(path) => {
            plan::validate_project_path(path).map_err(|e| usage(format!("--project: {e}")))?;
            path.clone()
        }
        None => git
            .remote_url
            .as_deref()
            .and_then(crate::git::project_path_from_remote)
            .filter(|p| plan::validate_project_path(p).is_ok())
            .unwrap_or_else(|| plan::project_path_from_dir(&project_dir)),
    };
    let artifacts_dir = args.artifacts_dir.as_deref().map(artifacts_dir).transpose()?;
    let cli_variables = command_line_variables(&args)?;
    let inputs = command_line_inputs(&args.input)?;
    let files = execute::project_files(&project_dir)
        .map_err(|e| CliError::Failed(format!("listing the files of {}: {e}", project_dir.display())))?;

    let run_id = run_id()?;
    let pipeline_id = u64::from_str_radix(&run_id[..6], 16).unwrap_or(1) % 1_000_000 + 1;
    let work_dir = std::env::temp_dir().join(format!("glci-run-{run_id}"));
    let home = glci_home(&process_env);
    let wiring = match choice {
        RegistryChoice::None => None,
        RegistryChoice::Embedded { push_through } => {
            let auth = Auth::load_or_create(&home, config.registry.anonymous_pull)
                .map_err(|e| CliError::Failed(format!("the registry's admin secret: {e}")))?;
            let ca =
                crate::tls::Ca::load_or_create(&home).map_err(|e| CliError::Failed(format!("the registry CA: {e}")))?;
            let registry = Registry::Embedded {
                port: config.mock_server_port,
                network: mock_names(&process_env).network,
                auth,
                ca_pem: ca.pem().to_string(),
                push_through,
                privileged: config.docker.privileged,
            };
            Some(registry)
        }
        RegistryChoice::External { host, username, password } => Some(Registry::External { host, username, password }),
    }
    .map(|registry| {
        RegistryWiring::new(
            registry,
            &project_path,
            pipeline_id,
            docker_config_dir(&process_env).as_deref(),
            work_dir.join("docker-config"),
            ImageFiles::kept_in(home.join("image-files")),
        )
    });
    let predefined = wiring.as_ref().map(RegistryWiring::predefined).unwrap_or_default();
    let facts = RunFacts {
        project_dir: project_dir.clone(),
        project_path,
        git,
        files: files.clone(),
        cli_variables,
        selected: args.jobs.clone(),
        pipeline_id,
        predefined,
        created_at: crate::encoding::rfc3339(std::time::SystemTime::now()),
        project_variables: variables_files(&home, &project_dir)?,
        default_image: match &args.default_image {
            Some(image) if image.trim().is_empty() => return Err(usage("--default-image: an image name, not empty")),
            Some(image) => Some(image.clone()),
            None => config.run.default_image.clone(),
        },
        changes: Default::default(),
        project_files: Default::default(),
        projects: config.gitlab.projects.clone(),
    };
    let instance = gitlab_instance(config, &facts, &home, args.offline);
    let changes_against = args.changes_against.as_deref();
    if args.preview {
        let preview = with_sources(&file, &facts, &inputs, &instance, changes_against, |sources| {
            parse::preview_all(&file, sources)
        })?;
        print_stdout(&composed::preview_text(&preview, args.json));
        return Ok(());
    }
    let pipeline = load_pipeline(&file, &facts, &inputs, &instance, changes_against)?;
    for note in &pipeline.notes {
        stderr_line(&format!("note: {note}"));
    }
    // Keys GitLab accepts that mean nothing here: said once each, not silently dropped.
    let mut said = std::collections::BTreeSet::new();
    let artifact_notes = pipeline.jobs.iter().flat_map(|j| j.artifacts.iter().flat_map(|a| &a.notes));
    for note in pipeline.jobs.iter().flat_map(|j| &j.run_keys.notes).chain(artifact_notes) {
        if said.insert(note.clone()) {
            stderr_line(&format!("note: {note}"));
        }
    }
    // A job's `rules: exists: {project}` asks the instance for that project's files.
    let lister = std::sync::Arc::new(gitlab_instance(config, &facts, &home, args.offline));
    let project_files = ProjectFiles(Some({
        let lister = lister.clone();
        std::sync::Arc::new(move |project: &str, reference: &str| {
            let source = parse::Source::Files { project: project.to_owned(), reference: reference.to_owned() };
            let fetched = lister.fetch(&source)?;
            Ok(fetched.text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect())
        })
    }));
    let facts = RunFacts {
        changes: changed_paths(&pipeline, &facts, args.changes_against.as_deref())?,
        project_files,
        ..facts
    };
    let plan = downstream::plan(&pipeline, &facts).map_err(|e| usage(e.to_string()));
    for note in lister.take_notes() {
        stderr_line(&format!("warning: {note}"));
    }
    let plan = plan?;
    for note in &plan.notes {
        stderr_line(&format!("note: {note}"));
    }
    if args.list {
        print_stdout(&if args.json { composed::list_json(&plan) } else { composed::list_text(&plan) });
    }
    if let Some(at) = &plan.excluded_by_workflow {
        stderr_line(&format!(
            "no pipeline: `workflow: rules` ({}:{}) do not let this one run",
            at.file.display(),
            at.line.max(1)
        ));
        return Ok(());
    }
    if args.list {
        return Ok(());
    }
    if plan.jobs.is_empty() {
        stderr_line("no jobs to run: the rules of every job leave it out");
        return Ok(());
    }
    crate::docker::server_version().map_err(|e| CliError::Failed(format!("the Docker daemon does not answer: {e}")))?;
    if matches!(wiring.as_ref().map(RegistryWiring::is_embedded), Some(true)) {
        let exe = current_exe().map_err(|e| CliError::Failed(format!("cannot find the glci binary: {e}")))?;
        let options = mock::MockOptions {
            home: &home,
            config,
            names: mock_names(&process_env),
            exe,
            docker_config_dir: docker_config_dir(&process_env),
        };
        let mock = mock::ensure(&options).map_err(|e| {
            CliError::Failed(format!(
                "starting the embedded registry ({}): {e} (glci run --no-registry runs without it)",
                options.names.container
            ))
        })?;
        stderr_line(&format!(
            "registry: {} {} on 127.0.0.1:{} (jobs: CI_REGISTRY={}:{})",
            mock.names.container,
            mock.action,
            mock.port,
            mock::HOSTNAME,
            mock.port
        ));
    }

    let cancel = Arc::new(Cancel::new());
    let signals = watch_signals(cancel.clone())?;
    let parallel = args
        .parallel
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let cache_root = crate::pipeline::cache_store::root(&home);
    let artifacts_root = crate::pipeline::artifact_store::root(&home);
    // Expired artifacts of every project go at the start of a run, as GitLab's instance-wide
    // expiry worker removes them whatever the project.
    let expired = crate::pipeline::artifact_store::sweep(&artifacts_root, std::time::SystemTime::now());
    if !expired.is_empty() {
        stderr_line(&format!(
            "artifacts: removed {} expired job artifact director{} under {}",
            expired.len(),
            if expired.len() == 1 { "y" } else { "ies" },
            artifacts_root.display()
        ));
    }
    let options =
        Options { run_id: run_id.clone(), parallel, files, work_dir, cache_root, artifacts_root, artifacts_dir };
    let style = event_format::TextStyle::new(std::io::stdout().is_terminal(), downstream_cli::job_names(&plan));
    let json = args.json;
    let secrets = wiring.as_ref().map(RegistryWiring::secrets);
    let events = move |event: execute::Event| {
        // Registry passwords, tokens and DOCKER_AUTH_CONFIG never reach the output (issue 8).
        let event = match &secrets {
            Some(secrets) => masked(event, &secrets.lock().unwrap_or_else(|p| p.into_inner())),
            None => event,
        };
        if json {
            print_stdout(&format!("{}\n", event_format::json(&event)));
        } else {
            print_stdout(&event_format::text(&event, &style));
        }
    };
    let job_wiring: &dyn JobWiring = match &wiring {
        Some(wiring) => wiring,
        None => &NoWiring,
    };
    let children =
        downstream_cli::ChildLoader { file: &file, facts: &facts, instance: &instance, changes_against, home: &home };
    let outcome = execute::execute(&plan, &options, job_wiring, &children, &events, &cancel);
    signals.close();
    for problem in &outcome.cleanup_errors {
        stderr_line(&format!("warning: cleaning up run {run_id}: {problem}"));
    }
    match outcome.status {
        PipelineStatus::Success => Ok(()),
        PipelineStatus::Canceled => {
            Err(CliError::Failed("interrupted: the jobs were stopped and their containers and networks removed".into()))
        }
        PipelineStatus::Failed => {
            let failed: Vec<&str> = outcome
                .jobs
                .iter()
                .filter(|r| r.status == execute::JobStatus::Failed && !r.allowed_failure)
                .map(|r| r.job.as_str())
                .collect();
            Err(CliError::Failed(format!("pipeline failed: {} failed", failed.join(", "))))
        }
    }
}

/// A log line with the secrets masked, also inside a child pipeline's event.
fn masked(event: execute::Event, secrets: &[String]) -> execute::Event {
    match event {
        execute::Event::Log { job, source, line } => {
            execute::Event::Log { job, source, line: wiring::mask(&line, secrets) }
        }
        execute::Event::Downstream { pipeline, event } => {
            execute::Event::Downstream { pipeline, event: Box::new(masked(*event, secrets)) }
        }
        // A failure's reason may quote docker's or a command's words: masked the same way.
        execute::Event::JobFinished(mut report) => {
            report.reason = report.reason.map(|r| wiring::mask(&r, secrets));
            execute::Event::JobFinished(report)
        }
        execute::Event::PipelineFinished { status, duration, mut jobs } => {
            for report in &mut jobs {
                report.reason = report.reason.take().map(|r| wiring::mask(&r, secrets));
            }
            execute::Event::PipelineFinished { status, duration, jobs }
        }
        event => event,
    }
}

/// `--artifacts-dir DIR`: absolute, created when missing; a file there is a usage error.
fn artifacts_dir(dir: &Path) -> Result<PathBuf, CliError> {
    let absolute = std::path::absolute(dir).map_err(|e| usage(format!("--artifacts-dir {}: {e}", dir.display())))?;
    std::fs::create_dir_all(&absolute)
        .map_err(|e| usage(format!("--artifacts-dir {}: cannot create the directory: {e}", dir.display())))?;
    Ok(absolute)
}

/// A `--tag`/`--branch` value must be a name git accepts for a ref.
fn check_ref_name(flag: &str, name: &str) -> Result<(), CliError> {
    let bad = name.is_empty()
        || name.starts_with(['-', '/', '.'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("//")
        || name.contains("@{")
        || name.chars().any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c));
    if bad {
        return Err(usage(format!("{flag}: `{name}` is not a valid git ref name")));
    }
    Ok(())
}

/// What `rules: changes` compares against (issue 17): `--changes-against`, else the merge base
/// with the default branch (the previous commit on it); and every `compare_to` ref, expanded
/// with the pipeline-level variables. Outside a git repository nothing is known (all true).
fn changed_paths(
    pipeline: &crate::pipeline::model::Pipeline,
    facts: &RunFacts,
    against: Option<&str>,
) -> Result<plan::ChangedPaths, CliError> {
    let dir = &facts.project_dir;
    let mut out = plan::ChangedPaths::default();
    if crate::git::toplevel(dir).is_none() {
        if against.is_some() {
            return Err(usage(format!("--changes-against: {} is not in a git repository", dir.display())));
        }
        return Ok(out);
    }
    let base = match against {
        Some(reference) => {
            let sha = crate::git::resolve_commit(dir, reference)
                .ok_or_else(|| usage(format!("--changes-against: `{reference}` is no commit of this repository")))?;
            Some((sha, format!("{reference} (--changes-against)")))
        }
        None => crate::git::change_base(dir, &facts.git),
    };
    if let Some((sha, shown)) = base {
        out.default = Some(crate::git::changed_paths(dir, &sha).map_err(CliError::Failed)?);
        out.base = Some(shown);
    }
    let set = |pairs: &mut dyn Iterator<Item = (&String, &String)>| {
        let mut set = variables::VarSet::new();
        pairs.for_each(|(name, value)| set.set(name, value.clone()));
        set
    };
    let vars = variables::resolve(&[
        (crate::pipeline::predefined::pipeline_variables(pipeline, facts), true),
        (set(&mut pipeline.variables.iter().map(|v| (&v.name, &v.value))), false),
        (set(&mut facts.cli_variables.iter().map(|(n, v)| (n, v))), true),
    ]);
    let lookup = |name: &str| vars.get(name).map(String::from);
    for reference in changes::compare_to_refs(changes::clauses(pipeline), &lookup) {
        let paths = match crate::git::resolve_commit(dir, &reference) {
            Some(sha) => crate::git::changed_paths(dir, &sha),
            None => Err("no such branch, tag or commit in this repository".to_string()),
        };
        out.against.insert(reference, paths);
    }
    Ok(out)
}

/// The GitLab instance remote includes come from: `[gitlab] url`, else the host of the
/// `origin` remote, else gitlab.com.
fn gitlab_instance(config: &Config, facts: &RunFacts, home: &Path, offline: bool) -> crate::gitlab::Instance {
    let url = config.gitlab.url.clone().unwrap_or_else(|| {
        let host = facts.git.remote_url.as_deref().and_then(crate::git::host_from_remote);
        format!("https://{}", host.unwrap_or_else(|| "gitlab.com".into()))
    });
    crate::gitlab::Instance::new(&url, config.gitlab.token.clone(), home, offline)
}

/// `--input NAME=VALUE`s, in order (a later one for the same name wins).
fn command_line_inputs(flags: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for flag in flags {
        let Some((name, value)) = flag.split_once('=') else {
            return Err(usage(format!("--input {flag}: expected NAME=VALUE")));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(usage(format!("--input {flag}: `{name}` is not an input name (letters, digits, `_`, `-`)")));
        }
        out.retain(|(n, _)| n != name);
        out.push((name.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// `--env-file` then `--env`, in order (later wins).
fn command_line_variables(args: &RunArgs) -> Result<Vec<(String, String)>, CliError> {
    let mut out = Vec::new();
    if let Some(path) = &args.env_file {
        let text = std::fs::read_to_string(path).map_err(|e| usage(format!("--env-file {}: {e}", path.display())))?;
        out.extend(variables::parse_env_file(&path.display().to_string(), &text).map_err(|e| usage(e.to_string()))?);
    }
    for assignment in &args.env {
        out.push(variables::parse_assignment(assignment).map_err(|e| usage(e.to_string()))?);
    }
    Ok(out)
}

/// 8 random hex digits: names and labels of this run's containers and networks.
fn run_id() -> Result<String, CliError> {
    let mut bytes = [0u8; 4];
    getrandom::getrandom(&mut bytes).map_err(|e| CliError::Failed(format!("no randomness for a run id: {e}")))?;
    Ok(crate::encoding::hex(&bytes))
}

/// First SIGINT/SIGTERM: cancel the run (jobs stop, cleanup follows). Second: quit now.
fn watch_signals(cancel: Arc<Cancel>) -> Result<signal_hook::iterator::Handle, CliError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| CliError::Failed(format!("cannot install signal handlers: {e}")))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("glci-signals".into())
        .spawn(move || {
            for (count, _) in signals.forever().enumerate() {
                if count == 0 {
                    stderr_line("interrupted: stopping the jobs and removing their containers (again to quit now)");
                    cancel.cancel();
                } else {
                    super::exit_now(CliError::Interrupted(
                        "interrupted twice: quitting; containers labelled glci.run may remain".into(),
                    ));
                }
            }
        })
        .map_err(|e| CliError::Failed(format!("cannot start the signal thread: {e}")))?;
    Ok(handle)
}
