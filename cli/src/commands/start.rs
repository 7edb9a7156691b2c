use worlds::runtime::StartOutcome;
use worlds::WorldName;

use super::run_args::StartArgs;
use super::Context;
use crate::ui;

/// Starts a world: its init, its monitor, and its network.
///
/// Options that are not given come from those stored with `world create`.
/// A world that runs already is left as it is.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to start.
    name: WorldName,
    #[command(flatten)]
    start: StartArgs,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let options = args.start.options(context)?;
    let outcome = store.start(&args.name, &options)?;

    let status = store.status(&args.name)?;
    let address = status
        .run
        .and_then(|run| run.address)
        .map(|address| format!(" at {address}"))
        .unwrap_or_default();
    let name = &args.name;
    match outcome {
        StartOutcome::Started => ui::status(
            context.quiet,
            format_args!("started world `{name}`{address}"),
        ),
        StartOutcome::AlreadyRunning => {
            ui::status(
                context.quiet,
                format_args!("world `{name}` is {} already{address}", status.state),
            );
            if args.start.run.any_set() {
                ui::warning(format_args!(
                    "the run options were not applied to the running world; `world restart {name}` with them applies them"
                ));
            }
        }
    }
    Ok(ui::EXIT_OK)
}
