//! SQLSTATE codes the proxy itself reports, as typed constants.

/// A five-character SQLSTATE code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqlState(std::borrow::Cow<'static, str>);

impl SqlState {
    pub const SUCCESSFUL_COMPLETION: SqlState = SqlState(std::borrow::Cow::Borrowed("00000"));
    pub const CONNECTION_EXCEPTION: SqlState = SqlState(std::borrow::Cow::Borrowed("08000"));
    pub const CONNECTION_FAILURE: SqlState = SqlState(std::borrow::Cow::Borrowed("08006"));
    pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: SqlState =
        SqlState(std::borrow::Cow::Borrowed("08001"));
    pub const SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION: SqlState =
        SqlState(std::borrow::Cow::Borrowed("08004"));
    pub const PROTOCOL_VIOLATION: SqlState = SqlState(std::borrow::Cow::Borrowed("08P01"));
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState(std::borrow::Cow::Borrowed("0A000"));
    pub const INVALID_AUTHORIZATION_SPECIFICATION: SqlState =
        SqlState(std::borrow::Cow::Borrowed("28000"));
    pub const INVALID_PASSWORD: SqlState = SqlState(std::borrow::Cow::Borrowed("28P01"));
    pub const INVALID_CATALOG_NAME: SqlState = SqlState(std::borrow::Cow::Borrowed("3D000"));
    pub const UNDEFINED_OBJECT: SqlState = SqlState(std::borrow::Cow::Borrowed("42704"));
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState(std::borrow::Cow::Borrowed("42501"));
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState(std::borrow::Cow::Borrowed("22023"));
    pub const READ_ONLY_SQL_TRANSACTION: SqlState = SqlState(std::borrow::Cow::Borrowed("25006"));
    pub const TOO_MANY_CONNECTIONS: SqlState = SqlState(std::borrow::Cow::Borrowed("53300"));
    pub const QUERY_CANCELED: SqlState = SqlState(std::borrow::Cow::Borrowed("57014"));
    pub const ADMIN_SHUTDOWN: SqlState = SqlState(std::borrow::Cow::Borrowed("57P01"));
    pub const CANNOT_CONNECT_NOW: SqlState = SqlState(std::borrow::Cow::Borrowed("57P03"));
    pub const CONFIG_FILE_ERROR: SqlState = SqlState(std::borrow::Cow::Borrowed("F0000"));
    pub const INTERNAL_ERROR: SqlState = SqlState(std::borrow::Cow::Borrowed("XX000"));

    /// A code relayed from a server; anything that is not five ASCII
    /// alphanumerics becomes XX000.
    pub fn relayed(code: &str) -> SqlState {
        if code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            SqlState(std::borrow::Cow::Owned(code.to_owned()))
        } else {
            SqlState::INTERNAL_ERROR
        }
    }

    pub fn code(&self) -> &str {
        &self.0
    }

    /// The two-character class, folded to a closed set for metric labels.
    pub fn class(&self) -> &'static str {
        class_label(self.0.as_bytes())
    }
}

/// The class of an arbitrary SQLSTATE seen on the wire, folded to a closed set for metric labels.
pub fn class_label(code: &[u8]) -> &'static str {
    const CLASSES: &[&str] = &[
        "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22",
        "23", "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F",
        "40", "42", "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
    ];
    if code.len() < 2 {
        return "other";
    }
    CLASSES
        .iter()
        .find(|c| c.as_bytes() == &code[..2])
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(SqlState::TOO_MANY_CONNECTIONS.class(), "53");
        assert_eq!(class_label(b"57014"), "57");
        assert_eq!(class_label(b"ZZ999"), "other");
        assert_eq!(class_label(b"4"), "other");
    }
}
