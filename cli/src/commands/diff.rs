use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use worlds::diff::{engine, Change, ChangeKind, DiffOptions, FileType, Method};
use worlds::path::WorldPath;
use worlds::size;
use worlds::store::{DiffSubject, DiffView, StoreError};
use worlds::sys::process;
use worlds::WorldName;

use super::Context;
use crate::ui;

/// Shows what a child world changed since its base.
///
/// One line a change: a status letter and the path inside the world, as
/// `git diff --name-status` prints them. A added, M modified (data, symlink
/// target, device number, or the path now names another file), D deleted,
/// T type changed, m metadata only (owner, mode, xattrs, ACLs, mtime).
/// Paths with control characters, quotes or invalid UTF-8 are printed in
/// double quotes with C escapes; `-z` and `--json` give them raw.
///
/// With PARENT, NAME must be a child of PARENT.
///
/// Alias: `wdiff CHILD PARENT`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The child world.
    name: WorldName,
    /// Check that NAME is a child of this world.
    #[arg(value_name = "PARENT")]
    expected_parent: Option<WorldName>,
    /// Also show the parent's own changes since the child's base.
    #[arg(long)]
    parent: bool,
    /// Show sizes and counts.
    #[arg(long, conflicts_with_all = ["patch", "json", "nul"])]
    stat: bool,
    /// Show unified diffs of changed text files.
    #[arg(short, long, conflicts_with_all = ["json", "nul"])]
    patch: bool,
    /// Print the changes as JSON on stdout (schema in the rustdoc of
    /// `worlds::diff::json`).
    #[arg(long, conflicts_with = "nul")]
    json: bool,
    /// Print `LETTER NUL PATH NUL` for each change, with raw path bytes.
    #[arg(short = 'z')]
    nul: bool,
    /// Exit with 1 when there are changes and 0 when there are none.
    #[arg(long)]
    exit_code: bool,
    /// Compare every file instead of only what the btrfs tree records as changed
    /// (slower; for checking).
    #[arg(long)]
    full_walk: bool,
    /// When to colour the output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// Show only changes at or below these paths inside the world.
    #[arg(last = true, value_name = "PATH")]
    paths: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// The JSON document of `world diff --json`.
#[derive(serde::Serialize)]
struct Report<'a> {
    world: &'a WorldName,
    parent: &'a WorldName,
    changes: &'a [Change],
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_changes: Option<&'a [Change]>,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let record = store.world(&args.name)?;
    let Some(parent) = record.parent.clone() else {
        return Err(StoreError::NoBase { name: args.name }.into());
    };
    if let Some(expected) = &args.expected_parent {
        if expected != &parent {
            return Err(StoreError::WrongParent {
                child: args.name,
                expected: expected.clone(),
                actual: Some(parent),
            }
            .into());
        }
    }
    let filters = args
        .paths
        .iter()
        .map(|path| WorldPath::parse(path.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let options = DiffOptions {
        method: if args.full_walk {
            Method::Walk
        } else {
            Method::Fast
        },
        filters,
    };

    let world_view = store.open_diff(&args.name, DiffSubject::World)?;
    let changes = world_view.changes(&options)?;
    let parent_view = args
        .parent
        .then(|| store.open_diff(&args.name, DiffSubject::Parent))
        .transpose()?;
    let parent_changes = parent_view
        .as_ref()
        .map(|view| view.changes(&options))
        .transpose()?;

    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    // Stdout writes each line on its own; a buffer writes a long list at once.
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.json {
        let report = Report {
            world: &args.name,
            parent: &parent,
            changes: &changes,
            parent_changes: parent_changes.as_deref(),
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let mut sections = vec![(
            &world_view,
            &changes,
            format!("changes of `{}` since its base", args.name),
        )];
        if let (Some(view), Some(parent_changes)) = (&parent_view, &parent_changes) {
            sections.push((
                view,
                parent_changes,
                format!(
                    "changes of parent `{parent}` since the base of `{}`",
                    args.name
                ),
            ));
        }
        let headed = sections.len() > 1 && !args.nul;
        for (index, (view, changes, title)) in sections.into_iter().enumerate() {
            if headed {
                if index > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "# {title}")?;
            }
            if args.nul {
                print_nul(&mut out, changes)?;
            } else if args.stat {
                print_stat(&mut out, changes, color)?;
            } else if args.patch {
                print_patch(&mut out, view, changes, color)?;
            } else {
                print_name_status(&mut out, changes, color)?;
            }
        }
    }
    out.flush()?;

    let any = !changes.is_empty() || parent_changes.as_ref().is_some_and(|c| !c.is_empty());
    Ok(if args.exit_code && any {
        ui::EXIT_BLOCKED
    } else {
        ui::EXIT_OK
    })
}

/// ANSI colour of a status letter.
fn color_of(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "\x1b[32m",
        ChangeKind::Deleted => "\x1b[31m",
        ChangeKind::Modified => "\x1b[33m",
        ChangeKind::TypeChanged => "\x1b[35m",
        ChangeKind::MetadataOnly => "\x1b[36m",
    }
}

const RESET: &str = "\x1b[0m";

fn print_name_status(out: &mut impl Write, changes: &[Change], color: bool) -> io::Result<()> {
    for change in changes {
        let path = quote(&change.path.to_absolute_bytes());
        let letter = change.kind.letter();
        if color {
            writeln!(out, "{}{letter}{RESET}\t{path}", color_of(change.kind))?;
        } else {
            writeln!(out, "{letter}\t{path}")?;
        }
    }
    Ok(())
}

fn print_nul(out: &mut impl Write, changes: &[Change]) -> io::Result<()> {
    for change in changes {
        write!(out, "{}\0", change.kind.letter())?;
        out.write_all(&change.path.to_absolute_bytes())?;
        out.write_all(b"\0")?;
    }
    Ok(())
}

fn print_stat(out: &mut impl Write, changes: &[Change], color: bool) -> io::Result<()> {
    let regular_size = |entry: Option<&worlds::diff::Entry>| {
        entry
            .filter(|entry| entry.file_type == FileType::Regular)
            .map_or(0, |entry| entry.size)
    };
    let mut rows = Vec::new();
    let (mut grown, mut shrunk) = (0u64, 0u64);
    let mut counts = [0usize; 5];
    for change in changes {
        let before = regular_size(change.before.as_ref());
        let after = regular_size(change.after.as_ref());
        grown += after.saturating_sub(before);
        shrunk += before.saturating_sub(after);
        counts[change.kind as usize] += 1;
        let describe = |entry: Option<&worlds::diff::Entry>, bytes: u64| match entry {
            Some(entry) if entry.file_type != FileType::Regular => {
                entry.file_type.name().to_owned()
            }
            _ => size::format(bytes),
        };
        let sizes = match (change.before.as_ref(), change.after.as_ref()) {
            (None, after_entry) => describe(after_entry, after),
            (before_entry, None) => describe(before_entry, before),
            (before_entry, after_entry) => {
                format!(
                    "{} -> {}",
                    describe(before_entry, before),
                    describe(after_entry, after)
                )
            }
        };
        rows.push((change.kind, quote(&change.path.to_absolute_bytes()), sizes));
    }
    let width = rows
        .iter()
        .map(|(_, path, _)| path.chars().count())
        .max()
        .unwrap_or(0);
    for (kind, path, sizes) in rows {
        let letter = kind.letter();
        let (start, end) = if color {
            (color_of(kind), RESET)
        } else {
            ("", "")
        };
        writeln!(out, " {start}{letter}{end} {path:<width$} | {sizes}")?;
    }
    let names = [
        "added",
        "modified",
        "deleted",
        "type-changed",
        "metadata-only",
    ];
    let parts: Vec<String> = counts
        .iter()
        .zip(names)
        .filter(|(count, _)| **count > 0)
        .map(|(count, name)| format!("{count} {name}"))
        .collect();
    let summary = if parts.is_empty() {
        "no changes".to_owned()
    } else {
        parts.join(", ")
    };
    writeln!(
        out,
        " {} change{}: {summary}; {} more, {} less in regular files",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        size::format(grown),
        size::format(shrunk)
    )
}

/// Files larger than this get no unified diff in `--patch`.
const PATCH_BYTES_MAX: u64 = 16 << 20;

fn print_patch(
    out: &mut impl Write,
    view: &DiffView,
    changes: &[Change],
    color: bool,
) -> anyhow::Result<()> {
    for change in changes {
        let regular = |entry: &Option<worlds::diff::Entry>| {
            entry
                .as_ref()
                .is_some_and(|entry| entry.file_type == FileType::Regular)
        };
        let has_text_diff = change.kind != ChangeKind::MetadataOnly
            && (regular(&change.before) || regular(&change.after));
        let path = change.path.to_absolute_bytes();
        writeln!(out, "{} {}", change.kind.letter(), quote(&path))?;
        if !has_text_diff {
            continue;
        }
        // diff(1) reads both files into memory, holes of sparse files too.
        let size = |entry: &Option<worlds::diff::Entry>| entry.as_ref().map_or(0, |e| e.size);
        if size(&change.before).max(size(&change.after)) > PATCH_BYTES_MAX {
            writeln!(
                out,
                "Files {} and {} differ; they are over {} and not shown",
                quote(&[b"a", path.as_slice()].concat()),
                quote(&[b"b", path.as_slice()].concat()),
                size::format(PATCH_BYTES_MAX)
            )?;
            continue;
        }
        // Each side is opened beneath its tree without following symlinks,
        // and diff(1) reads the open file.
        let open = |root: &Path| -> anyhow::Result<File> {
            engine::open_regular(root, &change.path)?.with_context(|| {
                format!(
                    "{} changed while the diff was read; run the diff again",
                    quote(&path)
                )
            })
        };
        let old = (regular(&change.before))
            .then(|| open(view.base_root()))
            .transpose()?;
        let new = (regular(&change.after))
            .then(|| open(view.world_root()))
            .transpose()?;
        let mut command = Command::new("diff");
        let mut argument = |file: &Option<File>| match file {
            Some(file) => process::pass_files(&mut command, &[file]).remove(0),
            None => PathBuf::from("/dev/null"),
        };
        let (old_path, new_path) = (argument(&old), argument(&new));
        // The labels are quoted like the status line, so that a name with
        // a newline or an escape sequence cannot forge lines of the patch.
        let label_a = quote(&[b"a", path.as_slice()].concat());
        let label_b = quote(&[b"b", path.as_slice()].concat());
        let output = command
            .env("LC_ALL", "C")
            .arg("-u")
            .arg("--label")
            .arg(&label_a)
            .arg("--label")
            .arg(&label_b)
            .arg("--")
            .arg(&old_path)
            .arg(&new_path)
            .output()
            .context("run diff(1) for --patch; install it with: apt-get install diffutils")?;
        // diff exits with 0 for same, 1 for different and 2 for trouble.
        if output.status.code() == Some(2) {
            anyhow::bail!(
                "diff(1) failed on {}: {}",
                quote(&path),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        write_patch(out, &output.stdout, color)?;
    }
    Ok(())
}

fn write_patch(out: &mut impl Write, patch: &[u8], color: bool) -> io::Result<()> {
    for line in patch.split_inclusive(|&b| b == b'\n') {
        let start = match line.first() {
            Some(b'+') if color && !line.starts_with(b"+++") => "\x1b[32m",
            Some(b'-') if color && !line.starts_with(b"---") => "\x1b[31m",
            Some(b'@') if color => "\x1b[36m",
            _ => "",
        };
        out.write_all(start.as_bytes())?;
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        out.write_all(body)?;
        if !start.is_empty() {
            out.write_all(RESET.as_bytes())?;
        }
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Returns a path as text, in double quotes with C escapes when it contains
/// control characters, `"`, `\` or invalid UTF-8, as git quotes paths.
pub fn quote(bytes: &[u8]) -> String {
    let plain = std::str::from_utf8(bytes).ok().filter(|text| {
        !text
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
    });
    if let Some(text) = plain {
        return text.to_owned();
    }
    let mut quoted = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => quoted.push_str("\\n"),
                '\t' => quoted.push_str("\\t"),
                '\r' => quoted.push_str("\\r"),
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buffer = [0; 4];
                    for byte in c.encode_utf8(&mut buffer).bytes() {
                        quoted.push_str(&format!("\\{byte:03o}"));
                    }
                }
                c => quoted.push(c),
            }
        }
        for byte in chunk.invalid() {
            quoted.push_str(&format!("\\{byte:03o}"));
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quote_paths() {
        let cases: [(&[u8], &str); 6] = [
            (b"/etc/motd", "/etc/motd"),
            (b"/with space", "/with space"),
            ("/café".as_bytes(), "/café"),
            (b"/new\nline", "\"/new\\nline\""),
            (b"/tab\there", "\"/tab\\there\""),
            (b"/bad\xffname", "\"/bad\\377name\""),
        ];
        for (bytes, expected) in cases {
            assert_eq!(quote(bytes), expected);
        }
    }
}
