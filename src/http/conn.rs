//! One client connection while it has a request in progress, on a worker thread: the request
//! head parsed with `httparse` (under a deadline), the body streamed (length-delimited or
//! chunked, with a minimum rate), the response written with `Content-Length` whenever it is
//! known; then the connection goes back to the idle poller (`idle.rs`) to wait for its next
//! request, or closes.
//!
//! Why not tiny_http (the crate the project started from): in 0.12 dropping a request whose
//! body was not read to the end allocates the whole unread length at once, so one request
//! claiming a 10 TB `Content-Length` aborts the server; a malformed `Content-Length` is taken as
//! no body; bodies of 32 KiB and more go out chunked, HEAD included; TLS is fixed per server,
//! so one port cannot serve both HTTP and HTTPS; and each connection holds a thread while idle.
//! This module and `idle.rs` own those decisions.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::idle::{Conn, HEAD_TIMEOUT};
use super::sending::{Rest, Sending};
use super::slots::{Slot, Transfer, Transfers};
use super::transport::{Plain, Transport};
use super::{clean_reason, reason_phrase, Body, Handler, Request, Response};

/// Files up to this size (manifests, configs) go out in one write with the head: a `read` and
/// one `sendto` (one TCP segment) instead of `lseek`, `sendto` and `sendfile` (issue 9).
const INLINE_FILE_BYTES: u64 = 16 * 1024;

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// How much of an unread body is drained to keep a connection alive; beyond it we close.
const MAX_DRAIN_BYTES: u64 = 256 * 1024;
/// How long a closing connection keeps reading unwanted input (see `linger`).
const LINGER: Duration = Duration::from_secs(2);
/// A request body must average at least this many bytes a second once `BODY_RATE_GRACE` has
/// passed, or it fails: a client dripping a byte a second would otherwise hold a worker for
/// as long as it likes.
const MIN_BODY_BYTES_PER_SEC: u64 = 1024;
const BODY_RATE_GRACE: Duration = Duration::from_secs(10);
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

/// One line per request for the log, produced by the connection loop.
pub struct Exchange<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub elapsed: Duration,
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

struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    keep_alive: bool,
    expects_continue: bool,
}

enum HeadError {
    Io,
    Bad(u16, &'static str),
}

/// Reads one request head, which must arrive whole by `deadline` (a client sending a byte a
/// second gets a 408, not a worker for as long as it likes). `Ok(None)`: the client closed.
fn read_head<T: Transport>(reader: &mut BufReader<T>, deadline: Instant) -> Result<Option<Head>, HeadError> {
    let mut raw = Vec::with_capacity(1024);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Bad(408, "request head not received in time"));
        }
        if reader.buffer().is_empty() && !reader.get_mut().has_buffered() {
            // Only a read that may block needs the deadline (a head the poller gathered is
            // already in memory: no system call for it).
            let _ = reader.get_ref().tcp().set_read_timeout(Some(left));
        }
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => return Err(HeadError::Io),
        };
        if available.is_empty() {
            return if raw.is_empty() { Ok(None) } else { Err(HeadError::Io) };
        }
        let (taken, ended) = take_head_bytes(&mut raw, available);
        reader.consume(taken);
        if raw.len() > MAX_HEAD_BYTES {
            return Err(HeadError::Bad(431, "request head too large"));
        }
        if ended {
            return parse_head(&raw).map(Some);
        }
    }
}

/// Moves bytes from `available` into `raw` up to the end of the head (at most one byte past
/// the limit). Blank lines before the request line are dropped (RFC 9112 §2.2). Returns how
/// many bytes were taken and whether the head is complete.
fn take_head_bytes(raw: &mut Vec<u8>, available: &[u8]) -> (usize, bool) {
    for (i, &byte) in available.iter().enumerate() {
        if raw.is_empty() && (byte == b'\r' || byte == b'\n') {
            continue;
        }
        raw.push(byte);
        if byte == b'\n' && (raw.ends_with(b"\n\n") || raw.ends_with(b"\n\r\n")) {
            return (i + 1, true);
        }
        if raw.len() > MAX_HEAD_BYTES {
            return (i + 1, false);
        }
    }
    (available.len(), false)
}

fn parse_head(raw: &[u8]) -> Result<Head, HeadError> {
    let mut header_buf = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut header_buf);
    match parsed.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Bad(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::Bad(431, "too many headers")),
        Err(_) => return Err(HeadError::Bad(400, "malformed request head")),
    }
    let method = parsed.method.unwrap_or("GET").to_string();
    let target = parsed.path.unwrap_or("/");
    let version = parsed.version.unwrap_or(1);
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HeadError::Bad(400, "header value is not UTF-8"))?;
        headers.push((h.name.to_string(), value.trim().to_string()));
    }
    let connection = header_tokens(&headers, "connection");
    let keep_alive = if version == 0 {
        connection.iter().any(|t| t == "keep-alive")
    } else {
        !connection.iter().any(|t| t == "close")
    };
    let expects_continue = header_tokens(&headers, "expect").iter().any(|t| t == "100-continue");
    // Absolute-form targets (proxies) keep only their path.
    let target = match target.find("://") {
        Some(i) => target[i + 3..].find('/').map(|j| &target[i + 3 + j..]).unwrap_or("/"),
        None => target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Head { method, path: path.to_string(), query: query.to_string(), headers, keep_alive, expects_continue })
}

fn header_tokens(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// How the body is delimited (RFC 9112 §6.3). Conflicting or malformed lengths are rejected
/// rather than guessed at, because guessing is how request smuggling starts.
fn body_framing(headers: &[(String, String)]) -> Result<Framing, &'static str> {
    let encodings = header_tokens(headers, "transfer-encoding");
    let lengths: Vec<&str> =
        headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.as_str()).collect();
    if !encodings.is_empty() {
        if !lengths.is_empty() {
            return Err("both Transfer-Encoding and Content-Length");
        }
        return match encodings.last().map(String::as_str) {
            Some("chunked") if encodings.iter().filter(|e| *e == "chunked").count() == 1 => Ok(Framing::Chunked),
            _ => Err("unsupported Transfer-Encoding"),
        };
    }
    let mut length: Option<u64> = None;
    for value in lengths.iter().flat_map(|v| v.split(',')) {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err("malformed Content-Length");
        }
        let n: u64 = value.parse().map_err(|_| "Content-Length out of range")?;
        if length.is_some_and(|l| l != n) {
            return Err("conflicting Content-Length values");
        }
        length = Some(n);
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// Reads exactly one request body from the connection, whatever its framing.
struct BodyReader<'a, R: BufRead> {
    inner: &'a mut R,
    framing: Framing,
    /// Bytes left in the current chunk (or in the whole body for `Length`).
    remaining: u64,
    state: ChunkState,
    consumed: u64,
    /// When the first body byte was asked for: the minimum rate is measured from here.
    started: Option<Instant>,
    /// The body-reader slot this body holds until its last byte is read (`slots.rs`).
    slot: Option<Slot>,
}

#[derive(PartialEq, Debug)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data,
    Done,
}

impl<'a, R: BufRead> BodyReader<'a, R> {
    fn new(inner: &'a mut R, framing: Framing) -> Self {
        let (remaining, state) = match framing {
            Framing::Length(n) => (n, if n == 0 { ChunkState::Done } else { ChunkState::Data }),
            Framing::Chunked => (0, ChunkState::Size),
        };
        BodyReader { inner, framing, remaining, state, consumed: 0, started: None, slot: None }
    }

    /// Drains what the handler left unread, up to `limit` bytes. True when the body ended,
    /// so the connection can carry another request.
    fn finish(&mut self, limit: u64) -> bool {
        if self.state == ChunkState::Done {
            return true;
        }
        // Only a known, small remainder is worth waiting for.
        if self.framing == Framing::Chunked || self.remaining > limit {
            return false;
        }
        let mut sink = io::sink();
        match io::copy(&mut self.by_ref().take(limit), &mut sink) {
            Ok(_) => self.state == ChunkState::Done,
            Err(_) => false,
        }
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.inner.by_ref().take(4096).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunk framing"));
        }
        Ok(String::from_utf8_lossy(&line).trim().to_string())
    }
}

impl<R: BufRead> Read for BodyReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(0),
                ChunkState::Size => {
                    let line = self.read_line()?;
                    let size_text = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size_text, 16)
                        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                    if size == 0 {
                        // Trailer fields, then the final empty line.
                        loop {
                            if self.read_line()?.is_empty() {
                                break;
                            }
                        }
                        self.state = ChunkState::Done;
                        self.slot = None;
                        return Ok(0);
                    }
                    self.remaining = size;
                    self.state = ChunkState::Data;
                }
                ChunkState::Data => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let started = *self.started.get_or_insert_with(Instant::now);
                    if too_slow(self.consumed, started.elapsed()) {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "request body arrives too slowly"));
                    }
                    let want = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request body ended early"));
                    }
                    self.remaining -= n as u64;
                    self.consumed += n as u64;
                    if self.remaining == 0 {
                        match self.framing {
                            Framing::Length(_) => {
                                self.state = ChunkState::Done;
                                self.slot = None;
                            }
                            Framing::Chunked => {
                                let end = self.read_line()?;
                                if !end.is_empty() {
                                    return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunk end"));
                                }
                                self.state = ChunkState::Size;
                            }
                        }
                    }
                    return Ok(n);
                }
            }
        }
    }
}

/// True when a body that has delivered `consumed` bytes in `elapsed` is below the minimum rate.
fn too_slow(consumed: u64, elapsed: Duration) -> bool {
    elapsed > BODY_RATE_GRACE && u128::from(consumed) * 1000 < u128::from(MIN_BODY_BYTES_PER_SEC) * elapsed.as_millis()
}

/// The answer to a request with a long transfer while every transfer slot is taken.
fn too_many_transfers() -> Response {
    plain_error(503, "too many transfers in progress, retry shortly").header("Retry-After", "1")
}

/// True when sending `response` may take more than one write into the socket buffer, so a
/// client that reads slowly holds the worker (a file beyond the inline size, any stream).
fn is_long(method: &str, response: &Response) -> bool {
    method != "HEAD"
        && match &response.body {
            Body::Empty | Body::Bytes(_) => false,
            Body::File { len, .. } => *len > INLINE_FILE_BYTES,
            Body::Reader { .. } => true,
        }
}

fn plain_error(status: u16, message: &str) -> Response {
    Response::json(status, &serde_json::json!({"errors": [{"code": "UNSUPPORTED", "message": message}]}))
}

/// A response written, or begun: the body bytes sent, and what is left when the client
/// stopped reading a file body (`sending.rs`).
struct Written {
    bytes: u64,
    stalled: Option<Rest>,
}

/// Writes the response; for HEAD only the head, with the body's length.
fn write_response<T: Transport>(
    stream: &mut T,
    method: &str,
    response: Response,
    keep_alive: bool,
) -> io::Result<Written> {
    let written = write_response_unflushed(stream, method, response, keep_alive)?;
    stream.flush()?;
    Ok(written)
}

fn write_response_unflushed<T: Transport>(
    stream: &mut T,
    method: &str,
    response: Response,
    keep_alive: bool,
) -> io::Result<Written> {
    let sent = |bytes: u64| Ok(Written { bytes, stalled: None });
    use std::fmt::Write as _;
    let Response { status, headers, body, reason } = response;
    let reason = match reason {
        Some(r) => std::borrow::Cow::Owned(clean_reason(&r)),
        None => std::borrow::Cow::Borrowed(reason_phrase(status)),
    };
    // One allocation for the whole head in the common case (issue 9: it grew by reallocs).
    let mut head = String::with_capacity(512);
    let _ = write!(head, "HTTP/1.1 {status} {reason}\r\n");
    let has_length_header = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    for (name, value) in &headers {
        // Header values never carry CR/LF: they come from our own code, but make sure.
        if value.contains(['\r', '\n']) {
            continue;
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    let no_body_status = status == 204 || status == 304 || (100..200).contains(&status);
    let chunked = body.known_len().is_none() && method != "HEAD" && !no_body_status;
    if !has_length_header && !no_body_status {
        match body.known_len() {
            Some(n) => {
                let _ = write!(head, "Content-Length: {n}\r\n");
            }
            None if method != "HEAD" => head.push_str("Transfer-Encoding: chunked\r\n"),
            None => {}
        }
    }
    head.push_str(if keep_alive { "Connection: keep-alive\r\n" } else { "Connection: close\r\n" });
    head.push_str("\r\n");
    if method == "HEAD" || no_body_status {
        stream.write_all(head.as_bytes())?;
        return sent(0);
    }
    match body {
        Body::Empty => {
            stream.write_all(head.as_bytes())?;
            sent(0)
        }
        Body::Bytes(bytes) => {
            head.reserve(bytes.len());
            let mut out = head.into_bytes();
            out.extend_from_slice(&bytes);
            stream.write_all(&out)?;
            sent(bytes.len() as u64)
        }
        Body::File { file, len } if len <= INLINE_FILE_BYTES => {
            // From the file's current position, like `send_file` (a range may have seeked it).
            let mut out = head.into_bytes();
            let start = out.len();
            out.resize(start + len as usize, 0);
            (&file).read_exact(&mut out[start..])?;
            stream.write_all(&out)?;
            sent(len)
        }
        Body::File { file, len } => {
            stream.write_all(head.as_bytes())?;
            let stalled = stream.send_file(file, len)?;
            // Bytes the socket took on this worker; the poller sends the rest.
            Ok(Written { bytes: len - stalled.as_ref().map_or(0, Rest::left), stalled })
        }
        Body::Reader { mut reader, len: Some(len) } => {
            stream.write_all(head.as_bytes())?;
            let sent = io::copy(&mut reader.by_ref().take(len), stream)?;
            if sent != len {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream shorter than announced"));
            }
            Ok(Written { bytes: sent, stalled: None })
        }
        Body::Reader { mut reader, len: None } => {
            debug_assert!(chunked);
            stream.write_all(head.as_bytes())?;
            let mut writer = ChunkedWriter { inner: io::BufWriter::with_capacity(256 * 1024, &mut *stream), sent: 0 };
            io::copy(&mut reader, &mut writer)?;
            writer.inner.write_all(b"0\r\n\r\n")?;
            writer.inner.flush()?;
            Ok(Written { bytes: writer.sent, stalled: None })
        }
    }
}

struct ChunkedWriter<W: Write> {
    inner: W,
    sent: u64,
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.inner, "{:x}\r\n", buf.len())?;
        self.inner.write_all(buf)?;
        self.inner.write_all(b"\r\n")?;
        self.sent += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn framing_rules() {
        assert_eq!(body_framing(&h(&[])), Ok(Framing::Length(0)));
        assert_eq!(body_framing(&h(&[("Content-Length", "12")])), Ok(Framing::Length(12)));
        assert_eq!(body_framing(&h(&[("Content-Length", "12, 12")])), Ok(Framing::Length(12)));
        assert!(body_framing(&h(&[("Content-Length", "12"), ("Content-Length", "13")])).is_err());
        assert!(body_framing(&h(&[("Content-Length", "-1")])).is_err());
        assert!(body_framing(&h(&[("Content-Length", "abc")])).is_err());
        assert!(body_framing(&h(&[("Content-Length", "99999999999999999999999")])).is_err());
        assert_eq!(body_framing(&h(&[("Transfer-Encoding", "chunked")])), Ok(Framing::Chunked));
        assert!(body_framing(&h(&[("Transfer-Encoding", "chunked"), ("Content-Length", "3")])).is_err());
        assert!(body_framing(&h(&[("Transfer-Encoding", "gzip")])).is_err());
    }

    #[test]
    fn chunked_body_decodes() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut input = io::Cursor::new(&raw[..]);
        let mut body = BodyReader::new(&mut input, Framing::Chunked);
        let mut out = String::new();
        body.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
        assert!(body.finish(0));
        let mut rest = String::new();
        input.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let mut input = io::Cursor::new(&b"abc"[..]);
        let mut body = BodyReader::new(&mut input, Framing::Length(10));
        let mut out = Vec::new();
        assert!(body.read_to_end(&mut out).is_err());
        let mut input = io::Cursor::new(&b"zz\r\nabc"[..]);
        let mut body = BodyReader::new(&mut input, Framing::Chunked);
        assert!(body.read_to_end(&mut out).is_err());
    }

    #[test]
    fn huge_declared_length_is_not_allocated() {
        // The tiny_http hazard: an unread 10 TB body must not be buffered on drop.
        let mut input = io::Cursor::new(&b"abc"[..]);
        let mut body = BodyReader::new(&mut input, Framing::Length(10_000_000_000_000));
        assert!(!body.finish(MAX_DRAIN_BYTES));
    }

    #[test]
    fn body_rate_floor() {
        assert!(!too_slow(0, Duration::from_secs(5)));
        assert!(!too_slow(20 * 1024, Duration::from_secs(20)));
        assert!(too_slow(19 * 1024, Duration::from_secs(20)));
        assert!(too_slow(15, Duration::from_secs(15)));
    }

    #[test]
    fn head_bytes_stop_at_the_blank_line() {
        let mut raw = Vec::new();
        let (taken, done) = take_head_bytes(&mut raw, b"\r\nGET / HTTP/1.1\r\nA: b\r\n\r\nBODY");
        assert!(done);
        assert_eq!(raw, b"GET / HTTP/1.1\r\nA: b\r\n\r\n");
        assert_eq!(taken, 26);
        let mut raw = Vec::new();
        assert_eq!(take_head_bytes(&mut raw, b"GET / HTTP/1.1\r\n"), (16, false));
        assert_eq!(take_head_bytes(&mut raw, b"\n"), (1, true));
    }

    #[test]
    fn head_parsing() {
        let head =
            parse_head(b"GET /v2/a/tags/list?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok().unwrap();
        assert_eq!(head.path, "/v2/a/tags/list");
        assert_eq!(head.query, "n=1");
        assert!(!head.keep_alive);
        let head = parse_head(b"GET http://h:1/v2/ HTTP/1.0\r\n\r\n").ok().unwrap();
        assert_eq!(head.path, "/v2/");
        assert!(!head.keep_alive);
        assert!(matches!(parse_head(b"GARBAGE\r\n\r\n"), Err(HeadError::Bad(400, _))));
    }
}
