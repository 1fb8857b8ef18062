//! Real local PostgreSQL servers for the integration tests and `pgstrata demo`:
//! a primary and an optional streaming replica in a temporary directory on
//! 127.0.0.1, cleaned up on drop and, through supervisor processes, on death.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pgstrata::localpg::LocalPgError> {
//! use pgstrata::localpg::{ClusterOptions, LocalCluster};
//! let cluster = LocalCluster::start(ClusterOptions::default()).await?;
//! let client = cluster.primary().superuser_client().await?;
//! client.batch_execute("CREATE TABLE t (id int)").await?;
//! cluster.wait_for_replica().await?;
//! cluster.stop().await;
//! # Ok(()) }
//! ```

mod binaries;
mod error;
mod server;
mod setup;
mod supervisor;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use binaries::PG_BIN_ENV;
pub use error::LocalPgError;
pub use server::LocalServer;

use binaries::RunAs;
use supervisor::Janitor;

/// The superuser of every local server (test and demo credentials only).
pub const SUPERUSER: &str = "postgres";
/// The superuser's password over TCP (test and demo credentials only).
pub const SUPERUSER_PASSWORD: &str = "postgres-secret";

/// How long `wait_for_replica` waits, on top of any apply delay.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Also start a streaming replica of the primary.
    pub replica: bool,
    /// The replica's `recovery_min_apply_delay`, to make replication lag visible.
    pub replica_apply_delay: Option<Duration>,
    /// More `postgresql.conf` settings for the primary (copied to the replica),
    /// as plain values: `("log_statement", "all")`.
    pub extra_conf: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replica: true,
            replica_apply_delay: None,
            extra_conf: Vec::new(),
        }
    }
}

/// A primary, maybe a replica, and the temporary directory holding both.
/// Dropping it stops the servers and removes the directory (synchronously);
/// if the process dies first, the supervisor processes do the same.
#[derive(Debug)]
pub struct LocalCluster {
    // Field order is drop order: servers stop before the janitor removes the root.
    replica: Option<LocalServer>,
    primary: LocalServer,
    bin_dir: PathBuf,
    root: PathBuf,
    replica_apply_delay: Option<Duration>,
    /// Held for its `Drop`: removes `root` after the servers stop.
    _janitor: Janitor,
}

impl LocalCluster {
    /// Creates and starts the servers; returns once each accepts connections
    /// (the replica: and is in recovery).
    pub async fn start(opts: ClusterOptions) -> Result<LocalCluster, LocalPgError> {
        let started = Instant::now();
        setup::check_settings(&opts.extra_conf)?;
        let bin_dir = binaries::find_bin_dir()?;
        let run_as = RunAs::detect()?;
        let root = tempfile::Builder::new()
            .prefix("pgstrata-localpg-")
            .tempdir()
            .map_err(|e| LocalPgError::io("creating a temporary directory", e))?
            .keep();
        let janitor = match Janitor::spawn(&root) {
            Ok(janitor) => janitor,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(error);
            }
        };
        // From here on, an early return drops `janitor`, which removes `root`.
        let mut names = vec!["primary"];
        if opts.replica {
            names.push("replica");
        }
        for name in &names {
            let dir = root.join(name);
            std::fs::create_dir(&dir)
                .map_err(|e| LocalPgError::io(format!("creating {}", dir.display()), e))?;
        }
        run_as.give(&root).await?;

        let primary = start_primary(&root, &bin_dir, &run_as, &opts.extra_conf).await?;
        let replica = match opts.replica {
            true => Some(start_replica(&root, &bin_dir, &run_as, &primary, &opts).await?),
            false => None,
        };
        tracing::info!(
            root = %root.display(),
            primary_port = primary.port(),
            replica_port = replica.as_ref().map(LocalServer::port),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "local PostgreSQL cluster started"
        );
        Ok(LocalCluster {
            replica,
            primary,
            bin_dir,
            root,
            replica_apply_delay: opts.replica_apply_delay,
            _janitor: janitor,
        })
    }

    pub fn primary(&self) -> &LocalServer {
        &self.primary
    }

    pub fn replica(&self) -> Option<&LocalServer> {
        self.replica.as_ref()
    }

    /// The PostgreSQL programs in use (`psql`, `pgbench` for tests).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The temporary directory holding every server's files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Waits until the replica has replayed everything the primary had written
    /// when this was called (with an apply delay, that includes the delay).
    pub async fn wait_for_replica(&self) -> Result<(), LocalPgError> {
        let replica = self.replica.as_ref().ok_or(LocalPgError::NoReplica)?;
        let primary = self.primary.superuser_client().await?;
        let target: String = primary
            // The insert position, not pg_current_wal_lsn() (the write position):
            // with synchronous_commit off, a commit may not be written yet.
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .try_get(0)?;
        let standby = replica.superuser_client().await?;
        let limit = REPLAY_TIMEOUT + self.replica_apply_delay.unwrap_or_default();
        let started = Instant::now();
        loop {
            let row = standby
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&target],
                )
                .await?;
            if row.try_get::<_, bool>(0)? {
                return Ok(());
            }
            if started.elapsed() >= limit {
                return Err(LocalPgError::NotReady {
                    server: replica.name().to_string(),
                    waited: started.elapsed(),
                    last_error: format!("has not replayed up to {target}"),
                    log: replica.log_path().to_path_buf(),
                    log_tail: replica.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every server and removes the directory; the same as dropping,
    /// without blocking the async runtime.
    pub async fn stop(self) {
        if let Err(error) = tokio::task::spawn_blocking(move || drop(self)).await {
            tracing::warn!(%error, "stopping the local PostgreSQL cluster failed");
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Signal every server first so they shut down in parallel; the field
        // drops that follow wait for them, then the janitor removes the root.
        if let Some(replica) = &self.replica {
            replica.request_stop();
        }
        self.primary.request_stop();
    }
}

async fn start_primary(
    root: &Path,
    bin_dir: &Path,
    run_as: &RunAs,
    extra_conf: &[(String, String)],
) -> Result<LocalServer, LocalPgError> {
    let port = try_free_port()?;
    let server = LocalServer::new("primary", root.join("primary"), port, bin_dir, run_as);
    setup::initdb(bin_dir, run_as, root, server.data_dir()).await?;
    setup::configure_primary(server.data_dir(), port, server.socket_dir(), extra_conf)?;
    server.start().await?;
    Ok(server)
}

async fn start_replica(
    root: &Path,
    bin_dir: &Path,
    run_as: &RunAs,
    primary: &LocalServer,
    opts: &ClusterOptions,
) -> Result<LocalServer, LocalPgError> {
    let port = try_free_port()?;
    let server = LocalServer::new("replica", root.join("replica"), port, bin_dir, run_as);
    setup::basebackup(bin_dir, run_as, root, primary.port(), server.data_dir()).await?;
    setup::configure_replica(
        server.data_dir(),
        port,
        server.socket_dir(),
        opts.replica_apply_delay,
    )?;
    server.start().await?;
    Ok(server)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// If no port can be bound on 127.0.0.1 at all; see [`try_free_port`].
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(error) => panic!("no free port on 127.0.0.1: {error}"),
    }
}

/// Binds 127.0.0.1:0 and returns the port the kernel chose.
pub fn try_free_port() -> Result<u16, LocalPgError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| LocalPgError::io("binding 127.0.0.1:0", e))
}
