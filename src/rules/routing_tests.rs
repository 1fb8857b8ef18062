//! Tests of the routing section and the replica/database fields routing reads: defaults,
//! the full form, and every problem with its exact `file:line:column: path: message`.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::router::{RouteTarget, StatementKind};

const FILE: &str = "rules/test.yaml";

/// Everything before `routing:` in the cases below (lines 1–9).
const HEAD: &str = "\
listen: { address: 127.0.0.1:6432 }
clusters:
  main:
    primary: { host: db, port: 5432 }
    replicas: [{ host: r1, port: 5433 }]
databases:
  app: { cluster: main }
  other: { cluster: main }
users: { app: { auth: trust }, zed: { auth: trust } }
";

fn load_ok(yaml: &str) -> Config {
    load_str(yaml, Path::new(FILE), &|_| None).unwrap_or_else(|errors| panic!("{errors}"))
}

fn problems(yaml: &str) -> Vec<String> {
    match load_str(yaml, Path::new(FILE), &|_| None) {
        Ok(_) => panic!("loaded, but problems were expected:\n{yaml}"),
        Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
    }
}

#[test]
fn routing_defaults() {
    let config = load_ok(HEAD);
    let routing = &config.routing;
    assert!(routing.rules.is_empty() && routing.write_functions.is_empty());
    assert_eq!(routing.check_interval, Duration::from_millis(100));
    assert_eq!((routing.fail_after, routing.recover_after), (1, 3));
    let main = &config.clusters["main"];
    assert_eq!(main.monitor_user, "app");
    assert_eq!(main.replicas[0].max_lag_bytes, None);
    let app = &config.databases["app"];
    assert_eq!(app.consistency, Consistency::Session);
    assert!(!app.include_primary_in_reads);
    // An empty section is the same as none.
    let config = load_ok(&format!("{HEAD}routing: {{}}\n"));
    assert_eq!(config.routing.check_interval, Duration::from_millis(100));
}

#[test]
fn routing_full_form() {
    let yaml = HEAD
        .replace("port: 5433 }", "port: 5433, max_lag_bytes: 16777216 }")
        .replace("    replicas:", "    monitor_user: zed\n    replicas:")
        .replace(
            "app: { cluster: main }",
            "app: { cluster: main, consistency: eventual, include_primary_in_reads: true }",
        )
        + "\
routing:
  check_interval: 250ms
  fail_after: 2
  recover_after: 5
  write_functions: [audit_log, \"App.Bump\", audit_log]
  rules:
    - name: no-unbounded-delete
      match:
        kind: delete
        tables: [Orders, public.users]
        sql: '^delete from [^ ]+$'
        user: app
        database: [app, other]
        application_name: [psql]
      block: DELETE without WHERE is not allowed
    - match: { tables_read: reports, tables_written: [audit], kind: [select, show] }
      route: replica
      timeout: 30s
      cache: { ttl: 60s }
    - { match: {}, cache: never }
";
    let config = load_ok(&yaml);
    assert_eq!(config.clusters["main"].monitor_user, "zed");
    assert_eq!(
        config.clusters["main"].replicas[0].max_lag_bytes,
        Some(16 << 20)
    );
    let app = &config.databases["app"];
    assert_eq!(app.consistency, Consistency::Eventual);
    assert!(app.include_primary_in_reads);
    let routing = &config.routing;
    assert_eq!(routing.check_interval, Duration::from_millis(250));
    assert_eq!((routing.fail_after, routing.recover_after), (2, 5));
    assert_eq!(routing.write_functions, ["audit_log", "bump"]);

    let [block, report, rest] = &routing.rules[..] else {
        panic!("three rules: {:?}", routing.rules);
    };
    assert_eq!(block.name, "no-unbounded-delete");
    let m = &block.matcher;
    assert_eq!(m.kinds.as_deref(), Some(&[StatementKind::Delete][..]));
    assert_eq!(
        m.tables.as_deref(),
        Some(&["orders".to_owned(), "public.users".to_owned()][..])
    );
    let sql = m.sql.as_ref().expect("a regex");
    assert!(sql.is_match("delete from orders") && !sql.is_match("delete from t where id = ?"));
    assert_eq!(m.users.as_deref(), Some(&["app".to_owned()][..]));
    assert_eq!(m.databases.as_ref().map(Vec::len), Some(2));
    assert_eq!(
        m.application_names.as_deref(),
        Some(&["psql".to_owned()][..])
    );
    assert_eq!(
        block.action.block.as_deref(),
        Some("DELETE without WHERE is not allowed")
    );
    assert_eq!(block.action.route, None);

    assert_eq!(report.name, "routing.rules[1]");
    let kinds = [StatementKind::Select, StatementKind::Show];
    assert_eq!(report.matcher.kinds.as_deref(), Some(&kinds[..]));
    assert_eq!(
        report.matcher.tables_read.as_deref(),
        Some(&["reports".to_owned()][..])
    );
    assert_eq!(
        report.matcher.tables_written.as_deref(),
        Some(&["audit".to_owned()][..])
    );
    assert!(report.matcher.tables.is_none() && report.matcher.sql.is_none());
    assert_eq!(report.action.route, Some(RouteTarget::Replica));
    assert_eq!(report.action.timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        report.action.cache,
        Some(CachePolicy::Ttl(Duration::from_secs(60)))
    );

    assert_eq!(rest.name, "routing.rules[2]");
    assert!(rest.matcher.kinds.is_none() && rest.matcher.users.is_none());
    assert_eq!(rest.action.cache, Some(CachePolicy::Never));
}

#[test]
fn routing_problems_are_all_collected() {
    let yaml = HEAD
        .replace("port: 5433 }", "port: 5433, max_lag_bytes: 0 }")
        .replace("    replicas:", "    monitor_user: nobody\n    replicas:")
        + "\
routing:
  check_interval: 5ms
  fail_after: 0
  recover_after: 0
  write_functions: [\"\", app.]
  rules:
    - name: twice
      match: { kind: [], user: [app, ghost], database: nope }
      block: \"\"
      route: primary
      timeout: 1s
    - name: twice
      match: { tables: [a.b.c, \"\"], application_name: [\"\"] }
    - match: { sql: '^delete from [^ +$' }
      timeout: 0s
      cache: { ttl: 0s }
    - route: any
    - { name: \"\", match: {}, cache: { ttl: soon } }
";
    let expected = [
        "rules/test.yaml:5:19: clusters.main.monitor_user: user \"nobody\" is not defined",
        "rules/test.yaml:6:55: clusters.main.replicas[0].max_lag_bytes: must be at least 1",
        "rules/test.yaml:12:19: routing.check_interval: must be between 10ms and 60s",
        "rules/test.yaml:13:15: routing.fail_after: must be at least 1",
        "rules/test.yaml:14:18: routing.recover_after: must be at least 1",
        "rules/test.yaml:15:21: routing.write_functions[0]: function name must not be empty",
        "rules/test.yaml:15:25: routing.write_functions[1]: function name must not be empty",
        "rules/test.yaml:18:22: routing.rules[0].match.kind: must not be empty (leave the \
         condition out to match anything)",
        "rules/test.yaml:18:38: routing.rules[0].match.user[1]: user \"ghost\" is not defined",
        "rules/test.yaml:18:56: routing.rules[0].match.database: database \"nope\" is not defined",
        "rules/test.yaml:19:14: routing.rules[0].block: must not be empty",
        "rules/test.yaml:20:14: routing.rules[0].route: route cannot be combined with block",
        "rules/test.yaml:21:16: routing.rules[0].timeout: timeout cannot be combined with block",
        "rules/test.yaml:22:7: routing.rules[1]: a rule needs an action: route, block, timeout \
         or cache",
        "rules/test.yaml:22:13: routing.rules[1].name: rule name \"twice\" is already used by \
         routing.rules[0]",
        "rules/test.yaml:23:25: routing.rules[1].match.tables[0]: invalid table \"a.b.c\": \
         expected table or schema.table",
        "rules/test.yaml:23:32: routing.rules[1].match.tables[1]: invalid table \"\": expected \
         table or schema.table",
        "rules/test.yaml:23:56: routing.rules[1].match.application_name[0]: must not be empty",
        "rules/test.yaml:24:21: routing.rules[2].match.sql: invalid regex: unclosed character \
         class",
        "rules/test.yaml:25:16: routing.rules[2].timeout: must be greater than 0",
        "rules/test.yaml:26:21: routing.rules[2].cache.ttl: must be greater than 0",
        "rules/test.yaml:27:7: routing.rules[3]: a rule needs match: (write `match: {}` to \
         match every statement)",
        "rules/test.yaml:28:15: routing.rules[4].name: must not be empty",
        "rules/test.yaml:28:44: routing.rules[4].cache.ttl: invalid duration \"soon\": expected \
         an integer followed by a unit (ms, s, m or h), e.g. \"250ms\", \"5s\", \"10m\", \"1h\"",
    ];
    assert_eq!(problems(&yaml), expected);
}

#[test]
fn routing_parse_errors_have_location_and_path() {
    let rule = |body: &str| format!("{HEAD}routing:\n  rules:\n    - {body}\n");
    let kinds = "select, show, explain, insert, update, delete, merge, copy, ddl, truncate, \
                 lock, maintenance, listen, notify, transaction, set, call, prepared, other";
    let cases = [
        (
            rule("{ match: {}, route: replica, retries: 3 }"),
            "rules/test.yaml:12:36: routing.rules[0].retries: unknown field `retries`, expected \
             one of name, match, route, block, timeout, cache"
                .to_owned(),
        ),
        (
            rule("{ match: { table: [t] }, route: replica }"),
            "rules/test.yaml:12:18: routing.rules[0].match.table: unknown field `table`, expected \
             one of kind, tables, tables_read, tables_written, sql, user, database, \
             application_name"
                .to_owned(),
        ),
        // A single value is checked inside the one-or-many visitor: placed at its key.
        (
            rule("{ match: { kind: selekt }, route: replica }"),
            format!(
                "rules/test.yaml:12:18: routing.rules[0].match.kind: unknown variant `selekt`, \
                 expected one of {kinds}"
            ),
        ),
        (
            rule("{ match: { kind: [select, upsert] }, route: replica }"),
            format!(
                "rules/test.yaml:12:33: routing.rules[0].match.kind[1]: unknown variant `upsert`, \
                 expected one of {kinds}"
            ),
        ),
        (
            rule("{ match: {}, route: standby }"),
            "rules/test.yaml:12:27: routing.rules[0].route: unknown variant `standby`, expected \
             one of primary, replica, any"
                .to_owned(),
        ),
        (
            rule("{ match: {}, cache: sometimes }"),
            "rules/test.yaml:12:27: routing.rules[0].cache: unknown variant `sometimes`, \
             expected one of never, ttl"
                .to_owned(),
        ),
        (
            format!("{HEAD}routing:\n  fail_after: -1\n"),
            "rules/test.yaml:11:15: routing.fail_after: invalid u32".to_owned(),
        ),
        (
            HEAD.replace(
                "app: { cluster: main }",
                "app: { cluster: main, consistency: strong }",
            ),
            "rules/test.yaml:7:38: databases.app.consistency: unknown variant `strong`, expected \
             one of session, eventual"
                .to_owned(),
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(problems(&yaml), [expected], "{yaml}");
    }
}

/// Every file in `rules/examples/` is a complete, valid rules file.
#[test]
fn examples_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/examples");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("rules/examples exists") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable example");
            let env = |name: &str| name.starts_with("PGSTRATA_").then(|| "pw".to_owned());
            if let Err(errors) = load_str(&text, &path, &env) {
                panic!("{errors}");
            }
            names.push(path.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
    }
    names.sort();
    let expected = ["firewall.yaml", "reporting-to-replicas.yaml"].map(|n| Some(n.to_owned()));
    assert_eq!(names, expected);
}
