//! A pool's warm connections: those given back last, kept in a stack of our own in front
//! of bb8, so that a transaction's checkout and return are one uncontended lock and a pop
//! or a push (no timer, no clock read, no bb8 bookkeeping). bb8 still opens, counts, ages
//! and closes every connection; to it a warm connection is one checked out.
//!
//! Once a second `sweep` gives back to bb8 the connections that sat here unused since the
//! previous sweep, so its idle timeout applies to them (at most two seconds late); and a
//! connection past its lifetime goes back to bb8 when it is returned, which closes it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bb8::PooledConnection;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use super::connection::ServerConnection;
use super::pool::ServerManager;

pub(super) type Conn = PooledConnection<'static, ServerManager>;

#[derive(Default)]
pub(super) struct Warm {
    list: Mutex<List<Conn>>,
    /// Wakes the checkouts waiting on bb8 when a connection comes back here instead.
    returned: Notify,
    /// Sweeps so far: the coarse clock connection lifetimes are counted in.
    sweeps: AtomicU32,
}

/// A stack that knows which of its items sat unused since the last sweep.
struct List<T> {
    /// The item given back last on top.
    conns: Vec<T>,
    /// The fewest items the stack held since the last sweep: that many at its bottom sat
    /// unused all along.
    low: usize,
    /// Checkouts waiting on bb8: an item given back here must wake them.
    waiting: usize,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            conns: Vec::new(),
            low: 0,
            waiting: 0,
        }
    }
}

impl<T> List<T> {
    fn pop(&mut self) -> Option<T> {
        let item = self.conns.pop();
        self.low = self.low.min(self.conns.len());
        item
    }

    /// The items unused since the last sweep, taken off the bottom; a new period starts.
    fn sweep(&mut self) -> Vec<T> {
        let unused = self.low.min(self.conns.len());
        let aged = self.conns.drain(..unused).collect();
        self.low = self.conns.len();
        aged
    }
}

/// A checkout registered as waiting on bb8; counted until dropped.
pub(super) struct Waiting<'a> {
    warm: &'a Warm,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.warm.lock().waiting -= 1;
    }
}

impl Warm {
    fn lock(&self) -> std::sync::MutexGuard<'_, List<Conn>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection given back last, if any.
    pub(super) fn take(&self) -> Option<Conn> {
        self.lock().pop()
    }

    /// The connection given back last, or a registration as waiting and what fires when one
    /// comes back (made under the same lock as the look, so no return in between is missed).
    pub(super) fn take_or_wait(&self) -> Result<Conn, (Waiting<'_>, Notified<'_>)> {
        let returned = self.returned.notified();
        let mut list = self.lock();
        if let Some(conn) = list.pop() {
            return Ok(conn);
        }
        list.waiting += 1;
        Err((Waiting { warm: self }, returned))
    }

    /// Keeps a reusable connection for the next checkout; one past its lifetime goes back
    /// to bb8 (which closes it).
    pub(super) fn give_back(&self, conn: Conn) {
        if conn.lifetime_ends <= self.sweeps.load(Ordering::Relaxed) {
            drop(conn);
            return;
        }
        let mut list = self.lock();
        list.conns.push(conn);
        let wake = list.waiting > 0;
        drop(list);
        if wake {
            self.returned.notify_waiters();
        }
    }

    /// Stamps a connection bb8 handed out with the sweep its lifetime ends at (rounded up:
    /// late by up to two sweeps, never early). Only the first time it is seen.
    pub(super) fn stamp(&self, conn: &mut ServerConnection, max_lifetime: Option<Duration>) {
        if conn.lifetime_ends != 0 {
            return;
        }
        conn.lifetime_ends = match max_lifetime {
            Some(lifetime) => {
                let left = lifetime.saturating_sub(conn.created.elapsed()).as_secs();
                let now = self.sweeps.load(Ordering::Relaxed);
                now.saturating_add(u32::try_from(left).unwrap_or(u32::MAX))
                    .saturating_add(1)
            }
            None => u32::MAX,
        };
    }

    /// One tick of the coarse clock: the connections unused since the last sweep are
    /// returned, for bb8 to age and close (dropped outside the lock).
    pub(super) fn sweep(&self) -> Vec<Conn> {
        self.sweeps.fetch_add(1, Ordering::Relaxed);
        self.lock().sweep()
    }

    /// Every connection on the stack, taken off it.
    pub(super) fn take_all(&self) -> Vec<Conn> {
        let mut list = self.lock();
        list.low = 0;
        std::mem::take(&mut list.conns)
    }

    /// Connections on the stack now.
    pub(super) fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::List;

    fn pushed(items: &[u32]) -> List<u32> {
        let mut list = List::default();
        list.conns.extend_from_slice(items);
        list
    }

    /// What a sweep takes: the items at the bottom that no pop reached since the sweep
    /// before, oldest first; what is left is younger, and the next sweep takes it unless
    /// it is used.
    #[test]
    fn a_sweep_takes_what_sat_unused_since_the_last_one() {
        let mut list = pushed(&[1, 2, 3, 4]);
        assert_eq!(
            list.sweep(),
            Vec::<u32>::new(),
            "all arrived since the last sweep"
        );
        // 4 and 3 are taken, 3 comes back, 5 is new: 1 and 2 sat there all along.
        assert_eq!(list.pop(), Some(4));
        assert_eq!(list.pop(), Some(3));
        list.conns.push(3);
        list.conns.push(5);
        assert_eq!(list.sweep(), vec![1, 2]);
        assert_eq!(list.conns, vec![3, 5]);
        // Nothing used since: both go at the next sweep.
        assert_eq!(list.sweep(), vec![3, 5]);
        assert_eq!(list.sweep(), Vec::<u32>::new());
    }

    /// A stack emptied and refilled between sweeps keeps everything: each item was used.
    #[test]
    fn an_emptied_stack_keeps_what_came_back() {
        let mut list = pushed(&[1, 2]);
        let _ = list.sweep();
        assert_eq!(list.pop(), Some(2));
        assert_eq!(list.pop(), Some(1));
        assert_eq!(list.pop(), None);
        list.conns.extend_from_slice(&[1, 2]);
        assert_eq!(list.sweep(), Vec::<u32>::new());
    }
}
