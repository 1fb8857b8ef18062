//! Cancel keys: the proxy gives each client its own BackendKeyData and maps it
//! to the server process the client is using at that moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::connection::{ServerConnection, ServerKey, ServerTarget};

/// The server process a client's cancel request must reach.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub server: Arc<ServerTarget>,
    pub key: ServerKey,
}

impl CancelTarget {
    /// The process behind `conn`.
    pub fn of(conn: &ServerConnection) -> CancelTarget {
        CancelTarget {
            server: Arc::clone(&conn.target),
            key: conn.key,
        }
    }
}

impl PartialEq for CancelTarget {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.server.host == other.server.host
            && self.server.port == other.server.port
    }
}

/// Where one client's key points: set by its session at each checkout, read by cancels.
type Slot = Arc<Mutex<Option<CancelTarget>>>;

#[derive(Debug)]
struct Entry {
    secret: i32,
    target: Slot,
}

/// All live client keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, Entry>>,
}

/// A client's registered key; unregisters on drop.
#[derive(Debug)]
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    /// Its own lock: a session moving between connections never waits on the registry's.
    target: Slot,
    pub pid: i32,
    pub secret: i32,
}

impl CancelRegistry {
    /// Issues a fresh random key for a client session.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let mut entries = lock(&self.entries);
        loop {
            // Positive pids, like PostgreSQL's, so clients print them sensibly.
            let pid = rand::random::<i32>() & i32::MAX;
            if pid == 0 || entries.contains_key(&pid) {
                continue;
            }
            let secret = rand::random::<i32>();
            let target = Slot::default();
            entries.insert(
                pid,
                Entry {
                    secret,
                    target: Arc::clone(&target),
                },
            );
            return CancelKey {
                registry: Arc::clone(self),
                target,
                pid,
                secret,
            };
        }
    }

    /// The server target for a client key, if the key is valid and the client holds a server.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let entries = lock(&self.entries);
        let entry = entries.get(&pid)?;
        let expected = entry.secret.to_be_bytes();
        // Constant-time comparison of the secret.
        let same = secret.len() == 4
            && expected
                .iter()
                .zip(secret)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            lock(&entry.target).clone()
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CancelKey {
    /// Points the key at the server the client now uses (or at none).
    pub fn set_target(&self, target: Option<CancelTarget>) {
        *lock(&self.target) = target;
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        lock(&self.registry.entries).remove(&self.pid);
    }
}

/// How long forwarding a cancel may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a CancelRequest to a server process over a new connection.
pub async fn send_cancel(target: &CancelTarget) -> std::io::Result<()> {
    let send = async {
        let mut stream =
            TcpStream::connect((target.server.host.as_str(), target.server.port)).await?;
        let mut buf = BytesMut::new();
        frontend::cancel_request(target.key.pid, target.key.secret, &mut buf);
        stream.write_all(&buf).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(CANCEL_TIMEOUT, send)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_targets_and_unregister() {
        let registry = Arc::new(CancelRegistry::default());
        let key = registry.register();
        let secret = key.secret.to_be_bytes();
        assert_eq!(registry.lookup(key.pid, &secret), None);
        let target = CancelTarget {
            server: Arc::new(ServerTarget {
                host: "127.0.0.1".into(),
                port: 5432,
                user: "u".into(),
                password: None,
                database: "d".into(),
            }),
            key: ServerKey { pid: 9, secret: 10 },
        };
        key.set_target(Some(target.clone()));
        assert_eq!(registry.lookup(key.pid, &secret), Some(target));
        let mut wrong = secret;
        wrong[3] ^= 1;
        assert_eq!(registry.lookup(key.pid, &wrong), None);
        assert_eq!(registry.lookup(key.pid, &secret[..3]), None);
        let pid = key.pid;
        drop(key);
        assert_eq!(registry.lookup(pid, &secret), None);
        assert!(registry.is_empty());
    }
}
