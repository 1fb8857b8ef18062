//! The one error type of `localpg`: every failure says what was being done
//! and, for a server that would not start, ends with the tail of its log.

use std::path::PathBuf;
use std::time::Duration;

/// Why a local PostgreSQL server or cluster could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    /// No directory holding `initdb` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries (initdb, postgres, pg_basebackup) not found; searched {searched}. \
         Install them (Debian/Ubuntu: `apt-get install postgresql`) or set PGSTRATA_PG_BIN \
         to the directory that holds them"
    )]
    BinariesNotFound { searched: String },

    /// PostgreSQL refuses to run as root, and there is no user to switch to.
    #[error(
        "running as root, but there is no `postgres` OS user to run PostgreSQL as \
         (PostgreSQL refuses root); create one with `useradd postgres` or run as a normal user"
    )]
    NoPostgresUser,

    /// A file-system or process-spawning operation failed.
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// A helper program (initdb, pg_basebackup, chown…) exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        command: String,
        status: String,
        output: String,
    },

    /// The server process exited while we waited for it to accept connections.
    #[error("local PostgreSQL {server} exited during startup ({status}); log {log}:\n{log_tail}")]
    ServerExited {
        server: String,
        status: String,
        log: PathBuf,
        log_tail: String,
    },

    /// The server did not become ready (or did not replay) in time.
    #[error(
        "local PostgreSQL {server} not ready after {waited:?}: {last_error}; log {log}:\n{log_tail}"
    )]
    NotReady {
        server: String,
        waited: Duration,
        last_error: String,
        log: PathBuf,
        log_tail: String,
    },

    /// `start` was called on a server that is already running.
    #[error("local PostgreSQL {0} is already running")]
    AlreadyRunning(String),

    /// A setting name in `ClusterOptions::extra_conf` is not a GUC name.
    #[error("invalid PostgreSQL setting name {0:?}")]
    InvalidSetting(String),

    /// The cluster was started without a replica.
    #[error("this local cluster has no replica")]
    NoReplica,

    /// A query or connection to the local server failed.
    #[error("local PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

impl LocalPgError {
    /// Wraps an I/O error with what was being attempted.
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        LocalPgError::Io {
            action: action.into(),
            source,
        }
    }
}
