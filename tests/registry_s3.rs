//! Several `glci serve` instances on one S3 bucket (a real SeaweedFS, started once for this
//! binary): read-after-write across instances, tag moves, uploads continued on another
//! instance, a kill -9 mid-push, concurrent pushes of one blob and one tag, presigned
//! redirects, the start-up check of the bucket, and the features refused on S3 for now.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::http::{Checks, Request, Response};
use common::seaweedfs::{seaweedfs, ACCESS_KEY, SECRET_KEY};
use common::{sha256_digest as digest, ServeProcess};
use serde_json::json;

const CHECKS: Checks = Checks { api_version: true, error_message: false };
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// `config.toml` pointing at the binary's SeaweedFS (no pull-through: it is not on S3 yet).
fn config(extra_s3: &str) -> String {
    format!(
        "[registry]\nupstreams = []\n[storage.s3]\nendpoint = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
         secret_access_key = \"{SECRET_KEY}\"\n{extra_s3}",
        seaweedfs().endpoint
    )
}

/// A fresh `s3://bucket/prefix` for one test.
fn place() -> String {
    let weed = seaweedfs();
    format!("s3://{}/{}", weed.bucket(), weed.prefix())
}

fn instance(storage: &str) -> ServeProcess {
    ServeProcess::start_with_config(std::path::Path::new(storage), &["--no-auth", "--no-tls"], &config(""))
}

fn req(s: &str, method: &str, path: &str) -> Request {
    Request::new(s, method, path).checks(CHECKS)
}

fn push_blob(s: &str, name: &str, bytes: &[u8]) -> String {
    let d = digest(bytes);
    req(s, "POST", &format!("/v2/{name}/blobs/uploads/?digest={d}")).body(bytes.to_vec()).send().expect(201);
    d
}

/// An image manifest whose config and layer are pushed through `s` first.
fn image(s: &str, name: &str, layer: &[u8]) -> Vec<u8> {
    let config = push_blob(s, name, b"{}");
    let layer_digest = push_blob(s, name, layer);
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap()
}

fn put_manifest(s: &str, name: &str, reference: &str, bytes: &[u8]) -> Response {
    req(s, "PUT", &format!("/v2/{name}/manifests/{reference}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(bytes.to_vec())
        .send()
}

fn manifest_digest(s: &str, name: &str, reference: &str) -> String {
    let r = req(s, "GET", &format!("/v2/{name}/manifests/{reference}")).send().expect(200);
    r.header("Docker-Content-Digest").unwrap().to_string()
}

#[test]
fn three_instances_on_one_bucket_see_each_others_pushes_and_tag_moves_at_once() {
    let storage = place();
    let servers = [instance(&storage), instance(&storage), instance(&storage)];
    let [a, b, c] = &servers;
    let layer = common::pattern("s3-7", 3 * 1024 * 1024 + 17);
    let first = image(&a.addr, "team/app", &layer);
    let first_digest = put_manifest(&a.addr, "team/app", "latest", &first)
        .expect(201)
        .header("Docker-Content-Digest")
        .unwrap()
        .to_string();
    // Read-after-write: the other instances serve it at once, byte-exact.
    for s in [b, c] {
        let got = req(&s.addr, "GET", "/v2/team/app/manifests/latest").send().expect(200);
        assert_eq!(got.body, first);
        let blob = req(&s.addr, "GET", &format!("/v2/team/app/blobs/{}", digest(&layer))).send().expect(200);
        assert!(blob.body == layer, "the layer differs when read through another instance");
    }
    // A tag moved through one instance is seen moved by the others.
    let second = image(&b.addr, "team/app", b"another layer");
    let second_digest = put_manifest(&b.addr, "team/app", "latest", &second)
        .expect(201)
        .header("Docker-Content-Digest")
        .unwrap()
        .to_string();
    assert_ne!(first_digest, second_digest);
    for s in [a, c] {
        assert_eq!(manifest_digest(&s.addr, "team/app", "latest"), second_digest);
        assert_eq!(manifest_digest(&s.addr, "team/app", &first_digest), first_digest);
    }
    // Listings agree whichever instance answers.
    put_manifest(&c.addr, "team/other", "v1", &image(&c.addr, "team/other", b"x")).expect(201);
    for s in &servers {
        assert_eq!(
            req(&s.addr, "GET", "/v2/_catalog").send().expect(200).json()["repositories"],
            json!(["team/app", "team/other"])
        );
        assert_eq!(req(&s.addr, "GET", "/v2/team/app/tags/list").send().expect(200).json()["tags"], json!(["latest"]));
    }
    // A delete through one is a 404 through the others.
    req(&a.addr, "DELETE", &format!("/v2/team/app/manifests/{second_digest}")).send().expect(202);
    for s in [b, c] {
        req(&s.addr, "GET", "/v2/team/app/manifests/latest").send().expect(404);
    }
    for s in servers {
        s.stop();
    }
}

#[test]
fn a_chunked_upload_started_on_one_instance_is_finished_on_another() {
    let storage = place();
    let (a, b) = (instance(&storage), instance(&storage));
    // Two chunks of 9 MiB and a small last one: multipart parts inside each chunk.
    let bytes = common::pattern("s3-3", 18 * 1024 * 1024 + 5);
    let (one, rest) = bytes.split_at(9 * 1024 * 1024);
    let (two, last) = rest.split_at(9 * 1024 * 1024);
    let location = req(&a.addr, "POST", "/v2/r/blobs/uploads/").send().expect(202).location();
    req(&a.addr, "PATCH", &location)
        .header("Content-Range", &format!("0-{}", one.len() - 1))
        .body(one.to_vec())
        .send()
        .expect(202);
    // The other instance knows the session and its offset, and refuses a chunk out of order.
    let status = req(&b.addr, "GET", &location).send().expect(204);
    assert_eq!(status.header("Range"), Some(format!("0-{}", one.len() - 1).as_str()));
    req(&b.addr, "PATCH", &location).header("Content-Range", "5-9").body(vec![0u8; 5]).send().expect(416);
    let end = one.len() + two.len();
    req(&b.addr, "PATCH", &location)
        .header("Content-Range", &format!("{}-{}", one.len(), end - 1))
        .body(two.to_vec())
        .send()
        .expect(202);
    // Closed on the first again (whose kept hash is now stale), with the last chunk.
    let d = digest(&bytes);
    req(&a.addr, "PUT", &format!("{location}?digest={d}")).body(last.to_vec()).send().expect(201);
    for s in [&a, &b] {
        let got = req(&s.addr, "GET", &format!("/v2/r/blobs/{d}")).send().expect(200);
        assert!(got.body == bytes, "the assembled blob differs");
        req(&s.addr, "GET", &location).send().expect(404);
    }
    a.stop();
    b.stop();
}

#[test]
fn a_push_cut_by_kill_9_leaves_no_blob_and_is_redone_on_another_instance() {
    let storage = place();
    let (mut a, b) = (instance(&storage), instance(&storage));
    let bytes = common::pattern("s3-11", 20 * 1024 * 1024);
    let d = digest(&bytes);
    let location = req(&a.addr, "POST", "/v2/r/blobs/uploads/").send().expect(202).location();
    // A streamed PATCH that announces the whole blob and sends 12 MiB of it: one multipart
    // part is in the store when the instance dies.
    let mut stream = common::http::connect(&a.addr, std::time::Duration::from_secs(10)).unwrap();
    let head = format!("PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", bytes.len());
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&bytes[..12 * 1024 * 1024]).unwrap();
    stream.flush().unwrap();
    a.terminate(libc::SIGKILL);
    // Nothing half-written is visible: no blob, and the session is still at 0.
    req(&b.addr, "HEAD", &format!("/v2/r/blobs/{d}")).send().expect(404);
    let status = req(&b.addr, "GET", &location).send().expect(204);
    assert_eq!(status.header("Range"), Some("0-0"));
    // The client redoes it through the survivor.
    req(&b.addr, "PATCH", &location).body(bytes.clone()).send().expect(202);
    req(&b.addr, "PUT", &format!("{location}?digest={d}")).send().expect(201);
    assert!(req(&b.addr, "GET", &format!("/v2/r/blobs/{d}")).send().expect(200).body == bytes);
    b.stop();
}

#[test]
fn two_instances_pushing_one_blob_and_one_tag_at_once_end_consistent() {
    let storage = place();
    let (a, b) = (instance(&storage), instance(&storage));
    let layer = common::pattern("s3-5", 10 * 1024 * 1024);
    let manifests: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let pushes: Vec<_> = [(a.addr.as_str(), b"config a".as_slice()), (b.addr.as_str(), b"config b".as_slice())]
            .into_iter()
            .map(|(s, marker)| {
                let layer = &layer;
                scope.spawn(move || {
                    let layer_digest = push_blob(s, "r", layer);
                    let config = push_blob(s, "r", marker);
                    let manifest = serde_json::to_vec(&json!({
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": marker.len()},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
                    }))
                    .unwrap();
                    put_manifest(s, "r", "same", &manifest).expect(201);
                    manifest
                })
            })
            .collect();
        pushes.into_iter().map(|p| p.join().unwrap()).collect()
    });
    // The tag names one of the two, the same through both instances, and it is whole.
    let through_a = req(&a.addr, "GET", "/v2/r/manifests/same").send().expect(200).body;
    let through_b = req(&b.addr, "GET", "/v2/r/manifests/same").send().expect(200).body;
    assert_eq!(through_a, through_b);
    assert!(manifests.contains(&through_a));
    assert!(req(&b.addr, "GET", &format!("/v2/r/blobs/{}", digest(&layer))).send().expect(200).body == layer);
    a.stop();
    b.stop();
}

#[test]
fn blob_gets_redirect_to_a_presigned_url_when_asked() {
    let storage = place();
    let s = ServeProcess::start_with_config(
        std::path::Path::new(&storage),
        &["--no-auth", "--no-tls"],
        &config("redirect = true\n"),
    );
    let bytes = common::pattern("s3-9", 100_000);
    let d = push_blob(&s.addr, "r", &bytes);
    let r = req(&s.addr, "GET", &format!("/v2/r/blobs/{d}")).send().expect(307);
    let url = r.location();
    assert!(url.starts_with(&seaweedfs().endpoint) && url.contains("X-Amz-Signature"), "{url}");
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut ureq::get(&url).call().unwrap().into_reader(), &mut body).unwrap();
    assert!(body == bytes, "the presigned URL serves other bytes");
    // HEAD still answers here, with the length.
    let head = req(&s.addr, "HEAD", &format!("/v2/r/blobs/{d}")).send().expect(200);
    assert_eq!(head.header("Content-Length"), Some("100000"));
    s.stop();
}

/// What is not on S3 yet says so, instead of doing something else.
#[test]
fn admin_reports_are_refused_on_s3_with_the_reason() {
    let s = instance(&place());
    let r = req(&s.addr, "GET", "/glci/admin/v1/stats").send().expect(501);
    assert!(r.text().contains("not supported on s3://"), "{}", r.text());
    s.stop();
}

#[test]
fn a_wrong_bucket_or_credential_stops_serve_at_start() {
    let weed = seaweedfs();
    let home = tempfile::tempdir().unwrap();
    let run = |storage: &str, config: &str| {
        std::fs::write(home.path().join("config.toml"), config).unwrap();
        let out = common::glci()
            .env("GLCI_HOME", home.path())
            .args(["serve", "--no-auth", "--no-tls", "--listen", "127.0.0.1:0", "--storage", storage])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run("s3://no-such-bucket-here", &config(""));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no such bucket") && stderr.contains(&weed.endpoint), "{stderr}");
    let wrong = config("").replace(SECRET_KEY, "not-the-secret");
    let (code, stderr) = run(&format!("s3://{}", weed.bucket()), &wrong);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("access denied") && !stderr.contains("not-the-secret"), "{stderr}");
    let (code, stderr) = run("s3://A", &config(""));
    assert_eq!(code, Some(2), "{stderr}");
    // Pull-through is not on S3 yet: a configuration error, not a silent cache miss.
    let upstreams = config("").replace("upstreams = []", "upstreams = [\"registry-1.docker.io\"]");
    let (code, stderr) = run(&format!("s3://{}", weed.bucket()), &upstreams);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("pull-through is not supported on S3"), "{stderr}");
}
