//! One client connection while it has a request in progress, on a worker thread: the
//! keep-alive loop. The request head is read under a deadline and the body framed
//! (`framing.rs`), the handler called, the response written (`response.rs`, with
//! `Content-Length` whenever it is known); then the connection goes back to the idle poller
//! (`idle.rs`) to wait for its next request, or closes.
//!
//! Why not tiny_http (the crate the project started from): in 0.12 dropping a request whose
//! body was not read to the end allocates the whole unread length at once, so one request
//! claiming a 10 TB `Content-Length` aborts the server; a malformed `Content-Length` is taken as
//! no body; bodies of 32 KiB and more go out chunked, HEAD included; TLS is fixed per server,
//! so one port cannot serve both HTTP and HTTPS; and each connection holds a thread while idle.
//! This module, `framing.rs`, `response.rs` and `idle.rs` own those decisions.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::framing::{body_framing, read_head, BodyReader, Framing, HeadError};
use super::idle::{Conn, Sending, HEAD_TIMEOUT};
use super::response::{self, is_long, write_response, Written};
use super::sending::Rest;
use super::slots::{Transfer, Transfers};
use super::transport::{Plain, Transport};
use super::{Handler, Request, Response};
use crate::log::Exchange;

pub use super::framing::MAX_HEAD_BYTES;

/// How much of an unread body is drained to keep a connection alive; beyond it we close.
pub(super) const MAX_DRAIN_BYTES: u64 = 256 * 1024;
/// How long a closing connection keeps reading unwanted input (see `linger`).
const LINGER: Duration = Duration::from_secs(2);
/// How long a worker with nothing else to do waits for a connection's next request before
/// handing it to the poller (issue 9: request rates; parking every time cost ~20% of them).
const KEEP_WARM: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: Duration,
    /// A request whose body stalls longer than this fails.
    pub read_timeout: Duration,
    /// A response the client stops reading fails after this long without progress.
    pub write_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}
/// Socket options every connection keeps for its life, set once at accept: no Nagle delay on
/// responses, and the write timeout for a client that stops reading.
pub fn prepare(stream: &std::net::TcpStream, limits: ConnLimits) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(limits.write_timeout))
}

/// What serving a connection takes besides the connection.
pub struct Serving<'a> {
    pub handler: &'a dyn Handler,
    pub shutdown: &'a AtomicBool,
    pub limits: ConnLimits,
    pub log: &'a dyn Fn(&Exchange<'_>),
    /// Asked once a connection has nothing buffered: may this worker wait `KEEP_WARM` for its
    /// next request rather than park it at once?
    pub may_keep_warm: &'a dyn Fn() -> bool,
    /// Workers in a long transfer (a request body, a large response body) are bounded (`slots.rs`).
    pub transfers: &'a Arc<Transfers>,
}

/// Serves a connection the poller found ready, until it has nothing more buffered (and, when
/// allowed, nothing more within `KEEP_WARM`). Returns it when it should wait for its next
/// request in the poller; `None` once it is closed.
pub fn serve(conn: Conn, ctx: &Serving<'_>) -> Option<Conn> {
    // TCP_NODELAY and the write timeout were set once, at accept (`prepare`).
    let plain = |after: After<Plain>| match after {
        After::Idle(plain) => Conn::Plain(plain),
        After::Sending(plain, rest, keep_alive) => Conn::Sending(Box::new(Sending { plain, rest, keep_alive })),
    };
    match conn {
        Conn::Fresh(stream) => serve_transport(Plain::new(stream), "http", ctx).map(plain),
        Conn::Plain(p) => serve_transport(p, "http", ctx).map(plain),
        // Its handshake (and this request's head) were done in the poller (`handshake.rs`).
        Conn::Tls(tls) => serve_transport(*tls, "https", ctx).and_then(|after| match after {
            After::Idle(tls) => Some(Conn::Tls(Box::new(tls))),
            // A TLS send never stalls out to the poller (`Tls::send_file` blocks).
            After::Sending(..) => None,
        }),
        // Only ever in the poller, which finishes the response before a worker sees it again.
        Conn::Sending(_) => None,
    }
}

/// What `serve_transport` leaves for the poller.
enum After<T> {
    /// Waiting for its next request.
    Idle(T),
    /// The rest of a response the client stopped reading; then idle if `keep_alive`.
    Sending(T, Rest, bool),
}

/// Serves requests on `transport` while they keep coming without a pause. Returns the
/// transport when the client may send another request later (keep-alive, nothing buffered),
/// or when the rest of a response is left for the poller to send.
fn serve_transport<T: Transport>(transport: T, scheme: &'static str, ctx: &Serving<'_>) -> Option<After<T>> {
    let Serving { handler, shutdown, limits, log, .. } = *ctx;
    let mut reader = BufReader::with_capacity(64 * 1024, transport);
    loop {
        let head = match read_head(&mut reader, Instant::now() + HEAD_TIMEOUT) {
            Ok(Some(head)) => head,
            Ok(None) | Err(HeadError::Io) => return None,
            Err(HeadError::Bad(status, msg)) => {
                let _ = write_response(reader.get_mut(), "GET", plain_error(status, msg), false);
                reader.get_mut().close();
                return None;
            }
        };
        let started = Instant::now();
        let framing = match body_framing(&head.headers) {
            Ok(f) => f,
            Err(msg) => {
                let _ = write_response(reader.get_mut(), &head.method, plain_error(400, msg), false);
                reader.get_mut().close();
                return None;
            }
        };
        let mut slot = None;
        if framing != Framing::Length(0) {
            slot = ctx.transfers.try_take(Transfer::Upload);
            if slot.is_none() {
                let _ = write_response(reader.get_mut(), &head.method, too_many_transfers(), false);
                reader.get_mut().close();
                linger(&mut reader);
                return None;
            }
            // The head deadline's timeout is still set; a body gets the body timeout.
            let _ = reader.get_ref().tcp().set_read_timeout(Some(limits.read_timeout));
        }
        if head.expects_continue
            && !matches!(framing, Framing::Length(0))
            && write_flush(reader.get_mut(), b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
        {
            return None;
        }
        let mut body = BodyReader::new(&mut reader, framing);
        body.slot = slot;
        let mut request = Request {
            method: head.method.clone(),
            path: head.path.clone(),
            query: head.query.clone(),
            headers: head.headers,
            scheme,
            body: &mut body,
            content_length: match framing {
                Framing::Length(n) => Some(n),
                Framing::Chunked => None,
            },
            chunked: matches!(framing, Framing::Chunked),
        };
        let response = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&mut request))) {
            Ok(r) => r,
            Err(_) => plain_error(500, "internal error"),
        };
        drop(request);
        // A large response holds the worker for as long as the client takes to read it.
        let (response, _sending) = if is_long(&head.method, &response) {
            match ctx.transfers.try_take(Transfer::Download) {
                Some(slot) => (response, Some(slot)),
                None => (too_many_transfers(), None),
            }
        } else {
            (response, None)
        };
        // A small unread remainder is drained so the connection stays usable; a large one (or a
        // 10 TB claim) is not read at all: we answer and close.
        let body_done = body.finish(MAX_DRAIN_BYTES);
        let bytes_in = body.consumed;
        let keep_alive = head.keep_alive && body_done && !shutdown.load(Ordering::SeqCst);
        let status = response.status;
        let written = write_response(reader.get_mut(), &head.method, response, keep_alive);
        log(&Exchange {
            method: &head.method,
            path: &head.path,
            status,
            bytes_in,
            bytes_out: written.as_ref().map(|w| w.bytes).unwrap_or(0),
            elapsed: started.elapsed(),
        });
        if let Ok(Written { stalled: Some(rest), .. }) = written {
            // The client stopped reading: the poller sends the rest, this worker moves on.
            let pipelined = reader.buffer().to_vec();
            let mut transport = reader.into_inner();
            transport.unread(&pipelined);
            return Some(After::Sending(transport, rest, keep_alive));
        }
        if written.is_err() || !keep_alive {
            reader.get_mut().close();
            if !body_done {
                linger(&mut reader);
            }
            return None;
        }
        if reader.buffer().is_empty() && !reader.get_mut().has_buffered() {
            let next = if (ctx.may_keep_warm)() { next_within(&mut reader, KEEP_WARM) } else { Next::Quiet };
            match next {
                Next::Request => {}
                Next::Quiet => return Some(After::Idle(reader.into_inner())),
                Next::Closed => return None,
            }
        }
    }
}

/// What a kept-alive connection did while a worker waited for it.
enum Next {
    Request,
    Quiet,
    Closed,
}

/// Waits up to `wait` for the next request's first bytes, on the worker that served the last
/// one: a client in a request loop (docker pushing layers, a benchmark) then costs no trip
/// through the poller and no second thread wake-up.
fn next_within<T: Transport>(reader: &mut BufReader<T>, wait: Duration) -> Next {
    let _ = reader.get_ref().tcp().set_read_timeout(Some(wait));
    match reader.fill_buf() {
        Ok([]) => Next::Closed,
        Ok(_) => Next::Request,
        Err(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) =>
        {
            Next::Quiet
        }
        Err(_) => Next::Closed,
    }
}

fn write_flush(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes)?;
    w.flush()
}

/// Reads and discards what the client is still sending, for a bounded time, before the socket
/// closes. Closing with unread input makes the kernel send a reset, which can destroy the
/// response (an early 413, say) before the client reads it.
fn linger<T: Transport>(reader: &mut BufReader<T>) {
    let deadline = Instant::now() + LINGER;
    let _ = reader.get_ref().tcp().set_read_timeout(Some(Duration::from_millis(200)));
    // Small: lingering is rare, and a worker's stack keeps every page it ever touched.
    let mut buf = [0u8; 8 * 1024];
    while Instant::now() < deadline {
        match reader.get_mut().tcp().read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}
/// The answer to a request with a long transfer while every transfer slot is taken.
fn too_many_transfers() -> Response {
    plain_error(503, "too many transfers in progress, retry shortly").header("Retry-After", "1")
}

/// A JSON error from the connection layer itself (a bad head, a handler that panicked).
fn plain_error(status: u16, message: &str) -> Response {
    response::error(status, "UNSUPPORTED", message)
}
