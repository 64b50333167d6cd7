//! The only code that spawns `docker` (DESIGN §2: the CLI through `std::process`, never a
//! Docker API crate). Typed calls; failures carry the command (secrets never in argv: they go
//! through stdin), the exit code and stderr.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::secret::Secret;

#[derive(Debug)]
pub struct DockerError {
    /// The command line, without secrets (they never are in argv).
    pub command: String,
    pub code: Option<i32>,
    pub stderr: String,
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
        // Docker often says why on the line before its summary ("Error: failed to start
        // containers: x" follows "... port is already allocated"): keep the last two lines.
        let lines: Vec<&str> = self.stderr.trim().lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let stderr = lines[lines.len().saturating_sub(2)..].join(" / ");
        write!(f, "`{}` failed (exit {code}): {stderr}", self.command)
    }
}

impl std::error::Error for DockerError {}

#[allow(clippy::disallowed_methods)] // docker.rs is the one home for spawning docker and its credential helpers (STYLE.md §7)
fn run(args: &[&str], stdin: Option<&[u8]>) -> Result<String, DockerError> {
    let command = format!("docker {}", args.join(" "));
    let spawn_error = |e: std::io::Error| DockerError {
        command: command.clone(),
        code: None,
        stderr: format!("cannot run docker: {e} (is the docker CLI installed?)"),
    };
    let mut child = Command::new("docker")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Written then closed; a docker that exits early just makes this fail quietly.
        let _ = pipe.write_all(bytes);
    }
    // wait_with_output drains stdout and stderr together, so neither pipe can fill and block.
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(DockerError {
            command,
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// `docker login SERVER -u USER --password-stdin`.
pub fn login(server: &str, username: &str, password: &Secret) -> Result<(), DockerError> {
    run(&["login", server, "--username", username, "--password-stdin"], Some(password.expose().as_bytes())).map(|_| ())
}

/// `docker-credential-<helper> get`: the server name on stdin, `{"Username","Secret"}` out.
#[allow(clippy::disallowed_methods)] // docker.rs is the one home for spawning docker and its credential helpers (STYLE.md §7)
pub fn credential_helper_get(helper: &str, server: &str) -> Result<(String, Secret), DockerError> {
    let program = format!("docker-credential-{helper}");
    let failed = |stderr: String, code| DockerError { command: format!("{program} get"), code, stderr };
    if !helper.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(failed("credential helper names are letters, digits, - and _".into(), None));
    }
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string(), None))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| failed(e.to_string(), None))?;
    if !output.status.success() {
        return Err(failed(String::from_utf8_lossy(&output.stderr).into_owned(), output.status.code()));
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|_| failed("answer is not JSON".into(), None))?;
    match (answer["Username"].as_str(), answer["Secret"].as_str()) {
        (Some(user), Some(secret)) => Ok((user.to_string(), Secret::new(secret.to_string()))),
        _ => Err(failed("answer lacks Username or Secret".into(), None)),
    }
}

/// `docker pull IMAGE` (quiet: progress is not parsed, failures carry stderr).
pub fn pull(image: &str) -> Result<(), DockerError> {
    run(&["pull", "--quiet", image], None).map(|_| ())
}

/// `docker tag SOURCE TARGET`.
pub fn tag(source: &str, target: &str) -> Result<(), DockerError> {
    run(&["tag", source, target], None).map(|_| ())
}

/// `docker image rm NAME`: removes one name; the image stays while other names point at it.
pub fn untag(image: &str) -> Result<(), DockerError> {
    run(&["image", "rm", image], None).map(|_| ())
}

// ---------------------------------------------------------------------------
// Containers and networks for `glci run` (issue 7). Everything a run creates carries the label
// `glci.run=<run id>`, so cleanup finds it even after an interrupt.
// ---------------------------------------------------------------------------

/// The label key every container and network of a `glci run` carries; its value is the run id.
pub const RUN_LABEL: &str = "glci.run";

/// A `docker` command in its own process group, so a Ctrl-C on the terminal reaches glci (which
/// then cleans up) and not the docker CLI children in the middle of that cleanup.
#[allow(clippy::disallowed_methods)] // docker.rs is the one home for spawning docker and its credential helpers (STYLE.md §7)
fn command(args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("docker");
    cmd.args(args).process_group(0);
    cmd
}

fn command_line(args: &[&str]) -> String {
    format!("docker {}", args.join(" "))
}

fn spawn_failed(args: &[&str], e: &std::io::Error) -> DockerError {
    DockerError {
        command: command_line(args),
        code: None,
        stderr: format!("cannot run docker: {e} (is the docker CLI installed?)"),
    }
}

/// Runs `docker ARGS` in its own process group; stdout on success.
fn run_grouped(args: &[&str]) -> Result<String, DockerError> {
    run_grouped_with_env(args, &[])
}

/// [`run_grouped`] with `env` added to the docker CLI's environment (values never in argv; the
/// error names the command only).
fn run_grouped_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<String, DockerError> {
    let output = command(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| spawn_failed(args, &e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(DockerError {
            command: command_line(args),
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Reads a pipe to its end on a thread (so the other pipe can never block on a full one).
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = std::io::Read::read_to_end(&mut pipe, &mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// What `docker create` gets for one job or service container.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: Vec<(String, String)>,
    pub network: Option<String>,
    pub network_aliases: Vec<String>,
    /// `Some(vec![])` resets the image's entrypoint; `Some([first, rest..])` sets `first` as the
    /// entrypoint and puts `rest` before `command` (the CLI takes one entrypoint word only).
    pub entrypoint: Option<Vec<String>>,
    pub command: Vec<String>,
    /// A `KEY=VALUE` file (0600): variables never go into argv, where `ps` would show them.
    pub env_file: Option<std::path::PathBuf>,
    pub privileged: bool,
    /// `--user`: name or uid[:gid] (`image: docker: user`).
    pub user: Option<String>,
    /// `--platform` (`image: docker: platform`).
    pub platform: Option<String>,
    /// Values of the `env_file`'s bare `NAME` lines (multi-line ones, which the file format cannot
    /// hold): set in the docker CLI's own environment, where docker reads them from. Never argv.
    pub client_env: Vec<(String, Secret)>,
}

/// How a privileged container is run: `--privileged`, or, where the host's capability
/// bounding set lacks some capability (runc then fails "unable to apply caps"), the recipe of
/// shared/notes/dind-offline.md: every capability the host has, seccomp/systempaths unconfined.
fn privileged_args() -> &'static [String] {
    static ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    ARGS.get_or_init(|| match missing_capabilities() {
        missing if missing.is_empty() => vec!["--privileged".into()],
        missing => {
            let mut args = vec!["--cap-add".to_string(), "ALL".to_string()];
            for cap in missing {
                args.push("--cap-drop".into());
                args.push(cap);
            }
            args.extend(
                ["--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined"].map(String::from),
            );
            args
        }
    })
}

/// The capabilities the kernel knows that are outside this process's bounding set (the VM's,
/// when dockerd runs on the same machine), by Docker's names; empty when all are there.
pub fn missing_capabilities() -> Vec<String> {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(bounding) =
        status.lines().find_map(|l| l.strip_prefix("CapBnd:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Vec::new();
    };
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok())
        .unwrap_or(40)
        .min(NAMES.len() - 1);
    (0..=last).filter(|bit| bounding & (1u64 << bit) == 0).map(|bit| NAMES[bit].to_string()).collect()
}

/// Whether privileged containers get the fallback recipe instead of `--privileged`.
pub fn privileged_needs_fallback() -> bool {
    privileged_args().first().map(String::as_str) != Some("--privileged")
}

/// `docker create …`: the new container's id.
pub fn create(spec: &ContainerSpec) -> Result<String, DockerError> {
    let args = create_args(spec);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = spec.client_env.iter().map(|(name, value)| (name.as_str(), value.expose())).collect();
    run_grouped_with_env(&args, &env).map(|out| out.trim().to_string())
}

/// The argv of `docker create` for `spec`: no variable's value is in it (they are in the env
/// file, or in the CLI's environment for `client_env`).
fn create_args(spec: &ContainerSpec) -> Vec<String> {
    let mut args: Vec<String> = vec!["create".into(), "--name".into(), spec.name.clone()];
    for (key, value) in &spec.labels {
        args.push("--label".into());
        args.push(format!("{key}={value}"));
    }
    if let Some(network) = &spec.network {
        args.push("--network".into());
        args.push(network.clone());
        for alias in &spec.network_aliases {
            args.push("--network-alias".into());
            args.push(alias.clone());
        }
    }
    if let Some(file) = &spec.env_file {
        args.push("--env-file".into());
        args.push(file.display().to_string());
    }
    if spec.privileged {
        args.extend(privileged_args().iter().cloned());
    }
    if let Some(user) = &spec.user {
        args.extend(["--user".into(), user.clone()]);
    }
    if let Some(platform) = &spec.platform {
        args.extend(["--platform".into(), platform.clone()]);
    }
    let mut command = spec.command.clone();
    if let Some(entrypoint) = &spec.entrypoint {
        args.push("--entrypoint".into());
        match entrypoint.split_first() {
            Some((first, rest)) => {
                args.push(first.clone());
                command.splice(0..0, rest.iter().cloned());
            }
            None => args.push(String::new()),
        }
    }
    args.push(spec.image.clone());
    args.extend(command);
    args
}

/// `docker start CONTAINER` (detached: services).
pub fn start(container: &str) -> Result<(), DockerError> {
    run_grouped(&["start", container]).map(|_| ())
}

/// `docker start --attach CONTAINER`: blocks until the container exits, handing each output line
/// (stdout and stderr, without the newline) to `on_line`; returns the container's exit code.
/// Stop it from another thread with [`kill`].
pub fn start_attached(container: &str, on_line: &(dyn Fn(&[u8]) + Sync)) -> Result<i32, DockerError> {
    let args = ["start", "--attach", container];
    let mut child = spawn_piped(&args, Stdio::null())?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::scope(|scope| {
        scope.spawn(|| read_lines(stderr, on_line));
        read_lines(stdout, on_line);
    });
    let status = child.wait().map_err(|e| spawn_failed(&args, &e))?;
    status.code().ok_or_else(|| DockerError {
        command: command_line(&args),
        code: None,
        stderr: "docker start was killed by a signal".into(),
    })
}

/// Splits a pipe into lines (`\n`, a trailing `\r` dropped) until EOF.
fn read_lines<R: std::io::Read>(pipe: Option<R>, on_line: &(dyn Fn(&[u8]) + Sync)) {
    use std::io::BufRead;
    let Some(pipe) = pipe else { return };
    let mut reader = std::io::BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                on_line(&line);
            }
        }
    }
}

/// `docker kill CONTAINER`; a container that is not running (any more) is not an error.
pub fn kill(container: &str) -> Result<(), DockerError> {
    match run_grouped(&["kill", container]) {
        Err(e) if e.stderr.contains("is not running") || e.stderr.contains("No such container") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// `docker rm --force --volumes CONTAINER...`; containers already gone are not an error.
pub fn remove_containers(containers: &[String]) -> Result<(), DockerError> {
    if containers.is_empty() {
        return Ok(());
    }
    let mut args = vec!["rm", "--force", "--volumes"];
    args.extend(containers.iter().map(String::as_str));
    match run_grouped(&args) {
        Err(e) if e.stderr.lines().all(|l| l.trim().is_empty() || l.contains("No such container")) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Spawns docker with stdout and stderr piped (the caller drains them) and `stdin` as given.
fn spawn_piped(args: &[&str], stdin: Stdio) -> Result<std::process::Child, DockerError> {
    command(args).stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| spawn_failed(args, &e))
}

/// Runs docker with `write` streaming into its stdin while stdout and stderr are drained on
/// threads (so neither side can block the other); fails when docker does or the writer does.
fn run_feeding(args: &[&str], write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>) -> Result<(), DockerError> {
    let mut child = spawn_piped(args, Stdio::piped())?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let written = match child.stdin.take() {
        Some(mut stdin) => write(&mut stdin).and_then(|()| stdin.flush()),
        None => Ok(()),
    };
    let status = child.wait().map_err(|e| spawn_failed(args, &e))?;
    let _ = out.join();
    let stderr = err.join().unwrap_or_default();
    match (status.success(), written) {
        (true, Ok(())) => Ok(()),
        (true, Err(e)) => Err(DockerError { command: command_line(args), code: None, stderr: e.to_string() }),
        (false, _) => Err(DockerError { command: command_line(args), code: status.code(), stderr }),
    }
}

/// `docker cp - CONTAINER:DIR`: extracts the tar stream `tar` (written by `write`) into `DIR`.
pub fn copy_into(
    container: &str,
    dir: &str,
    write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), DockerError> {
    let target = format!("{container}:{dir}");
    let args = ["cp", "-", target.as_str()];
    run_feeding(&args, write)
}

/// `docker cp CONTAINER:PATH -`: hands the tar stream of `PATH` to `read`. `Ok(None)` when the
/// path does not exist in the container.
pub fn copy_from<T>(
    container: &str,
    path: &str,
    read: &mut dyn FnMut(&mut dyn std::io::Read) -> std::io::Result<T>,
) -> Result<Option<T>, DockerError> {
    let source = format!("{container}:{path}");
    let args = ["cp", source.as_str(), "-"];
    let mut child = spawn_piped(&args, Stdio::null())?;
    let err = drain(child.stderr.take());
    let result = match child.stdout.take() {
        Some(mut stdout) => {
            let result = read(&mut stdout);
            // Whatever `read` left unread must still be consumed, or docker blocks on the pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            result
        }
        None => Err(std::io::Error::other("no stdout pipe")),
    };
    let status = child.wait().map_err(|e| spawn_failed(&args, &e))?;
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let missing = match copy_failure(&stderr) {
            CopyFailure::PathMissing => true,
            CopyFailure::PathOrContainerMissing => container_exists(container),
            CopyFailure::Other => false,
        };
        if missing {
            return Ok(None);
        }
        return Err(DockerError { command: command_line(&args), code: status.code(), stderr });
    }
    result.map(Some).map_err(|e| DockerError {
        command: command_line(&args),
        code: None,
        stderr: format!("reading the tar: {e}"),
    })
}

/// What a failed `docker cp CONTAINER:PATH -` says about `PATH`.
#[derive(Debug, PartialEq, Eq)]
enum CopyFailure {
    /// The daemon looked and the path is not there.
    PathMissing,
    /// The CLI cannot tell which is missing: the container or the path.
    PathOrContainerMissing,
    Other,
}

/// Docker 23+ relays the daemon's "Could not find the file /p in container ID" (and "No such
/// container: ID" for a missing container); the 20.10 CLI Debian ships maps every 404 of the
/// archive endpoint to "No such container:path: ID:/p", whether the container or the path is
/// missing, so that one needs [`container_exists`] to tell.
fn copy_failure(stderr: &str) -> CopyFailure {
    if stderr.contains("Could not find the file") || stderr.contains("No such file or directory") {
        CopyFailure::PathMissing
    } else if stderr.contains("No such container:path") {
        CopyFailure::PathOrContainerMissing
    } else {
        CopyFailure::Other
    }
}

fn container_exists(container: &str) -> bool {
    run_grouped(&["inspect", "--type", "container", "--format", "{{.Id}}", container]).is_ok()
}

/// Whether a failed `docker network rm` only named networks that are gone: docker 28 says
/// "network N not found" plus a bare "exit status 1" line, the 20.10 CLI "No such network: N".
fn only_missing_networks(stderr: &str) -> bool {
    stderr.lines().map(str::trim).all(|l| {
        l.is_empty() || l.ends_with(" not found") || l.contains("No such network") || l.starts_with("exit status ")
    })
}

/// `docker logs --tail N CONTAINER` (stdout and stderr together, for a failed service).
pub fn logs_tail(container: &str, lines: usize) -> Result<String, DockerError> {
    let tail = lines.to_string();
    let args = ["logs", "--tail", tail.as_str(), container];
    let output = command(&args).stdin(Stdio::null()).output().map_err(|e| spawn_failed(&args, &e))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(text)
}

/// Whether the container is running (`docker inspect`).
pub fn is_running(container: &str) -> Result<bool, DockerError> {
    run_grouped(&["inspect", "--format", "{{.State.Running}}", container]).map(|out| out.trim() == "true")
}

/// `docker image inspect IMAGE`: whether the image is present locally.
pub fn image_exists(image: &str) -> Result<bool, DockerError> {
    match run_grouped(&["image", "inspect", "--format", "{{.Id}}", image]) {
        Ok(_) => Ok(true),
        Err(e) if e.code == Some(1) && e.stderr.contains("No such image") => Ok(false),
        Err(e) => Err(e),
    }
}

/// `docker pull [--platform P] IMAGE` in the run's process group discipline (see [`command`]).
pub fn pull_image(image: &str, platform: Option<&str>) -> Result<(), DockerError> {
    run_grouped(&pull_args(&[], image, platform)).map(|_| ())
}

/// `[PREFIX..] pull --quiet [--platform P] IMAGE`.
fn pull_args<'a>(prefix: &[&'a str], image: &'a str, platform: Option<&'a str>) -> Vec<&'a str> {
    let mut args = prefix.to_vec();
    args.extend(["pull", "--quiet"]);
    if let Some(platform) = platform {
        args.extend(["--platform", platform]);
    }
    args.push(image);
    args
}

/// `docker network create --label ... NAME`.
pub fn network_create(name: &str, labels: &[(String, String)]) -> Result<(), DockerError> {
    let mut args: Vec<String> = vec!["network".into(), "create".into()];
    for (key, value) in labels {
        args.push("--label".into());
        args.push(format!("{key}={value}"));
    }
    args.push(name.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_grouped(&args).map(|_| ())
}

/// `docker network rm NAME...`; networks already gone are not an error.
pub fn remove_networks(networks: &[String]) -> Result<(), DockerError> {
    if networks.is_empty() {
        return Ok(());
    }
    let mut args = vec!["network", "rm"];
    args.extend(networks.iter().map(String::as_str));
    match run_grouped(&args) {
        Err(e) if only_missing_networks(&e.stderr) => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Ids of every container (running or not) labelled `KEY=VALUE`.
pub fn containers_labelled(key: &str, value: &str) -> Result<Vec<String>, DockerError> {
    let filter = format!("label={key}={value}");
    run_grouped(&["ps", "--all", "--quiet", "--no-trunc", "--filter", &filter])
        .map(|out| out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Ids of every network labelled `KEY=VALUE`.
pub fn networks_labelled(key: &str, value: &str) -> Result<Vec<String>, DockerError> {
    let filter = format!("label={key}={value}");
    run_grouped(&["network", "ls", "--quiet", "--no-trunc", "--filter", &filter])
        .map(|out| out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// `docker network connect NETWORK CONTAINER [--alias A]...`.
pub fn network_connect(network: &str, container: &str, aliases: &[String]) -> Result<(), DockerError> {
    let mut args = vec!["network", "connect"];
    for alias in aliases {
        args.push("--alias");
        args.push(alias);
    }
    args.push(network);
    args.push(container);
    run_grouped(&args).map(|_| ())
}

/// `docker version`: the daemon's version, or why it does not answer.
pub fn server_version() -> Result<String, DockerError> {
    run_grouped(&["version", "--format", "{{.Server.Version}}"]).map(|out| out.trim().to_string())
}

/// The ID of the image a container was created from.
pub fn container_image_id(container: &str) -> Result<String, DockerError> {
    run_grouped(&["inspect", "--format", "{{.Image}}", container]).map(|out| out.trim().to_string())
}

/// The container's IP address on `network` (`None` when it has none there).
pub fn container_ip(container: &str, network: &str) -> Result<Option<String>, DockerError> {
    let format = format!("{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}");
    run_grouped(&["inspect", "--format", &format, container]).map(|out| {
        let ip = out.trim();
        (!ip.is_empty()).then(|| ip.to_string())
    })
}

/// The TCP ports an image declares (`EXPOSE 5432` → 5432), sorted.
pub fn image_tcp_ports(image: &str) -> Result<Vec<u16>, DockerError> {
    let out = run_grouped(&["image", "inspect", "--format", "{{json .Config.ExposedPorts}}", image])?;
    let ports: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_str(out.trim()).unwrap_or_default();
    let mut tcp: Vec<u16> = ports
        .keys()
        .filter_map(|k| k.strip_suffix("/tcp").or_else(|| (!k.contains('/')).then_some(k.as_str())))
        .filter_map(|p| p.parse().ok())
        .collect();
    tcp.sort_unstable();
    tcp.dedup();
    Ok(tcp)
}

// ---------------------------------------------------------------------------
// The `glci-mock` container (issue 8, src/mock.rs): image, volume, network, container.
// ---------------------------------------------------------------------------

/// A label of an image or container (`None` when it has no such label or does not exist).
pub fn label_of(object: &str, key: &str) -> Result<Option<String>, DockerError> {
    let format = format!("{{{{index .Config.Labels \"{key}\"}}}}");
    match run_grouped(&["inspect", "--format", &format, object]) {
        Ok(out) => {
            let value = out.trim();
            Ok((!value.is_empty() && value != "<no value>").then(|| value.to_string()))
        }
        Err(e) if e.stderr.contains("No such") => Ok(None),
        Err(e) => Err(e),
    }
}

/// A container's label `key` and whether it runs, in one `docker inspect`; `None` when there
/// is no such container.
pub fn label_and_running(container: &str, key: &str) -> Result<Option<(Option<String>, bool)>, DockerError> {
    let format = format!("{{{{.State.Running}}}} {{{{index .Config.Labels \"{key}\"}}}}");
    match run_grouped(&["inspect", "--type", "container", "--format", &format, container]) {
        Ok(out) => Ok(Some(parse_label_and_running(&out))),
        Err(e) if e.stderr.contains("No such") => Ok(None),
        Err(e) => Err(e),
    }
}

/// `true VALUE` / `false <no value>` (what [`label_and_running`]'s format prints).
fn parse_label_and_running(out: &str) -> (Option<String>, bool) {
    let out = out.trim();
    let (running, label) = out.split_once(' ').unwrap_or((out, ""));
    let label = label.trim();
    ((!label.is_empty() && label != "<no value>").then(|| label.to_string()), running == "true")
}

/// `docker import -c CHANGE… - IMAGE`: the rootfs tar `write` produces becomes `IMAGE`.
pub fn import(
    image: &str,
    changes: &[String],
    write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), DockerError> {
    let mut args: Vec<&str> = vec!["import"];
    for change in changes {
        args.push("--change");
        args.push(change);
    }
    args.push("-");
    args.push(image);
    run_feeding(&args, write)
}

/// The id of a local image (`None` when there is none by that name).
pub fn image_id(image: &str) -> Result<Option<String>, DockerError> {
    match run_grouped(&["image", "inspect", "--format", "{{.Id}}", image]) {
        Ok(out) => Ok(Some(out.trim().to_string())),
        Err(e) if e.stderr.contains("No such image") => Ok(None),
        Err(e) => Err(e),
    }
}

/// `docker volume create NAME` (an existing volume is kept as it is).
pub fn volume_create(name: &str) -> Result<(), DockerError> {
    run_grouped(&["volume", "create", name]).map(|_| ())
}

/// `docker network create NAME` unless it exists.
pub fn network_ensure(name: &str) -> Result<(), DockerError> {
    if run_grouped(&["network", "inspect", "--format", "{{.Id}}", name]).is_ok() {
        return Ok(());
    }
    match run_grouped(&["network", "create", name]) {
        Err(e) if e.stderr.contains("already exists") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// A long-lived server container: `docker create` with a restart policy, a published port, a
/// named volume and a network alias.
#[derive(Clone, Debug, Default)]
pub struct ServerSpec {
    pub name: String,
    pub image: String,
    pub labels: Vec<(String, String)>,
    pub network: String,
    pub network_alias: String,
    /// `127.0.0.1:PORT:PORT`.
    pub publish: String,
    /// `VOLUME:/path`.
    pub volume: String,
    pub command: Vec<String>,
}

/// `docker create --restart unless-stopped …` for a [`ServerSpec`]: the container's id.
pub fn create_server(spec: &ServerSpec) -> Result<String, DockerError> {
    let mut args: Vec<String> = vec!["create".into(), "--name".into(), spec.name.clone()];
    for (key, value) in &spec.labels {
        args.push("--label".into());
        args.push(format!("{key}={value}"));
    }
    for (flag, value) in [
        ("--restart", "unless-stopped"),
        ("--network", spec.network.as_str()),
        ("--network-alias", spec.network_alias.as_str()),
        ("--publish", spec.publish.as_str()),
        ("--volume", spec.volume.as_str()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args.push(spec.image.clone());
    args.extend(spec.command.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_grouped(&args).map(|out| out.trim().to_string())
}

/// `docker --config DIR pull IMAGE`: a pull with the credentials of `DIR/config.json` (written
/// by the caller, 0600), so secrets never reach argv and the user's own config is untouched.
pub fn pull_with_config(config_dir: &std::path::Path, image: &str, platform: Option<&str>) -> Result<(), DockerError> {
    let dir = config_dir.display().to_string();
    run_grouped(&pull_args(&["--config", &dir], image, platform)).map(|_| ())
}

/// `docker-credential-<helper> list`: the server names a credential store holds.
#[allow(clippy::disallowed_methods)] // docker.rs is the one home for spawning docker and its credential helpers (STYLE.md §7)
pub fn credential_helper_list(helper: &str) -> Result<Vec<String>, DockerError> {
    let program = format!("docker-credential-{helper}");
    let failed = |stderr: String, code| DockerError { command: format!("{program} list"), code, stderr };
    if !helper.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(failed("credential helper names are letters, digits, - and _".into(), None));
    }
    let output =
        Command::new(&program).arg("list").stdin(Stdio::null()).output().map_err(|e| failed(e.to_string(), None))?;
    if !output.status.success() {
        return Err(failed(String::from_utf8_lossy(&output.stderr).into_owned(), output.status.code()));
    }
    let answer: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&output.stdout).map_err(|_| failed("answer is not JSON".into(), None))?;
    Ok(answer.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_networks_of_docker_20_and_28_are_not_errors() {
        assert!(only_missing_networks("Error response from daemon: network n1 not found\nexit status 1\n"));
        assert!(only_missing_networks("Error: No such network: n1\n"));
        assert!(!only_missing_networks(
            "Error response from daemon: error while removing network: network n1 has active endpoints\nexit status 1\n"
        ));
    }

    #[test]
    fn copy_failures_of_docker_20_and_28_are_told_apart() {
        // Measured: /usr/bin/docker 20.10.24 (Debian) and docker 28.2.2 on one daemon.
        let id = "1652ff272f5d";
        assert_eq!(
            copy_failure(&format!("Error response from daemon: Could not find the file /etc/nope in container {id}")),
            CopyFailure::PathMissing
        );
        assert_eq!(
            copy_failure(&format!("Error: No such container:path: {id}:/etc/nope")),
            CopyFailure::PathOrContainerMissing
        );
        assert_eq!(copy_failure("Error response from daemon: No such container: nosuchcontainer"), CopyFailure::Other);
        assert_eq!(
            copy_failure("Cannot connect to the Docker daemon at unix:///var/run/docker.sock."),
            CopyFailure::Other
        );
    }

    #[test]
    fn create_args_hold_no_variable_values() {
        let spec = ContainerSpec {
            name: "glci-1-0-job".into(),
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into(), "echo".into()],
            env_file: Some("/tmp/w/env/job.env".into()),
            platform: Some("linux/arm64".into()),
            user: Some("1234".into()),
            client_env: vec![("MULTI".into(), Secret::new("line one\nsecret two".into()))],
            ..ContainerSpec::default()
        };
        let args = create_args(&spec);
        assert_eq!(
            args,
            [
                "create",
                "--name",
                "glci-1-0-job",
                "--env-file",
                "/tmp/w/env/job.env",
                "--user",
                "1234",
                "--platform",
                "linux/arm64",
                "busybox",
                "sh",
                "-c",
                "echo"
            ]
        );
        assert!(!args.iter().any(|a| a.contains("secret") || a.contains("MULTI")), "{args:?}");
        assert!(!format!("{spec:?}").contains("secret two"), "Debug masks the values");
        assert_eq!(
            pull_args(&["--config", "/d"], "img:1", Some("linux/arm64")),
            ["--config", "/d", "pull", "--quiet", "--platform", "linux/arm64", "img:1"]
        );
        assert_eq!(pull_args(&[], "img:1", None), ["pull", "--quiet", "img:1"]);
    }

    #[test]
    fn create_args_carry_labels_network_aliases_and_split_the_entrypoint() {
        let spec = ContainerSpec {
            name: "c".into(),
            image: "img".into(),
            labels: vec![(RUN_LABEL.into(), "r1".into()), ("glci.job".into(), "build".into())],
            network: Some("net".into()),
            network_aliases: vec!["db".into(), "postgres".into()],
            // The CLI takes one entrypoint word: the others go before the command.
            entrypoint: Some(vec!["/bin/sh".into(), "-e".into(), "-c".into()]),
            command: vec!["echo hi".into()],
            ..ContainerSpec::default()
        };
        assert_eq!(
            create_args(&spec),
            [
                "create",
                "--name",
                "c",
                "--label",
                "glci.run=r1",
                "--label",
                "glci.job=build",
                "--network",
                "net",
                "--network-alias",
                "db",
                "--network-alias",
                "postgres",
                "--entrypoint",
                "/bin/sh",
                "img",
                "-e",
                "-c",
                "echo hi"
            ]
        );
        // `entrypoint: [""]` in GitLab: the image's entrypoint reset, the command unchanged.
        let reset = ContainerSpec { entrypoint: Some(vec![]), ..spec.clone() };
        let args = create_args(&reset);
        assert_eq!(args[args.len() - 4..], ["--entrypoint", "", "img", "echo hi"]);
        // Aliases only mean something on a network: none without one.
        let alone = ContainerSpec { network: None, ..spec };
        assert!(!create_args(&alone).iter().any(|a| a.starts_with("--network")));
    }

    #[test]
    fn privileged_containers_get_the_privileged_recipe_and_others_none() {
        let spec =
            ContainerSpec { name: "c".into(), image: "img".into(), privileged: true, ..ContainerSpec::default() };
        let args = create_args(&spec);
        if privileged_needs_fallback() {
            let start = args.iter().position(|a| a == "--cap-add").expect("--cap-add");
            assert_eq!(args[start + 1], "ALL");
            assert!(args.windows(2).any(|w| w == ["--security-opt", "seccomp=unconfined"]), "{args:?}");
            assert!(!args.contains(&"--privileged".to_string()), "{args:?}");
        } else {
            assert!(args.contains(&"--privileged".to_string()), "{args:?}");
        }
        let plain = create_args(&ContainerSpec { privileged: false, ..spec });
        assert!(!plain.iter().any(|a| a == "--privileged" || a == "--cap-add" || a == "--security-opt"), "{plain:?}");
    }

    #[test]
    fn errors_name_the_command_the_exit_and_the_last_two_stderr_lines() {
        let e = DockerError {
            command: command_line(&["create", "--name", "c", "img"]),
            code: Some(125),
            stderr: "noise\n  port is already allocated\n\nError: failed to start containers: c\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "`docker create --name c img` failed (exit 125): port is already allocated / Error: failed to start containers: c"
        );
        let killed = DockerError { command: "docker kill c".into(), code: None, stderr: String::new() };
        assert_eq!(killed.to_string(), "`docker kill c` failed (exit a signal): ");
        let missing = spawn_failed(&["version"], &std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(missing.command, "docker version");
        assert!(missing.stderr.contains("is the docker CLI installed?"), "{}", missing.stderr);
    }

    /// A helper name becomes a program name: anything but letters, digits, - and _ is refused
    /// before anything is spawned (no `../`, no shell words).
    #[test]
    fn credential_helper_names_are_checked_before_any_spawn() {
        for bad in ["../evil", "a b", "x;rm", "secret/tool"] {
            let e = credential_helper_get(bad, "registry.example.com").expect_err(bad);
            assert_eq!(e.command, format!("docker-credential-{bad} get"));
            assert!(e.stderr.contains("letters, digits"), "{bad}: {}", e.stderr);
            let e = credential_helper_list(bad).expect_err(bad);
            assert_eq!(e.command, format!("docker-credential-{bad} list"));
        }
    }

    #[test]
    fn label_and_running_output() {
        assert_eq!(parse_label_and_running("true abc123\n"), (Some("abc123".into()), true));
        assert_eq!(parse_label_and_running("false <no value>\n"), (None, false));
        assert_eq!(parse_label_and_running("true \n"), (None, true));
    }
}
