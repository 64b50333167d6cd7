//! `make bench`: push and pull figures of `glci serve` on S3 (a real SeaweedFS on 127.0.0.1)
//! beside the same on a storage directory, one client, one 256 MiB blob each way:
//! monolithic POST, docker's streamed PATCH + PUT (on S3: the chunk object, then a server-side
//! copy), and a pull; then a cold pull-through of it into a cache on each (the filesystem
//! instance as the upstream). Writes target/bench/s3.json. `#[ignore]`: `cargo test` only
//! compiles it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::seaweedfs::{seaweedfs, ACCESS_KEY, SECRET_KEY};
use common::ServeProcess;

const SIZE: usize = 256 * 1024 * 1024;

fn mbps(time: Duration) -> f64 {
    SIZE as f64 / (1024.0 * 1024.0) / time.as_secs_f64()
}

/// One request with `body`, answered `status`; the time until the answer.
fn send(addr: &str, head: &str, body: &[u8], status: u16) -> (Duration, String) {
    let start = Instant::now();
    let mut stream = common::http::connect(addr, Duration::from_secs(10)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let (got, headers) = common::http::read_head(&mut reader).unwrap();
    assert_eq!(got, status, "{head}");
    let location = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.clone());
    (start.elapsed(), location.unwrap_or_default())
}

fn figures(server: &ServeProcess, blob: &[u8], digest: &str, repo: &str) -> serde_json::Value {
    let addr = &server.addr;
    let head = format!(
        "POST /v2/{repo}/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    );
    let (monolithic, _) = send(addr, &head, blob, 201);
    let start = Instant::now();
    let post = format!(
        "POST /v2/{repo}2/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (_, location) = send(addr, &post, b"", 202);
    let patch = format!("PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n");
    send(addr, &patch, blob, 202);
    let put =
        format!("PUT {location}?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    send(addr, &put, b"", 201);
    let streamed = start.elapsed();
    let start = Instant::now();
    let mut stream = common::http::connect(addr, Duration::from_secs(10)).unwrap();
    let get = format!("GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(get.as_bytes()).unwrap();
    let mut all = Vec::with_capacity(SIZE + 4096);
    stream.read_to_end(&mut all).unwrap();
    let pull = start.elapsed();
    assert!(all.len() >= SIZE && all[all.len() - SIZE..] == *blob, "the pulled blob differs");
    serde_json::json!({
        "push_monolithic_mib_s": mbps(monolithic),
        "push_streamed_patch_put_mib_s": mbps(streamed),
        "pull_mib_s": mbps(pull),
    })
}

/// A cold pull-through of `digest` (in `repo` of the instance at `upstream`) by a fresh cache on
/// `storage` (`config` adds its `[storage.s3]`, if any): MiB/s of the client's GET.
fn cold_pull_through(storage: &std::path::Path, config: &str, upstream: &str, repo: &str, digest: &str) -> f64 {
    let config = format!(
        "[registry]\nupstreams = [\"upstream.bench\"]\n[registry.upstream_urls]\n\"upstream.bench\" = \"http://{upstream}\"\n{config}"
    );
    let cache = ServeProcess::start_with_config(storage, &["--no-auth", "--no-tls", "--quiet"], &config);
    let start = Instant::now();
    let mut stream = common::http::connect(&cache.addr, Duration::from_secs(10)).unwrap();
    let get = format!("GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(get.as_bytes()).unwrap();
    let mut all = Vec::with_capacity(SIZE + 4096);
    stream.read_to_end(&mut all).unwrap();
    let time = start.elapsed();
    assert!(all.len() >= SIZE && all.starts_with(b"HTTP/1.1 200"), "the cold pull-through failed");
    cache.stop();
    mbps(time)
}

#[test]
#[ignore = "benchmark: make bench"]
fn s3_push_and_pull_beside_the_filesystem() {
    let blob = common::pattern("bench-s3", SIZE);
    let digest = common::sha256_digest(&blob);
    let weed = seaweedfs();
    let config = format!(
        "[registry]\nupstreams = []\n[storage.s3]\nendpoint = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n",
        weed.endpoint
    );
    let place = format!("s3://{}/{}", weed.bucket(), weed.prefix());
    let on_s3 =
        ServeProcess::start_with_config(std::path::Path::new(&place), &["--no-auth", "--no-tls", "--quiet"], &config);
    let s3 = figures(&on_s3, &blob, &digest, "bench/s3");
    on_s3.stop();
    let dir = tempfile::tempdir().unwrap();
    let on_disk = ServeProcess::start_with_args(dir.path(), &["--no-auth", "--no-tls", "--quiet"]);
    let mut fs = figures(&on_disk, &blob, &digest, "bench/fs");
    let mut s3 = s3;
    let s3_settings = config.trim_start_matches("[registry]\nupstreams = []\n");
    let cache_place = format!("s3://{}/{}", weed.bucket(), weed.prefix());
    s3["pull_through_cold_mib_s"] =
        cold_pull_through(std::path::Path::new(&cache_place), s3_settings, &on_disk.addr, "bench/fs", &digest).into();
    let cache_dir = tempfile::tempdir().unwrap();
    fs["pull_through_cold_mib_s"] = cold_pull_through(cache_dir.path(), "", &on_disk.addr, "bench/fs", &digest).into();
    on_disk.stop();
    let report = serde_json::json!({ "blob_mib": SIZE / (1024 * 1024), "s3_seaweedfs": s3, "filesystem": fs });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("s3.json"), serde_json::to_string_pretty(&report).unwrap()).unwrap();
}
