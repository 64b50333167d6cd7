//! The idle poller: every connection with no request in progress (just accepted, or kept alive
//! between requests) waits here, in one poll(2) set, instead of holding a worker thread. Five
//! hundred idle clients then cost five hundred descriptors, not five hundred threads (issue 10).
//!
//! A request head is gathered here too, without blocking, so a client that sends one byte a
//! second never holds a worker: only a complete head is handed to the pool. For a TLS
//! connection that includes its handshake (`handshake.rs` drives rustls here, non-blocking):
//! a client stalling mid-ClientHello costs a descriptor, not a worker (issue 14).
//!
//! A plain-HTTP file response whose client stopped reading is finished here too (`sending.rs`),
//! on writability, so a client that never reads a blob holds no worker either.
//!
//! When every worker is busy and the hand-over queue is full, connections whose request is ready
//! wait in a short local queue; beyond that they are answered 503 with `Retry-After`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::handshake::{self, Progress};
use super::head_complete;
use super::response::closing_error_bytes;
use super::sending::{self, Rest};
use super::transport::{recv_now, Plain, Tls};

/// The longest a parked connection may take to send a whole request head, from its first byte.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the poller wakes with nothing to do, to see deadlines and the shutdown flag.
const TICK: Duration = Duration::from_millis(250);
/// How often it retries handing ready connections to busy workers.
const RETRY: Duration = Duration::from_millis(5);
/// The byte every TLS connection opens with (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// A connection in the poller finishing its response; after it, `keep_alive` says whether it
/// waits for the next request.
pub struct Sending {
    pub plain: Plain,
    pub rest: Rest,
    pub keep_alive: bool,
}

/// A connection between requests.
pub enum Conn {
    /// Just accepted: its first byte decides plain HTTP or TLS.
    Fresh(TcpStream),
    Plain(Plain),
    /// A TLS connection, in its handshake or between requests.
    Tls(Box<Tls>),
    /// The rest of a file response its client stopped reading (`sending.rs`).
    Sending(Box<Sending>),
}

impl Conn {
    fn fd(&self) -> RawFd {
        match self {
            Conn::Fresh(s) => s.as_raw_fd(),
            Conn::Plain(p) => p.stream.as_raw_fd(),
            Conn::Tls(t) => t.stream.sock.as_raw_fd(),
            Conn::Sending(s) => s.plain.stream.as_raw_fd(),
        }
    }

    /// What the poller waits for: input, and room to write when TLS records are queued.
    fn events(&self) -> libc::c_short {
        match self {
            Conn::Tls(t) if handshake::wants_write(t) => libc::POLLIN | libc::POLLOUT,
            Conn::Sending(_) => libc::POLLOUT,
            _ => libc::POLLIN,
        }
    }
}

/// What the poller does with a connection whose socket became readable.
enum Step {
    /// A whole request head is there: hand it to a worker.
    Ready(Conn),
    /// Part of a head (or of a TLS handshake) arrived; keep waiting, now under the head deadline.
    Gathering(Conn),
    /// Nothing to read after all (a spurious wake-up): keep waiting as before.
    Idle(Conn),
    /// A response's rest went out in part: wait to send more, under the write timeout.
    Sending(Conn),
    /// A response finished: wait for the next request, under the idle timeout.
    Sent(Conn),
    Close,
}

/// Reads what a ready connection has and decides its next step. Never blocks: every read
/// here is `MSG_DONTWAIT`.
fn on_readable(conn: Conn, max_head: usize, tls: Option<&crate::tls::ServerTls>) -> Step {
    match conn {
        Conn::Fresh(stream) => {
            let mut first = [0u8; 1];
            match recv_now(&stream, &mut first, libc::MSG_PEEK) {
                Ok(0) => Step::Close,
                Ok(_) if first[0] == TLS_HANDSHAKE => match tls {
                    // The config is taken per connection: a renewed certificate is used at once.
                    Some(tls) => match rustls::ServerConnection::new(tls.config()) {
                        Ok(session) => drive_tls(Box::new(Tls::new(session, stream)), max_head),
                        Err(e) => {
                            crate::log::warn("tls", &e.to_string());
                            Step::Close
                        }
                    },
                    None => {
                        // A plain-only server closes at once, so clients that try HTTPS first
                        // (docker, skopeo) fall back to HTTP without waiting.
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                        Step::Close
                    }
                },
                Ok(_) => gather(Plain::new(stream), max_head),
                Err(e) if would_block(&e) => Step::Idle(Conn::Fresh(stream)),
                Err(_) => Step::Close,
            }
        }
        Conn::Plain(plain) => gather(plain, max_head),
        Conn::Tls(tls) => drive_tls(tls, max_head),
        Conn::Sending(sending) => send_rest(sending, max_head),
    }
}

/// Sends what the socket takes of a response's rest; once it is all out, the connection waits
/// for its next request (or closes), its socket blocking again for the workers.
fn send_rest(mut sending: Box<Sending>, max_head: usize) -> Step {
    match sending::send_now(&sending.plain.stream, &mut sending.rest) {
        Ok(false) => Step::Sending(Conn::Sending(sending)),
        Ok(true) => {
            let Sending { plain, keep_alive, .. } = *sending;
            if !keep_alive || plain.stream.set_nonblocking(false).is_err() {
                let _ = plain.stream.shutdown(std::net::Shutdown::Write);
                return Step::Close;
            }
            if head_complete(plain.early()) {
                return Step::Ready(Conn::Plain(plain));
            }
            match gather(plain, max_head) {
                Step::Idle(conn) => Step::Sent(conn),
                step => step,
            }
        }
        Err(_) => Step::Close,
    }
}

fn drive_tls(mut tls: Box<Tls>, max_head: usize) -> Step {
    match handshake::drive(&mut tls, max_head) {
        Progress::HeadReady => Step::Ready(Conn::Tls(tls)),
        Progress::Partial => Step::Gathering(Conn::Tls(tls)),
        Progress::Nothing => Step::Idle(Conn::Tls(tls)),
        Progress::Closed => Step::Close,
    }
}

/// Reads ahead on a plain connection until its head is complete (or too large, which the
/// worker answers with 431).
fn gather(mut plain: Plain, max_head: usize) -> Step {
    loop {
        match plain.read_ahead(max_head + 1) {
            Ok(0) if plain.early().len() > max_head => return Step::Ready(Conn::Plain(plain)),
            Ok(0) => return Step::Close,
            Ok(_) => {
                if head_complete(plain.early()) || plain.early().len() > max_head {
                    return Step::Ready(Conn::Plain(plain));
                }
            }
            Err(e) if would_block(&e) && plain.early().is_empty() => return Step::Idle(Conn::Plain(plain)),
            Err(e) if would_block(&e) => return Step::Gathering(Conn::Plain(plain)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// A parked connection and the moment it must have shown progress by.
struct Waiting {
    conn: Conn,
    deadline: Instant,
    /// True once part of a request head arrived (the deadline is then the head deadline).
    mid_head: bool,
}

/// The workers' way back to the poller: `park` a connection that finished a request and has
/// nothing buffered.
#[derive(Clone)]
pub struct Parking {
    sender: Sender<Conn>,
    wake: Arc<UnixStream>,
}

impl Parking {
    /// Hands `conn` to the poller, or gives it back when the poller is gone (shutdown).
    /// The socket stays in blocking mode: the poller only polls it and reads with
    /// `MSG_DONTWAIT` (but for `Conn::Sending`, non-blocking until its response is out).
    pub fn park(&self, conn: Conn) -> Result<(), Conn> {
        match self.sender.try_send(conn) {
            Ok(()) => {
                // Non-blocking: a full wake pipe already guarantees a wake-up.
                let _ = (&*self.wake).write(&[1]);
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }
}

/// Limits the poller enforces.
#[derive(Clone, Copy)]
pub struct PollerLimits {
    pub idle_timeout: Duration,
    /// A response's rest (`sending.rs`) fails after this long without progress.
    pub write_timeout: Duration,
    pub head_timeout: Duration,
    pub max_head: usize,
    /// Connections parked at most; new ones beyond it are answered 503.
    pub max_parked: usize,
    /// Ready connections that may wait for a busy pool before the excess is answered 503.
    pub max_ready: usize,
}

pub struct Poller {
    inbox: Receiver<Conn>,
    wake: UnixStream,
    workers: Sender<Conn>,
    shutdown: Arc<AtomicBool>,
    limits: PollerLimits,
    tls: Option<Arc<crate::tls::ServerTls>>,
}

impl Poller {
    /// A poller handing ready connections to `workers`, and the handle that parks connections.
    pub fn new(
        workers: Sender<Conn>,
        shutdown: Arc<AtomicBool>,
        limits: PollerLimits,
        tls: Option<Arc<crate::tls::ServerTls>>,
    ) -> io::Result<(Poller, Parking)> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        // Unbounded (allocated in blocks as it fills), not `bounded(max_parked)`: crossbeam's
        // bounded channel allocates and touches every slot up front, 480 KiB resident for
        // 10,000 connections that are almost never there (issue 9: peak RSS). `run` still
        // refuses connections beyond `max_parked`; what is in transit is bounded by the open
        // sockets.
        let (sender, inbox) = crossbeam_channel::unbounded();
        let parking = Parking { sender, wake: Arc::new(wake_write) };
        Ok((Poller { inbox, wake: wake_read, workers, shutdown, limits, tls }, parking))
    }

    /// Runs until shutdown, calling `handed_over` after each connection given to the workers.
    /// Connections still idle at shutdown are closed; ready ones are handed over so their
    /// requests are answered.
    pub fn run(self, handed_over: impl Fn()) {
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut ready: VecDeque<Conn> = VecDeque::new();
        let mut fds: Vec<libc::pollfd> = Vec::new();
        loop {
            let now = Instant::now();
            while let Ok(conn) = self.inbox.try_recv() {
                if waiting.len() >= self.limits.max_parked {
                    refuse_busy(conn);
                    continue;
                }
                waiting.push(Waiting { conn, deadline: now + self.limits.idle_timeout, mid_head: false });
            }
            if self.shutdown.load(Ordering::SeqCst) {
                for conn in ready.drain(..) {
                    let _ = self.workers.send(conn);
                }
                return;
            }
            while let Some(conn) = ready.pop_front() {
                match self.workers.try_send(conn) {
                    Ok(()) => handed_over(),
                    Err(TrySendError::Full(conn)) => {
                        ready.push_front(conn);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            while ready.len() > self.limits.max_ready {
                if let Some(conn) = ready.pop_back() {
                    refuse_busy(conn);
                }
            }

            let next_deadline = waiting.iter().map(|w| w.deadline).min();
            let mut timeout = if ready.is_empty() { TICK } else { RETRY };
            if let Some(deadline) = next_deadline {
                timeout = timeout.min(deadline.saturating_duration_since(now));
            }
            fds.clear();
            fds.push(libc::pollfd { fd: self.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            fds.extend(waiting.iter().map(|w| libc::pollfd { fd: w.conn.fd(), events: w.conn.events(), revents: 0 }));
            // SAFETY: `fds` is a live, correctly sized array of pollfd for the whole call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis() as i32) };
            if n < 0 {
                // EINTR (a signal): just go round again.
                continue;
            }
            if fds[0].revents != 0 {
                // One read: whatever is left wakes the next poll at once, which is as good.
                let mut drain = [0u8; 4096];
                let _ = (&self.wake).read(&mut drain);
            }

            let now = Instant::now();
            let before = std::mem::take(&mut waiting);
            for (w, fd) in before.into_iter().zip(&fds[1..]) {
                if fd.revents == 0 {
                    if now >= w.deadline {
                        expire(w);
                    } else {
                        waiting.push(w);
                    }
                    continue;
                }
                let Waiting { conn, deadline, mid_head } = w;
                match on_readable(conn, self.limits.max_head, self.tls.as_deref()) {
                    Step::Ready(conn) => ready.push_back(conn),
                    Step::Gathering(conn) => {
                        let deadline = if mid_head { deadline } else { now + self.limits.head_timeout };
                        let again = Waiting { conn, deadline, mid_head: true };
                        if now >= again.deadline {
                            expire(again);
                        } else {
                            waiting.push(again);
                        }
                    }
                    Step::Idle(conn) => waiting.push(Waiting { conn, deadline, mid_head }),
                    Step::Sending(conn) => {
                        let deadline = now + self.limits.write_timeout;
                        waiting.push(Waiting { conn, deadline, mid_head: false });
                    }
                    Step::Sent(conn) => {
                        let deadline = now + self.limits.idle_timeout;
                        waiting.push(Waiting { conn, deadline, mid_head: false });
                    }
                    Step::Close => {}
                }
            }
        }
    }
}

/// A connection past its deadline: idle ones just close; one caught mid-head is told why (a
/// TLS one still in its handshake has no session to be told in, and is just closed).
fn expire(w: Waiting) {
    if !w.mid_head {
        return;
    }
    let response = closing_error_bytes(408, "UNSUPPORTED", "request head not received in time", &[]);
    answer_and_close(w.conn, &response);
}

/// Answers a connection the server has no room for: 503 with `Retry-After`, then close. Never
/// waits: a TLS client still in its handshake gets a closed connection instead, and retries too.
pub fn refuse_busy(conn: Conn) {
    let response = closing_error_bytes(503, "TOOMANYREQUESTS", "server busy, retry shortly", &[("Retry-After", "1")]);
    answer_and_close(conn, &response);
}

/// Writes a small response and closes the sending side, without ever waiting: one small write
/// into an empty socket buffer fits, or the client is gone. For answers the poller or the
/// accept thread give themselves, which must not block on one client.
fn answer_and_close(conn: Conn, response: &[u8]) {
    let stream = match conn {
        Conn::Fresh(stream) | Conn::Plain(Plain { stream, .. }) => stream,
        Conn::Tls(tls) => return handshake::answer_and_close(*tls, response),
        // Mid-response: nothing more can be said on it.
        Conn::Sending(_) => return,
    };
    // SAFETY: `response` is valid for reads of its length for the whole call.
    let _ = unsafe {
        libc::send(
            std::os::unix::io::AsRawFd::as_raw_fd(&stream),
            response.as_ptr().cast(),
            response.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parking limit holds without a channel sized to it: beyond `max_parked` idle
    /// connections, the next one is answered 503 and closed, the parked ones stay open.
    #[test]
    fn connections_beyond_max_parked_get_503() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (workers, _work) = crossbeam_channel::bounded(1);
        let shutdown = Arc::new(AtomicBool::new(false));
        let limits = PollerLimits {
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            head_timeout: HEAD_TIMEOUT,
            max_head: 8192,
            max_parked: 2,
            max_ready: 1,
        };
        let (poller, parking) = Poller::new(workers, Arc::clone(&shutdown), limits, None).unwrap();
        let running = std::thread::spawn(move || poller.run(|| {}));
        let mut clients = Vec::new();
        for _ in 0..3 {
            let client = TcpStream::connect(addr).unwrap();
            client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let (served, _) = listener.accept().unwrap();
            assert!(parking.park(Conn::Fresh(served)).is_ok());
            clients.push(client);
        }
        // The answer comes as soon as the poller runs; the generous wait only covers a loaded machine.
        clients[2].set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = String::new();
        let _ = clients[2].read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        for client in &mut clients[..2] {
            // A signal meant for another test thread may interrupt the wait: wait again.
            let error = loop {
                match client.read(&mut [0u8; 16]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other.unwrap_err(),
                }
            };
            assert!(matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{error}");
        }
        shutdown.store(true, Ordering::SeqCst);
        running.join().unwrap();
    }
}
