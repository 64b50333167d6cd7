//! Helpers shared by the integration test binaries; each one says `mod common;`.
//!
//! Owns: finding the `glci` binary, starting `glci serve` as a child process
//! ([`ServeProcess`]), checking that external tools are installed ([`need`]),
//! building image fixtures from `fixtures/images/` at test time, running
//! commands with their output shown on failure ([`run`]), digests
//! ([`sha256_digest`], [`DigestWriter`]), deterministic pseudo-random content
//! ([`Pattern`], [`pattern`]), Docker CLI helpers ([`DockerImages`]) and `glci run` with
//! its `--json` events ([`glci_run`], [`events`], [`show`]).
//! The raw HTTP/1.1 client is [`http`]; registry storage fixtures are
//! [`store_fixture`]; a stand-in GitLab instance for remote includes is [`gitlab_server`].
//!
//! Rules (STYLE.md §6): no bind-then-drop ports and no sleep-polling: the
//! server binds `127.0.0.1:0` and prints `listening on ADDR`, which we wait for.
//! A missing tool fails the test with how to install it; nothing is skipped.
// Not every test binary uses every helper.
#![allow(dead_code)]
// Tests spawn processes and read the environment; clippy.toml's
// disallowed-methods (STYLE.md §7) is meant for src/.
#![allow(clippy::disallowed_methods)]

pub mod consistency;
pub mod faulty_upstream;
pub mod gitlab_server;
pub mod http;
pub mod seaweedfs;
pub mod store_fixture;

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// How long `glci serve` may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `glci serve` may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The line `glci serve` prints on stdout once it accepts connections.
const LISTENING_PREFIX: &str = "listening on ";

/// A `Command` for the `glci` binary cargo built for this test run.
pub fn glci() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glci"))
}

/// The repository root (where `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `fixtures/<rel>` in the repository.
pub fn fixture_path(rel: &str) -> PathBuf {
    repo_root().join("fixtures").join(rel)
}

/// `glci run --no-registry ARGS` in `dir`, to completion, with `GLCI_HOME` at `home` (its
/// config.toml) or a fresh temp one: never the user's config, variables or kept artifacts
/// (issue 16). The registry wiring (issue 8) has tests of its own (registry_run.rs).
pub fn glci_run_in(dir: &Path, args: &[&str], home: Option<&Path>) -> Output {
    let temp = temp_dir();
    glci()
        .args(["run", "--no-registry"])
        .args(args)
        .env("GLCI_HOME", home.unwrap_or(temp.path()))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("start glci")
}

/// [`glci_run_in`] with a fresh `GLCI_HOME`.
pub fn glci_run(dir: &Path, args: &[&str]) -> Output {
    glci_run_in(dir, args, None)
}

/// The demo fixture (`fixtures/demo`) committed as a git project in `dir`; its short commit
/// (`CI_COMMIT_SHORT_SHA`, the tag its image gets).
pub fn demo_project(dir: &Path) -> String {
    for name in [".gitlab-ci.yml", "build-image.sh"] {
        std::fs::copy(fixture_path(&format!("demo/{name}")), dir.join(name)).expect("copy the demo fixture");
    }
    let git = |args: &[&str]| run(Command::new("git").arg("-C").arg(dir).args(args));
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "demo"]);
    run_stdout(Command::new("git").arg("-C").arg(dir).args(["rev-parse", "--short=8", "HEAD"])).trim().to_string()
}

/// A finished command's status, stdout and stderr, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `--json` events of `glci run`, one per stdout line.
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", show(out))))
        .collect()
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("glci-test-").tempdir().expect("create a temporary directory")
}

/// A name no other test in this run (or a parallel run) uses: `PREFIX-PID-N`,
/// lowercase, valid as a repository path component and a docker tag.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Fails the test unless `tool` is installed, saying how to install it.
/// `make test` runs `scripts/deps.sh` first, which installs all of them.
pub fn need(tool: &str) {
    let package = match tool {
        "docker" | "dockerd" => "docker.io",
        "busybox" => "busybox-static",
        other => other,
    };
    let found = if tool == "busybox" {
        // The image recipes need the static binary at this exact path.
        Path::new("/bin/busybox").is_file()
    } else {
        find_on_path(tool).is_some()
    };
    if !found {
        panic!("install {tool} (apt-get install {package}) or run `make test`");
    }
}

/// Fails the test unless a Docker daemon answers `docker info`.
pub fn need_docker_daemon() {
    need("docker");
    let answered = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    if !answered {
        panic!(
            "the Docker daemon does not answer `docker info`: start dockerd \
             (scripts/deps.sh does) or run `make test`"
        );
    }
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Daemons live in sbin, which a non-root PATH may lack.
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Runs `cmd` to completion with stdin closed and panics, showing the command,
/// its status, stdout and stderr, unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "command failed: {cmd:?}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }
    out
}

/// [`run`], returning stdout as a string.
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("command printed UTF-8")
}

/// Like `assert_eq!`, but prints both sides in full on separate lines
/// (ripgrep's `eqnice!`), which keeps long JSON readable.
#[macro_export]
macro_rules! eqnice {
    ($expected:expr, $got:expr $(,)?) => {
        $crate::eqnice!($expected, $got, "values differ")
    };
    ($expected:expr, $got:expr, $($msg:tt)+) => {
        // `match` keeps temporaries alive, as in `assert_eq!`.
        match (&$expected, &$got) {
            (expected, got) => {
                if expected != got {
                    panic!(
                        "{}\n--- expected ({}) ---\n{:?}\n--- got ({}) ---\n{:?}\n",
                        format_args!($($msg)+),
                        stringify!($expected),
                        expected,
                        stringify!($got),
                        got
                    );
                }
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Digests and deterministic content
// ---------------------------------------------------------------------------

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut hasher = DigestWriter::new();
    hasher.update(bytes);
    hasher.digest()
}

/// A `Write` that only hashes (SHA-256), for digests of streams never held in memory.
#[derive(Default)]
pub struct DigestWriter(Sha256);

impl DigestWriter {
    pub fn new() -> DigestWriter {
        DigestWriter::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// `sha256:<hex>` of everything written.
    pub fn digest(self) -> String {
        let hex: String = self.0.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

impl Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `Read` of bytes `[start, end)` of the pseudo-random byte stream named `seed` (splitmix64
/// in counter mode, so any range is cheap): big blobs are generated as they are sent or hashed,
/// and an interrupted upload resumes at any offset.
pub struct Pattern {
    key: u64,
    pos: u64,
    end: u64,
}

impl Pattern {
    pub fn new(seed: &str, start: u64, end: u64) -> Pattern {
        // FNV-1a of the seed.
        let key = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        Pattern { key: splitmix64(key), pos: start, end }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_4769_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX).min(buf.len());
        let mut filled = 0;
        while filled < n {
            let word = splitmix64(self.key.wrapping_add(self.pos / 8)).to_le_bytes();
            let from = (self.pos % 8) as usize;
            let take = (8 - from).min(n - filled);
            buf[filled..filled + take].copy_from_slice(&word[from..from + take]);
            filled += take;
            self.pos += take as u64;
        }
        Ok(n)
    }
}

/// The first `len` bytes of the stream `seed` (see [`Pattern`]), in memory.
pub fn pattern(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    Pattern::new(seed, 0, len as u64).read_to_end(&mut out).expect("a pattern reads without error");
    out
}

/// The digest of the first `len` bytes of the stream `seed`, computed without holding them.
pub fn pattern_digest(seed: &str, len: u64) -> String {
    let mut hasher = DigestWriter::new();
    io::copy(&mut Pattern::new(seed, 0, len), &mut hasher).expect("hash a pattern");
    hasher.digest()
}

// ---------------------------------------------------------------------------
// Image fixtures, built at test time from fixtures/images/*.sh
// ---------------------------------------------------------------------------

/// Builds the OCI layout of `fixtures/images/make-oci-layout.sh` in `dir`
/// (tags `multi` and `index`) and returns `dir`.
pub fn build_oci_layout(dir: &Path) -> PathBuf {
    need("busybox");
    run(Command::new("bash").arg(fixture_path("images/make-oci-layout.sh")).arg(dir));
    dir.to_path_buf()
}

/// Builds the busybox rootfs tar of `fixtures/images/busybox-rootfs.sh` at
/// `path` (for `docker import`) and returns `path`.
pub fn build_busybox_rootfs(path: &Path) -> PathBuf {
    need("busybox");
    run(Command::new("bash").arg(fixture_path("images/busybox-rootfs.sh")).arg(path));
    path.to_path_buf()
}

/// The bytes of blob `digest` in the OCI layout at `layout`.
pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let path = layout_blob_path(layout, digest);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn layout_blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    layout.join("blobs/sha256").join(hex)
}

/// Every digest in the layout's `blobs/sha256/`, checking that each file's
/// content hashes to its name.
pub fn layout_blob_digests(layout: &Path) -> BTreeSet<String> {
    let dir = layout.join("blobs/sha256");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut digests = BTreeSet::new();
    for entry in entries {
        let entry = entry.expect("read directory entry");
        let name = format!("sha256:{}", entry.file_name().to_string_lossy());
        let bytes = std::fs::read(entry.path()).expect("read blob");
        eqnice!(name, sha256_digest(&bytes), "blob content does not match its name in {}", dir.display());
        digests.insert(name);
    }
    digests
}

/// The digests reachable from manifest or index `digest` in `layout`:
/// itself, and for an index its manifests, for a manifest its config and
/// layers. Panics on a media type it does not know.
pub fn layout_closure(layout: &Path, digest: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    walk_closure(layout, digest, &mut seen);
    seen
}

fn walk_closure(layout: &Path, digest: &str, seen: &mut BTreeSet<String>) {
    if !seen.insert(digest.to_string()) {
        return;
    }
    let doc: serde_json::Value = serde_json::from_slice(&layout_blob(layout, digest)).expect("manifest is JSON");
    match doc["mediaType"].as_str() {
        Some("application/vnd.oci.image.index.v1+json") => {
            for m in descriptors(&doc["manifests"]) {
                walk_closure(layout, &m, seen);
            }
        }
        Some("application/vnd.oci.image.manifest.v1+json") => {
            seen.extend(descriptors(&doc["config"]));
            seen.extend(descriptors(&doc["layers"]));
        }
        other => panic!("{digest}: unexpected mediaType {other:?}"),
    }
}

/// Digests of a descriptor or an array of descriptors.
fn descriptors(value: &serde_json::Value) -> Vec<String> {
    let list = match value {
        serde_json::Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    list.into_iter().map(|d| d["digest"].as_str().expect("descriptor has a digest").to_string()).collect()
}

/// The digest of manifest `tag` (its `org.opencontainers.image.ref.name`) in the OCI layout at
/// `layout`.
pub fn layout_tag_digest(layout: &Path, tag: &str) -> String {
    let path = layout.join("index.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let index: serde_json::Value = serde_json::from_slice(&bytes).expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .expect("index.json has manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in {}", path.display()))
        .to_string()
}

// ---------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------

/// The digest `docker push` reports (`TAG: digest: sha256:... size: N`).
pub fn pushed_digest(output: &str) -> String {
    output
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{output}"))
        .to_string()
}

/// `docker ARGS` (the host's CLI and config), its stdout; panics unless it succeeds.
pub fn docker(args: &[&str]) -> String {
    run_stdout(Command::new("docker").args(args))
}

/// A `docker` on a PATH of its own that logs each call's arguments (one line per call) and
/// runs the host's CLI: what a `glci run` asked Docker to do.
pub struct DockerCallLog {
    shim: TempDir,
}

impl DockerCallLog {
    pub fn new() -> DockerCallLog {
        let real = run_stdout(Command::new("sh").args(["-c", "command -v docker"]));
        let shim = temp_dir();
        let log = shim.path().join("calls.log");
        let script = format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n", log.display(), real.trim());
        let docker = shim.path().join("docker");
        std::fs::write(&docker, script).expect("write the docker shim");
        run(Command::new("chmod").arg("755").arg(&docker));
        DockerCallLog { shim }
    }

    /// A PATH with the shim first.
    pub fn path(&self) -> String {
        format!("{}:{}", self.shim.path().display(), std::env::var("PATH").unwrap_or_default())
    }

    /// The calls logged since the last `take`, forgetting them.
    pub fn take(&self) -> Vec<String> {
        let log = self.shim.path().join("calls.log");
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        calls.lines().map(str::to_string).collect()
    }
}

/// The busybox image the `glci run` tests' pipelines name, built from the busybox rootfs recipe.
pub const BUSYBOX_IMAGE: &str = "glci-test/busybox:e2e";

/// Imports [`BUSYBOX_IMAGE`] once per test binary, unless the engine has it already (the rootfs
/// is deterministic, so an image left by an earlier run is the same).
pub fn busybox_image() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        need_docker_daemon();
        let present =
            Command::new("docker").args(["image", "inspect", BUSYBOX_IMAGE]).output().is_ok_and(|o| o.status.success());
        if !present {
            let dir = temp_dir();
            let tar = build_busybox_rootfs(&dir.path().join("rootfs.tar"));
            // EXPOSE 8080: glci waits for a service's exposed ports, as GitLab does.
            run(Command::new("docker").args(["import", "--change", "EXPOSE 8080"]).arg(&tar).arg(BUSYBOX_IMAGE));
        }
    });
}

/// The IPv4 address containers on Docker's default bridge reach the host at, found in a way that
/// holds on every daemon: the bridge network's gateway when its IPAM config names one, else the
/// first host address of its subnet (Debian's 20.10 engine records only the subnet), else the
/// `docker0` interface's own address.
pub fn host_address_for_containers() -> String {
    let ipam = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}\n{{end}}",
    ]);
    if let Some(address) = ipam.lines().find_map(address_from_ipam_line) {
        return address;
    }
    let interface = run_stdout(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "docker0"]));
    interface
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!("no IPv4 address for containers to reach the host at: bridge IPAM {ipam:?}, docker0 {interface:?}")
        })
}

/// One `GATEWAY SUBNET` line of the bridge's IPAM config → the gateway, or the subnet's first
/// host address; IPv6 entries are skipped.
fn address_from_ipam_line(line: &str) -> Option<String> {
    let mut fields = line.split_whitespace();
    let (first, second) = (fields.next()?, fields.next());
    let (gateway, subnet) = match second {
        Some(subnet) => (Some(first), subnet),
        None => (None, first),
    };
    if let Some(gateway) = gateway.and_then(|g| g.parse::<std::net::Ipv4Addr>().ok()) {
        return Some(gateway.to_string());
    }
    let (network, prefix) = subnet.split_once('/')?;
    let network: std::net::Ipv4Addr = network.parse().ok()?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p < 31)?;
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    Some(std::net::Ipv4Addr::from((u32::from(network) & mask) + 1).to_string())
}

/// Docker image references removed (`docker image rm --force`, latest first, each bounded by
/// `timeout`) when dropped, so a failing test leaves nothing behind in the engine.
#[derive(Default)]
pub struct DockerImages(pub Vec<String>);

impl Drop for DockerImages {
    fn drop(&mut self) {
        for image in self.0.iter().rev() {
            let _ = Command::new("timeout")
                .args(["--kill-after=5", "60", "docker", "image", "rm", "--force", image])
                .stdin(Stdio::null())
                .output();
        }
    }
}

// ---------------------------------------------------------------------------
// glci serve as a child process
// ---------------------------------------------------------------------------

/// Where a [`ServeProcess`] keeps its registry.
enum Storage {
    /// Removed when the process handle is dropped.
    Temp(TempDir),
    /// Owned by the test, e.g. to restart a server on the same storage.
    Dir(PathBuf),
}

/// The `GLCI_HOME` of a [`ServeProcess`].
enum Home {
    /// Fresh, holding the test's config; removed when the process handle is dropped.
    Temp(TempDir),
    /// Prepared by the test (its `config.toml`, maybe a CA and secret of an earlier server).
    Dir(PathBuf),
}

/// The config a test server gets unless the test gives its own: no pull-through upstreams,
/// so a miss never reaches for registry-1.docker.io (tests only ever talk to 127.0.0.1).
pub const TEST_CONFIG: &str = "[registry]\nupstreams = []\n";

/// `glci serve --listen 127.0.0.1:0 --storage DIR` running as a child.
/// Dropping it kills the process (SIGKILL); [`ServeProcess::stop`] shuts it
/// down with SIGTERM and checks the exit status.
pub struct ServeProcess {
    child: Option<Child>,
    /// `127.0.0.1:PORT` from the `listening on` line.
    pub addr: String,
    storage: Storage,
    /// `GLCI_HOME` of the server: its CA and admin secret, never the user's.
    home: Home,
    /// What the server wrote to stderr, and a signal each time more arrives.
    stderr: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// Disconnects when the stderr thread has seen EOF.
    stderr_done: mpsc::Receiver<()>,
    /// The file `GLCI_TEST_CLOCK_FILE` names for this server, and the seconds written there.
    clock_file: PathBuf,
    clock_offset: Mutex<Duration>,
}

impl ServeProcess {
    /// A server without auth on a fresh temporary storage.
    pub fn start() -> ServeProcess {
        let dir = temp_dir();
        let path = dir.path().to_path_buf();
        Self::spawn(Storage::Temp(dir), &path, &["--no-auth"], Self::temp_home(TEST_CONFIG))
    }

    /// A server without auth on `storage`, which outlives it (restart tests).
    pub fn start_with_storage(storage: &Path) -> ServeProcess {
        Self::spawn(Storage::Dir(storage.to_path_buf()), storage, &["--no-auth"], Self::temp_home(TEST_CONFIG))
    }

    /// A server on `storage` with `args` after the listen and storage flags
    /// (no `--no-auth` unless given).
    pub fn start_with_args(storage: &Path, args: &[&str]) -> ServeProcess {
        Self::spawn(Storage::Dir(storage.to_path_buf()), storage, args, Self::temp_home(TEST_CONFIG))
    }

    /// Like `start_with_args`, with `config` as `$GLCI_HOME/config.toml`.
    pub fn start_with_config(storage: &Path, args: &[&str], config: &str) -> ServeProcess {
        Self::spawn(Storage::Dir(storage.to_path_buf()), storage, args, Self::temp_home(config))
    }

    /// Like `start_with_args`, with `GLCI_HOME=home` as the test prepared it (its own
    /// `config.toml`, or the CA and secret of another server on the same home).
    pub fn start_in_home(home: &Path, storage: &Path, args: &[&str]) -> ServeProcess {
        Self::spawn(Storage::Dir(storage.to_path_buf()), storage, args, Home::Dir(home.to_path_buf()))
    }

    /// A fresh home holding `config` as its `config.toml`.
    fn temp_home(config: &str) -> Home {
        let home = temp_dir();
        std::fs::write(home.path().join("config.toml"), config).expect("write the test config.toml");
        Home::Temp(home)
    }

    fn spawn(storage: Storage, storage_path: &Path, args: &[&str], home: Home) -> ServeProcess {
        let home_path = match &home {
            Home::Temp(dir) => dir.path().to_path_buf(),
            Home::Dir(path) => path.clone(),
        };
        let mut cmd = glci();
        cmd.env("GLCI_HOME", &home_path);
        // Never the developer's ~/.docker/config.json (or its credential helpers).
        cmd.env("DOCKER_CONFIG", home_path.join("docker"));
        // The server's clock, moved by `advance_clock` (src/clock.rs): no test sleeps out a ttl.
        let clock_file = home_path.join("test-clock");
        cmd.env("GLCI_TEST_CLOCK_FILE", &clock_file);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--storage"])
            .arg(storage_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));

        // Drain stderr on a thread so the server never blocks on a full pipe;
        // keep it for failure messages.
        let stderr = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        let (done_tx, stderr_done) = mpsc::channel::<()>();
        thread::spawn(move || {
            let _done = done_tx;
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().expect("stderr buffer lock").extend_from_slice(&buf[..n]);
                sink.1.notify_all();
            }
        });

        // Read stdout lines on a thread and hand them over a channel, so the
        // wait for `listening on` is bounded by recv_timeout. The thread keeps
        // draining stdout after that line.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                    continue;
                }
            }
        });

        let mut server = ServeProcess {
            child: Some(child),
            addr: String::new(),
            storage,
            home,
            stderr,
            stderr_done,
            clock_file,
            clock_offset: Mutex::new(Duration::ZERO),
        };
        let mut other_lines = Vec::new();
        loop {
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(line) => match line.strip_prefix(LISTENING_PREFIX) {
                    Some(addr) => {
                        let addr = addr.trim();
                        if addr.parse::<SocketAddr>().is_err() {
                            server.fail(&format!("printed a bad address: {line:?}"));
                        }
                        server.addr = addr.to_string();
                        return server;
                    }
                    None => other_lines.push(line),
                },
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process exited (or closed it).
                    let status = match server.child.as_mut().map(Child::wait) {
                        Some(Ok(status)) => status.to_string(),
                        _ => "status unknown".to_string(),
                    };
                    server.fail(&format!(
                        "exited ({status}) before printing `{LISTENING_PREFIX}ADDR`; \
                         stdout: {other_lines:?}"
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => server.fail(&format!(
                    "printed no `{LISTENING_PREFIX}ADDR` within {START_TIMEOUT:?}; \
                     stdout: {other_lines:?}"
                )),
            }
        }
    }

    /// The server's `GLCI_HOME` (its CA is `registry-ca/ca.crt` there).
    pub fn home(&self) -> &Path {
        match &self.home {
            Home::Temp(dir) => dir.path(),
            Home::Dir(path) => path,
        }
    }

    /// The storage directory the server was started with.
    pub fn storage(&self) -> &Path {
        match &self.storage {
            Storage::Temp(dir) => dir.path(),
            Storage::Dir(path) => path,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the server has not exited (yet).
    pub fn still_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.0.lock().expect("stderr buffer lock")).into_owned()
    }

    /// Moves the server's clock `by` ahead (token expiry, `tag_ttl`, certificate renewal), as
    /// if that much time had passed: the next request sees it.
    pub fn advance_clock(&self, by: Duration) {
        let mut offset = self.clock_offset.lock().expect("clock lock");
        *offset += by;
        // Written whole, then renamed: the server never reads half a number.
        let temp = self.clock_file.with_extension("new");
        std::fs::write(&temp, offset.as_secs_f64().to_string()).expect("write the test clock");
        std::fs::rename(&temp, &self.clock_file).expect("move the test clock into place");
    }

    /// Waits until the server's stderr contains `needle`: woken by each write the reader
    /// thread copies (a line the server just wrote may not be here yet); false after 10 s
    /// without it.
    pub fn stderr_shows(&self, needle: &str) -> bool {
        let (buffer, more) = &*self.stderr;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut text = buffer.lock().expect("stderr buffer lock");
        loop {
            if String::from_utf8_lossy(&text).contains(needle) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            text = more.wait_timeout(text, left).expect("stderr buffer lock").0;
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit; panics unless it
    /// exits 0, as the `glci serve` contract says it must.
    pub fn stop(mut self) -> ExitStatus {
        let status = self.terminate(libc::SIGTERM);
        if !status.success() {
            self.fail(&format!("exited with {status} after SIGTERM, expected 0"));
        }
        self.assert_log_keeps_secrets();
        status
    }

    /// Panics if the server's log shows its admin secret or its CA key: every test that starts
    /// a server checks this when the server goes (issue 10: secrets absent from every log line
    /// the suite produces).
    fn assert_log_keeps_secrets(&self) {
        let log = self.final_stderr();
        let secrets = [self.home().join("admin.secret"), self.home().join("registry-ca").join("ca.key")];
        for path in secrets {
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            // The key's base64 body, line by line: a PEM block is never logged whole or in part.
            for line in text.lines().map(str::trim).filter(|l| l.len() >= 16 && !l.starts_with("-----")) {
                assert!(!log.contains(line), "glci serve logged the contents of {}", path.display());
            }
        }
    }

    /// Sends `signal` and waits up to [`STOP_TIMEOUT`] for the exit
    /// (SIGKILL after that, and a panic).
    pub fn terminate(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        unsafe { libc::kill(pid, signal) };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(status) => status.expect("wait for glci serve"),
            Err(_) => {
                // SAFETY: as above; the waiter thread has not reaped it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                self.fail(&format!("did not exit within {STOP_TIMEOUT:?} of signal {signal}"))
            }
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("glci serve {what}\n--- glci serve stderr ---\n{}", self.final_stderr());
    }

    /// All of stderr once the process is gone: waits (bounded, in case a
    /// grandchild still holds the pipe) for the reader thread to see EOF.
    fn final_stderr(&self) -> String {
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        self.stderr()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // `fail` and `stop` take the child; a server still here when a test
        // panics shows its stderr, since the panic may be its fault.
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
        if thread::panicking() {
            eprintln!("--- glci serve on {} (stderr) ---\n{}", self.addr, self.final_stderr());
        } else {
            self.assert_log_keeps_secrets();
        }
    }
}
