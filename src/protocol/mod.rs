//! The wire: length-checked framing, the few decoded messages, SQLSTATEs and the replies
//! the proxy produces itself. Everything else is forwarded as the original bytes.

pub mod buffers;
pub mod frame;
pub mod message;
pub mod reply;
pub mod sqlstate;
pub mod startup;

pub use reply::{ErrorReply, Severity, TxStatus};
pub use sqlstate::SqlState;
