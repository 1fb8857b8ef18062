//! The health monitor against real servers: replay positions, read floors under an apply
//! delay, a stopped and restarted replica, the lag limit, and write-function discovery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgstrata::backend::monitor::{self, ClusterHealth, Lsn, MonitorCredentials, MonitorOptions};
use pgstrata::localpg::{self, ClusterOptions, LocalCluster};
use pgstrata::rules::{ClusterConfig, ReplicaConfig, RoutingConfig, Secret, ServerAddr};
use tokio_postgres::types::PgLsn;

use crate::support::{self, eventually};

const APPLY_DELAY: Duration = Duration::from_millis(300);

fn creds() -> MonitorCredentials {
    MonitorCredentials {
        user: localpg::SUPERUSER.to_string(),
        password: Some(Secret::new(localpg::SUPERUSER_PASSWORD)),
        database: "postgres".to_string(),
    }
}

fn routing(interval_ms: u64, fail_after: u32, recover_after: u32) -> RoutingConfig {
    RoutingConfig {
        rules: Vec::new(),
        write_functions: Vec::new(),
        check_interval: Duration::from_millis(interval_ms),
        fail_after,
        recover_after,
    }
}

fn addr(port: u16) -> ServerAddr {
    ServerAddr {
        host: "127.0.0.1".to_string(),
        port,
    }
}

fn config(cluster: &LocalCluster, max_lag: Option<Duration>) -> ClusterConfig {
    let replica = cluster.replica().expect("cluster has a replica");
    ClusterConfig {
        primary: addr(cluster.primary().port()),
        replicas: vec![ReplicaConfig {
            server: addr(replica.port()),
            weight: 1,
            max_lag,
            max_lag_bytes: None,
        }],
        monitor_user: localpg::SUPERUSER.to_owned(),
    }
}

/// Inserts a row into a table of the test's own and returns the primary's insert LSN after it.
async fn write(client: &tokio_postgres::Client, table: &str) -> Lsn {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id serial, at timestamptz DEFAULT now());
             INSERT INTO {table} DEFAULT VALUES"
        ))
        .await
        .expect("insert");
    let row = client
        .query_one("SELECT pg_current_wal_insert_lsn()", &[])
        .await
        .expect("insert lsn");
    Lsn::from(row.get::<_, PgLsn>(0))
}

async fn until(
    seconds: u64,
    health: &ClusterHealth,
    check: impl Fn(&ClusterHealth) -> bool,
) -> bool {
    eventually(Duration::from_secs(seconds), || async { check(health) }).await
}

#[tokio::test]
async fn monitor_replica_replays_past_a_write_and_recovers_from_a_reported_failure() {
    let cluster = support::cluster();
    let primary = cluster.primary().superuser_client().await.expect("primary");
    let lsn = write(&primary, "monitor_replay_probe").await;
    let (health, _handle) = monitor::spawn(
        "shared",
        &config(cluster, None),
        creds(),
        &routing(100, 2, 2),
    );

    let replica = Arc::clone(&health.replicas[0]);
    let replayed = until(10, &health, |h| {
        h.primary.is_usable()
            && replica.is_usable()
            && replica.replay_lsn() >= lsn
            && h.primary_lsn() >= lsn
    })
    .await;
    assert!(
        replayed,
        "replica never replayed {lsn}: {replica:?}, primary at {}",
        health.primary_lsn()
    );
    assert_eq!(health.pick_replica(lsn), Some(0));
    assert!(replica.receive_lsn() >= lsn);

    replica.report_failure();
    assert!(
        !replica.is_usable(),
        "a reported failure takes the replica out at once"
    );
    assert_eq!(health.pick_replica(Lsn::ZERO), None);
    assert!(
        until(5, &health, |_| replica.is_usable()).await,
        "back after good checks"
    );
}

#[tokio::test]
async fn monitor_write_functions_pick_up_new_volatile_functions() {
    let cluster = support::cluster();
    let primary = cluster.primary().superuser_client().await.expect("primary");
    let options = MonitorOptions {
        write_functions_refresh: Duration::from_millis(100),
    };
    let (health, _handle) = monitor::spawn_with(
        "shared",
        &config(cluster, None),
        creds(),
        &routing(100, 2, 2),
        options,
    );
    primary
        .batch_execute(
            r#"CREATE SCHEMA IF NOT EXISTS monitor_fns;
               CREATE OR REPLACE FUNCTION "Monitor_Bump"() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
               CREATE OR REPLACE FUNCTION monitor_fns.monitor_in_schema() RETURNS int LANGUAGE sql AS 'SELECT 2';
               CREATE OR REPLACE FUNCTION monitor_stable() RETURNS int LANGUAGE sql STABLE AS 'SELECT 3';"#,
        )
        .await
        .expect("create functions");
    let found = until(10, &health, |h| {
        let names = h.write_functions();
        names.contains("monitor_bump") && names.contains("monitor_in_schema")
    })
    .await;
    let names = health.write_functions();
    assert!(found, "volatile functions not found: {names:?}");
    assert!(
        !names.contains("monitor_stable"),
        "a STABLE function is no write"
    );
    assert!(
        !names.contains("nextval"),
        "pg_catalog functions are not listed: {names:?}"
    );
}

#[tokio::test]
async fn monitor_apply_delay_holds_back_read_floors_and_breaks_max_lag() {
    let cluster = LocalCluster::start(ClusterOptions {
        replica_apply_delay: Some(APPLY_DELAY),
        ..ClusterOptions::default()
    })
    .await
    .expect("start cluster with apply delay");
    let primary = cluster.primary().superuser_client().await.expect("primary");

    // Read floors: no lag limit, so only the replay position keeps the replica from a read.
    let (health, handle) = monitor::spawn(
        "delayed",
        &config(&cluster, None),
        creds(),
        &routing(50, 1, 1),
    );
    assert!(
        until(10, &health, |h| h.pick_replica(Lsn::ZERO).is_some()).await,
        "replica usable"
    );
    let floor = write(&primary, "monitor_floor_probe").await;
    let written = Instant::now();
    assert_eq!(
        health.pick_replica(floor),
        None,
        "the write is not replayed yet"
    );
    assert!(
        until(10, &health, |h| h.pick_replica(floor) == Some(0)).await,
        "floor never met"
    );
    assert!(
        written.elapsed() >= APPLY_DELAY / 2,
        "met after {:?}",
        written.elapsed()
    );
    drop(handle);

    // max_lag 100ms under a steady write load: out; back in once writes stop.
    let (health, _handle) = monitor::spawn(
        "delayed",
        &config(&cluster, Some(Duration::from_millis(100))),
        creds(),
        &routing(50, 2, 2),
    );
    let replica = Arc::clone(&health.replicas[0]);
    assert!(
        until(10, &health, |_| replica.is_usable()).await,
        "idle replica usable: {replica:?}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            while !stop.load(Ordering::Relaxed) {
                write(&primary, "monitor_lag_probe").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let out = until(10, &health, |_| !replica.is_usable()).await;
    let (lag, _) = replica.lag();
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(out, "replica stayed usable under lag: {replica:?}");
    assert!(lag > Some(Duration::from_millis(100)), "lag {lag:?}");
    assert!(
        until(10, &health, |_| replica.is_usable()).await,
        "back once caught up: {replica:?}"
    );
    assert_eq!(replica.lag().0, Some(Duration::ZERO));
    cluster.stop().await;
}

#[tokio::test]
async fn monitor_stopped_replica_goes_out_and_comes_back() {
    let cluster = LocalCluster::start(ClusterOptions::default())
        .await
        .expect("start cluster");
    let (health, _handle) = monitor::spawn(
        "restart",
        &config(&cluster, None),
        creds(),
        &routing(100, 2, 3),
    );
    let replica = Arc::clone(&health.replicas[0]);
    assert!(
        until(10, &health, |_| replica.is_usable()).await,
        "replica usable: {replica:?}"
    );

    let server = cluster.replica().expect("replica");
    server.stop().await.expect("stop replica");
    let stopped = Instant::now();
    assert!(
        until(5, &health, |_| !replica.is_usable()).await,
        "still usable: {replica:?}"
    );
    let out_after = stopped.elapsed();
    assert!(health.primary.is_usable(), "the primary is unaffected");
    assert_eq!(health.pick_replica(Lsn::ZERO), None);

    server.start().await.expect("start replica");
    assert!(
        until(10, &health, |_| replica.is_usable()).await,
        "not back: {replica:?}"
    );
    assert!(
        out_after < Duration::from_secs(2),
        "took {out_after:?} to go out"
    );
    cluster.stop().await;
}
