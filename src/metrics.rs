//! Prometheus metrics: handles registered once, names `pgstrata_<subsystem>_<noun>_<unit>`.

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Handles for the hot-path metrics.
pub struct Metrics {
    pub client_connections: Gauge,
    pub clients_accepted: Counter,
    pub clients_rejected: Counter,
    pub queries: Counter,
    pub transactions: Counter,
    pub transaction_duration: Histogram,
    pub checkout_wait: Histogram,
    pub server_connections_dropped: Counter,
    /// `pgstrata_rules_reloads_total{result="ok"}`.
    pub rules_reloads_ok: Counter,
    /// `pgstrata_rules_reloads_total{result="error"}`: refused, the running rules stay.
    pub rules_reloads_error: Counter,
    /// Statements by [route wanted][role that served]: 0 primary, 1 replica.
    routed: [[Counter; 2]; 2],
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static EXPORTER: OnceLock<Result<(), String>> = OnceLock::new();

/// The process-wide handles. Install the exporter before the first call, or they are no-ops.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        client_connections: gauge!("pgstrata_client_connections"),
        clients_accepted: counter!("pgstrata_client_connections_accepted_total"),
        clients_rejected: counter!("pgstrata_client_connections_rejected_total"),
        queries: counter!("pgstrata_queries_total"),
        transactions: counter!("pgstrata_transactions_total"),
        transaction_duration: histogram!("pgstrata_transaction_duration_seconds"),
        checkout_wait: histogram!("pgstrata_pool_checkout_wait_seconds"),
        server_connections_dropped: counter!("pgstrata_server_connections_dropped_total"),
        rules_reloads_ok: counter!("pgstrata_rules_reloads_total", "result" => "ok"),
        rules_reloads_error: counter!("pgstrata_rules_reloads_total", "result" => "error"),
        routed: ["primary", "replica"].map(|route| {
            ["primary", "replica"].map(
                |role| counter!("pgstrata_router_queries_total", "route" => route, "role" => role),
            )
        }),
    })
}

/// Counts an error sent to a client, by SQLSTATE class (a closed set of labels).
pub fn error(class: &'static str) {
    counter!("pgstrata_errors_total", "class" => class).increment(1);
}

/// A session starts keeping its server connection between transactions.
pub fn pinned(reason: crate::sql::effects::PinReason) {
    counter!("pgstrata_session_pins_total", "reason" => reason.as_str()).increment(1);
    gauge!("pgstrata_sessions_pinned").increment(1.0);
}

/// A pinned session ended.
pub fn unpinned(_reason: crate::sql::effects::PinReason) {
    gauge!("pgstrata_sessions_pinned").decrement(1.0);
}

/// A statement went to a server: where routing wanted it (`primary`, `replica`) and what
/// served it (`primary`, `replica`: a read can ride on a primary connection its session
/// holds, a write never on a replica's).
pub fn routed(route: &'static str, role: &'static str) {
    let index = |label| usize::from(label == "replica");
    get().routed[index(route)][index(role)].increment(1);
}

/// A read wanted a replica, but none had replayed the session's last write yet: it went to
/// the primary (read-your-writes).
pub fn fresh_read_fallback() {
    counter!("pgstrata_router_read_your_writes_fallbacks_total").increment(1);
}

/// A read went to another server than first chosen (`connect`: the replica was unreachable).
pub fn read_retried(reason: &'static str) {
    counter!("pgstrata_router_retries_total", "reason" => reason).increment(1);
}

/// A rule's statement timeout cancelled a statement.
pub fn statement_timeout() {
    counter!("pgstrata_router_statement_timeouts_total").increment(1);
}

/// Sets the per-pool server connection gauges.
pub fn server_connections(pool: &str, active: u32, idle: u32) {
    let pool = pool.to_owned();
    gauge!("pgstrata_server_connections", "pool" => pool.clone(), "state" => "active")
        .set(f64::from(active));
    gauge!("pgstrata_server_connections", "pool" => pool, "state" => "idle").set(f64::from(idle));
}

/// Handles for one replica's health, registered once when its monitor starts. The labels
/// are the cluster name and the configured `host:port`: closed sets from the rules.
pub struct ReplicaMetrics {
    pub lag_seconds: Gauge,
    pub lag_bytes: Gauge,
    /// 1 while the replica gets reads, else 0.
    pub usable: Gauge,
    pub became_usable: Counter,
    pub became_unusable: Counter,
}

/// Registers the handles of replica `replica` (`host:port`) of cluster `cluster`.
pub fn replica(cluster: &str, replica: &str) -> ReplicaMetrics {
    let labels = [
        ("cluster", cluster.to_owned()),
        ("replica", replica.to_owned()),
    ];
    let change = |to: &'static str| {
        let mut labels = labels.to_vec();
        labels.push(("to", to.to_owned()));
        counter!("pgstrata_replica_state_changes_total", &labels)
    };
    ReplicaMetrics {
        lag_seconds: gauge!("pgstrata_replica_lag_seconds", &labels),
        lag_bytes: gauge!("pgstrata_replica_lag_bytes", &labels),
        usable: gauge!("pgstrata_replica_usable", &labels),
        became_usable: change("usable"),
        became_unusable: change("unusable"),
    }
}

/// Installs the Prometheus exporter with an HTTP listener serving `/metrics`.
/// Only the first call in a process installs; later calls report that result.
pub fn install_exporter(address: SocketAddr) -> Result<(), String> {
    EXPORTER
        .get_or_init(|| {
            PrometheusBuilder::new()
                .with_http_listener(address)
                .set_buckets(&[
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
                ])
                .and_then(|b| b.install())
                .map_err(|e| e.to_string())
        })
        .clone()
}
