//! The closed sets routing speaks in: statement kinds (also matched by rules) and targets.

use std::fmt;

use serde::Deserialize;

/// What a statement is, as routing rules name it (`kind: [delete]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    /// SELECT, VALUES, TABLE.
    Select,
    Show,
    Explain,
    Insert,
    Update,
    Delete,
    Merge,
    /// COPY in either direction.
    Copy,
    /// CREATE, ALTER, DROP, COMMENT, GRANT, REVOKE and other schema changes.
    Ddl,
    Truncate,
    Lock,
    /// VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, REFRESH MATERIALIZED VIEW.
    Maintenance,
    Listen,
    Notify,
    /// BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION.
    Transaction,
    /// SET, RESET.
    Set,
    /// CALL, DO.
    Call,
    /// SQL PREPARE, EXECUTE, DEALLOCATE.
    Prepared,
    /// Anything else, including what the parser cannot read.
    Other,
}

impl StatementKind {
    /// A metric label and the name rules use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Show => "show",
            Self::Explain => "explain",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Merge => "merge",
            Self::Copy => "copy",
            Self::Ddl => "ddl",
            Self::Truncate => "truncate",
            Self::Lock => "lock",
            Self::Maintenance => "maintenance",
            Self::Listen => "listen",
            Self::Notify => "notify",
            Self::Transaction => "transaction",
            Self::Set => "set",
            Self::Call => "call",
            Self::Prepared => "prepared",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a statement is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTarget {
    Primary,
    /// A replica fit for this session's reads, else the primary.
    Replica,
    /// Wherever a read may go (replicas, and the primary too).
    Any,
}

impl RouteTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
            Self::Any => "any",
        }
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
