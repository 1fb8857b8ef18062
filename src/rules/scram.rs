//! SCRAM-SHA-256 verifiers in PostgreSQL's `rolpassword` form:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64, RFC 5803).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

const PREFIX: &str = "SCRAM-SHA-256$";

/// What a server keeps to check a SCRAM-SHA-256 client without knowing its password.
/// `Debug` shows only the iteration count.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Parses PostgreSQL's verifier string; `None` when it is not well formed
    /// (iterations not a positive integer, bad base64, empty salt, keys not 32 bytes).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(PREFIX)?;
        let (iterations_and_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iterations_and_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        if !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let iterations: u32 = iterations.parse().ok().filter(|&i| i > 0)?;
        let salt = STANDARD.decode(salt).ok().filter(|s| !s.is_empty())?;
        Some(Self {
            iterations,
            salt,
            stored_key: decode_key(stored_key)?,
            server_key: decode_key(server_key)?,
        })
    }

    /// A new verifier for `password` with a random 16-byte salt and 4096 iterations, made as
    /// PostgreSQL's `password_encryption = scram-sha-256` does (SASLprep applied when the
    /// password allows it), via `postgres_protocol::password::scram_sha_256`.
    pub fn from_password(password: &str) -> Self {
        let encoded = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Self::parse(&encoded).expect("postgres-protocol writes well-formed SCRAM verifiers")
    }

    /// Back to PostgreSQL's `rolpassword` form. Not secret like a password, but worth
    /// keeping out of logs: it allows offline guessing.
    pub fn to_rolpassword(&self) -> String {
        format!(
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text).ok()?.try_into().ok()
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_postgres_protocol() {
        let encoded = postgres_protocol::password::scram_sha_256(b"correct horse");
        let verifier = ScramVerifier::parse(&encoded).expect("parses");
        assert_eq!(verifier.iterations, 4096);
        assert_eq!(verifier.salt.len(), 16);
        assert_eq!(verifier.to_rolpassword(), encoded);
    }

    #[test]
    fn from_password_uses_fresh_salt() {
        let a = ScramVerifier::from_password("pw");
        let b = ScramVerifier::from_password("pw");
        assert_eq!(a.iterations, 4096);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
    }

    #[test]
    fn debug_hides_keys() {
        let v = ScramVerifier::from_password("pw");
        assert_eq!(format!("{v:?}"), "ScramVerifier { iterations: 4096, .. }");
    }

    #[test]
    fn malformed() {
        let good = postgres_protocol::password::scram_sha_256(b"pw");
        let (head, keys) = good.rsplit_once('$').expect("has keys");
        let (stored, server) = keys.split_once(':').expect("two keys");
        let short_key = STANDARD.encode([0u8; 31]);
        let cases = [
            String::new(),
            "md5abc".to_owned(),
            good.replacen("SCRAM-SHA-256", "SCRAM-SHA-1", 1),
            good.replacen("$4096:", "$0:", 1),
            good.replacen("$4096:", "$-1:", 1),
            good.replacen("$4096:", "$+4096:", 1),
            good.replacen("$4096:", "$99999999999:", 1),
            good.replacen("$4096:", "$4096", 1),
            format!("{head}${stored}"),
            format!("{head}${stored}:{short_key}"),
            format!("{head}${stored}:{server}!"),
            format!("{head}$:{server}"),
            "SCRAM-SHA-256$4096:$a:b".to_owned(),
        ];
        for case in cases {
            assert_eq!(ScramVerifier::parse(&case), None, "{case}");
        }
    }
}
