//! The server side: raw protocol connections to PostgreSQL, their pools and cancel keys.

pub mod cancel;
pub mod connection;
pub mod error;
pub mod monitor;
pub mod params;
pub mod pool;
pub mod pools;
mod warm;

pub use cancel::{CancelKey, CancelRegistry, CancelTarget};
pub use connection::{ServerConnection, ServerKey, ServerTarget};
pub use error::BackendError;
pub use monitor::{
    ClusterHealth, Lsn, MonitorCredentials, MonitorHandle, MonitorOptions, ServerHealth,
};
pub use params::Params;
pub use pool::{LoginParams, Pool, PoolError, PooledServer};
pub use pools::{PoolSet, Pools};
