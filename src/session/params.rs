//! The settings a client asked for in its StartupMessage (including `options=-c …`),
//! and the hidden statement that applies them to a pooled server connection.

use std::collections::BTreeMap;

use super::error::SessionError;

/// Startup parameters that are not run-time settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// The (name, value) settings requested by a client, in a stable order.
pub fn requested_settings(
    params: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, SessionError> {
    if let Some(value) = params.get("replication") {
        if !matches!(value.as_str(), "false" | "off" | "no" | "0") {
            return Err(SessionError::Replication);
        }
    }
    let mut settings: Vec<(String, String)> = params
        .iter()
        .filter(|(name, _)| !NOT_SETTINGS.contains(&name.as_str()) && !name.starts_with("_pq_."))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    if let Some(options) = params.get("options") {
        settings.extend(parse_options(options)?);
    }
    Ok(settings)
}

/// Protocol-extension parameters (`_pq_.*`) the client asked for; we support none.
pub fn protocol_extensions(params: &BTreeMap<String, String>) -> Vec<String> {
    params
        .keys()
        .filter(|name| name.starts_with("_pq_."))
        .cloned()
        .collect()
}

/// Parses the `options` startup parameter the way PostgreSQL does: whitespace-separated,
/// backslash escapes the next character; `-c name=value`, `-cname=value`, `--name=value`.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, SessionError> {
    let words = split_words(options);
    let mut settings = Vec::new();
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        let assignment = if let Some(rest) = word.strip_prefix("--") {
            rest.to_owned()
        } else if word == "-c" {
            iter.next()
                .ok_or_else(|| SessionError::StartupOption(word.clone()))?
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_owned()
        } else {
            return Err(SessionError::StartupOption(word));
        };
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| SessionError::StartupOption(assignment.clone()))?;
        settings.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(settings)
}

fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            c if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// One statement applying all settings, like PostgreSQL applies startup options
/// (`set_config` parses list values such as search_path as the server would).
pub fn set_config_sql(settings: &[(String, String)]) -> Option<String> {
    if settings.is_empty() {
        return None;
    }
    let calls: Vec<String> = settings
        .iter()
        .map(|(name, value)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                literal(name),
                literal(value)
            )
        })
        .collect();
    Some(format!("SELECT {}", calls.join(", ")))
}

/// An escape-string literal: correct whatever standard_conforming_strings says.
pub(super) fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => {} // cannot occur in a startup packet string; never emit it
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn options_are_parsed_like_postgres() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("-c search_path=a,b", &[("search_path", "a,b")]),
            (
                "-cstatement_timeout=5s --work-mem=64MB",
                &[("statement_timeout", "5s"), ("work_mem", "64MB")],
            ),
            (
                r"-c application_name=with\ space",
                &[("application_name", "with space")],
            ),
            ("  ", &[]),
        ];
        for (input, want) in cases {
            let got = parse_options(input).unwrap();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(got, want, "{input}");
        }
        assert!(parse_options("-e").is_err());
        assert!(parse_options("-c").is_err());
        assert!(parse_options("-c novalue").is_err());
    }

    #[test]
    fn settings_skip_identity_and_protocol_params() {
        let params = map(&[
            ("user", "u"),
            ("database", "d"),
            ("application_name", "psql"),
            ("_pq_.x", "1"),
            ("options", "-c TimeZone=UTC"),
        ]);
        let got = requested_settings(&params).unwrap();
        assert_eq!(
            got,
            vec![
                ("application_name".to_string(), "psql".to_string()),
                ("TimeZone".to_string(), "UTC".to_string())
            ]
        );
        assert_eq!(protocol_extensions(&params), vec!["_pq_.x".to_string()]);
        assert!(requested_settings(&map(&[("replication", "database")])).is_err());
        assert!(requested_settings(&map(&[("replication", "false")])).is_ok());
    }

    #[test]
    fn set_config_statement_escapes_values() {
        assert_eq!(set_config_sql(&[]), None);
        let sql = set_config_sql(&[("application_name".into(), r"it's a \ test".into())]).unwrap();
        assert_eq!(
            sql,
            r"SELECT pg_catalog.set_config(E'application_name', E'it''s a \\ test', false)"
        );
    }
}
