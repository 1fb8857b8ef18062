//! Read/write routing inside a session under transaction pooling: each transaction goes
//! where its first statement may run (primary, or a replica that has replayed this
//! session's writes), and statements the proxy answers itself (route settings, EXPLAIN
//! ROUTE, blocked statements) never reach a server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::backend::monitor::{ClusterHealth, Lsn};
use crate::backend::PoolSet;
use crate::metrics;
use crate::protocol::frame::{cstr, Flow};
use crate::protocol::message::Frontend;
use crate::protocol::{reply, ErrorReply, SqlState, TxStatus};
use crate::proxy::{Proxy, Snapshot};
use crate::router::{self, Intercept, RequestCtx, RouteTarget};
use crate::rules::Consistency;
use crate::session::error::SessionError;
use crate::session::statements::{bind_names, Statements};
use crate::sql::effects;

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
}

/// The session's routing state.
pub(super) struct Routing {
    pub snapshot: Arc<Snapshot>,
    pub pools: Arc<PoolSet>,
    user: String,
    database: String,
    pub role: Role,
    /// The primary's WAL position after this session's last write: replicas serve its
    /// reads only once they have replayed this far (read-your-writes).
    pub floor: Lsn,
    /// `SET pgstrata.route`: the session's own preference for reads.
    session_route: Option<RouteTarget>,
    /// Decided for the next transaction, before a connection is taken.
    pub want: Option<Want>,
    /// An extended-protocol batch (Parse … Sync) is open.
    batch_open: bool,
    /// The input stopped until what was sent before is answered.
    pub barrier: bool,
    /// The barrier was lifted while the held connection stays: send the message on.
    pub pass_barrier: bool,
    /// The current transaction wrote on the primary.
    pub txn_wrote: bool,
    /// Dropping an extended batch the proxy refused, until its Sync.
    refusing: bool,
    /// When the running statement's rule timeout fires.
    pub deadline: Option<Instant>,
    /// A slot in the replica's outstanding-request count while its connection is held.
    in_flight: Option<InFlight>,
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

/// What a statement asks of routing.
struct Judged {
    want: Want,
    writes: bool,
    timeout: Option<Duration>,
    local: Option<Local>,
}

/// A statement the proxy answers itself.
enum Local {
    Intercept(Intercept),
    Block(String),
    Explain(Vec<Vec<String>>),
}

impl Routing {
    pub(super) fn new(
        snapshot: Arc<Snapshot>,
        pools: Arc<PoolSet>,
        user: &str,
        database: &str,
    ) -> Routing {
        Routing {
            snapshot,
            pools,
            user: user.to_owned(),
            database: database.to_owned(),
            role: Role::Primary,
            floor: Lsn(0),
            session_route: None,
            want: None,
            batch_open: false,
            barrier: false,
            pass_barrier: false,
            txn_wrote: false,
            refusing: false,
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

    /// Loads the rules in force for the transaction about to start.
    pub(super) fn refresh(&mut self, proxy: &Proxy) -> Result<(), SessionError> {
        let snapshot = proxy.snapshot();
        if !Arc::ptr_eq(&snapshot, &self.snapshot) {
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
        self.txn_wrote = false;
        self.deadline = None;
    }

    /// Whether a read may also go to the primary this time (`include_primary_in_reads`,
    /// `route: any`): the primary counts as one more replica of weight 1.
    pub(super) fn read_on_primary(&self, any: bool, replicas_weight: u32) -> bool {
        (any || self.include_primary()) && rand::random_range(0..=replicas_weight) == 0
    }
}

/// What the relay knows about the conversation when a message arrives.
pub(super) struct Context<'a> {
    pub held: bool,
    /// Nothing is owed by the server: the proxy may answer in order.
    pub answered: bool,
    pub status: TxStatus,
    pub application_name: &'a str,
    pub statements: Option<&'a Statements>,
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
        if self.refusing {
            if kind == Frontend::Sync {
                self.refusing = false;
                self.batch_open = false;
                reply::ready_for_query(to_client, cx.status);
            }
            return Step::Drop;
        }
        let leader = match kind {
            Frontend::Query | Frontend::FunctionCall => true,
            Frontend::Parse
            | Frontend::Bind
            | Frontend::Describe
            | Frontend::Execute
            | Frontend::Close
            | Frontend::Sync
            | Frontend::Flush => !self.batch_open,
            _ => false,
        };
        let judged = match kind {
            Frontend::Query | Frontend::Parse | Frontend::Bind => {
                match self.judge(kind, body, complete, cx) {
                    Some(Ok(j)) => Some(j),
                    Some(Err(())) => return Step::NeedMore,
                    None => None,
                }
            }
            _ => None,
        };
        if let Some(local) = judged.as_ref().and_then(|j| j.local.as_ref()) {
            if leader && matches!(kind, Frontend::Query | Frontend::Parse) {
                if !cx.answered {
                    self.barrier = true;
                    return Step::Stop;
                }
                if let Some(step) = self.answer(kind, local, cx.status, to_client) {
                    return step;
                }
            }
        }
        if leader && !cx.held {
            // A batch that names no statement (Close, Describe, Sync) reads nothing, and a
            // replica serves it as well as the primary.
            let unjudged = match kind {
                Frontend::Query | Frontend::FunctionCall => Want::Primary,
                _ => Want::Read { any: false },
            };
            self.want = Some(judged.as_ref().map_or(unjudged, |j| j.want));
            return Step::Stop;
        }
        let needs_primary = judged
            .as_ref()
            .is_some_and(|j| j.want == Want::Primary && j.writes)
            || kind == Frontend::FunctionCall;
        if leader && needs_primary && matches!(self.role, Role::Replica(_)) && !self.pass_barrier {
            self.barrier = true;
            return Step::Stop;
        }
        self.pass_barrier = false;
        if let Some(j) = &judged {
            self.txn_wrote |= j.writes && self.role == Role::Primary;
            if let (Some(t), None) = (j.timeout, self.deadline) {
                self.deadline = Some(Instant::now() + t);
            }
        }
        match kind {
            Frontend::Sync => self.batch_open = false,
            Frontend::Parse
            | Frontend::Bind
            | Frontend::Describe
            | Frontend::Execute
            | Frontend::Close => self.batch_open = true,
            _ => {}
        }
        Step::Forward
    }

    /// The proxy's own answer to `local`, in place of the server's. None: forward after all.
    fn answer(
        &mut self,
        kind: Frontend,
        local: &Local,
        status: TxStatus,
        out: &mut BytesMut,
    ) -> Option<Step> {
        let simple = kind == Frontend::Query;
        match local {
            Local::Block(message) => {
                metrics::error(SqlState::INSUFFICIENT_PRIVILEGE.class());
                ErrorReply::error(SqlState::INSUFFICIENT_PRIVILEGE, message.clone()).encode(out);
                if simple {
                    reply::ready_for_query(out, status);
                } else {
                    self.refusing = true;
                    self.batch_open = true;
                }
            }
            // In the extended protocol the setting also goes to the server (a harmless
            // custom setting there), which answers in the protocol's own terms.
            Local::Intercept(Intercept::SetRoute(route)) if !simple => {
                self.session_route = *route;
                return None;
            }
            Local::Intercept(_) | Local::Explain(_) if !simple => return None,
            Local::Intercept(intercept) => {
                self.intercept(intercept, out);
                reply::ready_for_query(out, status);
            }
            Local::Explain(rows) => {
                reply::text_rows(out, &["field", "value"], rows, "EXPLAIN");
                reply::ready_for_query(out, status);
            }
        }
        Some(Step::Drop)
    }

    fn intercept(&mut self, intercept: &Intercept, out: &mut BytesMut) {
        match intercept {
            Intercept::SetRoute(route) => {
                self.session_route = *route;
                reply::command_complete(out, "SET");
            }
            Intercept::ShowRoute => {
                let value = self.session_route.map_or("default", RouteTarget::as_str);
                reply::text_rows(out, &["pgstrata.route"], &[vec![value.to_owned()]], "SHOW");
            }
            Intercept::ExplainRoute(_) => {} // resolved into Local::Explain by judge
            Intercept::Invalid(message) => {
                metrics::error(SqlState::INVALID_PARAMETER_VALUE.class());
                ErrorReply::error(SqlState::INVALID_PARAMETER_VALUE, message.clone()).encode(out);
            }
        }
    }

    /// Classifies a Query, Parse or Bind (by its statement). None: nothing to judge by;
    /// Err: the names of a Bind have not all arrived.
    fn judge(
        &self,
        kind: Frontend,
        body: &[u8],
        complete: bool,
        cx: &Context<'_>,
    ) -> Option<Result<Judged, ()>> {
        let sql = match kind {
            Frontend::Query => cstr(body).map_or(body, |(sql, _)| sql),
            Frontend::Parse => cstr(body)
                .and_then(|(_, rest)| cstr(rest))
                .map(|(sql, _)| sql)?,
            Frontend::Bind => match bind_names(body) {
                None if !complete => return Some(Err(())),
                None => return None,
                Some((_, [])) => return None,
                Some((_, statement)) => cx.statements?.query_of(statement)?,
            },
            _ => return None,
        };
        let unreadable = !complete && kind != Frontend::Bind;
        Some(Ok(self.judge_sql(
            kind,
            sql,
            unreadable,
            cx.application_name,
        )))
    }

    fn judge_sql(&self, kind: Frontend, sql: &[u8], unreadable: bool, app: &str) -> Judged {
        let primary = |writes| Judged {
            want: Want::Primary,
            writes,
            timeout: None,
            local: None,
        };
        if unreadable {
            return primary(true);
        }
        if kind != Frontend::Bind {
            if let Some(intercept) = router::intercept(sql) {
                let local = match intercept {
                    Intercept::ExplainRoute(inner) => {
                        let inner = sql.get(inner).unwrap_or_default();
                        Local::Explain(self.explain(inner, app))
                    }
                    other => Local::Intercept(other),
                };
                return Judged {
                    local: Some(local),
                    ..primary(false)
                };
            }
        }
        let hint = router::leading_hint(sql);
        if hint.explain && kind != Frontend::Bind {
            return Judged {
                local: Some(Local::Explain(self.explain(sql, app))),
                ..primary(false)
            };
        }
        let router = &self.snapshot.router;
        let classified = router.classify(sql);
        let ctx = RequestCtx {
            user: &self.user,
            database: &self.database,
            application_name: app,
        };
        let dynamic = self
            .health()
            .map(|h| h.write_functions())
            .unwrap_or_default();
        let decision = router.decide(&classified, &ctx, &dynamic);
        if let Some(message) = decision.block {
            return Judged {
                local: Some(Local::Block(message.to_owned())),
                ..primary(false)
            };
        }
        let writes = decision.reason.is_write();
        let target = match hint.route.or(self.session_route) {
            Some(route) if !writes => route,
            _ => decision.target,
        };
        let mut want = match target {
            RouteTarget::Primary => Want::Primary,
            RouteTarget::Replica => Want::Read { any: false },
            RouteTarget::Any => Want::Read { any: true },
        };
        // State a statement leaves in the session stays on the connection it ran on, and
        // the session with it: that must be the primary.
        if want != Want::Primary && effects::effects(sql).pin.is_some() {
            want = Want::Primary;
        }
        Judged {
            want,
            writes,
            timeout: decision.timeout,
            local: None,
        }
    }

    /// EXPLAIN ROUTE's rows for `sql`, as this session would route it now.
    fn explain(&self, sql: &[u8], app: &str) -> Vec<Vec<String>> {
        let router = &self.snapshot.router;
        let classified = router.classify(sql);
        let ctx = RequestCtx {
            user: &self.user,
            database: &self.database,
            application_name: app,
        };
        let dynamic = self
            .health()
            .map(|h| h.write_functions())
            .unwrap_or_default();
        let decision = router.decide(&classified, &ctx, &dynamic);
        let mut rows: Vec<Vec<String>> = router::explain(&classified, &decision)
            .into_iter()
            .map(|(field, value)| vec![field.to_owned(), value])
            .collect();
        let route = self.session_route.map_or("default", RouteTarget::as_str);
        rows.push(vec!["session_route".to_owned(), route.to_owned()]);
        rows.push(vec!["read_floor".to_owned(), self.read_floor().to_string()]);
        rows
    }
}

/// `Step` as the frame streamer's decision.
pub(super) fn flow(step: &Step) -> Option<Flow> {
    match step {
        Step::Forward => None,
        Step::Stop => Some(Flow::Stop),
        Step::Drop => Some(Flow::Drop),
        Step::NeedMore => Some(Flow::NeedMore),
    }
}
