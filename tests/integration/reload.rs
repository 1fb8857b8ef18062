//! Hot reload without a proxy or PostgreSQL: `watch` on a temporary rules file; a valid
//! rewrite is applied, an invalid one is refused and the running rules stay.

use std::path::Path;
use std::time::Duration;

use pgstrata::rules::{self, Config};
use tokio::sync::{mpsc, oneshot};

/// Far above the watcher's poll-and-debounce delay (at most 1s).
const WAIT: Duration = Duration::from_secs(10);

fn rules_text(max_clients: usize) -> String {
    format!(
        "\
listen: {{ address: 127.0.0.1:6432, max_client_connections: {max_clients} }}
clusters: {{ main: {{ primary: {{ host: db, port: 5432 }} }} }}
databases: {{ app: {{ cluster: main }} }}
users: {{ app: {{ auth: trust }} }}
"
    )
}

/// As editors save: write a temporary file beside it, then rename it over.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("yaml.tmp");
    std::fs::write(&temp, text).expect("write temp file");
    std::fs::rename(&temp, path).expect("rename over the rules file");
}

#[tokio::test]
async fn rules_reload_applies_valid_and_keeps_old_on_invalid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pgstrata.yaml");
    std::fs::write(&path, rules_text(10)).expect("write rules");
    let (applied_tx, mut applied) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let apply = move |config: Config| {
        let _ = applied_tx.send(config.listen.max_client_connections);
    };
    let watcher = tokio::spawn(rules::watch(path.clone(), apply, async {
        let _ = stopped.await;
    }));

    replace(&path, &rules_text(200));
    let next = tokio::time::timeout(WAIT, applied.recv()).await;
    assert_eq!(next.expect("applied in time"), Some(200));

    std::fs::write(
        &path,
        rules_text(3000).replace("cluster: main", "cluster: eu-2"),
    )
    .expect("write");
    // Refused: nothing is applied over several poll intervals (a bounded check for absence).
    let nothing = tokio::time::timeout(Duration::from_secs(3), applied.recv()).await;
    assert!(nothing.is_err(), "an invalid file was applied: {nothing:?}");
    let refused = rules::reload_once(&path).map(|_| ()).expect_err("invalid");
    assert_eq!(refused.problems.len(), 1, "{refused}");
    assert!(refused
        .to_string()
        .ends_with(":3:30: databases.app.cluster: cluster \"eu-2\" is not defined"));

    replace(&path, &rules_text(40000));
    let next = tokio::time::timeout(WAIT, applied.recv()).await;
    assert_eq!(next.expect("applied in time"), Some(40000));

    stop.send(()).expect("watcher still running");
    tokio::time::timeout(WAIT, watcher)
        .await
        .expect("watcher stops on shutdown")
        .expect("watcher did not panic");
}
