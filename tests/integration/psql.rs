//! psql scripts (simple protocol, multi-statement strings, \copy, binary COPY, LISTEN/NOTIFY)
//! run through the proxy and directly; outputs must be identical.

use std::path::Path;
use std::process::Command;

use crate::support::{bin, primary, ProxyBuilder, APP_PASSWORD, APP_USER, DATABASE};

/// Runs psql on a script; returns stdout + stderr with server PIDs masked.
fn psql(port: u16, script: &Path, workdir: &Path) -> String {
    let output = Command::new(bin("psql"))
        .args(["-X", "-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", APP_USER, "-d", DATABASE])
        .arg("-f")
        .arg(script)
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGSSLMODE", "disable")
        .current_dir(workdir)
        .output()
        .expect("run psql");
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    mask_pids(&text)
}

fn mask_pids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("PID ") {
        out.push_str(&rest[..at + 4]);
        rest = rest[at + 4..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

const SCRIPT: &str = r#"
SELECT 1 AS one; SELECT 'two' AS two, NULL AS nothing;
SELECT 'a' AS x \; SELECT 'b' AS y \; SELECT 3 AS z;
CREATE TEMP TABLE items (id int PRIMARY KEY, name text, data bytea, at timestamptz, tags text[]);
\copy items FROM 'input.csv' WITH (FORMAT csv)
SELECT count(*), sum(id), max(name) FROM items;
\copy (SELECT * FROM items ORDER BY id) TO 'out.csv' WITH (FORMAT csv)
\copy (SELECT * FROM items ORDER BY id) TO 'out.bin' WITH (FORMAT binary)
CREATE TEMP TABLE items2 (LIKE items);
\copy items2 FROM 'out.bin' WITH (FORMAT binary)
SELECT count(*) FROM items2 JOIN items USING (id, name, data, at, tags);
COPY (SELECT id, name FROM items WHERE id <= 3 ORDER BY id) TO STDOUT;
SELECT 1 / 0;
INSERT INTO items VALUES (1, 'duplicate');
BEGIN;
SELECT 1;
SELECT no_such_column;
SELECT 2;
ROLLBACK;
SET application_name = 'psql-script';
SHOW application_name;
LISTEN chan;
NOTIFY chan, 'hello';
SELECT pg_notify('chan', 'again');
SELECT 'after notify' AS note;
\echo done
"#;

#[tokio::test]
async fn psql_script_matches_direct() {
    psql_script_matches_direct_in("session").await;
}

#[tokio::test]
async fn psql_script_matches_direct_with_transaction_pooling() {
    psql_script_matches_direct_in("transaction").await;
}

async fn psql_script_matches_direct_in(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let root = tempfile::tempdir().expect("tempdir");
    let mut input = String::new();
    for i in 1..=500 {
        input.push_str(&format!(
            "{i},name {i} \"quoted\",\\x{:02x}ff00,2024-01-{:02} 10:00:00+00,\"{{a,\"\"b c\"\",{i}}}\"\n",
            i % 256,
            i % 28 + 1
        ));
    }
    let mut outputs = Vec::new();
    for (label, port) in [("direct", primary().port()), ("proxy", proxy.port())] {
        let dir = root.path().join(label);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("input.csv"), &input).expect("input");
        std::fs::write(dir.join("script.sql"), SCRIPT).expect("script");
        let text = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || psql(port, Path::new("script.sql"), &dir)
        })
        .await
        .expect("psql task");
        outputs.push((dir, text));
    }
    let (direct_dir, direct) = &outputs[0];
    let (proxy_dir, via) = &outputs[1];
    assert!(direct.contains("done"), "script did not finish:\n{direct}");
    assert!(
        direct.contains("Asynchronous notification \"chan\" with payload \"hello\""),
        "{direct}"
    );
    assert!(direct.contains("500 |"), "copy in failed:\n{direct}");
    assert_eq!(
        via, direct,
        "psql output through the proxy differs from direct"
    );
    for file in ["out.csv", "out.bin"] {
        let a = std::fs::read(direct_dir.join(file)).expect("direct file");
        let b = std::fs::read(proxy_dir.join(file)).expect("proxy file");
        assert!(!a.is_empty());
        assert!(a == b, "{file} differs between direct and proxy");
    }
    proxy.shutdown().await;
}

#[test]
fn pid_masking() {
    assert_eq!(
        mask_pids("from server process with PID 1234."),
        "from server process with PID N."
    );
}
