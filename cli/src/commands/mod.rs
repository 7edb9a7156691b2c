//! The subcommands of `world`, one file each with its arguments and the
//! function that runs it.

mod completions;
mod console;
mod create;
mod delete;
mod diff;
pub mod exec;
mod freeze;
mod init;
mod install_aliases;
mod list;
mod log;
mod man;
mod merge;
mod monitor;
mod ps;
mod recover;
mod restart;
mod run_args;
mod set;
mod show;
mod start;
mod stop;
mod store;
mod thaw;
mod tree;
mod undo;

use std::path::PathBuf;

use std::ffi::OsString;

use clap::{Parser, Subcommand};
use worlds::runtime::MonitorCommand;
use worlds::store::Cleanup;
use worlds::Store;

use crate::ui;

/// Git-like branches of whole running Linux systems.
///
/// A world is a root filesystem plus the processes running in it. Sprout a
/// child world from a parent in milliseconds, try a risky change inside it,
/// then merge it back or throw it away. Worlds live in a store, on btrfs.
#[derive(Debug, Parser)]
#[command(name = "world", version, after_help = ui::EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options that every subcommand takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Store directory.
    #[arg(long, global = true, env = "WORLDS_STORE", hide_env_values = true, default_value = worlds::store::DEFAULT_DIR, value_name = "PATH")]
    pub store: PathBuf,
    /// Print debug logs of worlds to stderr (WORLDS_LOG takes a full filter).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print no status lines or progress, only data and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    Create(create::Args),
    List(list::Args),
    Tree(tree::Args),
    Show(show::Args),
    Delete(delete::Args),
    Diff(diff::Args),
    Merge(merge::Args),
    Undo(undo::Args),
    Set(set::Args),
    Start(start::Args),
    Stop(stop::Args),
    Restart(restart::Args),
    Exec(exec::Args),
    Console(console::Args),
    Ps(ps::Args),
    Freeze(freeze::Args),
    Thaw(thaw::Args),
    Log(log::Args),
    Recover(recover::Args),
    #[command(subcommand)]
    Store(store::Command),
    InstallAliases(install_aliases::Args),
    Completions(completions::Args),
    Man(man::Args),
    /// Runs the monitor of a running world; `world start` launches it.
    #[command(name = "__monitor", hide = true)]
    Monitor(monitor::Args),
}

impl Command {
    /// Returns whether this is the monitor, which logs to its log file.
    pub fn is_monitor(&self) -> bool {
        matches!(self, Command::Monitor(_))
    }
}

/// PATH of monitors, which run `ip` and `nsenter` from the host.
const MONITOR_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The settings every command needs besides its own arguments.
pub struct Context {
    pub store_dir: PathBuf,
    pub quiet: bool,
    /// Set for crash-recovery tests only; see `WORLDS_TEST_CRASH_AT`.
    pub crash_point: Option<worlds::store::CrashPoint>,
}

impl Context {
    /// Returns the command that runs a world's monitor: this program's
    /// hidden `__monitor` subcommand, with this store and log filter.
    pub fn monitor_command(&self) -> anyhow::Result<MonitorCommand> {
        let program = std::env::current_exe()?;
        let store = std::path::absolute(&self.store_dir)?;
        let mut env = vec![(OsString::from("PATH"), OsString::from(MONITOR_PATH))];
        if let Some(filter) = std::env::var_os(crate::LOG_VARIABLE) {
            env.push((crate::LOG_VARIABLE.into(), filter));
        }
        Ok(MonitorCommand {
            program,
            args: vec!["--store".into(), store.into_os_string(), "__monitor".into()],
            env,
        })
    }

    /// Opens the store and reports what it cleaned up after interrupted
    /// commands.
    pub fn open_store(&self) -> anyhow::Result<Store> {
        let (mut store, cleanups) = Store::open(&self.store_dir)?;
        report_cleanups(&cleanups);
        store.set_crash_point(self.crash_point);
        Ok(store)
    }
}

/// Prints what reconciling the store found, as warnings.
pub fn report_cleanups(cleanups: &[Cleanup]) {
    for cleanup in cleanups {
        match cleanup {
            Cleanup::Removed { path } => ui::warning(format_args!(
                "removed `{}`, left in the pool by an interrupted command",
                path.display()
            )),
            Cleanup::Unknown { path } => ui::warning(format_args!(
                "`{}` in the pool belongs to no world in the database and is left alone; move it away, or restore the database that records it",
                path.display()
            )),
            Cleanup::NotRemoved { path, error } => ui::warning(format_args!(
                "could not remove `{}`, left by an interrupted command: {error}; the next command tries again",
                path.display()
            )),
            Cleanup::Missing { path } => ui::warning(format_args!(
                "subvolume `{}` of a recorded world is missing from the pool; `world delete` removes the record",
                path.display()
            )),
            Cleanup::MergeCompleted { merge, child, parent } => ui::warning(format_args!(
                "merge {merge} of `{child}` into `{parent}` was interrupted after all its changes were applied; it is now complete"
            )),
            Cleanup::MergeRolledBack { merge, child, parent } => ui::warning(format_args!(
                "merge {merge} of `{child}` into `{parent}` was interrupted; `{parent}` is back at its state before the merge"
            )),
            Cleanup::UndoCompleted { merge, parent } => ui::warning(format_args!(
                "the undo of merge {merge} into `{parent}` was interrupted; it is now complete, and `{parent}` is at its state before the merge"
            )),
            Cleanup::Thawed { world } => ui::warning(format_args!(
                "world `{world}` was left frozen by an interrupted merge or undo; thawed it"
            )),
            Cleanup::StaleRun { world } => ui::warning(format_args!(
                "world `{world}` was recorded as running, but its monitor was gone (after a crash or a reboot); stopped it and removed what it left"
            )),
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli, context: &Context) -> anyhow::Result<u8> {
    match cli.command {
        Command::Init(args) => init::run(args, context),
        Command::Create(args) => create::run(args, context),
        Command::List(args) => list::run(args, context),
        Command::Tree(args) => tree::run(args, context),
        Command::Show(args) => show::run(args, context),
        Command::Delete(args) => delete::run(args, context),
        Command::Diff(args) => diff::run(args, context),
        Command::Merge(args) => merge::run(args, context),
        Command::Undo(args) => undo::run(args, context),
        Command::Set(args) => set::run(args, context),
        Command::Start(args) => start::run(args, context),
        Command::Stop(args) => stop::run(args, context),
        Command::Restart(args) => restart::run(args, context),
        Command::Exec(args) => exec::run(args, context),
        Command::Console(args) => console::run(args, context),
        Command::Ps(args) => ps::run(args, context),
        Command::Freeze(args) => freeze::run(args, context),
        Command::Thaw(args) => thaw::run(args, context),
        Command::Monitor(args) => monitor::run(args, context),
        Command::Log(args) => log::run(args, context),
        Command::Recover(args) => recover::run(args, context),
        Command::Store(command) => store::run(command, context),
        Command::InstallAliases(args) => install_aliases::run(args, context),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    }
}
