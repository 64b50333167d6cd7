//! A tiny key=value logger to stderr, one event per line. The only global state besides the
//! shutdown flag: the quiet switch, set once at start (tests and benchmarks silence requests).
//! Never pass secrets, `Authorization` values or header maps here.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

/// One request as the connection loop saw it: what the log's request line records.
pub struct Exchange<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub elapsed: Duration,
}

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn emit(line: &str) {
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Quotes a value when it holds spaces or quotes, and escapes control characters so outside
/// text cannot forge log lines.
fn value(text: &str) -> String {
    let escaped: String = text.chars().flat_map(|c| c.escape_default()).collect();
    if escaped.contains([' ', '"', '=']) || escaped.is_empty() {
        format!("\"{}\"", escaped.replace('"', "\\\""))
    } else {
        escaped
    }
}

pub fn request(e: &Exchange<'_>) {
    emit(&format!(
        "level=info event=request method={} path={} status={} in={} out={} ms={}",
        value(e.method),
        value(e.path),
        e.status,
        e.bytes_in,
        e.bytes_out,
        e.elapsed.as_millis()
    ));
}

pub fn info(event: &str, message: &str) {
    emit(&format!("level=info event={} msg={}", value(event), value(message)));
}

pub fn warn(event: &str, message: &str) {
    emit(&format!("level=warn event={} msg={}", value(event), value(message)));
}

pub fn error(event: &str, message: &str) {
    emit(&format!("level=error event={} msg={}", value(event), value(message)));
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_escaped() {
        assert_eq!(super::value("a b"), "\"a b\"");
        assert_eq!(super::value("x\ny"), "x\\ny");
        assert_eq!(super::value("plain"), "plain");
    }
}
