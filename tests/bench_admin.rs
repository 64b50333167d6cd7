//! Benchmarks of `glci registry list | stats | clean` (issue 6, `make bench`): list and stats
//! over 10 000 tags and 50 000 blobs, and clean of 100 000 unreferenced blobs; and how the
//! tags list and the catalog grow with 1k, 10k and 100k tags and repositories (issue 9). Each figure is
//! the wall time of the release `glci` process, end to end (scan, compute, JSON on stdout),
//! with `--storage DIR` and, for list and stats, through a running server's admin API too.
//! It prints figures and writes `target/bench/admin.json`; it asserts correctness (counts),
//! never speed.
//!
//! Every benchmark is `#[ignore]`; `scripts/bench.sh` runs them with `--release --ignored
//! --nocapture --test-threads=1`. Fixtures are written straight to disk
//! (`tests/common/store_fixture.rs`) under cargo's `target/tmp` (a real disk, like the
//! registry's), and removed at the end.
#![allow(clippy::unwrap_used)]
// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::store_fixture::{age_files, write_images, write_listing_fixture, write_unreferenced_blobs};
use common::{glci, ServeProcess};
use serde_json::{json, Value};

/// 100 repositories × 100 tags = 10 000 tags; each tag its own image of a config and four
/// layers: 50 000 blobs (plus the 10 000 manifests).
const REPOS: usize = 100;
const TAGS_PER_REPO: usize = 100;
const LAYERS: usize = 4;
const UNREFERENCED: usize = 100_000;
/// Timed runs of list and stats; the best and the first (coldest) are reported.
const RUNS: usize = 3;

fn scratch() -> tempfile::TempDir {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&root).unwrap();
    tempfile::Builder::new().prefix("glci-bench-admin-").tempdir_in(root).unwrap()
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// Runs `glci ARGS`, returns its wall time and parsed JSON stdout.
fn timed(home: &Path, args: &[&str]) -> (Duration, Value) {
    let mut cmd = glci();
    cmd.env("GLCI_HOME", home).args(args).stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let elapsed = start.elapsed();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    (elapsed, serde_json::from_slice(&out.stdout).unwrap())
}

/// First and best of `RUNS` runs, in seconds; and the last answer.
fn best_of(home: &Path, args: &[&str]) -> (f64, f64, Value) {
    let mut times = Vec::new();
    let mut last = Value::Null;
    for _ in 0..RUNS {
        let (t, v) = timed(home, args);
        times.push(t.as_secs_f64());
        last = v;
    }
    (times[0], times.iter().copied().fold(f64::MAX, f64::min), last)
}

fn write_figures(name: &str, figures: Value) {
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("bench");
    fs::create_dir_all(&out_dir).unwrap();
    let path = out_dir.join("admin.json");
    let mut all: Value = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(json!({}));
    all[name] = figures;
    all["unix_time"] =
        json!(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    fs::write(&path, serde_json::to_string_pretty(&all).unwrap() + "\n").unwrap();
    println!("figures written to {}", path.display());
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn list_and_stats_over_10k_tags_and_50k_blobs() {
    let dir = scratch();
    let storage = dir.path().join("storage");
    let home = dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join("config.toml"), common::TEST_CONFIG).unwrap();
    println!(
        "\n== glci registry list/stats: {} tags, {} blobs ==",
        REPOS * TAGS_PER_REPO,
        REPOS * TAGS_PER_REPO * (LAYERS + 1)
    );
    println!("load average before: {}", load_average());
    let t = Instant::now();
    glci::registry::storage::Store::open(glci::registry::storage::Layout::new(&storage)).unwrap();
    write_images(&storage, "bench", REPOS, TAGS_PER_REPO, LAYERS, 256);
    println!("fixture written in {:.1} s", t.elapsed().as_secs_f64());
    let storage_arg = storage.display().to_string();

    let (list_first, list_best, list) = best_of(&home, &["registry", "list", "--json", "--storage", &storage_arg]);
    assert_eq!(list["images"].as_array().unwrap().len(), REPOS * TAGS_PER_REPO);
    let (stats_first, stats_best, stats) = best_of(&home, &["registry", "stats", "--json", "--storage", &storage_arg]);
    assert_eq!(stats["tags"], REPOS * TAGS_PER_REPO);
    assert_eq!(stats["blobs"], REPOS * TAGS_PER_REPO * (LAYERS + 2));
    println!("list  --storage: best {list_best:.3} s (first {list_first:.3} s)");
    println!("stats --storage: best {stats_best:.3} s (first {stats_first:.3} s)");

    let server = ServeProcess::start_with_args(&storage, &["--no-auth", "--quiet"]);
    let server_arg = server.addr.clone();
    let (api_list_first, api_list_best, list) =
        best_of(&home, &["registry", "list", "--json", "--server", &server_arg]);
    assert_eq!(list["images"].as_array().unwrap().len(), REPOS * TAGS_PER_REPO);
    let (api_stats_first, api_stats_best, _) =
        best_of(&home, &["registry", "stats", "--json", "--server", &server_arg]);
    server.stop();
    println!("list  via admin API: best {api_list_best:.3} s (first {api_list_first:.3} s)");
    println!("stats via admin API: best {api_stats_best:.3} s (first {api_stats_first:.3} s)");
    println!("load average after: {}", load_average());
    write_figures(
        "list_stats",
        json!({
            "tags": REPOS * TAGS_PER_REPO,
            "blobs": REPOS * TAGS_PER_REPO * (LAYERS + 1),
            "units": "seconds, wall time of the glci process",
            "list_storage_best": list_best, "list_storage_first": list_first,
            "stats_storage_best": stats_best, "stats_storage_first": stats_first,
            "list_api_best": api_list_best, "list_api_first": api_list_first,
            "stats_api_best": api_stats_best, "stats_api_first": api_stats_first,
            "load_average_after": load_average(),
        }),
    );
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn clean_100k_unreferenced_blobs() {
    let dir = scratch();
    let storage = dir.path().join("storage");
    let home = dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    println!("\n== glci registry clean: {UNREFERENCED} unreferenced blobs ==");
    println!("load average before: {}", load_average());
    let t = Instant::now();
    glci::registry::storage::Store::open(glci::registry::storage::Layout::new(&storage)).unwrap();
    // A few images that must survive, beside the garbage.
    let kept = write_images(&storage, "keep", 10, 10, LAYERS, 256);
    write_unreferenced_blobs(&storage, "bench", UNREFERENCED, 256);
    age_files(&storage, Duration::from_secs(7200));
    // Written and aged: let the page cache settle so the clean is not timed against writeback.
    let _ = Command::new("sync").status();
    println!("fixture written in {:.1} s", t.elapsed().as_secs_f64());
    let storage_arg = storage.display().to_string();

    // `--project` of a path holding nothing: no repository is removed, so the figure is the
    // garbage collection alone (the kept images' blobs are marked and stay).
    let clean = ["registry", "clean", "--project", "nothing/here", "--json", "--storage", &storage_arg];
    let (dry_time, dry) = timed(&home, &[&clean[..], &["--dry-run"]].concat());
    assert_eq!(dry["blobs_removed"], UNREFERENCED);
    let (clean_time, report) = timed(&home, &clean);
    assert_eq!(report["blobs_removed"], UNREFERENCED, "{report}");
    let (_, stats) = timed(&home, &["registry", "stats", "--json", "--storage", &storage_arg]);
    assert_eq!(stats["tags"], kept.len());
    assert_eq!(stats["unreferenced_bytes"], 0);
    let rate = UNREFERENCED as f64 / clean_time.as_secs_f64();
    println!("clean --dry-run: {:.3} s", dry_time.as_secs_f64());
    println!("clean:           {:.3} s ({rate:.0} blobs/s)", clean_time.as_secs_f64());

    // The filesystem's own floor, measured the same way: `rm -rf` of as many files like them.
    let floor = dir.path().join("floor");
    write_unreferenced_blobs(&floor, "floor", UNREFERENCED, 256);
    let _ = Command::new("sync").status();
    let t = Instant::now();
    assert!(Command::new("rm").arg("-rf").arg(floor.join("blobs")).status().unwrap().success());
    let floor_time = t.elapsed();
    println!("rm -rf of {UNREFERENCED} such files (the filesystem's floor): {:.3} s", floor_time.as_secs_f64());
    println!("load average after: {}", load_average());
    write_figures(
        "clean",
        json!({
            "unreferenced_blobs": UNREFERENCED,
            "units": "seconds, wall time of the glci process",
            "dry_run": dry_time.as_secs_f64(),
            "clean": clean_time.as_secs_f64(),
            "blobs_per_second": rate,
            "rm_rf_same_files": floor_time.as_secs_f64(),
            "load_average_after": load_average(),
        }),
    );
}

/// Best of `RUNS` GETs of `url` in milliseconds (each on a new connection, body read whole),
/// and the last body. The first GET of each URL is also kept in `firsts` (the server's lists
/// are cached between requests; the first one pays for the walk or the directory read).
fn best_get(url: &str, firsts: &mut Vec<f64>) -> (f64, Value) {
    let mut best = f64::MAX;
    let mut body = Value::Null;
    for run in 0..RUNS {
        let start = Instant::now();
        let response = ureq::get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        body = serde_json::from_str(&response.into_string().unwrap()).unwrap();
        let took = start.elapsed().as_secs_f64() * 1e3;
        if run == 0 {
            firsts.push(took);
        }
        best = best.min(took);
    }
    (best, body)
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn listings_at_1k_10k_100k() {
    println!("\n== tags list and catalog over 1k / 10k / 100k tags and repositories (ms, best of {RUNS}) ==");
    println!("load average before: {}", load_average());
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>10} {:>12} {:>14}",
        "entries", "tags all", "tags page", "tags last", "catalog", "catalog page", "catalog first"
    );
    let mut rows = Vec::new();
    for size in [1_000usize, 10_000, 100_000] {
        let dir = scratch();
        let storage = dir.path().join("storage");
        glci::registry::storage::Store::open(glci::registry::storage::Layout::new(&storage)).unwrap();
        let t = Instant::now();
        write_listing_fixture(&storage, "l", size, size);
        let written = t.elapsed().as_secs_f64();
        let server = ServeProcess::start_with_args(&storage, &["--no-auth", "--no-tls", "--quiet"]);
        let base = format!("http://{}", server.addr);
        let mut firsts = Vec::new();
        let (tags_all, body) = best_get(&format!("{base}/v2/l/tags/tags/list"), &mut firsts);
        assert_eq!(body["tags"].as_array().unwrap().len(), size);
        let (tags_page, body) = best_get(&format!("{base}/v2/l/tags/tags/list?n=100"), &mut firsts);
        assert_eq!(body["tags"].as_array().unwrap().len(), 100);
        // The last page: the cost of skipping everything before it.
        let last = format!("t-{:06}", size - 101);
        let (tags_last, body) = best_get(&format!("{base}/v2/l/tags/tags/list?n=100&last={last}"), &mut firsts);
        assert_eq!(body["tags"].as_array().unwrap().len(), 100);
        // Every `many/r-…` repository, `l/base` and `l/tags`.
        let (catalog, body) = best_get(&format!("{base}/v2/_catalog"), &mut firsts);
        assert_eq!(body["repositories"].as_array().unwrap().len(), size + 2);
        let (catalog_page, body) = best_get(&format!("{base}/v2/_catalog?n=100"), &mut firsts);
        assert_eq!(body["repositories"].as_array().unwrap().len(), 100);
        server.stop();
        // The first GET of the whole catalog: the walk the later ones are spared.
        let catalog_first = firsts[3];
        println!("{size:>8} {tags_all:>10.2} {tags_page:>12.2} {tags_last:>12.2} {catalog:>10.2} {catalog_page:>12.2} {catalog_first:>14.2}   (fixture {written:.1} s)");
        rows.push(json!({"entries": size, "tags_all_ms": tags_all, "tags_page_ms": tags_page,
                         "tags_last_page_ms": tags_last, "catalog_ms": catalog, "catalog_page_ms": catalog_page,
                         "first_get_ms": {"tags_all": firsts[0], "tags_page": firsts[1], "tags_last_page": firsts[2],
                                          "catalog": firsts[3], "catalog_page": firsts[4]}}));
    }
    println!("load average after: {}", load_average());
    write_figures(
        "listings",
        json!({"units": "ms, best of 3 GETs on new connections; first_get_ms: the first of them", "rows": rows}),
    );
}
