//! Protocol corners: requests sent together with the login, Terminate right after a
//! COMMIT, extended-protocol COPY, unsynced statements, huge values, server login errors.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{connect, eventually, primary, ProxyBuilder, DATABASE};
use crate::wire::{message, query, read_until_closed, trust_startup};

#[tokio::test]
async fn query_sent_with_the_startup_packet_is_answered() {
    let proxy = ProxyBuilder::default().start().await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut bytes = trust_startup();
    bytes.extend(query("SELECT 'early bird'"));
    bytes.extend(message(b'X', b""));
    stream.write_all(&bytes).await.expect("send");
    let reply = read_until_closed(&mut stream).await;
    assert!(
        String::from_utf8_lossy(&reply).contains("early bird"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn commit_followed_by_terminate_commits() {
    let proxy = ProxyBuilder::default().start().await;
    let admin = connect(&primary().superuser_conn_string(DATABASE)).await;
    admin
        .batch_execute("CREATE TABLE IF NOT EXISTS fire_and_forget (v text); GRANT ALL ON fire_and_forget TO app")
        .await
        .expect("setup");
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut bytes = trust_startup();
    bytes.extend(query("BEGIN"));
    bytes.extend(query(
        "INSERT INTO fire_and_forget SELECT pg_sleep(0.2)::text || 'kept'",
    ));
    bytes.extend(query("COMMIT"));
    bytes.extend(message(b'X', b""));
    stream.write_all(&bytes).await.expect("send");
    drop(stream);
    let committed = eventually(Duration::from_secs(5), || async {
        admin
            .query_one("SELECT count(*) FROM fire_and_forget WHERE v = 'kept'", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    })
    .await;
    assert!(committed, "the COMMIT sent before Terminate was lost");
    proxy.shutdown().await;
}

#[tokio::test]
async fn extended_copy_in_leaves_the_session_idle() {
    extended_copy_in_in("session").await;
}

#[tokio::test]
async fn extended_copy_in_with_transaction_pooling() {
    extended_copy_in_in("transaction").await;
}

async fn extended_copy_in_in(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let client = connect(&proxy.app_conn_string()).await;
    client
        .batch_execute("CREATE TEMP TABLE copied (id int, name text)")
        .await
        .expect("temp table");
    let sink = client
        .copy_in("COPY copied FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("copy in");
    futures::pin_mut!(sink);
    for i in 0..1000 {
        sink.send(Bytes::from(format!("{i},row {i}\n")))
            .await
            .expect("row");
    }
    assert_eq!(sink.finish().await.expect("finish"), 1000);
    let row = client
        .query_one("SELECT count(*) FROM copied", &[])
        .await
        .expect("count");
    assert_eq!(row.get::<_, i64>(0), 1000);
    // Prepared statements after the COPY: their replies must still line up.
    for i in 0..5i64 {
        let stmt = client
            .prepare("SELECT $1::int8 + 1")
            .await
            .expect("prepare after copy");
        let row = client
            .query_one(&stmt, &[&i])
            .await
            .expect("run after copy");
        assert_eq!(row.get::<_, i64>(0), i + 1);
    }
    // An idle session is closed at once on shutdown; one the relay wrongly believes busy
    // would be kept for the whole shutdown_timeout.
    let started = Instant::now();
    proxy.shutdown().await;
    assert!(client.is_closed() || started.elapsed() < Duration::from_millis(1500));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "shutdown waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unsynced_statement_is_cancelled_when_the_client_vanishes() {
    let proxy = ProxyBuilder::default().start().await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut bytes = trust_startup();
    // Parse + Bind + Execute + Flush, no Sync, with a marker to find it server-side.
    bytes.extend(message(
        b'P',
        b"\0SELECT pg_sleep(60) /* unsynced-probe */\0\0\0",
    ));
    bytes.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    bytes.extend(message(b'E', b"\0\0\0\0\0"));
    bytes.extend(message(b'H', b""));
    stream.write_all(&bytes).await.expect("send");
    let admin = primary().superuser_client().await.expect("admin");
    let running = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%unsynced-probe%' AND state = 'active' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    };
    assert!(eventually(Duration::from_secs(5), || async { running().await == 1 }).await);
    drop(stream);
    let stopped = eventually(Duration::from_secs(3), || async { running().await == 0 }).await;
    assert!(
        stopped,
        "the abandoned statement kept running on the server"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn huge_values_stream_through() {
    let proxy = ProxyBuilder::default().start().await;
    let client = connect(&proxy.app_conn_string()).await;
    let big = "y".repeat(30 * 1024 * 1024);
    let row = client
        .query_one(
            "SELECT length($1::text), md5($1::text), repeat('z', 20000000)",
            &[&big],
        )
        .await
        .expect("big round trip");
    assert_eq!(row.get::<_, i32>(0), big.len() as i32);
    assert_eq!(row.get::<_, String>(2).len(), 20_000_000);
    proxy.shutdown().await;
}

#[tokio::test]
async fn server_login_failure_is_reported_at_once() {
    let proxy = ProxyBuilder::default()
        .checkout_timeout("10s")
        .wrong_server_password()
        .start()
        .await;
    let started = Instant::now();
    let err = match tokio_postgres::connect(&proxy.app_conn_string(), tokio_postgres::NoTls).await {
        Ok(_) => panic!("connected with a wrong server password"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.code().map(|c| c.code()), Some("08004"), "{err:?}");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("server login failed"), "{message}");
    proxy.shutdown().await;
}
