//! Security of `glci serve` attacked from outside, as a hostile user would (issue 10; DESIGN §3,
//! §6, §9): path traversal in every path component (names, tags, digests, upload ids, query
//! parameters, the admin API, `/token`'s `scope`), oversized heads and bodies, forged, expired
//! and cross-project tokens, secrets absent from every log line and command line, and the modes
//! of the files the server creates. Every test runs a real `glci serve` over TCP on 127.0.0.1,
//! counts the attacks it tries and the 5xx and leaks it saw, and prints one summary line.
//! Owns this file only; the server code it checks lives in `src/`.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

use common::http::{self, basic, Client, Request, Response};
use common::{glci, run, sha256_digest, temp_dir, ServeProcess, TEST_CONFIG};
use regex::Regex;
use serde_json::{json, Value};

const IO_TIMEOUT: Duration = Duration::from_secs(20);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Part of every path an attack tries to create outside the store; found anywhere, it is a hit.
const CANARY: &str = "glcipwned";

// ---------------------------------------------------------------------------------------------
// Tallies: attacks tried, 5xx seen, leaks found, per test and for the whole binary.

static TOTAL_ATTACKS: AtomicUsize = AtomicUsize::new(0);
static TOTAL_5XX: AtomicUsize = AtomicUsize::new(0);
static TOTAL_LEAKS: AtomicUsize = AtomicUsize::new(0);

/// A `glci serve` under attack, with its own `GLCI_HOME` and storage under one temporary root
/// (so a write that escapes the storage is still inside something the test walks).
struct Target {
    category: &'static str,
    server: ServeProcess,
    root: tempfile::TempDir,
    /// The admin password, when auth is on.
    admin: Option<String>,
    attacks: usize,
    server_errors: Vec<String>,
    /// (what, value) of every credential the test handled, to look for in the logs.
    secrets: Vec<(String, String)>,
    /// (source, text) of every CLI output that is not a credential by design.
    logs: Vec<(String, String)>,
}

impl Target {
    /// `glci serve` with auth (or `--no-auth`) and `config` as `config.toml`.
    fn start(category: &'static str, auth: bool, config: &str) -> Target {
        Self::start_with(category, auth, config, &[])
    }

    fn start_with(category: &'static str, auth: bool, config: &str, extra: &[&str]) -> Target {
        let root = temp_dir();
        let home = root.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(home.join("config.toml"), config).unwrap();
        let mut args: Vec<&str> = extra.to_vec();
        if !auth {
            args.push("--no-auth");
        }
        let server = ServeProcess::start_in_home(&home, &root.path().join("storage"), &args);
        let mut t = Target {
            category,
            server,
            root,
            admin: None,
            attacks: 0,
            server_errors: Vec::new(),
            secrets: Vec::new(),
            logs: Vec::new(),
        };
        if auth {
            let admin = t.cli_secret(&["registry", "login", "--print"]);
            t.secret("admin password", &admin);
            t.admin = Some(admin);
            let key = std::fs::read_to_string(t.home().join("admin.secret")).unwrap();
            t.secret("admin.secret contents", key.trim());
        }
        t
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    fn storage(&self) -> PathBuf {
        self.root.path().join("storage")
    }

    fn addr(&self) -> String {
        self.server.addr.clone()
    }

    /// `glci ARGS` with this server's home; its stdout, trimmed. Stdout is a credential
    /// (`login --print`, `token`): only stderr goes to the logs searched for leaks.
    fn cli_secret(&mut self, args: &[&str]) -> String {
        let out = run(glci().env("GLCI_HOME", self.home()).args(args));
        self.logs.push((format!("stderr of glci {}", args.join(" ")), String::from_utf8_lossy(&out.stderr).into()));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `glci ARGS` whose stdout and stderr are both searched for leaks; its stdout.
    fn cli(&mut self, args: &[&str]) -> String {
        let stdout = self.cli_secret(args);
        self.logs.push((format!("stdout of glci {}", args.join(" ")), stdout.clone()));
        stdout
    }

    fn job_token(&mut self, project: &str) -> String {
        let token = self.cli_secret(&["registry", "token", "--project", project, "--ttl", "1h"]);
        self.secret(&format!("job token for {project}"), &token);
        token
    }

    fn secret(&mut self, what: &str, value: &str) {
        self.secrets.push((what.to_string(), value.to_string()));
    }

    /// A request with the admin credential when auth is on (so attacks reach the handlers).
    fn req(&self, method: &str, target: &str) -> Request {
        let r = self.anon(method, target);
        match &self.admin {
            Some(admin) => r.header("Authorization", &basic("glci-admin", admin)),
            None => r,
        }
    }

    /// A request without credentials.
    fn anon(&self, method: &str, target: &str) -> Request {
        Request::new(&self.server.addr, method, target).close().timeout(IO_TIMEOUT)
    }

    /// Sends one attack, counting it and any 5xx.
    fn send(&mut self, request: &Request) -> Response {
        let r = request.try_send().unwrap_or_else(|e| {
            panic!("{} {}: no response ({e})\n{}", request.method, request.target, self.server.stderr())
        });
        self.record(r.status, &format!("{} {}", request.method, request.target));
        r
    }

    /// Counts one attack answered with `status`.
    fn record(&mut self, status: u16, what: &str) {
        self.attacks += 1;
        if status >= 500 {
            self.server_errors.push(format!("{status} for {what}"));
        }
    }

    /// Sends an attack that must be refused: a 4xx with the spec's JSON error body.
    #[track_caller]
    fn refused(&mut self, request: Request) -> Response {
        let r = self.send(&request);
        assert_refused(&r, &request.method, &format!("{} {}", request.method, request.target));
        r
    }

    /// The server still answers an ordinary request.
    #[track_caller]
    fn assert_alive(&mut self) {
        assert!(self.server.still_running(), "the server died\n{}", self.server.stderr());
        let r = self.req("GET", "/v2/").send();
        assert_eq!(r.status, 200, "GET /v2/ after attacks: {} {}", r.status, r.text());
    }

    /// Checks the logs for every secret seen, fails on any 5xx, prints the summary line.
    fn finish(mut self) {
        let mut logs = std::mem::take(&mut self.logs);
        // Stopped first, so every line it would write is in: the last is `msg=stopped`. A log
        // line is written after its response, and the pipe is read by a thread.
        let status = self.server.terminate(libc::SIGTERM);
        assert!(status.success(), "[{}] glci serve exited with {status} after the attacks", self.category);
        self.server.stderr_shows("msg=stopped");
        let stderr = self.server.stderr();
        assert!(stderr.contains("msg=stopped"), "[{}] no end of the log:\n{stderr}", self.category);
        // One event per line: nothing a client sent can forge or split a log line.
        for line in stderr.lines() {
            assert!(line.starts_with("level="), "[{}] a log line not written by the logger: {line:?}", self.category);
        }
        logs.push(("glci serve stderr".to_string(), stderr));
        let leaks = find_leaks(&logs, &self.secrets);
        let fives = self.server_errors.len();
        TOTAL_ATTACKS.fetch_add(self.attacks, Ordering::SeqCst);
        TOTAL_5XX.fetch_add(fives, Ordering::SeqCst);
        TOTAL_LEAKS.fetch_add(leaks.len(), Ordering::SeqCst);
        println!(
            "security summary [{}]: attacks tried={} 5xx seen={} leaks found={} (binary so far: attacks={} 5xx={} leaks={})",
            self.category,
            self.attacks,
            fives,
            leaks.len(),
            TOTAL_ATTACKS.load(Ordering::SeqCst),
            TOTAL_5XX.load(Ordering::SeqCst),
            TOTAL_LEAKS.load(Ordering::SeqCst),
        );
        assert!(self.server_errors.is_empty(), "5xx answers to attacks:\n{}", self.server_errors.join("\n"));
        assert!(leaks.is_empty(), "secrets in logs:\n{}", leaks.join("\n"));
    }
}

/// A 4xx whose body (when there is one) is the spec's JSON error.
#[track_caller]
fn assert_refused(r: &Response, method: &str, what: &str) {
    assert!((400..500).contains(&r.status), "{what}: expected a 4xx, got {}: {}", r.status, r.text());
    if method == "HEAD" {
        return;
    }
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{what}: {} {:?} {}", r.status, r.headers, r.text());
    let doc: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {}", r.text()));
    assert!(doc["errors"][0]["code"].is_string(), "{what}: no error code in {doc}");
    assert!(doc["errors"][0]["message"].is_string(), "{what}: no error message in {doc}");
}

/// Every place a secret may hide in a log: the value, a token's MAC alone, and the base64 forms
/// a Basic header carries.
fn secret_forms(value: &str) -> Vec<String> {
    let b64 = |s: &str| basic(s, "").trim_start_matches("Basic ").to_string();
    let mut forms = vec![value.to_string()];
    if let Some((_, mac)) = value.rsplit_once('.') {
        forms.push(mac.to_string());
    }
    for user in ["glci-admin", "gitlab-ci-token"] {
        forms.push(basic(user, value).trim_start_matches("Basic ").to_string());
    }
    // `basic(s, "")` encodes `s:`; the plain base64 of `s` is its prefix up to the last full group.
    let plain = b64(value);
    forms.push(plain[..plain.len().saturating_sub(4)].to_string());
    forms.retain(|f| f.len() >= 12);
    forms
}

/// Leaks of `secrets` in `logs`, and anything that looks like a glci token.
fn find_leaks(logs: &[(String, String)], secrets: &[(String, String)]) -> Vec<String> {
    let token_shape = Regex::new(r"glci1\.[0-9a-fA-F]{16,}").unwrap();
    let mut leaks = Vec::new();
    for (source, text) in logs {
        for (what, value) in secrets {
            for form in secret_forms(value) {
                if text.contains(&form) {
                    leaks.push(format!("{what} ({} chars of it) in {source}", form.len()));
                }
            }
        }
        if let Some(m) = token_shape.find(text) {
            leaks.push(format!("something token-shaped ({}…) in {source}", &m.as_str()[..10]));
        }
    }
    leaks
}

// ---------------------------------------------------------------------------------------------
// Fixture: what a legitimate user has in the registry before the attacks.

struct Fixture {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
    manifest_digest: String,
    /// An open upload session of `sec/app`, and one of `sec/other` holding 5 bytes.
    app_session: String,
    other_session: String,
}

fn manifest_for(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256_digest(layer), "size": layer.len()}],
    }))
    .unwrap()
}

fn push_blob(t: &Target, repo: &str, bytes: &[u8]) {
    let r = t.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256_digest(bytes))).body(bytes).send();
    assert_eq!(r.status, 201, "push a blob to {repo}: {}", r.text());
}

fn put_manifest(t: &Target, repo: &str, reference: &str, bytes: &[u8]) {
    let r = t
        .req("PUT", &format!("/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(bytes)
        .send();
    assert_eq!(r.status, 201, "put a manifest to {repo}: {}", r.text());
}

fn start_session(t: &Target, repo: &str) -> String {
    let r = t.req("POST", &format!("/v2/{repo}/blobs/uploads/")).send();
    assert_eq!(r.status, 202, "start an upload in {repo}: {}", r.text());
    r.location().rsplit('/').next().unwrap().to_string()
}

fn setup(t: &Target) -> Fixture {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = b"a layer a legitimate user pushed".to_vec();
    for repo in ["sec/app", "sec/other"] {
        push_blob(t, repo, &config);
        push_blob(t, repo, &layer);
    }
    let manifest = manifest_for(&config, &layer);
    put_manifest(t, "sec/app", "v1", &manifest);
    put_manifest(t, "sec/other", "v1", &manifest);
    let app_session = start_session(t, "sec/app");
    let other_session = start_session(t, "sec/other");
    let r = t
        .req("PATCH", &format!("/v2/sec/other/blobs/uploads/{other_session}"))
        .header("Content-Range", "0-4")
        .body(&b"12345"[..])
        .send();
    assert_eq!(r.status, 202, "{}", r.text());
    if t.admin.is_some() {
        // A dry-run clean creates what a clean keeps (its lock), before the snapshot.
        let r = t.req("POST", "/glci/admin/v1/clean?dry_run=true").send();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let manifest_digest = sha256_digest(&manifest);
    Fixture { config, layer, manifest, manifest_digest, app_session, other_session }
}

// ---------------------------------------------------------------------------------------------
// The filesystem before and after: nothing outside the layout, nothing outside the storage.

/// path (relative to `root`) → kind and size, for every entry under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = entry.path().symlink_metadata().unwrap();
        let kind = if meta.file_type().is_symlink() {
            "symlink".to_string()
        } else if meta.is_dir() {
            "dir".to_string()
        } else {
            format!("file of {} bytes", meta.len())
        };
        map.insert(rel, kind);
    }
    map
}

/// What changed between two snapshots, ignoring the server's temp files (`storage/tmp/*`).
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| !k.starts_with("storage/tmp/"))
        .filter_map(|k| match (before.get(k), after.get(k)) {
            (Some(a), Some(b)) if a == b => None,
            (a, b) => Some(format!("{k}: {a:?} -> {b:?}")),
        })
        .collect()
}

/// Every entry of the storage matches DESIGN §4's layout (and none is a symlink).
fn assert_layout(storage: &Path) {
    let comp = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
    let tag = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}";
    let algo_hex = r"(?:sha256/[0-9a-f]{64}|sha512/[0-9a-f]{128})";
    let algo = r"(?:sha256|sha512)";
    let patterns = [
        r"\.lock|\.gc\.lock|\.gc-running".to_string(),
        r"blobs(?:/sha256(?:/[0-9a-f]{2}(?:/[0-9a-f]{64})?)?|/sha512(?:/[0-9a-f]{2}(?:/[0-9a-f]{128})?)?)?".to_string(),
        format!(
            r"repositories(?:/{comp})*(?:/_manifests(?:/(?:revisions|origins)(?:/{algo}|/{algo_hex})?|/tags(?:/{tag})?)?|/_layers(?:/{algo}|/{algo_hex})?|/_referrers(?:/{algo}|/{algo_hex}(?:/{algo}-[0-9a-f]{{64,128}})?)?)?"
        ),
        r"uploads(?:/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?:/data|/info)?)?".to_string(),
        r"tmp(?:/[^/]+)?".to_string(),
    ];
    let layout = Regex::new(&format!("^(?:{})$", patterns.join("|"))).unwrap();
    for (path, kind) in snapshot(storage) {
        assert!(kind != "symlink", "a symlink in the storage: {path}");
        assert!(layout.is_match(&path), "outside the storage layout: {path} ({kind})");
        if let Some(rest) = path.strip_prefix("blobs/") {
            // The fan-out directory is the first two digits of the blob's name.
            let parts: Vec<&str> = rest.split('/').collect();
            if parts.len() == 3 {
                assert!(parts[2].starts_with(parts[1]), "blob in the wrong fan-out directory: {path}");
            }
        }
    }
}

/// Directories where an escaped write would land; entries holding the canary.
fn canary_hits(extra: &[&Path]) -> Vec<String> {
    let mut dirs: Vec<PathBuf> = vec!["/".into(), std::env::temp_dir(), std::env::current_dir().unwrap()];
    dirs.extend(extra.iter().map(|p| p.to_path_buf()));
    let mut hits = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(CANARY) {
                hits.push(entry.path().display().to_string());
            }
        }
    }
    hits
}

// ---------------------------------------------------------------------------------------------
// 1. Path traversal in every path component.

/// Repository names no request may turn into a path. Each is put raw into the request target.
fn bad_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "..",
        ".",
        "../glcipwned",
        "a/../../glcipwned",
        "a/../../../../../../../../tmp/glcipwned",
        "a/./b",
        "./a",
        "a/.",
        "a/..",
        "%2e%2e",
        "%2E%2E",
        "%2e",
        "%2e%2e/glcipwned",
        "%2e%2e%2fglcipwned",
        "..%2fglcipwned",
        "..%2F..%2F..%2Fglcipwned",
        "a%2f..%2f..%2fglcipwned",
        "a%2F%2E%2E%2F%2E%2E%2Fglcipwned",
        "%252e%252e%252fglcipwned",
        "%2e%2e%5cglcipwned",
        "..%5c..%5cglcipwned",
        r"a\..\..\glcipwned",
        r"..\glcipwned",
        "a%00",
        "%00",
        "a%00b",
        "glcipwned%00.x",
        "%2fetc%2fglcipwned",
        "%2F",
        "a%2F",
        "%2Fa",
        "a%2F%2Fb",
        "",
        "/glcipwned",
        "/tmp/glcipwned",
        "UPPER",
        "Glcipwned",
        "a/B",
        "ü",
        "%c3%bc",
        "%ef%bc%8e%ef%bc%8e",
        "%c0%ae%c0%ae",
        "%e2%80%ae",
        "a%20b",
        "a+b",
        "~root",
        "$HOME",
        "a;b",
        "..;",
        "a%0d%0aX-Injected:%201",
        "_manifests",
        "a/_manifests",
        "a/_layers/sha256",
        "a/_uploads",
        ".glcipwned",
        "-a",
        "a-",
        "a___b",
        "a..b",
        "a.-b",
        "a%2A",
        "a*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push("a".repeat(256));
    names.push("a/".repeat(128) + "a");
    names.push(format!("{}/..", "ab/".repeat(90)));
    names
}

fn bad_tags() -> Vec<String> {
    let mut tags: Vec<String> = [
        "..",
        ".",
        "..%2fglcipwned",
        "..%2F..%2F..%2Fglcipwned",
        "%2e%2e",
        "%2e%2e%2fglcipwned",
        "%2e",
        ".glcipwned",
        "-x",
        "a%00",
        "%00",
        "a%2fb",
        r"a\b",
        r"..\glcipwned",
        "a%5c..",
        "a%20b",
        "ü",
        "%c3%bc",
        "a;b",
        "a%0a",
        "a%0d%0aX-Injected:%201",
        "a*",
        "a#b",
        "a:b",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    tags.push("t".repeat(129));
    tags.push("t".repeat(10_000));
    tags
}

fn bad_digests() -> Vec<String> {
    let hex = "0123456789abcdef".repeat(4);
    let mut digests: Vec<String> = [
        "sha256:../../glcipwned",
        "sha256:..%2f..%2fglcipwned",
        "sha256:%2e%2e",
        "sha256%3a..%2f..%2fglcipwned",
        "sha256:",
        ":abc",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256+b64:abc",
        "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "%00",
        "..",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    digests.push(format!("sha256:{}", &hex[..63]));
    digests.push(format!("sha256:{hex}0"));
    digests.push(format!("sha256:{}", hex.to_uppercase()));
    digests.push(format!("sha256:{}", "g".repeat(64)));
    digests.push(format!("SHA256:{hex}"));
    digests.push(format!("sha512:{hex}"));
    digests.push(format!("sha256:{hex}%00"));
    digests.push(format!("sha256:{hex}/.."));
    digests.push(format!("sha256:{hex}%2f..%2f..%2fglcipwned"));
    digests.push(format!("../sha256:{hex}"));
    digests.push(format!("sha256:{}", "a".repeat(1000)));
    digests.push(format!("sha256:{}..", &hex[..62]));
    digests
}

/// Traversal attacks on every path component of every endpoint; `t` holds [`setup`]'s fixture.
fn traversal_attacks(t: &mut Target, fx: &Fixture) {
    let d = sha256_digest(&fx.layer);
    let body_digest = sha256_digest(b"attack body");
    let id = fx.app_session.clone();
    let manifest = fx.manifest.clone();
    let bad = |t: &mut Target, method: &str, target: String, body: &[u8]| {
        let mut r = t.req(method, &target).body(body);
        if method == "PUT" && target.contains("/manifests/") {
            r = r.header("Content-Type", OCI_MANIFEST);
        }
        t.refused(r);
    };

    // Repository names, on every endpoint that takes one (and `from=` of a mount).
    for n in bad_names() {
        bad(t, "GET", format!("/v2/{n}/tags/list"), b"");
        bad(t, "GET", format!("/v2/{n}/tags/list?n=1&last=..%2f..%2fglcipwned"), b"");
        for method in ["GET", "HEAD", "DELETE"] {
            bad(t, method, format!("/v2/{n}/manifests/v1"), b"");
            bad(t, method, format!("/v2/{n}/blobs/{d}"), b"");
        }
        bad(t, "PUT", format!("/v2/{n}/manifests/v1"), &manifest);
        bad(t, "PUT", format!("/v2/{n}/manifests/{}", fx.manifest_digest), &manifest);
        bad(t, "POST", format!("/v2/{n}/blobs/uploads/"), b"");
        bad(t, "POST", format!("/v2/{n}/blobs/uploads/?digest={body_digest}"), b"attack body");
        bad(t, "POST", format!("/v2/{n}/blobs/uploads/?mount={d}&from=sec/app"), b"");
        bad(t, "POST", format!("/v2/sec/app/blobs/uploads/?mount={d}&from={n}"), b"");
        bad(t, "PATCH", format!("/v2/{n}/blobs/uploads/{id}"), b"attack body");
        bad(t, "PUT", format!("/v2/{n}/blobs/uploads/{id}?digest={body_digest}"), b"attack body");
        bad(t, "GET", format!("/v2/{n}/blobs/uploads/{id}"), b"");
        bad(t, "DELETE", format!("/v2/{n}/blobs/uploads/{id}"), b"");
        bad(t, "GET", format!("/v2/{n}/referrers/{}", fx.manifest_digest), b"");
    }

    // Tags.
    for tag in bad_tags() {
        for method in ["GET", "HEAD", "DELETE"] {
            bad(t, method, format!("/v2/sec/app/manifests/{tag}"), b"");
        }
        bad(t, "PUT", format!("/v2/sec/app/manifests/{tag}"), &manifest);
    }

    // Digests, wherever one goes: path, `?digest=`, `?mount=`.
    for dg in bad_digests() {
        for method in ["GET", "HEAD", "DELETE"] {
            bad(t, method, format!("/v2/sec/app/blobs/{dg}"), b"");
            bad(t, method, format!("/v2/sec/app/manifests/{dg}"), b"");
        }
        bad(t, "PUT", format!("/v2/sec/app/manifests/{dg}"), &manifest);
        bad(t, "GET", format!("/v2/sec/app/referrers/{dg}"), b"");
        bad(t, "POST", format!("/v2/sec/app/blobs/uploads/?digest={dg}"), b"attack body");
        bad(t, "POST", format!("/v2/sec/app/blobs/uploads/?mount={dg}&from=sec/other"), b"");
        bad(t, "PUT", format!("/v2/sec/app/blobs/uploads/{id}?digest={dg}"), b"");
    }

    // Manifests whose descriptors carry traversal digests.
    for dg in ["sha256:../../glcipwned", "sha256:..%2f..", "md5:00", "sha256:", "../../glcipwned"] {
        let doc = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dg, "size": 2},
            "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": dg, "size": 2},
        });
        bad(t, "PUT", "/v2/sec/app/manifests/evil".to_string(), &serde_json::to_vec(&doc).unwrap());
        let doc = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(&fx.config), "size": fx.config.len()},
            "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": dg, "size": 2},
        });
        bad(t, "PUT", "/v2/sec/app/manifests/evil2".to_string(), &serde_json::to_vec(&doc).unwrap());
    }

    // Upload session ids, including another repository's session under this name.
    let mut ids: Vec<String> = [
        "..",
        ".",
        "..%2f..%2fglcipwned",
        "..%2F..%2F..%2F..%2Fglcipwned",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fglcipwned",
        "..%5cglcipwned",
        "%00",
        "glcipwned",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ids.push(id.to_uppercase());
    ids.push(format!("{id}%00"));
    ids.push(format!("%2e%2e%2f{id}"));
    ids.push(format!("..%2f{id}"));
    ids.push(format!("{id}%2f..%2f..%2f..%2fglcipwned"));
    ids.push("x".repeat(36));
    ids.push(".".repeat(36));
    ids.push("00000000-0000-4000-8000-000000000000".to_string());
    ids.push(fx.other_session.clone());
    for bad_id in &ids {
        bad(t, "PATCH", format!("/v2/sec/app/blobs/uploads/{bad_id}"), b"stolen");
        bad(t, "PATCH", format!("/v2/sec/app/blobs/uploads/{bad_id}"), b"");
        bad(
            t,
            "PUT",
            format!("/v2/sec/app/blobs/uploads/{bad_id}?digest={}", sha256_digest(b"12345stolen")),
            b"stolen",
        );
        bad(t, "GET", format!("/v2/sec/app/blobs/uploads/{bad_id}"), b"");
        bad(t, "DELETE", format!("/v2/sec/app/blobs/uploads/{bad_id}"), b"");
    }
    // The other repository's session is intact: still 5 bytes, still its own.
    let r = t.req("GET", &format!("/v2/sec/other/blobs/uploads/{}", fx.other_session)).send();
    assert_eq!((r.status, r.header("Range")), (204, Some("0-4")), "sec/other's session after the attacks");
    t.req("GET", &format!("/v2/sec/app/blobs/{}", sha256_digest(b"12345stolen"))).send().expect(404);

    // `?ns=`: echoed, never a header injection or a path; `n=` and `last=`.
    for ns in ["..%2f..%2fglcipwned", "%2e%2e", "a%00b", "%0d%0aX-Injected:%201", "%0aX-Injected:%201", "a%2f..%2f.."] {
        for target in [
            format!("/v2/sec/app/manifests/v1?ns={ns}"),
            format!("/v2/sec/app/blobs/{d}?ns={ns}"),
            format!("/v2/sec/app/manifests/nope?ns={ns}"),
        ] {
            let r = t.send(&t.req("GET", &target));
            assert!(r.status < 500, "{target}: {}", r.status);
            assert!(r.header("X-Injected").is_none(), "{target}: header injection: {:?}", r.headers);
            // (Control bytes echoed in OCI-Namespace: `ns_parameter_is_a_host_and_nothing_else`.)
        }
    }
    for q in ["n=-1", "n=abc", "n=99999999999999999999999", "n=%00", "n=1e3", "n=0x10", "n= 1"] {
        bad(t, "GET", format!("/v2/sec/app/tags/list?{q}"), b"");
        bad(t, "GET", format!("/v2/_catalog?{q}"), b"");
    }
    let long_last = "z".repeat(8000);
    for q in [
        "n=18446744073709551615".to_string(),
        "n=0".to_string(),
        "last=..%2f..%2fglcipwned".to_string(),
        "last=%00".to_string(),
        "n=1&last=%ff%fe".to_string(),
        format!("n=1&last={long_last}"),
    ] {
        for target in [format!("/v2/sec/app/tags/list?{q}"), format!("/v2/_catalog?{q}")] {
            let r = t.send(&t.req("GET", &target));
            assert_eq!(r.status, 200, "{target}: {}", r.text());
            if let Some(link) = r.header("Link") {
                assert!(!link.contains(".."), "{target}: Link {link}");
            }
        }
    }
}

/// Attacks on the admin API's paths and queries, and on `/token`'s `scope=`.
fn admin_and_token_attacks(t: &mut Target) {
    let admin = t.admin.clone().unwrap();
    for path in [
        "/glci/admin/v1/../../v2/",
        "/glci/admin/v1/%2e%2e/list",
        "/glci/admin/v1/list/..",
        "/glci/admin/v1/list/",
        "/glci/admin/v1//list",
        "/glci/admin/v1/LIST",
        "/glci/admin/v1/list%00",
        "/glci/admin/v1/stats%2f..",
        "/glci/admin/v2/list",
        "/glci/admin/v1/",
        "/glci/admin/v1",
        "/glci/admin/",
        "/glci/admin/v1/..%2fclean",
        "/glci/../glci/admin/v1/list",
        "/v2/../glci/admin/v1/list",
        "/glci/admin/v1/clean/../list",
    ] {
        t.refused(t.req("GET", path));
        t.refused(t.req("POST", path));
    }
    for q in [
        "project=..%2f..%2fglcipwned",
        "project=%2e%2e",
        "project=a%00",
        "project=%2f..%2f",
        "project=sec%2f..%2f..%2fglcipwned",
        "project=SEC",
        "project=sec/../other",
        "project=%c3%bc",
    ] {
        t.refused(t.req("GET", &format!("/glci/admin/v1/list?{q}")));
        // Not a dry run: a bad project must never reach the collector.
        t.refused(t.req("POST", &format!("/glci/admin/v1/clean?{q}")));
    }
    for q in ["dry_run=maybe", "dry_run=%00", "grace=-1", "grace=1e9", "grace=99999999999999999999999", "grace=%00"] {
        t.refused(t.req("POST", &format!("/glci/admin/v1/clean?{q}")));
    }
    for q in ["dry_run=true&grace=18446744073709551615", "dry_run=true&grace=0&project=nothing/here"] {
        let r = t.send(&t.req("POST", &format!("/glci/admin/v1/clean?{q}")));
        assert_eq!(r.status, 200, "clean?{q}: {}", r.text());
    }

    // `/token`'s scope: whatever is asked, nothing but valid names is granted.
    let job = t.job_token("sec/app");
    let long_scope = format!("repository:{}:push", "a/".repeat(3000));
    for scope in [
        "repository:..%2f..%2fglcipwned:pull,push",
        "repository:../../glcipwned:pull,push,delete",
        "repository:sec/app/../../glcipwned:pull,push",
        "repository:sec/app/..:push",
        "repository:sec/app/%2e%2e/other:push",
        "repository:SEC/APP:push",
        "repository::push",
        "repository:sec/app%00:push",
        "::",
        ":",
        "%00",
        "repository:sec/app:pull:push:delete",
        "registry:catalog:*",
        "registry:../../glcipwned:*",
        "repository:sec/app:*",
        long_scope.as_str(),
    ] {
        for (who, cred) in [("admin", basic("glci-admin", &admin)), ("job", basic("gitlab-ci-token", &job))] {
            let target = format!("/token?service=glci&scope={scope}");
            let r = t.send(&t.anon("GET", &target).header("Authorization", &cred));
            if r.status != 200 {
                assert_refused(&r, "GET", &format!("{who} {target}"));
                continue;
            }
            let token = r.json()["token"].as_str().unwrap().to_string();
            t.secret(&format!("{who} bearer token for {scope}"), &token);
            assert_grants_are_valid(&token, &format!("{who} GET {target}"));
            let form = format!(
                "grant_type=password&username=x&password={}&service=glci&scope={scope}",
                cred_password(who, &admin, &job)
            );
            let r = t
                .send(&t.anon("POST", "/token").header("Content-Type", "application/x-www-form-urlencoded").body(form));
            assert_eq!(r.status, 200, "{who} POST /token scope={scope}: {}", r.text());
            assert_grants_are_valid(r.json()["access_token"].as_str().unwrap(), &format!("{who} POST scope={scope}"));
        }
    }
}

fn cred_password<'a>(who: &str, admin: &'a str, job: &'a str) -> &'a str {
    if who == "admin" {
        admin
    } else {
        job
    }
}

/// The claims of a glci token, read as any client can (they are signed, not encrypted).
fn token_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap_or_else(|| panic!("not a glci token: {token}"));
    serde_json::from_slice(&unhex(payload)).unwrap()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token with its claims replaced and its MAC kept.
fn with_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], hex(&serde_json::to_vec(claims).unwrap()), parts[2])
}

/// Every grant of a `/token` answer names a valid repository (or the catalog).
#[track_caller]
fn assert_grants_are_valid(token: &str, what: &str) {
    let name =
        Regex::new(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$").unwrap();
    let claims = token_claims(token);
    for access in claims["access"].as_array().cloned().unwrap_or_default() {
        let (kind, n) = (access["type"].as_str().unwrap(), access["name"].as_str().unwrap());
        let ok = (kind == "repository" && n.len() <= 255 && name.is_match(n)) || (kind == "registry" && n == "catalog");
        assert!(ok, "{what}: granted {access} (claims {claims})");
    }
}

/// Traversal with auth on: the admin credential, so every attack reaches the handlers.
#[test]
fn traversal_in_every_path_component_with_auth() {
    let mut t = Target::start("traversal, auth", true, TEST_CONFIG);
    let fx = setup(&t);
    let before = snapshot(t.root.path());
    assert!(canary_hits(&[t.root.path()]).is_empty(), "canary present before the attacks");
    traversal_attacks(&mut t, &fx);
    admin_and_token_attacks(&mut t);
    raw_target_attacks(&mut t);
    let after = snapshot(t.root.path());
    let changed = changes(&before, &after);
    assert!(changed.is_empty(), "attacks changed the filesystem:\n{}", changed.join("\n"));
    assert_layout(&t.storage());
    let hits = canary_hits(&[t.root.path(), &t.storage()]);
    assert!(hits.is_empty(), "attacks created {hits:?}");
    // What was there is still served.
    t.req("GET", "/v2/sec/app/manifests/v1").send().expect(200);
    assert_eq!(
        t.req("GET", &format!("/v2/sec/app/blobs/{}", sha256_digest(&fx.layer))).send().expect(200).body,
        fx.layer
    );
    t.assert_alive();
    t.finish();
}

/// Traversal with `--no-auth`: no credential stands between the attacks and the handlers.
#[test]
fn traversal_in_every_path_component_without_auth() {
    let mut t = Target::start("traversal, --no-auth", false, TEST_CONFIG);
    let fx = setup(&t);
    let before = snapshot(t.root.path());
    traversal_attacks(&mut t, &fx);
    raw_target_attacks(&mut t);
    for path in ["/glci/admin/v1/list?project=..%2f..%2fglcipwned", "/glci/admin/v1/../../v2/"] {
        t.refused(t.req("GET", path));
    }
    t.refused(t.req("POST", "/glci/admin/v1/clean?project=..%2f..%2fglcipwned"));
    let after = snapshot(t.root.path());
    let changed = changes(&before, &after);
    assert!(changed.is_empty(), "attacks changed the filesystem:\n{}", changed.join("\n"));
    assert_layout(&t.storage());
    let hits = canary_hits(&[t.root.path(), &t.storage()]);
    assert!(hits.is_empty(), "attacks created {hits:?}");
    t.assert_alive();
    t.finish();
}

/// Request targets no builder would make: raw control bytes, absolute forms, no leading slash.
fn raw_target_attacks(t: &mut Target) {
    let auth = t.admin.as_ref().map(|a| format!("Authorization: {}\r\n", basic("glci-admin", a))).unwrap_or_default();
    for target in [
        "/v2/a\0b/tags/list",
        "/v2/..\x0b/tags/list",
        "/v2/a\tb/tags/list",
        "v2/../glcipwned/tags/list",
        "*",
        "http://127.0.0.1/v2/../../glcipwned/tags/list",
        "http://x/v2/%2e%2e/manifests/v1",
        "//v2/../tags/list",
        "/v2/a/b/../../../glcipwned/blobs/uploads/",
        "/%2e%2e/%2e%2e/glcipwned",
    ] {
        for method in ["GET", "POST", "PUT", "DELETE"] {
            let mut c = Client::new(http::connect(&t.addr(), IO_TIMEOUT).unwrap());
            c.send_raw(
                format!(
                    "{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            let r = http::read_response(&mut c.reader, method, http::Connection::Close)
                .unwrap_or_else(|e| panic!("{method} {target:?}: no response ({e})"));
            t.record(r.status, &format!("{method} {target:?}"));
            assert_refused(&r, method, &format!("{method} {target:?}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Oversized heads and bodies.

/// Sends `head` (and `body`) raw, shuts our side when `close_write`, reads the response.
fn raw(t: &mut Target, what: &str, head: &[u8], body: &[u8], close_write: bool) -> Response {
    let stream = http::connect(&t.addr(), IO_TIMEOUT).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut bytes = head.to_vec();
    bytes.extend_from_slice(body);
    // Write from a thread: the server may answer (and stop reading) before we are done.
    let sender = thread::spawn(move || {
        let _ = writer.write_all(&bytes);
        if close_write {
            let _ = writer.shutdown(Shutdown::Write);
        }
    });
    let mut reader = BufReader::new(stream);
    let r = http::read_response(&mut reader, "PUT", http::Connection::Close)
        .unwrap_or_else(|e| panic!("{what}: no response ({e})\n{}", t.server.stderr()));
    drop(reader);
    sender.join().unwrap();
    t.record(r.status, what);
    r
}

fn server_peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn oversized_heads_and_bodies_are_refused_and_the_server_lives_on() {
    let mut t = Target::start("oversized", true, TEST_CONFIG);
    let fx = setup(&t);
    let auth = format!("Authorization: {}\r\n", basic("glci-admin", t.admin.as_ref().unwrap()));
    let id = fx.app_session.clone();

    // Heads: one huge header, too many headers, a huge request line, many medium headers.
    let cases: Vec<(&str, String)> = vec![
        ("one 70 KiB header", format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024))),
        ("one 1 MiB header", format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1024 * 1024))),
        ("200 headers", format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: b\r\n".repeat(200))),
        ("5000 headers", format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: b\r\n".repeat(5000))),
        (
            "90 headers of 1 KiB",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{}\r\n", format!("X-A: {}\r\n", "b".repeat(1024)).repeat(90)),
        ),
        ("a 70 KiB request target", format!("GET /v2/{}/tags/list HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70 * 1024))),
        (
            "a 70 KiB Authorization",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", "a".repeat(70 * 1024)),
        ),
        (
            "an endless header line without a newline",
            format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}", "a".repeat(200 * 1024)),
        ),
    ];
    for (what, head) in cases {
        let r = raw(&mut t, what, head.as_bytes(), b"", true);
        assert_eq!(r.status, 431, "{what}: {}", r.text());
        assert_refused(&r, "GET", what);
        t.assert_alive();
    }

    // A manifest over the 8 MiB limit: by its Content-Length, and chunked without one.
    let limit = 8 * 1024 * 1024;
    for len in [limit + 1, 10_000_000_000_000u64, u64::MAX] {
        let head = format!(
            "PUT /v2/sec/app/manifests/big HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {OCI_MANIFEST}\r\nContent-Length: {len}\r\n\r\n"
        );
        let r = raw(&mut t, &format!("manifest of {len} bytes"), head.as_bytes(), b"{", true);
        assert_eq!(r.status, 413, "Content-Length {len}: {}", r.text());
        assert_refused(&r, "PUT", "manifest too large");
        assert_eq!(r.error_code(), "SIZE_INVALID");
    }
    let head = format!(
        "PUT /v2/sec/app/manifests/big HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {OCI_MANIFEST}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..9 {
        body.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        body.extend(std::iter::repeat_n(b' ', 1024 * 1024));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let r = raw(&mut t, "chunked manifest of 9 MiB", head.as_bytes(), &body, false);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_refused(&r, "PUT", "chunked manifest too large");
    t.req("GET", "/v2/sec/app/manifests/big").send().expect(404);
    t.assert_alive();

    // A 10 TB Content-Length on every blob write, with 1 MiB sent and then EOF.
    let mib = vec![b'x'; 1024 * 1024];
    let d = sha256_digest(b"never sent");
    for (method, target) in [
        ("PATCH", format!("/v2/sec/app/blobs/uploads/{id}")),
        ("PUT", format!("/v2/sec/app/blobs/uploads/{id}?digest={d}")),
        ("POST", format!("/v2/sec/app/blobs/uploads/?digest={d}")),
    ] {
        let head = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 10000000000000\r\n\r\n");
        let r = raw(&mut t, &format!("{method} with Content-Length 10^13"), head.as_bytes(), &mib, true);
        assert_refused(&r, method, &format!("{method} {target} with a 10 TB Content-Length"));
        t.assert_alive();
    }

    // While such an upload stalls (its client neither sends nor closes), others are served.
    let stalled_id = start_session(&t, "sec/app");
    let mut stalled = http::connect(&t.addr(), IO_TIMEOUT).unwrap();
    stalled
        .write_all(
            format!(
                "PATCH /v2/sec/app/blobs/uploads/{stalled_id} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 10000000000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    stalled.write_all(&mib).unwrap();
    for _ in 0..5 {
        t.assert_alive();
    }
    t.attacks += 1;
    drop(stalled);

    // Chunked framing attacks on a blob PATCH.
    let bad_chunks: Vec<(&str, String)> = vec![
        ("a 10 KiB chunk-size line", format!("{}\r\nabc\r\n0\r\n\r\n", "1".repeat(10 * 1024))),
        ("a chunk size overflowing u64", "10000000000000000\r\nabc\r\n0\r\n\r\n".to_string()),
        ("a chunk size of 2^128", format!("1{}\r\nabc\r\n0\r\n\r\n", "0".repeat(32))),
        ("a chunk size of u64::MAX", "ffffffffffffffff\r\nabc".to_string()),
        ("a chunk size of 2^60 then EOF", "fffffffffffffff\r\nabc".to_string()),
        ("a 10 KiB chunk extension", format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(10 * 1024))),
        ("a negative chunk size", "-3\r\nabc\r\n0\r\n\r\n".to_string()),
        ("a non-hex chunk size", "zz\r\nabc\r\n0\r\n\r\n".to_string()),
        ("a chunk longer than its size", "2\r\nabcdef\r\n0\r\n\r\n".to_string()),
        ("20 000 trailer lines, then EOF", format!("3\r\nabc\r\n0\r\n{}", "X-T: y\r\n".repeat(20_000))),
        ("a 10 KiB trailer line", format!("3\r\nabc\r\n0\r\nX-T: {}\r\n\r\n", "y".repeat(10 * 1024))),
    ];
    for (what, body) in bad_chunks {
        let session = start_session(&t, "sec/app");
        let head = format!(
            "PATCH /v2/sec/app/blobs/uploads/{session} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
        );
        let r = raw(&mut t, what, head.as_bytes(), body.as_bytes(), true);
        assert_refused(&r, "PATCH", what);
        t.assert_alive();
    }
    // Content-Length itself overflowing.
    for len in ["18446744073709551616", "99999999999999999999999999", "1e9", "0x10", "+5"] {
        let head =
            format!("PATCH /v2/sec/app/blobs/uploads/{id} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len}\r\n\r\n");
        let r = raw(&mut t, &format!("Content-Length: {len}"), head.as_bytes(), b"abcde", true);
        assert_refused(&r, "PATCH", &format!("Content-Length: {len}"));
    }

    // Ambiguous framing (request smuggling): refused, and the connection closed, so the request
    // hidden behind it is never answered.
    let hidden = "GET /v2/_catalog HTTP/1.1\r\nHost: x\r\n\r\n";
    for (what, framing) in [
        ("Content-Length and Transfer-Encoding", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
        ("Transfer-Encoding and Content-Length", "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
        ("two different Content-Lengths", "Content-Length: 3\r\nContent-Length: 40\r\n"),
        ("chunked twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        ("chunked, then another coding", "Transfer-Encoding: chunked, gzip\r\n"),
        ("an unknown coding", "Transfer-Encoding: xchunked\r\n"),
        ("a space before the colon", "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n"),
        ("an obs-folded Transfer-Encoding", "Content-Length: 3\r\nTransfer-Encoding:\r\n chunked\r\n"),
        ("a negative Content-Length", "Content-Length: -3\r\n"),
    ] {
        let head = format!("POST /v2/sec/app/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n{auth}{framing}\r\n");
        let mut c = Client::new(http::connect(&t.addr(), IO_TIMEOUT).unwrap());
        c.send_raw(format!("{head}0\r\n\r\n{hidden}").as_bytes());
        let r = http::read_response(&mut c.reader, "POST", http::Connection::KeepAlive)
            .unwrap_or_else(|e| panic!("{what}: no response ({e})"));
        t.record(r.status, what);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_refused(&r, "POST", what);
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c.reader, &mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1"), "{what}: the hidden request was answered");
    }
    // Methods the registry has no use for, and things that are not HTTP/1.1 requests.
    for line in [
        "TRACE /v2/ HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "CONNECT 127.0.0.1:22 HTTP/1.1",
        "PROPFIND /v2/ HTTP/1.1",
        "get /v2/ HTTP/1.1",
        "GET /v2/ HTTP/9.9",
        "PRI * HTTP/2.0",
        "GET /v2/",
        "GET",
    ] {
        let r = raw(&mut t, line, format!("{line}\r\nHost: x\r\n{auth}\r\n").as_bytes(), b"", true);
        assert_refused(&r, "GET", line);
    }

    // Ranges at the ends of u64 on a blob GET.
    let blob = format!("/v2/sec/app/blobs/{}", sha256_digest(&fx.layer));
    let many = vec!["0-0"; 2000].join(",");
    for range in [
        "bytes=0-18446744073709551615".to_string(),
        "bytes=18446744073709551615-".to_string(),
        "bytes=18446744073709551615-18446744073709551615".to_string(),
        "bytes=-18446744073709551615".to_string(),
        "bytes=99999999999999999999-".to_string(),
        "bytes=0-99999999999999999999".to_string(),
        "bytes=--1".to_string(),
        "bytes=-".to_string(),
        format!("bytes={many}"),
    ] {
        let r = t.send(&t.req("GET", &blob).header("Range", &range));
        assert!(matches!(r.status, 200 | 206 | 416), "Range: {range}: {} {}", r.status, r.text());
    }

    // TLS garbage on the shared port: a bogus handshake record, a huge one, a truncated one.
    for (what, bytes) in [
        ("a garbage TLS record", [&[0x16u8, 0x03, 0x01, 0x00, 0x10][..], &[0xffu8; 16][..]].concat()),
        ("a TLS record claiming 64 KiB", [&[0x16u8, 0x03, 0x03, 0xff, 0xff][..], &vec![0u8; 70_000][..]].concat()),
        ("a truncated ClientHello", vec![0x16u8, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00]),
    ] {
        let mut sock = http::connect(&t.addr(), IO_TIMEOUT).unwrap();
        let _ = sock.write_all(&bytes);
        let _ = sock.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut sock, &mut answer);
        assert!(!answer.starts_with(b"HTTP/1.1 5"), "{what}: {:?}", String::from_utf8_lossy(&answer));
        t.attacks += 1;
        t.assert_alive();
    }

    // Slow clients: 100 silent connections and 100 with half a request head hold no worker
    // that others need.
    let silent: Vec<_> = (0..100).map(|_| http::connect(&t.addr(), IO_TIMEOUT).unwrap()).collect();
    let mut halves: Vec<_> = (0..100).map(|_| http::connect(&t.addr(), IO_TIMEOUT).unwrap()).collect();
    for sock in &mut halves {
        sock.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    }
    for _ in 0..10 {
        t.assert_alive();
    }
    t.attacks += 200;
    drop(silent);
    drop(halves);

    // No memory blow-up, and the server still does real work for others.
    let peak = server_peak_rss_kib(t.server.pid());
    println!("glci serve peak RSS under the oversized attacks: {peak} KiB");
    assert!(peak < 256 * 1024, "glci serve peaked at {peak} KiB of memory under the attacks");
    push_blob(&t, "sec/after", &fx.layer);
    push_blob(&t, "sec/after", &fx.config);
    put_manifest(&t, "sec/after", "v1", &fx.manifest);
    t.req("GET", "/v2/sec/after/manifests/v1").send().expect(200);
    assert_layout(&t.storage());
    t.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Tokens: forged, expired, cross-project, wrong place, wrong server.

/// `WWW-Authenticate` of a 401 from the registry: a well-formed Bearer challenge.
#[track_caller]
fn assert_challenge(r: &Response, what: &str) {
    let value =
        r.header("WWW-Authenticate").unwrap_or_else(|| panic!("{what}: 401 without a challenge: {:?}", r.headers));
    let re = Regex::new(
        r#"^Bearer realm="https?://[A-Za-z0-9.:\[\]-]+/token",service="glci"(,scope="(repository:[a-z0-9._/-]+:(pull|push|delete)|registry:catalog:\*)")?$"#,
    )
    .unwrap();
    assert!(re.is_match(value), "{what}: malformed challenge {value:?}");
}

#[test]
fn forged_expired_and_cross_project_tokens_are_refused() {
    let mut t = Target::start("tokens", true, TEST_CONFIG);
    let fx = setup(&t);
    let admin = t.admin.clone().unwrap();
    let job = t.job_token("sec/app");
    let other_job = t.job_token("sec/other");

    // A blob push to `repo` with `authorization`: the status; the blob must not appear unless 201.
    let attempt = |t: &mut Target, repo: &str, authorization: Option<&str>, what: &str| -> Response {
        let content = format!("pushed by {what} to {repo}");
        let mut r = t.anon("POST", &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256_digest(content.as_bytes())));
        if let Some(a) = authorization {
            r = r.header("Authorization", a);
        }
        let resp = t.send(&r.body(content.as_bytes()));
        if resp.status != 201 {
            let check = t.anon("GET", &format!("/v2/{repo}/blobs/{}", sha256_digest(content.as_bytes()))).send();
            assert_eq!(check.status, 404, "{what}: refused with {} but the blob is in {repo}", resp.status);
        }
        resp
    };
    let must_401 = |t: &mut Target, authorization: &str, what: &str| {
        let r = attempt(t, "sec/app", Some(authorization), what);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_refused(&r, "POST", what);
        assert_challenge(&r, what);
        let r = t.send(&t.anon("GET", "/v2/").header("Authorization", authorization));
        assert_eq!(r.status, 401, "{what} on /v2/: {}", r.text());
        assert_challenge(&r, what);
        let r = t.send(&t.anon("GET", "/glci/admin/v1/stats").header("Authorization", authorization));
        assert_eq!(r.status, 401, "{what} on the admin API: {}", r.text());
        let r = t.send(
            &t.anon("GET", "/token?service=glci&scope=repository:sec/app:push").header("Authorization", authorization),
        );
        assert_eq!(r.status, 401, "{what} on /token: {}", r.text());
        assert_refused(&r, "GET", what);
    };

    // Forged: changed MAC, claims altered under the original MAC, structural tricks.
    let claims = token_claims(&job);
    let (prefix, payload, mac) = {
        let p: Vec<&str> = job.split('.').collect();
        (p[0].to_string(), p[1].to_string(), p[2].to_string())
    };
    let mut forged: Vec<(String, String)> = Vec::new();
    for (what, token) in [("job", &job), ("admin", &admin)] {
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
        forged.push((format!("{what} token with one MAC digit changed"), String::from_utf8(bytes).unwrap()));
    }
    let mut as_admin = claims.clone();
    as_admin["kind"] = json!("admin");
    as_admin["admin"] = json!(true);
    forged.push(("job claims turned admin, original MAC".into(), with_claims(&job, &as_admin)));
    let mut other_project = claims.clone();
    other_project["project"] = json!("sec/other");
    forged.push(("job claims for another project, original MAC".into(), with_claims(&job, &other_project)));
    let mut longer = claims.clone();
    longer["exp"] = json!(claims["exp"].as_u64().unwrap() + 86400 * 365);
    forged.push(("job claims with a later expiry, original MAC".into(), with_claims(&job, &longer)));
    let mut access = claims.clone();
    access["kind"] = json!("access");
    access["access"] = json!([{"type": "repository", "name": "sec/other", "actions": ["push"]}]);
    forged.push(("job claims turned access token, original MAC".into(), with_claims(&job, &access)));
    forged.push((
        "admin claims with the job's MAC".into(),
        format!("{prefix}.{}.{mac}", admin.split('.').nth(1).unwrap()),
    ));
    forged.push(("empty MAC".into(), format!("{prefix}.{payload}.")));
    forged.push(("no MAC".into(), format!("{prefix}.{payload}")));
    forged.push(("truncated MAC".into(), format!("{prefix}.{payload}.{}", &mac[..32])));
    forged.push(("one byte of MAC".into(), format!("{prefix}.{payload}.{}", &mac[..2])));
    forged.push(("MAC with an extra byte".into(), format!("{prefix}.{payload}.{mac}00")));
    forged.push(("MAC of odd length".into(), format!("{prefix}.{payload}.{}", &mac[..63])));
    forged.push(("MAC of zeros".into(), format!("{prefix}.{payload}.{}", "0".repeat(64))));
    forged.push(("a fourth part".into(), format!("{job}.00")));
    forged.push(("another version prefix".into(), format!("glci2.{payload}.{mac}")));
    forged.push(("alg none style".into(), format!("none.{payload}.")));
    forged.push(("no prefix".into(), format!("{payload}.{mac}")));
    forged.push(("non-hex claims".into(), format!("{prefix}.zz{}.{mac}", &payload[2..])));
    forged.push(("JWT-looking".into(), "eyJhbGciOiJub25lIn0.eyJraW5kIjoiYWRtaW4ifQ.".into()));
    forged.push((
        "the admin.secret itself".into(),
        std::fs::read_to_string(t.home().join("admin.secret")).unwrap().trim().to_string(),
    ));
    for (what, token) in &forged {
        for authorization in [format!("Bearer {token}"), basic("gitlab-ci-token", token), basic("glci-admin", token)] {
            must_401(&mut t, &authorization, what);
        }
    }

    // Expired, crafted with the server's own secret (a hostile user cannot; the server must
    // still refuse them): an hour ago, and exactly now.
    let signer = glci::auth::Auth::load_or_create(&t.home(), true).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = [
        (
            "job token expired an hour ago",
            signer.sign(&glci::auth::Claims::job("sec/app", 1, 1, false, Duration::from_secs(60), hour_ago)),
        ),
        (
            "job token expiring now",
            signer.sign(&glci::auth::Claims::job("sec/app", 1, 1, false, Duration::ZERO, SystemTime::now())),
        ),
        ("admin token expired an hour ago", signer.sign(&glci::auth::Claims::admin(Duration::from_secs(60), hour_ago))),
    ];
    for (what, token) in &expired {
        t.secret(what, token);
        for authorization in [format!("Bearer {token}"), basic("gitlab-ci-token", token), basic("glci-admin", token)] {
            must_401(&mut t, &authorization, what);
        }
        let form = format!(
            "grant_type=password&username=glci-admin&password={token}&service=glci&scope=repository:sec/app:push"
        );
        let r = t.send(&t.anon("POST", "/token").body(form));
        assert_eq!(r.status, 401, "{what} through the OAuth2 form: {}", r.text());
    }
    // A Bearer token from /token never outlives the job token it came from.
    let short =
        signer.sign(&glci::auth::Claims::job("sec/app", 1, 1, false, Duration::from_secs(30), SystemTime::now()));
    t.secret("short job token", &short);
    let r = t.send(
        &t.anon("GET", "/token?service=glci&scope=repository:sec/app:push")
            .header("Authorization", &basic("gitlab-ci-token", &short)),
    );
    let doc = r.expect(200).json();
    assert!(doc["expires_in"].as_u64().unwrap() <= 30, "{doc}");
    t.secret("bearer of the short job token", doc["token"].as_str().unwrap());
    assert!(token_claims(doc["token"].as_str().unwrap())["exp"].as_u64() <= token_claims(&short)["exp"].as_u64());

    // A token of another server (another GLCI_HOME, another secret).
    let elsewhere = temp_dir();
    let foreign_job = run_stdout_in(elsewhere.path(), &["registry", "token", "--project", "sec/app"]);
    let foreign_admin = run_stdout_in(elsewhere.path(), &["registry", "login", "--print"]);
    t.secret("another server's job token", &foreign_job);
    t.secret("another server's admin token", &foreign_admin);
    for (what, token) in
        [("another server's job token", &foreign_job), ("another server's admin token", &foreign_admin)]
    {
        for authorization in [format!("Bearer {token}"), basic("gitlab-ci-token", token), basic("glci-admin", token)] {
            must_401(&mut t, &authorization, what);
        }
    }

    // Malformed credentials.
    let bad_auth = [
        basic("glci-admin", "wrong"),
        basic("glci-admin", ""),
        basic("", ""),
        basic("gitlab-ci-token", "hunter2hunter2hunter2"),
        "Basic".to_string(),
        "Basic ".to_string(),
        "Basic !!!!".to_string(),
        "Basic Z2xjaS1hZG1pbg==".to_string(), // "glci-admin", no colon
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Bearer  ".to_string(),
        format!("Token {admin}"),
        format!("Digest username=\"glci-admin\", response=\"{admin}\""),
        admin.clone(),
        format!("Bearer {admin} {admin}"),
        format!("Bearer {}", "a".repeat(4000)),
        format!("Basic {}", "QUFB".repeat(2000)),
    ];
    for authorization in &bad_auth {
        must_401(&mut t, authorization, &format!("Authorization: {}…", &authorization[..authorization.len().min(20)]));
    }

    // Tokens in the query string are not credentials.
    for param in ["access_token", "token", "password", "private_token", "jwt", "auth"] {
        for token in [&admin, &job] {
            let d = sha256_digest(param.as_bytes());
            let r = t.send(
                &t.anon("POST", &format!("/v2/sec/app/blobs/uploads/?digest={d}&{param}={token}"))
                    .body(param.as_bytes()),
            );
            assert_eq!(r.status, 401, "?{param}= accepted: {}", r.text());
            assert_challenge(&r, &format!("?{param}="));
            let r = t.send(&t.anon("GET", &format!("/glci/admin/v1/stats?{param}={token}")));
            assert_eq!(r.status, 401, "?{param}= on the admin API: {}", r.text());
        }
    }

    // Cross-project: a job token writes only under its project; reads are anonymous (DESIGN §6).
    let job_basic = basic("gitlab-ci-token", &job);
    assert_eq!(attempt(&mut t, "sec/app", Some(&job_basic), "job, own project").status, 201);
    assert_eq!(attempt(&mut t, "sec/app/sub/deeper", Some(&job_basic), "job, below its project").status, 201);
    for repo in ["sec/other", "sec/app2", "sec/ap", "sec", "other/sec/app", "sec/app-x", "sec/app.x", "sec/app_x"] {
        let r = attempt(&mut t, repo, Some(&job_basic), &format!("job for sec/app pushing to {repo}"));
        assert_eq!(r.status, 403, "job token pushed to {repo}: {}", r.text());
        assert_eq!(r.error_code(), "DENIED");
    }
    let other_blob = sha256_digest(&fx.layer);
    let denied: Vec<(&str, String, Vec<u8>)> = vec![
        ("PUT", "/v2/sec/other/manifests/v2".to_string(), fx.manifest.clone()),
        ("PUT", format!("/v2/sec/other/manifests/{}", fx.manifest_digest), fx.manifest.clone()),
        ("DELETE", "/v2/sec/other/manifests/v1".to_string(), vec![]),
        ("DELETE", format!("/v2/sec/other/manifests/{}", fx.manifest_digest), vec![]),
        ("DELETE", format!("/v2/sec/other/blobs/{other_blob}"), vec![]),
        ("POST", "/v2/sec/other/blobs/uploads/".to_string(), vec![]),
        ("POST", format!("/v2/sec/other/blobs/uploads/?mount={other_blob}&from=sec/app"), vec![]),
        ("PATCH", format!("/v2/sec/other/blobs/uploads/{}", fx.other_session), b"stolen".to_vec()),
        ("PUT", format!("/v2/sec/other/blobs/uploads/{}?digest={}", fx.other_session, sha256_digest(b"12345")), vec![]),
        ("DELETE", format!("/v2/sec/other/blobs/uploads/{}", fx.other_session), vec![]),
        // Its own name with the other repository's session: unknown, never written.
        ("PATCH", format!("/v2/sec/app/blobs/uploads/{}", fx.other_session), b"stolen".to_vec()),
        ("PUT", format!("/v2/sec/app/blobs/uploads/{}?digest={}", fx.other_session, sha256_digest(b"12345")), vec![]),
        ("DELETE", format!("/v2/sec/app/blobs/uploads/{}", fx.other_session), vec![]),
    ];
    for (method, target, body) in &denied {
        let mut r = t.anon(method, target).header("Authorization", &job_basic).body(body.clone());
        if target.contains("/manifests/") {
            r = r.header("Content-Type", OCI_MANIFEST);
        }
        let resp = t.refused(r);
        assert!(matches!(resp.status, 403 | 404), "{method} {target}: {}", resp.status);
    }
    let r = t.req("GET", &format!("/v2/sec/other/blobs/uploads/{}", fx.other_session)).send();
    assert_eq!((r.status, r.header("Range")), (204, Some("0-4")), "sec/other's session after the job's attempts");
    t.req("GET", "/v2/sec/other/manifests/v1").send().expect(200);
    t.anon("GET", &format!("/v2/sec/other/blobs/{other_blob}")).send().expect(200);
    // Reads of another project: allowed, as for anyone (anonymous_pull defaults to true).
    t.send(&t.anon("GET", "/v2/sec/other/manifests/v1").header("Authorization", &job_basic)).expect(200);
    // Mounting another project's blob into its own: a read there, a write here.
    let r = t.send(
        &t.anon("POST", &format!("/v2/sec/app/mounted/blobs/uploads/?mount={other_blob}&from=sec/other"))
            .header("Authorization", &job_basic),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // Through /token: a job asks for push on another project and gets pull only.
    let r = t.send(
        &t.anon("GET", "/token?service=glci&scope=repository:sec/other:pull,push,delete&scope=repository:sec/app:push")
            .header("Authorization", &job_basic),
    );
    let bearer = r.expect(200).json()["token"].as_str().unwrap().to_string();
    t.secret("job bearer", &bearer);
    let grants = token_claims(&bearer)["access"].clone();
    assert_eq!(
        grants,
        json!([{"type": "repository", "name": "sec/other", "actions": ["pull"]}, {"type": "repository", "name": "sec/app", "actions": ["push"]}])
    );
    let r = attempt(&mut t, "sec/other", Some(&format!("Bearer {bearer}")), "job bearer on another project");
    assert_eq!(r.status, 403, "{}", r.text());
    // Pull-only tokens trying to push: anonymous bearer, and the job's pull-only bearer.
    let anon_bearer =
        t.send(&t.anon("GET", "/token?service=glci&scope=repository:sec/app:pull,push")).expect(200).json()["token"]
            .as_str()
            .unwrap()
            .to_string();
    t.secret("anonymous bearer", &anon_bearer);
    assert!(token_claims(&anon_bearer)["access"].to_string().contains("pull"));
    assert!(!token_claims(&anon_bearer)["access"].to_string().contains("push"));
    let r = attempt(&mut t, "sec/app", Some(&format!("Bearer {anon_bearer}")), "anonymous bearer pushing");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_challenge(&r, "anonymous bearer pushing");
    let pull_only = t
        .send(&t.anon("GET", "/token?service=glci&scope=repository:sec/app:pull").header("Authorization", &job_basic))
        .expect(200)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    t.secret("pull-only bearer", &pull_only);
    let r = attempt(&mut t, "sec/app", Some(&format!("Bearer {pull_only}")), "pull-only bearer pushing");
    assert!(matches!(r.status, 401 | 403), "{}", r.text());
    // An access token used as a credential for /token never widens.
    let r = t.send(
        &t.anon("GET", "/token?service=glci&scope=repository:sec/app:push&scope=repository:sec/other:push")
            .header("Authorization", &format!("Bearer {pull_only}")),
    );
    let rewrapped = r.expect(200).json()["token"].as_str().unwrap().to_string();
    t.secret("re-granted bearer", &rewrapped);
    assert!(!token_claims(&rewrapped)["access"].to_string().contains("push"), "{}", token_claims(&rewrapped));
    let r = t.send(
        &t.anon("GET", "/token?service=glci&scope=repository:sec/app:push")
            .header("Authorization", &format!("Bearer {anon_bearer}")),
    );
    let rewrapped = r.expect(200).json()["token"].as_str().unwrap().to_string();
    assert!(!token_claims(&rewrapped)["access"].to_string().contains("push"));
    assert_eq!(token_claims(&rewrapped)["admin"], json!(false));

    // The admin API: the admin credential only.
    let other_basic = basic("gitlab-ci-token", &other_job);
    for (method, path) in [
        ("GET", "/glci/admin/v1/list"),
        ("GET", "/glci/admin/v1/stats"),
        ("POST", "/glci/admin/v1/clean?dry_run=true"),
        ("POST", "/glci/admin/v1/clean?project=sec/app"),
    ] {
        for (who, authorization, status) in [
            ("job", job_basic.clone(), 403),
            ("other job", other_basic.clone(), 403),
            ("job bearer", format!("Bearer {bearer}"), 403),
            ("anonymous bearer", format!("Bearer {anon_bearer}"), 403),
        ] {
            let r = t.refused(t.anon(method, path).header("Authorization", &authorization));
            assert_eq!(r.status, status, "{who} {method} {path}: {}", r.text());
        }
        let r = t.refused(t.anon(method, path));
        assert_eq!(r.status, 401, "anonymous {method} {path}");
        assert_challenge(&r, &format!("anonymous {method} {path}"));
    }
    t.req("GET", "/v2/sec/app/manifests/v1").send().expect(200);

    // Challenges stay well-formed whatever Host the client sends.
    for host in ["evil\"injected", "a b", "x\",scope=\"repository:sec/other:push", "", "h:1/../x", "[::1]:5"] {
        let mut c = Client::new(http::connect(&t.addr(), IO_TIMEOUT).unwrap());
        let d = sha256_digest(b"h");
        c.send_raw(format!("POST /v2/sec/app/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        let r = http::read_response(&mut c.reader, "POST", http::Connection::Close).unwrap();
        t.record(r.status, &format!("Host: {host}"));
        assert_eq!(r.status, 401, "Host {host:?}: {}", r.text());
        assert_challenge(&r, &format!("Host {host:?}"));
    }
    // /token's own 401 asks for Basic credentials.
    let r = t.send(&t.anon("GET", "/token?service=glci").header("Authorization", &basic("glci-admin", "wrong")));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Basic realm=\"glci\""));
    t.assert_alive();
    t.finish();
}

fn run_stdout_in(home: &Path, args: &[&str]) -> String {
    let out = run(glci().env("GLCI_HOME", home).args(args));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// 4. Secrets absent from every log line and command line.

#[test]
fn secrets_never_reach_logs_outputs_or_command_lines() {
    let config = "[registry]\nupstreams = []\npassword = \"registry-pw-0123456789abcdef\"\n\n[registry.upstream]\nurl = \"127.0.0.1:1\"\nusername = \"deploy\"\npassword = \"upstream-pw-0123456789abcdef\"\n";
    let mut t = Target::start("secrets", true, config);
    t.secret("[registry] password", "registry-pw-0123456789abcdef");
    t.secret("[registry.upstream] password", "upstream-pw-0123456789abcdef");
    let admin = t.admin.clone().unwrap();
    let job = t.job_token("sec/app");
    let admin_basic = basic("glci-admin", &admin);
    let job_basic = basic("gitlab-ci-token", &job);
    t.secret("admin Basic header", admin_basic.trim_start_matches("Basic "));
    t.secret("job Basic header", job_basic.trim_start_matches("Basic "));
    let fx = setup(&t);

    // Every way a credential reaches the server, successful or not.
    let flows: Vec<Request> = vec![
        t.anon("GET", "/v2/").header("Authorization", &admin_basic),
        t.anon("GET", "/v2/").header("Authorization", &job_basic),
        t.anon("GET", "/v2/").header("Authorization", &format!("Bearer {job}")),
        t.anon("GET", "/token?service=glci&scope=repository:sec/app:pull,push").header("Authorization", &job_basic),
        t.anon("GET", "/token?service=glci&scope=repository:sec/app:pull,push").header("Authorization", &admin_basic),
        t.anon("POST", "/token")
            .body(format!("grant_type=password&username=gitlab-ci-token&password={job}&scope=repository:sec/app:push")),
        t.anon("POST", "/token")
            .body(format!("grant_type=password&username=glci-admin&password={admin}x&scope=repository:sec/app:push")),
        t.anon("POST", "/token").body(format!("grant_type=refresh_token&refresh_token={job}")),
        t.anon("GET", &format!("/v2/sec/app/tags/list?access_token={job}&password={admin}")),
        t.anon("GET", &format!("/token?password={admin}&access_token={job}")),
        t.anon("GET", "/glci/admin/v1/stats").header("Authorization", &admin_basic),
        t.anon("GET", "/glci/admin/v1/stats").header("Authorization", &job_basic),
        t.anon("GET", "/glci/admin/v1/stats").header("Authorization", &basic("glci-admin", &format!("{admin}x"))),
        t.anon("POST", "/v2/sec/other/blobs/uploads/").header("Authorization", &job_basic),
        t.anon("POST", "/v2/sec/app/blobs/uploads/")
            .header("Authorization", &basic("glci-admin", "registry-pw-0123456789abcdef")),
        t.anon("POST", "/v2/sec/app/blobs/uploads/").header("Authorization", &format!("Bearer {admin}x")),
        t.anon("POST", "/v2/sec/app/blobs/uploads/").header("Authorization", &format!("Bearer {job}\x01")),
    ];
    for r in &flows {
        let resp = t.send(r);
        // Error messages do not echo credentials back either.
        if resp.status >= 400 {
            t.logs.push((format!("error body of {} {}", r.method, r.target.split('?').next().unwrap()), resp.text()));
            t.logs.push((
                format!("status line of {} {}", r.method, r.target.split('?').next().unwrap()),
                format!("{:?}", resp.headers),
            ));
        } else if let Ok(doc) = serde_json::from_slice::<Value>(&resp.body) {
            if let Some(token) = doc["token"].as_str() {
                t.secret("bearer from /token", token);
            }
        }
    }
    // A push with a job bearer: the whole flow a docker client goes through.
    let r = t.send(
        &t.anon("GET", "/token?service=glci&scope=repository:sec/app/img:pull,push")
            .header("Authorization", &job_basic),
    );
    let bearer = r.expect(200).json()["token"].as_str().unwrap().to_string();
    t.secret("job bearer", &bearer);
    for bytes in [&fx.config, &fx.layer] {
        let r = t
            .anon("POST", &format!("/v2/sec/app/img/blobs/uploads/?digest={}", sha256_digest(bytes)))
            .header("Authorization", &format!("Bearer {bearer}"))
            .body(bytes.clone())
            .send();
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = t
        .anon("PUT", "/v2/sec/app/img/manifests/v1")
        .header("Authorization", &format!("Bearer {bearer}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(fx.manifest.clone())
        .send();
    assert_eq!(r.status, 201, "{}", r.text());

    // The CLI: commands that show the configuration or talk to the admin API with the admin
    // credential, and one that fails because its home's credential is not this server's.
    let addr = t.addr();
    t.cli(&["config"]);
    t.cli(&["registry", "list", "--server", &addr]);
    t.cli(&["registry", "stats", "--server", &addr, "--json"]);
    t.cli(&["registry", "clean", "--server", &addr, "--dry-run"]);
    let stranger = temp_dir();
    let out = glci()
        .env("GLCI_HOME", stranger.path())
        .args(["registry", "list", "--server", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a foreign admin credential was accepted");
    t.logs.push(("stderr of glci registry list with another home".into(), String::from_utf8_lossy(&out.stderr).into()));
    t.logs.push(("stdout of glci registry list with another home".into(), String::from_utf8_lossy(&out.stdout).into()));
    let stranger_secret = std::fs::read_to_string(stranger.path().join("admin.secret")).unwrap();
    t.secret("another home's admin.secret", stranger_secret.trim());
    t.attacks += 1;

    // Command lines (what `ps` shows): the server's, and the CLI's options for credentials.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", t.server.pid())).unwrap();
    t.logs.push(("glci serve command line".into(), String::from_utf8_lossy(&cmdline).replace('\0', " ")));
    for args in [&["registry", "login", "--help"][..], &["registry", "token", "--help"], &["serve", "--help"]] {
        let help = run_stdout_in(&t.home(), args);
        for flag in ["--password ", "--password=", "--token ", "--secret", "--registry-password "] {
            assert!(
                !help.contains(flag),
                "glci {} takes a secret on the command line ({flag}):\n{help}",
                args.join(" ")
            );
        }
    }
    // `glci run` can take its external registry password on stdin (the argv flag is DESIGN §12's).
    let help = run_stdout_in(&t.home(), &["run", "--help"]);
    assert!(help.contains("--registry-password-stdin"), "{help}");

    // The log really holds the requests, so not finding secrets in it means something.
    let log = t.server.stderr();
    assert!(log.matches("event=request").count() >= flows.len(), "{log}");
    assert!(!log.contains("access_token") && !log.contains("password="), "query strings in the log:\n{log}");
    t.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. File modes.

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// No world-writable entry under `root`; no executable regular file under `no_exec`.
fn assert_safe_modes(root: &Path, no_exec: bool) {
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.unwrap();
        let m = mode(entry.path());
        let what = entry.path().display();
        assert!(!entry.path_is_symlink(), "a symlink: {what}");
        assert_eq!(m & 0o002, 0, "world-writable: {what} ({m:o})");
        assert_eq!(m & 0o6000, 0, "setuid/setgid: {what} ({m:o})");
        if entry.file_type().is_file() && no_exec {
            assert_eq!(m & 0o111, 0, "executable: {what} ({m:o})");
        }
    }
}

#[test]
fn files_are_created_with_safe_modes() {
    let mut t = Target::start("file modes", true, TEST_CONFIG);
    let fx = setup(&t);
    push_blob(&t, "sec/app", &vec![7u8; 300_000]);
    let home = t.home();
    assert_eq!(mode(&home.join("admin.secret")), 0o600, "admin.secret");
    assert_eq!(mode(&home.join("registry-ca/ca.key")), 0o600, "ca.key");
    assert_eq!(mode(&home.join("registry-ca/ca.crt")) & 0o022, 0, "ca.crt writable by others");
    assert_eq!(mode(&home.join("registry-ca")) & 0o022, 0, "registry-ca/ writable by others");
    assert_safe_modes(&home, true);
    assert_safe_modes(&t.storage(), true);
    assert_layout(&t.storage());
    // The blobs and upload data in particular, by name.
    let blob =
        t.storage().join("blobs/sha256").join(&sha256_digest(&fx.layer)[7..9]).join(&sha256_digest(&fx.layer)[7..]);
    assert_eq!(mode(&blob) & 0o133, 0, "blob {}", blob.display());
    assert_eq!(mode(&t.storage().join("uploads").join(&fx.other_session).join("data")) & 0o133, 0);
    t.attacks += 1;
    t.finish();
}

/// Under `umask 000` the secrets are still private: modes are set, not left to the umask.
#[test]
fn secrets_are_private_even_under_a_permissive_umask() {
    let dir = temp_dir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("config.toml"), TEST_CONFIG).unwrap();
    let storage = dir.path().join("storage");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_glci"))
        .args(["serve", "--listen", "127.0.0.1:0", "--quiet", "--storage"])
        .arg(&storage)
        .env("GLCI_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `listening on` is printed once the CA and secret exist; EOF if the server failed.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let started = BufReader::new(stdout).lines().any(|l| l.is_ok_and(|l| l.starts_with("listening on ")));
        let _ = tx.send(started);
    });
    let started = rx.recv_timeout(Duration::from_secs(30)).unwrap_or(false);
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "glci serve under umask 000 did not start");
    assert_eq!(mode(&home.join("admin.secret")), 0o600, "admin.secret under umask 000");
    assert_eq!(mode(&home.join("registry-ca/ca.key")), 0o600, "ca.key under umask 000");
    assert_eq!(mode(&home.join("registry-ca")) & 0o022, 0, "registry-ca/ under umask 000");
    assert_eq!(mode(&home.join("registry-ca/ca.crt")) & 0o022, 0, "ca.crt under umask 000");
    // The CLI creating the secret first behaves the same.
    let cli_home = dir.path().join("cli-home");
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" registry token --project a/b")
        .arg(env!("CARGO_BIN_EXE_glci"))
        .env("GLCI_HOME", &cli_home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&cli_home.join("admin.secret")), 0o600, "admin.secret made by the CLI under umask 000");
    TOTAL_ATTACKS.fetch_add(2, Ordering::SeqCst);
    println!("security summary [umask 000]: attacks tried=2 5xx seen=0 leaks found=0");
}

// ---------------------------------------------------------------------------------------------
// 6. `?ns=`: a registry host, never a path, a URL of the attacker's making or a header value.

/// A listener that must never be reached: counts connections and closes them at once.
fn trap() -> (String, std::sync::Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&hits);
    thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, hits)
}

#[test]
fn ns_parameter_is_a_host_and_nothing_else() {
    // Pull-through on, towards an upstream that refuses connections (127.0.0.1:1); the trap
    // stands for any host an attacker would aim the server at through a crafted ?ns=.
    let (trap_addr, trap_hits) = trap();
    let config = "[registry]\nupstreams = [\"127.0.0.1:1\"]\n";
    let mut t = Target::start("ns", false, config);
    setup(&t);
    let before = snapshot(t.root.path());
    let d = sha256_digest(b"not anywhere");
    // None of these needs a DNS lookup: each either fails to parse or names 127.0.0.1.
    for ns in [
        "a%00b".to_string(),
        "%0d%0aX-Injected:%201".to_string(),
        "127.0.0.1:1%2f..%2f..%2fglcipwned".to_string(),
        format!("{trap_addr}%2fv2%2fx%3f"),
        format!("{trap_addr}%2f..%2f..%2f"),
        format!("user:pw%40{trap_addr}"),
        format!("{trap_addr}%23"),
        format!("{trap_addr}%3fa%3d"),
        format!("127.0.0.1:1%40{trap_addr}"),
    ] {
        for target in [format!("/v2/sec/nope/manifests/v1?ns={ns}"), format!("/v2/sec/nope/blobs/{d}?ns={ns}")] {
            t.refused(t.req("GET", &target));
        }
    }
    // Served locally, `?ns=` is echoed: never with control bytes.
    let plain = Target::start("ns, no pull-through", false, TEST_CONFIG);
    setup(&plain);
    for ns in ["a%00b", "a%01b", "a%7fb", "%0d%0aX-Injected:%201"] {
        let target = format!("/v2/sec/app/manifests/v1?ns={ns}");
        let r = t.send(&plain.req("GET", &target));
        assert!(r.status < 500 && r.header("X-Injected").is_none(), "{target}: {} {:?}", r.status, r.headers);
        for (name, value) in &r.headers {
            assert!(!value.bytes().any(|b| b < 0x20 || b == 0x7f), "{target}: control bytes in {name}: {value:?}");
        }
    }
    plain.finish();
    assert_eq!(trap_hits.load(Ordering::SeqCst), 0, "a crafted ?ns= made the server connect to {trap_addr}");
    let changed = changes(&before, &snapshot(t.root.path()));
    assert!(changed.is_empty(), "attacks changed the filesystem:\n{}", changed.join("\n"));
    assert_layout(&t.storage());
    t.finish();
}

// ---------------------------------------------------------------------------------------------
// 7. Bugs the attacks found in other modules (each failed before its fix).

#[test]
fn content_range_at_the_end_of_u64_is_refused_not_a_panic() {
    let mut t = Target::start("content-range overflow", true, TEST_CONFIG);
    setup(&t);
    for range in ["0-18446744073709551615", "bytes 0-18446744073709551615/*", "1-0"] {
        for (method, query) in [("PATCH", String::new()), ("PUT", format!("?digest={}", sha256_digest(b"abcde")))] {
            let id = start_session(&t, "sec/app");
            let target = format!("/v2/sec/app/blobs/uploads/{id}{query}");
            let r = t.refused(t.req(method, &target).header("Content-Range", range).body(&b"abcde"[..]));
            assert!(matches!(r.status, 400 | 416), "{method} Content-Range {range}: {}", r.status);
        }
    }
    t.assert_alive();
    t.finish();
}

#[test]
fn manifest_media_type_must_be_a_media_type() {
    let mut t = Target::start("media types", true, TEST_CONFIG);
    setup(&t);
    for media_type in
        ["application/x\u{0}y", "application/x\u{1b}[31mred", "application/x\r\nSet-Cookie: a=b", "a b/c", ""]
    {
        let body = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media_type})).unwrap();
        // No Content-Type header: the document's own mediaType is the one stored.
        let r = t.send(&t.req("PUT", "/v2/sec/app/manifests/odd").body(body));
        if r.status == 201 {
            let got = t.req("GET", "/v2/sec/app/manifests/odd").send();
            let served = got.header("Content-Type").map(str::to_string);
            panic!("mediaType {media_type:?} was stored; GET serves Content-Type {served:?}");
        }
        assert_refused(&r, "PUT", &format!("mediaType {media_type:?}"));
    }
    t.finish();
}
