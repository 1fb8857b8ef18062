//! The relay: one `select!` over client bytes, server bytes, pending writes and shutdown.
//! Messages stream through as their original bytes; only headers (and the bodies of a few
//! small server messages) are read.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::error::SessionError;
use super::state::{Event, RelayState};
use crate::backend::cancel::{send_cancel, CancelTarget};
use crate::backend::{CancelKey, PooledServer, ServerConnection};
use crate::metrics;
use crate::protocol::frame::{Flow, Streamer};
use crate::protocol::message::{self, Backend, Frontend};
use crate::protocol::sqlstate::class_label;
use crate::protocol::TxStatus;
use crate::tls::{ClientReader, ClientWriter};

/// Stop reading a side while this much is waiting to be written to the other.
const HIGH_WATER: usize = 1024 * 1024;
/// Room kept free in read buffers before each read.
const READ_CHUNK: usize = 16 * 1024;
/// How long finishing a departed client's requests, or resetting a connection, may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last words to a client may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the relay stopped.
#[derive(Debug)]
enum End {
    /// The client sent Terminate: finish what it sent before.
    Terminated,
    /// The client's connection closed or failed.
    ClientGone,
    ServerLost,
    Shutdown,
    /// The client broke the protocol (or similar): tell it, then close.
    Failed(SessionError),
}

pub struct Relay {
    pub client_reader: ClientReader,
    pub client_writer: ClientWriter,
    pub from_client: BytesMut,
    pub to_client: BytesMut,
    pub to_server: BytesMut,
    pub server: PooledServer,
    pub state: RelayState,
    pub cancel_key: CancelKey,
    pub shutdown: watch::Receiver<bool>,
    /// TLS records written but not yet flushed.
    client_unflushed: bool,
    client_stream: Streamer,
    server_stream: Streamer,
    /// The server's last ErrorResponse was FATAL: it already told the client why it goes.
    server_said_fatal: bool,
}

impl Relay {
    pub fn new(
        (client_reader, client_writer): (ClientReader, ClientWriter),
        from_client: BytesMut,
        server: PooledServer,
        cancel_key: CancelKey,
        shutdown: watch::Receiver<bool>,
    ) -> Relay {
        Relay {
            client_reader,
            client_writer,
            from_client,
            to_client: BytesMut::with_capacity(READ_CHUNK),
            to_server: BytesMut::with_capacity(READ_CHUNK),
            server,
            state: RelayState::default(),
            cancel_key,
            shutdown,
            client_unflushed: false,
            client_stream: Streamer::default(),
            server_stream: Streamer::default(),
            server_said_fatal: false,
        }
    }

    /// Relays until either side ends, returns the server connection, then says goodbye.
    pub async fn run(mut self) {
        let end = self.pump().await.unwrap_or_else(End::Failed);
        if matches!(end, End::Terminated) {
            let _ = tokio::time::timeout(RESET_TIMEOUT, self.finish_requests()).await;
        }
        self.cancel_key.set_target(None);
        let mid_message = !self.server_stream.at_boundary() || !self.to_server.is_empty();
        release(self.server, &self.state, mid_message).await;

        let reply = match &end {
            End::ServerLost if !self.server_said_fatal => SessionError::ServerLost.reply(),
            End::Shutdown => SessionError::Shutdown.reply(),
            End::Failed(e) => e.reply(),
            _ => None,
        };
        if let End::Failed(e) = &end {
            tracing::debug!(error = %e, "session ended with an error");
        }
        if let Some(reply) = reply {
            metrics::error(reply.code.class());
            reply.encode(&mut self.to_client);
        }
        let writer = &mut self.client_writer;
        let to_client = &self.to_client;
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
            writer.write_all(to_client).await?;
            writer.shutdown().await
        })
        .await;
    }

    async fn pump(&mut self) -> Result<End, SessionError> {
        let mut shutdown = self.shutdown.clone();
        let mut shutting_down = *shutdown.borrow_and_update();
        // Created once: re-creating it every iteration would register and unregister a
        // waiter on a channel all sessions share, under its lock.
        let shutdown_signal = shutdown.changed();
        tokio::pin!(shutdown_signal);
        // The client may have sent requests along with its last authentication message.
        if self.take_client_frames()? == Flow::Stop {
            return Ok(End::Terminated);
        }
        loop {
            if let Some(end) = self.write_ahead() {
                return Ok(end);
            }
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
                    match read {
                        Ok(0) | Err(_) => return Ok(End::ClientGone),
                        Ok(_) => if self.take_client_frames()? == Flow::Stop {
                            return Ok(End::Terminated);
                        },
                    }
                }
                read = conn.reader.read_buf(&mut conn.read_buf), if self.to_client.len() < HIGH_WATER => {
                    match read {
                        Ok(0) | Err(_) => return Ok(End::ServerLost),
                        Ok(_) => self.take_server_frames(false)?,
                    }
                }
                written = conn.writer.write_buf(&mut self.to_server), if !self.to_server.is_empty() => {
                    if written.is_err() {
                        return Ok(End::ServerLost);
                    }
                }
                written = write_client(&mut self.client_writer, &mut self.to_client, &mut self.client_unflushed),
                    if !self.to_client.is_empty() || self.client_unflushed =>
                {
                    if written.is_err() {
                        return Ok(End::ClientGone);
                    }
                }
                _ = &mut shutdown_signal, if !shutting_down => shutting_down = true,
            }
        }
    }

    /// Writes what each side will take right now without waiting: most replies leave
    /// here, saving a trip around the select loop.
    fn write_ahead(&mut self) -> Option<End> {
        if !self.to_server.is_empty() {
            match self.server.writer.try_write(&self.to_server) {
                Ok(n) => self.to_server.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Some(End::ServerLost),
            }
        }
        if !self.to_client.is_empty() {
            match self.client_writer.try_write(&self.to_client) {
                Ok(n) => self.to_client.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Some(End::ClientGone),
            }
        }
        None
    }

    /// Nothing in flight in either direction and no open transaction.
    fn is_quiet(&self) -> bool {
        self.state.is_idle()
            && self.from_client.is_empty()
            && self.to_server.is_empty()
            && self.to_client.is_empty()
            && self.server.read_buf.is_empty()
            && self.server_stream.at_boundary()
            && self.client_stream.at_boundary()
    }

    /// Streams client messages towards the server. Stops in front of Terminate.
    fn take_client_frames(&mut self) -> Result<Flow, SessionError> {
        let now = Instant::now();
        let state = &mut self.state;
        let flow = self.client_stream.pump(
            &mut self.from_client,
            &mut self.to_server,
            |_| false,
            |tag, _| {
                let kind = Frontend::from_tag(tag);
                if kind == Frontend::Terminate {
                    return Flow::Stop;
                }
                if matches!(
                    kind,
                    Frontend::Query | Frontend::Execute | Frontend::FunctionCall
                ) {
                    metrics::get().queries.increment(1);
                }
                state.on_frontend(kind, now);
                Flow::Forward
            },
        )?;
        Ok(flow)
    }

    /// Streams server messages towards the client (or nowhere, when `discard`), tracking
    /// ReadyForQuery status, parameters and errors.
    fn take_server_frames(&mut self, discard: bool) -> Result<(), SessionError> {
        let now = Instant::now();
        let ServerConnection {
            read_buf,
            params,
            status,
            ..
        } = &mut *self.server;
        let state = &mut self.state;
        let said_fatal = &mut self.server_said_fatal;
        self.server_stream
            .pump(
                read_buf,
                &mut self.to_client,
                |tag| {
                    matches!(
                        Backend::from_tag(tag),
                        Backend::ReadyForQuery | Backend::ParameterStatus
                    )
                },
                |tag, body| {
                    let kind = Backend::from_tag(tag);
                    let mut ready = None;
                    match kind {
                        Backend::ReadyForQuery => {
                            ready = message::ready_status(body);
                            if let Some(s) = ready {
                                *status = s;
                            }
                        }
                        Backend::ParameterStatus => {
                            if let Some((name, value)) = message::parameter_status(body) {
                                params.insert(name, value);
                            }
                        }
                        Backend::ErrorResponse => {
                            metrics::error(class_label(message::error_code(body)));
                            *said_fatal =
                                body.starts_with(b"SFATAL\0") || body.starts_with(b"SPANIC\0");
                        }
                        _ => {}
                    }
                    if let Event::TransactionEnded(duration) = state.on_backend(kind, ready, now) {
                        let m = metrics::get();
                        m.transactions.increment(1);
                        m.transaction_duration.record(duration);
                    }
                    Flow::Forward
                },
            )
            .map_err(|_| SessionError::ServerLost)?;
        if discard {
            self.to_client.clear();
        }
        Ok(())
    }

    /// After Terminate: the server still runs what the client sent before it, as it
    /// would for a direct client (a fire-and-forget COMMIT must commit). Replies still go
    /// to the client while it reads them.
    async fn finish_requests(&mut self) {
        let mut client_reads = true;
        while !self.to_server.is_empty() {
            if self
                .server
                .writer
                .write_buf(&mut self.to_server)
                .await
                .is_err()
            {
                return;
            }
        }
        while self.state.pending_ready > 0 {
            let conn: &mut ServerConnection = &mut self.server;
            reserve(&mut conn.read_buf);
            match conn.reader.read_buf(&mut conn.read_buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if self.take_server_frames(!client_reads).is_err() {
                        return;
                    }
                }
            }
            if client_reads {
                let written = tokio::time::timeout(
                    GOODBYE_TIMEOUT,
                    self.client_writer.write_all(&self.to_client),
                )
                .await;
                client_reads = matches!(written, Ok(Ok(())));
                self.to_client.clear();
            }
        }
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

async fn write_client(
    writer: &mut ClientWriter,
    buf: &mut BytesMut,
    unflushed: &mut bool,
) -> std::io::Result<()> {
    if buf.is_empty() {
        writer.flush().await?;
        *unflushed = false;
    } else {
        writer.write_buf(buf).await?;
        *unflushed = writer.is_tls();
    }
    Ok(())
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
        let target = CancelTarget {
            host: server.target.host.clone(),
            port: server.target.port,
            key: server.key,
        };
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
    clean
}
