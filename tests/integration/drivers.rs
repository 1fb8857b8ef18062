//! Real drivers through the proxy, compared with a direct connection.

use std::time::Duration;

use rust_decimal::Decimal;
use tokio_postgres::AsyncMessage;

use crate::support::{connect, direct_conn_string, ProxyBuilder};

in_both_pool_modes!(notices_reach_the_client,);

/// Values of many types, fetched with the extended protocol in binary format.
type Row = (
    Decimal,
    chrono::DateTime<chrono::Utc>,
    serde_json::Value,
    Vec<Option<i32>>,
    uuid::Uuid,
    Vec<u8>,
    Option<String>,
    String,
    f64,
    bool,
    i64,
);

async fn typed_row(client: &tokio_postgres::Client, i: i64) -> Row {
    let stmt = client
        .prepare(
            "SELECT $1::numeric, $2::timestamptz, $3::jsonb, ARRAY[1, NULL, $4]::int4[], $5::uuid, \
             $6::bytea, NULL::text, 'héllo ' || $7::text, $8::float8, $9::bool, $10::int8 * 2",
        )
        .await
        .expect("prepare");
    let numeric: Decimal = "12345.678900".parse().expect("decimal");
    let ts = chrono::DateTime::parse_from_rfc3339("2024-02-29T12:34:56.789012+02:00")
        .expect("timestamp")
        .with_timezone(&chrono::Utc);
    let json = serde_json::json!({"a": [1, 2, {"b": null}], "i": i});
    let uuid = uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    let bytes: Vec<u8> = (0..=255u8).collect();
    let row = client
        .query_one(
            &stmt,
            &[
                &numeric, &ts, &json, &3i32, &uuid, &bytes, &"wörld", &1.5f64, &true, &i,
            ],
        )
        .await
        .expect("typed query");
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
        row.get(8),
        row.get(9),
        row.get(10),
    )
}

#[tokio::test]
async fn binary_results_over_many_types_match_direct() {
    binary_results_match_direct_in("session").await;
}

#[tokio::test]
async fn binary_results_match_direct_with_transaction_pooling() {
    binary_results_match_direct_in("transaction").await;
}

async fn binary_results_match_direct_in(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let via = connect(&proxy.app_conn_string()).await;
    let direct = connect(&direct_conn_string()).await;
    for i in 0..20 {
        let through = typed_row(&via, i).await;
        assert_eq!(through, typed_row(&direct, i).await);
        assert_eq!(through.3, vec![Some(1), None, Some(3)]);
        assert_eq!(through.6, None);
        assert_eq!(through.7, "héllo wörld");
        assert_eq!(through.10, i * 2);
    }
    // A wide result set crosses many reads and writes.
    let sql = "SELECT g, repeat('x', g % 1000), g::float8 / 7 FROM generate_series(1, 20000) g";
    let a: Vec<(i32, String, f64)> = via
        .query(sql, &[])
        .await
        .expect("wide query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let b: Vec<(i32, String, f64)> = direct
        .query(sql, &[])
        .await
        .expect("wide query direct")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(a.len(), 20000);
    assert_eq!(a, b);
    proxy.shutdown().await;
}

#[tokio::test]
async fn error_inside_transaction_then_rollback() {
    error_inside_transaction_then_rollback_in("session").await;
}

#[tokio::test]
async fn error_inside_transaction_then_rollback_with_transaction_pooling() {
    error_inside_transaction_then_rollback_in("transaction").await;
}

async fn error_inside_transaction_then_rollback_in(mode: &'static str) {
    let proxy = ProxyBuilder::default()
        .pool_mode(mode)
        .pool_size(2)
        .start()
        .await;
    let mut client = connect(&proxy.app_conn_string()).await;
    let tx = client.transaction().await.expect("begin");
    let err = tx
        .query("SELECT 1 / 0", &[])
        .await
        .expect_err("division by zero");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    let err = tx
        .query("SELECT 1", &[])
        .await
        .expect_err("aborted transaction");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
    );
    tx.rollback().await.expect("rollback");
    let row = client
        .query_one("SELECT 41 + 1", &[])
        .await
        .expect("after rollback");
    assert_eq!(row.get::<_, i32>(0), 42);
    // Simple protocol errors keep the session usable too.
    let err = client
        .simple_query("SELEC 1")
        .await
        .expect_err("syntax error");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::SYNTAX_ERROR)
    );
    assert!(client.simple_query("SELECT 1").await.is_ok());
    proxy.shutdown().await;
}

async fn notices_reach_the_client(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let (client, mut messages) =
        crate::support::connect_with_messages(&proxy.app_conn_string()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = messages.recv().await {
            if let AsyncMessage::Notice(notice) = message {
                let _ = tx.send((notice.code().code().to_owned(), notice.message().to_owned()));
            }
        }
    });
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
        .await
        .expect("DO block");
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("notice")
        .expect("notice");
    assert_eq!(first, ("00000".to_owned(), "hello 42".to_owned()));
    let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("warning")
        .expect("warning");
    assert_eq!(second, ("01000".to_owned(), "careful".to_owned()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn sqlx_cached_prepared_statements() {
    sqlx_cached_prepared_statements_in("session").await;
}

#[tokio::test]
async fn sqlx_cached_prepared_statements_with_transaction_pooling() {
    sqlx_cached_prepared_statements_in("transaction").await;
}

async fn sqlx_cached_prepared_statements_in(mode: &'static str) {
    let proxy = ProxyBuilder::default().pool_mode(mode).start().await;
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{}/{}?sslmode=disable",
        crate::support::APP_USER,
        crate::support::APP_PASSWORD,
        proxy.port(),
        crate::support::DATABASE
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("sqlx connect");
    let mut tasks = Vec::new();
    for worker in 0..4i32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100i32 {
                let sum: i32 = sqlx::query_scalar("SELECT $1::int4 + $2::int4")
                    .bind(i)
                    .bind(worker)
                    .fetch_one(&pool)
                    .await
                    .expect("sum");
                assert_eq!(sum, i + worker);
                let text: String = sqlx::query_scalar("SELECT repeat($1, $2)")
                    .bind("ab")
                    .bind(i % 5)
                    .fetch_one(&pool)
                    .await
                    .expect("repeat");
                assert_eq!(text, "ab".repeat((i % 5) as usize));
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker");
    }
    pool.close().await;
    proxy.shutdown().await;
}
