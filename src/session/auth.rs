//! Client authentication: trust, MD5 and SCRAM-SHA-256, against the credentials in the
//! config. Runs before any server connection is used.

use std::sync::OnceLock;

use bytes::BytesMut;
use md5::{Digest, Md5};
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth};

use super::error::SessionError;
use super::io::{read_message, send};
use crate::protocol::frame::{cstr, MAX_STARTUP_LEN};
use crate::protocol::message::Frontend;
use crate::protocol::reply;
use crate::rules::{AuthMethod, ClientSecret, ScramVerifier, UserConfig};
use crate::tls::ClientStream;

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Authenticates `user_name`; `user` is its config entry, `None` for an unknown user
/// (who goes through a SCRAM exchange that cannot succeed, so the reply does not reveal
/// which user names exist).
pub async fn authenticate(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user_name: &str,
    user: Option<&UserConfig>,
) -> Result<(), SessionError> {
    let failed = || SessionError::AuthFailed(user_name.to_owned());
    let Some(user) = user else {
        scram(stream, buf, &unknown_user_verifier(user_name)).await?;
        return Err(failed());
    };
    match (user.auth, &user.client_secret) {
        (AuthMethod::Trust, _) => true,
        (AuthMethod::Md5, ClientSecret::Password(p)) => {
            md5(stream, buf, &md5_inner(p.expose(), user_name)).await?
        }
        (AuthMethod::Md5, ClientSecret::Md5Hash(h)) => {
            let inner = h.expose().strip_prefix("md5").unwrap_or(h.expose());
            md5(stream, buf, inner).await?
        }
        (AuthMethod::ScramSha256, _) => match user.scram_verifier() {
            Some(verifier) => scram(stream, buf, verifier).await?,
            None => false,
        },
        (AuthMethod::Md5, _) => false,
    }
    .then_some(())
    .ok_or_else(failed)
}

/// md5(password || user) in hex, as PostgreSQL stores it (without the "md5" prefix).
fn md5_inner(password: &str, user: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    hex::encode(h.finalize())
}

/// The response a client must send: "md5" + md5(inner || salt).
fn md5_expected(inner: &str, salt: [u8; 4]) -> String {
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    format!("md5{}", hex::encode(h.finalize()))
}

async fn md5(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    inner: &str,
) -> Result<bool, SessionError> {
    let salt: [u8; 4] = rand::random();
    let mut out = BytesMut::new();
    reply::auth_md5(&mut out, salt);
    send(stream, &out).await?;
    let body = read_password_message(stream, buf).await?;
    let (given, _) = cstr(&body).ok_or(SessionError::Protocol("malformed password message"))?;
    Ok(constant_time_eq(
        given,
        md5_expected(inner, salt).as_bytes(),
    ))
}

async fn scram(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    verifier: &ScramVerifier,
) -> Result<bool, SessionError> {
    let mut out = BytesMut::new();
    reply::auth_sasl(&mut out, &[SCRAM_SHA_256]);
    send(stream, &out).await?;

    let body = read_password_message(stream, buf).await?;
    let client_first = parse_sasl_initial_response(&body)?;
    let secret = ScramSecret::Verifier {
        salt: verifier.salt.clone(),
        iterations: verifier.iterations as usize,
        stored_key: verifier.stored_key.to_vec(),
        server_key: verifier.server_key.to_vec(),
    };
    let (server_first, waiting) = ScramServerAuth::new()
        .on_client_first_message_with_secret(client_first, secret)
        .map_err(|_| SessionError::Protocol("malformed SCRAM client-first-message"))?;
    out.clear();
    reply::auth_sasl_continue(&mut out, server_first.as_bytes());
    send(stream, &out).await?;

    let client_final = read_password_message(stream, buf).await?;
    match waiting.on_client_final_message(&client_final) {
        Ok(server_final) => {
            out.clear();
            reply::auth_sasl_final(&mut out, server_final.as_bytes());
            send(stream, &out).await?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// Reads a PasswordMessage/SASLInitialResponse/SASLResponse body (all tagged 'p').
async fn read_password_message(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<BytesMut, SessionError> {
    let (tag, body) = read_message(stream, buf, MAX_STARTUP_LEN).await?;
    match Frontend::from_tag(tag) {
        Frontend::Password => Ok(body),
        Frontend::Terminate => Err(SessionError::ClientGone),
        _ => Err(SessionError::Protocol(
            "expected password response during authentication",
        )),
    }
}

/// SASLInitialResponse: mechanism name, then a length-prefixed initial response.
fn parse_sasl_initial_response(body: &[u8]) -> Result<&[u8], SessionError> {
    let malformed = SessionError::Protocol("malformed SASLInitialResponse");
    let (mechanism, rest) =
        cstr(body).ok_or(SessionError::Protocol("malformed SASLInitialResponse"))?;
    if mechanism != SCRAM_SHA_256.as_bytes() {
        return Err(SessionError::Protocol(
            "client selected an invalid SASL authentication mechanism",
        ));
    }
    let (len, data) = match rest {
        [a, b, c, d, data @ ..] => (i32::from_be_bytes([*a, *b, *c, *d]), data),
        _ => return Err(malformed),
    };
    if len < 0 || len as usize != data.len() {
        return Err(malformed);
    }
    Ok(data)
}

/// A verifier no password matches, for unknown users. Its salt is the same on every
/// attempt for a given name (as a real user's is), so probing cannot tell names apart.
fn unknown_user_verifier(user_name: &str) -> ScramVerifier {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    let key = KEY
        .get_or_init(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()));
    let tag = ring::hmac::sign(key, user_name.as_bytes());
    ScramVerifier {
        iterations: 4096,
        salt: tag.as_ref()[..16].to_vec(),
        stored_key: rand::random(),
        server_key: rand::random(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_postgres_protocol() {
        let salt = [1, 2, 3, 4];
        let ours = md5_expected(&md5_inner("secret", "alice"), salt);
        let theirs = postgres_protocol::authentication::md5_hash(b"alice", b"secret", salt);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn unknown_users_get_a_stable_salt_per_name() {
        assert_eq!(
            unknown_user_verifier("ghost").salt,
            unknown_user_verifier("ghost").salt
        );
        assert_ne!(
            unknown_user_verifier("ghost").salt,
            unknown_user_verifier("other").salt
        );
    }

    #[test]
    fn sasl_initial_response_is_length_checked() {
        let mut ok = b"SCRAM-SHA-256\0".to_vec();
        ok.extend_from_slice(&3i32.to_be_bytes());
        ok.extend_from_slice(b"abc");
        assert_eq!(parse_sasl_initial_response(&ok).unwrap(), b"abc");
        let mut short = b"SCRAM-SHA-256\0".to_vec();
        short.extend_from_slice(&5i32.to_be_bytes());
        short.extend_from_slice(b"abc");
        assert!(parse_sasl_initial_response(&short).is_err());
        let mut negative = b"SCRAM-SHA-256\0".to_vec();
        negative.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(parse_sasl_initial_response(&negative).is_err());
        assert!(parse_sasl_initial_response(b"SCRAM-SHA-256\0\0\0").is_err());
        assert!(parse_sasl_initial_response(b"PLAIN\0\0\0\0\0").is_err());
        assert!(parse_sasl_initial_response(b"").is_err());
    }
}
