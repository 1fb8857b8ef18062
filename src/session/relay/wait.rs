//! The relay's one waiting place: polls, in a fixed order, the read timeout, the stop
//! signal, both sockets' reads and both pending writes, and reports the first that is
//! ready. Written as one poll function rather than a `select!` over futures: nothing is
//! built or dropped per wake, which keeps the per-transaction code small.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;

use super::{rewind, Relay, HIGH_WATER, INPUT_LIMIT};
use crate::backend::ServerConnection;
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
    pub(super) async fn wait(&mut self, shutting_down: bool) -> Wake {
        poll_fn(|cx| self.poll_wake(cx, shutting_down)).await
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>, shutting_down: bool) -> Poll<Wake> {
        if let (Some(at), Some(_)) = (self.routing.as_ref().and_then(|r| r.deadline), &self.server)
        {
            if self.timer.poll_at(at, cx).is_ready() {
                return Poll::Ready(Wake::TimedOut);
            }
        }
        if !shutting_down && self.session.shutdown.poll_fired(cx).is_ready() {
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
                if let Poll::Ready(read) = poll_read_buf(Pin::new(&mut *stream), cx, read_buf) {
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
            let reader = Pin::new(&mut self.client);
            if let Poll::Ready(read) = poll_read_buf(reader, cx, &mut self.from_client) {
                return Poll::Ready(Wake::ClientRead(read));
            }
        }
        Poll::Pending
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
    rewind(buf);
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
