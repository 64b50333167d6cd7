//! The worker pool: threads that serve connections whose request has arrived (`conn.rs`). It
//! starts with a few threads and grows on demand, up to `--workers`, when a connection is
//! handed over while none is idle; a thread idle for `RETIRE_AFTER` ends while more than the
//! minimum remain. A quiet server then holds a handful of stacks, not 64 (issue 9: memory).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::conn::{self, ConnLimits, Serving};
use super::idle::{Conn, Parking};
use super::slots::Transfers;
use super::Handler;
use crate::log::Exchange;

/// Threads kept even when idle.
const MIN_WORKERS: usize = 4;
/// How long a thread above the minimum waits for work before it ends.
const RETIRE_AFTER: Duration = Duration::from_secs(30);

/// What every worker needs, shared.
pub struct PoolConfig {
    pub handler: Arc<dyn Handler>,
    pub shutdown: Arc<AtomicBool>,
    pub limits: ConnLimits,
    pub log_requests: bool,
    pub max_workers: usize,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: PoolConfig,
    receiver: Receiver<Conn>,
    parking: Parking,
    transfers: Arc<Transfers>,
    live: AtomicUsize,
    idle: AtomicUsize,
    next_id: AtomicUsize,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Starts the minimum number of workers, taking connections from `receiver` and parking
    /// them with `parking` between requests.
    pub fn start(config: PoolConfig, receiver: Receiver<Conn>, parking: Parking) -> io::Result<Pool> {
        let min = MIN_WORKERS.min(config.max_workers.max(1));
        let transfers = Transfers::for_workers(config.max_workers);
        let pool = Pool {
            inner: Arc::new(Inner {
                config,
                receiver,
                parking,
                transfers,
                live: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
                next_id: AtomicUsize::new(0),
                handles: Mutex::new(Vec::new()),
            }),
        };
        for _ in 0..min {
            spawn(&pool.inner)?;
        }
        Ok(pool)
    }

    /// Called after a connection was handed over, and by a worker that just took one: starts
    /// threads while more connections wait than threads are free, up to the maximum.
    pub fn grow_if_busy(&self) {
        grow(&self.inner);
    }

    /// Waits for every worker to end (they do once the hand-over channel is closed and empty).
    pub fn join(&self) {
        loop {
            let handles = std::mem::take(&mut *self.inner.handles.lock().unwrap_or_else(|p| p.into_inner()));
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                let _ = handle.join();
            }
        }
    }
}

fn grow(inner: &Arc<Inner>) {
    while inner.receiver.len() > inner.idle.load(Ordering::SeqCst)
        && inner.live.load(Ordering::SeqCst) < inner.config.max_workers
    {
        if let Err(e) = spawn(inner) {
            crate::log::warn("workers", &format!("cannot start another worker thread: {e}"));
            return;
        }
    }
}

fn spawn(inner: &Arc<Inner>) -> io::Result<()> {
    let id = inner.next_id.fetch_add(1, Ordering::SeqCst);
    inner.live.fetch_add(1, Ordering::SeqCst);
    // Counted idle from the start, so a burst of hand-overs does not start a thread each.
    inner.idle.fetch_add(1, Ordering::SeqCst);
    let worker = Arc::clone(inner);
    match std::thread::Builder::new().name(format!("glci-worker-{id}")).spawn(move || work(&worker)) {
        Ok(handle) => {
            let mut handles = inner.handles.lock().unwrap_or_else(|p| p.into_inner());
            // A retired thread keeps its stack until joined: join those that ended.
            let (ended, running): (Vec<_>, Vec<_>) = handles.drain(..).partition(|h| h.is_finished());
            *handles = running;
            handles.push(handle);
            drop(handles);
            for h in ended {
                let _ = h.join();
            }
            Ok(())
        }
        Err(e) => {
            inner.live.fetch_sub(1, Ordering::SeqCst);
            inner.idle.fetch_sub(1, Ordering::SeqCst);
            Err(e)
        }
    }
}

/// One worker: serve what comes, park connections between requests, retire when long idle.
fn work(inner: &Arc<Inner>) {
    let config = &inner.config;
    let log = |e: &Exchange<'_>| {
        if config.log_requests {
            crate::log::request(e);
        }
    };
    loop {
        let next = inner.receiver.recv_timeout(RETIRE_AFTER);
        inner.idle.fetch_sub(1, Ordering::SeqCst);
        match next {
            Ok(conn) => {
                // A burst may have queued more than the free threads can take.
                grow(inner);
                // Waiting for a connection's next request is free while nobody is queued, or
                // while the pool can still grow a thread for whoever is.
                let may_keep_warm =
                    || inner.receiver.is_empty() || inner.live.load(Ordering::SeqCst) < config.max_workers;
                let serving = Serving {
                    handler: config.handler.as_ref(),
                    shutdown: &config.shutdown,
                    limits: config.limits,
                    log: &log,
                    may_keep_warm: &may_keep_warm,
                    transfers: &inner.transfers,
                };
                if let Some(idle) = conn::serve(conn, &serving) {
                    // Refused only at shutdown or when the poller is full: the connection then
                    // closes, which a client takes as the end of keep-alive.
                    let _ = inner.parking.park(idle);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let min = MIN_WORKERS.min(config.max_workers.max(1));
                let retired = inner
                    .live
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |live| (live > min).then(|| live - 1))
                    .is_ok();
                if retired {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                inner.live.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
        inner.idle.fetch_add(1, Ordering::SeqCst);
    }
}
