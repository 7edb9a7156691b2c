use std::time::Duration;

use worlds::runtime::DEFAULT_GRACE;
use worlds::WorldName;

use super::run_args::StartArgs;
use super::Context;
use crate::ui;

/// Stops a world if it runs, then starts it again.
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
    let options = args.start.options(context)?;

    store.stop(&args.name, grace)?;
    store.start(&args.name, &options)?;
    ui::status(
        context.quiet,
        format_args!("world `{}` restarted", args.name),
    );
    Ok(ui::EXIT_OK)
}
