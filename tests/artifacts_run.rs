//! The artifacts a user keeps, end to end on the real Docker engine (issue 16): pipelines
//! written into temp projects and run by the binary with a temp `GLCI_HOME`; the directories
//! under `$GLCI_HOME/artifacts`, `--artifacts-dir` and the `--json` traces checked.
//!
//! Needs busybox-static and a running dockerd (`make test` installs and starts them). Jobs run
//! in `glci-test/busybox:e2e`, imported once from the busybox rootfs recipe: no image is pulled.

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{glci, show, temp_dir, unique_name};
use serde_json::Value;

/// A project dir with `.gitlab-ci.yml` = `pipeline`, a GLCI_HOME, and a unique project path.
struct Project {
    dir: tempfile::TempDir,
    home: PathBuf,
    path: String,
}

impl Project {
    fn new(pipeline: &str, home: &Path) -> Project {
        common::busybox_image();
        let dir = temp_dir();
        fs::write(dir.path().join(".gitlab-ci.yml"), pipeline.replace("IMAGE", common::BUSYBOX_IMAGE))
            .expect("write pipeline");
        Project { dir, home: home.to_path_buf(), path: format!("artifact-tests/{}", unique_name("p")) }
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.dir.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write project file");
    }

    fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn run(&self, extra: &[&str]) -> (Output, Vec<Value>) {
        let mut args = vec!["run", "--no-registry", "--json", "--project", &self.path];
        args.extend_from_slice(extra);
        let out = glci()
            .args(&args)
            .env("GLCI_HOME", &self.home)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("start glci");
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", show(&out))))
            .collect();
        (out, events)
    }
}

fn succeeded(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", show(out));
}

fn log(events: &[Value], job: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == job)
        .map(|e| e["line"].as_str().expect("line").to_string())
        .collect()
}

/// The `artifacts` directory the summary (`pipeline_finished`) gives for `job`.
fn kept_dir(events: &[Value], job: &str) -> Option<PathBuf> {
    let finished = events.iter().find(|e| e["event"] == "pipeline_finished").expect("pipeline_finished");
    let report = finished["jobs"].as_array().expect("jobs").iter().find(|j| j["job"] == job).expect("job report");
    report["artifacts"].as_str().map(PathBuf::from)
}

fn pipeline_id(events: &[Value]) -> u64 {
    events.iter().find(|e| e["event"] == "pipeline_started").expect("started")["pipeline_id"].as_u64().expect("id")
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> =
        walk(dir).into_iter().map(|p| p.strip_prefix(dir).expect("under").display().to_string()).collect();
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn artifacts_are_kept_copied_out_and_removed_once_expired() {
    let home = temp_dir();
    let p = Project::new(
        "build:\n  stage: build\n  image: IMAGE\n  script:\n    - mkdir -p dist/sub && echo app > dist/app.txt && echo deep > dist/sub/x.txt\n  \
         artifacts:\n    paths: [dist/]\n    expire_in: 1 second\n\
         keep 1/2:\n  stage: build\n  image: IMAGE\n  script:\n    - echo kept > notes.md\n  \
         artifacts:\n    paths: [notes.md]\n    expire_in: never\n\
         test:\n  stage: test\n  image: IMAGE\n  script:\n    - test \"$(cat dist/app.txt)\" = app\n",
        home.path(),
    );
    let out_dir = temp_dir();
    fs::write(out_dir.path().join("mine.txt"), "the user's").expect("write");
    let copies = out_dir.path().join("copies");
    let (out, events) = p.run(&["--artifacts-dir", copies.to_str().expect("utf-8")]);
    succeeded(&out);
    let ended = std::time::Instant::now();

    let project = p.path.replace('/', "%2F");
    let pipeline = home.path().join("artifacts").join(&project).join(pipeline_id(&events).to_string());
    let build = kept_dir(&events, "build").expect("build's artifacts in the summary");
    assert_eq!(build, pipeline.join("build"));
    assert_eq!(files_under(&build), ["dist/app.txt", "dist/sub/x.txt"]);
    assert_eq!(fs::read_to_string(build.join("dist/app.txt")).expect("app"), "app\n");
    let keep = kept_dir(&events, "keep 1/2").expect("keep's artifacts");
    assert_eq!(keep, pipeline.join("keep 1%2F2"), "a / in a job name never makes a subdirectory");
    assert_eq!(files_under(&keep), ["notes.md"]);
    assert_eq!(kept_dir(&events, "test"), None, "a job without artifacts has none");
    let leftovers: Vec<String> = fs::read_dir(&pipeline)
        .expect("pipeline dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp directories left: {leftovers:?}");
    assert!(log(&events, "build").iter().any(|l| l.contains("Artifacts kept in") && l.contains("expire ")));
    assert!(log(&events, "keep 1/2").iter().any(|l| l.contains("never expire")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&build.display().to_string()), "the JSON summary names the directory");

    // --artifacts-dir: DIR/<job>/ for each job with artifacts, nothing else touched.
    assert_eq!(files_under(&copies.join("build")), ["dist/app.txt", "dist/sub/x.txt"]);
    assert_eq!(files_under(&copies.join("keep 1%2F2")), ["notes.md"]);
    assert!(!copies.join("test").exists());
    assert_eq!(fs::read_to_string(out_dir.path().join("mine.txt")).expect("mine"), "the user's");

    // The next run, of another project, removes what has expired (build's, after its second)
    // and keeps `never`. Waiting here is for the expiry clock itself, which is what is tested.
    std::thread::sleep(std::time::Duration::from_millis(2100).saturating_sub(ended.elapsed()));
    let other = Project::new("other:\n  image: IMAGE\n  script: [\"true\"]\n", home.path());
    let (out, _) = other.run(&[]);
    succeeded(&out);
    assert!(!build.exists(), "expired artifacts are removed at the next run\n{}", show(&out));
    assert!(keep.join("notes.md").is_file(), "expire_in: never stays");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed 1 expired job artifact directory"),
        "{}",
        show(&out)
    );
    assert_eq!(files_under(&copies.join("build")), ["dist/app.txt", "dist/sub/x.txt"], "copies are the user's");
}

#[test]
fn a_bad_expire_in_or_artifacts_dir_is_a_usage_error() {
    let home = temp_dir();
    let p = Project::new(
        "build:\n  image: IMAGE\n  script: [\"true\"]\n  artifacts:\n    paths: [a]\n    expire_in: soon\n",
        home.path(),
    );
    let (out, _) = p.run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".gitlab-ci.yml:6") && stderr.contains("build.artifacts.expire_in"), "{stderr}");
    let ok = Project::new("build:\n  image: IMAGE\n  script: [\"true\"]\n", home.path());
    ok.write("a-file", "x");
    let (out, _) = ok.run(&["--artifacts-dir", "a-file/sub"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--artifacts-dir a-file/sub"), "{}", show(&out));
    assert_eq!(fs::read_to_string(ok.dir.path().join("a-file")).expect("a-file"), "x", "nothing lost");
}

/// `untracked: true` with `paths` and `exclude`, in a git work tree with a `.gitignore`. As on
/// GitLab (the runner's `git ls-files -o`, gitlab-runner#3378; the `artifacts:untracked` docs),
/// "untracked" includes the files `.gitignore` ignores: ignored files of the developer's tree
/// are never copied into the job, but those the job makes are collected; `exclude` leaves
/// files out. Reports are kept with the artifacts but not handed to later jobs.
#[test]
fn untracked_files_paths_exclude_and_reports() {
    let home = temp_dir();
    let p = Project::new(
        "build:\n  stage: build\n  image: IMAGE\n  script:\n    - test ! -e host.log\n    \
         - mkdir -p target out && echo o > target/app.o && echo d > debug.log && echo r > out/result.txt\n    \
         - echo changed >> src/main.c && mkdir reports && echo '<testsuite/>' > reports/junit.xml && echo s > out/skip.tmp\n  \
         artifacts:\n    untracked: true\n    paths: [out/]\n    exclude: ['*.log', 'out/*.tmp', reports/]\n    \
         expose_as: build output\n    name: build-$CI_COMMIT_REF_SLUG\n    \
         reports:\n      junit: reports/junit.xml\n      coverage_report:\n        coverage_format: cobertura\n        path: none.xml\n\
         check:\n  stage: test\n  image: IMAGE\n  script:\n    - test \"$(cat target/app.o)\" = o\n    \
         - test \"$(cat notes.txt)\" = mine\n    - test ! -e debug.log\n    - test ! -e reports/junit.xml\n    - test ! -e out/skip.tmp\n",
        home.path(),
    );
    p.write(".gitignore", "target/\n*.log\n");
    p.write("src/main.c", "int main;\n");
    p.git(&["init", "-q"]);
    p.git(&["add", ".gitignore", "src/main.c", ".gitlab-ci.yml"]);
    p.git(&["commit", "-q", "-m", "init"]);
    p.write("notes.txt", "mine");
    p.write("host.log", "ignored on the host");
    let (out, events) = p.run(&[]);
    succeeded(&out);
    let build = kept_dir(&events, "build").expect("build's artifacts");
    assert_eq!(
        files_under(&build),
        ["notes.txt", "out/result.txt", "reports/junit.xml", "target/app.o"],
        "untracked (the ignored target/ too) + paths, less exclude and tracked; the junit report kept (though excluded from the archive)"
    );
    let lines = log(&events, "build");
    assert!(lines.iter().any(|l| l.contains("saved as artifacts (out/, untracked files)")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("1 report file saved with the artifacts")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("WARNING: none.xml: no matching files")), "{lines:#?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("untracked"), "no note about untracked any more: {stderr}");
}
