//! Pool and client limits answer with SQLSTATE 53300 instead of hanging.

use std::time::{Duration, Instant};

use crate::support::{connect, ProxyBuilder};

#[tokio::test]
async fn exhausted_pool_times_out_with_53300_naming_the_pool() {
    let proxy = ProxyBuilder::default()
        .pool_size(1)
        .checkout_timeout("300ms")
        .start()
        .await;
    // Session pooling: the first client holds the only server connection.
    let holder = connect(&proxy.app_conn_string()).await;
    holder.simple_query("SELECT 1").await.expect("holder works");
    let started = Instant::now();
    let err = match tokio_postgres::connect(&proxy.app_conn_string(), tokio_postgres::NoTls).await {
        Ok(_) => panic!("a second client got a server connection from a pool of one"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(err.code().map(|c| c.code()), Some("53300"), "{err}");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("pool \"app/app\""), "{message}");
    // Once the holder leaves, its connection is reset and reused.
    drop(holder);
    let ok = crate::support::eventually(Duration::from_secs(5), || async {
        tokio_postgres::connect(&proxy.app_conn_string(), tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "the pool did not get its connection back");
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_connection_cap_refuses_with_53300() {
    let proxy = ProxyBuilder::default()
        .max_client_connections(2)
        .start()
        .await;
    let a = connect(&proxy.app_conn_string()).await;
    let b = connect(&proxy.app_conn_string()).await;
    let err = match tokio_postgres::connect(&proxy.app_conn_string(), tokio_postgres::NoTls).await {
        Ok(_) => panic!("a third client got in under a cap of two"),
        Err(e) => e,
    };
    assert_eq!(err.code().map(|c| c.code()), Some("53300"), "{err}");
    a.simple_query("SELECT 1").await.expect("a still works");
    b.simple_query("SELECT 1").await.expect("b still works");
    drop(a);
    let ok = crate::support::eventually(Duration::from_secs(5), || async {
        tokio_postgres::connect(&proxy.app_conn_string(), tokio_postgres::NoTls)
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "the freed slot was not reused");
    proxy.shutdown().await;
}
