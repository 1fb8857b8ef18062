//! Statements the proxy runs on a server connection for a client before the client's own:
//! bringing a connection that carries another client's settings to this client's.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::params::{literal, set_config_sql};

/// The session's own settings, as the server has them now: what a client set, reset or
/// set_config'd. Transaction characteristics are left out: `SET TRANSACTION` leaves them
/// marked as session values that neither DISCARD ALL nor RESET ALL clears, and replayed
/// outside a transaction (on a hot standby above all) they fail. Neither role nor custom (dotted) settings are listed in pg_settings: those
/// are asked for by name.
pub fn session_settings_sql(custom: &BTreeSet<String>) -> String {
    let mut sql = String::from(
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' \
         AND name NOT IN ('transaction_isolation', 'transaction_read_only', \
         'transaction_deferrable') \
         UNION ALL SELECT 'role', pg_catalog.current_setting('role') \
         WHERE pg_catalog.current_setting('role') <> 'none'",
    );
    if !custom.is_empty() {
        let names: Vec<String> = custom.iter().map(|n| literal(n)).collect();
        sql.push_str(&format!(
            " UNION ALL SELECT n, pg_catalog.current_setting(n, true) \
             FROM pg_catalog.unnest(ARRAY[{}]::text[]) AS n \
             WHERE pg_catalog.current_setting(n, true) IS NOT NULL",
            names.join(", ")
        ));
    }
    sql.push_str(" ORDER BY 1");
    sql
}

/// A session's settings: (name, value) pairs.
pub type Settings = Vec<(String, String)>;

/// The one shared copy of `settings` among all sessions: sessions with equal settings
/// then hold the same allocation, and a checkout tells a connection already carries a
/// client's settings by address, without comparing them.
pub fn shared_settings(settings: Settings) -> Arc<Settings> {
    static SHARED: OnceLock<Mutex<HashMap<Settings, Weak<Settings>>>> = OnceLock::new();
    let mut shared = SHARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(live) = shared.get(&settings).and_then(Weak::upgrade) {
        return live;
    }
    if shared.len() >= 1024 {
        shared.retain(|_, copy| copy.strong_count() > 0);
    }
    let copy = Arc::new(settings.clone());
    shared.insert(settings, Arc::downgrade(&copy));
    copy
}

/// Session state that keeps a session pinned, counted by kind.
pub const SESSION_STATE: &str = "SELECT 'temporary objects', count(*)::text \
     FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema() \
     UNION ALL SELECT 'temporary functions', count(*)::text FROM pg_catalog.pg_proc \
     WHERE pronamespace = pg_catalog.pg_my_temp_schema() \
     UNION ALL SELECT 'temporary types', count(*)::text FROM pg_catalog.pg_type \
     WHERE typnamespace = pg_catalog.pg_my_temp_schema() \
     UNION ALL SELECT 'advisory locks', count(*)::text FROM pg_catalog.pg_locks \
     WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() \
     UNION ALL SELECT 'listen', count(*)::text FROM pg_catalog.pg_listening_channels() \
     UNION ALL SELECT 'cursors', count(*)::text FROM pg_catalog.pg_cursors WHERE is_holdable \
     UNION ALL SELECT 'prepared', count(*)::text FROM pg_catalog.pg_prepared_statements \
     WHERE from_sql";

/// Takes a connection back to the server's defaults.
pub const RESET: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL";

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
    fn equal_settings_share_one_copy_while_in_use() {
        let a = shared_settings(settings(&[("application_name", "shared-test")]));
        let b = shared_settings(settings(&[("application_name", "shared-test")]));
        assert!(Arc::ptr_eq(&a, &b));
        let c = shared_settings(settings(&[("application_name", "other-test")]));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*c, settings(&[("application_name", "other-test")]));
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
