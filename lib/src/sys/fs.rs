//! Extended attributes, file extent maps, inode flags and reflink clones,
//! which `std` does not offer.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Returns the extended attributes of `path` (not following a final
/// symlink), sorted by name: `user.*`, `security.capability`, POSIX ACLs in
/// `system.posix_acl_*` and the rest.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c_path = c_path(path)?;
    read_xattrs(
        // SAFETY: `c_path` is NUL-terminated and the caller passes a buffer
        // writable for `size` bytes.
        |buffer, size| unsafe { libc::llistxattr(c_path.as_ptr(), buffer, size) },
        // SAFETY: both strings are NUL-terminated and the caller passes a
        // buffer writable for `size` bytes.
        |name, buffer, size| unsafe { libc::lgetxattr(c_path.as_ptr(), name, buffer, size) },
    )
}

/// Returns the extended attributes of the open `file`, sorted by name, like
/// [`xattrs`] but without a path lookup.
pub fn file_xattrs(file: &impl AsRawFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = file.as_raw_fd();
    read_xattrs(
        // SAFETY: `fd` is open and the caller passes a buffer writable for
        // `size` bytes.
        |buffer, size| unsafe { libc::flistxattr(fd, buffer, size) },
        // SAFETY: `name` is NUL-terminated, `fd` is open and the caller
        // passes a buffer writable for `size` bytes.
        |name, buffer, size| unsafe { libc::fgetxattr(fd, name, buffer, size) },
    )
}

/// Lists the attribute names with `list` and reads each value with `get`,
/// both called like listxattr(2) and getxattr(2) with a buffer and its size.
fn read_xattrs(
    list: impl Fn(*mut libc::c_char, usize) -> isize,
    get: impl Fn(*const libc::c_char, *mut libc::c_void, usize) -> isize,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let length = loop {
        let length = list(names.as_mut_ptr().cast(), names.len());
        if length >= 0 {
            break length as usize;
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(error),
        }
    };

    let mut attributes = Vec::new();
    for name in names[..length]
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
    {
        let c_name = CString::new(name).expect("split at NUL");
        let mut value = vec![0u8; 256];
        let size = loop {
            let size = get(c_name.as_ptr(), value.as_mut_ptr().cast(), value.len());
            if size >= 0 {
                break Some(size as usize);
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                // Removed between the listing and the read.
                Some(libc::ENODATA) => break None,
                _ => return Err(error),
            }
        };
        if let Some(size) = size {
            value.truncate(size);
            attributes.push((name.to_vec(), value));
        }
    }
    attributes.sort();
    Ok(attributes)
}

/// Sets extended attribute `name` of the open `file` to `value`.
pub fn set_file_xattr(file: &File, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c_name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c_name` is NUL-terminated, `file` is open and `value` is
    // readable for `value.len()` bytes.
    let result = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes extended attribute `name` of the open `file`.
pub fn remove_file_xattr(file: &File, name: &[u8]) -> io::Result<()> {
    let c_name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c_name` is NUL-terminated and `file` is open.
    let result = unsafe { libc::fremovexattr(file.as_raw_fd(), c_name.as_ptr()) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The attributes of a file that a diff and an apply compare and copy, as
/// lstat(2) or fstat(2) returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub dev: u64,
    pub ino: u64,
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    /// Device number of a character or block device.
    pub rdev: u64,
    pub size: u64,
    /// Access time: seconds and nanoseconds since the epoch.
    pub atime: (i64, i64),
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    /// Status change time: seconds and nanoseconds since the epoch.
    pub ctime: (i64, i64),
}

impl Status {
    /// Converts what fstatat(2) or fstat(2) returned.
    pub fn from_stat(stat: &libc::stat) -> Self {
        Self {
            dev: stat.st_dev,
            ino: stat.st_ino,
            mode: stat.st_mode,
            nlink: stat.st_nlink,
            uid: stat.st_uid,
            gid: stat.st_gid,
            rdev: stat.st_rdev,
            size: stat.st_size as u64,
            atime: (stat.st_atime, stat.st_atime_nsec),
            mtime: (stat.st_mtime, stat.st_mtime_nsec),
            ctime: (stat.st_ctime, stat.st_ctime_nsec),
        }
    }

    /// Returns the status of the open `file`, with no path lookup.
    pub fn of_file(file: &File) -> io::Result<Self> {
        let stat = nix::sys::stat::fstat(file.as_raw_fd())?;
        Ok(Self::from_stat(&stat))
    }
}

impl From<&std::fs::Metadata> for Status {
    fn from(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            mode: metadata.mode(),
            nlink: metadata.nlink(),
            uid: metadata.uid(),
            gid: metadata.gid(),
            rdev: metadata.rdev(),
            size: metadata.size(),
            atime: (metadata.atime(), metadata.atime_nsec()),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Sets extended attribute `name` of `path` to `value`, not following a
/// final symlink.
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c_path = c_path(path)?;
    let c_name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both strings are NUL-terminated and `value` is readable for
    // `value.len()` bytes.
    let result = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes extended attribute `name` of `path`, not following a final
/// symlink.
pub fn remove_xattr(path: &Path, name: &[u8]) -> io::Result<()> {
    let c_path = c_path(path)?;
    let c_name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both strings are NUL-terminated.
    let result = unsafe { libc::lremovexattr(c_path.as_ptr(), c_name.as_ptr()) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// `FICLONE` is `_IOW(0x94, 9, int)` in linux/fs.h.
nix::ioctl_write_int!(ioc_ficlone, 0x94, 9);

/// Makes `to` share all data blocks of `from` with `FICLONE` (see
/// ioctl_ficlone(2)), so no data is copied and holes stay holes.
///
/// `to` must be open for writing; its old data is replaced. Fails with
/// `EXDEV` across filesystems and with `EOPNOTSUPP` or `EINVAL` where the
/// filesystem cannot share these blocks (btrfs: one file nodatacow and the
/// other not).
pub fn clone_file(from: &File, to: &File) -> io::Result<()> {
    // SAFETY: both fds are open for the duration of the call, and FICLONE
    // takes the source fd as its integer argument.
    unsafe { ioc_ficlone(to.as_raw_fd(), from.as_raw_fd() as _) }?;
    Ok(())
}

/// `FS_NOCOW_FL` of the inode flags in linux/fs.h (`chattr +C`): btrfs
/// writes the file's data in place and without checksums.
pub const NOCOW_FLAG: libc::c_int = 0x0080_0000;

// `FS_IOC_GETFLAGS` and `FS_IOC_SETFLAGS` are numbered with a `long`, but
// the kernel reads and writes an `int` (see ioctl_iflags(2)).
nix::ioctl_read_bad!(
    ioc_getflags,
    nix::request_code_read!(b'f', 1, std::mem::size_of::<libc::c_long>()),
    libc::c_int
);
nix::ioctl_write_ptr_bad!(
    ioc_setflags,
    nix::request_code_write!(b'f', 2, std::mem::size_of::<libc::c_long>()),
    libc::c_int
);

/// Returns the inode flags of `file` (`FS_*_FL`, as lsattr(1) shows them).
pub fn inode_flags(file: &File) -> io::Result<libc::c_int> {
    let mut flags: libc::c_int = 0;
    // SAFETY: `file` is an open fd and `flags` is a live int for the
    // kernel to write.
    unsafe { ioc_getflags(file.as_raw_fd(), &mut flags) }?;
    Ok(flags)
}

/// Sets the inode flags of `file` to `flags`.
pub fn set_inode_flags(file: &File, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `file` is an open fd and `flags` is a live int for the
    // kernel to read.
    unsafe { ioc_setflags(file.as_raw_fd(), &flags) }?;
    Ok(())
}

/// One extent of a file, from `FS_IOC_FIEMAP` (see
/// Documentation/filesystems/fiemap.rst in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

impl Extent {
    /// Set when the extent's data lives inside filesystem metadata, so its
    /// physical address does not identify its content.
    pub const DATA_INLINE: u32 = 0x0000_0200;
    /// Set when the extent's location is not known yet.
    pub const UNKNOWN: u32 = 0x0000_0002;
    /// Set when the extent's data is not allocated yet.
    pub const DELALLOC: u32 = 0x0000_0004;
    /// Set on the last extent of the file.
    pub const LAST: u32 = 0x0000_0001;
}

const FIEMAP_FLAG_SYNC: u32 = 0x0000_0001;
const EXTENTS_PER_CALL: usize = 256;

/// `struct fiemap` followed by room for its extents.
#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS_PER_CALL],
}

/// `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// `FS_IOC_FIEMAP` is `_IOWR('f', 11, struct fiemap)`, whose size counts
/// only the 32-byte header.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;

/// Returns the extents of `file`, after writing out its dirty data.
///
/// Two files whose extents are equal and neither inline nor unknown share
/// their data blocks, which is how a snapshot keeps an unchanged file.
pub fn extents(file: &File) -> io::Result<Vec<Extent>> {
    let empty = FiemapExtent {
        logical: 0,
        physical: 0,
        length: 0,
        reserved64: [0; 2],
        flags: 0,
        reserved: [0; 3],
    };
    let mut map = Box::new(Fiemap {
        start: 0,
        length: u64::MAX,
        flags: FIEMAP_FLAG_SYNC,
        mapped_extents: 0,
        extent_count: EXTENTS_PER_CALL as u32,
        reserved: 0,
        extents: [empty; EXTENTS_PER_CALL],
    });
    let mut found = Vec::new();
    loop {
        // SAFETY: `file` is an open fd and `map` is a live `struct fiemap`
        // with room for `extent_count` extents.
        let result = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                FS_IOC_FIEMAP as _,
                &mut *map as *mut Fiemap,
            )
        };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        let mapped = map.mapped_extents as usize;
        if mapped == 0 {
            return Ok(found);
        }
        for extent in &map.extents[..mapped] {
            found.push(Extent {
                logical: extent.logical,
                physical: extent.physical,
                length: extent.length,
                flags: extent.flags,
            });
        }
        let last = map.extents[mapped - 1];
        if last.flags & Extent::LAST != 0 {
            return Ok(found);
        }
        map.start = last.logical + last.length;
        map.length = u64::MAX - map.start;
    }
}

/// Returns whether `path` is the root of a mount, such as a bind mount
/// inside a world (`STATX_ATTR_MOUNT_ROOT`, Linux 5.8 and later).
pub fn is_mount_root(path: &Path) -> io::Result<bool> {
    let c_path = c_path(path)?;
    // SAFETY: an all-zero `struct statx` is a valid value to be overwritten.
    let mut buffer: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `buffer` is a writable
    // `struct statx`.
    let result = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            libc::STATX_BASIC_STATS,
            &mut buffer,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(buffer.stx_attributes_mask & mount_root != 0 && buffer.stx_attributes & mount_root != 0)
}
