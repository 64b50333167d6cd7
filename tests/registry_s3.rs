//! Several `glci serve` instances on one S3 bucket (a real SeaweedFS, started once for this
//! binary): read-after-write across instances, tag moves, uploads continued on another
//! instance, a kill -9 mid-push, concurrent pushes of one blob and one tag, presigned
//! redirects, the start-up check of the bucket, pull-through and push-through shared by the
//! instances, and list/stats/clean with clean's safety against the other instances (a push in
//! flight, a manifest between mark and sweep, two cleans at once, the multipart upload a killed
//! instance left aborted).
#![allow(clippy::unwrap_used)]
// Tests spawn processes (haproxy, docker, skopeo, curl); clippy.toml's disallowed-methods is for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;

use common::faulty_upstream::FaultyUpstream;
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

/// The store and upload sessions under `place`, opened in this process (to drive `clean`).
fn open_place(place: &str) -> (glci::registry::s3::S3Store, glci::registry::s3::S3Uploads) {
    let prefix = place.rsplit('/').next().unwrap();
    glci::registry::s3::open(&seaweedfs().settings(seaweedfs().bucket()), prefix, None).unwrap()
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
    // A clean on the survivor right then, grace 0: the cut session is not a leftover yet
    // (idle less than a minute), and it leaves no blob.
    let report = admin(&b.addr, "POST", "clean?grace=0");
    assert_eq!(report["uploads_removed"].as_u64(), Some(0), "{report}");
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

/// The keys of the multipart uploads open under `storage`'s prefix (S3 ListMultipartUploads).
fn open_uploads(storage: &str) -> Vec<String> {
    let (store, _) = open_place(storage);
    let prefix = store.keys().prefix().to_string();
    store.client().list_multipart_uploads(&prefix).unwrap().into_iter().map(|u| u.key).collect()
}

/// Waits until `storage` has `n` multipart uploads open (a streamed PATCH has filled a part).
fn until_open_uploads(storage: &str, n: usize) -> Vec<String> {
    let since = std::time::Instant::now();
    loop {
        let open = open_uploads(storage);
        if open.len() == n {
            return open;
        }
        assert!(since.elapsed() < std::time::Duration::from_secs(60), "open uploads: {open:?}, want {n}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Starts a streamed PATCH on `s` announcing `bytes` and sends the first 12 MiB (one 8 MiB part
/// goes to a multipart upload); returns the session's location and the open connection.
fn patch_in_flight(s: &str, bytes: &[u8]) -> (String, std::net::TcpStream) {
    let location = req(s, "POST", "/v2/r/blobs/uploads/").send().expect(202).location();
    let mut stream = common::http::connect(s, std::time::Duration::from_secs(60)).unwrap();
    let head = format!("PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", bytes.len());
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&bytes[..12 * 1024 * 1024]).unwrap();
    stream.flush().unwrap();
    (location, stream)
}

/// An instance killed mid-PATCH leaves its chunk's multipart upload open: `clean` keeps it while
/// the session is there, and aborts it (grace 0) once the session is gone (here: the client
/// redid the push on another instance), while a PATCH streaming into another session keeps its
/// upload and finishes.
#[test]
fn clean_aborts_the_multipart_upload_a_killed_instance_left_and_keeps_a_live_ones() {
    let storage = place();
    let (mut a, b) = (instance(&storage), instance(&storage));
    let cut = common::pattern("s3-orphan", 20 * 1024 * 1024);
    let (cut_location, _cut_stream) = patch_in_flight(&a.addr, &cut);
    until_open_uploads(&storage, 1);
    a.terminate(libc::SIGKILL);
    let live = common::pattern("s3-live", 20 * 1024 * 1024);
    let (live_location, mut live_stream) = patch_in_flight(&b.addr, &live);
    let open = until_open_uploads(&storage, 2);

    // Both sessions are still there: both uploads stay.
    after_the_store_ticks();
    let report = admin(&b.addr, "POST", "clean?grace=0");
    assert_eq!(report["multipart_uploads_aborted"].as_u64(), Some(0), "{report}");
    assert_eq!(open_uploads(&storage), open);

    // The client redoes the cut push through B: its session ends, the upload A left is no one's.
    req(&b.addr, "PATCH", &cut_location).body(cut.clone()).send().expect(202);
    req(&b.addr, "PUT", &format!("{cut_location}?digest={}", digest(&cut))).send().expect(201);
    assert_eq!(open_uploads(&storage), open);
    after_the_store_ticks();
    let dry = admin(&b.addr, "POST", "clean?grace=0&dry_run=true");
    assert_eq!(dry["multipart_uploads_aborted"].as_u64(), Some(1), "{dry}");
    assert_eq!(open_uploads(&storage), open, "a dry run aborted an upload");
    let report = admin(&b.addr, "POST", "clean?grace=0");
    assert_eq!(report["multipart_uploads_aborted"].as_u64(), Some(1), "{report}");
    let live_id = live_location.rsplit('/').next().unwrap();
    let left = open_uploads(&storage);
    assert!(left.len() == 1 && left[0].contains(live_id), "left open: {left:?}");

    // The live PATCH goes on into its upload and the blob is whole.
    live_stream.write_all(&live[12 * 1024 * 1024..]).unwrap();
    let mut reader = std::io::BufReader::new(live_stream);
    assert_eq!(common::http::read_head(&mut reader).unwrap().0, 202);
    let d = digest(&live);
    req(&b.addr, "PUT", &format!("{live_location}?digest={d}")).send().expect(201);
    assert!(req(&b.addr, "GET", &format!("/v2/r/blobs/{d}")).send().expect(200).body == live);
    assert_eq!(open_uploads(&storage), Vec::<String>::new());
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

fn admin(s: &str, method: &str, route: &str) -> serde_json::Value {
    req(s, method, &format!("/glci/admin/v1/{route}")).send().expect(200).json()
}

/// The store's clock has moved past every write made so far: S3 stamps objects in whole
/// seconds, and `clean` counts an object stamped in its own first second as written during it.
fn after_the_store_ticks() {
    let weed = seaweedfs();
    let client = glci::registry::s3::S3Client::new(&weed.settings(weed.bucket())).unwrap();
    let probe = |n: u32| {
        let key = format!("ticks/{}/{n}", std::process::id());
        client.put_bytes(&key, b"").unwrap();
        let listed = client.list_page(&key, None, None, None, Some(1)).unwrap();
        client.delete(&key).unwrap();
        listed.keys[0].last_modified[..19].to_string()
    };
    let first = probe(0);
    let mut n = 1;
    while probe(n) == first {
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A `GLCI_HOME` whose config reaches the binary's SeaweedFS, for `--storage s3://…`.
fn cli_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), config("")).unwrap();
    home
}

fn cli_json(home: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = common::glci().env("GLCI_HOME", home).args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "glci {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// list, stats and clean on S3: the same documents through any instance's admin API and from
/// `--storage s3://…` directly, and `clean` removing what it does on a directory.
#[test]
fn list_stats_and_clean_work_on_s3_through_any_instance_and_directly() {
    let storage = place();
    let (a, b) = (instance(&storage), instance(&storage));
    put_manifest(&a.addr, "team/app", "v1", &image(&a.addr, "team/app", b"app layer")).expect(201);
    put_manifest(&b.addr, "team/old", "v1", &image(&b.addr, "team/old", b"old layer")).expect(201);
    // A blob nobody references any more.
    let orphan = push_blob(&a.addr, "team/app", b"orphan");
    req(&a.addr, "DELETE", &format!("/v2/team/app/blobs/{orphan}")).send().expect(202);

    let listed = admin(&b.addr, "GET", "list");
    let rows: Vec<(String, String)> = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["repository"].as_str().unwrap().into(), i["tag"].as_str().unwrap().into()))
        .collect();
    assert_eq!(rows, [("team/app".into(), "v1".into()), ("team/old".into(), "v1".to_string())]);
    assert_eq!(listed["images"][0]["origin"], "pushed");
    assert_eq!(admin(&a.addr, "GET", "list"), listed, "instances disagree");
    let home = cli_home();
    assert_eq!(cli_json(home.path(), &["registry", "list", "--storage", &storage]), listed);

    let stats = admin(&a.addr, "GET", "stats");
    // Two manifests, two layers, one shared config, one orphan.
    assert_eq!((stats["repositories"].as_u64(), stats["tags"].as_u64()), (Some(2), Some(2)));
    assert_eq!((stats["manifests"].as_u64(), stats["blobs"].as_u64()), (Some(2), Some(6)));
    assert_eq!(stats["unreferenced_bytes"].as_u64(), Some(6));
    assert_eq!(stats["filesystem"], serde_json::Value::Null);
    assert_eq!(cli_json(home.path(), &["registry", "stats", "--storage", &storage]), stats);

    after_the_store_ticks();
    let dry = admin(&b.addr, "POST", "clean?project=team/old&grace=0&dry_run=true");
    assert_eq!(dry["repositories_removed"], json!(["team/old"]));
    assert_eq!(admin(&a.addr, "GET", "stats"), stats, "a dry run changed the store");
    // The real one through the CLI, on the bucket directly (the servers keep running on it).
    let report =
        cli_json(home.path(), &["registry", "clean", "--storage", &storage, "--project", "team/old", "--grace", "0"]);
    assert_eq!(report["repositories_removed"], json!(["team/old"]));
    assert_eq!((report["tags_removed"].as_u64(), report["manifests_removed"].as_u64()), (Some(1), Some(1)));
    // team/old's manifest and layer, and the orphan; the config stays for team/app.
    assert_eq!(report["blobs_removed"].as_u64(), Some(3), "{report}");
    assert_eq!(report["blobs_removed"], dry["blobs_removed"]);
    req(&a.addr, "GET", "/v2/team/old/manifests/v1").send().expect(404);
    req(&b.addr, "GET", &format!("/v2/team/app/blobs/{orphan}")).send().expect(404);
    let app = req(&b.addr, "GET", "/v2/team/app/manifests/v1").send().expect(200).json();
    for blob in [&app["config"]["digest"], &app["layers"][0]["digest"]] {
        req(&a.addr, "GET", &format!("/v2/team/app/blobs/{}", blob.as_str().unwrap())).send().expect(200);
    }
    let after = admin(&b.addr, "GET", "stats");
    assert_eq!((after["repositories"].as_u64(), after["blobs"].as_u64()), (Some(1), Some(3)));
    a.stop();
    b.stop();
}

/// An image manifest naming `config` and `layers` (pushed before).
fn manifest_of(config: &str, layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": layers,
    }))
    .unwrap()
}

/// A push in flight through B (layers linked, a PATCH half sent) while A cleans the whole
/// registry: the old image goes, the push finishes and its image is whole everywhere.
#[test]
fn a_push_in_flight_on_one_instance_survives_a_clean_from_another() {
    let storage = place();
    let (a, b) = (instance(&storage), instance(&storage));
    put_manifest(&b.addr, "team/old", "v1", &image(&b.addr, "team/old", b"old layer")).expect(201);
    let config = push_blob(&b.addr, "team/app", b"{}");
    let first = push_blob(&b.addr, "team/app", b"first layer");
    let second = common::pattern("s3-inflight", 3 * 1024 * 1024);
    let location = req(&b.addr, "POST", "/v2/team/app/blobs/uploads/").send().expect(202).location();
    let mut stream = common::http::connect(&b.addr, std::time::Duration::from_secs(30)).unwrap();
    let head = format!("PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", second.len());
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&second[..second.len() / 2]).unwrap();
    stream.flush().unwrap();

    after_the_store_ticks();
    let report = admin(&a.addr, "POST", "clean");
    assert_eq!(report["repositories_removed"], json!(["team/old"]), "{report}");
    assert_eq!(report["uploads_removed"].as_u64(), Some(0));
    assert!(report["kept"]["layer_links"].as_u64() >= Some(2), "{report}");

    stream.write_all(&second[second.len() / 2..]).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    assert_eq!(common::http::read_head(&mut reader).unwrap().0, 202);
    let d = digest(&second);
    req(&b.addr, "PUT", &format!("{location}?digest={d}")).send().expect(201);
    let manifest = manifest_of(&config, &[(&first, 11), (&d, second.len())]);
    put_manifest(&b.addr, "team/app", "v1", &manifest).expect(201);
    assert_eq!(req(&a.addr, "GET", "/v2/team/app/manifests/v1").send().expect(200).body, manifest);
    assert!(req(&a.addr, "GET", &format!("/v2/team/app/blobs/{d}")).send().expect(200).body == second);
    req(&a.addr, "GET", &format!("/v2/team/app/blobs/{first}")).send().expect(200);
    req(&a.addr, "GET", "/v2/team/old/manifests/v1").send().expect(404);
    a.stop();
    b.stop();
}

/// A clean (in this process) whose mark found a blob unreferenced; between the mark and the
/// sweep, instance B mounts that blob into a repository and puts a manifest naming it. The
/// sweep's re-check sees the new link: the blob stays, and the image is whole.
#[test]
fn a_manifest_put_between_mark_and_sweep_keeps_its_blobs() {
    let storage = place();
    let b = instance(&storage);
    let layer = b"layer unreferenced at the mark";
    let x = push_blob(&b.addr, "r", layer);
    req(&b.addr, "DELETE", &format!("/v2/r/blobs/{x}")).send().expect(202);
    let junk = push_blob(&b.addr, "r", b"junk");
    req(&b.addr, "DELETE", &format!("/v2/r/blobs/{junk}")).send().expect(202);
    after_the_store_ticks();
    let (store, uploads) = open_place(&storage);
    let options = glci::registry::gc::CleanOptions { project: None, grace: std::time::Duration::ZERO, dry_run: false };
    let mut manifest = Vec::new();
    let report = glci::registry::gc::clean_s3(&store, &uploads, &options, &mut |p| {
        if p.phase == "deleting blobs" && manifest.is_empty() {
            req(&b.addr, "POST", &format!("/v2/late/blobs/uploads/?mount={x}")).send().expect(201);
            let config = push_blob(&b.addr, "late", b"{}");
            manifest = manifest_of(&config, &[(&x, layer.len())]);
            put_manifest(&b.addr, "late", "v1", &manifest).expect(201);
        }
    })
    .unwrap();
    assert!(!manifest.is_empty(), "the clean never reached its sweep");
    assert_eq!(report.blobs_removed, 1, "{report:?}");
    req(&b.addr, "GET", &format!("/v2/r/blobs/{junk}")).send().expect(404);
    assert_eq!(req(&b.addr, "GET", "/v2/late/manifests/v1").send().expect(200).body, manifest);
    assert_eq!(req(&b.addr, "GET", &format!("/v2/late/blobs/{x}")).send().expect(200).body, layer);
    b.stop();
}

/// The writer's half of clean's protocol, driven by hand: a clean (this test) tombstones a
/// link a writer has just written, takes it, and lifts the tombstone. Whether the writer's
/// checks fall before the delete (it then waits for the tombstone to go) or after it, the
/// writer ends with the link there again, and a blob it relies on that is gone is an error.
#[test]
fn a_writer_waits_out_a_tombstone_and_rewrites_the_link_a_clean_took() {
    let (store, _) = open_place(&place());
    let client = store.client();
    let key = format!("{}team/app/_layers/sha256/{}", store.keys().repositories(), "a".repeat(64));
    client.put_bytes(&key, b"").unwrap();
    let rel = key.strip_prefix(store.keys().prefix()).unwrap();
    let tomb = format!("{}{rel}/by-hand", store.keys().doomed());
    client.put_bytes(&tomb, b"").unwrap();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| store.settle(&[(key.clone(), Some(b"".as_slice()))]));
        client.delete(&key).unwrap();
        client.delete(&tomb).unwrap();
        writer.join().unwrap().unwrap();
    });
    assert!(client.head(&key).unwrap().is_some(), "the link a clean took under its tombstone stayed gone");
    // A blob the writer relies on and cannot write again: an error, never a silent success.
    let blob = store.keys().blob(&format!("sha256:{}", "b".repeat(64)).parse().unwrap());
    assert!(store.settle(&[(blob, None)]).is_err());
}

/// Two cleans at once, from two instances: both succeed, together they remove exactly what
/// one would, and no tombstone is left behind.
#[test]
fn two_cleans_at_once_end_consistent() {
    let storage = place();
    let (a, b) = (instance(&storage), instance(&storage));
    for n in 0..4 {
        let name = format!("team/x{n}");
        put_manifest(&a.addr, &name, "v1", &image(&a.addr, &name, format!("layer {n}").as_bytes())).expect(201);
    }
    let keep = image(&b.addr, "keep/app", b"kept layer");
    put_manifest(&b.addr, "keep/app", "v1", &keep).expect(201);
    after_the_store_ticks();
    let reports: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let cleans: Vec<_> = [&a.addr, &b.addr]
            .into_iter()
            .map(|s| scope.spawn(move || admin(s, "POST", "clean?project=team&grace=0")))
            .collect();
        cleans.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for report in &reports {
        assert!(report["repositories_removed"].as_array().unwrap().len() <= 4, "{report}");
    }
    // Each of the four manifests and layers went, by one clean or the other.
    let removed: u64 = reports.iter().map(|r| r["blobs_removed"].as_u64().unwrap()).sum();
    assert!(removed >= 8, "{reports:?}");
    let listed = admin(&b.addr, "GET", "list");
    assert_eq!(listed["images"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["images"][0]["repository"], "keep/app");
    let stats = admin(&a.addr, "GET", "stats");
    assert_eq!(stats["blobs"].as_u64(), Some(3), "{stats}");
    assert_eq!(req(&a.addr, "GET", "/v2/keep/app/manifests/v1").send().expect(200).body, keep);
    let (store, _) = open_place(&storage);
    let leftovers = store.client().list_all(&store.keys().doomed(), None).unwrap();
    assert!(leftovers.keys.is_empty(), "tombstones left: {:?}", leftovers.keys);
    a.stop();
    b.stop();
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
}

/// The store killed and started again under a running instance: the pull in flight is cut
/// short, never passed off as whole (its Content-Length is not met, so the client retries).
/// (Right after SeaweedFS restarts, its S3 gateway answers before its volumes are back, so a
/// pull at once may be cut too: not asserted here.)
#[test]
fn a_pull_cut_by_a_store_restart_ends_short() {
    let mut weed = common::seaweedfs::OwnSeaweedFs::start();
    glci::registry::s3::S3Client::new(&weed.settings("restarts")).unwrap().create_bucket().unwrap();
    let config = format!(
        "[registry]\nupstreams = []\n[storage.s3]\nendpoint = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
         secret_access_key = \"{SECRET_KEY}\"\n",
        weed.endpoint
    );
    let s =
        ServeProcess::start_with_config(std::path::Path::new("s3://restarts/r"), &["--no-auth", "--no-tls"], &config);
    let bytes = common::pattern("s3-restart", 64 * 1024 * 1024);
    let d = push_blob(&s.addr, "r", &bytes);
    let mut stream = common::http::connect(&s.addr, std::time::Duration::from_secs(30)).unwrap();
    stream
        .write_all(format!("GET /v2/r/blobs/{d} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let (status, headers) = common::http::read_head(&mut reader).unwrap();
    assert_eq!(status, 200);
    assert_eq!(common::http::content_length(&headers), Some(bytes.len() as u64));
    let mut first = vec![0u8; 1024 * 1024];
    std::io::Read::read_exact(&mut reader, &mut first).unwrap();
    weed.restart();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
    assert!(first.len() + rest.len() < bytes.len(), "the cut pull claimed all {} bytes", bytes.len());
    assert_eq!(first[..], bytes[..first.len()]);
    s.stop();
}

/// haproxy in front of `backends`, `mode tcp`, round robin, on `listener` (bound by the test
/// and handed over as fd 3, so the address is known and no port is raced). A connection to a
/// dead instance is retried on another (`option redispatch`). Killed on drop.
struct Haproxy {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(listener: std::net::TcpListener, backends: &[&str]) -> Haproxy {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        common::need("haproxy");
        let dir = tempfile::tempdir().unwrap();
        let servers: String =
            backends.iter().enumerate().map(|(n, addr)| format!("    server glci{n} {addr}\n")).collect();
        let config = format!(
            "global\n    maxconn 512\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n\
             \x20   timeout server 120s\n    retries 3\n    option redispatch\n\
             frontend registry\n    bind fd@3\n    default_backend glci\n\
             backend glci\n    balance roundrobin\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let fd = listener.as_raw_fd();
        let mut command = std::process::Command::new("haproxy");
        command.args(["-db", "-q", "-f"]).arg(&path).stdin(std::process::Stdio::null());
        // SAFETY: dup2 and prctl are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto itself keeps close-on-exec: clear it either way.
                if (fd != 3 && libc::dup2(fd, 3) < 0) || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        // The socket is listening already: connections wait in its backlog until haproxy
        // accepts them, so there is nothing to wait for here.
        drop(listener);
        Haproxy { child, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `docker --config DIR ARGS` (a login of this test's own), its stdout.
fn docker_in(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut command = std::process::Command::new("docker");
    command.arg("--config").arg(config).args(args);
    command.stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() });
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The "Done when" of issue 20: three instances with auth and TLS on one SeaweedFS, sharing
/// one `GLCI_HOME`'s admin secret and CA, behind haproxy (`mode tcp`, round robin). docker
/// logs in, pushes and pulls, skopeo copies, curl lists with Basic credentials and over TLS
/// with the shared CA, whichever instance each connection reaches; after one instance is
/// killed, pulls keep working.
#[test]
fn three_instances_behind_haproxy_serve_docker_skopeo_and_curl() {
    common::need("busybox");
    common::need("skopeo");
    common::need("curl");
    common::need_docker_daemon();
    let storage = place();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), config("")).unwrap();
    let storage_path = std::path::Path::new(&storage);
    // The first creates the CA and the admin secret; the others find them.
    let first = ServeProcess::start_in_home(home.path(), storage_path, &[]);
    let mut servers = vec![first];
    for _ in 0..2 {
        servers.push(ServeProcess::start_in_home(home.path(), storage_path, &[]));
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = listener.local_addr().unwrap().to_string();
    let addrs: Vec<&str> = servers.iter().map(|s| s.addr.as_str()).collect();
    let _haproxy = Haproxy::start(listener, &addrs);
    let password = common::run_stdout(
        common::glci().env("GLCI_HOME", home.path()).args(["registry", "login", "--print", "--ttl", "1h"]),
    )
    .trim()
    .to_string();

    // curl: Basic credentials on each request; three connections, one per instance.
    for _ in 0..3 {
        let out = common::run_stdout(std::process::Command::new("curl").args([
            "-sf",
            "-u",
            &format!("glci-admin:{password}"),
            &format!("http://{lb}/v2/_catalog"),
        ]));
        assert!(out.contains("repositories"), "{out}");
    }
    // Anonymous pushes are refused, whichever instance answers.
    let refused = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("http://{lb}/v2/team/app/blobs/uploads/"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");

    // docker: login (a Bearer token from one instance, used on the others), push, pull.
    let work = common::temp_dir();
    let docker_config = work.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    docker_in(&docker_config, &["login", "-u", "glci-admin", "--password-stdin", &lb], Some(&password));
    let rootfs = common::build_busybox_rootfs(&work.path().join("rootfs.tar"));
    let name = format!("{lb}/team/{}:1", common::unique_name("lb"));
    let images = common::DockerImages(vec![name.clone()]);
    docker_in(&docker_config, &["import", &rootfs.display().to_string(), &name], None);
    let pushed = common::pushed_digest(&docker_in(&docker_config, &["push", &name], None));
    docker_in(&docker_config, &["image", "rm", &name], None);
    docker_in(&docker_config, &["pull", &name], None);
    let repo_digests =
        docker_in(&docker_config, &["image", "inspect", "--format", "{{json .RepoDigests}}", &name], None);
    assert!(repo_digests.contains(&pushed), "pulled {repo_digests}, pushed {pushed}");

    // skopeo: copy the image to another repository through the balancer, with the credential.
    let creds = format!("glci-admin:{password}");
    let copy_to = name.replacen("/team/", "/team/copy-", 1);
    common::run(std::process::Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("docker://{name}"),
        &format!("docker://{copy_to}"),
    ]));
    let inspected = common::run_stdout(std::process::Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{copy_to}"),
    ]));
    assert_eq!(inspected.trim(), pushed);

    // TLS through the balancer: every instance's certificate is issued by the one shared CA.
    let ca = home.path().join("registry-ca/ca.crt");
    let repo = name.trim_start_matches(&format!("{lb}/")).split(':').next().unwrap().to_string();
    for _ in 0..3 {
        let out = common::run_stdout(
            std::process::Command::new("curl")
                .arg("-sf")
                .arg("--cacert")
                .arg(&ca)
                .arg(format!("https://{lb}/v2/{repo}/tags/list")),
        );
        assert!(out.contains("\"1\""), "{out}");
    }
    // Every instance served some of it.
    for s in &servers {
        assert!(s.stderr_shows("event=request"), "instance {} saw no request", s.addr);
    }

    // One instance dies: pulls keep working through the other two.
    let mut dead = servers.pop().unwrap();
    dead.terminate(libc::SIGKILL);
    docker_in(&docker_config, &["image", "rm", &name], None);
    for _ in 0..2 {
        docker_in(&docker_config, &["pull", &name], None);
    }
    drop(images);
    for s in servers {
        s.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Pull-through and push-through on S3 (issue 20), against the fault-injecting upstream of
// `common::faulty_upstream`, which records every request it gets.

const HUB: &str = "registry-1.docker.io";

/// `config.toml` for an instance pulling through `upstream` as Docker Hub.
fn pull_through_config(upstream: &FaultyUpstream) -> String {
    format!(
        "[registry]\nupstreams = [\"{HUB}\"]\n[registry.upstream_urls]\n\"{HUB}\" = \"{}\"\n\
         [storage.s3]\nendpoint = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
        upstream.url(),
        seaweedfs().endpoint
    )
}

fn cache_instance(storage: &str, upstream: &FaultyUpstream) -> ServeProcess {
    ServeProcess::start_with_config(
        std::path::Path::new(storage),
        &["--no-auth", "--no-tls"],
        &pull_through_config(upstream),
    )
}

/// The object a blob is stored as under `storage` (`s3://bucket/prefix`), read directly.
fn stored_object(storage: &str, digest: &str) -> Option<Vec<u8>> {
    let (bucket, prefix) = storage.trim_start_matches("s3://").split_once('/').unwrap();
    let client = glci::registry::s3::S3Client::new(&seaweedfs().settings(bucket)).unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    client.get_bytes(&format!("{prefix}/blobs/sha256/{hex}")).unwrap()
}

/// An image on `upstream` under `library/<repo>:v1` with one layer of `layer_len` bytes.
fn upstream_image(upstream: &FaultyUpstream, repo: &str, layer_len: usize) -> (String, Vec<u8>, Vec<u8>) {
    let layer = common::pattern(&format!("{repo} layer"), layer_len);
    let layer_digest = upstream.add_blob(&layer);
    let config_digest = upstream.add_blob(b"{}");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    upstream.add_manifest(&format!("library/{repo}"), "v1", OCI_MANIFEST, &manifest);
    (layer_digest, layer, manifest)
}

/// A miss pulled through one instance is in the bucket for all: the second instance serves the
/// tag, the manifest and the layer without asking the upstream anything.
#[test]
fn a_miss_pulled_through_one_instance_is_served_by_another_without_the_upstream() {
    let upstream = FaultyUpstream::start(|_| None);
    // Past one multipart part: the layer is a multipart upload while it streams.
    let (layer_digest, layer, manifest) = upstream_image(&upstream, "app", 9 * 1024 * 1024 + 7);
    let storage = place();
    let (a, b) = (cache_instance(&storage, &upstream), cache_instance(&storage, &upstream));
    let got = req(&a.addr, "GET", "/v2/app/manifests/v1").header("Accept", OCI_MANIFEST).send().expect(200);
    assert_eq!(got.body, manifest);
    let got = req(&a.addr, "GET", &format!("/v2/app/blobs/{layer_digest}")).send().expect(200);
    assert!(got.body == layer, "the layer pulled through differs");
    assert_eq!(upstream.count("GET", "/v2/library/app/blobs/"), 1);
    assert!(stored_object(&storage, &layer_digest).is_some_and(|o| o == layer), "the bucket lacks the layer");
    // The tag carries the time it was checked upstream, which every instance reads.
    let (bucket, prefix) = storage.trim_start_matches("s3://").split_once('/').unwrap();
    let client = glci::registry::s3::S3Client::new(&seaweedfs().settings(bucket)).unwrap();
    let tag_key = format!("{prefix}/repositories/app/_manifests/tags/v1");
    let stamped = client.head_metadata(&tag_key, "glci-checked-at").unwrap().unwrap();
    assert!(
        stamped.value.as_deref().is_some_and(|v| v.parse::<f64>().is_ok()),
        "the tag has no check time: {stamped:?}"
    );
    let before = upstream.requests().len();
    for _ in 0..2 {
        let got = req(&b.addr, "GET", "/v2/app/manifests/v1").header("Accept", OCI_MANIFEST).send().expect(200);
        assert_eq!(got.body, manifest);
        let got = req(&b.addr, "GET", &format!("/v2/app/blobs/{layer_digest}")).send().expect(200);
        assert!(got.body == layer, "the layer served by the other instance differs");
        req(&b.addr, "HEAD", &format!("/v2/app/blobs/{layer_digest}")).send().expect(200);
    }
    let asked: Vec<String> =
        upstream.requests()[before..].iter().map(|s| format!("{} {}", s.method, s.target)).collect();
    assert!(asked.is_empty(), "the second instance asked the upstream: {asked:?}");
    a.stop();
    b.stop();
}

/// Concurrent misses of one blob: on one instance they share one upstream fetch, on two
/// instances each fetches once, and the bucket ends with one whole object.
#[test]
fn concurrent_misses_on_two_instances_end_with_one_whole_object() {
    let upstream = FaultyUpstream::start(|_| None);
    let (layer_digest, layer, _) = upstream_image(&upstream, "shared", 17 * 1024 * 1024 + 3);
    let storage = place();
    let (a, b) = (cache_instance(&storage, &upstream), cache_instance(&storage, &upstream));
    let start = std::sync::Barrier::new(6);
    std::thread::scope(|scope| {
        let pulls: Vec<_> = [&a.addr, &a.addr, &a.addr, &b.addr, &b.addr, &b.addr]
            .into_iter()
            .map(|addr| {
                let (start, path) = (&start, format!("/v2/shared/blobs/{layer_digest}"));
                scope.spawn(move || {
                    start.wait();
                    req(addr, "GET", &path).send().expect(200).body
                })
            })
            .collect();
        for pull in pulls {
            assert!(pull.join().unwrap() == layer, "a concurrent pull got other bytes");
        }
    });
    let fetched = upstream.count("GET", "/v2/library/shared/blobs/");
    assert!((1..=2).contains(&fetched), "the upstream was asked {fetched} times for one blob by two instances");
    assert!(stored_object(&storage, &layer_digest).is_some_and(|o| o == layer), "the stored object is not whole");
    a.stop();
    b.stop();
}

/// An upstream that cuts a blob mid-way (after a multipart part is in the store), sends wrong
/// bytes or fewer than it announced: the client never gets a complete 200, the bucket holds
/// nothing of it, and once the upstream is healthy the same pull gives the right bytes.
#[test]
fn a_cut_or_wrong_upstream_blob_leaves_nothing_in_the_bucket() {
    use common::faulty_upstream::Fault;
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let faults: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Fault>>> = Default::default();
    let upstream = {
        let (healthy, faults) = (healthy.clone(), faults.clone());
        FaultyUpstream::start(move |seen| {
            if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            faults.lock().unwrap().get(seen.path()).cloned()
        })
    };
    let mut cases = Vec::new();
    for (seed, len, fault) in [
        ("cut", 12 * 1024 * 1024, Fault::Reset { after: 10 * 1024 * 1024 }),
        ("flipped", 9 * 1024 * 1024, Fault::Flip { drip: None }),
        ("short", 100 * 1024, Fault::ShortLength(100 * 1024 - 10)),
    ] {
        let bytes = common::pattern(seed, len);
        let d = upstream.add_blob(&bytes);
        faults.lock().unwrap().insert(format!("/v2/library/{seed}/blobs/{d}"), fault);
        cases.push((seed, d, bytes));
    }
    let storage = place();
    let s = cache_instance(&storage, &upstream);
    for (seed, d, _) in &cases {
        let path = format!("/v2/{seed}/blobs/{d}");
        match req(&s.addr, "GET", &path).timeout(std::time::Duration::from_secs(60)).try_send() {
            Ok(r) => assert_ne!(r.status, 200, "{seed}: a complete 200 from a faulty upstream"),
            Err(_broken) => {}
        }
        assert!(stored_object(&storage, d).is_none(), "{seed}: the bucket holds a blob the upstream got wrong");
        req(&s.addr, "HEAD", &path).send().expect(404);
    }
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    for (seed, d, bytes) in &cases {
        let got = req(&s.addr, "GET", &format!("/v2/{seed}/blobs/{d}")).send().expect(200);
        assert!(got.body == *bytes, "{seed}: other bytes once the upstream is healthy");
        assert!(stored_object(&storage, d).is_some_and(|o| o == *bytes), "{seed}: not stored whole");
    }
    s.stop();
}

/// A push-through push on one instance is mirrored once, inside the push; the other instance
/// on the bucket serves it and mirrors nothing of its own accord; a retry through it (the
/// client's answer to a cut push) uploads no blob again.
#[test]
fn a_push_through_push_on_one_instance_is_mirrored_upstream_once() {
    let upstream = FaultyUpstream::start(|_| None);
    let storage = place();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[registry]\nupstreams = []\n[registry.upstream]\nurl = \"{}\"\n[storage.s3]\nendpoint = \"{}\"\n\
             access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
            upstream.url(),
            seaweedfs().endpoint
        ),
    )
    .unwrap();
    let path = std::path::Path::new(&storage);
    let a = ServeProcess::start_in_home(home.path(), path, &["--no-tls"]);
    let b = ServeProcess::start_in_home(home.path(), path, &["--no-tls"]);
    let token = common::run_stdout(common::glci().env("GLCI_HOME", home.path()).args([
        "registry",
        "token",
        "--project",
        "g/p",
        "--push-through",
    ]));
    let auth = common::http::basic("gitlab-ci-token", token.trim());
    let authed = |s: &str, method: &str, path: &str| req(s, method, path).header("Authorization", &auth);
    // A layer past one multipart part: the mirror streams it back out of the bucket.
    let layer = common::pattern("mirrored layer", 9 * 1024 * 1024 + 1);
    let mut blobs = Vec::new();
    for bytes in [layer.as_slice(), b"{}"] {
        let d = digest(bytes);
        authed(&a.addr, "POST", &format!("/v2/g/p/app/blobs/uploads/?digest={d}"))
            .body(bytes.to_vec())
            .send()
            .expect(201);
        blobs.push(d);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[1], "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blobs[0], "size": layer.len()}],
    }))
    .unwrap();
    let put = |s: &str| {
        authed(s, "PUT", "/v2/g/p/app/manifests/v1").header("Content-Type", OCI_MANIFEST).body(manifest.clone()).send()
    };
    put(&a.addr).expect(201);
    assert_eq!(upstream.count("PUT", "/v2/g/p/app/manifests/"), 1);
    assert_eq!(upstream.count("POST", "/v2/g/p/app/blobs/uploads/"), 2);
    assert_eq!(upstream.manifest("g/p/app", "v1"), Some((OCI_MANIFEST.to_string(), manifest.clone())));
    assert!(upstream.blob(&blobs[0]).is_some_and(|b| b == layer), "the upstream got another layer");
    // The other instance serves it and mirrors nothing by itself.
    assert_eq!(req(&b.addr, "GET", "/v2/g/p/app/manifests/v1").send().expect(200).body, manifest);
    assert_eq!(upstream.count("PUT", "/v2/g/p/app/manifests/"), 1);
    // A retry through the other instance: the HEAD probes find every blob, only the manifest goes.
    put(&b.addr).expect(201);
    assert_eq!(upstream.count("POST", "/v2/g/p/app/blobs/uploads/"), 2);
    assert_eq!(upstream.count("PUT", "/v2/g/p/app/manifests/"), 2);
    a.stop();
    b.stop();
}

/// An instance killed (-9) in the middle of a pull-through, with a multipart part already in the
/// store: the bucket holds no blob, and another instance pulls it through whole.
#[test]
fn a_pull_through_cut_by_kill_9_leaves_nothing_and_another_instance_completes_it() {
    use common::faulty_upstream::Fault;
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let upstream = {
        let first = first.clone();
        FaultyUpstream::start(move |seen| {
            // The first GET of a blob drips, so the instance is killed mid-way; later ones are healthy.
            let drip = seen.method == "GET" && seen.path().contains("/blobs/");
            (drip && first.swap(false, std::sync::atomic::Ordering::SeqCst))
                .then_some(Fault::Drip { step: 64 * 1024, every: std::time::Duration::from_millis(20) })
        })
    };
    let bytes = common::pattern("killed mid pull-through", 14 * 1024 * 1024);
    let d = upstream.add_blob(&bytes);
    let storage = place();
    let (mut a, b) = (cache_instance(&storage, &upstream), cache_instance(&storage, &upstream));
    let mut stream = common::http::connect(&a.addr, std::time::Duration::from_secs(30)).unwrap();
    stream
        .write_all(format!("GET /v2/killed/blobs/{d} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let (status, _) = common::http::read_head(&mut reader).unwrap();
    assert_eq!(status, 200);
    // Past the first 8 MiB part: it has gone to the store's multipart upload. The last 5 MiB
    // take the drip over a second and a half more: the kill lands before the upload completes.
    let mut received = vec![0u8; 9 * 1024 * 1024];
    std::io::Read::read_exact(&mut reader, &mut received).unwrap();
    assert!(received[..] == bytes[..received.len()], "the streamed bytes differ");
    a.terminate(libc::SIGKILL);
    assert!(stored_object(&storage, &d).is_none(), "a blob cut by kill -9 is in the bucket");
    req(&b.addr, "HEAD", &format!("/v2/killed/blobs/{d}")).send().expect(404);
    let got = req(&b.addr, "GET", &format!("/v2/killed/blobs/{d}")).send().expect(200);
    assert!(got.body == bytes, "the other instance pulled other bytes");
    assert!(stored_object(&storage, &d).is_some_and(|o| o == bytes), "not stored whole");
    b.stop();
}
