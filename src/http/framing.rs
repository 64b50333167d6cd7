//! Reading one request off the connection: the head (whole, under a deadline, parsed with
//! `httparse`), how its body is delimited (RFC 9112 §6.3, refusing what could smuggle), and the
//! body itself as a stream (length-delimited or chunked, with a minimum rate). Nothing here
//! writes to the socket.

use std::io::{self, BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use super::slots::Slot;
use super::transport::Transport;

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A request body must average at least this many bytes a second once `BODY_RATE_GRACE` has
/// passed, or it fails: a client dripping a byte a second would otherwise hold a worker for
/// as long as it likes.
const MIN_BODY_BYTES_PER_SEC: u64 = 1024;
const BODY_RATE_GRACE: Duration = Duration::from_secs(10);

/// A parsed request head.
pub(super) struct Head {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) keep_alive: bool,
    pub(super) expects_continue: bool,
}

pub(super) enum HeadError {
    Io,
    Bad(u16, &'static str),
}

/// Reads one request head, which must arrive whole by `deadline` (a client sending a byte a
/// second gets a 408, not a worker for as long as it likes). `Ok(None)`: the client closed.
pub(super) fn read_head<T: Transport>(reader: &mut BufReader<T>, deadline: Instant) -> Result<Option<Head>, HeadError> {
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
pub(super) enum Framing {
    Length(u64),
    Chunked,
}

/// How the body is delimited (RFC 9112 §6.3). Conflicting or malformed lengths are rejected
/// rather than guessed at, because guessing is how request smuggling starts.
pub(super) fn body_framing(headers: &[(String, String)]) -> Result<Framing, &'static str> {
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
pub(super) struct BodyReader<'a, R: BufRead> {
    inner: &'a mut R,
    framing: Framing,
    /// Bytes left in the current chunk (or in the whole body for `Length`).
    remaining: u64,
    state: ChunkState,
    pub(super) consumed: u64,
    /// When the first body byte was asked for: the minimum rate is measured from here.
    started: Option<Instant>,
    /// The body-reader slot this body holds until its last byte is read (`slots.rs`).
    pub(super) slot: Option<Slot>,
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
    pub(super) fn new(inner: &'a mut R, framing: Framing) -> Self {
        let (remaining, state) = match framing {
            Framing::Length(n) => (n, if n == 0 { ChunkState::Done } else { ChunkState::Data }),
            Framing::Chunked => (0, ChunkState::Size),
        };
        BodyReader { inner, framing, remaining, state, consumed: 0, started: None, slot: None }
    }

    /// Drains what the handler left unread, up to `limit` bytes. True when the body ended,
    /// so the connection can carry another request.
    pub(super) fn finish(&mut self, limit: u64) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::conn::MAX_DRAIN_BYTES;

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
