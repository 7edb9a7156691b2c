//! The btrfs pool that contains a store's subvolumes.
//!
//! When the store directory is on btrfs, the pool is the directory
//! `STORE/pool` on that filesystem. Otherwise the pool is a sparse file
//! `STORE/pool.img`, formatted as btrfs, attached to a loop device and
//! mounted with `noatime` on `STORE/pool`; the presence of that file selects
//! this mode. `noatime` matters: under `relatime`, the first read of a file
//! in a snapshot rewrites its inode, which a diff would see as a change.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};

use crate::sys::{btrfs, loopdev};

/// File name of the pool image inside the store directory.
pub const IMAGE_NAME: &str = "pool.img";
/// Directory name of the pool inside the store directory.
pub const MOUNT_NAME: &str = "pool";
/// The smallest pool `create` accepts; mkfs.btrfs needs about 114 MiB.
pub const MIN_SIZE: u64 = 256 << 20;
/// File name of a pool image while it is being made and formatted.
const PARTIAL_IMAGE_NAME: &str = "pool.img.partial";

/// Errors of pool setup and maintenance.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("read filesystem type of `{path}`")]
    Statfs { path: PathBuf, source: io::Error },
    #[error("create pool image `{path}`")]
    CreateImage { path: PathBuf, source: io::Error },
    #[error("pool size {size} bytes is below the minimum of {MIN_SIZE} bytes")]
    TooSmall { size: u64 },
    #[error("pool size {size} bytes is larger than the {limit} bytes of the filesystem that holds the store")]
    TooLarge { size: u64, limit: u64 },
    #[error("pool image `{path}` exists, but the store has no database (worlds.db)")]
    ImageWithoutStore { path: PathBuf },
    #[error("mkfs.btrfs is not installed")]
    MkfsMissing,
    #[error("format pool image `{path}` as btrfs: {detail}")]
    Mkfs { path: PathBuf, detail: String },
    #[error("this kernel has no loop devices (`/dev/loop-control` is missing)")]
    NoLoopDevices,
    #[error("attach pool image `{path}` to a loop device")]
    Attach { path: PathBuf, source: io::Error },
    #[error("mount `{device}` on `{mount}`")]
    Mount {
        device: PathBuf,
        mount: PathBuf,
        source: io::Error,
    },
    #[error("unmount pool `{mount}`")]
    Unmount { mount: PathBuf, source: io::Error },
    #[error("store `{store}` is on an existing btrfs filesystem, not on a pool image")]
    NotImage { store: PathBuf },
    #[error("new pool size {requested} bytes is not larger than the current {current} bytes")]
    NotLarger { requested: u64, current: u64 },
    #[error("grow pool `{path}`")]
    Grow { path: PathBuf, source: io::Error },
}

type Result<T, E = PoolError> = std::result::Result<T, E>;

/// The kind of a store's pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolKind {
    /// The store directory is on btrfs and the pool is a plain directory.
    Direct,
    /// A loop-mounted image file inside the store directory.
    Image,
}

/// Facts about a mounted pool, for `world store info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolInfo {
    pub kind: PoolKind,
    /// The directory that contains the subvolumes.
    pub mount: PathBuf,
    /// The image file, for an image pool.
    pub image: Option<PathBuf>,
    /// The loop device, for an image pool.
    pub device: Option<PathBuf>,
    /// Size of the filesystem in bytes.
    pub size: u64,
    /// Bytes in use.
    pub used: u64,
    /// Bytes still available to new data.
    pub available: u64,
}

/// Returns the default size of a new pool image: a quarter of the space free
/// in `store_dir`'s filesystem, at least 2 GiB and at most 64 GiB.
///
/// The image is sparse, so the size is a ceiling, not space taken at once;
/// `world store grow` raises it later.
pub fn default_size(store_dir: &Path) -> Result<u64> {
    let existing = nearest_existing(store_dir);
    let stat = nix::sys::statvfs::statvfs(existing).map_err(|errno| PoolError::Statfs {
        path: existing.into(),
        source: errno.into(),
    })?;
    let free = stat.blocks_available() * stat.fragment_size();
    Ok((free / 4).clamp(2 << 30, 64 << 30))
}

/// Returns the kind of pool that `store_dir` has or would get.
pub fn kind_of(store_dir: &Path) -> Result<PoolKind> {
    if store_dir.join(IMAGE_NAME).exists() {
        return Ok(PoolKind::Image);
    }
    let existing = nearest_existing(store_dir);
    let on_btrfs = btrfs::is_btrfs(existing).map_err(|source| PoolError::Statfs {
        path: existing.into(),
        source,
    })?;
    Ok(if on_btrfs {
        PoolKind::Direct
    } else {
        PoolKind::Image
    })
}

/// Creates the pool of a new store in the existing directory `store_dir` and
/// leaves it mounted. `size` applies to an image pool only.
pub fn create(store_dir: &Path, size: u64) -> Result<PoolKind> {
    let kind = kind_of(store_dir)?;
    let mount = store_dir.join(MOUNT_NAME);
    if kind == PoolKind::Direct {
        create_dir(&mount)?;
        return Ok(kind);
    }

    check_size(store_dir, size)?;
    if !loopdev::is_available() {
        return Err(PoolError::NoLoopDevices);
    }
    let image = store_dir.join(IMAGE_NAME);
    if image.exists() {
        return Err(PoolError::ImageWithoutStore { path: image });
    }
    // The image is made and formatted under another name and renamed when
    // complete, so a crash never leaves a half-made `pool.img`. A leftover
    // partial image is this function's own and is replaced.
    let partial = store_dir.join(PARTIAL_IMAGE_NAME);
    let _ = std::fs::remove_file(&partial);
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .and_then(|file| file.set_len(size))
        .map_err(|source| PoolError::CreateImage {
            path: partial.clone(),
            source,
        })
        .and_then(|()| format(&partial))
        .and_then(|()| {
            std::fs::rename(&partial, &image).map_err(|source| PoolError::CreateImage {
                path: image.clone(),
                source,
            })
        });
    if let Err(error) = made {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    // This call made the image, so it may remove it again when mounting
    // fails and leave the directory as it found it.
    let mounted = create_dir(&mount).and_then(|()| mount_image(&image, &mount));
    if mounted.is_err() {
        let _ = std::fs::remove_file(&image);
        let _ = std::fs::remove_dir(&mount);
    }
    mounted.map(|()| kind)
}

/// Checks that an image of `size` bytes fits the rules and the filesystem
/// that would hold it, the nearest existing ancestor of `store_dir`.
pub fn check_size(store_dir: &Path, size: u64) -> Result<()> {
    if size < MIN_SIZE {
        return Err(PoolError::TooSmall { size });
    }
    let existing = nearest_existing(store_dir);
    let stat = nix::sys::statvfs::statvfs(existing).map_err(|errno| PoolError::Statfs {
        path: existing.into(),
        source: errno.into(),
    })?;
    // The image is sparse, so its size may exceed the free space, but not
    // the whole filesystem: writes past that fail as I/O errors in btrfs.
    let limit = stat.blocks() * stat.fragment_size();
    if size > limit {
        return Err(PoolError::TooLarge { size, limit });
    }
    Ok(())
}

/// Makes sure the pool of `store_dir` is mounted, attaching and mounting an
/// image pool when it is not (after a reboot or an unmount). Returns whether
/// it had to mount it.
///
/// The caller serializes calls with the store lock.
pub fn ensure_mounted(store_dir: &Path) -> Result<bool> {
    if kind_of(store_dir)? == PoolKind::Direct || is_mounted(store_dir)? {
        return Ok(false);
    }
    let mount = store_dir.join(MOUNT_NAME);
    create_dir(&mount)?;
    mount_image(&store_dir.join(IMAGE_NAME), &mount)?;
    Ok(true)
}

/// Returns whether an image pool is mounted; a direct pool always is.
pub fn is_mounted(store_dir: &Path) -> Result<bool> {
    let mount = store_dir.join(MOUNT_NAME);
    match btrfs::is_btrfs(&mount) {
        Ok(on_btrfs) => Ok(on_btrfs),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PoolError::Statfs {
            path: mount,
            source,
        }),
    }
}

/// Unmounts an image pool; its loop device detaches by itself.
pub fn unmount(store_dir: &Path) -> Result<()> {
    if kind_of(store_dir)? == PoolKind::Direct || !is_mounted(store_dir)? {
        return Ok(());
    }
    let mount = store_dir.join(MOUNT_NAME);
    nix::mount::umount2(&mount, MntFlags::empty()).map_err(|errno| PoolError::Unmount {
        mount,
        source: errno.into(),
    })
}

/// Returns facts about the mounted pool of `store_dir`.
pub fn info(store_dir: &Path) -> Result<PoolInfo> {
    let kind = kind_of(store_dir)?;
    let mount = store_dir.join(MOUNT_NAME);
    let stat = nix::sys::statvfs::statvfs(&mount).map_err(|errno| PoolError::Statfs {
        path: mount.clone(),
        source: errno.into(),
    })?;
    let block = stat.fragment_size();
    let (image, device) = match kind {
        PoolKind::Direct => (None, None),
        PoolKind::Image => {
            let image = store_dir.join(IMAGE_NAME);
            let device = loopdev::find_attached(&image).unwrap_or(None);
            (Some(image), device)
        }
    };
    Ok(PoolInfo {
        kind,
        mount,
        image,
        device,
        size: stat.blocks() * block,
        used: (stat.blocks() - stat.blocks_free()) * block,
        available: stat.blocks_available() * block,
    })
}

/// Grows an image pool to `new_size` bytes while it stays mounted: the image
/// file first, then the loop device's capacity, then the filesystem.
pub fn grow(store_dir: &Path, new_size: u64) -> Result<()> {
    if kind_of(store_dir)? == PoolKind::Direct {
        return Err(PoolError::NotImage {
            store: store_dir.into(),
        });
    }
    let image = store_dir.join(IMAGE_NAME);
    let grow_error = |source| PoolError::Grow {
        path: image.clone(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .open(&image)
        .map_err(grow_error)?;
    let current = file.metadata().map_err(grow_error)?.len();
    let new_size = new_size.div_ceil(4096).saturating_mul(4096);
    check_size(store_dir, new_size)?;
    if new_size <= current {
        return Err(PoolError::NotLarger {
            requested: new_size,
            current,
        });
    }

    file.set_len(new_size).map_err(grow_error)?;
    let device = loopdev::find_attached(&image)
        .map_err(grow_error)?
        .ok_or_else(|| grow_error(io::Error::from_raw_os_error(libc::ENXIO)))?;
    loopdev::refresh_capacity(&device).map_err(grow_error)?;
    let mount = File::open(store_dir.join(MOUNT_NAME)).map_err(grow_error)?;
    // A pool made by `create` has exactly one device, with devid 1.
    btrfs::resize_to_max(&mount, 1).map_err(grow_error)
}

/// Returns `dir` or its nearest ancestor that exists, whose filesystem a
/// new store in `dir` would use.
fn nearest_existing(dir: &Path) -> &Path {
    dir.ancestors()
        .find(|dir| dir.exists())
        .unwrap_or(Path::new("/"))
}

fn create_dir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Err(error) if error.kind() != io::ErrorKind::AlreadyExists => Err(PoolError::CreateImage {
            path: path.into(),
            source: error,
        }),
        _ => Ok(()),
    }
}

fn format(image: &Path) -> Result<()> {
    let output = Command::new("mkfs.btrfs")
        .args(["-q", "-L", "worlds"])
        .arg(image)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(PoolError::MkfsMissing)
        }
        Err(error) => {
            return Err(PoolError::Mkfs {
                path: image.into(),
                detail: error.to_string(),
            })
        }
    };
    if !output.status.success() {
        return Err(PoolError::Mkfs {
            path: image.into(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

fn mount_image(image: &Path, mount: &Path) -> Result<()> {
    if !loopdev::is_available() {
        return Err(PoolError::NoLoopDevices);
    }
    let attach_error = |source| PoolError::Attach {
        path: image.into(),
        source,
    };
    // An image still attached (by hand, or by a crash between attach and
    // mount) is mounted through its device: a second device for the same
    // image would show btrfs two devices with one filesystem id.
    if let Some(attached) = loopdev::find_attached(image).map_err(attach_error)? {
        return mount_device(&attached, image, mount);
    }
    // The device stays attached only while `device` is open or the
    // filesystem is mounted (LO_FLAGS_AUTOCLEAR), so a failed mount leaves
    // no loop device behind.
    let device = loopdev::attach(image).map_err(attach_error)?;
    mount_device(device.path(), image, mount)
}

fn mount_device(device: &Path, image: &Path, mount: &Path) -> Result<()> {
    nix::mount::mount(
        Some(device),
        mount,
        Some("btrfs"),
        MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|errno| PoolError::Mount {
        device: device.into(),
        mount: mount.into(),
        source: errno.into(),
    })?;
    tracing::info!(image = %image.display(), device = %device.display(), "pool mounted");
    Ok(())
}
