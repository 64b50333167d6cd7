//! The sweep of issue 15's "Bad input": every keyword value GitLab's CI config entries reject
//! (lib/gitlab/ci/config/entry/*.rb) is refused by `glci run` with one line naming
//! file:line:key and exit 2, and every key GitLab accepts that means nothing locally is said in
//! one note per key (not silently). Table-driven; `glci run --list` reads and plans the
//! pipeline without Docker, so this binary needs no daemon.

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{glci, temp_dir};

/// `glci run --no-registry --list` on a project holding `yaml`, with a fresh `GLCI_HOME`.
fn list(yaml: &str) -> Output {
    let dir = temp_dir();
    std::fs::write(dir.path().join(".gitlab-ci.yml"), yaml).expect("write .gitlab-ci.yml");
    let home = temp_dir();
    run_in(dir.path(), home.path())
}

fn run_in(dir: &Path, home: &Path) -> Output {
    glci()
        .env("GLCI_HOME", home)
        .args(["run", "--no-registry", "--list"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("start glci")
}

/// A job around `keys` (indented two spaces, one per line): its own key lines start at line 4.
fn job(keys: &str) -> String {
    let keys: String = keys.lines().map(|l| format!("  {l}\n")).collect();
    format!("j:\n  image: busybox\n  script: [x]\n{keys}")
}

#[test]
fn values_gitlab_rejects_exit_2_naming_file_line_and_key() {
    // (job keys, `line: key` the error names, words of its message)
    let cases: &[(&str, &str, &str)] = &[
        // Keys that mean nothing locally still have their values checked.
        ("tags: docker", "4: j.tags", "expected a list of strings"),
        ("tags: [1]", "4: j.tags[0]", "expected a string"),
        ("interruptible: yes-please", "4: j.interruptible", "expected true or false"),
        ("hooks: {post_script: [x]}", "4: j.hooks.post_script", "unknown key"),
        ("hooks: {pre_get_sources_script: {a: b}}", "4: j.hooks.pre_get_sources_script", "list of strings"),
        ("id_tokens: {ID: {aud: 3}}", "4: j.id_tokens.ID.aud", "list of strings"),
        ("id_tokens: {ID: {sub: x}}", "4: j.id_tokens.ID.sub", "unknown key"),
        ("identity: aws", "4: j.identity", "unknown identity \"aws\""),
        ("release: {name: v1}", "4: j.release", "missing `tag_name`"),
        ("release: {tag_name: v1, description: d, ref: [x]}", "4: j.release.ref", "expected a string"),
        ("pages: 3", "4: j.pages", "expected true, false or"),
        ("publish: [public]", "4: j.publish", "expected a string"),
        ("manual_confirmation: [x]", "4: j.manual_confirmation", "expected a string"),
        ("dast_configuration: {profile: x}", "4: j.dast_configuration.profile", "unknown key"),
        // Values of keys glci uses.
        ("when: never", "4: j.when", "`when: never` is for `rules`"),
        ("when: sometimes", "4: j.when", "unknown value \"sometimes\""),
        ("retry: 3", "4: j.retry", "retry must be 0, 1 or 2"),
        ("retry: {max: 1, when: [script_failure, bogus]}", "4: j.retry.when[1]", "unknown failure reason \"bogus\""),
        ("retry: {max: 1, exit_codes: [1, two]}", "4: j.retry.exit_codes[1]", "expected a whole number"),
        ("retry: {max: 1, on: x}", "4: j.retry.on", "unknown key"),
        ("timeout: forever", "4: j.timeout", "invalid duration"),
        ("parallel: 0", "4: j.parallel", "1 to 200"),
        ("parallel: 201", "4: j.parallel", "1 to 200"),
        ("allow_failure: maybe", "4: j.allow_failure", "expected true, false or {exit_codes"),
        ("allow_failure: {exit_codes: [a]}", "4: j.allow_failure.exit_codes[0]", "expected a whole number"),
        ("coverage: 'Coverage: \\d+'", "4: j.coverage", "between slashes"),
        ("resource_group: [a]", "4: j.resource_group", "expected a resource group name"),
        ("stage: [a]", "4: j.stage", "expected a stage name"),
        ("dependencies: x", "4: j.dependencies", "expected a list of job names"),
        ("extends: 3", "4: j.extends", "expected a job name or a list"),
        ("environment: {name: x, action: deploy}", "4: j.environment.action", "not an action"),
        ("environment: 'review/a:b'", "4: j.environment", "an environment name can contain only"),
        ("environment: {name: /prod}", "4: j.environment.name", "does not start or end with '/'"),
        ("environment: {name: x, on_stop: [stop]}", "4: j.environment.on_stop", "expected a job name"),
        ("environment: {name: x, auto_stop_in: soon}", "4: j.environment.auto_stop_in", "invalid duration"),
        ("environment: {name: x, kubernetes: ns}", "4: j.environment.kubernetes", "expected a map"),
        ("artifacts: {public: true, access: all}", "4: j.artifacts.public", "mutually exclusive"),
        ("artifacts: {access: everyone}", "4: j.artifacts.access", "should be one of"),
        ("artifacts: {reports: {bogus: a}}", "4: j.artifacts.reports.bogus", "unknown report type"),
        ("artifacts: {expose_as: 'a/b', paths: [x]}", "4: j.artifacts.expose_as", "only letters"),
        ("rules: [{when: delayed}]", "4: j.rules[0].when", "needs `start_in`"),
        ("rules: [{interruptible: maybe}]", "4: j.rules[0].interruptible", "expected true or false"),
        ("start_in: 1 minute", "4: j.start_in", "only with `when: delayed`"),
        ("rules: [{when: always}]\nwhen: delayed\nstart_in: 1 minute", "6: j.start_in", "may not be used with `rules`"),
        ("secrets: {A: {vault: x}}", "4: j.secrets", "not supported"),
        ("bogus: 1", "4: j.bogus", "unknown key"),
        ("artifacts: {when: never}", "4: j.artifacts.when", "unknown value \"never\""),
        ("artifacts: {paths: a}", "4: j.artifacts.paths", "expected a list of strings"),
        ("cache: {key: a/b}", "4: j.cache.key", "cannot contain the \"/\" character"),
        ("cache: {policy: pullit}", "4: j.cache.policy", "unknown policy"),
        ("variables: {A: [1]}", "4: j.variables.A", "expected a string, a number"),
        // image: and services: (GitLab's Imageable entry, executor_opts.json).
        ("image: {name: x, pull_policy: sometimes}", "4: j.image.pull_policy", "unknown pull policy"),
        ("image: {name: x, pull_policy: []}", "4: j.image.pull_policy", "no pull policy"),
        ("image: {name: x, docker: {user: ''}}", "4: j.image.docker.user", "empty string"),
        ("image: {name: x, docker: {privileged: true}}", "4: j.image.docker.privileged", "unknown key"),
        ("image: {name: x, kubernetes: {uid: 1}}", "4: j.image.kubernetes.uid", "unknown key"),
        ("services: [{name: x, docker: {platform: 3}}]", "4: j.services[0].docker.platform", "expected a platform"),
        (
            "services: [{name: x, pull_policy: [always, maybe]}]",
            "4: j.services[0].pull_policy[1]",
            "unknown pull policy",
        ),
    ];
    let mut failures = Vec::new();
    for (keys, at, words) in cases {
        let out = list(&job(keys));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let wanted = format!(".gitlab-ci.yml:{at}: ");
        let line = stderr.lines().find(|l| l.starts_with("glci: error: ")).unwrap_or_default();
        if out.status.code() != Some(2) || !line.contains(&wanted) || !line.contains(words) {
            failures
                .push(format!("{keys:?}: wanted exit 2 and {wanted:?} + {words:?}, got {:?}: {stderr}", out.status));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn a_job_name_longer_than_255_characters_is_refused() {
    let name = "n".repeat(256);
    let out = list(&format!("{name}:\n  image: busybox\n  script: [x]\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!(".gitlab-ci.yml:1: {name}: a job name is at most 255 characters")), "{stderr}");
    let out = list(&format!("{}:\n  image: busybox\n  script: [x]\n", "n".repeat(255)));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn default_values_gitlab_rejects_name_their_key_too() {
    let cases: &[(&str, &str, &str)] = &[
        ("default:\n  tags: 3\n", "2: default.tags", "expected a list of strings"),
        ("default:\n  interruptible: x\n", "2: default.interruptible", "expected true or false"),
        ("default:\n  retry: {max: 1, when: never}\n", "2: default.retry.when", "unknown failure reason"),
        ("default:\n  id_tokens: {ID: {}}\n", "2: default.id_tokens.ID", "missing `aud`"),
    ];
    for (default, at, words) in cases {
        let out = list(&format!("{default}j:\n  image: busybox\n  script: [x]\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{default}: {stderr}");
        assert!(stderr.contains(&format!(".gitlab-ci.yml:{at}: ")) && stderr.contains(words), "{default}: {stderr}");
    }
}

#[test]
fn keys_without_local_meaning_are_said_once_per_key() {
    let yaml = "default:\n  tags: [docker]\n  interruptible: true\n\
                build:\n  image: {name: busybox, kubernetes: {user: '1000'}}\n  tags: [linux]\n  script: [x]\n  \
                id_tokens: {VAULT: {aud: https://vault.example.com}}\n  release: {tag_name: v1, description: d}\n\
                test:\n  image: busybox\n  tags: [linux]\n  script: [x]\n  interruptible: false\n  \
                hooks: {pre_get_sources_script: [echo hi]}\n  identity: google_cloud\n  pages: true\n  \
                publish: public\n  manual_confirmation: sure?\n  dast_configuration: {site_profile: s}\n\
                old:\n  image: busybox\n  type: deploy\n  script: [x]\n  \
                artifacts: {paths: [r.xml], public: false, reports: {junit: r.xml}}\nstages: [test, deploy]\n";
    let out = list(yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let notes: Vec<&str> = stderr.lines().filter(|l| l.starts_with("glci: note: ")).collect();
    let expected = [
        (".gitlab-ci.yml:2: default.tags: accepted, but runner tags choose a runner", "(and in 2 other places)"),
        (".gitlab-ci.yml:3: default.interruptible: accepted, but glci never cancels", "(and in 1 other place)"),
        (".gitlab-ci.yml:5: build.image.kubernetes: accepted, but it is for GitLab's Kubernetes executor", ""),
        (".gitlab-ci.yml:8: build.id_tokens: accepted, but glci issues no OIDC ID tokens", ""),
        (".gitlab-ci.yml:9: build.release: accepted, but glci creates no releases", ""),
        (".gitlab-ci.yml:15: test.hooks: accepted, but glci fetches no sources", ""),
        (".gitlab-ci.yml:16: test.identity: accepted", ""),
        (".gitlab-ci.yml:17: test.pages: accepted, but glci deploys no Pages site", ""),
        (".gitlab-ci.yml:18: test.publish: accepted", ""),
        (".gitlab-ci.yml:19: test.manual_confirmation: accepted", ""),
        (".gitlab-ci.yml:20: test.dast_configuration: accepted", ""),
        (".gitlab-ci.yml:25: old.artifacts.public: accepted, but glci keeps artifacts on this machine", ""),
        (".gitlab-ci.yml:25: old.artifacts.reports.junit: accepted, but glci reads only `reports: dotenv`", ""),
    ];
    for (start, end) in expected {
        let found: Vec<&&str> = notes.iter().filter(|n| n.contains(start)).collect();
        assert_eq!(found.len(), 1, "one note with {start:?} in\n{stderr}");
        assert!(found[0].ends_with(end), "{:?} should end with {end:?}", found[0]);
    }
    assert_eq!(notes.len(), expected.len(), "no other notes:\n{stderr}");
    // `type:` is GitLab's old name of `stage`.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let old = stdout.lines().find(|l| l.starts_with("old ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(old.split_whitespace().nth(1) == Some("deploy"), "{old}");
}

#[test]
fn workflow_auto_cancel_is_said_once() {
    let out = list(
        "workflow:\n  auto_cancel: {on_new_commit: interruptible}\n  rules:\n    - when: always\n      \
         auto_cancel: {on_job_failure: all}\nj:\n  image: busybox\n  script: [x]\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let notes: Vec<&str> = stderr.lines().filter(|l| l.starts_with("glci: note: ")).collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(
        notes[0].ends_with(
            ".gitlab-ci.yml:2: workflow.auto_cancel: accepted, but glci cancels no pipeline when another starts or a \
             job fails (and in 1 other place)"
        ),
        "{stderr}"
    );
}
