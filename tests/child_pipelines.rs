//! Child pipelines (issue 17) end to end on the real Docker engine: `trigger: include` runs the
//! child in the same `glci run`, its jobs named `trigger: job` in the log, the summary and the
//! `--json` events (`pipeline`); `strategy: depend` makes the trigger job follow the child;
//! forwarded variables; a dynamic child from an artifact; `needs: pipeline: $PARENT_PIPELINE_ID`
//! artifacts; `trigger: project` with `[gitlab] projects`; the errors with file, line and key.
//!
//! Jobs run in `glci-test/busybox:e2e` (tests/common): no image is pulled.

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{events, glci_run, glci_run_in, run_stdout, show, temp_dir};
use serde_json::Value;

const IMAGE: &str = "image: glci-test/busybox:e2e\n";

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = temp_dir();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write project file");
    }
    dir
}

/// The root pipeline's `pipeline_finished` event (a child's carries its name).
fn root_finished(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["event"] == "pipeline_finished" && e["pipeline"].is_null())
        .expect("the root's pipeline_finished")
}

fn finished<'a>(events: &'a [Value], job: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "job_finished" && e["job"] == job)
        .unwrap_or_else(|| panic!("no job_finished for {job}"))
}

fn log(events: &[Value], job: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == job)
        .map(|e| e["line"].as_str().expect("line").to_string())
        .collect()
}

fn assert_nothing_left(events: &[Value]) {
    let id = events.iter().find(|e| e["event"] == "pipeline_started").expect("pipeline_started")["run_id"]
        .as_str()
        .expect("run_id")
        .to_string();
    let filter = format!("label=glci.run={id}");
    let containers = run_stdout(Command::new("docker").args(["ps", "-a", "-q", "--filter", &filter]));
    assert_eq!(containers.trim(), "", "containers of run {id} left behind");
}

#[test]
fn a_failing_child_with_strategy_depend_fails_its_trigger_job_and_the_run() {
    common::busybox_image();
    let main = format!(
        "{IMAGE}stages: [build, child, after]\nfirst:\n  stage: build\n  script: [echo first]\nkid:\n  stage: child\n  \
         trigger:\n    include: child.yml\n    strategy: depend\nafter:\n  stage: after\n  script: [echo after]\n"
    );
    let child = format!("{IMAGE}ok:\n  script: [echo fine]\nbad:\n  script: [echo failing, exit 3]\n");
    let dir = project(&[(".gitlab-ci.yml", &main), ("child.yml", &child)]);
    let out = glci_run(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let events = events(&out);
    assert_eq!(finished(&events, "kid: bad")["status"], "failed");
    assert_eq!(finished(&events, "kid: bad")["pipeline"], "kid");
    assert_eq!(finished(&events, "kid: ok")["status"], "success");
    let kid = finished(&events, "kid");
    assert_eq!((kid["status"].as_str(), kid["pipeline"].as_null()), (Some("failed"), Some(())));
    assert!(kid["reason"].as_str().is_some_and(|r| r.contains("downstream pipeline failed")), "{kid}");
    // GitLab: a later stage of the parent does not run after a failed job.
    assert_eq!(finished(&events, "after")["status"], "skipped");
    let root = root_finished(&events);
    assert_eq!(root["status"], "failed");
    let jobs: Vec<&str> = root["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["job"].as_str()).collect();
    assert_eq!(jobs, ["first", "kid", "kid: ok", "kid: bad", "after"]);
    assert!(log(&events, "kid: bad").iter().any(|l| l == "failing"), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kid: bad"), "{}", show(&out));
    assert_nothing_left(&events);

    // The text output: child lines prefixed `kid: bad`, the summary lists them.
    let out = glci_run(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("kid: bad") && l.ends_with("| failing")), "{text}");
    let mut table = text.lines().skip_while(|l| !l.starts_with("JOB "));
    let summary = table.find(|l| l.starts_with("kid: bad ")).expect("kid: bad in the summary");
    assert!(summary.contains("failed"), "{summary}");
    assert!(text.contains("Pipeline failed in") && text.contains("kid, kid: bad failed"), "{text}");
}

#[test]
fn a_child_without_depend_does_not_hold_the_parent_but_the_run_reports_it() {
    common::busybox_image();
    let main = format!(
        "{IMAGE}stages: [child, after]\nkid:\n  stage: child\n  trigger:\n    include: child.yml\nafter:\n  stage: \
         after\n  script: [echo after]\n"
    );
    let child = format!("{IMAGE}bad:\n  script: [exit 1]\n");
    let dir = project(&[(".gitlab-ci.yml", &main), ("child.yml", &child)]);
    let out = glci_run(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let events = events(&out);
    // GitLab's bridge job succeeds once the child exists; the parent's later stage runs.
    assert_eq!(finished(&events, "kid")["status"], "success");
    assert_eq!(finished(&events, "after")["status"], "success");
    assert_eq!(finished(&events, "kid: bad")["status"], "failed");
    assert_eq!(root_finished(&events)["status"], "failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline failed: kid: bad failed"), "{}", show(&out));
}

#[test]
fn a_passing_child_sees_the_forwarded_variables() {
    common::busybox_image();
    let main = format!(
        "{IMAGE}variables:\n  GLOBAL_V: from-parent\nkid:\n  variables:\n    TRIGGER_V: trig-$CI_PIPELINE_ID\n  \
         trigger:\n    include:\n      - local: child.yml\n    forward:\n      pipeline_variables: true\nquiet:\n  \
         trigger:\n    include: child.yml\n    forward:\n      yaml_variables: false\n"
    );
    let child = format!(
        "{IMAGE}variables:\n  GLOBAL_V: child-own\nshow:\n  script:\n    - echo \"source=$CI_PIPELINE_SOURCE \
         global=$GLOBAL_V trigger=$TRIGGER_V cli=$FROM_CLI\"\n"
    );
    let dir = project(&[(".gitlab-ci.yml", &main), ("child.yml", &child)]);
    let out = glci_run(dir.path(), &["--json", "--env", "FROM_CLI=given"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    let parent_id = events.iter().find(|e| e["event"] == "pipeline_started" && e["pipeline"].is_null()).expect("root")
        ["pipeline_id"]
        .clone();
    let line = |job: &str| log(&events, job).into_iter().find(|l| l.starts_with("source=")).expect("the echo");
    assert_eq!(
        line("kid: show"),
        format!("source=parent_pipeline global=from-parent trigger=trig-{parent_id} cli=given")
    );
    // forward: yaml_variables: false and no pipeline_variables: the child's own values only.
    assert_eq!(line("quiet: show"), "source=parent_pipeline global=child-own trigger= cli=");
    let child_started: Vec<&Value> =
        events.iter().filter(|e| e["event"] == "pipeline_started" && e["pipeline"] == "kid").collect();
    assert_eq!(child_started.len(), 1);
    assert_ne!(child_started[0]["pipeline_id"], parent_id);
    assert_nothing_left(&events);
}

#[test]
fn a_dynamic_child_comes_from_an_artifact_and_gets_the_parents_artifacts() {
    common::busybox_image();
    let main = r#"image: glci-test/busybox:e2e
stages: [build, child]
gen:
  stage: build
  script:
    - |
      cat > gen.yml <<'EOF'
      image: glci-test/busybox:e2e
      made:
        needs:
          - pipeline: $PARENT_PIPELINE_ID
            job: gen
        script: [cat data.txt]
      EOF
    - echo data-from-gen > data.txt
  artifacts:
    paths: [gen.yml, data.txt]
kid:
  stage: child
  variables:
    PARENT_PIPELINE_ID: $CI_PIPELINE_ID
  trigger:
    include:
      - artifact: gen.yml
        job: gen
    strategy: depend
"#;
    let dir = project(&[(".gitlab-ci.yml", main)]);
    let out = glci_run(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    assert_eq!(finished(&events, "kid: made")["status"], "success");
    let lines = log(&events, "kid: made");
    assert!(lines.iter().any(|l| l == "Downloading artifacts from gen (parent pipeline)"), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "data-from-gen"), "{lines:#?}");
    assert_eq!(finished(&events, "kid")["status"], "success");
    assert_nothing_left(&events);

    // The file missing from the artifacts: the trigger job fails with GitLab's reason.
    let missing = main.replace("artifact: gen.yml", "artifact: other.yml");
    std::fs::write(dir.path().join(".gitlab-ci.yml"), missing).expect("rewrite");
    let out = glci_run(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let again = self::events(&out);
    let kid = finished(&again, "kid");
    assert_eq!(kid["status"], "failed");
    let reason = kid["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("downstream pipeline can not be created: `other.yml` is not in the artifacts"), "{kid}");
}

#[test]
fn list_and_preview_show_the_child_pipeline() {
    let main = format!("{IMAGE}kid:\n  trigger:\n    include: child.yml\n");
    let child = format!("{IMAGE}stages: [one]\nc1:\n  stage: one\n  script: [echo]\n");
    let dir = project(&[(".gitlab-ci.yml", &main), ("child.yml", &child)]);
    let out = glci_run(dir.path(), &["--list"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().map(|l| l.split("  ").next().unwrap_or_default()).collect();
    assert_eq!(rows, ["JOB", "kid", "kid: c1"], "{text}");
    let out = glci_run(dir.path(), &["--preview"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("---\n# child pipeline of trigger job `kid` (trigger: include)\nimage:"), "{text}");
    assert!(text.contains("c1:\n  stage: one"), "{text}");
}

#[test]
fn bad_triggers_exit_2_naming_file_line_and_key() {
    let cases: [(&str, &str); 5] = [
        (
            "kid:\n  trigger:\n    include: missing.yml\n",
            ":3: kid.trigger.include: local file `missing.yml` does not exist",
        ),
        (
            "kid:\n  trigger:\n    include: child.yml\n    project: g/p\n",
            ":4: kid.trigger.project: a trigger takes `include` (a child pipeline) or `project`, not both",
        ),
        (
            "kid:\n  trigger:\n    include: child.yml\n    strategy: later\n",
            ":4: kid.trigger.strategy: unknown value \"later\" (use depend or mirror)",
        ),
        (
            "gen:\n  image: x\n  script: [x]\nkid:\n  trigger:\n    include: [{artifact: g.yml, job: gen}]\n",
            ":6: kid.trigger.include[0].job: trigger job `kid` does not wait for `gen`",
        ),
        (
            "kid:\n  trigger:\n    include: [{artifact: g.yml, job: nope}]\n",
            ":3: kid.trigger.include[0].job: job `nope` is not in",
        ),
    ];
    for (yaml, expected) in cases {
        let dir = project(&[(".gitlab-ci.yml", yaml), ("child.yml", "c:\n  image: x\n  script: [x]\n")]);
        let out = glci_run(dir.path(), &[]);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!("glci: error: {}{expected}", dir.path().join(".gitlab-ci.yml").display());
        assert!(stderr.starts_with(&want), "{yaml}\nwanted {want:?}\ngot {stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", show(&out));
}

#[test]
fn trigger_project_runs_the_mapped_checkout_and_skips_unmapped_ones() {
    common::busybox_image();
    let root = temp_dir();
    let (app, deployer, home) = (root.path().join("app"), root.path().join("deployer"), root.path().join("home"));
    for dir in [&app, &deployer, &home] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    let downstream = format!(
        "{IMAGE}deploy:\n  script:\n    - echo \"project=$CI_PROJECT_PATH ref=$CI_COMMIT_REF_NAME \
         source=$CI_PIPELINE_SOURCE up=$FROM_UP\"\n    - cat marker.txt\n    - test \"$FAIL\" != yes\n"
    );
    std::fs::write(deployer.join(".gitlab-ci.yml"), downstream).expect("write");
    std::fs::write(deployer.join("marker.txt"), "deployer-file\n").expect("write");
    git(&deployer, &["init", "-q"]);
    git(&deployer, &["add", "."]);
    git(&deployer, &["commit", "-qm", "one"]);
    git(&deployer, &["branch", "release"]);
    // Relative to the config file's directory.
    std::fs::write(home.join("config.toml"), "[gitlab.projects]\n\"group/deployer\" = \"../deployer\"\n")
        .expect("config");
    let main = format!(
        "{IMAGE}stages: [build, deploy, after]\nbuild:\n  stage: build\n  script: [echo build]\ndownstream:\n  \
         stage: deploy\n  variables:\n    FROM_UP: up-$CI_PIPELINE_ID\n  trigger:\n    project: group/deployer\n    \
         branch: release\n    strategy: depend\nother:\n  stage: deploy\n  trigger: group/unmapped\nafter:\n  \
         stage: after\n  script: [echo after]\n"
    );
    std::fs::write(app.join(".gitlab-ci.yml"), &main).expect("write");
    let out = glci_run_in(&app, &["--json"], Some(&home));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    let lines = log(&events, "downstream: deploy");
    assert!(
        lines.iter().any(|l| l.starts_with("project=group/deployer ref=release source=pipeline up=up-")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l == "deployer-file"), "{lines:#?}");
    assert_eq!(finished(&events, "downstream")["status"], "success");
    assert_eq!(finished(&events, "downstream: deploy")["pipeline"], "downstream");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("other: trigger: project `group/unmapped`: skipped"), "{}", show(&out));
    assert!(!events.iter().any(|e| e["event"] == "job_finished" && e["job"] == "other"), "{}", show(&out));
    assert_nothing_left(&events);

    // strategy: depend: a failing downstream fails the trigger job, and the later stage is skipped.
    let failing = main.replace("    FROM_UP:", "    FAIL: \"yes\"\n    FROM_UP:");
    std::fs::write(app.join(".gitlab-ci.yml"), failing).expect("write");
    let out = glci_run_in(&app, &["--json"], Some(&home));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let events = self::events(&out);
    assert_eq!(finished(&events, "downstream: deploy")["status"], "failed");
    assert_eq!(finished(&events, "downstream")["status"], "failed");
    assert_eq!(finished(&events, "after")["status"], "skipped");

    // Without the mapping the project is skipped with the reason.
    std::fs::write(app.join(".gitlab-ci.yml"), &main).expect("write");
    let out = glci_run(&app, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("downstream: trigger: project `group/deployer`: skipped"));
}
