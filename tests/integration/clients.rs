//! Other languages' drivers through the proxy in transaction pooling, on a pool smaller
//! than their client count: psycopg 3 and asyncpg (Python), node-postgres, PgJDBC. Each
//! program in `tests/clients/` checks its own results and prints `ok`.
//!
//! A driver that is not installed skips its test with a message, unless
//! `PGSTRATA_CLIENT_TESTS=require` (set by `.ci/run`, which installs them all): then it
//! fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{ProxyBuilder, APP_PASSWORD, APP_USER, DATABASE};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Whether a missing driver fails the test rather than skipping it.
fn required() -> bool {
    std::env::var("PGSTRATA_CLIENT_TESTS").is_ok_and(|v| v == "require")
}

/// Runs `probe`; true if it succeeds. Otherwise skips (false) or, when drivers are
/// required, fails with `install`.
fn available(name: &str, probe: &mut Command, install: &str) -> bool {
    let found = probe.output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(!required(), "{name} is missing ({install})");
        eprintln!("skipping the {name} test: not installed ({install})");
    }
    found
}

/// Runs `command` against a transaction-pooling proxy with 4 server connections (per
/// server) and checks that it printed `ok`; then again with the shared cluster's
/// streaming replica behind the proxy, where reads go.
async fn run_through_proxy(name: &str, command: impl Fn() -> Command) {
    for replica in [false, true] {
        let mut builder = ProxyBuilder::default()
            .pool_mode("transaction")
            .pool_size(4);
        if replica {
            builder = builder.with_replica();
        }
        run_once(&format!("{name} (replica: {replica})"), command(), builder).await;
    }
}

async fn run_once(name: &str, mut command: Command, builder: ProxyBuilder) {
    let proxy = builder.start().await;
    command
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", proxy.port().to_string())
        .env("PGUSER", APP_USER)
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGDATABASE", DATABASE)
        .env("PGSSLMODE", "disable");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("client task")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "{name} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn psycopg_and_asyncpg() {
    let install = "pip install 'psycopg[binary]' asyncpg";
    let mut probe = Command::new("python3");
    probe.args(["-c", "import psycopg, asyncpg"]);
    if !available("psycopg/asyncpg", &mut probe, install) {
        return;
    }
    run_through_proxy("psycopg/asyncpg", || {
        let mut command = Command::new("python3");
        command.arg(clients_dir().join("python_drivers.py"));
        command
    })
    .await;
}

#[tokio::test]
async fn node_postgres() {
    let modules = clients_dir().join("node_modules");
    let install = "npm ci --prefix tests/clients";
    let mut probe = Command::new("node");
    probe
        .args(["-e", "require('pg')"])
        .env("NODE_PATH", &modules);
    if !available("node-postgres", &mut probe, install) {
        return;
    }
    run_through_proxy("node-postgres", || {
        let mut command = Command::new("node");
        command
            .arg(clients_dir().join("node_pg.js"))
            .env("NODE_PATH", &modules);
        command
    })
    .await;
}

#[tokio::test]
async fn pgjdbc() {
    let jar =
        std::env::var("PGJDBC_JAR").unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    let install = "apt-get install libpostgresql-jdbc-java, or set PGJDBC_JAR";
    // Jdbc.java runs as a single-file source program, which takes the JDK's compiler.
    let mut probe = Command::new("javac");
    probe.arg("-version");
    if !available(
        "a Java JDK",
        &mut probe,
        "apt-get install default-jdk-headless",
    ) {
        return;
    }
    if !Path::new(&jar).is_file() {
        assert!(!required(), "PgJDBC is missing: {jar} ({install})");
        eprintln!("skipping the PgJDBC test: {jar} not found ({install})");
        return;
    }
    run_through_proxy("PgJDBC", || {
        let mut command = Command::new("java");
        command
            .arg("-cp")
            .arg(&jar)
            .arg(clients_dir().join("Jdbc.java"));
        command
    })
    .await;
}
