//! Real-client benchmark (`make bench`, issue 18): the clients users run, each pulling and
//! pushing the same content from a release `glci serve --no-auth` and from Debian's
//! `docker-registry` (distribution 2.8) on the same machine, alternating server by server and
//! round by round. Clients: curl (`-o /dev/null` of a 256 MiB blob; `-T` for its push),
//! skopeo (`copy docker://… dir:` of a 1 GiB single-layer image and of a 20-layer image, and
//! `copy oci:… docker://…` for pushes), `docker pull` by the host daemon (127.0.0.0/8 is an
//! insecure registry to it) and containerd's `ctr images pull` (docker's containerd). Then the
//! same over HTTPS, a cold pull-through (a miss streamed from distribution as upstream to curl,
//! against curl pulling from that upstream directly, with the share of the CPUs the machine
//! spent busy during each: where the miss is bound by the machine), and the loopback ceiling
//! (curl from a bare sendfile(2) loop). It prints one table with every ratio and writes
//! `target/bench/clients.json`. It asserts that each transfer is whole, never speed.
//!
//! Storage, images and the clients' `dir:` copies live on tmpfs (/dev/shm): a pull is served
//! from the page cache either way, and pushes then measure the servers, not this VM's disk
//! (tests/bench.rs measures pushes with fsync on a real disk). `#[ignore]`: run by
//! `scripts/bench.sh`. `GLCI_BENCH_ONLY=curl,skopeo,docker,ctr,https,pull-through` runs some.
#![allow(clippy::unwrap_used)]
// Tests spawn processes and read the environment; clippy.toml's disallowed-methods is for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ServeProcess;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1 << 20;
/// The blob curl pulls and pushes.
const CURL_BLOB: u64 = 256 * MIB;
/// The single layer of the big image.
const BIG_LAYER: u64 = 1024 * MIB;
/// The layered image: this many layers of `LAYER_BYTES` each.
const LAYERS: usize = 20;
const LAYER_BYTES: u64 = 8 * MIB;
/// Rounds of the curl figures (fast) and of the image clients.
const CURL_ROUNDS: usize = 7;
const IMAGE_ROUNDS: usize = 3;
const GLCI: usize = 0;
const DIST: usize = 1;
const START_TIMEOUT: Duration = Duration::from_secs(20);
const CONTAINERD: &str = "/run/docker/containerd/containerd.sock";

// ---------------------------------------------------------------------------
// Content: blobs and an OCI image layout the clients push from
// ---------------------------------------------------------------------------

/// Fills `buf` (a multiple of 8 bytes) with xorshift64 output from `seed`: incompressible and
/// fast to make.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a blob into `blobs` (an OCI layout's `blobs/sha256`) by `produce`; returns its
/// digest and size.
fn write_blob(blobs: &Path, produce: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> (String, u64) {
    let temp = blobs.join(".incoming");
    let mut out = Hashing { inner: io::BufWriter::new(File::create(&temp).unwrap()), hash: Sha256::new() };
    produce(&mut out).unwrap();
    out.flush().unwrap();
    let hex = hex(&out.hash.finalize());
    let size = fs::metadata(&temp).unwrap().len();
    fs::rename(&temp, blobs.join(&hex)).unwrap();
    (format!("sha256:{hex}"), size)
}

/// `len` pseudo-random bytes from `seed`, 1 MiB at a time.
fn write_random(out: &mut dyn Write, len: u64, seed: u64) -> io::Result<()> {
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    let mut block = 0u64;
    while left > 0 {
        fill(&mut buf, seed.wrapping_mul(1_000_003).wrapping_add(block));
        let n = left.min(MIB) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
        block += 1;
    }
    Ok(())
}

/// An uncompressed layer: a tar holding one file `data-SEED` of `len` random bytes.
fn write_layer(out: &mut dyn Write, len: u64, seed: u64) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(format!("data-{seed}"))?;
    header.set_size(len);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    out.write_all(header.as_bytes())?;
    write_random(out, len, seed)?;
    let pad = (512 - len % 512) % 512;
    out.write_all(&vec![0u8; pad as usize + 1024])
}

/// An OCI image layout on disk with tagged images, the source of every push.
struct Layout {
    dir: PathBuf,
    index: Vec<Value>,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir, index: Vec::new() }
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.blobs().join(digest.trim_start_matches("sha256:"))
    }

    /// An image tagged `tag` whose layers have the given sizes (seeds from `seed`).
    fn add_image(&mut self, tag: &str, layer_sizes: &[u64], seed: u64) -> u64 {
        let blobs = self.blobs();
        let layers: Vec<(String, u64)> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| write_blob(&blobs, |out| write_layer(out, len, seed + i as u64)))
            .collect();
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()},
        })
        .to_string();
        let (config_digest, config_size) = write_blob(&blobs, |out| out.write_all(config.as_bytes()));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": layers.iter().map(|(d, s)| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
        })
        .to_string();
        let (digest, size) = write_blob(&blobs, |out| out.write_all(manifest.as_bytes()));
        self.index.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
        layers.iter().map(|(_, s)| s).sum::<u64>() + config_size + size
    }
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// Debian's `docker-registry serve` on port 0 (found from its socket in /proc), optionally
/// with TLS.
struct Distribution {
    child: Child,
    addr: String,
}

impl Distribution {
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Distribution {
        common::need("docker-registry");
        fs::create_dir_all(dir).unwrap();
        let tls = tls.map_or(String::new(), |(cert, key)| {
            format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display())
        });
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\n\
             http:\n  addr: 127.0.0.1:0\n  secret: glci-bench\n{tls}",
            dir.join("data").display()
        );
        fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("registry.err")).unwrap())
            .spawn()
            .unwrap();
        let mut registry = Distribution { child, addr: String::new() };
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < START_TIMEOUT, "docker-registry did not listen within {START_TIMEOUT:?}");
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", fs::read_to_string(dir.join("registry.err")).unwrap());
            }
            if let Some(port) = listening_port(registry.child.id()) {
                registry.addr = format!("127.0.0.1:{port}");
                if TcpStream::connect(&registry.addr).is_ok() {
                    return registry;
                }
            }
            // Nothing to wait on: the process says nothing when it listens at log level error.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of the first listening TCP socket process `pid` holds.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                return u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok();
            }
        }
    }
    None
}

/// A self-signed certificate for 127.0.0.1 (distribution's HTTPS; the clients skip
/// verification for both servers alike, the encryption is the same).
fn write_self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (crt, key) = (dir.join("dist.crt"), dir.join("dist.key"));
    fs::write(&crt, cert.cert.pem()).unwrap();
    fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
    (crt, key)
}

/// The two servers of one comparison, by index `GLCI`, `DIST`.
struct Pair {
    glci: ServeProcess,
    dist: Distribution,
    tls: bool,
}

impl Pair {
    fn start(dir: &Path, tls: bool) -> Pair {
        let args: &[&str] = if tls { &["--no-auth", "--quiet"] } else { &["--no-auth", "--no-tls", "--quiet"] };
        let glci = ServeProcess::start_with_config(&dir.join("glci"), args, common::TEST_CONFIG);
        let cert = tls.then(|| write_self_signed(dir));
        let dist = Distribution::start(&dir.join("dist"), cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())));
        Pair { glci, dist, tls }
    }

    fn addr(&self, server: usize) -> &str {
        if server == GLCI {
            &self.glci.addr
        } else {
            &self.dist.addr
        }
    }

    fn pid(&self, server: usize) -> u32 {
        if server == GLCI {
            self.glci.pid()
        } else {
            self.dist.child.id()
        }
    }

    fn url(&self, server: usize, path: &str) -> String {
        format!("{}://{}{path}", if self.tls { "https" } else { "http" }, self.addr(server))
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout and the wall time.
fn run_timed(cmd: &mut Command) -> (String, Duration) {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), took)
}

fn curl() -> Command {
    common::need("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-f", "-k"]);
    cmd
}

/// curl's own transfer time (`time_total`, connect included, process start not) of a GET of
/// `url` to /dev/null, checking it received `len` bytes.
fn curl_pull(url: &str, len: u64) -> Duration {
    let (out, _) = run_timed(curl().args(["-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]));
    let (size, time) = out.trim().split_once(' ').unwrap();
    assert_eq!(size.parse::<u64>().unwrap(), len, "curl {url}: bytes received");
    Duration::from_secs_f64(time.parse().unwrap())
}

/// A monolithic push by curl: `POST` for the session, then `PUT ?digest=` with `-T file`; the
/// time of both.
fn curl_push(pair: &Pair, server: usize, repo: &str, file: &Path, digest: &str) -> Duration {
    let post = pair.url(server, &format!("/v2/{repo}/blobs/uploads/"));
    let (head, took_post) = run_timed(curl().args(["-X", "POST", "-o", "/dev/null", "-D", "-", &post]));
    let location = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("location")).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("POST {post}: no Location in {head}"));
    let location = if location.starts_with("http") { location.to_string() } else { pair.url(server, location) };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{sep}digest={digest}");
    let (out, _) = run_timed(curl().args([
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        &file.to_string_lossy(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{time_total}",
        &put,
    ]));
    let (code, time) = out.trim().split_once(' ').unwrap();
    assert_eq!(code, "201", "curl PUT {put}");
    took_post + Duration::from_secs_f64(time.parse().unwrap())
}

fn skopeo(tls_flag: &str) -> Command {
    common::need("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "-q", &format!("{tls_flag}=false")]);
    cmd
}

/// `skopeo copy docker://ADDR/REF dir:DEST`, DEST removed afterwards.
fn skopeo_pull(pair: &Pair, server: usize, reference: &str, scratch: &Path) -> Duration {
    let dest = scratch.join(common::unique_name("skopeo-dir"));
    let source = format!("docker://{}/{reference}", pair.addr(server));
    let (_, took) = run_timed(skopeo("--src-tls-verify").arg(&source).arg(format!("dir:{}", dest.display())));
    fs::remove_dir_all(&dest).unwrap();
    took
}

/// `skopeo copy oci:LAYOUT:TAG docker://ADDR/REPO:TAG`.
fn skopeo_push(pair: &Pair, server: usize, layout: &Path, tag: &str, repo: &str) -> Duration {
    let dest = format!("docker://{}/{repo}:{tag}", pair.addr(server));
    run_timed(skopeo("--dest-tls-verify").arg(format!("oci:{}:{tag}", layout.display())).arg(&dest)).1
}

/// `docker pull` by the host daemon, then the image removed again (untimed) so the next pull
/// fetches every layer.
fn docker_pull(pair: &Pair, server: usize, reference: &str) -> Duration {
    let image = format!("{}/{reference}", pair.addr(server));
    let (_, took) = run_timed(Command::new("docker").args(["pull", "-q", &image]));
    run_timed(Command::new("docker").args(["rmi", &image]));
    took
}

/// containerd's client: `ctr images pull` (fetch and unpack) in namespace `ns`, then the
/// image removed with a synchronous garbage collection so the next pull fetches everything.
fn ctr_pull(pair: &Pair, server: usize, ns: &str, reference: &str) -> Duration {
    let image = format!("{}/{reference}", pair.addr(server));
    let mut pull = ctr(ns);
    pull.args(["images", "pull"]);
    pull.arg(if pair.tls { "--skip-verify" } else { "--plain-http" });
    let (_, took) = run_timed(pull.arg(&image));
    run_timed(ctr(ns).args(["images", "rm", "--sync", &image]));
    took
}

fn ctr(ns: &str) -> Command {
    let mut cmd = Command::new("ctr");
    cmd.args(["--address", CONTAINERD, "--namespace", ns]);
    cmd
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
}

// ---------------------------------------------------------------------------
// Where the time goes: CPU of the server process and of the client processes
// ---------------------------------------------------------------------------

/// User + system CPU time of process `pid` so far.
fn process_cpu(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    Duration::from_secs_f64(ticks / hz)
}

/// User + system CPU time of this process's waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a struct owned by this frame.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let time = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    time(usage.ru_utime) + time(usage.ru_stime)
}

// ---------------------------------------------------------------------------
// How busy the machine is
// ---------------------------------------------------------------------------

/// Runs `f` and says what share of all CPUs' time the machine spent busy meanwhile (the first
/// line of /proc/stat: everything but idle and iowait). A cold pull-through that keeps every
/// CPU busy is bound by the machine, whatever the relay does.
fn machine_busy<T>(f: impl FnOnce() -> T) -> (T, f64) {
    fn jiffies() -> (u64, u64) {
        let stat = fs::read_to_string("/proc/stat").unwrap();
        let fields: Vec<u64> =
            stat.lines().next().unwrap().split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
        // user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
        let total: u64 = fields.iter().take(8).sum();
        (total, fields[3] + fields[4])
    }
    let (total_before, idle_before) = jiffies();
    let result = f();
    let (total_after, idle_after) = jiffies();
    let total = (total_after - total_before).max(1) as f64;
    (result, 1.0 - (idle_after - idle_before) as f64 / total)
}

/// The middle value (the mean of the middle two of an even count); `None` for none.
fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

// ---------------------------------------------------------------------------
// The loopback ceiling
// ---------------------------------------------------------------------------

/// A server answering any request with the whole of `path` by sendfile(2) and nothing else:
/// the most any server can give curl on this machine. The thread lives as long as the bench.
fn bare_sendfile_server(path: PathBuf) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = send_whole_file(&mut conn, &path);
        }
    });
    addr
}

fn send_whole_file(conn: &mut TcpStream, path: &Path) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let mut head = Vec::new();
    let mut piece = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut piece)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&piece[..n]);
    }
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut offset: libc::off_t = 0;
    while (offset as u64) < len {
        let left = (len - offset as u64) as usize;
        // SAFETY: both descriptors are open for the call; `offset` is ours.
        if unsafe { libc::sendfile(conn.as_raw_fd(), file.as_raw_fd(), &mut offset, left) } <= 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Samples(BTreeMap<String, [Vec<f64>; 2]>);

impl Samples {
    fn add(&mut self, key: &str, server: usize, value: f64) {
        self.0.entry(key.to_string()).or_default()[server].push(value);
    }

    fn median(&self, key: &str, server: usize) -> Option<f64> {
        median(&self.0.get(key)?[server])
    }
}

fn mbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e6
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".to_string(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn phase(name: &str) -> bool {
    match std::env::var("GLCI_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|p| p.trim() == name),
        _ => true,
    }
}

fn order(round: usize) -> [usize; 2] {
    if round % 2 == 0 {
        [GLCI, DIST]
    } else {
        [DIST, GLCI]
    }
}

/// What the bench moves: the curl blob (a file and its digest) and the two images.
struct Content {
    layout: PathBuf,
    curl_file: PathBuf,
    curl_digest: String,
    big_bytes: u64,
    layered_bytes: u64,
}

const REPO: &str = "bench/clients";

/// Loads the content into both servers of `pair` (skopeo and curl pushes, timed: the push
/// figures, round 0 only for the 1 GiB image), under `prefix` for the figure names.
fn load(pair: &Pair, content: &Content, samples: &mut Samples, prefix: &str) {
    for server in order(0) {
        let took = skopeo_push(pair, server, &content.layout, "big", REPO);
        samples.add(&format!("{prefix}skopeo_push_big"), server, mbps(content.big_bytes, took));
    }
    for round in 0..IMAGE_ROUNDS {
        for server in order(round) {
            // A fresh repository each round: every blob is uploaded again.
            let repo = format!("{REPO}-push{round}");
            let took = skopeo_push(pair, server, &content.layout, "layered", &repo);
            samples.add(&format!("{prefix}skopeo_push_layered"), server, mbps(content.layered_bytes, took));
        }
        for server in order(round) {
            let took =
                curl_push(pair, server, &format!("{REPO}-curl{round}"), &content.curl_file, &content.curl_digest);
            samples.add(&format!("{prefix}curl_push"), server, mbps(CURL_BLOB, took));
        }
    }
    skopeo_push(pair, GLCI, &content.layout, "layered", REPO);
    skopeo_push(pair, DIST, &content.layout, "layered", REPO);
    curl_push(pair, GLCI, REPO, &content.curl_file, &content.curl_digest);
    curl_push(pair, DIST, REPO, &content.curl_file, &content.curl_digest);
}

/// Every pull client against both servers of `pair`, alternating.
fn pulls(pair: &Pair, content: &Content, samples: &mut Samples, prefix: &str, scratch: &Path) {
    let blob = format!("/v2/{REPO}/blobs/{}", content.curl_digest);
    if phase("curl") {
        for round in 0..CURL_ROUNDS {
            for server in order(round) {
                let (cpu_server, cpu_client) = (process_cpu(pair.pid(server)), children_cpu());
                let took = curl_pull(&pair.url(server, &blob), CURL_BLOB);
                samples.add(&format!("{prefix}curl_pull"), server, mbps(CURL_BLOB, took));
                let gb = CURL_BLOB as f64 / 1e9;
                let server_s = (process_cpu(pair.pid(server)) - cpu_server).as_secs_f64();
                samples.add(&format!("{prefix}curl_server_cpu"), server, server_s / gb);
                samples.add(
                    &format!("{prefix}curl_client_cpu"),
                    server,
                    (children_cpu() - cpu_client).as_secs_f64() / gb,
                );
            }
        }
    }
    let images = [("big", content.big_bytes), ("layered", content.layered_bytes)];
    if phase("skopeo") {
        for round in 0..IMAGE_ROUNDS {
            for (tag, bytes) in images {
                for server in order(round) {
                    let took = skopeo_pull(pair, server, &format!("{REPO}:{tag}"), scratch);
                    samples.add(&format!("{prefix}skopeo_pull_{tag}"), server, mbps(bytes, took));
                }
            }
        }
    }
    if phase("docker") {
        common::need_docker_daemon();
        for round in 0..IMAGE_ROUNDS {
            for (tag, bytes) in images {
                for server in order(round) {
                    let took = docker_pull(pair, server, &format!("{REPO}:{tag}"));
                    samples.add(&format!("{prefix}docker_pull_{tag}"), server, mbps(bytes, took));
                }
            }
        }
    }
    if phase("ctr") && have("ctr") && Path::new(CONTAINERD).exists() {
        let ns = common::unique_name("glci-bench");
        for round in 0..IMAGE_ROUNDS {
            for (tag, bytes) in images {
                for server in order(round) {
                    let took = ctr_pull(pair, server, &ns, &format!("{REPO}:{tag}"));
                    samples.add(&format!("{prefix}ctr_pull_{tag}"), server, mbps(bytes, took));
                }
            }
        }
        let _ = ctr("default").args(["namespaces", "rm", &ns]).output();
    }
}

/// The table's rows: key, label.
const ROWS: [(&str, &str); 14] = [
    ("curl_pull", "curl pull, 256 MiB blob"),
    ("curl_push", "curl push, 256 MiB blob (POST + PUT -T)"),
    ("skopeo_pull_big", "skopeo copy → dir:, 1 GiB, 1 layer"),
    ("skopeo_pull_layered", "skopeo copy → dir:, 20 × 8 MiB layers"),
    ("skopeo_push_big", "skopeo copy oci: →, 1 GiB, 1 layer (once)"),
    ("skopeo_push_layered", "skopeo copy oci: →, 20 × 8 MiB layers"),
    ("docker_pull_big", "docker pull, 1 GiB, 1 layer"),
    ("docker_pull_layered", "docker pull, 20 × 8 MiB layers"),
    ("ctr_pull_big", "ctr images pull, 1 GiB, 1 layer"),
    ("ctr_pull_layered", "ctr images pull, 20 × 8 MiB layers"),
    ("curl_server_cpu", "server CPU per GB of curl pull (s) ↓"),
    ("curl_client_cpu", "curl CPU per GB pulled (s) ↓"),
    ("pt_cold", "curl, cold pull-through vs direct (MB/s)"),
    ("pt_warm", "curl, warm pull-through vs direct (MB/s)"),
];

fn print_table(samples: &Samples, prefix: &str, title: &str, figures: &mut serde_json::Map<String, Value>) {
    println!("\n{title}");
    println!("{:<46} {:>9} {:>13} {:>7}", "figure (median, MB/s unless said)", "glci", "distribution", "ratio");
    for (key, label) in ROWS {
        let key = format!("{prefix}{key}");
        if !samples.0.contains_key(&key) {
            continue;
        }
        let (g, d) = (samples.median(&key, GLCI), samples.median(&key, DIST));
        let ratio = g.zip(d).map(|(g, d)| g / d);
        println!("{label:<46} {:>9} {:>13} {:>7}", fmt(g), fmt(d), fmt(ratio));
        let all = &samples.0[&key];
        figures.insert(
            key,
            json!({"label": label, "glci": g, "distribution": d, "ratio_glci_over_distribution": ratio,
                   "samples": {"glci": all[GLCI], "distribution": all[DIST]}}),
        );
    }
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn real_clients_against_distribution() {
    let bench_start = Instant::now();
    let load_before = load_average();
    let scratch = tempfile::Builder::new().prefix("glci-bench-clients-").tempdir_in("/dev/shm").unwrap();
    let dir = scratch.path();
    let step = |what: &str| println!("[{:6.1} s] {what}", bench_start.elapsed().as_secs_f64());
    println!("\n== real clients: glci vs distribution 2.8, alternating (MB/s = 10^6 B/s) ==");
    println!("scratch (tmpfs): {} | load average before: {load_before}", dir.display());

    step("content: a 256 MiB blob, a 1 GiB one-layer image, a 20-layer image");
    let mut layout = Layout::new(dir.join("layout"));
    let big_bytes = layout.add_image("big", &[BIG_LAYER], 1);
    let layered_bytes = layout.add_image("layered", &[LAYER_BYTES; LAYERS], 100);
    let (curl_digest, _) = write_blob(&dir.join("layout/blobs/sha256"), |out| write_random(out, CURL_BLOB, 7));
    let curl_file = layout.blob_path(&curl_digest);
    let content =
        Content { layout: layout.dir.clone(), curl_file: curl_file.clone(), curl_digest, big_bytes, layered_bytes };
    let mut samples = Samples::default();

    step("plain HTTP: pushes");
    let plain = Pair::start(&dir.join("plain"), false);
    load(&plain, &content, &mut samples, "");
    step("plain HTTP: pulls");
    pulls(&plain, &content, &mut samples, "", dir);
    let ceiling = bare_sendfile_server(curl_file.clone());
    let ceiling_mbps: Vec<f64> =
        (0..CURL_ROUNDS).map(|_| mbps(CURL_BLOB, curl_pull(&format!("http://{ceiling}/"), CURL_BLOB))).collect();

    let (mut busy_cold, mut busy_direct) = (Vec::new(), Vec::new());
    if phase("pull-through") {
        step("cold pull-through: curl through glci (upstream: distribution) vs curl from distribution");
        let config = format!(
            "[registry]\nupstreams = [\"upstream.bench\"]\n[registry.upstream_urls]\n\"upstream.bench\" = \"http://{}\"\n",
            plain.dist.addr
        );
        let blob = format!("/v2/{REPO}/blobs/{}", content.curl_digest);
        for round in 0..CURL_ROUNDS {
            let cache = ServeProcess::start_with_config(
                &dir.join(format!("cache-{round}")),
                &["--no-auth", "--no-tls", "--quiet"],
                &config,
            );
            for server in order(round) {
                if server == GLCI {
                    let url = format!("http://{}{blob}", cache.addr);
                    let (cold, busy) = machine_busy(|| curl_pull(&url, CURL_BLOB));
                    samples.add("pt_cold", GLCI, mbps(CURL_BLOB, cold));
                    busy_cold.push(busy);
                    samples.add("pt_warm", GLCI, mbps(CURL_BLOB, curl_pull(&url, CURL_BLOB)));
                } else {
                    let (direct, busy) = machine_busy(|| curl_pull(&plain.url(DIST, &blob), CURL_BLOB));
                    let direct = mbps(CURL_BLOB, direct);
                    samples.add("pt_cold", DIST, direct);
                    samples.add("pt_warm", DIST, direct);
                    busy_direct.push(busy);
                }
            }
            cache.stop();
            fs::remove_dir_all(dir.join(format!("cache-{round}"))).unwrap();
        }
    }
    drop(plain);
    fs::remove_dir_all(dir.join("plain")).unwrap();
    // Printed now, so a later phase that fails (a full disk under docker pull) keeps these.
    let mut figures = serde_json::Map::new();
    print_table(
        &samples,
        "",
        "plain HTTP (pt_*: glci column = through glci, distribution column = direct)",
        &mut figures,
    );

    if phase("https") {
        step("HTTPS: pushes");
        let tls = Pair::start(&dir.join("tls"), true);
        load(&tls, &content, &mut samples, "tls_");
        step("HTTPS: pulls");
        pulls(&tls, &content, &mut samples, "tls_", dir);
    }
    let load_after = load_average();

    print_table(&samples, "tls_", "HTTPS (both servers; clients skip certificate checks alike)", &mut figures);
    let ceiling_median = median(&ceiling_mbps).unwrap_or(f64::NAN);
    println!(
        "\nloopback ceiling: curl from a bare sendfile(2) loop {ceiling_median:.0} MB/s (median of {CURL_ROUNDS})"
    );
    if let (Some(cold), Some(direct)) = (median(&busy_cold), median(&busy_direct)) {
        // The same CPU work with every CPU kept busy: the most any scheduling of it could give.
        let bound = |key: &str, server: usize, busy: f64| samples.median(key, server).unwrap_or(f64::NAN) / busy;
        println!(
            "CPUs busy (/proc/stat, all {} of them): {:.0}% during a cold pull-through, {:.0}% during the direct pull; \
             with every CPU busy the same work would give {:.0} and {:.0} MB/s ({:.2})",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            cold * 100.0,
            direct * 100.0,
            bound("pt_cold", GLCI, cold),
            bound("pt_cold", DIST, direct),
            bound("pt_cold", GLCI, cold) / bound("pt_cold", DIST, direct)
        );
    }
    println!(
        "ratio = glci / distribution (higher is better, except ↓). Medians of {CURL_ROUNDS} (curl) or {IMAGE_ROUNDS} rounds."
    );
    println!(
        "machine: {} CPUs | load average: {load_before} before, {load_after} after | {:.1} s in all",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        bench_start.elapsed().as_secs_f64()
    );
    let out = json!({
        "bench": "real_clients_against_distribution",
        "figures": figures,
        "loopback_ceiling_curl_mbps": {"median": ceiling_median, "samples": ceiling_mbps},
        "pull_through_cpus_busy": {"cold": busy_cold, "direct": busy_direct},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "seconds": bench_start.elapsed().as_secs_f64(),
    });
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("bench");
    fs::create_dir_all(&out_dir).unwrap();
    let path =
        out_dir.join(if std::env::var("GLCI_BENCH_ONLY").is_ok() { "clients-partial.json" } else { "clients.json" });
    fs::write(&path, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
    println!("figures written to {}", path.display());
}
