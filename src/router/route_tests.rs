use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::router::StatementKind;
use crate::rules::RuleAction;
use RouteTarget::{Any, Primary, Replica};

fn rule(name: &str, matcher: RuleMatch, action: RuleAction) -> RouteRule {
    RouteRule {
        name: name.into(),
        matcher,
        action,
    }
}

fn strings(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

fn route(target: RouteTarget) -> RuleAction {
    RuleAction {
        route: Some(target),
        ..RuleAction::default()
    }
}

fn config(rules: Vec<RouteRule>) -> RoutingConfig {
    RoutingConfig {
        rules,
        write_functions: vec!["App_Bump".into()],
        check_interval: Duration::from_secs(1),
        fail_after: 3,
        recover_after: 3,
    }
}

fn test_rules() -> Vec<RouteRule> {
    vec![
        rule(
            "blocked",
            RuleMatch {
                kinds: Some(vec![StatementKind::Truncate]),
                ..Default::default()
            },
            RuleAction {
                block: Some("no truncate".into()),
                ..Default::default()
            },
        ),
        rule(
            "reports",
            RuleMatch {
                application_names: strings(&["reports"]),
                ..Default::default()
            },
            RuleAction {
                route: Some(Replica),
                timeout: Some(Duration::from_secs(30)),
                cache: Some(CachePolicy::Ttl(Duration::from_secs(5))),
                ..Default::default()
            },
        ),
        rule(
            "fresh",
            RuleMatch {
                tables_read: strings(&["Ledger"]),
                ..Default::default()
            },
            route(Primary),
        ),
        rule(
            "any",
            RuleMatch {
                sql: Some(regex::Regex::new(r"from lookup\b").unwrap()),
                ..Default::default()
            },
            route(Any),
        ),
        rule(
            "bob",
            RuleMatch {
                users: strings(&["bob"]),
                databases: strings(&["app"]),
                tables_written: strings(&["audit"]),
                ..Default::default()
            },
            route(Replica),
        ),
    ]
}

const CTX: RequestCtx = RequestCtx {
    user: "alice",
    database: "app",
    application_name: "web",
};

#[test]
fn decides() {
    let router = Router::new(&config(test_rules()));
    let reports = RequestCtx {
        application_name: "reports",
        ..CTX
    };
    let bob = RequestCtx { user: "bob", ..CTX };
    let dynamic: HashSet<String> = ["my_volatile".to_string()].into();
    #[rustfmt::skip]
    let cases: &[(&str, RequestCtx, RouteTarget, Option<&str>, Reason)] = &[
        ("select * from t", CTX, Replica, None, Reason::Read),
        ("insert into t values (1)", CTX, Primary, None, Reason::Write),
        ("selec 1", CTX, Primary, None, Reason::Unparsed),
        ("select nextval('s')", CTX, Primary, None, Reason::WriteFunction("nextval".into())),
        ("select pg_catalog.pg_advisory_lock(1)", CTX, Primary, None, Reason::WriteFunction("pg_advisory_lock".into())),
        ("select app_bump(1)", CTX, Primary, None, Reason::WriteFunction("app_bump".into())),
        ("select my_volatile()", CTX, Primary, None, Reason::WriteFunction("my_volatile".into())),
        ("begin read only", CTX, Replica, None, Reason::BeginReadOnly),
        ("begin", CTX, Primary, None, Reason::Write),
        ("truncate t", CTX, Primary, Some("blocked"), Reason::Write),
        ("select * from t", reports, Replica, Some("reports"), Reason::Rule),
        ("delete from t", reports, Primary, Some("reports"), Reason::RuleOverruled(Box::new(Reason::Write))),
        ("select * from app.ledger", CTX, Primary, Some("fresh"), Reason::Rule),
        ("select * from ledgers", CTX, Replica, None, Reason::Read),
        ("SELECT * FROM lookup WHERE id = 7", CTX, Any, Some("any"), Reason::Rule),
        ("SELECT setval('s', 1) FROM lookup", CTX, Primary, Some("any"),
            Reason::RuleOverruled(Box::new(Reason::WriteFunction("setval".into())))),
        ("insert into audit values (1)", bob, Primary, Some("bob"), Reason::RuleOverruled(Box::new(Reason::Write))),
        ("insert into audit values (1)", CTX, Primary, None, Reason::Write),
    ];
    for (sql, ctx, target, rule, reason) in cases {
        let c = router.classify(sql.as_bytes());
        let d = router.decide(&c, ctx, &dynamic);
        assert_eq!(
            (d.target, d.rule, &d.reason),
            (*target, *rule, reason),
            "{sql}"
        );
    }
}

#[test]
fn rules_supply_block_timeout_and_cache() {
    let router = Router::new(&config(test_rules()));
    let none = HashSet::new();
    let reports = RequestCtx {
        application_name: "reports",
        ..CTX
    };
    let c = router.classify(b"truncate t");
    assert_eq!(router.decide(&c, &CTX, &none).block, Some("no truncate"));
    let c = router.classify(b"select 1");
    let d = router.decide(&c, &reports, &none);
    assert_eq!(d.timeout, Some(Duration::from_secs(30)));
    assert_eq!(d.cache, Some(&CachePolicy::Ttl(Duration::from_secs(5))));
    let c = router.classify(b"update t set a = 1");
    assert_eq!(
        router.decide(&c, &reports, &none).cache,
        Some(&CachePolicy::Never)
    );
}

#[test]
fn client_routes_cannot_move_writes() {
    let router = Router::new(&config(Vec::new()));
    let none = HashSet::new();
    let read = router.classify(b"select 1");
    let d = router.decide(&read, &CTX, &none).with_client_route(Primary);
    assert_eq!(d.target, Primary);
    let write = router.classify(b"delete from t");
    let d = router
        .decide(&write, &CTX, &none)
        .with_client_route(Replica);
    assert_eq!((d.target, d.reason.is_write()), (Primary, true));
}

#[test]
fn table_names_match_with_or_without_schema() {
    let cases: &[(&str, &str, bool)] = &[
        ("t", "t", true),
        ("t", "S.T", true),
        ("s.t", "s.t", true),
        ("s.t", "t", false),
        ("t", "st", false),
        ("t", "s.tt", false),
        ("é", "s.é", true),
        ("x", "é", false),
    ];
    for (rule, table, want) in cases {
        assert_eq!(table_matches(rule, table), *want, "{rule} / {table}");
    }
}
