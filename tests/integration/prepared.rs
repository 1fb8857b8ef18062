//! Named prepared statements under transaction pooling: mapped to proxy-wide names and
//! prepared on whichever server connection a transaction lands on, never pinning.

use tokio::io::AsyncWriteExt;

use crate::wire::{message, query, read_until_ready, trust_login};

use crate::support::{
    connect, server_sessions, ProxyBuilder, TestProxy, PREPARED_PROBE, TXN_SHARED,
};

async fn transaction_proxy(pool_size: u32) -> TestProxy {
    ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(pool_size)
        .checkout_timeout("20s")
        .start()
        .await
}

/// The role of tests that count nothing.
fn probe_conn(proxy: &TestProxy) -> String {
    let (user, password, _) = TXN_SHARED;
    proxy.conn_string(user, password)
}

#[tokio::test]
async fn pgbench_prepared_fifty_clients_on_five_connections() {
    let proxy = transaction_proxy(5).await;
    let port = proxy.port();
    tokio::task::spawn_blocking(move || {
        let bench = |args: &[&str]| crate::support::pgbench(port, args);
        bench(&["-i", "-s", "1", "-q"]);
        // One thread per client: pgbench prepares with a blocking PQprepare, so a thread
        // serving several clients would stall them all while one waits for a connection
        // the others hold (a client-side deadlock any transaction pooler shares).
        let report = bench(&["-M", "prepared", "-c", "50", "-j", "50", "-T", "4", "-n"]);
        assert!(
            report.contains("number of failed transactions: 0"),
            "{report}"
        );
    })
    .await
    .expect("pgbench task");
    proxy.shutdown().await;
}

/// 200 clients, 10 server connections, statements prepared once per client and reused
/// across transactions that land on any connection.
#[tokio::test]
async fn prepared_statements_reused_across_connections() {
    let proxy = transaction_proxy(10).await;
    // A role only this test uses, so its server sessions can be counted.
    let (user, password, _) = PREPARED_PROBE;
    let conn = proxy.conn_string(user, password);
    let mut tasks = Vec::new();
    for i in 0..200i32 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&conn).await;
            let double = client
                .prepare("SELECT $1::int4 * 2")
                .await
                .expect("prepare");
            let echo = client
                .prepare(&format!("SELECT $1::text || '-{}'", i % 7))
                .await
                .expect("prepare echo");
            for round in 0..5i32 {
                let row = client
                    .query_one(&double, &[&(i + round)])
                    .await
                    .expect("double");
                assert_eq!(row.get::<_, i32>(0), (i + round) * 2);
                let row = client.query_one(&echo, &[&"x"]).await.expect("echo");
                assert_eq!(row.get::<_, String>(0), format!("x-{}", i % 7));
                // Pipelined: several executions in flight at once.
                let (a, b) = tokio::join!(
                    client.query_one(&double, &[&1i32]),
                    client.query_one(&double, &[&2i32])
                );
                assert_eq!(
                    (
                        a.expect("a").get::<_, i32>(0),
                        b.expect("b").get::<_, i32>(0)
                    ),
                    (2, 4)
                );
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("client"));
    }
    assert!(
        server_sessions(user).await <= 10,
        "more server connections than the pool"
    );
    drop(clients);
    proxy.shutdown().await;
}

#[tokio::test]
async fn statement_lifecycle_edges() {
    let proxy = transaction_proxy(2).await;
    let mut client = connect(&probe_conn(&proxy)).await;
    // Prepared inside a transaction that rolls back: protocol statements survive it.
    let tx = client.transaction().await.expect("begin");
    let stmt = tx
        .prepare("SELECT $1::int8 + 1")
        .await
        .expect("prepare in tx");
    tx.rollback().await.expect("rollback");
    let row = client
        .query_one(&stmt, &[&41i64])
        .await
        .expect("after rollback");
    assert_eq!(row.get::<_, i64>(0), 42);
    // A statement that fails to prepare leaves the session usable.
    let err = client
        .prepare("SELEC broken")
        .await
        .expect_err("syntax error");
    assert_eq!(err.code().map(|c| c.code()), Some("42601"));
    let row = client
        .query_one(&stmt, &[&1i64])
        .await
        .expect("still works");
    assert_eq!(row.get::<_, i64>(0), 2);
    // Closing (dropping) a statement and preparing it again.
    drop(stmt);
    let again = client
        .prepare("SELECT $1::int8 + 1")
        .await
        .expect("prepare again");
    let row = client.query_one(&again, &[&9i64]).await.expect("again");
    assert_eq!(row.get::<_, i64>(0), 10);
    // Other clients on the two connections meanwhile.
    for _ in 0..5 {
        let other = connect(&probe_conn(&proxy)).await;
        let s = other
            .prepare("SELECT $1::int8 + 1")
            .await
            .expect("other prepare");
        assert_eq!(
            other
                .query_one(&s, &[&0i64])
                .await
                .expect("other")
                .get::<_, i64>(0),
            1
        );
    }
    let row = client
        .query_one(&again, &[&99i64])
        .await
        .expect("after others");
    assert_eq!(row.get::<_, i64>(0), 100);
    proxy.shutdown().await;
}

/// A client's unnamed statement stays on the server connection after its transaction;
/// another client binding "the unnamed statement" must get PostgreSQL's error, never the
/// first client's query.
#[tokio::test]
async fn unnamed_statements_never_cross_clients() {
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(1)
        .start()
        .await;
    let mut a = trust_login(proxy.addr).await;
    let mut parse = b"\0SELECT 'secret of a'\0\0\0".to_vec();
    let mut batch = message(b'P', &parse);
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    a.write_all(&batch).await.expect("a");
    let reply = read_until_ready(&mut a).await;
    assert!(String::from_utf8_lossy(&reply).contains("secret of a"));
    let mut b = trust_login(proxy.addr).await;
    let mut batch = message(b'B', b"\0\0\0\0\0\0\0\0");
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    b.write_all(&batch).await.expect("b");
    let reply = String::from_utf8_lossy(&read_until_ready(&mut b).await).into_owned();
    assert!(
        !reply.contains("secret of a"),
        "B ran A's statement: {reply:?}"
    );
    assert!(
        reply.contains("C26000"),
        "expected 26000 (does not exist): {reply:?}"
    );
    // B's own unnamed statements work as usual.
    parse = b"\0SELECT 'b here'\0\0\0".to_vec();
    let mut batch = message(b'P', &parse);
    batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    b.write_all(&batch).await.expect("b own");
    let reply = String::from_utf8_lossy(&read_until_ready(&mut b).await).into_owned();
    assert!(reply.contains("b here"), "{reply:?}");
    proxy.shutdown().await;
}

/// Preparing a name the client already has fails as on a direct connection (42P05), and
/// the existing statement keeps working.
#[tokio::test]
async fn preparing_an_existing_name_fails_like_postgres() {
    let proxy = ProxyBuilder::default()
        .pool_mode("transaction")
        .pool_size(2)
        .start()
        .await;
    let mut client = trust_login(proxy.addr).await;
    let mut batch = message(b'P', b"dup\0SELECT 'first'\0\0\0");
    batch.extend(message(b'S', b""));
    client.write_all(&batch).await.expect("parse");
    let reply = String::from_utf8_lossy(&read_until_ready(&mut client).await).into_owned();
    assert!(reply.starts_with('1'), "{reply:?}");
    let mut batch = message(b'P', b"dup\0SELECT 'second'\0\0\0");
    batch.extend(message(b'S', b""));
    client.write_all(&batch).await.expect("parse again");
    let reply = String::from_utf8_lossy(&read_until_ready(&mut client).await).into_owned();
    assert!(reply.contains("C42P05"), "{reply:?}");
    let mut batch = message(b'B', b"\0dup\0\0\0\0\0\0\0");
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    client.write_all(&batch).await.expect("bind");
    let reply = String::from_utf8_lossy(&read_until_ready(&mut client).await).into_owned();
    assert!(
        reply.contains("first") && !reply.contains("second"),
        "{reply:?}"
    );
    proxy.shutdown().await;
}

/// Sends `messages` and reads the replies up to ReadyForQuery, as text.
async fn round_trip(client: &mut tokio::net::TcpStream, messages: &[Vec<u8>]) -> String {
    client.write_all(&messages.concat()).await.expect("send");
    String::from_utf8_lossy(&read_until_ready(client).await).into_owned()
}

/// A name whose first Parse failed is free, as on a direct connection: the proxy records
/// it only once the server confirms the Parse.
#[tokio::test]
async fn a_name_whose_parse_failed_can_be_prepared() {
    let proxy = transaction_proxy(2).await;
    let mut client = trust_login(proxy.addr).await;
    let sync = message(b'S', b"");
    let bad = message(b'P', b"s1\0SELEC 'oops'\0\0\0");
    let reply = round_trip(&mut client, &[bad, sync.clone()]).await;
    assert!(reply.contains("C42601"), "syntax error expected: {reply:?}");
    let good = message(b'P', b"s1\0SELECT 'prepared at last'\0\0\0");
    let reply = round_trip(&mut client, &[good, sync.clone()]).await;
    assert!(reply.starts_with('1'), "ParseComplete expected: {reply:?}");
    let bind = message(b'B', b"\0s1\0\0\0\0\0\0\0");
    let execute = message(b'E', b"\0\0\0\0\0");
    let reply = round_trip(&mut client, &[bind, execute, sync]).await;
    assert!(reply.contains("prepared at last"), "{reply:?}");
    proxy.shutdown().await;
}

/// DISCARD ALL in a failed transaction does nothing on the server (25P02): the client's
/// statements stay usable. Once it succeeds, they are gone and can be prepared again.
#[tokio::test]
async fn failed_discard_all_keeps_prepared_statements() {
    let proxy = transaction_proxy(1).await;
    let mut client = trust_login(proxy.addr).await;
    let sync = message(b'S', b"");
    let parse = message(b'P', b"keep\0SELECT 'still here'\0\0\0");
    let bind = message(b'B', b"\0keep\0\0\0\0\0\0\0");
    let execute = message(b'E', b"\0\0\0\0\0");
    let run = [bind, execute, sync.clone()];
    let reply = round_trip(&mut client, &[parse.clone(), sync.clone()]).await;
    assert!(reply.starts_with('1'), "{reply:?}");
    round_trip(&mut client, &[query("BEGIN")]).await;
    let reply = round_trip(&mut client, &[query("SELECT 1/0")]).await;
    assert!(reply.contains("C22012"), "{reply:?}");
    let reply = round_trip(&mut client, &[query("DISCARD ALL")]).await;
    assert!(reply.contains("C25P02"), "{reply:?}");
    round_trip(&mut client, &[query("ROLLBACK")]).await;
    let reply = round_trip(&mut client, &run).await;
    assert!(reply.contains("still here"), "{reply:?}");
    // Done for real: the name is gone, as on a direct connection, and free again.
    let reply = round_trip(&mut client, &[query("DISCARD ALL")]).await;
    assert!(reply.contains("DISCARD ALL"), "{reply:?}");
    let reply = round_trip(&mut client, &run).await;
    assert!(reply.contains("C26000"), "{reply:?}");
    let reply = round_trip(&mut client, &[parse, sync]).await;
    assert!(reply.starts_with('1'), "{reply:?}");
    let reply = round_trip(&mut client, &run).await;
    assert!(reply.contains("still here"), "{reply:?}");
    proxy.shutdown().await;
}
