//! A raw protocol connection to a PostgreSQL server: startup, authentication
//! (SCRAM-SHA-256, MD5, cleartext) and the state the proxy tracks about it.

use super::params::Params;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::BackendError;
use crate::protocol::buffers;
use crate::protocol::frame::{self, MAX_FRAME_LEN};
use crate::protocol::message::{self, Backend, ErrorFields};
use crate::protocol::TxStatus;
use crate::rules::Secret;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub database: String,
}

impl ServerTarget {
    /// "host:port", for logs and error messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The server's key for CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerKey {
    pub pid: i32,
    pub secret: i32,
}

/// An authenticated server connection. In declaration order (`repr(C)`): what the relay
/// reads at every transaction comes first, in as few cache lines as can be (each
/// connection's state is cold when a session takes it).
#[derive(Debug)]
#[repr(C)]
pub struct ServerConnection {
    /// One owner, not split in halves: the stream's state sits here, not behind an `Arc`
    /// in another allocation that each read and write would touch.
    pub stream: TcpStream,
    /// Bytes read from the server and not yet consumed.
    pub read_buf: BytesMut,
    /// Status from the last ReadyForQuery.
    pub status: TxStatus,
    /// Set when the connection must not be reused (protocol state unknown, I/O error).
    pub broken: bool,
    /// A client used it since its last reset: it may carry that client's settings.
    /// Set at checkout, cleared by a successful reset; a connection dropped while set is
    /// closed instead of returning to the pool.
    pub needs_reset: bool,
    /// The pool sweep at which its lifetime is over (0: not yet reckoned; set by the pool).
    pub lifetime_ends: u32,
    /// Client settings the proxy applied on this connection since its last reset
    /// (None: the server's defaults).
    pub applied: Option<Arc<Vec<(String, String)>>>,
    /// Named statements the proxy prepared on this connection (transaction pooling).
    pub statements: crate::session::statements::ServerStatements,
    /// NotificationResponses that arrived while a hidden statement ran: the client's
    /// (its session LISTENs), for the relay to pass on.
    pub notifications: BytesMut,
    /// Current values of the server's reported parameters (ParameterStatus).
    pub params: Params,
    pub target: Arc<ServerTarget>,
    pub key: ServerKey,
    pub created: Instant,
}

impl ServerConnection {
    /// Connects and authenticates; returns once the server sent ReadyForQuery.
    pub async fn connect(target: Arc<ServerTarget>) -> Result<ServerConnection, BackendError> {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| BackendError::Connect {
                address: target.address(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let mut conn = ServerConnection {
            stream,
            read_buf: BytesMut::new(),
            params: Params::default(),
            key: ServerKey { pid: 0, secret: 0 },
            target,
            status: TxStatus::Idle,
            broken: false,
            needs_reset: false,
            applied: None,
            statements: Default::default(),
            notifications: BytesMut::new(),
            created: Instant::now(),
            lifetime_ends: 0,
        };
        conn.startup().await?;
        Ok(conn)
    }

    async fn startup(&mut self) -> Result<(), BackendError> {
        let mut buf = BytesMut::new();
        let params = [
            ("user", self.target.user.as_str()),
            ("database", self.target.database.as_str()),
        ];
        frontend::startup_message(params.iter().copied(), &mut buf)?;
        self.stream.write_all(&buf).await?;
        let mut scram: Option<ScramSha256> = None;
        let mut scram_done = false;
        loop {
            match self.read_message().await? {
                backend::Message::AuthenticationOk => {
                    // A server that started SCRAM must prove it knows the password
                    // (SASLFinal) before we accept it.
                    if scram.is_some() && !scram_done {
                        return Err(BackendError::Protocol(
                            "server skipped SCRAM's final message",
                        ));
                    }
                }
                backend::Message::AuthenticationCleartextPassword => {
                    let password = self.password()?;
                    self.send(|b| frontend::password_message(password.as_bytes(), b))
                        .await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let password = self.password()?;
                    let hash = md5_hash(
                        self.target.user.as_bytes(),
                        password.as_bytes(),
                        body.salt(),
                    );
                    self.send(|b| frontend::password_message(hash.as_bytes(), b))
                        .await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms.next()? {
                        has_scram |= m == SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(BackendError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                    }
                    let password = self.password()?;
                    let client =
                        ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    let first = client.message().to_vec();
                    scram = Some(client);
                    self.send(|b| frontend::sasl_initial_response(SCRAM_SHA_256, &first, b))
                        .await?;
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let client = scram
                        .as_mut()
                        .ok_or(BackendError::Protocol("unexpected SASLContinue"))?;
                    client.update(body.data()).map_err(BackendError::Scram)?;
                    let response = client.message().to_vec();
                    self.send(|b| frontend::sasl_response(&response, b)).await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let client = scram
                        .as_mut()
                        .ok_or(BackendError::Protocol("unexpected SASLFinal"))?;
                    client.finish(body.data()).map_err(BackendError::Scram)?;
                    scram_done = true;
                }
                backend::Message::ParameterStatus(body) => {
                    self.params
                        .insert(body.name()?.to_owned(), body.value()?.to_owned());
                }
                backend::Message::BackendKeyData(body) => {
                    self.key = ServerKey {
                        pid: body.process_id(),
                        secret: body.secret_key(),
                    };
                }
                backend::Message::ReadyForQuery(_) => {
                    // Messages parsed off the buffer were split from it, which left it
                    // shared; the relay reuses it at every message, and a shared buffer
                    // checks a count in another allocation each time. A fresh one instead.
                    self.read_buf = BytesMut::from(&self.read_buf[..]);
                    return Ok(());
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(BackendError::Server(fields_of(&body)?));
                }
                backend::Message::NoticeResponse(_) => {}
                _ => return Err(BackendError::Protocol("unexpected message during startup")),
            }
        }
    }

    fn password(&self) -> Result<String, BackendError> {
        self.target
            .password
            .as_ref()
            .map(|s| s.expose().to_owned())
            .ok_or(BackendError::NoPassword)
    }

    async fn send(
        &mut self,
        build: impl FnOnce(&mut BytesMut) -> std::io::Result<()>,
    ) -> Result<(), BackendError> {
        let mut buf = BytesMut::new();
        build(&mut buf)?;
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    async fn read_message(&mut self) -> Result<backend::Message, BackendError> {
        loop {
            // Check the length before postgres-protocol reserves for the body.
            if frame::header(&self.read_buf, MAX_FRAME_LEN).is_err() {
                return Err(BackendError::Protocol("invalid message length from server"));
            }
            if let Some(msg) = backend::Message::parse(&mut self.read_buf)? {
                return Ok(msg);
            }
            if self.read_more().await? == 0 {
                return Err(BackendError::Closed);
            }
        }
    }

    /// Reads what the server sent, into a lent buffer when the connection holds none (the
    /// relay gives an empty one back).
    async fn read_more(&mut self) -> std::io::Result<usize> {
        buffers::reserve(&mut self.read_buf);
        self.stream.read_buf(&mut self.read_buf).await
    }

    /// Runs one simple query whose results nobody sees; tracks ParameterStatus and the status.
    /// Returns the first error the server reported, if any.
    pub async fn run_hidden(&mut self, sql: &str) -> Result<Option<ErrorFields>, BackendError> {
        self.send(|b| frontend::query(sql, b)).await?;
        self.finish_hidden(1, |_| {}).await
    }

    /// Runs a hidden query returning two text columns; the rows, or the server's error.
    pub async fn fetch_pairs(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<(String, String)>, ErrorFields>, BackendError> {
        self.send(|b| frontend::query(sql, b)).await?;
        let mut rows = Vec::new();
        let error = self
            .finish_hidden(1, |row| {
                if let [Some(a), Some(b)] = message::data_row_texts::<2>(row) {
                    rows.push((a, b));
                }
            })
            .await?;
        Ok(match error {
            Some(fields) => Err(fields),
            None => Ok(rows),
        })
    }

    /// Reads and discards replies until `ready` ReadyForQuery messages have arrived.
    /// Notifications, which are not replies, are kept in `notifications`.
    pub async fn finish_hidden(
        &mut self,
        mut ready: usize,
        mut on_row: impl FnMut(&[u8]),
    ) -> Result<Option<ErrorFields>, BackendError> {
        let mut first_error = None;
        while ready > 0 {
            let (tag, len) = loop {
                match frame::header(&self.read_buf, MAX_FRAME_LEN) {
                    Ok(Some((tag, len))) if self.read_buf.len() >= len => break (tag, len),
                    Ok(_) => {}
                    Err(_) => {
                        return Err(BackendError::Protocol("invalid message length from server"))
                    }
                }
                if self.read_more().await? == 0 {
                    return Err(BackendError::Closed);
                }
            };
            // Copied out rather than split off, which would leave the buffer shared and
            // make the relay check a shared count each time it reuses it.
            let frame = BytesMut::from(&self.read_buf[..len]);
            self.read_buf.advance(len);
            let body = &frame[frame::HEADER_LEN..];
            match Backend::from_tag(tag) {
                Backend::ReadyForQuery => {
                    self.status = message::ready_status(body)
                        .ok_or(BackendError::Protocol("bad ReadyForQuery"))?;
                    ready -= 1;
                }
                Backend::ParameterStatus => self.observe_parameter(body),
                Backend::NotificationResponse => self.notifications.extend_from_slice(&frame),
                Backend::Other(b'D') => on_row(body),
                Backend::ErrorResponse if first_error.is_none() => {
                    first_error = Some(message::error_fields(body));
                }
                Backend::CopyInResponse | Backend::CopyOutResponse | Backend::CopyBothResponse => {
                    return Err(BackendError::Protocol("hidden query started COPY"));
                }
                _ => {}
            }
        }
        Ok(first_error)
    }

    /// Records a ParameterStatus body the server sent.
    pub fn observe_parameter(&mut self, body: &[u8]) {
        if let Some((name, value)) = message::parameter_status(body) {
            self.params.insert(name, value);
        }
    }

    /// True when the server has nothing queued for us: no stray bytes, not closed.
    /// A cheap, non-blocking check used at checkout.
    pub fn is_quiet(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        // No readiness event since the last read: nothing arrived, and no syscall is
        // needed to know it (this runs at every checkout). `try_io` only reads the
        // readiness flags: it registers no waker and leaves them as they are.
        let ready = self.stream.try_io(tokio::io::Interest::READABLE, || Ok(()));
        if ready.is_err() {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Whether the connection can go back to the pool as it is.
    pub fn is_reusable(&self) -> bool {
        !self.broken
            && !self.needs_reset
            && self.status == TxStatus::Idle
            && self.read_buf.remaining() == 0
    }
}

fn fields_of(body: &backend::ErrorResponseBody) -> Result<ErrorFields, BackendError> {
    let mut fields = ErrorFields::default();
    let mut iter = body.fields();
    while let Some(field) = iter.next()? {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'S' => fields.severity = value,
            b'C' => fields.code = value,
            b'M' => fields.message = value,
            _ => {}
        }
    }
    Ok(fields)
}

impl Drop for ServerConnection {
    fn drop(&mut self) {
        // Best effort Terminate so the server logs a clean disconnect; never blocks.
        let _ = self.stream.try_write(b"X\0\0\0\x04");
    }
}
