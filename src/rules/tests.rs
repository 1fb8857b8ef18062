//! End-to-end tests of `load_str`: the example file, defaults, and every kind of problem with
//! its exact `file:line:column: path: message` (positions counted by hand from the YAML).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const FILE: &str = "rules/test.yaml";
const APP_PASSWORD: &str = "app-secret-pw";
const REPORTING_PASSWORD: &str = "reporting-secret-pw";

fn env(name: &str) -> Option<String> {
    let value = match name {
        "PGSTRATA_APP_PASSWORD" => APP_PASSWORD,
        "PGSTRATA_REPORTING_PASSWORD" => REPORTING_PASSWORD,
        "DB_HOST" => "db.eu-west-1.internal.example",
        "DB_PORT" => "6543",
        _ => return None,
    };
    Some(value.to_owned())
}

fn load_ok(yaml: &str) -> Config {
    match load_str(yaml, Path::new(FILE), &env) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected problems:\n{errors}"),
    }
}

fn problems(yaml: &str) -> Vec<String> {
    match load_str(yaml, Path::new(FILE), &env) {
        Ok(_) => panic!("loaded, but problems were expected"),
        Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
    }
}

#[test]
fn example_file_loads() {
    let yaml = include_str!("../../rules/pgstrata.yaml");
    let config = match load_str(yaml, Path::new("rules/pgstrata.yaml"), &env) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    assert_eq!(config.listen.address.to_string(), "127.0.0.1:6432");
    assert_eq!(config.listen.max_client_connections, 1000);
    assert_eq!(config.listen.shutdown_timeout, Duration::from_secs(30));
    let metrics = config.metrics.as_ref().map(|m| m.address.to_string());
    assert_eq!(metrics.as_deref(), Some("127.0.0.1:9930"));
    assert_eq!(config.tls.mode, TlsMode::Disable);
    let cert = PathBuf::from("rules/../certs/dev/server.crt");
    assert_eq!(config.tls.cert.as_ref(), Some(&cert));

    let main = &config.clusters["main"];
    assert_eq!(main.primary.to_string(), "127.0.0.1:5432");
    assert_eq!(main.replicas.len(), 1);
    assert_eq!(main.replicas[0].server.port, 5433);
    assert_eq!(main.replicas[0].weight, 1);
    assert_eq!(main.replicas[0].max_lag, Some(Duration::from_secs(1)));

    let app = &config.databases["app"];
    assert_eq!(
        (app.cluster.as_str(), app.server_database.as_str()),
        ("main", "app")
    );
    assert_eq!(app.pool.mode, PoolMode::Transaction);
    assert_eq!((app.pool.size, app.pool.min_idle), (20, 0));
    assert_eq!(app.pool.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(app.max_client_connections, None);
    assert_eq!(app.consistency, Consistency::Session);
    assert!(!app.include_primary_in_reads);
    assert_eq!(main.monitor_user, "app");
    assert_eq!(main.replicas[0].max_lag_bytes, Some(16 << 20));
    let routing = &config.routing;
    assert_eq!(routing.write_functions, ["audit_log", "bump"]);
    let names: Vec<&str> = routing.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["no-unbounded-delete", "reports-on-replicas"]);

    let user = &config.users["app"];
    assert_eq!(user.auth, AuthMethod::ScramSha256);
    assert!(matches!(&user.client_secret, ClientSecret::Password(p) if p.expose() == APP_PASSWORD));
    assert!(user.scram_verifier().is_some());
    let server_password = user.server_password.as_ref().map(Secret::expose);
    assert_eq!(server_password, Some(APP_PASSWORD));
    let reporting = &config.users["reporting"];
    assert_eq!(reporting.auth, AuthMethod::Md5);
    assert!(reporting.scram_verifier().is_none());
}

#[test]
fn defaults_are_applied() {
    let config = load_ok(
        "\
listen:
  address: 127.0.0.1:6432
clusters:
  main:
    primary: { host: db, port: 5432 }
databases:
  app:
    cluster: main
users:
  app:
    auth: scram-sha-256
    password: pw
",
    );
    assert_eq!(config.listen.max_client_connections, 1000);
    assert_eq!(config.listen.shutdown_timeout, Duration::from_secs(30));
    assert!(config.metrics.is_none());
    assert_eq!(config.tls.mode, TlsMode::Disable);
    assert!(config.tls.cert.is_none() && config.tls.key.is_none());
    assert!(config.clusters["main"].replicas.is_empty());
    let app = &config.databases["app"];
    assert_eq!(app.server_database, "app");
    assert_eq!(app.pool.mode, PoolMode::Session);
    assert_eq!((app.pool.size, app.pool.min_idle), (20, 0));
    assert_eq!(app.pool.checkout_timeout, Duration::from_secs(5));
    assert_eq!(app.pool.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(app.pool.max_lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(app.max_client_connections, None);
    let user = &config.users["app"];
    assert_eq!(user.server_user, "app");
    assert_eq!(
        user.server_password.as_ref().map(Secret::expose),
        Some("pw")
    );
}

#[test]
fn zero_turns_off_timeouts_and_caps() {
    let config = load_ok(
        "\
listen: { address: \"[::1]:6432\" }
clusters: { main: { primary: { host: \"::1\", port: 5432 } } }
databases:
  app: { cluster: main, idle_timeout: 0s, max_lifetime: 0ms, max_client_connections: 0 }
  other: { cluster: main, pool_mode: transaction, max_client_connections: 7 }
users: { app: { auth: trust, server_user: postgres } }
",
    );
    assert_eq!(config.clusters["main"].primary.to_string(), "[::1]:5432");
    let app = &config.databases["app"];
    assert_eq!((app.pool.idle_timeout, app.pool.max_lifetime), (None, None));
    assert_eq!(app.max_client_connections, None);
    let other = &config.databases["other"];
    assert_eq!(other.pool.mode, PoolMode::Transaction);
    assert_eq!(other.max_client_connections, Some(7));
    let user = &config.users["app"];
    assert!(matches!(user.client_secret, ClientSecret::None));
    assert!(user.server_password.is_none());
    assert_eq!(user.server_user, "postgres");
}

#[test]
fn client_secret_forms() {
    let verifier = postgres_protocol::password::scram_sha_256(b"pw");
    let md5 = postgres_protocol::password::md5(b"pw", "legacy");
    let config = load_ok(&format!(
        "\
listen: {{ address: 127.0.0.1:6432 }}
clusters: {{ main: {{ primary: {{ host: db, port: 5432 }} }} }}
databases: {{ app: {{ cluster: main }} }}
users:
  stored:
    auth: scram-sha-256
    scram_verifier: \"{verifier}\"
    server_password: other
  legacy:
    auth: md5
    password: {md5}
"
    ));
    let stored = &config.users["stored"];
    assert_eq!(
        stored.scram_verifier(),
        ScramVerifier::parse(&verifier).as_ref()
    );
    assert!(matches!(stored.client_secret, ClientSecret::Scram(_)));
    assert_eq!(
        stored.server_password.as_ref().map(Secret::expose),
        Some("other")
    );
    let legacy = &config.users["legacy"];
    assert!(matches!(&legacy.client_secret, ClientSecret::Md5Hash(h) if h.expose() == md5));
    assert!(legacy.server_password.is_none());
    assert!(legacy.scram_verifier().is_none());
}

#[test]
fn unknown_cluster() {
    let yaml = "\
listen:
  address: 127.0.0.1:6432
clusters:
  main:
    primary: { host: db, port: 5432 }
databases:
  app:
    cluster: eu-2
users:
  app: { auth: trust }
";
    assert_eq!(
        problems(yaml),
        ["rules/test.yaml:8:14: databases.app.cluster: cluster \"eu-2\" is not defined"]
    );
}

#[test]
fn all_semantic_problems_are_collected() {
    let md5 = postgres_protocol::password::md5(b"pw", "hashed");
    let yaml = format!(
        "\
listen:
  address: localhost:6432
  max_client_connections: 0
tls:
  mode: require
  cert: missing.crt
clusters:
  main:
    primary: {{ host: \"\", port: 0 }}
    replicas:
      - {{ host: r1, port: 5433, weight: 0, max_lag: 1sec }}
databases:
  app:
    cluster: main
    pool_size: 0
    min_idle: 3
    checkout_timeout: 0s
    server_database: \"\"
users:
  app:
    auth: scram-sha-256
  rep:
    auth: md5
    scram_verifier: \"SCRAM-SHA-256$x\"
  t:
    auth: trust
    password: nope
  bad:
    auth: scram-sha-256
    scram_verifier: \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB\"
  both:
    auth: scram-sha-256
    password: x
    scram_verifier: \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB\"
  hashed:
    auth: scram-sha-256
    password: {md5}
  m:
    auth: md5
"
    );
    let duration = "invalid duration \"1sec\": expected an integer followed by a unit \
                    (ms, s, m or h), e.g. \"250ms\", \"5s\", \"10m\", \"1h\"";
    let verifier = "malformed SCRAM verifier: expected \
                    \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\" \
                    (base64, 32-byte keys)";
    let expected = [
        "rules/test.yaml:2:12: listen.address: invalid socket address \"localhost:6432\": \
         expected IP:port, e.g. \"127.0.0.1:6432\""
            .to_owned(),
        "rules/test.yaml:3:27: listen.max_client_connections: must be at least 1".to_owned(),
        "rules/test.yaml:5:9: tls.mode: mode require needs tls.key".to_owned(),
        "rules/test.yaml:6:9: tls.cert: file \"rules/missing.crt\" does not exist".to_owned(),
        "rules/test.yaml:9:22: clusters.main.primary.host: must not be empty".to_owned(),
        "rules/test.yaml:9:32: clusters.main.primary.port: must be between 1 and 65535".to_owned(),
        "rules/test.yaml:11:41: clusters.main.replicas[0].weight: must be at least 1".to_owned(),
        format!("rules/test.yaml:11:53: clusters.main.replicas[0].max_lag: {duration}"),
        "rules/test.yaml:15:16: databases.app.pool_size: must be at least 1".to_owned(),
        "rules/test.yaml:16:15: databases.app.min_idle: min_idle (3) must not exceed \
         pool_size (0)"
            .to_owned(),
        "rules/test.yaml:17:23: databases.app.checkout_timeout: must be greater than 0".to_owned(),
        "rules/test.yaml:18:22: databases.app.server_database: must not be empty".to_owned(),
        "rules/test.yaml:21:11: users.app.auth: scram-sha-256 needs a password or a \
         scram_verifier"
            .to_owned(),
        "rules/test.yaml:24:21: users.rep.scram_verifier: scram_verifier only works with auth \
         scram-sha-256; md5 needs password"
            .to_owned(),
        "rules/test.yaml:27:15: users.t.password: auth trust takes no password; remove it"
            .to_owned(),
        format!("rules/test.yaml:30:21: users.bad.scram_verifier: {verifier}"),
        "rules/test.yaml:34:21: users.both.scram_verifier: give either password or \
         scram_verifier, not both"
            .to_owned(),
        "rules/test.yaml:37:15: users.hashed.password: an md5 hash cannot check scram-sha-256 \
         logins; give the plaintext password or a scram_verifier"
            .to_owned(),
        "rules/test.yaml:39:11: users.m.auth: md5 needs a password (plaintext, or \"md5\" and \
         32 hex digits)"
            .to_owned(),
    ];
    assert_eq!(problems(&yaml), expected);
}

#[test]
fn sections_and_names_must_not_be_empty() {
    let cases: [(&str, &[&str]); 2] = [
        (
            "\
listen:
  address: 127.0.0.1:6432
clusters: {}
databases: {}
users: {}
",
            &[
                "rules/test.yaml:4:12: databases: at least one database must be defined",
                "rules/test.yaml:5:8: users: at least one user must be defined",
            ],
        ),
        (
            "\
listen:
  address: 127.0.0.1:6432
clusters:
  \"\": { primary: { host: h, port: 1 } }
databases:
  app: { cluster: \"\" }
users:
  \"\": { auth: trust }
",
            &[
                "rules/test.yaml:4:3: clusters[\"\"]: cluster name must not be empty",
                "rules/test.yaml:8:3: users[\"\"]: user name must not be empty",
            ],
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(problems(yaml), expected, "{yaml}");
    }
}

#[test]
fn parse_errors_have_location_and_path() {
    let head = "listen:\n  address: 127.0.0.1:6432\nclusters:\n  main:\n";
    let tail = "databases:\n  app:\n    cluster: main\nusers:\n  app: { auth: trust }\n";
    let primary = "    primary: { host: db, port: 5432 }\n";
    let unknown_database_field = format!(
        "{head}{primary}databases:\n  app:\n    cluster: main\n    pool_mod: transaction\n\
         users:\n  app: {{ auth: trust }}\n"
    );
    let unknown_flow_field = format!(
        "{head}{primary}databases:\n  app:\n    cluster: main\n\
         users:\n  app: {{ auth: trust, passwd: x }}\n"
    );
    let wrong_type = format!("{head}    primary: {{ host: db, port: five }}\n{tail}");
    let wrong_enum = format!(
        "{head}{primary}databases:\n  app:\n    cluster: main\n\
         users:\n  app: {{ auth: scram }}\n"
    );
    let missing_field = format!("{head}    primary: {{ host: db }}\n{tail}");
    let missing_section = format!("{head}{primary}databases:\n  app:\n    cluster: main\n");
    let duplicate = format!("{head}{primary}{tail}  app: {{ auth: trust }}\n");
    let syntax = "listen:\n  address: \"127.0.0.1:6432\n  max_client_connections: 5\n".to_owned();
    let db_fields = "cluster, server_database, pool_mode, pool_size, min_idle, \
                     checkout_timeout, idle_timeout, max_lifetime, max_client_connections, \
                     consistency, include_primary_in_reads";
    let cases = [
        (
            unknown_database_field,
            format!(
                "rules/test.yaml:9:5: databases.app.pool_mod: unknown field `pool_mod`, \
                 expected one of {db_fields}"
            ),
        ),
        (
            unknown_flow_field,
            "rules/test.yaml:10:23: users.app.passwd: unknown field `passwd`, expected one of \
             auth, password, scram_verifier, server_user, server_password"
                .to_owned(),
        ),
        (
            wrong_type,
            "rules/test.yaml:5:32: clusters.main.primary.port: invalid u16".to_owned(),
        ),
        (
            wrong_enum,
            "rules/test.yaml:10:16: users.app.auth: unknown variant `scram`, expected one of \
             scram-sha-256, md5, trust"
                .to_owned(),
        ),
        (
            missing_field,
            "rules/test.yaml:5:14: clusters.main.primary.port: missing field `port`".to_owned(),
        ),
        (
            missing_section,
            "rules/test.yaml:1:1: users: missing field `users`".to_owned(),
        ),
        (
            duplicate,
            "rules/test.yaml:11:3: users.app: duplicate mapping key: app, set \
             DuplicateKeyPolicy in Options if acceptable"
                .to_owned(),
        ),
        (
            syntax,
            "rules/test.yaml:3:3: invalid indentation in multiline quoted scalar".to_owned(),
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(problems(&yaml), [expected], "{yaml}");
    }
}

#[test]
fn bad_durations() {
    let yaml = "\
listen:
  address: 127.0.0.1:6432
  shutdown_timeout: 5
clusters: { main: { primary: { host: db, port: 5432 } } }
databases:
  app: { cluster: main, idle_timeout: 1.5m, max_lifetime: 2d }
users: { app: { auth: trust } }
";
    let shape = "expected an integer followed by a unit (ms, s, m or h), \
                 e.g. \"250ms\", \"5s\", \"10m\", \"1h\"";
    assert_eq!(
        problems(yaml),
        [
            format!(
                "rules/test.yaml:3:21: listen.shutdown_timeout: invalid duration \"5\": {shape}"
            ),
            format!(
                "rules/test.yaml:6:39: databases.app.idle_timeout: invalid duration \"1.5m\": \
                 {shape}"
            ),
            format!(
                "rules/test.yaml:6:59: databases.app.max_lifetime: invalid duration \"2d\": {shape}"
            ),
        ]
    );
}

#[test]
fn environment_variables() {
    let yaml = "\
listen:
  address: 127.0.0.1:6432
clusters:
  main:
    primary: { host: ${DB_HOST}, port: ${DB_PORT} }
    replicas:
      - { host: ${DB_HOST}, port: 0 }
databases:
  app: { cluster: main }
users:
  app:
    auth: scram-sha-256
    password: ${PGSTRATA_UNSET} # comment: ${NOT_SUBSTITUTED}
";
    // The unset variable is the only problem reported for its line (no "needs a password").
    // The replica port keeps its column despite the longer host before it.
    assert_eq!(
        problems(yaml),
        [
            "rules/test.yaml:7:35: clusters.main.replicas[0].port: must be between 1 and 65535",
            "rules/test.yaml:13:15: users.app.password: environment variable PGSTRATA_UNSET is \
             not set",
        ]
    );
    let fixed = yaml
        .replace("${PGSTRATA_UNSET}", "${PGSTRATA_APP_PASSWORD}")
        .replace("port: 0", "port: 5433");
    let config = load_ok(&fixed);
    let primary = &config.clusters["main"].primary;
    assert_eq!(primary.to_string(), "db.eu-west-1.internal.example:6543");
}

#[test]
fn secrets_stay_secret() {
    let config = load_ok(include_str!("../../rules/pgstrata.yaml"));
    let debug = format!("{config:?}");
    assert!(!debug.contains(APP_PASSWORD) && !debug.contains(REPORTING_PASSWORD));
    assert!(debug.contains("<redacted>"));

    // A secret substituted where it does not fit is named by its variable, never shown.
    let yaml = "\
listen: { address: 127.0.0.1:6432 }
clusters: { main: { primary: { host: db, port: 5432 } } }
databases: { app: { cluster: main } }
users:
  app:
    auth: ${PGSTRATA_APP_PASSWORD}
";
    let errors = problems(yaml);
    assert_eq!(
        errors,
        [
            "rules/test.yaml:6:11: users.app.auth: the value of PGSTRATA_APP_PASSWORD is not \
          valid here: expected one of scram-sha-256, md5, trust"
        ]
    );
    let as_port = yaml
        .replace("port: 5432", "port: ${PGSTRATA_APP_PASSWORD}")
        .replace("auth: ${PGSTRATA_APP_PASSWORD}", "auth: trust");
    assert_eq!(
        problems(&as_port),
        [
            "rules/test.yaml:2:48: clusters.main.primary.port: the value of PGSTRATA_APP_PASSWORD \
          is not valid here: expected u16"
        ]
    );
    // Through an alias, the error is reported where the alias is used.
    let aliased = "\
listen: { address: 127.0.0.1:6432 }
clusters: { main: { primary: { host: db, port: 5432 } } }
users: { app: { auth: md5, password: &pw ${PGSTRATA_APP_PASSWORD} } }
databases: { app: { cluster: main, pool_size: *pw } }
";
    assert_eq!(
        problems(aliased),
        [
            "rules/test.yaml:4:47: databases.app.pool_size: the value of PGSTRATA_APP_PASSWORD is \
          not valid here: expected u32"
        ]
    );
    let yaml = yaml.replace("auth: ${", "auth: md5\n    scram_verifier: ${");
    let errors = problems(&yaml).join("\n");
    assert!(!errors.contains(APP_PASSWORD), "{errors}");
    assert!(errors.contains("users.app.scram_verifier"), "{errors}");
}

#[test]
fn tls_files_are_resolved_and_checked() {
    let dir = std::env::temp_dir().join(format!("pgstrata-rules-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).expect("temp dir");
    std::fs::write(dir.join("certs/server.crt"), "cert").expect("write cert");
    std::fs::write(dir.join("certs/server.key"), "key").expect("write key");
    let file = dir.join("pgstrata.yaml");
    let yaml = "\
listen: { address: 127.0.0.1:6432 }
tls: { mode: require, cert: certs/server.crt, key: certs/server.key }
clusters: { main: { primary: { host: db, port: 5432 } } }
databases: { app: { cluster: main } }
users: { app: { auth: trust } }
";
    std::fs::write(&file, yaml).expect("write rules");
    let loaded = load(&file);
    let missing = load_str(&yaml.replace("server.key", "nope.key"), &file, &env);
    std::fs::remove_dir_all(&dir).expect("clean up");

    let config = loaded.expect("loads");
    assert_eq!(config.tls.mode, TlsMode::Require);
    assert_eq!(config.tls.cert, Some(dir.join("certs/server.crt")));
    assert_eq!(config.tls.key, Some(dir.join("certs/server.key")));
    let errors = missing.map(|_| ()).expect_err("key is missing");
    let expected = Problem {
        file: file.clone(),
        line: 2,
        column: 52,
        path: "tls.key".into(),
        message: format!("file {:?} does not exist", dir.join("certs/nope.key")),
    };
    assert_eq!(errors.problems, [expected]);
    let unreadable = load(&file).map(|_| ()).expect_err("file is gone");
    assert!(unreadable
        .to_string()
        .starts_with(&format!("{}: cannot read the file:", file.display())));
}
