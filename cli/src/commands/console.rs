use worlds::runtime::ExecRequest;
use worlds::WorldName;

use super::exec::ensure_running;
use super::run_args::StartArgs;
use super::Context;

/// Opens an interactive login shell in a world, starting it if it is
/// stopped.
///
/// The shell is the user's from the world's /etc/passwd, on a terminal of
/// its own, and runs in the user's home directory. The terminal's window
/// size follows this terminal's, and this terminal returns to its settings
/// when the shell exits.
///
/// Alias: `wconsole NAME`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to open a shell in.
    name: WorldName,
    /// Log in as this user, a name from the world's /etc/passwd or a number
    /// [default: root].
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    #[command(flatten)]
    start: StartArgs,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    ensure_running(&mut store, &args.name, &args.start, context)?;

    let (shell, home) = store.login(&args.name, args.user.as_deref());
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
    let request = ExecRequest {
        args: vec![shell, "-l".into()],
        env: vec![("TERM".into(), term)],
        cwd: Some(home),
        user: args.user,
        ..ExecRequest::default()
    };
    crate::terminal::run(&store, &args.name, request)
}
