//! TLS and auth of `glci serve` as a child process (DESIGN §3, §6, §9; issue 3): the glci CA
//! in `GLCI_HOME`, HTTP and HTTPS on one port verified against that CA (rustls, curl, skopeo),
//! `--no-tls`, the Bearer flow and Basic credentials with admin and job tokens, expired and
//! forged tokens, `anonymous_pull = false`, no secrets in the log, and certificate renewal.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{self, basic, Checks, Client, Request, Response};
use common::{build_oci_layout, glci, layout_tag_digest, need, run, run_stdout, sha256_digest, temp_dir, ServeProcess};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Servers: `ServeProcess` on a fresh GLCI_HOME or on one the test prepared.

/// `glci serve` (auth and TLS) with `GLCI_HOME=home`, so a test can write `config.toml` first or
/// start a second server on the same home; its storage in `home/storage`.
fn start_in(home: &Path) -> ServeProcess {
    ServeProcess::start_in_home(home, &home.join("storage"), &[])
}

/// A server with auth and TLS on a fresh home and storage.
fn start_secure() -> (ServeProcess, tempfile::TempDir) {
    let dir = temp_dir();
    let server = ServeProcess::start_with_args(&dir.path().join("storage"), &[]);
    (server, dir)
}

/// A fresh GLCI_HOME holding `config`.
fn home_with_config(config: &str) -> tempfile::TempDir {
    let home = temp_dir();
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    home
}

/// `glci ARGS` with `GLCI_HOME=home`; its stdout, trimmed.
fn glci_in(home: &Path, args: &[&str]) -> String {
    run_stdout(glci().env("GLCI_HOME", home).args(args)).trim().to_string()
}

fn job_token(home: &Path, project: &str, ttl: &str) -> String {
    glci_in(home, &["registry", "token", "--project", project, "--ttl", ttl])
}

fn admin_password(home: &Path) -> String {
    glci_in(home, &["registry", "login", "--print"])
}

fn ca_path(home: &Path) -> PathBuf {
    home.join("registry-ca/ca.crt")
}

fn port(addr: &str) -> &str {
    addr.rsplit_once(':').unwrap().1
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------------------------
// TLS client (rustls, trusting one CA); `common::http` speaks HTTP/1.1 over plain or TLS streams.

/// The DER certificates in a PEM file.
fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    let mut certs = Vec::new();
    let mut b64: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            b64 = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            let text = b64.take().expect("END without BEGIN");
            certs.push(CertificateDer::from(glci::encoding::base64_decode(&text).expect("PEM holds base64")));
        } else if let Some(text) = b64.as_mut() {
            text.push_str(line);
        }
    }
    assert!(!certs.is_empty(), "no certificate in PEM:\n{pem}");
    certs
}

/// A rustls client config trusting only the CA certificate at `ca`.
fn trusting(ca: &Path) -> Arc<ClientConfig> {
    let pem = std::fs::read_to_string(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn connect(addr: &str) -> TcpStream {
    http::connect(addr, IO_TIMEOUT).unwrap()
}

/// Connects and completes the TLS handshake (the certificate is verified here).
fn handshake(addr: &str, config: &Arc<ClientConfig>, name: ServerName<'static>) -> io::Result<TlsStream> {
    let mut sock = connect(addr);
    let mut conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

fn ip(addr: IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.into())
}

/// The DER of the leaf certificate the server presented.
fn leaf(stream: &TlsStream) -> Vec<u8> {
    stream.conn.peer_certificates().expect("the server presented certificates")[0].to_vec()
}

/// What `expect_error` checks here beyond the code: a message beside it.
const CHECKS: Checks = Checks { api_version: false, error_message: true };

/// A request as `Api` sends it: `Connection: close`, on a connection (plain or TLS) of its own.
fn request(addr: &str, method: &str, path: &str) -> Request {
    Request::new(addr, method, path).close().timeout(IO_TIMEOUT).checks(CHECKS)
}

#[derive(Clone, Copy)]
enum Cred<'a> {
    Anonymous,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

impl Cred<'_> {
    fn header(self) -> Option<String> {
        match self {
            Cred::Anonymous => None,
            Cred::Basic(user, password) => Some(basic(user, password)),
            Cred::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }
}

/// The registry API of one server, over plain HTTP or HTTPS (SNI `localhost`).
struct Api {
    addr: String,
    tls: Option<Arc<ClientConfig>>,
}

impl Api {
    fn plain(addr: &str) -> Api {
        Api { addr: addr.to_string(), tls: None }
    }

    fn https(addr: &str, ca: &Path) -> Api {
        Api { addr: addr.to_string(), tls: Some(trusting(ca)) }
    }

    fn call(&self, method: &str, path: &str, cred: Cred<'_>, body: &[u8]) -> Response {
        let mut request = request(&self.addr, method, path).body(body);
        if let Some(auth) = cred.header() {
            request = request.header("Authorization", &auth);
        }
        match &self.tls {
            None => request.send(),
            Some(config) => Client::new(handshake(&self.addr, config, dns("localhost")).unwrap()).send(&request),
        }
    }

    fn get(&self, path: &str, cred: Cred<'_>) -> Response {
        self.call("GET", path, cred, b"")
    }

    /// Monolithic blob upload (`POST …/blobs/uploads/?digest=`).
    fn push_blob(&self, repo: &str, cred: Cred<'_>, content: &[u8]) -> Response {
        let digest = sha256_digest(content);
        self.call("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), cred, content)
    }

    fn get_blob(&self, repo: &str, content: &[u8], cred: Cred<'_>) -> Response {
        self.get(&format!("/v2/{repo}/blobs/{}", sha256_digest(content)), cred)
    }

    /// `GET /token?service=glci&scope=…` and the Bearer token it returns.
    fn token(&self, scopes: &[&str], cred: Cred<'_>) -> String {
        let mut path = "/token?service=glci".to_string();
        for scope in scopes {
            path.push_str(&format!("&scope={scope}"));
        }
        let r = self.get(&path, cred).expect(200);
        let doc = r.json();
        let token = doc["token"].as_str().unwrap_or_else(|| panic!("no token in {doc}")).to_string();
        assert_eq!(doc["access_token"].as_str(), Some(token.as_str()), "{doc}");
        assert!(doc["expires_in"].as_u64().is_some_and(|s| s > 0), "{doc}");
        assert!(doc["issued_at"].as_str().is_some_and(|s| s.ends_with('Z') && s.len() == 20), "{doc}");
        token
    }
}

fn challenge(scheme: &str, addr: &str) -> String {
    format!("Bearer realm=\"{scheme}://{addr}/token\",service=\"glci\"")
}

/// A token whose MAC has one hex digit changed.
fn forge(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).unwrap()
}

#[track_caller]
fn assert_no_secrets(log: &str, secrets: &[(&str, &str)]) {
    assert!(log.contains("event=request"), "the server logs requests, so the check means something:\n{log}");
    for (what, secret) in secrets {
        let secret = secret.trim();
        assert!(secret.len() >= 16, "{what} is too short to be a real secret: {secret:?}");
        assert!(!log.contains(secret), "the {what} appears in the server log:\n{log}");
        // Nor its signature alone (the last dot-separated part of a token).
        let tail = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(tail), "the signature of the {what} appears in the server log:\n{log}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The CA and the admin secret.

#[test]
fn ca_and_admin_secret_are_created_private_and_reused() {
    let (first, _dir) = start_secure();
    let home = first.home();
    let ca_dir = home.join("registry-ca");
    assert!(ca_path(home).is_file(), "no {}", ca_path(home).display());
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600, "ca.key mode");
    assert_eq!(mode(&home.join("admin.secret")), 0o600, "admin.secret mode");
    let ca = std::fs::read(ca_path(home)).unwrap();
    let key = std::fs::read(ca_dir.join("ca.key")).unwrap();
    let secret = std::fs::read(home.join("admin.secret")).unwrap();
    assert!(String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE"));

    // A second server on the same home: same CA, same secret, and its certificate chains to it.
    let mut second = ServeProcess::start_in_home(home, &home.join("second"), &[]);
    assert_eq!(std::fs::read(ca_path(home)).unwrap(), ca, "ca.crt was re-created");
    assert_eq!(std::fs::read(ca_dir.join("ca.key")).unwrap(), key, "ca.key was re-created");
    assert_eq!(std::fs::read(home.join("admin.secret")).unwrap(), secret, "admin.secret was re-created");
    let config = trusting(&ca_path(home));
    handshake(&first.addr, &config, dns("localhost")).unwrap();
    handshake(&second.addr, &config, dns("localhost")).unwrap();
    // Credentials made for one work on the other: they share the admin secret.
    let admin = admin_password(home);
    Api::plain(&second.addr).push_blob("any/repo", Cred::Basic("glci-admin", &admin), b"shared secret").expect(201);
    assert!(second.still_running());
}

// ---------------------------------------------------------------------------------------------
// 2. HTTP and HTTPS on one port, verified against the CA.

#[test]
fn http_and_https_on_one_port_verified_against_the_ca() {
    let (server, _dir) = start_secure();
    let addr = &server.addr;
    let ca = ca_path(server.home());
    let config = trusting(&ca);

    let r = Api::plain(addr).get("/v2/", Cred::Anonymous).expect_error(401, "UNAUTHORIZED");
    assert_eq!(r.header("WWW-Authenticate"), Some(challenge("http", addr).as_str()));
    assert_eq!(r.header("Docker-Distribution-API-Version"), Some("registry/2.0"));

    // HTTPS with every built-in name (SNI) and IP the certificate must carry.
    let names = [
        dns("localhost"),
        dns("glci-mock"),
        dns("host.docker.internal"),
        ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    for name in names {
        let stream = handshake(addr, &config, name.clone()).unwrap_or_else(|e| panic!("handshake as {name:?}: {e}"));
        assert_eq!(stream.conn.alpn_protocol(), None::<&[u8]>, "no ALPN asked, none chosen");
        let r = Client::new(stream).send(&request(addr, "GET", "/v2/")).expect_error(401, "UNAUTHORIZED");
        assert_eq!(r.header("WWW-Authenticate"), Some(challenge("https", addr).as_str()), "as {name:?}");
    }
    // Plain again after TLS on the same port.
    Api::plain(addr).get("/v2/", Cred::Anonymous).expect(401);

    // A name the certificate does not carry, and a client trusting another CA, fail the handshake.
    let e = handshake(addr, &config, dns("not-a-san.example")).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("not valid for name"), "{e}");
    let other_home = temp_dir();
    glci::tls::Ca::load_or_create(other_home.path()).unwrap();
    let stranger = trusting(&ca_path(other_home.path()));
    let e = handshake(addr, &stranger, dns("localhost")).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer") || e.to_string().contains("BadSignature"), "{e}");

    // curl verifying against the CA file, over HTTPS and HTTP on the same port.
    need("curl");
    let code = curl(&["--cacert", &ca.display().to_string(), &format!("https://{addr}/v2/")]);
    assert_eq!(code, "401");
    let code = curl(&[&format!("http://{addr}/v2/")]);
    assert_eq!(code, "401");
    // And the server still serves after all that.
    Api::plain(addr).get("/v2/", Cred::Anonymous).expect(401);
}

/// `curl -sS -o /dev/null -w %{http_code} ARGS`: the status it printed (it must exit 0).
fn curl(args: &[&str]) -> String {
    run_stdout(
        Command::new("curl").args(["-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}"]).args(args),
    )
}

#[test]
fn extra_sans_from_config_are_in_the_certificate() {
    need("curl");
    let home = home_with_config("[tls]\nextra_sans = [\"my-extra-host\", \"10.11.12.13\"]\n");
    let server = start_in(home.path());
    let addr = &server.addr;
    let port = port(addr);
    let ca = ca_path(home.path()).display().to_string();

    let resolve = format!("my-extra-host:{port}:127.0.0.1");
    let code = curl(&["--cacert", &ca, "--resolve", &resolve, &format!("https://my-extra-host:{port}/v2/")]);
    assert_eq!(code, "401");

    // A name that is not a SAN: curl refuses the certificate (exit 51 or 60, not a connect error).
    let resolve = format!("not-a-san:{port}:127.0.0.1");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null", "--cacert", &ca, "--resolve", &resolve])
        .arg(format!("https://not-a-san:{port}/v2/"))
        .output()
        .unwrap();
    let code = out.status.code();
    assert!(matches!(code, Some(51 | 60)), "curl exit {code:?}: {}", String::from_utf8_lossy(&out.stderr));

    let config = trusting(&ca_path(home.path()));
    handshake(addr, &config, dns("my-extra-host")).unwrap();
    handshake(addr, &config, ip("10.11.12.13".parse().unwrap())).unwrap();
    handshake(addr, &config, dns("localhost")).unwrap();
    assert!(handshake(addr, &config, dns("not-a-san")).is_err());
}

// ---------------------------------------------------------------------------------------------
// 3. --no-tls

#[test]
fn no_tls_serves_plain_and_closes_tls_handshakes_promptly() {
    let dir = temp_dir();
    let server = ServeProcess::start_with_args(&dir.path().join("storage"), &["--no-tls"]);
    let addr = &server.addr;
    let r = Api::plain(addr).get("/v2/", Cred::Anonymous).expect(401);
    assert_eq!(r.header("WWW-Authenticate"), Some(challenge("http", addr).as_str()));
    assert!(!server.home().join("registry-ca").exists(), "--no-tls needs no CA");

    // A rustls client: the handshake fails at once instead of hanging.
    let any_ca = temp_dir();
    glci::tls::Ca::load_or_create(any_ca.path()).unwrap();
    let config = trusting(&ca_path(any_ca.path()));
    let started = Instant::now();
    assert!(handshake(addr, &config, dns("localhost")).is_err(), "TLS on a --no-tls server");
    assert!(started.elapsed() < Duration::from_secs(2), "the TLS client waited {:?}", started.elapsed());

    // A bare ClientHello record header: the connection is closed (EOF or reset), not left open.
    let mut sock = connect(addr);
    sock.write_all(&[0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03]).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match sock.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the server answered a ClientHello on a --no-tls port with {:?}", &buf[..n]),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "closed only after {:?}", started.elapsed());

    // The server keeps serving plain HTTP.
    Api::plain(addr).get("/v2/", Cred::Anonymous).expect(401);
}

// ---------------------------------------------------------------------------------------------
// 4 + 6. The Bearer flow, Basic credentials, job and admin tokens; no secrets in the log.

#[test]
fn bearer_and_basic_with_admin_and_job_tokens() {
    let (server, _dir) = start_secure();
    let addr = &server.addr;
    let home = server.home();
    let plain = Api::plain(addr);
    let https = Api::https(addr, &ca_path(home));
    let admin = admin_password(home);
    let job = job_token(home, "g/p", "1h");

    // The challenge, over both protocols.
    let r = plain.get("/v2/", Cred::Anonymous).expect_error(401, "UNAUTHORIZED");
    assert_eq!(r.header("WWW-Authenticate"), Some(challenge("http", addr).as_str()));
    let r = https.get("/v2/", Cred::Anonymous).expect_error(401, "UNAUTHORIZED");
    assert_eq!(r.header("WWW-Authenticate"), Some(challenge("https", addr).as_str()));

    // Admin over Basic on every request: push anywhere, then anonymous pull of it works.
    let blob = b"pushed by the admin".as_slice();
    plain.push_blob("g/p", Cred::Basic("glci-admin", &admin), blob).expect(201);
    assert_eq!(plain.get_blob("g/p", blob, Cred::Anonymous).expect(200).body, blob);
    assert_eq!(https.get_blob("g/p", blob, Cred::Anonymous).expect(200).body, blob);
    plain.get("/v2/", Cred::Basic("glci-admin", &admin)).expect(200);

    // Anonymous /token: pull only. Pulling with it works, pushing with it does not.
    let anon = https.token(&["repository:g/p:pull,push"], Cred::Anonymous);
    https.get("/v2/", Cred::Bearer(&anon)).expect(200);
    assert_eq!(https.get_blob("g/p", blob, Cred::Bearer(&anon)).expect(200).body, blob);
    let r = https.push_blob("g/p", Cred::Bearer(&anon), b"anonymous push");
    assert!(matches!(r.status, 401 | 403), "anonymous push answered {}: {}", r.status, r.text());
    https.get_blob("g/p", b"anonymous push", Cred::Anonymous).expect(404);
    // Nor without any token at all.
    let r = plain.push_blob("g/p", Cred::Anonymous, b"anonymous push").expect_error(401, "UNAUTHORIZED");
    assert!(r.header("WWW-Authenticate").unwrap().starts_with(&challenge("http", addr)), "{:?}", r.headers);

    // Job token through /token: push under its project, not elsewhere.
    let scopes = ["repository:g/p:pull,push", "repository:g/p/sub:pull,push", "repository:g/other:pull,push"];
    let bearer = https.token(&scopes, Cred::Basic("gitlab-ci-token", &job));
    https.get("/v2/", Cred::Bearer(&bearer)).expect(200);
    https.push_blob("g/p", Cred::Bearer(&bearer), b"job via bearer").expect(201);
    https.push_blob("g/p/sub", Cred::Bearer(&bearer), b"job via bearer, below").expect(201);
    https.push_blob("g/other", Cred::Bearer(&bearer), b"job elsewhere").expect_error(403, "DENIED");
    https.get_blob("g/other", b"job elsewhere", Cred::Anonymous).expect(404);
    // A scope it was not granted (g/p2 is not under g/p) is not pushable either.
    https.push_blob("g/p2", Cred::Bearer(&bearer), b"sibling").expect_error(403, "DENIED");
    // The same over the POST (OAuth2 form) variant of /token.
    let form =
        format!("grant_type=password&username=gitlab-ci-token&password={job}&service=glci&scope=repository:g/p:push");
    let r = plain.call("POST", "/token", Cred::Anonymous, form.as_bytes()).expect(200);
    let posted = r.json()["access_token"].as_str().unwrap().to_string();
    plain.push_blob("g/p", Cred::Bearer(&posted), b"job via oauth form").expect(201);

    // Job token as Basic on every request.
    let basic = Cred::Basic("gitlab-ci-token", &job);
    plain.get("/v2/", basic).expect(200);
    plain.push_blob("g/p/deeper/still", basic, b"job via basic").expect(201);
    https.push_blob("g/p", basic, b"job via basic over https").expect(201);
    plain.push_blob("g/other", basic, b"job via basic elsewhere").expect_error(403, "DENIED");
    plain.push_blob("g/pp", basic, b"job via basic sibling").expect_error(403, "DENIED");
    // Deleting within its project works, elsewhere not.
    let d = sha256_digest(b"job via basic");
    plain.call("DELETE", &format!("/v2/g/p/deeper/still/blobs/{d}"), basic, b"").expect(202);
    plain.call("DELETE", &format!("/v2/g/p/blobs/{}", sha256_digest(blob)), basic, b"").expect(202);
    plain.push_blob("x/y", Cred::Basic("glci-admin", &admin), b"admin blob").expect(201);
    let d = sha256_digest(b"admin blob");
    plain.call("DELETE", &format!("/v2/x/y/blobs/{d}"), basic, b"").expect_error(403, "DENIED");

    // Admin through /token: push and delete anywhere.
    let bearer_admin = https.token(&["repository:x/y:pull,push,delete"], Cred::Basic("glci-admin", &admin));
    https.push_blob("x/y", Cred::Bearer(&bearer_admin), b"admin via bearer").expect(201);
    https.call("DELETE", &format!("/v2/x/y/blobs/{d}"), Cred::Bearer(&bearer_admin), b"").expect(202);
    plain.push_blob("z", Cred::Basic("glci-admin", &admin), b"admin basic top level").expect(201);

    // Forged: a changed MAC, or a token signed with another home's secret → 401 everywhere.
    let other_home = temp_dir();
    let foreign = job_token(other_home.path(), "g/p", "1h");
    let foreign_admin = admin_password(other_home.path());
    for bad in [forge(&job), forge(&admin), forge(&bearer), foreign.clone(), foreign_admin.clone()] {
        let r =
            plain.push_blob("g/p", Cred::Basic("gitlab-ci-token", &bad), b"forged").expect_error(401, "UNAUTHORIZED");
        assert!(r.header("WWW-Authenticate").is_some(), "{:?}", r.headers);
        plain.push_blob("g/p", Cred::Bearer(&bad), b"forged").expect_error(401, "UNAUTHORIZED");
        plain.get("/v2/", Cred::Bearer(&bad)).expect_error(401, "UNAUTHORIZED");
        plain.get("/token?service=glci&scope=repository:g/p:push", Cred::Basic("gitlab-ci-token", &bad)).expect(401);
    }
    https.get_blob("g/p", b"forged", Cred::Anonymous).expect(404);

    // 6. None of the secrets reached the log.
    let secret_file = std::fs::read_to_string(home.join("admin.secret")).unwrap();
    assert_no_secrets(
        &server.stderr(),
        &[
            ("job token", &job),
            ("admin password", &admin),
            ("admin.secret contents", &secret_file),
            ("anonymous bearer token", &anon),
            ("job bearer token", &bearer),
            ("admin bearer token", &bearer_admin),
            ("oauth bearer token", &posted),
        ],
    );
}

#[test]
fn expired_tokens_are_refused() {
    let (server, _dir) = start_secure();
    let home = server.home();
    let plain = Api::plain(&server.addr);
    let short = job_token(home, "g/p", "1s");
    server.advance_clock(Duration::from_secs(2));
    let cred = Cred::Basic("gitlab-ci-token", &short);
    let r = plain.push_blob("g/p", cred, b"too late").expect_error(401, "UNAUTHORIZED");
    assert!(r.header("WWW-Authenticate").is_some(), "{:?}", r.headers);
    plain.push_blob("g/p", Cred::Bearer(&short), b"too late").expect_error(401, "UNAUTHORIZED");
    plain.get("/v2/", cred).expect_error(401, "UNAUTHORIZED");
    plain.get("/token?service=glci&scope=repository:g/p:push", cred).expect(401);
    // A fresh one works, so the refusal was the expiry.
    let fresh = job_token(home, "g/p", "1h");
    plain.push_blob("g/p", Cred::Basic("gitlab-ci-token", &fresh), b"in time").expect(201);
}

#[test]
fn anonymous_pull_can_be_switched_off() {
    let home = home_with_config("[registry]\nanonymous_pull = false\n");
    let server = start_in(home.path());
    let addr = &server.addr;
    let plain = Api::plain(addr);
    let admin = admin_password(home.path());
    let blob = b"private blob".as_slice();
    plain.push_blob("g/p", Cred::Basic("glci-admin", &admin), blob).expect(201);

    let r = plain.get_blob("g/p", blob, Cred::Anonymous).expect_error(401, "UNAUTHORIZED");
    let header = r.header("WWW-Authenticate").unwrap();
    assert!(header.starts_with(&challenge("http", addr)), "{header}");
    let r = Api::https(addr, &ca_path(home.path())).get_blob("g/p", blob, Cred::Anonymous).expect(401);
    assert!(r.header("WWW-Authenticate").unwrap().starts_with(&challenge("https", addr)), "{:?}", r.headers);
    plain.get("/v2/g/p/tags/list", Cred::Anonymous).expect(401);

    // Credentials still pull: the admin, and a job token (Basic or through /token).
    assert_eq!(plain.get_blob("g/p", blob, Cred::Basic("glci-admin", &admin)).expect(200).body, blob);
    let job = job_token(home.path(), "g/p", "1h");
    assert_eq!(plain.get_blob("g/p", blob, Cred::Basic("gitlab-ci-token", &job)).expect(200).body, blob);
    let bearer = plain.token(&["repository:g/p:pull"], Cred::Basic("gitlab-ci-token", &job));
    assert_eq!(plain.get_blob("g/p", blob, Cred::Bearer(&bearer)).expect(200).body, blob);
}

// ---------------------------------------------------------------------------------------------
// 5 + 6. skopeo over HTTPS, verifying the server against the glci CA, with a job token.

#[test]
fn skopeo_pushes_and_pulls_over_https_with_a_job_token() {
    need("skopeo");
    let (server, dir) = start_secure();
    let addr = &server.addr;
    let home = server.home();
    let job = job_token(home, "g/p", "1h");
    let creds = format!("gitlab-ci-token:{job}");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(ca_path(home), certs.join("ca.crt")).unwrap();
    let certs = certs.display().to_string();
    let layout = build_oci_layout(&dir.path().join("layout"));
    let src = format!("oci:{}:multi", layout.display());

    let skopeo = |args: &[&str]| {
        let mut cmd = Command::new("skopeo");
        // No policy.json or registries.conf from the host may change the outcome.
        let policy = dir.path().join("policy.json");
        std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        cmd.arg("--policy").arg(&policy).args(args).env("REGISTRY_AUTH_FILE", dir.path().join("auth.json"));
        cmd
    };
    let dest = format!("docker://{addr}/g/p/app:v1");
    run(&mut skopeo(&["copy", "--dest-cert-dir", &certs, "--dest-creds", &creds, &src, &dest]));

    let out_dir = dir.path().join("out");
    let out = format!("oci:{}:v1", out_dir.display());
    run(&mut skopeo(&["copy", "--src-cert-dir", &certs, &dest, &out]));
    let index: Value = serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    let src_digest = layout_tag_digest(&layout, "multi");
    assert_eq!(index["manifests"][0]["digest"], src_digest, "the image came back unchanged");

    // Another project's path: refused.
    let other = format!("docker://{addr}/g/other/app:v1");
    let refused = skopeo(&["copy", "--dest-cert-dir", &certs, "--dest-creds", &creds, &src, &other])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "skopeo pushed to g/other with a g/p job token");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.to_lowercase().contains("denied"), "skopeo's error: {why}");

    // Without the CA, skopeo refuses the server (verification is really on).
    let empty = dir.path().join("no-certs");
    std::fs::create_dir(&empty).unwrap();
    let unverified = skopeo(&["inspect", "--raw", "--cert-dir", &empty.display().to_string(), &dest])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!unverified.status.success(), "skopeo accepted the server without the glci CA");

    let secret_file = std::fs::read_to_string(home.join("admin.secret")).unwrap();
    assert_no_secrets(&server.stderr(), &[("job token", &job), ("admin.secret contents", &secret_file)]);
}

// ---------------------------------------------------------------------------------------------
// 7. Renewal without a restart.

#[test]
fn certificate_is_renewed_while_the_server_runs() {
    let home = home_with_config("[tls]\ncert_validity = \"1h\"\n");
    let mut server = start_in(home.path());
    let addr = server.addr.clone();
    let config = trusting(&ca_path(home.path()));
    let first = handshake(&addr, &config, dns("localhost")).unwrap();
    let first_leaf = leaf(&first);
    Client::new(first).send(&request(&addr, "GET", "/v2/")).expect(401);
    // Within the first two thirds the same certificate is served.
    let again = handshake(&addr, &config, dns("localhost")).unwrap();
    assert_eq!(leaf(&again), first_leaf, "re-issued far too early");

    // Just before two thirds of the hour: still the same certificate.
    server.advance_clock(Duration::from_secs(2390));
    let again = handshake(&addr, &config, dns("localhost")).unwrap();
    assert_eq!(leaf(&again), first_leaf, "re-issued before two thirds of the validity");
    server.advance_clock(Duration::from_secs(20));
    let renewed = handshake(&addr, &config, dns("localhost")).expect("the renewed certificate verifies");
    assert_ne!(leaf(&renewed), first_leaf, "the same certificate after 41 min of a 1 h validity");
    Client::new(renewed).send(&request(&addr, "GET", "/v2/")).expect(401);
    assert!(server.still_running(), "renewal must not restart the server");
    assert!(server.stderr_shows("re-issued"), "{}", server.stderr());
}
