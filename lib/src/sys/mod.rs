//! Safe wrappers around the kernel interfaces that `std` and `nix` do not
//! cover: the btrfs subvolume ioctls, loop devices, xattrs, reflinks,
//! path resolution beneath a directory, fanotify and `_exit`.
//!
//! Every `unsafe` block of the crate lives below this module, each with a
//! `SAFETY:` line that names the invariant it relies on.

pub mod beneath;
pub mod btrfs;
pub mod fanotify;
pub mod fs;
pub mod loopdev;
pub mod process;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// Copies `name` into a fixed-size, NUL-terminated kernel name buffer.
///
/// Fails with `EINVAL` when the name is empty, contains `/` or NUL, or does
/// not fit with its terminator.
fn copy_name(name: &OsStr, buffer: &mut [u8]) -> io::Result<()> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty() && bytes.len() < buffer.len() && !bytes.contains(&b'/');
    if !valid || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    buffer[..bytes.len()].copy_from_slice(bytes);
    buffer[bytes.len()] = 0;
    Ok(())
}

/// Makes `command`'s process receive SIGKILL when the calling thread's
/// process dies, so that a killed `world` leaves no `cp` or `tar` writing
/// into the pool (`PR_SET_PDEATHSIG`, see prctl(2)).
pub fn kill_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and calls only
    // prctl(2) and getppid(2), which are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() == 1 {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Restores the default action of SIGPIPE, so that writing to a closed pipe
/// (`world list | head -1`) ends the process quietly, as it does for other
/// Unix tools, instead of making every write fail.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no memory
    // effects and is valid at any time.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Returns a token that names the process `pid` for its whole life: its pid
/// and start time in clock ticks since boot (`/proc/PID/stat`, field 22), so
/// that a reused pid does not look like the same process.
pub fn process_token(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may contain spaces; fields after it are
    // separated by single spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let start = after_name.split(' ').nth(19)?;
    Some(format!("{pid}-{start}"))
}
