//! One job as GitLab's Docker runner runs it (issue 15), on the real Docker engine: the shell
//! the runner's detection picks (sh in a busybox image, bash in an image that has it), the one
//! script every line is a command of (cd/export/functions/`set +e` carry on, a false `&&` list
//! fails only as the last line), the exact `$ cmd` trace, exit codes and `CI_JOB_STATUS`.
//!
//! Images are built locally: `glci-test/busybox:e2e` from the busybox rootfs recipe and
//! `glci-test/bash:e2e` from `fixtures/images/bash-rootfs.sh` (the host's bash and its libraries
//! on top of busybox). Needs busybox-static, bash, ldd and a running dockerd.

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{events, fixture_path, glci, glci_run_in, need, need_docker_daemon, run, show, temp_dir};
use serde_json::Value;

const BUSYBOX: &str = common::BUSYBOX_IMAGE;
const BASH: &str = "glci-test/bash:e2e";

/// Imports `image` from the rootfs `build` makes, once per test binary, unless the engine has
/// it (the recipes are deterministic: an image left by an earlier run is the same).
fn import_once(image: &str, build: impl FnOnce(&Path) -> std::path::PathBuf) {
    need_docker_daemon();
    let present = Command::new("docker").args(["image", "inspect", image]).output().is_ok_and(|o| o.status.success());
    if !present {
        let dir = temp_dir();
        let tar = build(&dir.path().join("rootfs.tar"));
        run(Command::new("docker").arg("import").arg(&tar).arg(image));
    }
}

fn images() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        // The same image (with its EXPOSE) as the other `glci run` test binaries.
        common::busybox_image();
        need("ldd");
        import_once(BASH, |path| {
            run(Command::new("bash").arg(fixture_path("images/bash-rootfs.sh")).arg(path));
            path.to_path_buf()
        });
    });
}

fn write_project(yaml: &str) -> tempfile::TempDir {
    let dir = temp_dir();
    std::fs::write(dir.path().join(".gitlab-ci.yml"), yaml).expect("write .gitlab-ci.yml");
    dir
}

/// `glci run --no-registry --json ARGS` in `dir`, with a fresh `GLCI_HOME` (no variables file or
/// config of the machine's user).
fn glci_run(dir: &Path, args: &[&str]) -> Output {
    let home = temp_dir();
    glci_run_home(dir, home.path(), args)
}

fn glci_run_home(dir: &Path, home: &Path, args: &[&str]) -> Output {
    glci_run_in(dir, &[&["--json"], args].concat(), Some(home))
}

fn finished<'a>(events: &'a [Value], job: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "job_finished" && e["job"] == job)
        .unwrap_or_else(|| panic!("no job_finished for {job}"))
}

/// `text` without ANSI SGR sequences (`ESC [ ... m`), as a person reads the trace.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The job's own output (what the container printed), in order, without colours.
fn trace(events: &[Value], job: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == job && e["source"] == "job")
        .map(|e| plain(e["line"].as_str().expect("line")))
        .collect()
}

/// glci's own notes about the job.
fn notes(events: &[Value], job: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == job && e["source"] == "glci")
        .map(|e| e["line"].as_str().expect("line").to_string())
        .collect()
}

const SHARED_SHELL: &str = r#"
shared:
  image: IMAGE
  before_script:
    - echo "before $CI_JOB_STATUS"
    - cd /tmp && export FROM_BEFORE=yes
    - 'greet() { echo "hello $1"; }'
  script:
    - false && echo no
    - '[ -f /nonexistent ] && echo skip'
    - pwd
    - 'echo "from before: $FROM_BEFORE"'
    - greet world
    - set +e
    - "false"
    - echo "after set +e"
    - 'if [ -n "$BASH_VERSION" ]; then echo "shell bash"; else echo "shell sh"; fi'
    - |
      echo first
      echo second
  after_script:
    - echo "after $CI_JOB_STATUS"
"#;

/// The trace of [`SHARED_SHELL`], exactly as GitLab's runner prints it, with `shell` the
/// shell's name the job prints.
fn shared_trace(shell: &str) -> Vec<String> {
    [
        "$ echo \"before $CI_JOB_STATUS\"",
        "before running",
        "$ cd /tmp && export FROM_BEFORE=yes",
        "$ greet() { echo \"hello $1\"; }",
        "$ false && echo no",
        "$ [ -f /nonexistent ] && echo skip",
        "$ pwd",
        "/tmp",
        "$ echo \"from before: $FROM_BEFORE\"",
        "from before: yes",
        "$ greet world",
        "hello world",
        "$ set +e",
        "$ false",
        "$ echo \"after set +e\"",
        "after set +e",
        "$ if [ -n \"$BASH_VERSION\" ]; then echo \"shell bash\"; else echo \"shell sh\"; fi",
        &format!("shell {shell}"),
        "$ echo first # collapsed multi-line command",
        "first",
        "second",
        "Running after script...",
        "$ echo \"after $CI_JOB_STATUS\"",
        "after success",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn lines_are_commands_of_one_sh_script_in_a_busybox_image() {
    images();
    let dir = write_project(&SHARED_SHELL.replace("IMAGE", BUSYBOX));
    let out = glci_run(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    assert_eq!(trace(&events, "shared"), shared_trace("sh"), "{}", show(&out));
}

#[test]
fn lines_are_commands_of_one_bash_script_where_the_image_has_bash() {
    images();
    let dir = write_project(&SHARED_SHELL.replace("IMAGE", BASH));
    let out = glci_run(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    assert_eq!(trace(&events, "shared"), shared_trace("bash"), "{}", show(&out));
}

#[test]
fn bash_features_work_and_every_phase_uses_the_same_shell() {
    images();
    let yaml = r#"
bashisms:
  image: glci-test/bash:e2e
  before_script:
    - echo "before ${BASH_VERSION:+in bash}"
  script:
    - echo {a,b}
    - arr=(x y z); echo "${arr[1]}"
    - '[[ -n "$BASH_VERSION" ]] && echo "double brackets"'
    - source /dev/null && echo sourced
  after_script:
    - echo "after ${BASH_VERSION:+in bash}"
pipefail-bash:
  image: glci-test/bash:e2e
  script:
    - false | true
    - echo never
pipefail-sh:
  image: glci-test/busybox:e2e
  script:
    - false | true
    - echo never
"#;
    let dir = write_project(yaml);
    let out = glci_run(dir.path(), &["-j", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let events = events(&out);
    let bash = trace(&events, "bashisms");
    for line in ["before in bash", "a b", "y", "double brackets", "sourced", "after in bash"] {
        assert!(bash.iter().any(|l| l == line), "{line:?} missing: {bash:#?}");
    }
    assert_eq!(finished(&events, "bashisms")["status"], "success", "{}", show(&out));
    // `set -eo pipefail` in bash; busybox's sh has pipefail too, so the runner's probe sets it.
    for job in ["pipefail-bash", "pipefail-sh"] {
        assert_eq!(trace(&events, job), ["$ false | true"], "{job}: {}", show(&out));
        assert_eq!(finished(&events, job)["exit_code"], 1, "{job}");
    }
}

#[test]
fn a_false_and_list_fails_the_job_only_as_its_last_line_and_exit_codes_count() {
    images();
    let yaml = r#"
default:
  image: glci-test/busybox:e2e
last-line:
  script:
    - echo start
    - '[ -f missing ] && echo skip'
coded:
  script:
    - echo one
    - exit 3
    - echo never
  after_script:
    - echo "after $CI_JOB_STATUS"
  allow_failure:
    exit_codes: [3]
"#;
    let dir = write_project(yaml);
    let out = glci_run(dir.path(), &["-j", "2"]);
    assert_eq!(out.status.code(), Some(1), "last-line fails the pipeline\n{}", show(&out));
    let events = events(&out);
    // As on GitLab: the runner's `: | eval '<script>'` returns the status of the last command,
    // and errexit stops there.
    assert_eq!(trace(&events, "last-line"), ["$ echo start", "start", "$ [ -f missing ] && echo skip"]);
    let last = finished(&events, "last-line");
    assert_eq!((last["status"].as_str(), last["exit_code"].as_i64()), (Some("failed"), Some(1)));
    assert_eq!(notes(&events, "last-line").last().map(String::as_str), Some("ERROR: Job failed: exit code 1"));

    assert_eq!(
        trace(&events, "coded"),
        ["$ echo one", "one", "$ exit 3", "Running after script...", "$ echo \"after $CI_JOB_STATUS\"", "after failed"]
    );
    let coded = finished(&events, "coded");
    assert_eq!(coded["exit_code"], 3);
    assert_eq!(coded["allow_failure"], true, "{coded}");
}

#[test]
fn tag_pipeline_environment_coverage_and_runtime_variables() {
    images();
    let yaml = r#"
cov:
  image: glci-test/busybox:e2e
  timeout: 5m
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    url: https://$CI_ENVIRONMENT_SLUG.example.com
  coverage: '/Coverage: \d+\.\d+%/'
  script:
    - 'echo "Coverage: 12.50%"'
    - 'echo "Coverage: 81.25%"'
    - echo "env=$CI_ENVIRONMENT_NAME tier=$CI_ENVIRONMENT_TIER action=$CI_ENVIRONMENT_ACTION url=$CI_ENVIRONMENT_URL"
    - echo "ref=$CI_COMMIT_REF_NAME tag=$CI_COMMIT_TAG branch=${CI_COMMIT_BRANCH:-none}"
    - echo "timeout=$CI_JOB_TIMEOUT concurrent=$CI_CONCURRENT_ID started=$CI_JOB_STARTED_AT"
"#;
    let dir = write_project(yaml);
    let out = glci_run(dir.path(), &["--tag", "v1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    let lines = trace(&events, "cov");
    let env_line = lines.iter().find(|l| l.starts_with("env=")).unwrap_or_else(|| panic!("{lines:#?}"));
    let slug = env_line.split("url=https://").nth(1).and_then(|u| u.strip_suffix(".example.com")).expect("url");
    assert!(slug.starts_with("review-v1-0-0-") && slug.len() == 20, "{env_line}");
    assert_eq!(env_line, &format!("env=review/v1-0-0 tier=development action=start url=https://{slug}.example.com"));
    assert!(lines.iter().any(|l| l == "ref=v1.0.0 tag=v1.0.0 branch=none"), "{lines:#?}");
    let runtime = lines.iter().find(|l| l.starts_with("timeout=")).expect("runtime line");
    assert!(runtime.starts_with("timeout=300 concurrent=0 started=20"), "{runtime}");
    assert!(runtime.ends_with('Z'), "{runtime}");
    assert_eq!(finished(&events, "cov")["coverage"], 81.25, "{}", show(&out));

    // The text summary gets a COVERAGE column.
    let text =
        glci().args(["run", "--no-registry"]).current_dir(dir.path()).stdin(Stdio::null()).output().expect("glci");
    assert_eq!(text.status.code(), Some(0), "{}", show(&text));
    let stdout = plain(&String::from_utf8_lossy(&text.stdout));
    let header = stdout.lines().find(|l| l.starts_with("JOB")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(header.trim_end().ends_with("DURATION  COVERAGE"), "{header}");
    let row = stdout.lines().find(|l| l.starts_with("cov  test")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.trim_end().ends_with("81.25%"), "{row}");
}

#[test]
fn bad_values_of_job_keys_exit_2_naming_file_line_and_key() {
    let cases = [
        ("j:\n  script: [x]\n  coverage: 'Coverage: \\d+'\n", ".gitlab-ci.yml:3: j.coverage"),
        ("j:\n  script: [x]\n  coverage: '/(unclosed/'\n", ".gitlab-ci.yml:3: j.coverage"),
        ("j:\n  script: [x]\n  environment:\n    url: https://x\n", ".gitlab-ci.yml:3: j.environment"),
        ("j:\n  script: [x]\n  environment: {name: x, action: deploy}\n", ".gitlab-ci.yml:3: j.environment.action"),
        ("j:\n  script: [x]\n  environment: {name: x, deployment_tier: prod}\n", "j.environment.deployment_tier"),
        ("j:\n  script: [x]\n  resource_group: ''\n", ".gitlab-ci.yml:3: j.resource_group"),
    ];
    for (yaml, expected) in cases {
        let dir = write_project(yaml);
        let out = glci_run(dir.path(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{}", show(&out));
        assert!(stderr.contains(expected), "{yaml}: wanted {expected:?} in {stderr}");
    }
}

#[test]
fn jobs_of_one_resource_group_never_overlap_even_with_many_slots() {
    images();
    // Four jobs of one group, eight slots: without the group they would all start at once.
    let mut yaml = String::from("default:\n  image: glci-test/busybox:e2e\n");
    for n in 1..=4 {
        yaml.push_str(&format!(
            "deploy{n}:\n  resource_group: production\n  script:\n    - echo start {n}\n    - sleep 1\n    - echo end {n}\n"
        ));
    }
    let dir = write_project(&yaml);
    let out = glci_run(dir.path(), &["-j", "8"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    // In event order: every job's start and end lines alternate, never two starts in a row.
    let mut open: Option<String> = None;
    for e in events.iter().filter(|e| e["event"] == "log" && e["source"] == "job") {
        let line = e["line"].as_str().expect("line");
        if let Some(n) = line.strip_prefix("start ") {
            assert!(open.is_none(), "deploy{n} started while deploy{open:?} ran\n{}", show(&out));
            open = Some(n.to_string());
        } else if let Some(n) = line.strip_prefix("end ") {
            assert_eq!(open.as_deref(), Some(n), "{}", show(&out));
            open = None;
        }
    }
    let waited = events.iter().filter(|e| e["source"] == "glci" && e["line"] == "Waiting for resource: production");
    assert_eq!(waited.count(), 3, "three of the four waited\n{}", show(&out));
}

#[test]
fn the_variables_file_sits_between_pipeline_and_command_line_with_files_and_scopes() {
    images();
    let yaml = r#"
variables:
  PLAIN: pipeline
  OVERRIDE: pipeline
default:
  image: glci-test/busybox:e2e
prod:
  environment: production
  script:
    - echo "plain=$PLAIN override=$OVERRIDE url=$URL"
    - 'echo "config at $CONFIG"'
    - cat "$CONFIG"
other:
  script:
    - echo "url=$URL"
"#;
    let dir = write_project(yaml);
    std::fs::write(
        dir.path().join(".glci-variables.yml"),
        "PLAIN: from-file\nOVERRIDE: file\nCONFIG:\n  type: file\n  value: |\n    line one\n    line two\n\
         URL:\n  values:\n    production: https://prod\n    '*': http://any\n",
    )
    .expect("write the variables file");
    let out = glci_run(dir.path(), &["--env", "OVERRIDE=cli", "--project", "g/vars"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    let prod = trace(&events, "prod");
    assert!(prod.iter().any(|l| l == "plain=from-file override=cli url=https://prod"), "{prod:#?}");
    assert!(prod.iter().any(|l| l == "config at /builds/g/vars.tmp/CONFIG"), "{prod:#?}");
    let after_cat = position(&prod, "$ cat \"$CONFIG\"");
    assert_eq!(prod[after_cat + 1..after_cat + 3], ["line one", "line two"], "{prod:#?}");
    assert!(trace(&events, "other").iter().any(|l| l == "url=http://any"));

    // A bad variables file is a configuration error naming its line.
    std::fs::write(dir.path().join(".glci-variables.yml"), "A: 1\nB:\n  type: secret\n  value: x\n").expect("write");
    let out = glci_run(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".glci-variables.yml:3: B.type"), "{}", show(&out));
}

fn position(lines: &[String], needle: &str) -> usize {
    lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in {lines:#?}"))
}

#[test]
fn a_job_without_image_uses_the_default_image_and_an_empty_service_is_left_out() {
    images();
    let yaml = "variables:\n  DB: ''\nj:\n  services: [$DB]\n  script:\n    - echo in default image\n";
    let dir = write_project(yaml);
    // Without a default image: the clear configuration error, naming the job's line.
    let out = glci_run(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".gitlab-ci.yml:3: j.image"), "{}", show(&out));

    let out = glci_run(dir.path(), &["--default-image", BUSYBOX]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = events(&out);
    assert!(trace(&events, "j").iter().any(|l| l == "in default image"));
    let notes = notes(&events, "j");
    assert!(
        notes.iter().any(|l| l == "NOTE: service `$DB` is empty after variable expansion: left out, as GitLab does"),
        "{notes:#?}"
    );
    assert!(notes.iter().any(|l| l == &format!("Using docker image {BUSYBOX}")), "{notes:#?}");

    // `[run] default_image` in the config does the same.
    let home = temp_dir();
    std::fs::write(home.path().join("config.toml"), format!("[run]\ndefault_image = \"{BUSYBOX}\"\n")).expect("config");
    let out = glci_run_home(dir.path(), home.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn a_delayed_job_waits_start_in_then_runs_and_says_so() {
    images();
    let yaml =
        "later:\n  image: glci-test/busybox:e2e\n  when: delayed\n  start_in: 2 seconds\n  script:\n    - echo ran\n";
    let dir = write_project(yaml);
    let started = std::time::Instant::now();
    let out = glci_run(dir.path(), &[]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(took >= std::time::Duration::from_secs(2), "ran after {took:?}");
    let events = events(&out);
    let notes = notes(&events, "later");
    assert_eq!(notes.first().map(String::as_str), Some("Delayed job: starts in 2s (when: delayed)"), "{notes:#?}");
    assert_eq!(trace(&events, "later").last().map(String::as_str), Some("ran"));
    let finished = finished(&events, "later");
    assert_eq!((finished["status"].as_str(), finished["delayed_ms"].as_u64()), (Some("success"), Some(2000)));
}

#[test]
fn image_docker_user_and_platform_reach_the_container() {
    images();
    let native = match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    };
    let foreign = if native == "linux/amd64" { "linux/arm64" } else { "linux/amd64" };
    let yaml = format!(
        "as-user:\n  image: {{name: {BUSYBOX}, docker: {{user: '1234:2345', platform: {native}}}}}\n  \
         script: [id -u, id -g]\n\
         foreign:\n  image: {{name: {BUSYBOX}, docker: {{platform: {foreign}}}}}\n  script: [echo ran]\n"
    );
    let dir = write_project(&yaml);
    let out = glci_run(dir.path(), &[]);
    let events = events(&out);
    assert_eq!(finished(&events, "as-user")["status"], "success", "{}", show(&out));
    let lines = trace(&events, "as-user");
    assert!(lines.iter().any(|l| l == "1234") && lines.iter().any(|l| l == "2345"), "{lines:#?}");
    // The local image is the host's platform only: asking for another one reaches docker, which
    // cannot find (or, offline, pull) it, so the job fails instead of running the wrong image.
    assert_eq!(finished(&events, "foreign")["status"], "failed", "{}", show(&out));
    assert!(!trace(&events, "foreign").iter().any(|l| l == "ran"), "{}", show(&out));
}

/// A busybox image whose `ENTRYPOINT` prints `$MULTI` and `$ONE` before it runs the job's
/// command, made once per test binary with `docker commit`.
const ENTRYPOINT_IMAGE: &str = "glci-test/entrypoint-env:e2e";

fn entrypoint_image() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        images();
        let dir = temp_dir();
        let script = dir.path().join("entry.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'entrypoint: MULTI begin'\nprintf '%s\\n' \"$MULTI\"\necho 'entrypoint: MULTI end'\n\
             echo \"entrypoint: ONE=$ONE\"\nexec \"$@\"\n",
        )
        .expect("write entry.sh");
        run(Command::new("chmod").arg("755").arg(&script));
        let builder = common::unique_name("glci-w3-entry");
        run(Command::new("docker").args(["create", "--name", &builder, BUSYBOX, "true"]));
        run(Command::new("docker").arg("cp").arg(&script).arg(format!("{builder}:/entry.sh")));
        run(Command::new("docker").args([
            "commit",
            "--change",
            r#"ENTRYPOINT ["/entry.sh"]"#,
            &builder,
            ENTRYPOINT_IMAGE,
        ]));
        run(Command::new("docker").args(["rm", "-f", &builder]));
    });
}

#[test]
fn the_images_entrypoint_sees_every_variable_multi_line_ones_included() {
    entrypoint_image();
    let yaml = format!(
        "variables:\n  MULTI: \"first line\\nsecond 'quoted' $$line\\n\"\n  ONE: single\n  DOCKER_ODD: \"x\\ny\"\n\
         entry:\n  image: {ENTRYPOINT_IMAGE}\n  script:\n    - 'printf \"script: %s\\n\" \"$MULTI\"'\n    \
         - 'printf \"odd: %s\\n\" \"$DOCKER_ODD\"'\n"
    );
    let dir = write_project(&yaml);
    let out = glci_run(dir.path(), &[]);
    let events = events(&out);
    assert_eq!(finished(&events, "entry")["status"], "success", "{}", show(&out));
    let lines = trace(&events, "entry");
    let begin = position(&lines, "entrypoint: MULTI begin");
    assert_eq!(
        lines[begin..begin + 5],
        ["entrypoint: MULTI begin", "first line", "second 'quoted' $line", "", "entrypoint: MULTI end"],
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l == "entrypoint: ONE=single"), "{lines:#?}");
    // The script still gets them all, the one the docker CLI would read too.
    assert!(lines.iter().any(|l| l == "script: first line"), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "odd: x"), "{lines:#?}");
    let notes = notes(&events, "entry");
    assert!(
        notes.iter().any(|n| n.contains("DOCKER_ODD has a multi-line value") && n.contains("ENTRYPOINT does not")),
        "{notes:#?}"
    );
}

/// Pushes [`BUSYBOX`] to `server` as `repo:1` and an index `repo:index` whose only entry is that
/// manifest for the host's platform; the host keeps neither. Returns the index's name.
fn push_single_platform_index(server: &common::ServeProcess, repo: &str, native: &str) -> String {
    let addr = server.addr.to_string();
    let single = format!("{addr}/{repo}:1");
    run(Command::new("docker").args(["tag", BUSYBOX, &single]));
    run(Command::new("docker").args(["push", "--quiet", &single]));
    run(Command::new("docker").args(["image", "rm", &single]));
    let manifest = common::consistency::get_manifest(&addr, repo, "1").expect("GET the manifest");
    assert_eq!(manifest.status, 200, "{}", String::from_utf8_lossy(&manifest.body));
    let media_type = manifest.header("content-type").expect("Content-Type").to_string();
    let (os, arch) = native.split_once('/').expect("os/arch");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{
            "mediaType": media_type,
            "digest": common::sha256_digest(&manifest.body),
            "size": manifest.body.len(),
            "platform": {"os": os, "architecture": arch},
        }],
    })
    .to_string();
    let put = common::http::Request::new(&addr, "PUT", &format!("/v2/{repo}/manifests/index"))
        .header("Content-Type", "application/vnd.docker.distribution.manifest.list.v2+json")
        .body(index)
        .close()
        .send();
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    format!("{addr}/{repo}:index")
}

#[test]
fn docker_platform_reaches_the_pull_and_pull_policies_are_tried_in_order() {
    images();
    let native = match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    };
    let foreign = if native == "linux/amd64" { "linux/arm64" } else { "linux/amd64" };
    let server = common::ServeProcess::start();
    let image = push_single_platform_index(&server, &common::unique_name("w3-platform"), native);
    let absent = format!("{}/w3/absent:1", server.addr);
    let yaml = format!(
        "stages: [first, second]\n\
         foreign:\n  stage: first\n  allow_failure: true\n  \
         image: {{name: '{image}', docker: {{platform: {foreign}}}, pull_policy: always}}\n  script: [echo ran]\n\
         never:\n  stage: first\n  allow_failure: true\n  image: {{name: '{absent}', pull_policy: never}}\n  \
         script: [echo ran]\n\
         native:\n  stage: second\n  \
         image: {{name: '{image}', docker: {{platform: {native}}}, pull_policy: [never, if-not-present]}}\n  \
         services:\n    - name: '{image}'\n      alias: svc\n      docker: {{user: '1234', platform: {native}}}\n      \
         command: [sh, -c, 'id -u > /tmp/uid && exec httpd -f -p 8080 -h /tmp']\n  \
         script: ['wget -qO- http://svc:8080/uid']\n"
    );
    let dir = write_project(&yaml);
    let out = glci_run(dir.path(), &[]);
    let _ = Command::new("docker").args(["image", "rm", &image]).output();
    server.stop();
    let events = events(&out);
    // The index has no entry for the foreign platform: only a pull with --platform says so.
    let foreign_job = finished(&events, "foreign");
    assert_eq!(foreign_job["status"], "failed", "{}", show(&out));
    assert!(!trace(&events, "foreign").iter().any(|l| l == "ran"), "{}", show(&out));
    let reason = foreign_job["reason"].as_str().unwrap_or_default();
    // dockerd's own store says "no matching manifest for linux/arm64 ..."; the containerd
    // image store "no match for platform in manifest".
    let no_entry = reason.contains("no matching manifest") || reason.contains("no match for platform");
    assert!(reason.starts_with("pulling ") && no_entry, "{reason}\n{}", show(&out));
    let never = finished(&events, "never");
    assert_eq!(never["status"], "failed", "{}", show(&out));
    assert!(never["reason"].as_str().unwrap_or_default().contains("pull policy is `never`"), "{}", show(&out));
    assert!(!notes(&events, "never").iter().any(|n| n.starts_with("Pulling docker image")), "{}", show(&out));
    // `never` fails (the host lacks it), then `if-not-present` pulls the native entry; the
    // service runs as its `docker: user`.
    assert_eq!(finished(&events, "native")["status"], "success", "{}", show(&out));
    let native_notes = notes(&events, "native");
    assert!(native_notes.iter().any(|n| n.contains("Failed to pull image with policy \"never\"")), "{native_notes:#?}");
    assert!(native_notes.iter().any(|n| n == "Attempt #2: Trying \"if-not-present\" pull policy"), "{native_notes:#?}");
    assert_eq!(trace(&events, "native").last().map(String::as_str), Some("1234"), "{}", show(&out));
}

#[test]
fn retry_when_and_exit_codes_choose_which_failures_are_retried() {
    images();
    let yaml = format!(
        "default:\n  image: {BUSYBOX}\n\
         other-reason:\n  retry: {{max: 2, when: runner_system_failure}}\n  script: ['exit 1']\n\
         listed-code:\n  retry: {{max: 1, exit_codes: [3]}}\n  script: ['exit 3']\n\
         other-code:\n  retry: {{max: 2, exit_codes: 3}}\n  script: ['exit 4']\n\
         script-failure:\n  retry: {{max: 1, when: [script_failure]}}\n  script: ['exit 5']\n"
    );
    let dir = write_project(&yaml);
    let out = glci_run(dir.path(), &[]);
    let events = events(&out);
    for (job, attempts) in [("other-reason", 1), ("listed-code", 2), ("other-code", 1), ("script-failure", 2)] {
        let finished = finished(&events, job);
        assert_eq!(finished["status"], "failed", "{job}: {}", show(&out));
        assert_eq!(finished["attempts"], attempts, "{job}: {}", show(&out));
    }
}

#[test]
fn a_rules_when_delayed_waits_its_start_in_then_runs() {
    images();
    let yaml = format!(
        "later:\n  image: {BUSYBOX}\n  rules:\n    - if: $NOT_SET\n      when: never\n    \
         - when: delayed\n      start_in: 1 second\n  script: [echo ran]\n"
    );
    let dir = write_project(&yaml);
    let out = glci_run(dir.path(), &[]);
    let events = events(&out);
    let finished = finished(&events, "later");
    assert_eq!(
        (finished["status"].as_str(), finished["delayed_ms"].as_u64()),
        (Some("success"), Some(1000)),
        "{}",
        show(&out)
    );
    assert!(trace(&events, "later").iter().any(|l| l == "ran"), "{}", show(&out));
}
