//! The threading model, and only here: one accept thread parks new connections with the idle
//! poller (`idle.rs`), which hands each one whose request head has arrived (after its TLS
//! handshake, `handshake.rs`, for HTTPS) through a bounded crossbeam channel to the worker
//! pool (`pool.rs`, grown on demand up to `--workers`); a worker serves that request (and any
//! that follow without a pause) and parks the connection again. Shutdown sets a flag, wakes the accept thread, lets in-flight requests finish, and
//! joins every thread.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::bounded;

use super::conn::{self, ConnLimits, MAX_HEAD_BYTES};
use super::idle::{self, Conn, Poller, PollerLimits, HEAD_TIMEOUT};
use super::pool::{Pool, PoolConfig};
use super::Handler;

#[derive(Clone)]
pub struct ServerOptions {
    pub workers: usize,
    pub limits: ConnLimits,
    /// Log one line per request to stderr.
    pub log_requests: bool,
    /// When set, connections opening with a TLS handshake get HTTPS on the same port.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Open connections held at most (idle ones cost a descriptor each, no thread).
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: 64,
            limits: ConnLimits::default(),
            log_requests: true,
            tls: None,
            max_connections: 10_000,
        }
    }
}

/// Binds `addr`, turning the common failures into messages a user can act on.
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => "the port is already in use (is another glci serve running?)",
            io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need root)",
            io::ErrorKind::AddrNotAvailable => "that address is not on this machine",
            _ => "",
        };
        let message = if hint.is_empty() {
            format!("cannot listen on {addr}: {e}")
        } else {
            format!("cannot listen on {addr}: {hint}")
        };
        io::Error::new(e.kind(), message)
    })
}

/// A running server. Dropping it without `shutdown` leaves the threads running.
pub struct Server {
    addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    poller: Option<JoinHandle<()>>,
    pool: Pool,
}

impl Server {
    pub fn start(listener: TcpListener, handler: Arc<dyn Handler>, options: ServerOptions) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        // Every held connection is a descriptor, plus the files its requests open.
        raise_fd_limit(options.max_connections as u64 + 1024);
        let shutdown = Arc::new(AtomicBool::new(false));
        let workers_count = options.workers.max(1);
        let (to_workers, receiver) = bounded::<Conn>(workers_count * 2);
        let poller_limits = PollerLimits {
            idle_timeout: options.limits.idle_timeout,
            write_timeout: options.limits.write_timeout,
            head_timeout: HEAD_TIMEOUT,
            max_head: MAX_HEAD_BYTES,
            max_parked: options.max_connections.max(1),
            max_ready: workers_count * 2,
        };
        let (poller, parking) = Poller::new(to_workers, Arc::clone(&shutdown), poller_limits, options.tls.clone())?;
        let pool_config = PoolConfig {
            handler,
            shutdown: Arc::clone(&shutdown),
            limits: options.limits,
            log_requests: options.log_requests,
            max_workers: workers_count,
        };
        let pool = Pool::start(pool_config, receiver, parking.clone())?;
        let poller_pool = pool.clone();
        let poller = std::thread::Builder::new()
            .name("glci-idle".into())
            .spawn(move || poller.run(|| poller_pool.grow_if_busy()))?;
        let accept_shutdown = Arc::clone(&shutdown);
        let limits = options.limits;
        let accept = std::thread::Builder::new().name("glci-accept".into()).spawn(move || {
            for stream in listener.incoming() {
                if accept_shutdown.load(Ordering::SeqCst) {
                    break;
                }
                match stream {
                    Ok(stream) => {
                        if conn::prepare(&stream, limits).is_err() {
                            continue;
                        }
                        if let Err(refused) = parking.park(Conn::Fresh(stream)) {
                            // The poller is gone (shutting down): say so at once rather
                            // than let the client wait without a word. (Beyond its limit, the
                            // poller itself answers 503.)
                            idle::refuse_busy(refused);
                        }
                    }
                    // Out of descriptors or a reset before accept: keep serving the others.
                    Err(e) => {
                        crate::log::warn("accept", &e.to_string());
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            }
        })?;
        Ok(Server { addr, shutdown, accept: Some(accept), poller: Some(poller), pool })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that can stop the server from another thread (e.g. a signal handler thread).
    pub fn stopper(&self) -> Stopper {
        Stopper { addr: self.addr, shutdown: Arc::clone(&self.shutdown) }
    }

    /// Stops accepting, lets in-flight requests finish, and joins every thread.
    pub fn shutdown(mut self) {
        self.stopper().stop();
        self.join();
    }

    /// Waits until the server has been stopped through a `Stopper` and every thread is done.
    pub fn join(&mut self) {
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        self.pool.join();
    }
}

/// Raises the soft descriptor limit towards `want` (at most the hard limit), as Go's runtime
/// does for every server: a fresh machine's soft limit of 1024 would otherwise refuse
/// connections long before `max_connections`. Says so when the hard limit is lower.
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= want {
        return;
    }
    let target = want.min(limit.rlim_max);
    if target > limit.rlim_cur {
        let raised = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = target;
        }
    }
    if limit.rlim_cur < want {
        crate::log::warn(
            "limits",
            &format!(
                "open files limited to {} (hard limit {}): fewer than {} connections can be held; raise it with ulimit -n",
                limit.rlim_cur,
                limit.rlim_max,
                want - 1024
            ),
        );
    }
}

#[derive(Clone)]
pub struct Stopper {
    addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
}

impl Stopper {
    pub fn stop(&self) {
        if !self.shutdown.swap(true, Ordering::SeqCst) {
            // Wake the accept thread blocked in accept(2).
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(if wake.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
            }
            let _ = TcpStream::connect_timeout(&wake, std::time::Duration::from_secs(1));
        }
    }
}
