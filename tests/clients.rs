//! Real clients against `glci serve`: skopeo (OCI layout ⇄ registry, image
//! and index) and the Docker engine (import, push, pull, run).
//!
//! Needs skopeo, busybox-static, and a running Docker daemon; `make test`
//! installs and starts them (scripts/deps.sh). Each test starts its own
//! server on 127.0.0.1:0 and builds its fixtures in a temp dir, so tests run
//! in parallel without sharing names. Docker treats 127.0.0.0/8 as an
//! insecure registry, so plain HTTP works without daemon configuration.

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{
    build_busybox_rootfs, build_oci_layout, docker, layout_blob, layout_blob_digests, layout_closure, need,
    need_docker_daemon, pushed_digest, run, run_stdout, sha256_digest, temp_dir, unique_name, DockerImages,
    ServeProcess,
};

/// `skopeo ARGS...`.
fn skopeo(args: &[&str]) -> Command {
    need("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(args);
    cmd
}

/// The raw manifest bytes `skopeo inspect --raw` returns for `image`.
fn inspect_raw(image: &str) -> Vec<u8> {
    run(&mut skopeo(&["inspect", "--raw", "--tls-verify=false", image])).stdout
}

/// The digest skopeo wrote with `--digestfile`.
fn read_digest(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).trim().to_string()
}

/// Tags `skopeo list-tags` reports for `repo` (`docker://HOST/NAME`).
fn list_tags(repo: &str) -> Vec<String> {
    let out = run_stdout(&mut skopeo(&["list-tags", "--tls-verify=false", repo]));
    let doc: serde_json::Value = serde_json::from_str(&out).expect("list-tags prints JSON");
    doc["Tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no Tags in {out}"))
        .iter()
        .map(|t| t.as_str().expect("tag is a string").to_string())
        .collect()
}

/// Copies `from` to `to` (with `--all` when `all`), returning the manifest
/// digest skopeo reports.
fn copy(from: &str, to: &str, all: bool, digest_file: &Path) -> String {
    let mut cmd = skopeo(&["copy", "--src-tls-verify=false", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg("--digestfile").arg(digest_file).args([from, to]);
    run(&mut cmd);
    read_digest(digest_file)
}

/// Pushes `oci:<layout>:<tag>` to `repo:v1` and copies it back into a new
/// layout; checks that the manifest bytes and every blob survive unchanged.
/// Returns the remote repository, `docker://HOST:PORT/clients/NAME`.
fn round_trip(server: &ServeProcess, src: &Path, tag: &str, all: bool, work: &Path) -> String {
    let src_ref = format!("oci:{}:{tag}", src.display());
    let src_raw = inspect_raw(&src_ref);
    let src_digest = sha256_digest(&src_raw);

    let repo = format!("docker://{}/clients/{}", server.addr, unique_name(tag));
    let remote = format!("{repo}:v1");
    let pushed = copy(&src_ref, &remote, all, &work.join("push.digest"));
    eqnice!(src_digest, pushed, "digest skopeo pushed");

    // The registry serves the manifest byte for byte, by tag and by digest.
    eqnice!(String::from_utf8_lossy(&src_raw), String::from_utf8_lossy(&inspect_raw(&remote)), "manifest by tag");
    eqnice!(
        String::from_utf8_lossy(&src_raw),
        String::from_utf8_lossy(&inspect_raw(&format!("{repo}@{src_digest}"))),
        "manifest by digest"
    );
    assert!(list_tags(&repo).contains(&"v1".to_string()), "list-tags of {repo} lacks v1");

    let back = work.join("back");
    let back_ref = format!("oci:{}:{tag}", back.display());
    let pulled = copy(&remote, &back_ref, all, &work.join("pull.digest"));
    eqnice!(src_digest, pulled, "digest skopeo pulled");
    eqnice!(
        String::from_utf8_lossy(&src_raw),
        String::from_utf8_lossy(&inspect_raw(&back_ref)),
        "manifest after the round trip"
    );

    // Exactly the blobs reachable from the manifest came back, each with its
    // original bytes (layout_blob_digests checks content against the name).
    let expected = layout_closure(src, &src_digest);
    eqnice!(expected, layout_blob_digests(&back), "blobs in the pulled layout");
    for digest in &expected {
        assert!(layout_blob(src, digest) == layout_blob(&back, digest), "blob {digest} differs after the round trip");
    }
    repo
}

/// The layer digests of an image manifest, in order.
fn layer_digests(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {manifest}"))
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_string())
        .collect()
}

/// A JSON array of strings.
fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn skopeo_round_trips_multi_layer_image() {
    need("skopeo");
    let work = temp_dir();
    let src = build_oci_layout(&work.path().join("layout"));
    let server = ServeProcess::start();

    let repo = round_trip(&server, &src, "multi", false, work.path());
    let remote = format!("{repo}:v1");

    // `skopeo inspect` (config and layers, not just raw bytes) works too.
    let out = run_stdout(&mut skopeo(&["inspect", "--tls-verify=false", &remote]));
    let doc: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    let src_manifest: serde_json::Value =
        serde_json::from_slice(&inspect_raw(&format!("oci:{}:multi", src.display()))).expect("manifest is JSON");
    eqnice!(layer_digests(&src_manifest), strings(&doc["Layers"]), "layers skopeo inspect reports");
    eqnice!(Some("amd64"), doc["Architecture"].as_str());
    eqnice!(Some("linux"), doc["Os"].as_str());
    server.stop();
}

#[test]
fn skopeo_round_trips_index_with_all_platforms() {
    need("skopeo");
    let work = temp_dir();
    let src = build_oci_layout(&work.path().join("layout"));
    let server = ServeProcess::start();

    let repo = round_trip(&server, &src, "index", true, work.path());
    let remote = format!("{repo}:v1");

    // Each platform manifest is served by digest, and skopeo resolves it
    // through the index for its platform.
    let index_digest = sha256_digest(&inspect_raw(&format!("oci:{}:index", src.display())));
    let index: serde_json::Value = serde_json::from_slice(&layout_blob(&src, &index_digest)).expect("index is JSON");
    let mut arches = BTreeSet::new();
    for m in index["manifests"].as_array().expect("manifests") {
        let arch = m["platform"]["architecture"].as_str().expect("architecture");
        arches.insert(arch.to_string());
        let digest = m["digest"].as_str().expect("digest");
        let src_raw = layout_blob(&src, digest);
        eqnice!(
            String::from_utf8_lossy(&src_raw),
            String::from_utf8_lossy(&inspect_raw(&format!("{repo}@{digest}"))),
            "{arch} manifest by digest"
        );
        let src_manifest: serde_json::Value = serde_json::from_slice(&src_raw).expect("manifest is JSON");
        let out = run_stdout(&mut skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--override-os=linux",
            &format!("--override-arch={arch}"),
            &remote,
        ]));
        let doc: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
        eqnice!(Some(arch), doc["Architecture"].as_str(), "inspect {arch}");
        eqnice!(layer_digests(&src_manifest), strings(&doc["Layers"]), "layers skopeo inspect reports for {arch}");
    }
    eqnice!(BTreeSet::from(["amd64".to_string(), "arm64".to_string()]), arches);
    server.stop();
}

#[test]
fn docker_pushes_pulls_and_runs_busybox() {
    need("busybox");
    need_docker_daemon();
    let work = temp_dir();
    let rootfs = build_busybox_rootfs(&work.path().join("rootfs.tar"));
    let server = ServeProcess::start();

    let image = DockerImages(vec![format!("{}/clients/{}:1", server.addr, unique_name("busybox"))]);
    let name = image.0[0].as_str();
    docker(&["import", &rootfs.display().to_string(), name]);

    let push = docker(&["push", name]);
    let pushed = pushed_digest(&push);

    docker(&["image", "rm", name]);
    docker(&["pull", name]);
    let repo_digests = docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", name]);
    assert!(repo_digests.contains(&pushed), "pulled image has RepoDigests {repo_digests}, expected {pushed}");

    let out = docker(&["run", "--rm", name, "/bin/busybox", "echo", "ok"]);
    eqnice!("ok", out.trim(), "output of docker run");
    drop(image);
    server.stop();
}
