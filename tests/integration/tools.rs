//! pgbench through the proxy, query cancel, and the pgstrata binary itself
//! (`check`, `--config` with /metrics, SIGTERM).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{connect, pgbench, primary, ProxyBuilder, APP_PASSWORD, APP_USER, DATABASE};

in_both_pool_modes!(cancel_with_a_wrong_key_does_nothing,);

fn processed(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{report}"))
}

fn failed(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no failure count in:\n{report}"))
}

#[tokio::test]
async fn pgbench_all_protocol_modes() {
    let proxy = ProxyBuilder::default().pool_size(8).start().await;
    let port = proxy.port();
    tokio::task::spawn_blocking(move || {
        pgbench(port, &["-i", "-s", "1", "-q"]);
        for mode in ["simple", "extended", "prepared"] {
            let report = pgbench(port, &["-M", mode, "-c", "4", "-j", "2", "-T", "3", "-n"]);
            assert_eq!(failed(&report), 0, "{mode}:\n{report}");
            assert!(
                processed(&report) > 50,
                "{mode}: too few transactions:\n{report}"
            );
        }
    })
    .await
    .expect("pgbench task");
    proxy.shutdown().await;
}

#[tokio::test]
async fn cancel_reaches_the_running_query() {
    cancel_reaches_the_running_query_in("session").await;
}

#[tokio::test]
async fn cancel_reaches_the_running_query_with_transaction_pooling() {
    cancel_reaches_the_running_query_in("transaction").await;
}

async fn cancel_reaches_the_running_query_in(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let client = connect(&proxy.app_conn_string()).await;
    let token = client.cancel_token();
    let started = Instant::now();
    // Marked per mode: both variants run at once and look for their own statement.
    let sql = format!("SELECT pg_sleep(10) /* cancel {mode} */");
    let query = {
        let sql = sql.clone();
        tokio::spawn(async move { client.query(&sql, &[]).await.map(|_| client) })
    };
    // Cancel once the statement is visibly running on the server.
    let admin = primary().superuser_client().await.expect("admin");
    let running = crate::support::eventually(Duration::from_secs(5), || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                &[&sql],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    })
    .await;
    assert!(running, "the query never started");
    let cancel_sent = Instant::now();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel");
    let Err(err) = query.await.expect("query task") else {
        panic!("query must be cancelled");
    };
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    assert!(
        cancel_sent.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        cancel_sent.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(9));
    proxy.shutdown().await;
}

async fn cancel_with_a_wrong_key_does_nothing(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let client = connect(&proxy.app_conn_string()).await;
    let query = tokio::spawn(async move {
        client
            .query_one("SELECT 7 FROM pg_sleep(0.5)", &[])
            .await
            .map(|r| r.get::<_, i32>(0))
    });
    // A CancelRequest for a made-up key.
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&12345i32.to_be_bytes());
    packet.extend_from_slice(&678i32.to_be_bytes());
    let mut raw = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut raw, &packet)
        .await
        .expect("send");
    assert_eq!(query.await.expect("task").expect("not cancelled"), 7);
    proxy.shutdown().await;
}

fn pgstrata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgstrata"))
}

#[test]
fn check_reports_every_problem_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "listen:\n  address: \"127.0.0.1:6432\"\nclusters:\n  main:\n    primary: { host: 127.0.0.1, port: 5432 }\ndatabases:\n  app:\n    cluster: nope\n    pool_size: 0\nusers:\n  app:\n    auth: md5\n",
    )
    .expect("write");
    let output = pgstrata()
        .arg("check")
        .arg(&file)
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let name = file.display().to_string();
    assert!(
        text.contains(&format!("{name}:8:14: databases.app.cluster:")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{name}:9:16: databases.app.pool_size:")),
        "{text}"
    );
    assert!(text.contains("users.app"), "{text}");
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "listen:\n  address: \"127.0.0.1:6432\"\nclusters:\n  main:\n    primary: { host: 127.0.0.1, port: 5432 }\ndatabases:\n  app:\n    cluster: main\nusers:\n  app:\n    auth: trust\n",
    )
    .expect("write");
    let output = pgstrata()
        .arg("check")
        .arg(&good)
        .output()
        .expect("run check");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

fn free_port() -> u16 {
    pgstrata::localpg::free_port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The binary: runs from a config file, serves /metrics, and stops cleanly on SIGTERM.
#[tokio::test]
async fn binary_serves_metrics_and_stops_on_sigterm() {
    let (port, metrics_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pgstrata.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  address: \"127.0.0.1:{port}\"\n  shutdown_timeout: 2s\nmetrics:\n  address: \"127.0.0.1:{metrics_port}\"\nclusters:\n  main:\n    primary: {{ host: 127.0.0.1, port: {} }}\ndatabases:\n  {DATABASE}:\n    cluster: main\n    pool_mode: transaction\nusers:\n  {APP_USER}:\n    auth: scram-sha-256\n    password: ${{TEST_APP_PASSWORD}}\n    server_password: ${{TEST_APP_PASSWORD}}\n",
            primary().port()
        ),
    )
    .expect("write config");
    let mut child = pgstrata()
        .arg("--config")
        .arg(&config)
        .env("TEST_APP_PASSWORD", APP_PASSWORD)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgstrata");
    let conn = format!(
        "host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD} dbname={DATABASE}"
    );
    let up = crate::support::eventually(Duration::from_secs(10), || async {
        tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;
    assert!(up, "pgstrata binary did not start");
    let client = connect(&conn).await;
    for _ in 0..5 {
        client.simple_query("SELECT 1").await.expect("query");
    }
    let metrics = http_get(metrics_port, "/metrics").expect("scrape /metrics");
    for name in [
        "pgstrata_queries_total",
        "pgstrata_transactions_total",
        "pgstrata_client_connections",
        "pgstrata_pool_checkout_wait_seconds",
        "pgstrata_transaction_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    // Transaction pooling takes a connection for every transaction, and every checkout
    // counts in the wait histogram, the ones that did not wait too.
    let sum = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let checkouts = sum("pgstrata_pool_checkout_wait_seconds_count");
    assert!(
        checkouts >= 5.0,
        "{checkouts} checkouts counted for five transactions:\n{metrics}"
    );
    drop(client);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pgstrata did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut logs = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut logs);
    }
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut logs);
    }
    assert!(status.success(), "exit status {status}:\n{logs}");
    assert!(
        !logs.contains(APP_PASSWORD),
        "a secret leaked into the logs:\n{logs}"
    );
}
