//! Creating data directories: `initdb` for a primary, `pg_basebackup -R` for a
//! replica, and the settings and `pg_hba.conf` that make them fast test servers.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::binaries::RunAs;
use super::{LocalPgError, SUPERUSER, SUPERUSER_PASSWORD};

/// Settings for throw-away servers: durability off, replication on.
const BASE_SETTINGS: [(&str, &str); 11] = [
    ("listen_addresses", "127.0.0.1"),
    ("max_connections", "200"),
    ("wal_level", "replica"),
    ("max_wal_senders", "5"),
    ("hot_standby", "on"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "64MB"),
    ("logging_collector", "off"),
    ("log_line_prefix", "%m [%p] %q%u@%d "),
];

/// Local sockets are trusted (psql, pg_basebackup); TCP asks for a password.
/// `md5` lets PostgreSQL choose per role: MD5 for a role whose password was
/// stored with `password_encryption = 'md5'`, SCRAM-SHA-256 for every other.
const PG_HBA: &str = "\
# written by pgstrata localpg: test and demo servers only
local all         all                  trust
host  replication all  127.0.0.1/32    trust
host  all         all  127.0.0.1/32    md5
";

/// Runs `command` to completion; a failure carries its output.
pub async fn run_checked(command: Command) -> Result<(), LocalPgError> {
    let shown = format!("{command:?}");
    let mut command = tokio::process::Command::from(command);
    command.stdin(std::process::Stdio::null());
    let output = command
        .output()
        .await
        .map_err(|e| LocalPgError::io(format!("running {shown}"), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(LocalPgError::CommandFailed {
        command: shown,
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Runs `initdb` for a new primary; `work_dir` must be writable by `run_as`.
pub async fn initdb(
    bin_dir: &Path,
    run_as: &RunAs,
    work_dir: &Path,
    data_dir: &Path,
) -> Result<(), LocalPgError> {
    let pwfile = work_dir.join("superuser-password");
    std::fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n"))
        .map_err(|e| LocalPgError::io(format!("writing {}", pwfile.display()), e))?;
    run_as.give(&pwfile).await?;
    let mut command = run_as.command(bin_dir.join("initdb"));
    command
        .current_dir(work_dir)
        .arg("-D")
        .arg(data_dir)
        .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--no-sync", "--no-instructions"]);
    let result = run_checked(command).await;
    // The file only mattered to initdb; a leftover is removed with the root anyway.
    let _ = std::fs::remove_file(&pwfile);
    result
}

/// Appends the primary's settings and replaces its `pg_hba.conf`.
pub fn configure_primary(
    data_dir: &Path,
    port: u16,
    socket_dir: &Path,
    extra: &[(String, String)],
) -> Result<(), LocalPgError> {
    let mut settings: Vec<(&str, String)> = BASE_SETTINGS
        .iter()
        .map(|(key, value)| (*key, (*value).to_string()))
        .collect();
    settings.push(("port", port.to_string()));
    settings.push(("unix_socket_directories", path_str(socket_dir)));
    settings.extend(extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
    append_settings(data_dir, &settings)?;
    let hba = data_dir.join("pg_hba.conf");
    // Truncating the existing file keeps its owner (the postgres user when we are root).
    std::fs::write(&hba, PG_HBA)
        .map_err(|e| LocalPgError::io(format!("writing {}", hba.display()), e))
}

/// Copies the running primary into `data_dir` as a streaming standby.
pub async fn basebackup(
    bin_dir: &Path,
    run_as: &RunAs,
    work_dir: &Path,
    primary_port: u16,
    data_dir: &Path,
) -> Result<(), LocalPgError> {
    let mut command = run_as.command(bin_dir.join("pg_basebackup"));
    command
        .current_dir(work_dir)
        .args(["-h", "127.0.0.1", "-p", &primary_port.to_string()])
        .args(["-U", SUPERUSER, "-D"])
        .arg(data_dir)
        // -R writes standby.signal and primary_conninfo; a fast checkpoint
        // avoids waiting for a spread one.
        .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]);
    run_checked(command).await
}

/// Appends the replica's own port, socket directory and apply delay; the rest
/// of its settings came with the primary's `postgresql.conf`.
pub fn configure_replica(
    data_dir: &Path,
    port: u16,
    socket_dir: &Path,
    apply_delay: Option<Duration>,
) -> Result<(), LocalPgError> {
    let mut settings = vec![
        ("port", port.to_string()),
        ("unix_socket_directories", path_str(socket_dir)),
    ];
    if let Some(delay) = apply_delay {
        settings.push((
            "recovery_min_apply_delay",
            format!("{}ms", delay.as_millis()),
        ));
    }
    append_settings(data_dir, &settings)
}

/// Rejects setting names that are not GUC names, before any work is done.
pub fn check_settings(settings: &[(String, String)]) -> Result<(), LocalPgError> {
    settings
        .iter()
        .try_for_each(|(key, value)| setting_line(key, value).map(drop))
}

/// Appends `key = 'value'` lines to `postgresql.conf`; later lines win.
fn append_settings(data_dir: &Path, settings: &[(&str, String)]) -> Result<(), LocalPgError> {
    let mut text = String::from("\n# pgstrata localpg\n");
    for (key, value) in settings {
        text.push_str(&setting_line(key, value)?);
    }
    let conf = data_dir.join("postgresql.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| LocalPgError::io(format!("appending to {}", conf.display()), e))
}

/// One `postgresql.conf` line. Every value is quoted, which PostgreSQL accepts
/// for settings of any type, so callers pass plain values (`"on"`, `"10s"`).
fn setting_line(key: &str, value: &str) -> Result<String, LocalPgError> {
    let is_name = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !is_name {
        return Err(LocalPgError::InvalidSetting(key.to_string()));
    }
    let value = value.replace('\\', "\\\\").replace('\'', "''");
    Ok(format!("{key} = '{value}'\n"))
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_lines_quote_values_and_reject_bad_names() {
        assert_eq!(
            setting_line("port", "5433").ok(),
            Some("port = '5433'\n".into())
        );
        assert_eq!(
            setting_line("search_path", "a'b").ok(),
            Some("search_path = 'a''b'\n".into())
        );
        assert!(setting_line("port = 1\nfsync", "on").is_err());
        assert!(setting_line("", "on").is_err());
    }
}
