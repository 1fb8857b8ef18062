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
    /// State on the server that a query can see go away (and the pin with it).
    pub fn is_state(self) -> bool {
        matches!(
            self,
            PinReason::TemporaryObject
                | PinReason::AdvisoryLock
                | PinReason::Listen
                | PinReason::HoldCursor
                | PinReason::SqlPrepare
        )
    }

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

/// What one or more statements do beyond their transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    /// The first reason the session must keep its server connection, if any.
    pub pin: Option<PinReason>,
    /// Run-time settings may have changed (SET, RESET, set_config): the proxy reads them
    /// back from the server after the transaction and carries them to later connections.
    pub settings: bool,
    /// Session state may have been removed (DROP, UNLISTEN, CLOSE, DEALLOCATE, DISCARD,
    /// advisory unlocks): a pinned session may be free again.
    pub may_clear: bool,
    /// DISCARD ALL or DEALLOCATE ALL: every prepared statement on the connection is gone.
    pub drops_statements: bool,
    /// Custom (dotted) settings named by SET or set_config: the server does not list them,
    /// so the proxy must ask for them by name.
    pub custom_settings: Vec<String>,
    /// A database the statement needs no one connected to (DROP DATABASE, CREATE DATABASE
    /// ... TEMPLATE): the proxy closes its idle pooled connections to it first.
    pub needs_unused: Option<String>,
    /// Tables, views or types may change shape (ALTER or DROP of one): statements
    /// prepared before may now fail with a changed result type. (Not CREATE OR REPLACE
    /// VIEW: the word "create" is in too many column names to be looked for.)
    pub reshapes: bool,
}

/// The first reason, if any, why `sql` (one or more statements) pins a session.
pub fn pins(sql: &[u8]) -> Option<PinReason> {
    effects(sql).pin
}

/// What `sql` does to the session. Errs on the side of pinning: a false positive costs
/// pooling, a miss leaks state.
pub fn effects(sql: &[u8]) -> Effects {
    if !may_have_effects(sql) {
        return Effects::default();
    }
    let tokens: Vec<Token> = Lexer::new(sql).collect();
    let mut effects = Effects::default();
    for statement in tokens.split(|t| *t == Token::Semicolon) {
        effects.settings |= changes_settings(statement);
        effects.may_clear |= clears_state(statement);
        effects.drops_statements |= drops_statements(statement);
        effects.reshapes |= reshapes(statement);
        custom_settings(statement, &mut effects.custom_settings);
        if effects.needs_unused.is_none() {
            effects.needs_unused = database_needed_unused(statement);
        }
        if effects.pin.is_none() {
            effects.pin = statement_pins(statement);
        }
    }
    effects
}

/// False when no run of identifier characters in `sql` (wherever it stands: in strings
/// and comments too) contains a word part the analysis below reacts to, and none is the
/// word `do`: `effects` would find nothing. True otherwise. (Most statements: this saves
/// lexing them.) One pass over pairs of bytes: only a letter followed by one that may
/// come next in a part is looked at further.
fn may_have_effects(sql: &[u8]) -> bool {
    let next = sql.get(1..).unwrap_or_default();
    sql.iter()
        .zip(next)
        .enumerate()
        .any(|(i, (&first, &second))| {
            let followers = FOLLOWERS[first as usize];
            followers != 0 && followers >> LETTER[second as usize] & 1 == 1 && part_at(sql, i)
        })
}

/// The first two letters of every part `part_at` looks for.
const PART_STARTS: [&[u8; 2]; 12] = [
    b"se", b"di", b"dr", b"de", b"do", b"li", b"lo", b"cl", b"pr", b"te", b"ad", b"al",
];

/// For each byte, in either case, a bit for each letter that follows it at the start of a
/// part (none for bytes that start none).
const FOLLOWERS: [u32; 256] = {
    let mut masks = [0u32; 256];
    let mut i = 0;
    while i < PART_STARTS.len() {
        let [a, b] = *PART_STARTS[i];
        masks[a as usize] |= 1 << (b - b'a');
        masks[a.to_ascii_uppercase() as usize] |= 1 << (b - b'a');
        i += 1;
    }
    masks
};

/// Each letter's index in the alphabet, either case; 31 (a bit no mask has) for every
/// other byte.
const LETTER: [u8; 256] = {
    let mut index = [31u8; 256];
    let mut b = b'a';
    while b <= b'z' {
        index[b as usize] = b - b'a';
        index[b.to_ascii_uppercase() as usize] = b - b'a';
        b += 1;
    }
    index
};

/// Whether a part the analysis reacts to starts at `sql[i]`.
fn part_at(sql: &[u8], i: usize) -> bool {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    let at = |part: &[u8]| {
        sql.get(i..i + part.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(part))
    };
    match sql[i].to_ascii_lowercase() {
        // SET, RESET, set_config, SET/RESET SESSION AUTHORIZATION
        b's' => at(b"set"),
        b'd' => {
            at(b"discard")
                || at(b"drop")
                || at(b"deallocate")
                || at(b"declare")
                || at(b"do")
                    && (i == 0 || !ident(sql[i - 1]))
                    && sql.get(i + 2).is_none_or(|b| !ident(*b))
        }
        // LISTEN, UNLISTEN, LOAD
        b'l' => at(b"listen") || at(b"load"),
        b'c' => at(b"close"),
        b'p' => at(b"prepare"),
        // TEMP, TEMPORARY, pg_temp
        b't' => at(b"temp"),
        // pg_advisory_lock…, pg_advisory_unlock…
        // pg_advisory_…, ALTER TABLE/VIEW/TYPE
        b'a' => at(b"advisory") || at(b"alter"),
        _ => false,
    }
}

fn clears_state(tokens: &[Token]) -> bool {
    let Some(first) = tokens.first() else {
        return false;
    };
    ["drop", "unlisten", "close", "deallocate", "discard"]
        .iter()
        .any(|k| first.is_word(k))
        || tokens.iter().any(|t| {
            t.name().is_some_and(|n| {
                // pg_advisory_unlock, _shared, _all
                n.len() >= 18 && n[..18].eq_ignore_ascii_case(b"pg_advisory_unlock")
            })
        })
}

/// `SET [SESSION] a.b ...`, `RESET a.b`, `set_config('a.b', ...)`.
fn custom_settings(tokens: &[Token], out: &mut Vec<String>) {
    let word_at = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) | Some(Token::QuotedIdent(w)) => Some(*w),
        _ => None,
    };
    if tokens
        .first()
        .is_some_and(|t| t.is_word("set") || t.is_word("reset"))
    {
        let start = if tokens.get(1).is_some_and(|t| t.is_word("session")) {
            2
        } else {
            1
        };
        // A custom setting's name has two or more dotted parts (`a.b`, `a.b.c`).
        let mut parts = Vec::new();
        let mut at = start;
        while let Some(part) = word_at(at) {
            parts.push(String::from_utf8_lossy(part).into_owned());
            if !matches!(tokens.get(at + 1), Some(Token::Symbol(b'.'))) {
                break;
            }
            at += 2;
        }
        if parts.len() >= 2 {
            out.push(parts.join("."));
        }
    }
    for window in tokens.windows(3) {
        if let [name, Token::Symbol(b'('), Token::Str(setting)] = window {
            if name
                .name()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"set_config"))
                && setting.contains(&b'.')
                && !setting.contains(&b'\'')
            {
                out.push(String::from_utf8_lossy(setting).into_owned());
            }
        }
    }
}

/// `DROP DATABASE [IF EXISTS] name` and `CREATE DATABASE ... TEMPLATE [=] name`: the
/// database PostgreSQL refuses to drop or copy while anyone else is connected to it.
fn database_needed_unused(tokens: &[Token]) -> Option<String> {
    let word = |i: usize, k: &str| tokens.get(i).is_some_and(|t| t.is_word(k));
    if word(0, "drop") && word(1, "database") {
        let at = if word(2, "if") && word(3, "exists") {
            4
        } else {
            2
        };
        return tokens.get(at).and_then(identifier);
    }
    if word(0, "create") && word(1, "database") {
        let at = (3..tokens.len()).find(|&i| word(i, "template"))? + 1;
        let at = if tokens.get(at) == Some(&Token::Symbol(b'=')) {
            at + 1
        } else {
            at
        };
        return tokens.get(at).and_then(identifier);
    }
    None
}

/// A database name as PostgreSQL reads it: unquoted words folded to lower case, quoted
/// ones as written (doubled quotes undone), and a string literal's text.
fn identifier(token: &Token) -> Option<String> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match token {
        Token::Word(w) => Some(text(w).to_ascii_lowercase()),
        Token::QuotedIdent(w) => Some(text(w).replace("\"\"", "\"")),
        Token::Str(s) => Some(text(s).replace("''", "'")),
        _ => None,
    }
}

/// `ALTER` or `DROP` of a table, view, type or domain.
fn reshapes(tokens: &[Token]) -> bool {
    let word = |i: usize, k: &str| tokens.get(i).is_some_and(|t| t.is_word(k));
    let object = |i: usize| {
        ["table", "view", "type", "domain", "materialized", "foreign"]
            .iter()
            .any(|k| word(i, k))
    };
    (word(0, "alter") || word(0, "drop")) && object(1)
}

fn drops_statements(tokens: &[Token]) -> bool {
    let first = tokens.first();
    let second = tokens.get(1);
    let word = |t: Option<&Token>, k: &str| t.is_some_and(|t| t.is_word(k));
    (word(first, "discard") && word(second, "all"))
        || (word(first, "deallocate")
            && (word(second, "all") || word(second, "prepare") && word(tokens.get(2), "all")))
}

fn changes_settings(tokens: &[Token]) -> bool {
    let Some(first) = tokens.first() else {
        return false;
    };
    let second = tokens.get(1);
    let word = |t: Option<&Token>, k: &str| t.is_some_and(|t| t.is_word(k));
    // SET LOCAL, SET TRANSACTION and SET CONSTRAINTS end with the transaction.
    let scoped = ["local", "transaction", "constraints"]
        .iter()
        .any(|k| word(second, k));
    (first.is_word("set") && !scoped)
        || first.is_word("reset")
        || first.is_word("discard")
        || tokens.iter().any(|t| {
            t.name()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"set_config"))
        })
}

fn statement_pins(tokens: &[Token]) -> Option<PinReason> {
    let first = tokens.first()?;
    let second = tokens.get(1);
    let third = tokens.get(2);
    let word = |t: Option<&Token>, k: &str| t.is_some_and(|t| t.is_word(k));
    let authorization = (first.is_word("set") || first.is_word("reset"))
        && (word(second, "session") && word(third, "authorization")
            || word(second, "session_authorization"));
    if authorization {
        return Some(PinReason::Setting);
    }
    // set_config with a name that is not a plain literal (a parameter, an E'' string):
    // the proxy cannot tell which setting to read back.
    let opaque_set_config = tokens.windows(3).any(|w| {
        w[0].name()
            .is_some_and(|n| n.eq_ignore_ascii_case(b"set_config"))
            && w[1] == Token::Symbol(b'(')
            && !matches!(w[2], Token::Str(_))
    });
    if opaque_set_config {
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
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_may_change_result_types_are_told() {
        for sql in [
            "ALTER TABLE t ADD COLUMN c int",
            "drop table if exists t",
            "DROP VIEW v",
            "ALTER TYPE mood ADD VALUE 'x'",
            "ALTER MATERIALIZED VIEW m RENAME TO n",
            "SELECT 1; ALTER TABLE t DROP COLUMN c",
        ] {
            assert!(effects(sql.as_bytes()).reshapes, "{sql}");
        }
        for sql in [
            "CREATE TABLE t (a int)",
            "CREATE INDEX ON t (a)",
            "ALTER ROLE r SET x = 1",
            "SELECT alter_table FROM t",
            "SELECT 'ALTER TABLE t'",
        ] {
            assert!(!effects(sql.as_bytes()).reshapes, "{sql}");
        }
    }

    #[test]
    fn statements_that_need_a_database_unused_name_it() {
        let cases: &[(&str, Option<&str>)] = &[
            ("DROP DATABASE regression", Some("regression")),
            ("drop database if exists \"Mixed\"\"Q\"", Some("Mixed\"Q")),
            ("DROP DATABASE IF EXISTS Upper WITH (FORCE)", Some("upper")),
            ("CREATE DATABASE copy TEMPLATE = tmpl", Some("tmpl")),
            (
                "CREATE DATABASE copy WITH OWNER app TEMPLATE 'quoted'",
                Some("quoted"),
            ),
            ("CREATE DATABASE template_two", None),
            ("CREATE DATABASE x TEMPLATE template0", Some("template0")),
            ("SELECT 1; DROP DATABASE later", Some("later")),
            ("DROP TABLE database", None),
            ("SELECT 'drop database x'", None),
        ];
        for (sql, want) in cases {
            assert_eq!(
                effects(sql.as_bytes()).needs_unused.as_deref(),
                *want,
                "{sql}"
            );
        }
    }

    #[test]
    fn statements_without_trigger_words_skip_the_analysis() {
        // (SQL, passes the filter): either way, no effects.
        let cases: &[(&str, bool)] = &[
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
                false,
            ),
            ("INSERT INTO t VALUES (1, 'x')", false),
            ("SELECT 1 AS done, docs FROM dogs", false),
            ("SELECT download FROM t", true),
            (
                "UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 3",
                true,
            ),
            ("SELECT * FROM t OFFSET 10", true),
        ];
        for (sql, passes) in cases {
            assert_eq!(may_have_effects(sql.as_bytes()), *passes, "{sql}");
            assert_eq!(effects(sql.as_bytes()), Effects::default(), "{sql}");
        }
    }

    /// The filter finds a part wherever one starts, as a plain look at every position would.
    #[test]
    fn the_filter_agrees_with_a_look_at_every_position() {
        use rand::{Rng, SeedableRng};
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        // The word parts the analysis reacts to (see `part_at`).
        let parts = [
            "do",
            "set",
            "discard",
            "drop",
            "deallocate",
            "declare",
            "listen",
            "load",
            "close",
            "prepare",
            "temp",
            "advisory",
            "alter",
        ];
        let by_hand = |sql: &[u8]| {
            (0..sql.len()).any(|i| {
                parts.iter().any(|part| {
                    let end = i + part.len();
                    sql.get(i..end)
                        .is_some_and(|s| s.eq_ignore_ascii_case(part.as_bytes()))
                        && (*part != "do"
                            || (i == 0 || !ident(sql[i - 1]))
                                && sql.get(end).is_none_or(|b| !ident(*b)))
                })
            })
        };
        // Parts, pieces of them, letters and separators run together, so that parts, near
        // misses, overlaps and `do` inside and outside words all come up.
        let pieces: &[&[u8]] = &[
            b"do",
            b"DO",
            b"d",
            b"o",
            b"se",
            b"SeT",
            b"t",
            b"emp",
            b"te",
            b"drop",
            b"dis",
            b"card",
            b"de",
            b"alloc",
            b"ate",
            b"clare",
            b"lis",
            b"ten",
            b"lo",
            b"ad",
            b"vis",
            b"ory",
            b"al",
            b"ter",
            b"cl",
            b"ose",
            b"pre",
            b"pare",
            b"_",
            b" ",
            b";",
            b"'",
            b"(",
            b"$",
            b"x",
            b"\xc3\xa9",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut found = 0;
        for _ in 0..20_000 {
            let mut sql = Vec::new();
            for _ in 0..rng.random_range(0..6) {
                sql.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
            }
            let expected = by_hand(&sql);
            found += usize::from(expected);
            assert_eq!(
                may_have_effects(&sql),
                expected,
                "{:?}",
                String::from_utf8_lossy(&sql)
            );
        }
        // Both answers came up often.
        assert!((2_000..18_000).contains(&found), "{found}");
    }

    /// Every statement the other tests give effects to passes the filter.
    #[test]
    fn the_filter_never_hides_an_effect() {
        let corpus = [
            "SET search_path = a, b",
            "set statement_timeout to 5000",
            "SET ROLE bob",
            "RESET ALL",
            "SELECT 1; RESET work_mem",
            "SELECT set_config('app.x', '1', false)",
            "SELECT pg_catalog.set_config('app.x', '1', true)",
            "DROP TABLE scratch",
            "UNLISTEN *",
            "SELECT pg_advisory_unlock(1)",
            "SELECT pg_advisory_unlock_all()",
            "CLOSE c",
            "DISCARD ALL",
            "DEALLOCATE ALL",
            "DEALLOCATE PREPARE ALL",
            "SET SESSION AUTHORIZATION bob",
            "RESET SESSION AUTHORIZATION",
            "SELECT set_config($1, $2, false)",
            "SELECT set_config(E'app.x', '1', false)",
            "LISTEN chan",
            "PREPARE p AS SELECT 1",
            "LOAD 'auto_explain'",
            "DO $$ BEGIN END $$",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "CREATE TEMP TABLE t (x int)",
            "CREATE TEMPORARY TABLE t (x int)",
            "SELECT * INTO TEMP t FROM u",
            "CREATE TABLE pg_temp.t (x int)",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_try_advisory_lock_shared(7)",
            "SELECT 1set_config('a.b', 'c', false)",
            "Set/**/x=1",
            "\"SET\" x",
        ];
        for sql in corpus {
            assert!(may_have_effects(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn statements_that_change_settings() {
        let cases: &[(&str, bool)] = &[
            ("SET search_path = a, b", true),
            ("set statement_timeout to 5000", true),
            ("SET ROLE bob", true),
            ("RESET ALL", true),
            ("SELECT 1; RESET work_mem", true),
            ("SELECT set_config('app.x', '1', false)", true),
            ("SELECT pg_catalog.set_config('app.x', '1', true)", true),
            ("SET LOCAL statement_timeout = 1", false),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", false),
            ("SET CONSTRAINTS ALL DEFERRED", false),
            ("UPDATE t SET x = 1", false),
            ("SELECT 'set x = 1'", false),
        ];
        for (sql, want) in cases {
            let got = effects(sql.as_bytes());
            assert_eq!(got.settings, *want, "{sql}");
            assert_eq!(got.pin, None, "{sql}");
        }
    }

    #[test]
    fn custom_setting_names_are_collected() {
        let got = effects(
            b"SET app.tenant = 'x'; SET SESSION My.Thing TO 1; SELECT set_config('app.user', '7', false); SET search_path = a; RESET app.other; SET custom.my.qualified.guc = 'foo'",
        );
        assert_eq!(
            got.custom_settings,
            vec![
                "app.tenant",
                "My.Thing",
                "app.user",
                "app.other",
                "custom.my.qualified.guc"
            ]
        );
    }

    #[test]
    fn statements_that_may_clear_state() {
        let cases: &[(&str, bool, bool)] = &[
            ("DROP TABLE scratch", true, false),
            ("UNLISTEN *", true, false),
            ("SELECT pg_advisory_unlock(1)", true, false),
            ("SELECT pg_advisory_unlock_all()", true, false),
            ("CLOSE c", true, false),
            ("DISCARD ALL", true, true),
            ("DEALLOCATE ALL", true, true),
            ("DEALLOCATE PREPARE ALL", true, true),
            ("DEALLOCATE q", true, false),
            ("SELECT 1", false, false),
        ];
        for (sql, clears, drops) in cases {
            let got = effects(sql.as_bytes());
            assert_eq!(
                (got.may_clear, got.drops_statements),
                (*clears, *drops),
                "{sql}"
            );
        }
    }

    #[test]
    fn statements_that_pin() {
        let cases: &[(&str, Option<PinReason>)] = &[
            ("SELECT 1", None),
            ("UPDATE t SET x = 1 WHERE id = 2", None),
            ("SET search_path = a, b", None),
            ("SET SESSION AUTHORIZATION bob", Some(PinReason::Setting)),
            ("RESET SESSION AUTHORIZATION", Some(PinReason::Setting)),
            ("DISCARD ALL", None),
            ("SELECT set_config($1, $2, false)", Some(PinReason::Setting)),
            (
                "SELECT set_config(E'app.x', '1', false)",
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
            (
                "SELECT 1; SET SESSION AUTHORIZATION DEFAULT",
                Some(PinReason::Setting),
            ),
            ("/* SET a = 1 */ SELECT 1 -- LISTEN x", None),
            ("BEGIN; SELECT 1; COMMIT", None),
        ];
        for (sql, want) in cases {
            assert_eq!(pins(sql.as_bytes()), *want, "{sql}");
        }
    }
}
