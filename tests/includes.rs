//! `glci run` with a pipeline composed of `include:` entries (issue 17): wildcard and variable
//! `local` paths, `include: rules`, and the errors (loop, missing file) named by file, line and
//! key. The pipelines run on the real Docker engine in `glci-test/busybox:e2e`, imported once
//! from the busybox rootfs recipe (as in run_e2e.rs): no image is pulled.

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Output};

use common::{glci_run, run, show, temp_dir};
use serde_json::Value;

fn image() {
    common::busybox_image();
}

/// A project directory holding `files` (path, contents).
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = temp_dir();
    for (path, text) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }
    dir
}

/// The jobs that finished, in the order they finished, with the first log line each printed.
fn finished_jobs(out: &Output) -> Vec<(String, String)> {
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", show(out))))
        .collect();
    let mut jobs: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "job_finished")
        .map(|e| {
            let job = e["job"].as_str().expect("job").to_string();
            let line = events
                .iter()
                .filter(|l| l["event"] == "log" && l["job"] == job.as_str())
                .filter_map(|l| l["line"].as_str())
                .find(|l| l.starts_with("said "))
                .unwrap_or_default()
                .to_string();
            (job, line)
        })
        .collect();
    jobs.sort();
    jobs
}

const JOB: &str = "  image: glci-test/busybox:e2e\n  script: [echo \"said $CI_JOB_NAME\"]\n";

#[test]
fn wildcards_variables_and_rules_compose_the_jobs_gitlab_would_run() {
    image();
    let dir = project(&[
        (
            ".gitlab-ci.yml",
            "include:\n\
             \x20 - 'ci/*.yml'\n\
             \x20 - 'teams/$CI_PROJECT_NAME/**.yml'\n\
             \x20 - local: '/solo/${CI_PROJECT_NAME}.yml'\n\
             \x20 - local: extra.yml\n    rules:\n      - if: $WITH_EXTRA == \"yes\"\n\
             \x20 - local: never.yml\n    rules:\n      - exists: [Dockerfile]\n        when: never\n      - when: always\n\
             variables:\n  TEAM: own\n",
        ),
        ("ci/build.yml", &format!("build:\n{JOB}")),
        ("ci/test.yml", &format!("test:\n{JOB}")),
        ("ci/nested/skipped.yml", &format!("nested:\n{JOB}")),
        ("teams/p/a.yml", &format!("team-a:\n{JOB}")),
        ("teams/p/sub/b.yml", &format!("team-b:\n{JOB}")),
        ("extra.yml", &format!("extra:\n{JOB}")),
        ("solo/p.yml", &format!("solo:\n{JOB}")),
        ("never.yml", &format!("never:\n{JOB}")),
        ("Dockerfile", "FROM scratch\n"),
    ]);
    let out = glci_run(dir.path(), &["--json", "--project", "g/p", "--env", "WITH_EXTRA=yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let jobs = finished_jobs(&out);
    let want: Vec<(String, String)> = ["build", "extra", "solo", "team-a", "team-b", "test"]
        .iter()
        .map(|j| (j.to_string(), format!("said {j}")))
        .collect();
    assert_eq!(jobs, want, "{}", show(&out));

    // Without the variable the rule leaves `extra.yml` out.
    let out = glci_run(dir.path(), &["--json", "--project", "g/p", "build"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = glci_run(dir.path(), &["--json", "--project", "g/p", "extra"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job named `extra`"), "{}", show(&out));
}

#[test]
fn include_errors_exit_2_naming_file_line_and_key() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[
                (".gitlab-ci.yml", "include:\n  - local: a.yml\n"),
                ("a.yml", "include: [b.yml]\n"),
                ("b.yml", "include: a.yml\n"),
            ],
            "b.yml",
            ":1: include: include loop: ",
        ),
        (
            &[(".gitlab-ci.yml", "j:\n  script: x\ninclude:\n  - ci/missing.yml\n")],
            ".gitlab-ci.yml",
            ":4: include[0]: local file `ci/missing.yml` does not exist",
        ),
        (
            &[(".gitlab-ci.yml", "include:\n  - local: a.yml\n    rules:\n      - when: manual\n")],
            ".gitlab-ci.yml",
            ":4: include[0].rules[0].when: ",
        ),
    ];
    for (files, file, want) in cases {
        let dir = project(files);
        let out = glci_run(dir.path(), &[]);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!("glci: error: {}{want}", dir.path().join(file).display());
        assert!(stderr.starts_with(&want), "wanted {want:?}\n{}", show(&out));
        assert_eq!(stderr.lines().count(), 1, "{}", show(&out));
    }
}

#[test]
fn spec_inputs_from_include_and_the_command_line() {
    image();
    let template = "spec:\n  inputs:\n    name:\n    count:\n      type: number\n      default: 1\n---\n\
        \"$[[ inputs.name ]]\":\n  image: glci-test/busybox:e2e\n  parallel: $[[ inputs.count ]]\n\
        \x20 script:\n    - echo \"said $[[ inputs.name | truncate(0, 4) ]]\"\n";
    let main = "spec:\n  inputs:\n    env:\n      options: [dev, prod]\n---\n\
        include:\n  - local: t.yml\n    inputs:\n      name: deploy-$[[ inputs.env ]]\n      count: 2\n";
    let dir = project(&[(".gitlab-ci.yml", main), ("t.yml", template)]);
    let out = glci_run(dir.path(), &["--json", "--input", "env=prod"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let jobs = finished_jobs(&out);
    let want = [("deploy-prod 1/2", "said depl"), ("deploy-prod 2/2", "said depl")];
    assert_eq!(jobs, want.map(|(j, l)| (j.to_string(), l.to_string())), "{}", show(&out));

    let out = glci_run(dir.path(), &["--input", "env=qa"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let want = format!(
        "glci: error: {}:3: spec.inputs.env: --input env=qa: `env` input: `qa` cannot be used because it is not in the list of allowed options",
        dir.path().join(".gitlab-ci.yml").display()
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), want, "{}", show(&out));

    let bad = main.replace("count: 2", "count: two");
    std::fs::write(dir.path().join(".gitlab-ci.yml"), bad).expect("write");
    let out = glci_run(dir.path(), &["--input", "env=dev"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let want = format!(
        "glci: error: {}:10: include[0].inputs.count: `count` input: provided value is not a number",
        dir.path().join(".gitlab-ci.yml").display()
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), want, "{}", show(&out));
}

#[test]
fn include_rules_changes_compare_with_the_default_branch() {
    image();
    let dir = project(&[
        (
            ".gitlab-ci.yml",
            "include:\n  - local: docs.yml\n    rules:\n      - changes: ['docs/**/*']\n\
             \x20 - local: src.yml\n    rules:\n      - changes: [src/*.c]\n",
        ),
        ("docs.yml", &format!("docs:\n{JOB}")),
        ("src.yml", &format!("src:\n{JOB}")),
        ("docs/a.md", "a\n"),
        ("src/a.c", "int a;\n"),
    ]);
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir.path()));
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
    git(&["checkout", "-q", "-b", "feature"]);
    std::fs::write(dir.path().join("docs/a.md"), "changed, not committed\n").expect("write");
    let out = glci_run(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(finished_jobs(&out), [("docs".to_string(), "said docs".to_string())], "{}", show(&out));
}
