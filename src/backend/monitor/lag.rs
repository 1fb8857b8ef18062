//! Replication lag from one replica check and the primary's last WAL insert position, and
//! whether it breaks the replica's limits. Pure: no clocks, no sockets.

use std::time::{Duration, Instant};

use super::lsn::Lsn;
use super::verdict::Problem;

/// WAL page size (PostgreSQL's default `XLOG_BLCKSZ`).
const WAL_PAGE: u64 = 8192;
/// The longest WAL page header (`SizeOfXLogLongPHD`, at the start of a segment).
const WAL_PAGE_HEADER_MAX: u64 = 40;

/// What one replica check returned.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplicaSample {
    pub in_recovery: bool,
    /// `pg_last_wal_replay_lsn()`.
    pub replay: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()`.
    pub receive: Option<Lsn>,
    /// The replica's clock minus `pg_last_xact_replay_timestamp()`; `None` before the first
    /// replayed transaction.
    pub replay_age: Option<Duration>,
}

/// A replica's configured limits; `None` = no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LagLimits {
    pub max_lag: Option<Duration>,
    pub max_lag_bytes: Option<u64>,
}

/// Measured lag; `None` where it cannot be known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    pub time: Option<Duration>,
    pub bytes: Option<u64>,
}

/// Has a replica that replayed up to `replay` seen everything up to the primary's insert
/// position? At a page start the insert position points past the page header, which is
/// not a record: a replica parked at the page boundary is caught up too.
pub fn caught_up(replay: Lsn, primary: Lsn) -> bool {
    let offset = primary.0 % WAL_PAGE;
    let reached = match offset <= WAL_PAGE_HEADER_MAX {
        true => primary.0 - offset,
        false => primary.0,
    };
    replay.0 >= reached
}

/// The lag of a replica at `sample` behind a primary last seen at `primary` (`Lsn::ZERO` =
/// not polled yet). A replica that has replayed the primary's position has no lag, however
/// old its last replayed transaction (an idle primary must not look like lag).
pub fn measure(sample: &ReplicaSample, primary: Lsn) -> Lag {
    let known = sample.replay.filter(|_| !primary.is_zero());
    match known {
        Some(replay) if caught_up(replay, primary) => Lag {
            time: Some(Duration::ZERO),
            bytes: Some(0),
        },
        Some(replay) => Lag {
            time: sample.replay_age,
            bytes: Some(primary.bytes_since(replay)),
        },
        None => Lag {
            time: sample.replay_age,
            bytes: None,
        },
    }
}

/// The time lag, bounded by how long the replica has been behind at all (`behind_since`,
/// kept by the caller across checks). The age of the last replayed transaction alone
/// overstates lag after an idle spell: the first new write would make a replica look as
/// far behind as the primary was idle. Behind for 5 ms, it lags at most 5 ms.
pub fn bounded_by_time_behind(lag: Lag, behind_since: &mut Option<Instant>, now: Instant) -> Lag {
    if lag.bytes == Some(0) {
        *behind_since = None;
        return lag;
    }
    let since = *behind_since.get_or_insert(now);
    Lag {
        time: lag
            .time
            .map(|t| t.min(now.saturating_duration_since(since))),
        ..lag
    }
}

/// Why this check is bad, if it is. A lag that cannot be measured breaks no limit: only a
/// known lag takes a replica out.
pub fn judge(sample: &ReplicaSample, lag: &Lag, limits: &LagLimits) -> Option<Problem> {
    if !sample.in_recovery {
        return Some(Problem::NotInRecovery);
    }
    if let (Some(lag), Some(max)) = (lag.time, limits.max_lag) {
        if lag > max {
            return Some(Problem::LagTime { lag, max });
        }
    }
    match (lag.bytes, limits.max_lag_bytes) {
        (Some(lag), Some(max)) if lag > max => Some(Problem::LagBytes { lag, max }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(replay: u64, age_ms: Option<u64>) -> ReplicaSample {
        ReplicaSample {
            in_recovery: true,
            replay: Some(Lsn(replay)),
            receive: Some(Lsn(replay)),
            replay_age: age_ms.map(Duration::from_millis),
        }
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn time_lag_is_bounded_by_how_long_the_replica_has_been_behind() {
        let t0 = Instant::now();
        let mut since = None;
        let behind = |age| Lag {
            time: ms(age),
            bytes: Some(100),
        };
        // Idle for an hour, then one write: 0 ms behind, not an hour.
        assert_eq!(
            bounded_by_time_behind(behind(3_600_000), &mut since, t0).time,
            ms(0)
        );
        let later = t0 + Duration::from_millis(50);
        assert_eq!(
            bounded_by_time_behind(behind(3_600_000), &mut since, later).time,
            ms(50)
        );
        // Under steady load the replayed transaction's age is the smaller bound.
        assert_eq!(
            bounded_by_time_behind(behind(20), &mut since, later).time,
            ms(20)
        );
        // Caught up: the clock restarts.
        let caught_up = Lag {
            time: ms(0),
            bytes: Some(0),
        };
        assert_eq!(
            bounded_by_time_behind(caught_up, &mut since, later),
            caught_up
        );
        assert_eq!(since, None);
    }

    #[test]
    fn measures_lag() {
        let page = WAL_PAGE;
        // (replay, age ms, primary, expected time, expected bytes)
        let cases = [
            // Caught up: no lag even though the last transaction is an hour old.
            (5000, Some(3_600_000), 5000, ms(0), Some(0)),
            (6000, Some(3_600_000), 5000, ms(0), Some(0)),
            // Parked at a page boundary while the primary points past the page header.
            (3 * page, Some(900), 3 * page + 24, ms(0), Some(0)),
            (3 * page, Some(900), 3 * page + 40, ms(0), Some(0)),
            (3 * page, Some(900), 3 * page + 48, ms(900), Some(48)),
            // Behind: bytes from the positions, time from the last replayed commit.
            (4000, Some(250), 5000, ms(250), Some(1000)),
            (4000, None, 5000, None, Some(1000)),
            // Primary not polled yet: bytes unknown.
            (4000, Some(250), 0, ms(250), None),
        ];
        for (replay, age, primary, time, bytes) in cases {
            let lag = measure(&sample(replay, age), Lsn(primary));
            assert_eq!(
                lag,
                Lag { time, bytes },
                "replay {replay} primary {primary}"
            );
        }
    }

    #[test]
    fn judges_limits() {
        let limits = LagLimits {
            max_lag: ms(100),
            max_lag_bytes: Some(1000),
        };
        let lag = |time: Option<Duration>, bytes: Option<u64>| Lag { time, bytes };
        let ok = sample(1, None);
        assert!(judge(&ok, &lag(ms(100), Some(1000)), &limits).is_none());
        assert!(judge(&ok, &lag(None, None), &limits).is_none());
        assert!(matches!(
            judge(&ok, &lag(ms(101), Some(0)), &limits),
            Some(Problem::LagTime { .. })
        ));
        assert!(matches!(
            judge(&ok, &lag(ms(0), Some(1001)), &limits),
            Some(Problem::LagBytes {
                lag: 1001,
                max: 1000
            })
        ));
        assert!(judge(&ok, &lag(ms(10_000), Some(u64::MAX)), &LagLimits::default()).is_none());
        let promoted = ReplicaSample {
            in_recovery: false,
            ..ok
        };
        assert!(matches!(
            judge(&promoted, &lag(ms(0), Some(0)), &LagLimits::default()),
            Some(Problem::NotInRecovery)
        ));
    }
}
