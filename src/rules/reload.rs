//! Hot reload: on SIGHUP, or when the rules file changes (polled, no watcher dependency),
//! read → parse → validate → build and hand the new `Config` over. An invalid file is
//! logged problem by problem and counted; the running config stays.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::MissedTickBehavior;

use super::config::Config;
use super::load::load;
use super::problem::ConfigErrors;

/// How often the directory is scanned; a change is applied one to two intervals later.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Watches `path` (through symlinks, and the `..` entries beside it: Kubernetes swaps a
/// mounted ConfigMap by re-pointing its `..data` symlink) and SIGHUP until `shutdown`
/// completes. Other files in the directory are not watched: a log file written there
/// must not make every write a reload (which logs, which is a write...). On a trigger, `reload_once`; a valid
/// config goes to `apply`.
///
/// The directory's state is taken when `watch` is called, not when the future first runs,
/// so a change made right after the call is seen. Changes between the caller's initial load
/// and that moment are not: load, then call `watch`, or send SIGHUP.
pub fn watch(
    path: PathBuf,
    apply: impl Fn(Config) + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let dir = directory_of(&path);
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    let mut changes = ChangeDetector::new(Snapshot::scan(&dir, &name));
    async move {
        let mut hangup = signal(SignalKind::hangup())
            .map_err(|error| {
                tracing::warn!(%error, "cannot listen for SIGHUP; reloading on file changes only");
            })
            .ok();
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let signalled = tokio::select! {
                () = &mut shutdown => return,
                Some(()) = next_hangup(&mut hangup) => true,
                _ = ticks.tick() => false,
            };
            let scan = Snapshot::scan(&dir, &name);
            let due = if signalled {
                tracing::info!("SIGHUP: reloading the rules");
                changes.reset(scan);
                true
            } else {
                changes.observe(scan)
            };
            if due {
                if let Some(config) = reload_off_thread(&path).await {
                    apply(config);
                }
            }
        }
    }
}

/// One reload attempt: read → parse → validate → build, logged and counted in
/// `pgstrata_rules_reloads_total{result}`. Applying the result is the caller's.
pub fn reload_once(path: &Path) -> Result<Config, ConfigErrors> {
    let result = load(path);
    let metrics = crate::metrics::get();
    let file = path.display();
    match &result {
        Ok(_) => {
            metrics.rules_reloads_ok.increment(1);
            tracing::info!(%file, "rules reloaded");
        }
        Err(errors) => {
            metrics.rules_reloads_error.increment(1);
            // Problems never carry secrets: substituted values are redacted by `load`.
            for problem in &errors.problems {
                tracing::warn!(%problem, "rules reload: problem");
            }
            let problems = errors.problems.len();
            tracing::warn!(%file, problems, "rules reload refused; the running rules stay");
        }
    }
    result
}

/// An `apply` for `watch` that stores each new config in `target`, for readers that load
/// one snapshot per request.
pub fn store_into(target: Arc<ArcSwap<Config>>) -> impl Fn(Config) + Send + Sync + 'static {
    move |config| target.store(Arc::new(config))
}

/// `reload_once` on the blocking pool: it reads a file and may derive SCRAM verifiers.
async fn reload_off_thread(path: &Path) -> Option<Config> {
    let path = path.to_path_buf();
    match tokio::task::spawn_blocking(move || reload_once(&path)).await {
        Ok(result) => result.ok(),
        Err(error) => {
            tracing::error!(%error, "rules reload failed to run");
            None
        }
    }
}

async fn next_hangup(hangup: &mut Option<Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The directory whose files are watched; `.` for a bare file name.
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The watched entries of a directory by name: modification time, length and inode
/// (symlinks followed; the inode tells a file renamed over the old one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Snapshot(BTreeMap<OsString, (Option<SystemTime>, u64, u64)>);

impl Snapshot {
    /// The entry called `name` and those whose names start with `..`. An unreadable
    /// directory scans as empty, so its return counts as a change.
    fn scan(dir: &Path, name: &OsString) -> Self {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Self::default();
        };
        let watched = |entry: &std::fs::DirEntry| {
            let file = entry.file_name();
            file == *name || file.as_encoded_bytes().starts_with(b"..")
        };
        let files = entries
            .filter_map(Result::ok)
            .filter(watched)
            .filter_map(|entry| {
                // A dangling symlink still counts, by its own metadata.
                let meta = std::fs::metadata(entry.path())
                    .or_else(|_| entry.metadata())
                    .ok()?;
                let stamp = (meta.modified().ok(), meta.len(), meta.ino());
                Some((entry.file_name(), stamp))
            });
        Self(files.collect())
    }
}

/// Debounced change detection: a reload is due once the directory has stayed the same for
/// one scan after changing, so an editor's write-then-rename makes one reload, not two.
#[derive(Debug)]
struct ChangeDetector {
    seen: Snapshot,
    pending: bool,
}

impl ChangeDetector {
    fn new(initial: Snapshot) -> Self {
        Self {
            seen: initial,
            pending: false,
        }
    }

    /// Feeds one scan; true when a reload is due.
    fn observe(&mut self, scan: Snapshot) -> bool {
        if scan != self.seen {
            self.seen = scan;
            self.pending = true;
            false
        } else {
            std::mem::take(&mut self.pending)
        }
    }

    /// A reload happened for another reason: the directory as it is now counts as seen.
    fn reset(&mut self, scan: Snapshot) {
        self.seen = scan;
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, FileTimes};

    use super::*;

    const VALID: &str = "\
listen: { address: 127.0.0.1:6432 }
clusters: { main: { primary: { host: db, port: 5432 } } }
databases: { app: { cluster: main } }
users: { app: { auth: trust } }
";

    fn set_mtime(path: &Path, at: SystemTime) {
        let file = File::options().write(true).open(path).expect("open");
        file.set_times(FileTimes::new().set_modified(at))
            .expect("set mtime");
    }

    #[test]
    fn scans_see_content_time_and_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("pgstrata.yaml");
        let name = OsString::from("pgstrata.yaml");
        let scan = |dir: &Path| Snapshot::scan(dir, &name);
        std::fs::write(&file, "a: 1\n").expect("write");
        let first = scan(dir.path());
        assert_eq!(first.0.len(), 1);
        assert_eq!(scan(dir.path()), first, "nothing changed");

        std::fs::write(&file, "a: 10\n").expect("write");
        let longer = scan(dir.path());
        assert_ne!(longer, first, "length changed");

        // Same length, other content: seen through the modification time.
        std::fs::write(&file, "a: 20\n").expect("write");
        set_mtime(
            &file,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        );
        let touched = scan(dir.path());
        assert_ne!(touched, longer, "mtime changed");

        // A log (or any other file) written beside the rules is not a change.
        std::fs::write(dir.path().join("proxy.log"), "a line").expect("write");
        assert_eq!(scan(dir.path()), touched, "an unrelated file");

        // Same length and time, another file renamed over it: seen through the inode.
        let other = dir.path().join(".pgstrata.yaml.tmp");
        std::fs::write(&other, "a: 30\n").expect("write");
        set_mtime(
            &other,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        );
        assert_eq!(scan(dir.path()), touched, "a temporary file beside it");
        std::fs::rename(&other, &file).expect("rename");
        assert_ne!(scan(dir.path()), touched, "renamed over");

        let swapped = scan(dir.path());
        std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
        assert_ne!(scan(dir.path()), swapped, "Kubernetes' ..data entry");
        assert_eq!(scan(&dir.path().join("gone")), Snapshot::default());
    }

    #[test]
    fn debounce_makes_one_reload_per_burst() {
        let snapshot = |files: &[(&str, u64)]| {
            let files = files
                .iter()
                .map(|(name, len)| (OsString::from(name), (None, *len, 0)));
            Snapshot(files.collect())
        };
        let old = snapshot(&[("pgstrata.yaml", 10)]);
        let temp = snapshot(&[("pgstrata.yaml", 10), (".pgstrata.yaml.tmp", 12)]);
        let renamed = snapshot(&[("pgstrata.yaml", 12)]);
        let mut changes = ChangeDetector::new(old.clone());
        // (scan, reload due?)
        let steps = [
            (&old, false),
            (&temp, false),
            (&renamed, false),
            (&renamed, true),
            (&renamed, false),
            (&old, false),
            (&old, true),
        ];
        for (index, (scan, due)) in steps.into_iter().enumerate() {
            assert_eq!(changes.observe(scan.clone()), due, "step {index}");
        }
        // A SIGHUP reload in the middle of a burst settles it.
        assert!(!changes.observe(renamed.clone()));
        changes.reset(renamed.clone());
        assert!(!changes.observe(renamed));
    }

    #[test]
    fn reload_once_reports_every_problem_and_builds_a_valid_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("pgstrata.yaml");
        std::fs::write(&file, VALID).expect("write");
        let config = reload_once(&file).expect("valid");
        assert_eq!(config.databases["app"].cluster, "main");
        let invalid = VALID
            .replace("127.0.0.1:6432", "nowhere")
            .replace("cluster: main", "cluster: eu-2");
        std::fs::write(&file, invalid).expect("write");
        let errors = reload_once(&file).map(|_| ()).expect_err("invalid");
        let at: Vec<_> = errors.problems.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(at, [(1, 20), (3, 30)]);
    }

    #[test]
    fn watched_directory() {
        assert_eq!(directory_of(Path::new("pgstrata.yaml")), Path::new("."));
        assert_eq!(directory_of(Path::new("rules/a.yaml")), Path::new("rules"));
    }

    #[test]
    fn store_into_swaps_the_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("pgstrata.yaml");
        std::fs::write(&file, VALID).expect("write");
        let first = reload_once(&file).expect("valid");
        let target = Arc::new(ArcSwap::from_pointee(first));
        let apply = store_into(target.clone());
        std::fs::write(&file, VALID.replace("port: 5432", "port: 5999")).expect("write");
        apply(reload_once(&file).expect("valid"));
        assert_eq!(target.load().clusters["main"].primary.port, 5999);
    }
}
