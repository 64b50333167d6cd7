//! The pull-through cache end to end (issue 4, DESIGN §7), against real upstreams that the tests
//! start on 127.0.0.1: Debian's `docker-registry` (distribution 2.8), anonymous and behind
//! htpasswd; a second `glci serve` with auth as a Bearer upstream (service `glci`, not its host);
//! and small fake registries on std `TcpListener`s that lie, fail, hang, rate-limit and redirect.
//! Upstream names stay real (`registry-1.docker.io`, `registry.gitlab.com`) and are mapped to
//! the local endpoints with `[registry.upstream_urls]`; nothing here talks to any other host.
//!
//! Where a test counts upstream requests or times a transfer, a `Relay` (a recording, optionally
//! throttled TCP proxy written here) sits between the cache and the upstream: it records each
//! request head before forwarding it, so counts do not race the upstream's own access log.
//!
//! The wire tests that do not need docker run twice (`on_both_backends!`): as `dir::NAME` on a
//! storage directory and as `s3::NAME` on a prefix of a real SeaweedFS bucket (issue 20); what
//! they check in the store they read through `Cache`, from the directory or the bucket.
//!
//! Every HTTP request has a client-side timeout (`CLIENT_TIMEOUT`), and docker/skopeo run under
//! `timeout(1)`, so a hung cache fails a test instead of hanging it.
//!
//! Needs docker-registry, skopeo, busybox-static and a running Docker daemon (`make test`).
#![allow(clippy::unwrap_used)]
// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::http::{basic, Response};
use common::{
    build_busybox_rootfs, build_oci_layout, glci, layout_blob, layout_blob_digests, layout_closure, need,
    need_docker_daemon, pattern, pattern_digest, pushed_digest, run, run_stdout, sha256_digest, temp_dir, unique_name,
    DigestWriter, DockerImages, Pattern, ServeProcess,
};
use serde_json::{json, Value};
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
/// Every request a test sends gives up after this long (the cache's own upstream timeout is
/// 30 s, so a hanging upstream must be answered well within it).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// docker and skopeo commands are killed after this long.
const TOOL_TIMEOUT: &str = "180";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const HUB: &str = "registry-1.docker.io";
const GITLAB: &str = "registry.gitlab.com";

// ---------------------------------------------------------------------------------------------
// HTTP client (ureq, with timeouts; statuses are data, not errors), into `common::http::Response`s

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).timeout(CLIENT_TIMEOUT).redirects(0).build()
}

/// One request; `Err` when no complete response arrived (connection error, a body cut short).
fn try_send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Response, String> {
    let mut request = agent().request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(bytes) => request.send_bytes(bytes),
        None => request.call(),
    };
    let response = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut body = Vec::new();
    if let Err(e) = response.into_reader().read_to_end(&mut body) {
        return Err(format!("{method} {url}: {status} but the body broke after {} bytes: {e}", body.len()));
    }
    Ok(Response::new(status, headers, body))
}

fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    try_send(method, url, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

fn get(url: &str) -> Response {
    send("GET", url, &[], None)
}

/// Decodes `%XX` escapes (and `+` as space) of a query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The decoded values of query parameter `key` in a request target.
fn query_values(target: &str, key: &str) -> Vec<String> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Content: deterministic bytes and small OCI images

/// A POST without a body (starts an upload).
fn post_empty(url: &str) -> Response {
    send("POST", url, &[], Some(b""))
}

/// An OCI image manifest with its config and layers.
struct Image {
    blobs: Vec<Vec<u8>>,
    layers: Vec<String>,
    manifest: Vec<u8>,
    digest: String,
}

fn image(seed: &str, layer_sizes: &[usize]) -> Image {
    let layers: Vec<Vec<u8>> =
        layer_sizes.iter().enumerate().map(|(i, &n)| pattern(&format!("{seed} layer {i}"), n)).collect();
    let layer_digests: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "seed": seed } },
        "rootfs": { "type": "layers", "diff_ids": layer_digests },
    }))
    .unwrap();
    let descriptor =
        |media: &str, bytes: &[u8]| json!({"mediaType": media, "digest": sha256_digest(bytes), "size": bytes.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let digest = sha256_digest(&manifest);
    let mut blobs = vec![config];
    blobs.extend(layers);
    Image { blobs, layers: layer_digests, manifest, digest }
}

/// `base` + a `Location` header that may be relative.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_string()
    }
}

/// Pushes a blob (POST, then PUT with the bytes); `auth` is an `Authorization` value.
fn push_blob(base: &str, name: &str, bytes: &[u8], auth: Option<&str>) -> String {
    let digest = sha256_digest(bytes);
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let started = send("POST", &format!("{base}/v2/{name}/blobs/uploads/"), &headers, Some(b""))
        .expect_for(202, &format!("start an upload to {base}/{name}"));
    let location = absolute(base, started.header("Location").unwrap());
    let separator = if location.contains('?') { '&' } else { '?' };
    send("PUT", &format!("{location}{separator}digest={digest}"), &headers, Some(bytes))
        .expect_for(201, &format!("finish the upload of {digest} to {base}/{name}"));
    digest
}

fn push_manifest(base: &str, name: &str, reference: &str, manifest: &[u8], auth: Option<&str>) {
    let mut headers = vec![("Content-Type", OCI_MANIFEST)];
    headers.extend(auth.map(|a| ("Authorization", a)));
    send("PUT", &format!("{base}/v2/{name}/manifests/{reference}"), &headers, Some(manifest))
        .expect_for(201, &format!("push manifest {base}/{name}:{reference}"));
}

fn push_image(base: &str, name: &str, tag: &str, image: &Image, auth: Option<&str>) {
    for blob in &image.blobs {
        push_blob(base, name, blob, auth);
    }
    push_manifest(base, name, tag, &image.manifest, auth);
}

/// Where the cache keeps blob `digest` (DESIGN §4), relative to its storage root or prefix.
fn blob_path(digest: &str, sharded: bool) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    if sharded {
        format!("blobs/sha256/{}/{hex}", &hex[..2])
    } else {
        format!("blobs/sha256/{hex}")
    }
}

/// Where the cache records the origin of manifest `digest` of repository `name`.
fn origin_path(name: &str, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    format!("repositories/{name}/_manifests/origins/sha256/{hex}")
}

// ---------------------------------------------------------------------------------------------
// Lines written by a child process, with a wait for a condition (no sleep-polling)

#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    added: Condvar,
}

impl Lines {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.added.notify_all();
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `done(lines)` holds; false after `limit`.
    fn wait_for(&self, limit: Duration, done: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut lines = self.lines.lock().unwrap();
        while !done(&lines) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = self.added.wait_timeout(lines, deadline - now).unwrap().0;
        }
        true
    }
}

/// Reads `pipe` line by line into `sink` on a thread.
fn drain_lines(pipe: impl Read + Send + 'static, sink: Arc<Lines>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.push(line);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Debian's docker-registry (distribution 2.8)

/// A bcrypt (cost 5) htpasswd entry for `puller` / `HTPASSWD_PASSWORD`, made once with
/// libxcrypt (`crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))`), so the
/// tests need neither apache2-utils' `htpasswd` nor a bcrypt crate.
const HTPASSWD_ENTRY: &str = "puller:$2b$05$DlcZKDc6qRPoviSDdPGeBOmpMslMAh.Z/KUTflV6klkfLkIBMunn.";
const HTPASSWD_USER: &str = "puller";
const HTPASSWD_PASSWORD: &str = "upstream-secret-4";

/// `docker-registry serve` on 127.0.0.1 with its own config: Debian's default config turns on
/// htpasswd auth (shared/notes/dind-offline.md), so each instance gets a file written here,
/// listening on port 0 (it logs the address it got). Its access log (stdout) is kept.
struct Distribution {
    child: Option<Child>,
    addr: String,
    access: Arc<Lines>,
    log: Arc<Lines>,
    _dir: TempDir,
}

impl Distribution {
    fn start(htpasswd: Option<&str>) -> Distribution {
        need("docker-registry");
        let dir = temp_dir();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n  secret: pull-through-tests\n",
            dir.path().join("data").display()
        );
        if let Some(entry) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, format!("{entry}\n")).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: upstream-realm\n    path: {}\n", path.display()));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start docker-registry: {e}"));
        let access = Arc::new(Lines::default());
        let log = Arc::new(Lines::default());
        drain_lines(child.stdout.take().unwrap(), Arc::clone(&access));
        drain_lines(child.stderr.take().unwrap(), Arc::clone(&log));
        let mut registry = Distribution { child: Some(child), addr: String::new(), access, log, _dir: dir };
        let listening = |lines: &[String]| lines.iter().any(|l| l.contains("msg=\"listening on "));
        if !registry.log.wait_for(Duration::from_secs(20), listening) {
            panic!("docker-registry did not say where it listens:\n{}", registry.log.snapshot().join("\n"));
        }
        let line = registry.log.snapshot().into_iter().find(|l| l.contains("msg=\"listening on ")).unwrap();
        let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
        registry.addr = rest[..rest.find('"').unwrap()].to_string();
        assert!(registry.addr.starts_with("127.0.0.1:"), "{line}");
        registry
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the registry and waits for it: the upstream is gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Access-log lines of requests `METHOD PATH` (as `"GET /v2/... HTTP/1.1"`).
    fn access_count(&self, method: &str, path: &str) -> usize {
        let needle = format!("\"{method} {path} HTTP/1.1\"");
        self.access.snapshot().iter().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            let log = self.log.snapshot();
            let tail = &log[log.len().saturating_sub(15)..];
            eprintln!("--- docker-registry on {} (last lines) ---\n{}", self.addr, tail.join("\n"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request heads as seen by the relay and the fakes

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    /// When the head was parsed (before it was forwarded or answered).
    at: Instant,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn content_length(&self) -> u64 {
        self.header("Content-Length").and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

fn parse_head(head: &str) -> Seen {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    Seen { method, target, headers, at: Instant::now() }
}

/// Requests seen so far, shared between a server's threads and the test.
#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<Seen>>>);

impl Record {
    fn push(&self, seen: Seen) {
        self.0.lock().unwrap().push(seen);
    }

    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// Requests with this method and path (query ignored).
    fn matching(&self, method: &str, path: &str) -> Vec<Seen> {
        self.all().into_iter().filter(|s| s.method == method && s.path() == path).collect()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.matching(method, path).len()
    }

    /// Every request, one per line, for failure messages.
    fn dump(&self) -> String {
        self.all().iter().map(|s| format!("{} {}", s.method, s.target)).collect::<Vec<_>>().join("\n")
    }
}

/// Splits a client→server byte stream into request heads (bodies by `Content-Length`).
#[derive(Default)]
struct HeadParser {
    pending: Vec<u8>,
    skip: u64,
}

impl HeadParser {
    fn feed(&mut self, data: &[u8], record: &Record) {
        self.pending.extend_from_slice(data);
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.pending.len() as u64) as usize;
                self.pending.drain(..n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return;
                }
            }
            let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") else { return };
            let seen = parse_head(&String::from_utf8_lossy(&self.pending[..end]));
            self.pending.drain(..end + 4);
            self.skip = seen.content_length();
            record.push(seen);
        }
    }
}

/// Stops a server's accept loop: sets the flag, then connects once to wake `accept`.
struct Stopper {
    stopped: Arc<(Mutex<bool>, Condvar)>,
    addr: String,
}

impl Stopper {
    fn new(addr: &str) -> Stopper {
        Stopper { stopped: Arc::new((Mutex::new(false), Condvar::new())), addr: addr.to_string() }
    }

    fn is_stopped(stopped: &(Mutex<bool>, Condvar)) -> bool {
        *stopped.0.lock().unwrap()
    }

    /// Blocks until the server stops (at most two minutes): a hanging fake's connection.
    fn wait(stopped: &(Mutex<bool>, Condvar)) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut done = stopped.0.lock().unwrap();
        while !*done && Instant::now() < deadline {
            done = stopped.1.wait_timeout(done, deadline - Instant::now()).unwrap().0;
        }
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        *self.stopped.0.lock().unwrap() = true;
        self.stopped.1.notify_all();
        let _ = TcpStream::connect(&self.addr);
    }
}

// ---------------------------------------------------------------------------------------------
// Relay: a recording, optionally throttled TCP proxy in front of an upstream

struct Relay {
    addr: String,
    record: Record,
    /// Bytes forwarded from the upstream to the cache, over all connections.
    down: Arc<AtomicU64>,
    /// When the last of those bytes was forwarded.
    last_down: Arc<Mutex<Option<Instant>>>,
    _stopper: Stopper,
}

impl Relay {
    /// Forwards to `upstream` (`host:port`); upstream→cache at most `rate` bytes/s when given.
    fn start(upstream: &str, rate: Option<u64>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stopper = Stopper::new(&addr);
        let relay = Relay {
            addr,
            record: Record::default(),
            down: Arc::new(AtomicU64::new(0)),
            last_down: Arc::new(Mutex::new(None)),
            _stopper: stopper,
        };
        let (record, down, last_down) = (relay.record.clone(), Arc::clone(&relay.down), Arc::clone(&relay.last_down));
        let stopped = Arc::clone(&relay._stopper.stopped);
        let upstream = upstream.to_string();
        thread::spawn(move || {
            for client in listener.incoming() {
                if Stopper::is_stopped(&stopped) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (upstream, record, down, last_down) =
                    (upstream.clone(), record.clone(), Arc::clone(&down), Arc::clone(&last_down));
                thread::spawn(move || relay_connection(client, &upstream, &record, &down, &last_down, rate));
            }
        });
        relay
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn relay_connection(
    client: TcpStream,
    upstream: &str,
    record: &Record,
    down: &AtomicU64,
    last_down: &Mutex<Option<Instant>>,
    rate: Option<u64>,
) {
    // An upstream that is gone: the client sees its connection closed without an answer.
    let Ok(server) = TcpStream::connect(upstream) else { return };
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else { return };
    let record = record.clone();
    thread::spawn(move || {
        let mut parser = HeadParser::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Recorded before it is forwarded: counts never race the upstream.
            parser.feed(&buf[..n], &record);
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let mut buf = vec![0u8; 64 * 1024];
    // Token bucket without credit for idle time: never faster than `rate`.
    let mut next = Instant::now();
    loop {
        let n = match from_server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to_client.write_all(&buf[..n]).is_err() {
            break;
        }
        down.fetch_add(n as u64, Ordering::SeqCst);
        *last_down.lock().unwrap() = Some(Instant::now());
        if let Some(rate) = rate {
            next = next.max(Instant::now()) + Duration::from_secs_f64(n as f64 / rate as f64);
            let now = Instant::now();
            if next > now {
                thread::sleep(next - now);
            }
        }
    }
    let _ = to_client.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------------
// Fake registries: one request per connection, answered as the test's handler says

enum Action {
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A head announcing `len` bytes, `body` (shorter), then the connection closes.
    Short {
        len: usize,
        body: Vec<u8>,
    },
    /// A head announcing `len` bytes, `body` (shorter), then silence until the fake stops.
    Stall {
        len: usize,
        body: Vec<u8>,
    },
    /// No answer at all until the fake stops.
    Hang,
}

fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Action {
    Action::Reply {
        status,
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body: body.to_vec(),
    }
}

fn error_reply(status: u16, code: &str, message: &str, extra: &[(&str, &str)]) -> Action {
    let body = serde_json::to_vec(&json!({"errors": [{"code": code, "message": message}]})).unwrap();
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    reply(status, &headers, &body)
}

type Handler = dyn Fn(&Seen) -> Action + Send + Sync;

struct Fake {
    addr: String,
    record: Record,
    _stopper: Stopper,
}

impl Fake {
    fn start(handler: impl Fn(&Seen) -> Action + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fake = Fake { addr: addr.clone(), record: Record::default(), _stopper: Stopper::new(&addr) };
        let handler: Arc<Handler> = Arc::new(handler);
        let record = fake.record.clone();
        let stopped = Arc::clone(&fake._stopper.stopped);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if Stopper::is_stopped(&stopped) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (handler, record, stopped) = (Arc::clone(&handler), record.clone(), Arc::clone(&stopped));
                thread::spawn(move || {
                    let _ = fake_connection(stream, &*handler, &record, &stopped);
                });
            }
        });
        fake
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

fn fake_connection(
    stream: TcpStream,
    handler: &Handler,
    record: &Record,
    stopped: &(Mutex<bool>, Condvar),
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(line.trim_end_matches(['\r', '\n']));
        head.push_str("\r\n");
    }
    let seen = parse_head(head.trim_end());
    io::copy(&mut reader.by_ref().take(seen.content_length()), &mut io::sink())?;
    record.push(seen.clone());
    let mut stream = stream;
    let head_of = |status: u16, headers: &[(String, String)], len: usize| {
        let mut text =
            format!("HTTP/1.1 {status} {}\r\nContent-Length: {len}\r\nConnection: close\r\n", reason(status));
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text
    };
    match handler(&seen) {
        Action::Reply { status, headers, body } => {
            stream.write_all(head_of(status, &headers, body.len()).as_bytes())?;
            if seen.method != "HEAD" {
                stream.write_all(&body)?;
            }
        }
        Action::Short { len, body } => {
            stream.write_all(head_of(200, &[], len).as_bytes())?;
            stream.write_all(&body)?;
        }
        Action::Stall { len, body } => {
            stream.write_all(head_of(200, &[], len).as_bytes())?;
            stream.write_all(&body)?;
            stream.flush()?;
            Stopper::wait(stopped);
        }
        Action::Hang => Stopper::wait(stopped),
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The cache under test

/// `[registry] upstreams` listing exactly the mapped names, each mapped to its local endpoint;
/// `registry_extra` goes into `[registry]`, `tail` after the tables (e.g. `[registry.upstream]`).
fn cache_config(upstreams: &[(&str, String)], registry_extra: &str, tail: &str) -> String {
    let names: Vec<String> = upstreams.iter().map(|(n, _)| format!("{n:?}")).collect();
    let mut config =
        format!("[registry]\nupstreams = [{}]\n{registry_extra}\n[registry.upstream_urls]\n", names.join(", "));
    for (name, url) in upstreams {
        config.push_str(&format!("{name:?} = {url:?}\n"));
    }
    config.push_str(tail);
    config
}

fn upstream_credentials(host: &str, user: &str, password: &str) -> String {
    format!("[registry.upstream]\nurl = {host:?}\nusername = {user:?}\npassword = {password:?}\n")
}

/// Where a cache under test keeps its data: the wire tests run on both (issue 20).
#[derive(Clone, Copy, Debug)]
enum Backend {
    Dir,
    /// A prefix of its own in the binary's SeaweedFS bucket.
    S3,
}

/// Each test named, as `dir::NAME` and `s3::NAME`, on a storage directory and on S3.
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
    routes_by_host_prefix_namespace_and_upstream_order,
    htpasswd_upstream_with_configured_credentials,
    bearer_upstream_glci_whose_service_is_not_its_host,
    ten_concurrent_cold_pulls_share_one_streaming_upstream_fetch,
    moved_tag_is_served_stale_within_ttl_then_revalidated,
    wrong_or_truncated_blob_bytes_are_never_cached,
    malformed_manifests_and_upstream_errors_are_clear_and_not_cached,
    hanging_upstream_gets_a_timely_error_never_a_hung_client,
    redirected_blob_is_fetched_without_authorization,
    push_existence_checks_never_reach_the_upstream,
);

/// What a cache stores in, read directly by the tests.
enum Stored {
    /// Kept so the directory lives as long as the cache.
    Dir(#[allow(dead_code)] TempDir),
    S3 {
        client: Box<glci::registry::s3::S3Client>,
        prefix: String,
    },
}

/// `glci serve --no-auth` with `config`, on a storage the test can inspect.
struct Cache {
    server: ServeProcess,
    stored: Stored,
}

impl Cache {
    fn start(config: &str) -> Cache {
        Cache::start_on(Backend::Dir, config)
    }

    fn start_on(backend: Backend, config: &str) -> Cache {
        match backend {
            Backend::Dir => {
                let dir = temp_dir();
                let storage = dir.path().join("storage");
                let server = ServeProcess::start_with_config(&storage, &["--no-auth"], config);
                Cache { server, stored: Stored::Dir(dir) }
            }
            Backend::S3 => {
                let weed = common::seaweedfs::seaweedfs();
                let (bucket, prefix) = (weed.bucket(), weed.prefix());
                let config = format!(
                    "{config}\n[storage.s3]\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                    weed.endpoint,
                    common::seaweedfs::ACCESS_KEY,
                    common::seaweedfs::SECRET_KEY
                );
                let storage = PathBuf::from(format!("s3://{bucket}/{prefix}"));
                let server = ServeProcess::start_with_config(&storage, &["--no-auth"], &config);
                let client = Box::new(glci::registry::s3::S3Client::new(&weed.settings(bucket)).unwrap());
                Cache { server, stored: Stored::S3 { client, prefix } }
            }
        }
    }

    /// The object at `path` (relative to the storage root or prefix).
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        match &self.stored {
            Stored::Dir(_) => std::fs::read(self.server.storage().join(path)).ok(),
            Stored::S3 { client, prefix } => client.get_bytes(&format!("{prefix}/{path}")).unwrap(),
        }
    }

    /// Blob `digest` as stored, when it is.
    fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.read(&blob_path(digest, matches!(self.stored, Stored::Dir(_))))
    }

    fn has_blob(&self, digest: &str) -> bool {
        self.blob(digest).is_some()
    }

    /// The origin recorded for manifest `digest` of `name`.
    fn origin(&self, name: &str, digest: &str) -> Option<Vec<u8>> {
        self.read(&origin_path(name, digest))
    }

    /// True when anything is stored for the repository (or namespace) `name`.
    fn holds_repository(&self, name: &str) -> bool {
        match &self.stored {
            Stored::Dir(_) => self.server.storage().join("repositories").join(name).exists(),
            Stored::S3 { client, prefix } => client.any_under(&format!("{prefix}/repositories/{name}/")).unwrap(),
        }
    }

    /// Temp files left in a storage directory (S3 has none: a cut upload is aborted).
    fn leftover_temp_files(&self) -> Vec<std::ffi::OsString> {
        match &self.stored {
            Stored::Dir(_) => std::fs::read_dir(self.server.storage().join("tmp"))
                .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
                .unwrap_or_default(),
            Stored::S3 { .. } => Vec::new(),
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// Panics if the cache's log holds `secret`.
    fn assert_log_lacks(&self, secret: &str, what: &str) {
        assert!(!self.server.stderr().contains(secret), "the cache logged {what}:\n{}", self.server.stderr());
    }
}

// ---------------------------------------------------------------------------------------------
// docker and skopeo, each bounded by timeout(1)

fn bounded(tool: &str) -> Command {
    need(tool);
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10", TOOL_TIMEOUT, tool]);
    cmd
}

fn docker(args: &[&str]) -> String {
    run_stdout(bounded("docker").args(args))
}

fn skopeo_copy_all(from: &str, to: &str) {
    run(bounded("skopeo").args(["copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false", from, to]));
}

/// Removes the image `reference` names, with every tag and digest reference it has, so the
/// engine keeps none of its layers and the next pull must fetch them all.
fn docker_forget(reference: &str) {
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", reference]);
    docker(&["image", "rm", "--force", id.trim()]);
    let gone = Command::new("docker").args(["image", "inspect", reference]).output().unwrap();
    assert!(!gone.status.success(), "{reference} is still in the engine");
}

/// Checks that `layout` holds exactly the image `digest` of `source` names, byte for byte.
fn assert_same_closure(source: &Path, copy: &Path, digest: &str) {
    let expected = layout_closure(source, digest);
    eqnice!(expected, layout_blob_digests(copy), "blobs in {}", copy.display());
    for d in &expected {
        assert!(layout_blob(source, d) == layout_blob(copy, d), "blob {d} differs in {}", copy.display());
    }
}

fn glci_in(home: &Path, args: &[&str]) -> String {
    run_stdout(glci().env("GLCI_HOME", home).args(args)).trim().to_string()
}

// =============================================================================================
// Routing

/// Host-prefixed names go to that host, `?ns=` names the upstream (and is echoed), hostless
/// names are served locally when present, else from the first upstream that has them;
/// Docker Hub names without a slash get `library/`.
fn routes_by_host_prefix_namespace_and_upstream_order(backend: Backend) {
    let gitlab = Distribution::start(None);
    let hub = Distribution::start(None);
    let (gitlab_relay, hub_relay) = (Relay::start(&gitlab.addr, None), Relay::start(&hub.addr, None));
    let app = image("gitlab app", &[3000]);
    let tool = image("hub tool", &[5000, 7000]);
    let nsimg = image("hub ns image", &[4000]);
    let org = image("hub org image", &[2000]);
    push_image(&gitlab.url(), "g/p/app", "1", &app, None);
    push_image(&hub.url(), "library/tool", "1", &tool, None);
    push_image(&hub.url(), "library/nsimg", "1", &nsimg, None);
    push_image(&hub.url(), "someorg/tool", "2", &org, None);
    let cache =
        Cache::start_on(backend, &cache_config(&[(GITLAB, gitlab_relay.url()), (HUB, hub_relay.url())], "", ""));
    let base = cache.url();

    // A host as first component: that upstream only, the rest of the name as its path.
    let r = get(&format!("{base}/v2/registry.gitlab.com/g/p/app/manifests/1")).expect_for(200, "host-prefixed");
    assert!(r.body == app.manifest, "manifest bytes differ: {}", r.text());
    eqnice!(Some(app.digest.as_str()), r.header("Docker-Content-Digest"));
    let r = get(&format!("{base}/v2/registry.gitlab.com/g/p/app/blobs/{}", app.layers[0])).expect_for(200, "blob");
    assert!(r.body == app.blobs[1], "layer bytes differ");
    eqnice!(1, gitlab_relay.record.count("GET", "/v2/g/p/app/manifests/1"), "{}", gitlab_relay.record.dump());
    eqnice!(Vec::<String>::new(), hub_relay.record.all().iter().map(|s| s.target.clone()).collect::<Vec<_>>());
    let origin: Value =
        serde_json::from_slice(&cache.origin("registry.gitlab.com/g/p/app", &app.digest).unwrap()).unwrap();
    eqnice!(Some(GITLAB), origin["upstream"].as_str(), "origin {origin}");

    // docker.io as first component means registry-1.docker.io, with library/ added.
    let r = get(&format!("{base}/v2/docker.io/tool/manifests/1")).expect_for(200, "docker.io/tool");
    eqnice!(Some(tool.digest.as_str()), r.header("Docker-Content-Digest"));
    eqnice!(1, hub_relay.record.count("GET", "/v2/library/tool/manifests/1"), "{}", hub_relay.record.dump());

    // ?ns= names the upstream (GitLab is not asked) and comes back as OCI-Namespace.
    let r = get(&format!("{base}/v2/nsimg/manifests/1?ns=docker.io")).expect_for(200, "ns=docker.io");
    eqnice!(Some(nsimg.digest.as_str()), r.header("Docker-Content-Digest"));
    eqnice!(Some("docker.io"), r.header("OCI-Namespace"));
    let r = get(&format!("{base}/v2/nsimg/blobs/{}?ns=docker.io", nsimg.layers[0])).expect_for(200, "blob with ns");
    assert!(r.body == nsimg.blobs[1], "layer bytes differ");
    eqnice!(Some("docker.io"), r.header("OCI-Namespace"));
    eqnice!(1, hub_relay.record.count("GET", "/v2/library/nsimg/manifests/1"), "{}", hub_relay.record.dump());
    assert!(
        !gitlab_relay.record.all().iter().any(|s| s.target.contains("nsimg")),
        "GitLab was asked for an ns=docker.io name:\n{}",
        gitlab_relay.record.dump()
    );

    // Hostless: GitLab (first) does not have it, Docker Hub (second) does, as library/tool.
    let r = get(&format!("{base}/v2/tool/manifests/1")).expect_for(200, "hostless");
    assert!(r.body == tool.manifest, "manifest bytes differ");
    eqnice!(1, gitlab_relay.record.count("GET", "/v2/tool/manifests/1"), "{}", gitlab_relay.record.dump());
    // (Its second GET: `docker.io/tool` above is another repository of the cache.)
    let hub_gets = hub_relay.record.matching("GET", "/v2/library/tool/manifests/1");
    eqnice!(2, hub_gets.len(), "{}", hub_relay.record.dump());
    let gitlab_get = &gitlab_relay.record.matching("GET", "/v2/tool/manifests/1")[0];
    assert!(gitlab_get.at < hub_gets[1].at, "Docker Hub was asked before GitLab, the first upstream");
    for (i, layer) in tool.layers.iter().enumerate() {
        let r = get(&format!("{base}/v2/tool/blobs/{layer}")).expect_for(200, "hostless blob");
        assert!(r.body == tool.blobs[i + 1], "layer {i} bytes differ");
        assert!(cache.has_blob(layer), "layer {layer} was not cached");
    }
    let origin: Value = serde_json::from_slice(&cache.origin("tool", &tool.digest).unwrap()).unwrap();
    eqnice!(Some(HUB), origin["upstream"].as_str(), "origin {origin}");
    // A HEAD for a blob that misses asks upstream and downloads nothing.
    let config_digest = sha256_digest(&tool.blobs[0]);
    let r = send("HEAD", &format!("{base}/v2/tool/blobs/{config_digest}"), &[], None).expect_for(200, "HEAD blob");
    eqnice!(Some(tool.blobs[0].len().to_string().as_str()), r.header("Content-Length"));
    assert!(!cache.has_blob(&config_digest), "a HEAD downloaded the blob");

    // Hostless with a slash: no library/ added.
    let r = get(&format!("{base}/v2/someorg/tool/manifests/2")).expect_for(200, "someorg/tool");
    eqnice!(Some(org.digest.as_str()), r.header("Docker-Content-Digest"));
    eqnice!(1, hub_relay.record.count("GET", "/v2/someorg/tool/manifests/2"), "{}", hub_relay.record.dump());

    // Nobody has it: a spec 404.
    let r = get(&format!("{base}/v2/nothing/here/manifests/1")).expect_for(404, "unknown everywhere");
    let (code, _) = r.error();
    assert!(code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN", "{}", r.text());

    // Pushed locally under a hostless name: served from the store, no upstream asked.
    let local = image("local only", &[1500]);
    push_image(&base, "local/app", "1", &local, None);
    let before = (gitlab_relay.record.all().len(), hub_relay.record.all().len());
    let r = get(&format!("{base}/v2/local/app/manifests/1")).expect_for(200, "local");
    assert!(r.body == local.manifest, "local manifest bytes differ");
    eqnice!(before, (gitlab_relay.record.all().len(), hub_relay.record.all().len()), "upstream asked for a local name");
}

// =============================================================================================
// docker and skopeo through the cache; then the upstream goes away

#[test]
fn docker_and_skopeo_pull_through_and_keep_working_when_the_upstream_stops() {
    need_docker_daemon();
    need("skopeo");
    let work = temp_dir();
    let rootfs = build_busybox_rootfs(&work.path().join("rootfs.tar"));
    let layout = build_oci_layout(&work.path().join("layout"));
    let mut upstream = Distribution::start(None);

    // Docker Hub stand-in: an image the engine pushes as library/NAME, then forgets.
    let name = unique_name("pt-busybox");
    let upstream_ref = format!("{}/library/{name}:1", upstream.addr);
    let mut images = DockerImages(vec![upstream_ref.clone()]);
    docker(&["import", &rootfs.display().to_string(), &upstream_ref]);
    let push = docker(&["push", &upstream_ref]);
    let digest = pushed_digest(&push);
    docker_forget(&upstream_ref);
    // GitLab stand-in (the same registry under its other name): a two-platform index.
    skopeo_copy_all(&format!("oci:{}:index", layout.display()), &format!("docker://{}/g/p/multi:1", upstream.addr));
    let index_digest = sha256_digest(
        &run(bounded("skopeo").args(["inspect", "--raw", &format!("oci:{}:index", layout.display())])).stdout,
    );

    let cache = Cache::start(&cache_config(&[(GITLAB, upstream.url()), (HUB, upstream.url())], "", ""));
    let by_tag = format!("{}/{name}:1", cache.server.addr);
    let by_digest = format!("{}/{name}@{digest}", cache.server.addr);
    images.0.extend([by_tag.clone(), by_digest.clone()]);
    let skopeo_source = format!("docker://{}/registry.gitlab.com/g/p/multi:1", cache.server.addr);

    let pull_all = |round: &str| {
        docker(&["pull", &by_tag]);
        let repo_digests = docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", &by_tag]);
        assert!(repo_digests.contains(&digest), "{round}: RepoDigests {repo_digests}, expected {digest}");
        docker_forget(&by_tag);
        docker(&["pull", &by_digest]);
        let out = docker(&["run", "--rm", &by_digest, "/bin/busybox", "echo", "pulled"]);
        eqnice!("pulled", out.trim(), "{round}: docker run");
        docker_forget(&by_digest);
        let back = work.path().join(format!("back-{round}"));
        skopeo_copy_all(&skopeo_source, &format!("oci:{}:multi", back.display()));
        assert_same_closure(&layout, &back, &index_digest);
    };
    pull_all("online");
    let fetched = upstream.access.snapshot().len();
    assert!(fetched > 0, "the upstream saw no requests");

    upstream.stop();
    pull_all("offline");
}

// =============================================================================================
// Upstream auth

/// Pulls `registry.gitlab.com/g/p/app:1` through `cache`: the manifest and every layer are
/// `app`'s, byte for byte.
fn assert_pulls_gitlab_app(cache: &Cache, app: &Image) {
    let base = cache.url();
    let r = get(&format!("{base}/v2/registry.gitlab.com/g/p/app/manifests/1")).expect_for(200, "manifest");
    assert!(r.body == app.manifest, "manifest bytes differ");
    for (i, layer) in app.layers.iter().enumerate() {
        let r = get(&format!("{base}/v2/registry.gitlab.com/g/p/app/blobs/{layer}")).expect_for(200, "blob");
        assert!(r.body == app.blobs[i + 1], "layer {i} differs");
    }
}

/// distribution behind htpasswd: Basic credentials from `[registry.upstream]`, only when asked.
fn htpasswd_upstream_with_configured_credentials(backend: Backend) {
    let upstream = Distribution::start(Some(HTPASSWD_ENTRY));
    let app = image("htpasswd app", &[2500, 1200]);
    // The upstream really wants credentials.
    let r = get(&format!("{}/v2/g/p/app/tags/list", upstream.url())).expect_for(401, "anonymous upstream read");
    assert!(r.header("WWW-Authenticate").unwrap_or("").starts_with("Basic"), "{:?}", r.headers);
    push_image(&upstream.url(), "g/p/app", "1", &app, Some(&basic(HTPASSWD_USER, HTPASSWD_PASSWORD)));
    let relay = Relay::start(&upstream.addr, None);

    // Without credentials: a clear error naming the upstream, nothing cached.
    let anonymous = Cache::start_on(backend, &cache_config(&[(GITLAB, relay.url())], "", ""));
    let r = get(&format!("{}/v2/registry.gitlab.com/g/p/app/manifests/1", anonymous.url()));
    let (code, message) = r.expect_for(502, "without credentials").error();
    eqnice!("UNAVAILABLE", code, "{message}");
    assert!(message.contains(GITLAB) && message.contains("401"), "the error does not say who refused: {message}");
    assert!(!anonymous.holds_repository("registry.gitlab.com"), "something was cached");

    let cache = Cache::start_on(
        backend,
        &cache_config(&[(GITLAB, relay.url())], "", &upstream_credentials(GITLAB, HTPASSWD_USER, HTPASSWD_PASSWORD)),
    );
    assert_pulls_gitlab_app(&cache, &app);
    let expected = basic(HTPASSWD_USER, HTPASSWD_PASSWORD);
    let manifest_gets = relay.record.matching("GET", "/v2/g/p/app/manifests/1");
    assert!(
        manifest_gets.iter().any(|s| s.header("Authorization") == Some(expected.as_str())),
        "no request carried the configured Basic credentials:\n{}",
        relay.record.dump()
    );
    cache.assert_log_lacks(HTPASSWD_PASSWORD, "the upstream password");
    cache.assert_log_lacks(&expected["Basic ".len()..], "the upstream Basic credentials");
}

/// A second `glci serve` with auth (no anonymous pulls) as a Bearer upstream: the token comes
/// from the challenge's realm with its service (`glci`, not the host name) and scope, is asked
/// for with the `[registry.upstream]` credentials (a job token), and is reused for the scope.
fn bearer_upstream_glci_whose_service_is_not_its_host(backend: Backend) {
    let dir = temp_dir();
    let upstream = ServeProcess::start_with_config(
        &dir.path().join("upstream"),
        &[],
        "[registry]\nupstreams = []\nanonymous_pull = false\n",
    );
    let admin = glci_in(upstream.home(), &["registry", "login", "--print"]);
    let job = glci_in(upstream.home(), &["registry", "token", "--project", "g/p", "--ttl", "1h"]);
    let app = image("bearer app", &[3300, 900]);
    push_image(&upstream.url(), "g/p/app", "1", &app, Some(&basic("glci-admin", &admin)));
    let r = get(&format!("{}/v2/g/p/app/manifests/1", upstream.url())).expect_for(401, "anonymous upstream pull");
    let challenge = r.header("WWW-Authenticate").unwrap_or("").to_string();
    assert!(challenge.starts_with("Bearer ") && challenge.contains("service=\"glci\""), "{challenge}");

    let relay = Relay::start(&upstream.addr, None);
    let cache = Cache::start_on(
        backend,
        &cache_config(&[(GITLAB, relay.url())], "", &upstream_credentials(GITLAB, "gitlab-ci-token", &job)),
    );
    assert_pulls_gitlab_app(&cache, &app);

    let tokens = relay.record.matching("GET", "/token");
    eqnice!(1, tokens.len(), "token requests (one per scope, then cached):\n{}", relay.record.dump());
    let token = &tokens[0];
    eqnice!(vec!["glci".to_string()], query_values(&token.target, "service"), "service in {}", token.target);
    eqnice!(vec!["repository:g/p/app:pull".to_string()], query_values(&token.target, "scope"), "{}", token.target);
    eqnice!(Some(basic("gitlab-ci-token", &job).as_str()), token.header("Authorization"), "token request credentials");
    let v2: Vec<Seen> = relay.record.all().into_iter().filter(|s| s.path().starts_with("/v2/g/p/app/")).collect();
    let bearer = v2.iter().filter(|s| s.header("Authorization").is_some_and(|a| a.starts_with("Bearer "))).count();
    // The first request was anonymous and challenged; every later one carried the token.
    eqnice!(v2.len() - 1, bearer, "requests with the Bearer token:\n{}", relay.record.dump());
    cache.assert_log_lacks(&job, "the job token");
    cache.assert_log_lacks(&admin, "the admin password");
}

// =============================================================================================
// Single flight and streaming

/// Ten clients miss one 256 MiB blob at once: the upstream is asked once (its access log and
/// the relay agree), and the first client gets bytes while the throttled upstream is still
/// sending; every client gets the whole blob, verified, over plain HTTP and over HTTPS.
fn ten_concurrent_cold_pulls_share_one_streaming_upstream_fetch(backend: Backend) {
    const SIZE: u64 = 256 * MIB as u64;
    const CLIENTS: usize = 10;
    let upstream = Distribution::start(None);
    // Upload straight to the registry (not through the relay): POST, then PUT with the body.
    let digest = pattern_digest("big", SIZE);
    let started = post_empty(&format!("{}/v2/library/big/blobs/uploads/", upstream.url())).expect_for(202, "upload");
    let location = absolute(&upstream.url(), started.header("Location").unwrap());
    let put = agent()
        .put(&format!("{location}&digest={digest}"))
        .set("Content-Length", &SIZE.to_string())
        .send(Pattern::new("big", 0, SIZE));
    assert!(matches!(&put, Ok(r) if r.status() == 201), "upload of the big blob: {put:?}");

    // At most 128 MiB/s upstream→cache (2 s at full speed; the ten debug-build clients hashing
    // on a small VM slow it further): slow enough to see streaming, fast enough for the suite.
    let relay = Relay::start(&upstream.addr, Some(128 * MIB as u64));
    let cache = Cache::start_on(backend, &cache_config(&[(HUB, relay.url())], "", ""));
    let url = format!("{}/v2/big/blobs/{digest}", cache.url());
    // Every other client is curl over HTTPS on the same port: a miss goes out by sendfile(2)
    // from the growing file on plain TCP and through the TLS writer's copies on HTTPS.
    let https_url = url.replacen("http://", "https://", 1);
    let ca = cache.server.home().join("registry-ca/ca.crt");

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, https_url, ca) = (url.clone(), https_url.clone(), ca.clone());
            let (barrier, down) = (Arc::clone(&barrier), Arc::clone(&relay.down));
            thread::spawn(move || {
                barrier.wait();
                let mut curl = None;
                let mut reader: Box<dyn Read> = if i % 2 == 1 {
                    let mut child = Command::new("curl")
                        .args(["-sSf", "--max-time", "120", "--cacert"])
                        .arg(&ca)
                        .arg(&https_url)
                        .stdout(Stdio::piped())
                        .spawn()
                        .expect("curl");
                    let stdout = child.stdout.take().expect("curl's stdout");
                    curl = Some(child);
                    Box::new(stdout)
                } else {
                    let response = agent().get(&url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
                    assert_eq!(response.status(), 200);
                    Box::new(response.into_reader())
                };
                let mut first = [0u8; 1];
                reader.read_exact(&mut first).unwrap_or_else(|e| panic!("client {i}'s first byte: {e}"));
                let first_at = Instant::now();
                let upstream_sent = down.load(Ordering::SeqCst);
                let mut hasher = DigestWriter::new();
                hasher.update(&first);
                let rest = io::copy(&mut reader, &mut hasher).unwrap();
                if let Some(mut child) = curl {
                    let status = child.wait().unwrap();
                    assert!(status.success(), "curl over HTTPS: {status}");
                }
                (first_at, upstream_sent, rest + 1, hasher.digest())
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for (_, _, len, got) in &results {
        eqnice!(SIZE, *len, "bytes a client received");
        eqnice!(digest, *got, "digest of what a client received");
    }

    let path = format!("/v2/library/big/blobs/{digest}");
    eqnice!(1, relay.record.count("GET", &path), "upstream GETs of the blob:\n{}", relay.record.dump());
    assert!(
        upstream
            .access
            .wait_for(Duration::from_secs(10), |lines| lines.iter().any(|l| l.contains(&format!("\"GET {path} ")))),
        "the upstream's access log never showed the blob GET"
    );
    eqnice!(1, upstream.access_count("GET", &path), "GETs in the upstream's access log");

    let (first_at, upstream_sent, _, _) = results.iter().min_by_key(|r| r.0).unwrap();
    let last_down = relay.last_down.lock().unwrap().unwrap();
    eprintln!(
        "first body byte after {:.1} MiB of {} MiB from upstream, {:?} before the upstream's last byte",
        *upstream_sent as f64 / MIB as f64,
        SIZE / MIB as u64,
        last_down.saturating_duration_since(*first_at)
    );
    assert!(
        *upstream_sent < SIZE / 2 && *first_at < last_down,
        "the first client's first byte came after {upstream_sent} of {SIZE} upstream bytes \
         ({:?} before the upstream's last byte)",
        last_down.checked_duration_since(*first_at)
    );
    assert!(cache.has_blob(&digest), "the blob was not cached");
}

// =============================================================================================
// Tag revalidation

/// A tag moved upstream: the cached digest within `tag_ttl`, then one HEAD finds the new one;
/// an unmoved tag costs a HEAD only; an unreachable upstream leaves the cached copy served.
fn moved_tag_is_served_stale_within_ttl_then_revalidated(backend: Backend) {
    // The server's clock jumps over the ttl (`advance_clock`): an hour is never reached for real.
    const TTL: Duration = Duration::from_secs(3600);
    let mut upstream = Distribution::start(None);
    let relay = Relay::start(&upstream.addr, None);
    let (v1, v2) = (image("moving v1", &[1000]), image("moving v2", &[1100]));
    push_image(&upstream.url(), "g/p/moving", "latest", &v1, None);
    for blob in &v2.blobs {
        push_blob(&upstream.url(), "g/p/moving", blob, None);
    }
    let cache = Cache::start_on(backend, &cache_config(&[(GITLAB, relay.url())], "tag_ttl = \"1h\"", ""));
    let url = format!("{}/v2/registry.gitlab.com/g/p/moving/manifests/latest", cache.url());
    let path = "/v2/g/p/moving/manifests/latest";
    let digest_of = |r: &Response| r.header("Docker-Content-Digest").unwrap_or("").to_string();

    eqnice!(v1.digest, digest_of(&get(&url).expect_for(200, "first pull")));
    push_manifest(&upstream.url(), "g/p/moving", "latest", &v2.manifest, None);
    eqnice!(v1.digest, digest_of(&get(&url).expect_for(200, "within the ttl")), "stale copy within the ttl");
    eqnice!((1, 0), (relay.record.count("GET", path), relay.record.count("HEAD", path)), "{}", relay.record.dump());

    // After the ttl: one HEAD sees the move, one GET fetches the new manifest.
    cache.server.advance_clock(TTL + Duration::from_secs(1));
    let r = get(&url).expect_for(200, "after the ttl");
    eqnice!(v2.digest, digest_of(&r), "new digest after the ttl");
    assert!(r.body == v2.manifest, "new manifest bytes differ");
    eqnice!((2, 1), (relay.record.count("GET", path), relay.record.count("HEAD", path)), "{}", relay.record.dump());

    // Unmoved after another ttl: a HEAD only (free under Docker Hub's rate limits).
    cache.server.advance_clock(TTL + Duration::from_secs(1));
    eqnice!(v2.digest, digest_of(&get(&url).expect_for(200, "unmoved")));
    eqnice!((2, 2), (relay.record.count("GET", path), relay.record.count("HEAD", path)), "{}", relay.record.dump());

    // Digests are immutable: the old one is still served, without asking upstream.
    let asked = relay.record.all().len();
    let r = get(&format!("{}/v2/registry.gitlab.com/g/p/moving/manifests/{}", cache.url(), v1.digest));
    assert!(r.expect_for(200, "old digest").body == v1.manifest, "old manifest bytes differ");
    eqnice!(asked, relay.record.all().len(), "upstream asked for a cached digest:\n{}", relay.record.dump());

    // Upstream gone, ttl passed: the cached copy is served.
    upstream.stop();
    cache.server.advance_clock(TTL + Duration::from_secs(1));
    let r = get(&url).expect_for(200, "stale with the upstream gone");
    eqnice!(v2.digest, digest_of(&r));
}

// =============================================================================================
// Upstreams that lie, fail, hang, rate-limit and redirect

/// A cache whose only upstream, Docker Hub, is `fake`.
fn cache_in_front_of(backend: Backend, fake: &Fake, tail: &str) -> Cache {
    Cache::start_on(backend, &cache_config(&[(HUB, fake.url())], "", tail))
}

/// What a client gets from a lying or stalled upstream: a 5xx or a broken transfer, never a
/// complete 200.
#[track_caller]
fn assert_never_complete(outcome: Result<Response, String>, what: &str) {
    match outcome {
        Ok(r) if r.status == 200 => {
            panic!("{what}: the client got a complete 200 ({} bytes, digest {})", r.body.len(), sha256_digest(&r.body))
        }
        Ok(r) => assert!(r.status >= 500, "{what}: {} {}", r.status, r.text()),
        Err(_broken) => {}
    }
}

/// A blob whose bytes do not match its digest (or end early) reaches no client as a complete
/// response and is never stored; once the upstream is fixed, the same pull is correct.
fn wrong_or_truncated_blob_bytes_are_never_cached(backend: Backend) {
    // One blob copied inline, one past the store's pipelined-hashing threshold.
    let blobs: Vec<Vec<u8>> = vec![pattern("small good", 300_000), pattern("large good", 6 * MIB + 123)];
    let digests: Vec<String> = blobs.iter().map(|b| sha256_digest(b)).collect();
    // 0: same length, wrong bytes; 1: ends half way; 2: correct.
    let mode = Arc::new(AtomicU8::new(0));
    let fake = {
        let (blobs, digests, mode) = (blobs.clone(), digests.clone(), Arc::clone(&mode));
        Fake::start(move |seen| {
            let Some(i) = digests.iter().position(|d| seen.path() == format!("/v2/lie/blob/blobs/{d}")) else {
                return error_reply(404, "BLOB_UNKNOWN", "no", &[]);
            };
            let good = &blobs[i];
            match mode.load(Ordering::SeqCst) {
                0 => {
                    let mut bad = good.clone();
                    let last = bad.len() - 1;
                    bad[last] ^= 0xff;
                    reply(200, &[("Content-Type", "application/octet-stream")], &bad)
                }
                1 => Action::Short { len: good.len(), body: good[..good.len() / 2].to_vec() },
                _ => reply(200, &[("Content-Type", "application/octet-stream")], good),
            }
        })
    };
    let cache = cache_in_front_of(backend, &fake, "");
    for (blob, digest) in blobs.iter().zip(&digests) {
        let url = format!("{}/v2/lie/blob/blobs/{digest}", cache.url());
        let path = format!("/v2/lie/blob/blobs/{digest}");
        for (m, what) in [(0u8, "wrong bytes"), (1, "truncated")] {
            mode.store(m, Ordering::SeqCst);
            let asked = fake.record.count("GET", &path);
            assert_never_complete(try_send("GET", &url, &[], None), what);
            eqnice!(asked + 1, fake.record.count("GET", &path), "{what}: upstream GETs");
            assert!(!cache.has_blob(digest), "{what}: blob {digest} was cached");
        }
        mode.store(2, Ordering::SeqCst);
        let r = get(&url).expect_for(200, "fixed upstream");
        eqnice!(*digest, sha256_digest(&r.body), "digest of the pulled blob");
        let stored = cache.blob(digest).unwrap();
        assert!(stored == *blob, "the cached blob differs");
        // Now served from the store.
        let asked = fake.record.count("GET", &path);
        assert!(get(&url).expect_for(200, "cached").body == *blob);
        eqnice!(asked, fake.record.count("GET", &path), "upstream asked for a cached blob");
    }
    eqnice!(Vec::<std::ffi::OsString>::new(), cache.leftover_temp_files(), "temporary files left in the store");
}

/// Malformed manifests, digest lies, 500 and 429 come back as spec JSON errors naming the
/// upstream (429 with its Retry-After), and nothing of them is cached.
fn malformed_manifests_and_upstream_errors_are_clear_and_not_cached(backend: Backend) {
    let good = image("lie good", &[100]);
    let other = image("lie other", &[100]);
    let blob_digest = good.layers[0].clone();
    let fake = {
        let (good_manifest, other_manifest) = (good.manifest.clone(), other.manifest.clone());
        let good_digest = good.digest.clone();
        Fake::start(move |seen| {
            let oci = ("Content-Type", OCI_MANIFEST);
            let path = seen.path().to_string();
            if path == "/v2/lie/badjson/manifests/v1" {
                reply(200, &[oci], b"{\"schemaVersion\": 2, \"layers\": [")
            } else if path == "/v2/lie/claim/manifests/v1" {
                let zero = format!("sha256:{}", "0".repeat(64));
                reply(200, &[oci, ("Docker-Content-Digest", &zero)], &good_manifest)
            } else if path == format!("/v2/lie/bydigest/manifests/{good_digest}") {
                reply(200, &[oci], &other_manifest)
            } else if path.starts_with("/v2/lie/fail/") {
                error_reply(500, "UNKNOWN", "database on fire", &[])
            } else if path.starts_with("/v2/lie/busy/") {
                error_reply(429, "TOOMANYREQUESTS", "slow down", &[("Retry-After", "7")])
            } else {
                error_reply(404, "NAME_UNKNOWN", "no", &[])
            }
        })
    };
    let cache = cache_in_front_of(backend, &fake, "");
    let base = cache.url();
    let cases = [
        ("lie/badjson", "manifests/v1".to_string(), 502, "UNAVAILABLE"),
        ("lie/claim", "manifests/v1".to_string(), 502, "UNAVAILABLE"),
        ("lie/bydigest", format!("manifests/{}", good.digest), 502, "UNAVAILABLE"),
        ("lie/fail", "manifests/v1".to_string(), 502, "UNAVAILABLE"),
        ("lie/fail", format!("blobs/{blob_digest}"), 502, "UNAVAILABLE"),
        ("lie/busy", "manifests/v1".to_string(), 429, "TOOMANYREQUESTS"),
        ("lie/busy", format!("blobs/{blob_digest}"), 429, "TOOMANYREQUESTS"),
    ];
    for (name, suffix, status, code) in &cases {
        let what = format!("{name}/{suffix}");
        for round in 0..2 {
            let asked = fake.record.all().len();
            let r = get(&format!("{base}/v2/{name}/{suffix}")).expect_for(*status, &what);
            let (got_code, message) = r.error();
            eqnice!(*code, got_code, "{what}: code ({message})");
            assert!(message.contains(HUB), "{what}: the message does not name the upstream: {message}");
            if *status == 429 {
                eqnice!(Some("7"), r.header("Retry-After"), "{what}: Retry-After passed on");
            }
            // Nothing was cached: the next pull asks upstream again.
            assert!(fake.record.all().len() > asked, "{what} (round {round}): upstream not asked");
        }
        assert!(!cache.holds_repository(name), "{what}: something was cached");
    }
    assert!(cache.server.stderr_shows(HUB), "the cache did not log the failing upstream");
    assert!(!cache.has_blob(&blob_digest), "the blob was cached");
}

/// An upstream that accepts and never answers (manifest, blob) gets the client a 504 within
/// the cache's upstream timeout (`upstream_timeout`, 3 s here); one that stops mid-body breaks
/// the transfer. Never a hang.
fn hanging_upstream_gets_a_timely_error_never_a_hung_client(backend: Backend) {
    let blob = pattern("stalled", 3 * MIB);
    let digest = sha256_digest(&blob);
    let fake = {
        let blob = blob.clone();
        Fake::start(move |seen| {
            if seen.path().starts_with("/v2/lie/hang/") {
                Action::Hang
            } else if seen.path().starts_with("/v2/lie/stall/") {
                Action::Stall { len: blob.len(), body: blob[..MIB].to_vec() }
            } else {
                error_reply(404, "NAME_UNKNOWN", "no", &[])
            }
        })
    };
    let cache = Cache::start_on(backend, &cache_config(&[(HUB, fake.url())], "upstream_timeout = \"3s\"", ""));
    let base = cache.url();
    let started = Instant::now();
    let requests = [
        format!("{base}/v2/lie/hang/manifests/v1"),
        format!("{base}/v2/lie/hang/blobs/{digest}"),
        format!("{base}/v2/lie/stall/blobs/{digest}"),
    ];
    let waits: Vec<_> = requests
        .iter()
        .cloned()
        .map(|url| thread::spawn(move || (try_send("GET", &url, &[], None), Instant::now())))
        .collect();
    for (i, wait) in waits.into_iter().enumerate() {
        let (outcome, at) = wait.join().unwrap();
        let took = at.duration_since(started);
        eprintln!("{}: answered after {took:?}", requests[i]);
        // The cache's upstream timeout is 3 s (per read); the client's own is 60 s.
        assert!(took >= Duration::from_secs(3), "{}: answered after {took:?}, before the timeout", requests[i]);
        assert!(took < Duration::from_secs(15), "{}: answered after {took:?}", requests[i]);
        if i < 2 {
            let r = outcome.unwrap_or_else(|e| panic!("{e}"));
            let (code, message) = r.expect_for(504, &requests[i]).error();
            eqnice!("UNAVAILABLE", code, "{message}");
            assert!(message.contains(HUB) && message.contains("timed out"), "{message}");
        } else {
            assert_never_complete(outcome, "stalled");
        }
    }
    assert!(!cache.has_blob(&digest), "the stalled blob was cached");
    assert!(!cache.holds_repository("lie/hang"), "something was cached for a hang");
}

/// A blob GET redirected (307) to a second server (Docker Hub's CDN): the cache follows it
/// without the upstream's `Authorization`, and the blob is served and cached correctly.
fn redirected_blob_is_fetched_without_authorization(backend: Backend) {
    const USER: &str = "robot";
    const PASSWORD: &str = "fake-upstream-password";
    const TOKEN: &str = "fake-bearer-token-123";
    let blob = pattern("redirected", 200_000);
    let digest = sha256_digest(&blob);
    let cdn = {
        let blob = blob.clone();
        Fake::start(move |_| reply(200, &[("Content-Type", "application/octet-stream")], &blob))
    };
    let fake = {
        let (cdn_url, digest) = (cdn.url(), digest.clone());
        Fake::start(move |seen| {
            let host = seen.header("Host").unwrap_or("").to_string();
            if seen.path() == "/token" {
                return if seen.header("Authorization") == Some(basic(USER, PASSWORD).as_str()) {
                    reply(
                        200,
                        &[("Content-Type", "application/json")],
                        json!({"token": TOKEN, "expires_in": 300}).to_string().as_bytes(),
                    )
                } else {
                    error_reply(401, "UNAUTHORIZED", "bad credentials", &[])
                };
            }
            if seen.header("Authorization") != Some(format!("Bearer {TOKEN}").as_str()) {
                let challenge = format!(
                    "Bearer realm=\"http://{host}/token\",service=\"fake.registry.test\",scope=\"repository:lie/redirect:pull\""
                );
                return error_reply(
                    401,
                    "UNAUTHORIZED",
                    "authentication required",
                    &[("WWW-Authenticate", &challenge)],
                );
            }
            if seen.path() == format!("/v2/lie/redirect/blobs/{digest}") {
                let location = format!("{cdn_url}/cdn/{digest}?signature=abc");
                return reply(307, &[("Location", &location)], b"");
            }
            error_reply(404, "BLOB_UNKNOWN", "no", &[])
        })
    };
    let cache = cache_in_front_of(backend, &fake, &upstream_credentials(HUB, USER, PASSWORD));
    let r = get(&format!("{}/v2/lie/redirect/blobs/{digest}", cache.url())).expect_for(200, "redirected blob");
    eqnice!(digest, sha256_digest(&r.body), "digest of the redirected blob");
    assert!(cache.blob(&digest).unwrap() == blob, "cached blob differs");

    // The upstream got the token (so there was a credential to leak)...
    let token_requests = fake.record.matching("GET", "/token");
    eqnice!(1, token_requests.len(), "{}", fake.record.dump());
    eqnice!(vec!["fake.registry.test".to_string()], query_values(&token_requests[0].target, "service"));
    let blob_gets = fake.record.matching("GET", &format!("/v2/lie/redirect/blobs/{digest}"));
    let authorized: BTreeSet<Option<String>> =
        blob_gets.iter().map(|s| s.header("Authorization").map(str::to_string)).collect();
    assert!(authorized.contains(&Some(format!("Bearer {TOKEN}"))), "{blob_gets:?}");
    // ...and the redirect target got none of it.
    let cdn_requests = cdn.record.all();
    eqnice!(1, cdn_requests.len(), "{}", cdn.record.dump());
    for (name, value) in &cdn_requests[0].headers {
        assert!(
            !name.eq_ignore_ascii_case("authorization") && !value.contains(TOKEN) && !value.contains(PASSWORD),
            "credential leaked to the redirect target: {name}: {value}"
        );
    }
    cache.assert_log_lacks(PASSWORD, "the upstream password");
    cache.assert_log_lacks(TOKEN, "the upstream token");
}

/// A push's existence checks (blob HEADs on a hostless name none of whose manifests came from
/// upstream) are answered locally: nothing of the push reaches the upstreams. Once a manifest
/// of a repository was pulled through, its blob HEADs do ask upstream.
fn push_existence_checks_never_reach_the_upstream(backend: Backend) {
    let blob = pattern("pushed", 1000);
    let digest = sha256_digest(&blob);
    let config = br#"{"os":"linux"}"#.to_vec();
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": blob.len()}],
    }))
    .unwrap();
    let fake = {
        let (manifest, blob) = (manifest.clone(), blob.clone());
        Fake::start(move |seen| {
            let path = seen.path();
            if path == "/v2/library/cached/manifests/1" {
                reply(200, &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")], &manifest)
            } else if path.starts_with("/v2/library/cached/blobs/") {
                reply(200, &[("Content-Type", "application/octet-stream")], &blob)
            } else {
                error_reply(404, "NAME_UNKNOWN", "no", &[])
            }
        })
    };
    let cache = cache_in_front_of(backend, &fake, "");
    let base = cache.url();
    // What docker push does before uploading: HEAD each blob.
    send("HEAD", &format!("{base}/v2/pushed/blobs/{digest}"), &[], None).expect_for(404, "push check");
    send("POST", &format!("{base}/v2/pushed/blobs/uploads/?digest={digest}"), &[], Some(&blob)).expect_for(201, "push");
    eqnice!(0, fake.record.all().len(), "the upstream saw: {}", fake.record.dump());
    // A pulled-through repository: its manifest came from upstream, so its blobs may too.
    get(&format!("{base}/v2/cached/manifests/1")).expect_for(200, "pull manifest");
    send("HEAD", &format!("{base}/v2/cached/blobs/{digest}"), &[], None).expect_for(200, "pull check");
    eqnice!(1, fake.record.count("HEAD", &format!("/v2/library/cached/blobs/{digest}")), "{}", fake.record.dump());
}
