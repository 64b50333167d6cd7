//! Hostile connections held at once must not keep a well-behaved client from its answer
//! (issue 14 §2): TLS handshakes stalled mid-ClientHello, bare TCP connections, partial request
//! heads (plain and inside TLS sessions) and clients that never read a blob, all open while an
//! HTTP and an HTTPS client are served; and slow uploads bounded to half the workers, the rest
//! answered 503 with `Retry-After` while pulls go on. Real TCP on 127.0.0.1, real TLS (rustls
//! client against the server's CA), `glci serve` as a child process.

// Test helpers outside #[test] functions unwrap too: a failure is the test's failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{connect, read_head, Client, Request};
use common::{pattern, sha256_digest, temp_dir, ServeProcess};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const STALLED_HANDSHAKES: usize = 300;
const BARE: usize = 300;
const PARTIAL_HEADS: usize = 300;
const PARTIAL_TLS_HEADS: usize = 50;
const SLOW_READERS: usize = 100;
/// Under TLS a blob send stays on its worker (it is encrypted on the way): fewer than the 32
/// download slots, so these hold workers without refusals.
const SLOW_TLS_READERS: usize = 16;
/// How many times each well-behaved request is timed, idle and under attack.
const ROUNDS: usize = 5;
const MANIFEST: &str = "/v2/stalls/small/manifests/v1";

/// Raises this process's soft descriptor limit to `need` when it is lower (the server, a
/// child, inherits it): a fresh machine's 1024 is below what this test holds.
fn raise_fd_limit(need: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    if limit.rlim_cur >= need {
        return;
    }
    assert!(limit.rlim_max >= need, "this test holds {need} descriptors; the hard limit is {}", limit.rlim_max);
    limit.rlim_cur = need;
    // SAFETY: `limit` is a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "{}", io::Error::last_os_error());
}

/// Pushes `content` as the single layer of `repo:tag`; returns the layer digest.
fn push_image(addr: &str, repo: &str, tag: &str, content: &[u8]) -> String {
    let layer = sha256_digest(content);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = sha256_digest(config);
    for (digest, bytes) in [(&layer, content), (&config_digest, &config[..])] {
        let location = Request::new(addr, "POST", &format!("/v2/{repo}/blobs/uploads/")).send().expect(202).location();
        let sep = if location.contains('?') { '&' } else { '?' };
        Request::new(addr, "PUT", &format!("{location}{sep}digest={digest}")).body(bytes.to_vec()).send().expect(201);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": content.len()}],
    });
    Request::new(addr, "PUT", &format!("/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .expect(201);
    layer
}

fn tls_config(server: &ServeProcess) -> Arc<ClientConfig> {
    let ca = server.home().join("registry-ca/ca.crt");
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&ca).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A verified TLS session to the server.
fn tls_connect(addr: &str, config: &Arc<ClientConfig>) -> TlsStream {
    let mut sock = connect(addr, Duration::from_secs(30)).unwrap();
    let mut conn = ClientConnection::new(Arc::clone(config), ServerName::try_from("localhost").unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    StreamOwned::new(conn, sock)
}

/// The well-behaved clients' requests: a manifest over HTTP on a new connection; over HTTPS
/// on a new connection (handshake included) and again on the same kept-alive session.
/// Returns how long each kind took at most over `ROUNDS`.
fn well_behaved(addr: &str, config: &Arc<ClientConfig>, manifest: &[u8]) -> (Duration, Duration) {
    let (mut http, mut https) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let got = Request::new(addr, "GET", MANIFEST).header("Accept", "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(got.send().expect(200).body, manifest);
        http = http.max(started.elapsed());

        let started = Instant::now();
        let mut client = Client::new(tls_connect(addr, config));
        for _ in 0..2 {
            let request =
                Request::new(addr, "GET", MANIFEST).header("Accept", "application/vnd.oci.image.manifest.v1+json");
            assert_eq!(client.send(&request).expect(200).body, manifest, "over HTTPS, kept alive");
        }
        https = https.max(started.elapsed());
    }
    (http, https)
}

/// Bytes queued for reading on `stream`, without reading them.
fn readable_bytes(stream: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to `n`.
    assert_eq!(unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut n) }, 0);
    n as usize
}

/// True while the server holds `stream` open without having answered or closed it.
fn still_held(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let held = matches!(stream.peek(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    held
}

/// [`still_held`] for a TLS session: records the server sent on its own (session tickets) are
/// read, but no plaintext (an answer) and no close.
fn tls_still_held(stream: &mut TlsStream) -> bool {
    stream.sock.set_nonblocking(true).unwrap();
    let held = matches!(stream.read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.sock.set_nonblocking(false).unwrap();
    held
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Waits (bounded) until `check` holds, failing with `what` otherwise.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stalled_handshakes_heads_and_readers_do_not_keep_others_waiting() {
    let hostile = STALLED_HANDSHAKES + BARE + PARTIAL_HEADS + PARTIAL_TLS_HEADS + SLOW_READERS + SLOW_TLS_READERS;
    raise_fd_limit(2 * hostile as u64 + 1024);
    let storage = temp_dir();
    let server = ServeProcess::start_with_args(storage.path(), &["--no-auth", "--quiet"]);
    let addr = server.addr.clone();
    let config = tls_config(&server);
    // Far larger than loopback socket buffers take, so a reader that never reads stalls.
    let big = pattern("stalls-big", 16 << 20);
    let big_layer = push_image(&addr, "stalls/big", "v1", &big);
    push_image(&addr, "stalls/small", "v1", b"small layer");
    let medium = pattern("stalls-medium", 1 << 20);
    let medium_layer = push_image(&addr, "stalls/medium", "v1", &medium);
    let manifest = Request::new(&addr, "GET", MANIFEST)
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .expect(200)
        .body;
    let idle = well_behaved(&addr, &config, &manifest);
    let fds_before = open_fds(server.pid());

    // The first bytes of a real ClientHello, then nothing.
    let mut hello = Vec::new();
    ClientConnection::new(Arc::clone(&config), ServerName::try_from("localhost").unwrap())
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let stalled_handshakes: Vec<TcpStream> = (0..STALLED_HANDSHAKES)
        .map(|_| {
            let mut s = connect(&addr, Duration::from_secs(30)).unwrap();
            s.write_all(&hello[..hello.len() / 2]).unwrap();
            s
        })
        .collect();
    let bare: Vec<TcpStream> = (0..BARE).map(|_| connect(&addr, Duration::from_secs(30)).unwrap()).collect();
    let partial_heads: Vec<TcpStream> = (0..PARTIAL_HEADS)
        .map(|i| {
            let mut s = connect(&addr, Duration::from_secs(30)).unwrap();
            write!(s, "GET {MANIFEST} HTTP/1.1\r\nHost: x\r\nX-Partial: {i}\r\n").unwrap();
            s
        })
        .collect();
    let mut partial_tls_heads: Vec<TlsStream> = (0..PARTIAL_TLS_HEADS)
        .map(|_| {
            let mut s = tls_connect(&addr, &config);
            s.write_all(format!("GET {MANIFEST} HTTP/1.1\r\nHost: x\r\n").as_bytes()).unwrap();
            s.flush().unwrap();
            s
        })
        .collect();
    let mut slow_tls_readers: Vec<TlsStream> = (0..SLOW_TLS_READERS)
        .map(|_| {
            let mut s = tls_connect(&addr, &config);
            s.write_all(format!("GET /v2/stalls/big/blobs/{big_layer} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            s.flush().unwrap();
            s
        })
        .collect();
    // (Their blob's first records are there: each holds its worker now.)
    wait_for("the TLS slow readers' blobs to start", || {
        slow_tls_readers.iter().all(|s| readable_bytes(&s.sock) > 64 * 1024)
    });
    let slow_readers: Vec<TcpStream> = (0..SLOW_READERS)
        .map(|_| {
            let mut s = connect(&addr, Duration::from_secs(30)).unwrap();
            write!(s, "GET /v2/stalls/big/blobs/{big_layer} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Held at once: the server has every one of them open, and every reader has its answer
    // coming (a blob it does not read, or a 503 while half the workers are sending blobs).
    // (Less the well-behaved clients' connections the server may still have been closing.)
    let held = fds_before + hostile - 2 * ROUNDS;
    wait_for("the server to hold every hostile connection", || open_fds(server.pid()) >= held);
    wait_for("every slow reader's answer to start", || slow_readers.iter().all(|s| readable_bytes(s) > 0));

    let attacked = well_behaved(&addr, &config, &manifest);
    // A blob is pulled too: the plain slow readers' sends went to the poller, so they hold no
    // worker and no download slot (a 503 can come only while some of them are still in their
    // first 250 ms on a worker; a client retries after Retry-After, as docker does).
    let started = Instant::now();
    let mut retries = 0;
    let blob = loop {
        let got = Request::new(&addr, "GET", &format!("/v2/stalls/medium/blobs/{medium_layer}")).send();
        if got.status != 503 || retries == 5 {
            break got.expect(200).body;
        }
        retries += 1;
        std::thread::sleep(Duration::from_secs(got.header("Retry-After").unwrap().parse().unwrap()));
    };
    assert!(blob == medium, "the pulled blob differs");
    let blob_took = started.elapsed();

    // Still held after the answers came: the head deadline (15 s) has not freed them yet, so
    // the answers did not wait for that.
    let unanswered = |streams: &[&TcpStream]| streams.iter().filter(|s| still_held(s)).count();
    assert_eq!(unanswered(&stalled_handshakes.iter().collect::<Vec<_>>()), STALLED_HANDSHAKES, "stalled handshakes");
    assert_eq!(unanswered(&bare.iter().collect::<Vec<_>>()), BARE, "bare connections");
    assert_eq!(unanswered(&partial_heads.iter().collect::<Vec<_>>()), PARTIAL_HEADS, "partial heads");
    let tls_held = partial_tls_heads.iter_mut().map(tls_still_held).filter(|held| *held).count();
    assert_eq!(tls_held, PARTIAL_TLS_HEADS, "partial heads over TLS");
    // The slow readers were each sent their blob's start, or told 503 with Retry-After while
    // every download slot was taken.
    let (mut sending, mut refused) = (0, 0);
    let mut classify = |reader: &mut dyn io::Read| {
        let (status, headers) = read_head(&mut io::BufReader::new(reader)).unwrap();
        match status {
            200 => sending += 1,
            503 => {
                assert!(headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("retry-after") && v == "1"), "{headers:?}");
                refused += 1;
            }
            other => panic!("a slow reader got {other}"),
        }
    };
    for mut reader in &slow_readers {
        classify(&mut reader);
    }
    for reader in &mut slow_tls_readers {
        reader.sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        classify(reader);
    }
    assert!(sending > 0, "no slow reader was being sent its blob");
    eprintln!(
        "stalls: well-behaved answers (slowest of {ROUNDS}) idle: HTTP {:?}, HTTPS (new session + keep-alive) {:?}; \
         with {STALLED_HANDSHAKES} stalled handshakes, {BARE} bare, {PARTIAL_HEADS} + {PARTIAL_TLS_HEADS} partial \
         heads, {SLOW_READERS} + {SLOW_TLS_READERS} (TLS) slow readers ({sending} being sent, {refused} told 503): \
         HTTP {:?}, HTTPS {:?}; a 1 MiB blob pulled in {blob_took:?} after {retries} 503s",
        idle.0, idle.1, attacked.0, attacked.1
    );
}

/// Slow uploads take at most half the workers: beyond it an upload is answered 503 with
/// `Retry-After` at once, manifests and blobs are still served, and once the slow uploads end
/// their slots are free again.
#[test]
fn slow_uploads_are_bounded_and_pulls_go_on() {
    const WORKERS: usize = 8;
    let storage = temp_dir();
    let server =
        ServeProcess::start_with_args(storage.path(), &["--no-auth", "--quiet", "--workers", &WORKERS.to_string()]);
    let addr = server.addr.clone();
    let layer_bytes = pattern("stalls-layer", 1 << 20);
    let layer = push_image(&addr, "stalls/small", "v1", &layer_bytes);

    // Uploads that send their head and 1 KiB of a 1 MiB body, then stall (held until the body
    // rate floor cuts them, after its 10 s grace).
    let open_upload = || {
        let location = Request::new(&addr, "POST", "/v2/stalls/slow/blobs/uploads/").send().expect(202).location();
        let mut s = connect(&addr, Duration::from_secs(30)).unwrap();
        let digest = sha256_digest(b"never sent whole");
        let sep = if location.contains('?') { '&' } else { '?' };
        write!(s, "PUT {location}{sep}digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n").unwrap();
        s.write_all(&[b'x'; 1024]).unwrap();
        s
    };
    let slow: Vec<TcpStream> = (0..WORKERS / 2).map(|_| open_upload()).collect();
    // The next one finds every upload slot taken, whichever order the workers took them in.
    // (One that found a slot after all is kept open: closing it would free its slot.)
    let started = Instant::now();
    let mut refused = None;
    let mut held = slow;
    while refused.is_none() {
        assert!(started.elapsed() < Duration::from_secs(8), "no upload was refused within the body grace");
        let mut extra = open_upload();
        extra.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut answer = String::new();
        let _ = extra.read_to_string(&mut answer);
        if answer.is_empty() {
            held.push(extra);
        } else {
            refused = Some(answer);
        }
    }
    let slow = held;
    let answer = refused.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");
    // Pulls are still served while the slow uploads hold their workers.
    assert_eq!(
        Request::new(&addr, "GET", &format!("/v2/stalls/small/blobs/{layer}")).send().expect(200).body,
        layer_bytes
    );
    Request::new(&addr, "GET", "/v2/stalls/small/manifests/v1")
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .expect(200);
    // (A refusal slower than the 500 ms above has arrived by now: only those reading remain.)
    let reading = slow.iter().filter(|s| still_held(s)).count();
    assert_eq!(reading, WORKERS / 2, "half the workers read the slow uploads, all along");
    // Once they go, uploads are taken again.
    drop(slow);
    let pushed = (0..50).find_map(|_| {
        let location = Request::new(&addr, "POST", "/v2/stalls/after/blobs/uploads/").send().expect(202).location();
        let sep = if location.contains('?') { '&' } else { '?' };
        let digest = sha256_digest(b"after");
        let r = Request::new(&addr, "PUT", &format!("{location}{sep}digest={digest}")).body(&b"after"[..]).send();
        if r.status == 503 {
            std::thread::sleep(Duration::from_millis(100));
            None
        } else {
            Some(r)
        }
    });
    pushed.expect("an upload after the slow ones ended").expect(201);
}
