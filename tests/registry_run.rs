//! The registry in `glci run` (issue 8), on the real Docker engine: the demo pipeline
//! (`fixtures/demo`: push to `$CI_REGISTRY_IMAGE` over verified HTTPS, a later job running in
//! that image, a second run after `docker rm -f` of the mock), `--no-registry`, `--registry`
//! against a local `docker-registry`, the files and variables a job and a DinD-style service
//! get, `DOCKER_AUTH_CONFIG` merging (fake `~/.docker/config.json` + a credential helper on
//! PATH), `--push-through` into a local `docker-registry`, and glci-mock pulling through from a
//! `docker-registry` behind htpasswd with the host's Docker credentials.
//!
//! Each test has its own mock (`GLCI_MOCK_NAME`: container, volume, network), port and
//! `GLCI_HOME`, so a user's real `glci-mock` is never touched; all of it is removed on drop.
//! Needs dockerd, skopeo, docker-registry, htpasswd and busybox-static (`make test`).
//! A real DinD job runs on images assembled from the host's docker.io packages
//! (`fixtures/images/dind.sh`, after shared/notes/dind-offline.md).

// Tests spawn processes; clippy.toml's disallowed-methods is meant for src/.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use common::{build_busybox_rootfs, glci, need, need_docker_daemon, run, run_stdout, temp_dir};

const BUSYBOX: &str = "glci-test/busybox:e2e";
const TOOLBOX: &str = "glci-demo/toolbox:1";
const FAKE_DIND: &str = "glci-test/fake-dind:e2e";
const DIND: &str = "glci-test/dind:e2e";
const DOCKER_CLI: &str = "glci-test/docker-cli:e2e";

fn images() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        need_docker_daemon();
        need("skopeo");
        let present = |image: &str| {
            Command::new("docker").args(["image", "inspect", image]).output().is_ok_and(|o| o.status.success())
        };
        if !present(BUSYBOX) {
            let dir = temp_dir();
            let tar = build_busybox_rootfs(&dir.path().join("rootfs.tar"));
            run(Command::new("docker").args(["import", "--change", "EXPOSE 8080"]).arg(&tar).arg(BUSYBOX));
        }
        run(Command::new("docker").args(["tag", BUSYBOX, FAKE_DIND]));
        // Built once per machine, like BUSYBOX (remove them to rebuild after a recipe change).
        if !present(TOOLBOX) {
            run(Command::new("bash").arg(common::fixture_path("demo/make-toolbox.sh")).arg(TOOLBOX));
        }
        if !present(DIND) || !present(DOCKER_CLI) {
            run(Command::new("bash").arg(common::fixture_path("images/dind.sh")).args([DIND, DOCKER_CLI]));
        }
    });
}

/// One test's mock (names, port), `GLCI_HOME` and project; everything removed on drop.
struct Sandbox {
    prefix: String,
    port: u16,
    home: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Sandbox {
    /// `slot` keeps ports of tests in one run apart; `config` goes after `mock_server_port`.
    fn new(slot: u16, config: &str) -> Sandbox {
        images();
        let pid = std::process::id();
        let prefix = format!("glcitest{pid}s{slot}");
        // Below the ephemeral range (32768-60999): an outgoing connection can never hold it.
        let port = 20000 + (pid % 400) as u16 * 20 + slot;
        let home = temp_dir();
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "mock_server_port = {port}\n{}",
                if config.is_empty() { "[registry]\nupstreams = []\n" } else { config }
            ),
        )
        .unwrap();
        Sandbox { prefix, port, home, project: temp_dir() }
    }

    fn glci(&self) -> Command {
        let mut cmd = glci();
        cmd.env("GLCI_HOME", self.home.path())
            .env("GLCI_MOCK_NAME", &self.prefix)
            .env("DOCKER_CONFIG", self.home.path().join("no-docker-config"))
            .env_remove("GLCI_REGISTRY_PASSWORD")
            .current_dir(self.project.path());
        cmd
    }

    /// The demo fixture as a git project (CI_COMMIT_SHORT_SHA is its commit).
    fn demo_project(&self) -> String {
        common::demo_project(self.project.path())
    }

    fn pipeline(&self, yaml: &str) {
        std::fs::write(self.project.path().join(".gitlab-ci.yml"), yaml).unwrap();
    }

    /// A job script as a file of the project (`sh check.sh`), free of YAML quoting.
    fn script(&self, text: &str) {
        std::fs::write(self.project.path().join("check.sh"), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        self.glci().arg("run").args(args).stdin(Stdio::null()).output().expect("start glci")
    }

    fn container(&self) -> String {
        format!("{}-mock", self.prefix)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            let _ = Command::new("docker").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        docker(&["rm", "-f", "-v", &self.container()]);
        docker(&["volume", "rm", &format!("{}-registry", self.prefix)]);
        docker(&["network", "rm", &format!("{}-net", self.prefix)]);
        docker(&["image", "rm", &format!("{}-mock:{}", self.prefix, env!("CARGO_PKG_VERSION"))]);
        let filter = format!("reference=glci-mock:{}/*/*/*", self.port);
        if let Ok(out) = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", &filter])
            .output()
        {
            for image in String::from_utf8_lossy(&out.stdout).lines() {
                docker(&["image", "rm", image]);
            }
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn expect_success(out: &Output) -> String {
    assert!(out.status.success(), "glci run failed:\n{}", text(out));
    stdout(out)
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

// The base64 crate, not glci's own encoding module: the test checks glci against an outside encoder.
fn base64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

fn unbase64(text: &str) -> Vec<u8> {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text:?}"))
}

/// Debian's docker-registry as a host process on the address containers reach the host at
/// ([`common::host_address_for_containers`]), optionally behind htpasswd; killed on drop.
struct Distribution {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Distribution {
    fn start(credentials: Option<(&str, &str)>) -> Distribution {
        Distribution::start_on(credentials, None)
    }

    /// On `host` (e.g. 127.0.0.1, which the host daemon treats as insecure), else the host's
    /// address on the default bridge.
    fn start_on(credentials: Option<(&str, &str)>, host: Option<&str>) -> Distribution {
        need("docker-registry");
        let gateway = host.map_or_else(common::host_address_for_containers, str::to_string);
        let dir = temp_dir();
        let mut auth = String::new();
        if let Some((user, password)) = credentials {
            need("htpasswd");
            let file = dir.path().join("htpasswd");
            run(Command::new("htpasswd").arg("-Bbc").arg(&file).args([user, password]));
            auth = format!("auth:\n  htpasswd:\n    realm: t\n    path: {}\n", file.display());
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {gateway}:0\n  secret: t\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("listening on ") {
                    let _ = tx.send(rest.split(['"', ' ']).next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("docker-registry listening");
        Distribution { child, addr, _dir: dir }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo: build-image pushes over verified HTTPS, run-image runs in the pushed image; the
/// mock is removed and the second run (run-image only) finds the image in the volume.
#[test]
fn demo_pipeline_pushes_its_image_and_runs_in_it_twice() {
    let sandbox = Sandbox::new(1, "");
    let sha = sandbox.demo_project();
    let out = expect_success(&sandbox.run(&["--project", "demo/app"]));
    assert!(out.contains(&format!("glci-mock:{}/demo/app/app@sha256:", sandbox.port)), "{out}");
    assert!(out.contains(&format!("hello from demo/app, built at commit {sha}")), "{out}");

    assert!(docker_ok(&["rm", "-f", &sandbox.container()]));
    let image = format!("glci-mock:{}/demo/app/app:{sha}", sandbox.port);
    assert!(docker_ok(&["image", "rm", &image]), "the host had {image}");
    let second = sandbox.run(&["--project", "demo/app", "--env", "DEMO_REUSE=1"]);
    let out = expect_success(&second);
    assert!(!out.contains("build-image"), "{out}");
    assert!(out.contains(&format!("Pulling docker image {image}")), "{out}");
    assert!(out.contains("hello from demo/app"), "{out}");
    assert!(String::from_utf8_lossy(&second.stderr).contains("created"), "{}", text(&second));

    let list = sandbox.glci().args(["registry", "list", "--project", "demo/app"]).output().unwrap();
    assert!(list.status.success(), "{}", text(&list));
    assert!(stdout(&list).contains("demo/app/app") && stdout(&list).contains(&sha), "{}", text(&list));

    // A third run: the mock is up to date and running: reused as it is.
    let third = sandbox.run(&["--project", "demo/app", "--env", "DEMO_REUSE=1"]);
    expect_success(&third);
    assert!(String::from_utf8_lossy(&third.stderr).contains("running on"), "{}", text(&third));
}

/// `--no-registry`: no variables, no CA, no mock; the demo's push job fails for want of them.
#[test]
fn no_registry_gives_no_variables_no_ca_and_starts_no_mock() {
    let sandbox = Sandbox::new(2, "");
    sandbox.pipeline(&format!(
        "show:\n  image: {BUSYBOX}\n  script:\n    - echo \"reg=[$CI_REGISTRY] img=[$CI_REGISTRY_IMAGE] pw=[$CI_REGISTRY_PASSWORD] auth=[$DOCKER_AUTH_CONFIG]\"\n    - test ! -e /glci-registry-certs && echo no-ca\n"
    ));
    let out = expect_success(&sandbox.run(&["--no-registry"]));
    assert!(out.contains("reg=[] img=[] pw=[] auth=[]"), "{out}");
    assert!(out.contains("no-ca"), "{out}");
    assert!(!docker_ok(&["inspect", &sandbox.container()]), "a mock was started");

    sandbox.demo_project();
    let demo = sandbox.run(&["--no-registry", "--project", "demo/app"]);
    assert_eq!(demo.status.code(), Some(1), "{}", text(&demo));
    assert!(!docker_ok(&["inspect", &sandbox.container()]), "a mock was started");

    // --registry with --no-registry is a usage error.
    let both = sandbox.run(&["--no-registry", "--registry", "example.com"]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both));
}

/// `--registry` (and `[registry] url` with a `"$VAR"` password): the variables point at a local
/// docker-registry behind htpasswd and the credentials work there; nothing is mounted.
#[test]
fn external_registry_from_flags_and_config() {
    let registry = Distribution::start(Some(("ext-user", "ext-secret-pw")));
    let sandbox = Sandbox::new(3, "");
    sandbox.script(
        "echo \"reg=$CI_REGISTRY img=$CI_REGISTRY_IMAGE user=$CI_REGISTRY_USER pw=$CI_REGISTRY_PASSWORD\"\n\
         test ! -e /glci-registry-certs && echo no-ca\n\
         host=${CI_REGISTRY%:*}; port=${CI_REGISTRY##*:}\n\
         auth=$(printf '%s' \"$CI_REGISTRY_USER:$CI_REGISTRY_PASSWORD\" | base64)\n\
         printf 'GET /v2/ HTTP/1.0\\r\\nAuthorization: Basic %s\\r\\n\\r\\n' \"$auth\" | nc -w 5 $host $port | head -1\n\
         printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $host $port | head -1\n",
    );
    let script = "show:\n  image: glci-test/busybox:e2e\n  script:\n    - sh check.sh\n";
    sandbox.pipeline(script);
    let addr = &registry.addr;
    let mut cmd = sandbox.glci();
    cmd.args([
        "run",
        "--project",
        "g/p",
        "--registry",
        addr,
        "--registry-user",
        "ext-user",
        "--registry-password-stdin",
    ]);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"ext-secret-pw\n").unwrap();
    }
    let out = expect_success(&child.wait_with_output().unwrap());
    assert!(out.contains(&format!("reg={addr} img={addr}/g/p user=ext-user pw=[MASKED]")), "{out}");
    assert!(!out.contains("ext-secret-pw"), "{out}");
    assert!(out.contains("no-ca"), "{out}");
    assert!(out.contains(" 200 OK"), "the credentials did not work:\n{out}");
    assert!(out.contains(" 401 Unauthorized"), "{out}");
    assert!(!docker_ok(&["inspect", &sandbox.container()]), "a mock was started");

    // The same from the global config, the password through "$VAR".
    std::fs::write(
        sandbox.home.path().join("config.toml"),
        format!("[registry]\nurl = \"{addr}\"\nusername = \"ext-user\"\npassword = \"$EXT_PW\"\n"),
    )
    .unwrap();
    let out = sandbox.glci().env("EXT_PW", "ext-secret-pw").args(["run", "--project", "g/p"]).output().unwrap();
    let out = expect_success(&out);
    assert!(out.contains(" 200 OK"), "{out}");
    assert!(!out.contains("ext-secret-pw"), "{out}");

    // The demo's build-image job pushes there (plain HTTP: REGISTRY_TLS_VERIFY=false).
    std::fs::remove_file(sandbox.project.path().join(".gitlab-ci.yml")).unwrap();
    let sha = sandbox.demo_project();
    let out = sandbox
        .glci()
        .env("EXT_PW", "ext-secret-pw")
        .args(["run", "--project", "demo/app", "--env", "REGISTRY_TLS_VERIFY=false", "build-image"])
        .output()
        .unwrap();
    expect_success(&out);
    let tags = run_stdout(Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        "--creds",
        "ext-user:ext-secret-pw",
        &format!("docker://{addr}/demo/app/app"),
    ]));
    assert!(tags.contains(&sha), "{tags}");
}

/// What a job and a DinD-style service find in their containers with the embedded registry.
#[test]
fn job_and_dind_service_files_and_variables() {
    let sandbox = Sandbox::new(4, "");
    let port = sandbox.port;
    let host_bundle =
        run_stdout(Command::new("docker").args(["run", "--rm", TOOLBOX, "cat", "/etc/ssl/certs/ca-certificates.crt"]));
    // The service serves its own files over nc (port 8080, which the image exposes).
    let yaml = format!(
        "check:\n  image: {TOOLBOX}\n  services:\n    - name: {FAKE_DIND}\n      alias: dind\n      variables:\n        DOCKER_TLS_CERTDIR: \"\"\n      \
         command: [\"sh\", \"-c\", \"(cat /etc/docker/daemon.json; echo; cat /etc/docker/certs.d/glci-mock:{port}/ca.crt; grep CapEff /proc/self/status) > /tmp/report; while true; do nc -l -p 8080 < /tmp/report; done\"]\n  \
         script:\n    \
         - echo \"reg=$CI_REGISTRY img=$CI_REGISTRY_IMAGE user=$CI_REGISTRY_USER pw=$CI_REGISTRY_PASSWORD\"\n    \
         - cmp /glci-registry-certs/ca.crt /etc/docker/certs.d/glci-mock:{port}/ca.crt && echo certs-d-ok\n    \
         - cmp /glci-registry-certs/ca.crt /etc/containers/certs.d/glci-mock:{port}/ca.crt && echo containers-certs-d-ok\n    \
         - echo bundle-lines=$(wc -l < /etc/ssl/certs/ca-certificates.crt) ca-lines=$(wc -l < /glci-registry-certs/ca.crt)\n    \
         - tail -n $(wc -l < /glci-registry-certs/ca.crt) /etc/ssl/certs/ca-certificates.crt | cmp - /glci-registry-certs/ca.crt && echo bundle-ends-with-ca\n    \
         - cat /etc/buildkit/buildkitd.toml\n    \
         - nc -w 5 dind 8080\n    \
         - echo CA-BEGIN; cat /glci-registry-certs/ca.crt; echo CA-END\n"
    );
    sandbox.pipeline(&yaml);
    let out = expect_success(&sandbox.run(&["--project", "grp/sub/proj"]));
    let lines: Vec<&str> = out.lines().map(|l| l.split_once(" | ").map_or(l, |(_, r)| r)).collect();
    let joined = lines.join("\n");
    assert!(
        joined.contains(&format!(
            "reg=glci-mock:{port} img=glci-mock:{port}/grp/sub/proj user=gitlab-ci-token pw=[MASKED]"
        )),
        "{out}"
    );
    for marker in ["certs-d-ok", "containers-certs-d-ok", "bundle-ends-with-ca"] {
        assert!(lines.contains(&marker), "{marker}:\n{out}");
    }
    let ca = std::fs::read_to_string(sandbox.home.path().join("registry-ca/ca.crt")).unwrap();
    let expected =
        format!("bundle-lines={} ca-lines={}", host_bundle.lines().count() + ca.lines().count(), ca.lines().count());
    assert!(lines.contains(&expected.as_str()), "{expected}:\n{out}");
    // The job's CA is the host's.
    let shown = joined.split("CA-BEGIN\n").nth(1).and_then(|r| r.split("\nCA-END").next()).unwrap_or("");
    assert_eq!(shown.trim(), ca.trim());
    // buildkitd.toml
    assert!(joined.contains(&format!("[registry.\"glci-mock:{port}\"]\nhttp = true\ninsecure = true")), "{out}");
    assert!(joined.contains(&format!("mirrors = [\"glci-mock:{port}\"]")), "{out}");
    // The DinD stand-in: daemon.json, certs.d, and more capabilities than a default container.
    assert!(joined.contains(&format!("\"http://glci-mock:{port}\"")), "{out}");
    assert!(joined.contains("\"registry-mirrors\"") && joined.contains("\"insecure-registries\""), "{out}");
    let capeff = lines.iter().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).expect("CapEff line");
    let caps = u64::from_str_radix(capeff, 16).unwrap();
    assert!(caps.count_ones() > 30, "the DinD service is not privileged: CapEff {capeff}\n{out}");
}

/// DOCKER_AUTH_CONFIG: the host's config.json (auths + a credential helper on PATH), the job's
/// registry credential, and the pipeline's own entry winning for its host.
#[test]
fn docker_auth_config_merges_host_helper_job_and_pipeline() {
    let sandbox = Sandbox::new(5, "");
    let fake_home = temp_dir();
    let docker_dir = fake_home.path().join(".docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(
        docker_dir.join("config.json"),
        format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"registry.example.com":{{"auth":"{}"}}}},"credHelpers":{{"helper.example.com":"glcitest"}}}}"#,
            base64(b"hubuser:hub-password"),
            base64(b"hostuser:host-password")
        ),
    )
    .unwrap();
    let bin = fake_home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-glcitest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = helper.example.com ] && \
         echo '{\"ServerURL\":\"helper.example.com\",\"Username\":\"helperuser\",\"Secret\":\"helper-secret\"}'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let own = format!(r#"{{"auths":{{"registry.example.com":{{"auth":"{}"}}}}}}"#, base64(b"pipeuser:pipe-password"));
    sandbox.pipeline(&format!(
        "variables:\n  DOCKER_AUTH_CONFIG: '{own}'\nshow:\n  image: {BUSYBOX}\n  script:\n    - echo \"$DOCKER_AUTH_CONFIG\"\n    - sh check.sh\n"
    ));
    sandbox.script("echo \"encoded=$(printf '%s' \"$DOCKER_AUTH_CONFIG\" | base64 | tr -d '\\n')\"\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = sandbox
        .glci()
        .env("HOME", fake_home.path())
        .env_remove("DOCKER_CONFIG")
        .env("PATH", path)
        .args(["run", "--project", "g/p", "--registry", "reg.test:5000", "--registry-user", "ru"])
        .env("GLCI_REGISTRY_PASSWORD", "registry-password")
        .output()
        .unwrap();
    let out = expect_success(&out);
    for secret in ["hub-password", "host-password", "helper-secret", "pipe-password", "registry-password"] {
        assert!(!out.contains(secret), "{secret} shown:\n{out}");
    }
    assert!(out.contains("| [MASKED]"), "{out}");
    let encoded = out.lines().find_map(|l| l.split_once("encoded=").map(|(_, r)| r.trim())).expect("encoded line");
    let config: serde_json::Value = serde_json::from_slice(&unbase64(encoded)).unwrap();
    let auth = |key: &str| {
        let value = config["auths"][key]["auth"].as_str().unwrap_or_else(|| panic!("no {key} in {config}"));
        String::from_utf8(unbase64(value)).unwrap()
    };
    assert_eq!(auth("https://index.docker.io/v1/"), "hubuser:hub-password");
    assert_eq!(auth("registry.example.com"), "pipeuser:pipe-password", "the pipeline's own entry wins");
    assert_eq!(auth("helper.example.com"), "helperuser:helper-secret");
    assert_eq!(auth("reg.test:5000"), "ru:registry-password");
    assert_eq!(config["auths"].as_object().unwrap().len(), 4, "{config}");
}

/// `--push-through`: what build-image pushes reaches a local docker-registry upstream.
#[test]
fn push_through_mirrors_the_demo_image_upstream() {
    let upstream = Distribution::start(None);
    let sandbox = Sandbox::new(
        6,
        &format!("[registry]\nupstreams = []\n[registry.upstream]\nurl = \"http://{}\"\n", upstream.addr),
    );
    let sha = sandbox.demo_project();
    let out = expect_success(&sandbox.run(&["--project", "demo/app", "--push-through", "build-image"]));
    assert!(out.contains("Writing manifest"), "{out}");
    let tags = run_stdout(Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/demo/app/app", upstream.addr),
    ]));
    assert!(tags.contains(&sha), "the upstream lacks {sha}: {tags}");

    // Without --push-through nothing goes upstream.
    let other = Distribution::start(None);
    std::fs::write(
        sandbox.home.path().join("config.toml"),
        format!(
            "mock_server_port = {}\n[registry]\nupstreams = []\n[registry.upstream]\nurl = \"http://{}\"\n",
            sandbox.port, other.addr
        ),
    )
    .unwrap();
    expect_success(&sandbox.run(&["--project", "demo/app", "build-image"]));
    let listed = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false", &format!("docker://{}/demo/app/app", other.addr)])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&sha), "mirrored without --push-through");
}

/// A real DinD service: privileged (or the capability fallback), its daemon.json making the
/// embedded registry an insecure mirror; the classic builder and BuildKit push to and build
/// from `$CI_REGISTRY_IMAGE`.
#[test]
fn real_dind_job_builds_pushes_and_builds_from_the_registry() {
    let sandbox = Sandbox::new(7, "");
    std::fs::write(sandbox.project.path().join("hello.txt"), "hello-dind\n").unwrap();
    sandbox.script(
        "set -e\n\
         docker info --format 'mirrors={{json .RegistryConfig.Mirrors}}'\n\
         printf 'FROM scratch\\nCOPY hello.txt /hello.txt\\n' > Dockerfile\n\
         DOCKER_BUILDKIT=0 docker build -q -t \"$CI_REGISTRY_IMAGE/dind:1\" .\n\
         echo \"$CI_REGISTRY_PASSWORD\" | docker login -u \"$CI_REGISTRY_USER\" --password-stdin \"$CI_REGISTRY\"\n\
         docker push -q \"$CI_REGISTRY_IMAGE/dind:1\"\n\
         docker rmi -f \"$CI_REGISTRY_IMAGE/dind:1\" > /dev/null\n\
         printf 'FROM %s\\nCOPY hello.txt /again.txt\\n' \"$CI_REGISTRY_IMAGE/dind:1\" > Dockerfile.bk\n\
         DOCKER_BUILDKIT=1 docker build -q -f Dockerfile.bk -t \"$CI_REGISTRY_IMAGE/dind:2\" .\n\
         docker push -q \"$CI_REGISTRY_IMAGE/dind:2\"\n\
         echo dind-done\n",
    );
    sandbox.pipeline(&format!(
        "dind:\n  image: {DOCKER_CLI}\n  services:\n    - name: {DIND}\n      alias: docker\n  \
         variables:\n    DOCKER_HOST: tcp://docker:2375\n  script:\n    - sh check.sh\n"
    ));
    let out = expect_success(&sandbox.run(&["--project", "grp/dind"]));
    assert!(out.contains(&format!("mirrors=[\"http://glci-mock:{}/\"]", sandbox.port)), "{out}");
    assert!(out.contains("Login Succeeded") && out.contains("dind-done"), "{out}");
    let list = sandbox.glci().args(["registry", "list", "--project", "grp/dind"]).output().unwrap();
    let listed = stdout(&list);
    assert!(listed.contains("grp/dind/dind") && listed.contains(" 1 ") && listed.contains(" 2 "), "{}", text(&list));
}

/// The host daemon pulls a job image with the pipeline's own DOCKER_AUTH_CONFIG entry for its
/// registry (a docker-registry behind htpasswd on 127.0.0.1).
#[test]
fn job_image_is_pulled_with_the_pipelines_docker_auth_config() {
    let registry = Distribution::start_on(Some(("pull-user", "pull-secret")), Some("127.0.0.1"));
    let sandbox = Sandbox::new(8, "");
    let image = format!("{}/private/busybox:1", registry.addr);
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "pull-user:pull-secret",
        &format!("docker-daemon:{BUSYBOX}"),
        &format!("docker://{image}"),
    ]));
    let own = format!(r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#, registry.addr, base64(b"pull-user:pull-secret"));
    sandbox.pipeline(&format!(
        "variables:\n  DOCKER_AUTH_CONFIG: '{own}'\nshow:\n  image: {image}\n  script:\n    - echo private-image-ran\n"
    ));
    let out = sandbox.run(&["--no-registry"]);
    // Without the wiring (--no-registry) a plain `docker pull` has no credentials: refused.
    assert!(!out.status.success(), "{}", text(&out));
    let out = expect_success(&sandbox.run(&["--registry", "reg.test:5000", "--registry-user", "u"]));
    let _ = Command::new("docker").args(["image", "rm", &image]).output();
    assert!(out.contains(&format!("Pulling docker image {image}")) && out.contains("private-image-ran"), "{out}");
}

/// Issue 14 §5: glci-mock pulls through with the host's Docker credentials. An upstream
/// docker-registry behind htpasswd holds an image; the host's `config.json` first has a wrong
/// password (the pull-through is refused), then the right one, and the next `glci run`
/// re-creates the mock with it: the image is served with the upstream's digest. The password is
/// nowhere in `docker inspect` (container and image: labels, env, argv), the mock's log or
/// glci's output; inside the container it is a 0600 file.
#[test]
fn mock_pulls_through_with_the_hosts_docker_credentials() {
    const PASSWORD: &str = "upstream-pw-7f3a91";
    let upstream = Distribution::start(Some(("puller", PASSWORD)));
    let work = temp_dir();
    let layout = common::build_oci_layout(&work.path().join("layout"));
    run(Command::new("skopeo").args(["copy", "--quiet", "--dest-tls-verify=false"]).args([
        "--dest-creds",
        &format!("puller:{PASSWORD}"),
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{}/lib/app:multi", upstream.addr),
    ]));
    let sandbox = Sandbox::new(
        9,
        &format!(
            "[registry]\nupstreams = [\"{0}\"]\n[registry.upstream_urls]\n\"{0}\" = \"http://{0}\"\n",
            upstream.addr
        ),
    );
    sandbox.pipeline(&format!("hello:\n  image: {BUSYBOX}\n  script:\n    - echo hello\n"));
    let docker_config = work.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let write_credentials = |password: &str| {
        std::fs::write(
            docker_config.join("config.json"),
            format!(
                r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
                upstream.addr,
                base64(format!("puller:{password}").as_bytes())
            ),
        )
        .unwrap();
    };
    let glci_run = || {
        let out = sandbox.glci().env("DOCKER_CONFIG", &docker_config).arg("run").stdin(Stdio::null()).output().unwrap();
        expect_success(&out);
        text(&out)
    };
    let token = run_stdout(sandbox.glci().args(["registry", "login", "--print"])).trim().to_string();
    let inspect = || {
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", "--creds", &format!("glci-admin:{token}")])
            .arg(format!("docker://127.0.0.1:{}/lib/app:multi", sandbox.port))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    write_credentials("wrong-password");
    let mut outputs = glci_run();
    let refused = inspect();
    assert!(!refused.status.success(), "pulled through with a wrong password: {}", text(&refused));

    write_credentials(PASSWORD);
    let second = glci_run();
    assert!(second.contains("created"), "the credential change did not re-create the mock:\n{second}");
    outputs.push_str(&second);
    let pulled = inspect();
    assert!(pulled.status.success(), "pull-through with the host's credentials: {}", text(&pulled));
    let digest = common::sha256_digest(&pulled.stdout);
    assert_eq!(digest, common::layout_tag_digest(&layout, "multi"), "served digest");

    let encoded = base64(format!("puller:{PASSWORD}").as_bytes());
    let container = sandbox.container();
    let image = format!("{}-mock:{}", sandbox.prefix, env!("CARGO_PKG_VERSION"));
    let logs = Command::new("docker").args(["logs", &container]).output().unwrap();
    let seen = [
        ("docker inspect of the container", run_stdout(Command::new("docker").args(["inspect", &container]))),
        ("docker inspect of the image", run_stdout(Command::new("docker").args(["image", "inspect", &image]))),
        ("the mock's log", text(&logs)),
        ("glci's output", outputs),
    ];
    for (what, shown) in &seen {
        assert!(!shown.contains(PASSWORD) && !shown.contains(&encoded), "the upstream password is in {what}:\n{shown}");
    }
    let env = run_stdout(Command::new("docker").args(["inspect", "--format", "{{json .Config.Env}}", &container]));
    assert!(env.contains("DOCKER_CONFIG=/glci-home/docker"), "{env}");
    // Inside: a 0600 file holding the credential.
    let copied = Command::new("docker")
        .args(["cp", &format!("{container}:/glci-home/docker/config.json"), "-"])
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", text(&copied));
    let mut archive = tar::Archive::new(copied.stdout.as_slice());
    let mut entry = archive.entries().unwrap().next().expect("one file").unwrap();
    assert_eq!(entry.header().mode().unwrap() & 0o777, 0o600);
    let mut contents = String::new();
    std::io::Read::read_to_string(&mut entry, &mut contents).unwrap();
    assert!(contents.contains(&encoded), "{contents}");
}

/// Every docker CLI on the machine (the PATH's and Debian's /usr/bin/docker 20.10, whose
/// `docker cp` says "No such container:path" for a missing file): a busybox job with the
/// registry (no CA bundle, no buildkitd.toml in the image) and an artifact path that matches
/// nothing runs to success with each.
#[test]
fn busybox_job_with_the_registry_runs_with_every_docker_cli() {
    let sandbox = Sandbox::new(10, "");
    sandbox.pipeline(&format!(
        "build:\n  image: {BUSYBOX}\n  script:\n    - echo reg=$CI_REGISTRY\n    - echo kept > out.txt\n  \
         artifacts:\n    paths: [out.txt, not-made/]\n"
    ));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut clis: Vec<std::path::PathBuf> = std::env::split_paths(&path)
        .map(|dir| dir.join("docker"))
        .chain([std::path::PathBuf::from("/usr/bin/docker")])
        .filter_map(|cli| cli.canonicalize().ok())
        .collect();
    clis.sort();
    clis.dedup();
    assert!(!clis.is_empty(), "no docker CLI on PATH");
    for cli in clis {
        let shim = temp_dir();
        std::os::unix::fs::symlink(&cli, shim.path().join("docker")).unwrap();
        let shimmed =
            std::env::join_paths(std::iter::once(shim.path().to_path_buf()).chain(std::env::split_paths(&path)))
                .unwrap();
        let out = sandbox.glci().arg("run").env("PATH", shimmed).stdin(Stdio::null()).output().expect("start glci");
        let shown = format!("with {}:\n{}", cli.display(), text(&out));
        assert_eq!(out.status.code(), Some(0), "{shown}");
        assert!(stdout(&out).contains(&format!("reg=glci-mock:{}", sandbox.port)), "{shown}");
    }
}

/// The image files a job's wiring reads (CA bundles, buildkitd.toml) are kept in
/// `$GLCI_HOME/image-files` by image ID: a second run of the same image reads none of them
/// with `docker cp` (every docker call logged by a PATH shim), and its job still gets the CA.
#[test]
fn a_second_run_reads_no_image_file_with_docker_cp() {
    let sandbox = Sandbox::new(11, "");
    sandbox.pipeline(&format!(
        "show:\n  image: {TOOLBOX}\n  script:\n    - tail -n 1 /etc/ssl/certs/ca-certificates.crt\n"
    ));
    let docker = common::DockerCallLog::new();
    let reads = |out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
        docker.take().iter().filter(|l| l.starts_with("cp ") && l.contains(":/etc/")).count()
    };
    let first = sandbox.glci().arg("run").env("PATH", docker.path()).stdin(Stdio::null()).output().unwrap();
    assert!(reads(&first) >= 2, "the first run reads the image's files");
    let second = sandbox.glci().arg("run").env("PATH", docker.path()).stdin(Stdio::null()).output().unwrap();
    assert_eq!(reads(&second), 0, "{}", text(&second));
    assert!(stdout(&second).contains("-----END CERTIFICATE-----"), "{}", text(&second));
}
