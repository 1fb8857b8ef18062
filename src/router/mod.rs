//! SQL-aware routing: what a statement does (`classify`), where it may run (`route`), and
//! the parse cache that lets a statement repeated with other literals skip the parser.

pub mod kind;

pub use kind::{RouteTarget, StatementKind};
