//! `Secret`: a password or password hash that never shows up in logs, `Debug` output or errors.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret string. `Debug` and `Display` print `<redacted>`; read it with [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the code that must use it (authentication), never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// Is `value` a password hash as PostgreSQL stores it for md5: `"md5"` and 32 lowercase hex digits.
pub(crate) fn is_md5_hash(value: &str) -> bool {
    value.len() == 35
        && value.starts_with("md5")
        && value[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn md5_hash_shape() {
        let hash = postgres_protocol::password::md5(b"secret", "app");
        assert!(is_md5_hash(&hash));
        assert!(!is_md5_hash(&hash.to_uppercase()));
        assert!(!is_md5_hash(&hash[..34]));
        assert!(!is_md5_hash("md5-this-is-a-plain-password-000000"));
        assert!(!is_md5_hash("secret"));
    }
}
