use worlds::WorldName;

use super::Context;
use crate::ui;

/// Freezes every process of a running world through the cgroup freezer.
///
/// The processes stay in memory and resume with `world thaw`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to freeze.
    name: WorldName,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let was_frozen = store.freeze(&args.name)?;
    let message = if was_frozen {
        "was frozen already"
    } else {
        "frozen"
    };
    ui::status(
        context.quiet,
        format_args!("world `{}` {message}", args.name),
    );
    Ok(ui::EXIT_OK)
}
