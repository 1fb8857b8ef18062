//! The end of a session: finishing what the client sent before Terminate, and giving the
//! server connection back clean (or cancelling what runs on it and dropping it).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Relay, GOODBYE_TIMEOUT, RESET_TIMEOUT};
use crate::backend::cancel::{send_cancel, CancelTarget};
use crate::backend::{PooledServer, ServerConnection};
use crate::metrics;
use crate::protocol::buffers::reserve;
use crate::protocol::TxStatus;
use crate::session::state::RelayState;

impl Relay {
    /// After Terminate: the server still runs what the client sent before it, as it
    /// would for a direct client (a fire-and-forget COMMIT must commit). Replies still go
    /// to the client while it reads them.
    pub(super) async fn finish_requests(&mut self) {
        let mut client_reads = true;
        while !self.to_server.is_empty() {
            let Some(server) = self.server.as_deref_mut() else {
                return;
            };
            if server.stream.write_buf(&mut self.to_server).await.is_err() {
                return;
            }
        }
        while self.state.pending_ready > 0 {
            let Some(conn) = self.server.as_deref_mut() else {
                return;
            };
            reserve(&mut conn.read_buf);
            match conn.stream.read_buf(&mut conn.read_buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if self.take_server_frames(!client_reads).is_err() {
                        return;
                    }
                }
            }
            if client_reads {
                let written =
                    tokio::time::timeout(GOODBYE_TIMEOUT, self.client.write_all(&self.to_client))
                        .await;
                client_reads = matches!(written, Ok(Ok(())));
                self.to_client.clear();
            }
        }
    }
}

/// Returns a server connection to its pool in a known state, or cancels whatever it may
/// still be running and drops it.
pub async fn release(mut server: PooledServer, state: &RelayState, mid_message: bool) {
    let settled = state.is_settled() && !mid_message && !server.broken;
    let clean = settled
        && tokio::time::timeout(RESET_TIMEOUT, reset(&mut server))
            .await
            .unwrap_or(false);
    if !clean {
        // A statement may still be running for nobody: stop it before closing.
        let target = CancelTarget::of(&server);
        let _ = send_cancel(&target).await;
        server.broken = true;
        metrics::get().server_connections_dropped.increment(1);
    }
}

/// Rolls back an open transaction and runs DISCARD ALL; true when the connection is clean.
async fn reset(server: &mut ServerConnection) -> bool {
    if server.status != TxStatus::Idle && !matches!(server.run_hidden("ROLLBACK").await, Ok(None)) {
        return false;
    }
    let clean = matches!(server.run_hidden("DISCARD ALL").await, Ok(None))
        && server.status == TxStatus::Idle;
    server.needs_reset = !clean;
    server.applied = None;
    server.statements.clear();
    clean
}
