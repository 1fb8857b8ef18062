//! What the client tells the proxy itself: `/* pgstrata: ... */` hints in leading comments,
//! and the statements the proxy answers without a server (`SET pgstrata.route`, `EXPLAIN ROUTE`).

use std::ops::Range;

use super::kind::RouteTarget;
use crate::sql::lex::{Lexer, Token};

/// Hints read from a statement's leading comments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint {
    /// `route=primary|replica|any`; the last one given wins.
    pub route: Option<RouteTarget>,
    /// `explain`: the client asks how the statement was routed.
    pub explain: bool,
    /// Items in a pgstrata comment that were not understood, as written (callers may warn).
    pub unknown: Vec<String>,
}

/// A statement the proxy answers itself and never sends to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intercept {
    /// `SET [SESSION|LOCAL] pgstrata.route = ...`; `None` (DEFAULT, RESET) clears it.
    /// SET LOCAL is treated as SET: the proxy keeps no per-transaction setting.
    SetRoute(Option<RouteTarget>),
    /// `SHOW pgstrata.route`.
    ShowRoute,
    /// `EXPLAIN ROUTE <sql>`: the byte range of `<sql>` in the input.
    ExplainRoute(Range<usize>),
    /// A malformed one: the caller answers SQLSTATE 22023 with this message.
    Invalid(String),
}

const PREFIX: &[u8] = b"pgstrata:";

/// Reads `pgstrata:` hints from the comments before the first token.
pub fn leading_hint(sql: &[u8]) -> Hint {
    let mut hint = Hint::default();
    let mut lexer = Lexer::new(sql);
    while let Some(body) = lexer.next_comment() {
        let body = body.trim_ascii();
        if body.len() < PREFIX.len() || !body[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
            continue;
        }
        let text = String::from_utf8_lossy(&body[PREFIX.len()..]);
        for item in items(&text) {
            read_item(&item, &mut hint);
        }
    }
    hint
}

/// Splits `route = primary, explain` into `["route=primary", "explain"]`.
fn items(text: &str) -> Vec<String> {
    let mut joined = String::with_capacity(text.len());
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() && (joined.ends_with('=') || chars.peek() == Some(&'=')) {
            continue;
        }
        if c.is_whitespace() && chars.peek().is_some_and(|n| n.is_whitespace()) {
            continue;
        }
        joined.push(c);
    }
    joined
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn read_item(item: &str, hint: &mut Hint) {
    let (key, value) = item.split_once('=').unwrap_or((item, ""));
    match (key.to_ascii_lowercase().as_str(), value) {
        ("explain", "") => hint.explain = true,
        ("route", value) => match target(value) {
            Some(target) => hint.route = Some(target),
            None => hint.unknown.push(item.to_owned()),
        },
        _ => hint.unknown.push(item.to_owned()),
    }
}

fn target(value: &str) -> Option<RouteTarget> {
    [RouteTarget::Primary, RouteTarget::Replica, RouteTarget::Any]
        .into_iter()
        .find(|t| value.eq_ignore_ascii_case(t.as_str()))
}

/// The proxy's own statement, if `sql` is one (alone, with an optional trailing `;`).
pub fn intercept(sql: &[u8]) -> Option<Intercept> {
    // Every form names `route`: most statements are let through without a lexer pass.
    if !names_route(sql) {
        return None;
    }
    let mut lexer = Lexer::new(sql);
    let tokens: Vec<(Token, Range<usize>)> = std::iter::from_fn(|| lexer.next_spanned()).collect();
    if let [(first, _), (second, _), rest @ ..] = tokens.as_slice() {
        if first.is_word("explain") && second.is_word("route") {
            return Some(match rest.first() {
                Some((_, start)) => ExplainRoute(start.start..sql.len()),
                None => Invalid("EXPLAIN ROUTE needs a statement to explain".into()),
            });
        }
    }
    let statements: Vec<Vec<Token>> = tokens
        .split(|(t, _)| *t == Token::Semicolon)
        .filter(|s| !s.is_empty())
        .map(|s| s.iter().map(|(t, _)| *t).collect())
        .collect();
    let is_ours = |s: &[Token]| {
        statement(s).is_some() || s.len() >= 2 && s[0].is_word("explain") && s[1].is_word("route")
    };
    match statements.as_slice() {
        [only] => statement(only),
        many if many.iter().any(|s| is_ours(s)) => Some(alone()),
        _ => None,
    }
}

use Intercept::{ExplainRoute, Invalid};

/// Whether `route`, in any case, appears anywhere in `sql`. Found by its `ut`, rare in
/// SQL: first whether the pair occurs at all, in one pass with no early exit (which the
/// compiler turns into vector compares), then where.
fn names_route(sql: &[u8]) -> bool {
    let next = sql.get(1..).unwrap_or_default();
    let pairs = sql.iter().zip(next).fold(0u8, |found, (&a, &b)| {
        found | u8::from((a | 0x20) == b'u') & u8::from((b | 0x20) == b't')
    });
    pairs != 0
        && memchr::memchr2_iter(b'u', b'U', sql).any(|i| {
            i >= 2
                && sql
                    .get(i - 2..i + 3)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"route"))
        })
}

fn alone() -> Intercept {
    Invalid("SET, RESET, SHOW pgstrata.route and EXPLAIN ROUTE must be sent alone".into())
}

/// One statement's tokens: SET/RESET/SHOW of `pgstrata.route`.
fn statement(tokens: &[Token]) -> Option<Intercept> {
    let first = tokens.first()?;
    let mut at = 1;
    if first.is_word("set")
        && tokens
            .get(1)
            .is_some_and(|t| t.is_word("session") || t.is_word("local"))
    {
        at = 2;
    }
    let name = tokens.get(at..at + 3)?;
    let is_route =
        name[0].is_word("pgstrata") && name[1] == Token::Symbol(b'.') && name[2].is_word("route");
    if !is_route {
        return None;
    }
    let rest = &tokens[at + 3..];
    if first.is_word("reset") && at == 1 {
        return Some(if rest.is_empty() {
            Intercept::SetRoute(None)
        } else {
            Invalid(trailing())
        });
    }
    if first.is_word("show") && at == 1 {
        return Some(if rest.is_empty() {
            Intercept::ShowRoute
        } else {
            Invalid(trailing())
        });
    }
    if !first.is_word("set") {
        return None;
    }
    Some(set_value(rest))
}

fn trailing() -> String {
    "unexpected words after pgstrata.route".into()
}

/// What follows `SET pgstrata.route`: `= value`, `TO value`.
fn set_value(rest: &[Token]) -> Intercept {
    let value = match rest {
        [assign, value] if *assign == Token::Symbol(b'=') || assign.is_word("to") => value,
        _ => return Invalid("SET pgstrata.route needs = or TO and one value".into()),
    };
    if value.is_word("default") {
        return Intercept::SetRoute(None);
    }
    let text = match value {
        Token::Str(s) | Token::Word(s) => String::from_utf8_lossy(s).into_owned(),
        _ => String::new(),
    };
    match target(&text) {
        Some(target) => Intercept::SetRoute(Some(target)),
        None => Invalid(format!(
            "invalid value for parameter \"pgstrata.route\": \"{text}\" (expected primary, replica or any)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RouteTarget::*;

    #[test]
    fn hints() {
        let cases: &[(&str, Option<RouteTarget>, bool, &[&str])] = &[
            (
                "/* pgstrata: route=primary */ select 1",
                Some(Primary),
                false,
                &[],
            ),
            (
                "/*pgstrata:route=replica*/select 1",
                Some(Replica),
                false,
                &[],
            ),
            ("-- pgstrata: route = any\nselect 1", Some(Any), false, &[]),
            ("/* pgstrata: explain */ select 1", None, true, &[]),
            (
                "/* pgstrata: route=replica, explain */ select",
                Some(Replica),
                true,
                &[],
            ),
            (
                "/* pgstrata: explain route=primary */ select",
                Some(Primary),
                true,
                &[],
            ),
            (
                "/* app */ /* pgstrata: route=primary */ x",
                Some(Primary),
                false,
                &[],
            ),
            (
                "/* pgstrata: route=west, shard=2 */ x",
                None,
                false,
                &["route=west", "shard=2"],
            ),
            ("/* other: route=primary */ select", None, false, &[]),
            ("select 1 /* pgstrata: route=primary */", None, false, &[]),
            ("select '/* pgstrata: route=primary */'", None, false, &[]),
        ];
        for (sql, route, explain, unknown) in cases {
            let hint = leading_hint(sql.as_bytes());
            assert_eq!(hint.route, *route, "{sql}");
            assert_eq!(hint.explain, *explain, "{sql}");
            assert_eq!(hint.unknown, *unknown, "{sql}");
        }
    }

    #[test]
    fn finds_route_in_any_case_anywhere() {
        for sql in [
            "route",
            "x ROUTE",
            "pgstrata.Route;",
            "u rOuTe",
            "SHOW pgstrata.routE",
        ] {
            assert!(names_route(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "",
            "u",
            "uu",
            "ute",
            "rout",
            "SELECT abalance FROM pgbench_accounts",
            "r o u t e",
        ] {
            assert!(!names_route(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn intercepts() {
        let set = |t| Some(Intercept::SetRoute(t));
        let cases: &[(&str, Option<Intercept>)] = &[
            ("SET pgstrata.route = 'primary'", set(Some(Primary))),
            ("set pgstrata.route to replica;", set(Some(Replica))),
            ("SET SESSION pgstrata.route = 'ANY'", set(Some(Any))),
            ("SET LOCAL pgstrata.route TO primary", set(Some(Primary))),
            ("SET pgstrata.route = DEFAULT", set(None)),
            ("RESET pgstrata.route", set(None)),
            ("show pgstrata.route ;", Some(Intercept::ShowRoute)),
            ("/* c */ SHOW pgstrata.route", Some(Intercept::ShowRoute)),
            ("show PGSTRATA.Route", Some(Intercept::ShowRoute)),
            ("SHOW pgstrata.rOUTE", Some(Intercept::ShowRoute)),
            ("SET pgstrata.other = 1", None),
            ("SET search_path = a", None),
            ("SELECT 'SET pgstrata.route = x'", None),
            ("UPDATE t SET pgstrata.route = 1", None),
        ];
        for (sql, want) in cases {
            assert_eq!(intercept(sql.as_bytes()), *want, "{sql}");
        }
        let invalid = [
            "SET pgstrata.route = 'west'",
            "SET pgstrata.route = 1",
            "SET pgstrata.route",
            "SET pgstrata.route = primary replica",
            "SHOW pgstrata.route x",
            "SET pgstrata.route = primary; SELECT 1",
            "SELECT 1; RESET pgstrata.route",
            "SELECT 1; EXPLAIN ROUTE SELECT 2",
            "EXPLAIN ROUTE",
        ];
        for sql in invalid {
            assert!(
                matches!(intercept(sql.as_bytes()), Some(Intercept::Invalid(_))),
                "{sql}"
            );
        }
        let sql = b"explain route  SELECT 1; SELECT 2";
        let Some(Intercept::ExplainRoute(range)) = intercept(sql) else {
            panic!("not explain route");
        };
        assert_eq!(&sql[range], b"SELECT 1; SELECT 2");
    }
}
