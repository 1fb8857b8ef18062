//! Tests against real servers: replication, restart, apply delay, and cleanup
//! when the owning process dies without running destructors.

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// Set in the child process of `process_death_cleans_up`.
const DEATH_CHILD_ENV: &str = "PGSTRATA_LOCALPG_DEATH_CHILD";

async fn count_rows(server: &LocalServer, table: &str) -> i64 {
    let client = server.superuser_client().await.expect("connect");
    let row = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count");
    row.get(0)
}

async fn in_recovery(server: &LocalServer) -> bool {
    let client = server.superuser_client().await.expect("connect");
    let row = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("query");
    row.get(0)
}

#[tokio::test]
async fn replica_follows_primary_and_survives_restart() {
    let started = Instant::now();
    let cluster = LocalCluster::start(ClusterOptions::default())
        .await
        .expect("start cluster");
    eprintln!("cluster with replica started in {:?}", started.elapsed());
    let (primary, replica) = (cluster.primary(), cluster.replica().expect("replica"));
    assert!(!in_recovery(primary).await);
    assert!(in_recovery(replica).await);

    let client = primary.superuser_client().await.expect("connect");
    client
        .batch_execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2)")
        .await
        .expect("write");
    primary
        .create_role("md5_alice", "pw-a", true)
        .await
        .expect("md5 role");
    primary
        .create_role("bob", "pw-b", false)
        .await
        .expect("scram role");
    primary.create_database("bobs_db", "bob").await.expect("db");
    let md5: bool = client
        .query_one(
            "SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'md5_alice'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert!(md5, "md5_alice's password is stored as MD5");

    cluster.wait_for_replica().await.expect("replay");
    assert_eq!(count_rows(replica, "items").await, 2);
    replica
        .connect("md5_alice", "pw-a", "postgres")
        .await
        .expect("md5 login");
    replica
        .connect("bob", "pw-b", "bobs_db")
        .await
        .expect("scram login");
    assert!(replica.connect("bob", "wrong", "bobs_db").await.is_err());

    replica.stop().await.expect("stop replica");
    assert!(!replica.is_running());
    assert!(replica.superuser_client().await.is_err());
    client
        .batch_execute("INSERT INTO items VALUES (3)")
        .await
        .expect("write");
    let restarted = Instant::now();
    replica.start().await.expect("restart replica");
    eprintln!("replica restarted in {:?}", restarted.elapsed());
    cluster.wait_for_replica().await.expect("replay");
    assert_eq!(count_rows(replica, "items").await, 3);
    assert!(matches!(
        replica.start().await,
        Err(LocalPgError::AlreadyRunning(_))
    ));

    let root = cluster.root().to_path_buf();
    let stopping = Instant::now();
    cluster.stop().await;
    eprintln!("cluster stopped in {:?}", stopping.elapsed());
    assert!(!root.exists(), "{} removed", root.display());
}

#[tokio::test]
async fn apply_delay_shows_as_lag() {
    let delay = Duration::from_millis(1500);
    let opts = ClusterOptions {
        replica_apply_delay: Some(delay),
        extra_conf: vec![("log_min_messages".into(), "warning".into())],
        ..ClusterOptions::default()
    };
    let cluster = LocalCluster::start(opts).await.expect("start cluster");
    let (primary, replica) = (cluster.primary(), cluster.replica().expect("replica"));
    let client = primary.superuser_client().await.expect("connect");
    client
        .batch_execute("CREATE TABLE lag (id int)")
        .await
        .expect("create");
    cluster.wait_for_replica().await.expect("replay");

    client
        .batch_execute("INSERT INTO lag VALUES (1)")
        .await
        .expect("insert");
    let committed = Instant::now();
    assert_eq!(count_rows(replica, "lag").await, 0, "not applied yet");
    cluster.wait_for_replica().await.expect("replay");
    assert_eq!(count_rows(replica, "lag").await, 1);
    // The commit timestamp is taken slightly before `committed`.
    assert!(committed.elapsed() + Duration::from_millis(200) >= delay);
}

#[tokio::test]
async fn primary_only_cluster_and_bad_setting() {
    let opts = ClusterOptions {
        replica: false,
        ..ClusterOptions::default()
    };
    let cluster = LocalCluster::start(opts).await.expect("start cluster");
    assert!(cluster.replica().is_none());
    assert!(matches!(
        cluster.wait_for_replica().await,
        Err(LocalPgError::NoReplica)
    ));
    assert!(cluster.bin_dir().join("psql").is_file());
    let primary = cluster.primary();
    primary.stop().await.expect("stop");
    primary.stop().await.expect("stopping twice is fine");
    primary.start().await.expect("start again");
    assert!(!in_recovery(primary).await);
    drop(cluster);

    let opts = ClusterOptions {
        replica: false,
        extra_conf: vec![("bad name".into(), "1".into())],
        ..ClusterOptions::default()
    };
    let error = LocalCluster::start(opts).await.expect_err("bad setting");
    assert!(matches!(error, LocalPgError::InvalidSetting(_)), "{error}");

    let opts = ClusterOptions {
        replica: false,
        extra_conf: vec![("shared_buffers".into(), "lots".into())],
        ..ClusterOptions::default()
    };
    let error = LocalCluster::start(opts).await.expect_err("bad value");
    let LocalPgError::ServerExited { log_tail, .. } = &error else {
        panic!("expected ServerExited, got {error}");
    };
    assert!(log_tail.contains("shared_buffers"), "{error}");
}

/// In the child process: start a cluster, report it, exit without destructors.
#[tokio::test]
async fn death_child() {
    if std::env::var_os(DEATH_CHILD_ENV).is_none() {
        return;
    }
    let cluster = LocalCluster::start(ClusterOptions::default())
        .await
        .expect("start cluster");
    let replica = cluster.replica().expect("replica");
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "LOCALPG {} {} {}",
        cluster.root().display(),
        cluster.primary().port(),
        replica.port()
    );
    let _ = out.flush();
    std::process::exit(0);
}

#[test]
fn process_death_cleans_up() {
    let exe = std::env::current_exe().expect("test binary");
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let output = Command::new(exe)
        .args([&format!("{module}::death_child"), "--exact", "--nocapture"])
        .env(DEATH_CHILD_ENV, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("LOCALPG "))
        .unwrap_or_else(|| {
            panic!(
                "child output: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let fields: Vec<&str> = line.split(' ').collect();
    let root = std::path::PathBuf::from(fields[0]);
    let ports: Vec<u16> = fields[1..]
        .iter()
        .map(|p| p.parse().expect("port"))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(40);
    let is_listening = |port: u16| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok();
    while root.exists() || ports.iter().any(|port| is_listening(*port)) {
        assert!(
            Instant::now() < deadline,
            "{} or a server outlived its process",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
