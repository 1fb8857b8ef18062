//! Errors of server connections and pools.

use thiserror::Error;

use crate::protocol::message::ErrorFields;

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("could not connect to server {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {0:?} connecting to the server")]
    ConnectTimeout(std::time::Duration),
    #[error("server connection I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    /// A pooled connection failed its checkout test; bb8 drops it and tries another.
    #[error("pooled server connection is no longer usable")]
    Stale,
    #[error("server protocol error: {0}")]
    Protocol(&'static str),
    #[error("server requested unsupported authentication: {0}")]
    UnsupportedAuth(&'static str),
    #[error("server requested a password but none is configured (server_password)")]
    NoPassword,
    #[error("SCRAM authentication with the server failed: {0}")]
    Scram(std::io::Error),
    #[error("server error {}: {}", .0.code, .0.message)]
    Server(ErrorFields),
}
