//! The relay: one `select!` over client bytes, server bytes, pending writes and shutdown.
//! Messages stream through as their original bytes; only headers (and the bodies of a few
//! small messages) are read. In transaction pooling the server connection is taken from
//! the pool when a transaction starts and given back when it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use super::error::SessionError;
use super::hidden;
use super::state::{Event, RelayState};
use super::statements::Statements;
use crate::backend::cancel::{send_cancel, CancelTarget};
use crate::backend::{CancelKey, Pool, PooledServer, ServerConnection};
use crate::metrics;
use crate::protocol::frame::{cstr, Flow, Streamer};
use crate::protocol::message::{self, Backend, Frontend};
use crate::protocol::sqlstate::class_label;
use crate::protocol::{reply, TxStatus};
use crate::rules::PoolMode;
use crate::sql::effects::{self, Effects, PinReason};
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
    /// The client broke the protocol (or a checkout failed): tell it, then close.
    Failed(SessionError),
}

/// What a session brings to the relay.
pub struct Session {
    pub pool: Arc<Pool>,
    /// Settings from the StartupMessage, applied to every server connection the session uses.
    pub settings: Arc<Vec<(String, String)>>,
    pub cancel_key: CancelKey,
    pub shutdown: watch::Receiver<bool>,
    /// The ParameterStatus values the client was given at startup.
    pub client_params: BTreeMap<String, String>,
}

pub struct Relay {
    client_reader: ClientReader,
    client_writer: ClientWriter,
    from_client: BytesMut,
    to_client: BytesMut,
    to_server: BytesMut,
    /// The server connection, while the session holds one.
    server: Option<PooledServer>,
    session: Session,
    state: RelayState,
    /// Why this session keeps its server connection between transactions, if it does.
    pin: Option<PinReason>,
    /// Named statements mapped to proxy-wide ones (transaction pooling only).
    statements: Option<Statements>,
    /// Settings may have changed in this transaction: read them back before releasing.
    settings_changed: bool,
    /// Custom settings the client named: read back by name.
    custom_settings: BTreeSet<String>,
    /// Session state may have been removed in this transaction: check before releasing.
    may_unpin: bool,
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
        session: Session,
    ) -> Relay {
        let pin = (session.pool.mode() == PoolMode::Session).then_some(PinReason::SessionMode);
        Relay {
            client_reader,
            client_writer,
            from_client,
            to_client: BytesMut::with_capacity(READ_CHUNK),
            to_server: BytesMut::with_capacity(READ_CHUNK),
            server: Some(server),
            session,
            state: RelayState::default(),
            statements: pin.is_none().then(Statements::default),
            settings_changed: false,
            custom_settings: BTreeSet::new(),
            may_unpin: false,
            pin,
            client_unflushed: false,
            client_stream: Streamer::default(),
            server_stream: Streamer::default(),
            server_said_fatal: false,
        }
    }

    /// Relays until either side ends, returns the server connection, then says goodbye.
    pub async fn run(mut self) {
        let end = self.pump().await.unwrap_or_else(End::Failed);
        if matches!(end, End::Terminated) && self.server.is_some() {
            let _ = tokio::time::timeout(RESET_TIMEOUT, self.finish_requests()).await;
        }
        self.session.cancel_key.set_target(None);
        if let Some(server) = self.server.take() {
            let mid_message = !self.server_stream.at_boundary() || !self.to_server.is_empty();
            release(server, &self.state, mid_message).await;
        }
        if let Some(reason) = self.pin.filter(|r| *r != PinReason::SessionMode) {
            metrics::unpinned(reason);
        }
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
        let mut shutdown = self.session.shutdown.clone();
        let mut shutting_down = *shutdown.borrow_and_update();
        // Created once: re-creating it every iteration would register and unregister a
        // waiter on a channel all sessions share, under its lock.
        let shutdown_signal = shutdown.changed();
        tokio::pin!(shutdown_signal);
        // The client may have sent requests along with its last authentication message.
        if self.take_client_frames()? == Flow::Stop {
            return Ok(End::Terminated);
        }
        // (The server is attached at this point: the session starts with one.)
        loop {
            if self.server.is_none() && !self.to_server.is_empty() {
                self.attach().await?;
            }
            if let Some(end) = self.write_ahead() {
                return Ok(end);
            }
            if self.transaction_over() && self.may_unpin {
                self.check_unpin().await?;
            }
            if self.may_release() {
                if self.settings_changed {
                    self.capture_settings().await?;
                }
                self.detach();
            }
            tracing::trace!(
                attached = self.server.is_some(),
                pending = self.state.pending_ready,
                status = ?self.state.status,
                unsynced = self.state.unsynced,
                from_client = self.from_client.len(),
                to_server = self.to_server.len(),
                settled = self.statements.as_ref().is_none_or(Statements::is_settled),
                "relay waits"
            );
            if shutting_down && self.is_quiet() {
                return Ok(End::Shutdown);
            }
            reserve(&mut self.from_client);
            let (server_reader, server_writer) = match self.server.as_deref_mut() {
                Some(ServerConnection {
                    reader,
                    writer,
                    read_buf,
                    ..
                }) => {
                    reserve(read_buf);
                    (Some((reader, read_buf)), Some(writer))
                }
                None => (None, None),
            };
            let has_server = server_writer.is_some();
            tokio::select! {
                read = self.client_reader.read_buf(&mut self.from_client),
                    if self.to_server.len() < HIGH_WATER =>
                {
                    match read {
                        Ok(0) | Err(_) => return Ok(End::ClientGone),
                        Ok(_) => {
                            // Statement names are mapped against the connection's own
                            // statements: take one before reading the messages.
                            if self.server.is_none() && starts_a_request(&self.from_client) {
                                self.attach().await?;
                            }
                            if self.take_client_frames()? == Flow::Stop {
                                return Ok(End::Terminated);
                            }
                        }
                    }
                }
                read = read_server(server_reader), if has_server && self.to_client.len() < HIGH_WATER => {
                    match read {
                        Ok(0) | Err(_) => return Ok(End::ServerLost),
                        Ok(_) => self.take_server_frames(false)?,
                    }
                }
                written = write_server(server_writer, &mut self.to_server),
                    if has_server && !self.to_server.is_empty() =>
                {
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

    /// Takes a server connection for the transaction the client is starting, first giving
    /// it this client's settings if it carries others.
    async fn attach(&mut self) -> Result<(), SessionError> {
        let mut server = self.session.pool.checkout().await?;
        // Run before the client's bytes and waited for: if it fails, the client's
        // statements must not run under another client's settings.
        if let Some(sql) =
            hidden::reconcile_settings(server.applied.as_deref(), &self.session.settings)
        {
            match server.run_hidden(&sql).await {
                Ok(None) => server.applied = Some(Arc::clone(&self.session.settings)),
                Ok(Some(fields)) => {
                    server.broken = true;
                    return Err(SessionError::StartupParameter(fields));
                }
                Err(e) => {
                    server.broken = true;
                    return Err(e.into());
                }
            }
        }
        // Reported values that differ from what the client was told, it hears about.
        for (name, value) in &server.params {
            if self.session.client_params.get(name) != Some(value) {
                reply::parameter_status(&mut self.to_client, name, value);
                self.session
                    .client_params
                    .insert(name.clone(), value.clone());
            }
        }
        self.session.cancel_key.set_target(Some(CancelTarget {
            host: server.target.host.clone(),
            port: server.target.port,
            key: server.key,
        }));
        self.server = Some(server);
        Ok(())
    }

    /// Transaction pooling: the transaction is over and nothing is in flight.
    fn may_release(&self) -> bool {
        self.pin.is_none() && self.transaction_over()
    }

    /// Transaction pooling, held connection: no transaction open, nothing in flight.
    fn transaction_over(&self) -> bool {
        let Some(server) = self.server.as_deref() else {
            return false;
        };
        self.statements.as_ref().is_none_or(Statements::is_settled)
            && self.state.is_idle()
            && self.to_server.is_empty()
            && self.client_stream.at_boundary()
            && self.server_stream.at_boundary()
            && server.read_buf.is_empty()
            && server.status == TxStatus::Idle
    }

    /// Reads the session's settings back from the server (after SET, RESET, set_config):
    /// they become this client's settings, replayed on whatever connection it gets next.
    /// Reading what took effect covers rolled-back SETs, SET LOCAL and RESET alike.
    async fn capture_settings(&mut self) -> Result<(), SessionError> {
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        let sql = hidden::session_settings_sql(&self.custom_settings);
        match server.fetch_pairs(&sql).await {
            Ok(Ok(settings)) => {
                let settings = Arc::new(settings);
                server.applied = Some(Arc::clone(&settings));
                self.session.settings = settings;
                self.settings_changed = false;
                Ok(())
            }
            Ok(Err(fields)) => {
                server.broken = true;
                Err(SessionError::StartupParameter(fields))
            }
            Err(e) => {
                server.broken = true;
                Err(e.into())
            }
        }
    }

    /// A pinned session whose transaction may have removed its session state: if none is
    /// left on the server (temporary objects, advisory locks, LISTEN, held cursors, SQL
    /// prepared statements), it no longer needs its connection.
    async fn check_unpin(&mut self) -> Result<(), SessionError> {
        self.may_unpin = false;
        let Some(reason) = self.pin.filter(|r| r.is_state()) else {
            return Ok(());
        };
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        match server.fetch_pairs(hidden::SESSION_STATE).await {
            Ok(Ok(rows)) if rows.iter().all(|(_, count)| count == "0") => {
                tracing::debug!(reason = reason.as_str(), "session state gone: unpinned");
                metrics::unpinned(reason);
                self.pin = None;
                Ok(())
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(fields)) => {
                server.broken = true;
                Err(SessionError::StartupParameter(fields))
            }
            Err(e) => {
                server.broken = true;
                Err(e.into())
            }
        }
    }

    /// Gives the server connection back to the pool as it is: its settings are tracked in
    /// `applied`, and nothing else of the session's can be on it (or it would be pinned).
    fn detach(&mut self) {
        if let Some(mut server) = self.server.take() {
            self.session.cancel_key.set_target(None);
            server.needs_reset = false;
        }
        if let Some(statements) = self.statements.as_mut() {
            statements.detached();
        }
    }

    /// Writes what each side will take right now without waiting: most replies leave
    /// here, saving a trip around the select loop.
    fn write_ahead(&mut self) -> Option<End> {
        if let Some(server) = self.server.as_deref() {
            if !self.to_server.is_empty() {
                match server.writer.try_write(&self.to_server) {
                    Ok(n) => self.to_server.advance(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return Some(End::ServerLost),
                }
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
            && self.server.as_deref().is_none_or(|s| s.read_buf.is_empty())
            && self.server_stream.at_boundary()
            && self.client_stream.at_boundary()
    }

    /// Streams client messages towards the server. Stops in front of Terminate.
    /// Statements that leave state in the server session pin it.
    fn take_client_frames(&mut self) -> Result<Flow, SessionError> {
        let now = Instant::now();
        let state = &mut self.state;
        let mut pinned = None;
        let mut effects = Effects::default();
        // Transaction pooling reads every statement (a pinned session may be freed later and
        // must know its settings); session pooling reads none.
        let watching = self.statements.is_some();
        // The lexer reads strings as standard_conforming_strings = on does.
        let backslash_strings = self
            .session
            .client_params
            .get("standard_conforming_strings")
            .is_some_and(|v| v == "off");
        let mut statements = self
            .statements
            .as_mut()
            .zip(self.server.as_deref_mut().map(|s| &mut s.statements));
        let reads_parse = statements.is_some();
        let flow = self.client_stream.pump(
            &mut self.from_client,
            &mut self.to_server,
            |tag| match Frontend::from_tag(tag) {
                Frontend::Query => watching,
                Frontend::Parse => watching || reads_parse,
                _ => false,
            },
            |tag, len, body, complete| {
                let kind = Frontend::from_tag(tag);
                if kind == Frontend::Terminate {
                    return Flow::Stop;
                }
                // Decided first: NeedMore means this message comes back with more bytes,
                // and nothing below may happen twice.
                let flow = match statements.as_mut() {
                    Some((client, server)) => client.on_client(tag, len, body, complete, server),
                    None => Flow::Forward,
                };
                if flow == Flow::NeedMore {
                    return flow;
                }
                if matches!(
                    kind,
                    Frontend::Query | Frontend::Execute | Frontend::FunctionCall
                ) {
                    metrics::get().queries.increment(1);
                }
                if watching {
                    let found = statement_effects(kind, body, complete && !backslash_strings);
                    pinned = pinned.or(found.pin);
                    effects.settings |= found.settings;
                    effects.may_clear |= found.may_clear;
                    effects.custom_settings.extend(found.custom_settings);
                    if found.drops_statements {
                        if let Some((client, server)) = statements.as_mut() {
                            client.forget_all();
                            server.clear();
                        }
                    }
                }
                state.on_frontend(kind, now);
                flow
            },
        )?;
        self.settings_changed |= effects.settings;
        self.custom_settings.extend(effects.custom_settings);
        self.may_unpin |= effects.may_clear;
        if let (Some(reason), None) = (pinned, self.pin) {
            tracing::debug!(
                reason = reason.as_str(),
                "session pinned to its server connection"
            );
            metrics::pinned(reason);
            self.pin = Some(reason);
        }
        Ok(flow)
    }

    /// Streams server messages towards the client (or nowhere, when `discard`), tracking
    /// ReadyForQuery status, parameters and errors, and swallowing hidden statements' replies.
    fn take_server_frames(&mut self, discard: bool) -> Result<(), SessionError> {
        let now = Instant::now();
        let Some(ServerConnection {
            read_buf,
            params,
            status,
            statements: server_statements,
            ..
        }) = self.server.as_deref_mut()
        else {
            return Ok(());
        };
        let statements = &mut self.statements;
        let state = &mut self.state;
        let said_fatal = &mut self.server_said_fatal;
        let client_params = &mut self.session.client_params;
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
                |tag, _len, body, complete| {
                    let kind = Backend::from_tag(tag);
                    let mut ready = None;
                    match kind {
                        Backend::ReadyForQuery if complete => {
                            ready = message::ready_status(body);
                            if let Some(s) = ready {
                                *status = s;
                            }
                        }
                        Backend::ParameterStatus if complete => {
                            if let Some((name, value)) = message::parameter_status(body) {
                                client_params.insert(name.clone(), value.clone());
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
                    let flow = match statements.as_mut() {
                        Some(statements) => statements.on_server(tag, server_statements),
                        None => Flow::Forward,
                    };
                    if let Event::TransactionEnded(duration) = state.on_backend(kind, ready, now) {
                        let m = metrics::get();
                        m.transactions.increment(1);
                        m.transaction_duration.record(duration);
                    }
                    flow
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
            let Some(server) = self.server.as_deref_mut() else {
                return;
            };
            if server.writer.write_buf(&mut self.to_server).await.is_err() {
                return;
            }
        }
        while self.state.pending_ready > 0 {
            let Some(conn) = self.server.as_deref_mut() else {
                return;
            };
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

/// What a client message does to the session beyond its transaction.
fn statement_effects(kind: Frontend, body: &[u8], complete: bool) -> Effects {
    let unreadable = Effects {
        pin: Some(PinReason::Unreadable),
        ..Effects::default()
    };
    match kind {
        Frontend::Query | Frontend::Parse if !complete => unreadable,
        // Fast-path calls by OID: set_config and advisory locks may hide behind one.
        Frontend::FunctionCall => unreadable,
        Frontend::Query => effects::effects(cstr(body).map_or(body, |(sql, _)| sql)),
        Frontend::Parse => match cstr(body) {
            Some((_, rest)) => effects::effects(cstr(rest).map_or(rest, |(sql, _)| sql)),
            None => Effects::default(),
        },
        _ => Effects::default(),
    }
}

/// The client has sent (the start of) a message that needs a server connection.
fn starts_a_request(buf: &[u8]) -> bool {
    buf.len() >= 5 && Frontend::from_tag(buf[0]) != Frontend::Terminate
}

async fn read_server(
    server: Option<(&mut OwnedReadHalf, &mut BytesMut)>,
) -> std::io::Result<usize> {
    match server {
        Some((reader, buf)) => reader.read_buf(buf).await,
        None => std::future::pending().await,
    }
}

async fn write_server(
    writer: Option<&mut OwnedWriteHalf>,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    match writer {
        Some(writer) => writer.write_buf(buf).await,
        None => std::future::pending().await,
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
    server.applied = None;
    server.statements.clear();
    clean
}
