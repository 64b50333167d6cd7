//! Push-through mirror (DESIGN §8, issue 5) against real upstreams that each test starts on
//! 127.0.0.1: Debian's `docker-registry` (distribution 2.8) behind htpasswd (Basic), and a
//! second `glci serve` with auth (Bearer challenge flow). Pushes go through a front
//! `glci serve` with docker and skopeo and a push-through job token; what reached the upstream
//! is read back with skopeo and from the upstream's own request log. Every test runs twice
//! (`on_both_backends!`): as `dir::NAME` with the front on a storage directory, as `s3::NAME`
//! with it on a prefix of a real SeaweedFS bucket (issue 20).
//!
//! Needs docker-registry, htpasswd (apache2-utils), skopeo, busybox-static and a running
//! Docker daemon; `make test` installs and starts them (scripts/deps.sh). Every client call
//! runs under `timeout`, every wait is bounded.

#![allow(clippy::unwrap_used)]
// Tests spawn processes and read the environment; clippy.toml's disallowed-methods is for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::http::basic;
use common::{
    build_busybox_rootfs, build_oci_layout, glci, layout_blob_digests, layout_closure, need, need_docker_daemon,
    pushed_digest, run, run_stdout, sha256_digest, temp_dir, unique_name, DockerImages,
};

/// Seconds any one docker/skopeo/htpasswd call may take (`timeout`).
const CLIENT_TIMEOUT: &str = "60";
/// How long a server may take to say it listens, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Plain HTTP requests the test makes itself, and waits for a log line.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// The push-through target's name in the front's config; `[registry.upstream_urls]` maps it to
/// the upstream the test started.
const UPSTREAM_NAME: &str = "registry.gitlab.com";
/// The htpasswd user of the distribution upstream.
const UPSTREAM_USER: &str = "mirror";
const UPSTREAM_PASSWORD: &str = "up-S3cret-7f2a";
/// The front's config says `password = "$GLCI_TEST_UPSTREAM_PASSWORD"`; only the glci
/// processes get the variable, so the test proves `$VAR` resolution.
const PASSWORD_VAR: &str = "GLCI_TEST_UPSTREAM_PASSWORD";
const JOB_USER: &str = "gitlab-ci-token";
const ADMIN_USER: &str = "glci-admin";

// ---------------------------------------------------------------------------------------------
// Child processes and their output

/// Lines a child writes (stdout and stderr), shared with waiters: a `Condvar`, no polling.
#[derive(Clone, Default)]
struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn follow(&self, pipe: impl Read + Send + 'static) {
        let lines = self.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                line.clear();
                let (buf, changed) = &*lines.0;
                buf.lock().unwrap().push(text);
                changed.notify_all();
            }
        });
    }

    fn snapshot(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        self.snapshot().join("\n")
    }

    /// The index of the first line at `from` or later that contains `needle`, waiting up to
    /// `timeout` for it.
    fn wait_for(&self, from: usize, needle: &str, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let (buf, changed) = &*self.0;
        let mut lines = buf.lock().unwrap();
        loop {
            if let Some(i) = lines.iter().skip(from).position(|l| l.contains(needle)) {
                return Some(from + i);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = changed.wait_timeout(lines, left).unwrap().0;
        }
    }
}

/// A server process, killed when dropped (its output shown if the test is failing).
struct Proc {
    name: String,
    child: Option<Child>,
    output: Lines,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
        let output = Lines::default();
        output.follow(child.stdout.take().unwrap());
        output.follow(child.stderr.take().unwrap());
        Proc { name: name.to_string(), child: Some(child), output }
    }

    /// Waits for the line holding `needle` and returns the text after it, or fails showing
    /// the output.
    fn wait_for_after(&mut self, needle: &str) -> String {
        match self.output.wait_for(0, needle, START_TIMEOUT) {
            Some(i) => {
                let line = self.output.snapshot().swap_remove(i);
                line.split_once(needle).unwrap().1.to_string()
            }
            None => {
                self.kill();
                panic!("{} printed no {needle:?} within {START_TIMEOUT:?}:\n{}", self.name, self.output.text());
            }
        }
    }

    /// SIGTERM, then a bounded wait (SIGKILL and a panic after it).
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("process is running");
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                // SAFETY: as above; the waiter thread has not reaped it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("{} did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}", self.name, self.output.text());
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.output.text());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Upstreams and their request logs

/// One request an upstream logged.
#[derive(Debug)]
struct Logged {
    method: String,
    path: String,
    status: u16,
}

/// A registry the front mirrors to, whose request log the test reads.
trait Upstream {
    fn addr(&self) -> &str;
    /// `user:password` for skopeo.
    fn creds(&self) -> String;
    fn log(&self) -> &Lines;
    /// A request line of this registry's log, or `None` for any other line.
    fn parse(line: &str) -> Option<Logged>;
}

const MARK_PREFIX: &str = "/v2/glci-test-mark/";

/// Makes every request the upstream answered so far visible in its log, and returns the log
/// position after them: sends one more request and waits for its line (both registries log a
/// request when they answer it, so the earlier ones are already there).
fn mark<U: Upstream>(upstream: &U) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = format!("{MARK_PREFIX}m{}/tags/list", NEXT.fetch_add(1, Ordering::Relaxed));
    // Any answer will do (401 from distribution, 404 from glci): it is the log line we want.
    let _ = agent().get(&format!("http://{}{path}", upstream.addr())).call();
    let at = upstream.log().wait_for(0, &format!("{path} "), HTTP_TIMEOUT);
    at.unwrap_or_else(|| panic!("the upstream never logged {path}:\n{}", upstream.log().text())) + 1
}

/// The requests the upstream answered since `mark`, the test's own marks left out.
fn requests_since<U: Upstream>(upstream: &U, mark_at: usize) -> Vec<Logged> {
    let end = mark(upstream);
    upstream.log().snapshot()[mark_at..end]
        .iter()
        .filter_map(|l| U::parse(l))
        .filter(|r| !r.path.starts_with(MARK_PREFIX))
        .collect()
}

/// Blob uploads among `requests`: upload sessions the upstream opened.
fn blob_uploads(requests: &[Logged]) -> usize {
    requests.iter().filter(|r| r.method == "POST" && r.path.contains("/blobs/uploads/") && r.status == 202).count()
}

/// Debian's `docker-registry` with htpasswd auth and its access log on.
struct Distribution {
    proc: Proc,
    addr: String,
}

impl Distribution {
    /// Starts it on `listen` (`127.0.0.1:0`, or the address of an earlier run to restart it),
    /// with its config, htpasswd and storage in `dir`.
    fn start(dir: &Path, listen: &str) -> Distribution {
        need("docker-registry");
        need("htpasswd");
        std::fs::create_dir_all(dir).unwrap();
        let htpasswd = dir.join("htpasswd");
        if !htpasswd.exists() {
            run(timed("htpasswd").arg("-Bbc").arg(&htpasswd).args([UPSTREAM_USER, UPSTREAM_PASSWORD]));
        }
        // Debian's own /etc/docker/registry/config.yml turns on htpasswd with its own file: never use it.
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {listen}\n  secret: glci-test\n\
                 auth:\n  htpasswd:\n    realm: glci-test\n    path: {}\n",
                dir.join("data").display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let mut proc = Proc::spawn("docker-registry", Command::new("docker-registry").arg("serve").arg(&config));
        let rest = proc.wait_for_after("listening on ");
        let addr = rest.split(['"', ' ']).next().unwrap().to_string();
        Distribution { proc, addr }
    }

    fn stop(mut self) {
        self.proc.terminate();
    }
}

impl Upstream for Distribution {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn creds(&self) -> String {
        format!("{UPSTREAM_USER}:{UPSTREAM_PASSWORD}")
    }

    fn log(&self) -> &Lines {
        &self.proc.output
    }

    /// `127.0.0.1 - - [date] "POST /v2/g/p/app/blobs/uploads/ HTTP/1.1" 202 0 "" "glci/0.1.0"`.
    fn parse(line: &str) -> Option<Logged> {
        let rest = line.strip_prefix("127.0.0.1 ")?;
        let (_, rest) = rest.split_once("] \"")?;
        let (request, rest) = rest.split_once('"')?;
        let mut parts = request.split(' ');
        let method = parts.next()?.to_string();
        let path = parts.next()?.to_string();
        let status = rest.split_whitespace().next()?.parse().ok()?;
        Some(Logged { method, path, status })
    }
}

/// `glci serve` (auth and TLS on, as a user runs it) with a `GLCI_HOME` the test prepared and
/// extra environment.
struct GlciServer {
    proc: Proc,
    addr: String,
    /// The admin password (`glci registry login --print`), for the glci-as-upstream tests.
    admin: String,
}

impl GlciServer {
    fn start(home: &Path, storage: &Path, env: &[(&str, &str)]) -> GlciServer {
        let mut cmd = glci();
        // No credentials from the host's ~/.docker may reach an upstream.
        cmd.env("GLCI_HOME", home).env("DOCKER_CONFIG", home.join("no-docker-config"));
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--storage"]).arg(storage);
        let mut proc = Proc::spawn("glci serve", &mut cmd);
        let addr = proc.wait_for_after("listening on ").trim().to_string();
        let admin = glci_cli(home, env, &["registry", "login", "--print"]);
        GlciServer { proc, addr, admin }
    }

    fn stop(mut self) {
        let status = self.proc.terminate();
        assert!(status.success(), "glci serve exited with {status}:\n{}", self.proc.output.text());
    }

    fn log(&self) -> String {
        self.proc.output.text()
    }
}

impl Upstream for GlciServer {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn creds(&self) -> String {
        format!("{ADMIN_USER}:{}", self.admin)
    }

    fn log(&self) -> &Lines {
        &self.proc.output
    }

    /// `level=info event=request method=POST path=/v2/g/p/app/blobs/uploads/ status=202 ...`.
    fn parse(line: &str) -> Option<Logged> {
        if !line.contains(" event=request ") {
            return None;
        }
        let field =
            |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')));
        Some(Logged {
            method: field("method")?.to_string(),
            path: field("path")?.trim_matches('"').to_string(),
            status: field("status")?.parse().ok()?,
        })
    }
}

/// `glci ARGS` with `GLCI_HOME=home` and `env`; its stdout, trimmed.
fn glci_cli(home: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    run_stdout(glci().env("GLCI_HOME", home).envs(env.iter().copied()).args(args)).trim().to_string()
}

/// A job token for `project`, as `glci registry token` prints it.
fn job_token(home: &Path, env: &[(&str, &str)], project: &str, push_through: bool) -> String {
    let mut args = vec!["registry", "token", "--project", project];
    if push_through {
        args.push("--push-through");
    }
    glci_cli(home, env, &args)
}

/// The front's `config.toml`: no pull-through, push-through to `UPSTREAM_NAME` at `endpoint`
/// as `user`, the password from `$GLCI_TEST_UPSTREAM_PASSWORD`; `registry_extra` goes into
/// `[registry]`.
fn front_config(backend: Backend, endpoint: &str, user: &str, registry_extra: &str) -> String {
    let mut config = format!(
        "[registry]\nupstreams = []\n{registry_extra}\n\
         [registry.upstream]\nurl = \"{UPSTREAM_NAME}\"\nusername = \"{user}\"\npassword = \"${PASSWORD_VAR}\"\n\n\
         [registry.upstream_urls]\n\"{UPSTREAM_NAME}\" = \"{endpoint}\"\n"
    );
    if let Backend::S3 = backend {
        let weed = common::seaweedfs::seaweedfs();
        config.push_str(&format!(
            "\n[storage.s3]\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            weed.endpoint,
            common::seaweedfs::ACCESS_KEY,
            common::seaweedfs::SECRET_KEY
        ));
    }
    config
}

/// Where the front keeps its data: the tests run on both (issue 20).
#[derive(Clone, Copy, Debug)]
enum Backend {
    Dir,
    /// A prefix of its own in the binary's SeaweedFS bucket.
    S3,
}

/// Each test named, as `dir::NAME` and `s3::NAME`, with the front on a directory and on S3.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod dir {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::Dir)
            })*
        }
        mod s3 {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::S3)
            })*
        }
    };
}

on_both_backends!(
    distribution_behind_htpasswd_gets_docker_and_skopeo_pushes,
    glci_with_auth_gets_docker_and_skopeo_pushes_through_its_bearer_flow,
    pushes_without_push_through_never_reach_the_upstream,
    push_through_in_config_makes_plain_job_tokens_mirror,
    upstream_down_fails_the_push_keeps_the_local_copy_and_a_retry_completes_it,
    rejected_upstream_credentials_fail_the_push_until_they_are_fixed,
);

/// A fresh [`Distribution`] in `WORK/upstream` and a front mirroring to it as `UPSTREAM_USER`
/// with `password` (see [`start_front`]).
fn distribution_and_front(
    backend: Backend,
    work: &Path,
    password: &str,
    registry_extra: &str,
) -> (Distribution, Front) {
    let upstream = Distribution::start(&work.join("upstream"), "127.0.0.1:0");
    let front = start_front(backend, work, &upstream.addr, UPSTREAM_USER, password, registry_extra);
    (upstream, front)
}

/// A front `glci serve` mirroring to `upstream` (at `http://<addr>`) as `user`, with
/// `password` in its environment; home and storage under `work`.
fn start_front(
    backend: Backend,
    work: &Path,
    endpoint_addr: &str,
    user: &str,
    password: &str,
    registry_extra: &str,
) -> Front {
    let home = work.join("front-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        front_config(backend, &format!("http://{endpoint_addr}"), user, registry_extra),
    )
    .unwrap();
    let storage = match backend {
        Backend::Dir => work.join("front-storage"),
        Backend::S3 => {
            let weed = common::seaweedfs::seaweedfs();
            PathBuf::from(format!("s3://{}/{}", weed.bucket(), weed.prefix()))
        }
    };
    let server = GlciServer::start(&home, &storage, &[(PASSWORD_VAR, password)]);
    Front { server, home, storage, password: password.to_string() }
}

struct Front {
    server: GlciServer,
    home: PathBuf,
    storage: PathBuf,
    password: String,
}

impl Front {
    fn env(&self) -> [(&str, &str); 1] {
        [(PASSWORD_VAR, self.password.as_str())]
    }

    fn addr(&self) -> &str {
        &self.server.addr
    }

    fn token(&self, project: &str, push_through: bool) -> String {
        job_token(&self.home, &self.env(), project, push_through)
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// `timeout 60 PROGRAM` with stdin closed: no client call can hang the test.
fn timed(program: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=5", CLIENT_TIMEOUT, program]).stdin(Stdio::null());
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"))
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build()
}

/// `skopeo` with a permissive policy and an empty auth file of the test's own.
fn skopeo(work: &Path, args: &[&str]) -> Command {
    need("skopeo");
    let policy = work.join("policy.json");
    if !policy.exists() {
        std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    }
    let mut cmd = timed("skopeo");
    cmd.arg("--policy").arg(policy).args(args).env("REGISTRY_AUTH_FILE", work.join("skopeo-auth.json"));
    cmd
}

/// The raw manifest `skopeo inspect --raw` returns for `image` (`--creds` when given).
fn inspect_raw(work: &Path, image: &str, creds: Option<&str>) -> Vec<u8> {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--creds", creds]);
    }
    args.push(image);
    run(&mut skopeo(work, &args)).stdout
}

/// `skopeo copy [--all] from to` with optional source and destination credentials.
fn copy(work: &Path, from: &str, to: &str, src_creds: Option<&str>, dest_creds: Option<&str>, all: bool) -> Output {
    let mut args = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
    if all {
        args.push("--all");
    }
    if let Some(creds) = src_creds {
        args.extend(["--src-creds", creds]);
    }
    if let Some(creds) = dest_creds {
        args.extend(["--dest-creds", creds]);
    }
    args.extend([from, to]);
    output(&mut skopeo(work, &args))
}

fn copy_ok(work: &Path, from: &str, to: &str, src_creds: Option<&str>, dest_creds: Option<&str>, all: bool) {
    let out = copy(work, from, to, src_creds, dest_creds, all);
    assert!(
        out.status.success(),
        "skopeo copy {from} {to} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The docker CLI with a config directory of its own (its `docker login`), never the host's.
struct DockerCli {
    config: PathBuf,
}

impl DockerCli {
    fn new(config: &Path) -> DockerCli {
        need_docker_daemon();
        std::fs::create_dir_all(config).unwrap();
        DockerCli { config: config.to_path_buf() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = timed("docker");
        // The classic builder: the host CLI has no buildx plugin.
        cmd.env("DOCKER_BUILDKIT", "0").arg("--config").arg(&self.config).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        run_stdout(&mut self.cmd(args))
    }

    /// `docker login`, the password on stdin as a user would pipe a CI variable.
    fn login(&self, registry: &str, user: &str, password: &str) {
        let mut cmd = self.cmd(&["login", "--username", user, "--password-stdin", registry]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "docker login {registry} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    /// `docker push`, expected to fail: its whole output.
    fn push_fails(&self, image: &str) -> String {
        let out = output(&mut self.cmd(&["push", image]));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "docker push {image} succeeded:\n{text}");
        text
    }
}

/// A docker CLI logged in to `front` with job token `token`, and the image `FRONT/g/p/app:1`
/// ([`build_image`]) in its engine; the images go when the returned `DockerImages` is dropped.
fn docker_with_app(work: &Path, front: &str, token: &str) -> (DockerCli, DockerImages, String) {
    let docker = DockerCli::new(&work.join("docker-config"));
    docker.login(front, JOB_USER, token);
    let mut images = DockerImages::default();
    let image = format!("{front}/g/p/app:1");
    build_image(work, &docker, &mut images, &image);
    (docker, images, image)
}

/// Builds `name`, a three-layer image: the busybox rootfs `docker import`ed as the base, then two
/// COPY layers (the classic builder builds FROM a local image without a network).
fn build_image(work: &Path, docker: &DockerCli, images: &mut DockerImages, name: &str) {
    let rootfs = build_busybox_rootfs(&work.join("rootfs.tar"));
    let base = format!("glci-push-through-base:{}", unique_name("b"));
    images.0.push(base.clone());
    docker.run(&["import", &rootfs.display().to_string(), &base]);
    let context = work.join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), format!("FROM {base}\nCOPY a /a\nCOPY b /b\n")).unwrap();
    std::fs::write(context.join("a"), format!("first layer of {name}\n")).unwrap();
    std::fs::write(context.join("b"), format!("second layer of {name}\n")).unwrap();
    images.0.push(name.to_string());
    docker.run(&["build", "--quiet", "--tag", name, &context.display().to_string()]);
}

/// Sends the manifest `name:reference` stored in the front back to it with a Basic job token:
/// (status, body). Shows the JSON message that docker and skopeo do not print for a 5xx.
fn put_manifest_again(front: &str, token: &str, name: &str, reference: &str) -> (u16, String) {
    let url = format!("http://{front}/v2/{name}/manifests/{reference}");
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    let got = agent().get(&url).set("Accept", accept).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let media_type = got.content_type().to_string();
    let mut bytes = Vec::new();
    got.into_reader().read_to_end(&mut bytes).unwrap();
    let put = agent()
        .put(&url)
        .set("Authorization", &basic(JOB_USER, token))
        .set("Content-Type", &media_type)
        .send_bytes(&bytes);
    match put {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap()),
        Err(e) => panic!("PUT {url}: {e}"),
    }
}

/// The first error message of an OCI error body.
fn error_message(body: &str) -> String {
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    doc["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("no errors[0].message in {body}")).to_string()
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// docker push of a three-layer image, skopeo copy of the layout's multi-layer image and of its
/// multi-arch index, all through `front` with a push-through job token for g/p: the upstream then
/// serves the same manifest digests and every blob, and pushing each again uploads no blob.
fn pushes_are_mirrored<U: Upstream>(work: &Path, front: &Front, upstream: &U) {
    let token = front.token("g/p", true);
    let up_creds = upstream.creds();

    let (docker, _images, image) = docker_with_app(work, front.addr(), &token);
    let at = mark(upstream);
    let digest = pushed_digest(&docker.run(&["push", &image]));
    let first = requests_since(upstream, at);
    // Three layers and the config, each body sent once (credentials are not re-learnt per request).
    let blob_puts: Vec<_> = first.iter().filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/")).collect();
    eqnice!((4, 4), (blob_uploads(&first), blob_puts.len()), "blob uploads and PUTs upstream: {first:#?}");
    assert!(blob_puts.iter().all(|r| r.status == 201), "blob PUTs upstream: {first:#?}");
    let mirrored = format!("docker://{}/g/p/app:1", upstream.addr());
    eqnice!(digest, sha256_digest(&inspect_raw(work, &mirrored, Some(&up_creds))), "docker image upstream");
    let manifest: serde_json::Value = serde_json::from_slice(&inspect_raw(work, &mirrored, Some(&up_creds))).unwrap();
    eqnice!(3, manifest["layers"].as_array().unwrap().len(), "layers of the docker image: {manifest}");
    // skopeo verifies every blob's digest as it copies them out of the upstream.
    copy_ok(work, &mirrored, &format!("dir:{}", work.join("docker-back").display()), Some(&up_creds), None, false);

    let at = mark(upstream);
    docker.run(&["push", &image]);
    let again = requests_since(upstream, at);
    eqnice!(0, blob_uploads(&again), "blob uploads upstream for the second docker push: {again:#?}");
    assert!(
        again.iter().any(|r| r.method == "PUT" && r.path == "/v2/g/p/app/manifests/1" && r.status == 201),
        "the second docker push did not put the manifest upstream again: {again:#?}"
    );

    let layout = build_oci_layout(&work.join("layout"));
    let job = format!("{JOB_USER}:{token}");
    for (tag, all) in [("multi", false), ("index", true)] {
        let src = format!("oci:{}:{tag}", layout.display());
        let src_digest = sha256_digest(&inspect_raw(work, &src, None));
        let dest = format!("docker://{}/g/p/{tag}:v1", front.addr());
        copy_ok(work, &src, &dest, None, Some(&job), all);
        let mirrored = format!("docker://{}/g/p/{tag}:v1", upstream.addr());
        eqnice!(src_digest, sha256_digest(&inspect_raw(work, &mirrored, Some(&up_creds))), "{tag} upstream");
        // Byte for byte: exactly the manifest's closure comes back from the upstream.
        let back = work.join(format!("{tag}-back"));
        copy_ok(work, &mirrored, &format!("oci:{}:{tag}", back.display()), Some(&up_creds), None, all);
        eqnice!(layout_closure(&layout, &src_digest), layout_blob_digests(&back), "{tag}: blobs upstream");

        let at = mark(upstream);
        copy_ok(work, &src, &dest, None, Some(&job), all);
        let again = requests_since(upstream, at);
        eqnice!(0, blob_uploads(&again), "blob uploads upstream for the second push of {tag}: {again:#?}");
    }
    assert!(!front.server.log().contains(&token), "the job token is in the front's log");
}

// ---------------------------------------------------------------------------------------------
// Tests

fn distribution_behind_htpasswd_gets_docker_and_skopeo_pushes(backend: Backend) {
    let work = temp_dir();
    let (upstream, front) = distribution_and_front(backend, work.path(), UPSTREAM_PASSWORD, "");
    pushes_are_mirrored(work.path(), &front, &upstream);
    let log = front.server.log();
    assert!(log.contains("event=push_through"), "no push_through line in the front's log:\n{log}");
    assert!(!log.contains(UPSTREAM_PASSWORD), "the upstream password is in the front's log:\n{log}");
    front.server.stop();
    upstream.stop();
}

fn glci_with_auth_gets_docker_and_skopeo_pushes_through_its_bearer_flow(backend: Backend) {
    let work = temp_dir();
    let up_home = work.path().join("upstream-home");
    std::fs::create_dir_all(&up_home).unwrap();
    std::fs::write(up_home.join("config.toml"), "[registry]\nupstreams = []\n").unwrap();
    let upstream = GlciServer::start(&up_home, &work.path().join("upstream-storage"), &[]);
    let front = start_front(backend, work.path(), &upstream.addr, ADMIN_USER, &upstream.admin.clone(), "");
    pushes_are_mirrored(work.path(), &front, &upstream);
    // The front authenticated through the upstream's /token, not with Basic on every request.
    assert!(upstream.log().contains("path=/token"), "the upstream saw no /token request:\n{}", upstream.log());
    front.server.stop();
    upstream.stop();
}

fn pushes_without_push_through_never_reach_the_upstream(backend: Backend) {
    let work = temp_dir();
    let w = work.path();
    let (upstream, front) = distribution_and_front(backend, w, UPSTREAM_PASSWORD, "");
    let layout = build_oci_layout(&w.join("layout"));
    let multi = format!("oci:{}:multi", layout.display());
    let index = format!("oci:{}:index", layout.display());
    let to = |path: &str| format!("docker://{}/{path}:v1", front.addr());

    let admin = format!("{ADMIN_USER}:{}", front.server.admin);
    copy_ok(w, &multi, &to("g/p/by-admin"), None, Some(&admin), false);
    let plain_p = format!("{JOB_USER}:{}", front.token("g/p", false));
    copy_ok(w, &multi, &to("g/p/plain"), None, Some(&plain_p), false);
    let plain_q = format!("{JOB_USER}:{}", front.token("g/q", false));
    copy_ok(w, &index, &to("g/q/app"), None, Some(&plain_q), true);
    // Another project's push-through token may not push under g/p at all.
    let mirror_q = format!("{JOB_USER}:{}", front.token("g/q", true));
    let refused = copy(w, &multi, &to("g/p/foreign"), None, Some(&mirror_q), false);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a g/q token pushed to g/p");
    assert!(why.to_lowercase().contains("denied"), "skopeo's error: {why}");

    // All of it is served locally...
    for path in ["g/p/by-admin", "g/p/plain", "g/q/app"] {
        inspect_raw(w, &to(path), None);
    }
    // ...and not one request reached the upstream.
    let reached = requests_since(&upstream, 0);
    assert!(reached.is_empty(), "requests reached the upstream: {reached:#?}");
    let catalog = agent()
        .get(&format!("http://{}/v2/_catalog", upstream.addr))
        .set("Authorization", &basic(UPSTREAM_USER, UPSTREAM_PASSWORD))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    eqnice!(serde_json::json!({ "repositories": [] }), serde_json::from_str::<serde_json::Value>(&catalog).unwrap());
    assert!(
        !front.server.log().contains("event=push_through"),
        "the front mirrored something:\n{}",
        front.server.log()
    );
    front.server.stop();
    upstream.stop();
}

fn push_through_in_config_makes_plain_job_tokens_mirror(backend: Backend) {
    let work = temp_dir();
    let w = work.path();
    let (upstream, front) = distribution_and_front(backend, w, UPSTREAM_PASSWORD, "push_through = true");
    let layout = build_oci_layout(&w.join("layout"));
    let src = format!("oci:{}:multi", layout.display());
    let src_digest = sha256_digest(&inspect_raw(w, &src, None));
    // No --push-through: the config's default rides in the token.
    let job = format!("{JOB_USER}:{}", front.token("g/p", false));
    copy_ok(w, &src, &format!("docker://{}/g/p/app:v1", front.addr()), None, Some(&job), false);
    let mirrored = format!("docker://{}/g/p/app:v1", upstream.addr);
    eqnice!(src_digest, sha256_digest(&inspect_raw(w, &mirrored, Some(&upstream.creds()))));
    front.server.stop();
    upstream.stop();
}

fn upstream_down_fails_the_push_keeps_the_local_copy_and_a_retry_completes_it(backend: Backend) {
    let work = temp_dir();
    let w = work.path();
    let up_dir = w.join("upstream");
    let upstream = Distribution::start(&up_dir, "127.0.0.1:0");
    let up_addr = upstream.addr.clone();
    let front = start_front(backend, w, &up_addr, UPSTREAM_USER, UPSTREAM_PASSWORD, "");
    let token = front.token("g/p", true);
    let (docker, _images, image) = docker_with_app(w, front.addr(), &token);
    upstream.stop();

    // docker prints only the status line of a 5xx: glci puts the message in its reason phrase.
    let failed = docker.push_fails(&image);
    assert!(
        failed.contains("502 Bad Gateway (push-through to registry.gitlab.com failed"),
        "docker push output:\n{failed}"
    );
    let (status, body) = put_manifest_again(front.addr(), &token, "g/p/app", "1");
    eqnice!(502, status, "manifest PUT with the upstream down: {body}");
    let message = error_message(&body);
    assert!(
        message.contains(&format!("push-through to {UPSTREAM_NAME} failed")) && message.contains("unreachable"),
        "message: {message}"
    );
    assert!(front.server.log().contains(&message), "the front did not log {message:?}:\n{}", front.server.log());

    // The local copy was kept: it pulls from glci.
    docker.run(&["image", "rm", &image]);
    let pulled = docker.run(&["pull", &image]);
    let local_digest = pulled
        .split_whitespace()
        .skip_while(|w| *w != "Digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker pull output:\n{pulled}"))
        .to_string();

    // The upstream returns; pushing again completes the mirror.
    let upstream = Distribution::start(&up_dir, &up_addr);
    let digest = pushed_digest(&docker.run(&["push", &image]));
    eqnice!(local_digest, digest, "digest pushed again");
    let mirrored = format!("docker://{up_addr}/g/p/app:1");
    eqnice!(digest, sha256_digest(&inspect_raw(w, &mirrored, Some(&upstream.creds()))), "upstream after the retry");
    copy_ok(w, &mirrored, &format!("dir:{}", w.join("back").display()), Some(&upstream.creds()), None, false);
    front.server.stop();
    upstream.stop();
}

fn rejected_upstream_credentials_fail_the_push_until_they_are_fixed(backend: Backend) {
    let work = temp_dir();
    let w = work.path();
    let (upstream, front) = distribution_and_front(backend, w, "not-the-password", "");
    let token = front.token("g/p", true);
    let (docker, mut images, image) = docker_with_app(w, front.addr(), &token);

    let at = mark(&upstream);
    let failed = docker.push_fails(&image);
    assert!(
        failed.contains("502 Bad Gateway (push-through to registry.gitlab.com failed"),
        "docker push output:\n{failed}"
    );
    let (status, body) = put_manifest_again(front.addr(), &token, "g/p/app", "1");
    eqnice!(502, status, "manifest PUT with rejected credentials: {body}");
    let message = error_message(&body);
    assert!(
        message.contains(&format!("push-through to {UPSTREAM_NAME} failed")) && message.contains("401"),
        "message: {message}"
    );
    let refused = requests_since(&upstream, at);
    assert!(refused.iter().all(|r| r.status == 401), "the upstream accepted something: {refused:#?}");
    assert!(!front.server.log().contains("not-the-password"), "the password is in the log");

    // The local copy was kept.
    let local = format!("docker://{}/g/p/app:1", front.addr());
    let local_digest = sha256_digest(&inspect_raw(w, &local, None));

    // Fixed credentials: the same config and storage, the variable set right.
    let (home, storage) = (front.home.clone(), front.storage.clone());
    front.server.stop();
    let env = [(PASSWORD_VAR, UPSTREAM_PASSWORD)];
    let server = GlciServer::start(&home, &storage, &env);
    let retry = format!("{}/g/p/app:1", server.addr);
    images.0.push(retry.clone());
    docker.run(&["tag", &image, &retry]);
    docker.login(&server.addr, JOB_USER, &token);
    let digest = pushed_digest(&docker.run(&["push", &retry]));
    eqnice!(local_digest, digest, "digest pushed again");
    let mirrored = format!("docker://{}/g/p/app:1", upstream.addr);
    eqnice!(digest, sha256_digest(&inspect_raw(w, &mirrored, Some(&upstream.creds()))), "upstream after the fix");
    server.stop();
    upstream.stop();
}
