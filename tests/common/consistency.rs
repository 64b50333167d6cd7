//! Full consistency checks of a registry's storage, for tests that break things on purpose
//! (`tests/faults.rs`): through the HTTP API ([`check_api`]: catalog → tags → manifest →
//! every referenced blob and index child, each hashed against its digest) and on disk
//! ([`check_disk`]: every file of the content store hashes to its name, no tag or revision
//! link points at missing bytes, nothing a killed `clean` moved aside is left). Both return the
//! problems they found as sentences instead of panicking, so a caller can add what it knows
//! (a seed, the last operations) before it fails. Also: streamed, hashing GETs of blobs and
//! manifests ([`get_blob`], [`get_manifest`]).

use std::collections::BTreeSet;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::http::{self, Request, Response};
use super::DigestWriter;

/// Every manifest type the checks ask for.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Client-side timeout of every check request: a stuck server fails the check, never hangs it.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What [`check_api`] walked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiSummary {
    pub repositories: usize,
    pub tags: usize,
    /// Distinct (repository, manifest) pairs fetched, index children included.
    pub manifests: usize,
    /// Distinct (repository, blob) pairs fetched and hashed.
    pub blobs: usize,
}

/// What [`check_disk`] looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskSummary {
    pub blob_files: usize,
    pub blob_bytes: u64,
    pub tag_links: usize,
    pub revision_links: usize,
    /// Files under `tmp/` (a kill -9 may leave some; they are reclaimable, never visible).
    pub temp_files: usize,
    pub upload_sessions: usize,
}

/// One request on its own connection; `Err` when no complete response came.
pub fn try_request(addr: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    Request::new(addr, method, target).headers(headers).close().timeout(TIMEOUT).try_send()
}

/// `GET /v2/<repo>/blobs/<digest>`, hashed as it streams: (status, digest of the body when 200).
pub fn get_blob(addr: &str, repo: &str, digest: &str) -> io::Result<(u16, Option<String>)> {
    let target = format!("/v2/{repo}/blobs/{digest}");
    let mut stream = http::connect(addr, TIMEOUT)?;
    stream.write_all(&Request::new(addr, "GET", &target).close().head())?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = http::read_head(&mut reader)?;
    if status != 200 {
        return Ok((status, None));
    }
    let len = http::content_length(&headers)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("GET {target}: no Content-Length")))?;
    let mut sink = DigestWriter::new();
    let copied = io::copy(&mut reader.by_ref().take(len), &mut sink)?;
    if copied != len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("GET {target}: {copied} of {len} bytes")));
    }
    Ok((200, Some(sink.digest())))
}

/// `GET /v2/<repo>/manifests/<reference>` accepting every manifest type.
pub fn get_manifest(addr: &str, repo: &str, reference: &str) -> io::Result<Response> {
    try_request(addr, "GET", &format!("/v2/{repo}/manifests/{reference}"), &[("Accept", MANIFEST_ACCEPT)])
}

/// Every repository `/v2/_catalog` lists, following its `Link` pages.
pub fn catalog(addr: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut target = "/v2/_catalog?n=200".to_string();
    loop {
        let r = try_request(addr, "GET", &target, &[]).map_err(|e| format!("GET {target}: {e}"))?;
        if r.status != 200 {
            return Err(format!("GET {target}: {} {}", r.status, r.text()));
        }
        let doc: Value = serde_json::from_slice(&r.body).map_err(|e| format!("GET {target}: not JSON: {e}"))?;
        for name in doc["repositories"].as_array().ok_or(format!("GET {target}: no repositories: {doc}"))? {
            names.push(name.as_str().ok_or(format!("GET {target}: a name is not a string: {doc}"))?.to_string());
        }
        // `Link: </v2/_catalog?last=x&n=200>; rel="next"`
        match r.header("Link").and_then(|l| l.split_once('<')).and_then(|(_, rest)| rest.split_once('>')) {
            Some((next, _)) => target = next.to_string(),
            None => return Ok(names),
        }
    }
}

/// The tags `/v2/<repo>/tags/list` lists (a repository that has only layer links may have none).
pub fn tags(addr: &str, repo: &str) -> Result<Vec<String>, String> {
    let target = format!("/v2/{repo}/tags/list");
    let r = try_request(addr, "GET", &target, &[]).map_err(|e| format!("GET {target}: {e}"))?;
    if r.status != 200 {
        return Err(format!("GET {target}: {} {}", r.status, r.text()));
    }
    let doc: Value = serde_json::from_slice(&r.body).map_err(|e| format!("GET {target}: not JSON: {e}"))?;
    Ok(doc["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default())
}

/// The digests a manifest document names: (blobs: config and layers, children: index entries).
pub fn references(doc: &Value) -> (Vec<String>, Vec<String>) {
    let digests = |v: &Value| -> Vec<String> {
        match v {
            Value::Array(items) => items.iter().filter_map(|d| d["digest"].as_str().map(str::to_string)).collect(),
            Value::Object(_) => v["digest"].as_str().map(str::to_string).into_iter().collect(),
            _ => Vec::new(),
        }
    };
    let mut blobs = digests(&doc["config"]);
    blobs.extend(digests(&doc["layers"]));
    (blobs, digests(&doc["manifests"]))
}

/// Walks everything the API serves: every repository of the catalog, every tag it lists, the
/// manifest each tag names (bytes hashing to `Docker-Content-Digest`), every blob it references
/// (fetched from that repository and hashed) and, for an index, every child manifest the same
/// way. Returns what it walked, or every problem found.
pub fn check_api(addr: &str) -> Result<ApiSummary, Vec<String>> {
    let mut problems = Vec::new();
    let mut summary = ApiSummary::default();
    let repositories = match catalog(addr) {
        Ok(r) => r,
        Err(e) => return Err(vec![e]),
    };
    summary.repositories = repositories.len();
    let mut manifests_seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut blobs_seen: BTreeSet<(String, String)> = BTreeSet::new();
    for repo in &repositories {
        let listed = match tags(addr, repo) {
            Ok(t) => t,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for tag in listed {
            summary.tags += 1;
            let mut stack = vec![(tag.clone(), format!("{repo}:{tag}"))];
            while let Some((reference, path)) = stack.pop() {
                let (digest, doc) = match check_manifest(addr, repo, &reference) {
                    Ok(found) => found,
                    Err(e) => {
                        problems.push(format!("{path}: {e}"));
                        continue;
                    }
                };
                if !manifests_seen.insert((repo.clone(), digest)) {
                    continue;
                }
                let (blobs, children) = references(&doc);
                for blob in blobs {
                    if blobs_seen.insert((repo.clone(), blob.clone())) {
                        if let Err(e) = check_blob(addr, repo, &blob) {
                            problems.push(format!("{path}: {e}"));
                        }
                    }
                }
                for child in children {
                    stack.push((child.clone(), format!("{path} → {child}")));
                }
            }
        }
    }
    summary.manifests = manifests_seen.len();
    summary.blobs = blobs_seen.len();
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(problems)
    }
}

/// GETs a manifest and checks its bytes against `Docker-Content-Digest` (and against the
/// reference when it is a digest); returns (digest, parsed document).
pub fn check_manifest(addr: &str, repo: &str, reference: &str) -> Result<(String, Value), String> {
    let r = get_manifest(addr, repo, reference).map_err(|e| format!("GET manifest {reference}: {e}"))?;
    if r.status != 200 {
        return Err(format!("GET manifest {reference}: {} {}", r.status, r.text()));
    }
    let actual = super::sha256_digest(&r.body);
    let header = r.header("Docker-Content-Digest").unwrap_or("");
    if header != actual {
        return Err(format!("manifest {reference}: bytes hash to {actual}, Docker-Content-Digest says {header:?}"));
    }
    if reference.starts_with("sha256:") && reference != actual {
        return Err(format!("manifest {reference}: bytes hash to {actual}"));
    }
    let doc: Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("manifest {reference} ({actual}) is not JSON: {e}"))?;
    Ok((actual, doc))
}

/// GETs a blob and checks that its bytes hash to `digest`.
pub fn check_blob(addr: &str, repo: &str, digest: &str) -> Result<(), String> {
    match get_blob(addr, repo, digest) {
        Ok((200, Some(got))) if got == digest => Ok(()),
        Ok((200, got)) => Err(format!("blob {digest} in {repo}: content hashes to {got:?}")),
        Ok((status, _)) => Err(format!("blob {digest} in {repo}: GET answered {status}")),
        Err(e) => Err(format!("blob {digest} in {repo}: GET failed: {e}")),
    }
}

/// Files under `dir` (recursively), `[]` when it does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// Checks the storage directory itself (layout as `src/registry/storage/layout.rs` documents
/// it), while no `clean` runs: every file in `blobs/` is `blobs/sha256/<2 hex>/<hex>` and holds
/// exactly the bytes its name says; no file is left aside by a killed `clean` (`.gc-…`: the next
/// open of the store puts them back); every tag link names a digest whose revision link and
/// bytes exist; every revision link has its bytes.
pub fn check_disk(storage: &Path) -> Result<DiskSummary, Vec<String>> {
    let mut problems = Vec::new();
    let mut summary = DiskSummary::default();
    let blobs = storage.join("blobs");
    let blob_path = |hex: &str| blobs.join("sha256").join(&hex[..2]).join(hex);
    for path in files_under(&blobs) {
        let rel = path.strip_prefix(&blobs).unwrap_or(&path).to_path_buf();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".gc-")) {
            problems.push(format!("blob left aside by a killed clean and never put back: {}", rel.display()));
            continue;
        }
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let named = parts.len() == 3
            && parts[0] == "sha256"
            && parts[2].len() == 64
            && parts[2].starts_with(&parts[1])
            && parts[2].bytes().all(|b| b.is_ascii_hexdigit());
        if !named {
            problems.push(format!("unexpected file in the blob store: {}", rel.display()));
            continue;
        }
        let mut sink = DigestWriter::new();
        match std::fs::File::open(&path).and_then(|mut f| io::copy(&mut f, &mut sink)) {
            Ok(len) => {
                summary.blob_files += 1;
                summary.blob_bytes += len;
                let actual = sink.digest();
                if actual != format!("sha256:{}", parts[2]) {
                    problems.push(format!("blob file {} holds content hashing to {actual}", rel.display()));
                }
            }
            Err(e) => problems.push(format!("read {}: {e}", path.display())),
        }
    }
    let repositories = storage.join("repositories");
    for path in files_under(&repositories) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let rel = path.strip_prefix(&repositories).unwrap_or(&path).display().to_string();
        if name.starts_with(".gc-") {
            problems.push(format!("left aside by a killed clean and never put back: {rel}"));
            continue;
        }
        if name.starts_with('.') {
            // A link's temp file (`.<name>.tmp-<id>`), never read as a link.
            continue;
        }
        let parent = path.parent().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned());
        let grandparent = path.parent().and_then(Path::parent);
        match parent.as_deref() {
            Some("tags") if grandparent.is_some_and(|g| g.ends_with("_manifests")) => {
                summary.tag_links += 1;
                let target = std::fs::read_to_string(&path).unwrap_or_default();
                let Some(hex) = target.trim().strip_prefix("sha256:").filter(|h| h.len() == 64) else {
                    problems.push(format!("tag link {rel} holds {target:?}"));
                    continue;
                };
                let revision = grandparent.map(|g| g.join("revisions/sha256").join(hex));
                if !revision.is_some_and(|r| r.is_file()) {
                    problems.push(format!("tag {rel} → sha256:{hex}: no revision link"));
                }
                if !blob_path(hex).is_file() {
                    problems.push(format!("tag {rel} → sha256:{hex}: the manifest bytes are missing"));
                }
            }
            Some("sha256")
                if grandparent.is_some_and(|g| g.ends_with("revisions"))
                    && path.components().any(|c| c.as_os_str() == "_manifests") =>
            {
                summary.revision_links += 1;
                if !blob_path(&name).is_file() {
                    problems.push(format!("revision link {rel}: the manifest bytes are missing"));
                }
            }
            _ => {}
        }
    }
    summary.temp_files = files_under(&storage.join("tmp")).len();
    summary.upload_sessions =
        std::fs::read_dir(storage.join("uploads")).map(|d| d.filter_map(Result::ok).count()).unwrap_or(0);
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(problems)
    }
}

/// The problems of `result` as one block of text (for a panic message).
pub fn describe<T>(result: &Result<T, Vec<String>>) -> String {
    match result {
        Ok(_) => String::new(),
        Err(problems) => problems.iter().map(|p| format!("  - {p}\n")).collect(),
    }
}
