//! Directory handles that resolve paths beneath a root without following
//! symlinks, and the `*at` calls that act on one entry of such a directory.
//!
//! [`Dir::open_dir`] opens a descendant with openat2(2) and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV` (Linux 5.6). A symlink anywhere in the path fails with
//! `ELOOP`. A `..` out of the root, or a mount point such as a bind mount
//! of a host folder, fails with `EXDEV`. The other methods act on a
//! single name in the directory and never follow a symlink at that name.
//!
//! Extended attributes and `lstat` have no `*at` form in `std`, and the
//! xattr `*at` calls need Linux 6.13, so those go through the path
//! `/proc/self/fd/<dir>/<name>` with the calls that do not follow a final
//! symlink: the kernel jumps to the directory through the fd link, then
//! looks `name` up in it. This needs procfs mounted at `/proc`.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::fs as sysfs;

/// Returns the openat2(2) resolve flags of every path below a [`Dir`].
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// An open directory, the base of the `*at` calls on its entries.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl std::os::fd::AsRawFd for Dir {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl Dir {
    /// Opens the directory at `path`, following symlinks in `path` itself
    /// because the caller chose it.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self { fd: file.into() })
    }

    /// Opens directory `relative` (raw bytes, `/`-separated) beneath this
    /// one, or this one again when `relative` is empty.
    ///
    /// Fails with `ELOOP` when a component is a symlink, and with `EXDEV`
    /// when the path would leave this directory or cross a mount point.
    pub fn open_dir(&self, relative: &[u8]) -> io::Result<Self> {
        if relative.is_empty() {
            return Ok(Self {
                fd: self.fd.try_clone()?,
            });
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(beneath());
        let fd = nix::fcntl::openat2(self.fd.as_raw_fd(), OsStr::from_bytes(relative), how)?;
        // SAFETY: openat2 returned a new fd that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes this directory the working directory of the calling thread
    /// (fchdir(2)). Call it only on a thread that has its own working
    /// directory ([`super::process::own_working_directory`]).
    pub fn enter(&self) -> io::Result<()> {
        Ok(nix::unistd::fchdir(self.raw())?)
    }

    /// Returns the status of this directory itself.
    pub fn own_status(&self) -> io::Result<sysfs::Status> {
        Ok(sysfs::Status::from_stat(&nix::sys::stat::fstat(
            self.raw(),
        )?))
    }

    /// Returns the extended attributes of this directory itself, sorted by
    /// name.
    pub fn own_xattrs(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        sysfs::file_xattrs(&self.fd)
    }

    /// Lists the entries of this directory, through procfs like
    /// [`Dir::proc_path`].
    pub fn entries(&self) -> io::Result<std::fs::ReadDir> {
        std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Returns the path that names entry `name` of this directory through
    /// procfs, for calls that take a path and do not follow a final symlink
    /// (`lstat`, `readlink`, `l*xattr`).
    pub fn proc_path(&self, name: &OsStr) -> PathBuf {
        let mut path = format!("/proc/self/fd/{}/", self.fd.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.as_bytes());
        PathBuf::from(OsString::from_vec(path))
    }

    /// Returns the attributes of entry `name`, not following a symlink, or
    /// `None` when it does not exist.
    pub fn metadata(&self, name: &OsStr) -> io::Result<Option<Metadata>> {
        match std::fs::symlink_metadata(self.proc_path(name)) {
            Ok(metadata) => Ok(Some(metadata)),
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Returns the status of entry `name`, not following a symlink, or
    /// `None` when it does not exist. Unlike [`Dir::metadata`] it looks up
    /// only `name`, with fstatat(2) on this directory.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<sysfs::Status>> {
        match nix::sys::stat::fstatat(Some(self.raw()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(sysfs::Status::from_stat(&stat))),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Returns the target of symlink `name`, as it is stored.
    pub fn read_link(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        Ok(nix::fcntl::readlinkat(Some(self.raw()), name)?.into_vec())
    }

    /// Opens entry `name` for reading, failing with `ELOOP` on a symlink.
    /// `O_NONBLOCK` keeps a fifo swapped in at that name from blocking.
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
            .resolve(beneath());
        let fd = nix::fcntl::openat2(self.fd.as_raw_fd(), name, how)?;
        // SAFETY: openat2 returned a new fd that nothing else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens the existing regular file `name` for writing and truncates it,
    /// failing with `ELOOP` on a symlink.
    pub fn truncate_file(&self, name: &OsStr) -> io::Result<File> {
        let how = OpenHow::new()
            .flags(OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(beneath());
        let fd = nix::fcntl::openat2(self.fd.as_raw_fd(), name, how)?;
        // SAFETY: openat2 returned a new fd that nothing else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Creates regular file `name` with mode 0600 and opens it for reading
    /// and writing. Fails with `EEXIST` when the name is taken.
    pub fn create_file(&self, name: &OsStr) -> io::Result<File> {
        let how = OpenHow::new()
            .flags(
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(Mode::from_bits_truncate(0o600))
            .resolve(beneath());
        let fd = nix::fcntl::openat2(self.fd.as_raw_fd(), name, how)?;
        // SAFETY: openat2 returned a new fd that nothing else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Creates directory `name` with permission bits `mode` (minus the
    /// umask).
    pub fn make_dir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let mode = Mode::from_bits_truncate(mode as libc::mode_t);
        Ok(nix::sys::stat::mkdirat(Some(self.raw()), name, mode)?)
    }

    /// Creates symlink `name` pointing to `target`, which is stored as it
    /// is and never resolved here.
    pub fn make_symlink(&self, name: &OsStr, target: &[u8]) -> io::Result<()> {
        Ok(nix::unistd::symlinkat(
            OsStr::from_bytes(target),
            Some(self.raw()),
            name,
        )?)
    }

    /// Creates a fifo, socket or device node `name` of type `kind` with
    /// mode 0600 and device number `rdev`.
    pub fn make_node(&self, name: &OsStr, kind: SFlag, rdev: u64) -> io::Result<()> {
        let mode = Mode::from_bits_truncate(0o600);
        Ok(nix::sys::stat::mknodat(
            Some(self.raw()),
            name,
            kind,
            mode,
            rdev,
        )?)
    }

    /// Creates `new_name` in directory `to` as a hard link of entry `name`,
    /// not following a symlink at `name`.
    pub fn link(&self, name: &OsStr, to: &Dir, new_name: &OsStr) -> io::Result<()> {
        Ok(nix::unistd::linkat(
            Some(self.raw()),
            name,
            Some(to.raw()),
            new_name,
            AtFlags::empty(),
        )?)
    }

    /// Renames entry `from` to `to` in this directory, replacing what `to`
    /// names at once, as rename(2) does.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        Ok(nix::fcntl::renameat(
            Some(self.raw()),
            from,
            Some(self.raw()),
            to,
        )?)
    }

    /// Removes entry `name`, which must not be a directory.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        Ok(nix::unistd::unlinkat(
            Some(self.raw()),
            name,
            UnlinkatFlags::NoRemoveDir,
        )?)
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        Ok(nix::unistd::unlinkat(
            Some(self.raw()),
            name,
            UnlinkatFlags::RemoveDir,
        )?)
    }

    /// Sets the owner and group of entry `name`, not following a symlink.
    pub fn set_owner(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        Ok(nix::unistd::fchownat(
            Some(self.raw()),
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?)
    }

    /// Sets the permission bits of entry `name`, with setuid, setgid and
    /// sticky. Fails with `EOPNOTSUPP` on a symlink, whose mode Linux
    /// fixes at 0777.
    pub fn set_mode(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let mode = Mode::from_bits_truncate(mode as libc::mode_t);
        Ok(nix::sys::stat::fchmodat(
            Some(self.raw()),
            name,
            mode,
            FchmodatFlags::NoFollowSymlink,
        )?)
    }

    /// Sets the access and modification times of entry `name`, not
    /// following a symlink.
    pub fn set_times(&self, name: &OsStr, atime: &TimeSpec, mtime: &TimeSpec) -> io::Result<()> {
        Ok(nix::sys::stat::utimensat(
            Some(self.raw()),
            name,
            atime,
            mtime,
            UtimensatFlags::NoFollowSymlink,
        )?)
    }

    /// Returns the extended attributes of entry `name`, sorted by name.
    pub fn xattrs(&self, name: &OsStr) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        sysfs::xattrs(&self.proc_path(name))
    }

    /// Sets extended attribute `attribute` of entry `name` to `value`.
    pub fn set_xattr(&self, name: &OsStr, attribute: &[u8], value: &[u8]) -> io::Result<()> {
        sysfs::set_xattr(&self.proc_path(name), attribute, value)
    }

    /// Removes extended attribute `attribute` of entry `name`.
    pub fn remove_xattr(&self, name: &OsStr, attribute: &[u8]) -> io::Result<()> {
        sysfs::remove_xattr(&self.proc_path(name), attribute)
    }

    fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}
