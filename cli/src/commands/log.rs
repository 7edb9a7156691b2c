use super::Context;
use crate::ui;

/// Lists the operations that changed the store, newest first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show at most this many operations.
    #[arg(short = 'n', long, default_value_t = 50, value_name = "COUNT")]
    limit: u32,
    /// Print the operations as JSON on stdout: objects with `id`, `time`,
    /// `kind`, `world` and `args`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let operations = store.operations(args.limit)?;

    if args.json {
        ui::print_json(&operations)?;
        return Ok(ui::EXIT_OK);
    }
    let mut table = vec![["ID", "TIME", "KIND", "WORLD", "ARGS"].map(String::from)];
    for operation in &operations {
        table.push([
            operation.id.to_string(),
            ui::format_time(operation.time),
            operation.kind.clone(),
            operation.world.clone().unwrap_or_else(|| "-".into()),
            operation.args.to_string(),
        ]);
    }
    super::list::print_table(&table);
    Ok(ui::EXIT_OK)
}
