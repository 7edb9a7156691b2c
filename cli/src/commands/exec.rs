use std::path::PathBuf;

use nix::sys::signal::Signal;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use worlds::runtime::{ExecChild, ExecRequest, RunState, StartOutcome};
use worlds::{Store, WorldName};

use super::run_args::StartArgs;
use super::Context;
use crate::ui;

/// Runs a command in a world, starting the world if it is stopped.
///
/// Standard input, output and error pass through, and SIGINT, SIGTERM and
/// SIGHUP are passed on to the command. `world exec` returns when the
/// command exits, even if the command left daemons running in the world.
/// Its exit status is the command's: its own, 127 when the command is not
/// found in the world, 126 when it cannot run, or 128 plus the number of
/// the signal that ended it.
///
/// Alias: `wexec NAME CMD [ARGS...]`.
#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct Args {
    /// The world to run the command in.
    name: WorldName,
    /// The command and its arguments, looked up in the world's PATH.
    #[arg(required = true, allow_hyphen_values = true, value_name = "CMD")]
    command: Vec<String>,
    /// Set an environment variable for the command.
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory in the world, an absolute path [default: /].
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Run as this user and group, names from the world's /etc/passwd and
    /// /etc/group or numbers [default: root].
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Give the command a terminal of its own.
    #[arg(short = 't', long)]
    tty: bool,
    #[command(flatten)]
    start: StartArgs,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    if let Some(cwd) = &args.cwd {
        if !cwd.is_absolute() {
            return Err(ui::UsageError {
                message: format!("working directory `{}` is not absolute", cwd.display()),
                hint: Some("give --cwd a path that starts with /".into()),
            }
            .into());
        }
    }
    let mut store = context.open_store()?;
    ensure_running(&mut store, &args.name, &args.start, context)?;

    let mut request = ExecRequest {
        args: args.command,
        env: args.env,
        cwd: args.cwd,
        user: args.user,
        ..ExecRequest::default()
    };
    if args.tty {
        if !request.env.iter().any(|(key, _)| key == "TERM") {
            let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
            request.env.push(("TERM".into(), term));
        }
        return crate::terminal::run(&store, &args.name, request);
    }
    let code = run_forwarding_signals(&store, &args.name, request)?;
    Ok(exit_status(code))
}

/// Starts world `name` unless it runs, reporting a start on stderr.
pub fn ensure_running(
    store: &mut Store,
    name: &WorldName,
    start: &StartArgs,
    context: &Context,
) -> anyhow::Result<()> {
    if store.status(name)?.state != RunState::Stopped {
        return Ok(());
    }
    let options = start.options(context)?;
    if store.start(name, &options)? == StartOutcome::Started {
        ui::status(context.quiet, format_args!("started world `{name}`"));
    }
    Ok(())
}

/// Runs `request` with this process's standard streams and returns its
/// exit status, passing SIGINT, SIGTERM and SIGHUP on to it.
fn run_forwarding_signals(
    store: &Store,
    name: &WorldName,
    request: ExecRequest,
) -> anyhow::Result<i32> {
    // The handlers go in before the command starts, so that a signal in
    // between is queued and passed on rather than ending this process.
    // The command's own handlers return to the defaults when it execs.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let handle = signals.handle();
    let child = store.exec(name, request)?;

    let pid = child.pid();
    let forwarder = std::thread::spawn(move || {
        // libcontainer starts the command in a session of its own, so a
        // terminal's SIGINT or SIGHUP reaches it only through this process.
        for signal in signals.forever() {
            if let Ok(signal) = Signal::try_from(signal) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        }
    });
    let code = wait(&child);
    handle.close();
    let _ = forwarder.join();
    code
}

fn wait(child: &ExecChild) -> anyhow::Result<i32> {
    Ok(child.wait()?)
}

/// Turns a command's status into this process's exit code.
pub fn exit_status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(ui::EXIT_FAILURE)
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}
