//! What a statement string does, for routing: its kind, whether it writes, whether it opens
//! a transaction, the tables and functions it names. Each statement is parsed on its own
//! with sqlparser; what it cannot read is judged by the lexer (`fallback`) or is a write.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::fingerprint::fingerprint;
use super::kind::StatementKind;
use super::{fallback, statement};
use crate::sql::lex::{Lexer, Token};

/// Whether a statement may run on a replica, judged from its structure alone (functions
/// called are judged in `Router::decide`, where the write-function list is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified statement string. Depends on nothing but the fingerprint: two strings that
/// differ only in literals classify alike, so this is cached by `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Of the first statement that is not transaction control, else of the first.
    pub kind: StatementKind,
    /// Write if any statement writes.
    pub access: Access,
    /// `Some(read_only)` if a statement opens a transaction or sets its access mode.
    pub begins: Option<bool>,
    pub statements: usize,
    /// Lower-case unless quoted, as written: `t` or `s.t`; no duplicates.
    pub tables_read: Vec<String>,
    pub tables_written: Vec<String>,
    /// Every function called anywhere: lower-case, unqualified, no duplicates.
    pub functions: Vec<String>,
    /// False when some statement could not be read: then `access` is Write, the result
    /// cache must not keep it, and its tables and functions may be incomplete.
    pub parsed: bool,
    /// The fingerprint's normalized text, which rules' `sql:` patterns search.
    pub normalized: Arc<str>,
    /// The fingerprint's hash.
    pub hash: u128,
}

impl Classified {
    /// What nobody could read (invalid UTF-8, say): a write, unparsed.
    pub fn unparsed(normalized: Arc<str>, hash: u128) -> Classified {
        let mut judged = Judged::new(StatementKind::Other, Access::Write);
        judged.parsed = false;
        combine(vec![judged], normalized, hash)
    }
}

/// One statement's judgement.
#[derive(Debug)]
pub(crate) struct Judged {
    pub(crate) kind: StatementKind,
    pub(crate) access: Access,
    pub(crate) begins: Option<bool>,
    pub(crate) parsed: bool,
    pub(crate) tables_read: Vec<String>,
    pub(crate) tables_written: Vec<String>,
    pub(crate) functions: Vec<String>,
}

impl Judged {
    pub(crate) fn new(kind: StatementKind, access: Access) -> Judged {
        Judged {
            kind,
            access,
            begins: None,
            parsed: true,
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            functions: Vec::new(),
        }
    }
}

/// Classifies `sql` (one or more statements).
pub fn classify(sql: &str) -> Classified {
    let fp = fingerprint(sql.as_bytes());
    classify_with(sql, fp.normalized.into(), fp.hash)
}

/// Classifies `sql` whose fingerprint is already known.
pub(crate) fn classify_with(sql: &str, normalized: Arc<str>, hash: u128) -> Classified {
    let judged = split(sql.as_bytes())
        .into_iter()
        .flat_map(|(range, tokens)| {
            // Token boundaries fall between characters; `get` keeps that an assumption.
            let text = sql.get(range).unwrap_or_default();
            match Parser::parse_sql(&PostgreSqlDialect {}, text) {
                Ok(statements) if !statements.is_empty() => {
                    statements.iter().map(statement::judge).collect()
                }
                _ => vec![fallback::judge(&tokens)],
            }
        })
        .collect();
    combine(judged, normalized, hash)
}

/// The statements of `sql`: each one's byte range and tokens; empty ones left out.
fn split(sql: &[u8]) -> Vec<(Range<usize>, Vec<Token<'_>>)> {
    let mut statements = Vec::new();
    let mut current: Option<(Range<usize>, Vec<Token>)> = None;
    let mut lexer = Lexer::new(sql);
    while let Some((token, span)) = lexer.next_spanned() {
        if token == Token::Semicolon {
            statements.extend(current.take());
            continue;
        }
        let (range, tokens) = current.get_or_insert_with(|| (span.start..span.end, Vec::new()));
        range.end = span.end;
        tokens.push(token);
    }
    statements.extend(current);
    statements
}

fn combine(judged: Vec<Judged>, normalized: Arc<str>, hash: u128) -> Classified {
    let kind = judged
        .iter()
        .map(|j| j.kind)
        .find(|k| *k != StatementKind::Transaction)
        .or_else(|| judged.first().map(|j| j.kind))
        .unwrap_or(StatementKind::Other);
    let access = match judged.iter().any(|j| j.access == Access::Write) {
        true => Access::Write,
        false => Access::Read,
    };
    let mut classified = Classified {
        kind,
        access,
        begins: judged.iter().find_map(|j| j.begins),
        statements: judged.len(),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        functions: Vec::new(),
        parsed: judged.iter().all(|j| j.parsed),
        normalized,
        hash,
    };
    for j in judged {
        extend_unique(&mut classified.tables_read, j.tables_read);
        extend_unique(&mut classified.tables_written, j.tables_written);
        extend_unique(&mut classified.functions, j.functions);
    }
    if !classified.parsed {
        classified.access = Access::Write;
    }
    classified
}

fn extend_unique(into: &mut Vec<String>, items: Vec<String>) {
    for item in items {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
