//! The opening of a client connection: SSL/GSS negotiation, CancelRequest, StartupMessage.

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::error::SessionError;
use super::io::{read_startup_packet, send};
use crate::backend::cancel::send_cancel;
use crate::protocol::startup::{self, StartupPacket, StartupParams};
use crate::proxy::Proxy;
use crate::rules::TlsMode;
use crate::tls::ClientStream;

/// How a connection opened.
pub enum Opening {
    /// A client session that sent its StartupMessage.
    Session {
        stream: ClientStream,
        /// Bytes the client already sent after the StartupMessage.
        buf: BytesMut,
        startup: StartupParams,
    },
    /// A CancelRequest, handled; the connection ends.
    Cancel,
}

/// One step of the opening exchange.
enum Step {
    /// Answered something (GSSENCRequest refused, SSLRequest refused); read the next packet.
    Again,
    /// `S` was sent: upgrade the connection.
    StartTls(TlsAcceptor),
    Cancelled,
    Startup(StartupParams),
}

/// Runs the opening exchange. On error, hands the stream back (when there still is one)
/// so the caller can tell the client why.
pub async fn handshake(
    tcp: TcpStream,
    proxy: &Proxy,
) -> Result<Opening, (SessionError, Option<ClientStream>)> {
    let mut stream = ClientStream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match next_step(&mut stream, &mut buf, proxy).await {
            Err(e) => return Err((e, Some(stream))),
            Ok(Step::Again) => {}
            Ok(Step::StartTls(acceptor)) => {
                let ClientStream::Plain(tcp) = stream else {
                    return Err((
                        SessionError::Protocol("SSLRequest inside TLS"),
                        Some(stream),
                    ));
                };
                match acceptor.accept(tcp).await {
                    Ok(tls) => stream = ClientStream::Tls(Box::new(tls)),
                    Err(e) => return Err((SessionError::TlsHandshake(e), None)),
                }
            }
            Ok(Step::Cancelled) => return Ok(Opening::Cancel),
            Ok(Step::Startup(startup)) => {
                if proxy.snapshot().config.tls.mode == TlsMode::Require && !stream.is_tls() {
                    return Err((SessionError::TlsRequired, Some(stream)));
                }
                return Ok(Opening::Session {
                    stream,
                    buf,
                    startup,
                });
            }
        }
    }
}

async fn next_step(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    proxy: &Proxy,
) -> Result<Step, SessionError> {
    let packet = read_startup_packet(stream, buf).await?;
    match startup::decode(&packet)? {
        StartupPacket::SslRequest => {
            if stream.is_tls() {
                return Err(SessionError::Protocol("SSLRequest inside TLS"));
            }
            let Some(acceptor) = proxy.tls.clone() else {
                send(stream, b"N").await?;
                return Ok(Step::Again);
            };
            // Bytes sent before the handshake would be read as if they had been encrypted
            // (CVE-2021-23214 in PostgreSQL): refuse them.
            if !buf.is_empty() {
                return Err(SessionError::Protocol(
                    "received unencrypted data after SSL request",
                ));
            }
            send(stream, b"S").await?;
            Ok(Step::StartTls(acceptor))
        }
        StartupPacket::GssEncRequest => {
            send(stream, b"N").await?;
            Ok(Step::Again)
        }
        StartupPacket::Cancel { pid, secret } => {
            if let Some(target) = proxy.cancels.lookup(pid, &secret) {
                if let Err(e) = send_cancel(&target).await {
                    tracing::warn!(error = %e, "could not forward cancel request");
                }
            }
            Ok(Step::Cancelled)
        }
        StartupPacket::Startup(startup) => Ok(Step::Startup(startup)),
    }
}
