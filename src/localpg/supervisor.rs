//! Small `sh` processes that tie each server's life to ours through a pipe on
//! their stdin: when we drop it, or die without running destructors, they shut
//! PostgreSQL down (`Supervisor`) and remove the cluster's files (`Janitor`).

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::binaries::RunAs;
use super::LocalPgError;

/// `$1` bin dir, `$2` data dir. Starts postgres in the background (not through
/// pg_ctl, which would detach it), sends it SIGINT (fast shutdown) once stdin
/// reaches EOF, and exits with postgres, so an early exit is visible to us.
const SERVER_SCRIPT: &str = r#"
exec 3<&0 </dev/null
"$1/postgres" -D "$2" 3<&- &
pg=$!
( cat <&3 >/dev/null; kill -INT "$pg" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$pg"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// `$1` cluster root. On EOF waits (at most ~30 s) until no postmaster under
/// the root is alive, so no server writes into a directory being removed.
const JANITOR_SCRIPT: &str = r#"
cat >/dev/null
i=0
while [ "$i" -lt 300 ]; do
  busy=
  for pidfile in "$1"/*/data/postmaster.pid; do
    if [ -f "$pidfile" ] && kill -0 "$(head -n 1 "$pidfile")" 2>/dev/null; then busy=1; fi
  done
  [ -z "$busy" ] && break
  sleep 0.1
  i=$((i + 1))
done
rm -rf "$1"
"#;

/// How long a fast shutdown may take before we ask for an immediate one.
const FAST_SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);
/// How long an immediate shutdown (SIGQUIT) may take before we give up.
const IMMEDIATE_SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// How long the janitor may take once the servers are down.
const JANITOR_LIMIT: Duration = Duration::from_secs(40);

/// One running `postgres` under its supervising shell. Dropping it stops the
/// server (synchronously, bounded) and keeps the data directory.
#[derive(Debug)]
pub struct Supervisor {
    child: Child,
    /// Our end of the pipe; closing it is the stop signal.
    stdin: Option<ChildStdin>,
    data_dir: PathBuf,
}

impl Supervisor {
    /// Starts `postgres -D data_dir` as `run_as`, its output going to `log`.
    pub fn spawn(
        run_as: &RunAs,
        bin_dir: &Path,
        data_dir: &Path,
        log: &File,
    ) -> Result<Supervisor, LocalPgError> {
        let clone_log = || {
            log.try_clone()
                .map_err(|e| LocalPgError::io("duplicating the log file handle", e))
        };
        let mut command = run_as.command("sh");
        command
            .args(["-c", SERVER_SCRIPT, "pgstrata-localpg"])
            .arg(bin_dir)
            .arg(data_dir)
            .current_dir(data_dir)
            .stdin(Stdio::piped())
            .stdout(clone_log()?)
            .stderr(clone_log()?);
        let (child, stdin) = spawn_grouped(command, "starting the postgres supervisor")?;
        Ok(Supervisor {
            child,
            stdin: Some(stdin),
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The exit status, if the server (and so the supervisor) already ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks for a fast shutdown without waiting for it.
    pub fn request_stop(&mut self) {
        self.stdin = None;
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.request_stop();
        if wait_bounded(&mut self.child, FAST_SHUTDOWN_LIMIT).is_some() {
            return;
        }
        tracing::warn!(data_dir = %self.data_dir.display(), "fast shutdown too slow, sending SIGQUIT");
        signal_postmaster(&self.data_dir, "QUIT");
        if wait_bounded(&mut self.child, IMMEDIATE_SHUTDOWN_LIMIT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes the cluster root once we drop it or die; `Drop` waits for it and
/// removes the root itself if the script could not.
#[derive(Debug)]
pub struct Janitor {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    root: PathBuf,
}

impl Janitor {
    /// Starts the janitor for `root` as the current user.
    pub fn spawn(root: &Path) -> Result<Janitor, LocalPgError> {
        let mut command = Command::new("sh");
        command
            .args(["-c", JANITOR_SCRIPT, "pgstrata-localpg-janitor"])
            .arg(root)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (child, stdin) = spawn_grouped(command, "starting the cleanup process")?;
        Ok(Janitor {
            child: Some(child),
            stdin: Some(stdin),
            root: root.to_path_buf(),
        })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(child) = self.child.as_mut() {
            if wait_bounded(child, JANITOR_LIMIT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.root.exists() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Spawns `command` in its own process group, so a Ctrl-C aimed at the test
/// process does not kill the supervisor before it has cleaned up.
fn spawn_grouped(mut command: Command, action: &str) -> Result<(Child, ChildStdin), LocalPgError> {
    command.process_group(0);
    let mut child = command.spawn().map_err(|e| LocalPgError::io(action, e))?;
    match child.stdin.take() {
        Some(stdin) => Ok((child, stdin)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(LocalPgError::io(
                action,
                io::Error::other("child has no stdin pipe"),
            ))
        }
    }
}

/// Polls `child` until it exits or `limit` passes.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Sends `signal` to the postmaster recorded in `data_dir/postmaster.pid`.
fn signal_postmaster(data_dir: &Path, signal: &str) {
    let pid = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
    if let Some(pid) = pid {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
    }
}
