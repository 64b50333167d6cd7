//! A TLS connection driven in the idle poller, never blocking: its handshake, then each
//! request head, decrypted there (rustls is sans-I/O: `read_tls`, `process_new_packets` and
//! `write_tls` on readiness), so a TLS connection costs a worker only once a whole request head
//! has arrived. Two hundred clients stalling mid-ClientHello then cost descriptors, not the pool
//! (issue 14). Also the poller's own answers over TLS (408, 503), which must not wait either.

use std::io::{self, Write};

use super::head_complete;
use super::transport::{NoWait, Tls};

/// Where a driven TLS connection stands.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// A whole request head (or more than `max_head` bytes of one) is decrypted: a worker's turn.
    HeadReady,
    /// The handshake or a head is under way: wait for more, under the head deadline.
    Partial,
    /// Nothing arrived after all (a spurious wake-up).
    Nothing,
    /// The peer closed, or the session failed (its alert, if any, was sent).
    Closed,
}

/// Reads and decrypts what the socket has, answers the handshake, and gathers plaintext until
/// a request head is complete. Never blocks: a write the socket cannot take now stays queued in
/// rustls (`wants_write`), and the poller waits for the socket to become writable.
pub fn drive(tls: &mut Tls, max_head: usize) -> Progress {
    let mut progressed = false;
    loop {
        if flush_now(tls).is_err() {
            return Progress::Closed;
        }
        match tls.read_ahead(max_head + 1) {
            Ok(0) if tls.early().len() > max_head => return Progress::HeadReady,
            Ok(0) => return Progress::Closed,
            Ok(_) => progressed = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Progress::Closed,
        }
        if head_complete(tls.early()) || tls.early().len() > max_head {
            return Progress::HeadReady;
        }
        let Tls { stream, .. } = tls;
        match stream.conn.read_tls(&mut NoWait(&stream.sock)) {
            Ok(0) => return Progress::Closed,
            Ok(_) => {
                progressed = true;
                if stream.conn.process_new_packets().is_err() {
                    // rustls queued an alert saying why: send it if the socket takes it now.
                    let _ = flush_now(tls);
                    return Progress::Closed;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = flush_now(tls);
                let started = progressed || stream_started(tls);
                return if started { Progress::Partial } else { Progress::Nothing };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Closed,
        }
    }
}

/// True while a handshake or a request head is part-way through.
fn stream_started(tls: &Tls) -> bool {
    tls.stream.conn.is_handshaking() || !tls.early().is_empty()
}

/// Writes what rustls has queued, as far as the socket takes it now.
fn flush_now(tls: &mut Tls) -> io::Result<()> {
    let Tls { stream, .. } = tls;
    while stream.conn.wants_write() {
        match stream.conn.write_tls(&mut NoWait(&stream.sock)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// True when rustls holds records for the peer that the socket has not taken yet.
pub fn wants_write(tls: &Tls) -> bool {
    tls.stream.conn.wants_write()
}

/// Sends `response` (a whole HTTP response) encrypted, then close_notify, and closes the
/// sending side, without waiting: what the socket does not take now is dropped. A connection
/// still in its handshake has no session to answer in: it is just closed.
pub fn answer_and_close(mut tls: Tls, response: &[u8]) {
    if !tls.stream.conn.is_handshaking() {
        let _ = tls.stream.conn.writer().write_all(response);
        tls.stream.conn.send_close_notify();
        let _ = flush_now(&mut tls);
    }
    let _ = tls.stream.sock.shutdown(std::net::Shutdown::Write);
}
