//! The rules: pgstrata's YAML configuration (listen address, TLS, clusters, databases, users).
//! `load` reads a file, substitutes `${VAR}`s, parses, validates and returns a `Config`, or
//! every problem found as `file:line:column: yaml.path: message`; `watch` reloads it on
//! SIGHUP or when it changes.

mod build;
mod columns;
mod config;
mod duration;
mod env;
mod list;
mod load;
mod matcher;
mod outline;
mod problem;
mod reload;
mod routing;
mod schema;
mod scram;
mod secret;
mod users;

#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;

pub use config::{
    AuthMethod, CachePolicy, ClientSecret, ClusterConfig, Config, Consistency, DatabaseConfig,
    ListenConfig, MetricsConfig, PoolConfig, PoolMode, ReplicaConfig, RouteRule, RoutingConfig,
    RuleAction, RuleMatch, ServerAddr, TlsConfig, TlsMode, UserConfig,
};
pub use duration::{parse_duration, DurationError};
pub use load::{load, load_str};
pub use problem::{ConfigErrors, Problem};
pub use reload::{reload_once, store_into, watch};
pub use scram::ScramVerifier;
pub use secret::Secret;
