//! `glci run` with `include: remote`, `template`, `project` and `component` (issue 17), served
//! by a stand-in GitLab instance on 127.0.0.1 at GitLab's API paths (tests/common/gitlab_server.rs),
//! named by `[gitlab] url` in a test `GLCI_HOME`. Covers the cache (a second run with the server
//! stopped, `--offline`), the token (sent to the instance only, never printed) and the errors:
//! offline miss, unreachable server, missing file, include loop, bad input type, each with file,
//! line and key. Jobs run in `glci-test/busybox:e2e` (imported once, as in run_e2e.rs).

#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};

use common::gitlab_server::GitlabServer;
use common::{glci, run, show, temp_dir};
use serde_json::Value;

const IMAGE: &str = common::BUSYBOX_IMAGE;
const TOKEN: &str = "glpat-test-sekrit-1234";

fn image() {
    common::busybox_image();
}

fn job(name: &str) -> String {
    format!("{name}:\n  image: {IMAGE}\n  script: [echo \"said {name}\"]\n")
}

/// `(target, body)` pairs of a GitLab with projects `g/lib` (branch `main`, tag `v1`),
/// `g/comps` (releases 1.0.0, 1.2.0, 2.0.0-rc1) and the template `Jobs/Lint.gitlab-ci.yml`.
fn routes() -> HashMap<String, String> {
    let raw = |project: &str, file: &str, reference: &str| {
        format!(
            "/api/v4/projects/{}/repository/files/{}/raw?ref={reference}",
            project.replace('/', "%2F"),
            file.replace('/', "%2F")
        )
    };
    let mut r = HashMap::new();
    r.insert(raw("g/lib", "ci/build.yml", "main"), format!("include:\n  - local: ci/common.yml\n{}", job("lib-build")));
    r.insert(raw("g/lib", "ci/common.yml", "main"), job("lib-common"));
    r.insert(raw("g/lib", "ci/loop-a.yml", "main"), "include: ci/loop-b.yml\n".into());
    r.insert(raw("g/lib", "ci/loop-b.yml", "main"), "include: /ci/loop-a.yml\n".into());
    r.insert(raw("g/lib", "ci/tagged.yml", "v1"), job("lib-tagged"));
    r.insert("/api/v4/projects/g%2Flib/repository/tags/v1".into(), "{\"name\":\"v1\"}".into());
    r.insert("/remote/r.yml".into(), job("remote-job"));
    r.insert(
        raw("gitlab-org/gitlab", "lib/gitlab/ci/templates/Jobs/Lint.gitlab-ci.yml", "master"),
        job("template-lint"),
    );
    r.insert(
        "/api/v4/projects/g%2Fcomps/releases?per_page=100".into(),
        "[{\"tag_name\":\"2.0.0-rc1\"},{\"tag_name\":\"1.2.0\"},{\"tag_name\":\"1.0.0\"}]".into(),
    );
    r.insert("/api/v4/projects/g%2Fcomps/repository/tags/1.2.0".into(), "{\"name\":\"1.2.0\"}".into());
    r.insert(
        raw("g/comps", "templates/greet/template.yml", "1.2.0"),
        format!(
            "spec:\n  inputs:\n    who:\n      default: world\n---\n\"greet-$[[ inputs.who ]]\":\n  image: {IMAGE}\n  \
             script:\n    - echo \"said greet-$[[ inputs.who ]]\"\n"
        ),
    );
    r
}

struct Setup {
    home: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Setup {
    fn new(url: &str, pipeline: &str) -> Setup {
        let home = temp_dir();
        std::fs::write(
            home.path().join("config.toml"),
            format!("[gitlab]\nurl = \"{url}\"\ntoken = \"$TEST_GITLAB_TOKEN\"\n"),
        )
        .expect("write config");
        let project = temp_dir();
        std::fs::write(project.path().join(".gitlab-ci.yml"), pipeline).expect("write pipeline");
        Setup { home, project }
    }

    fn pipeline(&self, text: &str) {
        std::fs::write(self.project.path().join(".gitlab-ci.yml"), text).expect("write pipeline");
    }

    fn run(&self, args: &[&str]) -> Output {
        glci()
            .args(["run", "--no-registry"])
            .args(args)
            .current_dir(self.project.path())
            .env("GLCI_HOME", self.home.path())
            .env("TEST_GITLAB_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .output()
            .expect("start glci")
    }

    fn file(&self) -> String {
        self.project.path().join(".gitlab-ci.yml").display().to_string()
    }
}

fn succeeded(out: &Output) -> Vec<String> {
    assert_eq!(out.status.code(), Some(0), "{}", show(out));
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(
        !all.contains(TOKEN) && !String::from_utf8_lossy(&out.stderr).contains(TOKEN),
        "token shown: {}",
        show(out)
    );
    let events: Vec<Value> = all.lines().map(|l| serde_json::from_str(l).expect("JSON event")).collect();
    let mut jobs: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "job_finished" && e["status"] == "success")
        .filter_map(|e| e["job"].as_str().map(String::from))
        .collect();
    let said: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "log")
        .filter_map(|e| e["line"].as_str()?.strip_prefix("said ").map(String::from))
        .collect();
    jobs.sort();
    let mut said_sorted = said.clone();
    said_sorted.sort();
    assert_eq!(jobs, said_sorted, "every job printed its own name: {}", show(out));
    jobs
}

/// The stderr of a configuration error (exit 2, one line).
fn config_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{}", show(out));
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(stderr.lines().count(), 1, "{}", show(out));
    assert!(!stderr.contains(TOKEN), "{stderr}");
    stderr
}

#[test]
fn remote_template_project_and_component_includes_run_then_come_from_the_cache() {
    image();
    let mut server = GitlabServer::start(routes());
    let host = server.addr.clone();
    let pipeline = format!(
        "include:\n\
         \x20 - remote: '{url}/remote/r.yml'\n\
         \x20 - template: Jobs/Lint.gitlab-ci.yml\n\
         \x20 - project: g/lib\n    ref: main\n    file: [ci/build.yml]\n\
         \x20 - project: g/lib\n    ref: v1\n    file: /ci/tagged.yml\n\
         \x20 - component: {host}/g/comps/greet@~latest\n    inputs:\n      who: team\n\
         own:\n  image: {IMAGE}\n  script: [echo \"said own\"]\n",
        url = server.url()
    );
    let setup = Setup::new(&server.url(), &pipeline);
    let want = ["greet-team", "lib-build", "lib-common", "lib-tagged", "own", "remote-job", "template-lint"];
    let first = setup.run(&["--json"]);
    assert_eq!(first.status.code(), Some(0), "{}\nserver saw: {:#?}", show(&first), server.targets());
    assert_eq!(succeeded(&first), want);

    // The token goes to the instance's API, never to a `remote` URL.
    let seen = server.seen.lock().expect("lock").clone();
    assert!(seen.iter().any(|s| s.target.starts_with("/api/v4/")), "{seen:?}");
    for s in &seen {
        let want = if s.target.starts_with("/api/v4/") { Some(TOKEN) } else { None };
        assert_eq!(s.token.as_deref(), want, "{s:?}");
    }

    // Second run, the server gone: everything comes from the cache (fresh for 5 minutes).
    let stopped_url = server.url();
    server.stop();
    let out = setup.run(&["--json"]);
    assert_eq!(succeeded(&out), want);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{}", show(&out));
    // Cached copies older than the re-check interval: files at a branch are asked for again,
    // and with the instance out of reach the stale copies are used, with a note each.
    let cache = setup.home.path().join("include-cache");
    for entry in std::fs::read_dir(&cache).expect("the include cache") {
        run(Command::new("touch").args(["-d", "10 minutes ago"]).arg(entry.expect("entry").path()));
    }
    let out = setup.run(&["--json"]);
    assert_eq!(succeeded(&out), want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("warning: using the cached copy of {stopped_url}/remote/r.yml: cannot reach")),
        "{}",
        show(&out)
    );
    assert!(stderr.contains("ci%2Fbuild.yml/raw?ref=main"), "{}", show(&out));
    assert!(!stderr.contains("ref=v1") && !stderr.contains("ref=1.2.0"), "tags are never asked again: {}", show(&out));
    assert_eq!(succeeded(&setup.run(&["--json", "--offline"])), want);

    // An include never fetched: with --offline, and with the server unreachable.
    setup.pipeline(&format!("include:\n  - project: g/lib\n    ref: main\n    file: ci/other.yml\n{}", job("own")));
    let e = config_error(&setup.run(&["--offline"]));
    let want = format!(
        "glci: error: {}:2: include[0].project: project `g/lib` file `ci/other.yml`: not in the include cache, and --offline forbids fetching {stopped_url}/api/v4/projects/g%2Flib/repository/files/ci%2Fother.yml/raw?ref=main",
        setup.file()
    );
    assert_eq!(e, want);
    let e = config_error(&setup.run(&[]));
    assert!(e.starts_with(&format!("glci: error: {}:2: include[0].project: project `g/lib` file `ci/other.yml`: cannot reach {stopped_url}/api/v4/", setup.file())), "{e}");
}

#[test]
fn remote_include_errors_name_file_line_and_key() {
    let server = GitlabServer::start(routes());
    let host = server.addr.clone();
    let setup = Setup::new(&server.url(), "");
    let cases = [
        (
            "j:\n  script: x\ninclude:\n  - project: g/lib\n    file: ci/none.yml\n    ref: main\n".to_string(),
            ":4: include[0].project: project `g/lib` file `ci/none.yml`: file `ci/none.yml` of project `g/lib` at `main` does not exist (or is not visible with [gitlab] token)".to_string(),
        ),
        (
            "include:\n  - project: g/lib\n    ref: main\n    file: ci/loop-a.yml\n".to_string(),
            ":1: include: include loop: g/lib@main:ci/loop-a.yml → g/lib@main:ci/loop-b.yml → g/lib@main:ci/loop-a.yml".to_string(),
        ),
        (
            format!("include:\n  - component: {host}/g/comps/greet@1\n    inputs:\n      who: 42\n"),
            ":4: include[0].inputs.who: `who` input: provided value is not a string".to_string(),
        ),
        (
            format!("include:\n  - component: {host}/g/comps/greet@3\n"),
            format!(":2: include[0].component: component `{host}/g/comps/greet@3`: project `g/comps` has no release matching `3`"),
        ),
        (
            "include:\n  - component: gitlab.com/g/comps/greet@1.0.0\n".to_string(),
            format!(":2: include[0].component: component `gitlab.com/g/comps/greet@1.0.0`: the host `gitlab.com` is not the GitLab instance `{host}` ([gitlab] url)"),
        ),
    ];
    for (pipeline, want) in cases {
        setup.pipeline(&pipeline);
        let e = config_error(&setup.run(&[]));
        let file = if want.contains("include loop") { "g/lib@main:ci/loop-b.yml".to_string() } else { setup.file() };
        assert_eq!(e, format!("glci: error: {file}{want}"), "{pipeline}");
    }
}

#[test]
fn a_components_template_reads_its_name_sha_version_and_reference() {
    image();
    let raw = |file: &str, reference: &str| {
        format!("/api/v4/projects/g%2Fcomps/repository/files/{}/raw?ref={reference}", file.replace('/', "%2F"))
    };
    let template = format!(
        "spec:\n  component: [name, sha, version, reference]\n---\nctx-job:\n  image: {IMAGE}\n  script:\n    \
         - echo \"ctx $[[ component.name ]] v=$[[ component.version ]] r=$[[ component.reference ]] $[[ component.sha ]]\"\n"
    );
    let released = "0123456789abcdef0123456789abcdef01234567";
    let branch = "89abcdef0123456789abcdef0123456789abcdef";
    let mut routes = routes();
    routes.insert(raw("templates/ctx.yml", "1.2.0"), template.clone());
    routes.insert(raw("templates/ctx.yml", "main"), template);
    routes.insert("/api/v4/projects/g%2Fcomps/repository/commits/1.2.0".into(), format!("{{\"id\":\"{released}\"}}"));
    routes.insert("/api/v4/projects/g%2Fcomps/repository/commits/main".into(), format!("{{\"id\":\"{branch}\"}}"));
    let server = GitlabServer::start(routes);
    let host = server.addr.clone();
    // `@1` resolves to release 1.2.0; a branch has no version (null: empty inside a text).
    for (reference, want) in
        [("1", format!("ctx ctx v=1.2.0 r=1 {released}")), ("main", format!("ctx ctx v= r=main {branch}"))]
    {
        let setup = Setup::new(&server.url(), &format!("include:\n  - component: {host}/g/comps/ctx@{reference}\n"));
        let out = setup.run(&["--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON event")).collect();
        assert!(
            lines.iter().any(|e| e["event"] == "log" && e["source"] == "job" && e["line"] == want.as_str()),
            "wanted {want:?}: {}",
            show(&out)
        );
    }
}

#[test]
fn component_blocks_outside_a_component_or_undeclared_name_their_line() {
    let setup = Setup::new("http://127.0.0.1:9", "include: ci/t.yml\n");
    let dir = setup.project.path().join("ci");
    std::fs::create_dir_all(&dir).expect("mkdir ci");
    let cases = [
        (
            "spec:\n  component: [name]\n---\nj:\n  script: [\"echo $[[ component.name ]]\"]\n",
            ":5: j.script[0]",
            "not included with `include: component`",
        ),
        (
            "spec:\n  component: [name]\n---\nj:\n  script: [\"echo $[[ component.sha ]]\"]\n",
            ":5: j.script[0]",
            "not declared in the header's `spec: component`",
        ),
        (
            "spec:\n  component: [path]\n---\nj:\n  script: [x]\n",
            ":2: spec.component[0]",
            "unknown component field \"path\"",
        ),
    ];
    for (text, at, words) in cases {
        std::fs::write(dir.join("t.yml"), text).expect("write ci/t.yml");
        let e = config_error(&setup.run(&["--list"]));
        let file = dir.join("t.yml").display().to_string();
        assert!(e.contains(&format!("{file}{at}: ")) && e.contains(words), "{text}: {e}");
    }
}

#[test]
fn wildcards_and_rules_exists_in_a_project_file_look_at_that_projects_tree() {
    image();
    let raw =
        |file: &str| format!("/api/v4/projects/g%2Flib/repository/files/{}/raw?ref=main", file.replace('/', "%2F"));
    let mut routes = routes();
    routes.insert(
        raw("ci/entry.yml"),
        "include:\n  - local: ci/parts/*.yml\n  - local: ci/common.yml\n    rules:\n      - exists: [ci/marker]\n  \
         - local: ci/dropped.yml\n    rules:\n      - exists: [only-here.txt]\n"
            .into(),
    );
    routes.insert(raw("ci/parts/a.yml"), job("part-a"));
    routes.insert(raw("ci/dropped.yml"), job("dropped"));
    let tree: Vec<Value> = ["ci/entry.yml", "ci/common.yml", "ci/marker", "ci/parts/a.yml", "ci/dropped.yml"]
        .iter()
        .map(|p| serde_json::json!({"type": "blob", "path": p}))
        .chain([serde_json::json!({"type": "tree", "path": "ci/parts"})])
        .collect();
    routes.insert(
        "/api/v4/projects/g%2Flib/repository/tree?ref=main&recursive=true&per_page=100&page=1".into(),
        Value::Array(tree).to_string(),
    );
    let server = GitlabServer::start(routes);
    let setup = Setup::new(
        &server.url(),
        &format!("include:\n  - project: g/lib\n    ref: main\n    file: ci/entry.yml\n{}", job("own")),
    );
    std::fs::write(setup.project.path().join("only-here.txt"), "").expect("write only-here.txt");
    let out = setup.run(&["--json"]);
    assert_eq!(succeeded(&out), ["lib-common", "own", "part-a"], "server saw {:#?}", server.targets());
}

#[test]
fn a_jobs_rules_exists_project_looks_at_that_projects_files() {
    let mut routes = routes();
    let tree: Vec<Value> =
        ["ci/marker", "src/lib.rs"].iter().map(|p| serde_json::json!({"type": "blob", "path": p})).collect();
    routes.insert(
        "/api/v4/projects/g%2Flib/repository/tree?ref=v1&recursive=true&per_page=100&page=1".into(),
        Value::Array(tree).to_string(),
    );
    let server = GitlabServer::start(routes);
    let pipeline = format!(
        "variables:\n  LIB: g/lib\nfound:\n  image: {IMAGE}\n  script: [x]\n  rules:\n    \
         - exists: {{paths: ['ci/*'], project: $LIB, ref: v1}}\n\
         missing:\n  image: {IMAGE}\n  script: [x]\n  rules:\n    - exists: {{paths: [Cargo.toml], project: g/lib, ref: v1}}\n"
    );
    let setup = Setup::new(&server.url(), &pipeline);
    let out = setup.run(&["--list"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = |job: &str| stdout.lines().find(|l| l.starts_with(&format!("{job} "))).unwrap_or_default().to_string();
    assert!(row("found").contains("yes: rule 1"), "{}", show(&out));
    assert!(row("missing").contains("no: no rule matched"), "{}", show(&out));
    // A project the instance does not know: exit 2 naming the rule.
    setup.pipeline(&format!(
        "j:\n  image: {IMAGE}\n  script: [x]\n  rules:\n    - exists: {{paths: [a], project: g/none}}\n"
    ));
    let e = config_error(&setup.run(&["--list"]));
    assert!(e.contains(".gitlab-ci.yml:5: j.rules[0].exists.project: `g/none` at `HEAD`: "), "{e}");
}
