use std::time::Instant;

use worlds::runtime::RunConfig;
use worlds::WorldName;

use super::run_args::RunArgs;

use super::Context;
use crate::ui;

/// Creates CHILD as a writable snapshot of PARENT.
///
/// CHILD also gets a base: a read-only snapshot of PARENT taken at the same
/// instant, which diff and merge compare against. It takes milliseconds,
/// whatever the size of PARENT. CHILD keeps PARENT's network and limits,
/// unless options here replace them, for every start.
///
/// Alias: `wcreate CHILD PARENT`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the new world.
    child: WorldName,
    /// The world to snapshot.
    parent: WorldName,
    /// Print the new world as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut store = context.open_store()?;
    store.create_child(&args.child, &args.parent)?;
    let config = args.run.apply_to(store.run_config(&args.parent)?);
    if config != RunConfig::default() {
        store.configure(&args.child, &config)?;
    }
    let elapsed = started.elapsed();

    if args.json {
        ui::print_json(&store.details(&args.child)?)?;
    }
    ui::status(
        context.quiet,
        format_args!(
            "created world `{}` from `{}` in {}",
            args.child,
            args.parent,
            ui::format_duration(elapsed)
        ),
    );
    Ok(ui::EXIT_OK)
}
