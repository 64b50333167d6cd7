//! A [`Response`] onto the wire: the one response writer (head with `Content-Length` whenever
//! the length is known, else chunked; HEAD gets only the head; small files inline, large ones
//! by `send_file`, which may leave the rest to the poller) and the one error body, the OCI
//! distribution spec's `{"errors": [{"code", "message", "detail"}]}`, used by the registry's
//! errors, the connection loop and the poller's own 408/503 answers.

use std::fmt::Write as _;
use std::io::{self, Read, Write};

use super::sending::Rest;
use super::transport::Transport;
use super::{clean_reason, reason_phrase, Body, Response};

/// Files up to this size (manifests, configs) go out in one write with the head: a `read` and
/// one `sendto` (one TCP segment) instead of `lseek`, `sendto` and `sendfile` (issue 9).
const INLINE_FILE_BYTES: u64 = 16 * 1024;

/// What a streamed body of known length is sent in. `io::copy`'s 8 KiB made a 256 MiB
/// pull-through miss 32,768 sends, each a loopback segment that wakes the client, plus as many
/// reads of the growing file (and ureq hands an S3 GET over 8 KiB at a time too).
const STREAM_PIECE: usize = 256 * 1024;

/// Sends `len` bytes of `reader` in pieces of up to [`STREAM_PIECE`], each filled by as many
/// reads as it takes; fewer than `len` when the reader ends early.
fn copy_in_pieces(reader: &mut dyn Read, len: u64, out: &mut impl Write) -> io::Result<u64> {
    let mut piece = vec![0u8; STREAM_PIECE.min(usize::try_from(len).unwrap_or(STREAM_PIECE))];
    let mut sent = 0;
    while sent < len {
        let want = (len - sent).min(piece.len() as u64) as usize;
        let mut filled = 0;
        while filled < want {
            match reader.read(&mut piece[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        out.write_all(&piece[..filled])?;
        sent += filled as u64;
        if filled < want {
            break;
        }
    }
    Ok(sent)
}

/// The error document of every error answer (distribution spec, "Error codes"); `detail` only
/// when there is one.
pub fn error_body(code: &str, message: &str, detail: Option<serde_json::Value>) -> serde_json::Value {
    let mut entry = serde_json::json!({"code": code, "message": message});
    if let Some(detail) = detail {
        entry["detail"] = detail;
    }
    serde_json::json!({ "errors": [entry] })
}

/// A JSON error response with [`error_body`].
pub fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, &error_body(code, message, None))
}

/// A whole error response that closes the connection, as bytes: for the answers the poller
/// and the accept thread give themselves (408, 503) in one non-blocking write, without a
/// handler. The same head and body [`write_response`] would send.
pub fn closing_error_bytes(status: u16, code: &str, message: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let body = serde_json::to_vec(&error_body(code, message, None)).unwrap_or_default();
    let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    headers.extend(extra_headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())));
    let mut out = head(status, None, &headers, Some(body.len() as u64), "GET", false).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// True when sending `response` may take more than one write into the socket buffer, so a
/// client that reads slowly holds the worker (a file beyond the inline size, any stream).
pub(super) fn is_long(method: &str, response: &Response) -> bool {
    method != "HEAD"
        && match &response.body {
            Body::Empty | Body::Bytes(_) => false,
            Body::File { len, .. } => *len > INLINE_FILE_BYTES,
            Body::Reader { .. } | Body::Growing { .. } => true,
        }
}

/// True for the statuses that never carry a body (RFC 9110 §6.4.1).
fn has_no_body(status: u16) -> bool {
    status == 204 || status == 304 || (100..200).contains(&status)
}

/// The status line and headers, ending in the blank line. `body_len` `None`: sent chunked.
fn head(
    status: u16,
    reason: Option<String>,
    headers: &[(String, String)],
    body_len: Option<u64>,
    method: &str,
    keep_alive: bool,
) -> String {
    let reason = match reason {
        Some(r) => std::borrow::Cow::Owned(clean_reason(&r)),
        None => std::borrow::Cow::Borrowed(reason_phrase(status)),
    };
    // One allocation for the whole head in the common case (issue 9: it grew by reallocs).
    let mut head = String::with_capacity(512);
    let _ = write!(head, "HTTP/1.1 {status} {reason}\r\n");
    let has_length_header = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    for (name, value) in headers {
        // Header values never carry CR/LF: they come from our own code, but make sure.
        if value.contains(['\r', '\n']) {
            continue;
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if !has_length_header && !has_no_body(status) {
        match body_len {
            Some(n) => {
                let _ = write!(head, "Content-Length: {n}\r\n");
            }
            None if method != "HEAD" => head.push_str("Transfer-Encoding: chunked\r\n"),
            None => {}
        }
    }
    head.push_str(if keep_alive { "Connection: keep-alive\r\n" } else { "Connection: close\r\n" });
    head.push_str("\r\n");
    head
}

/// A response written, or begun: the body bytes sent, and what is left when the client
/// stopped reading a file body (`sending.rs`).
pub(super) struct Written {
    pub(super) bytes: u64,
    pub(super) stalled: Option<Rest>,
}

/// Writes the response; for HEAD only the head, with the body's length.
pub(super) fn write_response<T: Transport>(
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
    let Response { status, headers, body, reason } = response;
    let no_body_status = has_no_body(status);
    let chunked = body.known_len().is_none() && method != "HEAD" && !no_body_status;
    let mut head = head(status, reason, &headers, body.known_len(), method, keep_alive);
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
            let sent = copy_in_pieces(&mut reader, len, stream)?;
            if sent != len {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream shorter than announced"));
            }
            Ok(Written { bytes: sent, stalled: None })
        }
        Body::Growing { mut source, len } => {
            stream.write_all(head.as_bytes())?;
            let mut sent = 0;
            while sent < len {
                let end = source.sendable_end(sent)?.min(len);
                if end == sent {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream shorter than announced"));
                }
                stream.send_range(source.file(), sent, end - sent)?;
                sent = end;
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

    /// Hands out at most 8 KiB a read, as ureq's reader and a growing file's follower do.
    struct Trickle(io::Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(8 * 1024);
            self.0.read(&mut buf[..n])
        }
    }

    /// Counts the writes it is given.
    #[derive(Default)]
    struct Writes(Vec<usize>);
    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_goes_out_in_big_pieces_whatever_its_reads() {
        let body: Vec<u8> = (0..600 * 1024).map(|i| i as u8).collect();
        let mut out = Writes::default();
        let sent = copy_in_pieces(&mut Trickle(io::Cursor::new(body.clone())), body.len() as u64, &mut out).unwrap();
        assert_eq!(sent, body.len() as u64);
        assert_eq!(out.0, [STREAM_PIECE, STREAM_PIECE, 600 * 1024 - 2 * STREAM_PIECE]);
        // A reader that ends early is sent as far as it goes, and the caller sees the shortfall.
        let mut out = Writes::default();
        assert_eq!(copy_in_pieces(&mut Trickle(io::Cursor::new(vec![7; 100])), 1000, &mut out).unwrap(), 100);
        assert_eq!(out.0, [100]);
    }

    #[test]
    fn closing_error_is_a_whole_json_response() {
        let bytes = closing_error_bytes(503, "TOOMANYREQUESTS", "server busy, retry shortly", &[("Retry-After", "1")]);
        let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"server busy, retry shortly"}]}"#;
        let expected = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }

    #[test]
    fn error_body_carries_detail_only_when_given() {
        assert_eq!(error_body("X", "m", None), serde_json::json!({"errors": [{"code": "X", "message": "m"}]}));
        let with = error_body("X", "m", Some(serde_json::json!({"a": 1})));
        assert_eq!(with["errors"][0]["detail"]["a"], 1);
    }

    #[test]
    fn head_frames_by_length_chunks_or_nothing() {
        let h = |status, len, method| head(status, None, &[], len, method, true);
        assert!(h(200, Some(5), "GET").contains("Content-Length: 5\r\n"));
        assert!(h(200, None, "GET").contains("Transfer-Encoding: chunked\r\n"));
        assert!(!h(200, None, "HEAD").contains("Transfer-Encoding"));
        assert!(!h(204, Some(0), "GET").contains("Content-Length"));
        assert!(h(200, Some(0), "GET").ends_with("Connection: keep-alive\r\n\r\n"));
        let reason = head(500, Some("bad\r\nX: y".into()), &[], Some(0), "GET", false);
        assert!(reason.starts_with("HTTP/1.1 500 bad??X: y\r\n"), "{reason:?}");
    }
}
