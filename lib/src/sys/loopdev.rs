//! Loop devices through `/dev/loop-control` and the `LOOP_*` ioctls of
//! `linux/loop.h` (see loop(4)).
//!
//! Devices are attached with `LO_FLAGS_AUTOCLEAR`, so the kernel detaches a
//! device when its last user closes it: after the filesystem on it is
//! unmounted, or at once if the caller drops the device before mounting it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const LOOP_CONTROL: &str = "/dev/loop-control";
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// The number of times `attach` requests another free device after losing a race for
/// one to another process.
const ATTACH_ATTEMPTS: usize = 16;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config`, taken by `LOOP_CONFIGURE` (Linux 5.8 and later).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_int_bad!(loop_set_capacity, 0x4C07);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

/// An attached loop device, open for as long as this value lives.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    file: File,
}

impl LoopDevice {
    /// Returns the device node, such as `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Returns whether this kernel offers loop devices.
pub fn is_available() -> bool {
    Path::new(LOOP_CONTROL).exists()
}

/// Attaches `backing` to a free loop device with `LO_FLAGS_AUTOCLEAR`.
pub fn attach(backing: &Path) -> io::Result<LoopDevice> {
    let control = File::open(LOOP_CONTROL)?;
    let backing_file = OpenOptions::new().read(true).write(true).open(backing)?;

    let mut info = LoopInfo64 {
        device: 0,
        inode: 0,
        rdevice: 0,
        offset: 0,
        sizelimit: 0,
        number: 0,
        encrypt_type: 0,
        encrypt_key_size: 0,
        flags: LO_FLAGS_AUTOCLEAR,
        file_name: [0; 64],
        crypt_name: [0; 64],
        encrypt_key: [0; 32],
        init: [0; 2],
    };
    // The kernel shows this name in sysfs; a long path is cut, which is fine
    // because `find_attached` reads `backing_file`, not this name.
    let name = backing.as_os_str().as_bytes();
    let kept = name.len().min(info.file_name.len() - 1);
    info.file_name[..kept].copy_from_slice(&name[..kept]);
    let config = LoopConfig {
        fd: backing_file.as_raw_fd() as u32,
        block_size: 0,
        info,
        reserved: [0; 8],
    };

    let mut last_error = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..ATTACH_ATTEMPTS {
        // SAFETY: `control` is an open fd of /dev/loop-control, for which
        // LOOP_CTL_GET_FREE takes no argument.
        let number = unsafe { loop_ctl_get_free(control.as_raw_fd()) }?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(device) => device,
            Err(error) => {
                last_error = error;
                continue;
            }
        };
        // SAFETY: `device` is an open loop device and `config` is a live,
        // fully initialized `struct loop_config` whose fd stays open for
        // the call.
        match unsafe { loop_configure(device.as_raw_fd(), &config) } {
            Ok(_) => return Ok(LoopDevice { path, file: device }),
            // Another process configured this device first.
            Err(nix::errno::Errno::EBUSY) => {
                last_error = io::Error::from_raw_os_error(libc::EBUSY);
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    Err(last_error)
}

/// Returns the loop device that `backing` is attached to, if any, by reading
/// `/sys/block/loop*/loop/backing_file`.
pub fn find_attached(backing: &Path) -> io::Result<Option<PathBuf>> {
    let wanted = backing.canonicalize()?;
    for entry in std::fs::read_dir("/sys/block")? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.as_bytes().starts_with(b"loop") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(text.trim_end_matches('\n')) == wanted {
            return Ok(Some(Path::new("/dev").join(name)));
        }
    }
    Ok(None)
}

/// Makes the loop device `device` take the current size of its backing file.
pub fn refresh_capacity(device: &Path) -> io::Result<()> {
    let file = File::open(device)?;
    // SAFETY: `file` is an open loop device; LOOP_SET_CAPACITY takes an
    // integer argument that the kernel ignores.
    unsafe { loop_set_capacity(file.as_raw_fd(), 0) }?;
    Ok(())
}

impl AsRawFd for LoopDevice {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}
