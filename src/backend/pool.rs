//! Pools of server connections, one per (database, user, server), managed by bb8.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8::{ErrorSink, ManageConnection, PooledConnection, RunError};
use thiserror::Error;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::connection::{ServerConnection, ServerTarget};
use super::error::BackendError;
use crate::metrics;
use crate::rules::{Config, PoolConfig, PoolMode};

/// bb8 manager creating raw protocol connections.
#[derive(Debug)]
pub struct ServerManager {
    target: Arc<ServerTarget>,
    /// A server that accepts TCP but never answers must not hold a pool slot forever.
    connect_timeout: Duration,
}

impl ManageConnection for ServerManager {
    /// Boxed: bb8 moves connections in and out of its idle list and its futures at every
    /// checkout and return; a pointer is cheaper to move than the connection.
    type Connection = Box<ServerConnection>;
    type Error = BackendError;

    async fn connect(&self) -> Result<Box<ServerConnection>, BackendError> {
        let connect = ServerConnection::connect(Arc::clone(&self.target));
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| BackendError::ConnectTimeout(self.connect_timeout))?
            .map(Box::new)
    }

    async fn is_valid(&self, conn: &mut Box<ServerConnection>) -> Result<(), BackendError> {
        // Non-blocking: a server that sent anything while idle (e.g. a FATAL after
        // pg_terminate_backend) or closed the socket is not handed out.
        if conn.is_reusable() && conn.is_quiet() {
            Ok(())
        } else {
            conn.broken = true;
            Err(BackendError::Stale)
        }
    }

    fn has_broken(&self, conn: &mut Box<ServerConnection>) -> bool {
        !conn.is_reusable()
    }
}

type Conn = PooledConnection<'static, ServerManager>;

/// A server connection checked out of a pool; returns to it on drop unless broken, then
/// lets the next waiting client in.
pub struct PooledServer {
    // Field order matters: the connection goes back to bb8 before the slot is freed.
    conn: PooledConnection<'static, ServerManager>,
    _slot: OwnedSemaphorePermit,
}

impl std::ops::Deref for PooledServer {
    type Target = ServerConnection;

    fn deref(&self) -> &ServerConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for PooledServer {
    fn deref_mut(&mut self) -> &mut ServerConnection {
        &mut self.conn
    }
}

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("timed out after {waited:?} waiting for a server connection in pool \"{pool}\" (pool_size {size})")]
    Timeout {
        pool: String,
        waited: Duration,
        size: u32,
    },
    #[error(transparent)]
    Backend(#[from] Arc<BackendError>),
}

/// The last failure to open a server connection, shared with the clients waiting for one.
/// bb8 reports connect errors only to its error sink, never to the waiting `get()`.
#[derive(Debug, Default)]
struct ConnectFailures {
    last: Mutex<Option<Arc<BackendError>>>,
    /// Wakes every waiting checkout when a connect attempt fails.
    notify: Notify,
}

#[derive(Debug, Clone)]
struct FailureSink {
    pool: String,
    failures: Arc<ConnectFailures>,
}

impl ErrorSink<BackendError> for FailureSink {
    fn sink(&self, error: BackendError) {
        if matches!(error, BackendError::Stale) {
            // Not a failure to connect: bb8 replaces the connection and carries on.
            tracing::debug!(pool = %self.pool, "dropped a stale pooled server connection");
            return;
        }
        tracing::warn!(pool = %self.pool, error = %error, "cannot open a server connection");
        let error = Arc::new(error);
        *self.failures.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.failures.notify.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<BackendError>> {
        Box::new(self.clone())
    }
}

/// One pool: its name (`database/user`), settings and bb8 pool.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub settings: PoolConfig,
    pub target: Arc<ServerTarget>,
    inner: bb8::Pool<ServerManager>,
    failures: Arc<ConnectFailures>,
    /// One permit per connection, handed out first come, first served (tokio's semaphore
    /// is fair): waiting clients are served in arrival order, which bb8 alone does not
    /// promise.
    slots: Arc<Semaphore>,
}

impl Pool {
    fn new(name: String, settings: PoolConfig, target: ServerTarget) -> Pool {
        let target = Arc::new(target);
        let failures = Arc::new(ConnectFailures::default());
        let inner = bb8::Pool::builder()
            .max_size(settings.size)
            .min_idle(Some(settings.min_idle).filter(|n| *n > 0))
            .connection_timeout(settings.checkout_timeout)
            .idle_timeout(settings.idle_timeout)
            .max_lifetime(settings.max_lifetime)
            // Surface server errors (bad password, missing database) instead of retrying until timeout.
            .retry_connection(false)
            .test_on_check_out(true)
            // The connection released last is handed out first: the fewest server
            // processes stay busy and warm, and the idle ones age out (PgBouncer's default
            // too). Waiting clients are still served in order, by the slots.
            .queue_strategy(bb8::QueueStrategy::Lifo)
            .error_sink(Box::new(FailureSink {
                pool: name.clone(),
                failures: Arc::clone(&failures),
            }))
            .build_unchecked(ServerManager {
                target: Arc::clone(&target),
                connect_timeout: settings.checkout_timeout,
            });
        Pool {
            slots: Arc::new(Semaphore::new(settings.size as usize)),
            name,
            settings,
            target,
            inner,
            failures,
        }
    }

    /// Checks out a server connection, waiting at most the pool's checkout timeout.
    /// If opening a server connection fails meanwhile, waiters get that error at once.
    /// The connection comes back marked as needing a reset.
    pub async fn checkout(&self) -> Result<PooledServer, PoolError> {
        // A free slot and an idle connection: taken at once, with no timer and no clock
        // (tokio's semaphore hands released permits to waiters first, so taking a free
        // one never jumps the queue).
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            // Created before trying: a `Notified` sees every `notify_waiters` after its
            // creation, polled or not, so no connect failure from now on is missed.
            let failed = self.failures.notify.notified();
            // Tried once and dropped if it must wait: it is not held across an await, so
            // it takes no room in this future (waiting starts a new one, boxed).
            let now = {
                let get = std::pin::pin!(self.inner.get_owned());
                futures::FutureExt::now_or_never(get)
            };
            if let Some(result) = now {
                metrics::get().checkout_wait.record(Duration::ZERO);
                return self.checked_out(result, slot, Instant::now);
            }
            let started = Instant::now();
            return Box::pin(self.wait_for_connection(failed, slot, started)).await;
        }
        Box::pin(self.wait_for_slot()).await
    }

    /// No free slot: waits for one in arrival order, then for a connection.
    async fn wait_for_slot(&self) -> Result<PooledServer, PoolError> {
        let started = Instant::now();
        let slot = match tokio::time::timeout(
            self.settings.checkout_timeout,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) | Err(_) => {
                metrics::get().checkout_wait.record(started.elapsed());
                return Err(self.timed_out(started));
            }
        };
        // Created after the slot: only connect failures from now on count for us.
        let failed = self.failures.notify.notified();
        self.wait_for_connection(failed, slot, started).await
    }

    /// Holding a slot: waits for bb8's connection until the checkout timeout, or until a
    /// connect attempt fails.
    async fn wait_for_connection(
        &self,
        failed: tokio::sync::futures::Notified<'_>,
        slot: OwnedSemaphorePermit,
        started: Instant,
    ) -> Result<PooledServer, PoolError> {
        let remaining = self
            .settings
            .checkout_timeout
            .saturating_sub(started.elapsed());
        let result = tokio::select! {
            result = tokio::time::timeout(remaining, self.inner.get_owned()) => {
                result.unwrap_or(Err(RunError::TimedOut))
            }
            _ = failed => {
                metrics::get().checkout_wait.record(started.elapsed());
                let last = self.failures.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return Err(last.map_or_else(|| self.timed_out(started), PoolError::Backend));
            }
        };
        metrics::get().checkout_wait.record(started.elapsed());
        self.checked_out(result, slot, || started)
    }

    fn checked_out(
        &self,
        result: Result<Conn, RunError<BackendError>>,
        slot: OwnedSemaphorePermit,
        started: impl FnOnce() -> Instant,
    ) -> Result<PooledServer, PoolError> {
        let conn = result.map_err(|e| match e {
            RunError::User(e) => PoolError::Backend(Arc::new(e)),
            RunError::TimedOut => self.timed_out(started()),
        })?;
        let mut conn = PooledServer { conn, _slot: slot };
        conn.needs_reset = true;
        Ok(conn)
    }

    fn timed_out(&self, started: Instant) -> PoolError {
        PoolError::Timeout {
            pool: self.name.clone(),
            waited: started.elapsed(),
            size: self.settings.size,
        }
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

/// The pools one (database, user) reads and writes through: the cluster's primary and
/// each of its replicas, in the order the cluster lists them (the monitor's order too).
#[derive(Debug)]
pub struct PoolSet {
    /// Name of the cluster, whose health the router reads.
    pub cluster: String,
    pub primary: Arc<Pool>,
    pub replicas: Vec<Arc<Pool>>,
}

/// All pools, keyed by (client database, client user).
#[derive(Debug, Default)]
pub struct Pools {
    by_key: HashMap<(String, String), Arc<PoolSet>>,
}

impl Pools {
    /// Builds the pools for every configured database and user, towards the cluster's
    /// primary and replicas. A pool of `previous` whose server, credentials and settings are
    /// unchanged is kept as it is (with its connections), so a reload disturbs only the
    /// pools it changes. No connection is opened until one is needed (or min_idle asks).
    pub fn build(config: &Config, previous: Option<&Pools>) -> Pools {
        let old: HashMap<&str, &Arc<Pool>> = previous
            .into_iter()
            .flat_map(|p| p.by_key.values())
            .flat_map(|set| std::iter::once(&set.primary).chain(&set.replicas))
            .map(|pool| (pool.name.as_str(), pool))
            .collect();
        let mut by_key = HashMap::new();
        for (db_name, db) in &config.databases {
            let Some(cluster) = config.clusters.get(&db.cluster) else {
                continue; // validation guarantees the cluster exists
            };
            for (user_name, user) in &config.users {
                let pool = |name: String, host: &str, port: u16| {
                    let target = ServerTarget {
                        host: host.to_owned(),
                        port,
                        user: user.server_user.clone(),
                        password: user.server_password.clone(),
                        database: db.server_database.clone(),
                    };
                    match old.get(name.as_str()) {
                        Some(pool)
                            if pool.settings == db.pool && same_target(&pool.target, &target) =>
                        {
                            Arc::clone(pool)
                        }
                        _ => Arc::new(Pool::new(name, db.pool.clone(), target)),
                    }
                };
                let primary = pool(
                    format!("{db_name}/{user_name}"),
                    &cluster.primary.host,
                    cluster.primary.port,
                );
                let replicas = cluster
                    .replicas
                    .iter()
                    .map(|r| {
                        let name = format!("{db_name}/{user_name}@{}", r.server);
                        pool(name, &r.server.host, r.server.port)
                    })
                    .collect();
                let set = PoolSet {
                    cluster: db.cluster.clone(),
                    primary,
                    replicas,
                };
                by_key.insert((db_name.clone(), user_name.clone()), Arc::new(set));
            }
        }
        Pools { by_key }
    }

    pub fn get(&self, database: &str, user: &str) -> Option<Arc<PoolSet>> {
        self.by_key
            .get(&(database.to_owned(), user.to_owned()))
            .cloned()
    }

    /// Every pool, primaries and replicas.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.by_key
            .values()
            .flat_map(|set| std::iter::once(&set.primary).chain(&set.replicas))
    }
}

fn same_target(a: &ServerTarget, b: &ServerTarget) -> bool {
    a.host == b.host
        && a.port == b.port
        && a.user == b.user
        && a.database == b.database
        && a.password.as_ref().map(|p| p.expose()) == b.password.as_ref().map(|p| p.expose())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(replicas: &str, pool_size: u32) -> Config {
        let yaml = format!(
            r#"
listen: {{ address: "127.0.0.1:0" }}
clusters:
  main:
    primary: {{ host: 127.0.0.1, port: 1 }}
    replicas: [{replicas}]
databases:
  app: {{ cluster: main, pool_mode: transaction, pool_size: {pool_size} }}
users:
  app: {{ auth: trust }}
"#
        );
        crate::rules::load_str(&yaml, Path::new("t.yaml"), &|_| None).expect("config")
    }

    /// A reload keeps the pools it does not change, connections and all.
    #[tokio::test]
    async fn a_reload_keeps_unchanged_pools() {
        let one = Pools::build(&config("{ host: 127.0.0.1, port: 2 }", 5), None);
        let two = Pools::build(
            &config(
                "{ host: 127.0.0.1, port: 2 }, { host: 127.0.0.1, port: 3 }",
                5,
            ),
            Some(&one),
        );
        let (a, b) = (
            one.get("app", "app").unwrap(),
            two.get("app", "app").unwrap(),
        );
        assert!(
            Arc::ptr_eq(&a.primary, &b.primary),
            "adding a replica kept the primary's pool"
        );
        assert!(
            Arc::ptr_eq(&a.replicas[0], &b.replicas[0]),
            "and the other replica's"
        );
        assert_eq!(b.replicas.len(), 2);
        let resized = Pools::build(&config("{ host: 127.0.0.1, port: 3 }", 6), Some(&two));
        let c = resized.get("app", "app").unwrap();
        assert!(
            !Arc::ptr_eq(&b.primary, &c.primary),
            "new settings, new pool"
        );
        assert_eq!(c.replicas.len(), 1);
        assert_eq!(c.replicas[0].target.port, 3);
    }
}
