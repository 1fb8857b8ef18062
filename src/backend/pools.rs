//! Every pool, by (client database, client user): towards the cluster's primary and each
//! of its replicas, rebuilt on reload keeping the pools a reload does not change.

use std::collections::HashMap;
use std::sync::Arc;

use super::connection::ServerTarget;
use super::pool::Pool;
use crate::rules::Config;

/// The pools one (database, user) reads and writes through: the cluster's primary and
/// each of its replicas, in the order the cluster lists them (the monitor's order too).
#[derive(Debug)]
pub struct PoolSet {
    /// Name of the cluster, whose health the router reads.
    pub cluster: String,
    pub primary: Arc<Pool>,
    pub replicas: Vec<Arc<Pool>>,
}

/// All pools, keyed by (client database, client user).
#[derive(Debug, Default)]
pub struct Pools {
    by_key: HashMap<(String, String), Arc<PoolSet>>,
}

impl Pools {
    /// Builds the pools for every configured database and user, towards the cluster's
    /// primary and replicas. A pool of `previous` whose server, credentials and settings are
    /// unchanged is kept as it is (with its connections), so a reload disturbs only the
    /// pools it changes. No connection is opened until one is needed (or min_idle asks).
    pub fn build(config: &Config, previous: Option<&Pools>) -> Pools {
        let old: HashMap<&str, &Arc<Pool>> = previous
            .into_iter()
            .flat_map(|p| p.by_key.values())
            .flat_map(|set| std::iter::once(&set.primary).chain(&set.replicas))
            .map(|pool| (pool.name.as_str(), pool))
            .collect();
        let mut by_key = HashMap::new();
        for (db_name, db) in &config.databases {
            let Some(cluster) = config.clusters.get(&db.cluster) else {
                continue; // validation guarantees the cluster exists
            };
            for (user_name, user) in &config.users {
                let pool = |name: String, host: &str, port: u16| {
                    let target = ServerTarget {
                        host: host.to_owned(),
                        port,
                        user: user.server_user.clone(),
                        password: user.server_password.clone(),
                        database: db.server_database.clone(),
                    };
                    match old.get(name.as_str()) {
                        Some(pool)
                            if pool.settings == db.pool && same_target(&pool.target, &target) =>
                        {
                            Arc::clone(pool)
                        }
                        _ => Arc::new(Pool::new(name, db.pool.clone(), target)),
                    }
                };
                let primary = pool(
                    format!("{db_name}/{user_name}"),
                    &cluster.primary.host,
                    cluster.primary.port,
                );
                let replicas = cluster
                    .replicas
                    .iter()
                    .map(|r| {
                        let name = format!("{db_name}/{user_name}@{}", r.server);
                        pool(name, &r.server.host, r.server.port)
                    })
                    .collect();
                let set = PoolSet {
                    cluster: db.cluster.clone(),
                    primary,
                    replicas,
                };
                by_key.insert((db_name.clone(), user_name.clone()), Arc::new(set));
            }
        }
        Pools { by_key }
    }

    pub fn get(&self, database: &str, user: &str) -> Option<Arc<PoolSet>> {
        self.by_key
            .get(&(database.to_owned(), user.to_owned()))
            .cloned()
    }

    /// Every pool, primaries and replicas.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.by_key
            .values()
            .flat_map(|set| std::iter::once(&set.primary).chain(&set.replicas))
    }
}

fn same_target(a: &ServerTarget, b: &ServerTarget) -> bool {
    a.host == b.host
        && a.port == b.port
        && a.user == b.user
        && a.database == b.database
        && a.password.as_ref().map(|p| p.expose()) == b.password.as_ref().map(|p| p.expose())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(replicas: &str, pool_size: u32) -> Config {
        let yaml = format!(
            r#"
listen: {{ address: "127.0.0.1:0" }}
clusters:
  main:
    primary: {{ host: 127.0.0.1, port: 1 }}
    replicas: [{replicas}]
databases:
  app: {{ cluster: main, pool_mode: transaction, pool_size: {pool_size} }}
users:
  app: {{ auth: trust }}
"#
        );
        crate::rules::load_str(&yaml, Path::new("t.yaml"), &|_| None).expect("config")
    }

    /// A reload keeps the pools it does not change, connections and all.
    #[tokio::test]
    async fn a_reload_keeps_unchanged_pools() {
        let one = Pools::build(&config("{ host: 127.0.0.1, port: 2 }", 5), None);
        let two = Pools::build(
            &config(
                "{ host: 127.0.0.1, port: 2 }, { host: 127.0.0.1, port: 3 }",
                5,
            ),
            Some(&one),
        );
        let (a, b) = (
            one.get("app", "app").unwrap(),
            two.get("app", "app").unwrap(),
        );
        assert!(
            Arc::ptr_eq(&a.primary, &b.primary),
            "adding a replica kept the primary's pool"
        );
        assert!(
            Arc::ptr_eq(&a.replicas[0], &b.replicas[0]),
            "and the other replica's"
        );
        assert_eq!(b.replicas.len(), 2);
        let resized = Pools::build(&config("{ host: 127.0.0.1, port: 3 }", 6), Some(&two));
        let c = resized.get("app", "app").unwrap();
        assert!(
            !Arc::ptr_eq(&b.primary, &c.primary),
            "new settings, new pool"
        );
        assert_eq!(c.replicas.len(), 1);
        assert_eq!(c.replicas[0].target.port, 3);
    }
}
