//! The run-time parameters a server reports with ParameterStatus, and what a client was
//! told of them. Each set keeps a digest of its contents, so a session can tell without
//! comparing strings that a connection reports what its client already knows.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

/// In declaration order (`repr(C)`): what each transaction reads first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Params {
    /// Of every (name, value): equal sets have equal digests.
    digest: u64,
    /// `standard_conforming_strings = off`: backslashes escape in '…' strings.
    backslash_strings: bool,
    /// Read for every client message: kept at hand rather than looked up.
    application_name: String,
    /// Shared between copies until one changes (each client keeps a copy of what it
    /// was told, mostly the same values as its server's and other clients').
    map: Arc<BTreeMap<String, String>>,
}

impl Params {
    pub fn insert(&mut self, name: String, value: String) {
        match name.as_str() {
            "application_name" => self.application_name.clone_from(&value),
            "standard_conforming_strings" => self.backslash_strings = value == "off",
            _ => {}
        }
        if self.map.get(&name) == Some(&value) {
            return;
        }
        Arc::make_mut(&mut self.map).insert(name, value);
        let mut hasher = DefaultHasher::new();
        self.map.hash(&mut hasher);
        self.digest = hasher.finish();
    }

    pub fn get(&self, name: &str) -> Option<&String> {
        self.map.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.map.iter()
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    pub fn backslash_strings(&self) -> bool {
        self.backslash_strings
    }
}

impl<'a> IntoIterator for &'a Params {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut p = Params::default();
        for (n, v) in pairs {
            p.insert(n.to_string(), v.to_string());
        }
        p
    }

    #[test]
    fn equal_sets_have_equal_digests_whatever_the_order() {
        let a = params(&[("TimeZone", "UTC"), ("application_name", "x")]);
        let b = params(&[("application_name", "x"), ("TimeZone", "UTC")]);
        assert_eq!(a.digest(), b.digest());
        let c = params(&[("application_name", "y"), ("TimeZone", "UTC")]);
        assert_ne!(a.digest(), c.digest());
        // A name and value split elsewhere is another set.
        assert_ne!(
            params(&[("ab", "c")]).digest(),
            params(&[("a", "bc")]).digest()
        );
    }

    #[test]
    fn copies_share_their_values_until_one_changes() {
        let server = params(&[("TimeZone", "UTC"), ("DateStyle", "ISO, MDY")]);
        let mut client = server.clone();
        assert!(Arc::ptr_eq(&server.map, &client.map));
        client.insert("TimeZone".into(), "UTC".into());
        assert!(
            Arc::ptr_eq(&server.map, &client.map),
            "the same value copies nothing"
        );
        client.insert("TimeZone".into(), "Europe/Paris".into());
        assert_eq!(server.get("TimeZone").map(String::as_str), Some("UTC"));
        assert_eq!(
            client.get("TimeZone").map(String::as_str),
            Some("Europe/Paris")
        );
        assert_eq!(
            client.get("DateStyle").map(String::as_str),
            Some("ISO, MDY")
        );
        assert_ne!(server.digest(), client.digest());
    }

    #[test]
    fn the_two_values_read_per_message_follow_inserts() {
        let mut p = params(&[("application_name", "psql")]);
        assert_eq!(p.application_name(), "psql");
        assert!(!p.backslash_strings());
        p.insert("standard_conforming_strings".into(), "off".into());
        assert!(p.backslash_strings());
        p.insert("standard_conforming_strings".into(), "on".into());
        assert!(!p.backslash_strings());
        p.insert("application_name".into(), "app".into());
        assert_eq!(p.application_name(), "app");
    }
}
