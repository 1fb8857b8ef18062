//! Decoding of the startup-phase packets a client may open a connection with:
//! SSLRequest, GSSENCRequest, CancelRequest and StartupMessage.

use std::collections::BTreeMap;

use bytes::Bytes;
use pgwire::messages::startup::{GssEncRequest, SslRequest};
use thiserror::Error;

use super::frame::cstr;

/// CancelRequest code (1234.5678).
pub const CANCEL_REQUEST_CODE: i32 = 80877102;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: Bytes },
    Startup(StartupParams),
}

/// A StartupMessage: protocol version and parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupParams {
    pub major: u16,
    pub minor: u16,
    pub params: BTreeMap<String, String>,
}

impl StartupParams {
    pub fn user(&self) -> Option<&str> {
        self.params.get("user").map(String::as_str)
    }

    /// The database, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> Option<&str> {
        self.params
            .get("database")
            .filter(|d| !d.is_empty())
            .or_else(|| self.params.get("user"))
            .map(String::as_str)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout")]
    Malformed,
}

/// Decodes one complete startup packet (`length` included).
pub fn decode(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    if packet.len() < 8 {
        return Err(StartupError::Malformed);
    }
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    match code {
        SslRequest::BODY_MAGIC_NUMBER if packet.len() == 8 => Ok(StartupPacket::SslRequest),
        GssEncRequest::BODY_MAGIC_NUMBER if packet.len() == 8 => Ok(StartupPacket::GssEncRequest),
        // Protocol 3.0 keys are 4 bytes; 3.2 allows up to 256.
        CANCEL_REQUEST_CODE if (16..=12 + 256).contains(&packet.len()) => {
            let pid = i32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
            Ok(StartupPacket::Cancel {
                pid,
                secret: Bytes::copy_from_slice(&packet[12..]),
            })
        }
        SslRequest::BODY_MAGIC_NUMBER | GssEncRequest::BODY_MAGIC_NUMBER | CANCEL_REQUEST_CODE => {
            Err(StartupError::Malformed)
        }
        _ => decode_startup(packet, code),
    }
}

fn decode_startup(packet: &[u8], code: i32) -> Result<StartupPacket, StartupError> {
    let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
    if major != 3 {
        return Err(StartupError::UnsupportedProtocol { major, minor });
    }
    Ok(StartupPacket::Startup(StartupParams {
        major,
        minor,
        params: decode_params(&packet[8..])?,
    }))
}

/// Name/value pairs, then exactly one terminating NUL, as PostgreSQL requires.
/// Parsed here rather than by pgwire, whose decoder accepts a missing terminator and
/// replaces invalid UTF-8; names must match config entries exactly.
fn decode_params(mut rest: &[u8]) -> Result<BTreeMap<String, String>, StartupError> {
    let mut params = BTreeMap::new();
    loop {
        match rest {
            [0] => return Ok(params),
            [] | [0, ..] => return Err(StartupError::Malformed),
            _ => {}
        }
        let (name, after) = cstr(rest).ok_or(StartupError::Malformed)?;
        let (value, after) = cstr(after).ok_or(StartupError::Malformed)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| StartupError::Malformed);
        params.insert(text(name)?, text(value)?);
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = ((rest.len() + 8) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn decodes_each_kind() {
        assert_eq!(
            decode(&packet(80877103, b"")).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            decode(&packet(80877104, b"")).unwrap(),
            StartupPacket::GssEncRequest
        );
        let mut key = 42i32.to_be_bytes().to_vec();
        key.extend_from_slice(&7i32.to_be_bytes());
        assert_eq!(
            decode(&packet(CANCEL_REQUEST_CODE, &key)).unwrap(),
            StartupPacket::Cancel {
                pid: 42,
                secret: Bytes::from_static(&[0, 0, 0, 7])
            }
        );
        let StartupPacket::Startup(s) =
            decode(&packet(196608, b"user\0alice\0database\0db\0\0")).unwrap()
        else {
            panic!("not a startup message");
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.user(), Some("alice"));
        assert_eq!(s.database(), Some("db"));
    }

    #[test]
    fn database_defaults_to_user() {
        let StartupPacket::Startup(s) = decode(&packet(196608, b"user\0bob\0\0")).unwrap() else {
            panic!("not a startup message");
        };
        assert_eq!(s.database(), Some("bob"));
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(
            decode(&packet(0x0002_0000, b"user\0x\0\0")).unwrap_err(),
            StartupError::UnsupportedProtocol { major: 2, minor: 0 }
        );
        assert_eq!(
            decode(&packet(196608, b"user\0x")).unwrap_err(),
            StartupError::Malformed
        );
        assert_eq!(
            decode(&packet(80877103, b"x")).unwrap_err(),
            StartupError::Malformed
        );
        assert_eq!(
            decode(&packet(CANCEL_REQUEST_CODE, b"\0\0")).unwrap_err(),
            StartupError::Malformed
        );
        for params in [
            &b"user\0app\0"[..],
            b"user\0",
            b"",
            b"\0user\0app\0\0",
            b"us\xffer\0app\0\0",
        ] {
            assert_eq!(
                decode(&packet(196608, params)).unwrap_err(),
                StartupError::Malformed,
                "{params:?}"
            );
        }
    }
}
