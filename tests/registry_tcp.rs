//! The registry in-process over real TCP on 127.0.0.1:0: every endpoint of the OCI
//! distribution spec v1.1 and every error path, spoken with a raw HTTP/1.1 client so the wire
//! format (lengths, chunking, headers) is what is tested.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;

use common::http::{Checks, Client, Request, Response};
use common::sha256_digest as digest;
use glci::http::{Server, ServerOptions};
use glci::registry::{Registry, RegistryOptions};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// An in-process server, spoken to with the raw client of `common::http`.

/// Every response `expect`ed here carries the registry API version header.
const CHECKS: Checks = Checks { api_version: true, error_message: false };

struct TestServer {
    server: Option<Server>,
    addr: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = TestServer::at(dir.path());
        s._dir = Some(dir);
        s
    }

    /// On S3: a prefix of its own in the bucket of the binary's SeaweedFS.
    fn on_s3() -> TestServer {
        let weed = common::seaweedfs::seaweedfs();
        let settings = weed.settings(weed.bucket());
        let (store, uploads) = glci::registry::s3::open(&settings, &weed.prefix(), None).unwrap();
        TestServer::serving(Registry::on(Box::new(store), Box::new(uploads), RegistryOptions::default()), 8)
    }

    fn at(root: &Path) -> TestServer {
        TestServer::with_workers(root, 8)
    }

    fn with_workers(root: &Path, workers: usize) -> TestServer {
        TestServer::serving(Registry::open(root, RegistryOptions::default()).unwrap(), workers)
    }

    fn serving(registry: Registry, workers: usize) -> TestServer {
        let listener = glci::http::bind("127.0.0.1:0").unwrap();
        let options = ServerOptions { workers, log_requests: false, ..ServerOptions::default() };
        let server = Server::start(listener, Arc::new(registry), options).unwrap();
        let addr = server.addr().to_string();
        TestServer { server: Some(server), addr, _dir: None }
    }

    /// A kept-alive connection.
    fn client(&self) -> Client {
        Client::connect(&self.addr).with_checks(CHECKS)
    }

    /// A request on a connection of its own (`send`) or on a [`TestServer::client`].
    fn req(&self, method: &str, path: &str) -> Request {
        Request::new(&self.addr, method, path).checks(CHECKS)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

fn push_blob(s: &TestServer, name: &str, bytes: &[u8]) -> String {
    let d = digest(bytes);
    s.req("POST", &format!("/v2/{name}/blobs/uploads/?digest={d}")).body(bytes.to_vec()).send().expect(201);
    d
}

/// The wire tests that hold for every backend, run on the filesystem store and on S3 (a real
/// SeaweedFS, one per test binary, a bucket per test).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod filesystem {
            $(#[test]
            fn $name() {
                super::$name(super::TestServer::start())
            })*
        }
        mod s3 {
            $(#[test]
            fn $name() {
                super::$name(super::TestServer::on_s3())
            })*
        }
    };
}

on_both_backends!(
    base_endpoint_answers_with_api_version,
    monolithic_post_with_digest_then_get_and_head,
    monolithic_post_then_put,
    chunked_patches_in_order_status_and_final_chunk_in_put,
    streamed_patch_without_content_range_as_docker_does,
    digest_mismatch_is_rejected_and_nothing_is_stored,
    upload_cancel_and_unknown_sessions,
    cross_repository_mount,
    blob_ranges,
    blob_delete,
    manifest_put_get_head_byte_exact,
    docker_schema2_and_indexes_keep_their_media_types,
    manifest_errors,
    references_that_cannot_exist_are_unknown_manifests,
    large_manifests_up_to_the_limit_and_413_beyond,
    deletes_tag_and_digest,
    tags_list_with_pagination,
    catalog_with_pagination,
    referrers_with_subject_and_artifact_type_filter,
    bad_names_never_reach_the_filesystem,
    keep_alive_serves_many_requests_on_one_connection,
    malformed_and_huge_content_lengths,
    expect_100_continue_is_honoured,
);

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image manifest (with optional subject and artifactType) whose blobs are pushed first.
fn image_manifest(s: &TestServer, name: &str, layer: &[u8], extra: Value) -> Vec<u8> {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push_blob(s, name, config);
    let ld = push_blob(s, name, layer);
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec_pretty(&m).unwrap()
}

fn put_manifest(s: &TestServer, name: &str, reference: &str, bytes: &[u8], media_type: &str) -> Response {
    s.req("PUT", &format!("/v2/{name}/manifests/{reference}"))
        .header("Content-Type", media_type)
        .body(bytes.to_vec())
        .send()
}

fn start_upload(s: &TestServer, name: &str) -> String {
    let r = s.req("POST", &format!("/v2/{name}/blobs/uploads/")).send().expect(202);
    assert_eq!(r.header("Range"), Some("0-0"));
    assert!(r.header("Docker-Upload-UUID").is_some());
    r.header("Location").unwrap().to_string()
}

// ---------------------------------------------------------------------------------------------
// end-1: base

fn base_endpoint_answers_with_api_version(s: TestServer) {
    let r = s.req("GET", "/v2/").send().expect(200);
    assert_eq!(r.json(), json!({}));
    s.req("HEAD", "/v2/").send().expect(200);
    s.req("GET", "/v3/").send().expect_error(404, "UNSUPPORTED");
}

// ---------------------------------------------------------------------------------------------
// Blobs: the four push methods, GET/HEAD, Range, DELETE

fn monolithic_post_with_digest_then_get_and_head(s: TestServer) {
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = digest(&blob);
    let r = s.req("POST", &format!("/v2/a/b/blobs/uploads/?digest={d}")).body(blob.clone()).send().expect(201);
    assert_eq!(r.header("Location").unwrap(), format!("/v2/a/b/blobs/{d}"));
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    // A body of 100 kB goes out with Content-Length, not chunked (the tiny_http hazard).
    let r = s.req("GET", &format!("/v2/a/b/blobs/{d}")).send().expect(200);
    assert_eq!(r.body, blob);
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert_eq!(r.header("Transfer-Encoding"), None);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    let r = s.req("HEAD", &format!("/v2/a/b/blobs/{d}")).send().expect(200);
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    // Another repository may not serve it without a mount.
    s.req("GET", &format!("/v2/other/blobs/{d}")).send().expect_error(404, "BLOB_UNKNOWN");
}

fn monolithic_post_then_put(s: TestServer) {
    let loc = start_upload(&s, "x");
    let d = digest(b"monolithic");
    let r = s
        .req("PUT", &format!("{loc}?digest={d}"))
        .header("Content-Type", "application/octet-stream")
        .body(&b"monolithic"[..])
        .send()
        .expect(201);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(s.req("GET", &format!("/v2/x/blobs/{d}")).send().expect(200).body, b"monolithic");
    // The session is gone after it closed.
    s.req("GET", &loc).send().expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

fn chunked_patches_in_order_status_and_final_chunk_in_put(s: TestServer) {
    let loc = start_upload(&s, "x/y");
    let data = b"0123456789abcdefghij";
    let r = s
        .req("PATCH", &loc)
        .header("Content-Range", "0-9")
        .header("Content-Type", "application/octet-stream")
        .body(&data[..10])
        .send()
        .expect(202);
    assert_eq!(r.header("Range"), Some("0-9"));
    let loc2 = r.header("Location").unwrap().to_string();
    let st = s.req("GET", &loc2).send().expect(204);
    assert_eq!(st.header("Range"), Some("0-9"));
    assert_eq!(st.header("Location"), Some(loc2.as_str()));
    assert!(st.header("Docker-Upload-UUID").is_some());
    // Out of order: 416 with the current range.
    let r = s.req("PATCH", &loc2).header("Content-Range", "12-15").body(&data[12..16]).send();
    let r = r.expect_error(416, "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("Range"), Some("0-9"));
    // Repeated chunk: 416 too.
    s.req("PATCH", &loc2)
        .header("Content-Range", "0-9")
        .body(&data[..10])
        .send()
        .expect_error(416, "BLOB_UPLOAD_INVALID");
    // Range and body length disagree.
    s.req("PATCH", &loc2)
        .header("Content-Range", "10-14")
        .body(&data[10..12])
        .send()
        .expect_error(416, "BLOB_UPLOAD_INVALID");
    let r = s.req("PATCH", &loc2).header("Content-Range", "10-14").body(&data[10..15]).send().expect(202);
    assert_eq!(r.header("Range"), Some("0-14"));
    // The last chunk travels in the closing PUT.
    let d = digest(data);
    s.req("PUT", &format!("{loc2}?digest={d}")).header("Content-Range", "15-19").body(&data[15..]).send().expect(201);
    assert_eq!(s.req("GET", &format!("/v2/x/y/blobs/{d}")).send().expect(200).body, data);
}

fn streamed_patch_without_content_range_as_docker_does(s: TestServer) {
    let loc = start_upload(&s, "docker/style");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    // Transfer-Encoding: chunked, in uneven pieces, no Content-Range.
    let mut c = s.client();
    let mut raw = format!("PATCH {loc} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for piece in data.chunks(70_001) {
        raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    c.send_raw(&raw);
    let r = c.read_response(false).expect(202);
    assert_eq!(r.header("Range"), Some("0-299999"));
    // A second streamed PATCH appends; keep-alive on the same connection.
    let more = b"tail";
    let r = c.send(&s.req("PATCH", r.header("Location").unwrap()).body(&more[..])).expect(202);
    assert_eq!(r.header("Range"), Some("0-300003"));
    let mut all = data.clone();
    all.extend_from_slice(more);
    let d = digest(&all);
    c.send(&s.req("PUT", &format!("{}?digest={d}", r.header("Location").unwrap()))).expect(201);
    assert_eq!(s.req("GET", &format!("/v2/docker/style/blobs/{d}")).send().expect(200).body, all);
}

fn digest_mismatch_is_rejected_and_nothing_is_stored(s: TestServer) {
    let wrong = digest(b"something else");
    s.req("POST", &format!("/v2/a/blobs/uploads/?digest={wrong}"))
        .body(&b"payload"[..])
        .send()
        .expect_error(400, "DIGEST_INVALID");
    s.req("GET", &format!("/v2/a/blobs/{wrong}")).send().expect_error(404, "BLOB_UNKNOWN");
    let loc = start_upload(&s, "a");
    s.req("PUT", &format!("{loc}?digest={wrong}")).body(&b"payload"[..]).send().expect_error(400, "DIGEST_INVALID");
    s.req("HEAD", &format!("/v2/a/blobs/{}", digest(b"payload"))).send().expect(404);
    // A PUT without a digest, or with a malformed one.
    let loc = start_upload(&s, "a");
    s.req("PUT", &loc).send().expect_error(400, "DIGEST_INVALID");
    s.req("PUT", &format!("{loc}?digest=sha256:xyz")).send().expect_error(400, "DIGEST_INVALID");
}

#[test]
fn sha512_blobs_are_accepted() {
    use sha2::{Digest as _, Sha512};
    let s = TestServer::start();
    let data = b"sha512 content";
    let d = format!("sha512:{}", Sha512::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>());
    s.req("POST", &format!("/v2/a/blobs/uploads/?digest={d}")).body(&data[..]).send().expect(201);
    let r = s.req("GET", &format!("/v2/a/blobs/{d}")).send().expect(200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    // Through a session too, which hashes with sha256 while streaming.
    let loc = start_upload(&s, "b");
    s.req("PUT", &format!("{loc}?digest={d}")).body(&data[..]).send().expect(201);
    s.req("MD5", "/v2/").send().expect_error(405, "UNSUPPORTED");
    s.req("GET", "/v2/a/blobs/md5:0123").send().expect_error(400, "DIGEST_INVALID");
}

fn upload_cancel_and_unknown_sessions(s: TestServer) {
    let loc = start_upload(&s, "a");
    s.req("DELETE", &loc).send().expect(204);
    s.req("GET", &loc).send().expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.req("PATCH", &loc).body(&b"x"[..]).send().expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.req("DELETE", &loc).send().expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.req("GET", "/v2/a/blobs/uploads/../../../etc").send().expect(404);
    s.req("GET", "/v2/a/blobs/uploads/not-a-session").send().expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    // A session belongs to its repository.
    let loc = start_upload(&s, "a");
    let id = loc.rsplit('/').next().unwrap();
    s.req("GET", &format!("/v2/b/blobs/uploads/{id}")).send().expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.req("PATCH", &loc)
        .header("Content-Range", "garbage")
        .body(&b"x"[..])
        .send()
        .expect_error(400, "BLOB_UPLOAD_INVALID");
}

fn cross_repository_mount(s: TestServer) {
    let d = push_blob(&s, "src/repo", b"shared layer");
    let r = s.req("POST", &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo")).send().expect(201);
    assert_eq!(r.header("Location").unwrap(), format!("/v2/dst/repo/blobs/{d}"));
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(s.req("GET", &format!("/v2/dst/repo/blobs/{d}")).send().expect(200).body, b"shared layer");
    // Unknown in the source: a new session instead.
    let missing = digest(b"never pushed");
    let r = s.req("POST", &format!("/v2/dst/repo/blobs/uploads/?mount={missing}&from=src/repo")).send().expect(202);
    assert!(r.header("Location").unwrap().starts_with("/v2/dst/repo/blobs/uploads/"));
    // From a repository that does not hold it (even though the store does): session too.
    s.req("POST", &format!("/v2/dst2/blobs/uploads/?mount={d}&from=nothere")).send().expect(202);
    s.req("POST", &format!("/v2/dst2/blobs/uploads/?mount={d}&from=BAD")).send().expect_error(400, "NAME_INVALID");
}

fn blob_ranges(s: TestServer) {
    let data = b"0123456789";
    let d = push_blob(&s, "r", data);
    let get = |range: &str| s.req("GET", &format!("/v2/r/blobs/{d}")).header("Range", range).send();
    let r = get("bytes=2-5").expect(206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("Content-Range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("Content-Length"), Some("4"));
    assert_eq!(get("bytes=7-").expect(206).body, b"789");
    assert_eq!(get("bytes=-2").expect(206).body, b"89");
    let r = get("bytes=10-20").expect_error(416, "BLOB_UNKNOWN");
    assert_eq!(r.header("Content-Range"), Some("bytes */10"));
    get("bytes=5-1").expect(416);
    assert_eq!(get("bytes=0-1,4-5").expect(200).body, data);
}

fn blob_delete(s: TestServer) {
    let d = push_blob(&s, "del", b"bye");
    s.req("DELETE", &format!("/v2/del/blobs/{d}")).send().expect(202);
    s.req("GET", &format!("/v2/del/blobs/{d}")).send().expect_error(404, "BLOB_UNKNOWN");
    s.req("DELETE", &format!("/v2/del/blobs/{d}")).send().expect_error(404, "BLOB_UNKNOWN");
}

// ---------------------------------------------------------------------------------------------
// Manifests

fn manifest_put_get_head_byte_exact(s: TestServer) {
    let m = image_manifest(&s, "app", b"layer-1", json!({}));
    let d = digest(&m);
    let r = put_manifest(&s, "app", "v1", &m, OCI_MANIFEST).expect(201);
    assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(r.header("Location").unwrap(), format!("/v2/app/manifests/{d}"));
    for reference in ["v1", d.as_str()] {
        let r =
            s.req("GET", &format!("/v2/app/manifests/{reference}")).header("Accept", OCI_MANIFEST).send().expect(200);
        assert_eq!(r.body, m, "byte-exact");
        assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
        let h = s.req("HEAD", &format!("/v2/app/manifests/{reference}")).send().expect(200);
        assert_eq!(h.header("Content-Length").unwrap(), m.len().to_string());
        assert_eq!(h.header("Docker-Content-Digest"), Some(d.as_str()));
    }
    // PUT by digest.
    let m2 = image_manifest(&s, "app", b"layer-2", json!({}));
    let d2 = digest(&m2);
    put_manifest(&s, "app", &d2, &m2, OCI_MANIFEST).expect(201);
    s.req("GET", &format!("/v2/app/manifests/{d2}")).send().expect(200);
    put_manifest(&s, "app", &d, &m2, OCI_MANIFEST).expect_error(400, "DIGEST_INVALID");
}

fn docker_schema2_and_indexes_keep_their_media_types(s: TestServer) {
    let config = br#"{"os":"linux"}"#;
    let cd = push_blob(&s, "d", config);
    let ld = push_blob(&s, "d", b"gzip-bytes");
    let schema2 = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": cd},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 10, "digest": ld}]
    }))
    .unwrap();
    let sd = digest(&schema2);
    put_manifest(&s, "d", "amd64", &schema2, "application/vnd.docker.distribution.manifest.v2+json").expect(201);
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": schema2.len(), "digest": sd,
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    put_manifest(&s, "d", "latest", &list, "application/vnd.docker.distribution.manifest.list.v2+json").expect(201);
    let r = s.req("GET", "/v2/d/manifests/latest").send().expect(200);
    assert_eq!(r.header("Content-Type"), Some("application/vnd.docker.distribution.manifest.list.v2+json"));
    assert_eq!(r.body, list);
    // An index whose child manifest is missing is refused.
    let bad = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "size": 1, "digest": digest(b"nope")}]}))
    .unwrap();
    let r = put_manifest(&s, "d", "bad", &bad, OCI_INDEX).expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(r.json()["errors"][0]["detail"]["digest"], digest(b"nope"));
}

fn manifest_errors(s: TestServer) {
    put_manifest(&s, "m", "v1", b"{not json", OCI_MANIFEST).expect_error(400, "MANIFEST_INVALID");
    let missing = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "x", "digest": digest(b"c"), "size": 1}, "layers": []}))
    .unwrap();
    put_manifest(&s, "m", "v1", &missing, OCI_MANIFEST).expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    let m = image_manifest(&s, "m", b"l", json!({}));
    put_manifest(&s, "m", "v1", &m, "application/vnd.docker.distribution.manifest.v2+json")
        .expect_error(400, "MANIFEST_INVALID");
    put_manifest(&s, "m", "-badtag", &m, OCI_MANIFEST).expect_error(400, "MANIFEST_INVALID");
    s.req("GET", "/v2/m/manifests/nope").send().expect_error(404, "MANIFEST_UNKNOWN");
    s.req("GET", "/v2/never/manifests/nope").send().expect_error(404, "NAME_UNKNOWN");
    s.req("GET", &format!("/v2/m/manifests/{}", digest(b"x"))).send().expect_error(404, "MANIFEST_UNKNOWN");
    s.req("POST", "/v2/m/manifests/v1").send().expect_error(405, "UNSUPPORTED");
}

/// A reference that is neither a tag nor a digest names nothing: GET, HEAD and DELETE answer 404
/// `MANIFEST_UNKNOWN` (the OCI conformance suite v1.1.1 asks for `.INVALID_MANIFEST_NAME`; issue
/// 14 §3), a PUT still 400, and the stored image is untouched.
fn references_that_cannot_exist_are_unknown_manifests(s: TestServer) {
    let m = image_manifest(&s, "m", b"l", json!({}));
    put_manifest(&s, "m", "v1", &m, OCI_MANIFEST).expect(201);
    let long = "t".repeat(129);
    for reference in [".INVALID_MANIFEST_NAME", "-bad", "sha256:zz", "md5:abc", "sha256:", long.as_str()] {
        let path = format!("/v2/m/manifests/{reference}");
        let r = s.req("GET", &path).send().expect_error(404, "MANIFEST_UNKNOWN");
        assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("unknown"), "{}", r.text());
        let r = s.req("HEAD", &path).send().expect(404);
        assert!(r.body.is_empty(), "HEAD {reference} has a body");
        s.req("DELETE", &path).send().expect_error(404, "MANIFEST_UNKNOWN");
        // In a repository that does not exist too: the reference is checked first.
        s.req("GET", &format!("/v2/never/manifests/{reference}")).send().expect_error(404, "MANIFEST_UNKNOWN");
    }
    put_manifest(&s, "m", ".INVALID_MANIFEST_NAME", &m, OCI_MANIFEST).expect_error(400, "MANIFEST_INVALID");
    put_manifest(&s, "m", "sha256:zz", &m, OCI_MANIFEST).expect_error(400, "DIGEST_INVALID");
    // A bad name is still a bad name, whatever the reference.
    s.req("GET", "/v2/UPPER/manifests/.INVALID_MANIFEST_NAME").send().expect_error(400, "NAME_INVALID");
    assert_eq!(s.req("GET", "/v2/m/manifests/v1").send().expect(200).body, m);
}

fn large_manifests_up_to_the_limit_and_413_beyond(s: TestServer) {
    let padding = "x".repeat(4 * 1024 * 1024);
    let m = image_manifest(&s, "big", b"l", json!({"annotations": {"pad": padding}}));
    assert!(m.len() > 4 * 1024 * 1024);
    put_manifest(&s, "big", "v1", &m, OCI_MANIFEST).expect(201);
    assert_eq!(s.req("GET", "/v2/big/manifests/v1").send().expect(200).body, m);
    let huge = image_manifest(&s, "big", b"l", json!({"annotations": {"pad": "y".repeat(9 * 1024 * 1024)}}));
    put_manifest(&s, "big", "v2", &huge, OCI_MANIFEST).expect_error(413, "SIZE_INVALID");
    // Chunked, so the limit is found while reading rather than from the header.
    let mut c = s.client();
    let mut raw = "PUT /v2/big/manifests/v3 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n".as_bytes().to_vec();
    raw.extend_from_slice(format!("{:x}\r\n", huge.len()).as_bytes());
    raw.extend_from_slice(&huge);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    c.send_raw(&raw);
    c.read_response(false).expect_error(413, "SIZE_INVALID");
    s.req("GET", "/v2/big/manifests/v3").send().expect(404);
}

fn deletes_tag_and_digest(s: TestServer) {
    let m = image_manifest(&s, "del", b"l", json!({}));
    let d = digest(&m);
    for tag in ["a", "b", "c"] {
        put_manifest(&s, "del", tag, &m, OCI_MANIFEST).expect(201);
    }
    s.req("DELETE", "/v2/del/manifests/a").send().expect(202);
    s.req("GET", "/v2/del/manifests/a").send().expect_error(404, "MANIFEST_UNKNOWN");
    s.req("GET", "/v2/del/manifests/b").send().expect(200);
    s.req("DELETE", "/v2/del/manifests/a").send().expect_error(404, "MANIFEST_UNKNOWN");
    // Deleting the digest removes every tag that pointed at it.
    s.req("DELETE", &format!("/v2/del/manifests/{d}")).send().expect(202);
    s.req("GET", &format!("/v2/del/manifests/{d}")).send().expect_error(404, "MANIFEST_UNKNOWN");
    s.req("GET", "/v2/del/manifests/b").send().expect_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(s.req("GET", "/v2/del/tags/list").send().expect(200).json()["tags"], json!([]));
    s.req("DELETE", &format!("/v2/del/manifests/{d}")).send().expect_error(404, "MANIFEST_UNKNOWN");
}

// ---------------------------------------------------------------------------------------------
// Listing: tags, catalog, referrers

fn tags_list_with_pagination(s: TestServer) {
    let m = image_manifest(&s, "t/r", b"l", json!({}));
    for tag in ["v3", "v1", "latest", "v2"] {
        put_manifest(&s, "t/r", tag, &m, OCI_MANIFEST).expect(201);
    }
    let r = s.req("GET", "/v2/t/r/tags/list").send().expect(200);
    assert_eq!(r.json(), json!({"name": "t/r", "tags": ["latest", "v1", "v2", "v3"]}));
    assert_eq!(r.header("Link"), None);
    let r = s.req("GET", "/v2/t/r/tags/list?n=2").send().expect(200);
    assert_eq!(r.json()["tags"], json!(["latest", "v1"]));
    assert_eq!(r.header("Link"), Some("</v2/t/r/tags/list?n=2&last=v1>; rel=\"next\""));
    let r = s.req("GET", "/v2/t/r/tags/list?n=2&last=v1").send().expect(200);
    assert_eq!(r.json()["tags"], json!(["v2", "v3"]));
    assert_eq!(r.header("Link"), None);
    let r = s.req("GET", "/v2/t/r/tags/list?last=v2").send().expect(200);
    assert_eq!(r.json()["tags"], json!(["v3"]));
    s.req("GET", "/v2/t/r/tags/list?n=abc").send().expect(400);
    s.req("GET", "/v2/none/tags/list").send().expect_error(404, "NAME_UNKNOWN");
}

fn catalog_with_pagination(s: TestServer) {
    for name in ["c/one", "a", "b/x/y"] {
        let m = image_manifest(&s, name, b"l", json!({}));
        put_manifest(&s, name, "v1", &m, OCI_MANIFEST).expect(201);
    }
    let r = s.req("GET", "/v2/_catalog").send().expect(200);
    assert_eq!(r.json(), json!({"repositories": ["a", "b/x/y", "c/one"]}));
    let r = s.req("GET", "/v2/_catalog?n=1").send().expect(200);
    assert_eq!(r.json()["repositories"], json!(["a"]));
    assert_eq!(r.header("Link"), Some("</v2/_catalog?n=1&last=a>; rel=\"next\""));
    let r = s.req("GET", "/v2/_catalog?n=1&last=a").send().expect(200);
    assert_eq!(r.json()["repositories"], json!(["b/x/y"]));
    let r = s.req("GET", "/v2/_catalog?n=5&last=b%2Fx%2Fy").send().expect(200);
    assert_eq!(r.json()["repositories"], json!(["c/one"]));
}

fn referrers_with_subject_and_artifact_type_filter(s: TestServer) {
    let subject = image_manifest(&s, "ref", b"base", json!({}));
    let sd = digest(&subject);
    let subject_desc = json!({"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()});
    // Referrers may be pushed before their subject exists.
    let sig = image_manifest(
        &s,
        "ref",
        b"sig",
        json!({"artifactType": "application/vnd.example.sig", "subject": subject_desc, "annotations": {"k": "v"}}),
    );
    let r = put_manifest(&s, "ref", &digest(&sig), &sig, OCI_MANIFEST).expect(201);
    assert_eq!(r.header("OCI-Subject"), Some(sd.as_str()));
    put_manifest(&s, "ref", "base", &subject, OCI_MANIFEST).expect(201);
    let sbom = image_manifest(
        &s,
        "ref",
        b"sbom",
        json!({"artifactType": "application/vnd.example.sbom", "subject": subject_desc}),
    );
    put_manifest(&s, "ref", &digest(&sbom), &sbom, OCI_MANIFEST).expect(201);

    let r = s.req("GET", &format!("/v2/ref/referrers/{sd}")).send().expect(200);
    assert_eq!(r.header("Content-Type"), Some(OCI_INDEX));
    assert_eq!(r.header("OCI-Filters-Applied"), None);
    let index = r.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let sig_entry = manifests.iter().find(|m| m["digest"] == digest(&sig)).unwrap();
    assert_eq!(sig_entry["artifactType"], "application/vnd.example.sig");
    assert_eq!(sig_entry["size"], sig.len());
    assert_eq!(sig_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(sig_entry["annotations"], json!({"k": "v"}));

    let r =
        s.req("GET", &format!("/v2/ref/referrers/{sd}?artifactType=application%2Fvnd.example.sbom")).send().expect(200);
    assert_eq!(r.header("OCI-Filters-Applied"), Some("artifactType"));
    let m = r.json()["manifests"].clone();
    assert_eq!(m.as_array().unwrap().len(), 1);
    assert_eq!(m[0]["digest"], digest(&sbom));

    // Deleting a referrer removes it from the list.
    s.req("DELETE", &format!("/v2/ref/manifests/{}", digest(&sig))).send().expect(202);
    let r = s.req("GET", &format!("/v2/ref/referrers/{sd}")).send().expect(200);
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
    // An unknown subject has an empty list, not a 404.
    let r = s.req("GET", &format!("/v2/ref/referrers/{}", digest(b"unknown"))).send().expect(200);
    assert_eq!(r.json()["manifests"], json!([]));
    s.req("GET", "/v2/ref/referrers/sha256:bad").send().expect_error(400, "DIGEST_INVALID");
}

// ---------------------------------------------------------------------------------------------
// Names and paths

fn bad_names_never_reach_the_filesystem(s: TestServer) {
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a//b/tags/list",
        "/v2/a/../b/tags/list",
        "/v2/..%2F..%2Fetc/tags/list",
        "/v2/-a/tags/list",
        "/v2/a%00/tags/list",
    ] {
        s.req("GET", path).send().expect_error(400, "NAME_INVALID");
    }
    let long = "a/".repeat(130) + "a";
    s.req("GET", &format!("/v2/{long}/tags/list")).send().expect_error(400, "NAME_INVALID");
    s.req("GET", "/v2/a/blobs/sha256:..%2F..%2Fetc").send().expect_error(400, "DIGEST_INVALID");
    s.req("PUT", "/v2/a/manifests/..").body(&b"{}"[..]).send().expect_error(400, "MANIFEST_INVALID");
    // A repository name that looks like an endpoint still works.
    let m = image_manifest(&s, "x/manifests/blobs", b"l", json!({}));
    put_manifest(&s, "x/manifests/blobs", "v1", &m, OCI_MANIFEST).expect(201);
    s.req("GET", "/v2/x/manifests/blobs/manifests/v1").send().expect(200);
}

// ---------------------------------------------------------------------------------------------
// HTTP layer: framing, keep-alive, limits (tiny_http's hazards)

fn keep_alive_serves_many_requests_on_one_connection(s: TestServer) {
    let mut c = s.client();
    for _ in 0..20 {
        c.send(&s.req("GET", "/v2/")).expect(200);
        c.send(&s.req("HEAD", "/v2/_catalog")).expect(200);
    }
}

fn malformed_and_huge_content_lengths(s: TestServer) {
    let loc = start_upload(&s, "h");
    // A 10 TB claim with a tiny body: answered, not allocated; the server lives on.
    let mut c = s.client();
    c.send_raw(format!("PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000000\r\n\r\nabc").as_bytes());
    drop(c);
    let mut c = s.client();
    c.send_raw(b"PUT /v2/h/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000000\r\n\r\n");
    c.read_response(false).expect_error(413, "SIZE_INVALID");
    for bad in ["abc", "-1", "1, 2", "99999999999999999999999"] {
        let mut c = s.client();
        c.send_raw(
            format!("POST /v2/h/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n").as_bytes(),
        );
        assert_eq!(c.read_response(false).status, 400, "Content-Length: {bad}");
    }
    let mut c = s.client();
    c.send_raw(
        b"POST /v2/h/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(c.read_response(false).status, 400);
    let mut c = s.client();
    c.send_raw(format!("GET /v2/ HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70 * 1024)).as_bytes());
    assert_eq!(c.read_response(false).status, 431);
    s.req("GET", "/v2/").send().expect(200);
}

fn expect_100_continue_is_honoured(s: TestServer) {
    let d = digest(b"continue");
    let mut c = s.client();
    c.send_raw(format!("POST /v2/e/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n").as_bytes());
    let mut line = String::new();
    c.reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    c.reader.read_line(&mut line).unwrap();
    c.send_raw(b"continue");
    c.read_response(false).expect(201);
}

// ---------------------------------------------------------------------------------------------
// Restart: upload sessions live on disk

#[test]
fn upload_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::at(dir.path());
    let loc = start_upload(&s, "persist");
    s.req("PATCH", &loc).header("Content-Range", "0-4").body(&b"hello"[..]).send().expect(202);
    drop(s);
    let s = TestServer::at(dir.path());
    let st = s.req("GET", &loc).send().expect(204);
    assert_eq!(st.header("Range"), Some("0-4"));
    let d = digest(b"hello world");
    s.req("PUT", &format!("{loc}?digest={d}")).header("Content-Range", "5-10").body(&b" world"[..]).send().expect(201);
    assert_eq!(s.req("GET", &format!("/v2/persist/blobs/{d}")).send().expect(200).body, b"hello world");
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::with_workers(dir.path(), 1);
    // The one worker waits for the rest of a manifest body that is slow to come; each later
    // request, whole and ready, takes a queue slot. Idle connections would take none: they wait
    // in the idle poller, not in the queue.
    let mut busy = s.client();
    busy.send_raw(b"PUT /v2/slow/manifests/t HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{");
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..10 {
        let mut c = s.client();
        c.send_raw(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
        // A queued connection gets no answer yet: a short wait tells queued from refused.
        c.reader.get_ref().set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
        let mut first = String::new();
        match c.reader.read_line(&mut first) {
            Ok(_) if first.contains(" 503 ") => {
                refused = Some(first);
                let mut rest = String::new();
                c.reader.get_ref().set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
                c.reader.read_to_string(&mut rest).unwrap();
                refused = refused.map(|f| f + &rest);
                break;
            }
            _ => held.push(c),
        }
    }
    let r = refused.expect("a 503 once the worker and the queue are full");
    assert!(r.contains("Retry-After: 1\r\n"), "{r}");
    assert!(r.contains("TOOMANYREQUESTS"), "{r}");
    drop(held);
    drop(busy);
    // Once the holders leave, the server answers again. No client can see the moment the
    // server has noticed every close, so this retries (bounded) rather than waits for an event.
    let mut ok = false;
    for _ in 0..50 {
        if s.req("GET", "/v2/").send().status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ok);
}
