//! Taking a connection where routing wants it: a replica fit for the session's reads
//! (another one, or the primary, when one cannot be reached), or the primary; and the
//! bookkeeping that keeps reads fresh (the session's WAL floor) and statements bounded.

use super::frames::Taken;
use super::pooling::fetch_hidden;
use super::routing::{Role, Want};
use super::Relay;
use crate::backend::cancel::{send_cancel, CancelTarget};
use crate::backend::monitor::Lsn;
use crate::backend::{PoolError, PooledServer};
use crate::metrics;
use crate::protocol::frame::{header, MAX_FRAME_LEN, MAX_INSPECTED_LEN};
use crate::session::error::SessionError;

/// What a routing barrier allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lift {
    No,
    /// The input goes on.
    Yes,
    /// The held connection can be given back first: go round the loop again.
    Release,
}

/// The primary's WAL insert position: at or past the end of every commit record written
/// so far, so a replica that has replayed it shows this session everything it committed.
const WAL_POSITION: &str = "SELECT 'lsn', pg_catalog.pg_current_wal_insert_lsn()::text";

impl Relay {
    /// Takes client messages; whenever routing stops them for want of a connection, takes
    /// one where it asks and goes on. True when the client sent Terminate.
    pub(super) async fn take_frames_attaching(&mut self) -> Result<bool, SessionError> {
        // One place waits for the connection, wherever the need for one comes from.
        let mut attach = self.attaches_first()?;
        loop {
            if std::mem::take(&mut attach) {
                if let Err(taken) = self.attach_now() {
                    Box::pin(self.attach(taken)).await?;
                }
            }
            match self.take_client_frames()? {
                Taken::Terminate => return Ok(true),
                Taken::Stopped if self.server.is_none() && self.wants_connection() => {
                    attach = true;
                }
                Taken::Stopped | Taken::All => return Ok(false),
            }
        }
    }

    /// With no choice of server to make (no replicas, no rules), a transaction's first
    /// message needs the primary whatever it says: the connection is taken before the
    /// message is read, so that it passes once instead of being stopped and read again.
    /// Only for a whole message in the buffer (a part of one would pass nothing, and the
    /// connection would go straight back) and not for Terminate.
    fn attaches_first(&mut self) -> Result<bool, SessionError> {
        let Some(routing) = self.routing.as_mut() else {
            return Ok(false);
        };
        if self.server.is_some() || !self.state.is_idle() {
            return Ok(false);
        }
        let whole = match header(&self.from_client, MAX_FRAME_LEN) {
            Ok(Some((tag, len))) => {
                tag != b'X' && len <= MAX_INSPECTED_LEN && self.from_client.len() >= len
            }
            // A malformed header is reported by the normal path.
            Ok(None) | Err(_) => false,
        };
        if !whole {
            return Ok(false);
        }
        // The transaction is judged by the rules in force now (as `take_client_frames`
        // would have them).
        routing.refresh(&self.session.proxy)?;
        Ok(routing.nothing_to_route() && routing.want.is_none() && !routing.barrier)
    }

    fn wants_connection(&self) -> bool {
        self.routing.as_ref().is_some_and(|r| r.want.is_some())
    }

    /// Checks out a server connection for the next transaction, where routing wants it.
    pub(super) async fn checkout(&mut self) -> Result<PooledServer, SessionError> {
        let Some(routing) = self.routing.as_mut() else {
            return Ok(Box::pin(self.session.pools.primary.checkout()).await?);
        };
        let want = routing.want.take().unwrap_or(Want::Primary);
        tracing::trace!(?want, "taking a server connection");
        if let Want::Read { any } = want {
            if let Some((server, index)) = Box::pin(self.checkout_replica(any)).await? {
                if let Some(routing) = self.routing.as_mut() {
                    routing.held(Role::Replica(index));
                }
                return Ok(server);
            }
        }
        let Some(routing) = self.routing.as_mut() else {
            return Err(SessionError::ServerLost);
        };
        let server = routing.pools.primary.checkout().await?;
        routing.held(Role::Primary);
        Ok(server)
    }

    /// A replica connection for a read, trying each fit replica once; None: use the primary.
    async fn checkout_replica(
        &mut self,
        any: bool,
    ) -> Result<Option<(PooledServer, usize)>, SessionError> {
        let Some(routing) = self.routing.as_ref() else {
            return Ok(None);
        };
        let Some(health) = routing.health().cloned() else {
            return Ok(None);
        };
        let floor = routing.read_floor();
        for _ in 0..health.replicas.len() {
            let Some(index) = health.pick_replica(floor) else {
                if floor > Lsn(0) && health.pick_replica(Lsn(0)).is_some() {
                    metrics::fresh_read_fallback();
                }
                return Ok(None);
            };
            let weight: u32 = health
                .replicas
                .iter()
                .filter(|r| r.is_usable())
                .map(|r| r.weight)
                .sum();
            if routing.read_on_primary(any, weight) {
                return Ok(None);
            }
            let Some(pool) = routing.pools.replicas.get(index) else {
                return Ok(None);
            };
            match pool.checkout().await {
                Ok(server) => return Ok(Some((server, index))),
                Err(PoolError::Backend(error)) => {
                    tracing::warn!(pool = %pool.name, error = %error, "replica unreachable: read goes elsewhere");
                    health.replicas[index].report_failure();
                    metrics::read_retried("connect");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// After a write transaction on the primary: the session's floor becomes the primary's
    /// WAL position now, one hidden round trip on the connection it still holds.
    pub(super) async fn read_floor_lsn(&mut self) -> Result<(), SessionError> {
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        let rows = fetch_hidden(server, WAL_POSITION).await?;
        if let Some(routing) = self.routing.as_mut() {
            if let Some(lsn) = rows.first().and_then(|(_, v)| v.parse::<Lsn>().ok()) {
                routing.floor = routing.floor.max(lsn);
                let defined = std::mem::take(&mut routing.functions_defined);
                if let Some(health) = routing.health() {
                    health.note_write(lsn);
                    if defined {
                        health.request_refresh();
                    }
                }
            }
            routing.txn_wrote = false;
        }
        Ok(())
    }

    /// A routing barrier whose earlier replies have all arrived: the input may go on, on
    /// the connection held if its transaction continues, else on a new one.
    pub(super) fn barrier_lifted(&mut self) -> Lift {
        let settled = self.state.pending_ready == 0
            && !self.state.unsynced
            && self.to_server.is_empty()
            && self.server_stream.at_boundary()
            && self.server.as_deref().is_none_or(|s| s.read_buf.is_empty());
        let Some(routing) = self.routing.as_mut() else {
            return Lift::No;
        };
        if settled {
            routing.deadline = None;
        }
        if !routing.barrier || !settled {
            return Lift::No;
        }
        // A connection kept only for an unnamed statement never executed: the write
        // waiting is a Parse that replaces it, so the connection may go.
        let idle = self
            .server
            .as_deref()
            .is_some_and(|s| s.status == crate::protocol::TxStatus::Idle);
        if idle && self.pin.is_none() {
            if let Some(statements) = self.statements.as_mut() {
                if statements.abandon_unnamed() {
                    return Lift::Release;
                }
            }
        }
        routing.barrier = false;
        routing.pass_barrier = self.server.is_some();
        Lift::Yes
    }

    /// A rule's statement timeout ran out: cancel what runs, as statement_timeout would.
    pub(super) async fn statement_timed_out(&mut self) {
        if let Some(routing) = self.routing.as_mut() {
            routing.deadline = None;
        }
        let Some(server) = self.server.as_deref() else {
            return;
        };
        let target = CancelTarget::of(server);
        metrics::statement_timeout();
        let _ = send_cancel(&target).await;
    }
}
