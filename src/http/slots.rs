//! A counted limit on how many workers may be in a long transfer at once: reading a request
//! body (an upload), or writing a response body too large for one write (a download: a blob).
//! A client uploading at the minimum body rate, or reading a blob slowly, holds its worker for
//! as long as it likes to take; without a limit, enough of them take the whole pool and nobody
//! else is answered (issue 14). Each kind may take at most half of the pool and both together
//! three quarters: slow uploads never take the workers pulls need (nor slow readers those of
//! pushes), and a quarter always stays for everything else. Beyond the limit the request is
//! answered 503 with `Retry-After` at once (`conn.rs`).

use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transfer {
    Upload = 0,
    Download = 1,
}

#[derive(Debug, PartialEq)]
struct Limits {
    per_kind: usize,
    total: usize,
}

impl Limits {
    /// Half of `workers` per kind, three quarters in all; never less than one of each while
    /// there are workers, so a one-worker server still takes uploads.
    fn for_workers(workers: usize) -> Limits {
        let workers = workers.max(1);
        Limits { per_kind: (workers / 2).max(1), total: (workers - workers / 4).max(1) }
    }
}

/// The long transfers in progress, by kind.
pub struct Transfers {
    limits: Limits,
    held: Mutex<[usize; 2]>,
}

impl Transfers {
    pub fn for_workers(workers: usize) -> Arc<Transfers> {
        Arc::new(Transfers { limits: Limits::for_workers(workers), held: Mutex::new([0, 0]) })
    }

    /// A slot for one transfer of `kind`, or `None` when that kind or all transfers are at
    /// their limit. The slot is given back when the guard drops.
    pub fn try_take(self: &Arc<Self>, kind: Transfer) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held[kind as usize] >= self.limits.per_kind || held[0] + held[1] >= self.limits.total {
            return None;
        }
        held[kind as usize] += 1;
        Some(Slot { transfers: Arc::clone(self), kind })
    }
}

/// One held slot.
pub struct Slot {
    transfers: Arc<Transfers>,
    kind: Transfer,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.transfers.held.lock().unwrap_or_else(|p| p.into_inner());
        held[self.kind as usize] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_takes_half_and_both_three_quarters() {
        let transfers = Transfers::for_workers(8);
        let uploads: Vec<Slot> = (0..4).map(|_| transfers.try_take(Transfer::Upload).unwrap()).collect();
        assert!(transfers.try_take(Transfer::Upload).is_none(), "half the pool for uploads");
        let downloads: Vec<Slot> = (0..2).map(|_| transfers.try_take(Transfer::Download).unwrap()).collect();
        assert!(transfers.try_take(Transfer::Download).is_none(), "three quarters in all");
        drop(uploads);
        assert!(transfers.try_take(Transfer::Download).is_some(), "slots are given back");
        drop(downloads);
    }

    #[test]
    fn limits_for_pool_sizes() {
        assert_eq!(Limits::for_workers(64), Limits { per_kind: 32, total: 48 });
        assert_eq!(Limits::for_workers(16), Limits { per_kind: 8, total: 12 });
        assert_eq!(Limits::for_workers(2), Limits { per_kind: 1, total: 2 });
        assert_eq!(Limits::for_workers(1), Limits { per_kind: 1, total: 1 });
    }
}
