//! Integration tests: real PostgreSQL (primary + streaming replica), pgstrata in-process,
//! real clients (tokio-postgres, sqlx, psql, pgbench, raw sockets).

mod bad_input;
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
