//! Transaction pooling: taking a server connection when a transaction starts, giving it
//! back when it ends, carrying the client's settings across, and ending pins.

use std::sync::Arc;

use super::routing::{Role, Want};
use super::Relay;
use crate::backend::{PooledServer, ServerConnection};
use crate::metrics;
use crate::protocol::message::ErrorFields;
use crate::protocol::{reply, TxStatus};
use crate::session::error::SessionError;
use crate::session::hidden;
use crate::session::statements::Statements;

impl Relay {
    /// Takes a server connection for the transaction the client is starting, first giving
    /// it this client's settings if it carries others.
    /// (`server`: one `attach_now` took already.)
    pub(super) async fn attach(
        &mut self,
        server: Option<PooledServer>,
    ) -> Result<(), SessionError> {
        let want = self.routing.as_ref().and_then(|r| r.want);
        let mut server = match server {
            Some(server) => server,
            None => self.checkout().await?,
        };
        // A replica that fails while being given the client's settings is reported and
        // the transaction goes elsewhere: nothing of it has run yet.
        while let Err(e) = self.reconcile(&mut server).await {
            let Some(routing) = self.routing.as_mut().filter(|r| r.on_replica()) else {
                return Err(e);
            };
            // A setting the replica refuses is this session's affair, not the replica's
            // health: that session's transaction goes to the primary.
            if let SessionError::HiddenStatement(_) = e {
                tracing::debug!(error = %e, "a replica refused the session's settings: primary");
                routing.released();
                routing.want = Some(super::routing::Want::Primary);
            } else {
                tracing::warn!(error = %e, "replica failed before the transaction started: it goes elsewhere");
                routing.replica_failed();
                routing.want = want;
            }
            drop(server);
            metrics::read_retried("replica_lost");
            server = Box::pin(self.checkout()).await?;
        }
        // (Idle in the pool, it holds no statement of a session's own: all can go.)
        if server.statements.stale() {
            Box::pin(refresh_statements(&mut server, "DEALLOCATE ALL")).await?;
        }
        // The transaction the proxy opened for the client begins here.
        let began = self
            .routing
            .as_mut()
            .is_some_and(|r| std::mem::take(&mut r.deferred_begin));
        if began {
            Box::pin(run_hidden(&mut server, "BEGIN")).await?;
        }
        self.attached(server, began);
        Ok(())
    }

    /// The usual start of a transaction, with nothing to wait for: a warm connection of the
    /// primary that already carries this client's settings and statements. Done outside
    /// any future (`attach`'s, nested in the relay's, would be built in the session's
    /// memory at every transaction). Otherwise what `attach` must go on with: the
    /// connection taken, if one was.
    pub(super) fn attach_now(&mut self) -> Result<(), Option<PooledServer>> {
        let routing = self.routing.as_mut();
        let pool = match &routing {
            Some(routing) if matches!(routing.want, None | Some(Want::Primary)) => {
                &routing.pools.primary
            }
            Some(_) => return Err(None),
            None => &self.session.pools.primary,
        };
        let mut server = pool.checkout_now().ok_or(None)?;
        // (What `checkout` does with a primary connection.)
        if let Some(routing) = routing {
            routing.want = None;
            routing.held(Role::Primary);
        }
        let deferred_begin = self.routing.as_ref().is_some_and(|r| r.deferred_begin);
        if deferred_begin || server.statements.stale() || self.settings_sql(&mut server).is_some() {
            return Err(Some(server));
        }
        self.attached(server, false);
        Ok(())
    }

    /// `server` is the session's now (`began`: the proxy opened the client's transaction on it).
    fn attached(&mut self, server: PooledServer, began: bool) {
        // Reported values that differ from what the client was told, it hears about
        // (compared only when this connection reports another set than the last one).
        if Some(server.params.digest()) != self.session.params_seen {
            self.tell_params(&server);
        }
        self.session.cancel_key.point_at(&server);
        self.server = Some(server);
        // A transaction opened here cannot be sent again elsewhere as it stands.
        if !began {
            self.arm_replay();
        }
    }

    /// The statement that gives `server` this client's settings; None when it carries
    /// them already (from then on known by address).
    fn settings_sql(&self, server: &mut ServerConnection) -> Option<String> {
        let wanted = &self.session.settings;
        if server
            .applied
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a, wanted))
        {
            return None;
        }
        let sql = hidden::reconcile_settings(server.applied.as_deref(), wanted);
        if sql.is_none() {
            // Equal settings in another copy.
            server.applied = Some(Arc::clone(wanted));
        }
        sql
    }

    /// Tells the client each parameter `server` reports with another value than the client
    /// was told.
    fn tell_params(&mut self, server: &ServerConnection) {
        for (name, value) in &server.params {
            // A replica's own role is not the client's business: its session stays one
            // with the primary, as a direct connection would be.
            if name == "in_hot_standby" {
                continue;
            }
            if self.session.client_params.get(name) != Some(value) {
                reply::parameter_status(&mut self.to_client, name, value);
                self.session
                    .client_params
                    .insert(name.clone(), value.clone());
            }
        }
        self.session.params_seen = Some(server.params.digest());
    }

    /// Gives `server` this client's settings if it carries others. Run before the client's
    /// bytes and waited for: the client's statements must not run under another's settings.
    async fn reconcile(&mut self, server: &mut PooledServer) -> Result<(), SessionError> {
        let Some(sql) = self.settings_sql(server) else {
            return Ok(());
        };
        let on_replica = self.routing.as_ref().is_some_and(|r| r.on_replica());
        match try_hidden(server, &sql).await? {
            None => {
                server.applied = Some(Arc::clone(&self.session.settings));
                Ok(())
            }
            // The primary refuses a setting the session holds (a library loaded on this
            // connection since reserved the placeholder's prefix, say). The statement ran
            // in one implicit transaction: the connection is as it was. (A replica's
            // refusal sends the transaction to the primary instead: see `attach`.)
            Some(_) if !on_replica => Box::pin(self.reconcile_each(server)).await,
            Some(fields) => {
                server.broken = true;
                Err(SessionError::HiddenStatement(Box::new(fields)))
            }
        }
    }

    /// Gives `server` the session's settings one by one, dropping each it refuses from the
    /// session with a WARNING to the client: what PostgreSQL itself does when a library
    /// loaded later invalidates a placeholder setting ("..., removing it").
    async fn reconcile_each(&mut self, server: &mut PooledServer) -> Result<(), SessionError> {
        if server.applied.is_some() {
            run_hidden(server, hidden::RESET).await?;
            server.applied = None;
        }
        let mut kept = Vec::with_capacity(self.session.settings.len());
        for setting in self.session.settings.iter() {
            let Some(sql) = crate::session::params::set_config_sql(std::slice::from_ref(setting))
            else {
                continue;
            };
            match try_hidden(server, &sql).await? {
                None => kept.push(setting.clone()),
                Some(refused) => {
                    tracing::debug!(setting = %setting.0, code = %refused.code, "the server refused a session setting: dropped");
                    let message = format!("{}, removing it", refused.message);
                    reply::warning(&mut self.to_client, &refused.code, &message);
                }
            }
        }
        let kept = hidden::shared_settings(kept);
        server.applied = Some(Arc::clone(&kept));
        if let Some(statements) = self.statements.as_mut() {
            statements.set_search_path(&kept);
        }
        self.session.settings = kept;
        Ok(())
    }

    /// Transaction pooling, held connection: no transaction open, nothing in flight.
    pub(super) fn transaction_over(&self) -> bool {
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
    pub(super) async fn capture_settings(&mut self) -> Result<(), SessionError> {
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        let sql = hidden::session_settings_sql(&self.custom_settings);
        let mut settings = fetch_hidden(server, &sql).await?;
        // RESET took a startup setting back to the server's default; PostgreSQL takes a
        // session back to the value it connected with. So does the proxy.
        let reset: Vec<(String, String)> = self
            .session
            .startup_settings
            .iter()
            .filter(|(name, _)| !settings.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
            .cloned()
            .collect();
        if let Some(sql) = crate::session::params::set_config_sql(&reset) {
            run_hidden(server, &sql).await?;
            settings.extend(reset);
            settings.sort();
        }
        let settings = hidden::shared_settings(settings);
        server.applied = Some(Arc::clone(&settings));
        if let Some(statements) = self.statements.as_mut() {
            statements.set_search_path(&settings);
        }
        self.session.settings = settings;
        self.settings_changed = false;
        Ok(())
    }

    /// A pinned session whose transaction may have removed its session state: if none is
    /// left on the server (temporary objects, advisory locks, LISTEN, held cursors, SQL
    /// prepared statements), it no longer needs its connection.
    pub(super) async fn check_unpin(&mut self) -> Result<(), SessionError> {
        self.may_unpin = false;
        let Some(reason) = self.pin.filter(|r| r.is_state()) else {
            return Ok(());
        };
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        let state = fetch_hidden(server, hidden::SESSION_STATE).await?;
        if state.iter().all(|(_, count)| count == "0") {
            tracing::debug!(reason = reason.as_str(), "session state gone: unpinned");
            metrics::unpinned(reason);
            self.pin = None;
        }
        Ok(())
    }

    /// Gives the server connection back to the pool as it is: its settings are tracked in
    /// `applied`, and nothing else of the session's can be on it (or it would be pinned).
    pub(super) fn detach(&mut self) {
        if let Some(routing) = self.routing.as_mut() {
            routing.released();
        }
        if let Some(mut server) = self.server.take() {
            self.session.cancel_key.clear();
            server.needs_reset = false;
            // Idle in the pool, it needs no read buffer until its next user reads.
            crate::protocol::buffers::give_back(&mut server.read_buf);
        }
        if let Some(statements) = self.statements.as_mut() {
            statements.detached();
        }
    }
}

/// Deallocates the statements a changed result type made stale (see
/// `statements::plans_went_stale`), with `sql`, so that the next Parse parses again.
pub(super) async fn refresh_statements(
    server: &mut ServerConnection,
    sql: &str,
) -> Result<(), SessionError> {
    tracing::debug!(
        statements = server.statements.len(),
        "deallocating statements prepared before a result type changed"
    );
    run_hidden(server, sql).await?;
    server.statements.refreshed();
    Ok(())
}

/// Runs a hidden statement on a held connection; a failure breaks the connection.
async fn run_hidden(server: &mut ServerConnection, sql: &str) -> Result<(), SessionError> {
    match try_hidden(server, sql).await? {
        None => Ok(()),
        Some(fields) => {
            server.broken = true;
            Err(SessionError::HiddenStatement(Box::new(fields)))
        }
    }
}

/// Runs a hidden statement on a held connection: the server's error, if it refused it and
/// the connection is idle again (usable as it was); any other failure breaks it.
async fn try_hidden(
    server: &mut ServerConnection,
    sql: &str,
) -> Result<Option<ErrorFields>, SessionError> {
    match server.run_hidden(sql).await {
        Ok(None) => Ok(None),
        Ok(Some(fields)) if server.status == TxStatus::Idle => Ok(Some(fields)),
        Ok(Some(fields)) => {
            server.broken = true;
            Err(SessionError::HiddenStatement(Box::new(fields)))
        }
        Err(e) => {
            server.broken = true;
            Err(e.into())
        }
    }
}

/// Runs a hidden two-column query on a held connection; a failure breaks the connection.
pub(super) async fn fetch_hidden(
    server: &mut ServerConnection,
    sql: &str,
) -> Result<Vec<(String, String)>, SessionError> {
    match server.fetch_pairs(sql).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(fields)) => {
            server.broken = true;
            Err(SessionError::HiddenStatement(Box::new(fields)))
        }
        Err(e) => {
            server.broken = true;
            Err(e.into())
        }
    }
}
