//! Pools of server connections, one per (database, user, server), managed by bb8.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bb8::{ManageConnection, PooledConnection, RunError};
use thiserror::Error;

use super::connection::{ServerConnection, ServerTarget};
use super::error::BackendError;
use crate::metrics;
use crate::rules::{Config, PoolConfig, PoolMode};

/// bb8 manager creating raw protocol connections.
#[derive(Debug)]
pub struct ServerManager {
    target: Arc<ServerTarget>,
}

impl ManageConnection for ServerManager {
    type Connection = ServerConnection;
    type Error = BackendError;

    fn connect(
        &self,
    ) -> impl std::future::Future<Output = Result<ServerConnection, BackendError>> + Send {
        ServerConnection::connect(Arc::clone(&self.target))
    }

    async fn is_valid(&self, conn: &mut ServerConnection) -> Result<(), BackendError> {
        // Non-blocking: a server that sent anything while idle (e.g. a FATAL after
        // pg_terminate_backend) or closed the socket is not handed out.
        if conn.is_reusable() && conn.is_quiet() {
            Ok(())
        } else {
            conn.broken = true;
            Err(BackendError::Closed)
        }
    }

    fn has_broken(&self, conn: &mut ServerConnection) -> bool {
        !conn.is_reusable()
    }
}

/// A server connection checked out of a pool; returns to it on drop unless broken.
pub type PooledServer = PooledConnection<'static, ServerManager>;

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("timed out after {waited:?} waiting for a server connection in pool \"{pool}\" (pool_size {size})")]
    Timeout {
        pool: String,
        waited: Duration,
        size: u32,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// One pool: its name (`database/user`), settings and bb8 pool.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub settings: PoolConfig,
    pub target: Arc<ServerTarget>,
    inner: bb8::Pool<ServerManager>,
}

impl Pool {
    fn new(name: String, settings: PoolConfig, target: ServerTarget) -> Pool {
        let target = Arc::new(target);
        let inner = bb8::Pool::builder()
            .max_size(settings.size)
            .min_idle(Some(settings.min_idle).filter(|n| *n > 0))
            .connection_timeout(settings.checkout_timeout)
            .idle_timeout(settings.idle_timeout)
            .max_lifetime(settings.max_lifetime)
            // Surface server errors (bad password, missing database) instead of retrying until timeout.
            .retry_connection(false)
            .test_on_check_out(true)
            .build_unchecked(ServerManager {
                target: Arc::clone(&target),
            });
        Pool {
            name,
            settings,
            target,
            inner,
        }
    }

    /// Checks out a server connection, waiting at most the pool's checkout timeout.
    pub async fn checkout(&self) -> Result<PooledServer, PoolError> {
        let started = Instant::now();
        let result = self.inner.get_owned().await;
        metrics::get().checkout_wait.record(started.elapsed());
        result.map_err(|e| match e {
            RunError::User(e) => PoolError::Backend(e),
            RunError::TimedOut => PoolError::Timeout {
                pool: self.name.clone(),
                waited: started.elapsed(),
                size: self.settings.size,
            },
        })
    }

    pub fn mode(&self) -> PoolMode {
        self.settings.mode
    }

    /// (open connections, idle connections).
    pub fn counts(&self) -> (u32, u32) {
        let state = self.inner.state();
        (state.connections, state.idle_connections)
    }
}

/// All pools, keyed by (client database, client user).
#[derive(Debug, Default)]
pub struct Pools {
    by_key: HashMap<(String, String), Arc<Pool>>,
}

impl Pools {
    /// Builds a pool for every configured database and user, towards the cluster's primary.
    /// No connection is opened until one is needed (or min_idle asks for it).
    pub fn build(config: &Config) -> Pools {
        let mut by_key = HashMap::new();
        for (db_name, db) in &config.databases {
            let Some(cluster) = config.clusters.get(&db.cluster) else {
                continue; // validation guarantees the cluster exists
            };
            for (user_name, user) in &config.users {
                let target = ServerTarget {
                    host: cluster.primary.host.clone(),
                    port: cluster.primary.port,
                    user: user.server_user.clone(),
                    password: user.server_password.clone(),
                    database: db.server_database.clone(),
                };
                let name = format!("{db_name}/{user_name}");
                let pool = Pool::new(name, db.pool.clone(), target);
                by_key.insert((db_name.clone(), user_name.clone()), Arc::new(pool));
            }
        }
        Pools { by_key }
    }

    pub fn get(&self, database: &str, user: &str) -> Option<Arc<Pool>> {
        self.by_key
            .get(&(database.to_owned(), user.to_owned()))
            .cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.by_key.values()
    }
}
