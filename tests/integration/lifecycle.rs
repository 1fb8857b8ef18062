//! Server connections that break while pooled, and graceful shutdown.

use std::time::Duration;

use crate::support::{
    connect, eventually, primary, server_sessions, ProxyBuilder, AGING_PROBE, REUSE_PROBE,
    REUSE_PROBE_TXN,
};

in_both_pool_modes!(
    terminated_server_connections_are_not_reused,
    shutdown_lets_open_transactions_finish_and_closes_idle_sessions,
);

/// Pool connections killed on the server while idle are never handed to a client.
async fn terminated_server_connections_are_not_reused(mode: &'static str) {
    let proxy = ProxyBuilder::default()
        .pool_mode(mode)
        .pool_size(3)
        .start()
        .await;
    // This role is used by this test alone (one per mode).
    let (user, password, _) = match mode {
        "session" => REUSE_PROBE,
        _ => REUSE_PROBE_TXN,
    };
    let conn = proxy.conn_string(user, password);
    let clients = [
        connect(&conn).await,
        connect(&conn).await,
        connect(&conn).await,
    ];
    // Three transactions open at once: three server connections in either mode.
    for c in &clients {
        c.batch_execute("BEGIN; SELECT 1").await.expect("warm up");
    }
    for c in &clients {
        c.batch_execute("COMMIT").await.expect("warm up");
    }
    drop(clients);
    let admin = primary().superuser_client().await.expect("admin");
    // Wait for the three to be back in the pool (reset: application_name cleared), then kill them.
    let returned = eventually(Duration::from_secs(5), || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'idle' AND application_name = ''",
                &[&user],
            )
            .await
            .map(|r| r.get::<_, i64>(0) >= 3)
            .unwrap_or(false)
    })
    .await;
    assert!(returned, "connections did not go back to the pool");
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&user],
        )
        .await
        .expect("terminate");
    // Every new client gets a working connection, never one of the dead ones.
    for _ in 0..6 {
        let client = connect(&conn).await;
        let row = client
            .query_one("SELECT 1 + 1", &[])
            .await
            .expect("fresh connection");
        assert_eq!(row.get::<_, i32>(0), 2);
    }
    proxy.shutdown().await;
}

async fn shutdown_lets_open_transactions_finish_and_closes_idle_sessions(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let addr = proxy.addr;
    let conn = proxy.app_conn_string();
    let busy = connect(&conn).await;
    let idle = connect(&conn).await;
    busy.batch_execute("BEGIN; SELECT 1").await.expect("begin");
    let stopping = tokio::spawn(proxy.shutdown());
    // The idle session is told the proxy is going away (57P01) and closed.
    let closed = eventually(Duration::from_secs(5), || async { idle.is_closed() }).await;
    assert!(closed, "idle session not closed on shutdown");
    // No new clients once shutdown started.
    let refused = eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "listener still accepting after shutdown");
    // The open transaction can still run statements and commit.
    let row = busy
        .query_one("SELECT 40 + 2", &[])
        .await
        .expect("inside transaction");
    assert_eq!(row.get::<_, i32>(0), 42);
    busy.batch_execute("COMMIT").await.expect("commit");
    // Then it is closed too, and shutdown completes.
    let closed = eventually(Duration::from_secs(5), || async { busy.is_closed() }).await;
    assert!(closed, "session not closed after its transaction ended");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finished")
        .expect("shutdown task");
}

/// Transaction pooling: a server connection in steady use still ends at its max_lifetime
/// (it goes back to the pool after every transaction but is never idle for long), and
/// connections nobody uses close after idle_timeout.
#[tokio::test]
async fn pooled_connections_age_out_in_use_and_when_idle() {
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(4)
        .database_option("max_lifetime: 2s")
        .database_option("idle_timeout: 1s")
        .start()
        .await;
    // This role is used by this test alone.
    let (user, password, _) = AGING_PROBE;
    let client = connect(&proxy.conn_string(user, password)).await;
    let pid = || async {
        client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get::<_, i32>(0)
    };
    let first = pid().await;
    // One transaction after another, 50 ms apart: the connection is never left unused.
    let replaced = eventually(Duration::from_secs(10), || async { pid().await != first }).await;
    assert!(
        replaced,
        "the server connection outlived max_lifetime (2s) under steady use"
    );
    // Left alone, every connection of the pool closes.
    let closed = eventually(Duration::from_secs(10), || async {
        server_sessions(user).await == 0
    })
    .await;
    assert!(closed, "idle server connections outlived idle_timeout (1s)");
    // And the pool still serves.
    assert_ne!(pid().await, first);
    proxy.shutdown().await;
}
