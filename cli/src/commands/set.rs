use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use worlds::diff::json::Bytes;
use worlds::path::WorldPath;
use worlds::track::{Access, AccessSet, Gap, GapReason, Op};
use worlds::WorldName;

use super::diff::quote;
use super::Context;
use crate::ui;

/// Lists the access set of a world: the files its processes read, wrote and
/// executed since its base.
///
/// One line a path, with its operations: `/etc/hosts: READ` or
/// `/var/log/app.log: READ, WRITE`. READ is a read of the file's data (or a
/// close of a file opened only for reading), WRITE a change of its data or
/// size, EXEC a start of it as a program. Accesses are recorded while the
/// world runs, unless it was started with `--no-track`; paths are the names
/// used at the time. A merge that moves the base starts the set afresh.
///
/// The set may lack accesses: the kernel dropped events, a run was not
/// tracked, a monitor or init ended early, or a frozen world could not send
/// its latest accesses. Then a warning on stderr names the cause, and
/// `--json` has `"complete": false`.
///
/// Alias: `wset NAME`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The world.
    name: WorldName,
    /// Show paths that were read.
    #[arg(long)]
    reads: bool,
    /// Show paths that were written.
    #[arg(long)]
    writes: bool,
    /// Show paths that were executed.
    #[arg(long)]
    execs: bool,
    /// Show only accesses last seen at or after operation ID of the log
    /// (`world log` lists them).
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    since: Option<i64>,
    /// Print the set as JSON on stdout: an object with `world`, `complete`,
    /// `up_to_date`, `gaps` (`time`, `reason`, `count`) and `paths`, each
    /// with `path`, `ops` and `accesses` (`op`, `first`, `last`, `pid`,
    /// `command`). A path that is not UTF-8 is `{"base64": "..."}`.
    #[arg(long)]
    json: bool,
    /// Show only paths at or below these paths inside the world.
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<OsString>,
}

/// The JSON document of `world set --json`:
///
/// ```text
/// { "world": "web", "complete": true, "up_to_date": true,
///   "gaps": [ { "time": "2026-12-04T10:00:00Z", "reason": "queue-overflow", "count": 1 } ],
///   "paths": [ { "path": "/etc/hosts", "ops": ["READ"],
///                "accesses": [ { "op": "READ", "first": "...", "last": "...",
///                                "pid": 12, "command": "cat" } ] } ] }
/// ```
///
/// `complete` is false when `up_to_date` is false or `gaps` has a gap other
/// than `unresolved`, which counts accesses in directories removed before
/// their paths were looked up.
/// `up_to_date` is false when the world runs but its init did not send its
/// latest accesses, as when the world is frozen.
/// A path that is not valid UTF-8 is an object `{"base64": "..."}`. Gap
/// reasons are `queue-overflow`, `not-recorded`, `monitor-lost`,
/// `init-lost` and `unresolved`. Readers must ignore fields they do not know.
#[derive(serde::Serialize)]
struct SetReport<'a> {
    world: &'a WorldName,
    complete: bool,
    up_to_date: bool,
    gaps: &'a [Gap],
    paths: Vec<PathReport<'a>>,
}

#[derive(serde::Serialize)]
struct PathReport<'a> {
    path: Bytes<'a>,
    ops: Vec<Op>,
    accesses: &'a [Access],
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let filters = args
        .paths
        .iter()
        .map(|path| WorldPath::parse(path.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let requested: Vec<Op> = [
        (Op::Read, args.reads),
        (Op::Write, args.writes),
        (Op::Exec, args.execs),
    ]
    .into_iter()
    .filter(|(_, chosen)| *chosen)
    .map(|(op, _)| op)
    .collect();
    let requested = if requested.is_empty() {
        Op::ALL.to_vec()
    } else {
        requested
    };

    let store = context.open_store()?;
    let set = store.access_set(&args.name, args.since)?;

    let listed = selected(&set, &filters, &requested);
    // Stdout writes each line on its own; a buffer writes a long list at once.
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.json {
        let absolute: Vec<Vec<u8>> = listed
            .iter()
            .map(|(path, _)| path.to_absolute_bytes())
            .collect();
        let paths = listed
            .iter()
            .zip(&absolute)
            .map(|((_, accesses), path)| PathReport {
                path: Bytes(path),
                ops: accesses.iter().map(|access| access.op).collect(),
                accesses,
            })
            .collect();
        let report = SetReport {
            world: &args.name,
            complete: set.is_complete(),
            up_to_date: set.up_to_date,
            gaps: &set.gaps,
            paths,
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        for (path, accesses) in &listed {
            let ops: Vec<String> = accesses
                .iter()
                .map(|access| access.op.to_string())
                .collect();
            writeln!(
                out,
                "{}: {}",
                quote(&path.to_absolute_bytes()),
                ops.join(", ")
            )?;
        }
    }
    out.flush()?;
    if !set.up_to_date {
        ui::warning(format_args!(
            "world `{}` runs but did not send its latest accesses (is it frozen?); they are missing here",
            args.name
        ));
    }
    warn_incomplete(&args.name, &set.gaps, context.quiet);
    Ok(ui::EXIT_OK)
}

/// Returns the paths under `filters` that have an operation of `ops`,
/// each with its accesses of those operations.
fn selected<'a>(
    set: &'a AccessSet,
    filters: &[WorldPath],
    ops: &[Op],
) -> Vec<(&'a WorldPath, Vec<Access>)> {
    set.paths
        .iter()
        .filter(|(path, _)| filters.is_empty() || filters.iter().any(|f| path.starts_with(f)))
        .filter_map(|(path, accesses)| {
            let accesses: Vec<Access> = accesses
                .iter()
                .filter(|access| ops.contains(&access.op))
                .cloned()
                .collect();
            (!accesses.is_empty()).then_some((path, accesses))
        })
        .collect()
}

/// Warns, once per reason, that the set may lack accesses.
pub fn warn_incomplete(name: &WorldName, gaps: &[Gap], quiet: bool) {
    let mut reasons: Vec<_> = gaps.iter().map(|gap| gap.reason).collect();
    reasons.sort_by_key(|reason| reason.to_string());
    reasons.dedup();
    for reason in reasons {
        let matching: Vec<&Gap> = gaps.iter().filter(|gap| gap.reason == reason).collect();
        let count: i64 = matching.iter().map(|gap| gap.count).sum();
        let last = matching.iter().map(|gap| gap.time).max();
        let last = last.map(ui::format_time).unwrap_or_default();
        if reason == GapReason::Unresolved {
            ui::status(
                quiet,
                format_args!(
                    "note: {count} access{} of `{name}` lay in directories removed before their paths were looked up, and {} not listed",
                    if count == 1 { "" } else { "es" },
                    if count == 1 { "is" } else { "are" },
                ),
            );
            continue;
        }
        let times = if count == 1 { "once" } else { "times" };
        let count = if count == 1 {
            String::new()
        } else {
            format!("{count} ")
        };
        ui::warning(format_args!(
            "the access set of `{name}` may lack accesses: {reason} ({count}{times}, last at {last})"
        ));
    }
}
