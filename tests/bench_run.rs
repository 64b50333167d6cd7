//! Run-path benchmark (`make bench`, issue 18): a 6-job, 3-stage pipeline whose jobs pass
//! artifacts on (busybox image, `-j 2`), run by `glci run` (with the embedded registry, its
//! glci-mock already up, and with `--no-registry`), against the ideal schedule of bare
//! containers (each stage as two `docker run --rm IMAGE true` at once, the stages one after
//! the other) and against gitlab-ci-local when it is on PATH (scripts/bench.sh installs it).
//! Also the cost of each Docker step a job takes, one at a time (create, cp in, start, cp out,
//! rm), which is what a job costs on this machine. Alternating rounds; medians; it writes
//! `target/bench/run.json`. It asserts that every run succeeds, never speed.
//!
//! `GLCI_BENCH_VERSUS=/path/to/glci` adds a row for another glci build (an A/B run of a change;
//! it gets a glci-mock of its own, on the next port; `GLCI_BENCH_ROUNDS=N` for more than 5
//! rounds). The bench's glci-mocks (`GLCI_MOCK_NAME`, ports of their own, temp `GLCI_HOME`s)
//! are removed at the end; the user's is never touched. gitlab-ci-local gets a helper image
//! built here from the host's bash and rsync (see `gcl_helper_image`). `#[ignore]`: run by `scripts/bench.sh`.
#![allow(clippy::unwrap_used)]
// Tests spawn processes and read the environment; clippy.toml's disallowed-methods is for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const IMAGE: &str = common::BUSYBOX_IMAGE;
/// Rounds unless `GLCI_BENCH_ROUNDS` says (a loaded machine needs more for an A/B run).
const ROUNDS: usize = 5;

/// Three stages of two jobs; each job writes a file its successors read back.
fn pipeline() -> String {
    format!(
        r#"image: {IMAGE}
stages: [build, test, deploy]
build-a:
  stage: build
  script: [mkdir -p out, echo a > out/a.txt]
  artifacts: {{paths: [out/a.txt]}}
build-b:
  stage: build
  script: [mkdir -p out, echo b > out/b.txt]
  artifacts: {{paths: [out/b.txt]}}
test-a:
  stage: test
  script: [cat out/a.txt out/b.txt, echo ta > out/ta.txt]
  artifacts: {{paths: [out/ta.txt]}}
test-b:
  stage: test
  script: [cat out/a.txt out/b.txt, echo tb > out/tb.txt]
  artifacts: {{paths: [out/tb.txt]}}
deploy-a:
  stage: deploy
  script: [cat out/ta.txt out/tb.txt out/a.txt]
deploy-b:
  stage: deploy
  script: [cat out/ta.txt out/tb.txt out/b.txt]
"#
    )
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `cmd` to success and returns its wall time.
fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = output(cmd);
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn docker(args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    cmd
}

/// The ideal schedule: each stage as two bare containers at once, the stages in sequence.
fn ideal_schedule() -> Duration {
    let start = Instant::now();
    for _stage in 0..3 {
        std::thread::scope(|s| {
            let pair: Vec<_> =
                (0..2).map(|_| s.spawn(|| timed(&mut docker(&["run", "--rm", IMAGE, "true"])))).collect();
            pair.into_iter().for_each(|t| {
                t.join().unwrap();
            });
        });
    }
    start.elapsed()
}

/// The Docker steps of one job, each timed alone: what a job costs on this machine.
fn job_steps(dir: &Path, steps: &mut Vec<(&'static str, Vec<f64>)>) {
    let name = common::unique_name("glci-bench-step");
    let file = dir.join("step-file");
    fs::write(&file, "x").unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut record = |label: &'static str, d: Duration| match steps.iter_mut().find(|(l, _)| *l == label) {
        Some((_, v)) => v.push(ms(d)),
        None => steps.push((label, vec![ms(d)])),
    };
    record("docker image inspect", timed(&mut docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE])));
    record("docker create", timed(&mut docker(&["create", "--name", &name, IMAGE, "cat", "/step-file"])));
    let into = format!("{name}:/step-file");
    record("docker cp (into the container)", timed(docker(&["cp"]).arg(&file).arg(&into)));
    record("docker start -a", timed(&mut docker(&["start", "-a", &name])));
    let back = dir.join("step-back");
    record("docker cp (out of the container)", timed(docker(&["cp", &into]).arg(&back)));
    record("docker rm -f", timed(&mut docker(&["rm", "-f", &name])));
    record("docker run --rm IMAGE true (all of it)", timed(&mut docker(&["run", "--rm", IMAGE, "true"])));
    let _ = fs::remove_file(back);
}

/// gitlab-ci-local's helper container (artifacts in and out) runs bash and rsync from its
/// `docker.io/firecow/gitlab-ci-local-util` image, which cannot be pulled offline: this stand-in
/// is the busybox image plus the host's bash and rsync with the libraries `ldd` names.
const GCL_HELPER: &str = "glci-bench/gcl-helper:1";

fn gcl_helper_image() {
    if output(&mut docker(&["image", "inspect", GCL_HELPER])).status.success() {
        return;
    }
    let script = format!(
        r#"set -e
root=$(mktemp -d)
for f in /bin/bash /usr/bin/rsync $(ldd /bin/bash /usr/bin/rsync | grep -o '/[^ :]*' | sort -u); do
  mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
done
c=$(docker create {IMAGE} true)
tar -C "$root" -cf - . | docker cp - "$c:/"
docker commit "$c" {GCL_HELPER} >/dev/null
docker rm "$c" >/dev/null
rm -rf "$root""#
    );
    timed(Command::new("sh").args(["-c", &script]));
}

/// Removes the bench's glci-mock (container, volume, network, image), even after a panic.
struct MockGuard(String);

impl Drop for MockGuard {
    fn drop(&mut self) {
        let mock = &self.0;
        let _ = output(&mut docker(&["rm", "-f", "-v", &format!("{mock}-mock")]));
        let _ = output(&mut docker(&["volume", "rm", &format!("{mock}-registry")]));
        let _ = output(&mut docker(&["network", "rm", &format!("{mock}-net")]));
        let _ = output(&mut docker(&["image", "rm", &format!("{mock}-mock:{}", env!("CARGO_PKG_VERSION"))]));
    }
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn pipeline_run_against_bare_containers() {
    common::busybox_image();
    let bench_start = Instant::now();
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let home = common::temp_dir();
    let project = common::temp_dir();
    fs::write(project.path().join(".gitlab-ci.yml"), pipeline()).unwrap();
    let git = |args: &[&str]| timed(Command::new("git").arg("-C").arg(project.path()).args(args));
    git(&["init", "-q"]);
    git(&["remote", "add", "origin", "https://gitlab.example.com/bench/pipeline.git"]);
    git(&["add", "-A"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "bench"]);
    let mock = common::unique_name("glcibench").replace('-', "");
    let mock_guard = MockGuard(mock.clone());
    // Below the ephemeral range (32768-60999), apart from registry_run.rs's 20000-27999.
    let port = 28000 + (std::process::id() % 2000) as u16;
    fs::write(home.path().join("config.toml"), format!("mock_server_port = {port}\n[registry]\nupstreams = []\n"))
        .unwrap();
    let versus = std::env::var("GLCI_BENCH_VERSUS").ok();
    // The other build gets a glci-mock of its own (name, port, home): the mock is re-created
    // whenever the binary that starts it changes, which alternating builds on one mock would
    // make every run pay.
    let versus_home = common::temp_dir();
    let versus_mock = format!("{mock}v");
    let _versus_guard = versus.as_ref().map(|_| MockGuard(versus_mock.clone()));
    fs::write(
        versus_home.path().join("config.toml"),
        format!("mock_server_port = {}\n[registry]\nupstreams = []\n", port + 1),
    )
    .unwrap();
    let glci_build = |bin: Option<&str>, extra: &[&str]| {
        let mut cmd = match bin {
            Some(bin) => Command::new(bin),
            // The binary under test: this build's, unless GLCI_BENCH_GLCI names another.
            None => match std::env::var("GLCI_BENCH_GLCI") {
                Ok(bin) => Command::new(bin),
                Err(_) => common::glci(),
            },
        };
        let (home, mock) = match bin {
            Some(_) => (versus_home.path(), &versus_mock),
            None => (home.path(), &mock),
        };
        cmd.env("GLCI_HOME", home)
            .env("GLCI_MOCK_NAME", mock)
            .env("DOCKER_CONFIG", home.join("no-docker-config"))
            .current_dir(project.path())
            .args(["run", "-j", "2"])
            .args(extra);
        cmd
    };
    let glci = |extra: &[&str]| glci_build(None, extra);
    let gcl = have("gitlab-ci-local").then(|| {
        let mut cmd = Command::new("gitlab-ci-local");
        gcl_helper_image();
        cmd.current_dir(project.path()).args(["--concurrency", "2", "--helper-image", GCL_HELPER]);
        cmd
    });
    // The first run starts the glci-mock (image, volume, network, container): not timed.
    let first = timed(&mut glci(&[]));
    if let Some(bin) = &versus {
        timed(&mut glci_build(Some(bin), &[]));
    }
    println!("\n== the run path: 6 jobs, 3 stages, artifacts passed on, -j 2 ({IMAGE}) ==");
    println!("first glci run (starts its glci-mock): {:.2} s", first.as_secs_f64());

    let mut figures: Vec<(&str, Vec<f64>)> = vec![
        ("ideal", vec![]),
        ("glci", vec![]),
        ("glci_no_registry", vec![]),
        ("gitlab_ci_local", vec![]),
        ("versus", vec![]),
    ];
    let mut steps = Vec::new();
    let rounds = std::env::var("GLCI_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(ROUNDS);
    for round in 0..rounds {
        let mut runs: Vec<(usize, Box<dyn Fn() -> Duration>)> = vec![
            (0, Box::new(ideal_schedule)),
            (1, Box::new(|| timed(&mut glci(&[])))),
            (2, Box::new(|| timed(&mut glci(&["--no-registry"])))),
        ];
        if let Some(gcl) = &gcl {
            let program = gcl.get_program().to_owned();
            let args: Vec<_> = gcl.get_args().map(|a| a.to_owned()).collect();
            let dir = project.path().to_path_buf();
            runs.push((3, Box::new(move || timed(Command::new(&program).args(&args).current_dir(&dir)))));
        }
        if let Some(bin) = &versus {
            runs.push((4, Box::new(|| timed(&mut glci_build(Some(bin), &[])))));
        }
        let len = runs.len();
        runs.rotate_left(round % len);
        for (index, run) in &runs {
            figures[*index].1.push(run().as_secs_f64());
        }
        job_steps(home.path(), &mut steps);
    }
    drop(mock_guard);

    let value =
        |key: &str| figures.iter().find(|(k, _)| *k == key).filter(|(_, v)| !v.is_empty()).map(|(_, v)| median(v));
    let ideal = value("ideal").unwrap();
    println!("\n{:<52} {:>8} {:>10}", "figure (median of rounds)", "seconds", "vs ideal");
    for (key, label) in [
        ("ideal", "ideal: 3 stages × 2 bare `docker run --rm` at once"),
        ("glci", "glci run -j 2 (embedded registry, mock up)"),
        ("glci_no_registry", "glci run -j 2 --no-registry"),
        ("gitlab_ci_local", "gitlab-ci-local --concurrency 2"),
        ("versus", "GLCI_BENCH_VERSUS build, embedded registry"),
    ] {
        if key == "versus" && versus.is_none() {
            continue;
        }
        match value(key) {
            Some(v) => println!("{label:<52} {v:>8.2} {:>9.2}x", v / ideal),
            None => println!("{label:<52} {:>8} (not installed: scripts/bench.sh installs it)", "—"),
        }
    }
    // Per round, the two builds ran next to each other: how often this one was the faster.
    let samples = |key: &str| figures.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let (this, other) = (samples("glci"), samples("versus"));
    if !other.is_empty() {
        let wins = this.iter().zip(&other).filter(|(a, b)| a < b).count();
        println!("this build faster than GLCI_BENCH_VERSUS's in {wins} of {} rounds", other.len());
    }
    if let (Some(g), Some(c)) = (value("glci"), value("gitlab_ci_local")) {
        println!("gitlab-ci-local / glci: {:.2}x", c / g);
    }
    println!("\nwhat one job's Docker steps cost here, each alone (median ms):");
    for (label, v) in &steps {
        println!("  {label:<44} {:>7.0}", median(v));
    }
    let load_after = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average: {} before, {} after | {:.1} s in all",
        load_before.split(' ').take(3).collect::<Vec<_>>().join(" "),
        load_after.split(' ').take(3).collect::<Vec<_>>().join(" "),
        bench_start.elapsed().as_secs_f64()
    );
    let out = json!({
        "bench": "pipeline_run_against_bare_containers",
        "seconds": figures.iter().map(|(k, v)| (k.to_string(), json!({"median": (!v.is_empty()).then(|| median(v)), "samples": v}))).collect::<serde_json::Map<_, _>>(),
        "job_steps_ms": steps.iter().map(|(k, v)| (k.to_string(), json!({"median": median(v), "samples": v}))).collect::<serde_json::Map<_, _>>(),
        "load_average_before": load_before.trim(),
        "load_average_after": load_after.trim(),
    });
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("bench");
    fs::create_dir_all(&out_dir).unwrap();
    let path = out_dir.join("run.json");
    fs::write(&path, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
    println!("figures written to {}", path.display());
}
