use worlds::store::DeleteOptions;
use worlds::WorldName;

use super::Context;
use crate::ui;

/// Deletes a world with its base and records.
///
/// A world that has children is kept unless `--recursive` is given, and a
/// running world unless `--force` is given. With PARENT, the world is
/// deleted only if it is a child of PARENT.
///
/// Alias: `wdelete CHILD PARENT`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to delete.
    name: WorldName,
    /// Delete only if NAME is a child of this world.
    parent: Option<WorldName>,
    /// Delete the world's children, and theirs, too.
    #[arg(short, long)]
    recursive: bool,
    /// Stop the world, and with --recursive its running descendants, before
    /// deleting them.
    #[arg(short, long)]
    force: bool,
    /// Print the names of the deleted worlds as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let options = DeleteOptions {
        recursive: args.recursive,
        expected_parent: args.parent,
        force: args.force.then_some(worlds::runtime::DEFAULT_GRACE),
    };
    let deleted = store.delete(&args.name, &options)?;

    if args.json {
        ui::print_json(&serde_json::json!({ "deleted": deleted }))?;
    }
    for name in &deleted {
        ui::status(context.quiet, format_args!("deleted world `{name}`"));
    }
    Ok(ui::EXIT_OK)
}
