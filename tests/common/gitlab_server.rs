//! A stand-in GitLab instance on `127.0.0.1`: serves fixed bodies at GitLab's API paths
//! (`/api/v4/projects/g%2Fp/repository/files/ci%2Fa.yml/raw?ref=main`, releases, tags) and any
//! other path a test lays out, records every request (target and whether `PRIVATE-TOKEN` held
//! the expected token), and answers 404 elsewhere. One thread, one connection at a time,
//! `Connection: close`: enough for `glci run`'s sequential fetches. Stopped (its port closed)
//! by [`GitlabServer::stop`] or on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub target: String,
    /// The `PRIVATE-TOKEN` header, when sent.
    pub token: Option<String>,
}

pub struct GitlabServer {
    pub addr: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GitlabServer {
    /// Serves `routes` (request target → body) on a free port.
    pub fn start(routes: HashMap<String, String>) -> GitlabServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve(stream, &routes, &seen);
                    }
                }
            })
        };
        GitlabServer { addr, seen, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The targets requested so far.
    pub fn targets(&self) -> Vec<String> {
        self.seen.lock().expect("lock").iter().map(|s| s.target.clone()).collect()
    }

    /// Closes the port: later connections are refused.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GitlabServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(stream: TcpStream, routes: &HashMap<String, String>, seen: &Mutex<Vec<Seen>>) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let mut token = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("private-token") {
                token = Some(value.trim().to_owned());
            }
        }
    }
    seen.lock().expect("lock").push(Seen { target: target.clone(), token });
    let (status, body) = match routes.get(&target) {
        Some(body) => ("200 OK", body.as_str()),
        None => ("404 Not Found", "{\"message\":\"404 File Not Found\"}"),
    };
    let mut stream = stream;
    let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}
