//! Read/write routing against a real primary and streaming replica: reads land on the
//! replica and writes on the primary (proven server-side), read-your-writes with a delayed
//! replica, hints and route settings, and replicas that stop, lag or come back.

use std::sync::OnceLock;
use std::time::Duration;

use pgstrata::localpg::{ClusterOptions, LocalCluster};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{self, connect, eventually, ProxyBuilder, APP_PASSWORD, APP_USER, DATABASE};

/// Where a statement ran: (in recovery, server port).
async fn served_by(client: &Client, sql: &str) -> (bool, i32) {
    let row = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    (row.get(0), row.get(1))
}

const WHERE: &str = "SELECT pg_is_in_recovery(), inet_server_port()";

/// The same through the simple protocol.
async fn served_by_simple(client: &Client, sql: &str) -> (bool, i32) {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"));
    (
        row.get(0) == Some("t"),
        row.get(1).and_then(|p| p.parse().ok()).unwrap_or(-1),
    )
}

/// A cluster of its own (the test stops servers or needs an apply delay), with the app
/// role and database the proxy's test config expects.
pub async fn own_cluster(apply_delay: Option<Duration>) -> LocalCluster {
    let cluster = LocalCluster::start(ClusterOptions {
        replica_apply_delay: apply_delay,
        ..ClusterOptions::default()
    })
    .await
    .expect("start primary + replica");
    let primary = cluster.primary();
    primary
        .create_role(APP_USER, APP_PASSWORD, false)
        .await
        .expect("create role");
    primary
        .create_database(DATABASE, APP_USER)
        .await
        .expect("create database");
    cluster
        .wait_for_replica()
        .await
        .expect("replica catches up");
    cluster
}

/// A cluster whose replica applies WAL 300 ms late, shared by the tests that only read
/// and write through it.
fn delayed_cluster() -> &'static LocalCluster {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let cluster = rt.block_on(own_cluster(Some(Duration::from_millis(300))));
            std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
            cluster
        })
        .join()
        .expect("cluster thread")
    })
}

fn ports(cluster: &LocalCluster) -> (u16, u16) {
    let replica = cluster.replica().expect("replica").port();
    (cluster.primary().port(), replica)
}

async fn create_table(cluster: &LocalCluster, sql: &str) {
    let client = cluster
        .primary()
        .connect(APP_USER, APP_PASSWORD, DATABASE)
        .await
        .expect("connect primary");
    client.batch_execute(sql).await.expect("create table");
    cluster
        .wait_for_replica()
        .await
        .expect("replica catches up");
}

/// Waits until the monitor lets reads onto the replica.
async fn replica_in_use(client: &Client, replica_port: u16) {
    let seen = eventually(Duration::from_secs(10), || async {
        served_by(client, WHERE).await == (true, i32::from(replica_port))
    })
    .await;
    assert!(seen, "reads never reached the replica");
}

#[tokio::test]
async fn reads_go_to_the_replica_and_writes_to_the_primary() {
    let cluster = support::cluster();
    let (primary_port, replica_port) = ports(cluster);
    create_table(
        cluster,
        "CREATE TABLE IF NOT EXISTS routing_basic (id int); CREATE SEQUENCE IF NOT EXISTS routing_seq",
    )
    .await;
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica()
        .start()
        .await;
    let client = connect(&proxy.app_conn_string()).await;
    replica_in_use(&client, replica_port).await;
    let primary = (false, i32::from(primary_port));
    let replica = (true, i32::from(replica_port));
    assert_eq!(
        served_by_simple(&client, WHERE).await,
        replica,
        "simple protocol read"
    );
    let cases = [
        ("INSERT INTO routing_basic VALUES (1) RETURNING pg_is_in_recovery(), inet_server_port()", primary),
        ("SELECT pg_is_in_recovery(), inet_server_port() FROM routing_basic LIMIT 1 FOR UPDATE", primary),
        ("SELECT pg_is_in_recovery(), inet_server_port() + 0 * nextval('routing_seq')::int", primary),
        ("/* pgstrata: route=primary */ SELECT pg_is_in_recovery(), inet_server_port()", primary),
        ("WITH w AS (DELETE FROM routing_basic WHERE id = -1 RETURNING 1) SELECT pg_is_in_recovery(), inet_server_port()", primary),
    ];
    for (sql, expected) in cases {
        assert_eq!(served_by(&client, sql).await, expected, "{sql}");
        assert_eq!(
            served_by_simple(&client, sql).await,
            expected,
            "{sql} (simple)"
        );
    }
    // A read-only transaction stays on a replica; a plain one runs on the primary.
    replica_in_use(&client, replica_port).await;
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .expect("begin");
    assert_eq!(served_by(&client, WHERE).await, replica);
    assert_eq!(served_by(&client, WHERE).await, replica);
    client.batch_execute("COMMIT").await.expect("commit");
    client.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(served_by(&client, WHERE).await, primary);
    client.batch_execute("COMMIT").await.expect("commit");
    // BEGIN then SET TRANSACTION READ ONLY: the transaction still goes to a replica.
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .batch_execute("SET TRANSACTION READ ONLY")
        .await
        .expect("set transaction");
    assert_eq!(served_by(&client, WHERE).await, replica);
    let denied = client
        .batch_execute("INSERT INTO routing_basic VALUES (2)")
        .await
        .expect_err("a read-only transaction refuses writes");
    assert_eq!(denied.code().map(|c| c.code()), Some("25006"), "{denied}");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    // An empty transaction, and one that is rolled back, as on a direct connection.
    client.batch_execute("BEGIN").await.expect("begin");
    client.batch_execute("COMMIT").await.expect("empty commit");
    client.batch_execute("BEGIN").await.expect("begin");
    client
        .batch_execute("INSERT INTO routing_basic VALUES (-7)")
        .await
        .expect("insert");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let kept: i64 = client
        .query_one(
            "/* pgstrata: route=primary */ SELECT count(*) FROM routing_basic WHERE id = -7",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(kept, 0, "a rolled-back insert stayed");
    // A prepared read is used on the replica again and again; a prepared write never.
    let read = client.prepare(WHERE).await.expect("prepare");
    let write = client
        .prepare("INSERT INTO routing_basic VALUES ($1) RETURNING pg_is_in_recovery(), inet_server_port()")
        .await
        .expect("prepare write");
    for i in 0..20 {
        let row = client.query_one(&write, &[&i]).await.expect("write");
        assert_eq!((row.get::<_, bool>(0), row.get::<_, i32>(1)), primary);
    }
    replica_in_use(&client, replica_port).await;
    for _ in 0..20 {
        let row = client.query_one(&read, &[]).await.expect("read");
        assert_eq!((row.get::<_, bool>(0), row.get::<_, i32>(1)), replica);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn session_route_setting_and_explain_are_answered_by_the_proxy() {
    let cluster = support::cluster();
    let (primary_port, replica_port) = ports(cluster);
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica()
        .start()
        .await;
    let client = connect(&proxy.app_conn_string()).await;
    replica_in_use(&client, replica_port).await;
    client
        .batch_execute("SET pgstrata.route = 'primary'")
        .await
        .expect("set route");
    assert_eq!(
        served_by_simple(&client, WHERE).await,
        (false, i32::from(primary_port))
    );
    let shown = client
        .simple_query("SHOW pgstrata.route")
        .await
        .expect("show");
    assert!(
        shown
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("primary"))),
        "SHOW pgstrata.route"
    );
    client
        .batch_execute("RESET pgstrata.route")
        .await
        .expect("reset");
    assert_eq!(
        served_by_simple(&client, WHERE).await,
        (true, i32::from(replica_port))
    );
    let err = client
        .batch_execute("SET pgstrata.route = 'sideways'")
        .await
        .expect_err("invalid value");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"), "{err}");
    // The server never saw the setting: a direct SHOW on its connection would fail.
    let rows = client
        .simple_query("EXPLAIN ROUTE SELECT * FROM pg_class FOR UPDATE")
        .await
        .expect("explain route");
    let fields: Vec<(String, String)> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap_or_default().to_owned(),
                r.get(1).unwrap_or_default().to_owned(),
            )),
            _ => None,
        })
        .collect();
    assert!(
        fields.iter().any(|(f, v)| f == "target" && v == "primary"),
        "{fields:?}"
    );
    // The extended protocol (a named prepared statement) is answered by the proxy too.
    client
        .execute("SET pgstrata.route = 'primary'", &[])
        .await
        .expect("extended set route");
    assert_eq!(
        served_by(&client, WHERE).await,
        (false, i32::from(primary_port))
    );
    let shown: String = client
        .query_one("SHOW pgstrata.route", &[])
        .await
        .expect("extended show")
        .get(0);
    assert_eq!(shown, "primary");
    let on_server: Option<String> = client
        .query_one("SELECT current_setting('pgstrata.route', true)", &[])
        .await
        .expect("server setting")
        .get(0);
    assert_eq!(on_server, None, "the route setting reached the server");
    let statement = client
        .prepare("RESET pgstrata.route")
        .await
        .expect("prepare reset");
    client
        .execute(&statement, &[])
        .await
        .expect("extended reset");
    assert_eq!(
        served_by(&client, WHERE).await,
        (true, i32::from(replica_port))
    );
    // The session still works after all of that.
    assert_eq!(served_by(&client, "SELECT false, 1").await, (false, 1));
    proxy.shutdown().await;
}

/// `iterations` rounds of write-then-read through the proxy; returns the stale reads seen.
async fn stale_reads(client: &Client, table: &str, iterations: i32) -> usize {
    let mut stale = 0;
    for i in 0..iterations {
        // Write, then read it back (extended protocol).
        client
            .execute(&format!("INSERT INTO {table} VALUES ($1, 0)"), &[&i])
            .await
            .expect("insert");
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE id = $1"),
                &[&i],
            )
            .await
            .expect("read after insert")
            .get(0);
        stale += usize::from(n != 1);
        // Update, then read (simple protocol).
        client
            .simple_query(&format!("UPDATE {table} SET v = {i} + 1 WHERE id = {i}"))
            .await
            .expect("update");
        let rows = client
            .simple_query(&format!("SELECT v FROM {table} WHERE id = {i}"))
            .await
            .expect("read after update");
        let v = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        stale += usize::from(v != Some((i + 1).to_string()));
        // Write inside a transaction, read inside it, then after the commit.
        client.batch_execute("BEGIN").await.expect("begin");
        client
            .execute(
                &format!("UPDATE {table} SET v = v + 1 WHERE id = $1"),
                &[&i],
            )
            .await
            .expect("update in transaction");
        let inside: i32 = client
            .query_one(&format!("SELECT v FROM {table} WHERE id = $1"), &[&i])
            .await
            .expect("read in transaction")
            .get(0);
        client.batch_execute("COMMIT").await.expect("commit");
        let after: Option<i32> = client
            .query_opt(&format!("SELECT v FROM {table} WHERE id = $1"), &[&i])
            .await
            .expect("read after commit")
            .map(|row| row.get(0));
        stale += usize::from(inside != i + 2) + usize::from(after != Some(i + 2));
    }
    stale
}

#[tokio::test]
async fn read_your_writes_with_a_delayed_replica() {
    let cluster = delayed_cluster();
    let (_, replica_port) = ports(cluster);
    create_table(
        cluster,
        "CREATE TABLE ryw_session (id int PRIMARY KEY, v int)",
    )
    .await;
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .servers(cluster.primary().port(), &[replica_port])
        .start()
        .await;
    let writer = connect(&proxy.app_conn_string()).await;
    let reader = connect(&proxy.app_conn_string()).await;
    replica_in_use(&reader, replica_port).await;
    assert_eq!(
        stale_reads(&writer, "ryw_session", 200).await,
        0,
        "stale reads"
    );
    // A session that has not written still reads from the replica...
    assert_eq!(
        served_by(&reader, WHERE).await,
        (true, i32::from(replica_port))
    );
    // ... and the writer goes back to it once the replica has replayed its writes.
    replica_in_use(&writer, replica_port).await;
    proxy.shutdown().await;
}

/// The control for the test above: without read-your-writes the same loop reads stale
/// data from the delayed replica, so the test above can fail.
#[tokio::test]
async fn eventual_consistency_reads_stale_data_from_a_delayed_replica() {
    let cluster = delayed_cluster();
    let (_, replica_port) = ports(cluster);
    create_table(
        cluster,
        "CREATE TABLE ryw_eventual (id int PRIMARY KEY, v int)",
    )
    .await;
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .servers(cluster.primary().port(), &[replica_port])
        .database_option("consistency: eventual")
        .start()
        .await;
    let client = connect(&proxy.app_conn_string()).await;
    replica_in_use(&client, replica_port).await;
    assert!(
        stale_reads(&client, "ryw_eventual", 10).await > 0,
        "no stale read without read-your-writes"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stopped_replica_sends_reads_to_the_primary_until_it_is_back() {
    let cluster = own_cluster(None).await;
    let (primary_port, replica_port) = ports(&cluster);
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .servers(primary_port, &[replica_port])
        .routing("routing:\n  check_interval: 50ms\n  recover_after: 2\n")
        .start()
        .await;
    let conn_string = proxy.app_conn_string();
    let client = connect(&conn_string).await;
    replica_in_use(&client, replica_port).await;
    // Readers keep reading while the replica goes away.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let stop = std::sync::Arc::clone(&stop);
        let conn_string = conn_string.clone();
        readers.push(tokio::spawn(async move {
            let client = connect(&conn_string).await;
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.query_one(WHERE, &[]).await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        failed.push(format!("{e:?}"));
                        break;
                    }
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster
        .replica()
        .expect("replica")
        .stop()
        .await
        .expect("stop replica");
    let primary = (false, i32::from(primary_port));
    for _ in 0..50 {
        assert_eq!(
            served_by(&client, WHERE).await,
            primary,
            "read with the replica down"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        let (ok, failed) = reader.await.expect("reader");
        assert!(ok > 0);
        assert!(
            failed.is_empty(),
            "a read failed while the replica stopped: {failed:?}"
        );
    }
    cluster
        .replica()
        .expect("replica")
        .start()
        .await
        .expect("start replica");
    replica_in_use(&client, replica_port).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_replica_over_its_lag_limit_is_taken_out_and_put_back() {
    let cluster = own_cluster(Some(Duration::from_millis(400))).await;
    let (primary_port, replica_port) = ports(&cluster);
    create_table(
        &cluster,
        "CREATE TABLE lag_probe (id serial, at timestamptz default now())",
    )
    .await;
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .servers(primary_port, &[replica_port])
        .replica_options("max_lag: 100ms")
        .routing("routing:\n  check_interval: 50ms\n  recover_after: 2\n")
        .start()
        .await;
    let reader = connect(&proxy.app_conn_string()).await;
    replica_in_use(&reader, replica_port).await;
    // Writes straight to the primary make the replica fall 400 ms behind.
    let writer = cluster
        .primary()
        .connect(APP_USER, APP_PASSWORD, DATABASE)
        .await
        .expect("connect");
    let primary = (false, i32::from(primary_port));
    let mut taken_out = false;
    for _ in 0..100 {
        writer
            .batch_execute("INSERT INTO lag_probe DEFAULT VALUES")
            .await
            .expect("insert");
        if served_by(&reader, WHERE).await == primary {
            taken_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        taken_out,
        "a replica 400 ms behind stayed in use with max_lag 100ms"
    );
    // Writes stop: the replica catches up and is used again.
    replica_in_use(&reader, replica_port).await;
    proxy.shutdown().await;
}

/// Rules as a firewall and a statement timeout, in both protocols; the session goes on.
#[tokio::test]
async fn rules_block_statements_and_bound_their_time() {
    let cluster = support::cluster();
    create_table(
        cluster,
        "CREATE TABLE IF NOT EXISTS rules_firewall (id int)",
    )
    .await;
    let routing = r#"routing:
  rules:
    - name: no-unbounded-delete
      match: { kind: delete, sql: '^delete from [^ ]+$' }
      block: "DELETE without WHERE is not allowed"
    - name: short-sleeps
      match: { sql: 'pg_sleep' }
      timeout: 200ms
"#;
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica()
        .routing(routing)
        .start()
        .await;
    let client = connect(&proxy.app_conn_string()).await;
    let blocked = client
        .batch_execute("DELETE FROM rules_firewall")
        .await
        .expect_err("simple DELETE without WHERE");
    assert_eq!(blocked.code().map(|c| c.code()), Some("42501"), "{blocked}");
    let blocked = client
        .execute("DELETE FROM rules_firewall", &[])
        .await
        .expect_err("extended DELETE without WHERE");
    assert_eq!(blocked.code().map(|c| c.code()), Some("42501"), "{blocked}");
    client
        .execute("DELETE FROM rules_firewall WHERE id = $1", &[&1])
        .await
        .expect("DELETE with WHERE");
    let started = std::time::Instant::now();
    let cancelled = client
        .batch_execute("SELECT pg_sleep(5)")
        .await
        .expect_err("the rule's timeout cancels it");
    assert_eq!(
        cancelled.code().map(|c| c.code()),
        Some("57014"),
        "{cancelled}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(served_by(&client, "SELECT false, 7").await, (false, 7));
    proxy.shutdown().await;
}

/// A read the parser cannot tell is a write (a user function that inserts) is refused by
/// the replica (25006), sent to the primary instead, and the client sees only success.
#[tokio::test]
async fn a_read_the_replica_refuses_as_a_write_runs_on_the_primary() {
    let cluster = support::cluster();
    let (primary_port, replica_port) = ports(cluster);
    create_table(
        cluster,
        "CREATE TABLE IF NOT EXISTS refused_writes (id int);
         CREATE OR REPLACE FUNCTION sneaky_insert() RETURNS int LANGUAGE sql AS
         'INSERT INTO refused_writes VALUES (1) RETURNING inet_server_port()'",
    )
    .await;
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica()
        .start()
        .await;
    let client = connect(&proxy.app_conn_string()).await;
    replica_in_use(&client, replica_port).await;
    for _ in 0..3 {
        let rows = client
            .simple_query("SELECT sneaky_insert()")
            .await
            .expect("the write runs on the primary");
        let port = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(port, Some(primary_port.to_string()));
    }
    proxy.shutdown().await;
}

/// A changed rules file takes effect on open sessions; an invalid one is refused and the
/// rules in force stay.
#[tokio::test]
async fn rules_reload_on_change_and_keep_serving_on_an_invalid_file() {
    let cluster = support::cluster();
    create_table(
        cluster,
        "CREATE TABLE IF NOT EXISTS reload_firewall (id int)",
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let builder = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica();
    let (proxy, path) = builder.clone().start_watching(dir.path()).await;
    let client = connect(&proxy.app_conn_string()).await;
    client
        .batch_execute("DELETE FROM reload_firewall")
        .await
        .expect("no rule yet");
    let blocking = builder.clone().routing(
        "routing:\n  rules:\n    - match: { kind: delete }\n      block: \"no deletes today\"\n",
    );
    std::fs::write(&path, blocking.yaml()).expect("write rules");
    let blocked = || async {
        client
            .batch_execute("DELETE FROM reload_firewall")
            .await
            .is_err_and(|e| e.code().map(|c| c.code()) == Some("42501"))
    };
    assert!(
        eventually(Duration::from_secs(10), blocked).await,
        "the new rule never applied"
    );
    std::fs::write(&path, "listen: [this is not a config\n").expect("write invalid rules");
    // Give the watcher time to see (and refuse) it; the rule in force must stay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        blocked().await,
        "an invalid file replaced the rules in force"
    );
    std::fs::write(&path, builder.yaml()).expect("write rules without the block");
    let allowed = || async {
        client
            .batch_execute("DELETE FROM reload_firewall")
            .await
            .is_ok()
    };
    assert!(
        eventually(Duration::from_secs(10), allowed).await,
        "the watcher stopped after an invalid file"
    );
    proxy.shutdown().await;
}

/// A rule routes a table's reads to the primary; `include_primary_in_reads` lets the
/// primary take a share of the others.
#[tokio::test]
async fn rules_and_include_primary_decide_where_reads_go() {
    let cluster = support::cluster();
    let (primary_port, replica_port) = ports(cluster);
    create_table(
        cluster,
        "CREATE TABLE IF NOT EXISTS rules_fresh_only (id int)",
    )
    .await;
    let routing =
        "routing:\n  rules:\n    - match: { tables: [rules_fresh_only] }\n      route: primary\n";
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica()
        .database_option("include_primary_in_reads: true")
        .routing(routing)
        .start()
        .await;
    let client = connect(&proxy.app_conn_string()).await;
    replica_in_use(&client, replica_port).await;
    let fresh = "SELECT pg_is_in_recovery(), inet_server_port() FROM (VALUES (1)) v \
                 LEFT JOIN rules_fresh_only ON false";
    for _ in 0..20 {
        assert_eq!(
            served_by(&client, fresh).await,
            (false, i32::from(primary_port)),
            "{fresh}"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.insert(served_by(&client, WHERE).await.1);
    }
    let both = [i32::from(primary_port), i32::from(replica_port)].into();
    assert_eq!(seen, both, "reads should reach both servers");
    proxy.shutdown().await;
}

/// What the regression suite found: settings RESET to the client's startup values,
/// custom settings of three parts, SET TRANSACTION never breaking a replica, server-local
/// views read on the primary.
#[tokio::test]
async fn session_settings_behave_as_on_a_direct_connection_across_servers() {
    let cluster = support::cluster();
    let (primary_port, replica_port) = ports(cluster);
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(3)
        .with_replica()
        .start()
        .await;
    let conn_string = format!(
        "{} options='-c DateStyle=Postgres,MDY'",
        proxy.app_conn_string()
    );
    let client = connect(&conn_string).await;
    replica_in_use(&client, replica_port).await;
    let show = |name: &'static str| {
        let client = &client;
        async move {
            let rows = client
                .simple_query(&format!("SHOW {name}"))
                .await
                .expect("show");
            rows.iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default()
        }
    };
    assert_eq!(show("datestyle").await, "Postgres, MDY");
    client
        .batch_execute("SET datestyle = ISO")
        .await
        .expect("set");
    assert_eq!(show("datestyle").await, "ISO, MDY");
    client
        .batch_execute("RESET datestyle")
        .await
        .expect("reset");
    assert_eq!(
        show("datestyle").await,
        "Postgres, MDY",
        "RESET goes back to the startup value"
    );
    client
        .batch_execute("SET custom.my.qualified.guc = 'foo'")
        .await
        .expect("set custom");
    // SET TRANSACTION leaves its settings behind on the server: never replayed.
    for _ in 0..5 {
        client
            .batch_execute("BEGIN; SET TRANSACTION READ WRITE; SELECT 1; COMMIT")
            .await
            .expect("set transaction");
        client
            .batch_execute("SET vacuum_cost_delay TO 40")
            .await
            .expect("set");
        assert_eq!(show("custom.my.qualified.guc").await, "foo");
        // The replica still serves the session's reads (once it has replayed as far as
        // the session's last transaction on the primary: under load that can take a
        // moment, and meanwhile reads rightly go to the primary).
        replica_in_use(&client, replica_port).await;
    }
    let stats = "SELECT pg_is_in_recovery(), inet_server_port() FROM pg_stat_database LIMIT 1";
    assert_eq!(
        served_by(&client, stats).await,
        (false, i32::from(primary_port))
    );
    proxy.shutdown().await;
}

/// A statement a rule blocks inside a transaction fails there as a server error would:
/// the transaction is aborted and its earlier writes are not committed.
#[tokio::test]
async fn a_blocked_statement_aborts_its_transaction() {
    let cluster = support::cluster();
    create_table(cluster, "CREATE TABLE IF NOT EXISTS blocked_in_tx (id int)").await;
    let routing =
        "routing:\n  rules:\n    - match: { kind: delete }\n      block: \"no deletes\"\n";
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica()
        .routing(routing)
        .start()
        .await;
    let mut client = connect(&proxy.app_conn_string()).await;
    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO blocked_in_tx VALUES ($1)", &[&42])
        .await
        .expect("insert");
    let err = tx
        .execute("DELETE FROM blocked_in_tx WHERE id = $1", &[&42])
        .await
        .expect_err("blocked");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    let after = tx
        .execute("SELECT 1", &[])
        .await
        .expect_err("the transaction is aborted");
    assert_eq!(after.code().map(|c| c.code()), Some("25P02"), "{after}");
    drop(tx);
    let n: i64 = client
        .query_one(
            "/* pgstrata: route=primary */ SELECT count(*) FROM blocked_in_tx WHERE id = 42",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "the blocked transaction's insert was committed");
    proxy.shutdown().await;
}

/// Settings are made on the primary: a default of serializable isolation (which a hot
/// standby cannot even read back under) and a SET prepared as a named statement (which
/// pins the session where it is parsed) leave the session working, its writes included.
#[tokio::test]
async fn settings_are_made_on_the_primary() {
    let cluster = support::cluster();
    let (primary_port, replica_port) = ports(cluster);
    create_table(
        cluster,
        "CREATE TABLE IF NOT EXISTS routing_after_set (id int)",
    )
    .await;
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica()
        .start()
        .await;
    let serializable = connect(&proxy.app_conn_string()).await;
    replica_in_use(&serializable, replica_port).await;
    serializable
        .batch_execute("SET default_transaction_isolation = 'serializable'")
        .await
        .expect("set serializable");
    for _ in 0..5 {
        let row = serializable
            .query_one("SHOW default_transaction_isolation", &[])
            .await
            .expect("the session goes on");
        assert_eq!(row.get::<_, String>(0), "serializable");
    }
    assert_eq!(
        served_by(&serializable, WHERE).await,
        (false, i32::from(primary_port)),
        "serializable transactions run on the primary"
    );

    let prepared = connect(&proxy.app_conn_string()).await;
    replica_in_use(&prepared, replica_port).await;
    let set = prepared
        .prepare("SET application_name = 'prepared-set'")
        .await
        .expect("prepare SET");
    prepared.execute(&set, &[]).await.expect("run SET");
    prepared
        .batch_execute("BEGIN; INSERT INTO routing_after_set VALUES (1); COMMIT")
        .await
        .expect("a write after a prepared SET");
    proxy.shutdown().await;
}

/// A pipeline sent in pieces, a read then a write with no Sync between (psycopg's
/// pipeline mode): the batch runs as one implicit transaction, so all of it goes to the
/// primary, and the write succeeds as it does directly.
#[tokio::test]
async fn a_pipelined_write_after_a_read_in_one_batch_runs_on_the_primary() {
    use crate::wire::{message, read_until_ready, trust_login};
    use tokio::io::AsyncWriteExt;
    let cluster = support::cluster();
    let (_, replica_port) = ports(cluster);
    create_table(
        cluster,
        "CREATE TABLE IF NOT EXISTS routing_pipeline (id int)",
    )
    .await;
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .with_replica()
        .start()
        .await;
    let warm = connect(&proxy.app_conn_string()).await;
    replica_in_use(&warm, replica_port).await;
    let unnamed = |sql: &str| {
        let mut parse = format!("\0{sql}\0").into_bytes();
        parse.extend_from_slice(&0i16.to_be_bytes());
        [
            message(b'P', &parse),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
        ]
        .concat()
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.port()));
    let mut stream = trust_login(addr).await;
    stream
        .write_all(&unnamed("SELECT pg_is_in_recovery()"))
        .await
        .expect("send the read");
    stream.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let write = [
        unnamed("INSERT INTO routing_pipeline VALUES (1)"),
        message(b'S', b""),
    ]
    .concat();
    stream.write_all(&write).await.expect("send the write");
    let reply = read_until_ready(&mut stream).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(
        !reply.contains(&b'E') || !text.contains("read-only"),
        "{text}"
    );
    assert!(text.contains("INSERT 0 1"), "the write ran: {text}");
    // The read ran on the primary too: it reports no recovery.
    let mut tags = Vec::new();
    let mut rest = &reply[..];
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        tags.push((rest[0], rest[5..1 + len].to_vec()));
        rest = &rest[1 + len..];
    }
    assert!(tags.iter().all(|(tag, _)| *tag != b'E'), "{text}");
    let row = tags.iter().find(|(tag, _)| *tag == b'D').expect("a row");
    assert_eq!(row.1, b"\0\x01\0\0\0\x01f", "pg_is_in_recovery() = false");
    proxy.shutdown().await;
}
