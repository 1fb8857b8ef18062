//! Statements the proxy runs on a server connection for a client, ahead of the client's
//! own messages; their replies are swallowed by the relay.

use bytes::{BufMut, BytesMut};

use super::params::set_config_sql;

/// Encodes a simple Query message.
pub fn query(buf: &mut BytesMut, sql: &str) {
    buf.put_u8(b'Q');
    // Lengths of hidden statements are tiny: a few settings.
    buf.put_i32((sql.len() + 5) as i32);
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
}

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
        Some(_) => Some(match set_config_sql(wanted) {
            Some(set) => format!("RESET ALL; {set}"),
            None => "RESET ALL".to_owned(),
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
            Some("RESET ALL; SELECT pg_catalog.set_config(E'application_name', E'app', false)")
        );
        assert_eq!(
            reconcile_settings(Some(&psql), &[]).as_deref(),
            Some("RESET ALL")
        );
    }

    #[test]
    fn query_message_layout() {
        let mut buf = BytesMut::new();
        query(&mut buf, "RESET ALL");
        assert_eq!(&buf[..], b"Q\0\0\0\x0eRESET ALL\0");
    }
}
