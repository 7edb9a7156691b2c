//! btrfs subvolume operations through the ioctls of `linux/btrfs.h`.
//!
//! A subvolume is addressed by an open directory: the parent directory plus
//! a name for create, snapshot and delete, or the subvolume's own root
//! directory for flags and ids.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::copy_name;

/// `f_type` of a btrfs filesystem in `statfs(2)`.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
/// Inode number of the root directory of every btrfs subvolume.
const FIRST_FREE_OBJECTID: u64 = 256;
/// `BTRFS_SUBVOL_RDONLY` in the flags of `btrfs_ioctl_vol_args_v2`.
const SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2`, with the size/qgroup union left zero.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);

nix::ioctl_write_ptr!(ioc_resize, 0x94, 3, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy, 0x94, 15, VolArgs);
nix::ioctl_readwrite!(ioc_ino_lookup, 0x94, 18, InoLookupArgs);
nix::ioctl_write_ptr!(ioc_snap_create_v2, 0x94, 23, VolArgsV2);
nix::ioctl_write_ptr!(ioc_subvol_create_v2, 0x94, 24, VolArgsV2);
nix::ioctl_read!(ioc_subvol_getflags, 0x94, 25, u64);
nix::ioctl_write_ptr!(ioc_subvol_setflags, 0x94, 26, u64);

fn zeroed_v2() -> Box<VolArgsV2> {
    Box::new(VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: [0; 4040],
    })
}

/// Returns whether `path` lies on a btrfs filesystem.
pub fn is_btrfs(path: &Path) -> io::Result<bool> {
    let stat = nix::sys::statfs::statfs(path)?;
    Ok(stat.filesystem_type().0 as i64 == BTRFS_SUPER_MAGIC)
}

/// Returns whether `path` is the root directory of a btrfs subvolume.
pub fn is_subvolume(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path)?;
    Ok(metadata.is_dir() && metadata.ino() == FIRST_FREE_OBJECTID && is_btrfs(path)?)
}

/// Creates an empty subvolume `name` inside the directory `parent`.
pub fn create_subvolume(parent: &File, name: &OsStr) -> io::Result<()> {
    let mut args = zeroed_v2();
    copy_name(name, &mut args.name)?;
    // SAFETY: `parent` is an open fd and `args` is a live, fully initialized
    // `btrfs_ioctl_vol_args_v2` whose name is NUL-terminated.
    unsafe { ioc_subvol_create_v2(parent.as_raw_fd(), &*args) }?;
    Ok(())
}

/// Snapshots the subvolume whose root directory is `source` as `name` inside
/// the directory `parent`, read-only when `read_only` is set.
///
/// The snapshot is atomic: it shows the source as of one transaction.
pub fn snapshot(source: &File, parent: &File, name: &OsStr, read_only: bool) -> io::Result<()> {
    let mut args = zeroed_v2();
    args.fd = i64::from(source.as_raw_fd());
    if read_only {
        args.flags = SUBVOL_RDONLY;
    }
    copy_name(name, &mut args.name)?;
    // SAFETY: both fds are open for the duration of the call and `args` is a
    // live, fully initialized `btrfs_ioctl_vol_args_v2`.
    unsafe { ioc_snap_create_v2(parent.as_raw_fd(), &*args) }?;
    Ok(())
}

/// Deletes the subvolume `name` inside the directory `parent`.
///
/// Fails with `ENOTEMPTY` while the subvolume contains nested subvolumes.
pub fn delete_subvolume(parent: &File, name: &OsStr) -> io::Result<()> {
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; 4088],
    });
    copy_name(name, &mut args.name)?;
    // SAFETY: `parent` is an open fd and `args` is a live, fully initialized
    // `btrfs_ioctl_vol_args` whose name is NUL-terminated.
    unsafe { ioc_snap_destroy(parent.as_raw_fd(), &*args) }?;
    Ok(())
}

/// Returns whether the subvolume whose root directory is `subvolume` is
/// read-only.
pub fn is_read_only(subvolume: &File) -> io::Result<bool> {
    let mut flags: u64 = 0;
    // SAFETY: `subvolume` is an open fd and `flags` is a writable u64, the
    // type that BTRFS_IOC_SUBVOL_GETFLAGS fills.
    unsafe { ioc_subvol_getflags(subvolume.as_raw_fd(), &mut flags) }?;
    Ok(flags & SUBVOL_RDONLY != 0)
}

/// Marks the subvolume whose root directory is `subvolume` read-only or
/// writable.
pub fn set_read_only(subvolume: &File, read_only: bool) -> io::Result<()> {
    let mut flags: u64 = 0;
    // SAFETY: as in `is_read_only`.
    unsafe { ioc_subvol_getflags(subvolume.as_raw_fd(), &mut flags) }?;
    flags = if read_only {
        flags | SUBVOL_RDONLY
    } else {
        flags & !SUBVOL_RDONLY
    };
    // SAFETY: `subvolume` is an open fd and `flags` outlives the call.
    unsafe { ioc_subvol_setflags(subvolume.as_raw_fd(), &flags) }?;
    Ok(())
}

/// Returns the id (tree id) of the subvolume that contains the open file
/// `file`.
pub fn subvolume_id(file: &File) -> io::Result<u64> {
    let mut args = Box::new(InoLookupArgs {
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; 4080],
    });
    // SAFETY: `file` is an open fd and `args` is a live
    // `btrfs_ioctl_ino_lookup_args`; a zero treeid selects the fd's own tree.
    unsafe { ioc_ino_lookup(file.as_raw_fd(), &mut *args) }?;
    Ok(args.treeid)
}

/// Grows the filesystem mounted at `mount` to the whole of its device
/// `devid`.
pub fn resize_to_max(mount: &File, devid: u64) -> io::Result<()> {
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; 4088],
    });
    copy_name(OsStr::new(&format!("{devid}:max")), &mut args.name)?;
    // SAFETY: `mount` is an open fd and `args` is a live, fully initialized
    // `btrfs_ioctl_vol_args` whose name is NUL-terminated.
    unsafe { ioc_resize(mount.as_raw_fd(), &*args) }?;
    Ok(())
}

/// `struct btrfs_ioctl_timespec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoctlTimespec {
    sec: u64,
    nsec: u32,
}

/// `struct btrfs_ioctl_get_subvol_info_args`.
#[repr(C)]
struct SubvolInfoArgs {
    treeid: u64,
    name: [u8; 256],
    parent_id: u64,
    dirid: u64,
    generation: u64,
    flags: u64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    received_uuid: [u8; 16],
    ctransid: u64,
    otransid: u64,
    stransid: u64,
    rtransid: u64,
    ctime: IoctlTimespec,
    otime: IoctlTimespec,
    stime: IoctlTimespec,
    rtime: IoctlTimespec,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<SubvolInfoArgs>() == 504);

nix::ioctl_read!(ioc_get_subvol_info, 0x94, 60, SubvolInfoArgs);

/// Facts about one subvolume, from `BTRFS_IOC_GET_SUBVOL_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubvolumeInfo {
    /// The subvolume's tree id.
    pub id: u64,
    /// The transaction that created the subvolume or snapshot.
    pub otransid: u64,
    /// The last transaction that changed the subvolume.
    pub ctransid: u64,
    /// The last committed transaction that wrote the subvolume's tree. A
    /// change made after the commit lands in a later transaction.
    pub generation: u64,
}

/// Returns facts about the subvolume whose root directory is `subvolume`.
pub fn subvolume_info(subvolume: &File) -> io::Result<SubvolumeInfo> {
    let zero_time = IoctlTimespec { sec: 0, nsec: 0 };
    let mut args = Box::new(SubvolInfoArgs {
        treeid: 0,
        name: [0; 256],
        parent_id: 0,
        dirid: 0,
        generation: 0,
        flags: 0,
        uuid: [0; 16],
        parent_uuid: [0; 16],
        received_uuid: [0; 16],
        ctransid: 0,
        otransid: 0,
        stransid: 0,
        rtransid: 0,
        ctime: zero_time,
        otime: zero_time,
        stime: zero_time,
        rtime: zero_time,
        reserved: [0; 8],
    });
    // SAFETY: `subvolume` is an open fd and `args` is a live, writable
    // `btrfs_ioctl_get_subvol_info_args` (Linux 4.18 and later).
    unsafe { ioc_get_subvol_info(subvolume.as_raw_fd(), &mut *args) }?;
    Ok(SubvolumeInfo {
        id: args.treeid,
        otransid: args.otransid,
        ctransid: args.ctransid,
        generation: args.generation,
    })
}

/// Item type of an inode item in a subvolume tree (`BTRFS_INODE_ITEM_KEY`).
pub const INODE_ITEM_KEY: u32 = 1;

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

/// Item type of an inode reference in a subvolume tree
/// (`BTRFS_INODE_REF_KEY`): the names of an inode in one directory.
pub const INODE_REF_KEY: u32 = 12;

/// An inode whose item changed after a given transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangedInode {
    pub ino: u64,
    /// `S_IFMT` bits and permissions, as in `st_mode`.
    pub mode: u32,
    /// Number of links. btrfs counts 1 for a directory.
    pub nlink: u32,
}

/// A name of an inode in a directory, from an inode reference item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeName {
    pub ino: u64,
    /// Inode number of the directory.
    pub parent: u64,
    pub name: Vec<u8>,
}

/// The inodes and names that [`changed_inodes`] found in the tree blocks
/// written after a given transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeChanges {
    /// The inodes whose item changed.
    pub inodes: Vec<ChangedInode>,
    /// The inode references of those blocks, changed or not, as they are
    /// now, of the changed inodes and of directories. An inode's other
    /// references may lie in blocks not searched.
    pub names: Vec<InodeName>,
}

/// `struct btrfs_ioctl_search_args_v2` without its flexible buffer.
#[repr(C)]
struct SearchArgsV2 {
    key: SearchKey,
    buf_size: u64,
}

const _: () = assert!(std::mem::size_of::<SearchArgsV2>() == 112);

nix::ioctl_readwrite!(ioc_tree_search_v2, 0x94, 17, SearchArgsV2);

/// Result bytes that one `BTRFS_IOC_TREE_SEARCH_V2` call may return; a large
/// buffer saves the search from the tree's root that every call repeats.
const SEARCH_V2_BUFFER: usize = 1 << 20;

/// Returns the inodes of the subvolume at `subvolume` whose inode item was
/// written by a transaction after `since`, and the inode references found
/// on the way.
///
/// This searches the subvolume's tree with `BTRFS_IOC_TREE_SEARCH_V2`. The
/// search visits only tree blocks written after `since`, so its cost grows
/// with the number of changes, not with the size of the subvolume. Each
/// inode item stores the transaction of its last change, which filters out
/// the unchanged neighbours that share a rewritten block. Changes that are
/// not yet in the tree (delayed inode updates) are missed: commit them
/// first, with syncfs(2) or by searching a new snapshot.
pub fn changed_inodes(subvolume: &File, since: u64) -> io::Result<TreeChanges> {
    // The search is split by inode number among a few threads, because
    // copying out the items of the rewritten blocks is most of its cost.
    let top = highest_changed_objectid(subvolume, since)?;
    let step = (top / SEARCH_PARTS).max(1);

    let ranges: Vec<(u64, u64)> = (0..SEARCH_PARTS)
        .map(|part| {
            let start = part * step;
            let end = if part + 1 == SEARCH_PARTS {
                u64::MAX
            } else {
                start + step - 1
            };
            (start, end)
        })
        .collect();

    // Each thread takes the next range until none is left.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, SEARCH_THREADS);
    let next = AtomicUsize::new(0);
    let parts: Vec<io::Result<Vec<(usize, TreeChanges)>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut words = search_buffer(SEARCH_V2_BUFFER);
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&range) = ranges.get(index) else {
                            return Ok(done);
                        };
                        done.push((index, search_changed(subvolume, since, range, &mut words)?));
                    }
                })
            })
            .collect();
        super::process::join_all(workers, "tree search thread")
    });

    // The ranges are put back in order of inode number.
    let mut found = Vec::new();
    for part in parts {
        found.extend(part?);
    }
    found.sort_by_key(|(index, _)| *index);
    let mut changed = TreeChanges::default();
    for (_, part) in found {
        changed.inodes.extend(part.inodes);
        changed.names.extend(part.names);
    }
    Ok(changed)
}

/// The number of ranges of inode numbers that [`changed_inodes`] searches
/// apart.
const SEARCH_PARTS: u64 = 8;
/// The maximum number of threads that [`changed_inodes`] uses.
const SEARCH_THREADS: usize = 4;
/// Inode numbers stay below this bound. Above it lie the reserved
/// objectids of special items, such as orphan items, which the last range
/// of a search covers.
const INODE_OBJECTID_BOUND: u64 = 1 << 62;

/// Returns the highest objectid below [`INODE_OBJECTID_BOUND`] of an item
/// in the tree blocks of `subvolume` written after transaction `since`, or
/// 0 when there is none, by bisection with searches of one item.
fn highest_changed_objectid(subvolume: &File, since: u64) -> io::Result<u64> {
    let mut words = search_buffer(ONE_ITEM_BUFFER);
    let Some(mut low) = first_changed_objectid(subvolume, since, 0, &mut words)? else {
        return Ok(0);
    };
    // An item has objectid `low`, and none has one from `high` up.
    let mut high = INODE_OBJECTID_BOUND;
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        match first_changed_objectid(subvolume, since, middle, &mut words)? {
            Some(found) => low = found,
            None => high = middle,
        }
    }
    Ok(low)
}

/// Returns the objectid of the first item at or above objectid `from` and
/// below [`INODE_OBJECTID_BOUND`] in the tree blocks written after
/// transaction `since`.
fn first_changed_objectid(
    subvolume: &File,
    since: u64,
    from: u64,
    words: &mut SearchBuffer,
) -> io::Result<Option<u64>> {
    let mut first = None;
    let objectids = (from, INODE_OBJECTID_BOUND - 1);
    let types = (0, u32::MAX);
    search_items(
        subvolume,
        since,
        objectids,
        types,
        Some(1),
        words,
        &mut |objectid, _, _, _| {
            first.get_or_insert(objectid);
        },
    )?;
    Ok(first)
}

/// A buffer for `BTRFS_IOC_TREE_SEARCH_V2`, in u64 words so that it is
/// aligned for the header at its start.
type SearchBuffer = Vec<u64>;

/// Returns a search buffer with room for `results` bytes of results.
fn search_buffer(results: usize) -> SearchBuffer {
    vec![0u64; (std::mem::size_of::<SearchArgsV2>() + results).div_ceil(8)]
}

/// Result bytes of a search for one item: room for the largest item of a
/// tree with 64 KiB blocks, the largest block size.
const ONE_ITEM_BUFFER: usize = 64 << 10;

/// Returns what [`changed_inodes`] finds among the items whose objectids
/// lie in `objectids`, both ends included, searching through `words`.
fn search_changed(
    subvolume: &File,
    since: u64,
    objectids: (u64, u64),
    words: &mut SearchBuffer,
) -> io::Result<TreeChanges> {
    let mut changed = TreeChanges::default();
    // The inode item comes before the references of the same inode. Only
    // the names of changed inodes and of directories are kept, since paths
    // are built from those alone: the unchanged files that share a block
    // are most of the names.
    let mut unneeded_names_of = None;
    let types = (0, u32::MAX);
    search_items(
        subvolume,
        since,
        objectids,
        types,
        None,
        words,
        &mut |objectid, key_type, offset, item| {
            // struct btrfs_inode_item: generation at 0, transid at 8, nlink at
            // 40, mode at 52.
            if key_type == INODE_ITEM_KEY && item.len() >= 56 {
                let mode = read_u32(item, 52);
                let is_changed = read_u64(item, 8) > since;
                if is_changed {
                    changed.inodes.push(ChangedInode {
                        ino: objectid,
                        mode,
                        nlink: read_u32(item, 40),
                    });
                }
                let is_directory = mode & libc::S_IFMT == libc::S_IFDIR;
                unneeded_names_of = (!is_changed && !is_directory).then_some(objectid);
            }
            if key_type == INODE_REF_KEY && unneeded_names_of != Some(objectid) {
                push_names(&mut changed.names, objectid, offset, item);
            }
        },
    )?;
    Ok(changed)
}

/// Adds the names of inode `ino` in directory `parent` that the inode
/// reference item `item` contains to `names`. The item packs one or more
/// `struct btrfs_inode_ref`: index (u64), name length (u16), then the name.
fn push_names(names: &mut Vec<InodeName>, ino: u64, parent: u64, item: &[u8]) {
    let mut at = 0;
    while let Some(header) = item.get(at..at + 10) {
        let length = u16::from_le_bytes([header[8], header[9]]) as usize;
        let Some(name) = item.get(at + 10..at + 10 + length) else {
            break;
        };
        names.push(InodeName {
            ino,
            parent,
            name: name.to_vec(),
        });
        at += 10 + length;
    }
}

/// Returns the name of directory `ino` in its parent directory, from its
/// inode reference in the tree of the subvolume at `subvolume`, or `None`
/// when it has none: a directory has at most one name.
pub fn directory_name(subvolume: &File, ino: u64) -> io::Result<Option<InodeName>> {
    let mut names = Vec::new();
    let mut words = search_buffer(DIRECTORY_REF_BUFFER);
    let types = (INODE_REF_KEY, INODE_REF_KEY);
    search_items(
        subvolume,
        0,
        (ino, ino),
        types,
        Some(1),
        &mut words,
        &mut |objectid, _, parent, item| {
            push_names(&mut names, objectid, parent, item);
        },
    )?;
    Ok(names.into_iter().next())
}

/// Inode number of a subvolume's root directory.
pub const ROOT_DIR_INO: u64 = 256;

/// The maximum number of directory levels that [`directory_path`] builds a
/// path from, one name at a time, before it looks the rest up with
/// `BTRFS_IOC_INO_PATHS`. The limit also ends a loop of references in a
/// damaged tree.
const MAX_DIRECTORY_DEPTH: usize = 4096;

/// Returns the path of directory `ino` relative to the root of the
/// subvolume at `subvolume`, or `None` when it has none (an unlinked
/// directory), and remembers it and the directories above it in `known`.
///
/// The path is built from the directory's name and its parent's path, one
/// level at a time, until a directory whose path `known` contains. Each
/// name comes from `names` where that returns one, else from a one-item
/// search of the tree ([`directory_name`]).
pub fn directory_path<'a>(
    subvolume: &File,
    ino: u64,
    names: &dyn Fn(u64) -> Option<&'a InodeName>,
    known: &mut HashMap<u64, Option<Vec<u8>>>,
) -> io::Result<Option<Vec<u8>>> {
    let mut chain: Vec<(u64, Cow<'a, [u8]>)> = Vec::new();
    let mut current = ino;
    let mut path = loop {
        if current == ROOT_DIR_INO {
            break Some(Vec::new());
        }
        if let Some(path) = known.get(&current) {
            break path.clone();
        }
        if chain.len() >= MAX_DIRECTORY_DEPTH {
            let found = inode_paths(subvolume, current)?.into_iter().next();
            known.insert(current, found.clone());
            break found;
        }
        let (name, parent) = match names(current) {
            Some(name) => (Cow::Borrowed(name.name.as_slice()), name.parent),
            None => match directory_name(subvolume, current)? {
                Some(name) => (Cow::Owned(name.name), name.parent),
                None => {
                    known.insert(current, None);
                    break None;
                }
            },
        };
        chain.push((current, name));
        current = parent;
    };

    // Walk back down, remembering each directory on the way.
    for (ino, name) in chain.iter().rev() {
        path = path.map(|mut parent| {
            if !parent.is_empty() {
                parent.push(b'/');
            }
            parent.extend_from_slice(name);
            parent
        });
        known.insert(*ino, path.clone());
    }
    Ok(path)
}

/// Result bytes of a search for a directory's reference: its header and
/// one name of at most 255 bytes.
const DIRECTORY_REF_BUFFER: usize = 1024;

/// A visitor of the items of a tree search, called with each item's
/// objectid, type, offset and data.
type VisitItem<'a> = dyn FnMut(u64, u32, u64, &[u8]) + 'a;

/// Calls `visit` with the objectid, type, offset and data of each item
/// in the tree blocks of `subvolume` written after transaction `since`, in
/// key order, from key (`first`, `min_type`, 0) to key (`last`, `max_type`,
/// maximum offset). With `limit`, it stops after that many items. The
/// results pass through `words`, a search header followed by the result
/// bytes.
fn search_items(
    subvolume: &File,
    since: u64,
    (first, last): (u64, u64),
    (min_type, max_type): (u32, u32),
    limit: Option<u32>,
    words: &mut SearchBuffer,
    visit: &mut VisitItem<'_>,
) -> io::Result<()> {
    let header = std::mem::size_of::<SearchArgsV2>();
    let buffer_size = words.len() * 8 - header;
    let mut key = SearchKey {
        // Zero selects the tree of the subvolume that contains the fd.
        tree_id: 0,
        min_objectid: first,
        max_objectid: last,
        min_offset: 0,
        max_offset: u64::MAX,
        min_transid: since.saturating_add(1),
        max_transid: u64::MAX,
        min_type,
        max_type,
        nr_items: 0,
        unused: 0,
        unused1: 0,
        unused2: 0,
        unused3: 0,
        unused4: 0,
    };
    let mut remaining = limit.unwrap_or(u32::MAX);
    while remaining > 0 {
        key.nr_items = remaining;
        let args = words.as_mut_ptr().cast::<SearchArgsV2>();
        // SAFETY: `words` is at least `header` bytes, 8-aligned, and owned
        // here, so writing one `SearchArgsV2` at its start is sound.
        unsafe {
            args.write(SearchArgsV2 {
                key: SearchKey { ..key },
                buf_size: buffer_size as u64,
            });
        }
        // SAFETY: `subvolume` is an open fd; `args` points at a search
        // header followed by `buf_size` writable bytes of `words`.
        unsafe { ioc_tree_search_v2(subvolume.as_raw_fd(), args) }?;
        // SAFETY: the kernel wrote the header; reading it back is sound.
        let count = unsafe { (*args).key.nr_items };
        if count == 0 {
            break;
        }
        if limit.is_some() {
            remaining = remaining.saturating_sub(count);
        }
        // SAFETY: `words` contains `header + buffer_size` initialized bytes,
        // viewed here as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) };
        let buffer = &bytes[header..];
        let mut offset = 0usize;
        let mut last_key = (0u64, 0u32, 0u64);
        for _ in 0..count {
            // struct btrfs_ioctl_search_header: transid, objectid, offset,
            // type, len.
            let item_header = &buffer[offset..offset + 32];
            let objectid = read_u64(item_header, 8);
            let key_offset = read_u64(item_header, 16);
            let key_type = read_u32(item_header, 24);
            let length = read_u32(item_header, 28) as usize;
            let item = &buffer[offset + 32..offset + 32 + length];
            offset += 32 + length;
            last_key = (objectid, key_type, key_offset);
            visit(objectid, key_type, key_offset, item);
        }
        // Continue after the last key returned: (objectid, type, offset)
        // ordered as a tuple.
        let (objectid, key_type, key_offset) = last_key;
        if key_offset < u64::MAX {
            (key.min_objectid, key.min_type, key.min_offset) = (objectid, key_type, key_offset + 1);
        } else if key_type < u32::MAX {
            (key.min_objectid, key.min_type, key.min_offset) = (objectid, key_type + 1, 0);
        } else if objectid < last {
            (key.min_objectid, key.min_type, key.min_offset) = (objectid + 1, 0, 0);
        } else {
            break;
        }
    }
    Ok(())
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// `struct btrfs_ioctl_ino_path_args`.
#[repr(C)]
struct InoPathArgs {
    inum: u64,
    size: u64,
    reserved: [u64; 4],
    fspath: u64,
}

nix::ioctl_readwrite!(ioc_ino_paths, 0x94, 35, InoPathArgs);

/// Returns every path of inode `ino` in the subvolume at `subvolume`,
/// relative to the subvolume's root, one per hard link.
pub fn inode_paths(subvolume: &impl AsRawFd, ino: u64) -> io::Result<Vec<Vec<u8>>> {
    // The kernel allocates and copies back the whole buffer on every call,
    // so it starts small and grows only for inodes with long or many paths.
    let mut size = 4096;
    loop {
        // The kernel fills a `struct btrfs_data_container`: four u32
        // counters, then one u64 per path giving the path's offset from the
        // start of that array, then the NUL-terminated paths.
        let mut container = vec![0u64; size / 8];
        let mut args = InoPathArgs {
            inum: ino,
            size: size as u64,
            reserved: [0; 4],
            fspath: container.as_mut_ptr() as u64,
        };
        // SAFETY: `subvolume` is an open fd; `fspath` points at `size`
        // writable bytes that outlive the call.
        unsafe { ioc_ino_paths(subvolume.as_raw_fd(), &mut args) }?;
        // SAFETY: `container` contains `size` initialized bytes (zeroed, then
        // written by the kernel), so viewing them as bytes is sound.
        let bytes = unsafe { std::slice::from_raw_parts(container.as_ptr().cast::<u8>(), size) };
        let missing = read_u32(bytes, 4);
        let count = read_u32(bytes, 8) as usize;
        if missing > 0 && size < 16 << 20 {
            size *= 16;
            continue;
        }
        let values = &bytes[16..];
        let mut paths = Vec::with_capacity(count);
        for index in 0..count {
            let start = read_u64(values, index * 8) as usize;
            let Some(text) = values.get(start..) else {
                continue;
            };
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            paths.push(text[..end].to_vec());
        }
        return Ok(paths);
    }
}
