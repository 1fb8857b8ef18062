//! SQL-aware routing: what a statement does (`classify`), where it may run (`route`), and
//! the parse cache that lets a statement repeated with other literals skip the parser.

pub mod fingerprint;
pub mod hint;
pub mod kind;

pub use fingerprint::{fingerprint, Fingerprint};
pub use hint::{intercept, leading_hint, Hint, Intercept};
pub use kind::{RouteTarget, StatementKind};
