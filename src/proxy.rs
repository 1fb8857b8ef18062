//! The state shared by all sessions of a running proxy.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::backend::{CancelRegistry, Pools};
use crate::rules::Config;
use crate::session::SessionError;

pub struct Proxy {
    pub config: Arc<Config>,
    pub pools: Pools,
    pub cancels: Arc<CancelRegistry>,
    pub tls: Option<TlsAcceptor>,
    /// Per-database client connection caps, where configured.
    database_limits: HashMap<String, Arc<Semaphore>>,
    /// Becomes true when the proxy starts shutting down.
    pub shutdown: watch::Receiver<bool>,
}

impl Proxy {
    pub fn new(config: Config, tls: Option<TlsAcceptor>, shutdown: watch::Receiver<bool>) -> Proxy {
        let database_limits = config
            .databases
            .iter()
            .filter_map(|(name, db)| {
                db.max_client_connections
                    .map(|n| (name.clone(), Arc::new(Semaphore::new(n))))
            })
            .collect();
        Proxy {
            pools: Pools::build(&config),
            config: Arc::new(config),
            cancels: Arc::new(CancelRegistry::default()),
            tls,
            database_limits,
            shutdown,
        }
    }

    /// A slot under the database's client cap, if it has one.
    pub fn database_permit(
        &self,
        database: &str,
    ) -> Result<Option<OwnedSemaphorePermit>, SessionError> {
        match self.database_limits.get(database) {
            None => Ok(None),
            Some(limit) => Arc::clone(limit)
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| SessionError::TooManyForDatabase(database.to_owned())),
        }
    }
}
