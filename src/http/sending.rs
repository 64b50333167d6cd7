//! A file response (a blob) on plain TCP whose client stops reading is finished by the idle
//! poller, not by a worker: the worker sends with sendfile(2) while the client keeps up, and
//! once the socket has taken nothing for `PATIENCE` it hands the rest (file, offset, bytes
//! left) to the poller, which sends on writability without blocking. A hundred clients that
//! never read a blob then hold descriptors, not the pool (issue 14). Under TLS the bytes must
//! be encrypted on the way, so a TLS response stays on its worker (bounded by `slots.rs`).

use std::fs::File;
use std::io::{self, Seek};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::time::Duration;

/// How long a worker waits for a client's socket to take more before handing the rest of the
/// response to the poller. A client reading at network speed never waits this long.
const PATIENCE: Duration = Duration::from_millis(250);

/// What is left of a file response.
pub struct Rest {
    file: File,
    offset: libc::off_t,
    left: u64,
}

impl Rest {
    pub fn left(&self) -> u64 {
        self.left
    }
}

/// Sends `len` bytes of `file` from its current position. `Ok(None)`: all sent. `Ok(Some)`:
/// the client took nothing for `PATIENCE`; the socket is left non-blocking for the poller.
pub fn send_file_or_stall(stream: &TcpStream, file: File, len: u64) -> io::Result<Option<Rest>> {
    let offset = (&file).stream_position()? as libc::off_t;
    let mut rest = Rest { file, offset, left: len };
    stream.set_nonblocking(true)?;
    let outcome = loop {
        match send_now(stream, &mut rest) {
            Ok(true) => break Ok(None),
            Ok(false) => match writable_within(stream, PATIENCE) {
                Ok(true) => {}
                Ok(false) => return Ok(Some(rest)),
                Err(e) => break Err(e),
            },
            Err(e) => break Err(e),
        }
    };
    let _ = stream.set_nonblocking(false);
    outcome
}

/// Sends as much of `rest` as the socket takes now (the socket is non-blocking). True once
/// all is sent; the caller then puts the socket back in blocking mode.
pub fn send_now(stream: &TcpStream, rest: &mut Rest) -> io::Result<bool> {
    while rest.left > 0 {
        match sendfile_some(stream, &rest.file, &mut rest.offset, rest.left)? {
            Some(n) => rest.left -= n,
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Sends `len` bytes of `file` from `offset` on a blocking socket (its write timeout bounds a
/// client that stops reading), leaving the file's position alone.
pub fn send_range(stream: &TcpStream, file: &File, offset: u64, len: u64) -> io::Result<()> {
    let mut offset = offset as libc::off_t;
    let mut left = len;
    while left > 0 {
        match sendfile_some(stream, file, &mut offset, left)? {
            Some(n) => left -= n,
            None => return Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")),
        }
    }
    Ok(())
}

/// One sendfile(2) of up to `left` bytes from `offset` (advanced by what was sent), retried
/// when interrupted. `None`: the socket took nothing (non-blocking and full, or a blocking
/// socket's write timeout passed).
fn sendfile_some(stream: &TcpStream, file: &File, offset: &mut libc::off_t, left: u64) -> io::Result<Option<u64>> {
    let count = left.min(1 << 30) as usize;
    loop {
        // SAFETY: both descriptors are open for the duration of the call; `offset` is ours.
        let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), offset, count) };
        if n > 0 {
            return Ok(Some(n as u64));
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than announced"));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Waits up to `wait` for room in the socket's send buffer (or an error on it).
fn writable_within(stream: &TcpStream, wait: Duration) -> io::Result<bool> {
    let mut fd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    loop {
        // SAFETY: `fd` is one valid pollfd for the whole call.
        let n = unsafe { libc::poll(&mut fd, 1, wait.as_millis() as i32) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A client that stops reading gets the rest from `send_now` once it reads again, every
    /// byte in order; one that keeps reading gets it all from the worker's own send.
    #[test]
    fn a_stalled_send_is_left_and_finished_later() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let content: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&content).unwrap();
        file.seek(io::SeekFrom::Start(0)).unwrap();
        let mut rest = send_file_or_stall(&server, file, content.len() as u64).unwrap().expect("a stalled client");
        assert!(rest.left() > 0 && rest.left() < content.len() as u64);
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; content.len()];
            client.read_exact(&mut got).unwrap();
            got == content
        });
        while !send_now(&server, &mut rest).unwrap() {
            assert!(writable_within(&server, Duration::from_secs(10)).unwrap());
        }
        assert!(reader.join().unwrap(), "the bytes arrived whole and in order");

        let mut small = tempfile::tempfile().unwrap();
        small.write_all(b"all at once").unwrap();
        small.seek(io::SeekFrom::Start(4)).unwrap();
        server.set_nonblocking(false).unwrap();
        assert!(send_file_or_stall(&server, small, 7).unwrap().is_none());
    }
}
