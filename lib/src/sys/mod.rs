//! Safe wrappers around the kernel interfaces that `std` and `nix` do not
//! cover: the btrfs subvolume ioctls, loop devices and `_exit`.
//!
//! Every `unsafe` block of the crate lives below this module, each with a
//! `SAFETY:` line that names the invariant it relies on.

pub mod btrfs;
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
