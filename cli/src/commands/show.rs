use worlds::db::Source;
use worlds::WorldName;

use super::Context;
use crate::ui;

/// Shows everything known about one world.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to show.
    name: WorldName,
    /// Print the world as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let details = store.details(&args.name)?;

    if args.json {
        ui::print_json(&details)?;
        return Ok(ui::EXIT_OK);
    }
    let record = &details.record;
    let source = match &record.source {
        Source::Busybox => "busybox".to_owned(),
        Source::Directory { path } => format!("copy of directory {}", path.display()),
        Source::Tar { path } => format!("tar archive {}", path.display()),
        Source::Debootstrap { suite } => format!("debootstrap {suite} (minbase)"),
        Source::Snapshot => "snapshot of its parent".to_owned(),
    };
    let children: Vec<&str> = details.children.iter().map(WorldName::as_str).collect();
    let subvolume =
        |id: Option<u64>| id.map_or_else(|| "unreadable".to_owned(), |id| id.to_string());

    let mut rows = vec![
        ("name", record.name.to_string()),
        (
            "parent",
            record
                .parent
                .as_ref()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
        ),
        (
            "children",
            if children.is_empty() {
                "-".to_owned()
            } else {
                children.join(", ")
            },
        ),
        // NOTE: every world is stopped until worlds can run processes.
        ("state", "stopped".to_owned()),
        (
            "created",
            format!(
                "{} (operation {})",
                ui::format_time(record.created),
                record.created_by
            ),
        ),
        ("source", source),
        (
            "path",
            format!(
                "{} (subvolume {})",
                details.path.display(),
                subvolume(details.subvolume_id)
            ),
        ),
    ];
    if let Some(base) = &details.base {
        rows.push((
            "base",
            format!(
                "{} (subvolume {})",
                base.display(),
                subvolume(details.base_subvolume_id)
            ),
        ));
    }
    for (key, value) in rows {
        println!("{:<9} {value}", format!("{key}:"));
    }
    Ok(ui::EXIT_OK)
}
