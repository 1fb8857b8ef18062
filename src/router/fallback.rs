//! Statements sqlparser cannot read, judged by their first words where that is unambiguous
//! and safe (`RESET`, `LOCK`, `CLUSTER`, `DO`, `COPY ... FROM STDIN`, ...); else writes.

use super::classify::{Access, Judged};
use super::kind::StatementKind as Kind;
use crate::sql::lex::Token;

/// The kind a statement starting with `word` (lower-case) has.
pub(crate) fn keyword_kind(word: &str) -> Kind {
    match word {
        "select" | "values" | "table" | "with" | "declare" => Kind::Select,
        "show" => Kind::Show,
        "explain" => Kind::Explain,
        "insert" => Kind::Insert,
        "update" => Kind::Update,
        "delete" => Kind::Delete,
        "merge" => Kind::Merge,
        "copy" => Kind::Copy,
        "create" | "alter" | "drop" | "comment" | "grant" | "revoke" | "security" | "import" => {
            Kind::Ddl
        }
        "truncate" => Kind::Truncate,
        "lock" => Kind::Lock,
        "vacuum" | "analyze" | "analyse" | "cluster" | "reindex" | "checkpoint" | "refresh" => {
            Kind::Maintenance
        }
        "listen" | "unlisten" => Kind::Listen,
        "notify" => Kind::Notify,
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            Kind::Transaction
        }
        "set" | "reset" => Kind::Set,
        "call" | "do" => Kind::Call,
        "prepare" | "execute" | "deallocate" => Kind::Prepared,
        _ => Kind::Other,
    }
}

/// Judges one statement's tokens without a parse.
pub(crate) fn judge(tokens: &[Token]) -> Judged {
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) => String::from_utf8_lossy(w).to_ascii_lowercase(),
        _ => String::new(),
    };
    let has = |keyword: &str| tokens.iter().any(|t| t.is_word(keyword));
    let first = word(0);
    let kind = keyword_kind(&first);
    let mut judged = Judged::new(kind, Access::Write);
    match first.as_str() {
        "show" | "discard" | "fetch" | "move" | "close" | "deallocate" | "table" => {
            judged.access = Access::Read;
        }
        // SET/RESET SESSION AUTHORIZATION and unreadable transaction modes stay writes.
        "set" | "reset" => {
            if !has("authorization") && !has("session_authorization") && !has("transaction") {
                judged.access = Access::Read;
            }
        }
        // Two-phase commit (PREPARE TRANSACTION, COMMIT PREPARED) belongs to the primary.
        "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            if !has("prepared") {
                judged.access = Access::Read;
            }
        }
        "begin" | "start" => {
            let read_only = last_access_mode(tokens) == Some(true);
            judged.begins = Some(read_only);
            if read_only {
                judged.access = Access::Read;
            }
        }
        "prepare" if word(1) == "transaction" => judged.kind = Kind::Transaction,
        "lock" | "vacuum" | "analyze" | "analyse" | "cluster" | "reindex" | "checkpoint"
        | "refresh" | "listen" | "unlisten" | "notify" | "do" | "call" | "load" | "prepare"
        | "execute" | "create" | "alter" | "drop" | "comment" | "grant" | "revoke" | "security"
        | "import" | "truncate" | "copy" => {}
        // A query or DML we cannot read: its tables and functions are unknown.
        _ => judged.parsed = false,
    }
    match first.as_str() {
        "table" => judged.tables_read.extend(table_after(tokens, 1)),
        "copy" => judged.tables_written.extend(table_after(tokens, 1)),
        "lock" | "truncate" => {
            let at = if word(1) == "table" { 2 } else { 1 };
            judged.tables_written.extend(table_after(tokens, at));
        }
        _ => {}
    }
    judged
}

/// `READ ONLY` / `READ WRITE`, the last one winning.
fn last_access_mode(tokens: &[Token]) -> Option<bool> {
    tokens.windows(2).rev().find_map(|w| match w {
        [read, mode] if read.is_word("read") && mode.is_word("only") => Some(true),
        [read, mode] if read.is_word("read") && mode.is_word("write") => Some(false),
        _ => None,
    })
}

/// The table named at `at`: `t`, `s.t` (ONLY skipped).
fn table_after(tokens: &[Token], mut at: usize) -> Option<String> {
    if tokens.get(at).is_some_and(|t| t.is_word("only")) {
        at += 1;
    }
    let part = |t: &Token| match t {
        Token::Word(w) => Some(String::from_utf8_lossy(w).to_ascii_lowercase()),
        Token::QuotedIdent(w) => Some(String::from_utf8_lossy(w).into_owned()),
        _ => None,
    };
    let mut name = part(tokens.get(at)?)?;
    if let (Some(Token::Symbol(b'.')), Some(next)) = (tokens.get(at + 1), tokens.get(at + 2)) {
        name = format!("{name}.{}", part(next)?);
    }
    Some(name)
}
