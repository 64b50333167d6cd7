//! `cache:` and `artifacts: reports: dotenv` end to end on the real Docker engine (issue 16):
//! pipelines written into temp
//! projects, run twice by the binary with a temp `GLCI_HOME`, their `--json` traces and the
//! store (`glci cache list --json`, the files under `$GLCI_HOME/cache`) checked.
//!
//! Needs busybox-static and a running dockerd (`make test` installs and starts them). Jobs run
//! in `glci-test/busybox:e2e`, imported once from the busybox rootfs recipe: no image is pulled.

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Command, Output, Stdio};

use common::{glci, run, show, temp_dir, unique_name};
use serde_json::Value;

const IMAGE: &str = common::BUSYBOX_IMAGE;

fn image() {
    common::busybox_image();
}

/// A project dir with `.gitlab-ci.yml` = `pipeline`, a GLCI_HOME, and a unique project path.
struct Project {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    path: String,
}

impl Project {
    fn new(pipeline: &str) -> Project {
        image();
        let dir = temp_dir();
        std::fs::write(dir.path().join(".gitlab-ci.yml"), pipeline.replace("IMAGE", IMAGE)).expect("write pipeline");
        Project { dir, home: temp_dir(), path: format!("cache-tests/{}", unique_name("p")) }
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.dir.path().join(rel), text).expect("write project file");
    }

    fn glci(&self, args: &[&str]) -> Output {
        glci()
            .args(args)
            .env("GLCI_HOME", self.home.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("start glci")
    }

    fn run(&self, extra: &[&str]) -> (Output, Vec<Value>) {
        let mut args = vec!["run", "--no-registry", "--json", "--project", &self.path];
        args.extend_from_slice(extra);
        let out = self.glci(&args);
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", show(&out))))
            .collect();
        (out, events)
    }

    /// `glci cache list --project P --json`: (key, size).
    fn caches(&self) -> Vec<(String, u64)> {
        let out = self.glci(&["cache", "list", "--project", &self.path, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("cache list JSON");
        list.iter().map(|c| (c["key"].as_str().expect("key").to_string(), c["size"].as_u64().expect("size"))).collect()
    }
}

fn log(events: &[Value], job: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == job)
        .map(|e| e["line"].as_str().expect("line").to_string())
        .collect()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

fn assert_has(lines: &[String], needle: &str) {
    assert!(has(lines, needle), "no line with {needle:?} in {lines:#?}");
}

/// A line that is exactly `text` (job output, not the echoed command).
fn assert_line(lines: &[String], text: &str) {
    assert!(lines.iter().any(|l| l.trim() == text), "no line {text:?} in {lines:#?}");
}

fn position(lines: &[String], needle: &str) -> usize {
    lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?} in {lines:#?}"))
}

fn succeeded(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", show(out));
}

#[test]
fn a_cache_is_reused_by_the_next_run_and_listed() {
    let p = Project::new(
        "build:\n  image: IMAGE\n  cache:\n    key: deps-$CI_COMMIT_REF_SLUG\n    paths: [vendor/, '**/*.o']\n  \
         before_script:\n    - 'if [ -f vendor/state ]; then echo \"restored=$(cat vendor/state)\"; fi'\n  \
         script:\n    - mkdir -p vendor/deep/er src && echo first-run > vendor/state && echo x > vendor/deep/er/f\n    \
         - echo obj > src/a.o && echo not-cached > src/a.c\n",
    );
    let (out, events) = p.run(&[]);
    succeeded(&out);
    let lines = log(&events, "build");
    assert_has(&lines, "Checking cache for deps-");
    assert_has(&lines, "WARNING: Cache deps-");
    assert_has(&lines, "Created cache deps-");
    assert!(position(&lines, "Restoring cache") < position(&lines, "Created cache"));
    assert!(!has(&lines, "restored=first-run"), "nothing to restore on the first run: {lines:#?}");
    let caches = p.caches();
    assert_eq!(caches.len(), 1, "{caches:?}");
    assert!(caches[0].0.starts_with("deps-"), "{caches:?}");

    let (out, events) = p.run(&[]);
    succeeded(&out);
    let lines = log(&events, "build");
    assert_has(&lines, "Successfully extracted cache deps-");
    assert_has(&lines, "restored=first-run");
    assert!(position(&lines, "Successfully extracted cache") < position(&lines, "restored=first-run"));

    // What went in: vendor/ and *.o, not a.c.
    let tar = std::fs::read_dir(p.home.path().join("cache"))
        .expect("cache root")
        .flatten()
        .flat_map(|project| std::fs::read_dir(project.path()).expect("project dir").flatten())
        .map(|entry| entry.path().join("cache.tar"))
        .find(|t| t.exists())
        .expect("a cache.tar");
    let listing = run(Command::new("tar").arg("-tf").arg(&tar));
    let names = String::from_utf8_lossy(&listing.stdout).to_string();
    for want in ["vendor/state", "vendor/deep/er/f", "src/a.o"] {
        assert!(names.lines().any(|l| l == want), "{want} not in {names}");
    }
    assert!(!names.contains("a.c") && !names.contains(".gitlab-ci.yml"), "{names}");

    let out = p.glci(&["cache", "list"]);
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&p.path));
    let out = p.glci(&["cache", "clear", "--project", &p.path, &caches[0].0]);
    succeeded(&out);
    assert!(p.caches().is_empty());
}

#[test]
fn key_files_changes_with_the_file_and_follows_gitlab_in_a_git_repo() {
    let p = Project::new(
        "build:\n  image: IMAGE\n  cache:\n    key: {files: [lock.txt], prefix: $CI_JOB_NAME}\n    paths: [out/]\n  \
         script: [mkdir -p out, date > out/stamp]\n",
    );
    p.write("lock.txt", "v1\n");
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(p.dir.path()))
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "one"]);
    let commit =
        String::from_utf8_lossy(&git(&["log", "-1", "--format=%H", "--", "lock.txt"]).stdout).trim().to_string();
    // GitLab: SHA-1 of the (sorted, unique) last-commit ids joined by '-', after the prefix.
    let sha1 = run(Command::new("sh").args(["-c", &format!("printf %s {commit} | sha1sum")]));
    let digest = String::from_utf8_lossy(&sha1.stdout).split_whitespace().next().expect("sha1").to_string();
    let (out, _) = p.run(&[]);
    succeeded(&out);
    assert_eq!(p.caches().iter().map(|c| c.0.clone()).collect::<Vec<_>>(), [format!("build-{digest}")]);

    // An uncommitted edit changes the key (its contents stand in for the commit it will be).
    p.write("lock.txt", "v2\n");
    let (out, events) = p.run(&[]);
    succeeded(&out);
    let lines = log(&events, "build");
    assert!(!has(&lines, "Successfully extracted"), "a changed file must not find the old cache: {lines:#?}");
    let keys: Vec<String> = p.caches().into_iter().map(|c| c.0).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("build-")), "{keys:?}");
}

#[test]
fn policy_pull_restores_but_never_writes_and_push_never_restores() {
    let p = Project::new(
        "stages: [one, two, three]\nseed:\n  stage: one\n  image: IMAGE\n  cache: {key: k, paths: [c/], policy: push}\n  \
         script: [mkdir -p c, echo seeded > c/v]\nreader:\n  stage: two\n  image: IMAGE\n  \
         cache: {key: k, paths: [c/], policy: pull}\n  script: [cat c/v, echo changed > c/v]\n\
         check:\n  stage: three\n  image: IMAGE\n  cache: {key: k, paths: [c/], policy: pull}\n  script: [cat c/v]\n",
    );
    let (out, events) = p.run(&["-j", "1"]);
    succeeded(&out);
    assert_has(&log(&events, "seed"), "Not downloading cache k due to policy");
    let reader = log(&events, "reader");
    assert_has(&reader, "Successfully extracted cache k");
    assert_line(&reader, "seeded");
    assert_has(&reader, "Not uploading cache k due to policy");
    assert!(!has(&reader, "Created cache"), "{reader:#?}");
    assert_line(&log(&events, "check"), "seeded");
}

#[test]
fn when_on_failure_saves_only_for_a_failed_job_and_fallbacks_are_tried() {
    let p = Project::new(
        "variables: {CACHE_FALLBACK_KEY: global-fb}\nmain:\n  image: IMAGE\n  allow_failure: true\n  cache:\n    - {key: on-fail, paths: [f/], when: on_failure}\n    \
         - {key: on-ok, paths: [f/]}\n    - {key: both, paths: [f/], when: always}\n  script: [mkdir -p f, echo 1 > f/x, exit 3]\n",
    );
    let (out, events) = p.run(&[]);
    succeeded(&out);
    let keys: Vec<String> = p.caches().into_iter().map(|c| c.0).collect();
    assert_eq!(keys, ["both", "on-fail"], "{:#?}", log(&events, "main"));

    // Seed the fallback key with a first run of the same project.
    let q = Project::new(
        "j:\n  image: IMAGE\n  cache: {key: seeded, paths: [f/]}\n  script: [mkdir -p f, echo from-fallback > f/x]\n",
    );
    succeeded(&q.run(&[]).0);
    q.write(
        ".gitlab-ci.yml",
        &"j:\n  image: IMAGE\n  cache:\n    key: missing\n    fallback_keys: [also-missing, seeded]\n    paths: [f/]\n  \
          script: [cat f/x]\n"
            .replace("IMAGE", IMAGE),
    );
    let (out, events) = q.run(&[]);
    succeeded(&out);
    let lines = log(&events, "j");
    assert_has(&lines, "WARNING: Cache missing not found");
    assert_has(&lines, "Checking cache for fallback key also-missing");
    assert_has(&lines, "Successfully extracted cache seeded");
    assert_line(&lines, "from-fallback");
    assert!(!has(&lines, "fallback key global-fb"), "stops at the first found: {lines:#?}");
}

#[test]
fn concurrent_saves_of_one_key_leave_one_whole_cache() {
    // Two jobs of one stage write 200 files each under the same key at once; the archive left
    // must be one job's set, whole.
    let writer = |name: &str| {
        format!(
            "{name}:\n  image: IMAGE\n  cache: {{key: shared, paths: [d/]}}\n  script:\n    - mkdir -p d\n    \
             - i=0; while [ $i -lt 200 ]; do head -c 20000 /dev/zero > d/f$i; echo {name} >> d/f$i; \
             i=$((i+1)); done\n"
        )
    };
    let pipeline = format!(
        "stages: [write, check]\n{}  stage: write\n{}  stage: write\ncheck:\n  stage: check\n  image: IMAGE\n  \
         cache: {{key: shared, paths: [d/], policy: pull}}\n  script:\n    - ls d | wc -l\n    \
         - for f in d/*; do tail -n 1 $f; done | sort | uniq -c\n",
        writer("alpha"),
        writer("beta")
    );
    let p = Project::new(&pipeline);
    for _ in 0..2 {
        let (out, events) = p.run(&["-j", "2"]);
        succeeded(&out);
        let lines = log(&events, "check");
        assert_line(&lines, "200");
        let counts: Vec<&String> = lines.iter().filter(|l| l.contains("alpha") || l.contains("beta")).collect();
        assert_eq!(counts.len(), 1, "one writer's files only: {lines:#?}");
        assert!(counts[0].trim().starts_with("200 "), "{counts:?}");
    }
    let dirs: Vec<_> = std::fs::read_dir(p.home.path().join("cache"))
        .expect("root")
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).expect("project").flatten())
        .flat_map(|d| std::fs::read_dir(d.path()).expect("entry").flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(dirs.iter().all(|n| !n.starts_with(".tmp-")), "temp files left: {dirs:?}");
}

#[test]
fn bad_keys_paths_and_symlinks_are_refused() {
    // A literal key with `..` and `/`: a configuration error naming file, line and key.
    let p = Project::new("j:\n  image: IMAGE\n  cache: {key: ../../x, paths: [a]}\n  script: [true]\n");
    let out = p.glci(&["run", "--no-registry", "--project", &p.path]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(".gitlab-ci.yml:3: j.cache.key: cache key cannot contain the \"/\""), "{stderr}");

    // The same key from a variable: a warning naming job and key, nothing written anywhere.
    let p = Project::new(
        "variables: {K: ../../x}\nj:\n  image: IMAGE\n  cache:\n    - {key: $K, paths: [a/]}\n    \
         - {key: links, paths: [a/, ../outside]}\n  script:\n    - mkdir -p a && echo ok > a/file\n    \
         - ln -s /etc/passwd a/escape && ln -s ../../../../x a/climb && ln -s file a/inside\n",
    );
    let (out, events) = p.run(&[]);
    succeeded(&out);
    let lines = log(&events, "j");
    assert_has(&lines, "WARNING: job j: cache key cannot contain the \"/\" character (nor %2F): \"../../x\"");
    assert_has(&lines, "WARNING: job j, cache links: ../outside is outside the project");
    assert_has(&lines, "WARNING: job j, cache links: symlink a/escape -> /etc/passwd points outside the project");
    assert_has(&lines, "symlink a/climb -> ../../../../x points outside the project");
    assert_eq!(p.caches().into_iter().map(|c| c.0).collect::<Vec<_>>(), ["links"]);
    let home_parent = p.home.path().parent().expect("parent");
    assert!(!home_parent.join("x").exists() && !p.home.path().join("x").exists());

    // The next run gets the file and the inside link, not the refused ones.
    std::fs::write(
        p.dir.path().join(".gitlab-ci.yml"),
        format!(
            "j:\n  image: {IMAGE}\n  cache: {{key: links, paths: [a/]}}\n  script:\n    - cat a/inside\n    \
             - if [ -e a/escape ] || [ -L a/escape ] || [ -L a/climb ]; then echo LEAK$((1))ED; fi\n"
        ),
    )
    .expect("rewrite");
    let (out, events) = p.run(&[]);
    succeeded(&out);
    let lines = log(&events, "j");
    assert_line(&lines, "ok");
    assert!(!has(&lines, "LEAK1ED"), "{lines:#?}");
}

/// The store is per project: another project path never sees the cache.
#[test]
fn caches_never_leak_between_projects() {
    let p = Project::new(
        "j:\n  image: IMAGE\n  cache: {key: same, paths: [c/]}\n  script: ['if [ -f c/v ]; then echo FOUND$((1)); fi', \
         'mkdir -p c', 'echo v > c/v']\n",
    );
    succeeded(&p.run(&[]).0);
    let other = Project { dir: temp_dir(), home: temp_dir(), path: format!("{}-other", p.path) };
    std::fs::copy(p.dir.path().join(".gitlab-ci.yml"), other.dir.path().join(".gitlab-ci.yml")).expect("copy");
    // Same GLCI_HOME, other project path.
    let out = glci()
        .args(["run", "--no-registry", "--json", "--project", &other.path])
        .env("GLCI_HOME", p.home.path())
        .current_dir(other.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("glci");
    succeeded(&out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("FOUND1"));
    let (_, events) = p.run(&[]);
    assert_line(&log(&events, "j"), "FOUND1");
}

#[test]
fn a_dotenv_report_feeds_later_jobs_image_and_variables() {
    let p = Project::new(
        "stages: [build, deploy]\nvariables: {GREETING: global}\nbuild:\n  stage: build\n  image: IMAGE\n  \
         script:\n    - echo DOTENV_IMG=IMAGE > build.env\n    - echo GREETING=from-dotenv >> build.env\n  \
         artifacts: {reports: {dotenv: build.env}}\ndeploy:\n  stage: deploy\n  image: $DOTENV_IMG\n  \
         variables: {GREETING: job}\n  needs: [build]\n  script: ['echo \"greeting=$GREETING\"']\n\
         blind:\n  stage: deploy\n  image: IMAGE\n  needs: [{job: build, artifacts: false}]\n  \
         script: ['echo \"greeting=$GREETING\"']\n",
    );
    let (out, events) = p.run(&[]);
    succeeded(&out);
    assert_has(&log(&events, "build"), "dotenv report: 2 variables for later jobs (DOTENV_IMG, GREETING)");
    let deploy = log(&events, "deploy");
    assert_has(&deploy, &format!("Using docker image {IMAGE}"));
    assert_line(&deploy, "greeting=from-dotenv");
    assert_line(&log(&events, "blind"), "greeting=global");

    let (out, events) = p.run(&["--env", "GREETING=cli"]);
    succeeded(&out);
    assert_line(&log(&events, "deploy"), "greeting=cli");
}

/// GitLab's dynamic environment URL: a dotenv value completes the job's own `environment: url`
/// (said in its trace) and a later job's `CI_ENVIRONMENT_URL`.
#[test]
fn a_dotenv_value_completes_environment_url() {
    let p = Project::new(
        "deploy:\n  stage: build\n  image: IMAGE\n  environment: {name: review, url: $DYNAMIC_URL}\n  \
         script: ['echo DYNAMIC_URL=https://review-1.example.com > deploy.env']\n  \
         artifacts: {reports: {dotenv: deploy.env}}\n\
         smoke:\n  stage: test\n  image: IMAGE\n  environment: {name: review, url: '$DYNAMIC_URL/app', action: verify}\n  \
         script: ['echo \"url=$CI_ENVIRONMENT_URL\"']\n\
         blind:\n  stage: test\n  image: IMAGE\n  needs: [{job: deploy, artifacts: false}]\n  \
         environment: {name: review, url: '$DYNAMIC_URL/app', action: verify}\n  \
         script: ['echo \"url=$CI_ENVIRONMENT_URL\"']\n",
    );
    let (out, events) = p.run(&[]);
    succeeded(&out);
    assert_has(&log(&events, "deploy"), "Environment review: https://review-1.example.com (environment: url");
    assert_line(&log(&events, "smoke"), "url=https://review-1.example.com/app");
    assert_line(&log(&events, "blind"), "url=/app");
}

#[test]
fn a_bad_dotenv_line_fails_the_job_naming_file_and_line() {
    let p = Project::new(
        "build:\n  image: IMAGE\n  script: ['printf \"A=1\\nnot a pair\\n\" > out.env']\n  \
         artifacts: {reports: {dotenv: out.env}}\n",
    );
    let (out, events) = p.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_has(&log(&events, "build"), "ERROR: Job failed: dotenv report out.env:2: invalid format");
}

#[test]
fn a_glci_killed_mid_save_leaves_the_previous_cache_whole() {
    use std::io::{BufRead, BufReader};
    let p =
        Project::new("j:\n  image: IMAGE\n  cache: {key: k, paths: [d/]}\n  script: [mkdir -p d, echo small > d/a]\n");
    succeeded(&p.run(&[]).0);
    let archive = || {
        std::fs::read_dir(p.home.path().join("cache"))
            .expect("root")
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).expect("project").flatten())
            .map(|d| d.path().join("cache.tar"))
            .find(|t| t.exists())
            .expect("cache.tar")
    };
    let before = std::fs::read(archive()).expect("archive");

    // The second run writes 200 MiB into the cache; glci is killed once the save has begun.
    p.write(
        ".gitlab-ci.yml",
        &"j:\n  image: IMAGE\n  cache: {key: k, paths: [d/]}\n  script: [mkdir -p d, 'head -c 209715200 /dev/zero > d/big']\n"
            .replace("IMAGE", IMAGE),
    );
    let mut child = glci()
        .args(["run", "--no-registry", "--json", "--project", &p.path])
        .env("GLCI_HOME", p.home.path())
        .current_dir(p.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start glci");
    let stdout = child.stdout.take().expect("stdout");
    let mut run_id = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let event: Value = serde_json::from_str(&line).expect("JSON");
        if event["event"] == "pipeline_started" {
            run_id = event["run_id"].as_str().expect("run_id").to_string();
        }
        if event["line"].as_str().is_some_and(|l| l.starts_with("Creating cache k")) {
            child.kill().expect("SIGKILL glci");
            break;
        }
    }
    let _ = child.wait();
    // What the killed run left: its containers, its work dir.
    let filter = format!("label=glci.run={run_id}");
    let ids = common::run_stdout(Command::new("docker").args(["ps", "-a", "-q", "--filter", &filter]));
    for id in ids.split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", id]).output();
    }
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("glci-run-{run_id}")));

    assert_eq!(std::fs::read(archive()).expect("archive after the kill"), before, "the previous cache, whole");
    let (out, events) = p.run(&[]);
    succeeded(&out);
    assert_has(&log(&events, "j"), "Successfully extracted cache k");
}
