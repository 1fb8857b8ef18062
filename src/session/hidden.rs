//! Statements the proxy runs on a server connection for a client before the client's own:
//! bringing a connection that carries another client's settings to this client's.

use super::params::set_config_sql;

const RESET: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL";

/// The statement that turns a connection carrying `applied` settings (None: the server's
/// defaults) into one carrying `wanted`, or None when they already match.
pub fn reconcile_settings(
    applied: Option<&Vec<(String, String)>>,
    wanted: &[(String, String)],
) -> Option<String> {
    match applied {
        Some(applied) if applied.as_slice() == wanted => None,
        None if wanted.is_empty() => None,
        None => set_config_sql(wanted),
        // A role survives RESET ALL: reset it first.
        Some(_) => Some(match set_config_sql(wanted) {
            Some(set) => format!("{RESET}; {set}"),
            None => RESET.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn reconciles_only_differences() {
        let psql = settings(&[("application_name", "psql")]);
        let app = settings(&[("application_name", "app")]);
        assert_eq!(reconcile_settings(None, &[]), None);
        assert_eq!(reconcile_settings(Some(&psql), &psql), None);
        assert_eq!(
            reconcile_settings(None, &psql).as_deref(),
            Some("SELECT pg_catalog.set_config(E'application_name', E'psql', false)")
        );
        assert_eq!(
            reconcile_settings(Some(&psql), &app).as_deref(),
            Some("SET SESSION AUTHORIZATION DEFAULT; RESET ALL; SELECT pg_catalog.set_config(E'application_name', E'app', false)")
        );
        assert_eq!(
            reconcile_settings(Some(&psql), &[]).as_deref(),
            Some("SET SESSION AUTHORIZATION DEFAULT; RESET ALL")
        );
    }
}
