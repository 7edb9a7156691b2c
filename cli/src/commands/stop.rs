use std::time::Duration;

use worlds::runtime::{StopOutcome, DEFAULT_GRACE};
use worlds::WorldName;

use super::Context;
use crate::ui;

/// Stops worlds: SIGTERM to every process, then SIGKILL after a grace period.
///
/// Init passes SIGTERM on to every process of the world. Processes left
/// after the grace period get SIGKILL through the world's cgroup. The
/// world's mounts, cgroup and veth pair go with it.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["names", "all"])))]
pub struct Args {
    /// The worlds to stop.
    names: Vec<WorldName>,
    /// Stop every running world of the store.
    #[arg(long)]
    all: bool,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short, long, value_name = "SECONDS", default_value_t = DEFAULT_GRACE.as_secs_f64())]
    time: f64,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let grace = Duration::try_from_secs_f64(args.time).map_err(|_| ui::UsageError {
        message: format!("`{}` is not a number of seconds", args.time),
        hint: Some("give --time a number such as 10 or 0.5".into()),
    })?;
    let names = if args.all {
        let mut running = Vec::new();
        for world in store.worlds()? {
            if store.status(&world.name)?.state != worlds::runtime::RunState::Stopped {
                running.push(world.name);
            }
        }
        running
    } else {
        args.names
    };

    for name in names {
        let message = match store.stop(&name, grace)? {
            StopOutcome::Stopped => "stopped",
            StopOutcome::Killed => "stopped; processes left after the grace period were killed",
            StopOutcome::NotRunning => "is not running",
        };
        ui::status(context.quiet, format_args!("world `{name}` {message}"));
    }
    Ok(ui::EXIT_OK)
}
