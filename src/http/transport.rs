//! A connection's byte stream, plain TCP or TLS (rustls), behind one `Transport` trait: reads,
//! writes, sending a file (sendfile(2) on plain TCP, record-sized copies under TLS), whether
//! request bytes are already buffered in user space, and a clean close. The idle poller
//! (`idle.rs`) picks one per connection from its first byte.

use std::io::{self, Read, Seek, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;

use super::sending::{self, Rest};

/// A connection's byte stream, plain or TLS.
pub trait Transport: Read + Write {
    fn tcp(&self) -> &TcpStream;
    /// Sends `len` bytes of `file` from its current position, or, when the client stops
    /// reading, what is left for the poller to finish (`sending.rs`; plain TCP only).
    fn send_file(&mut self, file: std::fs::File, len: u64) -> io::Result<Option<Rest>>;
    /// Sends `len` bytes of `file` from `offset`, blocking (sendfile(2) on plain TCP), without
    /// touching the file's position.
    fn send_range(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()>;
    /// Puts bytes read ahead back in front of what comes next (a pipelined request the worker
    /// had buffered when it handed the connection on).
    fn unread(&mut self, bytes: &[u8]);
    /// Ends the stream cleanly (TLS close_notify, then FIN).
    fn close(&mut self);
    /// True when request bytes already sit in user space (read from the socket but not yet
    /// consumed), so waiting for the socket to become readable could wait forever.
    fn has_buffered(&mut self) -> bool;
}

/// Request bytes read ahead of the worker (by the idle poller, gathering a head without a
/// worker); reads return them before touching the connection.
#[derive(Default)]
pub struct Early {
    bytes: Vec<u8>,
    read: usize,
}

impl Early {
    /// The bytes read ahead and not yet returned by `take`.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.read..]
    }

    fn extend(&mut self, more: &[u8]) {
        self.bytes.extend_from_slice(more);
    }

    fn unread(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let mut all = bytes.to_vec();
            all.extend_from_slice(self.pending());
            *self = Early { bytes: all, read: 0 };
        }
    }

    /// Moves pending bytes into `buf`; 0 when none are pending.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = self.pending().len().min(buf.len());
        buf[..n].copy_from_slice(&self.bytes[self.read..self.read + n]);
        self.read += n;
        if self.read == self.bytes.len() {
            // Give the memory back: a parked connection should cost a descriptor, not a buffer.
            *self = Early::default();
        }
        n
    }
}

/// Plain TCP, with the bytes the idle poller read ahead.
pub struct Plain {
    pub stream: TcpStream,
    early: Early,
}

impl Plain {
    pub fn new(stream: TcpStream) -> Plain {
        Plain { stream, early: Early::default() }
    }

    /// The bytes read ahead and not yet returned by `read`.
    pub fn early(&self) -> &[u8] {
        self.early.pending()
    }

    /// Reads what the socket has without blocking and keeps it for later `read`s, up to `limit`
    /// bytes held in all. `Ok(0)` means end of stream; `WouldBlock`, nothing there yet.
    pub fn read_ahead(&mut self, limit: usize) -> io::Result<usize> {
        let mut buf = [0u8; 8 * 1024];
        let room = limit.saturating_sub(self.early().len()).min(buf.len());
        if room == 0 {
            return Ok(0);
        }
        let n = recv_now(&self.stream, &mut buf[..room], 0)?;
        self.early.extend(&buf[..n]);
        Ok(n)
    }
}

impl Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.early().is_empty() {
            return Ok(self.early.take(buf));
        }
        self.stream.read(buf)
    }
}

impl Write for Plain {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Transport for Plain {
    fn tcp(&self) -> &TcpStream {
        &self.stream
    }
    fn send_file(&mut self, file: std::fs::File, len: u64) -> io::Result<Option<Rest>> {
        sending::send_file_or_stall(&self.stream, file, len)
    }
    fn send_range(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        sending::send_range(&self.stream, file, offset, len)
    }
    fn unread(&mut self, bytes: &[u8]) {
        self.early.unread(bytes);
    }
    fn close(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
    fn has_buffered(&mut self) -> bool {
        !self.early().is_empty()
    }
}

pub type TlsStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// A TLS connection, with the plaintext the idle poller decrypted ahead of the worker (its
/// handshake and request head are driven there, `handshake.rs`).
pub struct Tls {
    pub stream: TlsStream,
    early: Early,
}

impl Tls {
    pub fn new(session: rustls::ServerConnection, stream: TcpStream) -> Tls {
        Tls { stream: rustls::StreamOwned::new(session, stream), early: Early::default() }
    }

    /// The plaintext decrypted ahead and not yet returned by `read`.
    pub fn early(&self) -> &[u8] {
        self.early.pending()
    }

    /// Moves the plaintext rustls holds into the read-ahead buffer, up to `limit` bytes held
    /// in all. `Ok(0)`: the peer closed (cleanly or not); `WouldBlock`: nothing decrypted yet.
    pub fn read_ahead(&mut self, limit: usize) -> io::Result<usize> {
        let mut buf = [0u8; 8 * 1024];
        let room = limit.saturating_sub(self.early().len()).min(buf.len());
        if room == 0 {
            return Ok(0);
        }
        match self.stream.conn.reader().read(&mut buf[..room]) {
            Ok(n) => {
                self.early.extend(&buf[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl Read for Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.early().is_empty() {
            return Ok(self.early.take(buf));
        }
        self.stream.read(buf)
    }
}

impl Write for Tls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Transport for Tls {
    fn tcp(&self) -> &TcpStream {
        &self.stream.sock
    }
    fn unread(&mut self, bytes: &[u8]) {
        self.early.unread(bytes);
    }
    fn send_file(&mut self, file: std::fs::File, len: u64) -> io::Result<Option<Rest>> {
        let offset = (&file).stream_position()?;
        self.send_range(&file, offset, len)?;
        Ok(None)
    }
    fn send_range(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        // Encryption needs the bytes in user space: copy in record-sized pieces, blocking (a
        // worker's send under TLS is bounded by the transfer slots instead).
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            let want = (len - sent).min(buf.len() as u64) as usize;
            let n = file.read_at(&mut buf[..want], offset + sent)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than announced"));
            }
            self.stream.write_all(&buf[..n])?;
            sent += n as u64;
        }
        self.stream.flush()
    }
    fn close(&mut self) {
        self.stream.conn.send_close_notify();
        let _ = self.stream.flush();
        let _ = self.stream.sock.shutdown(std::net::Shutdown::Write);
    }
    fn has_buffered(&mut self) -> bool {
        if !self.early().is_empty() {
            return true;
        }
        // Records already received may hold the next request (a pipelining client).
        match self.stream.conn.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0,
            // A broken session: let the worker's next read report it.
            Err(_) => true,
        }
    }
}

/// recv(2) with `MSG_DONTWAIT` (plus `flags`): a read that never blocks, on a socket that stays
/// in blocking mode for the workers. Saves the two `ioctl(FIONBIO)`s per request that switching
/// the socket between the poller and a worker would cost (issue 9: request rates).
pub fn recv_now(stream: &TcpStream, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
        let n =
            unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The socket as a stream that never blocks (`MSG_DONTWAIT` both ways), for rustls's
/// `read_tls`/`write_tls` in the poller while the socket stays in blocking mode for workers.
pub struct NoWait<'a>(pub &'a TcpStream);

impl Read for NoWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        recv_now(self.0, buf, 0)
    }
}

impl Write for NoWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::os::unix::io::AsRawFd;
        loop {
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
            let n = unsafe {
                libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
