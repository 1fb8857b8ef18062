//! Routing benchmarks without a database: classify + decide on a parse-cache hit
//! (pgbench's statement with changing literals) and on a miss (distinct statements).

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pgstrata::router::{RequestCtx, RouteTarget, Router, StatementKind};
use pgstrata::rules::{CachePolicy, RouteRule, RoutingConfig, RuleAction, RuleMatch};

fn rule(name: &str, matcher: RuleMatch, route: Option<RouteTarget>) -> RouteRule {
    RouteRule {
        name: name.into(),
        matcher,
        action: RuleAction {
            route,
            cache: Some(CachePolicy::Ttl(Duration::from_secs(1))),
            ..RuleAction::default()
        },
    }
}

/// Five rules, none of which matches the benchmarked statement: every one is tried.
fn config() -> RoutingConfig {
    let strings = |s: &[&str]| Some(s.iter().map(|s| s.to_string()).collect());
    let rules = vec![
        rule(
            "kinds",
            RuleMatch {
                kinds: Some(vec![StatementKind::Truncate]),
                ..Default::default()
            },
            None,
        ),
        rule(
            "reports",
            RuleMatch {
                application_names: strings(&["reports"]),
                ..Default::default()
            },
            Some(RouteTarget::Replica),
        ),
        rule(
            "ledger",
            RuleMatch {
                tables: strings(&["ledger", "audit"]),
                ..Default::default()
            },
            Some(RouteTarget::Primary),
        ),
        rule(
            "sql",
            RuleMatch {
                sql: regex::Regex::new(r"from lookup_\w+").ok(),
                ..Default::default()
            },
            Some(RouteTarget::Any),
        ),
        rule(
            "admin",
            RuleMatch {
                users: strings(&["admin"]),
                ..Default::default()
            },
            Some(RouteTarget::Primary),
        ),
    ];
    RoutingConfig {
        rules,
        write_functions: vec!["bump".into()],
        check_interval: Duration::from_secs(1),
        fail_after: 3,
        recover_after: 3,
    }
}

fn bench(c: &mut Criterion) {
    let router = Router::new(&config());
    let ctx = RequestCtx {
        user: "app",
        database: "bench",
        application_name: "pgbench",
    };
    let dynamic = HashSet::new();
    let hits: Vec<String> = (0..1000)
        .map(|aid| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {}",
                aid * 7919
            )
        })
        .collect();
    let mut i = 0;
    c.bench_function("route/classify+decide hit", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            let classified = router.classify(black_box(hits[i].as_bytes()));
            black_box(router.decide(&classified, &ctx, &dynamic).target)
        })
    });
    let mut n = 0u64;
    c.bench_function("route/classify+decide miss", |b| {
        b.iter(|| {
            n += 1;
            // A distinct identifier each time: a new fingerprint, so a parse.
            let sql = format!("SELECT abalance, c{n} FROM pgbench_accounts WHERE aid = 1");
            let classified = router.classify(black_box(sql.as_bytes()));
            black_box(router.decide(&classified, &ctx, &dynamic).target)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
