//! Read/write routing inside a session under transaction pooling: each transaction goes
//! where its first statement may run (primary, or a replica that has replayed this
//! session's writes), and statements the proxy answers itself (route settings, EXPLAIN
//! ROUTE, blocked statements) never reach a server.

use std::sync::Arc;
use std::time::Instant;

use super::judge::Local;

use bytes::BytesMut;

use crate::backend::monitor::{ClusterHealth, Lsn};
use crate::backend::PoolSet;
use crate::metrics;
use crate::protocol::frame::Flow;
use crate::protocol::message::Frontend;
use crate::protocol::{reply, ErrorReply, SqlState, TxStatus};
use crate::proxy::{Proxy, Snapshot};
use crate::router::{Intercept, RouteTarget};
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
}

/// The session's routing state.
pub(super) struct Routing {
    pub snapshot: Arc<Snapshot>,
    pub pools: Arc<PoolSet>,
    pub(super) user: String,
    pub(super) database: String,
    pub role: Role,
    /// The primary's WAL position after this session's last write: replicas serve its
    /// reads only once they have replayed this far (read-your-writes).
    pub floor: Lsn,
    /// `SET pgstrata.route`: the session's own preference for reads.
    pub(super) session_route: Option<RouteTarget>,
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
    /// The session's transactions are serializable, which a hot standby refuses.
    pub serializable: bool,
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
            let on_primary = self.role == Role::Primary;
            metrics::routed(
                j.want.as_str(),
                if on_primary { "primary" } else { "replica" },
            );
            self.txn_wrote |= j.writes && on_primary;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
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
        let bad = b"SET pgstrata.route = 'sideways'\0";
        assert!(matches!(
            r.on_message(Frontend::Query, bad, true, &cx(false, true), &mut out),
            Step::Drop
        ));
        assert_eq!(out[0], b'E');
        assert!(String::from_utf8_lossy(&out).contains("22023"));
    }

    #[tokio::test]
    async fn a_blocked_extended_batch_is_refused_up_to_its_sync() {
        let mut r = routing();
        let mut out = BytesMut::new();
        let delete = parse("", "DELETE FROM t");
        assert!(matches!(
            r.on_message(Frontend::Parse, &delete, true, &cx(false, true), &mut out),
            Step::Drop
        ));
        assert_eq!(out[0], b'E');
        assert!(String::from_utf8_lossy(&out).contains("42501"));
        out.clear();
        for kind in [Frontend::Bind, Frontend::Describe, Frontend::Execute] {
            assert!(matches!(
                r.on_message(kind, b"\0\0", true, &cx(false, true), &mut out),
                Step::Drop
            ));
        }
        assert!(out.is_empty());
        assert!(matches!(
            r.on_message(Frontend::Sync, b"", true, &cx(false, true), &mut out),
            Step::Drop
        ));
        assert_eq!(&out[..], b"Z\0\0\0\x05I");
        // The next batch is judged afresh.
        out.clear();
        let select = parse("", "SELECT 1");
        assert!(matches!(
            r.on_message(Frontend::Parse, &select, true, &cx(false, true), &mut out),
            Step::Stop
        ));
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
