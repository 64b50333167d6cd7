//! The registry page's promise "the registry data lives on the glci-registry Docker volume, so it
//! persists across daemon restarts" (issue 14 §5), on the real engine: the demo pipeline pushes
//! its image through a `glci run`, the Docker daemon is stopped and started again, and the next
//! `glci run` finds glci-mock serving the same image with the same digest (the job runs in it,
//! nothing is pushed again) and `glci registry list` shows it.
//!
//! Stopping dockerd stops every container on the machine, so this test has a binary of its own
//! (cargo runs test binaries one after another: no other test runs while it does), and runs only
//! when `GLCI_TEST_RESTART_DOCKERD=1`, which `make test` (CI's `.ci/run`) sets; a plain
//! `cargo test` on a shared machine leaves the daemon alone and says so. The daemon is stopped
//! with `systemctl stop` under systemd, else with SIGTERM to `dockerd` (waited for with a pidfd),
//! and started again by `scripts/deps.sh`, as `make test` starts it. Needs root, dockerd, skopeo
//! and busybox-static (`make test`).
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{build_busybox_rootfs, glci, need_docker_daemon, repo_root, run, run_stdout, temp_dir};

const BUSYBOX: &str = "glci-test/busybox:e2e";
const TOOLBOX: &str = "glci-demo/toolbox:1";
/// How long a stopping dockerd (it stops every container first) and its containerd may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(180);

fn present(image: &str) -> bool {
    Command::new("docker").args(["image", "inspect", image]).output().is_ok_and(|o| o.status.success())
}

fn docker_answers() -> bool {
    Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn expect_success(out: &Output) -> String {
    assert!(out.status.success(), "glci failed ({}):\n{}", out.status, text(out));
    text(out)
}

/// The pid in the host daemon's pid file `path`, when that process is alive and is `name`
/// (a DinD job's dockerd shows in /proc too: only the pid file names the host's).
fn pid_from_file(path: &str, name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == name && is_live(pid)).then_some(pid)
}

fn is_live(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')) != Some(true)
}

/// Waits until `pid` (not our child) has exited: a pidfd becomes readable when it does. False
/// when it is still alive after [`STOP_TIMEOUT`].
fn wait_exit(pid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        // The process is gone already (ESRCH), or the kernel predates pidfds (< 5.3): then a
        // bounded check of /proc is all there is.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while is_live(pid) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        return true;
    }
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd; the timeout is in milliseconds.
    let ready = unsafe { libc::poll(&mut poll, 1, STOP_TIMEOUT.as_millis() as i32) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    ready == 1
}

/// Stops the Docker daemon and the containerd it runs; why not, if it could not.
fn stop_dockerd() -> Result<(), String> {
    if Path::new("/run/systemd/system").is_dir() {
        let out = Command::new("systemctl").args(["stop", "docker.socket", "docker.service"]).output();
        return match out {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!("systemctl stop docker: {}", text(&out))),
            Err(e) => Err(format!("systemctl: {e}")),
        };
    }
    let dockerd = pid_from_file("/var/run/docker.pid", "dockerd").ok_or("no live dockerd in /var/run/docker.pid")?;
    let containerd = pid_from_file("/var/run/docker/containerd/containerd.pid", "containerd");
    // SAFETY: a signal to a pid we just read.
    if unsafe { libc::kill(dockerd, libc::SIGTERM) } != 0 {
        return Err(format!("cannot signal dockerd (pid {dockerd}): {}", std::io::Error::last_os_error()));
    }
    if !wait_exit(dockerd) {
        return Err(format!("dockerd (pid {dockerd}) did not exit within {STOP_TIMEOUT:?}"));
    }
    match containerd {
        Some(pid) if !wait_exit(pid) => Err(format!("containerd (pid {pid}) did not exit within {STOP_TIMEOUT:?}")),
        _ => Ok(()),
    }
}

/// Stops the Docker daemon, then starts it as `make test` does (`scripts/deps.sh`), whatever
/// the stop did: the daemon is shared, it must never be left down.
fn restart_dockerd() {
    let stopped = stop_dockerd();
    let answered_while_stopped = stopped.is_ok() && docker_answers();
    let started = Command::new("bash").arg(repo_root().join("scripts/deps.sh")).stdin(Stdio::null()).output();
    let started = started.map_err(|e| e.to_string()).and_then(|out| {
        if out.status.success() && docker_answers() {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    assert!(started.is_ok(), "the Docker daemon did not come back: {}", started.unwrap_err());
    assert!(stopped.is_ok(), "stopping the Docker daemon: {}", stopped.unwrap_err());
    assert!(!answered_while_stopped, "the Docker daemon still answered after it was stopped");
}

/// This test's mock (names, port), `GLCI_HOME` and project; removed on drop.
struct Sandbox {
    prefix: String,
    port: u16,
    home: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let pid = std::process::id();
        let prefix = format!("glcirestart{pid}");
        // Below the ephemeral range, apart from registry_run.rs's slots (20000 + …).
        let port = 28000 + (pid % 1000) as u16;
        let home = temp_dir();
        std::fs::write(
            home.path().join("config.toml"),
            format!("mock_server_port = {port}\n[registry]\nupstreams = []\n"),
        )
        .unwrap();
        Sandbox { prefix, port, home, project: temp_dir() }
    }

    fn glci(&self) -> Command {
        let mut cmd = glci();
        cmd.env("GLCI_HOME", self.home.path())
            .env("GLCI_MOCK_NAME", &self.prefix)
            .env("DOCKER_CONFIG", self.home.path().join("no-docker-config"))
            .current_dir(self.project.path())
            .stdin(Stdio::null());
        cmd
    }

    /// The demo fixture as a git project; returns its short commit (the image's tag).
    fn demo_project(&self) -> String {
        common::demo_project(self.project.path())
    }

    /// The digest `glci registry list` gives `demo/app/app:tag`.
    fn listed_digest(&self, tag: &str) -> String {
        let out = run_stdout(self.glci().args(["registry", "list", "--project", "demo/app", "--json"]));
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let image = list["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["repository"] == "demo/app/app" && i["tag"] == tag)
            .unwrap_or_else(|| panic!("demo/app/app:{tag} is not listed: {out}"));
        image["digest"].as_str().unwrap().to_string()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            let _ = Command::new("docker").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        docker(&["rm", "-f", "-v", &format!("{}-mock", self.prefix)]);
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

#[test]
fn pushed_image_survives_a_dockerd_restart() {
    if std::env::var_os("GLCI_TEST_RESTART_DOCKERD").is_none_or(|v| v != "1") {
        eprintln!("not run: it restarts the Docker daemon; `make test` sets GLCI_TEST_RESTART_DOCKERD=1");
        return;
    }
    need_docker_daemon();
    common::need("skopeo");
    if !present(BUSYBOX) {
        let dir = temp_dir();
        let tar = build_busybox_rootfs(&dir.path().join("rootfs.tar"));
        run(Command::new("docker").args(["import", "--change", "EXPOSE 8080"]).arg(&tar).arg(BUSYBOX));
    }
    if !present(TOOLBOX) {
        run(Command::new("bash").arg(common::fixture_path("demo/make-toolbox.sh")).arg(TOOLBOX));
    }
    let sandbox = Sandbox::new();
    let sha = sandbox.demo_project();
    let first = expect_success(&sandbox.glci().args(["run", "--project", "demo/app"]).output().unwrap());
    assert!(first.contains(&format!("hello from demo/app, built at commit {sha}")), "{first}");
    let digest = sandbox.listed_digest(&sha);
    // The next pull must come from glci-mock, not from the host's copy.
    let image = format!("glci-mock:{}/demo/app/app:{sha}", sandbox.port);
    run(Command::new("docker").args(["image", "rm", &image]));

    restart_dockerd();

    let second = sandbox.glci().args(["run", "--project", "demo/app", "--env", "DEMO_REUSE=1"]).output().unwrap();
    let out = expect_success(&second);
    assert!(!out.contains("build-image"), "pushed again:\n{out}");
    assert!(out.contains(&format!("Pulling docker image {image}")), "{out}");
    assert!(out.contains(&format!("hello from demo/app, built at commit {sha}")), "{out}");
    let mock = format!("{}-mock", sandbox.prefix);
    assert!(
        out.contains(&format!("{mock} running on")) || out.contains(&format!("{mock} started on")),
        "not the container from before the restart:\n{out}"
    );
    assert_eq!(sandbox.listed_digest(&sha), digest, "the digest glci registry list gives after the restart");
    // What glci-mock serves under the tag (the host's copy has no RepoDigests: glci pulls it as
    // 127.0.0.1:PORT/… and retags it).
    let token = run_stdout(sandbox.glci().args(["registry", "login", "--print"])).trim().to_string();
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &format!("glci-admin:{token}")])
        .arg(format!("docker://127.0.0.1:{}/demo/app/app:{sha}", sandbox.port)));
    assert_eq!(common::sha256_digest(&raw.stdout), digest, "the manifest glci-mock serves after the restart");
}
