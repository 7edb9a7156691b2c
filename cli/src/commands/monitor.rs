use worlds::WorldName;

use super::Context;
use crate::ui;

/// Runs the monitor of a world; `world start` launches it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to monitor.
    name: WorldName,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    worlds::runtime::monitor::run(&context.store_dir, &args.name)?;
    Ok(ui::EXIT_OK)
}
