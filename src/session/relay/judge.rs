//! Judging a client statement for routing: where it may run, whether it writes, and
//! whether the proxy answers it itself (route settings, EXPLAIN ROUTE, a rule's block).

use std::time::Duration;

use super::routing::{Context, Routing, Want};
use crate::protocol::frame::cstr;
use crate::protocol::message::Frontend;
use crate::router::{self, Intercept, RequestCtx, RouteTarget};
use crate::session::statements::bind_names;
use crate::sql::effects;

/// What a statement asks of routing.
pub(super) struct Judged {
    pub(super) want: Want,
    pub(super) writes: bool,
    pub(super) timeout: Option<Duration>,
    pub(super) local: Option<Local>,
}

/// A statement the proxy answers itself.
pub(super) enum Local {
    Intercept(Intercept),
    Block(String),
    Explain(Vec<Vec<String>>),
}

impl Routing {
    /// Classifies a Query, Parse or Bind (by its statement). None: nothing to judge by;
    /// Err: the names of a Bind have not all arrived.
    pub(super) fn judge(
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
        let mut judged = self.judge_sql(kind, sql, unreadable, cx.application_name);
        if cx.serializable {
            judged.want = Want::Primary;
        }
        Some(Ok(judged))
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
        // the session with it: that must be the primary. A hot standby runs no
        // serializable transaction.
        if want != Want::Primary
            && (effects::effects(sql).pin.is_some()
                || (classified.begins.is_some() && classified.normalized.contains("serializable")))
        {
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
