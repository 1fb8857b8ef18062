//! The relay: one wait (`wait.rs`) over client bytes, server bytes, pending writes and shutdown.
//! Messages stream through as their original bytes; only headers (and the bodies of a few
//! small messages) are read. In transaction pooling the server connection is taken from
//! the pool when a transaction starts and given back when it ends.

mod frames;
mod judge;
mod pooling;
mod release;
mod retry;
mod routing;
mod targets;
mod wait;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use super::error::SessionError;
use super::state::RelayState;
use super::statements::Statements;
use crate::backend::{CancelKey, Params, PoolSet, PooledServer};
use crate::metrics;
use crate::protocol::buffers::give_back;
use crate::protocol::frame::Streamer;
use crate::proxy::{Proxy, Snapshot};
use crate::rules::PoolMode;
use crate::shutdown::Listener;
use crate::sql::effects::PinReason;
use crate::tls::ClientStream;
use release::release;
use routing::Routing;

/// Stop reading a side while this much is waiting to be written to the other.
const HIGH_WATER: usize = 1024 * 1024;
/// Stop reading a client whose messages routing holds back beyond this (room for the
/// largest message whose body is read whole, 1 MiB, and more).
const INPUT_LIMIT: usize = 2 * HIGH_WATER;
/// How long finishing a departed client's requests, or resetting a connection, may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last words to a client may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// `?` inside the relay loop of `Relay::run`: an error ends the loop, as the client's
/// protocol error or failed checkout.
macro_rules! or_end {
    ($relay:lifetime, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(e) => break $relay End::Failed(e),
        }
    };
}

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

/// What a session brings to the relay. In declaration order (`repr(C)`), the parts each
/// transaction reads first (see `Relay`).
#[repr(C)]
pub struct Session {
    /// The digest of the server parameters last compared with `client_params`; None once
    /// the client has been told a value since.
    pub params_seen: Option<u64>,
    pub cancel_key: CancelKey,
    pub proxy: Arc<Proxy>,
    /// The ParameterStatus values the client was given at startup.
    pub client_params: Params,
    /// Settings from the StartupMessage, applied to every server connection the session uses.
    pub settings: Arc<Vec<(String, String)>>,
    /// The rules the session started with, and its pools under them.
    pub snapshot: Arc<Snapshot>,
    pub pools: Arc<PoolSet>,
    /// The settings of the StartupMessage: what RESET goes back to.
    pub startup_settings: Arc<Vec<(String, String)>>,
    pub user: String,
    pub database: String,
}

/// Laid out in declaration order (`repr(C)`), what every transaction touches first: each
/// session's state is cold when its next message comes (the server, the other clients and
/// the kernel ran since), so the fewer cache lines it spans, the fewer misses per wake
/// (measured with benches/footprint.sh).
#[repr(C)]
pub struct Relay {
    state: RelayState,
    client_stream: Streamer,
    server_stream: Streamer,
    /// The server connection, while the session holds one.
    server: Option<PooledServer>,
    from_client: BytesMut,
    to_client: BytesMut,
    to_server: BytesMut,
    /// The client's connection, whole: read and written in turn by the one relay task
    /// (halves would put the socket's state behind an `Arc`, and TLS's behind a lock).
    client: ClientStream,
    /// The proxy's stop signal, polled at every wake.
    shutdown: Listener,
    /// Why this session keeps its server connection between transactions, if it does.
    pin: Option<PinReason>,
    /// Settings may have changed in this transaction: read them back before releasing.
    settings_changed: bool,
    /// A table, view or type may have changed shape in this transaction: every
    /// connection's statements of before are made stale when it ends.
    reshaped: bool,
    /// Session state may have been removed in this transaction: check before releasing.
    may_unpin: bool,
    /// TLS records written but not yet flushed.
    client_unflushed: bool,
    /// The server's last ErrorResponse was FATAL: it already told the client why it goes.
    server_said_fatal: bool,
    /// The answer to the kept request's first batch has started: it cannot be sent again.
    replay_started: bool,
    /// The replica's first answer asked for the read to go elsewhere.
    retry: Option<retry::Retry>,
    /// Read/write routing (transaction pooling only).
    routing: Option<Routing>,
    /// A read sent to a replica, kept until its answer starts, to send again elsewhere.
    replay: Option<BytesMut>,
    /// Statement names the kept request registered: forgotten if it is sent again.
    replay_names: Vec<Vec<u8>>,
    /// Named statements mapped to proxy-wide ones (transaction pooling only).
    statements: Option<Statements>,
    session: Session,
    /// The read timeout's timer, kept between wakes.
    timer: wait::Timer,
    /// Custom settings the client named: read back by name.
    custom_settings: BTreeSet<String>,
}

impl Relay {
    pub fn new(
        client: ClientStream,
        from_client: BytesMut,
        server: Option<PooledServer>,
        session: Session,
    ) -> Relay {
        let pin =
            (session.pools.primary.mode() == PoolMode::Session).then_some(PinReason::SessionMode);
        let routing = pin.is_none().then(|| {
            let mut routing = Routing::new(
                Arc::clone(&session.snapshot),
                Arc::clone(&session.pools),
                &session.user,
                &session.database,
            );
            if server.is_some() {
                routing.held(routing::Role::Primary);
            }
            routing
        });
        let statements = pin.is_none().then(|| {
            let mut statements = Statements::default();
            statements.set_search_path(&session.settings);
            statements
        });
        Relay {
            shutdown: session.proxy.shutdown.listen(),
            client,
            from_client,
            to_client: BytesMut::new(),
            to_server: BytesMut::new(),
            server,
            session,
            state: RelayState::default(),
            statements,
            settings_changed: false,
            reshaped: false,
            custom_settings: BTreeSet::new(),
            may_unpin: false,
            pin,
            client_unflushed: false,
            client_stream: Streamer::default(),
            server_stream: Streamer::default(),
            server_said_fatal: false,
            routing,
            replay: None,
            retry: None,
            replay_names: Vec::new(),
            replay_started: false,
            timer: wait::Timer::default(),
        }
    }

    /// Relays until either side ends, returns the server connection, then says goodbye.
    /// (The relay loop is written here rather than in a function of its own: a nested
    /// `async fn` would add a future whose state is one more cache line per wake.)
    pub async fn run(mut self) {
        let mut shutting_down = self.shutdown.is_fired();
        // The client may have sent requests along with its last authentication message.
        let mut take = true;
        // The server connection failed, or a replica asked for the read to go elsewhere.
        let mut lost: Option<retry::Retry> = None;
        // (The session starts with its server attached, unless its login was answered
        // while every connection was busy: its first transaction then takes one.)
        // Each step waits at one place only, at the top of the loop: the arms below set
        // `take` or `lost`. Steps that rarely run are boxed, so the session's future and
        // its code stay small.
        let end = 'relay: loop {
            if let Some(retry) = lost.take() {
                if !or_end!('relay, Box::pin(self.retry_read(retry)).await) {
                    break 'relay End::ServerLost;
                }
                take = true;
            }
            if std::mem::take(&mut take) && or_end!('relay, self.take_frames_attaching().await) {
                break 'relay End::Terminated;
            }
            if self.server.is_none() && !self.to_server.is_empty() {
                or_end!('relay, Box::pin(self.attach(None)).await);
            }
            match self.write_ahead() {
                Some(End::ServerLost) => {
                    lost = Some(retry::Retry::Lost);
                    continue;
                }
                Some(end) => break 'relay end,
                None => {}
            }
            if self.transaction_over() {
                // (The hidden round trips here leave the transaction over.)
                if self.may_unpin {
                    or_end!('relay, Box::pin(self.check_unpin()).await);
                }
                if std::mem::take(&mut self.reshaped) {
                    crate::session::statements::plans_went_stale();
                }
                // A pinned session's connection stays: its stale statements go here,
                // by name (its own SQL-level ones stay).
                if let (Some(_), Some(server)) = (self.pin, self.server.as_deref_mut()) {
                    if server.statements.stale() {
                        let sql = server.statements.deallocate_each_sql();
                        or_end!('relay, Box::pin(pooling::refresh_statements(server, &sql)).await);
                    }
                }
                if self.routing.as_ref().is_some_and(Routing::needs_floor) {
                    or_end!('relay, Box::pin(self.read_floor_lsn()).await);
                }
                self.pass_notifications();
                // Transaction pooling: over and not pinned, the connection goes back.
                if self.pin.is_none() {
                    if self.settings_changed {
                        or_end!('relay, Box::pin(self.capture_settings()).await);
                        self.pass_notifications();
                    }
                    self.detach();
                }
            }
            match self.barrier_lifted() {
                targets::Lift::No => {}
                targets::Lift::Release => continue,
                targets::Lift::Yes => {
                    take = true;
                    continue;
                }
            }
            if shutting_down && self.is_quiet() {
                break 'relay End::Shutdown;
            }
            match std::future::poll_fn(|cx| self.poll_wake(cx, shutting_down)).await {
                wait::Wake::TimedOut => Box::pin(self.statement_timed_out()).await,
                wait::Wake::Shutdown => shutting_down = true,
                wait::Wake::ServerRead(read) => {
                    let failed = match read {
                        Ok(0) | Err(_) => true,
                        Ok(_) => self.take_server_frames(false).is_err(),
                    };
                    lost = if failed {
                        Some(retry::Retry::Lost)
                    } else {
                        self.retry
                    };
                }
                wait::Wake::ServerWritten(written) => {
                    if written.is_err() {
                        lost = Some(retry::Retry::Lost);
                    }
                }
                wait::Wake::ClientWritten(written) => {
                    if written.is_err() {
                        break 'relay End::ClientGone;
                    }
                }
                wait::Wake::ClientRead(read) => match read {
                    Ok(0) | Err(_) => break 'relay End::ClientGone,
                    Ok(_) => take = true,
                },
            }
        };
        Box::pin(self.finish(end)).await;
    }

    /// Finishes what a departing client asked for, returns the server connection and
    /// says goodbye.
    async fn finish(&mut self, end: End) {
        if matches!(end, End::Terminated) && self.server.is_some() {
            let _ = tokio::time::timeout(RESET_TIMEOUT, Box::pin(self.finish_requests())).await;
        }
        self.session.cancel_key.clear();
        if let Some(server) = self.server.take() {
            let mid_message = !self.server_stream.at_boundary() || !self.to_server.is_empty();
            Box::pin(release(server, &self.state, mid_message)).await;
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
        match &end {
            End::Failed(e) => tracing::debug!(error = %e, "session ended with an error"),
            other => tracing::debug!(end = ?other, "session ended"),
        }
        if let Some(reply) = reply {
            metrics::error(reply.code.class());
            reply.encode(&mut self.to_client);
        }
        let writer = &mut self.client;
        let to_client = &self.to_client;
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
            writer.write_all(to_client).await?;
            writer.shutdown().await
        })
        .await;
    }

    /// Writes what each side will take right now without waiting: most replies leave
    /// here, saving a trip around the wait loop.
    fn write_ahead(&mut self) -> Option<End> {
        if let Some(server) = self.server.as_deref() {
            if !self.to_server.is_empty() {
                match server.stream.try_write(&self.to_server) {
                    Ok(n) => {
                        self.to_server.advance(n);
                        give_back(&mut self.to_server);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return Some(End::ServerLost),
                }
            }
        }
        if !self.to_client.is_empty() {
            match self.client.try_write(&self.to_client) {
                Ok(n) => {
                    self.to_client.advance(n);
                    give_back(&mut self.to_client);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Some(End::ClientGone),
            }
        }
        None
    }

    /// Passes on the notifications that came while the proxy's own statements ran on the
    /// connection (a LISTENing session is pinned: they are this client's).
    fn pass_notifications(&mut self) {
        if let Some(server) = self.server.as_deref_mut() {
            if !server.notifications.is_empty() {
                self.to_client.extend_from_slice(&server.notifications);
                server.notifications.clear();
            }
        }
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
}
