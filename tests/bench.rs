//! Registry throughput benchmark (`make bench`): a 1 GiB blob pushed to and pulled from a
//! release `glci serve` over loopback. It prints figures and writes them to
//! `target/bench/registry.json`; it asserts correctness (statuses, digests), never speed.
//!
//! Every benchmark is `#[ignore]`, so `cargo test --all-targets` only compiles this file;
//! `scripts/bench.sh` runs it with `--release --ignored --nocapture --test-threads=1`.
//!
//! The client is raw HTTP/1.1 over `TcpStream`. The blob is generated on the fly, one reused
//! 1 MiB buffer at a time, so the client never holds it. Storage lives under cargo's
//! `target/tmp` (a real disk, not tmpfs: the server's fsync is part of what is measured) and
//! is removed at the end. Rates are decimal: GB/s = 10^9 bytes per second.
#![allow(clippy::unwrap_used)]
// Tests spawn processes and read the environment; clippy.toml's disallowed-methods is for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::ServeProcess;
use sha2::{Digest as _, Sha256};

const MIB: usize = 1024 * 1024;
/// The blob is this many 1 MiB blocks.
const BLOB_BLOCKS: usize = 1024;
const BLOB_LEN: u64 = (BLOB_BLOCKS * MIB) as u64;
/// Chunk size of the streamed PATCH: Go's `io.Copy` buffer, which is what docker's chunked
/// uploads end up framed by.
const DOCKER_CHUNK: usize = 32 * 1024;
/// Timed pulls; the best one is reported.
const PULLS: usize = 3;
const REPO: &str = "bench";
/// A stuck server fails the bench instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

const TARGET_PUSH_GBPS: f64 = 1.0;
const TARGET_PULL_GBPS: f64 = 3.0;
const TARGET_RSS_MIB: f64 = 32.0;

// ---------------------------------------------------------------------------
// The blob
// ---------------------------------------------------------------------------

/// Fills `buf` (a multiple of 32 bytes) from `seed` with four interleaved xorshift64 streams,
/// fast enough (several GB/s) that generating is a small part of the client's work.
fn fill(buf: &mut [u8], seed: u64) {
    let mut s = [1u64, 2, 3, 4].map(|lane| (seed.wrapping_add(lane)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for block in buf.chunks_exact_mut(32) {
        for (lane, word) in block.chunks_exact_mut(8).enumerate() {
            let x = &mut s[lane];
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
    }
}

/// Block `index` of blob `variant`. The variants differ only in their last block, so one
/// hashing pass over the shared prefix yields every variant's digest.
fn fill_block(buf: &mut [u8], variant: u64, index: usize) {
    let seed = if index + 1 == BLOB_BLOCKS { (variant << 32) | index as u64 } else { index as u64 };
    fill(buf, seed);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the first, untimed-by-the-server pass measures: the digests of both variants, and the
/// client's generator and SHA-256 speeds (each timed alone).
struct Digests {
    monolithic: String,
    chunked: String,
    sha256_gbps: f64,
    generate_gbps: f64,
}

fn digests(buf: &mut [u8]) -> Digests {
    let (mut gen_time, mut hash_time) = (Duration::ZERO, Duration::ZERO);
    let mut prefix = Sha256::new();
    for index in 0..BLOB_BLOCKS - 1 {
        let t = Instant::now();
        fill_block(buf, 0, index);
        gen_time += t.elapsed();
        let t = Instant::now();
        prefix.update(&*buf);
        hash_time += t.elapsed();
    }
    let mut finish = |variant: u64, count_time: bool| {
        let mut h = prefix.clone();
        let t = Instant::now();
        fill_block(buf, variant, BLOB_BLOCKS - 1);
        let g = t.elapsed();
        let t = Instant::now();
        h.update(&*buf);
        let digest = format!("sha256:{}", hex(&h.finalize()));
        if count_time {
            gen_time += g;
            hash_time += t.elapsed();
        }
        digest
    };
    let monolithic = finish(0, true);
    let chunked = finish(1, false);
    Digests { monolithic, chunked, sha256_gbps: gbps(BLOB_LEN, hash_time), generate_gbps: gbps(BLOB_LEN, gen_time) }
}

fn gbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e9
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("Content-Length").and_then(|v| v.parse().ok())
    }

    fn expect(self, status: u16, what: &str) -> Response {
        if self.status != status {
            panic!(
                "{what}: expected {status}, got {}\nheaders: {:?}\nbody: {}",
                self.status,
                self.headers,
                String::from_utf8_lossy(&self.body)
            );
        }
        self
    }

    fn expect_digest(self, digest: &str, what: &str) -> Response {
        assert_eq!(self.header("Docker-Content-Digest"), Some(digest), "{what}: Docker-Content-Digest");
        self
    }
}

/// One keep-alive connection. `pending` holds bytes read past a response head.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Conn {
    fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, pending: Vec::new() }
    }

    fn send_head(&mut self, method: &str, target: &str, extra: &[(&str, &str)]) -> io::Result<()> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.stream.peer_addr()?);
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes())
    }

    /// Reads a response head (skipping 1xx). The body stays unread.
    fn read_head(&mut self) -> io::Result<Response> {
        loop {
            let end = loop {
                if let Some(i) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                if self.pending.len() > 64 * 1024 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = self.stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"));
                }
                self.pending.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
            self.pending.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {status_line:?}"))
            })?;
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            if !(100..200).contains(&status) {
                return Ok(Response { status, headers, body: Vec::new() });
            }
        }
    }

    /// Reads `len` body bytes into `buf` (reused), handing each piece to `sink`.
    fn read_body(&mut self, len: u64, buf: &mut [u8], mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        let from_pending = (len as usize).min(self.pending.len());
        sink(&self.pending[..from_pending]);
        self.pending.drain(..from_pending);
        let mut left = len - from_pending as u64;
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = self.stream.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body ended early"));
            }
            sink(&buf[..n]);
            left -= n as u64;
        }
        Ok(())
    }

    /// A whole response with a small body (status replies, errors).
    fn read_response(&mut self) -> io::Result<Response> {
        let mut response = self.read_head()?;
        let len = response.content_length().unwrap_or(0);
        assert!(len <= MIB as u64, "unexpectedly large response body ({len} bytes)");
        let mut body = Vec::new();
        let mut buf = vec![0u8; len as usize];
        self.read_body(len, &mut buf, |piece| body.extend_from_slice(piece))?;
        response.body = body;
        Ok(response)
    }

    /// After a failed upload write: the server may have answered early (an error), show that.
    fn explain_write_error(&mut self, what: &str, error: io::Error) -> ! {
        match self.read_response() {
            Ok(r) => panic!(
                "{what}: sending failed ({error}); the server answered {} {:?}: {}",
                r.status,
                r.headers,
                String::from_utf8_lossy(&r.body)
            ),
            Err(e) => panic!("{what}: sending failed ({error}), and no response could be read ({e})"),
        }
    }
}

fn with_query(location: &str, query: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{query}")
}

// ---------------------------------------------------------------------------
// The measurements
// ---------------------------------------------------------------------------

/// An upload's time from its first request byte to the final `201`, and the part of it after
/// the last body byte was sent (commit: hashing tail, fsync, rename).
struct Push {
    total: Duration,
    after_last_byte: Duration,
}

impl Push {
    fn gbps(&self) -> f64 {
        gbps(BLOB_LEN, self.total)
    }
}

/// One `POST /v2/<repo>/blobs/uploads/?digest=` carrying the whole blob with `Content-Length`.
fn push_monolithic(addr: &str, digest: &str, buf: &mut [u8]) -> Push {
    let what = "monolithic POST";
    let mut conn = Conn::connect(addr);
    let target = format!("/v2/{REPO}/blobs/uploads/?digest={digest}");
    let len = BLOB_LEN.to_string();
    let headers = [("Content-Type", "application/octet-stream"), ("Content-Length", len.as_str())];
    let start = Instant::now();
    let sent = (|| {
        conn.send_head("POST", &target, &headers)?;
        for index in 0..BLOB_BLOCKS {
            fill_block(buf, 0, index);
            conn.stream.write_all(buf)?;
        }
        Ok::<_, io::Error>(())
    })();
    if let Err(e) = sent {
        conn.explain_write_error(what, e);
    }
    let last_byte = Instant::now();
    let response = conn.read_response().unwrap_or_else(|e| panic!("{what}: reading the response: {e}"));
    let end = Instant::now();
    response.expect(201, what).expect_digest(digest, what);
    Push { total: end - start, after_last_byte: end - last_byte }
}

/// A session as docker pushes: `POST` (start), one `PATCH` streamed with
/// `Transfer-Encoding: chunked` in `DOCKER_CHUNK` pieces, then `PUT ?digest=` without a body.
fn push_chunked(addr: &str, digest: &str, buf: &mut [u8]) -> Push {
    let what = "streamed PATCH upload";
    let mut conn = Conn::connect(addr);
    // The framed form of one 1 MiB block: `8000\r\n<32 KiB>\r\n` per chunk.
    let frame_head = format!("{DOCKER_CHUNK:x}\r\n");
    let mut framed = Vec::with_capacity(MIB + (MIB / DOCKER_CHUNK) * (frame_head.len() + 2));
    let start = Instant::now();
    conn.send_head("POST", &format!("/v2/{REPO}/blobs/uploads/"), &[("Content-Length", "0")]).unwrap();
    let started = conn.read_response().unwrap().expect(202, "POST upload session");
    let location = started.header("Location").unwrap_or_else(|| panic!("{what}: no Location")).to_string();
    let patch_headers = [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")];
    let sent = (|| {
        conn.send_head("PATCH", &location, &patch_headers)?;
        for index in 0..BLOB_BLOCKS {
            fill_block(buf, 1, index);
            framed.clear();
            for chunk in buf.chunks(DOCKER_CHUNK) {
                framed.extend_from_slice(frame_head.as_bytes());
                framed.extend_from_slice(chunk);
                framed.extend_from_slice(b"\r\n");
            }
            conn.stream.write_all(&framed)?;
        }
        conn.stream.write_all(b"0\r\n\r\n")
    })();
    if let Err(e) = sent {
        conn.explain_write_error(what, e);
    }
    let last_byte = Instant::now();
    let patched = conn.read_response().unwrap().expect(202, "PATCH");
    let range = format!("0-{}", BLOB_LEN - 1);
    assert_eq!(patched.header("Range"), Some(range.as_str()), "{what}: Range after PATCH");
    let location = patched.header("Location").unwrap_or(&location).to_string();
    conn.send_head("PUT", &with_query(&location, &format!("digest={digest}")), &[("Content-Length", "0")]).unwrap();
    let response = conn.read_response().unwrap();
    let end = Instant::now();
    response.expect(201, "PUT ?digest=").expect_digest(digest, what);
    Push { total: end - start, after_last_byte: end - last_byte }
}

/// `GET /v2/<repo>/blobs/<digest>`, read into `buf` (reused); with `hasher`, the bytes are
/// hashed too (the untimed verification pass). Returns the time from the first request byte
/// to the last body byte.
fn pull(addr: &str, digest: &str, buf: &mut [u8], hasher: Option<&mut Sha256>) -> Duration {
    let mut conn = Conn::connect(addr);
    let start = Instant::now();
    conn.send_head("GET", &format!("/v2/{REPO}/blobs/{digest}"), &[]).unwrap();
    let head = conn.read_head().unwrap();
    if head.status != 200 {
        conn.read_response().ok();
        panic!("GET blob: status {} {:?}", head.status, head.headers);
    }
    assert_eq!(head.content_length(), Some(BLOB_LEN), "GET blob: Content-Length");
    match hasher {
        Some(h) => conn.read_body(BLOB_LEN, buf, |piece| h.update(piece)).unwrap(),
        None => conn.read_body(BLOB_LEN, buf, |_| {}).unwrap(),
    }
    start.elapsed()
}

/// Writes `BLOB_LEN` bytes to a new file in `dir` and fsyncs it (what `dd bs=1M count=1024
/// conv=fsync` does), returning GB/s. The file is removed again.
fn disk_fsync_gbps(dir: &Path, buf: &mut [u8]) -> f64 {
    let path = dir.join("disk-probe");
    fill(buf, 0xd15c);
    let start = Instant::now();
    let mut file = File::create(&path).unwrap();
    for _ in 0..BLOB_BLOCKS {
        file.write_all(buf).unwrap();
    }
    file.sync_all().unwrap();
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_file(&path).unwrap();
    gbps(BLOB_LEN, elapsed)
}

/// `VmHWM` (peak resident set) of `pid` in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    proc_status_kib(pid, "VmHWM:") / 1024.0
}

fn rss_mib(pid: u32) -> f64 {
    proc_status_kib(pid, "VmRSS:") / 1024.0
}

fn proc_status_kib(pid: u32, field: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in status"));
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Resets `VmHWM` to the current RSS (`echo 5 > /proc/PID/clear_refs`); false if refused.
fn reset_peak_rss(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// Cargo's scratch directory for integration tests (`target/tmp`), on the repository's disk.
fn scratch_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Panics if `dir` is on tmpfs: the push figures would then not include a real fsync.
fn assert_real_disk(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs(2) with a NUL-terminated path and a zeroed out-struct it fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statfs {}: {}", dir.display(), io::Error::last_os_error());
    assert_ne!(st.f_type as i64, TMPFS_MAGIC, "{} is on tmpfs; the bench needs a real disk", dir.display());
}

fn git_revision() -> Option<String> {
    let out =
        Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(common::repo_root()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "meets"
    } else {
        "BELOW"
    }
}

// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn push_pull_1gib() {
    let bench_start = Instant::now();
    let load_before = load_average();
    fs::create_dir_all(scratch_root()).unwrap();
    let scratch = tempfile::Builder::new().prefix("glci-bench-").tempdir_in(scratch_root()).unwrap();
    assert_real_disk(scratch.path());
    let storage = scratch.path().join("storage");
    let mut buf = vec![0u8; MIB];
    let mut read_buf = vec![0u8; MIB];

    println!("\n== glci registry bench: 1 GiB blob over loopback (GB/s = 10^9 B/s) ==");
    println!("scratch: {} | load average before: {load_before}", scratch.path().display());

    let d = digests(&mut buf);
    println!("client: sha256 {:.2} GB/s, blob generator {:.2} GB/s (each timed alone)", d.sha256_gbps, d.generate_gbps);

    let server = ServeProcess::start_with_args(&storage, &["--no-auth", "--quiet"]);
    let pid = server.pid();
    let idle_rss = rss_mib(pid);
    println!("server: pid {pid} on {}, idle RSS {idle_rss:.1} MiB", server.addr);

    let disk_mono = disk_fsync_gbps(scratch.path(), &mut buf);
    let mono = push_monolithic(&server.addr, &d.monolithic, &mut buf);
    let hwm_mono = peak_rss_mib(pid);
    println!(
        "push monolithic POST:       {:.2} GB/s ({:.2} s; {:.0} ms after the last byte) | disk write+fsync just before: {disk_mono:.2} GB/s",
        mono.gbps(),
        mono.total.as_secs_f64(),
        mono.after_last_byte.as_secs_f64() * 1e3,
    );

    let can_reset = reset_peak_rss(pid);
    let disk_chunked = disk_fsync_gbps(scratch.path(), &mut buf);
    let chunked = push_chunked(&server.addr, &d.chunked, &mut buf);
    let hwm_chunked = peak_rss_mib(pid);
    println!(
        "push POST+PATCH(chunked)+PUT: {:.2} GB/s ({:.2} s; {:.0} ms after the last byte) | disk write+fsync just before: {disk_chunked:.2} GB/s",
        chunked.gbps(),
        chunked.total.as_secs_f64(),
        chunked.after_last_byte.as_secs_f64() * 1e3,
    );
    let peak_push = hwm_mono.max(hwm_chunked);
    println!(
        "server peak RSS (VmHWM): {hwm_mono:.1} MiB after the monolithic push, {hwm_chunked:.1} MiB after the chunked one{}",
        if can_reset { " (reset in between)" } else { " (cumulative: clear_refs refused)" }
    );

    reset_peak_rss(pid);
    let mut pulls = Vec::new();
    for i in 0..PULLS {
        let t = pull(&server.addr, &d.monolithic, &mut read_buf, None);
        let rate = gbps(BLOB_LEN, t);
        println!("pull {}: {rate:.2} GB/s ({:.2} s)", i + 1, t.as_secs_f64());
        pulls.push(rate);
    }
    let pull_best = pulls.iter().copied().fold(0.0, f64::max);
    let mut hasher = Sha256::new();
    pull(&server.addr, &d.monolithic, &mut read_buf, Some(&mut hasher));
    let pulled = format!("sha256:{}", hex(&hasher.finalize()));
    assert_eq!(pulled, d.monolithic, "the pulled blob does not hash to its digest");
    let peak_pull = peak_rss_mib(pid);
    println!("pull verified (untimed pass): {pulled}");
    println!("server peak RSS (VmHWM) during the pulls: {peak_pull:.1} MiB");

    server.stop();
    let load_after = load_average();
    drop(scratch);

    let rows: [(&str, String, String); 7] = [
        (
            "push, monolithic POST",
            format!("{:.2} GB/s", mono.gbps()),
            format!(">= {TARGET_PUSH_GBPS} GB/s  {}", verdict(mono.gbps() >= TARGET_PUSH_GBPS)),
        ),
        (
            "push, POST + chunked PATCH + PUT",
            format!("{:.2} GB/s", chunked.gbps()),
            format!(">= {TARGET_PUSH_GBPS} GB/s  {}", verdict(chunked.gbps() >= TARGET_PUSH_GBPS)),
        ),
        (
            "pull, best of 3",
            format!("{pull_best:.2} GB/s"),
            format!(">= {TARGET_PULL_GBPS} GB/s  {}", verdict(pull_best >= TARGET_PULL_GBPS)),
        ),
        ("sha256, client, one core", format!("{:.2} GB/s", d.sha256_gbps), String::new()),
        ("disk write + fsync (before each push)", format!("{disk_mono:.2} / {disk_chunked:.2} GB/s"), String::new()),
        (
            "server peak RSS, push",
            format!("{peak_push:.1} MiB"),
            format!("<= {TARGET_RSS_MIB} MiB  {}", verdict(peak_push <= TARGET_RSS_MIB)),
        ),
        (
            "server peak RSS, pull",
            format!("{peak_pull:.1} MiB"),
            format!("<= {TARGET_RSS_MIB} MiB  {}", verdict(peak_pull <= TARGET_RSS_MIB)),
        ),
    ];
    println!("\n{:<40} {:>16}   target", "figure", "measured");
    for (name, value, target) in &rows {
        println!("{name:<40} {value:>16}   {target}");
    }
    println!(
        "load average: {load_before} before, {load_after} after; {:.1} s in all",
        bench_start.elapsed().as_secs_f64()
    );

    let unix_time = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let json = serde_json::json!({
        "bench": "push_pull_1gib",
        "unix_time": unix_time,
        "git_revision": git_revision(),
        "blob_bytes": BLOB_LEN,
        "units": {"rates": "GB/s (1e9 bytes/s)", "rss": "MiB"},
        "push_monolithic_gbps": mono.gbps(),
        "push_monolithic_after_last_byte_ms": mono.after_last_byte.as_secs_f64() * 1e3,
        "push_chunked_gbps": chunked.gbps(),
        "push_chunked_after_last_byte_ms": chunked.after_last_byte.as_secs_f64() * 1e3,
        "push_chunked_chunk_bytes": DOCKER_CHUNK,
        "pull_gbps": pulls,
        "pull_best_gbps": pull_best,
        "client_sha256_gbps": d.sha256_gbps,
        "client_generate_gbps": d.generate_gbps,
        "disk_fsync_gbps": [disk_mono, disk_chunked],
        "server_idle_rss_mib": idle_rss,
        "server_peak_rss_push_mib": peak_push,
        "server_peak_rss_pull_mib": peak_pull,
        "peak_rss_reset_between_phases": can_reset,
        "targets": {"push_gbps": TARGET_PUSH_GBPS, "pull_gbps": TARGET_PULL_GBPS, "peak_rss_mib": TARGET_RSS_MIB},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    let out_dir = scratch_root().parent().unwrap().join("bench");
    fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("registry.json");
    fs::write(&out, serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
    println!("figures written to {}", out.display());
}
