use super::*;
use StatementKind as K;

const R: Access = Access::Read;
const W: Access = Access::Write;

/// One case per classification rule: sql, kind, access, begins, parsed.
#[rustfmt::skip]
const CASES: &[(&str, StatementKind, Access, Option<bool>, bool)] = &[
    // Reads.
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 1", K::Select, R, None, true),
    ("VALUES (1), (2)", K::Select, R, None, true),
    ("TABLE t", K::Select, R, None, true),
    ("SELECT * FROM t JOIN u USING (a) WHERE x IN (SELECT y FROM v)", K::Select, R, None, true),
    ("WITH x AS (SELECT 1) SELECT * FROM x", K::Select, R, None, true),
    ("SHOW work_mem", K::Show, R, None, true),
    ("SHOW ALL", K::Show, R, None, true),
    ("SHOW TRANSACTION ISOLATION LEVEL", K::Show, R, None, true),
    ("EXPLAIN SELECT * FROM t", K::Explain, R, None, true),
    ("EXPLAIN DELETE FROM t", K::Explain, R, None, true),
    ("EXPLAIN ANALYZE SELECT * FROM t", K::Explain, R, None, true),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", K::Explain, R, None, true),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", K::Explain, R, None, true),
    ("COPY t TO STDOUT", K::Copy, R, None, true),
    ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", K::Copy, R, None, true),
    ("SET search_path TO a, b", K::Set, R, None, true),
    ("SET LOCAL statement_timeout = 5", K::Set, R, None, true),
    ("SET TIME ZONE 'UTC'", K::Set, R, None, true),
    ("SET ROLE bob", K::Set, R, None, true),
    ("RESET work_mem", K::Set, R, None, true),
    ("RESET ALL", K::Set, R, None, true),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", K::Set, R, None, true),
    ("BEGIN READ ONLY", K::Transaction, R, Some(true), true),
    ("START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE", K::Transaction, R, Some(true), true),
    ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", K::Transaction, R, Some(true), true),
    ("SET TRANSACTION READ ONLY", K::Transaction, R, Some(true), true),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", K::Transaction, R, None, true),
    ("COMMIT", K::Transaction, R, None, true),
    ("END", K::Transaction, R, None, true),
    ("ABORT", K::Transaction, R, None, true),
    ("ROLLBACK", K::Transaction, R, None, true),
    ("ROLLBACK TO SAVEPOINT a", K::Transaction, R, None, true),
    ("SAVEPOINT a", K::Transaction, R, None, true),
    ("RELEASE SAVEPOINT a", K::Transaction, R, None, true),
    ("FETCH 10 FROM c", K::Other, R, None, true),
    ("MOVE NEXT IN c", K::Other, R, None, true),
    ("CLOSE c", K::Other, R, None, true),
    ("DECLARE c CURSOR FOR SELECT * FROM t", K::Select, R, None, true),
    ("DISCARD ALL", K::Other, R, None, true),
    ("DEALLOCATE p", K::Prepared, R, None, true),
    ("DEALLOCATE ALL", K::Prepared, R, None, true),
    ("BEGIN READ ONLY; SELECT 1; COMMIT", K::Select, R, Some(true), true),
    ("", K::Other, R, None, true),
    // Writes.
    ("INSERT INTO t VALUES (1)", K::Insert, W, None, true),
    ("INSERT INTO t SELECT * FROM t", K::Insert, W, None, true),
    ("UPDATE t SET a = 1 FROM u WHERE t.id = u.id", K::Update, W, None, true),
    ("DELETE FROM t USING u WHERE t.a = u.a", K::Delete, W, None, true),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", K::Merge, W, None, true),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", K::Select, W, None, true),
    ("WITH x AS (INSERT INTO t VALUES (1) RETURNING a) SELECT a FROM x", K::Select, W, None, true),
    ("CREATE TABLE x (a int)", K::Ddl, W, None, true),
    ("CREATE TEMP TABLE x (a int)", K::Ddl, W, None, true),
    ("CREATE TABLE x AS SELECT * FROM t", K::Ddl, W, None, true),
    ("CREATE INDEX ON t (a)", K::Ddl, W, None, true),
    ("CREATE EXTENSION hstore", K::Ddl, W, None, true),
    ("ALTER TABLE t ADD COLUMN x int", K::Ddl, W, None, true),
    ("DROP TABLE t", K::Ddl, W, None, true),
    ("COMMENT ON TABLE t IS 'x'", K::Ddl, W, None, true),
    ("GRANT SELECT ON t TO bob", K::Ddl, W, None, true),
    ("REVOKE SELECT ON t FROM bob", K::Ddl, W, None, true),
    ("SECURITY LABEL ON TABLE t IS 'x'", K::Ddl, W, None, true),
    ("SELECT * INTO x FROM t", K::Select, W, None, true),
    ("COPY t FROM STDIN", K::Copy, W, None, true),
    ("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", K::Copy, W, None, true),
    ("TRUNCATE t", K::Truncate, W, None, true),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", K::Lock, W, None, true),
    ("VACUUM t", K::Maintenance, W, None, true),
    ("VACUUM", K::Maintenance, W, None, true),
    ("ANALYZE t", K::Maintenance, W, None, true),
    ("ANALYZE", K::Maintenance, W, None, true),
    ("CLUSTER t", K::Maintenance, W, None, true),
    ("REINDEX TABLE t", K::Maintenance, W, None, true),
    ("CHECKPOINT", K::Maintenance, W, None, true),
    ("REFRESH MATERIALIZED VIEW v", K::Maintenance, W, None, true),
    ("LISTEN c", K::Listen, W, None, true),
    ("UNLISTEN *", K::Listen, W, None, true),
    ("NOTIFY c, 'x'", K::Notify, W, None, true),
    ("SELECT * FROM t FOR UPDATE", K::Select, W, None, true),
    ("SELECT * FROM t FOR SHARE", K::Select, W, None, true),
    ("SELECT * FROM t FOR NO KEY UPDATE", K::Select, W, None, false),
    ("SELECT * FROM t FOR KEY SHARE", K::Select, W, None, false),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", K::Select, W, None, true),
    ("PREPARE p AS SELECT 1", K::Prepared, W, None, true),
    ("EXECUTE p(1)", K::Prepared, W, None, true),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", K::Select, W, None, true),
    ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", K::Select, W, None, true),
    ("LOAD 'auto_explain'", K::Other, W, None, true),
    ("DO $$ BEGIN PERFORM 1; END $$", K::Call, W, None, true),
    ("CALL p(1)", K::Call, W, None, true),
    ("SET SESSION AUTHORIZATION bob", K::Set, W, None, true),
    ("SET SESSION AUTHORIZATION DEFAULT", K::Set, W, None, true),
    ("RESET SESSION AUTHORIZATION", K::Set, W, None, true),
    ("BEGIN", K::Transaction, W, Some(false), true),
    ("BEGIN WORK", K::Transaction, W, Some(false), true),
    ("START TRANSACTION", K::Transaction, W, Some(false), true),
    ("BEGIN READ WRITE", K::Transaction, W, Some(false), true),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE", K::Transaction, W, Some(false), true),
    ("SET TRANSACTION READ WRITE", K::Transaction, W, Some(false), true),
    ("PREPARE TRANSACTION 'x'", K::Transaction, W, None, true),
    ("COMMIT PREPARED 'x'", K::Transaction, W, None, true),
    ("SELECT 1; INSERT INTO t VALUES (1)", K::Select, W, None, true),
    ("BEGIN; SELECT 1", K::Select, W, Some(false), true),
    ("EXPLAIN ANALYZE DELETE FROM t", K::Explain, W, None, true),
    ("EXPLAIN (ANALYZE) INSERT INTO t VALUES (1)", K::Explain, W, None, true),
    ("EXPLAIN (ANALYZE 1) UPDATE t SET a = 1", K::Explain, W, None, true),
    ("SELEC 1", K::Other, W, None, false),
    ("SELECT FROM WHERE (", K::Select, W, None, false),
    ("SELECT 1; SELEC 2", K::Select, W, None, false),
];

#[test]
fn classifies_every_case() {
    let mut failures = Vec::new();
    for &(sql, kind, access, begins, parsed) in CASES {
        let c = classify(sql);
        let got = (c.kind, c.access, c.begins, c.parsed);
        if got != (kind, access, begins, parsed) {
            failures.push(format!(
                "{sql}\n   want {:?}\n   got  {got:?}",
                (kind, access, begins, parsed)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// sql, tables read, tables written, functions.
type NamesCase = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

#[test]
fn tables_and_functions() {
    #[rustfmt::skip]
    let cases: &[NamesCase] = &[
        ("select * from S.T join u on true", &["s.t", "u"], &[], &[]),
        ("select * from \"Mixed\"", &["Mixed"], &[], &[]),
        ("insert into t select * from t", &["t"], &["t"], &[]),
        ("insert into t values (nextval('s'))", &[], &["t"], &["nextval"]),
        ("update t set a = (select max(b) from u)", &["u"], &["t"], &["max"]),
        ("delete from t using u where t.a = u.a", &["u"], &["t"], &[]),
        ("with x as (select * from t) select * from x", &["t"], &[], &[]),
        ("with x as (delete from t returning *) select * from x", &[], &["t"], &[]),
        ("select * from generate_series(1, 3), pg_catalog.now()", &[], &[], &["generate_series", "now"]),
        ("select pg_catalog.set_config('a', 'b', false), count(*), count(1)", &[], &[], &["set_config", "count"]),
        ("select * into x from t", &["t"], &["x"], &[]),
        ("create table x as select * from t", &["t"], &["x"], &[]),
        ("copy t to stdout", &["t"], &[], &[]),
        ("copy s.t from stdin", &[], &["s.t"], &[]),
        ("truncate a, b", &[], &["a", "b"], &[]),
        ("lock table s.t in share mode", &[], &["s.t"], &[]),
        ("table s.t", &["s.t"], &[], &[]),
        ("call p(nextval('s'))", &[], &[], &["nextval", "p"]),
        ("select 1; select * from t", &["t"], &[], &[]),
        ("select lower(x) from t where upper(y) = 'a'", &["t"], &[], &["lower", "upper"]),
        ("select * from only t", &["t"], &[], &[]),
        ("select * from \"only\" t", &["only"], &[], &[]),
        ("select * from 'x'", &["?"], &[], &[]),
        ("with recursive r as (select 1 union all select n + 1 from r) select * from r", &[], &[], &[]),
    ];
    for (sql, read, written, functions) in cases {
        let c = classify(sql);
        assert_eq!(c.tables_read, *read, "read: {sql}");
        assert_eq!(c.tables_written, *written, "written: {sql}");
        assert_eq!(c.functions, *functions, "functions: {sql}");
    }
}

#[test]
fn literals_do_not_change_the_classification() {
    let pairs: &[(&str, &str)] = &[
        (
            "select set_config('a', 'b', false)",
            "select set_config('x.y', 'z', false)",
        ),
        (
            "select * from t where a = 1",
            "select * from t where a = 'x'",
        ),
        (
            "EXPLAIN (ANALYZE 0) DELETE FROM t",
            "EXPLAIN (ANALYZE 1) DELETE FROM t",
        ),
        ("DO $$ select 1 $$", "DO $x$ delete from t $x$"),
        ("SET search_path = 'a'", "SET search_path = 'b'"),
        ("COPY t FROM 'a'", "COPY t FROM 'b'"),
        ("select 'SELECT 1; DROP TABLE t'", "select 2"),
        ("select * from 'a'", "select * from 'b'"),
        ("insert into 'a' values (1)", "insert into 'b' values (2)"),
    ];
    for (a, b) in pairs {
        let (a, b) = (classify(a), classify(b));
        assert_eq!(a.hash, b.hash, "{} / {}", a.normalized, b.normalized);
        assert_eq!(a, b);
    }
}

/// `sql` with every plain string and number replaced by another one.
fn other_literals(sql: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    let mut lexer = Lexer::new(sql.as_bytes());
    while let Some((token, span)) = lexer.next_spanned() {
        let replacement = match token {
            Token::Str(_) => "'other value'",
            Token::Literal if sql.as_bytes()[span.start].is_ascii_digit() => "987",
            _ => continue,
        };
        out.push_str(&sql[at..span.start]);
        out.push_str(replacement);
        at = span.end;
    }
    out.push_str(&sql[at..]);
    out
}

#[test]
fn every_case_classifies_alike_with_other_literals() {
    for &(sql, ..) in CASES {
        let other = other_literals(sql);
        assert_eq!(classify(sql), classify(&other), "{sql} / {other}");
    }
}
