//! The control plane: polls each cluster's primary and replicas and publishes lock-free
//! health (usable, replay LSN, lag, write functions) that the data plane reads per read.
//!
//! One task per server, each on its own ticker; state flips with hysteresis (`verdict`).

mod error;
mod health;
mod lag;
mod lsn;
mod pick;
mod poll;
mod verdict;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

pub use error::MonitorError;
pub use health::{Check, ClusterHealth, Role, ServerHealth};
pub use lag::{Lag, LagLimits};
pub use lsn::{Lsn, LsnError};
pub use verdict::{Change, Problem, Thresholds, Verdict};

use crate::rules::{ClusterConfig, RoutingConfig, Secret};
use poll::Schedule;

/// How often write functions are reloaded unless told otherwise.
pub const WRITE_FUNCTIONS_REFRESH: Duration = Duration::from_secs(10);
/// The shortest time one check may take before it counts as failed.
const MIN_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The role the monitor logs in as on every server of a cluster.
#[derive(Clone, Debug)]
pub struct MonitorCredentials {
    pub user: String,
    pub password: Option<Secret>,
    /// Also where write functions are looked up.
    pub database: String,
}

/// Knobs beyond the rules file.
#[derive(Clone, Copy, Debug)]
pub struct MonitorOptions {
    /// How often `ClusterHealth::write_functions` is reloaded from the primary.
    pub write_functions_refresh: Duration,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            write_functions_refresh: WRITE_FUNCTIONS_REFRESH,
        }
    }
}

/// The polling tasks of one cluster; dropping it stops them (and closes their connections).
#[derive(Debug)]
pub struct MonitorHandle {
    _tasks: JoinSet<()>,
}

/// Starts polling cluster `name` (inside a tokio runtime); see [`spawn_with`].
pub fn spawn(
    name: &str,
    cluster: &ClusterConfig,
    creds: MonitorCredentials,
    routing: &RoutingConfig,
) -> (Arc<ClusterHealth>, MonitorHandle) {
    spawn_with(name, cluster, creds, routing, MonitorOptions::default())
}

/// Starts polling every `routing.check_interval`, each check bounded by
/// max(1 s, interval). Every server starts unusable until its first good check.
pub fn spawn_with(
    name: &str,
    cluster: &ClusterConfig,
    creds: MonitorCredentials,
    routing: &RoutingConfig,
    options: MonitorOptions,
) -> (Arc<ClusterHealth>, MonitorHandle) {
    let health = unchecked_health(name, cluster, routing);
    let schedule = Schedule {
        interval: routing.check_interval.max(Duration::from_millis(1)),
        timeout: routing.check_interval.max(MIN_CHECK_TIMEOUT),
    };

    let mut tasks = JoinSet::new();
    let primary_pool = poll::pool(&cluster.primary, &creds);
    tasks.spawn(poll::watch_primary(
        primary_pool.clone(),
        Arc::clone(&health),
        schedule,
    ));
    tasks.spawn(poll::refresh_write_functions(
        primary_pool,
        Arc::clone(&health),
        options.write_functions_refresh,
        schedule.timeout,
    ));
    for (index, replica) in cluster.replicas.iter().enumerate() {
        let limits = LagLimits {
            max_lag: replica.max_lag,
            max_lag_bytes: replica.max_lag_bytes,
        };
        let pool = poll::pool(&replica.server, &creds);
        tasks.spawn(poll::watch_replica(
            pool,
            Arc::clone(&health),
            index,
            limits,
            schedule,
        ));
    }
    tracing::info!(
        cluster = name,
        primary = %cluster.primary,
        replicas = cluster.replicas.len(),
        interval_ms = schedule.interval.as_millis() as u64,
        "health monitor started"
    );
    (health, MonitorHandle { _tasks: tasks })
}

/// The health of every server of `cluster`, none checked yet.
fn unchecked_health(
    name: &str,
    cluster: &ClusterConfig,
    routing: &RoutingConfig,
) -> Arc<ClusterHealth> {
    let thresholds = Thresholds {
        fail_after: routing.fail_after,
        recover_after: routing.recover_after,
    };
    let server = |role, addr: &crate::rules::ServerAddr, weight| {
        Arc::new(ServerHealth::new(
            name,
            role,
            addr.clone(),
            weight,
            thresholds,
        ))
    };
    let primary = server(Role::Primary, &cluster.primary, 1);
    let replicas = cluster
        .replicas
        .iter()
        .map(|replica| server(Role::Replica, &replica.server, replica.weight))
        .collect();
    Arc::new(ClusterHealth::new(name, primary, replicas))
}
