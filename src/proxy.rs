//! The state shared by all sessions of a running proxy. What the rules decide (pools,
//! router, replica monitors) lives in a `Snapshot` that a reload swaps in one store;
//! a session loads it once per transaction and keeps it to the transaction's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::backend::monitor::{self, ClusterHealth, MonitorCredentials, MonitorHandle};
use crate::backend::{CancelRegistry, Pools};
use crate::router::Router;
use crate::rules::{ClusterConfig, Config, ListenConfig};
use crate::session::SessionError;
use crate::shutdown::Shutdown;

pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    /// The generation of the snapshot in force, set after it is stored: comparing it is
    /// cheaper than loading the snapshot (this runs at every transaction start).
    generation: AtomicU64,
    /// Reloads one at a time: each builds on the snapshot the last one stored.
    reloading: std::sync::Mutex<()>,
    /// Fixed at start: a reload cannot move the listener.
    pub listen: ListenConfig,
    pub cancels: Arc<CancelRegistry>,
    pub tls: Option<TlsAcceptor>,
    /// Per-database client connection caps, where configured (fixed at start).
    database_limits: HashMap<String, Arc<Semaphore>>,
    /// Fires when the proxy starts shutting down.
    pub shutdown: Arc<Shutdown>,
}

/// Everything built from one version of the rules.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub pools: Pools,
    pub router: Router,
    /// Health of each cluster that has replicas.
    pub clusters: HashMap<String, Monitored>,
    /// One more than the snapshot it replaced.
    generation: u64,
}

/// A cluster's health and the task that keeps it current (stopped with the last user).
pub struct Monitored {
    pub health: Arc<ClusterHealth>,
    config: ClusterConfig,
    _task: Arc<MonitorHandle>,
}

impl Snapshot {
    /// Builds from `config`, keeping whatever of `previous` is unchanged (pools with their
    /// connections, monitors of unchanged clusters).
    pub(crate) fn build(config: Config, previous: Option<&Snapshot>) -> Snapshot {
        let pools = Pools::build(&config, previous.map(|p| &p.pools));
        let mut clusters = HashMap::new();
        for (name, cluster) in &config.clusters {
            if cluster.replicas.is_empty() {
                continue;
            }
            let kept = previous
                .and_then(|p| p.clusters.get(name))
                .filter(|m| m.config == *cluster);
            let monitored = match kept {
                Some(m) => Monitored {
                    health: Arc::clone(&m.health),
                    config: m.config.clone(),
                    _task: Arc::clone(&m._task),
                },
                None => {
                    let creds = monitor_credentials(&config, name, cluster);
                    let (health, task) = monitor::spawn(name, cluster, creds, &config.routing);
                    Monitored {
                        health,
                        config: cluster.clone(),
                        _task: Arc::new(task),
                    }
                }
            };
            clusters.insert(name.clone(), monitored);
        }
        // Classification does not depend on the rules: the parse cache outlives a reload.
        let router = match previous {
            Some(p) => Router::with_cache(&config.routing, p.router.cache().clone()),
            None => Router::new(&config.routing),
        };
        Snapshot {
            router,
            config: Arc::new(config),
            pools,
            clusters,
            generation: previous.map_or(0, |p| p.generation + 1),
        }
    }

    pub fn health(&self, cluster: &str) -> Option<&Arc<ClusterHealth>> {
        self.clusters.get(cluster).map(|m| &m.health)
    }
}

/// The control plane logs in as the cluster's `monitor_user`, to the first database that
/// uses the cluster.
fn monitor_credentials(config: &Config, name: &str, cluster: &ClusterConfig) -> MonitorCredentials {
    let user = config.users.get(&cluster.monitor_user);
    let database = config
        .databases
        .values()
        .find(|db| db.cluster == name)
        .map_or_else(|| "postgres".to_owned(), |db| db.server_database.clone());
    MonitorCredentials {
        user: user.map_or_else(|| cluster.monitor_user.clone(), |u| u.server_user.clone()),
        password: user.and_then(|u| u.server_password.clone()),
        database,
    }
}

impl Proxy {
    pub fn new(config: Config, tls: Option<TlsAcceptor>, shutdown: Arc<Shutdown>) -> Proxy {
        let database_limits = config
            .databases
            .iter()
            .filter_map(|(name, db)| {
                db.max_client_connections
                    .map(|n| (name.clone(), Arc::new(Semaphore::new(n))))
            })
            .collect();
        Proxy {
            listen: config.listen.clone(),
            snapshot: ArcSwap::from_pointee(Snapshot::build(config, None)),
            generation: AtomicU64::new(0),
            reloading: std::sync::Mutex::new(()),
            cancels: Arc::new(CancelRegistry::default()),
            tls,
            database_limits,
            shutdown,
        }
    }

    /// The rules in force now. Hold it for one request (a transaction), not longer.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether `held` is still the snapshot in force (one atomic load: this runs at every
    /// transaction start). During a reload it may still say yes for the old one until the
    /// new one is stored, as if the transaction had started a moment earlier.
    pub fn is_current(&self, held: &Snapshot) -> bool {
        held.generation == self.generation.load(Ordering::Acquire)
    }

    /// Swaps in new rules. Sessions finish their current transaction on the old ones.
    pub fn reload(&self, config: Config) {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = self.snapshot.load();
        let next = Snapshot::build(config, Some(&previous));
        let generation = next.generation;
        self.snapshot.store(Arc::new(next));
        self.generation.store(generation, Ordering::Release);
        tracing::info!("rules reloaded");
    }

    /// A slot under the database's client cap, if it has one.
    pub fn database_permit(
        &self,
        database: &str,
    ) -> Result<Option<OwnedSemaphorePermit>, SessionError> {
        match self.database_limits.get(database) {
            None => Ok(None),
            Some(limit) => Arc::clone(limit)
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| SessionError::TooManyForDatabase(database.to_owned())),
        }
    }
}
