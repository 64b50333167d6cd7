//! Load and starvation (issue 10): idle, slow-talking, slow-sending and slow-reading clients
//! must not keep others from being served, and 64 pushers with 64 pullers at once must see no
//! error and leave a consistent store. Every loop here is bounded in count and time, and talks
//! only to the server the test started on 127.0.0.1.

// Test helpers outside #[test] functions unwrap too: a failure is the test's failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::http::{connect, Client, Request};
use common::{pattern, sha256_digest, temp_dir, ServeProcess};

/// A tiny blob and its image manifest, pushed so readers have something to GET.
fn push_image(addr: &str, repo: &str, tag: &str, content: &[u8]) -> String {
    let blob = sha256_digest(content);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = sha256_digest(config);
    for (digest, bytes) in [(&blob, content), (&config_digest, &config[..])] {
        let started = Request::new(addr, "POST", &format!("/v2/{repo}/blobs/uploads/")).send().expect(202);
        let location = started.location();
        let sep = if location.contains('?') { '&' } else { '?' };
        Request::new(addr, "PUT", &format!("{location}{sep}digest={digest}")).body(bytes.to_vec()).send().expect(201);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob, "size": content.len()}],
    })
    .to_string();
    Request::new(addr, "PUT", &format!("/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .expect(201);
    sha256_digest(manifest.as_bytes())
}

/// The number of threads of process `pid`.
fn thread_count(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A slowloris: the one-second pace is the fault under test, not a wait for an event.
/// Sends `bytes` one a second on `stream` until `stop` is set, the bytes run out or the server
/// closes; returns what the server answered (possibly nothing) and how long it took.
fn drip(mut stream: TcpStream, bytes: Vec<u8>, stop: Arc<AtomicBool>) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in bytes {
        if stop.load(Ordering::SeqCst) || stream.write_all(&[byte]).is_err() {
            break;
        }
        // Until the next byte is due, block in read: an answer or a close ends the wait early.
        let next_byte = Instant::now() + Duration::from_secs(1);
        let mut closed = false;
        while let Some(left) = next_byte.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            stream.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 1024];
            match stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        if closed {
            break;
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[test]
fn idle_and_slow_clients_do_not_starve_others() {
    // Enough workers for the clients that do hold one (slow bodies until the rate floor cuts
    // them, stalled readers until the write timeout) and a few to spare.
    const WORKERS: usize = 16;
    const IDLE_FRESH: usize = 500;
    const IDLE_KEPT_ALIVE: usize = 100;
    const SLOW_HEADS: usize = 40;
    const SLOW_BODIES: usize = 4;
    const SLOW_READERS: usize = 4;
    let storage = temp_dir();
    let server =
        ServeProcess::start_with_args(storage.path(), &["--no-auth", "--quiet", "--workers", &WORKERS.to_string()]);
    let addr = server.addr.clone();
    // Larger than what loopback socket buffers hold, so a reader that stops reading stalls.
    let big = pattern("load-big", 32 << 20);
    push_image(&addr, "load/big", "v1", &big);
    let big_digest = sha256_digest(&big);
    let manifest = push_image(&addr, "load/small", "v1", b"small layer");

    // 500 connections that never say a word, and 100 that made one request and stay open.
    let idle: Vec<TcpStream> = (0..IDLE_FRESH).map(|_| connect(&addr, Duration::from_secs(30)).unwrap()).collect();
    let mut kept: Vec<Client> = Vec::new();
    for _ in 0..IDLE_KEPT_ALIVE {
        let mut c = Client::connect(&addr);
        c.send(&Request::new(&addr, "GET", "/v2/")).expect(200);
        kept.push(c);
    }
    // Clients that send their head, or their body, one byte a second.
    let stop = Arc::new(AtomicBool::new(false));
    let mut drippers = Vec::new();
    for i in 0..SLOW_HEADS {
        let head =
            format!("GET /v2/load/small/manifests/v1 HTTP/1.1\r\nHost: x\r\nX-Slow: {i:04}-{}\r\n\r\n", "y".repeat(64));
        let stream = connect(&addr, Duration::from_secs(30)).unwrap();
        let stop = Arc::clone(&stop);
        drippers.push(("head", thread::spawn(move || drip(stream, head.into_bytes(), stop))));
    }
    for _ in 0..SLOW_BODIES {
        let mut stream = connect(&addr, Duration::from_secs(30)).unwrap();
        stream.write_all(b"PUT /v2/load/slow/manifests/t HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n").unwrap();
        let stop = Arc::clone(&stop);
        drippers.push(("body", thread::spawn(move || drip(stream, vec![b' '; 4096], stop))));
    }
    // Clients that ask for 32 MiB and never read it.
    let mut stalled_readers = Vec::new();
    for _ in 0..SLOW_READERS {
        let mut stream = connect(&addr, Duration::from_secs(30)).unwrap();
        write!(stream, "GET /v2/load/big/blobs/{big_digest} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stalled_readers.push(stream);
    }

    // Meanwhile an ordinary client is served promptly, on new and on kept-alive connections.
    let mut slowest = Duration::ZERO;
    let mut keep = Client::connect(&addr);
    let path = "/v2/load/small/manifests/v1";
    for i in 0..200 {
        let started = Instant::now();
        let response = if i % 2 == 0 {
            Request::new(&addr, "GET", path).send()
        } else {
            keep.send(&Request::new(&addr, "GET", path))
        };
        assert_eq!(response.status, 200, "request {i} under load: {}", response.text());
        assert_eq!(sha256_digest(&response.body), manifest);
        slowest = slowest.max(started.elapsed());
    }
    let pushed_under_load = push_image(&addr, "load/fresh", "v1", &pattern("load-fresh", 1 << 20));
    assert!(slowest < Duration::from_secs(2), "a request took {slowest:?} while others were idle or slow");
    let threads = thread_count(server.pid());
    assert!(
        threads < WORKERS + 16,
        "{threads} server threads for {} open connections",
        IDLE_FRESH + IDLE_KEPT_ALIVE + SLOW_HEADS + SLOW_BODIES + SLOW_READERS
    );

    // The kept-alive ones still work after waiting in the poller.
    for c in kept.iter_mut().take(10) {
        c.send(&Request::new(&addr, "GET", "/v2/")).expect(200);
    }
    // Slow heads are cut off by the head deadline (15 s) with a 408; slow bodies by the minimum
    // rate (10 s grace): neither holds a worker for as long as it likes.
    for (kind, dripper) in drippers {
        let (answer, took) = dripper.join().unwrap();
        assert!(took < Duration::from_secs(25), "a slow {kind} was served for {took:?}");
        if kind == "head" {
            assert!(answer.starts_with("HTTP/1.1 408 "), "a slow head got: {answer:?}");
        } else {
            assert!(
                answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5") || answer.is_empty(),
                "{answer:?}"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    drop(idle);
    drop(stalled_readers);
    // The fresh push is whole.
    let got = Request::new(&addr, "GET", "/v2/load/fresh/manifests/v1")
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .expect(200);
    assert_eq!(sha256_digest(&got.body), pushed_under_load);
    eprintln!(
        "load: {IDLE_FRESH} idle + {IDLE_KEPT_ALIVE} kept-alive + {SLOW_HEADS} slow heads + {SLOW_BODIES} slow bodies + \
         {SLOW_READERS} stalled readers on {WORKERS} workers; 200 requests served, slowest {slowest:?}; {threads} threads"
    );
}

/// An acknowledged push: repo, tag, manifest digest, and the layer's content seed and length.
type Pushed = (String, String, String, String, usize);

#[test]
fn sixty_four_pushers_and_sixty_four_pullers_see_no_error() {
    const PUSHERS: usize = 64;
    const PULLERS: usize = 64;
    const RUN_FOR: Duration = Duration::from_secs(8);
    let storage = temp_dir();
    let server = ServeProcess::start_with_args(storage.path(), &["--no-auth", "--quiet"]);
    let addr = server.addr.clone();
    let seed_repo = "load/shared";
    let (seed, seed_len) = ("seed layer".to_string(), 1024);
    let seed_digest = push_image(&addr, seed_repo, "seed", &pattern(&seed, seed_len));
    // The pullers start with the seed image to pull, so none has to wait for a pusher.
    let seeded = (seed_repo.to_string(), "seed".to_string(), seed_digest, seed, seed_len);
    let pushed: Arc<Mutex<Vec<Pushed>>> = Arc::new(Mutex::new(vec![seeded]));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let pulls = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN_FOR;

    let mut threads = Vec::new();
    for p in 0..PUSHERS {
        let (addr, pushed, errors) = (addr.clone(), Arc::clone(&pushed), Arc::clone(&errors));
        threads.push(thread::spawn(move || {
            let mut n = 0;
            while Instant::now() < deadline {
                let repo = if p % 4 == 0 { seed_repo.to_string() } else { format!("load/p{p}") };
                let tag = format!("t{p}-{n}");
                let seed = format!("push-{p}-{n}");
                let len = 1024 + (p * 7919 + n * 104_729) % (512 * 1024);
                let result = std::panic::catch_unwind(|| push_image(&addr, &repo, &tag, &pattern(&seed, len)));
                match result {
                    Ok(digest) => pushed.lock().unwrap().push((repo, tag, digest, seed, len)),
                    Err(_) => errors.lock().unwrap().push(format!("push {repo}:{tag} failed")),
                }
                n += 1;
            }
        }));
    }
    for r in 0..PULLERS {
        let (addr, pushed, errors, pulls) =
            (addr.clone(), Arc::clone(&pushed), Arc::clone(&errors), Arc::clone(&pulls));
        threads.push(thread::spawn(move || {
            let mut client = Client::connect(&addr);
            let mut i = r;
            while Instant::now() < deadline {
                let (repo, tag, digest, seed, len) = {
                    let all = pushed.lock().unwrap();
                    all[i % all.len()].clone()
                };
                i += 13;
                let manifest = client.try_send(
                    &Request::new(&addr, "GET", &format!("/v2/{repo}/manifests/{tag}"))
                        .header("Accept", "application/vnd.oci.image.manifest.v1+json"),
                );
                let ok = match manifest {
                    Ok(m) if m.status == 200 && sha256_digest(&m.body) == digest => {
                        let layer = &m.json()["layers"][0]["digest"];
                        let layer = layer.as_str().unwrap_or_default().to_string();
                        match client.try_send(&Request::new(&addr, "GET", &format!("/v2/{repo}/blobs/{layer}"))) {
                            Ok(b) => b.status == 200 && b.body == pattern(&seed, len),
                            Err(_) => false,
                        }
                    }
                    _ => false,
                };
                if !ok {
                    errors.lock().unwrap().push(format!("pull {repo}:{tag} failed or differed"));
                    client = Client::connect(&addr);
                }
                pulls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.lock().unwrap();
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), errors.iter().take(5).collect::<Vec<_>>());

    // Consistency after the storm: every acknowledged tag serves its manifest and its blob.
    let pushed = pushed.lock().unwrap();
    assert!(pushed.len() > PUSHERS, "only {} pushes in {RUN_FOR:?}", pushed.len());
    let mut client = Client::connect(&addr);
    for (repo, tag, digest, seed, len) in pushed.iter() {
        let m = client
            .send(
                &Request::new(&addr, "GET", &format!("/v2/{repo}/manifests/{tag}"))
                    .header("Accept", "application/vnd.oci.image.manifest.v1+json"),
            )
            .expect(200);
        assert_eq!(&sha256_digest(&m.body), digest, "{repo}:{tag}");
        let layer = m.json()["layers"][0]["digest"].as_str().unwrap().to_string();
        let blob = client.send(&Request::new(&addr, "GET", &format!("/v2/{repo}/blobs/{layer}"))).expect(200);
        assert!(blob.body == pattern(seed, *len), "{repo}:{tag} layer differs");
    }
    eprintln!(
        "load: {PUSHERS} pushers + {PULLERS} pullers for {RUN_FOR:?}: {} pushes, {} pulls, 0 errors, all verified",
        pushed.len(),
        pulls.load(Ordering::Relaxed)
    );
}
