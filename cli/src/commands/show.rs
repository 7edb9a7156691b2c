use worlds::db::Source;
use worlds::diff::{ChangeKind, DiffOptions};
use worlds::runtime::{Limits, RunConfig, RunStatus};
use worlds::track::{AccessSet, Op};
use worlds::WorldName;

use super::Context;
use crate::ui;

/// Shows everything known about one world.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world to show.
    name: WorldName,
    /// Print the world as JSON on stdout: the fields of `world list --json`
    /// plus `children`, `path`, `subvolume_id`, `base`, `base_subvolume_id`,
    /// the run state and settings, `accesses` (paths of the access set, by
    /// operation, and whether it is complete) and, for a child world,
    /// `changes` counted by kind.
    #[arg(long)]
    json: bool,
}

/// The paths of a world's access set, counted by operation.
#[derive(Debug, serde::Serialize)]
struct AccessCounts {
    paths: usize,
    read: usize,
    written: usize,
    executed: usize,
    complete: bool,
}

impl AccessCounts {
    fn of(set: &AccessSet) -> Self {
        let with = |op: Op| {
            set.paths
                .values()
                .filter(|accesses| accesses.iter().any(|access| access.op == op))
                .count()
        };
        Self {
            paths: set.paths.len(),
            read: with(Op::Read),
            written: with(Op::Write),
            executed: with(Op::Exec),
            complete: set.is_complete(),
        }
    }
}

/// Changes of a child world since its base, counted by kind.
#[derive(Debug, Default, serde::Serialize)]
struct Counts {
    added: usize,
    modified: usize,
    deleted: usize,
    type_changed: usize,
    metadata_only: usize,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let details = store.details(&args.name)?;
    let status = store.status(&args.name)?;
    let config = store.run_config(&args.name)?;
    // The fast diff reads only what changed, so counting is cheap.
    let counts = match details.record.parent {
        Some(_) => {
            let mut counts = Counts::default();
            for change in store.diff(&args.name, &DiffOptions::default())? {
                match change.kind {
                    ChangeKind::Added => counts.added += 1,
                    ChangeKind::Modified => counts.modified += 1,
                    ChangeKind::Deleted => counts.deleted += 1,
                    ChangeKind::TypeChanged => counts.type_changed += 1,
                    ChangeKind::MetadataOnly => counts.metadata_only += 1,
                }
            }
            Some(counts)
        }
        None => None,
    };
    let accesses = AccessCounts::of(&store.access_set(&args.name, None)?);

    if args.json {
        ui::print_json(&Shown {
            details: &details,
            status: &status,
            config: &config,
            accesses: &accesses,
            changes: counts,
        })?;
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
        ("state", describe_state(&status)),
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
    let run = status.run.as_ref();
    let network = run.map_or(config.network, |run| run.network);
    rows.push(("network", network.to_string()));
    if let Some(address) = run.and_then(|run| run.address) {
        rows.push(("address", address.to_string()));
    }
    let limits = run.map_or(config.limits, |run| run.limits);
    if limits != Limits::default() {
        rows.push(("limits", describe_limits(&limits)));
    }
    let track = run.map_or(config.track, |run| run.track);
    rows.push(("tracking", if track { "on" } else { "off" }.to_owned()));
    rows.push((
        "accesses",
        format!(
            "{} paths: {} read, {} written, {} executed{}",
            accesses.paths,
            accesses.read,
            accesses.written,
            accesses.executed,
            if accesses.complete {
                ""
            } else {
                " (may be incomplete: `world set` says why)"
            }
        ),
    ));
    if let Some(counts) = &counts {
        let parts: Vec<String> = [
            (counts.added, "added"),
            (counts.modified, "modified"),
            (counts.deleted, "deleted"),
            (counts.type_changed, "type-changed"),
            (counts.metadata_only, "metadata-only"),
        ]
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, kind)| format!("{count} {kind}"))
        .collect();
        let summary = if parts.is_empty() {
            "none since its base".to_owned()
        } else {
            format!("{} since its base", parts.join(", "))
        };
        rows.push(("changes", summary));
    }
    for (key, value) in rows {
        println!("{:<9} {value}", format!("{key}:"));
    }
    Ok(ui::EXIT_OK)
}

/// The JSON of `world show`: the world's details with `state` (`stopped`,
/// `running` or `frozen`), the run facts of a running world (`init_pid`,
/// `monitor_pid`, `started`, `run`), and `config`, the stored run settings.
#[derive(serde::Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    details: &'a worlds::store::WorldDetails,
    #[serde(flatten)]
    status: &'a RunStatus,
    config: &'a RunConfig,
    accesses: &'a AccessCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<Counts>,
}

fn describe_state(status: &RunStatus) -> String {
    match (status.init_pid, status.started) {
        (Some(pid), Some(started)) => format!(
            "{} since {} (init pid {pid})",
            status.state,
            ui::format_time(started)
        ),
        _ => status.state.to_string(),
    }
}

fn describe_limits(limits: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(memory) = limits.memory {
        parts.push(format!("memory {}", worlds::size::format(memory)));
    }
    if let Some(pids) = limits.pids {
        parts.push(format!("pids {pids}"));
    }
    if let Some(cpus) = limits.cpus {
        parts.push(format!("cpus {cpus}"));
    }
    parts.join(", ")
}
