//! Integration tests: real PostgreSQL (primary + streaming replica), pgstrata in-process,
//! real clients (tokio-postgres, sqlx, psql, pgbench, raw sockets; psycopg, asyncpg,
//! node-postgres and PgJDBC from `tests/clients/`).

/// `in_both_pool_modes!(name)` declares a module `name` with two tests, `session` and
/// `transaction`, each running `name(mode)` from the enclosing file: the pass-through cases
/// hold in both pool modes.
macro_rules! in_both_pool_modes {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn session() {
                super::$name("session").await
            }

            #[tokio::test]
            async fn transaction() {
                super::$name("transaction").await
            }
        }
    )+};
}

mod bad_input;
mod clients;
mod drivers;
mod edges;
mod lifecycle;
mod limits;
mod monitor;
mod prepared;
mod psql;
mod reload;
mod routing;
mod security;
mod support;
mod tools;
mod transaction;
mod wire;
