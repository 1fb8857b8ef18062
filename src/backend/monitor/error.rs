//! Why one health check of a server failed.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MonitorError {
    #[error("could not connect: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("timed out waiting for a monitor connection")]
    ConnectTimeout,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the check query returned no row")]
    NoRow,
    #[error("query failed: {0}")]
    Query(#[source] tokio_postgres::Error),
}

impl From<bb8::RunError<tokio_postgres::Error>> for MonitorError {
    fn from(error: bb8::RunError<tokio_postgres::Error>) -> Self {
        match error {
            bb8::RunError::User(error) => MonitorError::Connect(error),
            bb8::RunError::TimedOut => MonitorError::ConnectTimeout,
        }
    }
}
