//! Judging a client statement for routing: where it may run, whether it writes, and
//! whether the proxy answers it itself (route settings, EXPLAIN ROUTE, a rule's block).

use std::sync::Arc;
use std::time::Duration;

use super::routing::{batch_open_after, starts_batch, Context, Routing, Want};
use crate::protocol::frame::{c_text, cstr, Frames, MAX_FRAME_LEN};
use crate::protocol::message::Frontend;
use crate::protocol::SqlState;
use crate::router::{self, Classified, Decision, Intercept, RequestCtx, RouteTarget};
use crate::session::statements::{bind_names, Statements};
use crate::sql::effects;

/// What a statement asks of routing.
pub(super) struct Judged {
    /// It creates or replaces functions: the write-function list must be read again.
    pub(super) defines_functions: bool,
    pub(super) want: Want,
    pub(super) writes: bool,
    pub(super) timeout: Option<Duration>,
    pub(super) local: Option<Local>,
}

/// A statement the proxy takes care of itself.
pub(super) enum Local {
    /// Answered by the proxy, never sent to a server (simple protocol).
    Answer(Answer),
    /// Refused: made to fail on the server with this SQLSTATE and message, so the server
    /// aborts the transaction and skips to Sync exactly as for an error of its own.
    Refuse(SqlState, String),
}

/// What the proxy answers.
#[derive(Clone)]
pub(super) enum Answer {
    /// `SET/RESET pgstrata.route`.
    Route(Option<RouteTarget>),
    ShowRoute,
    Explain(Vec<Vec<String>>),
}

impl Routing {
    /// For each batch at the front of `buf` (one per message `on_message` takes as a
    /// batch's first), whether a statement after its first one writes: a batch runs as one
    /// implicit transaction, on one server, chosen at its first message.
    pub(super) fn scan_later_writes(
        &mut self,
        buf: &[u8],
        statements: Option<&Statements>,
        app: &str,
    ) {
        self.later_writes.clear();
        self.batch_ends.clear();
        self.input_len = buf.len();
        if self.nothing_to_route() {
            return;
        }
        let mut open = self.batch_open;
        // (statements seen, a later one writes, its end has come)
        let mut current: Option<(usize, bool, bool)> = None;
        for frame in Frames::new(buf, MAX_FRAME_LEN).map_while(Result::ok) {
            let kind = Frontend::from_tag(frame.tag);
            let leader = starts_batch(kind, open);
            if leader {
                // A batch that another follows has ended.
                if let Some((_, writes, _)) = current.take() {
                    self.later_writes.push_back(writes);
                    self.batch_ends.push_back(true);
                }
                current = Some((0, false, false));
            }
            if let Some((seen, writes, ended)) = &mut current {
                match kind {
                    Frontend::Parse | Frontend::Bind => {
                        *seen += 1;
                        if *seen > 1 && !*writes {
                            *writes = self.statement_writes(kind, frame.body(buf), statements, app);
                        }
                    }
                    Frontend::Sync | Frontend::Flush | Frontend::Terminate => *ended = true,
                    _ => {}
                }
            }
            open = batch_open_after(kind, open);
        }
        if let Some((_, writes, ended)) = current {
            self.later_writes.push_back(writes);
            self.batch_ends.push_back(ended);
        }
    }

    /// Whether a Parse or Bind (by its statement) needs the primary.
    fn statement_writes(
        &self,
        kind: Frontend,
        body: &[u8],
        statements: Option<&Statements>,
        app: &str,
    ) -> bool {
        let sql = match kind {
            Frontend::Parse => cstr(body)
                .and_then(|(_, rest)| cstr(rest))
                .map(|(sql, _)| sql),
            _ => bind_names(body)
                .filter(|(_, name)| !name.is_empty())
                .and_then(|(_, name)| statements?.query_of(name)),
        };
        sql.is_some_and(|sql| {
            let judged = self.judge_sql(kind, sql, false, app, false);
            judged.writes || judged.want == Want::Primary
        })
    }

    /// Classifies a Query, Parse or Bind (by its statement). None: nothing to judge by;
    /// Err: the names of a Bind have not all arrived.
    pub(super) fn judge(
        &mut self,
        kind: Frontend,
        body: &[u8],
        complete: bool,
        cx: &Context<'_>,
    ) -> Option<Result<Judged, ()>> {
        let sql = match kind {
            Frontend::Query => c_text(body),
            Frontend::Parse => cstr(body)
                .and_then(|(_, rest)| cstr(rest))
                .map(|(sql, _)| sql)?,
            Frontend::Bind => match bind_names(body) {
                None if !complete => return Some(Err(())),
                None => return None,
                // The unnamed statement was judged at its Parse: only a refusal carries over.
                Some((_, [])) => {
                    let (code, message) = self.unnamed_refusal.clone()?;
                    return Some(Ok(Judged {
                        defines_functions: false,
                        want: Want::Primary,
                        writes: false,
                        timeout: None,
                        local: Some(Local::Refuse(code, message)),
                    }));
                }
                Some((_, statement)) => cx.statements?.query_of(statement)?,
            },
            _ => return None,
        };
        let unreadable = !complete && kind != Frontend::Bind;
        let mut judged = self.judge_sql(kind, sql, unreadable, cx.application_name, cx.read_only);
        if cx.serializable {
            judged.want = Want::Primary;
        }
        if kind == Frontend::Parse && cstr(body).is_some_and(|(name, _)| name.is_empty()) {
            self.unnamed_refusal = match &judged.local {
                Some(Local::Refuse(code, message)) => Some((code.clone(), message.clone())),
                _ => None,
            };
        }
        Some(Ok(judged))
    }

    fn judge_sql(
        &self,
        kind: Frontend,
        sql: &[u8],
        unreadable: bool,
        app: &str,
        read_only_session: bool,
    ) -> Judged {
        let primary = |writes| Judged {
            defines_functions: false,
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
                        Local::Answer(Answer::Explain(self.explain(inner, app)))
                    }
                    Intercept::SetRoute(route) => Local::Answer(Answer::Route(route)),
                    Intercept::ShowRoute => Local::Answer(Answer::ShowRoute),
                    Intercept::Invalid(message) => {
                        Local::Refuse(SqlState::INVALID_PARAMETER_VALUE, message)
                    }
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
                local: Some(Local::Answer(Answer::Explain(self.explain(sql, app)))),
                ..primary(false)
            };
        }
        // Every statement goes to the primary and no rule applies: nothing to classify.
        if self.nothing_to_route() {
            return primary(false);
        }
        let (classified, decision) = self.decide(sql, app);
        if let Some(message) = decision.block {
            return Judged {
                local: Some(Local::Refuse(
                    SqlState::INSUFFICIENT_PRIVILEGE,
                    message.to_owned(),
                )),
                ..primary(false)
            };
        }
        // With default_transaction_read_only on, a plain BEGIN opens a read-only
        // transaction: a replica serves it as the primary would.
        let read_only_begin = read_only_session
            && classified.begins == Some(false)
            && classified.statements == 1
            && !classified.normalized.contains("read write");
        let writes = decision.reason.is_write() && !read_only_begin;
        let target = match hint.route.or(self.session_route) {
            Some(route) if !writes => route,
            _ if read_only_begin => RouteTarget::Replica,
            _ => decision.target,
        };
        let mut want = match target {
            RouteTarget::Primary => Want::Primary,
            RouteTarget::Replica => Want::Read { any: false },
            RouteTarget::Any => Want::Read { any: true },
        };
        // State a statement leaves in the session stays on the connection it ran on, and
        // the session with it: that must be the primary. A hot standby runs no
        // serializable transaction.
        // DISCARD, DEALLOCATE, advisory unlocks and the like act on the session's own
        // connection state: where it lives, on the primary.
        if want != Want::Primary {
            let found = effects::effects(sql);
            let serializable =
                classified.begins.is_some() && classified.normalized.contains("serializable");
            // So do settings: read back after the transaction where they were made (a
            // default of serializable isolation cannot be read back on a standby); a
            // prepared SET is judged so at each Bind of it.
            if found.pin.is_some() || found.may_clear || found.settings || serializable {
                want = Want::Primary;
            }
        }
        let defines_functions = classified.kind == crate::router::StatementKind::Ddl
            && (classified.normalized.contains("function")
                || classified.normalized.contains("procedure"));
        Judged {
            defines_functions,
            want,
            writes,
            timeout: decision.timeout,
            local: None,
        }
    }

    /// The router's classification of `sql` and its decision for this session.
    fn decide(&self, sql: &[u8], app: &str) -> (Arc<Classified>, Decision<'_>) {
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
        (classified, decision)
    }

    /// EXPLAIN ROUTE's rows for `sql`, as this session would route it now.
    fn explain(&self, sql: &[u8], app: &str) -> Vec<Vec<String>> {
        let (classified, decision) = self.decide(sql, app);
        let mut rows: Vec<Vec<String>> = router::explain(&classified, &decision)
            .into_iter()
            .map(|(field, value)| vec![field.to_owned(), value])
            .collect();
        // What this session does with it, past the rules: session state, serializable
        // isolation and the client's own route setting have their say.
        // (Judged as a Bind's statement: no hints or intercepts, so no recursion.)
        let session = self.judge_sql(Frontend::Bind, sql, false, app, false);
        let target = match session.want {
            Want::Primary => "primary",
            Want::Read { any: false } => "replica",
            Want::Read { any: true } => "any",
        };
        rows.push(vec!["session_target".to_owned(), target.to_owned()]);
        let route = self.session_route.map_or("default", RouteTarget::as_str);
        rows.push(vec!["session_route".to_owned(), route.to_owned()]);
        rows.push(vec!["read_floor".to_owned(), self.read_floor().to_string()]);
        rows
    }
}

/// A statement that fails on the server with `code` and `message` (PL/pgSQL's RAISE).
pub(super) fn refusal_sql(code: &SqlState, message: &str) -> String {
    let message = message.replace('\'', "''").replace("$pgstrata$", "");
    format!(
        "DO $pgstrata$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = '{message}'; END$pgstrata$",
        code.code()
    )
}
