use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use worlds::merge::plan::{Conflict, ConflictKind, Pattern, PlanOptions, Side, Step};
use worlds::path::WorldPath;
use worlds::store::MergeOptions;
use worlds::WorldName;

use super::diff::quote;
use super::Context;
use crate::ui;

/// Merges a child world's changes into its parent, all or nothing.
///
/// The merge compares the child's changes since its base with the parent's
/// changes since the same base. It refuses when both changed a path
/// differently (write-write), when the child read a path that the parent
/// changed (read-write), or when the two changes cannot both exist
/// (structural), prints each conflict and exits with 1, changing nothing.
/// Otherwise it takes a pre-merge snapshot of the parent, applies the
/// changes (file data cloned with reflinks, each file renamed into place),
/// and moves the child's base to the merged state. The next command rolls
/// an interrupted merge back, or completes it if every change had reached
/// the parent, and reports which. `world undo PARENT` takes a merge back.
///
/// Alias: `wmerge CHILD PARENT`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The child world whose changes to merge.
    name: WorldName,
    /// Check that NAME is a child of this world.
    #[arg(value_name = "PARENT")]
    expected_parent: Option<WorldName>,
    /// Print the plan and the conflicts without changing anything.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Settle write-write conflicts with this side's version.
    #[arg(long, value_enum, value_name = "SIDE")]
    prefer: Option<Prefer>,
    /// Merge text files that both sides modified line by line (diff3), and
    /// report a write-write conflict only where their changes overlap;
    /// conflict markers are never written. Files over 16 MiB stay
    /// conflicts.
    #[arg(long)]
    text_merge: bool,
    /// Ignore read-write conflicts on paths matching PATTERN: a path and
    /// everything below it, or a glob with `*`, `**` and `?` (repeatable).
    #[arg(long, value_name = "PATTERN")]
    ignore_reads: Vec<OsString>,
    /// Merge only the changes at or below PATH (repeatable).
    #[arg(long, value_name = "PATH")]
    only: Vec<OsString>,
    /// Keep pre-merge snapshots, which `world undo` needs, for the newest
    /// COUNT merges into the parent; older ones are deleted.
    #[arg(long, value_name = "COUNT", default_value_t = worlds::store::KEEP_PREMERGE)]
    keep_undo: usize,
    /// Print the outcome as JSON on stdout: `child`, `parent`, `merge_id`,
    /// `applied`, `steps`, `conflicts`, `identical`, `kept_parent`, `text_merge` and
    /// `revert_steps`, with paths and changes as `world diff --json` writes them.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Prefer {
    Child,
    Parent,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let mut store = context.open_store()?;
    let options = MergeOptions {
        plan: PlanOptions {
            text_merge: args.text_merge,
            prefer: args.prefer.map(|side| match side {
                Prefer::Child => Side::Child,
                Prefer::Parent => Side::Parent,
            }),
            ignore_reads: args
                .ignore_reads
                .iter()
                .map(|p| Pattern::new(p.as_bytes()))
                .collect(),
            only: only_paths(&args.only)?,
        },
        dry_run: args.dry_run,
        expected_parent: args.expected_parent,
        keep: Some(args.keep_undo),
    };

    let started = Instant::now();
    let display = ui::ProgressDisplay::new(context.quiet || args.json);
    let outcome = store.merge(&args.name, &options, &|progress| {
        display.report(worlds::rootfs::Progress::Message(format!(
            "applying {}/{}",
            progress.done, progress.total
        )))
    })?;
    drop(display);

    if args.json {
        ui::print_json(&outcome)?;
    } else {
        for conflict in &outcome.plan.conflicts {
            println!("{}", describe_conflict(conflict));
        }
        if args.dry_run {
            for step in &outcome.plan.steps {
                println!("{}", describe_step(step));
            }
            for path in &outcome.plan.identical {
                println!("identical {}", quote(&path.to_absolute_bytes()));
            }
            for path in &outcome.plan.kept_parent {
                println!("keep-parent {}", quote(&path.to_absolute_bytes()));
            }
            for path in &outcome.plan.text_merge {
                println!("text-merged {}", quote(&path.to_absolute_bytes()));
            }
        }
    }

    if !outcome.read_set_complete {
        ui::warning(format_args!(
            "the access set of `{}` may lack reads (`world set {}` says why), so read-write conflicts may be missed",
            outcome.child, outcome.child
        ));
    }
    let conflicts = outcome.plan.conflicts.len();
    if conflicts > 0 {
        ui::status(
            context.quiet,
            format_args!(
                "merge of `{}` into `{}` refused: {conflicts} conflict{}; nothing changed",
                outcome.child,
                outcome.parent,
                if conflicts == 1 { "" } else { "s" }
            ),
        );
        let has = |kind: ConflictKind| outcome.plan.conflicts.iter().any(|c| c.kind == kind);
        let mut options = Vec::new();
        if has(ConflictKind::WriteWrite) {
            options.push("--prefer child|parent settles write-write conflicts");
        }
        if has(ConflictKind::ReadWrite) {
            options.push("--ignore-reads PATTERN read-write ones (for logs, say)");
        }
        options.push("--only PATH merges a part");
        options.push("--dry-run shows the plan");
        ui::status(context.quiet, format_args!("hint: {}", options.join("; ")));
        return Ok(ui::EXIT_BLOCKED);
    }
    if outcome.merge_id.is_none() && !args.dry_run {
        let filtered = if args.only.is_empty() {
            ""
        } else {
            " under the paths of --only"
        };
        ui::status(
            context.quiet,
            format_args!(
                "nothing to merge: `{}` has no change since its base{filtered}; nothing changed",
                outcome.child
            ),
        );
    }
    if let Some(id) = outcome.merge_id {
        ui::status(
            context.quiet,
            format_args!(
                "merged `{}` into `{}` (merge {id}): {} step{} in {}",
                outcome.child,
                outcome.parent,
                outcome.plan.steps.len(),
                if outcome.plan.steps.len() == 1 {
                    ""
                } else {
                    "s"
                },
                ui::format_duration(started.elapsed())
            ),
        );
    }
    Ok(ui::EXIT_OK)
}

pub fn describe_conflict(conflict: &Conflict) -> String {
    describe_conflict_between(conflict, "child", "parent")
}

/// Describes `conflict` like [`describe_conflict`], naming its child side
/// `child` and its parent side `parent`.
pub fn describe_conflict_between(conflict: &Conflict, child: &str, parent: &str) -> String {
    let kind = match conflict.kind {
        worlds::merge::plan::ConflictKind::WriteWrite => "write-write",
        worlds::merge::plan::ConflictKind::ReadWrite => "read-write",
        worlds::merge::plan::ConflictKind::Structural => "structural",
    };
    // A side names its path only where it differs from the conflict's,
    // as in a structural conflict.
    let side = |change: &Option<worlds::diff::Change>| match change {
        Some(change) if change.path == conflict.path => {
            format!("{} it", change_word(change.kind))
        }
        Some(change) => format!(
            "{} {}",
            change_word(change.kind),
            quote(&change.path.to_absolute_bytes())
        ),
        None => "read it".to_owned(),
    };
    format!(
        "conflict {kind} {}: {child} {}, {parent} {}",
        quote(&conflict.path.to_absolute_bytes()),
        side(&conflict.child),
        side(&conflict.parent)
    )
}

fn change_word(kind: worlds::diff::ChangeKind) -> &'static str {
    match kind {
        worlds::diff::ChangeKind::Added => "added",
        worlds::diff::ChangeKind::Modified => "modified",
        worlds::diff::ChangeKind::Deleted => "deleted",
        worlds::diff::ChangeKind::TypeChanged => "changed the type of",
        worlds::diff::ChangeKind::MetadataOnly => "changed metadata of",
    }
}

fn describe_step(step: &Step) -> String {
    let (verb, path) = match step {
        Step::Put(path) => ("put", path),
        Step::Remove(path) => ("remove", path),
        Step::SetMetadata(path) => ("metadata", path),
    };
    format!("{verb} {}", quote(&path.to_absolute_bytes()))
}

/// Parses the paths of `--only`, which must lie below the root: the root
/// would select everything, as leaving out `--only` does.
fn only_paths(values: &[OsString]) -> anyhow::Result<Vec<WorldPath>> {
    let mut paths = Vec::new();
    for value in values {
        let path = WorldPath::parse(value.as_bytes())?;
        if path.is_root() {
            return Err(ui::UsageError {
                message: format!(
                    "--only `{}` names the root of the world",
                    value.to_string_lossy()
                ),
                hint: Some(
                    "give --only a path below the root, such as /etc, or leave it out to merge everything"
                        .into(),
                ),
            }
            .into());
        }
        paths.push(path);
    }
    Ok(paths)
}
