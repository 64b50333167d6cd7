//! A raw HTTP/1.1 client over any `Read + Write` stream (a `TcpStream`, or a TLS stream in
//! `auth_tls.rs`), so tests see the wire format as it is: request heads written byte for byte,
//! responses framed by `Content-Length`, chunked encoding or (on a closing connection) EOF,
//! `1xx` interim responses skipped, no body after a `HEAD`, `204` or `304`.
//!
//! - [`Request`]: a builder; [`Request::send`] opens a connection per request.
//! - [`Client`]: one connection for several requests (keep-alive), raw bytes
//!   ([`Client::send_raw`]) for malformed requests, its `reader` for line-level checks.
//! - [`Response`]: status, headers, body and the assertions tests make on them.
//! - [`connect`], [`read_head`] and [`read_response`] for tests that stream bodies themselves.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// Socket read/write timeout unless a request says otherwise: a stuck server fails the test
/// instead of hanging it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest head line read (status line or header).
const MAX_LINE: u64 = 64 * 1024;

/// Connects with read and write timeouts and `TCP_NODELAY`.
pub fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Whether the request asks the server to close the connection after the response. A closing
/// connection may end a body without length at EOF; on a kept-alive one such a body is an
/// error (every body must say where it ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    KeepAlive,
    Close,
}

/// What [`Response::expect`] and [`Response::expect_error`] check beyond the status, chosen
/// per test file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checks {
    /// `Docker-Distribution-API-Version: registry/2.0` on the response.
    pub api_version: bool,
    /// An error body's first entry has a string `message` beside its `code`.
    pub error_message: bool,
}

/// A request to `addr`. `Host` is `addr`; `Content-Length` is added (`0` without a body)
/// unless a `Content-Length` or `Transfer-Encoding` header is given.
#[derive(Clone, Debug)]
pub struct Request {
    pub addr: String,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub connection: Connection,
    pub timeout: Duration,
    pub checks: Checks,
}

impl Request {
    pub fn new(addr: &str, method: &str, target: &str) -> Request {
        Request {
            addr: addr.to_string(),
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            connection: Connection::KeepAlive,
            timeout: DEFAULT_TIMEOUT,
            checks: Checks::default(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds every `(name, value)` of `headers`.
    pub fn headers(mut self, headers: &[(&str, &str)]) -> Request {
        self.headers.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sends `Connection: close`.
    pub fn close(mut self) -> Request {
        self.connection = Connection::Close;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    pub fn checks(mut self, checks: Checks) -> Request {
        self.checks = checks;
        self
    }

    /// The request head, up to and including the blank line.
    pub fn head(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", self.method, self.target, self.addr);
        if self.connection == Connection::Close {
            head.push_str("Connection: close\r\n");
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let framed = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding"));
        if !framed {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Sends the request on a connection of its own; `Err` when no complete response came.
    pub fn try_send(&self) -> io::Result<Response> {
        Client::new(connect(&self.addr, self.timeout)?).try_send(self)
    }

    /// [`Request::try_send`], panicking on an I/O error.
    pub fn send(&self) -> Response {
        self.try_send().unwrap_or_else(|e| panic!("{} {} on {}: {e}", self.method, self.target, self.addr))
    }
}

/// One connection, for as many requests as the server keeps it open.
pub struct Client<S: Read + Write = TcpStream> {
    pub reader: BufReader<S>,
    /// Applied to the responses of [`Client::read_response`] (requests carry their own).
    pub checks: Checks,
}

impl Client<TcpStream> {
    /// Connects to `addr` with [`DEFAULT_TIMEOUT`].
    pub fn connect(addr: &str) -> Client<TcpStream> {
        Client::new(connect(addr, DEFAULT_TIMEOUT).unwrap_or_else(|e| panic!("connect to {addr}: {e}")))
    }
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client { reader: BufReader::new(stream), checks: Checks::default() }
    }

    pub fn with_checks(mut self, checks: Checks) -> Client<S> {
        self.checks = checks;
        self
    }

    /// Writes `bytes` as they are (a malformed request, a body in pieces).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).unwrap_or_else(|e| panic!("write to the server: {e}"));
    }

    fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// One line of the response, without its line end.
    pub fn read_line(&mut self) -> String {
        read_line(&mut self.reader).unwrap_or_else(|e| panic!("read from the server: {e}"))
    }

    /// Reads one response on this kept-alive connection; `head_request` means no body follows
    /// whatever the headers say.
    pub fn read_response(&mut self, head_request: bool) -> Response {
        let method = if head_request { "HEAD" } else { "GET" };
        read_response(&mut self.reader, method, Connection::KeepAlive)
            .map(|r| r.with_checks(self.checks))
            .unwrap_or_else(|e| panic!("read a response: {e}"))
    }

    pub fn try_send(&mut self, request: &Request) -> io::Result<Response> {
        let mut bytes = request.head();
        bytes.extend_from_slice(&request.body);
        self.try_send_raw(&bytes)?;
        Ok(read_response(&mut self.reader, &request.method, request.connection)?.with_checks(request.checks))
    }

    /// Sends `request` on this connection and reads its response, panicking on an I/O error.
    pub fn send(&mut self, request: &Request) -> Response {
        self.try_send(request).unwrap_or_else(|e| panic!("{} {}: {e}", request.method, request.target))
    }
}

/// A response: status, headers in the order received, and the body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub checks: Checks,
}

impl Response {
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Response {
        Response { status, headers, body, checks: Checks::default() }
    }

    pub fn with_checks(mut self, checks: Checks) -> Response {
        self.checks = checks;
        self
    }

    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn location(&self) -> String {
        self.header("Location").unwrap_or_else(|| panic!("no Location in {self:?}")).to_string()
    }

    /// The `code` of the first entry of a spec error body (`""` when there is none).
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_string()
    }

    /// The first entry of a spec error body: (code, message); panics unless both are strings.
    pub fn error(&self) -> (String, String) {
        let doc: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?} {}", self.headers, self.text()));
        let entry = &doc["errors"][0];
        let field = |k: &str| entry[k].as_str().unwrap_or_else(|| panic!("no {k} in {doc}")).to_string();
        (field("code"), field("message"))
    }

    /// Panics, showing the response, unless the status is `status` (and the [`Checks`] hold).
    #[track_caller]
    pub fn expect(self, status: u16) -> Response {
        assert_eq!(self.status, status, "unexpected status; body: {}; headers: {:?}", self.text(), self.headers);
        if self.checks.api_version {
            assert_eq!(self.header("Docker-Distribution-API-Version"), Some("registry/2.0"));
        }
        self
    }

    /// Like [`Response::expect`], naming the request in the message.
    #[track_caller]
    pub fn expect_for(self, status: u16, what: &str) -> Response {
        if self.status != status {
            panic!(
                "{what}: expected {status}, got {}\nheaders: {:?}\nbody: {}",
                self.status,
                self.headers,
                self.text()
            );
        }
        self.expect(status)
    }

    /// `status` with the spec's JSON error body carrying `code` (and the [`Checks`]).
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Response {
        let r = self.expect(status);
        assert_eq!(r.header("Content-Type"), Some("application/json"), "headers: {:?}", r.headers);
        assert_eq!(r.error_code(), code, "body: {}", r.text());
        if r.checks.error_message {
            let doc = r.json();
            assert!(doc["errors"][0]["message"].is_string(), "body: {doc}");
        }
        r
    }
}

/// One head line without its line end; at most 64 KiB, and an error at EOF.
pub fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a response head"));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// Reads a response head, skipping `1xx` interim responses: status and headers.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    loop {
        let status_line = read_line(reader)?;
        let status: u16 =
            status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {status_line:?}"))
            })?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(reader)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        if !(100..200).contains(&status) {
            return Ok((status, headers));
        }
    }
}

/// The `Content-Length` among `headers`, when there is one that parses.
pub fn content_length(headers: &[(String, String)]) -> Option<u64> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok())
}

/// Reads a whole response to `method`: no body after a HEAD, 204 or 304; else the body chunked
/// or by `Content-Length`, and without either to EOF on a closing `connection` (an error on a
/// kept-alive one).
pub fn read_response(reader: &mut impl BufRead, method: &str, connection: Connection) -> io::Result<Response> {
    let (status, headers) = read_head(reader)?;
    let mut body = Vec::new();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if method == "HEAD" || status == 204 || status == 304 {
        // No body.
    } else if chunked {
        loop {
            let size_line = read_line(reader)?;
            let size = u64::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let start = body.len();
            reader.by_ref().take(size).read_to_end(&mut body)?;
            if (body.len() - start) as u64 != size {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunk shorter than its size"));
            }
            read_line(reader)?;
        }
    } else if let Some(len) = content_length(&headers) {
        reader.by_ref().take(len).read_to_end(&mut body)?;
        if body.len() as u64 != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body shorter than Content-Length"));
        }
    } else if connection == Connection::Close {
        reader.read_to_end(&mut body)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{status} response without Content-Length or chunked encoding on a kept-alive connection"),
        ));
    }
    Ok(Response { status, headers, body, checks: Checks::default() })
}

/// `Basic <base64 of user:password>`, encoded here rather than with glci's own encoder, so a
/// test of glci's credentials does not take glci's word for them.
pub fn basic(user: &str, password: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in format!("{user}:{password}").as_bytes().chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() { TABLE[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    format!("Basic {out}")
}
