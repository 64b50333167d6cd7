//! glci's own HTTP request and response types. Handlers see only these, never the socket or
//! TLS types, so the connection layer (`conn.rs`) can change without touching the registry.
//! Also the few pure helpers the connection layer's parts share (`head_complete`, the reason
//! phrases); `response.rs` writes responses and holds the one error body.

pub mod conn;
mod framing;
pub mod handshake;
pub mod idle;
pub mod listener;
pub mod pool;
pub mod response;
pub mod sending;
pub mod slots;
pub mod transport;

use std::fs::File;
use std::io::{self, Read};

pub use listener::{bind, Server, ServerOptions};

/// Answers one request. Implemented by the registry; called from the worker pool.
pub trait Handler: Send + Sync {
    fn handle(&self, request: &mut Request<'_>) -> Response;
}

/// One parsed request. The body is a stream (length-delimited or chunked), never buffered here.
pub struct Request<'a> {
    pub method: String,
    /// The path without the query, still percent-encoded.
    pub path: String,
    /// The raw query string (without `?`), possibly empty.
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// `http` or `https`: what the client connected with, for absolute URLs in challenges.
    pub scheme: &'static str,
    pub body: &'a mut dyn Read,
    /// The declared body length, when the client sent `Content-Length`.
    pub content_length: Option<u64>,
    /// True when the body is `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Request<'_> {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// True when the request carries a body (declared length > 0 or chunked).
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.unwrap_or(0) > 0
    }

    /// One query parameter, percent-decoded. The first occurrence wins.
    pub fn query_param(&self, key: &str) -> Option<String> {
        query_pairs(&self.query).find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every value of a repeated query parameter, percent-decoded.
    pub fn query_params(&self, key: &str) -> Vec<String> {
        query_pairs(&self.query).filter(|(k, _)| k == key).map(|(_, v)| v).collect()
    }
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true), percent_decode(v, true))
    })
}

/// Decodes `%XX` escapes (and `+` as space in query strings). Invalid escapes stay as they
/// are; bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(input: &str, plus_as_space: bool) -> String {
    let input: std::borrow::Cow<'_, str> =
        if plus_as_space && input.contains('+') { input.replace('+', " ").into() } else { input.into() };
    percent_encoding::percent_decode_str(&input).decode_utf8_lossy().into_owned()
}

/// What a query value keeps as it is: RFC 3986's unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a query value (everything but unreserved characters).
pub fn percent_encode(input: &str) -> String {
    percent_encoding::utf8_percent_encode(input, QUERY_VALUE).to_string()
}

/// A response body. `File` and `Reader` are streamed with `io::copy`; nothing large is held.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of `file` starting at its current position.
    File {
        file: File,
        len: u64,
    },
    /// A stream of known or unknown length (unknown is sent chunked).
    Reader {
        reader: Box<dyn Read + Send>,
        len: Option<u64>,
    },
    /// `len` bytes of a file another thread is still writing, sent range by range as they
    /// become sendable.
    Growing {
        source: Box<dyn Growing>,
        len: u64,
    },
}

/// A file that another thread is still writing (a pull-through miss). It goes out by
/// sendfile(2) from the file itself on plain TCP, as each range is written: a copy through user
/// space (`Body::Reader`) cost a 256 MiB miss two more copies of every byte, on the CPUs that
/// also receive, write and hash it (issue 18). Its `Read` reads it from the start.
pub trait Growing: Read + Send {
    /// The file, read with positional reads (or sendfile(2)) only.
    fn file(&self) -> &File;
    /// Waits until bytes from `from` on may be sent and returns where they end; `from` itself
    /// when there are no more. Fails when the writer failed (a broken transfer, never wrong
    /// bytes).
    fn sendable_end(&mut self, from: u64) -> io::Result<u64>;
}

impl Body {
    /// The length when known up front; `None` means the body is sent chunked.
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File { len, .. } => Some(*len),
            Body::Reader { len, .. } => *len,
            Body::Growing { len, .. } => Some(*len),
        }
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// A reason phrase instead of the standard one. Docker and skopeo print only the status
    /// line of a 5xx, so this is how a server-side explanation reaches their users.
    pub reason: Option<String>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Body::Empty, reason: None }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        Response::new(status).header("Content-Type", "application/json").body(Body::Bytes(bytes))
    }

    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A reason phrase safe for a status line: printable ASCII only, bounded.
pub fn clean_reason(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(200).collect()
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// True once `bytes` hold a whole request head: blank lines before the request line are
/// skipped (RFC 9112 §2.2), then the head ends at an empty line.
pub fn head_complete(bytes: &[u8]) -> bool {
    let start = bytes.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(bytes.len());
    let rest = &bytes[start..];
    rest.windows(2).any(|w| w == b"\n\n") || rest.windows(3).any(|w| w == b"\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_completion() {
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\n\n"));
        assert!(head_complete(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
        assert!(!head_complete(b"\r\n\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r"));
        assert!(!head_complete(b""));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%2bc", true), "a/b+c");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("bad%zz%", true), "bad%zz%");
        assert_eq!(percent_decode("%4", true), "%4");
        assert_eq!(percent_encode("application/vnd+x y"), "application%2Fvnd%2Bx%20y");
    }
}
