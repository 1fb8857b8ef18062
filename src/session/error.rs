//! Session errors and their one mapping to what the client is told.

use thiserror::Error;

use crate::backend::{BackendError, PoolError};
use crate::protocol::frame::FrameError;
use crate::protocol::message::ErrorFields;
use crate::protocol::startup::StartupError;
use crate::protocol::{ErrorReply, SqlState};

/// Large payloads are boxed: the error travels in the `Result` of every step of the relay
/// loop, and a small one is cheaper to return and move there.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("client I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the connection")]
    ClientGone,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("timed out waiting for the client during startup")]
    StartupTimeout,
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error("no user name in startup packet")]
    NoUser,
    #[error("replication connections are not supported")]
    Replication,
    #[error("unsupported startup option: {0}")]
    StartupOption(String),
    #[error("TLS is required (tls.mode = require)")]
    TlsRequired,
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(std::io::Error),
    #[error("sorry, too many clients already")]
    TooManyClients,
    #[error("too many connections for database \"{0}\"")]
    TooManyForDatabase(String),
    #[error(transparent)]
    Pool(Box<PoolError>),
    #[error(transparent)]
    Backend(Box<BackendError>),
    #[error("server rejected a startup parameter: {}", .0.message)]
    StartupParameter(Box<ErrorFields>),
    #[error("a statement the proxy ran for the session failed: {}", .0.message)]
    HiddenStatement(Box<ErrorFields>),
    #[error("server connection lost")]
    ServerLost,
    #[error("terminating connection due to administrator command")]
    Shutdown,
}

impl From<PoolError> for SessionError {
    fn from(e: PoolError) -> SessionError {
        SessionError::Pool(Box::new(e))
    }
}

impl From<BackendError> for SessionError {
    fn from(e: BackendError) -> SessionError {
        SessionError::Backend(Box::new(e))
    }
}

impl SessionError {
    /// The ErrorResponse to send before closing, if the client can still be told anything.
    /// Exhaustive on purpose: a new variant must decide its SQLSTATE.
    pub fn reply(&self) -> Option<ErrorReply> {
        let fatal = |code| Some(ErrorReply::fatal(code, self.to_string()));
        match self {
            SessionError::Io(_) | SessionError::ClientGone | SessionError::TlsHandshake(_) => None,
            SessionError::Frame(_) | SessionError::Protocol(_) | SessionError::StartupTimeout => {
                fatal(SqlState::PROTOCOL_VIOLATION)
            }
            SessionError::Startup(StartupError::UnsupportedProtocol { .. }) => {
                fatal(SqlState::FEATURE_NOT_SUPPORTED)
            }
            SessionError::Startup(StartupError::Malformed) => fatal(SqlState::PROTOCOL_VIOLATION),
            SessionError::AuthFailed(_) => fatal(SqlState::INVALID_PASSWORD),
            SessionError::UnknownDatabase(_) => fatal(SqlState::INVALID_CATALOG_NAME),
            SessionError::NoUser | SessionError::TlsRequired => {
                fatal(SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
            }
            SessionError::Replication | SessionError::StartupOption(_) => {
                fatal(SqlState::FEATURE_NOT_SUPPORTED)
            }
            SessionError::TooManyClients | SessionError::TooManyForDatabase(_) => {
                fatal(SqlState::TOO_MANY_CONNECTIONS)
            }
            SessionError::Pool(e) => match &**e {
                PoolError::Timeout { .. } => fatal(SqlState::TOO_MANY_CONNECTIONS),
                PoolError::Backend(e) => Some(backend_reply(e)),
            },
            SessionError::Backend(e) => Some(backend_reply(e)),
            SessionError::StartupParameter(fields) | SessionError::HiddenStatement(fields) => Some(
                ErrorReply::fatal_with_code(&fields.code, fields.message.clone()),
            ),
            SessionError::ServerLost => fatal(SqlState::CONNECTION_FAILURE),
            SessionError::Shutdown => fatal(SqlState::ADMIN_SHUTDOWN),
        }
    }
}

/// What a client is told when its server connection could not be made.
fn backend_reply(e: &BackendError) -> ErrorReply {
    match e {
        // The server's own error, e.g. a missing database, is the most useful answer;
        // a rejected server login is the proxy's configuration problem, not the client's password.
        BackendError::Server(fields) if fields.code.starts_with("28") => ErrorReply::fatal(
            SqlState::SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION,
            format!("server login failed: {}", fields.message),
        ),
        BackendError::Server(fields) => {
            ErrorReply::fatal_with_code(&fields.code, fields.message.clone())
        }
        BackendError::Connect { .. } => ErrorReply::fatal(
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            e.to_string(),
        ),
        BackendError::NoPassword | BackendError::UnsupportedAuth(_) | BackendError::Scram(_) => {
            ErrorReply::fatal(
                SqlState::SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION,
                format!("server login failed: {e}"),
            )
        }
        BackendError::ConnectTimeout(_) => ErrorReply::fatal(
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            e.to_string(),
        ),
        BackendError::Io(_)
        | BackendError::Closed
        | BackendError::Stale
        | BackendError::Protocol(_) => {
            ErrorReply::fatal(SqlState::CONNECTION_FAILURE, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_gets_its_sqlstate() {
        let cases: Vec<(SessionError, Option<&str>)> = vec![
            (SessionError::ClientGone, None),
            (SessionError::AuthFailed("u".into()), Some("28P01")),
            (SessionError::UnknownDatabase("d".into()), Some("3D000")),
            (SessionError::TooManyClients, Some("53300")),
            (SessionError::Protocol("x"), Some("08P01")),
            (
                SessionError::Startup(StartupError::UnsupportedProtocol { major: 1, minor: 0 }),
                Some("0A000"),
            ),
            (
                BackendError::Server(ErrorFields {
                    severity: "FATAL".into(),
                    code: "3D000".into(),
                    message: "database \"x\" does not exist".into(),
                })
                .into(),
                Some("3D000"),
            ),
            (
                BackendError::Server(ErrorFields {
                    severity: "FATAL".into(),
                    code: "28P01".into(),
                    message: "password authentication failed".into(),
                })
                .into(),
                Some("08004"),
            ),
            (SessionError::Shutdown, Some("57P01")),
        ];
        for (err, want) in cases {
            let got = err.reply().map(|r| r.code.code().to_owned());
            assert_eq!(got.as_deref(), want, "{err}");
        }
    }
}
