//! Output conventions of the `world` command: exit codes, error chains with
//! hints, status lines, progress and time formatting.
//!
//! stdout carries data (tables, JSON); everything else goes to stderr.

use std::io::{self, IsTerminal};
use std::time::Duration;

use worlds::pool::PoolError;
use worlds::rootfs::{Progress, RootfsError};
use worlds::runtime::RuntimeError;
use worlds::store::StoreError;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The command ran and found conflicts or differences that block it.
pub const EXIT_BLOCKED: u8 = 1;
/// Invalid usage or input: fix the command line.
pub const EXIT_USAGE: u8 = 2;
/// worlds itself failed: the system, the environment or a bug.
pub const EXIT_FAILURE: u8 = 125;

/// Help text that lists the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0    success
  1    the command ran and found conflicts or differences that block it
  2    invalid usage or input, such as a bad name or an unknown world
  125  worlds itself failed (system error, missing tool, full pool)
  n    `world exec` exits with the command's status: n, 126 when it
       cannot run, 127 when it is not found, 128+n after signal n";

/// Returns the exit code for an error: usage for mistakes the caller can
/// fix on the command line, failure for everything else.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let blocked = error.chain().any(|cause| {
        as_store_error(cause)
            .is_some_and(|error| matches!(error, StoreError::UndoLosesChanges { .. }))
    });
    if blocked {
        return EXIT_BLOCKED;
    }
    let is_usage = |cause: &(dyn std::error::Error + 'static)| {
        let store = as_store_error(cause).is_some_and(|error| {
            matches!(
                error,
                StoreError::NoStore { .. }
                    | StoreError::WorldNotFound { .. }
                    | StoreError::WorldExists { .. }
                    | StoreError::WrongParent { .. }
                    | StoreError::HasChildren { .. }
                    | StoreError::NoBase { .. }
                    | StoreError::NotADirectory { .. }
                    | StoreError::InsideStore { .. }
                    | StoreError::NothingToUndo { .. }
                    | StoreError::NotSibling { .. }
                    | StoreError::WorldRunning { .. }
                    | StoreError::NoOperation { .. }
            )
        });
        let runtime = as_runtime_error(cause).is_some_and(|error| {
            matches!(
                error,
                RuntimeError::NotRunning { .. }
                    | RuntimeError::Frozen { .. }
                    | RuntimeError::UnknownUser { .. }
                    | RuntimeError::UnknownGroup { .. }
                    | RuntimeError::SubnetFull { .. }
                    | RuntimeError::SubnetInUse { .. }
            )
        });
        let rootfs = cause.downcast_ref::<RootfsError>().is_some_and(|error| {
            matches!(
                error,
                RootfsError::SourceNotDirectory { .. }
                    | RootfsError::SourceContainsStore { .. }
                    | RootfsError::SourceInsideStore { .. }
                    | RootfsError::ArchiveMissing { .. }
                    | RootfsError::ArchiveIsDirectory { .. }
                    | RootfsError::InvalidArchive { .. }
            )
        });
        let pool = as_pool_error(cause).is_some_and(|error| {
            matches!(
                error,
                PoolError::TooSmall { .. }
                    | PoolError::TooLarge { .. }
                    | PoolError::ImageWithoutStore { .. }
                    | PoolError::NotLarger { .. }
                    | PoolError::NotImage { .. }
            )
        });
        let size = cause.downcast_ref::<worlds::size::InvalidSize>().is_some()
            || cause.downcast_ref::<worlds::path::InvalidPath>().is_some();
        store || runtime || rootfs || pool || size || cause.downcast_ref::<UsageError>().is_some()
    };
    if error.chain().any(is_usage) {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// Returns the pool error in `cause`, also where a store error wraps it
/// transparently and so hides it from the error chain.
fn as_pool_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a PoolError> {
    match cause.downcast_ref::<StoreError>() {
        Some(StoreError::Pool(error)) => Some(error),
        _ => cause.downcast_ref::<PoolError>(),
    }
}

/// Returns the runtime error in `cause`.
fn as_runtime_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a RuntimeError> {
    cause.downcast_ref::<RuntimeError>()
}

/// Returns the store error in `cause`, also where a runtime error wraps it
/// transparently.
fn as_store_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a StoreError> {
    match cause.downcast_ref::<RuntimeError>() {
        Some(RuntimeError::Store(error)) => Some(error),
        _ => cause.downcast_ref::<StoreError>(),
    }
}

/// Formats `error` one cause a line, for logs.
pub fn format_chain(error: &anyhow::Error) -> String {
    let causes: Vec<String> = error.chain().map(ToString::to_string).collect();
    causes.join("\ncaused by: ")
}

/// A mistake on the command line found after parsing, with an optional hint.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
    pub hint: Option<String>,
}

/// Prints `error` to stderr, one cause a line, then a hint when one fits.
pub fn print_error(error: &anyhow::Error) {
    let mut causes = error.chain();
    if let Some(first) = causes.next() {
        eprintln!("error: {first}");
    }
    for cause in causes {
        eprintln!("caused by: {cause}");
    }
    if let Some(hint) = hint(error) {
        eprintln!("hint: {hint}");
    }
}

fn hint(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(hint_for)
}

fn hint_for(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(usage) = cause.downcast_ref::<UsageError>() {
        return usage.hint.clone();
    }
    let runtime = as_runtime_error(cause).and_then(|error| {
        Some(match error {
            RuntimeError::NotRunning { name } => {
                format!("start it with `world start {name}`")
            }
            RuntimeError::Frozen { name } => {
                format!("thaw it with `world thaw {name}`")
            }
            RuntimeError::UnknownUser { .. } | RuntimeError::UnknownGroup { .. } => {
                "give a name from the world's account files, or a number".to_owned()
            }
            RuntimeError::SubnetFull { .. } => {
                "stop a veth world, or give a larger --subnet".to_owned()
            }
            RuntimeError::SubnetInUse { .. } => {
                "give --subnet a private range that the host does not use yet".to_owned()
            }
            RuntimeError::StartFailed { name, .. } => {
                format!("the monitor's log is in the store under logs/{name}.log")
            }
            _ => return None,
        })
    });
    let store = as_store_error(cause).and_then(|error| {
        Some(match error {
            StoreError::WorldRunning { name } => {
                format!(
                    "stop it with `world stop {name}`, or add --force to stop it and delete it"
                )
            }
            StoreError::NotRoot => "run it as root, for example with sudo".to_owned(),
            StoreError::NoStore { .. } => {
                "create the store and its first world with `world init NAME --busybox`, or pick another store with --store".to_owned()
            }
            StoreError::WorldNotFound { .. } => "`world list` shows the worlds of this store".to_owned(),
            StoreError::WorldExists { name } => {
                format!(
                    "choose another name, or remove the old world with `world delete {name}`"
                )
            }
            StoreError::HasChildren { .. } => "add --recursive to delete the children too".to_owned(),
            StoreError::UndoLosesChanges { parent, .. } => format!(
                "merge or copy those changes elsewhere first, or run `world undo --force {parent}` to lose them"
            ),
            StoreError::NothingToUndo { .. } => {
                "`world log` lists the merges; pre-merge snapshots are kept for the last five merges into each world".to_owned()
            }
            StoreError::NoBase { .. } => {
                "a diff compares a child world with the snapshot of its parent it was made from; `world tree` shows which worlds are children".to_owned()
            }
            StoreError::LayoutTooNew { .. } => "this store was written by a newer worlds".to_owned(),
            StoreError::InsideStore { .. } => "choose a store directory outside every store's pool".to_owned(),
            StoreError::NotSubvolume { .. } => "remove or move it by hand if it is not needed".to_owned(),
            StoreError::Db(worlds::db::DbError::NotInitialized { .. }) => {
                "restore worlds.db from a backup; without it the store's worlds are unknown".to_owned()
            }
            _ => return None,
        })
    });
    let pool = || {
        as_pool_error(cause).and_then(|error| {
            Some(match error {
                PoolError::MkfsMissing => "install btrfs-progs: apt-get install btrfs-progs",
                PoolError::NoLoopDevices => {
                    "load the loop module with `modprobe loop`, or put the store on a btrfs filesystem"
                }
                PoolError::TooSmall { .. } => "give --pool-size 256M or more",
                PoolError::TooLarge { .. } => "give a size that fits the filesystem, or put the store elsewhere",
                PoolError::ImageWithoutStore { .. } => {
                    "restore worlds.db from a backup to use this pool again, or move pool.img away to start a new store"
                }
                PoolError::NotLarger { .. } => "`world store info` shows the current size",
                PoolError::NotImage { .. } => "grow the btrfs filesystem that contains the store instead",
                _ => return None,
            })
        })
    };
    let rootfs = || {
        cause
            .downcast_ref::<RootfsError>()
            .and_then(|error| match error {
                RootfsError::BusyboxMissing { .. } | RootfsError::BusyboxDynamic { .. } => {
                    Some("install the static busybox: apt-get install busybox-static".to_owned())
                }
                RootfsError::ToolMissing { tool } => {
                    Some(format!("install it: apt-get install {tool}"))
                }
                RootfsError::NoSpace { .. } => Some(
                    "the pool is full; grow it with `world store grow SIZE` and try again"
                        .to_owned(),
                ),
                _ => None,
            })
    };
    let errno = || {
        let code = cause.downcast_ref::<io::Error>()?.raw_os_error()?;
        Some(match code {
            libc_errno::ENOSPC => "the pool is full; grow it with `world store grow SIZE`",
            libc_errno::EPERM | libc_errno::EACCES => "worlds needs root",
            libc_errno::ENOTTY => "the store's pool is not a btrfs filesystem",
            libc_errno::EXDEV => "the paths are on different filesystems or subvolumes",
            _ => return None,
        })
    };
    runtime
        .or(store)
        .or_else(|| pool().map(str::to_owned))
        .or_else(|| errno().map(str::to_owned))
        .or_else(rootfs)
}

/// The few errno values that hints name, as Linux numbers them.
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EACCES: i32 = 13;
    pub const EXDEV: i32 = 18;
    pub const ENOTTY: i32 = 25;
    pub const ENOSPC: i32 = 28;
}

/// Prints a status line to stderr unless `quiet`.
pub fn status(quiet: bool, message: impl std::fmt::Display) {
    if !quiet {
        eprintln!("{message}");
    }
}

/// Prints a warning to stderr.
pub fn warning(message: impl std::fmt::Display) {
    eprintln!("warning: {message}");
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}

/// Formats a duration for status lines: `12 ms` or `3.4 s`.
pub fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// Formats a time in the local time zone, to the second.
pub fn format_time(time: jiff::Timestamp) -> String {
    time.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A progress display on stderr: a bar or spinner on a terminal, nothing
/// elsewhere or when hidden.
pub struct ProgressDisplay {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressDisplay {
    /// Starts a display unless `hidden` or stderr is not a terminal.
    pub fn new(hidden: bool) -> Self {
        let bar = (!hidden && io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    /// Shows one progress report.
    pub fn report(&self, progress: Progress) {
        let Some(bar) = &self.bar else { return };
        match progress {
            Progress::Message(message) => bar.set_message(message),
            Progress::Bytes { done, total } => {
                if let Some(total) = total {
                    if bar.length() != Some(total) {
                        bar.set_length(total);
                        bar.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{msg} [{bar:30}] {bytes}/{total_bytes} {eta}",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                    }
                }
                bar.set_position(done);
            }
        }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
