//! Test support: one real PostgreSQL primary + streaming replica per test binary, and
//! pgstrata started in-process on port 0 with a config built for each test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use pgstrata::localpg::{ClusterOptions, LocalCluster, LocalServer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";
pub const MD5_USER: &str = "md5_user";
pub const MD5_PASSWORD: &str = "md5-secret";
/// A proxy user authenticated by `trust` and mapped to the server role `app`.
pub const TRUST_USER: &str = "trusty";
/// Roles each used by one test only, so that test can count their server sessions:
/// (name, password, stored as MD5).
pub const LONELY_MD5: (&str, &str, bool) = ("lonely_md5", "lonely-md5-secret", true);
pub const LONELY_SCRAM: (&str, &str, bool) = ("lonely_scram", "lonely-scram-secret", false);
pub const REUSE_PROBE: (&str, &str, bool) = ("reuse_probe", "reuse-probe-secret", false);
/// The same roles for the same tests' transaction-pooling runs.
pub const LONELY_MD5_TXN: (&str, &str, bool) = ("lonely_md5_txn", "lonely-md5-txn-secret", true);
pub const LONELY_SCRAM_TXN: (&str, &str, bool) =
    ("lonely_scram_txn", "lonely-scram-txn-secret", false);
pub const REUSE_PROBE_TXN: (&str, &str, bool) =
    ("reuse_probe_txn", "reuse-probe-txn-secret", false);
pub const TXN_PROBE: (&str, &str, bool) = ("txn_probe", "txn-probe-secret", false);
pub const PREPARED_PROBE: (&str, &str, bool) = ("prepared_probe", "prepared-probe-secret", false);
/// Shared by transaction-pooling tests that count nothing.
pub const TXN_SHARED: (&str, &str, bool) = ("txn_shared", "txn-shared-secret", false);
/// (Each name sorts after `app`: health checks log in as the first user by name, and the
/// clusters some tests start of their own have only the shared roles.)
pub const AGING_PROBE: (&str, &str, bool) = ("txn_aging", "txn-aging-secret", false);
const DEDICATED: [(&str, &str, bool); 10] = [
    LONELY_MD5,
    LONELY_SCRAM,
    REUSE_PROBE,
    LONELY_MD5_TXN,
    LONELY_SCRAM_TXN,
    REUSE_PROBE_TXN,
    TXN_PROBE,
    PREPARED_PROBE,
    TXN_SHARED,
    AGING_PROBE,
];
pub const DATABASE: &str = "app";

/// The cluster shared by every test in this binary. Its servers stop when the test
/// process exits (localpg's supervisors watch our pipe).
pub fn cluster() -> &'static LocalCluster {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // A runtime of its own on its own thread: tests run inside other runtimes.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let cluster = rt.block_on(async {
                let cluster = LocalCluster::start(ClusterOptions::default())
                    .await
                    .expect("start PostgreSQL primary + replica");
                let primary = cluster.primary();
                primary
                    .create_role(APP_USER, APP_PASSWORD, false)
                    .await
                    .expect("create role app");
                primary
                    .create_role(MD5_USER, MD5_PASSWORD, true)
                    .await
                    .expect("create role md5_user");
                for (name, password, md5) in DEDICATED {
                    primary
                        .create_role(name, password, md5)
                        .await
                        .expect("create dedicated role");
                }
                primary
                    .create_database(DATABASE, APP_USER)
                    .await
                    .expect("create database app");
                cluster
                    .wait_for_replica()
                    .await
                    .expect("replica catches up");
                cluster
            });
            // Keep the runtime (and the cluster's process handles) alive for the process.
            std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
            cluster
        })
        .join()
        .expect("cluster setup thread")
    })
}

pub fn primary() -> &'static LocalServer {
    cluster().primary()
}

pub fn bin(name: &str) -> PathBuf {
    cluster().bin_dir().join(name)
}

/// How to build a test proxy.
#[derive(Clone, Debug)]
pub struct ProxyBuilder {
    pool_mode: &'static str,
    pool_size: u32,
    checkout_timeout: &'static str,
    max_client_connections: usize,
    tls: Option<(&'static str, PathBuf, PathBuf)>,
    app_server_password: &'static str,
    /// Servers other than the shared cluster's primary: (primary port, replica ports).
    servers: Option<(u16, Vec<u16>)>,
    /// More fields of each replica's flow mapping, e.g. `max_lag: 100ms`.
    replica_options: String,
    /// More lines under the database, e.g. `consistency: eventual`.
    database_options: Vec<String>,
    /// A `routing:` section, as YAML text.
    routing: String,
    /// More databases, on the same cluster, in the same pool mode.
    extra_databases: Vec<&'static str>,
}

impl Default for ProxyBuilder {
    fn default() -> Self {
        ProxyBuilder {
            pool_mode: "session",
            pool_size: 20,
            checkout_timeout: "5s",
            max_client_connections: 2000,
            tls: None,
            app_server_password: APP_PASSWORD,
            servers: None,
            replica_options: String::new(),
            database_options: Vec::new(),
            routing: String::new(),
            extra_databases: Vec::new(),
        }
    }
}

impl ProxyBuilder {
    /// `session` (the default here) or `transaction`.
    pub fn pool_mode(mut self, mode: &'static str) -> Self {
        self.pool_mode = mode;
        self
    }

    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n;
        self
    }

    pub fn checkout_timeout(mut self, t: &'static str) -> Self {
        self.checkout_timeout = t;
        self
    }

    pub fn max_client_connections(mut self, n: usize) -> Self {
        self.max_client_connections = n;
        self
    }

    /// The app user's server_password is wrong: the proxy cannot log in to PostgreSQL.
    pub fn wrong_server_password(mut self) -> Self {
        self.app_server_password = "not-the-password";
        self
    }

    /// Proxies to these servers (a primary and its replicas) instead of the shared primary.
    pub fn servers(mut self, primary: u16, replicas: &[u16]) -> Self {
        self.servers = Some((primary, replicas.to_vec()));
        self
    }

    /// The shared cluster's primary and its streaming replica.
    pub fn with_replica(self) -> Self {
        let replica = cluster()
            .replica()
            .expect("shared cluster has a replica")
            .port();
        self.servers(primary().port(), &[replica])
    }

    pub fn replica_options(mut self, fields: &str) -> Self {
        self.replica_options = fields.to_owned();
        self
    }

    pub fn database_option(mut self, line: &str) -> Self {
        self.database_options.push(line.to_owned());
        self
    }

    /// Another database on the same cluster, in the same pool mode.
    pub fn extra_database(mut self, name: &'static str) -> Self {
        self.extra_databases.push(name);
        self
    }

    /// The config's `routing:` section (YAML, starting with `routing:`).
    pub fn routing(mut self, yaml: &str) -> Self {
        self.routing = yaml.to_owned();
        self
    }

    pub fn tls(mut self, mode: &'static str, cert: &Path, key: &Path) -> Self {
        self.tls = Some((mode, cert.to_owned(), key.to_owned()));
        self
    }

    /// The config file this builder describes.
    pub fn yaml(&self) -> String {
        let (primary_port, replica_ports) = match &self.servers {
            Some((primary, replicas)) => (*primary, replicas.clone()),
            None => (primary().port(), Vec::new()),
        };
        let replicas = match replica_ports.is_empty() {
            true => String::new(),
            false => {
                let extra = match self.replica_options.is_empty() {
                    true => String::new(),
                    false => format!(", {}", self.replica_options),
                };
                let items: String = replica_ports
                    .iter()
                    .map(|p| format!("      - {{ host: 127.0.0.1, port: {p}{extra} }}\n"))
                    .collect();
                format!("    replicas:\n{items}")
            }
        };
        let database_options: String = self
            .database_options
            .iter()
            .map(|line| format!("    {line}\n"))
            .collect();
        let tls = match &self.tls {
            None => String::new(),
            Some((mode, cert, key)) => format!(
                "tls:\n  mode: {mode}\n  cert: {}\n  key: {}\n",
                cert.display(),
                key.display()
            ),
        };
        format!(
            r#"listen:
  address: "127.0.0.1:0"
  max_client_connections: {max}
  shutdown_timeout: 2s
{tls}clusters:
  main:
    primary: {{ host: 127.0.0.1, port: {port} }}
{replicas}databases:
  {DATABASE}:
    cluster: main
    pool_mode: {mode}
    pool_size: {size}
    checkout_timeout: {timeout}
{database_options}{extra_databases}{routing}
users:
  {APP_USER}:
    auth: scram-sha-256
    password: "{APP_PASSWORD}"
    server_password: "{app_server_password}"
  {MD5_USER}:
    auth: md5
    password: "{MD5_PASSWORD}"
    server_password: "{MD5_PASSWORD}"
  {TRUST_USER}:
    auth: trust
    server_user: {APP_USER}
    server_password: "{APP_PASSWORD}"
{dedicated}"#,
            max = self.max_client_connections,
            port = primary_port,
            routing = self.routing,
            extra_databases = self
                .extra_databases
                .iter()
                .map(|name| format!(
                    "  {name}:\n    cluster: main\n    pool_mode: {}\n",
                    self.pool_mode
                ))
                .collect::<String>(),
            mode = self.pool_mode,
            size = self.pool_size,
            timeout = self.checkout_timeout,
            app_server_password = self.app_server_password,
            dedicated = DEDICATED
                .iter()
                .map(|(name, password, md5)| {
                    let auth = if *md5 { "md5" } else { "scram-sha-256" };
                    format!("  {name}:\n    auth: {auth}\n    password: \"{password}\"\n")
                })
                .collect::<String>(),
        )
    }

    /// Starts pgstrata in-process on a free port.
    pub async fn start(self) -> TestProxy {
        let yaml = self.yaml();
        let config = pgstrata::rules::load_str(&yaml, Path::new("test.yaml"), &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
        start_proxy(config, None).await
    }

    /// Starts pgstrata with its config in a file of its own (in `dir`), reloaded on change.
    pub async fn start_watching(self, dir: &Path) -> (TestProxy, PathBuf) {
        let path = dir.join("pgstrata.yaml");
        std::fs::write(&path, self.yaml()).expect("write config");
        let config =
            pgstrata::rules::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        (start_proxy(config, Some(path.clone())).await, path)
    }
}

async fn start_proxy(config: pgstrata::rules::Config, watch: Option<PathBuf>) -> TestProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let task = tokio::spawn(async move {
        match watch {
            None => pgstrata::run(listener, config, shutdown).await,
            Some(path) => pgstrata::run_watching(listener, config, path, shutdown).await,
        }
        .expect("proxy run");
    });
    TestProxy {
        addr,
        stop: Some(stop),
        task,
    }
}

/// A running in-process proxy.
pub struct TestProxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestProxy {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// libpq-style connection string through the proxy.
    pub fn conn_string(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={DATABASE} sslmode=disable",
            self.port()
        )
    }

    pub fn app_conn_string(&self) -> String {
        self.conn_string(APP_USER, APP_PASSWORD)
    }

    /// Stops accepting, drains sessions (bounded by the config's shutdown_timeout).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

/// Direct (no proxy) connection string to the primary as the app user.
pub fn direct_conn_string() -> String {
    format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={DATABASE} sslmode=disable",
        primary().port()
    )
}

/// Connects tokio-postgres and drives the connection in the background.
pub async fn connect(conn_string: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn_string, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_string}: {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("client connection ended with an error: {e:?}");
        }
    });
    client
}

/// Number of server sessions of `user` on the primary, excluding the asking one.
pub async fn server_sessions(user: &str) -> i64 {
    let admin = primary()
        .superuser_client()
        .await
        .expect("superuser client");
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&user],
        )
        .await
        .expect("pg_stat_activity");
    row.get(0)
}

/// Waits (bounded) until `check` holds; returns whether it did.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs pgbench through `port` as the app user; panics with its output unless it succeeds.
pub fn pgbench(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new(bin("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", APP_USER])
        .args(args)
        .arg(DATABASE)
        .env("PGPASSWORD", APP_PASSWORD)
        .output()
        .expect("run pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

/// Connects tokio-postgres and hands back the asynchronous messages (notices,
/// notifications) the connection receives.
pub async fn connect_with_messages(
    conn_string: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
) {
    use futures::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(conn_string, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_string}: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            let _ = tx.send(message);
        }
    });
    (client, rx)
}
