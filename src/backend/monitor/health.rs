//! The state the monitor publishes and the data plane reads on every routed read:
//! atomics per server, an arc-swapped set of write functions per cluster.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::lag::Lag;
use super::lsn::Lsn;
use super::verdict::{Change, Problem, Thresholds, Verdict};
use crate::metrics::{self, ReplicaMetrics};
use crate::rules::ServerAddr;

/// Stored in a lag atomic while the lag is unknown.
const UNKNOWN: u64 = u64::MAX;

/// Which part a server plays in its cluster (for logs; replicas also get metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}

/// What one check of a server found. The monitor makes these; tests may hand-build them.
#[derive(Debug, Default)]
pub struct Check {
    /// The replay position (for the primary: its WAL insert position).
    pub replay: Option<Lsn>,
    pub receive: Option<Lsn>,
    /// `None` when the check could not measure it (failed, or the primary).
    pub lag: Option<Lag>,
    /// Why the check is bad; `None` = good.
    pub problem: Option<Problem>,
}

/// One server's health. Read lock-free; written by its poller (and `report_failure`).
pub struct ServerHealth {
    pub addr: ServerAddr,
    /// Relative share of reads (at least 1; the primary's is 1).
    pub weight: u32,
    cluster: Arc<str>,
    role: Role,
    usable: AtomicBool,
    replay_lsn: AtomicU64,
    receive_lsn: AtomicU64,
    lag_micros: AtomicU64,
    lag_bytes: AtomicU64,
    outstanding: AtomicUsize,
    /// Only the poller and failure reports take it, briefly; readers never do.
    verdict: Mutex<Verdict>,
    thresholds: Thresholds,
    metrics: Option<ReplicaMetrics>,
}

impl ServerHealth {
    /// A server not checked yet: not usable, positions and lag unknown. Registers the
    /// metric handles of a replica.
    pub fn new(
        cluster: &str,
        role: Role,
        addr: ServerAddr,
        weight: u32,
        thresholds: Thresholds,
    ) -> Self {
        let metrics = match role {
            Role::Replica => Some(metrics::replica(cluster, &addr.to_string())),
            Role::Primary => None,
        };
        ServerHealth {
            addr,
            weight: weight.max(1),
            cluster: Arc::from(cluster),
            role,
            usable: AtomicBool::new(false),
            replay_lsn: AtomicU64::new(0),
            receive_lsn: AtomicU64::new(0),
            lag_micros: AtomicU64::new(UNKNOWN),
            lag_bytes: AtomicU64::new(UNKNOWN),
            outstanding: AtomicUsize::new(0),
            verdict: Mutex::new(Verdict::Unknown),
            thresholds,
            metrics,
        }
    }

    /// Gets reads: answered its checks, in the right role and within lag limits, with
    /// hysteresis (see `verdict`).
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// The last polled `pg_last_wal_replay_lsn()` (the primary: its insert LSN); 0 if unknown.
    pub fn replay_lsn(&self) -> Lsn {
        Lsn(self.replay_lsn.load(Ordering::Acquire))
    }

    /// The last polled `pg_last_wal_receive_lsn()`; 0 if unknown.
    pub fn receive_lsn(&self) -> Lsn {
        Lsn(self.receive_lsn.load(Ordering::Relaxed))
    }

    /// The last measured lag in time and in bytes of WAL; `None` where unknown.
    pub fn lag(&self) -> (Option<Duration>, Option<u64>) {
        let micros = self.lag_micros.load(Ordering::Relaxed);
        let bytes = self.lag_bytes.load(Ordering::Relaxed);
        (
            (micros != UNKNOWN).then(|| Duration::from_micros(micros)),
            (bytes != UNKNOWN).then_some(bytes),
        )
    }

    /// The data plane saw a connect or I/O failure: out at once; back after
    /// `recover_after` good checks.
    pub fn report_failure(&self) {
        let change = {
            let mut verdict = self.lock_verdict();
            let (next, change) = verdict.fail_now();
            *verdict = next;
            change
        };
        if let Some(change) = change {
            self.publish(change, &Problem::Reported);
        }
    }

    /// Requests in flight on this server; the data plane increments and decrements it.
    pub fn outstanding(&self) -> &AtomicUsize {
        &self.outstanding
    }

    /// Takes in one check: positions and lag first, then the verdict.
    pub fn record(&self, check: Check) {
        if let Some(replay) = check.replay {
            self.replay_lsn.store(replay.0, Ordering::Release);
        }
        if let Some(receive) = check.receive {
            self.receive_lsn.store(receive.0, Ordering::Relaxed);
        }
        if let Some(lag) = check.lag {
            self.store_lag(lag);
        }
        let change = {
            let mut verdict = self.lock_verdict();
            let (next, change) = verdict.observe(check.problem.is_none(), self.thresholds);
            *verdict = next;
            change
        };
        if let Some(change) = change {
            let reason = match &check.problem {
                Some(problem) => problem.to_string(),
                None => "checks pass".to_string(),
            };
            self.publish(change, &reason);
        }
    }

    fn store_lag(&self, lag: Lag) {
        let micros = lag.time.map_or(UNKNOWN, |t| {
            u64::try_from(t.as_micros()).unwrap_or(UNKNOWN - 1)
        });
        self.lag_micros.store(micros, Ordering::Relaxed);
        self.lag_bytes
            .store(lag.bytes.unwrap_or(UNKNOWN), Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            // An unknown lag leaves the gauge at its last known value.
            if let Some(time) = lag.time {
                metrics.lag_seconds.set(time.as_secs_f64());
            }
            if let Some(bytes) = lag.bytes {
                metrics.lag_bytes.set(bytes as f64);
            }
        }
    }

    /// Makes a flipped verdict visible: the flag, the metrics, one log line.
    fn publish(&self, change: Change, reason: &dyn fmt::Display) {
        let usable = change == Change::ToUsable;
        self.usable.store(usable, Ordering::Release);
        if let Some(metrics) = &self.metrics {
            metrics.usable.set(if usable { 1.0 } else { 0.0 });
            match change {
                Change::ToUsable => metrics.became_usable.increment(1),
                Change::ToUnusable => metrics.became_unusable.increment(1),
            }
        }
        let (lag, lag_bytes) = self.lag();
        tracing::info!(
            cluster = %self.cluster,
            role = %self.role,
            server = %self.addr,
            to = change.as_str(),
            %reason,
            lag_ms = lag.map(|l| l.as_millis() as u64),
            lag_bytes,
            replay_lsn = %self.replay_lsn(),
            "server health changed"
        );
    }

    fn lock_verdict(&self) -> std::sync::MutexGuard<'_, Verdict> {
        self.verdict.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ServerHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHealth")
            .field("addr", &self.addr.to_string())
            .field("role", &self.role)
            .field("weight", &self.weight)
            .field("usable", &self.is_usable())
            .field("replay_lsn", &self.replay_lsn())
            .field("lag", &self.lag())
            .finish_non_exhaustive()
    }
}

/// One cluster's health: its servers, the primary's WAL position, its write functions.
#[derive(Debug)]
pub struct ClusterHealth {
    pub name: String,
    pub primary: Arc<ServerHealth>,
    pub replicas: Vec<Arc<ServerHealth>>,
    primary_lsn: AtomicU64,
    /// The highest WAL position a session read after its write transaction: where a new
    /// session's reads start from, so it sees what was written through the proxy before.
    last_write: AtomicU64,
    write_functions: ArcSwap<HashSet<String>>,
    /// Wakes the write-function refresh ahead of its period.
    refresh: tokio::sync::Notify,
    /// Shares ties between replicas in proportion to weight (see `pick`).
    pub(super) ticket: AtomicUsize,
}

impl ClusterHealth {
    pub fn new(name: &str, primary: Arc<ServerHealth>, replicas: Vec<Arc<ServerHealth>>) -> Self {
        ClusterHealth {
            name: name.to_string(),
            primary,
            replicas,
            primary_lsn: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            refresh: tokio::sync::Notify::new(),
            write_functions: ArcSwap::from_pointee(HashSet::new()),
            ticket: AtomicUsize::new(0),
        }
    }

    /// A session defined functions: read the write functions again now.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Completes when a session asks for the write functions to be read again.
    pub async fn refresh_requested(&self) {
        self.refresh.notified().await;
    }

    /// A session committed a write; the primary's WAL position after it was `lsn`.
    pub fn note_write(&self, lsn: Lsn) {
        self.last_write.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// The WAL position after the last write committed through the proxy (0: none yet).
    pub fn last_write(&self) -> Lsn {
        Lsn(self.last_write.load(Ordering::Acquire))
    }

    /// The primary's last polled `pg_current_wal_insert_lsn()`; 0 until the first check.
    pub fn primary_lsn(&self) -> Lsn {
        Lsn(self.primary_lsn.load(Ordering::Acquire))
    }

    /// Names (lower-case, unqualified) of user-defined VOLATILE functions (`pg_proc`,
    /// schemas other than `pg_catalog`/`information_schema`), refreshed periodically:
    /// the router treats calls to them as writes. Empty until the first refresh.
    pub fn write_functions(&self) -> Arc<HashSet<String>> {
        self.write_functions.load_full()
    }

    /// Publishes the primary's insert position.
    pub fn set_primary_lsn(&self, lsn: Lsn) {
        self.primary_lsn.store(lsn.0, Ordering::Release);
    }

    pub fn set_write_functions(&self, names: HashSet<String>) {
        self.write_functions.store(Arc::new(names));
    }
}
