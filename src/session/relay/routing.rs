//! Read/write routing inside a session under transaction pooling: each transaction goes
//! where its first statement may run (primary, or a replica that has replayed this
//! session's writes), and statements the proxy answers itself (route settings, EXPLAIN
//! ROUTE, blocked statements) never reach a server.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::judge::{Answer, Judged, Local};

use bytes::BytesMut;

use crate::backend::monitor::{ClusterHealth, Lsn};
use crate::backend::PoolSet;
use crate::metrics;
use crate::protocol::frame::{cstr, Flow};
use crate::protocol::message::Frontend;
use crate::protocol::{reply, SqlState, TxStatus};
use crate::proxy::{Proxy, Snapshot};
use crate::router::RouteTarget;
use crate::rules::Consistency;
use crate::session::error::SessionError;
use crate::session::statements::Statements;

/// Which server the held connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Primary,
    Replica(usize),
}

impl Want {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Want::Primary => "primary",
            Want::Read { .. } => "replica",
        }
    }
}

/// Where the transaction a client is starting should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    Primary,
    /// A replica fit for this session's reads; `any`: the primary may take it too.
    Read {
        any: bool,
    },
}

/// What became of a client message.
pub(super) enum Step {
    /// Send it on to the server held (or about to be).
    Forward,
    /// Leave it (and what follows) in the input: a connection must be taken or changed,
    /// or earlier replies must arrive first.
    Stop,
    /// The proxy answered it.
    Drop,
    NeedMore,
    /// Send, instead of the statement, one that fails on the server with this SQLSTATE and
    /// message: the server aborts the transaction and skips to Sync as for its own error.
    Refuse(SqlState, String),
}

/// The session's routing state. In declaration order (`repr(C)`), what each transaction
/// reads first (see `Relay`).
#[repr(C)]
pub(super) struct Routing {
    /// When the running statement's rule timeout fires (read at every wake).
    pub deadline: Option<Instant>,
    pub snapshot: Arc<Snapshot>,
    pub pools: Arc<PoolSet>,
    /// A slot in the replica's outstanding-request count while its connection is held.
    in_flight: Option<InFlight>,
    /// The primary's WAL position after this session's last write: replicas serve its
    /// reads only once they have replayed this far (read-your-writes).
    pub floor: Lsn,
    /// Decided for the next transaction, before a connection is taken.
    pub want: Option<Want>,
    pub role: Role,
    /// An extended-protocol batch (Parse … Sync) is open.
    pub(super) batch_open: bool,
    /// The input stopped until what was sent before is answered.
    pub barrier: bool,
    /// The barrier was lifted while the held connection stays: send the message on.
    pub pass_barrier: bool,
    /// The client's plain BEGIN was answered by the proxy: the transaction starts on the
    /// server its next statement picks (BEGIN is sent there first).
    pub deferred_begin: bool,
    /// The current transaction wrote on the primary.
    pub txn_wrote: bool,
    /// ... and created functions: once it ends, the write-function list is read again.
    pub functions_defined: bool,
    /// For each batch at the front of the input: a statement after its first one writes.
    pub later_writes: VecDeque<bool>,
    /// For each batch at the front of the input: its end (Sync, Flush) has arrived.
    pub batch_ends: VecDeque<bool>,
    /// How many bytes of input the batches above were read from.
    pub input_len: usize,
    /// `SET pgstrata.route`: the session's own preference for reads.
    pub(super) session_route: Option<RouteTarget>,
    /// An extended batch whose statement the proxy answers, until its Sync.
    answering: Option<Answer>,
    /// The judgement of the message stopped at, by its kind and first bytes (None inside:
    /// nothing to judge it by).
    stashed: Option<(Frontend, Vec<u8>, Option<Judged>)>,
    /// The unnamed statement parsed last is refused when bound (SQLSTATE, message).
    pub(super) unnamed_refusal: Option<(SqlState, String)>,
    /// Statements the client prepared that the proxy answers (route settings, …).
    answered_statements: std::collections::HashMap<Vec<u8>, Answer>,
    pub(super) user: String,
    pub(super) database: String,
}

/// Counts a request towards a replica while it lives.
struct InFlight(Arc<ClusterHealth>, usize);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(r) = self.0.replicas.get(self.1) {
            r.outstanding()
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Routing {
    pub(super) fn new(
        snapshot: Arc<Snapshot>,
        pools: Arc<PoolSet>,
        user: &str,
        database: &str,
    ) -> Routing {
        // A new session reads at least what was written through the proxy before it came:
        // a client that writes on one connection and reads on the next sees its write.
        let floor = snapshot
            .health(&pools.cluster)
            .map_or(Lsn(0), |health| health.last_write());
        Routing {
            snapshot,
            pools,
            user: user.to_owned(),
            database: database.to_owned(),
            role: Role::Primary,
            floor,
            session_route: None,
            want: None,
            batch_open: false,
            barrier: false,
            pass_barrier: false,
            answering: None,
            answered_statements: Default::default(),
            deferred_begin: false,
            txn_wrote: false,
            functions_defined: false,
            unnamed_refusal: None,
            stashed: None,
            later_writes: VecDeque::new(),
            batch_ends: VecDeque::new(),
            input_len: 0,
            deadline: None,
            in_flight: None,
        }
    }

    fn consistency(&self) -> Consistency {
        self.snapshot
            .config
            .databases
            .get(&self.database)
            .map_or(Consistency::Session, |d| d.consistency)
    }

    fn include_primary(&self) -> bool {
        self.snapshot
            .config
            .databases
            .get(&self.database)
            .is_some_and(|d| d.include_primary_in_reads)
    }

    pub(super) fn health(&self) -> Option<&Arc<ClusterHealth>> {
        self.snapshot.health(&self.pools.cluster)
    }

    /// No replica to send reads to and no rule to apply: every statement goes to the
    /// primary as it is, whatever it is.
    pub(super) fn nothing_to_route(&self) -> bool {
        self.pools.replicas.is_empty() && !self.snapshot.router.has_rules()
    }

    /// Loads the rules in force for the transaction about to start.
    pub(super) fn refresh(&mut self, proxy: &Proxy) -> Result<(), SessionError> {
        if !proxy.is_current(&self.snapshot) {
            let snapshot = proxy.snapshot();
            self.pools = snapshot
                .pools
                .get(&self.database, &self.user)
                .ok_or_else(|| SessionError::UnknownDatabase(self.database.clone()))?;
            self.snapshot = snapshot;
        }
        Ok(())
    }

    /// The floor a replica must have replayed for this session's next read.
    pub(super) fn read_floor(&self) -> Lsn {
        match self.consistency() {
            Consistency::Session => self.floor,
            Consistency::Eventual => Lsn(0),
        }
    }

    /// A write transaction ended on the primary: its WAL position must be read.
    pub(super) fn needs_floor(&self) -> bool {
        self.txn_wrote
            && self.role == Role::Primary
            && self.consistency() == Consistency::Session
            && self.health().is_some()
    }

    pub(super) fn held(&mut self, role: Role) {
        self.role = role;
        self.in_flight = None;
        if let (Role::Replica(i), Some(health)) = (role, self.health()) {
            if let Some(r) = health.replicas.get(i) {
                r.outstanding()
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.in_flight = Some(InFlight(Arc::clone(health), i));
            }
        }
    }

    pub(super) fn on_replica(&self) -> bool {
        matches!(self.role, Role::Replica(_))
    }

    /// The request is sent again from its start (see `retry`): nothing judged or stopped
    /// before stands.
    pub(super) fn restart_request(&mut self) {
        self.stashed = None;
        self.barrier = false;
        self.pass_barrier = false;
        self.batch_open = false;
    }

    /// The replica held failed: it gets no reads until its checks pass again.
    pub(super) fn replica_failed(&mut self) {
        if let (Role::Replica(index), Some(health)) = (self.role, self.health()) {
            if let Some(replica) = health.replicas.get(index) {
                replica.report_failure();
            }
        }
        self.released();
    }

    pub(super) fn released(&mut self) {
        self.in_flight = None;
        self.batch_open = false;
        // (A barrier stays up: the input it stopped goes on once the connection is back.)
        self.txn_wrote = false;
        self.deadline = None;
    }

    /// Whether a read may also go to the primary this time (`include_primary_in_reads`,
    /// `route: any`): the primary counts as one more replica of weight 1.
    pub(super) fn read_on_primary(&self, any: bool, replicas_weight: u32) -> bool {
        (any || self.include_primary()) && rand::random_range(0..=replicas_weight) == 0
    }
}

/// What a statement does to the transaction, as far as deferring BEGIN goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Begin,
    End {
        commit: bool,
    },
    /// `SET TRANSACTION … READ ONLY`.
    SetReadOnly,
    Other,
}

/// What the relay knows about the conversation when a message arrives.
pub(super) struct Context<'a> {
    pub held: bool,
    /// Nothing is owed by the server: the proxy may answer in order.
    pub answered: bool,
    /// Extended-protocol messages were sent with no Sync yet.
    pub unsynced: bool,
    pub status: TxStatus,
    pub application_name: &'a str,
    pub statements: Option<&'a Statements>,
    /// The session's transactions are serializable, which a hot standby refuses.
    pub serializable: bool,
    /// The session's transactions are read-only (default_transaction_read_only).
    pub read_only: bool,
}

impl Routing {
    /// Decides what happens to one client message before it goes to the server.
    pub(super) fn on_message(
        &mut self,
        kind: Frontend,
        body: &[u8],
        complete: bool,
        cx: &Context<'_>,
        to_client: &mut BytesMut,
    ) -> Step {
        if kind == Frontend::Query && !cx.held && cx.answered && !cx.unsynced {
            if let Some(step) = self.defer_transaction(body, cx, to_client) {
                return step;
            }
        }
        if let Some(step) = self.answer_batch(kind, body, cx, to_client) {
            return step;
        }
        let leader = starts_batch(kind, self.batch_open);
        // A message stopped before comes back first: its judgement stands.
        let stashed = self
            .stashed
            .take()
            .filter(|(k, prefix, _)| *k == kind && body.starts_with(prefix));
        let judged = match stashed {
            Some((_, _, judged)) => judged,
            None => match kind {
                Frontend::Query | Frontend::Parse | Frontend::Bind => {
                    match self.judge(kind, body, complete, cx) {
                        Some(Ok(j)) => Some(j),
                        Some(Err(())) => return Step::NeedMore,
                        None => None,
                    }
                }
                _ => None,
            },
        };
        let refused = judged
            .as_ref()
            .is_some_and(|j| matches!(j.local, Some(Local::Refuse(..))));
        if refused && kind == Frontend::Bind && !complete {
            // Replaced whole: wait for all of it (nothing has changed yet).
            return Step::NeedMore;
        }
        let later_writes = leader && self.later_writes.pop_front().unwrap_or(false);
        // (Unknown: as if it had ended.)
        let ended = !leader || self.batch_ends.pop_front().unwrap_or(true);
        // A simple Query sent into an unsynced extended batch runs inside it: nothing can
        // be answered or moved before it.
        let inside_batch = kind == Frontend::Query && cx.unsynced;
        if let Some(Local::Answer(answer)) = judged.as_ref().and_then(|j| j.local.as_ref()) {
            if !inside_batch && kind == Frontend::Query {
                if !cx.answered {
                    return self.stop_with(kind, body, judged, true);
                }
                let status = match self.deferred_begin {
                    true => TxStatus::InTransaction,
                    false => cx.status,
                };
                self.answer(answer, status, to_client);
                return Step::Drop;
            }
            if kind == Frontend::Parse && leader {
                // The extended protocol: this batch is answered message by message, and a
                // named statement again whenever it is bound.
                if !cx.answered {
                    return self.stop_with(kind, body, judged, true);
                }
                if let Some((name, _)) = cstr(body).filter(|(name, _)| !name.is_empty()) {
                    self.answered_statements
                        .insert(name.to_vec(), answer.clone());
                }
                reply::empty_message(to_client, b'1');
                self.answering = Some(answer.clone());
                self.batch_open = true;
                return Step::Drop;
            }
        }
        if !cx.held {
            // A batch that names no statement (Close, Describe, Sync) reads nothing, and a
            // replica serves it as well as the primary.
            let unjudged = match kind {
                Frontend::Parse | Frontend::Bind => Want::Primary,
                Frontend::Query | Frontend::FunctionCall => Want::Primary,
                _ => Want::Read { any: false },
            };
            let want = match judged.as_ref().map_or(unjudged, |j| j.want) {
                _ if later_writes => Want::Primary,
                // A transaction the proxy has opened for the client (see
                // `defer_transaction`): a replica only if it is made read-only now.
                want if self.deferred_begin => match self.control(kind, body) {
                    Control::SetReadOnly if want != Want::Primary => want,
                    _ => Want::Primary,
                },
                want => want,
            };
            // An extended batch runs as one implicit transaction on one server: one that
            // would start on a replica waits for its end (no server answers before it
            // either), so that a write sent later in it still takes it to the primary.
            // (Up to a bound: past it, the batch is judged by what has come.)
            let extended = matches!(kind, Frontend::Parse | Frontend::Bind);
            if extended && !ended && want != Want::Primary && self.input_len < BATCH_WAIT_LIMIT {
                return self.stop_with(kind, body, judged, false);
            }
            self.want = Some(want);
            return self.stop_with(kind, body, judged, false);
        }
        let writes = judged.as_ref().is_some_and(|j| j.writes)
            || later_writes
            || kind == Frontend::FunctionCall;
        // Settings, session state and serializable isolation want the primary without
        // writing: a batch of theirs does not start on a replica held from before either.
        let wants_primary = judged.as_ref().is_some_and(|j| j.want == Want::Primary);
        let on_replica = matches!(self.role, Role::Replica(_));
        if leader && (writes || wants_primary) && on_replica && !self.pass_barrier && !inside_batch
        {
            return self.stop_with(kind, body, judged, true);
        }
        self.pass_barrier = false;
        self.txn_wrote |= writes && !on_replica;
        let mut step = Step::Forward;
        if let Some(j) = &judged {
            metrics::routed(
                j.want.as_str(),
                if on_replica { "replica" } else { "primary" },
            );
            self.functions_defined |= j.defines_functions;
            if let (Some(t), None) = (j.timeout, self.deadline) {
                self.deadline = Some(Instant::now() + t);
            }
            // A refused statement may still be prepared; it fails when run.
            if let (Some(Local::Refuse(code, message)), false) = (&j.local, kind == Frontend::Parse)
            {
                step = Step::Refuse(code.clone(), message.clone());
            }
        }
        self.batch_open = batch_open_after(kind, self.batch_open);
        step
    }

    /// Stops the input at this message, keeping its judgement for when it comes back.
    /// (`later_writes` is rebuilt when the input is taken again.)
    fn stop_with(
        &mut self,
        kind: Frontend,
        body: &[u8],
        judged: Option<Judged>,
        barrier: bool,
    ) -> Step {
        let prefix = body[..body.len().min(64)].to_vec();
        self.stashed = Some((kind, prefix, judged));
        self.barrier |= barrier;
        Step::Stop
    }

    /// A plain `BEGIN` with no connection held is answered by the proxy, so that a
    /// `SET TRANSACTION READ ONLY` after it can still send the transaction to a replica;
    /// an empty transaction's COMMIT or ROLLBACK is answered too. (A transaction takes
    /// its snapshot at its first statement, not at BEGIN: nothing else can tell.)
    fn defer_transaction(
        &mut self,
        body: &[u8],
        cx: &Context<'_>,
        out: &mut BytesMut,
    ) -> Option<Step> {
        // Without replicas no BEGIN is deferred (there is no choice of server to wait for).
        if !self.deferred_begin && self.health().is_none() {
            return None;
        }
        let control = self.control(Frontend::Query, body);
        match (control, self.deferred_begin) {
            (Control::Begin, false) if cx.status == TxStatus::Idle && self.health().is_some() => {
                self.deferred_begin = true;
                reply::command_complete(out, "BEGIN");
                reply::ready_for_query(out, TxStatus::InTransaction);
            }
            (Control::End { commit }, true) => {
                self.deferred_begin = false;
                reply::command_complete(out, if commit { "COMMIT" } else { "ROLLBACK" });
                reply::ready_for_query(out, TxStatus::Idle);
            }
            _ => return None,
        }
        Some(Step::Drop)
    }

    /// The rest of an extended batch whose statement the proxy answers (a route setting,
    /// SHOW, EXPLAIN ROUTE): each message gets the reply a server would give.
    fn answer_batch(
        &mut self,
        kind: Frontend,
        body: &[u8],
        cx: &Context<'_>,
        out: &mut BytesMut,
    ) -> Option<Step> {
        if self.answering.is_none() && !self.batch_open && cx.answered {
            // A batch on a statement the proxy answers (prepared earlier, by name).
            let name = match kind {
                Frontend::Bind => crate::session::statements::bind_names(body).map(|(_, s)| s),
                Frontend::Close => body.strip_prefix(b"S").and_then(cstr).map(|(n, _)| n),
                _ => None,
            };
            let answer = name.and_then(|n| self.answered_statements.get(n)).cloned();
            if kind == Frontend::Close && answer.is_some() {
                if let Some(name) = name {
                    self.answered_statements.remove(name);
                }
            }
            self.answering = answer;
            self.batch_open |= self.answering.is_some();
        }
        let answer = self.answering.clone()?;
        let columns: &[&str] = match &answer {
            Answer::Route(_) => &[],
            Answer::ShowRoute => &["pgstrata.route"],
            Answer::Explain(_) => &["field", "value"],
        };
        match kind {
            Frontend::Bind => reply::empty_message(out, b'2'),
            Frontend::Describe => {
                if body.first() == Some(&b'S') {
                    reply::no_parameters(out);
                }
                match columns.is_empty() {
                    true => reply::empty_message(out, b'n'),
                    false => reply::row_description(out, columns),
                }
            }
            Frontend::Execute => match answer {
                Answer::Route(route) => {
                    self.session_route = route;
                    reply::command_complete(out, "SET");
                }
                Answer::ShowRoute => {
                    let value = self.session_route.map_or("default", RouteTarget::as_str);
                    reply::data_rows(out, &[vec![value.to_owned()]]);
                    reply::command_complete(out, "SHOW");
                }
                Answer::Explain(rows) => {
                    reply::data_rows(out, &rows);
                    reply::command_complete(out, "EXPLAIN");
                }
            },
            Frontend::Close => reply::empty_message(out, b'3'),
            Frontend::Flush => {}
            Frontend::Sync => {
                self.answering = None;
                self.batch_open = false;
                let status = match self.deferred_begin {
                    true => TxStatus::InTransaction,
                    false => cx.status,
                };
                reply::ready_for_query(out, status);
            }
            // Another statement in the same batch: the server answers from here on.
            _ => {
                self.answering = None;
                return None;
            }
        }
        Some(Step::Drop)
    }

    /// What a statement does to the transaction, by its normalized text.
    fn control(&self, kind: Frontend, body: &[u8]) -> Control {
        let sql = match kind {
            Frontend::Query => crate::protocol::frame::c_text(body),
            Frontend::Parse => match crate::protocol::frame::cstr(body)
                .and_then(|(_, rest)| crate::protocol::frame::cstr(rest))
            {
                Some((sql, _)) => sql,
                None => return Control::Other,
            },
            _ => return Control::Other,
        };
        if sql.len() > 64 {
            return Control::Other;
        }
        let classified = self.snapshot.router.classify(sql);
        match &*classified.normalized {
            "begin" | "begin work" | "begin transaction" | "start transaction" => Control::Begin,
            "commit" | "commit work" | "commit transaction" | "end" | "end work"
            | "end transaction" => Control::End { commit: true },
            "rollback"
            | "rollback work"
            | "rollback transaction"
            | "abort"
            | "abort work"
            | "abort transaction" => Control::End { commit: false },
            text if text.starts_with("set transaction") && classified.begins == Some(true) => {
                Control::SetReadOnly
            }
            _ => Control::Other,
        }
    }

    /// The proxy's own answer to a route setting or EXPLAIN ROUTE, in order.
    fn answer(&mut self, answer: &Answer, status: TxStatus, out: &mut BytesMut) {
        match answer {
            Answer::Route(route) => {
                self.session_route = *route;
                reply::command_complete(out, "SET");
            }
            Answer::ShowRoute => {
                let value = self.session_route.map_or("default", RouteTarget::as_str);
                reply::text_rows(out, &["pgstrata.route"], &[vec![value.to_owned()]], "SHOW");
            }
            Answer::Explain(rows) => reply::text_rows(out, &["field", "value"], rows, "EXPLAIN"),
        }
        reply::ready_for_query(out, status);
    }
}

/// Whether a message starts a batch (what runs as one implicit transaction on one
/// server): a Query or fast-path call, or the first extended message after a Sync.
pub(super) fn starts_batch(kind: Frontend, batch_open: bool) -> bool {
    match kind {
        Frontend::Query | Frontend::FunctionCall => true,
        Frontend::Parse
        | Frontend::Bind
        | Frontend::Describe
        | Frontend::Execute
        | Frontend::Close
        | Frontend::Sync
        | Frontend::Flush => !batch_open,
        _ => false,
    }
}

/// Whether an extended batch is open after `kind` is sent.
pub(super) fn batch_open_after(kind: Frontend, batch_open: bool) -> bool {
    match kind {
        Frontend::Sync | Frontend::Query => false,
        Frontend::Parse
        | Frontend::Bind
        | Frontend::Describe
        | Frontend::Execute
        | Frontend::Close => true,
        _ => batch_open,
    }
}

/// The most input an extended batch bound for a replica is held back for, waiting for
/// its end to show whether a later statement writes.
const BATCH_WAIT_LIMIT: usize = 256 * 1024;

/// `Step` as the frame streamer's decision.
pub(super) fn flow(step: &Step) -> Option<Flow> {
    match step {
        Step::Forward => None,
        Step::Stop => Some(Flow::Stop),
        Step::Drop => Some(Flow::Drop),
        Step::NeedMore => Some(Flow::NeedMore),
        Step::Refuse(..) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::protocol::frame::msg;
    use crate::session::statements::ServerStatements;

    const CONFIG: &str = r#"
listen: { address: "127.0.0.1:0" }
clusters:
  main:
    primary: { host: 127.0.0.1, port: 1 }
databases:
  app: { cluster: main, pool_mode: transaction }
users:
  app: { auth: trust }
routing:
  rules:
    - match: { kind: delete, sql: '^delete from [^ ]+$' }
      block: "no unbounded deletes"
"#;

    fn routing() -> Routing {
        let config =
            crate::rules::load_str(CONFIG, Path::new("t.yaml"), &|_| None).expect("config");
        let snapshot = Arc::new(Snapshot::build(config, None));
        let pools = snapshot.pools.get("app", "app").expect("pools");
        Routing::new(snapshot, pools, "app", "app")
    }

    fn cx(held: bool, answered: bool) -> Context<'static> {
        Context {
            held,
            answered,
            status: TxStatus::Idle,
            application_name: "",
            statements: None,
            serializable: false,
            read_only: false,
            unsynced: false,
        }
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        [name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat()
    }

    /// (kind, body) → what happens with no connection held, and the connection wanted.
    #[tokio::test]
    async fn a_transaction_goes_where_its_first_statement_may_run() {
        let read = Some(Want::Read { any: false });
        let cases: &[(Frontend, &[u8], Option<Want>)] = &[
            (Frontend::Query, b"SELECT 1\0", read),
            (
                Frontend::Query,
                b"INSERT INTO t VALUES (1)\0",
                Some(Want::Primary),
            ),
            (Frontend::Query, b"BEGIN\0", Some(Want::Primary)),
            (Frontend::Query, b"BEGIN READ ONLY\0", read),
            (
                Frontend::Query,
                b"BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY\0",
                Some(Want::Primary),
            ),
            (
                Frontend::Query,
                b"/* pgstrata: route=primary */ SELECT 1\0",
                Some(Want::Primary),
            ),
            (
                Frontend::Query,
                b"CREATE TEMP TABLE t (a int)\0",
                Some(Want::Primary),
            ),
            (
                Frontend::Query,
                b"SELECT pg_advisory_lock(1)\0",
                Some(Want::Primary),
            ),
            (Frontend::Parse, &parse("s1", "SELECT $1"), read),
            (
                Frontend::Parse,
                &parse("", "UPDATE t SET a = 1"),
                Some(Want::Primary),
            ),
            (Frontend::Sync, b"", read),
            (Frontend::FunctionCall, b"\0\0\0\x01", Some(Want::Primary)),
        ];
        for (kind, body, want) in cases {
            let mut r = routing();
            let mut out = BytesMut::new();
            let step = r.on_message(*kind, body, true, &cx(false, true), &mut out);
            assert!(
                matches!(step, Step::Stop),
                "{kind:?} {:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                r.want,
                *want,
                "{kind:?} {:?}",
                String::from_utf8_lossy(body)
            );
            assert!(out.is_empty());
        }
    }

    #[tokio::test]
    async fn read_only_and_serializable_sessions() {
        let mut out = BytesMut::new();
        let mut r = routing();
        let mut read_only = cx(false, true);
        read_only.read_only = true;
        assert!(matches!(
            r.on_message(Frontend::Query, b"BEGIN\0", true, &read_only, &mut out),
            Step::Stop
        ));
        assert_eq!(
            r.want,
            Some(Want::Read { any: false }),
            "a read-only session's BEGIN"
        );
        let mut r = routing();
        assert!(matches!(
            r.on_message(
                Frontend::Query,
                b"BEGIN READ WRITE\0",
                true,
                &read_only,
                &mut out
            ),
            Step::Stop
        ));
        assert_eq!(r.want, Some(Want::Primary));
        let mut r = routing();
        let mut serializable = cx(false, true);
        serializable.serializable = true;
        assert!(matches!(
            r.on_message(
                Frontend::Query,
                b"SELECT 1\0",
                true,
                &serializable,
                &mut out
            ),
            Step::Stop
        ));
        assert_eq!(
            r.want,
            Some(Want::Primary),
            "a hot standby runs no serializable transaction"
        );
    }

    #[tokio::test]
    async fn a_write_on_a_replica_connection_waits_for_the_primary() {
        let mut r = routing();
        r.role = Role::Replica(0);
        let mut out = BytesMut::new();
        let insert = b"INSERT INTO t VALUES (1)\0";
        assert!(matches!(
            r.on_message(
                Frontend::Query,
                b"SELECT 1\0",
                true,
                &cx(true, true),
                &mut out
            ),
            Step::Forward
        ));
        assert!(matches!(
            r.on_message(Frontend::Query, insert, true, &cx(true, false), &mut out),
            Step::Stop
        ));
        assert!(r.barrier);
        // Lifted with the connection kept (a transaction is open there): it goes on.
        r.barrier = false;
        r.pass_barrier = true;
        assert!(matches!(
            r.on_message(Frontend::Query, insert, true, &cx(true, true), &mut out),
            Step::Forward
        ));
        assert!(!r.txn_wrote, "a write sent to a replica moves no floor");
        r.role = Role::Primary;
        assert!(matches!(
            r.on_message(Frontend::Query, insert, true, &cx(true, true), &mut out),
            Step::Forward
        ));
        assert!(r.txn_wrote);
    }

    #[tokio::test]
    async fn route_settings_are_answered_in_order() {
        let mut r = routing();
        let mut out = BytesMut::new();
        let set = b"SET pgstrata.route = 'primary'\0";
        // Replies still owed: wait for them.
        assert!(matches!(
            r.on_message(Frontend::Query, set, true, &cx(true, false), &mut out),
            Step::Stop
        ));
        assert!(r.barrier && out.is_empty());
        r.barrier = false;
        assert!(matches!(
            r.on_message(Frontend::Query, set, true, &cx(false, true), &mut out),
            Step::Drop
        ));
        assert_eq!(&out[..], b"C\0\0\0\x08SET\0Z\0\0\0\x05I");
        out.clear();
        assert!(matches!(
            r.on_message(
                Frontend::Query,
                b"SELECT 1\0",
                true,
                &cx(false, true),
                &mut out
            ),
            Step::Stop
        ));
        assert_eq!(r.want, Some(Want::Primary));
        // An invalid value fails on the server, like any error: a connection first.
        let bad = b"SET pgstrata.route = 'sideways'\0";
        assert!(matches!(
            r.on_message(Frontend::Query, bad, true, &cx(false, true), &mut out),
            Step::Stop
        ));
        match r.on_message(Frontend::Query, bad, true, &cx(true, true), &mut out) {
            Step::Refuse(code, _) => assert_eq!(code.code(), "22023"),
            _ => panic!("an invalid route is refused"),
        }
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_blocked_statement_may_be_prepared_but_fails_when_bound() {
        let mut r = routing();
        let mut out = BytesMut::new();
        let delete = parse("", "DELETE FROM t");
        assert!(matches!(
            r.on_message(Frontend::Parse, &delete, true, &cx(false, true), &mut out),
            Step::Stop
        ));
        assert_eq!(r.want, Some(Want::Primary));
        assert!(matches!(
            r.on_message(Frontend::Parse, &delete, true, &cx(true, true), &mut out),
            Step::Forward
        ));
        match r.on_message(
            Frontend::Bind,
            b"\0\0\0\0\0\0\0\0",
            true,
            &cx(true, true),
            &mut out,
        ) {
            Step::Refuse(code, message) => {
                assert_eq!(code.code(), "42501");
                assert_eq!(message, "no unbounded deletes");
            }
            _ => panic!("the Bind of a blocked statement is refused"),
        }
        // A Query is refused whole, where it stands in the transaction.
        let query = b"DELETE FROM t\0";
        assert!(matches!(
            r.on_message(Frontend::Query, query, true, &cx(true, true), &mut out),
            Step::Refuse(..)
        ));
        assert!(
            out.is_empty(),
            "the server, not the proxy, reports the refusal"
        );
        // The next unnamed statement is judged afresh.
        let select = parse("", "SELECT 1");
        assert!(matches!(
            r.on_message(Frontend::Parse, &select, true, &cx(true, true), &mut out),
            Step::Forward
        ));
        assert!(matches!(
            r.on_message(
                Frontend::Bind,
                b"\0\0\0\0\0\0\0\0",
                true,
                &cx(true, true),
                &mut out
            ),
            Step::Forward
        ));
    }

    #[tokio::test]
    async fn a_write_later_in_a_batch_sends_the_whole_batch_to_the_primary() {
        let mut r = routing();
        let batch = [
            msg(b'P', &parse("", "SELECT 1")),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'P', &parse("", "INSERT INTO t VALUES (1)")),
            msg(b'S', b""),
            msg(b'Q', b"SELECT 2\0"),
        ]
        .concat();
        r.scan_later_writes(&batch, None, "");
        assert_eq!(r.later_writes, [true, false]);
        let mut out = BytesMut::new();
        assert!(matches!(
            r.on_message(
                Frontend::Parse,
                &parse("", "SELECT 1"),
                true,
                &cx(false, true),
                &mut out
            ),
            Step::Stop
        ));
        assert_eq!(r.want, Some(Want::Primary));
    }

    /// A pipeline sent in pieces: the read that starts it waits for the batch's end, and
    /// a write that comes before it sends the batch to the primary.
    #[tokio::test]
    async fn a_batch_bound_for_a_replica_waits_for_its_end() {
        let mut r = routing();
        let select = parse("", "SELECT 1");
        let read = [
            msg(b'P', &select),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
        ]
        .concat();
        let mut out = BytesMut::new();
        r.scan_later_writes(&read, None, "");
        assert!(matches!(
            r.on_message(Frontend::Parse, &select, true, &cx(false, true), &mut out),
            Step::Stop
        ));
        assert_eq!(r.want, None, "no connection taken yet");
        let rest = [
            msg(b'P', &parse("", "INSERT INTO t VALUES (1)")),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ]
        .concat();
        r.scan_later_writes(&[read.clone(), rest].concat(), None, "");
        assert!(matches!(
            r.on_message(Frontend::Parse, &select, true, &cx(false, true), &mut out),
            Step::Stop
        ));
        assert_eq!(r.want, Some(Want::Primary));
        // Reads only, ended by a Flush: the replica, at once.
        let mut r = routing();
        r.scan_later_writes(&[read, msg(b'H', b"")].concat(), None, "");
        assert!(matches!(
            r.on_message(Frontend::Parse, &select, true, &cx(false, true), &mut out),
            Step::Stop
        ));
        assert_eq!(r.want, Some(Want::Read { any: false }));
    }

    #[tokio::test]
    async fn a_bind_is_judged_by_its_prepared_statement() {
        let mut r = routing();
        let mut statements = Statements::default();
        let mut server = ServerStatements::default();
        for (name, sql) in [("r", "SELECT 1"), ("w", "DELETE FROM t WHERE a = $1")] {
            let body = parse(name, sql);
            let _ = statements.on_client(b'P', body.len() + 5, &body, true, &mut server);
        }
        let mut out = BytesMut::new();
        let mut context = cx(false, true);
        context.statements = Some(&statements);
        for (bind, want) in [
            (&b"\0r\0\0\0\0\0\0\0"[..], Want::Read { any: false }),
            (b"\0w\0\0\0\0\0\0\0", Want::Primary),
        ] {
            assert!(matches!(
                r.on_message(Frontend::Bind, bind, true, &context, &mut out),
                Step::Stop
            ));
            assert_eq!(r.want, Some(want));
        }
        // The names of a Bind not all here yet: wait for them.
        assert!(matches!(
            r.on_message(Frontend::Bind, b"\0r", false, &context, &mut out),
            Step::NeedMore
        ));
    }
}
