//! The `world` command and its seven aliases.

mod aliases;
mod commands;
mod terminal;
mod ui;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use crate::commands::{Cli, Context};

/// The log filter variable.
pub const LOG_VARIABLE: &str = "WORLDS_LOG";
/// Makes a command crash at a named point, for crash-recovery tests.
const CRASH_VARIABLE: &str = "WORLDS_TEST_CRASH_AT";

fn main() -> ExitCode {
    worlds::sys::default_sigpipe();
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = args.first().cloned().unwrap_or_default();
    if let Some((_, subcommand)) = aliases::subcommand_of(Path::new(&argv0)) {
        args = aliases::expand(args, subcommand);
    }

    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(error) => {
            // clap exits with 0 for --help and --version and with 2 for
            // usage errors.
            error.exit();
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    init_logging(cli.global.verbose, cli.command.is_monitor());

    let crash_point = match std::env::var(CRASH_VARIABLE).as_deref() {
        Ok("after-snapshot") => Some(worlds::store::CrashPoint::AfterSnapshot),
        Ok("merge-journaled") => Some(worlds::store::CrashPoint::MergeJournaled),
        Ok("merge-prepared") => Some(worlds::store::CrashPoint::MergePrepared),
        Ok("mid-merge") => Some(worlds::store::CrashPoint::MidMerge),
        Ok("merge-applied") => Some(worlds::store::CrashPoint::MergeApplied),
        Ok("merge-publishing") => Some(worlds::store::CrashPoint::MergePublishing),
        Ok("before-merge-done") => Some(worlds::store::CrashPoint::BeforeMergeDone),
        Ok("undo-journaled") => Some(worlds::store::CrashPoint::UndoJournaled),
        Ok("mid-undo") => Some(worlds::store::CrashPoint::MidUndo),
        _ => None,
    };
    // An absolute store path keeps records and messages independent of the
    // directory the command ran in.
    let store_dir =
        std::path::absolute(&cli.global.store).unwrap_or_else(|_| cli.global.store.clone());
    let context = Context {
        store_dir,
        quiet: cli.global.quiet,
        crash_point,
    };
    let is_monitor = cli.command.is_monitor();
    match commands::run(cli, &context) {
        Err(error) if is_monitor => {
            tracing::error!("{}", ui::format_chain(&error));
            ExitCode::from(ui::EXIT_FAILURE)
        }
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            ui::print_error(&error);
            ExitCode::from(ui::exit_code(&error))
        }
    }
}

/// Sends logs to stderr: warnings by default, debug for worlds with
/// `--verbose`, or the filter in `WORLDS_LOG`. A monitor, whose stderr is
/// its world's log file, logs state changes with times.
fn init_logging(verbose: bool, monitor: bool) {
    let default = if verbose {
        "warn,worlds=debug,world_cli=debug"
    } else if monitor {
        "warn,libcgroups=error,worlds=info"
    } else {
        // libcgroups warns about every v1 controller the kernel lacks, and
        // libcontainer logs each error that it also returns.
        "warn,libcgroups=off,libcontainer=off"
    };
    let filter = EnvFilter::try_from_env(LOG_VARIABLE).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!monitor)
        .with_target(false);
    if monitor {
        builder.init();
    } else {
        builder.without_time().init();
    }
}
