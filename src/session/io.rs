//! Reading whole messages from a client before the relay starts (startup and auth).

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::SessionError;
use crate::protocol::frame::{self, MAX_STARTUP_LEN};
use crate::tls::ClientStream;

/// Reads one startup-phase packet (length-prefixed, no tag), bounded by MAX_STARTUP_LEN.
pub async fn read_startup_packet(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<BytesMut, SessionError> {
    loop {
        if let Some(len) = frame::startup_packet_len(buf)? {
            // Copied out rather than split off: a split buffer becomes shared, and every
            // later reuse of it (by the relay, at each message) checks a shared count.
            let packet = BytesMut::from(&buf[..len]);
            buf.advance(len);
            return Ok(packet);
        }
        fill(stream, buf).await?;
    }
}

/// Reads one regular message (tag + length + body), bounded by `max_len`.
pub async fn read_message(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<(u8, BytesMut), SessionError> {
    loop {
        if let Some(f) = frame::next_frame(buf, 0, max_len)? {
            // (Copied out: see `read_startup_packet`.)
            let message = BytesMut::from(&buf[frame::HEADER_LEN..f.len]);
            buf.advance(f.len);
            return Ok((f.tag, message));
        }
        fill(stream, buf).await?;
    }
}

/// Writes and flushes (TLS buffers records until flushed).
pub async fn send(stream: &mut ClientStream, bytes: &[u8]) -> Result<(), SessionError> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    Ok(())
}

async fn fill(stream: &mut ClientStream, buf: &mut BytesMut) -> Result<(), SessionError> {
    buf.reserve(MAX_STARTUP_LEN.min(8192));
    match stream.read_buf(buf).await {
        Ok(0) => Err(SessionError::ClientGone),
        Ok(_) => Ok(()),
        Err(e) => Err(SessionError::Io(e)),
    }
}
