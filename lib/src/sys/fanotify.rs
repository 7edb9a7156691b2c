//! A fanotify group that reports file handles, for access tracking (see
//! fanotify_init(2) and fanotify_mark(2)).
//!
//! The group reports each event with the handle of the parent directory and
//! the name of the entry (`FAN_REPORT_DFID_NAME`), so no descriptor is
//! opened per event. The events are parsed by [`crate::track::events`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Events of a file's data being read: a read, or a close of a file opened
/// only for reading, since a program may read through `mmap` without a read
/// event.
pub const READ_EVENTS: u64 = libc::FAN_ACCESS | libc::FAN_CLOSE_NOWRITE;
/// Events of a file's data or size being changed.
pub const WRITE_EVENTS: u64 = libc::FAN_MODIFY;
/// Events of a file being opened to be run as a program.
pub const EXEC_EVENTS: u64 = libc::FAN_OPEN_EXEC;
/// Events of an entry being renamed, with its old and new name.
pub const RENAME_EVENTS: u64 = libc::FAN_RENAME;
/// The flag of the event that reports a queue overflow: the kernel dropped
/// events.
pub const QUEUE_OVERFLOW: u64 = libc::FAN_Q_OVERFLOW;

/// Creates a non-blocking fanotify group that watches every file of the
/// filesystem that `path` is on, and returns its descriptor.
///
/// On btrfs, `path` must be in the top-level subvolume: the kernel refuses
/// a filesystem mark with file handles placed through another subvolume,
/// whose fsid differs, with `EXDEV`.
pub fn watch_filesystem(path: &Path) -> io::Result<OwnedFd> {
    let flags =
        libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_DFID_NAME;
    let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
    // SAFETY: fanotify_init takes two flag words and touches no memory of
    // ours; on success it returns a new descriptor that nothing else owns.
    let fd = unsafe { libc::fanotify_init(flags, event_flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by fanotify_init and is owned here only.
    let group = unsafe { OwnedFd::from_raw_fd(fd) };

    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // FAN_ONDIR adds directories' events, which renames of directories
    // need.
    let mask = READ_EVENTS | WRITE_EVENTS | EXEC_EVENTS | RENAME_EVENTS | libc::FAN_ONDIR;
    // SAFETY: `group` is a live fanotify descriptor and `path` a
    // NUL-terminated string that outlives the call.
    let marked = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            mask,
            libc::AT_FDCWD,
            path.as_ptr(),
        )
    };
    if marked != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(group)
}

/// Reads queued events of `group` into `buffer` and returns how many bytes
/// it filled; `WouldBlock` when none are queued.
pub fn read_events(group: BorrowedFd<'_>, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(group.as_raw_fd(), buffer) {
            Ok(count) => return Ok(count),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}
