//! `EXPLAIN ROUTE`: how a statement was classified and routed, as (field, value) rows the
//! proxy returns as a two-column result set.

use std::time::Duration;

use super::classify::Classified;
use super::route::Decision;
use crate::rules::CachePolicy;

/// What an empty list or an absent setting shows.
const NONE: &str = "none";

/// The rows for `c` routed as `d`, in a fixed order.
pub fn explain(c: &Classified, d: &Decision<'_>) -> Vec<(&'static str, String)> {
    vec![
        ("kind", c.kind.to_string()),
        ("access", c.access.to_string()),
        ("parsed", c.parsed.to_string()),
        ("target", d.target.to_string()),
        ("reason", d.reason.to_string()),
        ("rule", d.rule.unwrap_or(NONE).to_owned()),
        ("block", d.block.unwrap_or(NONE).to_owned()),
        (
            "timeout",
            d.timeout.map_or_else(|| NONE.to_owned(), duration),
        ),
        ("cache", cache(c, d)),
        ("tables_read", list(&c.tables_read)),
        ("tables_written", list(&c.tables_written)),
        ("functions", list(&c.functions)),
        ("normalized", c.normalized.to_string()),
        ("fingerprint", format!("{:032x}", c.hash)),
    ]
}

/// The result-cache decision: never for writes and what could not be read.
fn cache(c: &Classified, d: &Decision<'_>) -> String {
    if !c.parsed || d.reason.is_write() {
        return "never".into();
    }
    match d.cache {
        Some(CachePolicy::Never) => "never".into(),
        Some(CachePolicy::Ttl(ttl)) => format!("ttl {}", duration(*ttl)),
        None => NONE.into(),
    }
}

/// `5s`, `250ms`, the way rules files write durations.
fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        NONE.into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::router::{RequestCtx, Router};
    use crate::rules::{RouteRule, RoutingConfig, RuleAction, RuleMatch};

    fn router() -> Router {
        Router::new(&RoutingConfig {
            rules: vec![RouteRule {
                name: "hot".into(),
                matcher: RuleMatch {
                    tables: Some(vec!["hot".into()]),
                    ..RuleMatch::default()
                },
                action: RuleAction {
                    timeout: Some(Duration::from_millis(1500)),
                    cache: Some(CachePolicy::Ttl(Duration::from_secs(5))),
                    ..RuleAction::default()
                },
            }],
            write_functions: Vec::new(),
            check_interval: Duration::from_secs(1),
            fail_after: 1,
            recover_after: 1,
        })
    }

    fn rows(sql: &str) -> Vec<(&'static str, String)> {
        let router = router();
        let ctx = RequestCtx {
            user: "u",
            database: "d",
            application_name: "",
        };
        let c = router.classify(sql.as_bytes());
        explain(&c, &router.decide(&c, &ctx, &HashSet::new()))
    }

    #[test]
    fn explains_a_read_under_a_rule() {
        let c = crate::router::classify("SELECT a FROM public.hot WHERE id = 1");
        let want: Vec<(&str, String)> = [
            ("kind", "select"),
            ("access", "read"),
            ("parsed", "true"),
            ("target", "replica"),
            ("reason", "read"),
            ("rule", "hot"),
            ("block", "none"),
            ("timeout", "1500ms"),
            ("cache", "ttl 5s"),
            ("tables_read", "public.hot"),
            ("tables_written", "none"),
            ("functions", "none"),
            ("normalized", "select a from public.hot where id = ?"),
        ]
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .chain([("fingerprint", format!("{:032x}", c.hash))])
        .collect();
        assert_eq!(rows("SELECT a FROM public.hot WHERE id = 1"), want);
    }

    #[test]
    fn writes_are_never_cached() {
        let field = |rows: &[(&str, String)], name: &str| {
            rows.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let update = rows("UPDATE hot SET a = nextval('s')");
        assert_eq!(field(&update, "cache").as_deref(), Some("never"));
        assert_eq!(field(&update, "target").as_deref(), Some("primary"));
        assert_eq!(field(&update, "functions").as_deref(), Some("nextval"));
        let unparsed = rows("SELEC 1");
        assert_eq!(field(&unparsed, "cache").as_deref(), Some("never"));
        assert_eq!(
            field(&unparsed, "reason").as_deref(),
            Some("unparsed (treated as a write)")
        );
        let plain = rows("select 1");
        assert_eq!(field(&plain, "cache").as_deref(), Some("none"));
    }
}
