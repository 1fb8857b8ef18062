//! The polling tasks: one per server, each on its own ticker, so a slow server delays only
//! its own checks; one more refreshes the cluster's write functions from the primary.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{NoTls, Row};

use super::error::MonitorError;
use super::health::{Check, ClusterHealth, ServerHealth};
use super::lag::{self, LagLimits, ReplicaSample};
use super::lsn::Lsn;
use super::verdict::Problem;
use super::MonitorCredentials;
use crate::rules::ServerAddr;

/// How long connecting to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

const REPLICA_CHECK: &str = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), \
     pg_last_wal_receive_lsn(), \
     extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8";
/// The insert position, not the write position: with synchronous_commit off, a commit may
/// not be written yet, and a session's read floor is its insert position too.
const PRIMARY_CHECK: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END";
const WRITE_FUNCTIONS: &str = "SELECT DISTINCT lower(p.proname) \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.provolatile = 'v' AND p.prokind = 'f' \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%'";

/// A monitor connection, marked broken when a check on it fails or times out, so bb8
/// drops it rather than queueing the next check behind a hung query.
pub struct MonitorConnection {
    client: tokio_postgres::Client,
    broken: bool,
}

/// bb8-postgres's manager, wrapped to honour `MonitorConnection::broken`.
pub struct MonitorManager(PostgresConnectionManager<NoTls>);

impl ManageConnection for MonitorManager {
    type Connection = MonitorConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<MonitorConnection, tokio_postgres::Error> {
        let client = self.0.connect().await?;
        Ok(MonitorConnection {
            client,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut MonitorConnection) -> Result<(), tokio_postgres::Error> {
        self.0.is_valid(&mut conn.client).await
    }

    fn has_broken(&self, conn: &mut MonitorConnection) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

pub type MonitorPool = bb8::Pool<MonitorManager>;

/// A pool of one connection to `addr`; connects lazily, fails fast when refused.
pub fn pool(addr: &ServerAddr, creds: &MonitorCredentials) -> MonitorPool {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&addr.host)
        .port(addr.port)
        .user(&creds.user)
        .dbname(&creds.database)
        .application_name("pgstrata-monitor")
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(password) = &creds.password {
        config.password(password.expose());
    }
    let manager = MonitorManager(PostgresConnectionManager::new(config, NoTls));
    bb8::Pool::builder()
        .max_size(1)
        .min_idle(None)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_on_check_out(false)
        .retry_connection(false)
        .connection_timeout(CONNECT_TIMEOUT)
        .build_unchecked(manager)
}

/// Runs `sql` for one row, all within `timeout`, connecting if needed.
async fn query_row(pool: &MonitorPool, sql: &str, timeout: Duration) -> Result<Row, MonitorError> {
    query(pool, sql, timeout)
        .await?
        .into_iter()
        .next()
        .ok_or(MonitorError::NoRow)
}

async fn query(pool: &MonitorPool, sql: &str, timeout: Duration) -> Result<Vec<Row>, MonitorError> {
    let deadline = Instant::now() + timeout;
    let mut conn = tokio::time::timeout_at(deadline, pool.get())
        .await
        .map_err(|_| MonitorError::Timeout(timeout))??;
    let result = tokio::time::timeout_at(deadline, conn.client.query(sql, &[])).await;
    match result {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(error)) => {
            conn.broken = true;
            Err(MonitorError::Query(error))
        }
        Err(_) => {
            conn.broken = true;
            Err(MonitorError::Timeout(timeout))
        }
    }
}

async fn check_replica(
    pool: &MonitorPool,
    timeout: Duration,
) -> Result<ReplicaSample, MonitorError> {
    let row = query_row(pool, REPLICA_CHECK, timeout).await?;
    let lsn = |index: usize| {
        row.try_get::<_, Option<PgLsn>>(index)
            .map(|lsn| lsn.map(Lsn::from))
            .map_err(MonitorError::Query)
    };
    let age: Option<f64> = row.try_get(3).map_err(MonitorError::Query)?;
    Ok(ReplicaSample {
        in_recovery: row.try_get(0).map_err(MonitorError::Query)?,
        replay: lsn(1)?,
        receive: lsn(2)?,
        // Clocks of primary and replica may disagree a little: a negative age is none.
        replay_age: age.and_then(|secs| Duration::try_from_secs_f64(secs.max(0.0)).ok()),
    })
}

/// The primary's insert position; `None` if it is in recovery.
async fn check_primary(pool: &MonitorPool, timeout: Duration) -> Result<Option<Lsn>, MonitorError> {
    let row = query_row(pool, PRIMARY_CHECK, timeout).await?;
    let lsn: Option<PgLsn> = row.try_get(1).map_err(MonitorError::Query)?;
    Ok(lsn.map(Lsn::from))
}

/// A ticker firing now and then every `period`; a late check pushes the next one back.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// How often to check, and how long one check may take.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub interval: Duration,
    pub timeout: Duration,
}

pub async fn watch_primary(pool: MonitorPool, cluster: Arc<ClusterHealth>, schedule: Schedule) {
    let mut tick = ticker(schedule.interval);
    loop {
        tick.tick().await;
        let check = match check_primary(&pool, schedule.timeout).await {
            Ok(Some(lsn)) => {
                cluster.set_primary_lsn(lsn);
                Check {
                    replay: Some(lsn),
                    ..Check::default()
                }
            }
            Ok(None) => failed(Problem::InRecovery),
            Err(error) => failed(Problem::CheckFailed(error)),
        };
        log_bad(&cluster.primary, &check);
        cluster.primary.record(check);
    }
}

pub async fn watch_replica(
    pool: MonitorPool,
    cluster: Arc<ClusterHealth>,
    index: usize,
    limits: LagLimits,
    schedule: Schedule,
) {
    let Some(health) = cluster.replicas.get(index).cloned() else {
        return;
    };
    let mut tick = ticker(schedule.interval);
    let mut behind_since = None;
    loop {
        tick.tick().await;
        let check = match check_replica(&pool, schedule.timeout).await {
            Ok(sample) => {
                let measured = lag::measure(&sample, cluster.primary_lsn());
                let lag = lag::bounded_by_time_behind(
                    measured,
                    &mut behind_since,
                    Instant::now().into_std(),
                );
                Check {
                    replay: sample.replay,
                    receive: sample.receive,
                    problem: lag::judge(&sample, &lag, &limits),
                    lag: Some(lag),
                }
            }
            Err(error) => failed(Problem::CheckFailed(error)),
        };
        log_bad(&health, &check);
        health.record(check);
    }
}

/// Reloads the primary's user-defined volatile functions every `period`; on failure the
/// last set stays.
pub async fn refresh_write_functions(
    pool: MonitorPool,
    cluster: Arc<ClusterHealth>,
    period: Duration,
    timeout: Duration,
) {
    let mut tick = ticker(period);
    loop {
        // Sessions ask for a refresh when they create functions: a new one must be known
        // before its first call is routed.
        tokio::select! {
            _ = tick.tick() => {}
            _ = cluster.refresh_requested() => {}
        }
        match write_functions(&pool, timeout).await {
            Ok(names) => cluster.set_write_functions(names),
            Err(error) => tracing::debug!(
                cluster = %cluster.name,
                %error,
                "could not refresh the write functions; keeping the last set"
            ),
        }
    }
}

async fn write_functions(
    pool: &MonitorPool,
    timeout: Duration,
) -> Result<HashSet<String>, MonitorError> {
    query(pool, WRITE_FUNCTIONS, timeout)
        .await?
        .iter()
        .map(|row| row.try_get::<_, String>(0).map_err(MonitorError::Query))
        .collect()
}

fn failed(problem: Problem) -> Check {
    Check {
        problem: Some(problem),
        ..Check::default()
    }
}

fn log_bad(server: &ServerHealth, check: &Check) {
    if let Some(problem) = &check.problem {
        tracing::debug!(server = %server.addr, %problem, "health check bad");
    }
}
