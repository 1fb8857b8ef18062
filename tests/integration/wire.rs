//! Raw protocol helpers for tests that speak the wire themselves.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{DATABASE, TRUST_USER};

/// A regular message: tag, self-inclusive length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// A startup packet with the given protocol version code and parameters.
pub fn startup(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

/// A protocol 3.0 startup packet for the trust user and the test database.
pub fn trust_startup() -> Vec<u8> {
    startup(0x0003_0000, &[("user", TRUST_USER), ("database", DATABASE)])
}

/// Connects, logs in as the trust user and waits for the first ReadyForQuery.
pub async fn trust_login(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&trust_startup()).await.expect("startup");
    read_until_ready(&mut stream).await;
    stream
}

/// Reads until the bytes received end with a ReadyForQuery (bounded in time).
pub async fn read_until_ready(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(got.len() >= 6 && got[got.len() - 6] == b'Z') {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Reads until the peer closes (bounded in time).
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    assert!(
        done.is_ok(),
        "connection not closed: {:?}",
        String::from_utf8_lossy(&reply)
    );
    reply
}
