//! A client session: handshake, authentication, attaching a server connection, then the relay.
//! Session pooling today: the client holds one server connection until it leaves.

mod auth;
mod error;
mod hidden;
mod io;
mod params;
mod relay;
mod startup;
pub mod state;
pub mod statements;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

pub use error::SessionError;

use crate::backend::{CancelKey, Params, Pool, PoolSet, PooledServer};
use crate::metrics;
use crate::protocol::reply;
use crate::protocol::startup::StartupParams;
use crate::protocol::TxStatus;
use crate::proxy::{Proxy, Snapshot};
use crate::rules::PoolMode;
use crate::tls::ClientStream;
use relay::Relay;
use startup::{handshake, Opening};

/// Time a client has to finish startup and authentication (PostgreSQL's authentication_timeout).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one client connection to its end. Errors end only this connection.
pub async fn serve(tcp: TcpStream, proxy: Arc<Proxy>) {
    let (mut stream, buf, startup) =
        // The opening's futures are boxed: the session's own future, which every client
        // keeps until it leaves, then holds only what the relay's wait needs.
        match Box::pin(tokio::time::timeout(STARTUP_TIMEOUT, handshake(tcp, &proxy))).await {
            Err(_) => return tracing::debug!("client did not finish startup in time"),
            Ok(Err((e, mut stream))) => return Box::pin(report(stream.as_mut(), e)).await,
            Ok(Ok(Opening::Cancel)) => return tracing::debug!("cancel request handled"),
            Ok(Ok(Opening::Session {
                stream,
                buf,
                startup,
            })) => (stream, buf, startup),
        };
    let attached = match Box::pin(prepare(&mut stream, buf, &startup, &proxy)).await {
        Ok(attached) => attached,
        Err(e) => return Box::pin(report(Some(&mut stream), e)).await,
    };
    drop(startup);
    let (relay, database_permit) = relay_for(stream, attached, &proxy);
    spawn_relay(relay).finish().await;
    drop(database_permit);
}

/// The relay of an attached session, and the database's client slot it holds.
fn relay_for(
    stream: ClientStream,
    attached: Attached,
    proxy: &Arc<Proxy>,
) -> (Relay, Option<OwnedSemaphorePermit>) {
    let client_params = attached.params;
    let relay = Relay::new(
        stream,
        attached.buf,
        attached.server,
        relay::Session {
            proxy: Arc::clone(proxy),
            snapshot: attached.snapshot,
            pools: attached.pools,
            user: attached.user,
            database: attached.database,
            startup_settings: Arc::clone(&attached.settings),
            settings: attached.settings,
            cancel_key: attached.cancel_key,
            params_seen: Some(client_params.digest()),
            client_params,
        },
    );
    (relay, attached.database_permit)
}

/// Runs the relay as a task of its own, so that each wake polls the relay's loop at once
/// rather than through the futures of the session's opening (each a cold cache line per
/// wake; measured with benches/footprint.sh). Dropping the returned handle aborts the
/// task, so a shutdown that aborts the session aborts its relay. Spawned at once, not
/// from inside a future, so the session's future does not carry the relay's size.
fn spawn_relay(relay: Relay) -> RelayTask {
    let span = tracing::Span::current();
    RelayTask(match span.is_disabled() {
        true => tokio::spawn(relay.run()),
        false => tokio::spawn(tracing::Instrument::instrument(relay.run(), span)),
    })
}

/// The relay's task, aborted when dropped.
struct RelayTask(tokio::task::JoinHandle<()>);

impl RelayTask {
    async fn finish(mut self) {
        if let Err(e) = (&mut self.0).await {
            if e.is_panic() {
                tracing::error!("session relay panicked");
            }
        }
    }
}

impl Drop for RelayTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs a session error and tells the client, when it can still be told.
async fn report(stream: Option<&mut ClientStream>, e: SessionError) {
    tracing::debug!(error = %e, "session ended with an error");
    let (Some(stream), Some(reply)) = (stream, e.reply()) else {
        return;
    };
    metrics::error(reply.code.class());
    let mut out = BytesMut::new();
    reply.encode(&mut out);
    let _ = io::send(stream, &out).await;
}

/// What a session holds once it is authenticated and attached to a server.
struct Attached {
    /// Client bytes already read past authentication.
    buf: BytesMut,
    /// None: a transaction-pooling login answered while every connection was busy.
    server: Option<PooledServer>,
    /// What the client was told (ParameterStatus).
    params: Params,
    snapshot: Arc<Snapshot>,
    pools: Arc<PoolSet>,
    user: String,
    database: String,
    settings: Arc<Vec<(String, String)>>,
    cancel_key: CancelKey,
    database_permit: Option<OwnedSemaphorePermit>,
}

/// Authenticates the client and attaches a server connection, then greets the client.
async fn prepare(
    stream: &mut ClientStream,
    mut buf: BytesMut,
    startup: &StartupParams,
    proxy: &Proxy,
) -> Result<Attached, SessionError> {
    let user_name = startup.user().ok_or(SessionError::NoUser)?.to_owned();
    let database = startup.database().unwrap_or_default().to_owned();
    let settings = params::requested_settings(&startup.params)?;
    let span = tracing::Span::current();
    span.record("user", user_name.as_str());
    span.record("database", database.as_str());

    let mut out = BytesMut::new();
    let extensions = params::protocol_extensions(&startup.params);
    if startup.minor > 0 || !extensions.is_empty() {
        reply::negotiate_protocol_version(&mut out, extensions);
        io::send(stream, &out).await?;
        out.clear();
    }
    let snapshot = proxy.snapshot();
    let user = snapshot.config.users.get(&user_name);
    tokio::time::timeout(
        STARTUP_TIMEOUT,
        auth::authenticate(stream, &mut buf, &user_name, user),
    )
    .await
    .map_err(|_| SessionError::StartupTimeout)??;
    let pools = snapshot
        .pools
        .get(&database, &user_name)
        .ok_or_else(|| SessionError::UnknownDatabase(database.clone()))?;
    let pool = &pools.primary;
    let database_permit = proxy.database_permit(&database)?;

    let mut cancel_key = proxy.cancels.register();
    let settings = crate::session::hidden::shared_settings(settings);
    // Transaction pooling, every connection busy: a login whose parameters are known is
    // answered at once, and its first transaction waits for a connection instead (as
    // PgBouncer does). Otherwise the login takes one, which checks its settings too.
    let known = match pool.mode() {
        PoolMode::Transaction => pool.login_params(&settings),
        PoolMode::Session => None,
    };
    let (server, params) = match known {
        Some(params) => match futures::FutureExt::now_or_never(pool.checkout()).transpose()? {
            Some(server) => first_server(server, &settings, pool, &mut cancel_key).await?,
            None => {
                tracing::debug!(pool = %pool.name, "every connection busy: login answered with the pool's known parameters");
                (None, params)
            }
        },
        None => first_server(pool.checkout().await?, &settings, pool, &mut cancel_key).await?,
    };
    welcome(&mut out, &params, &cancel_key);
    io::send(stream, &out).await?;
    tracing::debug!(pool = %pool.name, "session attached");
    Ok(Attached {
        buf,
        server,
        params,
        snapshot,
        pools,
        user: user_name,
        database,
        settings,
        cancel_key,
        database_permit,
    })
}

/// The session's first server connection, given its startup settings: what the client is
/// told comes from it.
async fn first_server(
    server: PooledServer,
    settings: &Arc<Vec<(String, String)>>,
    pool: &Pool,
    cancel_key: &mut CancelKey,
) -> Result<(Option<PooledServer>, Params), SessionError> {
    let mut server = attach(server, settings).await?;
    server.applied = Some(Arc::clone(settings));
    cancel_key.point_at(&server);
    pool.remember_login(&server.params, settings);
    let params = server.params.clone();
    Ok((Some(server), params))
}

/// Applies the client's startup settings to a server connection (which may carry another
/// client's, under transaction pooling).
async fn attach(
    mut server: PooledServer,
    settings: &[(String, String)],
) -> Result<PooledServer, SessionError> {
    if let Some(sql) = hidden::reconcile_settings(server.applied.as_deref(), settings) {
        match server.run_hidden(&sql).await {
            Ok(None) => {}
            Ok(Some(fields)) => {
                // The connection itself is fine (the error ended the statement); keep it
                // only if the server says so.
                server.broken = server.status != TxStatus::Idle;
                return Err(SessionError::StartupParameter(Box::new(fields)));
            }
            Err(e) => {
                server.broken = true;
                return Err(e.into());
            }
        }
    }
    Ok(server)
}

/// AuthenticationOk, the server's parameters, our cancel key, ReadyForQuery.
fn welcome(out: &mut BytesMut, params: &Params, key: &CancelKey) {
    reply::auth_ok(out);
    for (name, value) in params {
        reply::parameter_status(out, name, value);
    }
    reply::backend_key_data(out, key.pid, key.secret);
    reply::ready_for_query(out, TxStatus::Idle);
}
