//! Computing the changes between a base and a world (or a read-only
//! snapshot of it), by a full walk or by the fast path.
//!
//! In a btrfs snapshot an unchanged file keeps its inode number and ctime,
//! and any change to its data or metadata moves its ctime. Both methods
//! compare a path only when that test fails, with the same [`compare`], so
//! they agree whenever the fast path finds every such path.
//!
//! The fast path searches the world's btrfs tree for the inodes written after
//! the base was taken ([`btrfs::changed_inodes`]), resolves them to paths,
//! and compares only those paths and the entries of changed directories
//! with the base. Deletions and renames show up as changed directories.
//!
//! Both trees are read beneath their roots, one directory at a time,
//! without following symlinks: a path whose directory is a symlink in one
//! tree is missing from that tree. A symlink in the base, such as `etc ->
//! /`, therefore never leads a diff out of the world into the host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirEntryExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::model::{classify, Change, ChangeKind, Entry, FileType};
use crate::path::WorldPath;
use crate::sys::beneath::Dir;
use crate::sys::{btrfs, fs as sysfs, process};

/// Files up to this size whose extents differ are compared byte by byte, so
/// that a rewrite with the same bytes is no change. Larger ones count as
/// modified without reading them.
const COMPARE_BYTES_MAX: u64 = 1 << 20;

/// The two trees of a diff.
pub struct Sides<'a> {
    pub base: &'a Path,
    pub world: &'a Path,
}

/// The roots of both trees of a diff, open.
struct Roots {
    base: Dir,
    world: Dir,
}

impl Roots {
    fn open(sides: &Sides<'_>) -> io::Result<Self> {
        Ok(Self {
            base: Dir::open(sides.base)?,
            world: Dir::open(sides.world)?,
        })
    }

    /// Returns a pair of lookups in both trees for the calling thread, and
    /// gives that thread a working directory of its own for them. Where the
    /// kernel does not let it, the lookups read attributes through procfs.
    fn trees(&self) -> Trees<'_> {
        let own = match process::own_working_directory() {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "no working directory of its own for a diff thread");
                false
            }
        };
        let tree = |root| Tree {
            own_working_directory: own,
            ..Tree::new(root)
        };
        Trees {
            base: tree(&self.base),
            world: tree(&self.world),
        }
    }
}

/// Lookups in both trees of a diff.
struct Trees<'a> {
    base: Tree<'a>,
    world: Tree<'a>,
}

/// Lookups in one tree beneath its root. Each path's directory is opened
/// with openat2(2) without following symlinks, and the last one is kept
/// open, because neighbouring paths share it.
struct Tree<'a> {
    root: &'a Dir,
    /// The directory of the last lookup, by its path, or `None` where the
    /// tree has no directory there.
    last: Option<(Vec<u8>, Option<Dir>)>,
    /// Whether the calling thread has a working directory of its own, so
    /// that attributes may be read by name from inside their directory.
    own_working_directory: bool,
}

impl<'a> Tree<'a> {
    fn new(root: &'a Dir) -> Self {
        Self {
            root,
            last: None,
            own_working_directory: false,
        }
    }

    /// Returns directory `dir` (raw bytes of a world path), or `None` when
    /// it is missing, is not a directory, or lies below a symlink.
    fn dir(&mut self, dir: &[u8]) -> io::Result<Option<&Dir>> {
        if dir.is_empty() {
            return Ok(Some(self.root));
        }
        let cached = matches!(&self.last, Some((path, _)) if path == dir);
        if !cached {
            let opened = match self.root.open_dir(dir) {
                Ok(opened) => Some(opened),
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    None
                }
                Err(error) => return Err(error),
            };
            self.last = Some((dir.to_vec(), opened));
        }
        Ok(self.last.as_ref().and_then(|(_, opened)| opened.as_ref()))
    }

    /// Returns the status of `path`, not following a symlink, or `None`
    /// when the tree has no such path.
    fn status(&mut self, path: &WorldPath) -> io::Result<Option<sysfs::Status>> {
        let Some((parent, name)) = path.parent_and_name() else {
            return self.root.own_status().map(Some);
        };
        match self.dir(parent)? {
            Some(dir) => dir.stat(OsStr::from_bytes(name)),
            None => Ok(None),
        }
    }

    /// Reads the entry of `path`, whose status is `status`.
    fn entry(&mut self, path: &WorldPath, status: &sysfs::Status) -> io::Result<Entry> {
        let file_type = file_type(status)?;
        let Some((parent, name)) = path.parent_and_name() else {
            return Ok(entry_of(status, file_type, None, self.root.own_xattrs()?));
        };
        let own_working_directory = self.own_working_directory;
        let dir = self.dir(parent)?.ok_or_else(missing)?;
        let name = OsStr::from_bytes(name);
        let target = match file_type {
            FileType::Symlink => Some(dir.read_link(name)?),
            _ => None,
        };
        // From inside the directory the name is the whole lookup, which
        // costs less than a lookup through procfs or an open.
        let xattrs = if own_working_directory {
            dir.enter()?;
            sysfs::xattrs(Path::new(name))?
        } else {
            dir.xattrs(name)?
        };
        Ok(entry_of(status, file_type, target, xattrs))
    }

    /// Opens the regular file at `path` for reading.
    fn open(&mut self, path: &WorldPath) -> io::Result<File> {
        let (parent, name) = path.parent_and_name().ok_or_else(missing)?;
        let dir = self.dir(parent)?.ok_or_else(missing)?;
        let file = dir.open_file(OsStr::from_bytes(name))?;
        if sysfs::Status::of_file(&file)?.mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    /// Returns the entries of directory `dir` by name, or none when the
    /// tree has no directory there.
    fn list(&mut self, dir: &WorldPath) -> io::Result<BTreeMap<Vec<u8>, Listed>> {
        let mut names = BTreeMap::new();
        let Some(opened) = self.dir(dir.as_bytes())? else {
            return Ok(names);
        };
        for entry in opened.entries()? {
            let entry = entry?;
            // std reads the type from `d_type` and calls lstat only when it
            // is `DT_UNKNOWN`. btrfs always fills it in.
            let listed = Listed {
                ino: entry.ino(),
                dir: entry.file_type().ok().map(|file_type| file_type.is_dir()),
            };
            names.insert(entry.file_name().as_bytes().to_vec(), listed);
        }
        Ok(names)
    }
}

/// Returns the error of a lookup below a path that a tree lacks.
fn missing() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// Changes found so far, by path.
type Changes = BTreeMap<WorldPath, Change>;

/// Compares every path of both trees.
pub fn walk(sides: &Sides<'_>) -> io::Result<Vec<Change>> {
    let roots = Roots::open(sides)?;
    // One thread walks, because the lookups need a thread of their own.
    let root = [WorldPath::root()];
    let mut walked = in_parallel(
        &root,
        || roots.trees(),
        |trees, root| {
            let mut changes = Changes::new();
            record(&mut changes, compare(trees, root)?);
            walk_dir(trees, root, &mut changes)?;
            Ok(changes)
        },
    )?;
    Ok(walked.pop().unwrap_or_default().into_values().collect())
}

/// Compares the paths of the inodes written after transaction `since`, and
/// the entries of the directories among them.
pub fn fast(sides: &Sides<'_>, since: u64) -> io::Result<Vec<Change>> {
    let started = std::time::Instant::now();
    let roots = Roots::open(sides)?;
    let world = File::open(sides.world)?;
    let changed = btrfs::changed_inodes(&world, since)?;
    let searched = started.elapsed();
    let candidates = resolve_paths(&world, &changed)?;
    let list: Vec<&WorldPath> = candidates.iter().collect();
    let resolved = started.elapsed();

    // First every candidate on its own, then what lies around them: the
    // entries of changed directories, and what lies below a directory that
    // was added, deleted or replaced.
    let compared = in_parallel(
        &list,
        || roots.trees(),
        |trees, path| {
            let (change, base, world) = compare_statuses(trees, path)?;
            Ok(Compared {
                path,
                change,
                base,
                world,
            })
        },
    )?;
    let added_names = added_name_bytes(&compared);
    let nearby = in_parallel(
        &compared,
        || roots.trees(),
        |trees, candidate| {
            let mut changes = Changes::new();
            let (Some(base), Some(world)) = (&candidate.base, &candidate.world) else {
                if candidate
                    .base
                    .as_ref()
                    .or(candidate.world.as_ref())
                    .is_some_and(is_dir)
                {
                    descend(trees, candidate.path, &mut changes)?;
                }
                return Ok(changes);
            };
            match (is_dir(base), is_dir(world)) {
                (false, false) => {}
                (true, true) if base.ino == world.ino => {
                    let added = added_names.get(candidate.path.as_bytes()).copied();
                    if may_have_lost_entries(base, world, added.unwrap_or(0)) {
                        compare_entries(trees, candidate.path, &candidates, &mut changes)?;
                    }
                }
                _ => descend(trees, candidate.path, &mut changes)?,
            }
            Ok(changes)
        },
    )?;

    let mut changes = Changes::new();
    for candidate in compared {
        record(&mut changes, candidate.change);
    }
    for part in nearby {
        changes.extend(part);
    }
    tracing::debug!(
        candidates = candidates.len(),
        changes = changes.len(),
        search_ms = searched.as_millis() as u64,
        paths_ms = (resolved - searched).as_millis() as u64,
        compare_ms = (started.elapsed() - resolved).as_millis() as u64,
        "fast diff"
    );
    Ok(changes.into_values().collect())
}

/// A candidate of the fast path, compared on its own.
struct Compared<'a> {
    path: &'a WorldPath,
    change: Option<Change>,
    base: Option<sysfs::Status>,
    world: Option<sysfs::Status>,
}

fn is_dir(status: &sysfs::Status) -> bool {
    status.mode & libc::S_IFMT == libc::S_IFDIR
}

/// Returns, by directory, the total length of the names of the candidates
/// that are new in it: missing in the base, present in the world.
fn added_name_bytes<'a>(compared: &[Compared<'a>]) -> HashMap<&'a [u8], u64> {
    let mut added: HashMap<&[u8], u64> = HashMap::new();
    for candidate in compared {
        if candidate.base.is_some() || candidate.world.is_none() {
            continue;
        }
        if let Some((parent, name)) = candidate.path.parent_and_name() {
            *added.entry(parent).or_default() += name.len() as u64;
        }
    }
    added
}

/// Returns whether a directory, the same inode in the base (`base`) and the
/// world (`world`), may have lost a name since the base, given the total
/// length `added` of the names that the candidates added to it.
///
/// The size of a btrfs directory is twice the total length of its names.
/// Every name that the world added points to a changed inode, because
/// linking and renaming move the ctime, so that inode is a candidate. The
/// removed names then have a total length of (base size + 2 × `added` −
/// world size) / 2. When that is zero, nothing was removed and every new or
/// replaced entry is a candidate, so the listings need no comparing. Any
/// other result compares them.
///
/// NOTE: a name that is not a candidate, such as that of a subvolume made
/// inside the world, goes unseen when a removed name of the same length
/// hides it.
fn may_have_lost_entries(base: &sysfs::Status, world: &sysfs::Status, added: u64) -> bool {
    base.size.checked_add(added.saturating_mul(2)) != Some(world.size)
}

/// Runs `work` on every item of `items` on a few threads and returns the
/// results in order, or the first error. Each thread makes its own state
/// with `state` and passes it to every call of `work`. Comparing is mostly
/// waiting for inode lookups, so threads help even where the CPUs are few.
fn in_parallel<T: Sync, R: Send, S>(
    items: &[T],
    state: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> io::Result<R> + Sync,
) -> io::Result<Vec<R>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let chunk = items.len().div_ceil(threads).max(1);
    let (state, work) = (&state, &work);
    let parts: Vec<io::Result<Vec<R>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut state = state();
                    part.iter().map(|item| work(&mut state, item)).collect()
                })
            })
            .collect();
        process::join_all(workers, "diff worker")
    });
    let mut results = Vec::with_capacity(items.len());
    for part in parts {
        results.extend(part?);
    }
    Ok(results)
}

/// Returns the paths of the changed inodes in `changed`, relative to the
/// root of the subvolume `world`.
///
/// An inode with one link has one reference, and the path of its directory
/// is built up from the references that the search returned. Where a
/// directory's reference is missing, because it lies in a tree block that
/// did not change, it is read from the tree. The paths of an inode with
/// more links come from `BTRFS_IOC_INO_PATHS`. Directories are looked up
/// once each.
fn resolve_paths(world: &File, changed: &btrfs::TreeChanges) -> io::Result<BTreeSet<WorldPath>> {
    let mut names: HashMap<u64, Vec<&btrfs::InodeName>> = HashMap::new();
    for name in &changed.names {
        names.entry(name.ino).or_default().push(name);
    }
    let only_name = |ino: u64| match names.get(&ino).map(Vec::as_slice) {
        Some([name]) => Some(*name),
        _ => None,
    };
    let mut directories: HashMap<u64, Option<Vec<u8>>> = HashMap::new();

    let mut paths = BTreeSet::new();
    for inode in &changed.inodes {
        if inode.ino == btrfs::ROOT_DIR_INO {
            paths.insert(WorldPath::root());
            continue;
        }
        let name = (inode.nlink == 1).then(|| only_name(inode.ino)).flatten();
        let Some(name) = name else {
            for path in btrfs::inode_paths(world, inode.ino)? {
                paths.insert(WorldPath::from_bytes(&path));
            }
            continue;
        };
        if let Some(parent) =
            btrfs::directory_path(world, name.parent, &only_name, &mut directories)?
        {
            paths.insert(WorldPath::from_bytes(&parent).join(&name.name));
        }
    }
    Ok(paths)
}

/// Compares the entries of directory `dir` on both sides by name and inode
/// number, descending where an entry was added, deleted or replaced.
fn compare_entries(
    trees: &mut Trees<'_>,
    dir: &WorldPath,
    candidates: &BTreeSet<WorldPath>,
    changes: &mut Changes,
) -> io::Result<()> {
    let before = trees.base.list(dir)?;
    let after = trees.world.list(dir)?;
    let names: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    for name in names {
        let (in_base, in_world) = (before.get(name), after.get(name));
        // An entry that still names the same inode changed only if that
        // inode did, and then it is a candidate of its own.
        if in_base.is_some_and(|base| in_world.is_some_and(|world| world.ino == base.ino)) {
            continue;
        }
        let path = dir.join(name);
        // A candidate is compared, and walked below, on its own.
        if candidates.contains(&path) {
            continue;
        }
        record(changes, compare(trees, &path)?);
        // Only a directory on either side has anything below it. The type
        // comes from the directory entry, and `descend` looks up an entry
        // whose type could not be read.
        let maybe_dir =
            |listed: Option<&Listed>| listed.is_some_and(|entry| entry.dir != Some(false));
        if maybe_dir(in_base) || maybe_dir(in_world) {
            descend(trees, &path, changes)?;
        }
    }
    Ok(())
}

fn walk_dir(trees: &mut Trees<'_>, dir: &WorldPath, changes: &mut Changes) -> io::Result<()> {
    let before = trees.base.list(dir)?;
    let after = trees.world.list(dir)?;
    let names: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    for name in names {
        let path = dir.join(name);
        record(changes, compare(trees, &path)?);
        descend(trees, &path, changes)?;
    }
    Ok(())
}

/// Continues below `path` after it was compared: both sides are walked when
/// both are directories, and a directory on one side only is listed whole.
fn descend(trees: &mut Trees<'_>, path: &WorldPath, changes: &mut Changes) -> io::Result<()> {
    let base_dir = trees.base.status(path)?.as_ref().is_some_and(is_dir);
    let world_dir = trees.world.status(path)?.as_ref().is_some_and(is_dir);
    match (base_dir, world_dir) {
        (true, true) => walk_dir(trees, path, changes),
        (true, false) => list_subtree(&mut trees.base, path, ChangeKind::Deleted, changes),
        (false, true) => list_subtree(&mut trees.world, path, ChangeKind::Added, changes),
        (false, false) => Ok(()),
    }
}

/// Records everything below directory `dir` of `tree` as added or deleted.
fn list_subtree(
    tree: &mut Tree<'_>,
    dir: &WorldPath,
    kind: ChangeKind,
    changes: &mut Changes,
) -> io::Result<()> {
    for name in tree.list(dir)?.into_keys() {
        let path = dir.join(&name);
        let Some(status) = tree.status(&path)? else {
            continue;
        };
        let entry = tree.entry(&path, &status)?;
        let is_dir = entry.file_type == FileType::Directory;
        let (before, after) = match kind {
            ChangeKind::Deleted => (Some(entry), None),
            _ => (None, Some(entry)),
        };
        record(
            changes,
            Some(Change {
                path: path.clone(),
                kind,
                before,
                after,
            }),
        );
        if is_dir {
            list_subtree(tree, &path, kind, changes)?;
        }
    }
    Ok(())
}

fn record(changes: &mut Changes, change: Option<Change>) {
    if let Some(change) = change {
        changes.insert(change.path.clone(), change);
    }
}

/// Compares one path on both sides and returns its change, if any.
fn compare(trees: &mut Trees<'_>, path: &WorldPath) -> io::Result<Option<Change>> {
    Ok(compare_statuses(trees, path)?.0)
}

/// A change, if any, and the status of each side, `None` where it is
/// missing.
type Outcome = (Option<Change>, Option<sysfs::Status>, Option<sysfs::Status>);

/// Compares one path on both sides like [`compare`], and also returns the
/// status of each side.
fn compare_statuses(trees: &mut Trees<'_>, path: &WorldPath) -> io::Result<Outcome> {
    let base = trees.base.status(path)?;
    let world = trees.world.status(path)?;
    let change = compare_metadata(trees, path, base.as_ref(), world.as_ref())?;
    Ok((change, base, world))
}

/// Compares one path given the status of each side.
fn compare_metadata(
    trees: &mut Trees<'_>,
    path: &WorldPath,
    base: Option<&sysfs::Status>,
    world: Option<&sysfs::Status>,
) -> io::Result<Option<Change>> {
    if let (Some(before), Some(after)) = (base, world) {
        if before.ino == after.ino && before.ctime == after.ctime {
            return Ok(None);
        }
    }

    let before = base
        .map(|status| trees.base.entry(path, status))
        .transpose()?;
    let after = world
        .map(|status| trees.world.entry(path, status))
        .transpose()?;
    let data_changed = match (&before, &after) {
        (Some(b), Some(a))
            if b.file_type == FileType::Regular && a.file_type == FileType::Regular =>
        {
            b.size == a.size && data_differs(trees, path, a.size)?
        }
        _ => false,
    };
    let Some(kind) = classify(before.as_ref(), after.as_ref(), data_changed) else {
        return Ok(None);
    };
    Ok(Some(Change {
        path: path.clone(),
        kind,
        before,
        after,
    }))
}

/// Returns whether two files of equal size hold different data: equal
/// extent maps mean shared blocks, so no data is read for them.
fn data_differs(trees: &mut Trees<'_>, path: &WorldPath, size: u64) -> io::Result<bool> {
    let base = trees.base.open(path)?;
    let world = trees.world.open(path)?;
    if shares_extents(&base, &world)? {
        return Ok(false);
    }
    if size > COMPARE_BYTES_MAX {
        return Ok(true);
    }
    Ok(!same_bytes(&base, &world)?)
}

/// Returns whether two files have the same extent map with no inline,
/// unknown or delayed extent: then they share their blocks.
fn shares_extents(a: &File, b: &File) -> io::Result<bool> {
    let extents = sysfs::extents(a)?;
    let opaque = extents.iter().any(|e| {
        e.flags & (sysfs::Extent::DATA_INLINE | sysfs::Extent::UNKNOWN | sysfs::Extent::DELALLOC)
            != 0
    });
    Ok(!opaque && extents == sysfs::extents(b)?)
}

/// Returns whether two files read the same bytes, reading both to the end
/// with pread(2), so that their file offsets stay where they are.
///
/// NOTE: a large sparse file is read in full, holes included.
fn same_bytes(a: &File, b: &File) -> io::Result<bool> {
    let mut buffer_a = vec![0u8; 64 << 10];
    let mut buffer_b = vec![0u8; 64 << 10];
    let mut offset = 0;
    loop {
        let read_a = read_full(a, &mut buffer_a, offset)?;
        let read_b = read_full(b, &mut buffer_b, offset)?;
        if read_a != read_b || buffer_a[..read_a] != buffer_b[..read_b] {
            return Ok(false);
        }
        if read_a == 0 {
            return Ok(true);
        }
        offset += read_a as u64;
    }

    fn read_full(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            let read = file.read_at(&mut buffer[filled..], offset + filled as u64)?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        Ok(filled)
    }
}

/// Returns whether two open regular files hold the same bytes: shared
/// extents decide without reading, and otherwise both are read.
pub fn same_content(a: &File, b: &File) -> io::Result<bool> {
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    Ok(shares_extents(a, b)? || same_bytes(a, b)?)
}

/// Returns whether `path` is a regular file with the same bytes in the
/// trees at `a` and `b`: shared extents decide without reading, and
/// otherwise both are read and compared. A path that either tree lacks, or
/// that is no regular file there, is not the same.
pub fn same_data(a: &Path, b: &Path, path: &WorldPath) -> io::Result<bool> {
    let (Some(file_a), Some(file_b)) = (open_regular(a, path)?, open_regular(b, path)?) else {
        return Ok(false);
    };
    same_content(&file_a, &file_b)
}

/// Opens the regular file at `path` in the tree at `root` for reading,
/// without following a symlink anywhere in `path`, or returns `None` when
/// the tree has no regular file there.
pub fn open_regular(root: &Path, path: &WorldPath) -> io::Result<Option<File>> {
    let root = Dir::open(root)?;
    let mut tree = Tree::new(&root);
    match tree.status(path)? {
        Some(status) if status.mode & libc::S_IFMT == libc::S_IFREG => {}
        _ => return Ok(None),
    }
    match tree.open(path) {
        Ok(file) => Ok(Some(file)),
        Err(error)
            if error.kind() == io::ErrorKind::InvalidInput
                || matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Returns the file type in `status`, or an error for a type that Linux
/// does not define.
pub fn file_type(status: &sysfs::Status) -> io::Result<FileType> {
    FileType::from_mode(status.mode)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown file type"))
}

/// Builds the entry of a file of `file_type` from its status, its symlink
/// target and its extended attributes, read by the caller.
pub fn entry_of(
    status: &sysfs::Status,
    file_type: FileType,
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Entry {
    let rdev =
        matches!(file_type, FileType::CharDevice | FileType::BlockDevice).then_some(status.rdev);
    let (mtime, mtime_nsec) = status.mtime;
    Entry {
        file_type,
        size: status.size,
        mode: status.mode & 0o7777,
        uid: status.uid,
        gid: status.gid,
        mtime_ns: i128::from(mtime) * 1_000_000_000 + i128::from(mtime_nsec),
        target,
        rdev,
        xattrs,
        ino: status.ino,
        nlink: status.nlink,
    }
}

/// An entry of a directory listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listed {
    ino: u64,
    /// Whether the entry is a directory, from the `d_type` of
    /// getdents(2), or `None` when its type could not be read.
    dir: Option<bool>,
}
