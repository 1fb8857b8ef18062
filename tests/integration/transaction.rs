//! Transaction pooling: server connections shared between transactions of many clients,
//! each client keeping its own settings, and stateful sessions pinned.

use std::time::Duration;

use crate::support::{
    connect, eventually, primary, server_sessions, ProxyBuilder, TestProxy, DATABASE, TXN_PROBE,
    TXN_SHARED,
};

async fn transaction_proxy(pool_size: u32) -> TestProxy {
    ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(pool_size)
        .checkout_timeout("10s")
        .start()
        .await
}

/// Transaction pooling over one server connection: a session that does not let go of
/// it makes every other client wait (3s, then 53300).
async fn single_connection_proxy() -> TestProxy {
    ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(1)
        .checkout_timeout("3s")
        .start()
        .await
}

/// The role of tests that count nothing.
fn probe_conn(proxy: &TestProxy, extra: &str) -> String {
    let (user, password, _) = TXN_SHARED;
    format!("{} {extra}", proxy.conn_string(user, password))
}

/// The role only `many_clients_share_a_small_pool` uses, so it can count sessions.
fn counted_conn(proxy: &TestProxy, extra: &str) -> String {
    let (user, password, _) = TXN_PROBE;
    format!("{} {extra}", proxy.conn_string(user, password))
}

/// 200 clients share 10 server connections; the server never sees more than 10.
#[tokio::test]
async fn many_clients_share_a_small_pool() {
    let proxy = transaction_proxy(10).await;
    let mut clients = Vec::new();
    for i in 0..200 {
        clients.push(connect(&counted_conn(&proxy, &format!("application_name=c{i}"))).await);
    }
    let (user, _, _) = TXN_PROBE;
    assert!(server_sessions(user).await <= 10);
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                // Unnamed statements (extended protocol) and simple queries, in and out of
                // explicit transactions.
                let rows = client
                    .query_typed(
                        "SELECT $1::int4 * 2",
                        &[(&(i as i32), tokio_postgres::types::Type::INT4)],
                    )
                    .await
                    .expect("typed query");
                assert_eq!(rows[0].get::<_, i32>(0), i as i32 * 2);
                let name = client
                    .simple_query("BEGIN; SELECT current_setting('application_name'); COMMIT")
                    .await
                    .expect("transaction");
                let seen = name.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                });
                assert_eq!(
                    seen.as_deref(),
                    Some(format!("c{i}").as_str()),
                    "round {round}"
                );
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("client task"));
    }
    assert!(server_sessions(user).await <= 10);
    drop(clients);
    proxy.shutdown().await;
}

#[tokio::test]
async fn pgbench_simple_and_extended_with_more_clients_than_connections() {
    let proxy = transaction_proxy(3).await;
    let port = proxy.port();
    tokio::task::spawn_blocking(move || {
        let bench = |args: &[&str]| crate::support::pgbench(port, args);
        bench(&["-i", "-s", "1", "-q"]);
        for mode in ["simple", "extended"] {
            let report = bench(&["-M", mode, "-c", "12", "-j", "2", "-T", "3", "-n"]);
            assert!(
                report.contains("number of failed transactions: 0"),
                "{mode}:\n{report}"
            );
        }
    })
    .await
    .expect("pgbench task");
    proxy.shutdown().await;
}

/// One server connection shared by A and B: A's settings follow A (re-applied each time A
/// gets the connection back), and B never sees them. A SET does not pin, or B would wait.
#[tokio::test]
async fn settings_never_leak_between_clients() {
    let proxy = single_connection_proxy().await;
    let a = connect(&probe_conn(&proxy, "")).await;
    let b = connect(&probe_conn(&proxy, "")).await;
    a.batch_execute("SET search_path = pg_catalog; SET statement_timeout = '4321ms'; SELECT set_config('app.x', 'mine', false)")
        .await
        .expect("settings");
    for _ in 0..20 {
        let row = b
            .query_one(
                "SELECT current_setting('search_path'), current_setting('statement_timeout'), current_setting('app.x', true)",
                &[],
            )
            .await
            .expect("b");
        assert_eq!(row.get::<_, String>(0), "\"$user\", public");
        assert_eq!(row.get::<_, String>(1), "0");
        assert_eq!(row.get::<_, Option<String>>(2).unwrap_or_default(), "");
        assert_eq!(timeout_and_x(&a).await, ("4321ms".into(), "mine".into()));
    }
    proxy.shutdown().await;
}

/// Settings made by named prepared statements, run again and again with other values, are
/// the client's own, and do not keep it on the one connection the pool has (the other
/// client would time out).
#[tokio::test]
async fn prepared_settings_never_leak_and_never_pin() {
    let proxy = single_connection_proxy().await;
    let a = connect(&probe_conn(&proxy, "")).await;
    let b = connect(&probe_conn(&proxy, "")).await;
    let set_x = a
        .prepare("SELECT set_config('app.x', $1, false)")
        .await
        .expect("prepare set_config");
    let set_timeout = a
        .prepare("SET statement_timeout = '1234ms'")
        .await
        .expect("prepare SET");
    a.execute(&set_timeout, &[]).await.expect("run SET");
    for i in 0..20 {
        let value = format!("mine-{i}");
        a.execute(&set_x, &[&value]).await.expect("run set_config");
        assert_eq!(timeout_and_x(&b).await, ("0".into(), String::new()));
        assert_eq!(timeout_and_x(&a).await, ("1234ms".into(), value));
    }
    proxy.shutdown().await;
}

/// A client's `statement_timeout` and `app.x` (empty when it has none).
async fn timeout_and_x(client: &tokio_postgres::Client) -> (String, String) {
    let row = client
        .query_one(
            "SELECT current_setting('statement_timeout'), coalesce(current_setting('app.x', true), '')",
            &[],
        )
        .await
        .expect("settings");
    (row.get(0), row.get(1))
}

/// Temporary tables, session advisory locks and LISTEN keep working across transactions.
#[tokio::test]
async fn stateful_sessions_are_pinned() {
    let proxy = transaction_proxy(3).await;
    let temp = connect(&probe_conn(&proxy, "")).await;
    temp.batch_execute("CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)")
        .await
        .expect("temp");
    let lock = connect(&probe_conn(&proxy, "")).await;
    let row = lock
        .query_one("SELECT pg_advisory_lock(4242)::text", &[])
        .await
        .expect("lock");
    assert_eq!(row.get::<_, String>(0), "");
    // Other clients come and go on the remaining connection meanwhile.
    for _ in 0..10 {
        let other = connect(&probe_conn(&proxy, "")).await;
        other.simple_query("SELECT 1").await.expect("other");
    }
    temp.batch_execute("INSERT INTO scratch VALUES (2)")
        .await
        .expect("temp table still there");
    let row = temp
        .query_one("SELECT count(*) FROM scratch", &[])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 2);
    let row = lock
        .query_one("SELECT pg_advisory_unlock(4242)", &[])
        .await
        .expect("unlock");
    assert!(
        row.get::<_, bool>(0),
        "the lock was taken on another connection"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn listen_is_pinned_and_receives_notifications() {
    let proxy = transaction_proxy(3).await;
    let (client, mut messages) =
        crate::support::connect_with_messages(&probe_conn(&proxy, "")).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = messages.recv().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client
        .batch_execute("LISTEN txn_channel")
        .await
        .expect("listen");
    let sender = connect(&probe_conn(&proxy, "")).await;
    sender
        .batch_execute("NOTIFY txn_channel, 'hello'")
        .await
        .expect("notify");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notification")
        .expect("payload");
    assert_eq!(got, "hello");
    proxy.shutdown().await;
}

#[tokio::test]
async fn killed_client_releases_locks_in_transaction_mode() {
    let proxy = transaction_proxy(2).await;
    let admin = connect(&primary().superuser_conn_string(DATABASE)).await;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS txn_lock_probe (id int PRIMARY KEY); \
             INSERT INTO txn_lock_probe VALUES (1) ON CONFLICT DO NOTHING; \
             GRANT ALL ON txn_lock_probe TO txn_shared",
        )
        .await
        .expect("setup");
    let (client, connection) = tokio_postgres::connect(
        &probe_conn(&proxy, "application_name=txn_kill"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let driver = tokio::spawn(connection);
    client
        .batch_execute("BEGIN; SELECT * FROM txn_lock_probe WHERE id = 1 FOR UPDATE")
        .await
        .expect("lock");
    driver.abort();
    drop(client);
    let other = connect(&probe_conn(&proxy, "")).await;
    let free = eventually(Duration::from_secs(1), || async {
        other
            .batch_execute(
                "BEGIN; SELECT * FROM txn_lock_probe WHERE id = 1 FOR UPDATE NOWAIT; ROLLBACK",
            )
            .await
            .is_ok()
    })
    .await;
    assert!(free, "the row lock outlived its client");
    proxy.shutdown().await;
}

/// A pinned session is freed once its session state is gone.
#[tokio::test]
async fn pins_end_when_the_state_is_gone() {
    let proxy = single_connection_proxy().await;
    let a = connect(&probe_conn(&proxy, "")).await;
    for (take, give_back) in [
        (
            "CREATE TEMP TABLE gone_soon (x int)",
            "DROP TABLE gone_soon",
        ),
        ("LISTEN soon_unheard", "UNLISTEN *"),
        (
            "SELECT pg_advisory_lock(77)",
            "SELECT pg_advisory_unlock(77)",
        ),
    ] {
        a.batch_execute(take).await.expect(take);
        a.batch_execute(give_back).await.expect(give_back);
        // With a pool of one, B gets a connection only if A let go of it.
        let b = connect(&probe_conn(&proxy, "")).await;
        b.simple_query("SELECT 1")
            .await
            .expect("b after the pin ended");
        drop(b);
    }
    proxy.shutdown().await;
}

/// Clients waiting for the only server connection get it in the order they asked.
#[tokio::test]
async fn waiting_clients_are_served_in_arrival_order() {
    let proxy = single_connection_proxy().await;
    let admin = connect(&primary().superuser_conn_string(DATABASE)).await;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS fifo_log (id serial PRIMARY KEY, who text); \
             GRANT ALL ON fifo_log TO txn_shared; GRANT ALL ON fifo_log_id_seq TO txn_shared",
        )
        .await
        .expect("setup");
    let run = std::process::id();
    // Connect first: logging in also takes the connection for a moment.
    let mut waiters = Vec::new();
    for _ in 0..5 {
        waiters.push(connect(&probe_conn(&proxy, "")).await);
    }
    let holder = connect(&probe_conn(&proxy, "")).await;
    holder
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("hold the connection");
    let mut tasks = Vec::new();
    for (i, waiter) in waiters.into_iter().enumerate() {
        let who = format!("{run}-{i}");
        tasks.push(tokio::spawn(async move {
            waiter
                .execute("INSERT INTO fifo_log (who) VALUES ($1)", &[&who])
                .await
                .expect("insert after waiting");
        }));
        // Make the arrival order unambiguous.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.batch_execute("COMMIT").await.expect("let go");
    for task in tasks {
        task.await.expect("waiter");
    }
    let rows = admin
        .query(
            "SELECT who FROM fifo_log WHERE who LIKE $1 ORDER BY id",
            &[&format!("{run}-%")],
        )
        .await
        .expect("log");
    let order: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let expected: Vec<String> = (0..5).map(|i| format!("{run}-{i}")).collect();
    assert_eq!(order, expected);
}

/// A client that has sent only part of its first message holds no server connection:
/// on a pool of one, another client's transactions run meanwhile, and the first client's
/// statement runs once the rest of it arrives.
#[tokio::test]
async fn a_half_sent_message_holds_no_server_connection() {
    use tokio::io::AsyncWriteExt;
    let proxy = single_connection_proxy().await;
    let mut slow = crate::wire::trust_login(proxy.addr).await;
    let message = crate::wire::query("SELECT 41 + 1");
    let (head, tail) = message.split_at(8);
    slow.write_all(head).await.expect("first part");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = connect(&proxy.app_conn_string()).await;
    for _ in 0..3 {
        let rows = tokio::time::timeout(Duration::from_secs(2), other.query_one("SELECT 1", &[]))
            .await
            .expect("the pool's only connection is free while a message is half sent")
            .expect("query");
        assert_eq!(rows.get::<_, i32>(0), 1);
    }
    slow.write_all(tail).await.expect("rest");
    let reply = crate::wire::read_until_ready(&mut slow).await;
    assert!(
        reply.windows(2).any(|w| w == b"42"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    drop(other);
    drop(slow);
    proxy.shutdown().await;
}

/// A placeholder setting (`plpgsql.*` before plpgsql is loaded) that a later connection
/// refuses, because plpgsql is loaded there, is dropped with a WARNING as PostgreSQL does
/// at LOAD; the client's session goes on (the regression suite's guc.sql found it FATAL).
#[tokio::test]
async fn a_setting_another_connection_refuses_is_dropped_with_a_warning() {
    use tokio_postgres::AsyncMessage;
    let direct = connect(&crate::support::direct_conn_string()).await;
    direct
        .batch_execute(
            "CREATE OR REPLACE FUNCTION txn_loads_plpgsql() RETURNS int LANGUAGE plpgsql \
             AS $$ BEGIN RETURN 1; END $$",
        )
        .await
        .expect("create function");
    let proxy = single_connection_proxy().await;
    let (a, mut messages) = crate::support::connect_with_messages(&probe_conn(&proxy, "")).await;
    let b = connect(&probe_conn(&proxy, "")).await;
    // The one server connection has not loaded plpgsql yet: a placeholder is accepted.
    a.batch_execute("SET plpgsql.extra_foo_warnings = true")
        .await
        .expect("placeholder setting");
    // Another client's transaction loads plpgsql on that connection.
    let one: i32 = b
        .query_one("SELECT txn_loads_plpgsql()", &[])
        .await
        .expect("plpgsql function")
        .get(0);
    assert_eq!(one, 1);
    for _ in 0..3 {
        let row = a.query_one("SELECT 2", &[]).await.expect("a goes on");
        assert_eq!(row.get::<_, i32>(0), 2);
    }
    let mut warnings = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(300), messages.recv()).await
    {
        if let AsyncMessage::Notice(notice) = message {
            warnings.push((notice.code().code().to_owned(), notice.message().to_owned()));
        }
    }
    assert_eq!(
        warnings.len(),
        1,
        "one warning, then the setting is gone: {warnings:?}"
    );
    assert_eq!(warnings[0].0, "42602");
    assert!(
        warnings[0].1.contains("plpgsql.extra_foo_warnings")
            && warnings[0].1.ends_with(", removing it"),
        "{warnings:?}"
    );
    proxy.shutdown().await;
}

/// A table's columns change under a statement prepared on a pooled connection: the
/// client whose plan it was hears of it once, as directly; the next client preparing the
/// same text gets the new columns (the proxy-wide statement is parsed again), and so does
/// the first once it prepares again.
#[tokio::test]
async fn statements_are_parsed_again_after_their_result_type_changes() {
    let direct = connect(&crate::support::direct_conn_string()).await;
    direct
        .batch_execute(
            "DROP TABLE IF EXISTS txn_changing_shape; \
             CREATE TABLE txn_changing_shape (id int); INSERT INTO txn_changing_shape VALUES (1)",
        )
        .await
        .expect("table");
    let proxy = single_connection_proxy().await;
    let a = connect(&proxy.app_conn_string()).await;
    let sql = "SELECT * FROM txn_changing_shape";
    let before = a.prepare(sql).await.expect("prepare");
    assert_eq!(a.query(&before, &[]).await.expect("rows")[0].len(), 1);
    direct
        .batch_execute("ALTER TABLE txn_changing_shape ADD COLUMN name text DEFAULT 'z'")
        .await
        .expect("alter");
    let err = a
        .query(&before, &[])
        .await
        .expect_err("the old plan is refused");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
    );
    // A client preparing the text now, and the first client preparing again: new columns.
    let b = connect(&proxy.app_conn_string()).await;
    for client in [&b, &a, &b] {
        let stmt = client.prepare(sql).await.expect("prepare again");
        let rows = client.query(&stmt, &[]).await.expect("new shape");
        assert_eq!(rows[0].len(), 2);
        assert_eq!(rows[0].get::<_, String>(1), "z");
    }
    proxy.shutdown().await;
}

/// Same text, two search paths, two tables of different shapes: each client's statement
/// finds its own table, as on its own connection.
#[tokio::test]
async fn statements_under_different_search_paths_are_not_shared() {
    let direct = connect(&crate::support::direct_conn_string()).await;
    direct
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS txn_path_a; CREATE SCHEMA IF NOT EXISTS txn_path_b; \
             DROP TABLE IF EXISTS txn_path_a.t, txn_path_b.t; \
             CREATE TABLE txn_path_a.t (x int); INSERT INTO txn_path_a.t VALUES (1); \
             CREATE TABLE txn_path_b.t (x text, y text); INSERT INTO txn_path_b.t VALUES ('b', 'bb')",
        )
        .await
        .expect("schemas");
    let proxy = single_connection_proxy().await;
    let a = connect(&format!(
        "{} options='-c search_path=txn_path_a'",
        proxy.app_conn_string()
    ))
    .await;
    let b = connect(&proxy.app_conn_string()).await;
    b.batch_execute("SET search_path = txn_path_b")
        .await
        .expect("set");
    for _ in 0..3 {
        let stmt = a.prepare("SELECT * FROM t").await.expect("a prepares");
        let rows = a.query(&stmt, &[]).await.expect("a's table");
        assert_eq!((rows[0].len(), rows[0].get::<_, i32>(0)), (1, 1));
        let stmt = b.prepare("SELECT * FROM t").await.expect("b prepares");
        let rows = b.query(&stmt, &[]).await.expect("b's table");
        assert_eq!(
            (rows[0].len(), rows[0].get::<_, String>(1)),
            (2, "bb".to_owned())
        );
    }
    proxy.shutdown().await;
}

/// DROP DATABASE through the proxy is not refused for the proxy's own idle connections
/// to that database (pg_regress drops and creates its database at every run).
#[tokio::test]
async fn drop_database_closes_idle_pooled_connections_first() {
    let admin = primary().superuser_client().await.expect("admin");
    admin
        .batch_execute("DROP DATABASE IF EXISTS txn_dropped")
        .await
        .expect("clean");
    admin
        .batch_execute("CREATE DATABASE txn_dropped OWNER app")
        .await
        .expect("create");
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(3)
        .extra_database("txn_dropped")
        .start()
        .await;
    let conn = |db: &str| {
        format!(
            "host=127.0.0.1 port={} user=app password=app-secret dbname={db} sslmode=disable",
            proxy.port()
        )
    };
    {
        let user = connect(&conn("txn_dropped")).await;
        user.batch_execute("SELECT 1").await.expect("used");
    }
    let idle = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'txn_dropped'";
    let count = admin
        .query_one(idle, &[])
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert!(count >= 1, "the pool keeps an idle connection to it");
    let dropper = connect(&conn(DATABASE)).await;
    dropper
        .batch_execute("DROP DATABASE txn_dropped")
        .await
        .expect("dropped despite the pool's idle connections");
    proxy.shutdown().await;
}

/// A statement text larger than the proxy reads whole (1 MiB), as the unnamed statement
/// (the extended protocol as psycopg and asyncpg use it): it runs as on a direct
/// connection, and so does the next one.
#[tokio::test]
async fn an_unnamed_statement_too_large_to_read_runs() {
    use tokio_postgres::types::Type;
    let proxy = transaction_proxy(2).await;
    let client = connect(&proxy.app_conn_string()).await;
    let padding = "x".repeat(1 << 20);
    let sql = format!("SELECT length('{padding}') + $1");
    for _ in 0..2 {
        let row = client
            .query_typed_one(&sql, &[(&1i32, Type::INT4)])
            .await
            .expect("a large unnamed statement");
        assert_eq!(row.get::<_, i32>(0), (1 << 20) + 1);
    }
    proxy.shutdown().await;
}

/// Transaction pooling, every connection busy: a new client still logs in at once (its
/// parameters are known from an earlier login of the pool), and its first statement
/// waits for a connection, then runs with the client's own settings.
#[tokio::test]
async fn a_login_does_not_wait_for_a_busy_pool() {
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(1)
        .checkout_timeout("3s")
        .start()
        .await;
    // A first login teaches the pool what a login is told.
    let first = connect(&proxy.app_conn_string()).await;
    first
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("holds the only connection");
    let started = std::time::Instant::now();
    let second = connect(&format!(
        "{} application_name=second",
        proxy.app_conn_string()
    ))
    .await;
    // (Waiting for the connection, it would have failed with 53300 after 3 s.)
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "login answered without a connection"
    );
    let query = tokio::spawn(async move {
        second
            .query_one("SELECT current_setting('application_name')", &[])
            .await
            .map(|row| row.get::<_, String>(0))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !query.is_finished(),
        "the statement waits for the connection"
    );
    first.batch_execute("COMMIT").await.expect("commit");
    let name = query
        .await
        .expect("join")
        .expect("runs once the connection is free");
    assert_eq!(name, "second");
    proxy.shutdown().await;
}

/// A notification that reaches a LISTENing connection while the proxy runs a statement
/// of its own there (reading settings or session state back) is kept for the client,
/// not thrown away with the hidden statement's replies.
#[tokio::test]
async fn notifications_during_a_hidden_statement_are_kept() {
    use crate::support::{direct_conn_string, APP_PASSWORD, APP_USER};
    use pgstrata::backend::{ServerConnection, ServerTarget};
    let target = std::sync::Arc::new(ServerTarget {
        host: "127.0.0.1".to_owned(),
        port: primary().port(),
        user: APP_USER.to_owned(),
        password: Some(pgstrata::rules::Secret::new(APP_PASSWORD)),
        database: DATABASE.to_owned(),
    });
    let mut conn = ServerConnection::connect(target).await.expect("connect");
    let listened = conn
        .run_hidden("LISTEN txn_hidden_channel")
        .await
        .expect("listen");
    assert!(listened.is_none());
    let other = connect(&direct_conn_string()).await;
    other
        .batch_execute("NOTIFY txn_hidden_channel, 'kept for the client'")
        .await
        .expect("notify");
    // Sent while the connection sat idle: it is read with a later hidden statement's
    // replies (the server sends it within moments; waited for up to 5 s).
    for _ in 0..50 {
        assert!(conn.run_hidden("SELECT 1").await.expect("select").is_none());
        if !conn.notifications.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = String::from_utf8_lossy(&conn.notifications).into_owned();
    assert!(
        kept.starts_with('A') && kept.contains("kept for the client"),
        "{kept:?}"
    );
}

/// DDL that changes a table's shape, sent through the proxy: statements prepared before
/// it are parsed again on every connection, so even a client preparing the text for the
/// first time afterwards (its Parse would otherwise meet the old statement) gets the new
/// columns at once.
#[tokio::test]
async fn ddl_through_the_proxy_makes_earlier_statements_parse_again() {
    let direct = connect(&crate::support::direct_conn_string()).await;
    direct
        .batch_execute(
            "DROP TABLE IF EXISTS txn_reshaped; \
             CREATE TABLE txn_reshaped (id int); INSERT INTO txn_reshaped VALUES (1)",
        )
        .await
        .expect("table");
    let proxy = single_connection_proxy().await;
    let sql = "SELECT * FROM txn_reshaped";
    let a = connect(&proxy.app_conn_string()).await;
    let before = a.prepare(sql).await.expect("prepare");
    assert_eq!(a.query(&before, &[]).await.expect("rows")[0].len(), 1);
    let b = connect(&proxy.app_conn_string()).await;
    b.batch_execute("ALTER TABLE txn_reshaped ADD COLUMN name text DEFAULT 'z'")
        .await
        .expect("alter through the proxy");
    let c = connect(&proxy.app_conn_string()).await;
    let stmt = c.prepare(sql).await.expect("prepare after the change");
    let rows = c.query(&stmt, &[]).await.expect("no stale plan");
    assert_eq!(rows[0].len(), 2);
    proxy.shutdown().await;
}
