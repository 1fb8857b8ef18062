//! Typed views of the message types the proxy inspects. Bodies stay in the original buffer;
//! these helpers decode only the few fields the proxy needs.

use super::frame::cstr;
use super::reply::TxStatus;

/// Frontend (client → server) message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    Query,
    Parse,
    Bind,
    Execute,
    Describe,
    Close,
    Sync,
    Flush,
    Terminate,
    CopyData,
    CopyDone,
    CopyFail,
    FunctionCall,
    Password,
    /// A type we do not know: forwarded untouched.
    Other(u8),
}

impl Frontend {
    pub fn from_tag(tag: u8) -> Frontend {
        match tag {
            b'Q' => Frontend::Query,
            b'P' => Frontend::Parse,
            b'B' => Frontend::Bind,
            b'E' => Frontend::Execute,
            b'D' => Frontend::Describe,
            b'C' => Frontend::Close,
            b'S' => Frontend::Sync,
            b'H' => Frontend::Flush,
            b'X' => Frontend::Terminate,
            b'd' => Frontend::CopyData,
            b'c' => Frontend::CopyDone,
            b'f' => Frontend::CopyFail,
            b'F' => Frontend::FunctionCall,
            b'p' => Frontend::Password,
            other => Frontend::Other(other),
        }
    }

    /// Whether the server answers this message with a ReadyForQuery.
    pub fn expects_ready(self) -> bool {
        matches!(
            self,
            Frontend::Query | Frontend::Sync | Frontend::FunctionCall
        )
    }
}

/// Backend (server → client) message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    ReadyForQuery,
    ParameterStatus,
    ErrorResponse,
    NoticeResponse,
    CommandComplete,
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    BackendKeyData,
    Authentication,
    NotificationResponse,
    Other(u8),
}

impl Backend {
    pub fn from_tag(tag: u8) -> Backend {
        match tag {
            b'Z' => Backend::ReadyForQuery,
            b'S' => Backend::ParameterStatus,
            b'E' => Backend::ErrorResponse,
            b'N' => Backend::NoticeResponse,
            b'C' => Backend::CommandComplete,
            b'G' => Backend::CopyInResponse,
            b'H' => Backend::CopyOutResponse,
            b'W' => Backend::CopyBothResponse,
            b'K' => Backend::BackendKeyData,
            b'R' => Backend::Authentication,
            b'A' => Backend::NotificationResponse,
            other => Backend::Other(other),
        }
    }
}

/// The status byte of a ReadyForQuery body.
pub fn ready_status(body: &[u8]) -> Option<TxStatus> {
    match body {
        [b] => TxStatus::from_byte(*b),
        _ => None,
    }
}

/// Name and value of a ParameterStatus body.
pub fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// The first `N` columns of a DataRow body as text (None for NULL or missing).
pub fn data_row_texts<const N: usize>(body: &[u8]) -> [Option<String>; N] {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut rest = body.get(2..).unwrap_or_default();
    for slot in out.iter_mut() {
        let Some((len, after)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            rest = after;
            continue;
        }
        let Some(value) = after.get(..len as usize) else {
            break;
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
        rest = &after[len as usize..];
    }
    out
}

/// The fields of an ErrorResponse/NoticeResponse body we care about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn error_fields(body: &[u8]) -> ErrorFields {
    let mut fields = ErrorFields::default();
    for (kind, value) in fields_of(body) {
        let value = || String::from_utf8_lossy(value).into_owned();
        match kind {
            b'S' => fields.severity = value(),
            b'C' => fields.code = value(),
            b'M' => fields.message = value(),
            _ => {}
        }
    }
    fields
}

/// The untranslated fields of an ErrorResponse body, borrowed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RawErrorFields<'a> {
    pub code: &'a [u8],
    /// The server function that raised it (`R`).
    pub routine: &'a [u8],
}

pub fn error_fields_raw(body: &[u8]) -> RawErrorFields<'_> {
    let mut fields = RawErrorFields::default();
    for (kind, value) in fields_of(body) {
        match kind {
            b'C' => fields.code = value,
            b'R' => fields.routine = value,
            _ => {}
        }
    }
    fields
}

/// The (type, value) fields of an ErrorResponse or NoticeResponse body, up to its end.
fn fields_of(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&kind, after) = rest.split_first().filter(|(&kind, _)| kind != 0)?;
        let (value, next) = cstr(after)?;
        rest = next;
        Some((kind, value))
    })
}

/// The SQLSTATE bytes of an ErrorResponse body, without allocating.
pub fn error_code(body: &[u8]) -> &[u8] {
    fields_of(body)
        .find(|(kind, _)| *kind == b'C')
        .map_or(b"", |(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_inspected_bodies() {
        assert_eq!(ready_status(b"T"), Some(TxStatus::InTransaction));
        assert_eq!(ready_status(b"TT"), None);
        assert_eq!(
            parameter_status(b"TimeZone\0UTC\0"),
            Some(("TimeZone".into(), "UTC".into()))
        );
        assert_eq!(parameter_status(b"TimeZone\0UTC"), None);
        let body = b"SERROR\0C42P01\0Mrelation missing\0\0";
        let f = error_fields(body);
        assert_eq!(
            (f.severity.as_str(), f.code.as_str(), f.message.as_str()),
            ("ERROR", "42P01", "relation missing")
        );
        assert_eq!(error_code(body), b"42P01");
        assert_eq!(error_code(b"SERROR\0"), b"");
    }

    #[test]
    fn data_row_columns() {
        let body = b"\0\x03\0\0\0\x02ab\xff\xff\xff\xff\0\0\0\x01c";
        assert_eq!(
            data_row_texts::<3>(body),
            [Some("ab".to_owned()), None, Some("c".to_owned())]
        );
        assert_eq!(data_row_texts::<2>(b"\0\x01\0\0\0\x09ab"), [None, None]);
    }

    #[test]
    fn ready_expected_after_query_sync_function_call() {
        for (tag, want) in [
            (b'Q', true),
            (b'S', true),
            (b'F', true),
            (b'E', false),
            (b'H', false),
        ] {
            assert_eq!(
                Frontend::from_tag(tag).expects_ready(),
                want,
                "{}",
                tag as char
            );
        }
    }
}
