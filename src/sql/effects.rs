//! What a statement leaves behind in the server session beyond its transaction. Under
//! transaction pooling such a session must keep its server connection (it is "pinned").

use super::lex::{Lexer, Token};

/// Why a session is pinned to its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// SET, RESET, set_config(…, false), SET ROLE/SESSION AUTHORIZATION, DISCARD.
    Setting,
    /// A temporary table, view or sequence.
    TemporaryObject,
    /// A session-level advisory lock.
    AdvisoryLock,
    Listen,
    /// A cursor declared WITH HOLD.
    HoldCursor,
    /// SQL-level PREPARE.
    SqlPrepare,
    /// LOAD of a shared library.
    Load,
    /// A statement too large to inspect: assumed to leave state behind.
    Unreadable,
    /// The pool is in session mode: every session keeps its connection.
    SessionMode,
}

impl PinReason {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Setting => "setting",
            PinReason::TemporaryObject => "temporary_object",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::Listen => "listen",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::Load => "load",
            PinReason::Unreadable => "unreadable",
            PinReason::SessionMode => "session_mode",
        }
    }
}

/// Session-level advisory lock functions (the `_xact_` ones end with the transaction).
const ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// The first reason, if any, why `sql` (one or more statements) pins a session.
/// Errs on the side of pinning: a false positive costs pooling, a miss leaks state.
pub fn pins(sql: &[u8]) -> Option<PinReason> {
    let tokens: Vec<Token> = Lexer::new(sql).collect();
    tokens
        .split(|t| *t == Token::Semicolon)
        .find_map(statement_pins)
}

fn statement_pins(tokens: &[Token]) -> Option<PinReason> {
    let first = tokens.first()?;
    let second = tokens.get(1);
    let word = |t: Option<&Token>, k: &str| t.is_some_and(|t| t.is_word(k));
    if first.is_word("set") {
        // SET LOCAL, SET TRANSACTION and SET CONSTRAINTS end with the transaction.
        let scoped = ["local", "transaction", "constraints"]
            .iter()
            .any(|k| word(second, k));
        if !scoped {
            return Some(PinReason::Setting);
        }
    }
    if first.is_word("reset") || first.is_word("discard") {
        return Some(PinReason::Setting);
    }
    if first.is_word("listen") {
        return Some(PinReason::Listen);
    }
    if first.is_word("prepare") {
        return Some(PinReason::SqlPrepare);
    }
    if first.is_word("load") {
        return Some(PinReason::Load);
    }
    // A DO block's body is a string: whatever it does is out of sight.
    if first.is_word("do") {
        return Some(PinReason::Unreadable);
    }
    if first.is_word("declare")
        && tokens
            .windows(2)
            .any(|w| w[0].is_word("with") && w[1].is_word("hold"))
    {
        return Some(PinReason::HoldCursor);
    }
    tokens.iter().enumerate().find_map(|(i, t)| {
        let previous = i.checked_sub(1).and_then(|p| tokens.get(p));
        let next = tokens.get(i + 1);
        if (t.is_word("temp") || t.is_word("temporary"))
            && (["create", "global", "local", "into", "unlogged"]
                .iter()
                .any(|k| word(previous, k))
                || ["table", "view", "sequence", "recursive"]
                    .iter()
                    .any(|k| word(next, k)))
        {
            return Some(PinReason::TemporaryObject);
        }
        let name = t.name()?;
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("pg_temp") {
            Some(PinReason::TemporaryObject)
        } else if ADVISORY_LOCKS.iter().any(|f| is(f)) {
            Some(PinReason::AdvisoryLock)
        } else if is("set_config") {
            Some(PinReason::Setting)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_pin() {
        let cases: &[(&str, Option<PinReason>)] = &[
            ("SELECT 1", None),
            ("UPDATE t SET x = 1 WHERE id = 2", None),
            ("SET search_path = a, b", Some(PinReason::Setting)),
            ("set statement_timeout to 5000", Some(PinReason::Setting)),
            ("SET LOCAL statement_timeout = 1", None),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
            ("SET CONSTRAINTS ALL DEFERRED", None),
            ("SET SESSION AUTHORIZATION bob", Some(PinReason::Setting)),
            ("SET ROLE bob", Some(PinReason::Setting)),
            ("RESET ALL", Some(PinReason::Setting)),
            ("DISCARD ALL", Some(PinReason::Setting)),
            (
                "SELECT set_config('app.x', '1', false)",
                Some(PinReason::Setting),
            ),
            (
                "SELECT pg_catalog.set_config('app.x', '1', true)",
                Some(PinReason::Setting),
            ),
            (
                "CREATE TEMP TABLE t (x int)",
                Some(PinReason::TemporaryObject),
            ),
            (
                "create temporary view v as select 1",
                Some(PinReason::TemporaryObject),
            ),
            (
                "CREATE GLOBAL TEMPORARY TABLE t (x int)",
                Some(PinReason::TemporaryObject),
            ),
            (
                "SELECT * INTO TEMP t FROM u",
                Some(PinReason::TemporaryObject),
            ),
            (
                "CREATE TABLE pg_temp.t (x int)",
                Some(PinReason::TemporaryObject),
            ),
            ("SELECT temp FROM weather WHERE temp > 30", None),
            ("SELECT pg_advisory_lock(1)", Some(PinReason::AdvisoryLock)),
            (
                "SELECT pg_try_advisory_lock_shared(1, 2)",
                Some(PinReason::AdvisoryLock),
            ),
            ("SELECT pg_advisory_xact_lock(1)", None),
            ("LISTEN jobs", Some(PinReason::Listen)),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                Some(PinReason::HoldCursor),
            ),
            ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", None),
            ("PREPARE q AS SELECT 1", Some(PinReason::SqlPrepare)),
            ("LOAD 'auto_explain'", Some(PinReason::Load)),
            (
                "DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$",
                Some(PinReason::Unreadable),
            ),
            ("SELECT 'SET x = 1; LISTEN y; CREATE TEMP TABLE z'", None),
            ("SELECT 1; SET a = 1", Some(PinReason::Setting)),
            ("/* SET a = 1 */ SELECT 1 -- LISTEN x", None),
            ("BEGIN; SELECT 1; COMMIT", None),
        ];
        for (sql, want) in cases {
            assert_eq!(pins(sql.as_bytes()), *want, "{sql}");
        }
    }
}
