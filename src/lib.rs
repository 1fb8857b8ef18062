//! pgstrata: a PostgreSQL wire-protocol proxy.
//! `run` is the entry point that `main` and the integration tests both start.
#![forbid(unsafe_code)]

pub mod backend;
pub mod localpg;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod router;
pub mod rules;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod sql;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use rules::{Config, TlsMode};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("tls.mode is {0:?} but no certificate and key are configured")]
    TlsFiles(TlsMode),
}

/// Runs the proxy on `listener` until `shutdown` completes, then drains sessions.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    serve(listener, config, None, shutdown).await
}

/// Like `run`, and reloads the rules from `rules_path` on SIGHUP or when a file in its
/// directory changes. An invalid file keeps the rules in force (see `rules::reload`).
pub async fn run_watching(
    listener: TcpListener,
    config: Config,
    rules_path: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    serve(listener, config, Some(rules_path), shutdown).await
}

async fn serve(
    listener: TcpListener,
    config: Config,
    rules_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let tls = match (&config.tls.mode, &config.tls.cert, &config.tls.key) {
        (TlsMode::Disable, _, _) => None,
        (_, Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        (mode, _, _) => return Err(RunError::TlsFiles(*mode)),
    };
    let stop = shutdown::Shutdown::new();
    let proxy = Arc::new(proxy::Proxy::new(config, tls, Arc::clone(&stop)));
    tokio::spawn(async move {
        shutdown.await;
        stop.fire();
    });
    let sampler = tokio::spawn(sample_pools(Arc::clone(&proxy)));
    let watcher = rules_path.map(|path| {
        let target = Arc::clone(&proxy);
        let mut stopped = proxy.shutdown.listen();
        tokio::spawn(rules::watch(
            path,
            move |config| target.reload(config),
            async move { stopped.fired().await },
        ))
    });
    server::serve(listener, proxy).await;
    sampler.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    Ok(())
}

/// Once a second: gives each pool's long-unused warm connections back to bb8 (to be aged
/// and closed there), then publishes its server connection counts.
async fn sample_pools(proxy: Arc<proxy::Proxy>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let snapshot = proxy.snapshot();
        for pool in snapshot.pools.iter() {
            pool.sweep();
            let (open, idle) = pool.counts();
            metrics::server_connections(&pool.name, open.saturating_sub(idle), idle);
        }
    }
}
