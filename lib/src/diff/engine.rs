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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;

use super::model::{classify, Change, ChangeKind, Entry, FileType};
use crate::path::WorldPath;
use crate::sys::{btrfs, fs as sysfs};

/// Files up to this size whose extents differ are compared byte by byte, so
/// that a rewrite with the same bytes is no change. Larger ones count as
/// modified without reading them.
const COMPARE_BYTES_MAX: u64 = 1 << 20;

/// The two trees of a diff.
pub struct Sides<'a> {
    pub base: &'a Path,
    pub world: &'a Path,
}

/// Changes found so far, by path.
type Changes = BTreeMap<WorldPath, Change>;

/// Compares every path of both trees.
pub fn walk(sides: &Sides<'_>) -> io::Result<Vec<Change>> {
    let mut changes = Changes::new();
    record(&mut changes, compare(sides, &WorldPath::root())?);
    walk_dir(sides, &WorldPath::root(), &mut changes)?;
    Ok(changes.into_values().collect())
}

/// Compares the paths of the inodes written after transaction `since`, and
/// the entries of the directories among them.
pub fn fast(sides: &Sides<'_>, since: u64) -> io::Result<Vec<Change>> {
    let started = std::time::Instant::now();
    let world = File::open(sides.world)?;
    let changed = btrfs::changed_inodes(&world, since)?;
    let searched = started.elapsed();
    let candidates = resolve_paths(&world, &changed)?;
    let list: Vec<&WorldPath> = candidates.iter().collect();
    let resolved = started.elapsed();

    // First every candidate on its own, then what lies around them: the
    // entries of changed directories, and what lies below a directory that
    // was added, deleted or replaced.
    let compared = in_parallel(&list, |path| {
        let (change, base, world) = compare_statuses(sides, path)?;
        Ok(Compared {
            path,
            change,
            base,
            world,
        })
    })?;
    let added_names = added_name_bytes(&compared);
    let nearby = in_parallel(&compared, |candidate| {
        let mut changes = Changes::new();
        let (Some(base), Some(world)) = (&candidate.base, &candidate.world) else {
            if candidate
                .base
                .as_ref()
                .or(candidate.world.as_ref())
                .is_some_and(Metadata::is_dir)
            {
                descend(sides, candidate.path, &mut changes)?;
            }
            return Ok(changes);
        };
        match (base.is_dir(), world.is_dir()) {
            (false, false) => {}
            (true, true) if base.ino() == world.ino() => {
                let added = added_names.get(candidate.path.as_bytes()).copied();
                if may_have_lost_entries(base, world, added.unwrap_or(0)) {
                    compare_entries(sides, candidate.path, &candidates, &mut changes)?;
                }
            }
            _ => descend(sides, candidate.path, &mut changes)?,
        }
        Ok(changes)
    })?;

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
    base: Option<Metadata>,
    world: Option<Metadata>,
}

/// Returns, by directory, the total length of the names of the candidates
/// that are new in it: missing in the base, present in the world.
fn added_name_bytes<'a>(compared: &[Compared<'a>]) -> HashMap<&'a [u8], u64> {
    let mut added: HashMap<&[u8], u64> = HashMap::new();
    for candidate in compared {
        if candidate.path.is_root() || candidate.base.is_some() || candidate.world.is_none() {
            continue;
        }
        let bytes = candidate.path.as_bytes();
        let (parent, name) = match bytes.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&bytes[..slash], &bytes[slash + 1..]),
            None => (&bytes[..0], bytes),
        };
        *added.entry(parent).or_default() += name.len() as u64;
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
fn may_have_lost_entries(base: &Metadata, world: &Metadata, added: u64) -> bool {
    base.size().checked_add(added.saturating_mul(2)) != Some(world.size())
}

/// Runs `work` on every item of `items` on a few threads and returns the
/// results in order, or the first error. Comparing is mostly waiting for
/// inode lookups, so threads help even where the CPUs are few.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> io::Result<R> + Sync,
) -> io::Result<Vec<R>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let chunk = items.len().div_ceil(threads).max(1);
    let work = &work;
    let parts: Vec<io::Result<Vec<R>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(work).collect()))
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("diff worker panicked")))
            })
            .collect()
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
    sides: &Sides<'_>,
    dir: &WorldPath,
    candidates: &BTreeSet<WorldPath>,
    changes: &mut Changes,
) -> io::Result<()> {
    let before = read_dir(&dir.under(sides.base))?;
    let after = read_dir(&dir.under(sides.world))?;
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
        record(changes, compare(sides, &path)?);
        // Only a directory on either side has anything below it. The type
        // comes from the directory entry, and `descend` looks up an entry
        // whose type could not be read.
        let maybe_dir =
            |listed: Option<&Listed>| listed.is_some_and(|entry| entry.dir != Some(false));
        if maybe_dir(in_base) || maybe_dir(in_world) {
            descend(sides, &path, changes)?;
        }
    }
    Ok(())
}

fn walk_dir(sides: &Sides<'_>, dir: &WorldPath, changes: &mut Changes) -> io::Result<()> {
    let before = read_dir(&dir.under(sides.base))?;
    let after = read_dir(&dir.under(sides.world))?;
    let names: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    for name in names {
        let path = dir.join(name);
        record(changes, compare(sides, &path)?);
        descend(sides, &path, changes)?;
    }
    Ok(())
}

/// Continues below `path` after it was compared: both sides are walked when
/// both are directories, and a directory on one side only is listed whole.
fn descend(sides: &Sides<'_>, path: &WorldPath, changes: &mut Changes) -> io::Result<()> {
    let base_dir = lstat(&path.under(sides.base))?.is_some_and(|m| m.is_dir());
    let world_dir = lstat(&path.under(sides.world))?.is_some_and(|m| m.is_dir());
    match (base_dir, world_dir) {
        (true, true) => walk_dir(sides, path, changes),
        (true, false) => list_subtree(sides.base, path, ChangeKind::Deleted, changes),
        (false, true) => list_subtree(sides.world, path, ChangeKind::Added, changes),
        (false, false) => Ok(()),
    }
}

/// Records everything below directory `dir` of `root` as added or deleted.
fn list_subtree(
    root: &Path,
    dir: &WorldPath,
    kind: ChangeKind,
    changes: &mut Changes,
) -> io::Result<()> {
    for name in read_dir(&dir.under(root))?.into_keys() {
        let path = dir.join(&name);
        let host = path.under(root);
        let Some(metadata) = lstat(&host)? else {
            continue;
        };
        let entry = read_entry(&host, &metadata)?;
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
            list_subtree(root, &path, kind, changes)?;
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
pub fn compare(sides: &Sides<'_>, path: &WorldPath) -> io::Result<Option<Change>> {
    Ok(compare_statuses(sides, path)?.0)
}

/// Compares one path on both sides like [`compare`], and also returns the
/// attributes of each side, or `None` where the path is missing.
fn compare_statuses(
    sides: &Sides<'_>,
    path: &WorldPath,
) -> io::Result<(Option<Change>, Option<Metadata>, Option<Metadata>)> {
    let base_host = path.under(sides.base);
    let world_host = path.under(sides.world);
    let base_metadata = lstat(&base_host)?;
    let world_metadata = lstat(&world_host)?;
    let change = compare_metadata(
        path,
        (&base_host, base_metadata.as_ref()),
        (&world_host, world_metadata.as_ref()),
    )?;
    Ok((change, base_metadata, world_metadata))
}

/// Compares one path given the host path and attributes of each side.
fn compare_metadata(
    path: &WorldPath,
    (base_host, base_metadata): (&Path, Option<&Metadata>),
    (world_host, world_metadata): (&Path, Option<&Metadata>),
) -> io::Result<Option<Change>> {
    if let (Some(before), Some(after)) = (base_metadata, world_metadata) {
        let untouched = before.ino() == after.ino()
            && before.ctime() == after.ctime()
            && before.ctime_nsec() == after.ctime_nsec();
        if untouched {
            return Ok(None);
        }
    }

    let before = base_metadata
        .map(|metadata| read_entry(base_host, metadata))
        .transpose()?;
    let after = world_metadata
        .map(|metadata| read_entry(world_host, metadata))
        .transpose()?;
    let data_changed = match (&before, &after) {
        (Some(b), Some(a))
            if b.file_type == FileType::Regular && a.file_type == FileType::Regular =>
        {
            b.size == a.size && data_differs(base_host, world_host, a.size)?
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
fn data_differs(base: &Path, world: &Path, size: u64) -> io::Result<bool> {
    let base_extents = sysfs::extents(&File::open(base)?)?;
    let world_extents = sysfs::extents(&File::open(world)?)?;
    let opaque = |extents: &[sysfs::Extent]| {
        extents.iter().any(|e| {
            e.flags
                & (sysfs::Extent::DATA_INLINE | sysfs::Extent::UNKNOWN | sysfs::Extent::DELALLOC)
                != 0
        })
    };
    if base_extents == world_extents && !opaque(&base_extents) {
        return Ok(false);
    }
    if size > COMPARE_BYTES_MAX {
        return Ok(true);
    }
    Ok(fs::read(base)? != fs::read(world)?)
}

/// Returns whether two regular files hold the same bytes: shared extents
/// decide without reading, and otherwise both are read and compared.
///
/// NOTE: a large sparse file whose extents differ is read in full,
/// holes included.
pub fn same_data(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read;
    let (mut file_a, mut file_b) = (File::open(a)?, File::open(b)?);
    if file_a.metadata()?.len() != file_b.metadata()?.len() {
        return Ok(false);
    }
    let extents_a = sysfs::extents(&file_a)?;
    let shared = extents_a == sysfs::extents(&file_b)?
        && !extents_a.iter().any(|e| {
            e.flags
                & (sysfs::Extent::DATA_INLINE | sysfs::Extent::UNKNOWN | sysfs::Extent::DELALLOC)
                != 0
        });
    if shared {
        return Ok(true);
    }
    let mut buffer_a = vec![0u8; 1 << 20];
    let mut buffer_b = vec![0u8; 1 << 20];
    loop {
        let read_a = read_full(&mut file_a, &mut buffer_a)?;
        let read_b = read_full(&mut file_b, &mut buffer_b)?;
        if read_a != read_b || buffer_a[..read_a] != buffer_b[..read_b] {
            return Ok(false);
        }
        if read_a == 0 {
            return Ok(true);
        }
    }

    fn read_full(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            let read = file.read(&mut buffer[filled..])?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        Ok(filled)
    }
}

/// Reads the attributes of the file at `host`, not following a final
/// symlink.
pub fn read_entry(host: &Path, metadata: &Metadata) -> io::Result<Entry> {
    let status = sysfs::Status::from(metadata);
    let file_type = file_type(&status)?;
    let target = match file_type {
        FileType::Symlink => Some(fs::read_link(host)?.into_os_string().as_bytes().to_vec()),
        _ => None,
    };
    Ok(entry_of(&status, file_type, target, sysfs::xattrs(host)?))
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

// NOTE: host paths are the store's pool path plus the world path, so a
// world path near PATH_MAX fails with ENAMETOOLONG; walking with directory
// descriptors (openat) would lift that limit.
fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(error) if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            Ok(None)
        }
        Err(error) => Err(error),
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

/// Returns the entries of directory `path` by name, or none when it is
/// missing or not a directory.
fn read_dir(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Listed>> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(BTreeMap::new())
        }
        Err(error) => return Err(error),
    };
    let mut names = BTreeMap::new();
    for entry in entries {
        let entry = entry?;
        // std reads the type from `d_type` and calls lstat only when it is
        // `DT_UNKNOWN`. btrfs always fills it in.
        let listed = Listed {
            ino: entry.ino(),
            dir: entry.file_type().ok().map(|file_type| file_type.is_dir()),
        };
        names.insert(entry.file_name().as_bytes().to_vec(), listed);
    }
    Ok(names)
}
