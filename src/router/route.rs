//! Where a classified statement goes: the first matching rule, then the statement's own
//! access. No rule can send a write to a replica.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, Counter};

use super::cache::ParseCache;
use super::classify::{Access, Classified};
use super::functions::is_builtin_write_function;
use super::kind::RouteTarget;
use crate::rules::{CachePolicy, RouteRule, RoutingConfig, RuleMatch};

/// Who sends a statement, for rules that match on it.
#[derive(Debug, Clone, Copy)]
pub struct RequestCtx<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub application_name: &'a str,
}

/// Why a statement goes where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The statement writes.
    Write,
    /// The parser could not read it: a write.
    Unparsed,
    /// It calls this write function.
    WriteFunction(String),
    /// A read.
    Read,
    /// It reads state kept by each server itself (statistics, locks, prepared
    /// transactions): the primary's is the one a direct connection would show.
    ServerLocal,
    /// It opens a READ ONLY transaction.
    BeginReadOnly,
    /// A rule chose the target of this read.
    Rule,
    /// A rule asked for a replica (or any server) but the statement writes: kept on the primary.
    RuleOverruled(Box<Reason>),
    /// The client asked for a replica (or any server) but the statement writes.
    ClientOverruled(Box<Reason>),
}

impl Reason {
    /// Whether the statement writes (the result cache keeps none of these).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Reason::Write
                | Reason::Unparsed
                | Reason::WriteFunction(_)
                | Reason::RuleOverruled(_)
                | Reason::ClientOverruled(_)
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Write => f.write_str("write"),
            Reason::Unparsed => f.write_str("unparsed (treated as a write)"),
            Reason::WriteFunction(name) => write!(f, "calls write function {name}"),
            Reason::Read => f.write_str("read"),
            Reason::ServerLocal => f.write_str("reads state of the server itself"),
            Reason::BeginReadOnly => f.write_str("read-only transaction"),
            Reason::Rule => f.write_str("rule"),
            Reason::RuleOverruled(why) => {
                write!(f, "{why}: a rule may not send a write to a replica")
            }
            Reason::ClientOverruled(why) => {
                write!(f, "{why}: a client route may not send a write to a replica")
            }
        }
    }
}

/// What to do with one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'r> {
    pub target: RouteTarget,
    /// The matching rule's name.
    pub rule: Option<&'r str>,
    pub reason: Reason,
    /// Refuse the statement with this message (SQLSTATE 42501).
    pub block: Option<&'r str>,
    /// statement_timeout for the statement.
    pub timeout: Option<Duration>,
    /// The matching rule's result-cache policy; `Never` for writes whatever the rule says.
    pub cache: Option<&'r CachePolicy>,
}

impl Decision<'_> {
    /// Applies a target the client asked for (a `route=` hint, `SET pgstrata.route`): like a
    /// rule's, it cannot send a write to a replica.
    pub fn with_client_route(mut self, target: RouteTarget) -> Self {
        if !self.reason.is_write() {
            self.target = target;
        } else if target != RouteTarget::Primary {
            self.reason = Reason::ClientOverruled(Box::new(self.reason));
        }
        self
    }
}

static NEVER: CachePolicy = CachePolicy::Never;

/// Routing for one rules snapshot: its rules, write functions, hit counters and a parse cache.
pub struct Router {
    rules: Vec<RouteRule>,
    /// One per rule, in rule order: `pgstrata_rule_hits_total{rule}`.
    hits: Vec<Counter>,
    write_functions: HashSet<String>,
    cache: ParseCache,
}

impl Router {
    /// Whether any rule may act on a statement: without rules (and without replicas) a
    /// statement needs no classification at all.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// A router with a new parse cache.
    pub fn new(config: &RoutingConfig) -> Router {
        Router::with_cache(config, ParseCache::default())
    }

    /// A router that shares `cache`: classification does not depend on the rules, so a
    /// reload may keep the old snapshot's cache.
    pub fn with_cache(config: &RoutingConfig, cache: ParseCache) -> Router {
        let hits = config
            .rules
            .iter()
            .map(|rule| counter!("pgstrata_rule_hits_total", "rule" => rule.name.clone()))
            .collect();
        Router {
            rules: config.rules.clone(),
            hits,
            write_functions: config
                .write_functions
                .iter()
                .map(|f| f.to_lowercase())
                .collect(),
            cache,
        }
    }

    /// Classifies `sql`, from the parse cache when possible.
    pub fn classify(&self, sql: &[u8]) -> Arc<Classified> {
        self.cache.classify(sql)
    }

    pub fn cache(&self) -> &ParseCache {
        &self.cache
    }

    /// Decides where `c` goes. `dynamic` holds more write functions (lower-case), e.g. the
    /// volatile functions found in pg_proc; it may be empty.
    pub fn decide(
        &self,
        c: &Classified,
        ctx: &RequestCtx<'_>,
        dynamic: &HashSet<String>,
    ) -> Decision<'_> {
        let own = self.own_reason(c, dynamic);
        let own_target = match own {
            _ if own.is_write() => RouteTarget::Primary,
            Reason::ServerLocal => RouteTarget::Primary,
            _ => RouteTarget::Replica,
        };
        let Some((index, rule)) = self.matching_rule(c, ctx) else {
            return Decision {
                target: own_target,
                rule: None,
                reason: own,
                block: None,
                timeout: None,
                cache: None,
            };
        };
        self.hits[index].increment(1);
        let action = &rule.action;
        let (target, reason) = match action.route {
            None => (own_target, own),
            Some(target) if !own.is_write() => (target, Reason::Rule),
            Some(RouteTarget::Primary) => (RouteTarget::Primary, own),
            Some(_) => (RouteTarget::Primary, Reason::RuleOverruled(Box::new(own))),
        };
        let cache = match reason.is_write() {
            true => action.cache.as_ref().map(|_| &NEVER),
            false => action.cache.as_ref(),
        };
        Decision {
            target,
            rule: Some(&rule.name),
            reason,
            block: action.block.as_deref(),
            timeout: action.timeout,
            cache,
        }
    }

    /// The statement's own reason: write, write function, unparsed or read.
    fn own_reason(&self, c: &Classified, dynamic: &HashSet<String>) -> Reason {
        if !c.parsed {
            return Reason::Unparsed;
        }
        if c.access == Access::Write {
            return Reason::Write;
        }
        let write_function = c.functions.iter().find(|f| {
            is_builtin_write_function(f)
                || self.write_functions.contains(f.as_str())
                || dynamic.contains(f.as_str())
        });
        match (write_function, c.begins) {
            (Some(name), _) => Reason::WriteFunction(name.clone()),
            (None, Some(true)) => Reason::BeginReadOnly,
            (None, _) if reads_server_local(c) => Reason::ServerLocal,
            (None, _) => Reason::Read,
        }
    }

    fn matching_rule(&self, c: &Classified, ctx: &RequestCtx<'_>) -> Option<(usize, &RouteRule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| matches(&rule.matcher, c, ctx))
    }
}

/// Views of what one server keeps for itself: a replica has its own, different ones.
const SERVER_LOCAL_VIEWS: &[&str] = &[
    "pg_locks",
    "pg_prepared_xacts",
    "pg_replication_slots",
    "pg_cursors",
    "pg_prepared_statements",
];

/// Whether `c` reads a server's own statistics or state (`pg_stat_*`, `pg_statio_*`,
/// `pg_locks`, …), directly or through `pg_stat_*` functions.
fn reads_server_local(c: &Classified) -> bool {
    let local = |name: &str| {
        let name = name.rsplit('.').next().unwrap_or(name);
        name.starts_with("pg_stat") || SERVER_LOCAL_VIEWS.contains(&name)
    };
    c.tables_read.iter().any(|t| local(t)) || c.functions.iter().any(|f| local(f))
}

/// Whether every condition `m` gives holds for `c` sent by `ctx`.
fn matches(m: &RuleMatch, c: &Classified, ctx: &RequestCtx<'_>) -> bool {
    let all_tables = || c.tables_read.iter().chain(&c.tables_written);
    let names = |wanted: &Option<Vec<String>>, actual: &str| {
        wanted
            .as_ref()
            .is_none_or(|w| w.iter().any(|n| n == actual))
    };
    m.kinds.as_ref().is_none_or(|k| k.contains(&c.kind))
        && m.tables.as_ref().is_none_or(|t| any_table(t, all_tables()))
        && m.tables_read
            .as_ref()
            .is_none_or(|t| any_table(t, c.tables_read.iter()))
        && m.tables_written
            .as_ref()
            .is_none_or(|t| any_table(t, c.tables_written.iter()))
        && m.sql.as_ref().is_none_or(|re| re.is_match(&c.normalized))
        && names(&m.users, ctx.user)
        && names(&m.databases, ctx.database)
        && names(&m.application_names, ctx.application_name)
}

fn any_table<'a>(wanted: &[String], mut actual: impl Iterator<Item = &'a String>) -> bool {
    actual.any(|table| wanted.iter().any(|w| table_matches(w, table)))
}

/// `t` matches `t` and `s.t`; `s.t` matches only `s.t`. Case-insensitive.
pub(crate) fn table_matches(rule: &str, table: &str) -> bool {
    if table.eq_ignore_ascii_case(rule) {
        return true;
    }
    let (table, rule) = (table.as_bytes(), rule.as_bytes());
    !rule.contains(&b'.')
        && table.len() > rule.len()
        && table[table.len() - rule.len() - 1] == b'.'
        && table[table.len() - rule.len()..].eq_ignore_ascii_case(rule)
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
