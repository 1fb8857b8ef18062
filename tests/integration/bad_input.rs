//! Hostile and broken clients: each loses only its own connection; the proxy stays up
//! and leaks no server connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{connect, eventually, primary, ProxyBuilder, APP_USER};
use crate::wire::startup;

/// Sends bytes, then reads until the proxy closes (bounded); returns what it answered.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    if close_write {
        let _ = stream.shutdown().await;
    }
    let mut reply = Vec::new();
    let finished =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    assert!(
        finished.is_ok(),
        "proxy kept a broken connection open after {bytes:?}"
    );
    reply
}

fn error_code(reply: &[u8]) -> Option<String> {
    if reply.first() != Some(&b'E') {
        return None;
    }
    let text = String::from_utf8_lossy(reply);
    let at = text.find("\0C")?;
    Some(text[at + 2..at + 7].to_owned())
}

in_both_pool_modes!(
    malformed_startup_packets_get_an_error_or_a_close,
    garbage_after_login_ends_only_that_session,
    a_thousand_connections_opened_and_dropped,
    clients_killed_mid_transaction_leave_no_server_state_behind,
);

async fn assert_proxy_still_serves(proxy: &crate::support::TestProxy) {
    let client = connect(&proxy.app_conn_string()).await;
    let row = client
        .query_one("SELECT 1 + 1", &[])
        .await
        .expect("query after bad input");
    assert_eq!(row.get::<_, i32>(0), 2);
}

async fn malformed_startup_packets_get_an_error_or_a_close(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    // Random bytes: the first four make an absurd length.
    let random: Vec<u8> = (0..1000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let reply = exchange(proxy.addr, &random, true).await;
    assert!(
        reply.is_empty() || error_code(&reply).as_deref() == Some("08P01"),
        "{reply:?}"
    );
    // Length 2^31 - 1.
    let reply = exchange(proxy.addr, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0], false).await;
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    // Truncated: announces 100 bytes, sends 10, then half-closes.
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0, 3, 0, 0, b'u', b's']);
    let reply = exchange(proxy.addr, &truncated, true).await;
    assert!(reply.is_empty(), "{reply:?}");
    // Unknown protocol versions.
    for version in [0x0002_0000, 0x0004_0000, 0x1234_5678] {
        let reply = exchange(proxy.addr, &startup(version, &[("user", APP_USER)]), false).await;
        assert_eq!(
            error_code(&reply).as_deref(),
            Some("0A000"),
            "version {version:#x}"
        );
    }
    // A startup packet without its final NUL.
    let mut unterminated = startup(0x0003_0000, &[("user", APP_USER)]);
    unterminated.pop();
    let len = (unterminated.len() as i32).to_be_bytes();
    unterminated[..4].copy_from_slice(&len);
    let reply = exchange(proxy.addr, &unterminated, false).await;
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    assert_proxy_still_serves(&proxy).await;
    proxy.shutdown().await;
}

async fn garbage_after_login_ends_only_that_session(mode: &'static str) {
    let proxy = ProxyBuilder::default()
        .pool_mode(mode)
        .pool_size(2)
        .start()
        .await;
    // Log in with trust over a raw socket, then send a message with a bad length.
    let mut stream = crate::wire::trust_login(proxy.addr).await;
    stream
        .write_all(&[b'Q', 0, 0, 0, 2])
        .await
        .expect("bad frame");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"), "{reply:?}");
    // The pool of 2 still has room for two clients: the broken one's server went back or away.
    let a = connect(&proxy.app_conn_string()).await;
    let b = connect(&proxy.app_conn_string()).await;
    a.simple_query("SELECT 1").await.expect("a");
    b.simple_query("SELECT 1").await.expect("b");
    proxy.shutdown().await;
}

async fn a_thousand_connections_opened_and_dropped(mode: &'static str) {
    let proxy = ProxyBuilder::default()
        .pool_mode(mode)
        .pool_size(5)
        .start()
        .await;
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            if let Ok(mut stream) = TcpStream::connect(addr).await {
                match i % 4 {
                    0 => {}
                    1 => {
                        let _ = stream.write_all(&[0, 0]).await;
                    }
                    2 => {
                        let _ = stream
                            .write_all(&startup(0x0003_0000, &[("user", APP_USER)]))
                            .await;
                    }
                    _ => {
                        let _ = stream.write_all(&8i32.to_be_bytes()).await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_proxy_still_serves(&proxy).await;
    proxy.shutdown().await;
}

async fn clients_killed_mid_transaction_leave_no_server_state_behind(mode: &'static str) {
    let proxy = ProxyBuilder::default()
        .pool_mode(mode)
        .pool_size(4)
        .start()
        .await;
    // Each mode's run has its own table and name: the two run at the same time.
    let (table, app) = (format!("lock_probe_{mode}"), format!("kill_probe_{mode}"));
    let admin = connect(&primary().superuser_conn_string(crate::support::DATABASE)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY); \
             INSERT INTO {table} VALUES (1) ON CONFLICT DO NOTHING; \
             GRANT ALL ON {table} TO app"
        ))
        .await
        .expect("setup");
    for _ in 0..3 {
        let (client, connection) = tokio_postgres::connect(
            &format!("{} application_name={app}", proxy.app_conn_string()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "BEGIN; SELECT * FROM {table} WHERE id = 1 FOR UPDATE"
            ))
            .await
            .expect("lock");
        // Kill the client without a Terminate: the connection task and socket just vanish.
        driver.abort();
        drop(client);
    }
    let released = eventually(Duration::from_secs(1), || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
                &[&app],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 0)
            .unwrap_or(false)
    })
    .await;
    assert!(released, "a server session stayed idle in transaction");
    // The row lock is free: NOWAIT would fail otherwise.
    let other = connect(&proxy.app_conn_string()).await;
    other
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM {table} WHERE id = 1 FOR UPDATE NOWAIT; ROLLBACK"
        ))
        .await
        .expect("lock must be free");
    proxy.shutdown().await;
}
