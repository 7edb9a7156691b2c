use worlds::WorldName;

use super::Context;
use crate::ui;

/// Takes back the last merge into PARENT.
///
/// The parent returns to its pre-merge snapshot through the same engine
/// that merges, and the merged child gets its old base back, so its diff
/// shows its changes again. Where the parent changed other paths since
/// the merge, the undo stops and changes nothing, unless --force is given. Pre-merge snapshots are kept for the newest
/// five merges into each parent, or as many as `world merge --keep-undo`
/// sets.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world whose last merge to take back.
    parent: WorldName,
    /// Take the merge back even where PARENT changed paths since the merge
    /// that the merge did not touch; those changes are lost.
    #[arg(long)]
    force: bool,
    /// Print the outcome as JSON on stdout: `parent`, `child`, `merge_id`
    /// and `steps`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let outcome = store.undo(&args.parent, args.force, &|_| {})?;
    if args.json {
        ui::print_json(&outcome)?;
    }
    ui::status(
        context.quiet,
        format_args!(
            "undid merge {} of `{}` into `{}` ({} {})",
            outcome.merge_id,
            outcome.child,
            outcome.parent,
            outcome.steps,
            if outcome.steps == 1 { "step" } else { "steps" }
        ),
    );
    Ok(ui::EXIT_OK)
}
