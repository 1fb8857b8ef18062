//! Reading messages as they stream through: relay state, pins and settings from client
//! statements, statement-name mapping, and what the server reports.

use std::time::Instant;

use super::Relay;
use crate::backend::ServerConnection;
use crate::metrics;
use crate::protocol::frame::{c_text, cstr, Flow};
use crate::protocol::message::{self, Backend, Frontend};
use crate::protocol::sqlstate::class_label;
use crate::protocol::TxStatus;
use crate::session::error::SessionError;
use crate::session::state::Event;
use crate::session::statements::{
    bind_names, is_changed_result_type, plans_went_stale, Statements,
};
use crate::sql::effects::{self, Effects, PinReason};

use super::judge::refusal_sql;
use super::routing::{self, Context, Step};

/// How far `take_client_frames` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// Every complete message went on.
    All,
    /// The client sent Terminate.
    Terminate,
    /// Routing stopped the input: a connection must be taken or changed first.
    Stopped,
}

impl Relay {
    /// Streams client messages towards the server. Stops in front of Terminate.
    /// Statements that leave state in the server session pin it.
    pub(super) fn take_client_frames(&mut self) -> Result<Taken, SessionError> {
        self.note_replay_names();
        let state = &mut self.state;
        let mut pinned = None;
        let mut effects = Effects::default();
        let mut terminated = false;
        let mut routed_stop = false;
        // The proxy answered a message itself: what was taken is no longer a request to
        // keep for sending again.
        let mut answered_here = false;
        let mut refusal: Option<String> = None;
        // Transaction pooling reads every statement (a pinned session may be freed later and
        // must know its settings); session pooling reads none.
        let watching = self.statements.is_some();
        // The lexer reads strings as standard_conforming_strings = on does.
        let backslash_strings = self.session.client_params.backslash_strings();
        let held = self.server.is_some();
        if let (false, Some(routing)) = (held, self.routing.as_mut()) {
            // A transaction is about to start: it is judged by the rules in force now.
            routing.refresh(&self.session.proxy)?;
        }
        let application_name = self.session.client_params.application_name();
        let before = self.replay.is_some().then(|| self.from_client.clone());
        if let Some(routing) = self.routing.as_mut() {
            routing.scan_later_writes(
                &self.from_client,
                self.statements.as_ref(),
                application_name,
            );
        }
        // Read only when there is a choice of server to make.
        let routes = self.routing.as_ref().is_some_and(|r| !r.nothing_to_route());
        let setting = |wanted: &str, is: &str| {
            routes
                && self
                    .session
                    .settings
                    .iter()
                    .any(|(name, value)| name == wanted && value.eq_ignore_ascii_case(is))
        };
        let serializable = setting("default_transaction_isolation", "serializable");
        let read_only = setting("default_transaction_read_only", "on");
        let routing = &mut self.routing;
        let to_client = &mut self.to_client;
        let mut client_statements = self.statements.as_mut();
        let mut server_statements = self.server.as_deref_mut().map(|s| &mut s.statements);
        let reads_parse = client_statements.is_some() && server_statements.is_some();
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
                    terminated = true;
                    return Flow::Stop;
                }
                if let Some(routing) = routing.as_mut() {
                    let cx = Context {
                        held,
                        answered: state.pending_ready == 0 && !state.unsynced,
                        status: state.status,
                        application_name,
                        statements: client_statements.as_deref(),
                        serializable,
                        read_only,
                        unsynced: state.unsynced,
                    };
                    let step = routing.on_message(kind, body, complete, &cx, to_client);
                    if let Some(flow) = routing::flow(&step) {
                        routed_stop = flow == Flow::Stop;
                        answered_here |= flow == Flow::Drop;
                        return flow;
                    }
                    if let Step::Refuse(code, message) = step {
                        refusal = Some(refusal_sql(&code, &message));
                    }
                }
                // Decided first: NeedMore means this message comes back with more bytes,
                // and nothing below may happen twice.
                let flow = match (
                    client_statements.as_deref_mut(),
                    server_statements.as_deref_mut(),
                    refusal.take(),
                ) {
                    (Some(client), Some(server), Some(sql)) if kind == Frontend::Bind => {
                        client.bind_refused(body, sql.as_bytes(), server)
                    }
                    (client, server, Some(sql)) => {
                        if let (Some(client), Some(server)) = (client, server) {
                            let _ = client.on_client(tag, len, body, complete, server);
                        }
                        Flow::Replace {
                            skip: len,
                            with: query_message(&sql),
                        }
                    }
                    (Some(client), Some(server), None) => {
                        client.on_client(tag, len, body, complete, server)
                    }
                    _ => Flow::Forward,
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
                    let readable = complete && !backslash_strings;
                    let mut found = statement_effects(kind, body, readable);
                    if let (true, Some(client)) = (readable, client_statements.as_deref_mut()) {
                        found = effects_of_named(client, kind, body, found);
                    }
                    pinned = stronger_pin(pinned, found.pin);
                    effects.settings |= found.settings;
                    effects.may_clear |= found.may_clear;
                    effects.custom_settings.extend(found.custom_settings);
                    effects.needs_unused = effects.needs_unused.take().or(found.needs_unused);
                    effects.reshapes |= found.reshapes;
                    // DISCARD ALL / DEALLOCATE ALL drop statements once the server says
                    // they are done (`take_server_frames`), not as they are sent.
                }
                state.on_frontend(kind, Instant::now);
                flow
            },
        )?;
        if let Some(before) = before {
            self.keep_for_replay(&before);
        }
        if answered_here {
            self.replay = None;
        }
        if let Some(database) = effects.needs_unused {
            self.close_idle_connections_to(&database);
        }
        self.settings_changed |= effects.settings;
        self.reshaped |= effects.reshapes;
        self.custom_settings.extend(effects.custom_settings);
        self.may_unpin |= effects.may_clear;
        let before = self.pin;
        if let Some(reason) = stronger_pin(self.pin, pinned).filter(|r| Some(*r) != before) {
            if let Some(old) = before {
                metrics::unpinned(old);
            }
            tracing::debug!(
                reason = reason.as_str(),
                "session pinned to its server connection"
            );
            metrics::pinned(reason);
            self.pin = Some(reason);
        }
        Ok(match flow {
            Flow::Stop if terminated => Taken::Terminate,
            Flow::Stop if routed_stop => Taken::Stopped,
            _ => Taken::All,
        })
    }

    /// Before a statement that needs `database` unused (DROP DATABASE, a copy of it as a
    /// template): the pools' idle connections to it close, as a direct client's would
    /// not be there. (The statement is not sent yet; PostgreSQL waits a few seconds for
    /// sessions that are ending.) Connections other sessions hold stay, and are reported
    /// by the server as they would be.
    fn close_idle_connections_to(&self, database: &str) {
        let snapshot = self.session.proxy.snapshot();
        let closed: usize = snapshot
            .pools
            .iter()
            .filter(|pool| pool.target.database == database)
            .map(|pool| pool.close_idle())
            .sum();
        tracing::debug!(
            database,
            closed,
            "closed idle server connections to a database a statement needs unused"
        );
    }

    /// Streams server messages towards the client (or nowhere, when `discard`), tracking
    /// ReadyForQuery status, parameters and errors, and swallowing hidden statements' replies.
    pub(super) fn take_server_frames(&mut self, discard: bool) -> Result<(), SessionError> {
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
        // A kept request (see `retry`): each batch's answer is judged by its first message.
        let armed = self.replay.is_some();
        let mut started = self.replay_started;
        let (mut answered, mut disarm) = (0, false);
        let mut retry = None;
        let client_params = &mut self.session.client_params;
        let params_seen = &mut self.session.params_seen;
        self.server_stream
            .pump(
                read_buf,
                &mut self.to_client,
                |tag| {
                    matches!(
                        Backend::from_tag(tag),
                        Backend::ReadyForQuery
                            | Backend::ParameterStatus
                            | Backend::ErrorResponse
                            | Backend::CommandComplete
                    )
                },
                |tag, _len, body, complete| {
                    // Rows and copy data change no state the proxy keeps (results stream
                    // through at one test per message).
                    if !armed && matches!(tag, b'D' | b'd') {
                        return Flow::Forward;
                    }
                    if retry.is_some() {
                        return Flow::Drop;
                    }
                    if armed && !started {
                        retry = super::retry::first_reply_retry(tag, body);
                        if retry.is_some() {
                            return Flow::Drop;
                        }
                        started = true;
                    }
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
                                *params_seen = None;
                                params.insert(name, value);
                            }
                        }
                        Backend::ErrorResponse => {
                            metrics::error(class_label(message::error_code(body)));
                            if statements.is_some() && is_changed_result_type(body) {
                                plans_went_stale();
                            }
                            *said_fatal =
                                body.starts_with(b"SFATAL\0") || body.starts_with(b"SPANIC\0");
                        }
                        _ => {}
                    }
                    let flow = match statements.as_mut() {
                        Some(statements) => {
                            if kind == Backend::CommandComplete && complete {
                                statements.on_command_complete(body, server_statements);
                            }
                            statements.on_server(tag, server_statements)
                        }
                        None => Flow::Forward,
                    };
                    if armed && ready.is_some() {
                        // A batch answered whole; the next may still be sent elsewhere,
                        // unless a transaction stays open on this server.
                        match ready == Some(TxStatus::Idle) {
                            true => (answered, started) = (answered + 1, false),
                            false => disarm = true,
                        }
                    }
                    if let Event::TransactionEnded(duration) =
                        state.on_backend(kind, ready, Instant::now)
                    {
                        let m = metrics::get();
                        m.transactions.increment(1);
                        m.transaction_duration.record(duration);
                    }
                    flow
                },
            )
            .map_err(|_| SessionError::ServerLost)?;
        if armed {
            self.replay_started = started;
            self.retry = retry;
            match disarm {
                true => self.replay = None,
                false => self.replay_answered(answered),
            }
        }
        if discard {
            self.to_client.clear();
        }
        Ok(())
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
        Frontend::Query => effects::effects(c_text(body)),
        Frontend::Parse => match cstr(body) {
            Some((_, rest)) => effects::effects(cstr(rest).map_or(rest, |(sql, _)| sql)),
            None => Effects::default(),
        },
        _ => Effects::default(),
    }
}

/// A named statement runs later, any number of times, seen only as Bind and Execute: its
/// Parse (read whole) marks it, pinning nothing (the connection it lands on may be a
/// replica's, and the statement has not run), and each Bind of it has the effects of its
/// text.
fn effects_of_named(
    client: &mut Statements,
    kind: Frontend,
    body: &[u8],
    mut found: Effects,
) -> Effects {
    match kind {
        Frontend::Parse => {
            if let Some((name, _)) = cstr(body).filter(|(name, _)| !name.is_empty()) {
                if found != Effects::default() {
                    client.mark_effectful(name);
                    found.pin = None;
                }
            }
            found
        }
        // (Most sessions have no such statement: their Binds are not read.)
        Frontend::Bind if client.has_effectful() => {
            match bind_names(body).and_then(|(_, name)| client.effectful_query(name)) {
                Some(sql) => effects::effects(sql),
                None => found,
            }
        }
        _ => found,
    }
}

/// Of two pin reasons, the one that cannot end wins over one a state check may end.
fn stronger_pin(current: Option<PinReason>, new: Option<PinReason>) -> Option<PinReason> {
    match (current, new) {
        (Some(c), Some(n)) if c.is_state() && !n.is_state() => Some(n),
        (None, n) => n,
        (c, _) => c,
    }
}

/// A Query message carrying `sql`.
fn query_message(sql: &str) -> bytes::BytesMut {
    use bytes::BufMut;
    let mut out = bytes::BytesMut::with_capacity(sql.len() + 6);
    out.put_u8(b'Q');
    out.put_i32((sql.len() + 5) as i32);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::statements::ServerStatements;

    /// The client parses `name` as `sql`; returns the effects the relay takes from it.
    fn parse(client: &mut Statements, name: &str, sql: &str) -> Effects {
        let body = [name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat();
        client.on_client(
            b'P',
            body.len() + 5,
            &body,
            true,
            &mut ServerStatements::default(),
        );
        let found = statement_effects(Frontend::Parse, &body, true);
        effects_of_named(client, Frontend::Parse, &body, found)
    }

    /// The effects the relay takes from a Bind of the client's statement `name`.
    fn bind(client: &mut Statements, name: &str) -> Effects {
        let body = [b"\0", name.as_bytes(), b"\0\0\0\0\0\0\0"].concat();
        let found = statement_effects(Frontend::Bind, &body, true);
        effects_of_named(client, Frontend::Bind, &body, found)
    }

    #[test]
    fn a_named_statement_has_its_effects_at_each_bind_and_pins_nothing_when_parsed() {
        let mut client = Statements::default();
        let set = parse(&mut client, "set", "SELECT set_config('app.x', $1, false)");
        assert!(set.settings && set.pin.is_none(), "{set:?}");
        let temp = parse(&mut client, "temp", "CREATE TEMP TABLE t (x int)");
        assert_eq!(temp.pin, None);
        assert_eq!(
            parse(&mut client, "plain", "SELECT $1::int"),
            Effects::default()
        );
        for _ in 0..2 {
            assert!(bind(&mut client, "set").settings);
            assert_eq!(
                bind(&mut client, "temp").pin,
                Some(PinReason::TemporaryObject)
            );
            assert_eq!(bind(&mut client, "plain"), Effects::default());
        }
        assert_eq!(bind(&mut client, "unknown"), Effects::default());
    }

    #[test]
    fn an_unnamed_statement_has_its_effects_when_parsed() {
        let mut client = Statements::default();
        let found = parse(&mut client, "", "CREATE TEMP TABLE t (x int)");
        assert_eq!(found.pin, Some(PinReason::TemporaryObject));
        assert!(!client.has_effectful());
        assert_eq!(bind(&mut client, ""), Effects::default());
    }
}
