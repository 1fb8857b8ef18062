//! The server side: raw protocol connections to PostgreSQL, their pools and cancel keys.

pub mod cancel;
pub mod connection;
pub mod error;
pub mod pool;

pub use cancel::{CancelKey, CancelRegistry, CancelTarget};
pub use connection::{ServerConnection, ServerKey, ServerTarget};
pub use error::BackendError;
pub use pool::{Pool, PoolError, PooledServer, Pools};
