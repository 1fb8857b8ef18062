//! The rules file exactly as written: serde input types, unknown fields rejected, closed sets as
//! enums. Values a later semantic check may complain about are `Spanned` to keep their line:column.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::config::{AuthMethod, Consistency, PoolMode, TlsMode};
use super::list::OneOrMany;
use super::secret::Secret;
use crate::router::{RouteTarget, StatementKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: RawListen,
    pub metrics: Option<RawMetrics>,
    pub tls: Option<RawTls>,
    pub clusters: Spanned<BTreeMap<Name, RawCluster>>,
    pub databases: Spanned<BTreeMap<Name, RawDatabase>>,
    pub users: Spanned<BTreeMap<Name, RawUser>>,
    pub routing: Option<RawRouting>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListen {
    pub address: Spanned<String>,
    pub max_client_connections: Option<Spanned<usize>>,
    pub shutdown_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub address: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub mode: Option<Spanned<TlsMode>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub primary: RawServer,
    #[serde(default)]
    pub replicas: Vec<RawReplica>,
    pub monitor_user: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub host: Spanned<String>,
    pub port: Spanned<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReplica {
    pub host: Spanned<String>,
    pub port: Spanned<u16>,
    pub weight: Option<Spanned<u32>>,
    pub max_lag: Option<Spanned<String>>,
    pub max_lag_bytes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    pub cluster: Spanned<String>,
    pub server_database: Option<Spanned<String>>,
    pub pool_mode: Option<Spanned<PoolMode>>,
    pub pool_size: Option<Spanned<u32>>,
    pub min_idle: Option<Spanned<u32>>,
    pub checkout_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_lifetime: Option<Spanned<String>>,
    pub max_client_connections: Option<usize>,
    pub consistency: Option<Spanned<Consistency>>,
    pub include_primary_in_reads: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub auth: Spanned<AuthMethod>,
    pub password: Option<Spanned<Secret>>,
    pub scram_verifier: Option<Spanned<Secret>>,
    pub server_user: Option<Spanned<String>>,
    pub server_password: Option<Spanned<Secret>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouting {
    pub check_interval: Option<Spanned<String>>,
    pub fail_after: Option<Spanned<u32>>,
    pub recover_after: Option<Spanned<u32>>,
    pub write_functions: Option<Spanned<Vec<Spanned<String>>>>,
    pub rules: Option<Spanned<Vec<Spanned<RawRule>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub name: Option<Spanned<String>>,
    /// Optional here so that its absence gets a message saying how to match everything.
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<RawMatch>>,
    pub route: Option<Spanned<RouteTarget>>,
    pub block: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub cache: Option<Spanned<RawCache>>,
}

/// A list-valued condition: one value or a list, as written.
pub(crate) type RawList<T> = Option<Spanned<OneOrMany<T>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub kind: RawList<StatementKind>,
    pub tables: RawList<String>,
    pub tables_read: RawList<String>,
    pub tables_written: RawList<String>,
    pub sql: Option<Spanned<String>>,
    pub user: RawList<String>,
    pub database: RawList<String>,
    pub application_name: RawList<String>,
}

/// `cache: never` or `cache: { ttl: 60s }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawCache {
    Never,
    Ttl(Spanned<String>),
}

/// A map key (cluster, database or user name) with its location; ordered by text only,
/// so it can key a `BTreeMap`. The parser itself rejects duplicate keys.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct Name(pub Spanned<String>);

impl Name {
    pub(crate) fn as_str(&self) -> &str {
        &self.0.value
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}
