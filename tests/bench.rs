//! Registry benchmark (`make bench`, issue 9): a release `glci serve --no-auth --no-tls --quiet`
//! and Debian's `docker-registry` (CNCF distribution 2.8: filesystem storage on the same disk,
//! no auth, log level error) on the same machine, driven by the same client below, alternating
//! server by server and round by round so machine drift hits both. It prints one table (each
//! figure for both, the median of `ROUNDS`, and the ratio glci / distribution) and writes
//! `target/bench/compare.json`. glci alone: the same 1 GiB push and pull over HTTPS, and
//! pull-through (cold, then warm) with the distribution instance as upstream. Context lines
//! show what the machine allows: the disk's write + fsync rate, and the loopback ceiling (the
//! same one-stream pull from a bare sendfile(2) loop that does nothing else).
//! It asserts correctness (statuses, digests), never speed.
//!
//! Every benchmark is `#[ignore]`, so `cargo test --all-targets` only compiles this file;
//! `scripts/bench.sh` runs it with `--release --ignored --nocapture --test-threads=1`.
//!
//! The client is raw HTTP/1.1 over `TcpStream` (or rustls for HTTPS). Blobs are generated on
//! the fly, 1 MiB at a time, so the client never holds one. Storage lives under cargo's
//! `target/tmp` (a real disk, not tmpfs: each server's fsync is part of what is measured) and
//! is removed at the end. Rates are decimal: MB/s = 10^6 bytes per second. Client and servers
//! share the machine's CPUs, so request rates are those of the pair, for both servers alike.
#![allow(clippy::unwrap_used)]
// Tests spawn processes and read the environment; clippy.toml's disallowed-methods is for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use common::ServeProcess;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

const MIB: usize = 1024 * 1024;
/// A big blob is this many 1 MiB blocks.
const BLOB_BLOCKS: usize = 1024;
const BLOB_LEN: u64 = (BLOB_BLOCKS * MIB) as u64;
/// Blocks per `PATCH` of the chunked upload (16 MiB, with `Content-Range`).
const CHUNK_BLOCKS: usize = 16;
/// Rounds of each compared figure; the table shows medians.
const ROUNDS: usize = 3;
/// Rounds of the glci-only figures (HTTPS, pull-through).
const GLCI_ROUNDS: usize = 2;
/// Streams of the parallel pull, each the whole blob.
const PULL_STREAMS: usize = 4;
/// Keep-alive connections of the request-rate runs, and their length.
const LOAD_CONNS: usize = 32;
const LOAD_TIME: Duration = Duration::from_secs(3);
const LIST_TIME: Duration = Duration::from_secs(2);
/// Tags on the benchmark repository and repositories in the catalog.
const TAGS: usize = 100;
const REPOS: usize = 20;
const REPO: &str = "bench";
/// The pull-through cache's name for the distribution instance.
const UPSTREAM_HOST: &str = "upstream.bench";
/// A stuck server fails the bench instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
const START_TIMEOUT: Duration = Duration::from_secs(20);

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

// ---------------------------------------------------------------------------
// Blobs
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

/// Block `index` of big blob `variant`. Variants differ only in their last block, so one
/// hashing pass over the shared prefix yields every variant's digest.
fn fill_block(buf: &mut [u8], variant: u64, index: usize) {
    let seed = if index + 1 == BLOB_BLOCKS { ((variant + 1) << 32) | index as u64 } else { index as u64 };
    fill(buf, seed);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// The hash state after the shared prefix of every big blob variant.
struct Variants {
    prefix: Sha256,
    buf: Vec<u8>,
}

impl Variants {
    fn new() -> Variants {
        let mut buf = vec![0u8; MIB];
        let mut prefix = Sha256::new();
        for index in 0..BLOB_BLOCKS - 1 {
            fill_block(&mut buf, 0, index);
            prefix.update(&buf);
        }
        Variants { prefix, buf }
    }

    fn digest(&mut self, variant: u64) -> String {
        let mut h = self.prefix.clone();
        fill_block(&mut self.buf, variant, BLOB_BLOCKS - 1);
        h.update(&self.buf);
        format!("sha256:{}", hex(&h.finalize()))
    }
}

fn mbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e6
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 client, plain or TLS
// ---------------------------------------------------------------------------

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A server as the client sees it.
#[derive(Clone)]
struct Target {
    addr: String,
    tls: Option<Arc<ClientConfig>>,
}

impl Target {
    fn plain(addr: &str) -> Target {
        Target { addr: addr.to_string(), tls: None }
    }
}

/// A rustls client config trusting only the CA certificate (PEM) at `ca`.
fn trusting(ca: &Path) -> Arc<ClientConfig> {
    let pem = fs::read_to_string(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    let mut roots = RootCertStore::empty();
    let mut body = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            body.clear();
        } else if line.starts_with("-----END") {
            roots.add(CertificateDer::from(base64_decode(&body))).unwrap();
        } else {
            body.push_str(line.trim());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 byte {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    out
}

/// The parts of a response head the bench looks at.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<u64> {
        self.header("Content-Length").and_then(|v| v.parse().ok())
    }

    fn is_chunked(&self) -> bool {
        self.header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

struct Response {
    head: Head,
    body: Vec<u8>,
}

impl Response {
    fn expect(self, status: u16, what: &str) -> Response {
        if self.head.status != status {
            panic!(
                "{what}: expected {status}, got {}\nheaders: {:?}\nbody: {}",
                self.head.status,
                self.head.headers,
                String::from_utf8_lossy(&self.body)
            );
        }
        self
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// One keep-alive connection. `pending` holds bytes read past a response head.
struct Conn {
    stream: Stream,
    pending: Vec<u8>,
    host: String,
}

impl Conn {
    fn connect(target: &Target) -> Conn {
        let addr = target.addr.as_str();
        let sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_nodelay(true).unwrap();
        let stream = match &target.tls {
            None => Stream::Plain(sock),
            Some(config) => {
                let ip = sock.peer_addr().unwrap().ip();
                let mut sock = sock;
                let mut conn = ClientConnection::new(Arc::clone(config), ServerName::IpAddress(ip.into())).unwrap();
                while conn.is_handshaking() {
                    conn.complete_io(&mut sock).unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
                }
                Stream::Tls(Box::new(StreamOwned::new(conn, sock)))
            }
        };
        Conn { stream, pending: Vec::with_capacity(64 * 1024), host: addr.to_string() }
    }

    fn request_head(&self, method: &str, target: &str, extra: &[(&str, &str)]) -> String {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head
    }

    fn send_head(&mut self, method: &str, target: &str, extra: &[(&str, &str)]) -> io::Result<()> {
        let head = self.request_head(method, target, extra);
        self.stream.write_all(head.as_bytes())?;
        self.stream.flush()
    }

    /// Reads more bytes into `pending`; an error at EOF.
    fn fill_pending(&mut self) -> io::Result<()> {
        let len = self.pending.len();
        self.pending.resize(len + 16 * 1024, 0);
        let n = self.stream.read(&mut self.pending[len..]);
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.pending.truncate(len);
                return Err(e);
            }
        };
        self.pending.truncate(len + n);
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        Ok(())
    }

    /// Reads a response head (skipping 1xx). The body stays unread.
    fn read_head(&mut self) -> io::Result<Head> {
        loop {
            let mut scanned = 0;
            let end = loop {
                if let Some(i) = self.pending[scanned..].windows(4).position(|w| w == b"\r\n\r\n") {
                    break scanned + i;
                }
                scanned = self.pending.len().saturating_sub(3);
                if self.pending.len() > 64 * 1024 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
                }
                self.fill_pending()?;
            };
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            parsed.parse(&self.pending[..end + 4]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let status = parsed.code.unwrap_or(0);
            let headers = parsed
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            self.pending.drain(..end + 4);
            if !(100..200).contains(&status) {
                return Ok(Head { status, headers });
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

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.pending[..i]).into_owned();
                self.pending.drain(..i + 2);
                return Ok(line);
            }
            self.fill_pending()?;
        }
    }

    fn read_exact_pending(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.pending.len() < n {
            self.fill_pending()?;
        }
        Ok(self.pending.drain(..n).collect())
    }

    /// The body of a response with head `head` (small bodies: lists, manifests, errors).
    fn read_small_body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if head.is_chunked() {
            let mut body = Vec::new();
            loop {
                let line = self.read_line()?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}: {e}")))?;
                if size == 0 {
                    while !self.read_line()?.is_empty() {}
                    return Ok(body);
                }
                body.extend(self.read_exact_pending(size)?);
                self.read_exact_pending(2)?;
            }
        }
        let len = head.content_length().unwrap_or(0) as usize;
        assert!(len <= 16 * MIB, "unexpectedly large response body ({len} bytes)");
        self.read_exact_pending(len)
    }

    /// A whole response to a request that is not HEAD.
    fn read_response(&mut self) -> io::Result<Response> {
        let head = self.read_head()?;
        let body = self.read_small_body(&head)?;
        Ok(Response { head, body })
    }

    /// One request with a small body, and its whole response.
    fn call(&mut self, method: &str, target: &str, extra: &[(&str, &str)], body: &[u8]) -> Response {
        let len = body.len().to_string();
        let mut headers = extra.to_vec();
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            headers.push(("Content-Length", &len));
        }
        let mut bytes = self.request_head(method, target, &headers).into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).and_then(|()| self.stream.flush()).unwrap();
        if method == "HEAD" {
            let head = self.read_head().unwrap();
            return Response { head, body: Vec::new() };
        }
        self.read_response().unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    /// After a failed upload write: the server may have answered early (an error), show that.
    fn explain_write_error(&mut self, what: &str, error: io::Error) -> ! {
        match self.read_response() {
            Ok(r) => panic!(
                "{what}: sending failed ({error}); the server answered {} {:?}: {}",
                r.head.status,
                r.head.headers,
                String::from_utf8_lossy(&r.body)
            ),
            Err(e) => panic!("{what}: sending failed ({error}), and no response could be read ({e})"),
        }
    }
}

/// The path and query of an upload `Location` (distribution answers with an absolute URL).
fn location_path(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string()),
        None => location.to_string(),
    }
}

fn with_query(location: &str, query: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{query}")
}

// ---------------------------------------------------------------------------
// Transfers
// ---------------------------------------------------------------------------

/// A timed 1 GiB push of blob `variant` (its digest given): `push_monolithic` or `push_chunked`.
type Push = fn(&Target, u64, &str, &mut [u8]) -> Duration;

/// A monolithic upload as the spec has it (distribution 2.8 ignores a body on the `POST`):
/// `POST` (start), then one `PUT ?digest=` carrying big blob `variant` with `Content-Length`;
/// the time from the first request byte to the `201`.
fn push_monolithic(target: &Target, variant: u64, digest: &str, buf: &mut [u8]) -> Duration {
    let what = "monolithic PUT";
    let mut conn = Conn::connect(target);
    let len = BLOB_LEN.to_string();
    let headers = [("Content-Type", "application/octet-stream"), ("Content-Length", len.as_str())];
    let start = Instant::now();
    let started = conn.call("POST", &format!("/v2/{REPO}/blobs/uploads/"), &[], b"").expect(202, "POST upload");
    let location = location_path(started.header("Location").unwrap_or_else(|| panic!("{what}: no Location")));
    let sent = (|| {
        conn.send_head("PUT", &with_query(&location, &format!("digest={digest}")), &headers)?;
        for index in 0..BLOB_BLOCKS {
            fill_block(buf, variant, index);
            conn.stream.write_all(buf)?;
        }
        conn.stream.flush()
    })();
    if let Err(e) = sent {
        conn.explain_write_error(what, e);
    }
    let response = conn.read_response().unwrap_or_else(|e| panic!("{what}: reading the response: {e}"));
    let took = start.elapsed();
    let response = response.expect(201, what);
    assert_eq!(response.header("Docker-Content-Digest"), Some(digest), "{what}: Docker-Content-Digest");
    took
}

/// The pushes again with both servers' storage on tmpfs (/dev/shm), where fsync costs
/// nothing: what each server's own push path can take in, without the disk. On a real disk the
/// pushes follow the disk, whose speed on this VM changes from minute to minute.
fn push_to_memory(variants: &mut Variants, variant: &mut u64, samples: &mut Samples, buf: &mut [u8]) {
    let scratch = tempfile::Builder::new().prefix("glci-bench-").tempdir_in("/dev/shm").unwrap();
    let (glci, _) = start_glci(&scratch.path().join("glci"), &GLCI_PLAIN, common::TEST_CONFIG);
    let (dist, _) = Distribution::start(&scratch.path().join("distribution"));
    let targets = [Target::plain(&glci.addr), Target::plain(&dist.addr)];
    for round in 0..ROUNDS {
        for (push, key) in [(push_monolithic as Push, "push_monolithic_mem"), (push_chunked, "push_chunked_mem")] {
            *variant += 1;
            let digest = variants.digest(*variant);
            for server in order(round) {
                let took = push(&targets[server], *variant, &digest, buf);
                samples.add(key, server, mbps(BLOB_LEN, took));
                delete_blob(&targets[server], REPO, &digest);
            }
        }
    }
    glci.stop();
}

/// `POST` (start), `PATCH` with `Content-Range` per 16 MiB, `PUT ?digest=` without a body.
fn push_chunked(target: &Target, variant: u64, digest: &str, buf: &mut [u8]) -> Duration {
    let what = "chunked PATCH upload";
    let mut conn = Conn::connect(target);
    let chunk_len = (CHUNK_BLOCKS * MIB) as u64;
    let start = Instant::now();
    let started = conn.call("POST", &format!("/v2/{REPO}/blobs/uploads/"), &[], b"").expect(202, "POST upload");
    let mut location = location_path(started.header("Location").unwrap_or_else(|| panic!("{what}: no Location")));
    for chunk in 0..BLOB_BLOCKS / CHUNK_BLOCKS {
        let first = chunk as u64 * chunk_len;
        let range = format!("{first}-{}", first + chunk_len - 1);
        let len = chunk_len.to_string();
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", len.as_str()),
            ("Content-Range", range.as_str()),
        ];
        let sent = (|| {
            conn.send_head("PATCH", &location, &headers)?;
            for index in chunk * CHUNK_BLOCKS..(chunk + 1) * CHUNK_BLOCKS {
                fill_block(buf, variant, index);
                conn.stream.write_all(buf)?;
            }
            conn.stream.flush()
        })();
        if let Err(e) = sent {
            conn.explain_write_error(what, e);
        }
        let patched = conn.read_response().unwrap().expect(202, "PATCH");
        let want = format!("0-{}", first + chunk_len - 1);
        assert_eq!(patched.header("Range"), Some(want.as_str()), "{what}: Range after PATCH {chunk}");
        if let Some(next) = patched.header("Location") {
            location = location_path(next);
        }
    }
    let done = conn.call("PUT", &with_query(&location, &format!("digest={digest}")), &[], b"");
    let took = start.elapsed();
    let done = done.expect(201, "PUT ?digest=");
    assert_eq!(done.header("Docker-Content-Digest"), Some(digest), "{what}: Docker-Content-Digest");
    took
}

fn delete_blob(target: &Target, repo: &str, digest: &str) {
    let response = Conn::connect(target).call("DELETE", &format!("/v2/{repo}/blobs/{digest}"), &[], b"");
    assert!(response.head.status == 202, "DELETE blob: {}", response.head.status);
}

/// `GET /v2/<repo>/blobs/<digest>` of a big blob, read into `buf` (reused); with `hasher`,
/// hashed too. The time from the first request byte to the last body byte.
fn pull(target: &Target, repo: &str, digest: &str, buf: &mut [u8], hasher: Option<&mut Sha256>) -> Duration {
    let mut conn = Conn::connect(target);
    let start = Instant::now();
    conn.send_head("GET", &format!("/v2/{repo}/blobs/{digest}"), &[]).unwrap();
    let head = conn.read_head().unwrap();
    if head.status != 200 {
        let body = conn.read_small_body(&head).unwrap_or_default();
        panic!("GET blob: status {} {:?} {}", head.status, head.headers, String::from_utf8_lossy(&body));
    }
    assert_eq!(head.content_length(), Some(BLOB_LEN), "GET blob: Content-Length");
    match hasher {
        Some(h) => conn.read_body(BLOB_LEN, buf, |piece| h.update(piece)).unwrap(),
        None => conn.read_body(BLOB_LEN, buf, |_| {}).unwrap(),
    }
    start.elapsed()
}

/// Runs `work` on this thread; returns its result and how busy the thread was meanwhile, in
/// percent of one core (CPU time of this thread over wall time). Near 100 means the client,
/// not the server, sets the pace.
fn client_busy(work: impl FnOnce() -> Duration) -> (Duration, f64) {
    let before = thread_cpu();
    let took = work();
    (took, 100.0 * (thread_cpu() - before).as_secs_f64() / took.as_secs_f64())
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a struct owned by this frame.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let time = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// `streams` pulls of the whole blob at once; the wall time of all of them.
fn pull_parallel(target: &Target, digest: &str, streams: usize) -> Duration {
    let barrier = Barrier::new(streams + 1);
    std::thread::scope(|s| {
        for _ in 0..streams {
            s.spawn(|| {
                let mut buf = vec![0u8; MIB];
                barrier.wait();
                pull(target, REPO, digest, &mut buf, None);
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every stream before it returns.
        start
    })
    .elapsed()
}

/// Pulls once more, hashing, and checks the digest (untimed).
fn verify_pull(target: &Target, repo: &str, digest: &str) {
    let mut buf = vec![0u8; MIB];
    let mut hasher = Sha256::new();
    pull(target, repo, digest, &mut buf, Some(&mut hasher));
    assert_eq!(format!("sha256:{}", hex(&hasher.finalize())), digest, "the pulled blob does not hash to its digest");
}

// ---------------------------------------------------------------------------
// Small images and the request-rate runs
// ---------------------------------------------------------------------------

/// A monolithic push (`POST`, `PUT ?digest=` with the body) of a small blob.
fn push_small(conn: &mut Conn, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let started = conn.call("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"").expect(202, "POST upload");
    let location = location_path(started.header("Location").unwrap());
    let target = with_query(&location, &format!("digest={digest}"));
    conn.call("PUT", &target, &[("Content-Type", "application/octet-stream")], bytes).expect(201, "small blob push");
    digest
}

/// A config and a 4 KiB layer in `repo`, and a manifest tagged with each of `tags`.
/// Returns the layer digest.
fn push_image(target: &Target, repo: &str, seed: u64, tags: &[String]) -> String {
    let mut conn = Conn::connect(target);
    let config =
        format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":{seed}}}"#);
    let mut layer = vec![0u8; 4096];
    fill(&mut layer, seed);
    let config_digest = push_small(&mut conn, repo, config.as_bytes());
    let layer_digest = push_small(&mut conn, repo, &layer);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    for tag in tags {
        conn.call(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", OCI_MANIFEST)],
            manifest.as_bytes(),
        )
        .expect(201, "manifest PUT");
    }
    layer_digest
}

/// Request rate and latency of one request repeated on `LOAD_CONNS` keep-alive connections.
#[derive(Clone, Copy)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn load(target: &Target, method: &str, path: &str, extra: &[(&str, &str)], time: Duration) -> Load {
    let barrier = Barrier::new(LOAD_CONNS + 1);
    let mut latencies: Vec<u32> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..LOAD_CONNS)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut conn = Conn::connect(target);
                    let request = conn.request_head(method, path, extra).into_bytes();
                    let mut took = Vec::with_capacity(1 << 16);
                    barrier.wait();
                    let deadline = Instant::now() + time;
                    loop {
                        let start = Instant::now();
                        if start >= deadline {
                            break;
                        }
                        conn.stream.write_all(&request).unwrap();
                        let head = conn.read_head().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                        if method != "HEAD" {
                            conn.read_small_body(&head).unwrap();
                        }
                        assert_eq!(head.status, 200, "{method} {path}");
                        took.push(start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                    took
                })
            })
            .collect();
        barrier.wait();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    latencies.sort_unstable();
    let at = |q: f64| f64::from(latencies[((latencies.len() - 1) as f64 * q) as usize]) / 1e3;
    Load { rps: latencies.len() as f64 / time.as_secs_f64(), p50_ms: at(0.5), p99_ms: at(0.99) }
}

// ---------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------

const GLCI: usize = 0;
const DIST: usize = 1;

/// Debian's `docker-registry serve` with a config written here (its default config turns on
/// htpasswd: shared/notes/dind-offline.md), on port 0. At log level error it does not say
/// which port it got, so that comes from its listening socket in /proc.
struct Distribution {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Distribution {
    /// Starts it on storage `dir/data` and returns it once `/v2/` answers, with the time that took.
    /// With `GLCI_BENCH_VERSUS=/path/to/glci`, that binary stands in for distribution (an A/B
    /// run of two glci builds: the second column is then the other build).
    fn start(dir: &Path) -> (Distribution, Duration) {
        if let Ok(bin) = std::env::var("GLCI_BENCH_VERSUS") {
            return Self::start_glci_build(Path::new(&bin), dir);
        }
        common::need("docker-registry");
        fs::create_dir_all(dir).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\n\
             http:\n  addr: 127.0.0.1:0\n  secret: glci-bench\n",
            dir.join("data").display()
        );
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = dir.join("registry.log");
        let start = Instant::now();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(dir.join("registry.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start docker-registry: {e}"));
        let mut registry = Distribution { child, addr: String::new(), log };
        loop {
            if start.elapsed() > START_TIMEOUT {
                panic!("docker-registry did not answer /v2/ within {START_TIMEOUT:?}");
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", fs::read_to_string(dir.join("registry.err")).unwrap());
            }
            if let Some(port) = listening_port(registry.child.id()) {
                registry.addr = format!("127.0.0.1:{port}");
                if v2_answers(&registry.addr) {
                    return (registry, start.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn start_glci_build(bin: &Path, dir: &Path) -> (Distribution, Duration) {
        use std::io::BufRead;
        let home = dir.join("home");
        fs::create_dir_all(&home).unwrap();
        fs::write(home.join("config.toml"), common::TEST_CONFIG).unwrap();
        let log = dir.join("glci.err");
        let start = Instant::now();
        let mut child = Command::new(bin)
            .env("GLCI_HOME", &home)
            .args(["serve", "--listen", "127.0.0.1:0", "--storage"])
            .arg(dir.join("data"))
            .args(GLCI_PLAIN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut lines = io::BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().to_string();
                    }
                }
                _ => panic!("{} exited before `listening on`", bin.display()),
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        assert!(v2_answers(&addr), "/v2/ of {} did not answer 200", bin.display());
        (Distribution { child, addr, log }, start.elapsed())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- docker-registry log {} ---", self.log.display());
        }
    }
}

/// The port of the (first) listening TCP socket process `pid` holds.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    for table in ["tcp", "tcp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next()?;
                return u16::from_str_radix(port, 16).ok();
            }
        }
    }
    None
}

/// Whether `GET /v2/` answers 200 (false while the socket refuses).
fn v2_answers(addr: &str) -> bool {
    let Ok(sock) = TcpStream::connect(addr) else { return false };
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut conn = Conn { stream: Stream::Plain(sock), pending: Vec::new(), host: addr.to_string() };
    conn.call("GET", "/v2/", &[], b"").head.status == 200
}

const GLCI_PLAIN: [&str; 3] = ["--no-auth", "--no-tls", "--quiet"];

/// `glci serve` on `storage`, returned once `/v2/` answers, with the time that took.
fn start_glci(storage: &Path, args: &[&str], config: &str) -> (ServeProcess, Duration) {
    let start = Instant::now();
    let server = ServeProcess::start_with_config(storage, args, config);
    assert!(v2_answers(&server.addr), "glci /v2/ did not answer 200");
    let took = start.elapsed();
    (server, took)
}

/// `VmHWM` (peak resident set) of `pid` in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line["VmHWM:".len()..].trim().trim_end_matches("kB").trim().parse::<f64>().unwrap() / 1024.0
}

/// Resets `VmHWM` to the current RSS (`echo 5 > /proc/PID/clear_refs`).
fn reset_peak_rss(pid: u32) {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap_or_else(|e| panic!("reset VmHWM of {pid}: {e}"));
}

// ---------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------

/// Samples per figure and server.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, [Vec<f64>; 2]>);

impl Samples {
    fn add(&mut self, key: &'static str, server: usize, value: f64) {
        self.0.entry(key).or_default()[server].push(value);
    }

    /// The median (`max` for peaks) of figure `key` on `server`.
    fn value(&self, key: &str, server: usize) -> Option<f64> {
        let mut v = self.0.get(key)?[server].clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        if key.starts_with("peak_") {
            return v.last().copied();
        }
        let mid = v.len() / 2;
        Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
    }
}

/// The table: key, label, unit, whether higher is better.
const ROWS: [(&str, &str, &str, bool); 20] = [
    ("push_monolithic", "blob push, 1 GiB monolithic PUT", "MB/s", true),
    ("push_chunked", "blob push, 1 GiB as 64 × 16 MiB PATCH", "MB/s", true),
    ("push_monolithic_mem", "the same, storage on tmpfs: monolithic", "MB/s", true),
    ("push_chunked_mem", "the same, storage on tmpfs: 16 MiB PATCHes", "MB/s", true),
    ("pull_1", "blob pull, 1 GiB, one stream", "MB/s", true),
    ("pull_4", "blob pull, 1 GiB × 4 streams at once", "MB/s", true),
    ("manifest_get_rps", "manifest GET, 32 conns", "req/s", true),
    ("manifest_get_p99", "manifest GET p99, 32 conns", "ms", false),
    ("blob_head_rps", "blob HEAD, 32 conns", "req/s", true),
    ("blob_head_p99", "blob HEAD p99, 32 conns", "ms", false),
    ("tags_list_rps", "tags list (100 tags), 32 conns", "req/s", true),
    ("catalog_rps", "catalog (21 repos), 32 conns", "req/s", true),
    ("peak_rss_push", "peak RSS during 1 GiB pushes", "MiB", false),
    ("startup", "start-up until /v2/ answers", "ms", false),
    ("https_push", "HTTPS blob push, 1 GiB monolithic", "MB/s", true),
    ("https_pull", "HTTPS blob pull, 1 GiB", "MB/s", true),
    ("pt_blob_cold", "pull-through 1 GiB blob, cold", "MB/s", true),
    ("pt_blob_warm", "pull-through 1 GiB blob, warm", "MB/s", true),
    ("pt_manifest_cold", "pull-through manifest GET, cold", "ms", false),
    ("pt_manifest_warm", "pull-through manifest GET, warm", "ms", false),
];

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "—".to_string(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// Writes `BLOB_LEN` bytes to a new file in `dir` and fsyncs it (`dd bs=1M count=1024
/// conv=fsync`), returning MB/s. The file is removed again.
fn disk_fsync_mbps(dir: &Path, buf: &mut [u8]) -> f64 {
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
    mbps(BLOB_LEN, elapsed)
}

/// A `BLOB_LEN` file in `dir` for the bare server (left in the page cache, like glci's blob).
fn write_probe_blob(dir: &Path, buf: &mut [u8]) -> PathBuf {
    let path = dir.join("loopback-probe");
    let mut file = File::create(&path).unwrap();
    for index in 0..BLOB_BLOCKS {
        fill_block(buf, 0x100b, index);
        file.write_all(buf).unwrap();
    }
    path
}

/// The loopback ceiling of a one-stream pull: a server that answers any request with the
/// whole of `path` by sendfile(2), as glci sends a blob, and does nothing else. What the
/// client reads from it is the most any server can give this client on this machine.
/// Returns its address; the thread lives as long as the bench.
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
    conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())?;
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

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find(|l| l.starts_with("model name"))?.split_once(':').map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default()
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

/// Whether phase `name` runs: all of them, unless `GLCI_BENCH_ONLY` lists some (comma-separated:
/// startup, push, push-tmpfs, pull, rates, https, pull-through) to profile one part; pull needs push,
/// pull-through needs push, rates needs nothing.
fn phase(name: &str) -> bool {
    match std::env::var("GLCI_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|p| p.trim() == name),
        _ => true,
    }
}

/// Server order in round `round`: alternating, so neither always goes first.
fn order(round: usize) -> [usize; 2] {
    if round % 2 == 0 {
        [GLCI, DIST]
    } else {
        [DIST, GLCI]
    }
}

// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn compare_with_distribution() {
    let bench_start = Instant::now();
    let load_before = load_average();
    fs::create_dir_all(scratch_root()).unwrap();
    let scratch = tempfile::Builder::new().prefix("glci-bench-").tempdir_in(scratch_root()).unwrap();
    let dir = scratch.path();
    assert_real_disk(dir);
    let mut buf = vec![0u8; MIB];
    let mut samples = Samples::default();
    let step = |what: &str| println!("[{:6.1} s] {what}", bench_start.elapsed().as_secs_f64());

    println!("\n== glci vs distribution 2.8: same client, same machine, alternating (MB/s = 10^6 B/s) ==");
    if let Ok(bin) = std::env::var("GLCI_BENCH_VERSUS") {
        println!("A/B run: the distribution column is {bin}");
    }
    println!("scratch: {} | load average before: {load_before}", dir.display());

    let t = Instant::now();
    let mut variants = Variants::new();
    samples.add("client_sha256", GLCI, mbps(BLOB_LEN, t.elapsed()));
    samples.add("disk_fsync", GLCI, disk_fsync_mbps(dir, &mut buf));

    step("start-up");
    for round in 0..if phase("startup") { ROUNDS } else { 0 } {
        for server in order(round) {
            let storage = dir.join(format!("startup-{server}-{round}"));
            let took = if server == GLCI {
                start_glci(&storage, &GLCI_PLAIN, common::TEST_CONFIG).1
            } else {
                Distribution::start(&storage).1
            };
            samples.add("startup", server, ms(took));
            fs::remove_dir_all(&storage).unwrap();
        }
    }

    let (glci, _) = start_glci(&dir.join("glci"), &GLCI_PLAIN, common::TEST_CONFIG);
    let (dist, _) = Distribution::start(&dir.join("distribution"));
    let targets = [Target::plain(&glci.addr), Target::plain(&dist.addr)];
    let pids = [glci.pid(), dist.pid()];

    step("pushes");
    let mut variant = 0u64;
    let mut kept = String::new();
    let pushes = phase("push") || phase("pull") || phase("pull-through");
    for round in 0..if pushes { ROUNDS } else { 0 } {
        for (push, key) in [(push_monolithic as Push, "push_monolithic"), (push_chunked, "push_chunked")] {
            variant += 1;
            let digest = variants.digest(variant);
            for server in order(round) {
                reset_peak_rss(pids[server]);
                let took = push(&targets[server], variant, &digest, &mut buf);
                samples.add(key, server, mbps(BLOB_LEN, took));
                samples.add("peak_rss_push", server, peak_rss_mib(pids[server]));
            }
            // The last monolithic blob stays for the pulls; the others go (disk space).
            if key == "push_monolithic" && round + 1 == ROUNDS {
                kept = digest;
            } else {
                for target in &targets {
                    delete_blob(target, REPO, &digest);
                }
            }
        }
    }

    step("pushes, storage on tmpfs");
    if phase("push-tmpfs") {
        push_to_memory(&mut variants, &mut variant, &mut samples, &mut buf);
    }

    step("pulls");
    let pulls = if phase("pull") { ROUNDS } else { 0 };
    if pulls > 0 {
        for target in &targets {
            verify_pull(target, REPO, &kept);
        }
    }
    let bare = (pulls > 0).then(|| Target::plain(&bare_sendfile_server(write_probe_blob(dir, &mut buf))));
    for round in 0..pulls {
        for server in order(round) {
            let (took, busy) = client_busy(|| pull(&targets[server], REPO, &kept, &mut buf, None));
            samples.add("pull_1", server, mbps(BLOB_LEN, took));
            samples.add("pull_1_client_busy", server, busy);
        }
        if let Some(bare) = &bare {
            samples.add("pull_1_bare", GLCI, mbps(BLOB_LEN, pull(bare, REPO, &kept, &mut buf, None)));
        }
        for server in order(round) {
            let took = pull_parallel(&targets[server], &kept, PULL_STREAMS);
            samples.add("pull_4", server, mbps(BLOB_LEN * PULL_STREAMS as u64, took));
        }
    }

    step("request rates");
    let tags: Vec<String> = (0..TAGS).map(|i| format!("t{i:03}")).collect();
    let mut layers = [String::new(), String::new()];
    for (server, target) in targets.iter().enumerate() {
        layers[server] = push_image(target, REPO, 1, &tags);
        for r in 0..REPOS {
            push_image(target, &format!("{REPO}-r{r:02}"), 2 + r as u64, &["latest".to_string()]);
        }
    }
    assert_eq!(layers[GLCI], layers[DIST]);
    let manifest_path = format!("/v2/{REPO}/manifests/t000");
    let head_path = format!("/v2/{REPO}/blobs/{}", layers[GLCI]);
    let tags_path = format!("/v2/{REPO}/tags/list");
    let accept = [("Accept", OCI_MANIFEST)];
    for round in 0..if phase("rates") { ROUNDS } else { 0 } {
        for server in order(round) {
            let l = load(&targets[server], "GET", &manifest_path, &accept, LOAD_TIME);
            samples.add("manifest_get_rps", server, l.rps);
            samples.add("manifest_get_p99", server, l.p99_ms);
            samples.add("manifest_get_p50", server, l.p50_ms);
        }
        for server in order(round) {
            let l = load(&targets[server], "HEAD", &head_path, &[], LOAD_TIME);
            samples.add("blob_head_rps", server, l.rps);
            samples.add("blob_head_p99", server, l.p99_ms);
            samples.add("blob_head_p50", server, l.p50_ms);
        }
        for server in order(round) {
            let l = load(&targets[server], "GET", &tags_path, &[], LIST_TIME);
            samples.add("tags_list_rps", server, l.rps);
            samples.add("tags_list_p99", server, l.p99_ms);
        }
        for server in order(round) {
            let l = load(&targets[server], "GET", "/v2/_catalog", &[], LIST_TIME);
            samples.add("catalog_rps", server, l.rps);
            samples.add("catalog_p99", server, l.p99_ms);
        }
    }
    let tags_body = Conn::connect(&targets[GLCI]).call("GET", &tags_path, &[], b"").expect(200, "tags list").body;
    let listed: Value = serde_json::from_slice(&tags_body).unwrap();
    assert_eq!(listed["tags"].as_array().map(Vec::len), Some(TAGS), "glci tags list");
    glci.stop();

    step("glci over HTTPS");
    if phase("https") {
        let (tls_glci, _) = start_glci(&dir.join("glci-tls"), &["--no-auth", "--quiet"], common::TEST_CONFIG);
        let target =
            Target { addr: tls_glci.addr.clone(), tls: Some(trusting(&tls_glci.home().join("registry-ca/ca.crt"))) };
        for _ in 0..GLCI_ROUNDS {
            variant += 1;
            let digest = variants.digest(variant);
            samples.add("https_push", GLCI, mbps(BLOB_LEN, push_monolithic(&target, variant, &digest, &mut buf)));
            let (took, busy) = client_busy(|| pull(&target, REPO, &digest, &mut buf, None));
            samples.add("https_pull", GLCI, mbps(BLOB_LEN, took));
            samples.add("https_pull_client_busy", GLCI, busy);
            delete_blob(&target, REPO, &digest);
        }
        tls_glci.stop();
    }

    step("glci pull-through from distribution");
    let config = format!(
        "[registry]\nupstreams = [{UPSTREAM_HOST:?}]\n[registry.upstream_urls]\n{UPSTREAM_HOST:?} = \"http://{}\"\n",
        dist.addr
    );
    for round in 0..if phase("pull-through") { GLCI_ROUNDS } else { 0 } {
        let storage = dir.join(format!("cache-{round}"));
        let (cache, _) = start_glci(&storage, &GLCI_PLAIN, &config);
        let target = Target::plain(&cache.addr);
        samples.add("pt_blob_cold", GLCI, mbps(BLOB_LEN, pull(&target, REPO, &kept, &mut buf, None)));
        samples.add("pt_blob_warm", GLCI, mbps(BLOB_LEN, pull(&target, REPO, &kept, &mut buf, None)));
        if round == 0 {
            verify_pull(&target, REPO, &kept);
        }
        let mut conn = Conn::connect(&target);
        let t = Instant::now();
        conn.call("GET", &manifest_path, &accept, b"").expect(200, "pull-through manifest, cold");
        samples.add("pt_manifest_cold", GLCI, ms(t.elapsed()));
        for _ in 0..20 {
            let t = Instant::now();
            conn.call("GET", &manifest_path, &accept, b"").expect(200, "pull-through manifest, warm");
            samples.add("pt_manifest_warm", GLCI, ms(t.elapsed()));
        }
        drop(conn);
        cache.stop();
        fs::remove_dir_all(&storage).unwrap();
    }
    drop(dist);
    let load_after = load_average();
    drop(scratch);

    // The table.
    println!("\n{:<44} {:>10} {:>13} {:>8}", "figure (median)", "glci", "distribution", "ratio");
    let mut figures = serde_json::Map::new();
    for (key, label, unit, higher_better) in ROWS {
        let (g, d) = (samples.value(key, GLCI), samples.value(key, DIST));
        let ratio = g.zip(d).map(|(g, d)| g / d);
        let unit_label = format!("{label} ({unit})");
        let ratio_text = ratio.map_or(String::new(), |r| format!("{r:.2}{}", if higher_better { "" } else { " ↓" }));
        println!("{unit_label:<44} {:>10} {:>13} {:>8}", fmt_value(g), fmt_value(d), ratio_text);
        let all = samples.0.get(key).cloned().unwrap_or_default();
        figures.insert(
            key.to_string(),
            json!({"label": label, "unit": unit, "higher_is_better": higher_better,
                   "glci": g, "distribution": d, "ratio_glci_over_distribution": ratio,
                   "samples": {"glci": all[GLCI], "distribution": all[DIST]}}),
        );
    }
    for key in ["manifest_get_p50", "blob_head_p50", "tags_list_p99", "catalog_p99"] {
        let all = samples.0.get(key).cloned().unwrap_or_default();
        figures.insert(
            key.to_string(),
            json!({"unit": "ms", "glci": samples.value(key, GLCI), "distribution": samples.value(key, DIST),
                   "samples": {"glci": all[GLCI], "distribution": all[DIST]}}),
        );
    }
    println!("ratio = glci / distribution; ↓ = lower is better. Medians of {ROUNDS} alternating rounds ({GLCI_ROUNDS} for glci-only rows).");
    println!(
        "disk: 1 GiB write + fsync {} MB/s | client blob generate + sha256 {} MB/s (one core)",
        fmt_value(samples.value("disk_fsync", GLCI)),
        fmt_value(samples.value("client_sha256", GLCI))
    );
    println!(
        "loopback ceiling: the same one-stream pull from a bare sendfile(2) loop {} MB/s",
        fmt_value(samples.value("pull_1_bare", GLCI))
    );
    println!(
        "client thread busy during a one-stream pull from glci (% of one core): plain {}, HTTPS {}",
        fmt_value(samples.value("pull_1_client_busy", GLCI)),
        fmt_value(samples.value("https_pull_client_busy", GLCI))
    );
    println!(
        "machine: {} × {} | load average: {load_before} before, {load_after} after | {:.1} s in all",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model(),
        bench_start.elapsed().as_secs_f64()
    );

    let unix_time = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let out = json!({
        "bench": "compare_with_distribution",
        "unix_time": unix_time,
        "git_revision": git_revision(),
        "blob_bytes": BLOB_LEN,
        "rounds": ROUNDS,
        "glci_rounds": GLCI_ROUNDS,
        "load_connections": LOAD_CONNS,
        "load_seconds": LOAD_TIME.as_secs_f64(),
        "list_seconds": LIST_TIME.as_secs_f64(),
        "units": {"rates": "MB/s (1e6 bytes/s)", "rss": "MiB", "latency": "ms"},
        "figures": figures,
        "disk_fsync_mbps": samples.value("disk_fsync", GLCI),
        "client_sha256_mbps": samples.value("client_sha256", GLCI),
        "loopback_sendfile_mbps": samples.value("pull_1_bare", GLCI),
        "client_busy_percent": {"pull_1": samples.value("pull_1_client_busy", GLCI),
                                "https_pull": samples.value("https_pull_client_busy", GLCI)},
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu_model": cpu_model()},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "seconds": bench_start.elapsed().as_secs_f64(),
    });
    let out_dir = scratch_root().parent().unwrap().join("bench");
    fs::create_dir_all(&out_dir).unwrap();
    let complete = ["startup", "push", "push-tmpfs", "pull", "rates", "https", "pull-through"].iter().all(|p| phase(p));
    let path = out_dir.join(if complete { "compare.json" } else { "compare-partial.json" });
    fs::write(&path, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
    println!("figures written to {}", path.display());
}
