//! Encoding of the messages the proxy itself sends to clients (pgwire's encoders).

use bytes::BytesMut;
use pgwire::error::ErrorInfo;
use pgwire::messages::response::{ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};
use pgwire::messages::Message;

use super::sqlstate::SqlState;

/// Error severities we emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error the proxy reports to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub severity: Severity,
    pub code: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorReply {
    pub fn error(code: SqlState, message: impl Into<String>) -> Self {
        ErrorReply {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: SqlState, message: impl Into<String>) -> Self {
        ErrorReply {
            severity: Severity::Fatal,
            ..ErrorReply::error(code, message)
        }
    }

    /// A FATAL error carrying a SQLSTATE relayed from a server.
    pub fn fatal_with_code(code: &str, message: impl Into<String>) -> Self {
        ErrorReply::fatal(SqlState::relayed(code), message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        let mut info = ErrorInfo::new(
            self.severity.as_str().to_owned(),
            self.code.code().to_owned(),
            self.message.clone(),
        );
        info.severity_nonlocalized = Some(self.severity.as_str().to_owned());
        info.detail = self.detail.clone();
        info.hint = self.hint.clone();
        put(buf, ErrorResponse::from(info));
    }
}

/// Encodes a NOTICE from the proxy.
pub fn notice(buf: &mut BytesMut, message: &str) {
    notice_response(
        buf,
        "NOTICE",
        SqlState::SUCCESSFUL_COMPLETION.code(),
        message,
    );
}

/// Encodes a WARNING from the proxy, carrying a SQLSTATE (relayed from a server).
pub fn warning(buf: &mut BytesMut, code: &str, message: &str) {
    notice_response(buf, "WARNING", code, message);
}

fn notice_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let mut info = ErrorInfo::new(severity.to_owned(), code.to_owned(), message.to_owned());
    info.severity_nonlocalized = Some(severity.to_owned());
    put(buf, NoticeResponse::from(info));
}

/// Transaction status reported in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }
}

pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    let status = match status {
        TxStatus::Idle => TransactionStatus::Idle,
        TxStatus::InTransaction => TransactionStatus::Transaction,
        TxStatus::Failed => TransactionStatus::Error,
    };
    put(buf, ReadyForQuery::new(status));
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put(buf, ParameterStatus::new(name.to_owned(), value.to_owned()));
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    put(buf, BackendKeyData::new(pid, SecretKey::I32(secret)));
}

pub fn auth_ok(buf: &mut BytesMut) {
    put(buf, Authentication::Ok);
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    put(buf, Authentication::MD5Password(salt.to_vec()));
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let mechanisms = mechanisms.iter().map(|m| (*m).to_owned()).collect();
    put(buf, Authentication::SASL(mechanisms));
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    put(
        buf,
        Authentication::SASLContinue(bytes::Bytes::copy_from_slice(data)),
    );
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    put(
        buf,
        Authentication::SASLFinal(bytes::Bytes::copy_from_slice(data)),
    );
}

/// Tells a client asking for 3.x (x > 0) or `_pq_.` options that we speak 3.0.
pub fn negotiate_protocol_version(buf: &mut BytesMut, unsupported_options: Vec<String>) {
    put(buf, NegotiateProtocolVersion::new(0, unsupported_options));
}

fn put(buf: &mut BytesMut, message: impl Message) {
    // Encoding into a BytesMut only fails for messages over pgwire's size
    // limits, which the short messages built here never reach.
    if let Err(e) = message.encode(buf) {
        tracing::error!(error = %e, "failed to encode a proxy reply");
    }
}

/// A result set of text columns the proxy answers itself (`SHOW pgstrata.route`,
/// `EXPLAIN ROUTE`): RowDescription, one DataRow per row, CommandComplete with `tag`.
pub fn text_rows(buf: &mut BytesMut, columns: &[&str], rows: &[Vec<String>], tag: &str) {
    row_description(buf, columns);
    data_rows(buf, rows);
    command_complete(buf, tag);
}

/// RowDescription of text columns.
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    use bytes::BufMut;
    let start = buf.len();
    buf.put_u8(b'T');
    buf.put_i32(0);
    buf.put_i16(columns.len() as i16);
    for name in columns {
        buf.put_slice(name.as_bytes());
        buf.put_u8(0);
        buf.put_i32(0); // table oid
        buf.put_i16(0); // column number
        buf.put_u32(25); // text
        buf.put_i16(-1); // variable length
        buf.put_i32(-1); // no type modifier
        buf.put_i16(0); // text format
    }
    patch_len(buf, start);
}

/// One DataRow per row, text values.
pub fn data_rows(buf: &mut BytesMut, rows: &[Vec<String>]) {
    use bytes::BufMut;
    for row in rows {
        let start = buf.len();
        buf.put_u8(b'D');
        buf.put_i32(0);
        buf.put_i16(row.len() as i16);
        for value in row {
            buf.put_i32(value.len() as i32);
            buf.put_slice(value.as_bytes());
        }
        patch_len(buf, start);
    }
}

/// A message with no body: ParseComplete (`1`), BindComplete (`2`), CloseComplete
/// (`3`), NoData (`n`).
pub fn empty_message(buf: &mut BytesMut, tag: u8) {
    buf.extend_from_slice(&[tag, 0, 0, 0, 4]);
}

/// ParameterDescription of a statement without parameters.
pub fn no_parameters(buf: &mut BytesMut) {
    buf.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]);
}

/// CommandComplete with `tag` ("SET", "SHOW", ...).
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    use bytes::BufMut;
    let start = buf.len();
    buf.put_u8(b'C');
    buf.put_i32(0);
    buf.put_slice(tag.as_bytes());
    buf.put_u8(0);
    patch_len(buf, start);
}

/// Writes the length of the message that starts at `start` into its length field.
fn patch_len(buf: &mut BytesMut, start: usize) {
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_layout() {
        let mut buf = BytesMut::new();
        ErrorReply::fatal(SqlState::INVALID_PASSWORD, "bad").encode(&mut buf);
        assert_eq!(buf[0], b'E');
        let body = &buf[5..];
        let text = String::from_utf8_lossy(body);
        assert!(text.contains("SFATAL\0"), "{text:?}");
        assert!(text.contains("C28P01\0"), "{text:?}");
        assert!(text.contains("Mbad\0"), "{text:?}");
        assert_eq!(
            i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize,
            buf.len() - 1
        );
    }

    #[test]
    fn ready_for_query_bytes() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, TxStatus::InTransaction);
        assert_eq!(&buf[..], b"Z\0\0\0\x05T");
    }
}
