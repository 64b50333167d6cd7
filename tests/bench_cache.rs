//! Cache benchmark (`make bench`, issue 16): a 1 GiB `node_modules`-like tree (many small files
//! in package directories, sizes 512 B to 32.5 KiB) saved and restored by `glci run`'s `cache:`
//! against a plain `docker cp` of the same tree out of and into a container of the same image.
//! glci's figures are the spans between its own trace lines (`Creating cache` → `Created cache`,
//! `Checking cache for` → `Successfully extracted cache`), read from `--json` as they arrive;
//! docker's are the `docker cp` commands' wall time. Rounds alternate both, so machine drift
//! hits both alike; it prints the medians and the ratio glci / docker cp, and writes
//! `target/bench/cache.json`. It asserts correctness (every file restored), never speed.
//!
//! The cache store and the trees live under cargo's `target/tmp` (a real disk: the store's
//! fsync is part of what is measured). The machine's disk is shared, so each round removes what
//! it made before the next; `GLCI_BENCH_CACHE_MIB` sets a smaller tree for a quick look.
//! `#[ignore]`: `scripts/bench.sh` runs it with `--release --ignored --nocapture`.
#![allow(clippy::unwrap_used)]
// Tests spawn processes and read the environment; clippy.toml's disallowed-methods is for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;
const ROUNDS: usize = 2;
/// Files per package directory (`node_modules/pkg-N/lib/`).
const FILES_PER_PACKAGE: usize = 64;
const KEY: &str = "bench-node-modules";

fn tree_bytes() -> u64 {
    std::env::var("GLCI_BENCH_CACHE_MIB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1024) * MIB
}

/// Writes the tree under `dir/node_modules`; (files, bytes).
fn write_tree(dir: &Path, total: u64) -> (usize, u64) {
    let (mut files, mut bytes) = (0usize, 0u64);
    while bytes < total {
        let package = dir.join(format!("node_modules/pkg-{}/lib", files / FILES_PER_PACKAGE));
        if files % FILES_PER_PACKAGE == 0 {
            fs::create_dir_all(&package).unwrap();
            fs::write(package.parent().unwrap().join("package.json"), format!("{{\"name\":\"pkg-{files}\"}}\n"))
                .unwrap();
            files += 1;
        }
        // 512 B .. 32.5 KiB, mean ~16.5 KiB, from the file number.
        let len = 512 + splitmix(files as u64) % (32 * 1024);
        let len = len.min(total - bytes).max(1);
        fs::write(package.join(format!("f{files}.js")), common::pattern(&format!("f{files}"), len as usize)).unwrap();
        files += 1;
        bytes += len;
    }
    (files, bytes)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_4769_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hard links of every file of `from` under `to` (no data copied).
fn link_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            link_tree(&entry.path(), &target);
        } else {
            fs::hard_link(entry.path(), &target).unwrap();
        }
    }
}

fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    start.elapsed()
}

/// `glci run --json` in `project`; the span from the first log line containing `from` to the
/// first after it containing `to`, and every log line.
fn glci_span(project: &Path, home: &Path, from: &str, to: &str) -> (Duration, Vec<String>) {
    let mut child = common::glci()
        .args(["run", "--no-registry", "--json", "--project", "bench/cache"])
        .env("GLCI_HOME", home)
        .current_dir(project)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (mut started, mut span) = (None, None);
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let now = Instant::now();
        let event: Value = serde_json::from_str(&line).unwrap();
        let Some(text) = event["line"].as_str() else { continue };
        if started.is_none() && text.contains(from) {
            started = Some(now);
        } else if let (Some(at), None) = (started, span) {
            if text.contains(to) {
                span = Some(now - at);
            }
        }
        lines.push(text.to_string());
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "glci run failed:\n{}", lines.join("\n"));
    (span.unwrap_or_else(|| panic!("no {from:?} → {to:?} in:\n{}", lines.join("\n"))), lines)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2
    } else {
        values[mid]
    }
}

fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn cache_against_docker_cp() {
    common::busybox_image();
    let image = common::BUSYBOX_IMAGE;
    let scratch =
        Scratch(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-cache-{}", std::process::id())));
    let scratch = &scratch.0;
    fs::create_dir_all(scratch).unwrap();
    let total = tree_bytes();
    // The tree, one copy in a container, and the cache archive (or docker cp's copy) at once.
    let needed = 3 * total + 512 * MIB;
    let free = free_bytes(scratch);
    assert!(
        free > needed,
        "the cache bench needs {} MiB free on {}, has {}",
        needed / MIB,
        scratch.display(),
        free / MIB
    );

    let source = scratch.join("tree");
    let generated = Instant::now();
    let (files, bytes) = write_tree(&source, total);
    println!(
        "cache bench: {files} files, {:.1} MiB, written in {:.1?}",
        bytes as f64 / MIB as f64,
        generated.elapsed()
    );
    let home = scratch.join("home");
    // A work tree of its own (else glci would take the repository around target/ as the project).
    let project = scratch.join("project");
    fs::create_dir_all(&project).unwrap();
    let init = Command::new("git").args(["init", "-q"]).current_dir(&project).output().unwrap();
    assert!(init.status.success(), "git init: {}", String::from_utf8_lossy(&init.stderr));

    let (mut docker_in, mut docker_out, mut glci_save, mut glci_restore) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        // docker cp: into a created container of the job image, then out to a host directory.
        let name = common::unique_name("glci-bench-cache");
        let made = Command::new("docker").args(["create", "--name", &name, image, "true"]).output().unwrap();
        assert!(made.status.success(), "docker create: {}", String::from_utf8_lossy(&made.stderr));
        let mkdir = scratch.join("mkdir");
        fs::create_dir_all(mkdir.join("builds/bench")).unwrap();
        timed(Command::new("docker").arg("cp").arg(mkdir.join("builds")).arg(format!("{name}:/")));
        docker_in.push(timed(
            Command::new("docker").arg("cp").arg(source.join("node_modules")).arg(format!("{name}:/builds/bench/")),
        ));
        let out = scratch.join("docker-out");
        docker_out
            .push(timed(Command::new("docker").arg("cp").arg(format!("{name}:/builds/bench/node_modules")).arg(&out)));
        let copied = walkdir_count(&out);
        assert_eq!(copied, files, "docker cp copied every file out");
        fs::remove_dir_all(&out).unwrap();
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();

        // glci: a job whose checkout holds the tree saves it (policy: push), then a job of a
        // checkout without it restores it (policy: pull) and counts the files.
        fs::write(
            project.join(".gitlab-ci.yml"),
            format!(
                "save:\n  image: {image}\n  cache: {{key: {KEY}, paths: [node_modules/], policy: push}}\n  script: ['true']\n"
            ),
        )
        .unwrap();
        link_tree(&source, &project);
        let (took, _) = glci_span(&project, &home, "Creating cache", "Created cache");
        glci_save.push(took);
        fs::remove_dir_all(project.join("node_modules")).unwrap();
        fs::write(
            project.join(".gitlab-ci.yml"),
            format!(
                "restore:\n  image: {image}\n  cache: {{key: {KEY}, paths: [node_modules/], policy: pull}}\n  \
                 script: ['echo \"restored=$(find node_modules -type f | wc -l)\"']\n"
            ),
        )
        .unwrap();
        let (took, lines) = glci_span(&project, &home, "Checking cache for", "Successfully extracted cache");
        glci_restore.push(took);
        assert!(
            lines.iter().any(|l| l.trim() == format!("restored={files}")),
            "every file restored:\n{}",
            lines.join("\n")
        );
        let cleared = common::glci()
            .args(["cache", "clear", "--project", "bench/cache"])
            .env("GLCI_HOME", &home)
            .output()
            .unwrap();
        assert!(cleared.status.success());
        println!(
            "  round {}: docker cp in {:.2?} out {:.2?}; glci restore {:.2?} save {:.2?}",
            round + 1,
            docker_in[round],
            docker_out[round],
            glci_restore[round],
            glci_save[round]
        );
    }

    let rows = [
        ("save (container → host)", median(glci_save), median(docker_out)),
        ("restore (host → container)", median(glci_restore), median(docker_in)),
    ];
    println!("\ncache: {files} files, {:.0} MiB (node_modules-like), median of {ROUNDS}", bytes as f64 / MIB as f64);
    println!("{:<28} {:>16} {:>16} {:>8}", "", "glci cache", "docker cp", "ratio");
    let mut figures = Vec::new();
    for (what, glci, docker) in rows {
        let ratio = glci.as_secs_f64() / docker.as_secs_f64();
        println!(
            "{what:<28} {:>7.2}s {:>5.0}MB/s {:>7.2}s {:>5.0}MB/s {ratio:>8.2}",
            glci.as_secs_f64(),
            rate(bytes, glci),
            docker.as_secs_f64(),
            rate(bytes, docker)
        );
        figures.push(
            json!({"what": what, "glci_s": glci.as_secs_f64(), "docker_cp_s": docker.as_secs_f64(), "ratio": ratio}),
        );
    }
    println!("(ratio = glci time / docker cp time: below 1 glci is faster)");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    fs::create_dir_all(&dir).unwrap();
    let report = json!({"files": files, "bytes": bytes, "rounds": ROUNDS, "figures": figures});
    fs::File::create(dir.join("cache.json")).unwrap().write_all(report.to_string().as_bytes()).unwrap();
}

/// The bench's scratch directory, removed however the bench ends (the disk is shared).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn walkdir_count(dir: &Path) -> usize {
    let mut count = 0;
    for entry in fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            count += walkdir_count(&entry.path());
        } else {
            count += 1;
        }
    }
    count
}
