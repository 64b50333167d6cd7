//! The fault suite of issue 10: whatever breaks, glci never loses or corrupts data.
//!
//! - **kill -9** ([`kill_9_at_random_points_never_loses_an_acknowledged_write`]): rounds of a
//!   random operation mix (monolithic, chunked and streamed blob pushes, manifest and index PUTs
//!   by tag or digest, cross-repository mounts, tag, manifest and blob deletes, `clean` through
//!   the admin API and offline with `--storage`) on one storage directory, each round ended by a
//!   SIGKILL of the server (after a random number of body bytes, or a random delay into a burst
//!   of operations) or of an offline `clean`. After every kill the server restarts and the store
//!   gets a full consistency check, through the API and on disk (`common::consistency`), plus a
//!   check of every write the client was told succeeded (201/202): each must still be there,
//!   unless the suite itself deleted or cleaned it since ("data lost" must be 0). Interrupted
//!   upload sessions are resumed after the restart. Randomised but seeded: the seed is printed,
//!   on failure too, and `GLCI_FAULT_SEED=N` replays its choices (the kill moments depend on
//!   timing).
//! - **full disk** ([`full_disk_answers_507_keeps_nothing_partial_and_recovers`]): a storage
//!   directory on an 8 MiB tmpfs (or a loop-mounted ext4 image) that fills up mid-push.
//! - **upstream faults** ([`pull_through_resets_drips_and_garbage_are_never_cached`],
//!   [`push_through_resets_and_garbage_fail_the_push_and_a_retry_completes_it`]): a registry
//!   upstream (`common::faulty_upstream`) that resets mid-blob, drips, and answers garbage.
//!   Wrong blob bytes, truncated bodies, bad JSON, digest lies, 5xx/429 and hanging or stalled
//!   upstreams are covered by `tests/pull_through.rs`; a stopped upstream and rejected
//!   credentials for push-through by `tests/push_through.rs`.
//!
//! Everything listens on 127.0.0.1 only. The full-disk test mounts a filesystem, so it needs
//! root (as `make test` in CI runs); without it, it fails and says why.
#![allow(clippy::unwrap_used)]
// Tests spawn processes and read the environment; clippy.toml's disallowed-methods is for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::consistency::{self, check_api, check_disk, describe, MANIFEST_ACCEPT, OCI_INDEX, OCI_MANIFEST};
use common::faulty_upstream::{Fault, FaultyUpstream};
use common::http::{self, basic, Connection, Request, Response};
use common::store_fixture::{write_images, write_unreferenced_blobs};
use common::{glci, pattern, pattern_digest, sha256_digest, temp_dir, Pattern, ServeProcess, TEST_CONFIG};
use serde_json::{json, Value};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// Client-side timeout of every request: a stuck server fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const OCTETS: (&str, &str) = ("Content-Type", "application/octet-stream");

// =============================================================================================
// Seeded randomness

/// splitmix64: tiny, deterministic, good enough to pick operations and kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_4769_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// `GLCI_FAULT_SEED` (decimal or 0x-hex), else one from the clock.
fn seed() -> u64 {
    match std::env::var("GLCI_FAULT_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("GLCI_FAULT_SEED={text:?} is not a number"))
        }
        Err(_) => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            (nanos as u64) ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// Prints the seed if the test panics, so the run can be replayed.
struct SeedNote(u64);

impl Drop for SeedNote {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("fault suite failed with seed {0}: replay with GLCI_FAULT_SEED={0}", self.0);
        }
    }
}

// =============================================================================================
// The client side: requests that may be cut by a kill

/// Where a [`Wire`] kills the server.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// After this many body bytes (all requests of an operation counted together).
    Bytes(u64),
    /// After the last request of the operation is sent, before its response is read.
    BeforeLastResponse,
}

/// Why a request got no answer.
#[derive(Debug)]
enum Fail {
    /// Nothing of the operation reached the server (it was not listening any more).
    NotSent(String),
    /// Something was sent and no complete response came: the outcome is unknown.
    Lost(String),
}

enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// Bytes `start..end` of the pattern `seed`, with a `Content-Length`.
    Pattern {
        seed: &'a str,
        start: u64,
        end: u64,
    },
    /// The same, with `Transfer-Encoding: chunked` (docker's streamed PATCH).
    Chunked {
        seed: &'a str,
        start: u64,
        end: u64,
    },
}

/// Requests of one operation, one connection each (`Connection: close`), optionally killing
/// the server (SIGKILL to `pid`) at a chosen point.
struct Wire<'a> {
    addr: &'a str,
    kill: Option<(libc::pid_t, KillAt)>,
    fired: bool,
    written: u64,
    sent_any: bool,
}

impl<'a> Wire<'a> {
    fn new(addr: &'a str) -> Wire<'a> {
        Wire { addr, kill: None, fired: false, written: 0, sent_any: false }
    }

    fn killing(addr: &'a str, pid: u32, at: KillAt) -> Wire<'a> {
        Wire { kill: Some((libc::pid_t::try_from(pid).unwrap(), at)), ..Wire::new(addr) }
    }

    fn fire(&mut self) {
        if let Some((pid, _)) = self.kill {
            if !self.fired {
                // SAFETY: kill(2) on the server this test spawned (reaped later by its handle).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                self.fired = true;
            }
        }
    }

    /// Bytes that may still be written before the kill point.
    fn budget(&self) -> u64 {
        match self.kill {
            Some((_, KillAt::Bytes(n))) if !self.fired => n.saturating_sub(self.written),
            _ => u64::MAX,
        }
    }

    fn lost(&self, what: impl std::fmt::Display) -> Fail {
        if self.sent_any {
            Fail::Lost(what.to_string())
        } else {
            Fail::NotSent(what.to_string())
        }
    }

    fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        last: bool,
    ) -> Result<Response, Fail> {
        let mut stream = http::connect(self.addr, IO_TIMEOUT).map_err(|e| self.lost(format!("connect: {e}")))?;
        let mut request = Request::new(self.addr, method, target).headers(headers).close();
        request = match &body {
            Body::Empty => request.header("Content-Length", "0"),
            Body::Bytes(b) => request.header("Content-Length", &b.len().to_string()),
            Body::Pattern { start, end, .. } => request.header("Content-Length", &(end - start).to_string()),
            Body::Chunked { .. } => request.header("Transfer-Encoding", "chunked"),
        };
        stream.write_all(&request.head()).map_err(|e| self.lost(format!("{method} {target}: {e}")))?;
        self.sent_any = true;
        let write = |wire: &mut Wire, stream: &mut std::net::TcpStream, bytes: &[u8]| -> Result<(), Fail> {
            stream.write_all(bytes).map_err(|e| Fail::Lost(format!("{method} {target}: {e}")))?;
            wire.written += bytes.len() as u64;
            Ok(())
        };
        match body {
            Body::Empty => {}
            Body::Bytes(bytes) => {
                let take = (bytes.len() as u64).min(self.budget()) as usize;
                write(self, &mut stream, &bytes[..take])?;
            }
            Body::Pattern { seed, start, end } | Body::Chunked { seed, start, end } => {
                let chunked = matches!(body, Body::Chunked { .. });
                let mut reader = Pattern::new(seed, start, end);
                let mut buf = vec![0u8; 64 * KIB as usize];
                loop {
                    let want = (buf.len() as u64).min(self.budget()) as usize;
                    let n = if want == 0 { 0 } else { reader.read(&mut buf[..want]).unwrap() };
                    if n == 0 {
                        break;
                    }
                    if chunked {
                        stream
                            .write_all(format!("{n:x}\r\n").as_bytes())
                            .map_err(|e| Fail::Lost(format!("{method} {target}: {e}")))?;
                    }
                    write(self, &mut stream, &buf[..n])?;
                    if chunked {
                        stream.write_all(b"\r\n").map_err(|e| Fail::Lost(format!("{method} {target}: {e}")))?;
                    }
                }
                if chunked && self.budget() > 0 {
                    stream.write_all(b"0\r\n\r\n").map_err(|e| Fail::Lost(format!("{method} {target}: {e}")))?;
                }
            }
        }
        if self.budget() == 0 || (last && matches!(self.kill, Some((_, KillAt::BeforeLastResponse)))) {
            self.fire();
            return Err(Fail::Lost(format!("{method} {target}: killed after {} body bytes", self.written)));
        }
        http::read_response(&mut BufReader::new(stream), method, Connection::Close)
            .map_err(|e| Fail::Lost(format!("{method} {target}: {e}")))
    }
}

/// One plain request on its own connection.
fn request(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Request::new(addr, method, target).headers(headers).body(body).close().timeout(IO_TIMEOUT).send()
}

/// `target` with `key=value` added to its query.
fn with_query(target: &str, key: &str, value: &str) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}{key}={value}")
}

// =============================================================================================
// What the client was told, and what it may expect

#[derive(Clone)]
struct Doc {
    bytes: Vec<u8>,
    media_type: &'static str,
    /// Config and layers.
    blobs: Vec<String>,
    /// Index entries.
    children: Vec<String>,
}

impl std::fmt::Debug for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({} bytes)", self.media_type, sha256_digest(&self.bytes), self.bytes.len())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upload {
    Monolithic,
    /// PATCHes with `Content-Range`, the last piece in the closing PUT or not.
    Chunked {
        pieces: u64,
        last_in_put: bool,
    },
    /// One PATCH with `Transfer-Encoding: chunked`, then an empty PUT.
    Streamed,
}

/// An operation whose answer never came (the server died): resolved after the restart by
/// looking at what the store says.
#[derive(Clone, Debug)]
enum Pending {
    Blob { repo: String, digest: String, size: u64 },
    Manifest { repo: String, digest: String, tag: Option<String>, doc: Doc, previous: Option<String> },
    DeleteTag { repo: String, tag: String, digest: String },
    DeleteManifest { repo: String, digest: String, tags: Vec<String> },
    DeleteBlob { repo: String, digest: String },
}

/// An upload session the server acknowledged (202) whose blob was not finished: resumed after
/// the restart from the offset the server reports.
#[derive(Clone, Debug)]
struct Session {
    repo: String,
    location: String,
    seed: String,
    size: u64,
    digest: String,
    /// The closing PUT was sent: the server may have finished (and ended) the session.
    closing: bool,
}

/// Everything acknowledged and not deleted since: what must survive any kill.
#[derive(Default)]
struct Model {
    /// repo → digest → size: blobs the repository serves (pushed or mounted).
    blobs: BTreeMap<String, BTreeMap<String, u64>>,
    /// repo → digest → document.
    manifests: BTreeMap<String, BTreeMap<String, Doc>>,
    /// repo → tag → digest.
    tags: BTreeMap<String, BTreeMap<String, String>>,
    /// Tags whose delete was acknowledged (and not pushed again): they must stay gone.
    deleted_tags: BTreeSet<(String, String)>,
    pending: Vec<Pending>,
    sessions: Vec<Session>,
    /// Makes every manifest unique.
    counter: u64,
}

const KEEP: [&str; 4] = ["keep/a", "keep/b", "keep/c/deep", "keep/d"];
const TRASH: [&str; 3] = ["trash/x", "trash/y", "trash/z/deep"];
/// The project the suite's `clean`s remove.
const TRASH_PROJECT: &str = "trash";
const TAGS: [&str; 5] = ["t0", "t1", "t2", "latest", "v1.0"];

fn is_trash(repo: &str) -> bool {
    repo.starts_with("trash/")
}

impl Model {
    fn add_blob(&mut self, repo: &str, digest: &str, size: u64) {
        self.blobs.entry(repo.to_string()).or_default().insert(digest.to_string(), size);
    }

    fn add_manifest(&mut self, repo: &str, digest: &str, doc: &Doc) {
        self.manifests.entry(repo.to_string()).or_default().insert(digest.to_string(), doc.clone());
    }

    fn set_tag(&mut self, repo: &str, tag: &str, digest: &str) {
        self.tags.entry(repo.to_string()).or_default().insert(tag.to_string(), digest.to_string());
        self.deleted_tags.remove(&(repo.to_string(), tag.to_string()));
    }

    fn drop_tag(&mut self, repo: &str, tag: &str) {
        if let Some(tags) = self.tags.get_mut(repo) {
            tags.remove(tag);
        }
        self.deleted_tags.insert((repo.to_string(), tag.to_string()));
    }

    fn tag(&self, repo: &str, tag: &str) -> Option<String> {
        self.tags.get(repo).and_then(|t| t.get(tag)).cloned()
    }

    /// A manifest deleted by digest: it and every tag on it.
    fn drop_manifest(&mut self, repo: &str, digest: &str) {
        if let Some(m) = self.manifests.get_mut(repo) {
            m.remove(digest);
        }
        let tags: Vec<String> = self
            .tags
            .get(repo)
            .map(|t| t.iter().filter(|(_, d)| *d == digest).map(|(t, _)| t.clone()).collect())
            .unwrap_or_default();
        for tag in tags {
            self.drop_tag(repo, &tag);
        }
    }

    /// After a `clean` of the trash project started (finished or killed): nothing of it is
    /// expected any more, and neither is a blob no surviving manifest names (with grace 0,
    /// `clean` sweeps unreferenced blobs everywhere).
    fn after_clean(&mut self) {
        self.blobs.retain(|repo, _| !is_trash(repo));
        self.manifests.retain(|repo, _| !is_trash(repo));
        self.tags.retain(|repo, _| !is_trash(repo));
        self.deleted_tags.retain(|(repo, _)| !is_trash(repo));
        let mut named: BTreeSet<String> = BTreeSet::new();
        for docs in self.manifests.values() {
            for (digest, doc) in docs {
                named.insert(digest.clone());
                named.extend(doc.blobs.iter().cloned());
                named.extend(doc.children.iter().cloned());
            }
        }
        for blobs in self.blobs.values_mut() {
            blobs.retain(|digest, _| named.contains(digest));
        }
    }

    /// Digests of `repo`'s blobs that none of its manifests references.
    fn unreferenced_blobs(&self, repo: &str) -> Vec<String> {
        let used: BTreeSet<&String> =
            self.manifests.get(repo).into_iter().flat_map(|m| m.values()).flat_map(|d| d.blobs.iter()).collect();
        self.blobs.get(repo).into_iter().flat_map(|b| b.keys()).filter(|d| !used.contains(d)).cloned().collect()
    }

    /// Image manifests of `repo` that no index of `repo` lists.
    fn deletable_manifests(&self, repo: &str) -> Vec<String> {
        let Some(docs) = self.manifests.get(repo) else { return Vec::new() };
        let children: BTreeSet<&String> = docs.values().flat_map(|d| d.children.iter()).collect();
        docs.keys().filter(|d| !children.contains(d)).cloned().collect()
    }

    fn acknowledged(&self) -> usize {
        self.blobs.values().map(BTreeMap::len).sum::<usize>()
            + self.manifests.values().map(BTreeMap::len).sum::<usize>()
            + self.tags.values().map(BTreeMap::len).sum::<usize>()
            + self.deleted_tags.len()
    }
}

#[derive(Default)]
struct Stats {
    kills: u32,
    kills_by: BTreeMap<&'static str, u32>,
    ops: u32,
    ops_by: BTreeMap<&'static str, u32>,
    /// 201/202 answers the client got.
    acknowledged: u32,
    /// Checks of acknowledged writes after a restart (each passing one counts).
    verified: u64,
    lost: u64,
    resumed: u32,
    resolved: u32,
    cleans_finished: u32,
    checks: u32,
}

impl Stats {
    fn killed(&mut self, how: &'static str) {
        self.kills += 1;
        *self.kills_by.entry(how).or_default() += 1;
    }

    fn op(&mut self, kind: &'static str) {
        self.ops += 1;
        *self.ops_by.entry(kind).or_default() += 1;
    }
}

// =============================================================================================
// Operations

#[derive(Clone, Debug)]
enum Op {
    Blob {
        repo: String,
        how: Upload,
        seed: String,
        size: u64,
    },
    Manifest {
        repo: String,
        tag: Option<String>,
        doc: Doc,
    },
    Mount {
        from: String,
        to: String,
        digest: String,
        size: u64,
    },
    DeleteTag {
        repo: String,
        tag: String,
    },
    DeleteManifest {
        repo: String,
        digest: String,
    },
    DeleteBlob {
        repo: String,
        digest: String,
    },
    /// `clean --project trash --grace 0` through the admin API.
    Clean,
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Blob { how: Upload::Monolithic, .. } => "blob (monolithic)",
            Op::Blob { how: Upload::Chunked { .. }, .. } => "blob (chunked)",
            Op::Blob { how: Upload::Streamed, .. } => "blob (streamed)",
            Op::Manifest { doc, .. } if doc.media_type == OCI_INDEX => "index",
            Op::Manifest { .. } => "manifest",
            Op::Mount { .. } => "mount",
            Op::DeleteTag { .. } => "delete tag",
            Op::DeleteManifest { .. } => "delete manifest",
            Op::DeleteBlob { .. } => "delete blob",
            Op::Clean => "clean (admin API)",
        }
    }
}

fn blob_size(rng: &mut Rng, big_percent: u64) -> u64 {
    match rng.next() % 100 {
        p if p < big_percent => rng.range(4 * MIB, 6 * MIB),
        p if p < 25 + big_percent => rng.range(32 * KIB, MIB),
        _ => rng.range(1, 32 * KIB),
    }
}

fn upload_kind(rng: &mut Rng) -> Upload {
    match rng.next() % 10 {
        0..=4 => Upload::Monolithic,
        5..=7 => Upload::Chunked { pieces: rng.range(1, 3), last_in_put: rng.chance(50) },
        _ => Upload::Streamed,
    }
}

fn all_repos() -> Vec<&'static str> {
    KEEP.iter().chain(TRASH.iter()).copied().collect()
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// The next operation, chosen with `rng` from what `model` holds.
fn next_op(model: &mut Model, rng: &mut Rng, allow_clean: bool) -> Op {
    let repos = all_repos();
    let with_blobs: Vec<&str> =
        repos.iter().copied().filter(|r| model.blobs.get(*r).is_some_and(|b| !b.is_empty())).collect();
    let roll = rng.next() % 100;
    if (34..60).contains(&roll) && !with_blobs.is_empty() {
        let repo = *rng.pick(&with_blobs);
        let blobs: Vec<(String, u64)> = model.blobs[repo].iter().map(|(d, s)| (d.clone(), *s)).collect();
        let images: Vec<(String, u64)> = model
            .manifests
            .get(repo)
            .map(|m| {
                m.iter()
                    .filter(|(_, d)| d.media_type == OCI_MANIFEST)
                    .map(|(k, d)| (k.clone(), d.bytes.len() as u64))
                    .collect()
            })
            .unwrap_or_default();
        model.counter += 1;
        let note = format!("fault suite manifest {}", model.counter);
        let doc = if !images.is_empty() && rng.chance(18) {
            let n = rng.range(1, images.len().min(3) as u64);
            let children: Vec<(String, u64)> =
                (0..n).map(|_| rng.pick(&images).clone()).collect::<BTreeMap<_, _>>().into_iter().collect();
            let bytes = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": children.iter().map(|(d, s)| descriptor(OCI_MANIFEST, d, *s)).collect::<Vec<_>>(),
                "annotations": { "note": note },
            }))
            .unwrap();
            Doc {
                bytes,
                media_type: OCI_INDEX,
                blobs: Vec::new(),
                children: children.into_iter().map(|(d, _)| d).collect(),
            }
        } else {
            let config = rng.pick(&blobs).clone();
            let layers: Vec<(String, u64)> = (0..rng.range(0, 3)).map(|_| rng.pick(&blobs).clone()).collect();
            let layer_refs: Vec<(&str, u64)> = layers.iter().map(|(d, s)| (d.as_str(), *s)).collect();
            let bytes = image_manifest((&config.0, config.1), &layer_refs, &note);
            let mut named = vec![config.0];
            named.extend(layers.into_iter().map(|(d, _)| d));
            Doc { bytes, media_type: OCI_MANIFEST, blobs: named, children: Vec::new() }
        };
        let tag = rng.chance(80).then(|| rng.pick(&TAGS).to_string());
        return Op::Manifest { repo: repo.to_string(), tag, doc };
    }
    if (60..70).contains(&roll) && !with_blobs.is_empty() {
        let from = *rng.pick(&with_blobs);
        let (digest, size) = {
            let blobs: Vec<(&String, &u64)> = model.blobs[from].iter().collect();
            let (d, s) = rng.pick(&blobs);
            ((*d).clone(), **s)
        };
        let to = rng.pick(&repos).to_string();
        if to != from {
            return Op::Mount { from: from.to_string(), to, digest, size };
        }
    }
    if (70..78).contains(&roll) {
        let tagged: Vec<(String, String)> =
            model.tags.iter().flat_map(|(r, t)| t.keys().map(move |tag| (r.clone(), tag.clone()))).collect();
        if !tagged.is_empty() {
            let (repo, tag) = rng.pick(&tagged).clone();
            return Op::DeleteTag { repo, tag };
        }
    }
    if (78..84).contains(&roll) {
        let candidates: Vec<(String, String)> = repos
            .iter()
            .flat_map(|r| model.deletable_manifests(r).into_iter().map(move |d| (r.to_string(), d)))
            .collect();
        if !candidates.is_empty() {
            let (repo, digest) = rng.pick(&candidates).clone();
            return Op::DeleteManifest { repo, digest };
        }
    }
    if (84..88).contains(&roll) {
        // Only where the model knows every manifest: in a trash repository one that a killed
        // clean spared may still reference the blob.
        let candidates: Vec<(String, String)> = KEEP
            .iter()
            .flat_map(|r| model.unreferenced_blobs(r).into_iter().map(move |d| (r.to_string(), d)))
            .collect();
        if !candidates.is_empty() {
            let (repo, digest) = rng.pick(&candidates).clone();
            return Op::DeleteBlob { repo, digest };
        }
    }
    if (88..92).contains(&roll) && allow_clean {
        return Op::Clean;
    }
    model.counter += 1;
    let seed = format!("fault blob {} {}", model.counter, rng.next());
    Op::Blob { repo: rng.pick(&repos).to_string(), how: upload_kind(rng), seed, size: blob_size(rng, 3) }
}

/// How an operation ended for the client.
enum Outcome {
    /// Acknowledged (2xx as the spec says).
    Done,
    /// The server was gone before anything was sent.
    NotSent,
    /// Sent, no answer: the server died during it.
    Unknown(Pending),
    /// A live server refused an operation that was valid against the model: a bug.
    Refused(String),
}

fn refused(what: &str, r: &Response) -> Outcome {
    Outcome::Refused(format!("{what}: {} {}", r.status, r.text()))
}

/// Runs `op`, killing the server where `wire` says; updates `model` with what was acknowledged.
fn run_op(op: &Op, wire: &mut Wire<'_>, model: &mut Model) -> Outcome {
    let outcome = match op {
        Op::Blob { repo, how, seed, size } => {
            let digest = pattern_digest(seed, *size);
            let (result, session) = push_blob(wire, repo, *how, seed, *size, &digest);
            if let Some((location, closing)) = session {
                model.sessions.push(Session {
                    repo: repo.clone(),
                    location,
                    seed: seed.clone(),
                    size: *size,
                    digest: digest.clone(),
                    closing,
                });
            }
            match result {
                Ok(r) if r.status == 201 && r.header("Docker-Content-Digest") == Some(digest.as_str()) => {
                    model.add_blob(repo, &digest, *size);
                    Outcome::Done
                }
                Ok(r) => refused(&format!("push {digest} to {repo} ({how:?})"), &r),
                Err(Fail::NotSent(_)) => Outcome::NotSent,
                Err(Fail::Lost(_)) => Outcome::Unknown(Pending::Blob { repo: repo.clone(), digest, size: *size }),
            }
        }
        Op::Manifest { repo, tag, doc } => {
            let digest = sha256_digest(&doc.bytes);
            let reference = tag.clone().unwrap_or_else(|| digest.clone());
            let target = format!("/v2/{repo}/manifests/{reference}");
            let previous = tag.as_ref().and_then(|t| model.tag(repo, t));
            match wire.send("PUT", &target, &[("Content-Type", doc.media_type)], Body::Bytes(&doc.bytes), true) {
                Ok(r) if r.status == 201 && r.header("Docker-Content-Digest") == Some(digest.as_str()) => {
                    model.add_manifest(repo, &digest, doc);
                    if let Some(tag) = tag {
                        model.set_tag(repo, tag, &digest);
                    }
                    Outcome::Done
                }
                Ok(r) => refused(&format!("PUT {target}"), &r),
                Err(Fail::NotSent(_)) => Outcome::NotSent,
                Err(Fail::Lost(_)) => Outcome::Unknown(Pending::Manifest {
                    repo: repo.clone(),
                    digest,
                    tag: tag.clone(),
                    doc: doc.clone(),
                    previous,
                }),
            }
        }
        Op::Mount { from, to, digest, size } => {
            let target = format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}");
            match wire.send("POST", &target, &[], Body::Empty, true) {
                Ok(r) if r.status == 201 => {
                    model.add_blob(to, digest, *size);
                    Outcome::Done
                }
                Ok(r) => refused(&format!("mount {digest} from {from} into {to}"), &r),
                Err(Fail::NotSent(_)) => Outcome::NotSent,
                Err(Fail::Lost(_)) => {
                    Outcome::Unknown(Pending::Blob { repo: to.clone(), digest: digest.clone(), size: *size })
                }
            }
        }
        Op::DeleteTag { repo, tag } => {
            let digest = model.tag(repo, tag).unwrap_or_default();
            match wire.send("DELETE", &format!("/v2/{repo}/manifests/{tag}"), &[], Body::Empty, true) {
                Ok(r) if r.status == 202 => {
                    model.drop_tag(repo, tag);
                    Outcome::Done
                }
                Ok(r) => refused(&format!("delete tag {repo}:{tag}"), &r),
                Err(Fail::NotSent(_)) => Outcome::NotSent,
                Err(Fail::Lost(_)) => {
                    Outcome::Unknown(Pending::DeleteTag { repo: repo.clone(), tag: tag.clone(), digest })
                }
            }
        }
        Op::DeleteManifest { repo, digest } => {
            let tags: Vec<String> = model
                .tags
                .get(repo)
                .map(|t| t.iter().filter(|(_, d)| *d == digest).map(|(t, _)| t.clone()).collect())
                .unwrap_or_default();
            match wire.send("DELETE", &format!("/v2/{repo}/manifests/{digest}"), &[], Body::Empty, true) {
                Ok(r) if r.status == 202 => {
                    model.drop_manifest(repo, digest);
                    Outcome::Done
                }
                Ok(r) => refused(&format!("delete manifest {repo}@{digest}"), &r),
                Err(Fail::NotSent(_)) => Outcome::NotSent,
                Err(Fail::Lost(_)) => {
                    Outcome::Unknown(Pending::DeleteManifest { repo: repo.clone(), digest: digest.clone(), tags })
                }
            }
        }
        Op::DeleteBlob { repo, digest } => {
            match wire.send("DELETE", &format!("/v2/{repo}/blobs/{digest}"), &[], Body::Empty, true) {
                Ok(r) if r.status == 202 => {
                    if let Some(b) = model.blobs.get_mut(repo) {
                        b.remove(digest);
                    }
                    Outcome::Done
                }
                Ok(r) => refused(&format!("delete blob {repo}@{digest}"), &r),
                Err(Fail::NotSent(_)) => Outcome::NotSent,
                Err(Fail::Lost(_)) => {
                    Outcome::Unknown(Pending::DeleteBlob { repo: repo.clone(), digest: digest.clone() })
                }
            }
        }
        Op::Clean => {
            // Whatever happens, nothing of the trash project is expected from here on.
            model.after_clean();
            let target = format!("/glci/admin/v1/clean?project={TRASH_PROJECT}&grace=0");
            match wire.send("POST", &target, &[], Body::Empty, true) {
                Ok(r) if r.status == 200 => Outcome::Done,
                Ok(r) => refused("clean through the admin API", &r),
                Err(Fail::NotSent(_)) => Outcome::NotSent,
                // A killed clean leaves nothing to resolve: the next open of the store puts back
                // what it had moved aside, and the checks look at everything.
                Err(Fail::Lost(_)) => Outcome::Done,
            }
        }
    };
    outcome
}

/// Pushes the blob `seed`/`size` in the way `how` says; returns the final response (or why
/// none came) and, for a session the server acknowledged but never finished, its `Location` and
/// whether the closing PUT was sent.
fn push_blob(
    wire: &mut Wire<'_>,
    repo: &str,
    how: Upload,
    seed: &str,
    size: u64,
    digest: &str,
) -> (Result<Response, Fail>, Option<(String, bool)>) {
    if how == Upload::Monolithic {
        let target = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        return (wire.send("POST", &target, &[OCTETS], Body::Pattern { seed, start: 0, end: size }, true), None);
    }
    let started = match wire.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], Body::Empty, false) {
        Ok(r) if r.status == 202 => r,
        other => return (other, None),
    };
    let mut location = started.location();
    // From here the session exists on disk; it is resumed if the blob is not finished.
    let unfinished = |result: Result<Response, Fail>, location: &str| match result {
        Err(Fail::Lost(e)) => (Err(Fail::Lost(e)), Some((location.to_string(), false))),
        Err(Fail::NotSent(e)) => (Err(Fail::Lost(e)), Some((location.to_string(), false))),
        Ok(r) => (Ok(r), None),
    };
    let final_piece = match how {
        Upload::Streamed => {
            let r = wire.send("PATCH", &location, &[OCTETS], Body::Chunked { seed, start: 0, end: size }, false);
            match r {
                Ok(r) if r.status == 202 => location = r.location(),
                other => return unfinished(other, &location),
            }
            None
        }
        Upload::Chunked { pieces, last_in_put } => {
            let step = size.div_ceil(pieces).max(1);
            let bounds: Vec<(u64, u64)> =
                (0..size).step_by(step as usize).map(|start| (start, (start + step).min(size))).collect();
            let (patched, last) = match (last_in_put, bounds.split_last()) {
                (true, Some((last, rest))) => (rest.to_vec(), Some(*last)),
                _ => (bounds.clone(), None),
            };
            for (start, end) in patched {
                let range = format!("{start}-{}", end - 1);
                let headers = [OCTETS, ("Content-Range", range.as_str())];
                match wire.send("PATCH", &location, &headers, Body::Pattern { seed, start, end }, false) {
                    Ok(r) if r.status == 202 => location = r.location(),
                    other => return unfinished(other, &location),
                }
            }
            last
        }
        Upload::Monolithic => unreachable!(),
    };
    let target = with_query(&location, "digest", digest);
    let result = match final_piece {
        Some((start, end)) => {
            let range = format!("{start}-{}", end - 1);
            wire.send(
                "PUT",
                &target,
                &[OCTETS, ("Content-Range", range.as_str())],
                Body::Pattern { seed, start, end },
                true,
            )
        }
        None => wire.send("PUT", &target, &[], Body::Empty, true),
    };
    match result {
        Ok(r) => (Ok(r), None),
        // Killed during the closing PUT: the blob may or may not be in, the session may or may
        // not be over.
        Err(e) => (Err(Fail::Lost(format!("{e:?}"))), Some((location, true))),
    }
}

// =============================================================================================
// After a restart: resolve, resume, check

fn head_status(addr: &str, target: &str) -> Result<u16, String> {
    consistency::try_request(addr, "HEAD", target, &[("Accept", MANIFEST_ACCEPT)])
        .map(|r| r.status)
        .map_err(|e| format!("HEAD {target}: {e}"))
}

/// The digest a tag resolves to (`None`: 404).
fn tag_target(addr: &str, repo: &str, tag: &str) -> Result<Option<String>, String> {
    let r = consistency::get_manifest(addr, repo, tag).map_err(|e| format!("GET {repo}:{tag}: {e}"))?;
    match r.status {
        200 => Ok(Some(sha256_digest(&r.body))),
        404 => Ok(None),
        s => Err(format!("GET {repo}:{tag}: {s} {}", r.text())),
    }
}

/// Looks at what the operations cut by the last kill left, and records it in the model.
fn resolve(addr: &str, model: &mut Model, stats: &mut Stats, problems: &mut Vec<String>) {
    for pending in std::mem::take(&mut model.pending) {
        stats.resolved += 1;
        let result: Result<(), String> = (|| {
            match &pending {
                Pending::Blob { repo, digest, size } => match head_status(addr, &format!("/v2/{repo}/blobs/{digest}"))?
                {
                    200 => model.add_blob(repo, digest, *size),
                    404 => {}
                    s => return Err(format!("HEAD blob {repo}@{digest}: {s}")),
                },
                Pending::Manifest { repo, digest, tag, doc, previous } => {
                    let r = consistency::get_manifest(addr, repo, digest).map_err(|e| e.to_string())?;
                    match r.status {
                        200 if r.body == doc.bytes => model.add_manifest(repo, digest, doc),
                        200 => return Err(format!("{repo}@{digest}: other bytes than were pushed")),
                        404 => {}
                        s => return Err(format!("GET {repo}@{digest}: {s}")),
                    }
                    if let Some(tag) = tag {
                        match tag_target(addr, repo, tag)? {
                            Some(d) if &d == digest => model.set_tag(repo, tag, digest),
                            Some(d) if Some(&d) == previous.as_ref() => {}
                            // What a trash repository holds is not known after a clean (killed,
                            // or sparing what was written in its last instant): any manifest
                            // the tag still names is fine, the checks see that it is whole.
                            Some(_) if is_trash(repo) && previous.is_none() => {}
                            Some(d) => return Err(format!("{repo}:{tag} → {d}, neither {digest} nor {previous:?}")),
                            None if previous.is_some() => {
                                stats.lost += 1;
                                return Err(format!(
                                    "data lost: {repo}:{tag} (acknowledged → {previous:?}) vanished when a PUT \
                                     moving it to {digest} was killed"
                                ));
                            }
                            None => {}
                        }
                    }
                }
                Pending::DeleteTag { repo, tag, digest } => match tag_target(addr, repo, tag)? {
                    None => model.drop_tag(repo, tag),
                    Some(d) if &d == digest => {}
                    Some(d) => return Err(format!("{repo}:{tag} → {d} after a killed delete of it (was {digest})")),
                },
                Pending::DeleteManifest { repo, digest, tags } => {
                    match head_status(addr, &format!("/v2/{repo}/manifests/{digest}"))? {
                        404 => model.drop_manifest(repo, digest),
                        200 => {
                            for tag in tags {
                                match tag_target(addr, repo, tag)? {
                                    None => model.drop_tag(repo, tag),
                                    Some(d) if &d == digest => {}
                                    Some(d) => return Err(format!("{repo}:{tag} → {d}, was {digest}")),
                                }
                            }
                        }
                        s => return Err(format!("HEAD {repo}@{digest}: {s}")),
                    }
                }
                Pending::DeleteBlob { repo, digest } => {
                    match head_status(addr, &format!("/v2/{repo}/blobs/{digest}"))? {
                        404 => {
                            if let Some(b) = model.blobs.get_mut(repo) {
                                b.remove(digest);
                            }
                        }
                        200 => {}
                        s => return Err(format!("HEAD blob {repo}@{digest}: {s}")),
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            problems.push(format!("resolving {pending:?}: {e}"));
        }
    }
}

/// Finishes the upload sessions a kill interrupted, from the offset the server reports
/// (sessions live on disk and survive restarts). A session whose blob made it in anyway (the
/// kill hit the closing PUT after the commit) is cancelled instead.
fn resume_sessions(addr: &str, model: &mut Model, stats: &mut Stats, problems: &mut Vec<String>) {
    for session in std::mem::take(&mut model.sessions) {
        let Session { repo, location, seed, size, digest, closing } = &session;
        if model.blobs.get(repo).is_some_and(|b| b.contains_key(digest)) {
            let _ = request(addr, "DELETE", location, &[], b"");
            continue;
        }
        let status = request(addr, "GET", location, &[], b"");
        if status.status == 404 && *closing {
            // The cut PUT ended the session (the blob may be in the content store, not linked:
            // invisible, and a push of it again is deduplicated).
            continue;
        }
        if status.status != 204 {
            stats.lost += 1;
            problems.push(format!(
                "data lost: upload session {location} of {repo} (acknowledged with 202) answers {} {}",
                status.status,
                status.text()
            ));
            continue;
        }
        // `Range: 0-<last>`; "0-0" is either nothing or one byte: try one, the server says.
        let end: u64 =
            status.header("Range").and_then(|r| r.split('-').nth(1)).and_then(|e| e.parse().ok()).unwrap_or(0);
        let mut offset = end + 1;
        let mut location = status.location();
        for attempt in 0..2 {
            let mut wire = Wire::new(addr);
            let result = if offset < *size {
                let range = format!("{offset}-{}", size - 1);
                wire.send(
                    "PATCH",
                    &location,
                    &[OCTETS, ("Content-Range", range.as_str())],
                    Body::Pattern { seed, start: offset, end: *size },
                    false,
                )
            } else {
                Ok(Response::new(202, vec![("Location".into(), location.clone())], Vec::new()))
            };
            match result {
                Ok(r) if r.status == 202 => {
                    location = r.location();
                    break;
                }
                Ok(r) if r.status == 416 && attempt == 0 && end == 0 => offset = 0,
                Ok(r) => {
                    problems.push(format!("resuming {location} at {offset}: {} {}", r.status, r.text()));
                    return;
                }
                Err(e) => {
                    problems.push(format!("resuming {location} at {offset}: {e:?}"));
                    return;
                }
            }
        }
        let r = request(addr, "PUT", &with_query(&location, "digest", digest), &[], b"");
        if r.status == 201 {
            model.add_blob(repo, digest, *size);
            stats.resumed += 1;
            stats.acknowledged += 1;
        } else {
            problems.push(format!("closing resumed upload {location} of {digest}: {} {}", r.status, r.text()));
        }
    }
}

/// The full check after a restart: the store on disk, everything the API serves, and every
/// acknowledged write of the model. Panics with every problem found.
fn verify(addr: &str, storage: &Path, model: &Model, stats: &mut Stats, mut problems: Vec<String>, when: &str) {
    stats.checks += 1;
    let disk = check_disk(storage);
    if disk.is_err() {
        problems.push(format!("on disk:\n{}", describe(&disk)));
    }
    let api = check_api(addr);
    if api.is_err() {
        problems.push(format!("through the API:\n{}", describe(&api)));
    }
    fn lost(what: String, stats: &mut Stats, problems: &mut Vec<String>) {
        stats.lost += 1;
        problems.push(format!("data lost: {what}"));
    }
    for (repo, blobs) in &model.blobs {
        for digest in blobs.keys() {
            match consistency::check_blob(addr, repo, digest) {
                Ok(()) => stats.verified += 1,
                Err(e) => lost(e, stats, &mut problems),
            }
        }
    }
    for (repo, docs) in &model.manifests {
        for (digest, doc) in docs {
            match consistency::get_manifest(addr, repo, digest) {
                Ok(r) if r.status == 200 && r.body == doc.bytes => stats.verified += 1,
                Ok(r) => lost(
                    format!("manifest {repo}@{digest}: {} ({} bytes)", r.status, r.body.len()),
                    stats,
                    &mut problems,
                ),
                Err(e) => lost(format!("manifest {repo}@{digest}: {e}"), stats, &mut problems),
            }
        }
    }
    for (repo, tags) in &model.tags {
        for (tag, digest) in tags {
            match tag_target(addr, repo, tag) {
                Ok(Some(d)) if &d == digest => stats.verified += 1,
                other => lost(format!("tag {repo}:{tag} (acknowledged → {digest}) is {other:?}"), stats, &mut problems),
            }
        }
    }
    for (repo, tag) in &model.deleted_tags {
        match tag_target(addr, repo, tag) {
            Ok(None) => stats.verified += 1,
            other => problems.push(format!("tag {repo}:{tag} was deleted (202) and is back: {other:?}")),
        }
    }
    if !problems.is_empty() {
        panic!("{when}: {} problem(s):\n{}", problems.len(), problems.join("\n"));
    }
}

// =============================================================================================
// The kill -9 suite

/// SIGKILLs the suite injects: rounds go on until there were this many (one per round at
/// most: an offline `clean` may finish before its kill lands).
const KILLS: u32 = 32;
/// Rounds at most (the kills must come well before).
const MAX_ROUNDS: usize = 60;
/// Operations at most in one burst (a burst ends when the server dies).
const MAX_BURST: usize = 80;

/// `glci registry clean --project trash --grace 0 --json --storage DIR` as a child.
fn offline_clean(storage: &Path, home: &Path) -> std::process::Child {
    glci()
        .env("GLCI_HOME", home)
        .args(["registry", "clean", "--project", TRASH_PROJECT, "--grace", "0", "--json", "--storage"])
        .arg(storage)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Plenty for a `clean` of the trash project to remove, written straight to disk while no
/// server runs: a few images under `trash/<name>/` and `garbage` unreferenced blobs, so a kill
/// lands in the clean's removals as often as in its start-up and scan.
fn write_trash_fixture(storage: &Path, name: &str, garbage: usize) {
    let prefix = format!("{TRASH_PROJECT}/{name}");
    write_images(storage, &prefix, 3, 3, 2, 64);
    write_unreferenced_blobs(storage, &prefix, garbage, 64);
}

/// Kills the server with SIGKILL (if a `Wire` has not already) and reaps it.
fn kill9(server: &mut ServeProcess) {
    let status = server.terminate(libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "glci serve should have died of SIGKILL, got {status}");
}

/// Runs operations from `rng` against `addr` until one is cut (the server died) or `limit` ran.
fn burst(addr: &str, model: &mut Model, rng: &mut Rng, stats: &mut Stats, problems: &mut Vec<String>, limit: usize) {
    for _ in 0..limit {
        let op = next_op(model, rng, true);
        let mut wire = Wire::new(addr);
        match run_op(&op, &mut wire, model) {
            Outcome::Done => {
                stats.op(op.kind());
                if !matches!(op, Op::Clean | Op::DeleteBlob { .. } | Op::DeleteTag { .. } | Op::DeleteManifest { .. }) {
                    stats.acknowledged += 1;
                }
            }
            Outcome::NotSent => return,
            Outcome::Unknown(pending) => {
                stats.op(op.kind());
                model.pending.push(pending);
                return;
            }
            Outcome::Refused(e) => {
                stats.op(op.kind());
                problems.push(e);
            }
        }
    }
}

#[test]
fn kill_9_at_random_points_never_loses_an_acknowledged_write() {
    let seed = seed();
    let _note = SeedNote(seed);
    eprintln!("fault suite seed {seed} (GLCI_FAULT_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let work = temp_dir();
    let storage = work.path().join("storage");
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), TEST_CONFIG).unwrap();
    let started = Instant::now();
    let mut model = Model::default();
    let mut stats = Stats::default();

    // Something to work on: a burst that nothing interrupts.
    {
        let server = ServeProcess::start_with_storage(&storage);
        let mut problems = Vec::new();
        burst(&server.addr, &mut model, &mut rng, &mut stats, &mut problems, 25);
        assert!(problems.is_empty() && model.pending.is_empty(), "{problems:?}");
        server.stop();
    }
    // How long an offline clean of a fixture-sized trash project takes here, start-up included
    // (a run nothing interrupts): kills are spread over that.
    let mut clean_estimate = {
        write_trash_fixture(&storage, "fixture-first", 800);
        model.after_clean();
        let begun = Instant::now();
        let out = offline_clean(&storage, &home).wait_with_output().unwrap();
        assert!(out.status.success(), "clean failed: {}", String::from_utf8_lossy(&out.stderr));
        stats.op("clean (offline)");
        let took = begun.elapsed();
        eprintln!("an offline clean of the trash fixture takes {took:?}");
        took
    };

    for round in 0..=MAX_ROUNDS {
        let mut server = ServeProcess::start_with_storage(&storage);
        let addr = server.addr.clone();
        let mut problems = Vec::new();
        resolve(&addr, &mut model, &mut stats, &mut problems);
        resume_sessions(&addr, &mut model, &mut stats, &mut problems);
        verify(&addr, &storage, &model, &mut stats, problems, &format!("round {round}, after the restart"));
        if stats.kills >= KILLS || round == MAX_ROUNDS {
            server.stop();
            break;
        }
        let mut problems = Vec::new();
        match rng.next() % 100 {
            // Kill after a random number of body bytes of a blob push (or just before the
            // answer to its last request: the commit).
            0..=29 => {
                model.counter += 1;
                let blob_seed = format!("fault big blob {} {}", model.counter, rng.next());
                let size = if rng.chance(30) { rng.range(4 * MIB, 6 * MIB) } else { rng.range(64 * KIB, 2 * MIB) };
                let at = if rng.chance(15) { KillAt::BeforeLastResponse } else { KillAt::Bytes(rng.range(0, size)) };
                let op = Op::Blob {
                    repo: rng.pick(&all_repos()).to_string(),
                    how: upload_kind(&mut rng),
                    seed: blob_seed,
                    size,
                };
                let mut wire = Wire::killing(&addr, server.pid(), at);
                stats.op(op.kind());
                match run_op(&op, &mut wire, &mut model) {
                    Outcome::Unknown(pending) => model.pending.push(pending),
                    Outcome::Done => stats.acknowledged += 1,
                    Outcome::NotSent => {}
                    Outcome::Refused(e) => problems.push(e),
                }
                kill9(&mut server);
                stats.killed(match op {
                    Op::Blob { how: Upload::Monolithic, .. } => "mid-push (monolithic)",
                    Op::Blob { how: Upload::Chunked { .. }, .. } => "mid-push (chunked)",
                    _ => "mid-push (streamed)",
                });
            }
            // A burst of random operations, killed after a random delay.
            30..=69 => {
                let delay = Duration::from_micros(rng.range(500, 100_000));
                let mut burst_rng = Rng(rng.next());
                let (done_model, done_stats, done_problems) = thread::scope(|scope| {
                    let addr = addr.clone();
                    let (mut m, mut s) = (std::mem::take(&mut model), std::mem::take(&mut stats));
                    let worker = scope.spawn(move || {
                        let mut p = Vec::new();
                        burst(&addr, &mut m, &mut burst_rng, &mut s, &mut p, MAX_BURST);
                        (m, s, p)
                    });
                    thread::sleep(delay);
                    kill9(&mut server);
                    worker.join().unwrap()
                });
                (model, stats) = (done_model, done_stats);
                problems.extend(done_problems);
                stats.killed("mid-burst (delay)");
            }
            // Fill the trash project, stop the server, and kill an offline clean.
            _ => {
                for _ in 0..rng.range(3, 10) {
                    let op = loop {
                        let op = next_op(&mut model, &mut rng, false);
                        let target = match &op {
                            Op::Blob { repo, .. } | Op::Manifest { repo, .. } => repo.clone(),
                            Op::Mount { to, .. } => to.clone(),
                            _ => String::new(),
                        };
                        if is_trash(&target) {
                            break op;
                        }
                    };
                    stats.op(op.kind());
                    match run_op(&op, &mut Wire::new(&addr), &mut model) {
                        Outcome::Done => stats.acknowledged += 1,
                        Outcome::Refused(e) => problems.push(e),
                        _ => problems.push(format!("{op:?}: no answer from a live server")),
                    }
                }
                server.stop();
                write_trash_fixture(&storage, &format!("fixture-{round}"), rng.range(500, 900) as usize);
                model.after_clean();
                let delay = clean_estimate.mul_f64(rng.range(25, 110) as f64 / 100.0);
                let begun = Instant::now();
                let mut child = offline_clean(&storage, &home);
                thread::sleep(delay);
                if child.try_wait().unwrap().is_some() {
                    let out = child.wait_with_output().unwrap();
                    assert!(out.status.success(), "clean failed: {}", String::from_utf8_lossy(&out.stderr));
                    stats.cleans_finished += 1;
                    clean_estimate = clean_estimate.min(begun.elapsed());
                } else {
                    child.kill().unwrap();
                    let out = child.wait_with_output().unwrap();
                    if out.status.signal() == Some(libc::SIGKILL) {
                        stats.killed("offline clean");
                    } else {
                        // It finished between the look and the kill.
                        assert!(out.status.success(), "clean failed: {}", String::from_utf8_lossy(&out.stderr));
                        stats.cleans_finished += 1;
                    }
                }
                stats.op("clean (offline)");
            }
        }
        if !problems.is_empty() {
            panic!("round {round}: {}", problems.join("\n"));
        }
    }

    // A last clean of the trash project that is allowed to finish: whatever the kills left of
    // it goes, directories included, and everything else is intact.
    model.after_clean();
    let out = offline_clean(&storage, &home).wait_with_output().unwrap();
    assert!(out.status.success(), "the finishing clean failed: {}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<String> = walkdir::WalkDir::new(storage.join("repositories").join(TRASH_PROJECT))
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(left.is_empty(), "the finishing clean left {left:?}; report: {}", String::from_utf8_lossy(&out.stdout));
    let server = ServeProcess::start_with_storage(&storage);
    verify(&server.addr, &storage, &model, &mut stats, Vec::new(), "after the finishing clean");
    let disk = check_disk(&storage).unwrap();
    server.stop();

    eprintln!(
        "fault suite (seed {seed}): kills injected {} {:?}; operations {} {:?}; acknowledged writes {}, \
         acknowledged writes verified {} times over {} checks ({} live at the end), {} cut operations resolved, \
         {} interrupted uploads resumed, {} offline cleans finished; data lost {}; store at the end: {} blobs, \
         {} bytes, {} temp files, {} upload sessions; {:?}",
        stats.kills,
        stats.kills_by,
        stats.ops,
        stats.ops_by,
        stats.acknowledged,
        stats.verified,
        stats.checks,
        model.acknowledged(),
        stats.resolved,
        stats.resumed,
        stats.cleans_finished,
        stats.lost,
        disk.blob_files,
        disk.blob_bytes,
        disk.temp_files,
        disk.upload_sessions,
        started.elapsed(),
    );
    assert_eq!(stats.lost, 0, "data lost: must be 0");
    assert!(stats.kills >= KILLS, "only {} kills injected in {MAX_ROUNDS} rounds", stats.kills);
    assert!(stats.verified > 0);
}

// =============================================================================================
// A full disk

/// A small filesystem mounted for one test (tmpfs, else a loop-mounted ext4 image), unmounted
/// when dropped. Mounting needs root: without it the test fails and says why.
struct SmallFs {
    dir: PathBuf,
    kind: &'static str,
}

fn output_text(out: &io::Result<std::process::Output>) -> String {
    match out {
        Ok(o) => format!("{} {}", o.status, String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => e.to_string(),
    }
}

impl SmallFs {
    fn mount(dir: &Path, bytes: u64) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let run = |cmd: &mut Command| cmd.stdin(Stdio::null()).output();
        let tmpfs = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0755"), "tmpfs"])
            .arg(dir));
        if tmpfs.as_ref().is_ok_and(|o| o.status.success()) {
            return SmallFs { dir: dir.to_path_buf(), kind: "tmpfs" };
        }
        let image = dir.with_extension("img");
        let steps = [
            run(Command::new("truncate").args(["-s", &bytes.to_string()]).arg(&image)),
            run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image)),
            run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(dir)),
        ];
        if steps.iter().all(|s| s.as_ref().is_ok_and(|o| o.status.success())) {
            return SmallFs { dir: dir.to_path_buf(), kind: "ext4 (loop)" };
        }
        panic!(
            "the full-disk test needs a small filesystem and could not mount one (it must run as root, as \
             `make test` does in CI): tmpfs: {}; loop-mounted ext4: {}",
            output_text(&tmpfs),
            steps.iter().map(output_text).collect::<Vec<_>>().join(" / ")
        );
    }

    /// Bytes an unprivileged writer may still allocate.
    fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct to fill.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0, "statvfs {}", self.dir.display());
        st.f_bavail as u64 * st.f_frsize as u64
    }

    /// Writes `file` until it holds `len` bytes or the filesystem is full; returns its length.
    fn fill(&self, file: &str, len: u64) -> u64 {
        let path = self.dir.join(file);
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let chunk = vec![0x5au8; 16 * KIB as usize];
        let mut written = std::fs::metadata(&path).unwrap().len();
        while written < len {
            let n = (len - written).min(chunk.len() as u64) as usize;
            match f.write(&chunk[..n]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
        }
        let _ = f.sync_all();
        written
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Sends `request` on its own connection and returns its raw status line with the response
/// (the reason phrase is what docker shows of a 5xx).
fn send_reading_status_line(request: &Request) -> (String, Response) {
    let mut stream = http::connect(&request.addr, IO_TIMEOUT).unwrap();
    let mut bytes = request.head();
    bytes.extend_from_slice(&request.body);
    stream.write_all(&bytes).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        io::BufRead::read_until(&mut reader, b'\n', &mut line).unwrap();
        // Skip `100 Continue`.
        if !line.starts_with(b"HTTP/1.1 1") {
            break;
        }
        while !http::read_line(&mut reader).unwrap().is_empty() {}
    }
    let status_line = String::from_utf8_lossy(&line).trim_end().to_string();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let h = http::read_line(&mut reader).unwrap();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let len = http::content_length(&headers).unwrap_or(0);
    let mut body = Vec::new();
    reader.take(len).read_to_end(&mut body).unwrap();
    (status_line, Response::new(status, headers, body))
}

/// A 507 with the spec's JSON error body saying the disk is full, also in the status line.
#[track_caller]
fn assert_storage_full(status_line: &str, r: &Response, what: &str) {
    assert_eq!(r.status, 507, "{what}: {status_line}\n{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}: {:?}", r.headers);
    let (code, message) = r.error();
    assert_eq!(code, "UNKNOWN", "{what}: {message}");
    assert!(message.contains("disk is full"), "{what}: {message}");
    assert!(status_line.starts_with("HTTP/1.1 507 Insufficient Storage ("), "{what}: {status_line}");
}

fn files_in(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect()
}

fn blob_file(storage: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    storage.join("blobs/sha256").join(&hex[..2]).join(hex)
}

#[test]
fn full_disk_answers_507_keeps_nothing_partial_and_recovers() {
    let work = temp_dir();
    let fs = SmallFs::mount(&work.path().join("small"), 8 * MIB);
    let storage = fs.dir.join("storage");
    let server = ServeProcess::start_with_storage(&storage);
    let addr = server.addr.clone();
    eprintln!("full disk on {} ({} bytes free)", fs.kind, fs.free());

    // Earlier data, which must come through intact.
    let early = pattern("full disk: early", 200 * KIB as usize);
    let early_digest = sha256_digest(&early);
    request(&addr, "POST", &format!("/v2/disk/app/blobs/uploads/?digest={early_digest}"), &[OCTETS], &early)
        .expect_for(201, "early blob");
    let manifest = |note: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &early_digest, early.len() as u64),
            "layers": [],
            "annotations": { "note": note },
        }))
        .unwrap()
    };
    let early_manifest = manifest("early");
    request(&addr, "PUT", "/v2/disk/app/manifests/early", &[("Content-Type", OCI_MANIFEST)], &early_manifest)
        .expect_for(201, "early manifest");

    // Leave about 1 MiB, then push 3 MiB.
    let room = MIB;
    let filler = fs.free().saturating_sub(room);
    assert_eq!(fs.fill("filler", filler), filler, "could not write the filler");
    let free_before = fs.free();
    let big = pattern("full disk: monolithic", 3 * MIB as usize);
    let big_digest = sha256_digest(&big);
    let post = Request::new(&addr, "POST", &format!("/v2/disk/app/blobs/uploads/?digest={big_digest}"))
        .header(OCTETS.0, OCTETS.1)
        .body(big.clone())
        .close();
    let (line, r) = send_reading_status_line(&post);
    assert_storage_full(&line, &r, "monolithic push");
    // Nothing of it is visible or left behind, and the space is free again.
    request(&addr, "HEAD", &format!("/v2/disk/app/blobs/{big_digest}"), &[], b"").expect_for(404, "HEAD after 507");
    assert!(!blob_file(&storage, &big_digest).exists(), "a partial blob is in the store");
    eqnice!(Vec::<String>::new(), files_in(&storage.join("tmp")), "temp files after a 507");
    assert!(fs.free() + 64 * KIB >= free_before, "space not given back: {} of {free_before}", fs.free());

    // Chunked: a first chunk fits, the second does not. The failed chunk is given back whole:
    // the session stays at the first chunk's end, and its space is free again.
    let chunked = pattern("full disk: chunked", 3 * MIB as usize);
    let chunked_digest = sha256_digest(&chunked);
    let first = 256 * KIB as usize;
    let location = request(&addr, "POST", "/v2/disk/app/blobs/uploads/", &[], b"").expect_for(202, "POST").location();
    let range = format!("0-{}", first - 1);
    let location = request(&addr, "PATCH", &location, &[OCTETS, ("Content-Range", range.as_str())], &chunked[..first])
        .expect_for(202, "first chunk")
        .location();
    let free_before = fs.free();
    let rest_range = format!("{first}-{}", chunked.len() - 1);
    let patch = Request::new(&addr, "PATCH", &location)
        .header(OCTETS.0, OCTETS.1)
        .header("Content-Range", &rest_range)
        .body(chunked[first..].to_vec())
        .close();
    let (line, r) = send_reading_status_line(&patch);
    assert_storage_full(&line, &r, "second chunk");
    let status = request(&addr, "GET", &location, &[], b"").expect_for(204, "upload status after 507");
    eqnice!(Some(range.as_str()), status.header("Range"), "upload offset after a refused chunk");
    let sessions: Vec<String> =
        files_in(&storage.join("uploads")).into_iter().filter(|f| f.ends_with("/data")).collect();
    eqnice!(1, sessions.len(), "upload sessions: {sessions:?}");
    eqnice!(first as u64, std::fs::metadata(&sessions[0]).unwrap().len(), "session data after a refused chunk");
    assert!(fs.free() + 64 * KIB >= free_before, "chunk not given back: {} of {free_before}", fs.free());
    eqnice!(Vec::<String>::new(), files_in(&storage.join("tmp")), "temp files after a 507");

    // Completely full: a manifest PUT and a new upload session are refused the same way, and
    // leave nothing (no tag, no session directory).
    fs.fill("filler-2", u64::MAX);
    let late_manifest = manifest("late");
    let put = Request::new(&addr, "PUT", "/v2/disk/app/manifests/late")
        .header("Content-Type", OCI_MANIFEST)
        .body(late_manifest.clone())
        .close();
    let (line, r) = send_reading_status_line(&put);
    assert_storage_full(&line, &r, "manifest PUT");
    request(&addr, "GET", "/v2/disk/app/manifests/late", &[], b"").expect_for(404, "tag after a refused PUT");
    let (line, r) = send_reading_status_line(&Request::new(&addr, "POST", "/v2/disk/other/blobs/uploads/").close());
    assert_storage_full(&line, &r, "upload session start");
    let sessions = std::fs::read_dir(storage.join("uploads")).unwrap().count();
    eqnice!(1, sessions, "upload session directories after a refused start");
    std::fs::remove_file(fs.dir.join("filler-2")).unwrap();

    // Still serving, earlier data intact.
    request(&addr, "GET", "/v2/", &[], b"").expect_for(200, "/v2/ on a full disk");
    consistency::check_blob(&addr, "disk/app", &early_digest).unwrap();
    let (digest, _) = consistency::check_manifest(&addr, "disk/app", "early").unwrap();
    eqnice!(sha256_digest(&early_manifest), digest, "the early tag");

    // Space freed: the same pushes go through.
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    request(&addr, "POST", &format!("/v2/disk/app/blobs/uploads/?digest={big_digest}"), &[OCTETS], &big)
        .expect_for(201, "monolithic push after freeing space");
    let location =
        request(&addr, "PATCH", &location, &[OCTETS, ("Content-Range", rest_range.as_str())], &chunked[first..])
            .expect_for(202, "second chunk after freeing space")
            .location();
    request(&addr, "PUT", &with_query(&location, "digest", &chunked_digest), &[], b"").expect_for(201, "closing PUT");
    request(&addr, "PUT", "/v2/disk/app/manifests/late", &[("Content-Type", OCI_MANIFEST)], &late_manifest)
        .expect_for(201, "manifest PUT after freeing space");
    for digest in [&early_digest, &big_digest, &chunked_digest] {
        consistency::check_blob(&addr, "disk/app", digest).unwrap();
    }
    let disk = check_disk(&storage);
    assert!(disk.is_ok(), "{}", describe(&disk));
    let api = check_api(&addr);
    assert!(api.is_ok(), "{}", describe(&api));
    eqnice!(0, disk.unwrap().temp_files, "temp files at the end");
    assert!(server.stderr().contains("No space left on device"), "the cause is not in the log");
    server.stop();
}

// =============================================================================================
// Upstream faults: pull-through

const HUB: &str = "registry-1.docker.io";
const GITLAB: &str = "registry.gitlab.com";
/// Bytes that are not HTTP, nor JSON, nor anything.
const GARBAGE: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xde\xad\xbe\xef\x00\xff\r\n\r\n\x00\x80garbage";

/// A cache whose only upstream, Docker Hub, is `upstream`.
fn cache_in_front_of(upstream: &FaultyUpstream, storage: &Path) -> ServeProcess {
    let config = format!(
        "[registry]\nupstreams = [\"{HUB}\"]\n\n[registry.upstream_urls]\n\"{HUB}\" = \"{}\"\n",
        upstream.url()
    );
    ServeProcess::start_with_config(storage, &["--no-auth"], &config)
}

/// What a client gets from a faulty upstream: a 5xx JSON error naming the upstream, or a broken
/// transfer; never a complete 200.
#[track_caller]
fn assert_never_complete(outcome: io::Result<Response>, what: &str) -> String {
    match outcome {
        Ok(r) if r.status == 200 => {
            panic!("{what}: the client got a complete 200 ({} bytes, {})", r.body.len(), sha256_digest(&r.body))
        }
        Ok(r) => {
            assert!(r.status == 502 || r.status == 504, "{what}: {} {}", r.status, r.text());
            let (code, message) = r.error();
            assert_eq!(code, "UNAVAILABLE", "{what}: {message}");
            assert!(message.contains(HUB), "{what}: the message does not name the upstream: {message}");
            format!("{} {message}", r.status)
        }
        Err(broken) => format!("broken transfer ({broken})"),
    }
}

fn image_manifest(config: (&str, u64), layers: &[(&str, u64)], note: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config.0, config.1),
        "layers": layers
            .iter()
            .map(|(d, s)| descriptor("application/vnd.oci.image.layer.v1.tar", d, *s))
            .collect::<Vec<_>>(),
        "annotations": { "note": note },
    }))
    .unwrap()
}

/// Pulling through onto a full disk is the cache's own failure, not the upstream's: a 507 that
/// says the disk is full (not a 502 blaming the upstream, nor a server path), nothing partial
/// cached, and the same pulls succeed once space is freed.
#[test]
fn pull_through_onto_a_full_disk_answers_507_and_recovers() {
    let upstream = FaultyUpstream::start(|_| None);
    let layer = pattern("full cache: layer", 64 * KIB as usize);
    let layer_digest = upstream.add_blob(&layer);
    let m = image_manifest((&layer_digest, layer.len() as u64), &[], "full cache");
    let manifest_digest = upstream.add_manifest("library/app", "v1", OCI_MANIFEST, &m);
    let work = temp_dir();
    let fs = SmallFs::mount(&work.path().join("small"), 4 * MIB);
    let storage = fs.dir.join("storage");
    let cache = cache_in_front_of(&upstream, &storage);
    let addr = cache.addr.clone();
    fs.fill("filler", 8 * MIB);
    assert!(fs.free() < 4 * KIB, "the filesystem is not full: {} bytes free", fs.free());

    for path in ["/v2/library/app/manifests/v1".to_string(), format!("/v2/library/app/blobs/{layer_digest}")] {
        let r = Request::new(&addr, "GET", &path).header("Accept", MANIFEST_ACCEPT).send();
        assert_eq!(r.status, 507, "{path} on a full disk: {}", r.text());
        let (_, message) = r.error();
        assert!(message.contains("disk is full") && !message.contains(HUB), "{path}: {message}");
        assert!(!message.contains(storage.to_str().unwrap()), "{path}: a server path in {message}");
    }
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    let got = Request::new(&addr, "GET", "/v2/library/app/manifests/v1").header("Accept", MANIFEST_ACCEPT).send();
    assert_eq!(sha256_digest(&got.expect(200).body), manifest_digest);
    let got = Request::new(&addr, "GET", &format!("/v2/library/app/blobs/{layer_digest}")).send().expect(200);
    assert!(got.body == layer, "the layer came back different");
    let disk = check_disk(&storage);
    assert!(disk.is_ok(), "{}", describe(&disk));
    cache.stop();
}

/// A blob or a manifest the faulty upstream serves under a fault.
struct Case {
    repo: &'static str,
    /// `blobs/<digest>` or `manifests/v1`.
    suffix: String,
    /// What the healthy upstream answers.
    bytes: Vec<u8>,
    fault: Fault,
}

/// Resets mid-blob (inline and pipelined store paths) and before any answer, resets mid-manifest,
/// garbage instead of HTTP, a manifest that is not JSON, `Content-Length`s shorter than the
/// content, and wrong bytes dripped slowly: the client gets an error or a broken transfer, the
/// cache stores nothing of it and stays up, and once the upstream is healthy the same pulls
/// give the right bytes. A slow drip of the right bytes is no fault: it completes (the upstream
/// timeout is per read), the cache serves others meanwhile, and a client leaving mid-drip
/// neither breaks the download for the next one nor makes the upstream send it twice.
#[test]
fn pull_through_resets_drips_and_garbage_are_never_cached() {
    let healthy = Arc::new(AtomicBool::new(false));
    let faults: Arc<std::sync::Mutex<BTreeMap<String, Fault>>> = Arc::default();
    let upstream = {
        let (healthy, faults) = (Arc::clone(&healthy), Arc::clone(&faults));
        FaultyUpstream::start(move |seen| {
            if healthy.load(Ordering::SeqCst) {
                return None;
            }
            faults.lock().unwrap().get(seen.path()).cloned()
        })
    };
    let blob = |seed: &str, len: u64| {
        let bytes = pattern(seed, len as usize);
        let digest = upstream.add_blob(&bytes);
        (format!("blobs/{digest}"), bytes)
    };
    let manifest = |repo: &str, note: &str| {
        let (config, bytes) = blob(&format!("{note} config"), 300);
        let m = image_manifest((&config["blobs/".len()..], bytes.len() as u64), &[], note);
        upstream.add_manifest(repo, "v1", OCI_MANIFEST, &m);
        ("manifests/v1".to_string(), m)
    };
    let drip = (64, Duration::from_millis(25));
    let mut cases = Vec::new();
    let mut add = |repo: &'static str, (suffix, bytes): (String, Vec<u8>), fault: Fault| {
        faults.lock().unwrap().insert(format!("/v2/{repo}/{suffix}"), fault.clone());
        cases.push(Case { repo, suffix, bytes, fault });
    };
    add("f/reset", blob("reset small", 300 * KIB), Fault::Reset { after: 150 * KIB as usize });
    add("f/reset-big", blob("reset big", 6 * MIB + 123), Fault::Reset { after: 5 * MIB as usize });
    add("f/reset-head", blob("reset before head", 100 * KIB), Fault::ResetNow);
    add("f/reset", manifest("f/reset", "reset manifest"), Fault::Reset { after: 40 });
    add("f/garbage", blob("garbage blob", 100 * KIB), Fault::Garbage(GARBAGE.to_vec()));
    add("f/garbage", manifest("f/garbage", "garbage manifest"), Fault::Garbage(GARBAGE.to_vec()));
    add("f/not-json", manifest("f/not-json", "not json"), Fault::Body(GARBAGE.to_vec()));
    add("f/short", blob("short blob", 100 * KIB), Fault::ShortLength(100 * KIB as usize - 10));
    add("f/short", manifest("f/short", "short manifest"), Fault::ShortLength(30));
    add("f/drip-wrong", blob("dripped wrong bytes", 2 * KIB), Fault::Flip { drip: Some(drip) });
    let work = temp_dir();
    let storage = work.path().join("storage");
    let mut cache = cache_in_front_of(&upstream, &storage);
    let addr = cache.addr.clone();

    let cached = |case: &Case| -> bool {
        if case.suffix.starts_with("blobs/") {
            blob_file(&storage, &case.suffix["blobs/".len()..]).exists()
        } else {
            storage.join("repositories").join(case.repo).join("_manifests/revisions").exists()
        }
    };
    let mut seen = Vec::new();
    for case in &cases {
        let path = format!("/v2/{}/{}", case.repo, case.suffix);
        let what = format!("{path} ({})", case.fault.describe());
        let asked = upstream.count("GET", &path);
        let outcome =
            Request::new(&addr, "GET", &path).header("Accept", MANIFEST_ACCEPT).close().timeout(IO_TIMEOUT).try_send();
        seen.push(format!("{what}: {}", assert_never_complete(outcome, &what)));
        assert!(upstream.count("GET", &path) > asked, "{what}: the upstream was not asked");
        assert!(!cached(case), "{what}: something was cached");
        eqnice!(Vec::<String>::new(), files_in(&storage.join("tmp")), "{what}: temp files left");
    }
    eprintln!("what the clients got:\n  {}", seen.join("\n  "));
    assert!(cache.still_running(), "the cache died");
    let disk = check_disk(&storage);
    assert!(disk.is_ok(), "{}", describe(&disk));

    // The upstream heals: the same pulls give the right bytes, stored right.
    healthy.store(true, Ordering::SeqCst);
    for case in &cases {
        let path = format!("/v2/{}/{}", case.repo, case.suffix);
        let r = request(&addr, "GET", &path, &[("Accept", MANIFEST_ACCEPT)], b"").expect_for(200, &path);
        assert!(r.body == case.bytes, "{path}: other bytes than the upstream's ({})", sha256_digest(&r.body));
        assert!(cached(case), "{path}: not cached once healthy");
    }
    let disk = check_disk(&storage);
    assert!(disk.is_ok(), "{}", describe(&disk));
    healthy.store(false, Ordering::SeqCst);

    // A slow drip of the right bytes (about 2.5 KiB/s) is served, correctly and cached, while
    // the cache answers everything else at once.
    let (drip_suffix, drip_bytes) = blob("dripped blob", 8 * KIB);
    let drip_path = format!("/v2/f/drip/{drip_suffix}");
    faults.lock().unwrap().insert(drip_path.clone(), Fault::Drip { step: drip.0, every: drip.1 });
    let slow = {
        let (addr, drip_path) = (addr.clone(), drip_path.clone());
        thread::spawn(move || request(&addr, "GET", &drip_path, &[], b""))
    };
    assert!(upstream.wait_for("GET", &drip_path, 1, IO_TIMEOUT), "the drip never started");
    let local = pattern("pushed while dripping", 50_000);
    let local_digest = sha256_digest(&local);
    request(&addr, "POST", &format!("/v2/mine/app/blobs/uploads/?digest={local_digest}"), &[OCTETS], &local)
        .expect_for(201, "push during a drip");
    consistency::check_blob(&addr, "mine/app", &local_digest).unwrap();
    request(&addr, "GET", "/v2/", &[], b"").expect_for(200, "/v2/ during a drip");
    assert!(!slow.is_finished(), "the drip ended before the other requests were answered: not slow enough to tell");
    let r = slow.join().unwrap().expect_for(200, "dripped blob");
    assert!(r.body == drip_bytes, "the dripped blob arrived with other bytes");
    assert!(blob_file(&storage, &drip_suffix["blobs/".len()..]).exists(), "the dripped blob was not cached");

    // A client that leaves mid-drip: the download goes on, and the next client gets the whole
    // blob (joining it, or from the store), with a single upstream fetch.
    let (leave_suffix, leave_bytes) = blob("left mid-drip", 6 * KIB);
    let leave_path = format!("/v2/f/drip-leave/{leave_suffix}");
    faults.lock().unwrap().insert(leave_path.clone(), Fault::Drip { step: drip.0, every: drip.1 });
    {
        let mut stream = http::connect(&addr, IO_TIMEOUT).unwrap();
        stream.write_all(&Request::new(&addr, "GET", &leave_path).close().head()).unwrap();
        let mut first = [0u8; 256];
        let n = stream.read(&mut first).unwrap();
        assert!(n > 0 && first.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first[..n]));
        // Dropped here, mid-body.
    }
    let r = request(&addr, "GET", &leave_path, &[], b"").expect_for(200, "after a client left mid-drip");
    assert!(r.body == leave_bytes, "the blob a client left arrived with other bytes");
    eqnice!(1, upstream.count("GET", &leave_path), "upstream GETs of a blob a client left mid-drip");

    // A manifest dripped slowly is read whole, checked and served.
    let (drip_manifest_suffix, drip_manifest) = manifest("f/drip", "dripped manifest");
    let drip_manifest_path = format!("/v2/f/drip/{drip_manifest_suffix}");
    faults.lock().unwrap().insert(drip_manifest_path.clone(), Fault::Drip { step: 16, every: drip.1 });
    let r = request(&addr, "GET", &drip_manifest_path, &[("Accept", MANIFEST_ACCEPT)], b"")
        .expect_for(200, "dripped manifest");
    assert!(r.body == drip_manifest, "the dripped manifest arrived with other bytes");

    let disk = check_disk(&storage);
    assert!(disk.is_ok(), "{}", describe(&disk));
    eqnice!(0, disk.unwrap().temp_files, "temp files at the end");
    let api = check_api(&addr);
    assert!(api.is_ok(), "{}", describe(&api));
    assert!(cache.still_running(), "the cache died");
    cache.stop();
}

// =============================================================================================
// Upstream faults: push-through

/// The fault of a step of the push-through test: on requests with this method whose path starts
/// with this prefix; `None`: healthy.
type Step = Option<(&'static str, &'static str, Fault)>;

/// Faults of the push-through mirror, each on a manifest PUT by a push-through job token: the
/// PUT fails with a 502 naming the upstream, the local copy is whole, the cache stays up, and
/// once the upstream is healthy a retry completes the mirror, uploading only what is missing.
#[test]
fn push_through_resets_and_garbage_fail_the_push_and_a_retry_completes_it() {
    // The fault of the current step (see `Step`).
    let step: Arc<std::sync::Mutex<Step>> = Arc::default();
    let upstream = {
        let step = Arc::clone(&step);
        FaultyUpstream::start(move |seen| {
            let step = step.lock().unwrap();
            let (method, prefix, fault) = step.as_ref()?;
            (seen.method == *method && seen.path().starts_with(prefix)).then(|| fault.clone())
        })
    };
    let config = format!(
        "[registry]\nupstreams = []\n\n[registry.upstream]\nurl = \"{GITLAB}\"\n\n\
         [registry.upstream_urls]\n\"{GITLAB}\" = \"{}\"\n",
        upstream.url()
    );
    let work = temp_dir();
    let storage = work.path().join("storage");
    let mut front = ServeProcess::start_with_config(&storage, &[], &config);
    let addr = front.addr.clone();
    let token = common::run_stdout(glci().env("GLCI_HOME", front.home()).args([
        "registry",
        "token",
        "--project",
        "g/p",
        "--push-through",
    ]))
    .trim()
    .to_string();
    let auth = basic("gitlab-ci-token", &token);
    let authed = [("Authorization", auth.as_str())];

    // An image: a config and two layers, one past the store's inline copy size.
    let blobs: Vec<Vec<u8>> = vec![
        pattern("push-through config", 600),
        pattern("push-through layer 1", 300 * KIB as usize),
        pattern("push-through layer 2", 5 * KIB as usize),
    ];
    let digests: Vec<String> = blobs.iter().map(|b| sha256_digest(b)).collect();
    for (bytes, digest) in blobs.iter().zip(&digests) {
        let target = format!("/v2/g/p/app/blobs/uploads/?digest={digest}");
        request(&addr, "POST", &target, &[OCTETS, authed[0]], bytes).expect_for(201, "blob push");
    }
    let manifest = image_manifest(
        (&digests[0], blobs[0].len() as u64),
        &[(&digests[1], blobs[1].len() as u64), (&digests[2], blobs[2].len() as u64)],
        "push-through faults",
    );
    let manifest_digest = sha256_digest(&manifest);
    let put =
        || request(&addr, "PUT", "/v2/g/p/app/manifests/1", &[("Content-Type", OCI_MANIFEST), authed[0]], &manifest);
    let blob_uploads = || upstream.count("PUT", "/v2/g/p/app/blobs/uploads/");
    let steps: Vec<(&str, &str, &str, Fault)> = vec![
        ("reset mid-upload", "PUT", "/v2/g/p/app/blobs/uploads/", Fault::Reset { after: 100 * KIB as usize }),
        ("reset before answering an upload", "POST", "/v2/g/p/app/blobs/uploads/", Fault::ResetNow),
        ("garbage to an upload", "POST", "/v2/g/p/app/blobs/uploads/", Fault::Garbage(GARBAGE.to_vec())),
        ("garbage to a blob HEAD", "HEAD", "/v2/g/p/app/blobs/", Fault::Garbage(GARBAGE.to_vec())),
        ("reset mid-manifest", "PUT", "/v2/g/p/app/manifests/", Fault::Reset { after: 50 }),
        ("garbage to the manifest", "PUT", "/v2/g/p/app/manifests/", Fault::Garbage(GARBAGE.to_vec())),
    ];
    for (what, method, prefix, fault) in steps {
        *step.lock().unwrap() = Some((method, prefix, fault));
        let r = put();
        assert_eq!(r.status, 502, "{what}: {}", r.text());
        let (code, message) = r.error();
        assert_eq!(code, "UNAVAILABLE", "{what}: {message}");
        assert!(message.contains(&format!("push-through to {GITLAB} failed")), "{what}: {message}");
        // Whatever happened upstream, the local copy is whole, and nothing the upstream holds is
        // wrong (it checks every upload against its digest).
        let (digest, _) = consistency::check_manifest(&addr, "g/p/app", "1").unwrap_or_else(|e| panic!("{what}: {e}"));
        eqnice!(manifest_digest, digest, "{what}: local tag");
        for digest in &digests {
            consistency::check_blob(&addr, "g/p/app", digest).unwrap_or_else(|e| panic!("{what}: {e}"));
            if let Some(bytes) = upstream.blob(digest) {
                eqnice!(*digest, sha256_digest(&bytes), "{what}: upstream copy");
            }
        }
        // (Garbage in answer to the manifest PUT comes after the upstream stored it.)
        if let Some((_, bytes)) = upstream.manifest("g/p/app", "1") {
            assert!(bytes == manifest, "{what}: the upstream holds other manifest bytes");
        }
        assert!(front.still_running(), "{what}: the front died");
        eprintln!("{what}: 502 {message}");
    }
    // The last faults hit only the manifest: every blob is up there by now.
    assert!(digests.iter().all(|d| upstream.blob(d).is_some()), "blobs missing upstream before the retry");

    // Healthy again: the retry mirrors the manifest and uploads no blob.
    *step.lock().unwrap() = None;
    let uploads = blob_uploads();
    put().expect_for(201, "retry with a healthy upstream");
    eqnice!(uploads, blob_uploads(), "blobs uploaded again by the retry");
    let (media_type, mirrored) = upstream.manifest("g/p/app", "1").expect("the upstream has the manifest");
    eqnice!(OCI_MANIFEST, media_type.as_str());
    assert!(mirrored == manifest, "the upstream got other manifest bytes");
    let disk = check_disk(&storage);
    assert!(disk.is_ok(), "{}", describe(&disk));
    front.stop();
}
