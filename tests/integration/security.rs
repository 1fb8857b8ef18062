//! Authentication (SCRAM, MD5, trust, wrong passwords) and TLS.

use std::path::PathBuf;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    bin, connect, server_sessions, ProxyBuilder, APP_PASSWORD, APP_USER, DATABASE, LONELY_MD5,
    LONELY_MD5_TXN, LONELY_SCRAM, LONELY_SCRAM_TXN, MD5_PASSWORD, MD5_USER, TRUST_USER,
};

in_both_pool_modes!(
    scram_md5_and_trust_logins_work,
    wrong_password_gets_28p01_and_uses_no_server_connection,
    unknown_database_is_3d000,
    tls_required_works_with_sslmode_require_and_rejects_plaintext,
    tls_bulk_transfer_through_psql,
    bytes_after_ssl_request_are_rejected,
);

fn sqlstate(err: &tokio_postgres::Error) -> Option<&str> {
    err.code().map(|c| c.code())
}

async fn scram_md5_and_trust_logins_work(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    for (user, password) in [
        (APP_USER, APP_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (TRUST_USER, "anything"),
    ] {
        let client = connect(&proxy.conn_string(user, password)).await;
        let row = client
            .query_one("SELECT current_user::text, session_user::text", &[])
            .await
            .expect("query");
        let server_user = if user == TRUST_USER { APP_USER } else { user };
        assert_eq!(row.get::<_, String>(0), server_user);
    }
    proxy.shutdown().await;
}

async fn wrong_password_gets_28p01_and_uses_no_server_connection(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let ((md5_user, md5_password, _), (scram_user, scram_password, _)) = match mode {
        "session" => (LONELY_MD5, LONELY_SCRAM),
        _ => (LONELY_MD5_TXN, LONELY_SCRAM_TXN),
    };
    for (user, password) in [
        (md5_user, "wrong"),
        (scram_user, "wrong"),
        (APP_USER, "wrong"),
        ("no_such_user", "x"),
    ] {
        let err =
            tokio_postgres::connect(&proxy.conn_string(user, password), tokio_postgres::NoTls)
                .await
                .err()
                .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        assert_eq!(sqlstate(&err), Some("28P01"), "{user}: {err}");
        let text = err.to_string();
        assert!(
            !text.contains(password) || password == "x",
            "password echoed: {text}"
        );
    }
    // These roles are used by this test alone: their pools never connected.
    assert_eq!(server_sessions(md5_user).await, 0);
    assert_eq!(server_sessions(scram_user).await, 0);
    // The right passwords work (and only then do the pools connect).
    for (user, password) in [(md5_user, md5_password), (scram_user, scram_password)] {
        let client = connect(&proxy.conn_string(user, password)).await;
        client
            .simple_query("SELECT 1")
            .await
            .expect("right password");
        assert_eq!(server_sessions(user).await, 1);
    }
    proxy.shutdown().await;
}

async fn unknown_database_is_3d000(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let conn = format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname=nope",
        proxy.port()
    );
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("must fail");
    assert_eq!(sqlstate(&err), Some("3D000"), "{err}");
    proxy.shutdown().await;
}

/// A development CA and server certificate made by certs/gen-dev-certs.sh.
fn dev_certs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs/gen-dev-certs.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run gen-dev-certs.sh");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    (dir, cert, key)
}

fn psql_with(port: u16, sslmode: &str, sql: &str) -> std::process::Output {
    Command::new(bin("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            APP_USER,
            "-d",
            DATABASE,
            "-c",
            sql,
        ])
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGSSLMODE", sslmode)
        .output()
        .expect("run psql")
}

async fn tls_required_works_with_sslmode_require_and_rejects_plaintext(mode: &'static str) {
    let (_dir, cert, key) = dev_certs();
    let proxy = ProxyBuilder::default()
        .pool_mode(mode)
        .tls("require", &cert, &key)
        .start()
        .await;
    let port = proxy.port();
    let (with_tls, without) = tokio::task::spawn_blocking(move || {
        (
            psql_with(
                port,
                "require",
                "SELECT 'over ' || CASE WHEN true THEN 'tls' END",
            ),
            psql_with(port, "disable", "SELECT 1"),
        )
    })
    .await
    .expect("psql");
    assert!(
        with_tls.status.success(),
        "{}",
        String::from_utf8_lossy(&with_tls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&with_tls.stdout).trim(), "over tls");
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("TLS is required"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    proxy.shutdown().await;
}

async fn tls_bulk_transfer_through_psql(mode: &'static str) {
    let (_dir, cert, key) = dev_certs();
    let proxy = ProxyBuilder::default()
        .pool_mode(mode)
        .tls("allow", &cert, &key)
        .start()
        .await;
    let port = proxy.port();
    let out = tokio::task::spawn_blocking(move || {
        psql_with(
            port,
            "require",
            "SELECT sum(length(repeat('x', g))) FROM generate_series(1, 3000) g",
        )
    })
    .await
    .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4501500");
    proxy.shutdown().await;
}

async fn bytes_after_ssl_request_are_rejected(mode: &'static str) {
    let (_dir, cert, key) = dev_certs();
    let proxy = ProxyBuilder::default()
        .pool_mode(mode)
        .tls("allow", &cert, &key)
        .start()
        .await;
    let mut raw = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let mut packet = 8i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80877103i32.to_be_bytes());
    packet.extend_from_slice(b"plaintext smuggled after SSLRequest");
    raw.write_all(&packet).await.expect("send");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        raw.read_to_end(&mut reply),
    )
    .await;
    assert_ne!(
        reply.first(),
        Some(&b'S'),
        "proxy accepted TLS after smuggled bytes"
    );
    assert_eq!(reply.first(), Some(&b'E'));
    assert!(String::from_utf8_lossy(&reply).contains("08P01"));
    // The proxy still serves TLS clients.
    let port = proxy.port();
    let ok = tokio::task::spawn_blocking(move || psql_with(port, "require", "SELECT 1"))
        .await
        .expect("psql");
    assert!(ok.status.success());
    proxy.shutdown().await;
}
