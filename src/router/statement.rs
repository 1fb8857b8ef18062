//! Judging one statement sqlparser has read: its kind, whether it writes, whether it opens
//! a transaction, and what the walk found inside it.

use sqlparser::ast::{
    CopySource, Expr, ObjectType, Set, Statement, TransactionAccessMode, TransactionMode,
    UtilityOption, Value,
};

use super::classify::{Access, Judged};
use super::fallback::keyword_kind;
use super::kind::StatementKind as Kind;
use super::walk::Walk;

/// Judges a parsed statement.
pub(crate) fn judge(statement: &Statement) -> Judged {
    let mut walk = Walk::of(statement);
    let (kind, access, begins) = match statement {
        Statement::Explain {
            analyze,
            statement: inner,
            options,
            ..
        } => {
            let analyze = *analyze || options.iter().flatten().any(is_analyze);
            // EXPLAIN alone plans without running: a read even of a write.
            let access = if analyze {
                judge(inner).access
            } else {
                Access::Read
            };
            (Kind::Explain, access, None)
        }
        other => {
            let (kind, access, begins) = shape(other, &mut walk);
            let access = if walk.writes { Access::Write } else { access };
            (kind, access, begins)
        }
    };
    Judged {
        kind,
        access,
        begins,
        parsed: true,
        tables_read: walk.tables_read(),
        functions: std::mem::take(&mut walk.functions),
        tables_written: walk.written,
    }
}

/// `ANALYZE` in `EXPLAIN (...)`: on unless its value is `false`/`off`. Any other value, a
/// literal among them, counts as on: the cache key ignores literals.
fn is_analyze(option: &UtilityOption) -> bool {
    if !option.name.value.eq_ignore_ascii_case("analyze") {
        return false;
    }
    match &option.arg {
        Some(Expr::Value(v)) if v.value == Value::Boolean(false) => false,
        Some(Expr::Identifier(id)) => !["off", "false"]
            .iter()
            .any(|off| id.value.eq_ignore_ascii_case(off)),
        _ => true,
    }
}

/// The access mode a list of transaction modes asks for, the last one winning.
fn read_only(modes: &[TransactionMode]) -> Option<bool> {
    modes.iter().rev().find_map(|mode| match mode {
        TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
        TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
        TransactionMode::IsolationLevel(_) => None,
    })
}

/// Kind, structural access and transaction start of one statement; records the tables the
/// statement itself writes or reads outside FROM-like positions.
fn shape(statement: &Statement, walk: &mut Walk) -> (Kind, Access, Option<bool>) {
    use Access::{Read, Write};
    let (kind, access) = match statement {
        Statement::Query(_) => (Kind::Select, Read),
        Statement::Insert(_) => (Kind::Insert, Write),
        Statement::Update { .. } => (Kind::Update, Write),
        Statement::Delete(_) => (Kind::Delete, Write),
        Statement::Merge { .. } => (Kind::Merge, Write),
        Statement::Copy { source, to, .. } => {
            if let CopySource::Table { table_name, .. } = source {
                match to {
                    true => walk.read(table_name),
                    false => walk.write_target(table_name),
                }
            }
            (Kind::Copy, if *to { Read } else { Write })
        }
        Statement::StartTransaction { modes, .. } => {
            let read_only = read_only(modes) == Some(true);
            let access = if read_only { Read } else { Write };
            return (Kind::Transaction, access, Some(read_only));
        }
        // SET SESSION CHARACTERISTICS AS TRANSACTION ...: a setting for later transactions.
        Statement::Set(Set::SetTransaction { session: true, .. }) => (Kind::Set, Read),
        Statement::Set(Set::SetTransaction { modes, .. }) => {
            return match read_only(modes) {
                Some(true) => (Kind::Transaction, Read, Some(true)),
                Some(false) => (Kind::Transaction, Write, Some(false)),
                None => (Kind::Transaction, Read, None),
            };
        }
        Statement::Set(_) => (Kind::Set, Read),
        Statement::ShowVariable { .. } | Statement::ShowVariables { .. } => (Kind::Show, Read),
        Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => (Kind::Transaction, Read),
        // A cursor outlives its transaction WITH HOLD: keep it where later FETCHes go.
        Statement::Declare { stmts } => match stmts.iter().any(|d| d.hold == Some(true)) {
            true => (Kind::Select, Write),
            false => (Kind::Select, Read),
        },
        Statement::Fetch { .. } | Statement::Close { .. } | Statement::Discard { .. } => {
            (Kind::Other, Read)
        }
        Statement::Deallocate { .. } => (Kind::Prepared, Read),
        Statement::Execute { .. } | Statement::Prepare { .. } => (Kind::Prepared, Write),
        other => return (utility(other, walk), Write, None),
    };
    (kind, access, None)
}

/// The kind of a statement that always writes: maintenance, notifications, DDL and the
/// like; records the tables it names as written.
fn utility(statement: &Statement, walk: &mut Walk) -> Kind {
    match statement {
        Statement::Truncate { table_names, .. } => {
            table_names.iter().for_each(|t| walk.write_target(&t.name));
            Kind::Truncate
        }
        Statement::Vacuum(_) | Statement::Analyze { .. } => Kind::Maintenance,
        Statement::LISTEN { .. } | Statement::UNLISTEN { .. } => Kind::Listen,
        Statement::NOTIFY { .. } => Kind::Notify,
        Statement::Call(function) => {
            walk.call(&function.name);
            Kind::Call
        }
        Statement::Load { .. } => Kind::Other,
        Statement::CreateTable(table) => {
            walk.write_target(&table.name);
            Kind::Ddl
        }
        Statement::AlterTable { name, .. } => {
            walk.write_target(name);
            Kind::Ddl
        }
        Statement::Drop {
            object_type: ObjectType::Table,
            names,
            ..
        } => {
            names.iter().for_each(|name| walk.write_target(name));
            Kind::Ddl
        }
        // Everything else (CREATE, ALTER, GRANT, ...); its first word names the kind.
        other => {
            let text = other.to_string();
            let first = text.split_whitespace().next().unwrap_or_default();
            keyword_kind(&first.to_ascii_lowercase())
        }
    }
}
