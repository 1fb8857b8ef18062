//! The relay's one waiting place: polls, in a fixed order, the read timeout, the stop
//! signal, both sockets' reads and both pending writes, and reports the first that is
//! ready. Written as one poll function rather than a `select!` over futures: nothing is
//! built or dropped per wake, which keeps the per-transaction code small.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;

use super::{Relay, HIGH_WATER, INPUT_LIMIT};
use crate::backend::ServerConnection;
use crate::protocol::buffers::{give_back, reserve};
use crate::tls::ClientStream;

/// What the relay woke up for.
#[derive(Debug)]
pub(super) enum Wake {
    /// The read timeout of the statement in flight passed.
    TimedOut,
    Shutdown,
    /// Bytes came from the server (`Ok(0)`: it closed).
    ServerRead(io::Result<usize>),
    ServerWritten(io::Result<()>),
    ClientWritten(io::Result<()>),
    /// Bytes came from the client (`Ok(0)`: it closed).
    ClientRead(io::Result<usize>),
}

/// The timer behind a read timeout, kept across wakes and reset when the deadline moves.
#[derive(Debug, Default)]
pub(super) struct Timer {
    sleep: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl Timer {
    fn poll_at(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some((set, sleep)) if *set == at => sleep.as_mut().poll(cx),
            Some((set, sleep)) => {
                *set = at;
                sleep.as_mut().reset(at.into());
                sleep.as_mut().poll(cx)
            }
            None => {
                let sleep = self
                    .sleep
                    .insert((at, Box::pin(tokio::time::sleep_until(at.into()))));
                sleep.1.as_mut().poll(cx)
            }
        }
    }
}

impl Relay {
    /// Waits until one of the relay's sources is ready. Polled in a fixed order, not at
    /// random (no random number per poll). Each read stops while its output backs up past
    /// HIGH_WATER, so a side that always has bytes cannot hold the other off for long; the
    /// timeout and shutdown come first so a streaming result cannot hide them.
    /// (Awaited through `poll_fn` in the relay loop itself: an `async fn` here would add
    /// a future of its own, whose state is one more cache line each wake touches.)
    pub(super) fn poll_wake(&mut self, cx: &mut Context<'_>, shutting_down: bool) -> Poll<Wake> {
        if let (Some(at), Some(_)) = (self.routing.as_ref().and_then(|r| r.deadline), &self.server)
        {
            if self.timer.poll_at(at, cx).is_ready() {
                return Poll::Ready(Wake::TimedOut);
            }
        }
        if !shutting_down && self.shutdown.poll_fired(cx).is_ready() {
            return Poll::Ready(Wake::Shutdown);
        }
        // With nothing owed by the server, the next bytes are most likely the client's:
        // its read comes first, which spares a poll of the server's at each request.
        // (Once a request is sent the server owes a reply and comes first again, so
        // neither side holds the other off.)
        let client_first = self.state.is_idle();
        if client_first {
            if let Poll::Ready(wake) = self.poll_client_read(cx) {
                return Poll::Ready(wake);
            }
        }
        if let Some(ServerConnection {
            stream, read_buf, ..
        }) = self.server.as_deref_mut()
        {
            if self.to_client.len() < HIGH_WATER {
                if let Poll::Ready(read) = poll_read_lent(stream, cx, read_buf) {
                    return Poll::Ready(Wake::ServerRead(read));
                }
            }
            if !self.to_server.is_empty() {
                if let Poll::Ready(written) = poll_write(Pin::new(stream), cx, &mut self.to_server)
                {
                    return Poll::Ready(Wake::ServerWritten(written));
                }
            }
        }
        if !self.to_client.is_empty() || self.client_unflushed {
            if let Poll::Ready(written) = poll_write_client(
                &mut self.client,
                cx,
                &mut self.to_client,
                &mut self.client_unflushed,
            ) {
                return Poll::Ready(Wake::ClientWritten(written));
            }
        }
        if !client_first {
            return self.poll_client_read(cx);
        }
        Poll::Pending
    }

    /// (Inlined at both call sites: fewer code lines per transaction under callgrind.)
    #[inline(always)]
    fn poll_client_read(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if self.to_server.len() < HIGH_WATER && self.from_client.len() < INPUT_LIMIT {
            if let Poll::Ready(read) = poll_read_lent(&mut self.client, cx, &mut self.from_client) {
                return Poll::Ready(Wake::ClientRead(read));
            }
        }
        Poll::Pending
    }
}

/// Reads into `buf`. One that holds no memory is lent a buffer only once the socket has
/// bytes; a buffer goes back when nothing came (so a waiting session holds none).
#[inline(always)]
fn poll_read_lent<R: AsyncRead + ReadReady + Unpin>(
    reader: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == 0 && reader.poll_read_ready(cx).is_pending() {
        return Poll::Pending;
    }
    reserve(buf);
    let read = poll_read_buf(Pin::new(reader), cx, buf);
    if read.is_pending() {
        give_back(buf);
    }
    read
}

/// A transport that can tell it has bytes to read before it is given a buffer.
trait ReadReady {
    /// Ready when a read may find bytes (or the end, or an error); registers the task to
    /// be woken otherwise.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ReadReady for ClientStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ClientStream::poll_read_ready(self, cx)
    }
}

/// Writes what the socket takes of `buf` and drops it from `buf`.
fn poll_write<W: AsyncWrite>(
    writer: Pin<&mut W>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<()>> {
    let n = std::task::ready!(writer.poll_write(cx, buf))?;
    buf.advance(n);
    give_back(buf);
    Poll::Ready(Ok(()))
}

/// Writes to the client, or flushes TLS records written before once nothing is left.
fn poll_write_client(
    writer: &mut ClientStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    unflushed: &mut bool,
) -> Poll<io::Result<()>> {
    if buf.is_empty() {
        std::task::ready!(Pin::new(writer).poll_flush(cx))?;
        *unflushed = false;
    } else {
        let tls = writer.is_tls();
        std::task::ready!(poll_write(Pin::new(writer), cx, buf))?;
        *unflushed = tls;
    }
    Poll::Ready(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_waiting_read_holds_no_buffer_and_a_ready_one_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        // Nothing sent yet: pending, and no memory taken for it.
        let waiting = poll_fn(|cx| Poll::Ready(poll_read_lent(&mut stream, cx, &mut buf))).await;
        assert!(waiting.is_pending());
        assert_eq!(buf.capacity(), 0);
        peer.write_all(b"Q\0\0\0\x0dSELECT 1\0").await.unwrap();
        let read = poll_fn(|cx| poll_read_lent(&mut stream, cx, &mut buf)).await;
        assert_eq!(read.unwrap(), 14);
        assert_eq!(&buf[..], b"Q\0\0\0\x0dSELECT 1\0");
        // Read and emptied, the buffer goes back at the next wait.
        buf.clear();
        let waiting = poll_fn(|cx| Poll::Ready(poll_read_lent(&mut stream, cx, &mut buf))).await;
        assert!(waiting.is_pending());
        assert_eq!(buf.capacity(), 0);
    }
}
