//! SQL-aware routing: what a statement does (`classify`), where it may run (`route`), and
//! the parse cache that lets a statement repeated with other literals skip the parser.
//!
//! ```text
//! let router = Router::new(&config.routing);   // once per rules snapshot
//! let c = router.classify(sql);                // lexer pass + cache lookup; parse on a miss
//! let d = router.decide(&c, &ctx, &dynamic);   // rules, then the statement's own access
//! ```

pub mod cache;
pub mod classify;
pub mod explain;
mod fallback;
pub mod fingerprint;
pub mod functions;
pub mod hint;
pub mod kind;
pub mod route;
mod statement;
mod walk;

pub use cache::{CacheStats, ParseCache, DEFAULT_CAPACITY, MAX_CACHED_LEN};
pub use classify::{classify, Access, Classified};
pub use explain::explain;
pub use fingerprint::{fingerprint, Fingerprint};
pub use functions::is_builtin_write_function;
pub use hint::{intercept, leading_hint, Hint, Intercept};
pub use kind::{RouteTarget, StatementKind};
pub use route::{Decision, Reason, RequestCtx, Router};
