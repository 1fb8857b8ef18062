//! Choosing a replica for a read: weighted least-outstanding, lock-free.
//!
//! Among usable replicas that replayed the read's floor, the lowest `outstanding / weight`
//! wins (compared by cross-multiplying); replicas tied on it (as when nothing is in
//! flight) share the read in proportion to their weights, by a rotating ticket.

use std::sync::atomic::Ordering;

use super::health::{ClusterHealth, ServerHealth};
use super::lsn::Lsn;

/// A candidate's load: requests in flight and weight.
#[derive(Clone, Copy)]
struct Load {
    outstanding: u128,
    weight: u128,
}

impl Load {
    fn of(server: &ServerHealth) -> Load {
        Load {
            outstanding: server.outstanding().load(Ordering::Relaxed) as u128,
            weight: u128::from(server.weight.max(1)),
        }
    }

    /// `self.outstanding / self.weight` against `other`'s, without division.
    fn cmp(self, other: Load) -> std::cmp::Ordering {
        (self.outstanding * other.weight).cmp(&(other.outstanding * self.weight))
    }
}

impl ClusterHealth {
    /// Picks a replica for a read needing `floor` (the session's read-your-writes LSN;
    /// `Lsn(0)` = none): a usable replica whose replay LSN is at least `floor`. `None` if
    /// none fits (the caller reads from the primary).
    pub fn pick_replica(&self, floor: Lsn) -> Option<usize> {
        // A floor read as an insert position may point past a page header that no record
        // fills yet: a replica parked at that page's start has replayed it.
        let fits = |server: &ServerHealth| {
            server.is_usable() && super::lag::caught_up(server.replay_lsn(), floor)
        };
        // First pass: the lowest load, and the total weight of the replicas sharing it.
        let mut best: Option<(usize, Load)> = None;
        let mut tied_weight = 0u128;
        for (index, server) in self.replicas.iter().enumerate() {
            if !fits(server) {
                continue;
            }
            let load = Load::of(server);
            match best.map(|(_, best)| load.cmp(best)) {
                None | Some(std::cmp::Ordering::Less) => {
                    best = Some((index, load));
                    tied_weight = load.weight;
                }
                Some(std::cmp::Ordering::Equal) => tied_weight += load.weight,
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        let (first, low) = best?;
        // Second pass: the ticket's slot among the tied replicas' weights. Loads may have
        // moved since the first pass; then the first pass's choice stands.
        let ticket = self.ticket.fetch_add(1, Ordering::Relaxed) as u128;
        let mut slot = ticket % tied_weight.max(1);
        for (index, server) in self.replicas.iter().enumerate() {
            if !fits(server) {
                continue;
            }
            let load = Load::of(server);
            if load.cmp(low) != std::cmp::Ordering::Equal {
                continue;
            }
            if slot < load.weight {
                return Some(index);
            }
            slot -= load.weight;
        }
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::monitor::health::{Check, Role};
    use crate::backend::monitor::verdict::{Problem, Thresholds};
    use crate::rules::ServerAddr;

    const T: Thresholds = Thresholds {
        fail_after: 1,
        recover_after: 1,
    };

    fn server(port: u16, weight: u32, replay: u64, usable: bool) -> Arc<ServerHealth> {
        let addr = ServerAddr {
            host: "127.0.0.1".into(),
            port,
        };
        let health = ServerHealth::new("test", Role::Replica, addr, weight, T);
        health.record(Check {
            replay: Some(Lsn(replay)),
            problem: (!usable).then_some(Problem::NotInRecovery),
            ..Check::default()
        });
        Arc::new(health)
    }

    fn cluster(replicas: Vec<Arc<ServerHealth>>) -> ClusterHealth {
        ClusterHealth::new("test", server(1, 1, 0, true), replicas)
    }

    fn counts(cluster: &ClusterHealth, floor: Lsn, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; cluster.replicas.len()];
        for _ in 0..picks {
            if let Some(index) = cluster.pick_replica(floor) {
                counts[index] += 1;
            }
        }
        counts
    }

    #[test]
    fn floor_and_usable_filter() {
        let c = cluster(vec![
            server(2, 1, 100, true),
            server(3, 1, 500, true),
            server(4, 1, 900, false),
        ]);
        // (floor, replicas that may be picked)
        let cases: [(u64, &[usize]); 5] = [
            (0, &[0, 1]),
            (100, &[0, 1]),
            (101, &[1]),
            (500, &[1]),
            (501, &[]),
        ];
        for (floor, allowed) in cases {
            let counts = counts(&c, Lsn(floor), 20);
            for (index, count) in counts.iter().enumerate() {
                assert_eq!(
                    *count > 0,
                    allowed.contains(&index),
                    "floor {floor}: {counts:?}"
                );
            }
        }
        assert_eq!(c.pick_replica(Lsn(501)), None);
        assert_eq!(cluster(Vec::new()).pick_replica(Lsn::ZERO), None);
    }

    #[test]
    fn idle_replicas_share_by_weight() {
        let c = cluster(vec![server(2, 3, 10, true), server(3, 1, 10, true)]);
        assert_eq!(counts(&c, Lsn::ZERO, 400), [300, 100]);
    }

    #[test]
    fn fewest_outstanding_per_weight_wins() {
        let c = cluster(vec![server(2, 2, 10, true), server(3, 1, 10, true)]);
        // 3 in flight on weight 2 (1.5 each) against 1 on weight 1: the second wins.
        c.replicas[0].outstanding().store(3, Ordering::Relaxed);
        c.replicas[1].outstanding().store(1, Ordering::Relaxed);
        assert_eq!(counts(&c, Lsn::ZERO, 10), [0, 10]);
        // 2 on weight 2 against 1 on weight 1: tied, shared 2:1.
        c.replicas[0].outstanding().store(2, Ordering::Relaxed);
        assert_eq!(counts(&c, Lsn::ZERO, 30), [20, 10]);
    }

    #[test]
    fn unusable_after_reported_failure_until_a_good_check() {
        let c = cluster(vec![server(2, 1, 10, true)]);
        assert_eq!(c.pick_replica(Lsn::ZERO), Some(0));
        c.replicas[0].report_failure();
        assert_eq!(c.pick_replica(Lsn::ZERO), None);
        c.replicas[0].record(Check::default());
        assert_eq!(c.pick_replica(Lsn::ZERO), Some(0));
    }
}
