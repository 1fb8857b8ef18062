//! The users section of the semantic pass: which secret each user is checked against, and
//! what it logs in to PostgreSQL with.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::build::{at, Builder};
use super::config::{AuthMethod, ClientSecret, UserConfig};
use super::problem::child;
use super::schema::{Name, RawUser};
use super::scram::ScramVerifier;
use super::secret::{is_md5_hash, Secret};

const VERIFIER_SHAPE: &str = "malformed SCRAM verifier: expected \
    \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\" (base64, 32-byte keys)";

impl Builder<'_> {
    pub(super) fn users(
        &mut self,
        raw: &Spanned<BTreeMap<Name, RawUser>>,
    ) -> BTreeMap<String, UserConfig> {
        if raw.value.is_empty() {
            self.report(at(raw), "users", "at least one user must be defined");
        }
        let mut users = BTreeMap::new();
        for (name, user) in &raw.value {
            let path = child("users", name.as_str());
            self.name(name, "users", "user");
            let client_secret = self.client_secret(user, &path);
            let server_user = match &user.server_user {
                Some(server_user) => self.non_empty(server_user, &child(&path, "server_user")),
                None => name.as_str().to_owned(),
            };
            let server_password = match (&user.server_password, &client_secret) {
                (Some(password), _) => {
                    if password.value.expose().is_empty() {
                        let path = child(&path, "server_password");
                        self.report(at(password), path, "must not be empty");
                    }
                    Some(password.value.clone())
                }
                // Most setups log in to PostgreSQL with the password the client gave.
                (None, ClientSecret::Password(password)) => Some(password.clone()),
                (None, _) => None,
            };
            let config =
                UserConfig::new(user.auth.value, client_secret, server_user, server_password);
            users.insert(name.as_str().to_owned(), config);
        }
        users
    }

    /// Which secret the client is checked against; the auth method decides what is allowed.
    fn client_secret(&mut self, user: &RawUser, path: &str) -> ClientSecret {
        let auth = user.auth.value;
        let verifier_path = child(path, "scram_verifier");
        match (auth, &user.password, &user.scram_verifier) {
            (AuthMethod::Trust, password, verifier) => {
                let given = [("password", password), ("scram_verifier", verifier)];
                for (field, value) in given {
                    if let Some(value) = value {
                        let message = "auth trust takes no password; remove it";
                        self.report(at(value), child(path, field), message);
                    }
                }
                return ClientSecret::None;
            }
            (AuthMethod::ScramSha256, Some(_), Some(verifier)) => {
                let message = "give either password or scram_verifier, not both";
                self.report(at(verifier), verifier_path, message);
            }
            (AuthMethod::ScramSha256, None, Some(verifier)) => {
                match ScramVerifier::parse(verifier.value.expose()) {
                    Some(parsed) => return ClientSecret::Scram(parsed),
                    None => self.report(at(verifier), verifier_path, VERIFIER_SHAPE),
                }
            }
            (AuthMethod::Md5, _, Some(verifier)) => {
                let message =
                    "scram_verifier only works with auth scram-sha-256; md5 needs password";
                self.report(at(verifier), verifier_path, message);
            }
            (AuthMethod::ScramSha256 | AuthMethod::Md5, Some(password), None) => {
                return self.password(password, &child(path, "password"), auth);
            }
            (AuthMethod::ScramSha256, None, None) => {
                let message = "scram-sha-256 needs a password or a scram_verifier";
                self.report(at(&user.auth), child(path, "auth"), message);
            }
            (AuthMethod::Md5, None, None) => {
                let message = "md5 needs a password (plaintext, or \"md5\" and 32 hex digits)";
                self.report(at(&user.auth), child(path, "auth"), message);
            }
        }
        ClientSecret::None
    }

    fn password(&mut self, raw: &Spanned<Secret>, path: &str, auth: AuthMethod) -> ClientSecret {
        let text = raw.value.expose();
        let problem = if text.is_empty() {
            "must not be empty"
        } else if text.starts_with("SCRAM-SHA-256$") {
            "this is a SCRAM verifier, not a password; give it as scram_verifier"
        } else if is_md5_hash(text) && auth == AuthMethod::Md5 {
            return ClientSecret::Md5Hash(raw.value.clone());
        } else if is_md5_hash(text) {
            "an md5 hash cannot check scram-sha-256 logins; give the plaintext password or a \
             scram_verifier"
        } else {
            return ClientSecret::Password(raw.value.clone());
        };
        self.report(at(raw), path, problem);
        ClientSecret::None
    }
}
