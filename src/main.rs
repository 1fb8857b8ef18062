//! pgstrata command line: run the proxy, check a config, or start a local demo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use pgstrata::localpg::{ClusterOptions, LocalCluster};
use pgstrata::rules;

#[derive(Parser)]
#[command(version, about = "PostgreSQL wire-protocol proxy")]
struct Cli {
    /// Config file to run with.
    #[arg(long, default_value = "rules/pgstrata.yaml")]
    config: PathBuf,
    /// Worker threads; 1 runs everything on one thread (like PgBouncer). Default: half the
    /// cores, at least one.
    #[arg(long)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate a config file; print every problem as file:line:column: path: message.
    Check {
        file: PathBuf,
        /// Also show how this SQL would be routed under the file's rules.
        #[arg(long)]
        explain: Option<String>,
        /// The user the explained statement runs as (rules may match on it).
        #[arg(long, default_value = "")]
        user: String,
        /// The database the explained statement runs in.
        #[arg(long, default_value = "")]
        database: String,
        /// The client's application_name.
        #[arg(long, default_value = "")]
        application_name: String,
    },
    /// Start a local primary + streaming replica and pgstrata in front of them.
    Demo {
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
}

/// Logs to standard output, filtered by RUST_LOG (default `info`). A list of `target=level`
/// directives is read by the `Targets` filter, which does nothing when a span is entered
/// (each session's span is entered at every poll of its task); directives naming spans or
/// fields (`[...]`) need, and get, `EnvFilter`.
fn init_logging() {
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::{prelude::*, Layer, Registry};
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|spec| !spec.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let targets = (!spec.contains('[')).then(|| spec.parse::<Targets>().ok());
    let filter: Box<dyn Layer<Registry> + Send + Sync> = match targets.flatten() {
        Some(targets) => Box::new(targets),
        None => Box::new(EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"))),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer())
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::Check {
            file,
            explain,
            user,
            database,
            application_name,
        }) => {
            let ctx = pgstrata::router::RequestCtx {
                user: &user,
                database: &database,
                application_name: &application_name,
            };
            check(&file, explain.as_deref().map(|sql| (sql, ctx)))
        }
        Some(Command::Demo { port }) => runtime(cli.threads)?.block_on(demo(port)),
        Some(Command::Run) | None => runtime(cli.threads)?.block_on(run(&cli.config)),
    }
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    // Half the cores by default: a proxy usually shares its machine with PostgreSQL or
    // the application, and below a few workers tokio's work stealing and cross-thread
    // wake-ups cost more CPU per transaction than they give (benches/pgbench.sh: on two
    // cores one thread spends about a third less CPU per transaction than two).
    let threads = threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).max(1)
    });
    let mut builder = match threads {
        0 => bail!("--threads must be at least 1"),
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    Ok(builder.enable_all().build()?)
}

fn check(file: &Path, explain: Option<(&str, pgstrata::router::RequestCtx)>) -> anyhow::Result<()> {
    match rules::load(file) {
        Ok(config) => {
            println!("{}: ok", file.display());
            if let Some((sql, ctx)) = explain {
                let router = pgstrata::router::Router::new(&config.routing);
                let classified = router.classify(sql.as_bytes());
                let decision = router.decide(&classified, &ctx, &Default::default());
                for (field, value) in pgstrata::router::explain(&classified, &decision) {
                    println!("{field:>15}: {value}");
                }
            }
            Ok(())
        }
        Err(errors) => {
            print!("{errors}");
            std::process::exit(1);
        }
    }
}

fn load(file: &Path) -> anyhow::Result<rules::Config> {
    rules::load(file).map_err(|errors| {
        eprint!("{errors}");
        anyhow::anyhow!("{} is not valid", file.display())
    })
}

async fn run(file: &Path) -> anyhow::Result<()> {
    let config = load(file)?;
    if let Some(metrics) = &config.metrics {
        pgstrata::metrics::install_exporter(metrics.address)
            .map_err(|e| anyhow::anyhow!("metrics exporter on {}: {e}", metrics.address))?;
        tracing::info!(address = %metrics.address, "serving /metrics");
    }
    let address = config.listen.address;
    let listener = bind(address).await?;
    tracing::info!(%address, "pgstrata listening");
    pgstrata::run_watching(listener, config, file.to_path_buf(), shutdown_signal()).await?;
    tracing::info!("pgstrata stopped");
    Ok(())
}

async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

const DEMO_USER: &str = "app";
const DEMO_PASSWORD: &str = "app-secret";

/// A primary, a streaming replica and pgstrata, all on loopback, until Ctrl-C.
async fn demo(port: u16) -> anyhow::Result<()> {
    println!("starting a local PostgreSQL primary and streaming replica...");
    let cluster = LocalCluster::start(ClusterOptions::default()).await?;
    let result = demo_with(&cluster, port).await;
    println!("stopping PostgreSQL and removing its files...");
    cluster.stop().await;
    result
}

async fn demo_with(cluster: &LocalCluster, port: u16) -> anyhow::Result<()> {
    let primary = cluster.primary();
    primary.create_role(DEMO_USER, DEMO_PASSWORD, false).await?;
    primary.create_database(DEMO_USER, DEMO_USER).await?;
    let Some(replica) = cluster.replica() else {
        bail!("the demo cluster has no replica");
    };
    // A directory of its own: the rules watcher reloads on any change to its files.
    let rules_dir = cluster.root().join("rules");
    std::fs::create_dir_all(&rules_dir)
        .with_context(|| format!("creating {}", rules_dir.display()))?;
    let config_path = rules_dir.join("pgstrata-demo.yaml");
    std::fs::write(
        &config_path,
        demo_config(port, primary.port(), replica.port()),
    )
    .with_context(|| format!("writing {}", config_path.display()))?;
    let config = load(&config_path)?;
    let listener = bind(config.listen.address).await?;
    println!(
        "\npgstrata is listening on 127.0.0.1:{port} (config: {}, reloaded when edited)\n\n  psql \"host=127.0.0.1 port={port} user={DEMO_USER} password={DEMO_PASSWORD} dbname={DEMO_USER}\"\n\nTry: SELECT inet_server_port();  EXPLAIN ROUTE SELECT 1;  SET pgstrata.route = 'primary';\nprimary: 127.0.0.1:{}  replica: 127.0.0.1:{}  — press Ctrl-C to stop.",
        config_path.display(),
        primary.port(),
        replica.port()
    );
    pgstrata::run_watching(listener, config, config_path, shutdown_signal()).await?;
    Ok(())
}

fn demo_config(port: u16, primary: u16, replica: u16) -> String {
    format!(
        r#"# Generated by `pgstrata demo`: local, throwaway credentials.
listen:
  address: "127.0.0.1:{port}"
  shutdown_timeout: 5s
clusters:
  main:
    primary: {{ host: 127.0.0.1, port: {primary} }}
    replicas:
      - {{ host: 127.0.0.1, port: {replica} }}
databases:
  {DEMO_USER}:
    cluster: main
    # Transactions share server connections; reads go to the replica once it has
    # replayed this session's writes (consistency: session).
    pool_mode: transaction
    pool_size: 20
routing:
  rules:
    - name: no-unbounded-delete
      match: {{ kind: delete, sql: '^delete from [^ ]+$' }}
      block: "DELETE without WHERE is blocked by pgstrata (rule no-unbounded-delete)"
users:
  {DEMO_USER}:
    auth: scram-sha-256
    password: "{DEMO_PASSWORD}"
    server_password: "{DEMO_PASSWORD}"
"#
    )
}
