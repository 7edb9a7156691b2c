use worlds::WorldName;

use super::Context;
use crate::ui;

/// Thaws a world frozen by `world freeze`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to thaw.
    name: WorldName,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let was_frozen = store.thaw(&args.name)?;
    let message = if was_frozen {
        "thawed"
    } else {
        "was not frozen"
    };
    ui::status(
        context.quiet,
        format_args!("world `{}` {message}", args.name),
    );
    Ok(ui::EXIT_OK)
}
