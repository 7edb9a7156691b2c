use super::Context;
use crate::ui;

/// Lists the worlds of the store, parents before their children.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the list as JSON on stdout: an array of world objects with
    /// `name`, `parent`, `state`, `created`, `created_by` and `source`.
    #[arg(long)]
    json: bool,
}

/// One line of `world list`.
#[derive(Debug, serde::Serialize)]
struct Row {
    #[serde(flatten)]
    record: worlds::db::WorldRecord,
    state: worlds::runtime::RunState,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let mut rows = Vec::new();
    for record in store.worlds()? {
        let state = store.status(&record.name)?.state;
        rows.push(Row { record, state });
    }

    if args.json {
        ui::print_json(&rows)?;
        return Ok(ui::EXIT_OK);
    }
    let mut table = vec![["NAME", "PARENT", "STATE", "CREATED"].map(String::from)];
    for row in &rows {
        table.push([
            row.record.name.to_string(),
            row.record
                .parent
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            row.state.to_string(),
            ui::format_time(row.record.created),
        ]);
    }
    print_table(&table);
    Ok(ui::EXIT_OK)
}

/// Prints rows as left-aligned columns separated by two spaces.
pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        println!("{}", line.trim_end());
    }
}
