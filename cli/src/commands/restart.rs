use std::time::Duration;

use worlds::runtime::DEFAULT_GRACE;
use worlds::WorldName;

use super::run_args::StartArgs;
use super::Context;
use crate::ui;

/// Stops a world if it runs, then starts it again.
///
/// A running world comes back with the network, limits and tracking of the
/// run that was stopped, unless options here replace them. A stopped world
/// starts as `world start` starts it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to restart.
    name: WorldName,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short, long, value_name = "SECONDS", default_value_t = DEFAULT_GRACE.as_secs_f64())]
    time: f64,
    #[command(flatten)]
    start: StartArgs,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let grace = Duration::try_from_secs_f64(args.time).map_err(|_| ui::UsageError {
        message: format!("`{}` is not a number of seconds", args.time),
        hint: Some("give --time a number such as 10 or 0.5".into()),
    })?;
    let mut options = args.start.options(context)?;
    if let Some(run) = store.status(&args.name)?.run {
        options.network = options.network.or(Some(run.network));
        options.limits = run.limits.overridden_by(options.limits);
        options.track = options.track.or(Some(run.track));
    }

    store.stop(&args.name, grace)?;
    store.start(&args.name, &options)?;
    ui::status(
        context.quiet,
        format_args!("world `{}` restarted", args.name),
    );
    Ok(ui::EXIT_OK)
}
