//! One local PostgreSQL server: where it listens, how to connect as the
//! superuser, and stop/start around the same data directory.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::binaries::RunAs;
use super::supervisor::Supervisor;
use super::{LocalPgError, SUPERUSER, SUPERUSER_PASSWORD};

/// Every local server listens here only.
const HOST: &str = "127.0.0.1";
/// How long a server may take to accept connections (replicas: and be in recovery).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long one probe may hang (a server that accepts but does not answer).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of the server log quoted in startup errors.
const LOG_TAIL_LINES: usize = 40;

/// A PostgreSQL server on 127.0.0.1 with its own directory: `data/`, the Unix
/// socket and `server.log` (outside `data/`, so `pg_basebackup` leaves it).
#[derive(Debug)]
pub struct LocalServer {
    /// "primary" or "replica", for logs and errors.
    name: String,
    port: u16,
    /// Holds `data/`, the socket and the log.
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    bin_dir: PathBuf,
    run_as: RunAs,
    /// `None` while stopped. Never locked across an `.await`.
    supervisor: Mutex<Option<Supervisor>>,
}

impl LocalServer {
    /// Describes a server whose data directory is (or will be) `dir/data`.
    pub(crate) fn new(name: &str, dir: PathBuf, port: u16, bin_dir: &Path, run_as: &RunAs) -> Self {
        LocalServer {
            name: name.to_string(),
            port,
            data_dir: dir.join("data"),
            log_path: dir.join("server.log"),
            dir,
            bin_dir: bin_dir.to_path_buf(),
            run_as: run_as.clone(),
            supervisor: Mutex::new(None),
        }
    }

    /// "primary" or "replica".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding this server's Unix socket (for `psql -h`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Where the server's stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A libpq/tokio-postgres connection string for the superuser over TCP.
    pub fn superuser_conn_string(&self, dbname: &str) -> String {
        self.conn_string(SUPERUSER, SUPERUSER_PASSWORD, dbname)
    }

    /// A connection string for any role over TCP.
    pub fn conn_string(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "host={HOST} port={} user={} password={} dbname={}",
            self.port,
            conn_value(user),
            conn_value(password),
            conn_value(dbname)
        )
    }

    /// Connects as the superuser to `postgres`; the connection task is spawned.
    pub async fn superuser_client(&self) -> Result<Client, LocalPgError> {
        self.connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
            .await
    }

    /// Connects as `user` over TCP; the connection task is spawned.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Result<Client, LocalPgError> {
        let conn_string = self.conn_string(user, password, dbname);
        let (client, connection) = tokio_postgres::connect(&conn_string, NoTls).await?;
        let server = self.name.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%server, %error, "local PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// Whether this server's process is supervised (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.lock().is_some()
    }

    /// Starts the server on its existing data directory and waits until it
    /// accepts connections (a standby: and reports `pg_is_in_recovery()`).
    pub async fn start(&self) -> Result<(), LocalPgError> {
        let log = self.open_log().await?;
        {
            let mut slot = self.lock();
            if slot.is_some() {
                return Err(LocalPgError::AlreadyRunning(self.name.clone()));
            }
            *slot = Some(Supervisor::spawn(
                &self.run_as,
                &self.bin_dir,
                &self.data_dir,
                &log,
            )?);
        }
        let started = Instant::now();
        let result = self.wait_ready().await;
        match &result {
            Ok(()) => tracing::info!(
                server = %self.name,
                port = self.port,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "local PostgreSQL ready"
            ),
            // Leave nothing half-started behind.
            Err(_) => drop(self.lock().take()),
        }
        result
    }

    /// Fast-shuts the server down and waits; the data directory is kept, so
    /// `start` brings the same server back. Stopping a stopped server is a no-op.
    pub async fn stop(&self) -> Result<(), LocalPgError> {
        let Some(supervisor) = self.lock().take() else {
            return Ok(());
        };
        // Dropping the supervisor waits for the shutdown: off the async threads.
        tokio::task::spawn_blocking(move || drop(supervisor))
            .await
            .map_err(|e| LocalPgError::io("waiting for the server to stop", e.into()))?;
        tracing::info!(server = %self.name, port = self.port, "local PostgreSQL stopped");
        Ok(())
    }

    /// Asks for a shutdown without waiting (the waiting happens on drop).
    pub(crate) fn request_stop(&self) {
        if let Some(supervisor) = self.lock().as_mut() {
            supervisor.request_stop();
        }
    }

    /// Creates a login role able to create tables in `postgres`'s `public`.
    /// With `md5`, its password is stored as MD5, so it authenticates with MD5.
    pub async fn create_role(
        &self,
        name: &str,
        password: &str,
        md5: bool,
    ) -> Result<(), LocalPgError> {
        let client = self.superuser_client().await?;
        if md5 {
            client
                .batch_execute("SET password_encryption = 'md5'")
                .await?;
        }
        let role = quote_ident(name);
        client
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD {}; \
                 GRANT CONNECT, CREATE, TEMPORARY ON DATABASE postgres TO {role}; \
                 GRANT USAGE, CREATE ON SCHEMA public TO {role};",
                quote_literal(password)
            ))
            .await?;
        Ok(())
    }

    /// Creates database `name` owned by `owner` (who may then create in its `public`).
    pub async fn create_database(&self, name: &str, owner: &str) -> Result<(), LocalPgError> {
        let client = self.superuser_client().await?;
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(name),
                quote_ident(owner)
            ))
            .await?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Supervisor>> {
        self.supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the log for appending, owned by the user PostgreSQL runs as.
    async fn open_log(&self) -> Result<File, LocalPgError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| LocalPgError::io(format!("opening {}", self.log_path.display()), e))?;
        self.run_as.give(&self.log_path).await?;
        Ok(log)
    }

    /// Polls until the server answers (bounded), failing early if it exits.
    async fn wait_ready(&self) -> Result<(), LocalPgError> {
        let started = Instant::now();
        let is_standby = self.data_dir.join("standby.signal").exists();
        loop {
            let exited = self.lock().as_mut().and_then(Supervisor::exit_status);
            if let Some(status) = exited {
                return Err(LocalPgError::ServerExited {
                    server: self.name.clone(),
                    status: status.to_string(),
                    log: self.log_path.clone(),
                    log_tail: self.log_tail(),
                });
            }
            let probe = tokio::time::timeout(PROBE_TIMEOUT, self.probe(is_standby)).await;
            let last_error = match probe {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => "not in recovery yet".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
            };
            if started.elapsed() >= READY_TIMEOUT {
                return Err(LocalPgError::NotReady {
                    server: self.name.clone(),
                    waited: started.elapsed(),
                    last_error,
                    log: self.log_path.clone(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// One readiness probe: connects, and for a standby checks recovery.
    async fn probe(&self, is_standby: bool) -> Result<bool, LocalPgError> {
        let client = self.superuser_client().await?;
        if !is_standby {
            return Ok(true);
        }
        let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await?;
        Ok(row.try_get::<_, bool>(0)?)
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// A connection-string value, quoted when it is empty or has special characters.
fn conn_value(value: &str) -> String {
    let is_plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if is_plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// `"a"b` → `"""a""b"`, an SQL identifier used as is.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `it's` → `'it''s'` (standard_conforming_strings is on).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(conn_value("db1"), "db1");
        assert_eq!(conn_value(""), "''");
        assert_eq!(conn_value("a b'c"), r"'a b\'c'");
        assert_eq!(quote_ident("We\"ird"), "\"We\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
