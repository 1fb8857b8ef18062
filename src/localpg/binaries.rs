//! Finding the PostgreSQL server programs and the OS user to run them as:
//! `PGSTRATA_PG_BIN`, else the highest `/usr/lib/postgresql/*/bin`, else `PATH`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::LocalPgError;

/// Environment variable naming the directory with `initdb`, `postgres`, ….
pub const PG_BIN_ENV: &str = "PGSTRATA_PG_BIN";

/// Where Debian and Ubuntu install one directory per major version.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// Programs a directory must hold to run a primary and a replica.
const REQUIRED: [&str; 3] = ["initdb", "postgres", "pg_basebackup"];

/// The OS user PostgreSQL runs as when we are root.
const POSTGRES_OS_USER: &str = "postgres";

/// Finds the directory holding the PostgreSQL server programs.
pub fn find_bin_dir() -> Result<PathBuf, LocalPgError> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_required(&dir) {
            Ok(dir)
        } else {
            Err(LocalPgError::BinariesNotFound {
                searched: format!("{PG_BIN_ENV}={}", dir.display()),
            })
        };
    }
    if let Some(dir) = highest_debian_bin(Path::new(DEBIAN_PG_ROOT)) {
        return Ok(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|dir| has_required(dir)) {
        return Ok(dir);
    }
    Err(LocalPgError::BinariesNotFound {
        searched: format!("{DEBIAN_PG_ROOT}/*/bin and PATH"),
    })
}

fn has_required(dir: &Path) -> bool {
    REQUIRED.iter().all(|name| dir.join(name).is_file())
}

/// The `bin` directory of the highest version under `root` (`15`, `16`, `9.6`…).
fn highest_debian_bin(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().as_os_str())?;
            let bin = entry.path().join("bin");
            has_required(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; anything else is not a version.
fn parse_version(name: &OsStr) -> Option<Vec<u32>> {
    name.to_str()?
        .split('.')
        .map(|part| part.parse().ok())
        .collect()
}

/// Who runs the PostgreSQL programs: ourselves, or (as root) the `postgres` user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The current user; PostgreSQL accepts it.
    CurrentUser,
    /// Switch with `runuser -u NAME --`, and give NAME our directories.
    OsUser(String),
}

impl RunAs {
    /// Decides from the effective uid (shelling out to `id`, no `unsafe`).
    pub fn detect() -> Result<RunAs, LocalPgError> {
        let output = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| LocalPgError::io("running `id -u`", e))?;
        if String::from_utf8_lossy(&output.stdout).trim() != "0" {
            return Ok(RunAs::CurrentUser);
        }
        let exists = Command::new("id")
            .arg(POSTGRES_OS_USER)
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false);
        if exists {
            Ok(RunAs::OsUser(POSTGRES_OS_USER.to_string()))
        } else {
            Err(LocalPgError::NoPostgresUser)
        }
    }

    /// A command running `program` with `args` as this user.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self {
            RunAs::CurrentUser => Command::new(program),
            RunAs::OsUser(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
        }
    }

    /// Gives `path` (recursively) to the user PostgreSQL runs as, if that is not us.
    pub async fn give(&self, path: &Path) -> Result<(), LocalPgError> {
        let RunAs::OsUser(user) = self else {
            return Ok(());
        };
        let mut command = Command::new("chown");
        command.arg("-R").arg(format!("{user}:")).arg(path);
        super::setup::run_checked(command).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        let v = |s: &str| parse_version(OsStr::new(s));
        assert_eq!(v("15"), Some(vec![15]));
        assert_eq!(v("9.6"), Some(vec![9, 6]));
        assert_eq!(v("common"), None);
        assert!(v("16") > v("9.6"));
    }

    #[test]
    fn finds_a_bin_dir_with_the_server_programs() {
        let dir = find_bin_dir().expect("PostgreSQL is installed on the test machine");
        assert!(has_required(&dir));
    }
}
