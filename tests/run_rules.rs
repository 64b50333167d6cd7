//! `glci run` on pipelines whose jobs depend on how GitLab composes and filters them (issue 17
//! part B): `rules: changes` on real git repositories, `only`/`except`, `--list`/`--preview`,
//! child pipelines. Jobs run in real Docker containers (the busybox test image); every project
//! is a fresh git repository in a temp dir.

#![allow(clippy::unwrap_used)]
// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{events, glci_run, show, temp_dir};
use serde_json::Value;

/// The image every pipeline here names (`glci-test/busybox:e2e`, shared with run_e2e.rs).
fn image() {
    common::busybox_image();
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
        glci_run(self.path(), args)
    }
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

/// The `log` lines of `job`.
fn log(out: &Output, job: &str) -> Vec<String> {
    events(out)
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == job)
        .map(|e| e["line"].as_str().unwrap().to_string())
        .collect()
}

const POLICY_PIPELINE: &str = "\
default:
  image: glci-test/busybox:e2e
variables:
  GLOBAL_A: a
  GLOBAL_B: b
workflow:
  name: 'build of $CI_COMMIT_REF_NAME'
  auto_cancel: {on_new_commit: interruptible}
stages: [build, test]
compile:
  stage: build
  parallel:
    matrix:
      - {OS: [linux, mac], ARCH: [x64, arm]}
  script: [echo compiled $OS $ARCH]
release-only:
  stage: build
  script: [echo release]
  only: ['/^release\\/.*$/', tags]
not-on-release:
  stage: build
  script: [echo not-release]
  except:
    refs: [/^release/]
flagged:
  stage: build
  script: [echo flagged]
  only:
    variables: [$FLAG == \"on\"]
k8s:
  stage: build
  script: [echo k8s]
  only: {kubernetes: active}
x64-tests:
  stage: test
  needs:
    - job: compile
      parallel:
        matrix:
          - {ARCH: x64}
    - project: group/other
      job: lib
      ref: main
  inherit:
    variables: [GLOBAL_A]
  script:
    - echo \"A=${GLOBAL_A:-unset} B=${GLOBAL_B:-unset} name=$CI_PIPELINE_NAME\"
  rules:
    - if: $FLAG
      needs: [flagged]
    - when: on_success
";

#[test]
fn only_except_inherit_matrix_selectors_and_rules_needs_on_a_branch() {
    image();
    let repo = Repo::new();
    repo.write(".gitlab-ci.yml", POLICY_PIPELINE);
    repo.sh("git add . && git commit -qm one && git checkout -qb release/2.0");
    let out = repo.glci(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let want = [
        "compile: [linux, arm]",
        "compile: [linux, x64]",
        "compile: [mac, arm]",
        "compile: [mac, x64]",
        "release-only",
        "x64-tests",
    ];
    assert_eq!(finished_jobs(&out), want, "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("x64-tests.needs[1]: left out: `needs: project`"), "{}", show(&out));
    assert!(log(&out, "x64-tests").contains(&"A=a B=unset name=build of release/2.0".to_string()), "{}", show(&out));
    // The partial matrix selector: x64-tests needs the two x64 instances, and only those.
    let out = repo.glci(&["--json", "x64-tests"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(finished_jobs(&out), ["compile: [linux, x64]", "compile: [mac, x64]", "x64-tests"], "{}", show(&out));

    // On main with FLAG=on: the rule's needs replace the job's.
    repo.sh("git checkout -q main");
    let out = repo.glci(&["--json", "--env", "FLAG=on", "x64-tests"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(finished_jobs(&out), ["flagged", "x64-tests"], "only the rule's need runs with it\n{}", show(&out));
}

#[test]
fn list_shows_every_job_and_why_and_preview_the_composed_configuration() {
    let repo = Repo::new();
    repo.write(
        ".gitlab-ci.yml",
        "include: ci/t.yml\nworkflow:\n  name: demo $CI_COMMIT_REF_NAME\n.base:\n  image: alpine\n  script: [echo base]\n\
         build:\n  extends: .base\n  rules:\n    - changes: [src/**/*]\n      when: manual\n    - when: never\n\
         test:\n  extends: .base\n  needs: [{job: tmpl-job, optional: true}]\n  allow_failure: {exit_codes: [3]}\n  \
         script: [!reference [.base, script], 'echo \"a: b\"']\n\
         tagged:\n  extends: .base\n  only: [tags]\n",
    );
    repo.write("ci/t.yml", "tmpl-job:\n  image: busybox\n  script: [echo t]\n  except: [/^fix-/]\n");
    repo.write("src/a.c", "int a;\n");
    repo.sh("git add . && git commit -qm one && echo docs > README && git add README && git commit -qm two");

    let out = repo.glci(&["--list"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let file = repo.path().join(".gitlab-ci.yml");
    let canonical = file.canonicalize().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "Pipeline: demo main\n\
             JOB       STAGE  WHEN        ALLOW_FAILURE  NEEDS          IN PIPELINE\n\
             tmpl-job  test   on_success  false          (stage order)  yes: except does not exclude it\n\
             build     test   never       false          (stage order)  no: rule 2 ({}:12) matched\n\
             test      test   on_success  exit codes 3   tmpl-job       yes: no rules\n\
             tagged    test   never       false          (stage order)  no: only: refs [tags] (branch `main`, source push)\n",
            canonical.display()
        ),
        "{}",
        show(&out)
    );
    repo.sh("git checkout -qb fix-1 && echo 'int b;' >> src/a.c");
    let out = repo.glci(&["--list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let jobs = events(&out);
    let by_name = |name: &str| jobs.iter().find(|j| j["job"] == name).unwrap().clone();
    assert_eq!(
        (by_name("build")["when"].as_str(), by_name("build")["included"].as_bool()),
        (Some("manual"), Some(true))
    );
    assert_eq!(by_name("tmpl-job")["reason"], "except: refs [/^fix-/] (branch `fix-1`, source push)");
    assert_eq!(by_name("test")["allow_failure"], serde_json::json!({"exit_codes": [3]}));
    assert_eq!(by_name("test")["needs"], serde_json::json!(["tmpl-job"]));

    let out = repo.glci(&["--preview"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(yaml.starts_with("---\ntmpl-job:\n  image: busybox\n"), "included jobs first: {yaml}");
    assert!(
        yaml.contains(
            "\ntest:\n  image: alpine\n  script:\n  -\n    - echo base\n  - \"echo \\\"a: b\\\"\"\n  extends: .base\n"
        ),
        "{yaml}"
    );
    assert!(!yaml.contains("include"), "{yaml}");
    let out = repo.glci(&["--preview", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["build"]["image"], "alpine");
    assert_eq!(value[".base"]["script"], serde_json::json!(["echo base"]));

    // A broken pipeline is an error for both, as for a run.
    repo.write(".gitlab-ci.yml", "j:\n  image: x\n  script: [echo]\n  needs: [nope]\n");
    for flag in ["--list", "--preview"] {
        let out = repo.glci(&[flag]);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(":4: j.needs[0]: `nope` is not a job"), "{}", show(&out));
    }
}

#[test]
fn trigger_project_jobs_are_skipped_with_the_reason_and_their_needs_dropped() {
    image();
    let repo = Repo::new();
    repo.write(
        ".gitlab-ci.yml",
        "stages: [build, deploy]\nbuild:\n  stage: build\n  image: glci-test/busybox:e2e\n  script: [echo built]\n\
         downstream:\n  stage: build\n  trigger:\n    project: group/deployer\n    strategy: depend\n\
         after:\n  stage: deploy\n  image: glci-test/busybox:e2e\n  needs: [build, downstream]\n  script: [echo after]\n",
    );
    repo.sh("git add . && git commit -qm one");
    let out = repo.glci(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(finished_jobs(&out), ["after", "build"], "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            ".gitlab-ci.yml:6: downstream: trigger: project `group/deployer`: skipped, multi-project pipelines are \
             not run locally"
        ),
        "{}",
        show(&out)
    );
    let out = repo.glci(&["--list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no: trigger: project `group/deployer`: skipped"),
        "{}",
        show(&out)
    );

    repo.write(".gitlab-ci.yml", "child:\n  trigger:\n    include: child.yml\n");
    let out = repo.glci(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        // Child pipelines run (tests/child_pipelines.rs); a missing child file is the error.
        String::from_utf8_lossy(&out.stderr)
            .contains(":3: child.trigger.include: local file `child.yml` does not exist"),
        "{}",
        show(&out)
    );
}
