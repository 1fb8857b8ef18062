//! Cancel keys: the proxy gives each client its own BackendKeyData and maps it
//! to the server process the client is using at that moment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Where one client's key points: set by its session at each checkout and return, read
/// by cancels. The server process's key is one atomic word (0: none; PostgreSQL's pids
/// are positive), written at every checkout without a lock; the server it lives on
/// changes only when the session moves to another server, under a lock.
#[derive(Debug, Default)]
struct Slot {
    key: AtomicU64,
    server: Mutex<Option<Arc<ServerTarget>>>,
}

impl Slot {
    /// The target as it stands; None between transactions, or while it is being changed.
    fn read(&self) -> Option<CancelTarget> {
        let key = self.key.load(Ordering::Acquire);
        if key == 0 {
            return None;
        }
        let server = lock(&self.server).clone()?;
        // The server is changed only while the key reads 0: the same key before and after
        // means `server` is the one it belongs to.
        (self.key.load(Ordering::Acquire) == key).then(|| CancelTarget {
            server,
            key: unpack(key),
        })
    }
}

fn pack(key: ServerKey) -> u64 {
    (u64::from(key.pid as u32) << 32) | u64::from(key.secret as u32)
}

fn unpack(word: u64) -> ServerKey {
    ServerKey {
        pid: (word >> 32) as u32 as i32,
        secret: word as u32 as i32,
    }
}

#[derive(Debug)]
struct Entry {
    secret: i32,
    target: Arc<Slot>,
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
    /// Its own slot: a session moving between connections never takes the registry's lock.
    target: Arc<Slot>,
    /// The server last written to the slot (compared by address, without the lock).
    server: Option<Arc<ServerTarget>>,
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
            let target = Arc::new(Slot::default());
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
                server: None,
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
            entry.target.read()
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
    /// Points the key at the server process behind `conn`, the one the client now uses.
    pub fn point_at(&mut self, conn: &ServerConnection) {
        self.point(&conn.target, conn.key);
    }

    fn point(&mut self, server: &Arc<ServerTarget>, key: ServerKey) {
        let slot = &self.target;
        if !self.server.as_ref().is_some_and(|s| Arc::ptr_eq(s, server)) {
            slot.key.store(0, Ordering::Release);
            *lock(&slot.server) = Some(Arc::clone(server));
            self.server = Some(Arc::clone(server));
        }
        // A server key of 0 cannot be told from none; PostgreSQL never hands one out.
        slot.key.store(pack(key), Ordering::Release);
    }

    /// The client uses no server process: cancels go nowhere.
    pub fn clear(&self) {
        self.target.key.store(0, Ordering::Release);
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

    fn server(port: u16) -> Arc<ServerTarget> {
        Arc::new(ServerTarget {
            host: "127.0.0.1".into(),
            port,
            user: "u".into(),
            password: None,
            database: "d".into(),
        })
    }

    #[test]
    fn keys_map_to_targets_and_unregister() {
        let registry = Arc::new(CancelRegistry::default());
        let mut key = registry.register();
        let secret = key.secret.to_be_bytes();
        assert_eq!(registry.lookup(key.pid, &secret), None);
        let first = CancelTarget {
            server: server(5432),
            key: ServerKey {
                pid: 9,
                secret: -10,
            },
        };
        key.point(&first.server, first.key);
        assert_eq!(registry.lookup(key.pid, &secret), Some(first.clone()));
        // Another process on the same server, then one on another server.
        let same_server = CancelTarget {
            server: Arc::clone(&first.server),
            key: ServerKey {
                pid: i32::MAX,
                secret: i32::MIN,
            },
        };
        key.point(&same_server.server, same_server.key);
        assert_eq!(registry.lookup(key.pid, &secret), Some(same_server));
        let elsewhere = CancelTarget {
            server: server(5433),
            key: ServerKey { pid: 77, secret: 0 },
        };
        key.point(&elsewhere.server, elsewhere.key);
        assert_eq!(registry.lookup(key.pid, &secret), Some(elsewhere));
        key.clear();
        assert_eq!(registry.lookup(key.pid, &secret), None);
        key.point(&first.server, first.key);
        let mut wrong = secret;
        wrong[3] ^= 1;
        assert_eq!(registry.lookup(key.pid, &wrong), None);
        assert_eq!(registry.lookup(key.pid, &secret[..3]), None);
        let pid = key.pid;
        drop(key);
        assert_eq!(registry.lookup(pid, &secret), None);
        assert!(registry.is_empty());
    }

    #[test]
    fn server_keys_survive_packing() {
        for (pid, secret) in [(1, 0), (i32::MAX, -1), (12345, i32::MIN), (7, i32::MAX)] {
            let key = unpack(pack(ServerKey { pid, secret }));
            assert_eq!((key.pid, key.secret), (pid, secret));
        }
    }
}
