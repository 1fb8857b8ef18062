//! Whether a server gets traffic, as a pure state machine with hysteresis: out after
//! `fail_after` bad checks in a row (or at once on a failure the data plane saw), back in
//! only after `recover_after` good checks in a row.

use std::fmt;
use std::time::Duration;

use super::error::MonitorError;

/// How many checks in a row flip a verdict. Zeros are treated as 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub fail_after: u32,
    pub recover_after: u32,
}

/// Where a server stands, with the length of the streak that could flip it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Not checked yet: the first check decides at once (there is no history to flap).
    #[default]
    Unknown,
    /// Usable; `bad` checks in a row so far.
    In { bad: u32 },
    /// Not usable; `good` checks in a row so far.
    Out { good: u32 },
}

/// A verdict flipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    ToUsable,
    ToUnusable,
}

impl Change {
    /// The `to` label of `pgstrata_replica_state_changes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::ToUsable => "usable",
            Change::ToUnusable => "unusable",
        }
    }
}

impl Verdict {
    pub fn is_usable(self) -> bool {
        matches!(self, Verdict::In { .. })
    }

    /// The verdict after one check; `good` = the check passed (reachable, right role,
    /// within lag limits).
    pub fn observe(self, good: bool, thresholds: Thresholds) -> (Verdict, Option<Change>) {
        let fail_after = thresholds.fail_after.max(1);
        let recover_after = thresholds.recover_after.max(1);
        match (self, good) {
            (Verdict::Unknown, true) => (Verdict::In { bad: 0 }, Some(Change::ToUsable)),
            (Verdict::Unknown, false) => (Verdict::Out { good: 0 }, Some(Change::ToUnusable)),
            (Verdict::In { .. }, true) => (Verdict::In { bad: 0 }, None),
            (Verdict::In { bad }, false) if bad + 1 >= fail_after => {
                (Verdict::Out { good: 0 }, Some(Change::ToUnusable))
            }
            (Verdict::In { bad }, false) => (Verdict::In { bad: bad + 1 }, None),
            (Verdict::Out { good }, true) if good + 1 >= recover_after => {
                (Verdict::In { bad: 0 }, Some(Change::ToUsable))
            }
            (Verdict::Out { good }, true) => (Verdict::Out { good: good + 1 }, None),
            (Verdict::Out { .. }, false) => (Verdict::Out { good: 0 }, None),
        }
    }

    /// The data plane saw a connect or I/O failure: out now, and the good streak restarts.
    pub fn fail_now(self) -> (Verdict, Option<Change>) {
        let change = match self {
            Verdict::Out { .. } => None,
            Verdict::Unknown | Verdict::In { .. } => Some(Change::ToUnusable),
        };
        (Verdict::Out { good: 0 }, change)
    }
}

/// Why a check counted as bad (logged when the verdict flips).
#[derive(Debug)]
pub enum Problem {
    /// Could not connect, timed out, or the query failed.
    CheckFailed(MonitorError),
    /// A replica that is not in recovery: promoted, or not a replica at all.
    NotInRecovery,
    /// A primary that is in recovery (a standby configured as the primary).
    InRecovery,
    /// Replay is further behind than `max_lag`.
    LagTime { lag: Duration, max: Duration },
    /// More WAL not replayed than `max_lag_bytes`.
    LagBytes { lag: u64, max: u64 },
    /// The data plane reported a connect or I/O failure.
    Reported,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CheckFailed(error) => write!(f, "check failed: {error}"),
            Problem::NotInRecovery => f.write_str("not in recovery (promoted or not a replica)"),
            Problem::InRecovery => f.write_str("in recovery (not a primary)"),
            Problem::LagTime { lag, max } => write!(f, "lag {lag:?} exceeds max_lag {max:?}"),
            Problem::LagBytes { lag, max } => {
                write!(f, "lag {lag} bytes exceeds max_lag_bytes {max}")
            }
            Problem::Reported => f.write_str("failure reported by the data plane"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        fail_after: 3,
        recover_after: 2,
    };

    #[test]
    fn transitions() {
        use Change::*;
        use Verdict::*;
        // (from, good, to, change)
        let cases = [
            (Unknown, true, In { bad: 0 }, Some(ToUsable)),
            (Unknown, false, Out { good: 0 }, Some(ToUnusable)),
            (In { bad: 0 }, true, In { bad: 0 }, None),
            (In { bad: 2 }, true, In { bad: 0 }, None),
            (In { bad: 0 }, false, In { bad: 1 }, None),
            (In { bad: 1 }, false, In { bad: 2 }, None),
            (In { bad: 2 }, false, Out { good: 0 }, Some(ToUnusable)),
            (Out { good: 0 }, false, Out { good: 0 }, None),
            (Out { good: 1 }, false, Out { good: 0 }, None),
            (Out { good: 0 }, true, Out { good: 1 }, None),
            (Out { good: 1 }, true, In { bad: 0 }, Some(ToUsable)),
        ];
        for (from, good, to, change) in cases {
            assert_eq!(
                from.observe(good, T),
                (to, change),
                "{from:?} + good={good}"
            );
        }
    }

    #[test]
    fn failure_reports_take_out_at_once() {
        use Verdict::*;
        let cases = [
            (Unknown, Some(Change::ToUnusable)),
            (In { bad: 0 }, Some(Change::ToUnusable)),
            (In { bad: 2 }, Some(Change::ToUnusable)),
            (Out { good: 1 }, None),
        ];
        for (from, change) in cases {
            assert_eq!(from.fail_now(), (Out { good: 0 }, change), "{from:?}");
        }
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let zero = Thresholds {
            fail_after: 0,
            recover_after: 0,
        };
        let (out, change) = Verdict::In { bad: 0 }.observe(false, zero);
        assert_eq!(
            (out, change),
            (Verdict::Out { good: 0 }, Some(Change::ToUnusable))
        );
        let (back, change) = out.observe(true, zero);
        assert_eq!(
            (back, change),
            (Verdict::In { bad: 0 }, Some(Change::ToUsable))
        );
    }

    #[test]
    fn a_walk_with_flapping_checks_stays_in() {
        // Bad checks never reach fail_after in a row: the server stays usable throughout.
        let mut verdict = Verdict::In { bad: 0 };
        for good in [false, false, true, false, false, true, false] {
            let (next, change) = verdict.observe(good, T);
            assert_eq!(change, None);
            verdict = next;
        }
        assert!(verdict.is_usable());
    }
}
