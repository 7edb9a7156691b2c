//! The merge plan: which of a child's changes to apply to its parent, in
//! which order, and which conflict. Pure data in, pure data out, so that a
//! test or `--dry-run` can show the plan before anything is touched.
//!
//! Conflicts are values, not errors:
//! - write-write: both sides changed a path since the base, with different
//!   results (identical results are no conflict);
//! - read-write: the child read a path that the parent changed since the
//!   base, so what the child built from it may be stale;
//! - structural: the child put something under a directory that the
//!   parent removed or replaced, or removed a directory under which the
//!   parent put something.
//!
//! `prefer` settles write-write conflicts only; the others always block.

use std::collections::{BTreeMap, BTreeSet};

use crate::diff::{Change, ChangeKind, Entry, FileType};
use crate::path::WorldPath;

pub use super::apply::Step;

impl serde::Serialize for Step {
    /// Writes `{"step": "put" | "remove" | "set-metadata", "path": BYTES}`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let step = match self {
            Self::Put(_) => "put",
            Self::Remove(_) => "remove",
            Self::SetMetadata(_) => "set-metadata",
        };
        let mut object = serializer.serialize_struct("Step", 2)?;
        object.serialize_field("step", step)?;
        object.serialize_field(
            "path",
            &crate::diff::json::Bytes(&self.path().to_absolute_bytes()),
        )?;
        object.end()
    }
}

fn serialize_path<S: serde::Serializer>(
    path: &WorldPath,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(
        &crate::diff::json::Bytes(&path.to_absolute_bytes()),
        serializer,
    )
}

/// The side whose version wins a write-write conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Child,
    Parent,
}

/// The kind of a merge conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKind {
    WriteWrite,
    ReadWrite,
    Structural,
}

/// A reason a merge cannot apply a change as it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Conflict {
    pub kind: ConflictKind,
    #[serde(serialize_with = "serialize_path")]
    pub path: WorldPath,
    /// The child's change at `path`, if it changed it.
    pub child: Option<Change>,
    /// The parent's change that collides: at `path`, or at the directory
    /// (or below it) for a structural conflict.
    pub parent: Option<Change>,
}

/// Choices that shape a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Settles write-write conflicts for this side instead of reporting them.
    pub prefer: Option<Side>,
    /// Read-write conflicts on paths matching these patterns are ignored.
    pub ignore_reads: Vec<Pattern>,
    /// Merge only the changes at or below these paths; all when empty.
    pub only: Vec<WorldPath>,
    /// Lets a three-way line merge settle write-write conflicts of regular
    /// files that both sides modified; `prefer` still wins where it is set.
    pub text_merge: bool,
}

/// The plan of a merge: its steps, conflicts and left-out changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// Steps in order: removals deepest first, then the rest parents first.
    pub steps: Vec<Step>,
    pub conflicts: Vec<Conflict>,
    /// Child changes that the parent already made identically.
    #[serde(serialize_with = "serialize_paths")]
    pub identical: Vec<WorldPath>,
    /// Child changes left out because `prefer` chose the parent's version.
    #[serde(serialize_with = "serialize_paths")]
    pub kept_parent: Vec<WorldPath>,
    /// Regular files that both sides modified, to be merged line by line
    /// from the base, the child and the parent before they are put. Their
    /// `Put` steps are in `steps`; an overlap turns one into a conflict.
    #[serde(serialize_with = "serialize_paths")]
    pub text_merge: Vec<WorldPath>,
    /// Steps that take a snapshot of the child back to its old base at the
    /// paths the merge leaves out (settled for the parent, or outside
    /// `only`), copying from the old base. The result is the child's new
    /// base, so its diff afterwards shows exactly what the merge left out.
    pub revert_steps: Vec<Step>,
}

fn serialize_paths<S: serde::Serializer>(
    paths: &[WorldPath],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut sequence = serializer.serialize_seq(Some(paths.len()))?;
    for path in paths {
        sequence.serialize_element(&crate::diff::json::Bytes(&path.to_absolute_bytes()))?;
    }
    sequence.end()
}

/// Builds the plan of merging `child` changes into a parent that made
/// `parent` changes since the same base.
///
/// `reads` is the child's read set. `same_data` returns whether the child's
/// and the parent's versions of a regular file at a path hold the same
/// bytes; it is asked only when everything else about them is equal.
pub fn build(
    child: &[Change],
    parent: &[Change],
    reads: &BTreeSet<WorldPath>,
    options: &PlanOptions,
    same_data: &dyn Fn(&WorldPath) -> bool,
) -> Plan {
    let parent_by_path: BTreeMap<&WorldPath, &Change> =
        parent.iter().map(|c| (&c.path, c)).collect();
    let selected: Vec<&Change> = child
        .iter()
        .filter(|change| {
            options.only.is_empty() || options.only.iter().any(|p| change.path.starts_with(p))
        })
        .collect();
    let mut plan = Plan::default();
    let mut applied: Vec<&Change> = Vec::new();
    let mut identical: Vec<&Change> = Vec::new();

    for change in &selected {
        if let Some(collision) = structural(change, &parent_by_path, parent) {
            plan.conflicts.push(Conflict {
                kind: ConflictKind::Structural,
                path: change.path.clone(),
                child: Some((*change).clone()),
                parent: Some(collision.clone()),
            });
            continue;
        }
        let Some(theirs) = parent_by_path.get(&change.path) else {
            applied.push(change);
            continue;
        };
        if same_result(change, theirs, same_data) {
            plan.identical.push(change.path.clone());
            identical.push(change);
            continue;
        }
        let is_regular = |entry: &Option<Entry>| {
            entry
                .as_ref()
                .is_some_and(|e| e.file_type == FileType::Regular)
        };
        let both_modified_files =
            is_regular(&change.before) && is_regular(&change.after) && is_regular(&theirs.after);
        match options.prefer {
            Some(Side::Child) => applied.push(change),
            Some(Side::Parent) => plan.kept_parent.push(change.path.clone()),
            None if options.text_merge && both_modified_files => {
                plan.text_merge.push(change.path.clone());
                applied.push(change);
            }
            None => plan.conflicts.push(Conflict {
                kind: ConflictKind::WriteWrite,
                path: change.path.clone(),
                child: Some((*change).clone()),
                parent: Some((*theirs).clone()),
            }),
        }
    }

    // A path the child wrote is judged by the write-write rule above.
    let written: BTreeSet<&WorldPath> = selected.iter().map(|change| &change.path).collect();
    for read in reads {
        if written.contains(read)
            || options
                .ignore_reads
                .iter()
                .any(|pattern| pattern.matches(read))
        {
            continue;
        }
        let in_scope = options.only.is_empty() || options.only.iter().any(|p| read.starts_with(p));
        if !in_scope {
            continue;
        }
        if let Some(theirs) = parent_by_path.get(read) {
            plan.conflicts.push(Conflict {
                kind: ConflictKind::ReadWrite,
                path: read.clone(),
                child: None,
                parent: Some((*theirs).clone()),
            });
        }
    }

    plan.steps = order_steps(&applied);
    applied.extend(identical);
    let carried: BTreeSet<&WorldPath> = applied.iter().map(|change| &change.path).collect();
    let left_out: Vec<Change> = child
        .iter()
        .filter(|change| !carried.contains(&change.path))
        .cloned()
        .collect();
    plan.revert_steps = restore_steps(&left_out);
    plan.conflicts
        .sort_by(|a, b| (&a.path, a.kind).cmp(&(&b.path, b.kind)));
    plan.identical.sort();
    plan.kept_parent.sort();
    plan
}

/// Returns the steps that take a tree back to its earlier state. `changes`
/// go from that state (the base side) to the tree (the world side), and the
/// steps copy from the earlier state.
pub fn restore_steps(changes: &[Change]) -> Vec<Step> {
    let reversed: Vec<Change> = changes
        .iter()
        .map(|change| Change {
            path: change.path.clone(),
            kind: match change.kind {
                ChangeKind::Added => ChangeKind::Deleted,
                ChangeKind::Deleted => ChangeKind::Added,
                kind => kind,
            },
            before: change.after.clone(),
            after: change.before.clone(),
        })
        .collect();
    let references: Vec<&Change> = reversed.iter().collect();
    order_steps(&references)
}

/// Returns the parent change that makes `change` structurally impossible.
fn structural<'a>(
    change: &Change,
    parent_by_path: &BTreeMap<&WorldPath, &'a Change>,
    parent: &'a [Change],
) -> Option<&'a Change> {
    let is_dir = |entry: &Option<Entry>| {
        entry
            .as_ref()
            .is_some_and(|e| e.file_type == FileType::Directory)
    };

    // The child puts something at `path`: every ancestor must still be a
    // directory in the parent.
    if change.after.is_some() {
        let mut ancestor = parent_dir(&change.path);
        while let Some(dir) = ancestor {
            if let Some(theirs) = parent_by_path.get(&dir) {
                if !is_dir(&theirs.after) {
                    return Some(theirs);
                }
            }
            ancestor = parent_dir(&dir);
        }
    }
    // The child removes a directory: the parent must not have put anything
    // below it.
    if is_dir(&change.before) && !is_dir(&change.after) {
        return parent.iter().find(|theirs| {
            theirs.path != change.path
                && theirs.path.starts_with(&change.path)
                && theirs.after.is_some()
        });
    }
    None
}

/// Returns whether both sides made the same result at one path.
fn same_result(ours: &Change, theirs: &Change, same_data: &dyn Fn(&WorldPath) -> bool) -> bool {
    match (&ours.after, &theirs.after) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let same_attributes = a.file_type == b.file_type
                && a.mode == b.mode
                && a.uid == b.uid
                && a.gid == b.gid
                && a.xattrs == b.xattrs
                && a.target == b.target
                && a.rdev == b.rdev;
            let same_content = match a.file_type {
                FileType::Regular => a.size == b.size && same_data(&ours.path),
                _ => true,
            };
            same_attributes && same_content
        }
        _ => false,
    }
}

/// Orders the steps of the applied changes: all removals first, deepest
/// paths first, then puts and metadata, parents before their contents.
fn order_steps(applied: &[&Change]) -> Vec<Step> {
    let mut removals = Vec::new();
    let mut puts = Vec::new();
    for change in applied {
        let path = change.path.clone();
        match change.kind {
            ChangeKind::Added | ChangeKind::Modified => puts.push(Step::Put(path)),
            ChangeKind::MetadataOnly => puts.push(Step::SetMetadata(path)),
            ChangeKind::Deleted => removals.push(Step::Remove(path)),
            ChangeKind::TypeChanged => {
                removals.push(Step::Remove(path.clone()));
                puts.push(Step::Put(path));
            }
        }
    }
    // Byte order puts `a` before `a/b`, so the reverse removes contents
    // before their directory.
    removals.sort_by(|a, b| b.path().cmp(a.path()));
    puts.sort_by(|a, b| a.path().cmp(b.path()));
    removals.extend(puts);
    removals
}

fn parent_dir(path: &WorldPath) -> Option<WorldPath> {
    if path.is_root() {
        return None;
    }
    let bytes = path.as_bytes();
    Some(match bytes.iter().rposition(|&b| b == b'/') {
        Some(slash) => WorldPath::from_bytes(&bytes[..slash]),
        None => WorldPath::root(),
    })
}

/// A path pattern of `--ignore-reads`: a plain path matches itself and
/// everything below it; `*` matches within one name, `**` across names and
/// `?` one byte other than `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<u8>);

impl Pattern {
    /// Parses a pattern; a leading `/` is optional.
    pub fn new(text: &[u8]) -> Self {
        Self(WorldPath::from_bytes(text).as_bytes().to_vec())
    }

    /// Returns whether `path` matches.
    pub fn matches(&self, path: &WorldPath) -> bool {
        let has_glob = self.0.iter().any(|b| matches!(b, b'*' | b'?'));
        if !has_glob {
            return path.starts_with(&WorldPath::from_bytes(&self.0));
        }
        glob(&self.0, path.as_bytes())
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        [b'*', rest @ ..] => {
            let limit = text.iter().position(|&b| b == b'/').unwrap_or(text.len());
            (0..=limit).any(|skip| glob(rest, &text[skip..]))
        }
        [b'?', rest @ ..] => {
            matches!(text.first(), Some(b) if *b != b'/') && glob(rest, &text[1..])
        }
        [first, rest @ ..] => text.first() == Some(first) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> WorldPath {
        WorldPath::from_bytes(text.as_bytes())
    }

    fn entry(file_type: FileType) -> Entry {
        Entry {
            file_type,
            size: 4,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            target: None,
            rdev: None,
            xattrs: Vec::new(),
            ino: 300,
            nlink: 1,
        }
    }

    fn change(
        at: &str,
        kind: ChangeKind,
        before: Option<FileType>,
        after: Option<FileType>,
    ) -> Change {
        Change {
            path: path(at),
            kind,
            before: before.map(entry),
            after: after.map(entry),
        }
    }

    fn added(at: &str) -> Change {
        change(at, ChangeKind::Added, None, Some(FileType::Regular))
    }

    fn modified(at: &str) -> Change {
        change(
            at,
            ChangeKind::Modified,
            Some(FileType::Regular),
            Some(FileType::Regular),
        )
    }

    fn deleted(at: &str, file_type: FileType) -> Change {
        change(at, ChangeKind::Deleted, Some(file_type), None)
    }

    fn plan(child: &[Change], parent: &[Change], options: &PlanOptions) -> Plan {
        build(child, parent, &BTreeSet::new(), options, &|_| false)
    }

    fn kinds(plan: &Plan) -> Vec<(ConflictKind, String)> {
        plan.conflicts
            .iter()
            .map(|c| (c.kind, c.path.to_string()))
            .collect()
    }

    #[test]
    fn disjoint_changes_apply_in_order() {
        let child = [
            added("srv/new"),
            change("srv", ChangeKind::Added, None, Some(FileType::Directory)),
            deleted("old/inner", FileType::Regular),
            deleted("old", FileType::Directory),
            change(
                "etc/mode",
                ChangeKind::MetadataOnly,
                Some(FileType::Regular),
                Some(FileType::Regular),
            ),
            change(
                "swap",
                ChangeKind::TypeChanged,
                Some(FileType::Regular),
                Some(FileType::Symlink),
            ),
        ];
        let result = plan(&child, &[modified("unrelated")], &PlanOptions::default());
        assert_eq!(result.conflicts, []);
        assert_eq!(
            result.steps,
            [
                Step::Remove(path("swap")),
                Step::Remove(path("old/inner")),
                Step::Remove(path("old")),
                Step::SetMetadata(path("etc/mode")),
                Step::Put(path("srv")),
                Step::Put(path("srv/new")),
                Step::Put(path("swap")),
            ]
        );
    }

    #[test]
    fn write_write_conflict_and_prefer() {
        let child = [modified("etc/app.conf"), added("etc/new")];
        let parent = [modified("etc/app.conf")];
        let blocked = plan(&child, &parent, &PlanOptions::default());
        assert_eq!(
            kinds(&blocked),
            [(ConflictKind::WriteWrite, "/etc/app.conf".into())]
        );
        assert_eq!(blocked.steps, [Step::Put(path("etc/new"))]);

        let ours = PlanOptions {
            prefer: Some(Side::Child),
            ..PlanOptions::default()
        };
        let result = plan(&child, &parent, &ours);
        assert_eq!(result.conflicts, []);
        assert_eq!(
            result.steps,
            [Step::Put(path("etc/app.conf")), Step::Put(path("etc/new"))]
        );

        let theirs = PlanOptions {
            prefer: Some(Side::Parent),
            ..PlanOptions::default()
        };
        let result = plan(&child, &parent, &theirs);
        assert_eq!(result.conflicts, []);
        assert_eq!(result.steps, [Step::Put(path("etc/new"))]);
        assert_eq!(result.kept_parent, [path("etc/app.conf")]);
        // The new base takes the base's version of the file the parent won,
        // so the child still shows its own version as a change.
        assert_eq!(result.revert_steps, [Step::Put(path("etc/app.conf"))]);
    }

    #[test]
    fn identical_results_are_no_conflict() {
        let both_deleted = plan(
            &[deleted("tmp/x", FileType::Regular)],
            &[deleted("tmp/x", FileType::Regular)],
            &PlanOptions::default(),
        );
        assert_eq!(both_deleted.conflicts, []);
        assert_eq!(both_deleted.identical, [path("tmp/x")]);
        assert_eq!(both_deleted.steps, []);
        assert_eq!(both_deleted.revert_steps, []);

        let same_bytes = build(
            &[modified("a")],
            &[modified("a")],
            &BTreeSet::new(),
            &PlanOptions::default(),
            &|_| true,
        );
        assert_eq!(same_bytes.conflicts, []);
        assert_eq!(same_bytes.steps, []);

        let mut other_mode = modified("a");
        other_mode.after.as_mut().unwrap().mode = 0o600;
        let different = build(
            &[other_mode],
            &[modified("a")],
            &BTreeSet::new(),
            &PlanOptions::default(),
            &|_| true,
        );
        assert_eq!(kinds(&different), [(ConflictKind::WriteWrite, "/a".into())]);
    }

    #[test]
    fn structural_conflicts() {
        // The child adds under a directory the parent deleted.
        let result = plan(
            &[added("srv/www/index.html")],
            &[deleted("srv/www", FileType::Directory)],
            &PlanOptions::default(),
        );
        assert_eq!(
            kinds(&result),
            [(ConflictKind::Structural, "/srv/www/index.html".into())]
        );
        // The child adds under a directory the parent replaced by a file.
        let replaced = change(
            "srv",
            ChangeKind::TypeChanged,
            Some(FileType::Directory),
            Some(FileType::Regular),
        );
        let result = plan(&[added("srv/new")], &[replaced], &PlanOptions::default());
        assert_eq!(
            kinds(&result),
            [(ConflictKind::Structural, "/srv/new".into())]
        );
        // The child deletes a directory the parent added to; prefer does not
        // settle it.
        let options = PlanOptions {
            prefer: Some(Side::Child),
            ..PlanOptions::default()
        };
        let result = plan(
            &[deleted("var/cache", FileType::Directory)],
            &[added("var/cache/new")],
            &options,
        );
        assert_eq!(
            kinds(&result),
            [(ConflictKind::Structural, "/var/cache".into())]
        );
        assert_eq!(result.steps, []);
    }

    #[test]
    fn read_write_conflicts() {
        let reads: BTreeSet<WorldPath> = [
            path("etc/app.conf"),
            path("var/log/app.log"),
            path("etc/quiet"),
        ]
        .into();
        let parent = [modified("etc/app.conf"), modified("var/log/app.log")];
        let result = build(
            &[added("srv/built")],
            &parent,
            &reads,
            &PlanOptions::default(),
            &|_| false,
        );
        assert_eq!(
            kinds(&result),
            [
                (ConflictKind::ReadWrite, "/etc/app.conf".into()),
                (ConflictKind::ReadWrite, "/var/log/app.log".into())
            ]
        );
        let options = PlanOptions {
            ignore_reads: vec![Pattern::new(b"/var/log")],
            ..PlanOptions::default()
        };
        let result = build(&[added("srv/built")], &parent, &reads, &options, &|_| false);
        assert_eq!(
            kinds(&result),
            [(ConflictKind::ReadWrite, "/etc/app.conf".into())]
        );
    }

    #[test]
    fn only_limits_changes_and_reads() {
        let options = PlanOptions {
            only: vec![path("etc")],
            ..PlanOptions::default()
        };
        let reads: BTreeSet<WorldPath> = [path("var/state")].into();
        let result = build(
            &[added("etc/a"), added("srv/b")],
            &[modified("var/state")],
            &reads,
            &options,
            &|_| false,
        );
        assert_eq!(result.conflicts, []);
        assert_eq!(result.steps, [Step::Put(path("etc/a"))]);
        assert_eq!(result.revert_steps, [Step::Remove(path("srv/b"))]);
    }

    #[test]
    fn restore_reverses_each_kind() {
        let changes = [
            added("new"),
            deleted("gone", FileType::Regular),
            modified("edited"),
            change(
                "mode",
                ChangeKind::MetadataOnly,
                Some(FileType::Regular),
                Some(FileType::Regular),
            ),
            change(
                "swap",
                ChangeKind::TypeChanged,
                Some(FileType::Directory),
                Some(FileType::Regular),
            ),
            added("dir"),
            added("dir/inner"),
        ];
        assert_eq!(
            restore_steps(&changes),
            [
                Step::Remove(path("swap")),
                Step::Remove(path("new")),
                Step::Remove(path("dir/inner")),
                Step::Remove(path("dir")),
                Step::Put(path("edited")),
                Step::Put(path("gone")),
                Step::SetMetadata(path("mode")),
                Step::Put(path("swap")),
            ]
        );
    }

    #[test]
    fn text_merge_takes_modified_files_only() {
        let options = PlanOptions {
            text_merge: true,
            ..PlanOptions::default()
        };
        let child = [modified("etc/app.conf"), added("etc/both")];
        let parent = [modified("etc/app.conf"), added("etc/both")];
        let result = plan(&child, &parent, &options);
        assert_eq!(result.text_merge, [path("etc/app.conf")]);
        assert_eq!(result.steps, [Step::Put(path("etc/app.conf"))]);
        // Files that both sides added have no common base to merge from.
        assert_eq!(
            kinds(&result),
            [(ConflictKind::WriteWrite, "/etc/both".into())]
        );
    }

    #[test]
    fn patterns() {
        let cases: [(&[u8], &str, bool); 10] = [
            (b"/var/log", "var/log", true),
            (b"/var/log", "var/log/app.log", true),
            (b"var/log", "var/logs", false),
            (b"/var/log/*.log", "var/log/app.log", true),
            (b"/var/log/*.log", "var/log/nginx/app.log", false),
            (b"/var/log/**.log", "var/log/nginx/app.log", true),
            (b"/tmp/?", "tmp/a", true),
            (b"/tmp/?", "tmp/ab", false),
            (b"**", "anything/at/all", true),
            (b"/etc/*", "etc", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(&path(text)),
                expected,
                "{pattern:?} {text}"
            );
        }
    }
}
