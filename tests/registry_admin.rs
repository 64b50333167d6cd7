//! `glci registry list | stats | pull | clean` (issue 6) against real `glci serve` processes:
//! several projects holding pushed and pulled-through images, `--project` scoping, the admin
//! API's auth, `clean` racing eight skopeo pushes, `clean` killed with SIGKILL and run again,
//! `--storage` refused while a server holds the directory, and `pull` into the Docker engine.
//!
//! Pulled-through ("cached") content is written with the `Store` API on a stopped server's
//! storage, exactly as the pull-through cache (`src/registry/proxy`) records it (origin on the
//! manifest and on each layer link): a real upstream would tie these tests to a network.
//! Needs skopeo, busybox-static and a Docker daemon (`make test` provides them).
#![allow(clippy::unwrap_used)]
// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::http::{basic, Request, Response};
use common::store_fixture::{age_files, blob_intact, filler, write_images, write_unreferenced_blobs, OCI_MANIFEST};
use common::{
    build_busybox_rootfs, build_oci_layout, docker, glci, layout_blob, layout_blob_digests, layout_closure,
    layout_tag_digest, need, need_docker_daemon, run, run_stdout, sha256_digest, temp_dir, unique_name, DockerImages,
    ServeProcess,
};
use glci::registry::manifest;
use glci::registry::names::{Algorithm, Digest, Name, Tag};
use glci::registry::storage::{BlobWriter, Layout, Origin, Store};
use serde_json::Value;

const HOUR: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Helpers

/// `glci registry ARGS… --server ADDR`, as the host user of that server (its `GLCI_HOME`, so
/// its admin credential).
fn registry_cmd(server: &ServeProcess, args: &[&str]) -> Command {
    let mut cmd = glci();
    cmd.env("GLCI_HOME", server.home()).arg("registry").args(args).args(["--server", &server.addr]);
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"))
}

fn registry_json(server: &ServeProcess, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run_stdout(&mut registry_cmd(server, &all));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `glci registry ARGS… --storage DIR --json`.
fn storage_json(storage: &Path, args: &[&str]) -> Value {
    let mut cmd = glci();
    cmd.env("GLCI_HOME", storage.join("no-home"))
        .arg("registry")
        .args(args)
        .arg("--storage")
        .arg(storage)
        .arg("--json");
    let out = run_stdout(&mut cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn admin_token(server: &ServeProcess) -> String {
    let mut cmd = glci();
    cmd.env("GLCI_HOME", server.home()).args(["registry", "login", "--print"]);
    run_stdout(&mut cmd).trim().to_string()
}

fn skopeo_copy(from: &str, to: &str, all: bool, creds: Option<&str>) -> Output {
    need("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    if let Some(creds) = creds {
        cmd.args(["--dest-creds", creds]);
    }
    cmd.args([from, to]);
    output(&mut cmd)
}

/// Pushes `oci:LAYOUT:TAG` to `SERVER/REFERENCE`, panicking on failure.
fn push(server: &ServeProcess, layout: &Path, tag: &str, reference: &str, token: Option<&str>) {
    let creds = token.map(|t| format!("glci-admin:{t}"));
    let from = format!("oci:{}:{tag}", layout.display());
    let out = skopeo_copy(&from, &format!("docker://{}/{reference}", server.addr), tag == "index", creds.as_deref());
    assert!(out.status.success(), "push {reference}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Pulls `SERVER/REFERENCE` into a new OCI layout and checks that the manifest and every blob
/// reachable from it are byte-identical to the source layout's.
fn assert_pulls_intact(server: &ServeProcess, source: &Path, tag: &str, reference: &str, work: &Path) {
    let back = work.join(unique_name("back"));
    let out = skopeo_copy(
        &format!("docker://{}/{reference}", server.addr),
        &format!("oci:{}:{tag}", back.display()),
        tag == "index",
        None,
    );
    assert!(out.status.success(), "pull {reference}: {}", String::from_utf8_lossy(&out.stderr));
    let expected = layout_closure(source, &layout_tag_digest(source, tag));
    eqnice!(expected, layout_blob_digests(&back), "blobs pulled back from {reference}");
    for d in &expected {
        assert!(layout_blob(source, d) == layout_blob(&back, d), "{reference}: blob {d} differs");
    }
}

/// Total size of the blobs reachable from `tag` in an OCI layout (manifest included).
fn layout_image_size(layout: &Path, tag: &str) -> u64 {
    layout_closure(layout, &layout_tag_digest(layout, tag)).iter().map(|d| layout_blob(layout, d).len() as u64).sum()
}

/// Writes a pulled-through image into `storage` with the `Store` API (see the module doc):
/// a config and a layer of its own, linked and tagged with `upstream` as their origin.
/// Returns the bytes it added to the content store.
fn write_cached_image(storage: &Path, repository: &str, tag: &str, upstream: &str) -> u64 {
    let store = Store::open(Layout::new(storage)).unwrap();
    let name: Name = repository.parse().unwrap();
    let origin = Origin { upstream: upstream.to_string(), fetched_at: glci::auth::unix(SystemTime::now()) };
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let layer = filler(&format!("cached layer of {repository}"), 50_000);
    let mut descriptors = Vec::new();
    let mut total = 0;
    for bytes in [&config, &layer] {
        let digest: Digest = sha256_digest(bytes).parse().unwrap();
        let mut writer = BlobWriter::temp(store.layout(), Algorithm::Sha256).unwrap();
        writer.copy_from(&mut &bytes[..], None).unwrap();
        writer.commit(store.layout(), &digest).unwrap();
        store.link_layer(&name, &digest, Some(&origin)).unwrap();
        descriptors
            .push(format!(r#"{{"mediaType":"application/octet-stream","digest":"{digest}","size":{}}}"#, bytes.len()));
        total += bytes.len() as u64;
    }
    let manifest_bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        descriptors[0].replace("application/octet-stream", "application/vnd.oci.image.config.v1+json"),
        descriptors[1].replace("application/octet-stream", "application/vnd.oci.image.layer.v1.tar+gzip")
    );
    let parsed = manifest::parse(manifest_bytes.as_bytes(), Some(OCI_MANIFEST)).unwrap();
    let digest: Digest = sha256_digest(manifest_bytes.as_bytes()).parse().unwrap();
    let tag: Tag = tag.parse().unwrap();
    store.put_manifest(&name, &digest, manifest_bytes.as_bytes(), &parsed, Some(&tag), Some(&origin)).unwrap();
    total + manifest_bytes.len() as u64
}

fn repositories(list: &Value) -> Vec<String> {
    list["images"].as_array().unwrap().iter().map(|i| i["repository"].as_str().unwrap().to_string()).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// One request (`Connection: close`, no body) with an optional `Authorization`.
fn http(addr: &str, method: &str, path: &str, authorization: Option<&str>) -> Response {
    let request = Request::new(addr, method, path).close();
    match authorization {
        Some(auth) => request.header("Authorization", auth),
        None => request,
    }
    .send()
}

// ---------------------------------------------------------------------------------------------
// list, stats, clean

#[test]
fn list_stats_and_clean_across_projects_with_pushed_and_cached_images() {
    let work = temp_dir();
    let layout = build_oci_layout(&work.path().join("layout"));
    let storage = work.path().join("storage");
    let server = ServeProcess::start_with_args(&storage, &[]);
    let token = admin_token(&server);
    push(&server, &layout, "multi", "alpha/app:v1", Some(&token));
    push(&server, &layout, "multi", "alpha/tools/lint:1", Some(&token));
    // `alphabet` is not under `alpha`: --project matches whole path components.
    push(&server, &layout, "index", "alphabet/app:2", Some(&token));
    push(&server, &layout, "multi", "beta/app:v1", Some(&token));
    server.stop();
    let cached_bytes = write_cached_image(&storage, "hub/busybox", "1.36", "registry-1.docker.io");
    let server = ServeProcess::start_with_args(&storage, &[]);

    // list: one row per tag, sorted, with sizes, origins and times.
    let list = registry_json(&server, &["list"]);
    eqnice!(
        vec!["alpha/app", "alpha/tools/lint", "alphabet/app", "beta/app", "hub/busybox"],
        repositories(&list),
        "repositories listed"
    );
    let rows = list["images"].as_array().unwrap();
    let app = &rows[0];
    eqnice!(Some("v1"), app["tag"].as_str());
    eqnice!(Some("pushed"), app["origin"].as_str());
    eqnice!(Value::Null, app["upstream"]);
    eqnice!(Some(layout_image_size(&layout, "multi")), app["size"].as_u64(), "size of alpha/app:v1");
    assert!(app["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(app["updated_at"].as_str().unwrap().ends_with('Z'));
    eqnice!(
        Some(layout_image_size(&layout, "index")),
        rows[2]["size"].as_u64(),
        "size of the index, children included"
    );
    let hub = &rows[4];
    eqnice!(Some("cached"), hub["origin"].as_str());
    eqnice!(Some("registry-1.docker.io"), hub["upstream"].as_str());
    eqnice!(Some(cached_bytes), hub["size"].as_u64());

    let table = run_stdout(&mut registry_cmd(&server, &["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY") && lines[0].contains("ORIGIN"), "{table}");
    eqnice!(6, lines.len(), "header and five rows:\n{table}");
    assert!(lines[1].starts_with("alpha/app") && lines[1].contains("pushed") && lines[1].contains("MiB"), "{table}");
    assert!(lines[5].contains("cached from registry-1.docker.io") && lines[5].contains("just now"), "{table}");

    // --project: that path and everything below it, nothing beside it.
    eqnice!(
        vec!["alpha/app", "alpha/tools/lint"],
        repositories(&registry_json(&server, &["list", "--project", "alpha"]))
    );
    eqnice!(vec!["alpha/tools/lint"], repositories(&registry_json(&server, &["list", "--project", "alpha/tools"])));
    let none = run_stdout(&mut registry_cmd(&server, &["list", "--project", "gamma"]));
    eqnice!("no images under gamma", none.trim());

    // stats: counts, pushed vs cached per upstream, dedup, free space.
    let stats = registry_json(&server, &["stats"]);
    eqnice!(Some(5), stats["repositories"].as_u64());
    eqnice!(Some(5), stats["tags"].as_u64());
    eqnice!(Some(cached_bytes), stats["cached_bytes"].as_u64());
    eqnice!(Some(cached_bytes), stats["cached_by_upstream"]["registry-1.docker.io"].as_u64());
    eqnice!(
        stats["content_bytes"].as_u64().unwrap() - cached_bytes,
        stats["pushed_bytes"].as_u64().unwrap(),
        "pushed bytes"
    );
    eqnice!(Some(0), stats["unreferenced_bytes"].as_u64());
    // Three repositories hold the same image: two of its copies are saved.
    assert!(stats["dedup_saved_bytes"].as_u64().unwrap() >= 2 * layout_image_size(&layout, "multi"), "{stats}");
    assert!(stats["disk_bytes"].as_u64().unwrap() >= stats["content_bytes"].as_u64().unwrap(), "{stats}");
    assert!(stats["filesystem"]["free_bytes"].as_u64().unwrap() > 0, "{stats}");
    eqnice!(Some(0), stats["upload_sessions"].as_u64());
    let text = run_stdout(&mut registry_cmd(&server, &["stats"]));
    assert!(text.contains("from registry-1.docker.io") && text.contains("free space"), "{text}");

    // clean --dry-run says what would go and changes nothing.
    let dry = registry_json(&server, &["clean", "--project", "alpha", "--grace", "0", "--dry-run"]);
    eqnice!(Some(true), dry["dry_run"].as_bool());
    eqnice!(vec!["alpha/app", "alpha/tools/lint"], strings(&dry["repositories_removed"]));
    eqnice!(Some(2), dry["tags_removed"].as_u64());
    eqnice!(5, repositories(&registry_json(&server, &["list"])).len(), "after a dry run");

    // With the default grace window, alpha's images go at once, pushed a moment ago or not
    // (issue 14 §4): every tag and manifest. Their blobs stay (beta/app references them), and so
    // do their layer links, younger than the window. The dry run says exactly that.
    let dry = registry_json(&server, &["clean", "--project", "alpha", "--dry-run"]);
    let young = registry_json(&server, &["clean", "--project", "alpha"]);
    eqnice!(vec!["alpha/app", "alpha/tools/lint"], strings(&young["repositories_removed"]));
    eqnice!(Some(2), young["tags_removed"].as_u64());
    assert!(young["manifests_removed"].as_u64().unwrap() >= 2, "{young}");
    eqnice!(Some(0), young["layer_links_removed"].as_u64());
    eqnice!(Some(0), young["blobs_removed"].as_u64());
    eqnice!(Some(0), young["kept"]["tags"].as_u64());
    assert!(young["kept"]["layer_links"].as_u64().unwrap() > 0, "{young}");
    for key in
        ["repositories_removed", "tags_removed", "manifests_removed", "layer_links_removed", "blobs_removed", "kept"]
    {
        eqnice!(dry[key], young[key], "dry run and clean disagree on {key}");
    }
    eqnice!(vec!["alphabet/app", "beta/app", "hub/busybox"], repositories(&registry_json(&server, &["list"])));
    assert_pulls_intact(&server, &layout, "multi", "beta/app:v1", work.path());
    assert_pulls_intact(&server, &layout, "index", "alphabet/app:2", work.path());

    // --grace 0: the young layer links go too; the blobs still stay, beta/app references them.
    let cleaned = registry_json(&server, &["clean", "--project", "alpha", "--grace", "0"]);
    eqnice!(Some(false), cleaned["dry_run"].as_bool());
    eqnice!(Some(0), cleaned["tags_removed"].as_u64());
    eqnice!(young["kept"]["layer_links"], cleaned["layer_links_removed"]);
    eqnice!(Some(0), cleaned["blobs_removed"].as_u64());
    eqnice!(vec!["alphabet/app", "beta/app", "hub/busybox"], repositories(&registry_json(&server, &["list"])));
    assert_pulls_intact(&server, &layout, "multi", "beta/app:v1", work.path());

    // The cached image goes with its own blobs: exactly its bytes are reclaimed.
    let hub = registry_json(&server, &["clean", "--project", "hub", "--grace", "0"]);
    eqnice!(vec!["hub/busybox"], strings(&hub["repositories_removed"]));
    eqnice!(Some(3), hub["blobs_removed"].as_u64());
    eqnice!(Some(cached_bytes), hub["bytes_reclaimed"].as_u64());
    let stats = registry_json(&server, &["stats"]);
    eqnice!(Some(0), stats["cached_bytes"].as_u64());
    eqnice!(Some(2), stats["repositories"].as_u64());
    let human = run_stdout(&mut registry_cmd(&server, &["clean", "--grace", "0", "--dry-run"]));
    assert!(human.starts_with("would remove 2 tags"), "{human}");

    // --storage on the directory a server holds is refused, naming the directory.
    let mut cmd = glci();
    cmd.args(["registry", "list", "--storage"]).arg(&storage);
    let refused = output(&mut cmd);
    eqnice!(Some(1), refused.status.code());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(&storage.display().to_string()) && stderr.contains("in use"), "{stderr}");
    assert!(refused.stdout.is_empty());

    // Once the server is gone, --storage answers what the server answered.
    let over_api = registry_json(&server, &["list"]);
    server.stop();
    eqnice!(over_api, storage_json(&storage, &["list"]), "list --storage and list over the admin API");
}

#[test]
fn admin_api_needs_the_admin_credential() {
    let work = temp_dir();
    let storage = work.path().join("storage");
    let server = ServeProcess::start_with_args(&storage, &["--no-tls"]);
    let stats = "/glci/admin/v1/stats";

    let r = http(&server.addr, "GET", stats, None);
    let body = r.text();
    eqnice!(401, r.status, "{body}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer realm=\"http://") && challenge.contains("service=\"glci\""), "{challenge}");
    assert!(body.contains("UNAUTHORIZED"), "{body}");
    eqnice!(401, http(&server.addr, "POST", "/glci/admin/v1/clean?grace=0", None).status);
    eqnice!(401, http(&server.addr, "GET", "/glci/admin/v1/list", Some("Bearer forged.token.here")).status);

    // A job token is a valid credential, but not the admin's.
    let mut cmd = glci();
    cmd.env("GLCI_HOME", server.home()).args(["registry", "token", "--project", "group/project"]);
    let job = run_stdout(&mut cmd).trim().to_string();
    let r = http(&server.addr, "GET", stats, Some(&format!("Bearer {job}")));
    let body = r.text();
    eqnice!(403, r.status, "{body}");
    assert!(body.contains("DENIED"), "{body}");

    let admin = admin_token(&server);
    let r = http(&server.addr, "GET", stats, Some(&format!("Bearer {admin}")));
    eqnice!(200, r.status, "{}", r.text());
    eqnice!(200, http(&server.addr, "GET", stats, Some(&basic("glci-admin", &admin))).status);
    let r = http(&server.addr, "GET", "/glci/admin/v1/list?project=Bad/Name", Some(&format!("Bearer {admin}")));
    let body = r.text();
    eqnice!(400, r.status, "{body}");
    assert!(body.contains("NAME_INVALID"), "{body}");
    eqnice!(405, http(&server.addr, "GET", "/glci/admin/v1/clean", Some(&format!("Bearer {admin}"))).status);

    // The CLI with another GLCI_HOME signs with another secret: one clear line, exit 1.
    let other_home = temp_dir();
    let mut cmd = glci();
    cmd.env("GLCI_HOME", other_home.path()).args(["registry", "stats", "--server", &server.addr]);
    let out = output(&mut cmd);
    eqnice!(Some(1), out.status.code());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not accept the admin credential") && stderr.lines().count() == 1, "{stderr}");
    // Nothing listens there: exit 1 and says so.
    let mut cmd = glci();
    cmd.env("GLCI_HOME", server.home()).args(["registry", "list", "--server", "127.0.0.1:1"]);
    let out = output(&mut cmd);
    eqnice!(Some(1), out.status.code());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the glci registry at 127.0.0.1:1"));
    server.stop();

    // --no-auth: anyone may, as with pushes.
    let open = ServeProcess::start();
    let mut cmd = glci();
    cmd.env("GLCI_HOME", other_home.path()).args(["registry", "stats", "--json", "--server", &open.addr]);
    run(&mut cmd);
    open.stop();
}

#[test]
fn storage_mode_and_a_second_server_are_refused_while_a_server_holds_the_directory() {
    let work = temp_dir();
    let storage = work.path().join("storage");
    let server = ServeProcess::start_with_args(&storage, &["--no-auth"]);
    for args in [&["registry", "stats"][..], &["registry", "clean", "--grace", "0"][..]] {
        let mut cmd = glci();
        cmd.args(args).arg("--storage").arg(&storage);
        let out = output(&mut cmd);
        eqnice!(Some(1), out.status.code(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("storage {} is in use by a running glci serve", storage.display())),
            "{stderr}"
        );
    }
    let mut cmd = glci();
    cmd.env("GLCI_HOME", server.home())
        .args(["serve", "--listen", "127.0.0.1:0", "--quiet", "--storage"])
        .arg(&storage);
    let second = output(&mut cmd);
    eqnice!(Some(1), second.status.code());
    assert!(String::from_utf8_lossy(&second.stderr).contains("is in use by another glci process"));
    server.stop();
    // Released with the server.
    let stats = storage_json(&storage, &["stats"]);
    eqnice!(Some(0), stats["repositories"].as_u64());
    // A directory that is no registry storage: exit 1, said plainly.
    let mut cmd = glci();
    cmd.args(["registry", "list", "--storage"]).arg(work.path().join("nothing"));
    let out = output(&mut cmd);
    eqnice!(Some(1), out.status.code());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a glci registry storage directory"));
}

// ---------------------------------------------------------------------------------------------
// clean online, racing pushes

/// Eight skopeo pushes run while `clean --project old` (default grace window) runs again and
/// again. The old
/// content the cleans remove shares every blob with what is being pushed, so each push
/// deduplicates against blobs a clean is deciding about: the race the claims and the grace
/// window exist for.
#[test]
fn clean_while_eight_pushes_are_in_flight() {
    let work = temp_dir();
    let layout = build_oci_layout(&work.path().join("layout"));
    let storage = work.path().join("storage");
    let server = ServeProcess::start_with_args(&storage, &["--no-auth", "--quiet"]);
    push(&server, &layout, "multi", "old/app:v1", None);
    push(&server, &layout, "index", "old/multiarch:v1", None);
    // Garbage for the cleans to chew on (written into the content store directly).
    let garbage = write_unreferenced_blobs(&storage, "race", 3000, 64);
    // An hour and more ago, as far as the grace window can tell.
    age_files(&storage, 2 * HOUR);

    let pushes: Vec<thread::JoinHandle<(String, &'static str, Output)>> = (0..8)
        .map(|i| {
            let tag: &'static str = if i % 2 == 0 { "multi" } else { "index" };
            let from = format!("oci:{}:{tag}", layout.display());
            let reference = format!("new/app-{i}:v1");
            let to = format!("docker://{}/{reference}", server.addr);
            thread::spawn(move || (reference, tag, skopeo_copy(&from, &to, tag == "index", None)))
        })
        .collect();
    let mut cleans = Vec::new();
    let started = Instant::now();
    while pushes.iter().any(|p| !p.is_finished()) || cleans.is_empty() {
        cleans.push(registry_json(&server, &["clean", "--project", "old"]));
        assert!(started.elapsed() < Duration::from_secs(120), "pushes did not finish");
    }
    let during = cleans.len();
    cleans.push(registry_json(&server, &["clean", "--project", "old"]));

    for handle in pushes {
        let (reference, tag, out) = handle.join().unwrap();
        assert!(
            out.status.success(),
            "push of {reference} failed during clean: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_pulls_intact(&server, &layout, tag, &reference, work.path());
    }
    // old/*'s tags and manifests (1 + an index with 2 children) went. Its layer links may stay
    // a while: a push that mounts from old/* claims them, and the grace window keeps them.
    let sum = |key: &str| -> u64 { cleans.iter().map(|c| c[key].as_u64().unwrap()).sum() };
    eqnice!(2, sum("tags_removed"), "tags removed: {cleans:?}");
    eqnice!(4, sum("manifests_removed"), "manifests removed: {cleans:?}");
    let blobs_removed: u64 = cleans.iter().map(|c| c["blobs_removed"].as_u64().unwrap()).sum();
    assert!(blobs_removed >= garbage.len() as u64, "{blobs_removed} blobs removed by {} cleans", cleans.len());
    assert!(garbage.iter().all(|d| !blob_intact(&storage, d)), "garbage left behind");
    let list = registry_json(&server, &["list"]);
    eqnice!((0..8).map(|i| format!("new/app-{i}")).collect::<Vec<_>>(), repositories(&list));
    eprintln!("{during} cleans ran while the pushes were in flight");
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// clean --project right after a push, a push in flight, and what crashes leave

/// `POST /v2/<name>/blobs/uploads/?digest=` with the whole blob (a `--no-auth` server).
fn put_blob(server: &ServeProcess, name: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    Request::new(&server.addr, "POST", &format!("/v2/{name}/blobs/uploads/?digest={digest}"))
        .body(bytes.to_vec())
        .send()
        .expect(201);
    digest
}

/// An OCI image manifest over a config and one layer, both uploaded to `name`.
fn image_manifest(server: &ServeProcess, name: &str, seed: &str) -> (Vec<u8>, Vec<String>) {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
    let layer = filler(&format!("{seed}:layer"), 4096);
    let config_digest = put_blob(server, name, config.as_bytes());
    let layer_digest = put_blob(server, name, &layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    });
    (serde_json::to_vec(&manifest).unwrap(), vec![config_digest, layer_digest])
}

fn put_manifest(server: &ServeProcess, name: &str, tag: &str, manifest: &[u8]) -> Response {
    Request::new(&server.addr, "PUT", &format!("/v2/{name}/manifests/{tag}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.to_vec())
        .send()
}

/// An upload session holding `bytes` so far; returns its `Location`.
fn open_session(server: &ServeProcess, name: &str, bytes: &[u8]) -> String {
    let location =
        Request::new(&server.addr, "POST", &format!("/v2/{name}/blobs/uploads/")).send().expect(202).location();
    Request::new(&server.addr, "PATCH", &location)
        .header("Content-Type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .expect(202);
    location
}

/// Makes an upload session (its directory and files) and a `tmp/` file look `age` old, as a
/// crash `age` ago leaves them.
fn age_leftovers(storage: &Path, session: &str, temp_file: &str, age: Duration) {
    let dir = storage.join("uploads").join(session);
    age_files(&dir, age);
    std::fs::File::open(&dir).unwrap().set_modified(SystemTime::now() - age).unwrap();
    age_files(&storage.join("tmp").join(temp_file), age);
}

fn session_id(location: &str) -> String {
    location.rsplit('/').next().unwrap().split('?').next().unwrap().to_string()
}

/// Issue 14 §4: `clean --project P` right after a push removes P's images (default grace
/// window); a push in flight in P (blobs uploaded, manifest not yet, one session open) keeps
/// every blob, and its manifest PUT and last chunk after the clean succeed. An upload session
/// and a temp file a crash left two hours ago go, with `clean` and at server start.
#[test]
fn clean_project_removes_its_images_at_once_and_spares_a_push_in_flight() {
    let work = temp_dir();
    let storage = work.path().join("storage");
    let server = ServeProcess::start_with_args(&storage, &["--no-auth", "--quiet"]);
    let (done, done_blobs) = image_manifest(&server, "proj/done", "done");
    put_manifest(&server, "proj/done", "v1", &done).expect(201);
    let (other, _) = image_manifest(&server, "elsewhere/app", "other");
    put_manifest(&server, "elsewhere/app", "v1", &other).expect(201);
    // In flight: both blobs are up, the manifest is not; a third blob is half sent.
    let (inflight, inflight_blobs) = image_manifest(&server, "proj/inflight", "inflight");
    let half = filler("inflight:half", 8192);
    let open = open_session(&server, "proj/inflight", &half[..4096]);
    // A crash's leftovers, two hours old: a session and a blob temp file.
    let crashed = session_id(&open_session(&server, "proj/crashed", b"never finished"));
    std::fs::write(storage.join("tmp").join("crashed-blob.tmp"), b"half a blob").unwrap();
    age_leftovers(&storage, &crashed, "crashed-blob.tmp", 2 * HOUR);

    let dry = registry_json(&server, &["clean", "--project", "proj", "--dry-run"]);
    let report = registry_json(&server, &["clean", "--project", "proj"]);
    eqnice!(vec!["proj/done"], strings(&report["repositories_removed"]));
    eqnice!(Some(1), report["tags_removed"].as_u64());
    eqnice!(Some(1), report["manifests_removed"].as_u64());
    eqnice!(Some(0), report["blobs_removed"].as_u64(), "blobs younger than the grace window");
    eqnice!(Some(1), report["uploads_removed"].as_u64());
    eqnice!(Some(1), report["temp_files_removed"].as_u64());
    for key in ["repositories_removed", "tags_removed", "manifests_removed", "blobs_removed", "kept", "uploads_removed"]
    {
        eqnice!(dry[key], report[key], "dry run and clean disagree on {key}");
    }
    eqnice!(vec!["elsewhere/app"], repositories(&registry_json(&server, &["list"])));
    Request::new(&server.addr, "GET", "/v2/proj/done/manifests/v1").send().expect(404);
    assert!(!storage.join("uploads").join(&crashed).exists(), "the crashed session is still there");
    assert!(!storage.join("tmp/crashed-blob.tmp").exists(), "the stale temp file is still there");
    let text = run_stdout(&mut registry_cmd(&server, &["clean", "--project", "proj", "--dry-run"]));
    assert!(text.contains("younger than the grace window (1h)"), "{text}");

    // The push in flight completes whole after the clean.
    put_manifest(&server, "proj/inflight", "v1", &inflight).expect(201);
    let separator = if open.contains('?') { '&' } else { '?' };
    Request::new(&server.addr, "PUT", &format!("{open}{separator}digest={}", sha256_digest(&half)))
        .header("Content-Type", "application/octet-stream")
        .body(half[4096..].to_vec())
        .send()
        .expect(201);
    for digest in &inflight_blobs {
        Request::new(&server.addr, "GET", &format!("/v2/proj/inflight/blobs/{digest}")).send().expect(200);
    }
    eqnice!(vec!["elsewhere/app", "proj/inflight"], repositories(&registry_json(&server, &["list"])));
    // With --grace 0 the done image's blobs go too (nothing references them any more).
    let zero = registry_json(&server, &["clean", "--project", "proj/done", "--grace", "0"]);
    assert!(zero["blobs_removed"].as_u64().unwrap() >= 3, "{zero}");
    assert!(done_blobs.iter().chain([&sha256_digest(&done)]).all(|d| !blob_intact(&storage, d)), "{zero}");
    assert!(inflight_blobs.iter().all(|d| blob_intact(&storage, d)));
    server.stop();

    // At server start: a crashed session and temp file older than the grace window go; a young
    // session stays and still works.
    let (young, old) = ("00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b");
    for id in [young, old] {
        std::fs::create_dir_all(storage.join("uploads").join(id)).unwrap();
        std::fs::write(storage.join("uploads").join(id).join("data"), b"x").unwrap();
    }
    std::fs::write(storage.join("tmp").join("old.tmp"), b"x").unwrap();
    age_leftovers(&storage, old, "old.tmp", 2 * HOUR);
    let server = ServeProcess::start_with_args(&storage, &["--no-auth", "--quiet"]);
    assert!(!storage.join("uploads").join(old).exists(), "a crashed session survived the start");
    assert!(!storage.join("tmp/old.tmp").exists(), "a stale temp file survived the start");
    assert!(storage.join("uploads").join(young).exists(), "a young session was removed at start");
    server.stop();

    // --storage: the same clean, on the directory.
    let offline = storage_json(&storage, &["clean", "--project", "proj"]);
    eqnice!(Some(1), offline["tags_removed"].as_u64(), "{offline}");
    eqnice!(vec!["proj/inflight"], strings(&offline["repositories_removed"]));
    eqnice!(vec!["elsewhere/app"], repositories(&storage_json(&storage, &["list"])));
}

// ---------------------------------------------------------------------------------------------
// clean killed

/// Every tag in the storage resolves to a manifest whose bytes and referenced blobs are there
/// and intact (checked file by file, as `layout.rs` lays them out), and every image in `keep`
/// is whole. Returns the number of tags seen.
fn assert_consistent(storage: &Path, keep: &[common::store_fixture::FixtureImage]) -> usize {
    let layout = Layout::new(storage);
    let store = Store::open(Layout::new(storage)).unwrap();
    let mut tags = 0;
    for repository in store.repositories().unwrap().iter() {
        let name: Name = repository.parse().unwrap();
        for tag_file in std::fs::read_dir(layout.tags_dir(&name)).into_iter().flatten().flatten() {
            let file_name = tag_file.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            tags += 1;
            let target = std::fs::read_to_string(tag_file.path()).unwrap();
            let digest: Digest = target.trim().parse().unwrap();
            assert!(layout.manifest_link(&name, &digest).exists(), "{repository}:{file_name} → missing revision");
            assert!(blob_intact(storage, &digest.to_string()), "{repository}:{file_name} → missing manifest bytes");
            let bytes = std::fs::read(layout.blob(&digest)).unwrap();
            let parsed = manifest::parse(&bytes, None).unwrap();
            for blob in parsed.blobs {
                assert!(blob_intact(storage, &blob.to_string()), "{repository}:{file_name} lost blob {blob}");
                assert!(layout.layer_link(&name, &blob).exists(), "{repository}:{file_name} lost layer link {blob}");
            }
        }
    }
    for image in keep {
        let name: Name = image.repository.parse().unwrap();
        let tag: Tag = image.tag.parse().unwrap();
        let target = std::fs::read_to_string(layout.tag_link(&name, &tag)).unwrap();
        eqnice!(image.manifest, target, "tag of a kept image");
        assert!(image.blobs.iter().all(|b| blob_intact(storage, b)), "a kept image lost a blob");
    }
    tags
}

#[test]
fn clean_killed_with_sigkill_then_run_again_leaves_a_consistent_store() {
    let work = temp_dir();
    let storage = work.path().join("storage");
    Store::open(Layout::new(&storage)).unwrap();
    let keep = write_images(&storage, "keep", 3, 2, 3, 256);
    let gone = write_images(&storage, "gone", 40, 10, 3, 64);
    let garbage = write_unreferenced_blobs(&storage, "killed", 3000, 64);
    let gone_only: Vec<String> = gone.iter().flat_map(|i| i.blobs.iter().chain([&i.manifest]).cloned()).collect();
    let gone_tags = gone.len();
    assert_eq!(assert_consistent(&storage, &keep), keep.len() + gone_tags);

    let clean = |dry_run: bool| {
        let mut cmd = glci();
        cmd.env("GLCI_HOME", work.path().join("home"))
            .args(["registry", "clean", "--project", "gone", "--grace", "0", "--json", "--storage"])
            .arg(&storage)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if dry_run {
            cmd.arg("--dry-run");
        }
        cmd.spawn().unwrap()
    };
    // How long the scan and the plan take here and now: kills are spread from about there on,
    // each later than the last, until a run is left to finish. They land in different phases
    // (scan, tags, manifests, layer links, blobs); after each the store must be consistent,
    // still hold every kept image, and nothing referenced may be missing.
    let started = Instant::now();
    let dry = clean(true).wait_with_output().unwrap();
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let mut delay = started.elapsed().mul_f64(0.7);
    let mut kills = 0;
    let mut mid_way = 0;
    let finished = loop {
        let mut child = clean(false);
        thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            // It finished between `try_wait` and the kill: that was the last run.
            break output;
        }
        kills += 1;
        let tags = assert_consistent(&storage, &keep);
        let blobs_left = gone_only.iter().chain(&garbage).filter(|d| blob_intact(&storage, d)).count();
        if tags < keep.len() + gone_tags && blobs_left > 0 {
            mid_way += 1;
        }
        delay = delay.mul_f64(1.35);
        assert!(kills < 40, "clean never finished");
    };
    assert!(kills >= 2 && mid_way >= 1, "{kills} kills, {mid_way} mid-way: the clean was too quick to interrupt");
    assert!(finished.status.success(), "{}", String::from_utf8_lossy(&finished.stderr));
    let report: Value = serde_json::from_slice(&finished.stdout).unwrap();

    // The final run finished the job: gone/ is gone, its blobs and the garbage with it, nothing
    // is left aside, and the kept images are whole and served.
    eqnice!(keep.len(), assert_consistent(&storage, &keep), "tags after the last clean");
    let gone_left = || -> Vec<String> {
        walkdir::WalkDir::new(storage.join("repositories/gone"))
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| e.path().display().to_string())
            .collect()
    };
    // The finishing clean removes all of gone/, including bare directories a killed run left
    // (the parents those make young go too: storage/sweep.rs).
    assert!(gone_left().is_empty(), "gone/ left after the finishing clean: {:?}; report: {report}", gone_left());
    assert!(gone_only.iter().chain(&garbage).all(|d| !blob_intact(&storage, d)), "blobs left behind: {report}");
    let leftovers: Vec<_> = walkdir::WalkDir::new(&storage)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            n.starts_with(".gc-") || n.starts_with("gc-")
        })
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(leftovers.is_empty(), "left aside: {leftovers:?}");
    let list = storage_json(&storage, &["list"]);
    eqnice!(keep.iter().map(|i| i.repository.clone()).collect::<Vec<_>>(), repositories(&list));
    let server = ServeProcess::start_with_args(&storage, &["--no-auth"]);
    for image in &keep {
        let path = format!("/v2/{}/manifests/{}", image.repository, image.tag);
        let r = http(&server.addr, "GET", &path, None);
        eqnice!(200, r.status, "{path}");
        eqnice!(Some(image.manifest.as_str()), r.header("docker-content-digest"));
    }
    server.stop();
    eprintln!("clean killed {kills} times ({mid_way} mid-way), then finished: {report}");
}

// ---------------------------------------------------------------------------------------------
// pull

fn docker_has(image: &str) -> bool {
    output(Command::new("docker").args(["image", "inspect", image])).status.success()
}

#[test]
fn pull_retags_with_and_without_prefix_and_the_image_runs() {
    need("busybox");
    need_docker_daemon();
    let work = temp_dir();
    let rootfs = build_busybox_rootfs(&work.path().join("rootfs.tar"));
    let server = ServeProcess::start();
    let group = unique_name("pullgrp");
    let path = format!("{group}/project/app");
    let pushed = format!("{}/{path}:1", server.addr);
    let as_ci = format!("registry.gitlab.com/{path}:1");
    let prefix = unique_name("glci-pull");
    let prefixed = format!("{prefix}/{path}:1");
    let _cleanup = DockerImages(vec![pushed.clone(), as_ci.clone(), prefixed.clone()]);
    docker(&["import", &rootfs.display().to_string(), &pushed]);
    docker(&["push", &pushed]);
    docker(&["image", "rm", &pushed]);

    // Without PREFIX: tagged with exactly the name a CI job uses; the temporary tag is gone.
    let out = run_stdout(&mut registry_cmd(&server, &["pull", &as_ci]));
    assert!(out.starts_with(&format!("pulled {as_ci} (sha256:")), "{out}");
    assert!(docker_has(&as_ci), "{as_ci} is not in the engine");
    assert!(!docker_has(&pushed), "the temporary tag {pushed} was left behind");
    eqnice!("ok", docker(&["run", "--rm", &as_ci, "/bin/busybox", "echo", "ok"]).trim());
    run(Command::new("docker").args(["run", "--rm", &as_ci, "/bin/busybox", "true"]));

    // With PREFIX: PREFIX/<path>:<tag>.
    let out = run_stdout(&mut registry_cmd(&server, &["pull", &as_ci, &prefix]));
    assert!(out.starts_with(&format!("pulled {prefixed} (sha256:")), "{out}");
    run(Command::new("docker").args(["run", "--rm", &prefixed, "/bin/busybox", "true"]));
    assert!(!docker_has(&pushed), "the temporary tag {pushed} was left behind");

    // Not in the registry: one line, exit 1, nothing pulled.
    let missing = format!("registry.gitlab.com/{group}/nothing:1");
    let out = output(&mut registry_cmd(&server, &["pull", &missing]));
    eqnice!(Some(1), out.status.code());
    let stderr = String::from_utf8_lossy(&out.stderr);
    eqnice!(1, stderr.lines().count(), "{stderr}");
    assert!(stderr.contains(&missing) && stderr.contains("holds no"), "{stderr}");
    // A digest is not a tag docker could give the pulled image: usage error.
    let out = output(&mut registry_cmd(&server, &["pull", &format!("{path}@sha256:{}", "a".repeat(64))]));
    eqnice!(Some(2), out.status.code());
    server.stop();
}
