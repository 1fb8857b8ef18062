//! The semantic pass: checks what types cannot (references, ranges, auth combinations, files)
//! and builds the resolved `Config`, collecting every problem instead of stopping at the first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::config::{
    ClusterConfig, Config, DatabaseConfig, ListenConfig, MetricsConfig, PoolConfig, PoolMode,
    ReplicaConfig, ServerAddr, TlsConfig, TlsMode, UserConfig,
};
use super::duration::parse_duration;
use super::problem::{child, item, Pos};
use super::schema::{Name, RawCluster, RawConfig, RawDatabase, RawListen, RawServer, RawTls};

/// A semantic problem, positioned in the expanded text (before mapping back to the source).
#[derive(Debug)]
pub(crate) struct Found {
    pub at: Pos,
    pub path: String,
    pub message: String,
}

const DEFAULT_MAX_CLIENTS: usize = 1000;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_POOL_SIZE: u32 = 20;
const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Validates `raw` and builds the `Config`; relative TLS paths resolve against `base_dir`.
pub(crate) fn build(raw: RawConfig, base_dir: &Path) -> Result<Config, Vec<Found>> {
    let mut b = Builder {
        base_dir,
        problems: Vec::new(),
    };
    let listen = b.listen(&raw.listen);
    let metrics = raw.metrics.map(|metrics| MetricsConfig {
        address: b.socket_addr(&metrics.address, "metrics.address"),
    });
    let tls = b.tls(raw.tls.as_ref());
    let users = b.users(&raw.users);
    let clusters = b.clusters(&raw.clusters, &users);
    let databases = b.databases(&raw.databases, &clusters);
    let routing = b.routing(raw.routing.as_ref(), &users, &databases);
    if !b.problems.is_empty() {
        return Err(b.problems);
    }
    Ok(Config {
        listen,
        metrics,
        tls,
        clusters,
        databases,
        users,
        routing,
    })
}

pub(super) fn at<T>(value: &Spanned<T>) -> Pos {
    Pos::of(value.referenced)
}

pub(super) struct Builder<'a> {
    base_dir: &'a Path,
    problems: Vec<Found>,
}

impl Builder<'_> {
    pub(super) fn report(&mut self, at: Pos, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Found {
            at,
            path: path.into(),
            message: message.into(),
        });
    }

    fn listen(&mut self, raw: &RawListen) -> ListenConfig {
        let max_client_connections = match &raw.max_client_connections {
            Some(max) => self.at_least_one(max, "listen.max_client_connections"),
            None => DEFAULT_MAX_CLIENTS,
        };
        let shutdown_timeout = raw.shutdown_timeout.as_ref();
        ListenConfig {
            address: self.socket_addr(&raw.address, "listen.address"),
            max_client_connections,
            shutdown_timeout: self
                .duration(shutdown_timeout, "listen.shutdown_timeout")
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        }
    }

    fn socket_addr(&mut self, raw: &Spanned<String>, path: &str) -> SocketAddr {
        raw.value.parse().unwrap_or_else(|_| {
            let message = format!(
                "invalid socket address {:?}: expected IP:port, e.g. \"127.0.0.1:6432\"",
                raw.value
            );
            self.report(at(raw), path, message);
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    fn tls(&mut self, raw: Option<&RawTls>) -> TlsConfig {
        let Some(raw) = raw else {
            return TlsConfig {
                mode: TlsMode::Disable,
                cert: None,
                key: None,
            };
        };
        let mode = raw
            .mode
            .as_ref()
            .map_or(TlsMode::Disable, |mode| mode.value);
        let cert = raw
            .cert
            .as_ref()
            .map(|c| self.tls_file(c, "tls.cert", mode));
        let key = raw.key.as_ref().map(|k| self.tls_file(k, "tls.key", mode));
        if let Some(mode_value) = raw.mode.as_ref().filter(|_| mode != TlsMode::Disable) {
            let missing: Vec<&str> = [("tls.cert", cert.is_none()), ("tls.key", key.is_none())]
                .into_iter()
                .filter_map(|(field, is_missing)| is_missing.then_some(field))
                .collect();
            if !missing.is_empty() {
                let message = format!("mode {mode} needs {}", missing.join(" and "));
                self.report(at(mode_value), "tls.mode", message);
            }
        }
        TlsConfig { mode, cert, key }
    }

    /// Resolves a certificate or key path; checks the file exists when TLS is on.
    fn tls_file(&mut self, raw: &Spanned<String>, path: &str, mode: TlsMode) -> PathBuf {
        let resolved = self.base_dir.join(&raw.value);
        if raw.value.is_empty() {
            self.report(at(raw), path, "must not be empty");
        } else if mode != TlsMode::Disable {
            let problem = match std::fs::metadata(&resolved) {
                Ok(meta) if meta.is_file() => None,
                Ok(_) => Some(format!("{resolved:?} is not a file")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(format!("file {resolved:?} does not exist"))
                }
                Err(e) => Some(format!("cannot read {resolved:?}: {e}")),
            };
            if let Some(message) = problem {
                self.report(at(raw), path, message);
            }
        }
        resolved
    }

    fn clusters(
        &mut self,
        raw: &Spanned<BTreeMap<Name, RawCluster>>,
        users: &BTreeMap<String, UserConfig>,
    ) -> BTreeMap<String, ClusterConfig> {
        let mut clusters = BTreeMap::new();
        for (name, cluster) in &raw.value {
            let path = child("clusters", name.as_str());
            self.name(name, "clusters", "cluster");
            let primary = self.server(&cluster.primary, &child(&path, "primary"));
            let mut replicas = Vec::new();
            for (index, replica) in cluster.replicas.iter().enumerate() {
                let path = item(&child(&path, "replicas"), index);
                let server = RawServer {
                    host: replica.host.clone(),
                    port: replica.port.clone(),
                };
                replicas.push(ReplicaConfig {
                    server: self.server(&server, &path),
                    weight: match &replica.weight {
                        Some(weight) => self.at_least_one(weight, &child(&path, "weight")),
                        None => 1,
                    },
                    max_lag: self.duration(replica.max_lag.as_ref(), &child(&path, "max_lag")),
                    max_lag_bytes: replica
                        .max_lag_bytes
                        .as_ref()
                        .map(|bytes| self.at_least_one(bytes, &child(&path, "max_lag_bytes"))),
                });
            }
            let monitor_user = self.monitor_user(cluster, &path, users);
            let config = ClusterConfig {
                primary,
                replicas,
                monitor_user,
            };
            clusters.insert(name.as_str().to_owned(), config);
        }
        clusters
    }

    /// The user whose server credentials health and lag checks use: as written (and defined),
    /// else the first user by name.
    fn monitor_user(
        &mut self,
        raw: &RawCluster,
        path: &str,
        users: &BTreeMap<String, UserConfig>,
    ) -> String {
        let Some(user) = &raw.monitor_user else {
            return users.keys().next().cloned().unwrap_or_default();
        };
        if !users.contains_key(&user.value) {
            let message = format!("user {:?} is not defined", user.value);
            self.report(at(user), child(path, "monitor_user"), message);
        }
        user.value.clone()
    }

    fn server(&mut self, raw: &RawServer, path: &str) -> ServerAddr {
        let host = self.non_empty(&raw.host, &child(path, "host"));
        if raw.port.value == 0 {
            let message = "must be between 1 and 65535";
            self.report(at(&raw.port), child(path, "port"), message);
        }
        ServerAddr {
            host,
            port: raw.port.value,
        }
    }

    fn databases(
        &mut self,
        raw: &Spanned<BTreeMap<Name, RawDatabase>>,
        clusters: &BTreeMap<String, ClusterConfig>,
    ) -> BTreeMap<String, DatabaseConfig> {
        if raw.value.is_empty() {
            self.report(
                at(raw),
                "databases",
                "at least one database must be defined",
            );
        }
        let mut databases = BTreeMap::new();
        for (name, database) in &raw.value {
            let path = child("databases", name.as_str());
            self.name(name, "databases", "database");
            let cluster = &database.cluster;
            if !clusters.contains_key(&cluster.value) {
                let message = format!("cluster {:?} is not defined", cluster.value);
                self.report(at(cluster), child(&path, "cluster"), message);
            }
            let server_database = match &database.server_database {
                Some(server_database) => {
                    self.non_empty(server_database, &child(&path, "server_database"))
                }
                None => name.as_str().to_owned(),
            };
            let config = DatabaseConfig {
                cluster: cluster.value.clone(),
                server_database,
                pool: self.pool(database, &path),
                // 0 reads as "no cap of its own", like leaving the field out.
                max_client_connections: database.max_client_connections.filter(|&n| n > 0),
                consistency: database
                    .consistency
                    .as_ref()
                    .map_or_else(Default::default, |consistency| consistency.value),
                include_primary_in_reads: database.include_primary_in_reads.unwrap_or(false),
            };
            databases.insert(name.as_str().to_owned(), config);
        }
        databases
    }

    fn pool(&mut self, raw: &RawDatabase, path: &str) -> PoolConfig {
        let size = match &raw.pool_size {
            Some(size) => self.at_least_one(size, &child(path, "pool_size")),
            None => DEFAULT_POOL_SIZE,
        };
        let min_idle = raw.min_idle.as_ref().map_or(0, |min_idle| {
            if min_idle.value > size {
                let message = format!(
                    "min_idle ({}) must not exceed pool_size ({size})",
                    min_idle.value
                );
                self.report(at(min_idle), child(path, "min_idle"), message);
            }
            min_idle.value
        });
        let checkout_path = child(path, "checkout_timeout");
        let checkout_timeout = match self.duration(raw.checkout_timeout.as_ref(), &checkout_path) {
            Some(Duration::ZERO) => {
                let at = raw.checkout_timeout.as_ref().map(at).unwrap_or_default();
                self.report(at, checkout_path, "must be greater than 0");
                Duration::ZERO
            }
            Some(timeout) => timeout,
            None => DEFAULT_CHECKOUT_TIMEOUT,
        };
        let idle_timeout = raw.idle_timeout.as_ref();
        let max_lifetime = raw.max_lifetime.as_ref();
        let mode = raw
            .pool_mode
            .as_ref()
            .map_or_else(PoolMode::default, |mode| mode.value);
        PoolConfig {
            mode,
            size,
            min_idle,
            checkout_timeout,
            idle_timeout: self
                .switchable(idle_timeout, &child(path, "idle_timeout"))
                .unwrap_or(Some(DEFAULT_IDLE_TIMEOUT)),
            max_lifetime: self
                .switchable(max_lifetime, &child(path, "max_lifetime"))
                .unwrap_or(Some(DEFAULT_MAX_LIFETIME)),
        }
    }

    pub(super) fn name(&mut self, name: &Name, section: &str, kind: &str) {
        if name.as_str().is_empty() {
            let message = format!("{kind} name must not be empty");
            self.report(at(&name.0), child(section, ""), message);
        }
    }

    pub(super) fn non_empty(&mut self, raw: &Spanned<String>, path: &str) -> String {
        if raw.value.is_empty() {
            self.report(at(raw), path, "must not be empty");
        }
        raw.value.clone()
    }

    pub(super) fn at_least_one<T: Copy + PartialEq + Default>(
        &mut self,
        raw: &Spanned<T>,
        path: &str,
    ) -> T {
        if raw.value == T::default() {
            self.report(at(raw), path, "must be at least 1");
        }
        raw.value
    }

    /// A duration if one is written and valid; `None` when absent (or reported invalid).
    pub(super) fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        path: &str,
    ) -> Option<Duration> {
        let raw = raw?;
        match parse_duration(&raw.value) {
            Ok(duration) => Some(duration),
            Err(e) => {
                self.report(at(raw), path, e.to_string());
                None
            }
        }
    }

    /// A duration where `0s` turns the feature off: `Some(None)` for zero, `None` when absent.
    fn switchable(
        &mut self,
        raw: Option<&Spanned<String>>,
        path: &str,
    ) -> Option<Option<Duration>> {
        self.duration(raw, path)
            .map(|duration| Some(duration).filter(|d| !d.is_zero()))
    }
}
