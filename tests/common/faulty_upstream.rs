//! A fault-injecting registry upstream for the pull-through and push-through fault tests
//! (`tests/faults.rs`): a thread with a std `TcpListener` on 127.0.0.1:0 that speaks just enough
//! of the distribution API to be a healthy registry (`/v2/`, manifest GET/HEAD/PUT, blob
//! GET/HEAD, upload POST and `PUT ?digest=` with the digest checked), one request per
//! connection. A rule the test supplies may pick a [`Fault`] for any request instead: a reset
//! mid-body (`SO_LINGER` 0, so the peer sees an RST, not a clean end), a slow drip, flipped
//! bytes, a lying `Content-Length`, garbage instead of HTTP. Every request is recorded.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::sha256_digest;

/// What the upstream does instead of answering a request the healthy way.
#[derive(Clone, Debug)]
pub enum Fault {
    /// For a request with a body (an upload), read `after` bytes of it; otherwise send the
    /// healthy response's head and the first `after` bytes of its body. Then reset the
    /// connection (RST).
    Reset { after: usize },
    /// Reset the connection as soon as the request head is read.
    ResetNow,
    /// The healthy response, `step` bytes (head included) every `every`.
    Drip { step: usize, every: Duration },
    /// The healthy response with the last byte of its body flipped (same length), dripped when
    /// `drip` says so.
    Flip { drip: Option<(usize, Duration)> },
    /// A `Content-Length` of `len`, less than the body, and only that many bytes.
    ShortLength(usize),
    /// These bytes instead of a response, then a close.
    Garbage(Vec<u8>),
    /// A 200 with the healthy headers (its `Content-Length` corrected) and this body.
    Body(Vec<u8>),
}

impl Fault {
    /// A short description for messages (garbage bytes not included).
    pub fn describe(&self) -> String {
        match self {
            Fault::Reset { after } => format!("reset after {after} bytes"),
            Fault::ResetNow => "reset before answering".to_string(),
            Fault::Drip { step, every } => format!("drip {step} bytes every {every:?}"),
            Fault::Flip { drip: None } => "wrong bytes".to_string(),
            Fault::Flip { drip: Some((step, every)) } => format!("wrong bytes, dripped {step} every {every:?}"),
            Fault::ShortLength(len) => format!("Content-Length {len}, short of the content"),
            Fault::Garbage(bytes) => format!("{} bytes of garbage instead of HTTP", bytes.len()),
            Fault::Body(bytes) => format!("a 200 with {} bytes of garbage as the body", bytes.len()),
        }
    }
}

/// A request as the upstream read it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("Content-Length").and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

type Rule = dyn Fn(&Seen) -> Option<Fault> + Send + Sync;

/// Manifests by (repository, tag or digest): (media type, bytes).
type Manifests = HashMap<(String, String), (String, Vec<u8>)>;

/// What the upstream holds: blobs by digest, manifests by (repository, tag or digest).
#[derive(Default)]
struct Content {
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    manifests: Mutex<Manifests>,
    uploads: AtomicUsize,
}

pub struct FaultyUpstream {
    pub addr: String,
    content: Arc<Content>,
    log: Arc<Log>,
    stopped: Arc<AtomicBool>,
}

/// Requests seen, with a condvar for tests that wait for one.
#[derive(Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    changed: Condvar,
}

impl Log {
    fn push(&self, seen: Seen) {
        self.seen.lock().expect("log lock").push(seen);
        self.changed.notify_all();
    }
}

impl FaultyUpstream {
    /// Starts listening; `rule` is asked about every request (`None`: answer it healthily).
    pub fn start(rule: impl Fn(&Seen) -> Option<Fault> + Send + Sync + 'static) -> FaultyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake upstream");
        let addr = listener.local_addr().expect("local address").to_string();
        let upstream = FaultyUpstream {
            addr,
            content: Arc::default(),
            log: Arc::default(),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let rule: Arc<Rule> = Arc::new(rule);
        let (content, log, stopped) =
            (Arc::clone(&upstream.content), Arc::clone(&upstream.log), Arc::clone(&upstream.stopped));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (rule, content, log, stopped) =
                    (Arc::clone(&rule), Arc::clone(&content), Arc::clone(&log), Arc::clone(&stopped));
                thread::spawn(move || {
                    let _ = connection(stream, &*rule, &content, &log, &stopped);
                });
            }
        });
        upstream
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stores a blob; returns its digest.
    pub fn add_blob(&self, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        self.content.blobs.lock().expect("blobs lock").insert(digest.clone(), bytes.to_vec());
        digest
    }

    /// Stores a manifest under `repo:tag` and under its digest; returns the digest.
    pub fn add_manifest(&self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let mut manifests = self.content.manifests.lock().expect("manifests lock");
        for reference in [tag, digest.as_str()] {
            manifests.insert((repo.to_string(), reference.to_string()), (media_type.to_string(), bytes.to_vec()));
        }
        digest
    }

    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.content.blobs.lock().expect("blobs lock").get(digest).cloned()
    }

    /// (media type, bytes) of `repo:reference`.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
        self.content.manifests.lock().expect("manifests lock").get(&(repo.to_string(), reference.to_string())).cloned()
    }

    /// Requests whose method is `method` and whose path starts with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        let seen = self.log.seen.lock().expect("log lock");
        seen.iter().filter(|s| s.method == method && s.path().starts_with(prefix)).count()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.log.seen.lock().expect("log lock").clone()
    }

    /// Waits (at most `limit`) until `count(method, prefix)` reaches `n`; false on timeout.
    pub fn wait_for(&self, method: &str, prefix: &str, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut seen = self.log.seen.lock().expect("log lock");
        loop {
            if seen.iter().filter(|s| s.method == method && s.path().starts_with(prefix)).count() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            seen = self.log.changed.wait_timeout(seen, left).expect("log lock").0;
        }
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Makes the next close of `stream` a reset (RST) rather than an orderly FIN.
pub fn reset(stream: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt(2) on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn connection(stream: TcpStream, rule: &Rule, content: &Content, log: &Log, stopped: &AtomicBool) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let Some(request_line) = lines.first() else { return Ok(()) };
    let mut parts = request_line.split_whitespace();
    let seen = Seen {
        method: parts.next().unwrap_or("").to_string(),
        target: parts.next().unwrap_or("").to_string(),
        headers: lines[1..]
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect(),
    };
    log.push(seen.clone());
    let fault = rule(&seen);
    let body_len = seen.content_length();
    match &fault {
        Some(Fault::ResetNow) => {
            reset(stream);
            return Ok(());
        }
        Some(Fault::Reset { after }) if body_len > 0 => {
            let mut part = vec![0u8; (*after).min(body_len)];
            reader.read_exact(&mut part)?;
            reset(stream);
            return Ok(());
        }
        _ => {}
    }
    let mut body = Vec::with_capacity(body_len);
    reader.by_ref().take(body_len as u64).read_to_end(&mut body)?;
    let (status, headers, mut payload) = healthy(&seen, &body, content);
    let head = |headers: &[(String, String)], len: usize| {
        let mut text = format!("HTTP/1.1 {status} {}\r\nConnection: close\r\n", reason(status));
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&format!("Content-Length: {len}\r\n\r\n"));
        text.into_bytes()
    };
    let head_request = seen.method == "HEAD";
    let mut stream = stream;
    let whole = |payload: &[u8]| {
        let mut bytes = head(&headers, payload.len());
        if !head_request {
            bytes.extend_from_slice(payload);
        }
        bytes
    };
    match fault {
        None => stream.write_all(&whole(&payload))?,
        Some(Fault::Reset { after }) => {
            let mut bytes = head(&headers, payload.len());
            bytes.extend_from_slice(&payload[..after.min(payload.len())]);
            stream.write_all(&bytes)?;
            stream.flush()?;
            reset(stream);
            return Ok(());
        }
        Some(Fault::Drip { step, every }) => drip(&mut stream, &whole(&payload), step, every, stopped)?,
        Some(Fault::Flip { drip: dripping }) => {
            if let Some(last) = payload.last_mut() {
                *last ^= 0xff;
            }
            match dripping {
                Some((step, every)) => drip(&mut stream, &whole(&payload), step, every, stopped)?,
                None => stream.write_all(&whole(&payload))?,
            }
        }
        Some(Fault::ShortLength(len)) => {
            let len = len.min(payload.len());
            let mut bytes = head(&headers, len);
            bytes.extend_from_slice(&payload[..len]);
            stream.write_all(&bytes)?;
        }
        Some(Fault::Garbage(bytes)) => stream.write_all(&bytes)?,
        Some(Fault::Body(bytes)) => stream.write_all(&whole(&bytes))?,
        Some(Fault::ResetNow) => unreachable!("handled above"),
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// Writes `bytes` `step` at a time with a pause of `every` between, until done, the client
/// leaves or the upstream stops.
fn drip(stream: &mut TcpStream, bytes: &[u8], step: usize, every: Duration, stopped: &AtomicBool) -> io::Result<()> {
    for piece in bytes.chunks(step.max(1)) {
        if stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        stream.write_all(piece)?;
        stream.flush()?;
        thread::sleep(every);
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Whatever",
    }
}

fn error(status: u16, code: &str, message: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let body = serde_json::to_vec(&json!({"errors": [{"code": code, "message": message}]})).unwrap_or_default();
    (status, vec![("Content-Type".into(), "application/json".into())], body)
}

/// The healthy answer to a request: (status, headers without Content-Length, body).
fn healthy(seen: &Seen, body: &[u8], content: &Content) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let path = seen.path();
    let method = seen.method.as_str();
    if path == "/v2/" || path == "/v2" {
        return (200, vec![("Content-Type".into(), "application/json".into())], b"{}".to_vec());
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return error(404, "NAME_UNKNOWN", "no such path") };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        let key = (repo.to_string(), reference.to_string());
        return match method {
            "GET" | "HEAD" => match content.manifests.lock().expect("manifests lock").get(&key) {
                Some((media_type, bytes)) => (
                    200,
                    vec![
                        ("Content-Type".into(), media_type.clone()),
                        ("Docker-Content-Digest".into(), sha256_digest(bytes)),
                    ],
                    bytes.clone(),
                ),
                None => error(404, "MANIFEST_UNKNOWN", "no such manifest"),
            },
            "PUT" => {
                let media_type = seen.header("Content-Type").unwrap_or("").to_string();
                let digest = sha256_digest(body);
                let mut manifests = content.manifests.lock().expect("manifests lock");
                for r in [reference, digest.as_str()] {
                    manifests.insert((repo.to_string(), r.to_string()), (media_type.clone(), body.to_vec()));
                }
                let location = format!("/v2/{repo}/manifests/{digest}");
                (201, vec![("Location".into(), location), ("Docker-Content-Digest".into(), digest)], Vec::new())
            }
            _ => error(405, "UNSUPPORTED", "method"),
        };
    }
    if let Some((repo, id)) = rest.rsplit_once("/blobs/uploads/") {
        return match method {
            "POST" => {
                let n = content.uploads.fetch_add(1, Ordering::SeqCst);
                (202, vec![("Location".into(), format!("/v2/{repo}/blobs/uploads/u{n}"))], Vec::new())
            }
            "PUT" if !id.is_empty() => {
                let wanted = seen
                    .target
                    .split_once('?')
                    .map(|(_, q)| q)
                    .unwrap_or("")
                    .split('&')
                    .find_map(|p| p.strip_prefix("digest="))
                    .map(|d| d.replace("%3A", ":").replace("%3a", ":"))
                    .unwrap_or_default();
                let digest = sha256_digest(body);
                if digest != wanted {
                    return error(400, "DIGEST_INVALID", &format!("got {digest}, want {wanted}"));
                }
                content.blobs.lock().expect("blobs lock").insert(digest.clone(), body.to_vec());
                let location = format!("/v2/{repo}/blobs/{digest}");
                (201, vec![("Location".into(), location), ("Docker-Content-Digest".into(), digest)], Vec::new())
            }
            _ => error(405, "UNSUPPORTED", "method"),
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return match (method, content.blobs.lock().expect("blobs lock").get(digest)) {
            ("GET" | "HEAD", Some(bytes)) => (
                200,
                vec![
                    ("Content-Type".into(), "application/octet-stream".into()),
                    ("Docker-Content-Digest".into(), digest.to_string()),
                ],
                bytes.clone(),
            ),
            ("GET" | "HEAD", None) => error(404, "BLOB_UNKNOWN", "no such blob"),
            _ => error(405, "UNSUPPORTED", "method"),
        };
    }
    error(404, "NAME_UNKNOWN", "no such path")
}
