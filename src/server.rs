//! Accept loop: the client connection cap, one task and tracing span per connection,
//! and the graceful drain on shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::metrics;
use crate::protocol::{ErrorReply, SqlState};
use crate::proxy::Proxy;
use crate::session;

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts clients until shutdown, then lets sessions finish for up to `shutdown_timeout`.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    let mut shutdown = proxy.shutdown.listen();
    let slots = Arc::new(Semaphore::new(proxy.listen.max_client_connections));
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!("session", id, client = %peer, user = tracing::field::Empty, database = tracing::field::Empty);
                    match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => {
                            let proxy = Arc::clone(&proxy);
                            let session = async move {
                                let m = metrics::get();
                                m.clients_accepted.increment(1);
                                m.client_connections.increment(1.0);
                                session::serve(tcp, proxy).await;
                                m.client_connections.decrement(1.0);
                                drop(slot);
                            };
                            // A span no subscriber wants is not entered and left at every
                            // wake of the session.
                            match span.is_disabled() {
                                true => sessions.spawn(session),
                                false => sessions.spawn(session.instrument(span)),
                            };
                        }
                        Err(_) => {
                            sessions.spawn(refuse(tcp).instrument(span));
                        }
                    }
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            () = shutdown.fired() => break,
        }
    }
    drop(listener);
    let timeout = proxy.listen.shutdown_timeout;
    tracing::info!(
        sessions = sessions.len(),
        ?timeout,
        "shutting down: draining sessions"
    );
    let drained = tokio::time::timeout(timeout, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "shutdown timeout reached: closing remaining sessions"
        );
        sessions.shutdown().await;
    }
}

/// Tells a client over the connection cap why it is turned away.
async fn refuse(mut tcp: TcpStream) {
    metrics::get().clients_rejected.increment(1);
    let reply = ErrorReply::fatal(
        SqlState::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    );
    metrics::error(reply.code.class());
    let mut out = BytesMut::new();
    reply.encode(&mut out);
    let _ = tcp.write_all(&out).await;
    let _ = tcp.shutdown().await;
}
