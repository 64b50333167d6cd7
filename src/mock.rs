//! Ensures the `glci-mock` container (DESIGN §2, issue 8): the image `glci-mock:<version>`
//! built locally from the running glci binary and the shared libraries `ldd` lists (imported
//! as a rootfs tar, nothing pulled), the volume `glci-registry` at `/registry`, the network
//! `glci-net` (where jobs reach it as `glci-mock`), and the container running
//! `glci serve --listen 0.0.0.0:<port> --storage /registry`, its port published on 127.0.0.1
//! only. The host's CA, admin secret and a server config are copied into the container's
//! `GLCI_HOME` with `docker cp` before it starts, so job tokens the host signs verify there and
//! its certificate chains to the CA jobs get. The host's Docker credentials (`auths`,
//! `credsStore`, `credHelpers` of `~/.docker/config.json`, resolved on the host as for jobs)
//! go the same way, as a 0600 `config.json` of plain `auths` in the container's
//! `DOCKER_CONFIG`, so pull-through upstreams see an authenticated client (issue 14 §5); never in
//! argv, env, a label or a log. Re-created when missing or when the binary, the port, the
//! config, the CA or those credentials changed (label `glci.mock`, a hash: a credential change
//! reaches the next run); the volume keeps the data.
//! All Docker work goes through `docker.rs`; called by `cli/run.rs`; prints nothing.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Config, MockNames};
use crate::docker::{self, DockerError, ServerSpec};
use crate::encoding::base64_encode;
use crate::registry::proxy::credentials;
use crate::registry::proxy::upstream::Credentials;

/// The label holding what the container was made from (binary, port, config, CA).
pub const MOCK_LABEL: &str = "glci.mock";
/// The label of the image: the binary it holds.
const BINARY_LABEL: &str = "glci.binary";
/// `GLCI_HOME` inside the container.
const HOME_IN_CONTAINER: &str = "/glci-home";
/// `DOCKER_CONFIG` inside the container: the upstream credentials, under the 0700 home.
const DOCKER_CONFIG_IN_CONTAINER: &str = "/glci-home/docker";
/// Where the binary sits in the image.
const BINARY_IN_IMAGE: &str = "/glci";
/// How long the server may take to answer `/v2/` after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const READY_PAUSE: Duration = Duration::from_millis(100);
/// The name jobs use for it (its network alias; the server certificate carries it).
pub const HOSTNAME: &str = "glci-mock";

#[derive(Debug)]
pub enum MockError {
    Docker(DockerError),
    Io { what: String, source: io::Error },
    NotReady { port: u16, logs: String },
    Setup(String),
}

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MockError::Docker(e) => write!(f, "{e}"),
            MockError::Io { what, source } => write!(f, "{what}: {source}"),
            MockError::NotReady { port, logs } => {
                write!(f, "glci-mock does not answer on 127.0.0.1:{port} after {}s", READY_TIMEOUT.as_secs())?;
                let last: Vec<&str> = logs.lines().rev().take(5).collect();
                if !last.is_empty() {
                    let lines: Vec<&str> = last.into_iter().rev().collect();
                    write!(f, "; its log ends: {}", lines.join(" | "))?;
                }
                Ok(())
            }
            MockError::Setup(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for MockError {}

impl From<DockerError> for MockError {
    fn from(e: DockerError) -> Self {
        MockError::Docker(e)
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> MockError {
    let what = what.into();
    move |source| MockError::Io { what, source }
}

/// What [`ensure`] needs.
pub struct MockOptions<'a> {
    /// The host's `GLCI_HOME` (CA, admin secret).
    pub home: &'a Path,
    pub config: &'a Config,
    pub names: MockNames,
    /// The running glci binary.
    pub exe: PathBuf,
    /// The host's Docker CLI configuration directory (`DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config_dir: Option<PathBuf>,
}

/// The running `glci-mock`.
#[derive(Clone, Debug)]
pub struct Mock {
    pub port: u16,
    pub names: MockNames,
    /// What happened (`created`, `started`, `running`), for a status line.
    pub action: &'static str,
}

/// Makes sure the image, volume, network and container exist and the server answers.
pub fn ensure(options: &MockOptions<'_>) -> Result<Mock, MockError> {
    let port = options.config.mock_server_port;
    let names = &options.names;
    // The CA and admin secret are the host's: created here the first time.
    crate::tls::Ca::load_or_create(options.home).map_err(|e| MockError::Setup(format!("the registry CA: {e}")))?;
    crate::auth::Auth::load_or_create(options.home, options.config.registry.anonymous_pull)
        .map_err(|e| MockError::Setup(format!("the admin secret: {e}")))?;
    let home_files = home_files(options)?;

    let binary_id = format!("{}-{}", env!("CARGO_PKG_VERSION"), &binary_digest(&options.exe, options.home)?[..16]);
    let image = format!("{}:{}", names.image, env!("CARGO_PKG_VERSION"));
    let mut parts: Vec<&[u8]> = vec![binary_id.as_bytes(), image.as_bytes()];
    let port_text = port.to_string();
    parts.push(port_text.as_bytes());
    for file in &home_files {
        parts.push(file.path.as_bytes());
        parts.push(&file.contents);
    }
    let wanted = hex_sha256(&parts);

    // The usual case, in one `docker inspect` instead of five (issue 18: each is 0.03-0.2 s
    // before every run): the container made from this binary, port and home is running, so
    // its image was built, and its volume and network exist (Docker keeps both while a
    // container uses them).
    if docker::label_and_running(&names.container, MOCK_LABEL)? == Some((Some(wanted.clone()), true)) {
        wait_ready(port, &names.container)?;
        return Ok(Mock { port, names: names.clone(), action: "running" });
    }
    // The image an older binary made: removed once no container uses it (no dangling layers).
    let mut replaced = None;
    if docker::label_of(&image, BINARY_LABEL)?.as_deref() != Some(binary_id.as_str()) {
        replaced = docker::image_id(&image)?;
        build_image(&image, &binary_id, &options.exe)?;
    }

    docker::volume_create(&names.volume)?;
    docker::network_ensure(&names.network)?;
    let action = match docker::label_of(&names.container, MOCK_LABEL)? {
        Some(label) if label == wanted => {
            if docker::is_running(&names.container)? {
                "running"
            } else {
                docker::start(&names.container)?;
                "started"
            }
        }
        _ => {
            docker::remove_containers(std::slice::from_ref(&names.container))?;
            let spec = ServerSpec {
                name: names.container.clone(),
                image: image.clone(),
                labels: vec![
                    (MOCK_LABEL.to_string(), wanted),
                    ("glci.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                ],
                network: names.network.clone(),
                network_alias: HOSTNAME.to_string(),
                publish: format!("127.0.0.1:{port}:{port}"),
                volume: format!("{}:/registry", names.volume),
                command: vec![
                    "serve".into(),
                    "--listen".into(),
                    format!("0.0.0.0:{port}"),
                    "--storage".into(),
                    "/registry".into(),
                ],
            };
            match docker::create_server(&spec) {
                Ok(_) => {
                    docker::copy_into(&names.container, "/", &mut |out| write_tar(out, &home_files))?;
                    docker::start(&names.container)?;
                    "created"
                }
                // Another glci run made it at the same moment: use theirs.
                Err(e) if e.stderr.contains("already in use") => "running",
                Err(e) => return Err(e.into()),
            }
        }
    };
    if let Some(old) = replaced {
        let _ = docker::untag(&old);
    }
    wait_ready(port, &names.container)?;
    Ok(Mock { port, names: names.clone(), action })
}

/// A file for the image or the container's home.
struct TarFile {
    path: String,
    contents: Vec<u8>,
    mode: u32,
}

/// `GLCI_HOME` inside the container: CA (cert and key), admin secret, server config (with the
/// upstream password, resolved on the host: it never goes into argv or the container's env).
fn home_files(options: &MockOptions<'_>) -> Result<Vec<TarFile>, MockError> {
    let home = options.home;
    let read = |path: PathBuf| std::fs::read(&path).map_err(io_err(format!("reading {}", path.display())));
    let ca_dir = crate::tls::ca_dir(home);
    Ok(vec![
        TarFile {
            path: format!("{HOME_IN_CONTAINER}/registry-ca/ca.crt"),
            contents: read(ca_dir.join("ca.crt"))?,
            mode: 0o644,
        },
        TarFile {
            path: format!("{HOME_IN_CONTAINER}/registry-ca/ca.key"),
            contents: read(ca_dir.join("ca.key"))?,
            mode: 0o600,
        },
        TarFile {
            path: format!("{HOME_IN_CONTAINER}/admin.secret"),
            contents: read(crate::auth::admin_secret_path(home))?,
            mode: 0o600,
        },
        TarFile {
            path: format!("{HOME_IN_CONTAINER}/{}", crate::config::CONFIG_FILE),
            contents: options.config.render_for_server().into_bytes(),
            mode: 0o600,
        },
        TarFile {
            path: format!("{DOCKER_CONFIG_IN_CONTAINER}/config.json"),
            contents: upstream_docker_config(&credentials::all(options.docker_config_dir.as_deref())),
            mode: 0o600,
        },
    ])
}

/// A Docker `config.json` holding `credentials` as plain `auths`, keyed as the host's file
/// keys them (`https://index.docker.io/v1/` is Docker Hub, `registry-1.docker.io`, to the
/// server's lookup): inside the container no credential helper could run.
fn upstream_docker_config(credentials: &[(String, Credentials)]) -> Vec<u8> {
    let auths: serde_json::Map<String, serde_json::Value> = credentials
        .iter()
        .map(|(key, c)| {
            let auth = base64_encode(format!("{}:{}", c.username, c.password.expose()).as_bytes());
            (key.clone(), serde_json::json!({ "auth": auth }))
        })
        .collect();
    serde_json::json!({ "auths": auths }).to_string().into_bytes()
}

/// Where [`binary_digest`] remembers the binary's hash, under the host's `GLCI_HOME`.
const BINARY_DIGEST_FILE: &str = "mock-binary.digest";

/// The SHA-256 of the glci binary, remembered in `GLCI_HOME` beside the file's identity
/// (device, inode, size, mtime, ctime) and recomputed when any of them differs: reading and
/// hashing a 47 MB release binary took ~60 ms before every run (issue 18). A build puts a new
/// file (a new inode) in place, and a write into the file moves its ctime, which no user can
/// set back.
fn binary_digest(exe: &Path, home: &Path) -> Result<String, MockError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(exe).map_err(io_err(format!("reading {}", exe.display())))?;
    let identity = format!(
        "{} {} {} {}.{} {}.{} {}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        exe.display()
    );
    let remembered = home.join(BINARY_DIGEST_FILE);
    if let Ok(text) = std::fs::read_to_string(&remembered) {
        if let Some((digest, rest)) = text.split_once(' ') {
            if rest.trim_end_matches('\n') == identity && digest.len() == 64 {
                return Ok(digest.to_string());
            }
        }
    }
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(exe).map_err(io_err(format!("reading {}", exe.display())))?;
    io::copy(&mut file, &mut hasher).map_err(io_err(format!("reading {}", exe.display())))?;
    let digest = crate::encoding::hex(&hasher.finalize());
    // Only a cache: a home that cannot keep it costs the next run the hash again.
    let _ = crate::durable::replace(&remembered, format!("{digest} {identity}\n").as_bytes());
    Ok(digest)
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    crate::encoding::hex(&hasher.finalize())
}

/// The absolute paths of the shared libraries and loader `ldd` lists for `exe` (none for a
/// static binary).
// Not docker, so not behind docker.rs: `ldd` reads the host's glci binary, the one other program
// glci runs (to copy its libraries into the glci-mock image).
#[allow(clippy::disallowed_methods)]
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>, MockError> {
    let output = std::process::Command::new("ldd")
        .arg(exe)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io_err("running ldd (glibc's ldd lists the libraries the glci-mock image needs)"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // "not a dynamic executable": a static binary needs nothing more.
        return Ok(Vec::new());
    }
    let mut paths = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let candidate = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = candidate.filter(|p| p.starts_with('/')) {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// Imports the image: `/glci` plus its libraries (dereferenced, at the paths ldd names), an
/// empty `/tmp`, `/registry` and `GLCI_HOME`.
fn build_image(image: &str, binary_id: &str, exe: &Path) -> Result<(), MockError> {
    let binary = std::fs::read(exe).map_err(io_err(format!("reading {}", exe.display())))?;
    let mut files = vec![TarFile { path: BINARY_IN_IMAGE.into(), contents: binary, mode: 0o755 }];
    for lib in shared_libraries(exe)? {
        let contents = std::fs::read(&lib).map_err(io_err(format!("reading {}", lib.display())))?;
        files.push(TarFile { path: lib.display().to_string(), contents, mode: 0o755 });
    }
    let changes = vec![
        format!("ENTRYPOINT [\"{BINARY_IN_IMAGE}\"]"),
        format!("ENV GLCI_HOME={HOME_IN_CONTAINER}"),
        format!("ENV DOCKER_CONFIG={DOCKER_CONFIG_IN_CONTAINER}"),
        format!("LABEL {BINARY_LABEL}={binary_id}"),
        "VOLUME /registry".to_string(),
    ];
    docker::import(image, &changes, &mut |out| {
        let mut builder = tar::Builder::new(out);
        for (dir, mode) in [("tmp", 0o1777), ("registry", 0o755), (&HOME_IN_CONTAINER[1..], 0o700)] {
            append_dir(&mut builder, dir, mode)?;
        }
        append_files(&mut builder, &files)?;
        builder.into_inner()?.flush()
    })?;
    Ok(())
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, dir: &str, mode: u32) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(mode);
    header.set_size(0);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(&mut header, format!("{dir}/"), io::empty())
}

/// Files with their parent directories (0755).
fn append_files<W: Write>(builder: &mut tar::Builder<W>, files: &[TarFile]) -> io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let name = file.path.trim_start_matches('/');
        let mut upto = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !upto.is_empty() {
                upto.push('/');
            }
            upto.push_str(part);
            if dirs.insert(upto.clone()) {
                let mode = if format!("/{upto}") == HOME_IN_CONTAINER { 0o700 } else { 0o755 };
                append_dir(builder, &upto, mode)?;
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(file.contents.len() as u64);
        header.set_mode(file.mode);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, name, file.contents.as_slice())?;
    }
    Ok(())
}

fn write_tar(out: &mut dyn Write, files: &[TarFile]) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    append_files(&mut builder, files)?;
    builder.into_inner()?.flush()
}

/// Waits, bounded, until `GET /v2/` on 127.0.0.1:`port` gets an HTTP answer (any status:
/// 401 means the server is up and asks for credentials).
fn wait_ready(port: u16, container: &str) -> Result<(), MockError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if answers_v2(&addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let logs = docker::logs_tail(container, 20).unwrap_or_default();
            return Err(MockError::NotReady { port, logs });
        }
        std::thread::sleep(READY_PAUSE);
    }
}

fn answers_v2(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_secs(1)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /v2/ HTTP/1.1\r\nHost: glci-mock\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head.starts_with(b"HTTP/1.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_digest_is_remembered_until_the_file_changes() {
        let home = tempfile::tempdir().unwrap();
        let exe = home.path().join("glci");
        std::fs::write(&exe, b"first build").unwrap();
        let sha = |bytes: &[u8]| crate::encoding::hex(&Sha256::digest(bytes));
        assert_eq!(binary_digest(&exe, home.path()).unwrap(), sha(b"first build"));
        // What is remembered is what the next call answers while the file stays as it was.
        let remembered = home.path().join(BINARY_DIGEST_FILE);
        let text = std::fs::read_to_string(&remembered).unwrap();
        let planted = "f".repeat(64);
        std::fs::write(&remembered, text.replacen(&sha(b"first build"), &planted, 1)).unwrap();
        assert_eq!(binary_digest(&exe, home.path()).unwrap(), planted);
        // A rebuild of the same length, as cargo makes it (a new file in its place), is hashed again.
        std::fs::write(home.path().join("glci.new"), b"other build").unwrap();
        std::fs::rename(home.path().join("glci.new"), &exe).unwrap();
        assert_eq!(binary_digest(&exe, home.path()).unwrap(), sha(b"other build"));
    }

    #[test]
    fn ldd_of_this_test_binary_names_absolute_paths() {
        let exe = crate::config::current_exe().unwrap();
        for path in shared_libraries(&exe).unwrap() {
            assert!(path.is_absolute(), "{}", path.display());
        }
    }

    /// The keys stay as the host wrote them; the server's lookup maps Docker Hub's.
    #[test]
    fn upstream_credentials_become_plain_auths() {
        let creds = vec![
            (
                "https://index.docker.io/v1/".to_string(),
                Credentials { username: "hub".into(), password: crate::secret::Secret::new("pw1".to_string()) },
            ),
            (
                "reg.test:5000".to_string(),
                Credentials { username: "u".into(), password: crate::secret::Secret::new("p:2".to_string()) },
            ),
        ];
        let json: serde_json::Value = serde_json::from_slice(&upstream_docker_config(&creds)).unwrap();
        assert_eq!(json["auths"]["https://index.docker.io/v1/"]["auth"], base64_encode(b"hub:pw1"));
        assert_eq!(json["auths"]["reg.test:5000"]["auth"], base64_encode(b"u:p:2"));
        assert_eq!(credentials::key_host("https://index.docker.io/v1/"), "registry-1.docker.io");
        assert_eq!(upstream_docker_config(&[]), br#"{"auths":{}}"#);
    }

    #[test]
    fn hashes_separate_parts() {
        assert_ne!(hex_sha256(&[b"ab", b"c"]), hex_sha256(&[b"a", b"bc"]));
    }
}
