//! SQL-aware routing: what a statement does (`classify`), where it may run (`route`), and
//! the parse cache that lets a statement repeated with other literals skip the parser.

pub mod classify;
mod fallback;
pub mod fingerprint;
pub mod hint;
pub mod kind;
mod statement;
mod walk;

pub use classify::{classify, Access, Classified};
pub use fingerprint::{fingerprint, Fingerprint};
pub use hint::{intercept, leading_hint, Hint, Intercept};
pub use kind::{RouteTarget, StatementKind};
