//! Functions whose call makes a statement a write: they change data, take locks, move
//! sequences or control the server, so they must run on the primary.

/// Built-in write functions, by exact (lower-case, unqualified) name.
const WRITE_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "set_config",
    "pg_notify",
    "loread",
    "lowrite",
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_drop_replication_slot",
    "pg_logical_emit_message",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "dblink_exec",
    "pg_export_snapshot",
];

/// Built-in write functions, by prefix: advisory locks, large objects, statistics resets.
const WRITE_PREFIXES: &[&str] = &["pg_advisory_", "pg_try_advisory_", "lo_", "pg_stat_reset"];

/// Whether `name` (lower-case, unqualified) is a built-in write function.
pub fn is_builtin_write_function(name: &str) -> bool {
    WRITE_FUNCTIONS.contains(&name)
        || WRITE_PREFIXES.iter().any(|p| name.starts_with(p))
        // pg_create_physical_replication_slot, pg_create_logical_replication_slot
        || name.starts_with("pg_create_") && name.ends_with("_replication_slot")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_write_functions() {
        let cases: &[(&str, bool)] = &[
            ("nextval", true),
            ("set_config", true),
            ("pg_advisory_xact_lock", true),
            ("pg_try_advisory_lock_shared", true),
            ("pg_advisory_unlock_all", true),
            ("lo_import", true),
            ("lowrite", true),
            ("pg_stat_reset_shared", true),
            ("pg_create_logical_replication_slot", true),
            ("pg_create_physical_replication_slot", true),
            ("pg_current_wal_lsn", true),
            ("pg_sequence_last_value", false),
            ("pg_last_wal_replay_lsn", false),
            ("now", false),
            ("lower", false),
            ("pg_create_foo", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_builtin_write_function(name), *want, "{name}");
        }
    }
}
