//! `glci run` on pipelines whose jobs depend on how GitLab composes and filters them (issue 17
//! part B): `rules: changes` on real git repositories, `only`/`except`, `--list`/`--preview`,
//! child pipelines. Jobs run in real Docker containers (the busybox test image); every project
//! is a fresh git repository in a temp dir.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{build_busybox_rootfs, glci, need_docker_daemon, run, temp_dir};
use serde_json::Value;

/// The image every pipeline here names (shared with run_e2e.rs: same deterministic rootfs).
const IMAGE: &str = "glci-test/busybox:e2e";

fn image() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        need_docker_daemon();
        let present =
            Command::new("docker").args(["image", "inspect", IMAGE]).output().is_ok_and(|o| o.status.success());
        if !present {
            let dir = temp_dir();
            let tar = build_busybox_rootfs(&dir.path().join("rootfs.tar"));
            run(Command::new("docker").args(["import", "--change", "EXPOSE 8080"]).arg(&tar).arg(IMAGE));
        }
    });
}

/// A git repository in a fresh temp dir, on branch `main`.
struct Repo(tempfile::TempDir);

impl Repo {
    fn new() -> Repo {
        let repo = Repo(temp_dir());
        repo.sh("git init -q -b main . && git config user.email t@example.com && git config user.name t");
        repo
    }

    /// Runs shell lines in the repository; they must succeed.
    fn sh(&self, script: &str) {
        let out = Command::new("sh").arg("-c").arg(script).current_dir(self.path()).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// `glci run --no-registry ARGS` here, to completion.
    fn glci(&self, args: &[&str]) -> Output {
        glci().args(["run", "--no-registry"]).args(args).current_dir(self.path()).stdin(Stdio::null()).output().unwrap()
    }
}

fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", show(out))))
        .collect()
}

/// The jobs that finished, sorted.
fn finished_jobs(out: &Output) -> Vec<String> {
    let mut jobs: Vec<String> = events(out)
        .iter()
        .filter(|e| e["event"] == "job_finished")
        .map(|e| e["job"].as_str().unwrap().to_string())
        .collect();
    jobs.sort();
    jobs
}

const CHANGES_PIPELINE: &str = "\
default:
  image: glci-test/busybox:e2e
docs:
  script: [echo docs]
  rules:
    - changes: ['docs/**/*', '*.md']
backend:
  script: [echo backend]
  rules:
    - changes:
        paths: ['src/*.{rs,toml}']
frontend:
  script: [echo frontend]
  rules:
    - changes: [web/**/*]
since-v1:
  script: [echo since-v1]
  rules:
    - changes:
        paths: [web/**/*]
        compare_to: $RELEASE_TAG
variables:
  RELEASE_TAG: v1
";

#[test]
fn rules_changes_compare_the_work_tree_with_the_merge_base_or_the_previous_commit() {
    image();
    let repo = Repo::new();
    repo.write(".gitlab-ci.yml", CHANGES_PIPELINE);
    repo.write("src/main.rs", "fn main() {}\n");
    repo.write("web/index.html", "<p>\n");
    repo.sh("git add . && git commit -qm base && git tag v1");
    repo.write("web/index.html", "<p>2\n");
    repo.sh("git commit -qam web");

    // On the default branch: against the previous commit (only web/ changed).
    let out = repo.glci(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(finished_jobs(&out), ["frontend", "since-v1"], "{}", show(&out));

    // On a branch: against the merge base with main, uncommitted and untracked files included;
    // the commit on main before the branch point does not count.
    repo.sh("git checkout -qb feature && echo 'fn x() {}' >> src/main.rs && git commit -qam backend");
    repo.write("docs/guide.txt", "untracked\n");
    let out = repo.glci(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(finished_jobs(&out), ["backend", "docs", "since-v1"], "{}", show(&out));

    // --changes-against: the file's compare_to still wins for since-v1.
    std::fs::remove_file(repo.path().join("docs/guide.txt")).unwrap();
    let out = repo.glci(&["--json", "--changes-against", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(finished_jobs(&out), ["since-v1"], "nothing changed since HEAD\n{}", show(&out));
    let out = repo.glci(&["--json", "--changes-against", "v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(finished_jobs(&out), ["backend", "frontend", "since-v1"], "{}", show(&out));
}

#[test]
fn rules_changes_errors_name_the_ref_and_the_flag() {
    let repo = Repo::new();
    repo.write(
        ".gitlab-ci.yml",
        "j:\n  image: x\n  script: [echo]\n  rules:\n    - changes:\n        paths: [a]\n        compare_to: nope\n",
    );
    repo.sh("git add . && git commit -qm one");
    let out = repo.glci(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".gitlab-ci.yml:7: j.rules[0].changes.compare_to: `nope` is not a valid ref"),
        "{}",
        show(&out)
    );
    let out = repo.glci(&["--changes-against", "no-such-ref"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--changes-against: `no-such-ref` is no commit"));
}
