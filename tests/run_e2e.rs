//! `glci run` end to end on the real Docker engine (issue 7): the fixture pipelines of
//! `fixtures/pipelines/e2e-*` copied into temp project directories and run by the binary, their
//! `--json` events and text output checked, and after every run (success, failure, SIGINT) no
//! container or network labelled with the run's id may remain.
//!
//! Needs busybox-static and a running dockerd (`make test` installs and starts them). Jobs run
//! in `glci-test/busybox:e2e`, imported once from the busybox rootfs recipe: no image is pulled.

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{events, glci, glci_run, run_stdout, show, temp_dir};
use serde_json::Value;

/// The image every fixture names (`glci-test/busybox:e2e`), imported once.
fn image() {
    common::busybox_image();
}

/// Copies `fixtures/pipelines/<name>` into a fresh temp dir (outside any git work tree, so the
/// project is just these files).
fn project(name: &str) -> tempfile::TempDir {
    let dir = temp_dir();
    copy_tree(&common::fixture_path(&format!("pipelines/{name}")), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

fn run_id(events: &[Value]) -> String {
    let started = events.iter().find(|e| e["event"] == "pipeline_started").expect("a pipeline_started event");
    started["run_id"].as_str().expect("run_id").to_string()
}

/// The `job_finished` event of `job`.
fn finished<'a>(events: &'a [Value], job: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "job_finished" && e["job"] == job)
        .unwrap_or_else(|| panic!("no job_finished for {job}"))
}

/// The log lines of `job` (its own output and glci's notes), in order.
fn log(events: &[Value], job: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == job)
        .map(|e| e["line"].as_str().expect("line").to_string())
        .collect()
}

fn position(lines: &[String], needle: &str) -> usize {
    lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in {lines:#?}"))
}

/// No container or network of run `id` is left.
fn assert_nothing_left(id: &str) {
    let filter = format!("label=glci.run={id}");
    let containers = run_stdout(Command::new("docker").args(["ps", "-a", "-q", "--filter", &filter]));
    assert_eq!(containers.trim(), "", "containers of run {id} left behind");
    let networks = run_stdout(Command::new("docker").args(["network", "ls", "-q", "--filter", &filter]));
    assert_eq!(networks.trim(), "", "networks of run {id} left behind");
    let named = run_stdout(Command::new("docker").args(["ps", "-a", "--format", "{{.Names}}"]));
    assert!(!named.contains(&format!("glci-{id}-")), "containers named after run {id} left: {named}");
}

#[test]
fn full_pipeline_runs_stages_needs_artifacts_services_and_rules() {
    image();
    let dir = project("e2e-full");
    let out = glci_run(dir.path(), &["--json", "-j", "4", "--env", "TARGET=linux"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);

    let statuses: Vec<(String, String, bool)> = events
        .iter()
        .filter(|e| e["event"] == "job_finished")
        .map(|e| {
            (
                e["job"].as_str().expect("job").to_string(),
                e["status"].as_str().expect("status").to_string(),
                e["allow_failure"].as_bool().expect("allow_failure"),
            )
        })
        .collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    let expected = [
        ("compile", "success", false),
        ("flaky", "failed", true),
        ("lint", "failed", true),
        ("linux-only", "success", false),
        ("package", "success", false),
        ("unit", "success", false),
    ]
    .map(|(j, s, a)| (j.to_string(), s.to_string(), a));
    assert_eq!(sorted, expected, "windows-only is left out by its rules\n{}", show(&out));

    // extends (two levels, from an included file), anchors, global variable expansion.
    let compile = log(&events, "compile");
    assert!(compile.iter().any(|l| l == "before_script from an anchor"), "{compile:#?}");
    assert!(compile.iter().any(|l| l == "template says included-template, base says base-value"), "{compile:#?}");
    assert!(compile.iter().any(|l| l.contains("$ mkdir -p out")), "commands are echoed: {compile:#?}");
    assert!(compile.iter().any(|l| l.contains("1 file saved as artifacts")), "{compile:#?}");

    // Artifacts handed on through `needs`, exclude honoured, the service reached by its alias.
    let unit = log(&events, "unit");
    let project_name = dir.path().file_name().expect("name").to_string_lossy().to_lowercase();
    assert!(unit.iter().any(|l| *l == format!("hello from {project_name}")), "{unit:#?}");
    assert!(unit.iter().any(|l| l == "excluded file absent"), "{unit:#?}");
    assert!(unit.iter().any(|l| l == "pong-reply"), "{unit:#?}");
    assert!(unit.iter().any(|l| l.starts_with("Starting service glci-test/busybox:e2e as pong")), "{unit:#?}");
    assert!(unit.iter().any(|l| l == "Waiting for service glci-test/busybox:e2e (port 8080)"), "{unit:#?}");

    // allow_failure: the job stops at the failing command, after_script runs after it.
    let lint = log(&events, "lint");
    assert!(!lint.iter().any(|l| l == "not reached"), "{lint:#?}");
    let failed_at = position(&lint, "$ exit 1");
    let after_at = position(&lint, "after_script ran, job status failed");
    assert!(failed_at < after_at);
    assert_eq!(finished(&events, "lint")["exit_code"], 1);
    assert_eq!(finished(&events, "flaky")["exit_code"], 3);

    // Rules: the matching rule's variables; stage order: deploy after every test job.
    assert!(log(&events, "linux-only").iter().any(|l| l == "linux job picked by-rule"));
    let package = log(&events, "package");
    assert!(package.iter().any(|l| *l == format!("hello from {project_name}")), "{package:#?}");
    assert!(package.iter().any(|l| *l == format!("project dir /builds/{project_name}")), "{package:#?}");
    let order: Vec<&str> =
        events.iter().filter(|e| e["event"] == "job_started").map(|e| e["job"].as_str().expect("job")).collect();
    assert_eq!(order.last(), Some(&"package"), "{order:?}");

    let done = events.last().expect("events");
    assert_eq!(done["event"], "pipeline_finished");
    assert_eq!(done["status"], "success");
    assert_nothing_left(&run_id(&events));
}

#[test]
fn named_jobs_run_with_what_they_need_and_rules_follow_env() {
    image();
    let dir = project("e2e-full");
    let out = glci_run(dir.path(), &["--json", "unit", "--env", "TARGET=windows"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    let ran: Vec<&str> =
        events.iter().filter(|e| e["event"] == "job_finished").map(|e| e["job"].as_str().expect("job")).collect();
    assert_eq!(ran, ["compile", "unit"], "{}", show(&out));
    assert_nothing_left(&run_id(&events));

    let out = glci_run(dir.path(), &["--json", "windows-only", "--env", "TARGET=windows"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let windows = self::events(&out);
    assert!(log(&windows, "windows-only").iter().any(|l| l == "windows"));

    let out = glci_run(dir.path(), &["linux-only", "--env", "TARGET=windows"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".gitlab-ci.yml:") && stderr.contains("`linux-only` is not in this pipeline"), "{stderr}");
}

#[test]
fn failing_pipeline_exits_1_skips_later_jobs_and_cleans_up() {
    image();
    let dir = project("e2e-fail");
    let out = glci_run(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("glci: error: pipeline failed: broken failed"), "{stderr}");
    let events = events(&out);

    let broken = finished(&events, "broken");
    assert_eq!((broken["status"].as_str(), broken["attempts"].as_u64()), (Some("failed"), Some(2)), "retry: 1");
    let lines = log(&events, "broken");
    assert!(!lines.iter().any(|l| l == "never printed"), "{lines:#?}");
    let after = position(&lines, "after_script after the failure, status failed");
    assert!(position(&lines, "$ false") < after);
    assert!(lines.iter().any(|l| l.contains("Retrying the job (attempt 2 of 2)")), "{lines:#?}");

    let slow = finished(&events, "slow");
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["allow_failure"], true);
    assert!(slow["reason"].as_str().is_some_and(|r| r.contains("longer than 2s")), "{slow}");
    assert!(slow["duration_ms"].as_u64().is_some_and(|ms| ms < 30_000), "the timeout killed it: {slow}");

    assert_eq!(finished(&events, "tests")["status"], "skipped");
    assert_eq!(finished(&events, "report")["status"], "success");
    assert!(log(&events, "report").iter().any(|l| l == "reporting the failure"));
    assert_eq!(finished(&events, "always")["status"], "success");
    assert_eq!(events.last().expect("events")["status"], "failed");
    assert_nothing_left(&run_id(&events));
}

#[test]
fn text_output_prefixes_lines_and_ends_with_a_summary() {
    image();
    let dir = project("e2e-fail");
    let out = glci_run(dir.path(), &["tests", "-j", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains('\x1b'), "no colours when stdout is no terminal:\n{stdout}");
    assert!(stdout.contains("broken | about to fail\n"), "{stdout}");
    assert!(stdout.contains("broken | $ false\n"), "{stdout}");
    assert!(stdout.contains("slow   | $ sleep 60\n"), "{stdout}");
    assert!(stdout.contains("tests  | Skipped: a job it waits for failed\n"), "{stdout}");
    let table = stdout.split("\nJOB").nth(1).unwrap_or_else(|| panic!("no summary table:\n{stdout}"));
    let rows: Vec<Vec<&str>> = table.lines().skip(1).take(3).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..3], ["broken", "build", "failed"], "{table}");
    assert_eq!(rows[1][..4], ["slow", "build", "failed", "(allowed)"], "{table}");
    assert_eq!(rows[2], ["tests", "test", "skipped", "-"], "{table}");
    assert!(stdout.contains("Pipeline failed in "), "{stdout}");
}

/// A pipeline file written into a fresh project dir.
fn write_project(yaml: &str) -> tempfile::TempDir {
    let dir = temp_dir();
    std::fs::write(dir.path().join(".gitlab-ci.yml"), yaml).expect("write pipeline");
    dir
}

#[test]
fn configuration_errors_exit_2_naming_the_line() {
    let cases: [(&str, &[&str], &str); 8] = [
        ("job:\n  image: x\n  script: [echo\n", &[], ":4: invalid YAML"),
        (
            "a:\n  image: x\n  script: [echo]\n  needs: [b]\nb:\n  image: x\n  script: [echo]\n  needs: [a]\n",
            &[],
            ":4: a.needs[0]: needs cycle: a → b → a",
        ),
        ("a:\n  image: x\n  script: [echo]\n  needs: [zzz]\n", &[], ":4: a.needs[0]: `zzz` is not a job"),
        ("a:\n  image: x\n  script: [echo]\n  rules:\n    - if: $A ==\n", &[], ":5: a.rules[0].if: invalid expression"),
        ("a:\n  image: x\n  script: 3\n", &[], ":3: a.script: expected a string or a list of strings"),
        ("a:\n  extends: .nope\n  image: x\n  script: [echo]\n", &[], ":2: a.extends:"),
        ("a:\n  script: [echo]\n", &[], ":1: a.image: no image"),
        ("a:\n  image: x\n  script: [echo]\n", &["nope"], ": no job named `nope` (jobs: a)"),
    ];
    for (yaml, args, expected) in cases {
        let dir = write_project(yaml);
        let out = glci_run(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let file = dir.path().join(".gitlab-ci.yml");
        let want = format!("glci: error: {}{expected}", file.display());
        assert!(stderr.starts_with(&want), "{yaml}\nwanted {want:?}\ngot {stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", show(&out));
    }
    let dir = temp_dir();
    let out = glci_run(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".gitlab-ci.yml: no such file"), "{}", show(&out));
}

/// A `glci run` child that gets SIGINT (and is waited for, bounded) if the test panics first, so
/// a failing test leaves no run behind.
struct Interrupted(Option<std::process::Child>);

impl Drop for Interrupted {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else { return };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the child we spawned and have not reaped.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let _ = rx.recv_timeout(Duration::from_secs(30));
    }
}

#[test]
fn sigint_stops_jobs_and_removes_every_container_and_network() {
    image();
    let dir = project("e2e-interrupt");
    let mut child = glci()
        .args(["run", "--no-registry", "--json", "-j", "2"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start glci");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = Interrupted(Some(child));
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait until both jobs print (the service is up, both containers run).
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = |lines: &[String], text: &str| lines.iter().any(|l| l.contains(text));
    while !(running(&lines, "\"job is running\"") && running(&lines, "\"second job is running\"")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("the jobs did not start within 60 s: {lines:#?}"),
        }
    }
    let id: Value = serde_json::from_str(&lines[0]).expect("first event is JSON");
    let id = id["run_id"].as_str().expect("run_id").to_string();
    let filter = format!("label=glci.run={id}");
    let before =
        run_stdout(Command::new("docker").args(["ps", "-a", "--filter", &filter, "--format", "{{.Names}} {{.State}}"]));
    // Docker may still show a container that just printed as `created` for a moment: count them.
    assert_eq!(before.lines().count(), 3, "two jobs and a service:\n{before}");

    let mut child = guard.0.take().expect("glci is running");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status =
        done_rx.recv_timeout(Duration::from_secs(30)).expect("glci exits within 30 s of SIGINT").expect("wait");
    assert_eq!(status.code(), Some(1), "{lines:#?}");
    // The reader thread has the rest of stdout; it ends when glci's stdout closes.
    lines.extend(rx.iter());
    let last: Value = serde_json::from_str(lines.last().expect("events")).expect("JSON");
    assert_eq!(last["event"], "pipeline_finished");
    assert_eq!(last["status"], "canceled");
    let never = last["jobs"].as_array().expect("jobs").iter().find(|j| j["job"] == "never").expect("never");
    assert_eq!(never["status"], "canceled");
    assert!(!lines.iter().any(|l| l.contains("must not run")));
    assert_nothing_left(&id);
}

#[test]
fn parallel_and_matrix_jobs_run_every_instance() {
    image();
    let dir = project("e2e-parallel");
    let out = glci_run(dir.path(), &["--json", "-j", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    let expected = [
        ("shard 1/2", "node=1/2 job=shard 1/2"),
        ("shard 2/2", "node=2/2 job=shard 2/2"),
        ("os: [linux]", "node=1/2 os=linux job=os: [linux]"),
        ("os: [mac]", "node=2/2 os=mac job=os: [mac]"),
        ("report", "after the shards"),
    ];
    for (job, line) in expected {
        assert_eq!(finished(&events, job)["status"], "success", "{job}: {}", show(&out));
        let lines = log(&events, job);
        assert!(lines.iter().any(|l| l == line), "{job}: no line {line:?} in {lines:#?}");
    }
    let report = position(
        &events.iter().map(|e| format!("{} {}", e["event"], e["job"])).collect::<Vec<_>>(),
        "\"job_started\" \"report\"",
    );
    for shard in ["shard 1/2", "shard 2/2"] {
        let done = events.iter().position(|e| e["event"] == "job_finished" && e["job"] == shard);
        assert!(done.is_some_and(|d| d < report), "report started before {shard} finished");
    }
    assert_nothing_left(&run_id(&events));
}

/// Jobs of one image look it up on the host once per run: later jobs take the ID the first
/// `docker image inspect` found (every docker call logged by a PATH shim).
#[test]
fn one_image_inspect_per_image_and_run() {
    image();
    let dir = write_project(&format!(
        "stages: [a, b]\none:\n  stage: a\n  image: {0}\n  script: [echo one]\ntwo:\n  stage: a\n  image: {0}\n  script: [echo two]\n\
         three:\n  stage: b\n  image: {0}\n  script: [echo three]\n",
        common::BUSYBOX_IMAGE
    ));
    let docker = common::DockerCallLog::new();
    let out = glci()
        .args(["run", "--no-registry", "-j", "1"])
        .env("PATH", docker.path())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("start glci");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let calls = docker.take();
    let inspects = calls.iter().filter(|c| c.starts_with("image inspect")).count();
    assert_eq!(inspects, 1, "{calls:#?}");
    assert_eq!(calls.iter().filter(|c| c.starts_with("create ")).count(), 3, "{calls:#?}");
}
