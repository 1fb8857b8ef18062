//! The relay: one `select!` over client bytes, server bytes, pending writes and shutdown.
//! Frames are checked and inspected in place; the original bytes are forwarded.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;

use super::error::SessionError;
use super::state::{Event, RelayState};
use crate::backend::cancel::{send_cancel, CancelTarget};
use crate::backend::{CancelKey, PooledServer, ServerConnection};
use crate::metrics;
use crate::protocol::frame::{Frames, MAX_FRAME_LEN};
use crate::protocol::message::{self, Backend, Frontend};
use crate::protocol::sqlstate::class_label;
use crate::protocol::TxStatus;
use crate::tls::ClientStream;

/// Stop reading a side while this much is waiting to be written to the other.
const HIGH_WATER: usize = 1024 * 1024;
/// Room kept free in read buffers before each read.
const READ_CHUNK: usize = 16 * 1024;
/// How long resetting a server connection for reuse may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the relay stopped.
#[derive(Debug)]
enum End {
    ClientLeft,
    ServerLost,
    Shutdown,
}

pub struct Relay {
    pub client_reader: ReadHalf<ClientStream>,
    pub client_writer: WriteHalf<ClientStream>,
    pub client_is_tls: bool,
    pub from_client: BytesMut,
    pub to_client: BytesMut,
    pub to_server: BytesMut,
    pub server: PooledServer,
    pub state: RelayState,
    pub cancel_key: CancelKey,
    pub shutdown: watch::Receiver<bool>,
    /// TLS records written but not yet flushed.
    pub client_unflushed: bool,
}

impl Relay {
    /// Relays until either side ends, then releases the server connection.
    pub async fn run(mut self) -> Result<(), SessionError> {
        let end = self.pump().await;
        let result = match end {
            Ok(End::ClientLeft) => Ok(()),
            Ok(End::ServerLost) => Err(SessionError::ServerLost),
            Ok(End::Shutdown) => Err(SessionError::Shutdown),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            if let Some(reply) = e.reply() {
                metrics::error(reply.code.class());
                reply.encode(&mut self.to_client);
            }
            // Best effort: the client may already be gone.
            let _ = self.client_writer.write_all(&self.to_client).await;
            let _ = self.client_writer.shutdown().await;
        }
        self.cancel_key.set_target(None);
        release(self.server, &self.state, !self.to_server.is_empty()).await;
        match result {
            Err(SessionError::ServerLost | SessionError::Shutdown) => Ok(()),
            other => other,
        }
    }

    async fn pump(&mut self) -> Result<End, SessionError> {
        let mut shutting_down = *self.shutdown.borrow();
        loop {
            if shutting_down && self.is_quiet() {
                return Ok(End::Shutdown);
            }
            reserve(&mut self.from_client);
            let conn: &mut ServerConnection = &mut self.server;
            reserve(&mut conn.read_buf);
            tokio::select! {
                read = self.client_reader.read_buf(&mut self.from_client),
                    if self.to_server.len() < HIGH_WATER =>
                {
                    if read? == 0 || self.take_client_frames()? {
                        return Ok(End::ClientLeft);
                    }
                }
                read = conn.reader.read_buf(&mut conn.read_buf), if self.to_client.len() < HIGH_WATER => {
                    match read {
                        Ok(0) | Err(_) => return Ok(End::ServerLost),
                        Ok(_) => self.take_server_frames()?,
                    }
                }
                written = conn.writer.write_buf(&mut self.to_server), if !self.to_server.is_empty() => {
                    if written.is_err() {
                        return Ok(End::ServerLost);
                    }
                }
                written = write_client(&mut self.client_writer, &mut self.to_client, &mut self.client_unflushed, self.client_is_tls),
                    if !self.to_client.is_empty() || self.client_unflushed =>
                {
                    written?;
                }
                _ = self.shutdown.changed(), if !shutting_down => shutting_down = true,
            }
        }
    }

    /// Nothing in flight in either direction and no open transaction.
    fn is_quiet(&self) -> bool {
        self.state.is_idle()
            && self.from_client.is_empty()
            && self.to_server.is_empty()
            && self.to_client.is_empty()
            && self.server.read_buf.is_empty()
    }

    /// Moves complete client messages to the server buffer. Returns true on Terminate.
    fn take_client_frames(&mut self) -> Result<bool, SessionError> {
        let now = Instant::now();
        let mut frames = Frames::new(&self.from_client, MAX_FRAME_LEN);
        let mut terminate_at = None;
        for frame in frames.by_ref() {
            let frame = frame?;
            let kind = Frontend::from_tag(frame.tag);
            if kind == Frontend::Terminate {
                terminate_at = Some(frame.start);
                break;
            }
            if matches!(
                kind,
                Frontend::Query | Frontend::Execute | Frontend::FunctionCall
            ) {
                metrics::get().queries.increment(1);
            }
            self.state.on_frontend(kind, now);
        }
        let end = terminate_at.unwrap_or(frames.consumed());
        self.to_server
            .extend_from_slice(&self.from_client.split_to(end));
        Ok(terminate_at.is_some())
    }

    /// Moves complete server messages to the client buffer, tracking status and parameters.
    fn take_server_frames(&mut self) -> Result<(), SessionError> {
        let now = Instant::now();
        let conn: &mut ServerConnection = &mut self.server;
        let mut frames = Frames::new(&conn.read_buf, MAX_FRAME_LEN);
        for frame in frames.by_ref() {
            let frame = frame.map_err(|_| SessionError::ServerLost)?;
            let body = frame.body(&conn.read_buf);
            let kind = Backend::from_tag(frame.tag);
            let mut status = None;
            match kind {
                Backend::ReadyForQuery => {
                    status = message::ready_status(body);
                    if let Some(s) = status {
                        conn.status = s;
                    }
                }
                Backend::ParameterStatus => {
                    if let Some((name, value)) = message::parameter_status(body) {
                        conn.params.insert(name, value);
                    }
                }
                Backend::ErrorResponse => metrics::error(class_label(message::error_code(body))),
                _ => {}
            }
            if let Event::TransactionEnded(duration) = self.state.on_backend(kind, status, now) {
                let m = metrics::get();
                m.transactions.increment(1);
                m.transaction_duration.record(duration);
            }
        }
        let consumed = frames.consumed();
        self.to_client
            .extend_from_slice(&conn.read_buf.split_to(consumed));
        Ok(())
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

async fn write_client(
    writer: &mut WriteHalf<ClientStream>,
    buf: &mut BytesMut,
    unflushed: &mut bool,
    is_tls: bool,
) -> Result<(), SessionError> {
    if buf.is_empty() {
        writer.flush().await?;
        *unflushed = false;
    } else {
        writer.write_buf(buf).await?;
        *unflushed = is_tls;
    }
    Ok(())
}

/// Returns a server connection to its pool in a known state, or drops it.
pub async fn release(mut server: PooledServer, state: &RelayState, unsent: bool) {
    let reusable = if state.pending_ready > 0 || unsent || server.broken {
        // A statement may still be running: cancel it so the server stops working for nobody.
        if state.pending_ready > 0 && !server.broken {
            let target = CancelTarget {
                host: server.target.host.clone(),
                port: server.target.port,
                key: server.key,
            };
            let _ = send_cancel(&target).await;
        }
        false
    } else {
        tokio::time::timeout(RESET_TIMEOUT, reset(&mut server))
            .await
            .unwrap_or(false)
    };
    if !reusable {
        server.broken = true;
        metrics::get().server_connections_dropped.increment(1);
    }
}

/// Rolls back an open transaction and runs DISCARD ALL; true when the connection is clean.
async fn reset(server: &mut ServerConnection) -> bool {
    if server.status != TxStatus::Idle {
        match server.run_hidden("ROLLBACK").await {
            Ok(None) => {}
            _ => return false,
        }
    }
    matches!(server.run_hidden("DISCARD ALL").await, Ok(None)) && server.status == TxStatus::Idle
}
