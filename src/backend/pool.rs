//! One pool of server connections, for a (database, user, server): bb8 opens and closes
//! them, a warm stack in front of it hands them out, and slots keep waiting clients in order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8::{ErrorSink, ManageConnection, RunError};
use thiserror::Error;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use super::connection::{ServerConnection, ServerTarget};
use super::error::BackendError;
use super::params::Params;
use super::warm::{Conn, Warm};
use crate::metrics;
use crate::rules::{PoolConfig, PoolMode};

/// bb8 manager creating raw protocol connections.
#[derive(Debug)]
pub struct ServerManager {
    target: Arc<ServerTarget>,
    /// A server that accepts TCP but never answers must not hold a pool slot forever.
    connect_timeout: Duration,
}

impl ManageConnection for ServerManager {
    /// Boxed: bb8 moves connections in and out of its idle list and its futures at every
    /// checkout and return; a pointer is cheaper to move than the connection.
    type Connection = Box<ServerConnection>;
    type Error = BackendError;

    async fn connect(&self) -> Result<Box<ServerConnection>, BackendError> {
        let connect = ServerConnection::connect(Arc::clone(&self.target));
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| BackendError::ConnectTimeout(self.connect_timeout))?
            .map(Box::new)
    }

    async fn is_valid(&self, conn: &mut Box<ServerConnection>) -> Result<(), BackendError> {
        if usable(conn) {
            Ok(())
        } else {
            Err(BackendError::Stale)
        }
    }

    fn has_broken(&self, conn: &mut Box<ServerConnection>) -> bool {
        !conn.is_reusable()
    }
}

/// How often bb8 closes idle and aged connections: often enough that a short idle timeout
/// or lifetime is kept to within about half of itself (bb8's own default is 30 s).
fn reaper_rate(settings: &PoolConfig) -> Duration {
    [settings.idle_timeout, settings.max_lifetime]
        .into_iter()
        .flatten()
        .map(|d| d / 2)
        .min()
        .unwrap_or(Duration::from_secs(30))
        .clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// Checked before a pooled connection is handed out, without blocking: a server that sent
/// anything while idle (e.g. a FATAL after pg_terminate_backend) or closed the socket is
/// not handed out, and is marked broken so that it is closed.
fn usable(conn: &mut ServerConnection) -> bool {
    let usable = conn.is_reusable() && conn.is_quiet();
    conn.broken |= !usable;
    usable
}

/// A server connection checked out of a pool. On drop it goes back to the pool's warm
/// stack if it can be used again (to bb8 otherwise, which closes it), then the next
/// waiting client is let in.
pub struct PooledServer {
    /// Always present until dropped.
    conn: Option<Conn>,
    home: Arc<Home>,
}

/// What a checked-out connection returns to: the warm stack and the slot it holds.
#[derive(Debug)]
struct Home {
    warm: Warm,
    /// One permit per connection, handed out first come, first served (tokio's semaphore
    /// is fair): waiting clients are served in arrival order, which bb8 alone does not
    /// promise.
    slots: Semaphore,
}

impl std::ops::Deref for PooledServer {
    type Target = ServerConnection;

    fn deref(&self) -> &ServerConnection {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("a pooled server keeps its connection until dropped"),
        }
    }
}

impl std::ops::DerefMut for PooledServer {
    fn deref_mut(&mut self) -> &mut ServerConnection {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("a pooled server keeps its connection until dropped"),
        }
    }
}

impl Drop for PooledServer {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.is_reusable() {
                self.home.warm.give_back(conn);
            } else {
                // bb8 sees it broken and closes it.
                drop(conn);
            }
        }
        // The connection is back before the slot is freed.
        self.home.slots.add_permits(1);
    }
}

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("timed out after {waited:?} waiting for a server connection in pool \"{pool}\" (pool_size {size})")]
    Timeout {
        pool: String,
        waited: Duration,
        size: u32,
    },
    #[error(transparent)]
    Backend(#[from] Arc<BackendError>),
}

/// The last failure to open a server connection, shared with the clients waiting for one.
/// bb8 reports connect errors only to its error sink, never to the waiting `get()`.
#[derive(Debug, Default)]
struct ConnectFailures {
    last: Mutex<Option<Arc<BackendError>>>,
    /// Wakes every waiting checkout when a connect attempt fails.
    notify: Notify,
}

#[derive(Debug, Clone)]
struct FailureSink {
    pool: String,
    failures: Arc<ConnectFailures>,
}

impl ErrorSink<BackendError> for FailureSink {
    fn sink(&self, error: BackendError) {
        if matches!(error, BackendError::Stale) {
            // Not a failure to connect: bb8 replaces the connection and carries on.
            tracing::debug!(pool = %self.pool, "dropped a stale pooled server connection");
            return;
        }
        tracing::warn!(pool = %self.pool, error = %error, "cannot open a server connection");
        let error = Arc::new(error);
        *self.failures.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.failures.notify.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<BackendError>> {
        Box::new(self.clone())
    }
}

/// One pool: its name (`database/user`), settings and bb8 pool.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub settings: PoolConfig,
    pub target: Arc<ServerTarget>,
    inner: bb8::Pool<ServerManager>,
    failures: Arc<ConnectFailures>,
    /// The warm stack checkouts take from first, and the slots.
    home: Arc<Home>,
    /// What the last plain login was told: see `LoginParams`.
    login: Mutex<Option<LoginParams>>,
}

/// The parameters (ParameterStatus) a login of this pool was told, kept so that a login
/// finding every connection busy in transaction pooling need not wait for one: another
/// login of the same database and role, asking for no other reported value, is told the
/// same. (A transaction's connection tells the client any value that differs.)
#[derive(Debug, Clone)]
pub struct LoginParams {
    pub params: Params,
    /// What a login setting no application_name is told, once one was seen.
    pub default_application_name: Option<String>,
}

impl LoginParams {
    /// What to keep of a login told `params` for its startup `settings`: its values, if
    /// each setting is told as the server reported it (any other login's values are its
    /// own: None, the earlier ones stay).
    fn learn(
        earlier: Option<&LoginParams>,
        params: &Params,
        settings: &[(String, String)],
    ) -> Option<LoginParams> {
        let plain = settings
            .iter()
            .all(|(name, value)| name == "application_name" || params.get(name) == Some(value));
        if !plain {
            return None;
        }
        let sets_name = settings.iter().any(|(name, _)| name == "application_name");
        let default_application_name = match sets_name {
            true => earlier.and_then(|l| l.default_application_name.clone()),
            false => params.get("application_name").cloned(),
        };
        Some(LoginParams {
            params: params.clone(),
            default_application_name,
        })
    }

    /// What a login with startup `settings` is told, if known: every setting is either
    /// application_name (told as sent, where PostgreSQL would not change it: printable
    /// ASCII under 64 bytes) or a reported parameter at the value the server reported.
    fn told(&self, settings: &[(String, String)]) -> Option<Params> {
        let mut params = self.params.clone();
        let mut name = self.default_application_name.clone();
        for (setting, value) in settings {
            if setting == "application_name" {
                let plain = value.len() < 64 && value.bytes().all(|b| (0x20..0x7f).contains(&b));
                if !plain {
                    return None;
                }
                name = Some(value.clone());
            } else if params.get(setting) != Some(value) {
                return None;
            }
        }
        params.insert("application_name".to_owned(), name?);
        Some(params)
    }
}

impl Pool {
    pub(super) fn new(name: String, settings: PoolConfig, target: ServerTarget) -> Pool {
        let target = Arc::new(target);
        let failures = Arc::new(ConnectFailures::default());
        let inner = bb8::Pool::builder()
            .max_size(settings.size)
            .min_idle(Some(settings.min_idle).filter(|n| *n > 0))
            .connection_timeout(settings.checkout_timeout)
            .idle_timeout(settings.idle_timeout)
            .max_lifetime(settings.max_lifetime)
            .reaper_rate(reaper_rate(&settings))
            // Surface server errors (bad password, missing database) instead of retrying until timeout.
            .retry_connection(false)
            .test_on_check_out(true)
            // The connection released last is handed out first: the fewest server
            // processes stay busy and warm, and the idle ones age out (PgBouncer's default
            // too; the warm stack is last in, first out as well). Waiting clients are still
            // served in order, by the slots.
            .queue_strategy(bb8::QueueStrategy::Lifo)
            .error_sink(Box::new(FailureSink {
                pool: name.clone(),
                failures: Arc::clone(&failures),
            }))
            .build_unchecked(ServerManager {
                target: Arc::clone(&target),
                connect_timeout: settings.checkout_timeout,
            });
        Pool {
            home: Arc::new(Home {
                warm: Warm::default(),
                slots: Semaphore::new(settings.size as usize),
            }),
            name,
            settings,
            target,
            inner,
            failures,
            login: Mutex::new(None),
        }
    }

    /// A login was told `params` for its startup `settings`: see `LoginParams::learn`.
    pub fn remember_login(&self, params: &Params, settings: &[(String, String)]) {
        let mut login = self.login.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(learned) = LoginParams::learn(login.as_ref(), params, settings) {
            *login = Some(learned);
        }
    }

    /// What a login with startup `settings` would be told, if known without a server.
    pub fn login_params(&self, settings: &[(String, String)]) -> Option<Params> {
        let login = self.login.lock().unwrap_or_else(|p| p.into_inner());
        login.as_ref()?.told(settings)
    }

    /// Checks out a server connection, waiting at most the pool's checkout timeout.
    /// If opening a server connection fails meanwhile, waiters get that error at once.
    /// The connection comes back marked as needing a reset.
    pub async fn checkout(&self) -> Result<PooledServer, PoolError> {
        // A free slot and a warm connection: taken at once, with no timer and no clock
        // (tokio's semaphore hands released permits to waiters first, so taking a free
        // one never jumps the queue).
        if let Ok(slot) = self.home.slots.try_acquire() {
            let slot = match self.warm_one(slot) {
                Ok(server) => return Ok(server),
                Err(slot) => slot,
            };
            // Created before trying bb8: a `Notified` sees every `notify_waiters` after
            // its creation, polled or not, so no connect failure from now on is missed.
            let failed = self.failures.notify.notified();
            // Tried once and dropped if it must wait: it is not held across an await, so
            // it takes no room in this future (waiting starts a new one, boxed).
            let now = {
                let get = std::pin::pin!(self.inner.get_owned());
                futures::FutureExt::now_or_never(get)
            };
            if let Some(result) = now {
                metrics::get().checkout_wait.record(Duration::ZERO);
                let conn = self.given_by_bb8(result, Instant::now)?;
                return Ok(self.checked_out(conn, slot));
            }
            let started = Instant::now();
            return Box::pin(self.wait_for_connection(failed, slot, started)).await;
        }
        Box::pin(self.wait_for_slot()).await
    }

    /// A free slot and a warm connection, without waiting: what `checkout` does first, for
    /// callers that run it outside a future (none is built).
    pub fn checkout_now(&self) -> Option<PooledServer> {
        let slot = self.home.slots.try_acquire().ok()?;
        self.warm_one(slot).ok()
    }

    /// A usable connection from the warm stack for `slot`, or the slot back.
    fn warm_one<'a>(
        &'a self,
        slot: SemaphorePermit<'a>,
    ) -> Result<PooledServer, SemaphorePermit<'a>> {
        while let Some(mut conn) = self.home.warm.take() {
            if usable(&mut conn) {
                metrics::get().checkout_wait.record(Duration::ZERO);
                return Ok(self.checked_out(conn, slot));
            }
        }
        Err(slot)
    }

    /// No free slot: waits for one in arrival order, then for a connection.
    async fn wait_for_slot(&self) -> Result<PooledServer, PoolError> {
        let started = Instant::now();
        let slot =
            match tokio::time::timeout(self.settings.checkout_timeout, self.home.slots.acquire())
                .await
            {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) | Err(_) => {
                    metrics::get().checkout_wait.record(started.elapsed());
                    return Err(self.timed_out(started));
                }
            };
        // Created after the slot: only connect failures from now on count for us.
        let failed = self.failures.notify.notified();
        self.wait_for_connection(failed, slot, started).await
    }

    /// Holding a slot: waits for a connection, from the warm stack or bb8, until the
    /// checkout timeout, or until a connect attempt fails.
    async fn wait_for_connection(
        &self,
        failed: Notified<'_>,
        slot: SemaphorePermit<'_>,
        started: Instant,
    ) -> Result<PooledServer, PoolError> {
        let mut failed = std::pin::pin!(failed);
        loop {
            let (_waiting, returned) = match self.home.warm.take_or_wait() {
                Ok(mut conn) => {
                    if usable(&mut conn) {
                        metrics::get().checkout_wait.record(started.elapsed());
                        return Ok(self.checked_out(conn, slot));
                    }
                    continue;
                }
                Err(waiting) => waiting,
            };
            let returned = std::pin::pin!(returned);
            let remaining = self
                .settings
                .checkout_timeout
                .saturating_sub(started.elapsed());
            let result = tokio::select! {
                result = tokio::time::timeout(remaining, self.inner.get_owned()) => {
                    result.unwrap_or(Err(RunError::TimedOut))
                }
                // A connection came back to the warm stack: look there again.
                () = returned => continue,
                () = &mut failed => {
                    metrics::get().checkout_wait.record(started.elapsed());
                    let last = self.failures.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    return Err(last.map_or_else(|| self.timed_out(started), PoolError::Backend));
                }
            };
            metrics::get().checkout_wait.record(started.elapsed());
            let conn = self.given_by_bb8(result, || started)?;
            return Ok(self.checked_out(conn, slot));
        }
    }

    /// A connection bb8 handed out, stamped with the end of its lifetime.
    fn given_by_bb8(
        &self,
        result: Result<Conn, RunError<BackendError>>,
        started: impl FnOnce() -> Instant,
    ) -> Result<Conn, PoolError> {
        let mut conn = result.map_err(|e| match e {
            RunError::User(e) => PoolError::Backend(Arc::new(e)),
            RunError::TimedOut => self.timed_out(started()),
        })?;
        self.home.warm.stamp(&mut conn, self.settings.max_lifetime);
        Ok(conn)
    }

    fn checked_out(&self, conn: Conn, slot: SemaphorePermit<'_>) -> PooledServer {
        // Given back by the PooledServer's drop.
        slot.forget();
        let mut conn = PooledServer {
            conn: Some(conn),
            home: Arc::clone(&self.home),
        };
        conn.needs_reset = true;
        conn
    }

    fn timed_out(&self, started: Instant) -> PoolError {
        PoolError::Timeout {
            pool: self.name.clone(),
            waited: started.elapsed(),
            size: self.settings.size,
        }
    }

    /// Once a second: warm connections unused since the last sweep go back to bb8.
    pub fn sweep(&self) {
        drop(self.home.warm.sweep());
    }

    /// Closes the connections no session is using (the warm stack's and bb8's idle ones),
    /// so that PostgreSQL can drop or copy their database: it refuses while anyone else is
    /// connected to it. Connections in use stay. Returns how many were closed.
    pub fn close_idle(&self) -> usize {
        let mut closed = 0;
        // Marked broken, each goes back to bb8 as it is dropped, and bb8 closes it.
        for mut conn in self.home.warm.take_all() {
            conn.broken = true;
            closed += 1;
        }
        for _ in 0..self.inner.state().idle_connections {
            let get = std::pin::pin!(self.inner.get_owned());
            match futures::FutureExt::now_or_never(get) {
                Some(Ok(mut conn)) => {
                    conn.broken = true;
                    closed += 1;
                }
                _ => break,
            }
        }
        closed
    }

    pub fn mode(&self) -> PoolMode {
        self.settings.mode
    }

    /// (open connections, idle connections): bb8's idle ones and the warm stack.
    pub fn counts(&self) -> (u32, u32) {
        let warm = u32::try_from(self.home.warm.len()).unwrap_or(u32::MAX);
        let state = self.inner.state();
        (
            state.connections,
            state.idle_connections.saturating_add(warm),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn reported(items: &[(&str, &str)]) -> Params {
        let mut params = Params::default();
        for (name, value) in pairs(items) {
            params.insert(name, value);
        }
        params
    }

    #[test]
    fn a_login_is_told_what_an_earlier_plain_login_was() {
        let server = reported(&[
            ("application_name", ""),
            ("client_encoding", "UTF8"),
            ("TimeZone", "UTC"),
        ]);
        let login = LoginParams::learn(None, &server, &pairs(&[("client_encoding", "UTF8")]))
            .expect("plain login");
        assert_eq!(login.told(&[]), Some(server.clone()));
        let told = login
            .told(&pairs(&[
                ("application_name", "app"),
                ("client_encoding", "UTF8"),
            ]))
            .expect("known");
        assert_eq!(
            told.get("application_name").map(String::as_str),
            Some("app")
        );
        assert_eq!(told.get("TimeZone").map(String::as_str), Some("UTC"));
        // Values the server might report otherwise, or settings it does not report: a
        // server must say.
        for settings in [
            pairs(&[("client_encoding", "utf-8")]),
            pairs(&[("TimeZone", "Europe/Paris")]),
            pairs(&[("statement_timeout", "5s")]),
            pairs(&[("application_name", "é")]),
            pairs(&[("application_name", &"x".repeat(64))]),
        ] {
            assert_eq!(login.told(&settings), None, "{settings:?}");
        }
    }

    #[test]
    fn only_plain_logins_are_learned_from() {
        let server = reported(&[("application_name", "named"), ("DateStyle", "ISO, MDY")]);
        // DateStyle sent as "iso", reported normalized: that login's values are its own.
        assert!(LoginParams::learn(None, &server, &pairs(&[("DateStyle", "iso")])).is_none());
        // A login that set its name: the default name stays unknown until one that did not.
        let named = LoginParams::learn(None, &server, &pairs(&[("application_name", "named")]))
            .expect("plain");
        assert_eq!(named.told(&[]), None, "default name unknown");
        assert!(named
            .told(&pairs(&[("application_name", "other")]))
            .is_some());
        let unnamed = reported(&[("application_name", ""), ("DateStyle", "ISO, MDY")]);
        let learned = LoginParams::learn(Some(&named), &unnamed, &[]).expect("plain");
        let named_again = LoginParams::learn(
            Some(&learned),
            &server,
            &pairs(&[("application_name", "named")]),
        )
        .expect("plain");
        assert_eq!(named_again.default_application_name.as_deref(), Some(""));
    }
}
