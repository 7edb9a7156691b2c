//! btrfs subvolume operations through the ioctls of `linux/btrfs.h`.
//!
//! A subvolume is addressed by an open directory: the parent directory plus
//! a name for create, snapshot and delete, or the subvolume's own root
//! directory for flags and ids.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

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
/// Fails with `ENOTEMPTY` while the subvolume holds nested subvolumes.
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
    // `btrfs_ioctl_ino_lookup_args`; a zero treeid asks for the fd's own tree.
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
