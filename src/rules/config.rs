//! The resolved rules the proxy runs with: defaults applied, references checked,
//! paths resolved and SCRAM verifiers derived. Built only by `load`, only when valid.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::scram::ScramVerifier;
use super::secret::Secret;

/// A whole, valid rules file.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: ListenConfig,
    pub metrics: Option<MetricsConfig>,
    pub tls: TlsConfig,
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Keyed by the database name clients connect to.
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// Keyed by the user name clients log in with.
    pub users: BTreeMap<String, UserConfig>,
    /// Read/write routing: rules and control-plane settings.
    pub routing: RoutingConfig,
}

/// `routing:`: how statements are sent to the primary or replicas.
#[derive(Clone, Debug)]
pub struct RoutingConfig {
    /// Ordered; the first rule that matches a statement decides.
    pub rules: Vec<RouteRule>,
    /// Functions (lower-case, unqualified) whose calls make a statement a write, beyond the
    /// built-in list (nextval, setval, set_config, pg_advisory_*lock*, pg_notify, lo_*, ...).
    pub write_functions: Vec<String>,
    /// How often the control plane polls each server's WAL position and health.
    pub check_interval: std::time::Duration,
    /// Consecutive failed checks before a replica is taken out of reads.
    pub fail_after: u32,
    /// Consecutive good checks before a replica taken out is used again.
    pub recover_after: u32,
}

/// One routing rule: a match and what to do with matching statements.
#[derive(Clone, Debug)]
pub struct RouteRule {
    /// `name:` from the file, else `routing.rules[N]`; the label of its hit counter.
    pub name: String,
    pub matcher: RuleMatch,
    pub action: RuleAction,
}

/// Every condition given must hold; an absent one matches anything.
#[derive(Clone, Debug, Default)]
pub struct RuleMatch {
    pub kinds: Option<Vec<crate::router::StatementKind>>,
    /// Any table the statement reads or writes (lower-case; `schema.table` or `table`).
    pub tables: Option<Vec<String>>,
    pub tables_read: Option<Vec<String>>,
    pub tables_written: Option<Vec<String>>,
    /// Searched in the normalized SQL (literals replaced by `?`, keywords lower-case).
    pub sql: Option<regex::Regex>,
    pub users: Option<Vec<String>>,
    pub databases: Option<Vec<String>>,
    pub application_names: Option<Vec<String>>,
}

/// What a matching rule does. `block` excludes `route`.
#[derive(Clone, Debug, Default)]
pub struct RuleAction {
    pub route: Option<crate::router::RouteTarget>,
    /// Refuse the statement with this message (SQLSTATE 42501).
    pub block: Option<String>,
    /// statement_timeout for the statement.
    pub timeout: Option<std::time::Duration>,
    /// Result-cache policy (used by the result cache; validated now).
    pub cache: Option<CachePolicy>,
}

/// `cache:` on a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CachePolicy {
    /// Never cache matching statements.
    Never,
    /// Cache results for this long.
    Ttl(std::time::Duration),
}

/// `consistency:` of a database: what reads may see after the session's own writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Read-your-writes: after a commit, reads go only to replicas that replayed it.
    #[default]
    Session,
    /// Reads go to any usable replica.
    Eventual,
}

#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub address: SocketAddr,
    /// Client connections accepted at once, across all databases.
    pub max_client_connections: usize,
    /// How long to let sessions finish after a shutdown signal before closing them.
    pub shutdown_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// Where the Prometheus exporter listens.
    pub address: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// Certificate chain (PEM), resolved against the rules file's directory; checked to
    /// exist at load unless `mode` is `disable`.
    pub cert: Option<PathBuf>,
    /// Private key (PEM), resolved like `cert`.
    pub key: Option<PathBuf>,
}

/// Whether clients may or must use TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Refuse `SSLRequest`; plaintext only.
    #[default]
    Disable,
    /// Accept TLS and plaintext.
    Allow,
    /// Refuse plaintext sessions.
    Require,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Require => "require",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub primary: ServerAddr,
    pub replicas: Vec<ReplicaConfig>,
    /// Key of `Config::users` whose server credentials health and lag checks log in with
    /// (checked at load; default: the first user by name).
    pub monitor_user: String,
}

/// A PostgreSQL server's host (name or IP) and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub server: ServerAddr,
    /// Relative share of the reads sent to this replica (at least 1).
    pub weight: u32,
    /// Replication lag beyond which the replica gets no reads; `None` = never excluded for lag.
    pub max_lag: Option<Duration>,
    /// The same limit in bytes of WAL not yet replayed; `None` = no limit.
    pub max_lag_bytes: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// Name of an entry in `Config::clusters` (checked at load).
    pub cluster: String,
    /// Database name on the PostgreSQL servers.
    pub server_database: String,
    pub pool: PoolConfig,
    /// Client connections to this database at once; `None` = only the global cap applies.
    pub max_client_connections: Option<usize>,
    pub consistency: Consistency,
    /// Reads may also go to the primary, as one more replica (weight 1).
    pub include_primary_in_reads: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub mode: PoolMode,
    /// Server connections per pool, at least 1.
    pub size: u32,
    /// Idle server connections kept open, at most `size`.
    pub min_idle: u32,
    /// How long a client waits for a server connection before its query fails.
    pub checkout_timeout: Duration,
    /// Idle server connections are closed after this; `None` (written `0s`) = never.
    pub idle_timeout: Option<Duration>,
    /// Server connections are closed after this age; `None` (written `0s`) = never.
    pub max_lifetime: Option<Duration>,
}

/// When a server connection goes back to the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// When the client disconnects.
    #[default]
    Session,
    /// At the end of each transaction.
    Transaction,
}

#[derive(Clone, Debug)]
pub struct UserConfig {
    pub auth: AuthMethod,
    /// What the client's password is checked against.
    pub client_secret: ClientSecret,
    /// Role name used on the PostgreSQL servers.
    pub server_user: String,
    /// Password for the PostgreSQL servers (SCRAM, MD5 or cleartext, as the server asks).
    pub server_password: Option<Secret>,
    /// Derived once at load when `auth` is SCRAM and `client_secret` is a plaintext password.
    derived_verifier: Option<ScramVerifier>,
}

impl UserConfig {
    /// Builds a user, deriving the SCRAM verifier now if client authentication needs one
    /// and only a plaintext password is known (4096 PBKDF2 rounds: done once, not per login).
    pub fn new(
        auth: AuthMethod,
        client_secret: ClientSecret,
        server_user: String,
        server_password: Option<Secret>,
    ) -> Self {
        let derived_verifier = match (&auth, &client_secret) {
            (AuthMethod::ScramSha256, ClientSecret::Password(password)) => {
                Some(ScramVerifier::from_password(password.expose()))
            }
            _ => None,
        };
        Self {
            auth,
            client_secret,
            server_user,
            server_password,
            derived_verifier,
        }
    }

    /// The SCRAM verifier for client auth (derived once at load from a password if needed).
    pub fn scram_verifier(&self) -> Option<&ScramVerifier> {
        match &self.client_secret {
            ClientSecret::Scram(verifier) => Some(verifier),
            _ => self.derived_verifier.as_ref(),
        }
    }
}

/// How clients authenticate to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum AuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    /// No password asked.
    #[serde(rename = "trust")]
    Trust,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha256 => "scram-sha-256",
            Self::Md5 => "md5",
            Self::Trust => "trust",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the proxy checks a client's password against.
#[derive(Clone, Debug)]
pub enum ClientSecret {
    /// `trust`: nothing.
    None,
    /// The plaintext password.
    Password(Secret),
    /// `"md5"` + hex of md5(password || user), as PostgreSQL stores it.
    Md5Hash(Secret),
    Scram(ScramVerifier),
}
