//! Durability of `glci serve` as a real process over real TCP (DESIGN.md §4–5): kill -9 in the
//! middle of a big upload and of manifest writes, concurrent pushes, graceful shutdown with a
//! request in flight, a clear error for a port in use, and absurd `Content-Length`s.
//!
//! The HTTP client is the raw one of `common::http` over `TcpStream` (one request per
//! connection, `Connection: close`), because several tests stream bodies slowly or cut them
//! mid-way.
//! Upload bodies are deterministic pseudo-random bytes generated on the fly, so nothing large is
//! held in memory, and every check hashes streams rather than buffering them.
#![allow(clippy::unwrap_used)]
// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::http::{self, Connection, Request, Response};
use common::{glci, pattern, pattern_digest, sha256_digest, temp_dir, DigestWriter, Pattern, ServeProcess};

const MIB: u64 = 1024 * 1024;
/// Socket read/write timeout: a stuck server fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

// ---------------------------------------------------------------------------
// HTTP (`common::http`, one request per connection) and hashing
// ---------------------------------------------------------------------------

fn connect(addr: &str) -> io::Result<TcpStream> {
    http::connect(addr, IO_TIMEOUT)
}

/// Writes the head of a `Connection: close` request whose body the caller streams, announcing
/// `content_length` bytes (even when it is a lie).
fn write_head(
    stream: &mut TcpStream,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    content_length: u64,
) -> io::Result<()> {
    let request = Request::new(&stream.peer_addr()?.to_string(), method, target)
        .headers(headers)
        .header("Content-Length", &content_length.to_string())
        .close();
    stream.write_all(&request.head())
}

/// Reads the response to a request written with [`write_head`].
fn read_response(stream: TcpStream, method: &str) -> io::Result<Response> {
    http::read_response(&mut BufReader::new(stream), method, Connection::Close)
}

/// One request on its own connection (`Connection: close`).
fn request(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    Request::new(addr, method, target).headers(headers).body(body).close().timeout(IO_TIMEOUT).send()
}

fn get(addr: &str, target: &str) -> Response {
    request(addr, "GET", target, &[], b"")
}

/// `target` with `key=value` added to its query.
fn with_query(target: &str, key: &str, value: &str) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}{key}={value}")
}

/// GETs a blob and hashes it as it streams in; returns (status, Content-Length, digest of body).
fn get_blob_hashed(addr: &str, name: &str, digest: &str) -> (u16, u64, String) {
    let target = format!("/v2/{name}/blobs/{digest}");
    let mut stream = connect(addr).unwrap();
    stream.write_all(&Request::new(addr, "GET", &target).close().head()).unwrap();
    let mut reader = BufReader::new(stream);
    let (status, headers) = http::read_head(&mut reader).unwrap();
    let len =
        http::content_length(&headers).unwrap_or_else(|| panic!("GET {target}: no Content-Length in {headers:?}"));
    let mut sink = DigestWriter::new();
    let copied = io::copy(&mut reader.by_ref().take(len), &mut sink).unwrap();
    assert_eq!(copied, len, "GET {target}: body shorter than its Content-Length");
    (status, len, sink.digest())
}

/// Checks that `name` serves blob `digest` with exactly the bytes the digest names.
fn assert_blob_servable(addr: &str, name: &str, digest: &str) {
    let (status, _, got) = get_blob_hashed(addr, name, digest);
    assert_eq!(status, 200, "GET blob {digest} from {name}");
    assert_eq!(got, digest, "GET blob {digest} from {name}: content hashes to something else");
}

// ---------------------------------------------------------------------------
// Registry operations
// ---------------------------------------------------------------------------

/// A server on `storage` (which outlives it).
fn serve(storage: &Path) -> ServeProcess {
    ServeProcess::start_with_storage(storage)
}

/// SIGKILLs the server and checks that it really died of it.
fn kill9(server: &mut ServeProcess) {
    let status = server.terminate(libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "glci serve should have died of SIGKILL, got {status}");
}

/// Starts an upload session; returns its `Location`.
fn start_upload(addr: &str, name: &str) -> String {
    request(addr, "POST", &format!("/v2/{name}/blobs/uploads/"), &[], b"").expect_for(202, "POST upload").location()
}

/// Pushes `bytes` with a single `POST ?digest=`; returns the digest.
fn push_monolithic(addr: &str, name: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let target = format!("/v2/{name}/blobs/uploads/?digest={digest}");
    let octets = [("Content-Type", "application/octet-stream")];
    let response = request(addr, "POST", &target, &octets, bytes).expect_for(201, "monolithic POST ?digest=");
    assert_eq!(response.header("Docker-Content-Digest"), Some(digest.as_str()), "{response:?}");
    digest
}

/// Pushes `bytes` with POST, a PATCH of the first half (`Content-Range`), and a PUT carrying the
/// rest as its final chunk; returns the digest.
fn push_chunked(addr: &str, name: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let location = start_upload(addr, name);
    let half = bytes.len() / 2;
    let range = format!("0-{}", half.max(1) - 1);
    let octets = ("Content-Type", "application/octet-stream");
    let patched = request(addr, "PATCH", &location, &[octets, ("Content-Range", &range)], &bytes[..half])
        .expect_for(202, "PATCH first chunk");
    assert_eq!(patched.header("Range"), Some(range.as_str()), "{patched:?}");
    let location = patched.location();
    request(addr, "PUT", &with_query(&location, "digest", &digest), &[octets], &bytes[half..])
        .expect_for(201, "PUT final chunk ?digest=");
    digest
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// A valid OCI image manifest over `config` and `layers` ((digest, size) pairs).
fn image_manifest(config: (&str, usize), layers: &[(&str, usize)], note: &str) -> Vec<u8> {
    let layers: Vec<_> =
        layers.iter().map(|(d, s)| descriptor("application/vnd.oci.image.layer.v1.tar", d, *s)).collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config.0, config.1),
        "layers": layers,
        "annotations": { "org.example.note": note },
    }))
    .unwrap()
}

fn config_json(note: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [] },
        "config": { "Labels": { "note": note } },
    }))
    .unwrap()
}

fn put_manifest(addr: &str, name: &str, reference: &str, manifest: &[u8]) -> Response {
    request(addr, "PUT", &format!("/v2/{name}/manifests/{reference}"), &[("Content-Type", OCI_MANIFEST)], manifest)
}

/// GETs manifest `reference` and checks its bytes against its `Docker-Content-Digest`;
/// returns (digest, bytes).
fn get_manifest_checked(addr: &str, name: &str, reference: &str) -> (String, Vec<u8>) {
    let response = request(addr, "GET", &format!("/v2/{name}/manifests/{reference}"), &[("Accept", OCI_MANIFEST)], b"")
        .expect_for(200, &format!("GET manifest {name}:{reference}"));
    let header = response.header("Docker-Content-Digest").unwrap_or_else(|| panic!("no digest in {response:?}"));
    assert_eq!(header, sha256_digest(&response.body), "{name}:{reference}: bytes do not match Docker-Content-Digest");
    (header.to_string(), response.body)
}

/// The config and layer digests an image manifest references.
fn referenced_blobs(manifest: &[u8]) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![doc["config"]["digest"].as_str().unwrap().to_string()];
    out.extend(doc["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    out
}

/// `/v2/<name>/tags/list`, as a set.
fn listed_tags(addr: &str, name: &str) -> BTreeSet<String> {
    let doc = get(addr, &format!("/v2/{name}/tags/list")).expect_for(200, "tags list").json();
    doc["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

/// Tag link files on disk (not temp files), whatever the API lists: a dangling one is a bug even
/// when `tags/list` hides it.
fn tags_on_disk(storage: &Path, name: &str) -> BTreeSet<String> {
    let dir = storage.join("repositories").join(name).join("_manifests/tags");
    match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}

/// Every tag of `name` (listed or on disk) resolves to a manifest whose bytes match its digest
/// and whose blobs are all servable; `tags/list` lists only those. Returns tag → digest.
fn check_repository(addr: &str, storage: &Path, name: &str) -> BTreeMap<String, String> {
    let listed = listed_tags(addr, name);
    let on_disk = tags_on_disk(storage, name);
    assert!(listed.is_subset(&on_disk), "tags/list {listed:?} names tags that are not on disk {on_disk:?}");
    let mut resolved = BTreeMap::new();
    for tag in &on_disk {
        let (digest, bytes) = get_manifest_checked(addr, name, tag);
        for blob in referenced_blobs(&bytes) {
            assert_blob_servable(addr, name, &blob);
        }
        resolved.insert(tag.clone(), digest);
    }
    assert_eq!(listed, on_disk, "tags/list should list exactly the tags that resolve");
    resolved
}

/// Hashes every file under `<storage>/blobs/` and checks it against its path
/// (`blobs/sha256/<2 hex>/<hex>`). Returns how many there are.
fn check_blob_store(storage: &Path) -> usize {
    let root = storage.join("blobs");
    let mut count = 0;
    for entry in walkdir::WalkDir::new(&root).min_depth(1) {
        let entry = entry.unwrap();
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(&root).unwrap();
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        assert!(
            parts.len() == 3 && parts[0] == "sha256" && parts[2].len() == 64 && parts[2].starts_with(&parts[1]),
            "unexpected file in the blob store: {}",
            entry.path().display()
        );
        let mut sink = DigestWriter::new();
        io::copy(&mut std::fs::File::open(entry.path()).unwrap(), &mut sink).unwrap();
        assert_eq!(
            sink.digest(),
            format!("sha256:{}", parts[2]),
            "blob file {} does not hold the content its name says",
            entry.path().display()
        );
        count += 1;
    }
    count
}

/// Entries of a directory (empty when it does not exist).
fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}

/// The upload id at the end of a `Location`.
fn upload_id(location: &str) -> String {
    location.split('?').next().unwrap().rsplit('/').next().unwrap().to_string()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Blocks until the file at `path` holds at least `len` bytes, woken by inotify at each write
/// to it rather than by a timer; panics after `timeout`.
fn wait_for_file_len(path: &Path, len: u64, timeout: Duration) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: inotify_init1 takes flags and returns a new descriptor (owned from here) or -1.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(raw >= 0, "inotify_init1: {}", io::Error::last_os_error());
    let inotify = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a valid descriptor and a NUL-terminated path.
    let watch = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c_path.as_ptr(), libc::IN_MODIFY) };
    assert!(watch >= 0, "inotify_add_watch {}: {}", path.display(), io::Error::last_os_error());
    let deadline = Instant::now() + timeout;
    // The watch is in place before the first look, so no write between the two is missed.
    while file_len(path) < len {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{} stayed at {} bytes, short of {len}", path.display(), file_len(path));
        let mut ready = libc::pollfd { fd: inotify.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd, then a read into a buffer of the length given.
        unsafe {
            if libc::poll(&mut ready, 1, left.as_millis().min(i32::MAX as u128) as i32) > 0 {
                let mut events = [0u8; 4096];
                libc::read(inotify.as_raw_fd(), events.as_mut_ptr().cast(), events.len());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 1. kill -9 in the middle of a big streamed upload, then resume
// ---------------------------------------------------------------------------

#[test]
fn kill_during_big_upload() {
    const TOTAL: u64 = 256 * MIB;
    const SEED: &str = "durability big upload";
    const NAME: &str = "durability/big";
    let dir = temp_dir();
    let storage = dir.path().join("storage");
    // The expected digest, computed beside the upload.
    let expected = thread::spawn(|| pattern_digest(SEED, TOTAL));

    let mut server = serve(&storage);
    let location = start_upload(&server.addr, NAME);
    let data = storage.join("uploads").join(upload_id(&location)).join("data");
    assert!(data.is_file(), "the session should live at {}", data.display());

    // A streamed PATCH (no Content-Range) announcing all 256 MiB; stop sending after 100 MiB.
    let mut stream = connect(&server.addr).unwrap();
    let octets = [("Content-Type", "application/octet-stream")];
    write_head(&mut stream, "PATCH", &location, &octets, TOTAL).unwrap();
    let sent = io::copy(&mut Pattern::new(SEED, 0, 100 * MIB), &mut stream).unwrap();
    assert!(sent >= 100 * MIB);
    // Once the server has written a good part of it, kill -9 it mid-body.
    wait_for_file_len(&data, 64 * MIB, Duration::from_secs(30));
    kill9(&mut server);
    drop(stream);

    let size = file_len(&data);
    assert!((64 * MIB..TOTAL).contains(&size), "data file after the kill: {size} bytes");
    let server = serve(&storage);
    let addr = server.addr.clone();

    // The session survived: its offset is exactly the bytes on disk.
    let status = get(&addr, &location).expect_for(204, "GET upload status after restart");
    assert_eq!(status.header("Range"), Some(format!("0-{}", size - 1).as_str()), "{status:?}");
    let expected = expected.join().unwrap();
    // Nothing of the whole blob is visible.
    request(&addr, "HEAD", &format!("/v2/{NAME}/blobs/{expected}"), &[], b"")
        .expect_for(404, "HEAD of the unfinished blob");
    assert_eq!(check_blob_store(&storage), 0, "no blob may be committed from a half upload");

    // Resume from the offset the server reported, close with the digest.
    let mut stream = connect(&addr).unwrap();
    let range = format!("{size}-{}", TOTAL - 1);
    write_head(&mut stream, "PATCH", &location, &[octets[0], ("Content-Range", &range)], TOTAL - size).unwrap();
    io::copy(&mut Pattern::new(SEED, size, TOTAL), &mut stream).unwrap();
    let patched = read_response(stream, "PATCH").unwrap().expect_for(202, "PATCH of the rest");
    assert_eq!(patched.header("Range"), Some(format!("0-{}", TOTAL - 1).as_str()), "{patched:?}");
    request(&addr, "PUT", &with_query(&patched.location(), "digest", &expected), &[], b"")
        .expect_for(201, "PUT ?digest= closing the resumed upload");

    // Hash the blob as served and the blob store's files side by side (two cores, debug sha2).
    let store_check = {
        let storage = storage.clone();
        thread::spawn(move || check_blob_store(&storage))
    };
    let (status, len, got) = get_blob_hashed(&addr, NAME, &expected);
    assert_eq!((status, len), (200, TOTAL), "GET of the resumed blob");
    assert_eq!(got, expected, "the resumed blob's bytes");
    assert_eq!(store_check.join().unwrap(), 1, "the blob store should hold just the resumed blob");
    assert!(!data.exists(), "the closed session should be gone");
    server.stop();
}

// ---------------------------------------------------------------------------
// 2. kill -9 while manifests are being written
// ---------------------------------------------------------------------------

#[test]
fn kill_during_manifest_put() {
    const NAME: &str = "durability/manifests";
    const ROUNDS: u32 = 20;
    let dir = temp_dir();
    let storage = dir.path().join("storage");
    let mut server = serve(&storage);

    let config = config_json("base");
    let layer = pattern("layer", 256 * 1024);
    let config_digest = push_monolithic(&server.addr, NAME, &config);
    let layer_digest = push_chunked(&server.addr, NAME, &layer);
    let base = image_manifest((&config_digest, config.len()), &[(&layer_digest, layer.len())], "base");
    // Time a few manifest PUTs, to spread the kills over a PUT's lifetime.
    let mut put_time = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        put_manifest(&server.addr, NAME, "v1", &base).expect_for(201, "PUT manifest v1");
        put_time = put_time.max(started.elapsed());
    }
    // tag → digests it may point at now (the last acknowledged one, and an unacknowledged new one).
    let mut known: BTreeMap<String, String> = BTreeMap::from([("v1".to_string(), sha256_digest(&base))]);

    for round in 0..ROUNDS {
        let addr = server.addr.clone();
        let small = pattern(&format!("round {round}"), 4096 + round as usize);
        let small_digest = push_monolithic(&addr, NAME, &small);
        let note = format!("round {round}");
        let manifest = image_manifest(
            (&config_digest, config.len()),
            &[(&layer_digest, layer.len()), (&small_digest, small.len())],
            &note,
        );
        let digest = sha256_digest(&manifest);
        let tag = if round % 2 == 0 { "v1".to_string() } else { format!("r{round}") };

        let (connected_tx, connected_rx) = mpsc::channel();
        let put_tag = tag.clone();
        let put = thread::spawn(move || -> io::Result<u16> {
            let mut stream = connect(&addr)?;
            connected_tx.send(()).unwrap();
            let target = format!("/v2/{NAME}/manifests/{put_tag}");
            write_head(&mut stream, "PUT", &target, &[("Content-Type", OCI_MANIFEST)], manifest.len() as u64)?;
            stream.write_all(&manifest)?;
            Ok(read_response(stream, "PUT")?.status)
        });
        connected_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // From "right away" to well past a typical PUT's duration. This wait is the fault under
        // test (a kill at a different point of each PUT), not a wait for an event.
        thread::sleep(put_time * 2 * round / ROUNDS);
        kill9(&mut server);
        let answered = put.join().unwrap();

        server = serve(&storage);
        let resolved = check_repository(&server.addr, &storage, NAME);
        assert!(resolved.contains_key("v1"), "round {round}: tag v1 is gone: {resolved:?}");
        for (t, d) in &resolved {
            let acceptable = known.get(t) == Some(d) || (t == &tag && d == &digest);
            assert!(acceptable, "round {round}: tag {t} points at {d}, which was never pushed for it");
        }
        match answered {
            Ok(201) => {
                assert_eq!(resolved.get(&tag), Some(&digest), "round {round}: a PUT answered 201 must survive kill -9")
            }
            Ok(other) => panic!("round {round}: the manifest PUT was answered {other}"),
            Err(_) => {} // Killed before it answered: old or new state, checked above.
        }
        known = resolved;
        check_blob_store(&storage);
    }
    server.stop();
}

// ---------------------------------------------------------------------------
// 3. concurrent pushes
// ---------------------------------------------------------------------------

#[test]
fn concurrent_pushes() {
    const THREADS: usize = 16;
    const SHARED_REPO: &str = "durability/shared";
    let dir = temp_dir();
    let storage = dir.path().join("storage");
    let server = serve(&storage);
    let shared = Arc::new(pattern("shared", MIB as usize));
    let barrier = Arc::new(Barrier::new(THREADS));

    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let addr = server.addr.clone();
            let shared = Arc::clone(&shared);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let own_repo = format!("durability/own-{i}");
                let unique = pattern(&format!("unique {i}"), 2 * MIB as usize + 4096 * i);
                let config = config_json(&format!("thread {i}"));
                barrier.wait();
                let mut pushed = Vec::new();
                for (repo, tag) in [(SHARED_REPO.to_string(), format!("t{i}")), (own_repo, "latest".to_string())] {
                    // Alternate monolithic and chunked pushes, so both race on the shared blob.
                    let mut blobs = Vec::new();
                    for (k, bytes) in [&shared[..], &unique[..], &config[..]].into_iter().enumerate() {
                        let digest = if (i + k) % 2 == 0 {
                            push_monolithic(&addr, &repo, bytes)
                        } else {
                            push_chunked(&addr, &repo, bytes)
                        };
                        blobs.push((digest, bytes.len()));
                    }
                    let manifest = image_manifest(
                        (&blobs[2].0, blobs[2].1),
                        &[(&blobs[0].0, blobs[0].1), (&blobs[1].0, blobs[1].1)],
                        &format!("thread {i}"),
                    );
                    let response = put_manifest(&addr, &repo, &tag, &manifest).expect_for(201, "PUT manifest");
                    assert_eq!(response.header("Docker-Content-Digest"), Some(sha256_digest(&manifest).as_str()));
                    pushed.push((repo, tag, sha256_digest(&manifest), blobs));
                }
                pushed
            })
        })
        .collect();
    let pushed: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();

    let addr = &server.addr;
    for (repo, tag, digest, blobs) in &pushed {
        let (got, bytes) = get_manifest_checked(addr, repo, tag);
        assert_eq!(&got, digest, "{repo}:{tag}");
        assert_eq!(referenced_blobs(&bytes).len(), blobs.len());
        for (blob, size) in blobs {
            let (status, len, hashed) = get_blob_hashed(addr, repo, blob);
            assert_eq!((status, len, &hashed), (200, *size as u64, blob), "GET {repo} blob {blob}");
        }
    }
    let expected_tags: BTreeSet<String> = (0..THREADS).map(|i| format!("t{i}")).collect();
    assert_eq!(listed_tags(addr, SHARED_REPO), expected_tags);
    let catalog = get(addr, "/v2/_catalog").expect_for(200, "catalog").json();
    let repositories: BTreeSet<String> =
        catalog["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    let mut expected_repos: BTreeSet<String> = (0..THREADS).map(|i| format!("durability/own-{i}")).collect();
    expected_repos.insert(SHARED_REPO.to_string());
    assert_eq!(repositories, expected_repos, "catalog");

    // 1 shared + 16 unique + 16 configs + 16 manifests (the same bytes in both repositories).
    assert_eq!(check_blob_store(&storage), 1 + 3 * THREADS);
    assert_eq!(dir_entries(&storage.join("tmp")), Vec::<PathBuf>::new(), "temp files left behind");
    assert_eq!(dir_entries(&storage.join("uploads")), Vec::<PathBuf>::new(), "upload sessions left open");
    server.stop();
}

// ---------------------------------------------------------------------------
// 4. SIGTERM lets the request in flight finish; SIGINT stops an idle server
// ---------------------------------------------------------------------------

#[test]
fn sigterm_finishes_in_flight_request() {
    const TOTAL: u64 = 8 * MIB;
    const PIECE: usize = 128 * 1024;
    const SEED: &str = "durability sigterm";
    let dir = temp_dir();
    let storage = dir.path().join("storage");
    let mut server = serve(&storage);
    let location = start_upload(&server.addr, "durability/slow");
    let data = storage.join("uploads").join(upload_id(&location)).join("data");

    let (halfway_tx, halfway_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let addr = server.addr.clone();
    let client = thread::spawn(move || {
        let body = pattern(SEED, TOTAL as usize);
        let mut stream = connect(&addr).unwrap();
        write_head(&mut stream, "PATCH", &location, &[("Content-Type", "application/octet-stream")], TOTAL).unwrap();
        for (i, piece) in body.chunks(PIECE).enumerate() {
            if i == 16 {
                halfway_tx.send(()).unwrap();
                go_rx.recv_timeout(Duration::from_secs(30)).unwrap();
            }
            stream.write_all(piece).unwrap();
            // A slow client on purpose: the PATCH must still be in flight when SIGTERM lands.
            thread::sleep(Duration::from_millis(5));
        }
        read_response(stream, "PATCH").unwrap()
    });

    halfway_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let pid = libc::pid_t::try_from(server.pid()).unwrap();
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The server logs when it has taken the signal; only then send the rest of the body.
    assert!(server.stderr_shows("event=shutdown"), "no shutdown log line after SIGTERM:\n{}", server.stderr());
    go_tx.send(()).unwrap();
    let response = client.join().unwrap().expect_for(202, "PATCH in flight during SIGTERM");
    assert_eq!(response.header("Range"), Some(format!("0-{}", TOTAL - 1).as_str()), "{response:?}");

    // Signal 0 sends nothing: this only waits (bounded) for the exit SIGTERM started.
    let started = Instant::now();
    let status = server.terminate(0);
    assert!(status.success(), "glci serve exited with {status} after SIGTERM, expected 0");
    assert!(started.elapsed() < Duration::from_secs(5), "exit took {:?}", started.elapsed());
    assert_eq!(file_len(&data), TOTAL, "the in-flight PATCH should be on disk whole");

    // An idle server stops cleanly on SIGINT (and SIGTERM) however soon after `listening on`
    // the signal comes: from that line on it is ready, signal handling included. Many rounds,
    // because a server that installs its handlers after printing dies of the signal only now
    // and then.
    for round in 0..40 {
        let signal = if round % 2 == 0 { libc::SIGINT } else { libc::SIGTERM };
        let (status, stderr) = signal_when_listening(&storage, signal);
        assert!(
            status.success(),
            "round {round}: idle glci serve exited with {status} after signal {signal} right after \
             `listening on`, expected 0\n--- stderr ---\n{stderr}"
        );
    }
}

/// Starts `glci serve` on `storage`, sends `signal` the moment its `listening on` line arrives
/// (read straight off the pipe, no thread in between), and waits (bounded) for the exit.
fn signal_when_listening(storage: &Path, signal: libc::c_int) -> (ExitStatus, String) {
    let mut child = glci()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-auth", "--storage"])
        .arg(storage)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // Bounds the blocking read below: kills the server if it never prints its line.
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if ready_rx.recv_timeout(Duration::from_secs(30)) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) on the child we spawned; it is reaped only after this thread ends.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    while !line.contains(&b'\n') {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "glci serve closed stdout before `listening on`: {:?}", String::from_utf8_lossy(&line));
        line.extend_from_slice(&buf[..n]);
    }
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(pid, signal) };
    drop(ready_tx);
    watchdog.join().unwrap();
    assert!(line.starts_with(b"listening on "), "first stdout line: {:?}", String::from_utf8_lossy(&line));
    let (status, _, stderr) = wait_bounded(child, Duration::from_secs(10));
    (status, stderr)
}

// ---------------------------------------------------------------------------
// 5. a port in use is one clear error line
// ---------------------------------------------------------------------------

/// Waits (bounded) for `child`; kills it and panics when it does not exit in time.
fn wait_bounded(child: std::process::Child, limit: Duration) -> (ExitStatus, String, String) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into())
        }
        Err(_) => {
            // SAFETY: kill(2) on the child we spawned; the waiter thread has not reaped it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("glci serve did not exit within {limit:?}");
        }
    }
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_dir();
    let child = glci()
        .args(["serve", "--listen", &addr, "--no-auth", "--storage"])
        .arg(dir.path().join("storage"))
        .env("GLCI_HOME", dir.path().join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stdout, stderr) = wait_bounded(child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "exit status with {addr} taken; stderr:\n{stderr}");
    assert!(!stdout.contains("listening on"), "stdout: {stdout}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&addr) && l.contains("in use")).collect();
    assert_eq!(lines.len(), 1, "want one line naming {addr} and \"in use\"; stderr:\n{stderr}");
    drop(taken);
}

// ---------------------------------------------------------------------------
// 6. absurd Content-Lengths neither kill the server nor make it allocate
// ---------------------------------------------------------------------------

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_else(|| panic!("no VmRSS in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn huge_content_length_does_not_kill_the_server() {
    const HUGE: u64 = 10_000_000_000_000;
    let dir = temp_dir();
    let server = serve(&dir.path().join("storage"));
    let addr = server.addr.clone();
    let name = "durability/huge";

    // A PATCH announcing 10 TB, a few bytes, then the client goes away.
    let location = start_upload(&addr, name);
    let mut stream = connect(&addr).unwrap();
    write_head(&mut stream, "PATCH", &location, &[("Content-Type", "application/octet-stream")], HUGE).unwrap();
    stream.write_all(b"just a few bytes").unwrap();
    drop(stream);

    // A manifest PUT announcing 10 TB is refused from its head alone: 413 arrives while the
    // client still holds the connection open without having sent a byte of the body.
    let mut stream = connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write_head(&mut stream, "PUT", &format!("/v2/{name}/manifests/v1"), &[("Content-Type", OCI_MANIFEST)], HUGE)
        .unwrap();
    let refused = read_response(stream.try_clone().unwrap(), "PUT")
        .unwrap_or_else(|e| panic!("no answer to a PUT announcing {HUGE} bytes within 10 s: {e}"));
    refused.expect_for(413, "manifest PUT with a 10 TB Content-Length");
    drop(stream);

    // Still serving, and small.
    get(&addr, "/v2/").expect_for(200, "GET /v2/ after the huge requests");
    let status = get(&addr, &location).expect_for(204, "the upload session is still usable");
    assert!(status.header("Range").is_some(), "{status:?}");
    let rss = vm_rss_kib(server.pid());
    assert!(rss < 64 * 1024, "glci serve RSS is {rss} KiB after the huge requests");
    server.stop();
}
