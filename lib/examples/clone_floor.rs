//! Clones regular files from one tree into another with the fewest calls,
//! for bench/merge.sh: the cost of the kernel's work alone, without any of
//! the checks, journal and recovery of `world merge`.
//!
//! Usage: clone_floor SOURCE TARGET in-place|rename < PATHS
//!
//! PATHS are NUL-separated, relative to both trees, and name regular files
//! that exist in both. For each of them, `in-place` truncates the target
//! file and clones the source's data into it, as `cp --reflink` does.
//! `rename` clones the data into a new file beside the target and renames
//! that file onto the target, as `world merge` does so that each file
//! switches at once. Both modes then copy the mode and times. The program
//! prints the number of files and the elapsed time.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

/// The way the data reaches the target file.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    InPlace,
    Rename,
}

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, target, mode] = args.as_slice() else {
        return Err(invalid(
            "usage: clone_floor SOURCE TARGET in-place|rename < PATHS",
        ));
    };
    let mode = match mode.as_str() {
        "in-place" => Mode::InPlace,
        "rename" => Mode::Rename,
        other => {
            return Err(invalid(&format!(
                "unknown mode `{other}`; use in-place or rename"
            )))
        }
    };
    let mut list = Vec::new();
    io::stdin().read_to_end(&mut list)?;
    let paths: Vec<&[u8]> = list.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();

    let started = Instant::now();
    for (index, path) in paths.iter().enumerate() {
        let path = Path::new(OsStr::from_bytes(path));
        clone_one(
            &Path::new(source).join(path),
            &Path::new(target).join(path),
            mode,
            index,
        )
        .map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", path.display())))?;
    }
    println!(
        "{} files in {} ns",
        paths.len(),
        started.elapsed().as_nanos()
    );
    Ok(())
}

fn clone_one(from: &Path, to: &Path, mode: Mode, index: usize) -> io::Result<()> {
    let source = File::open(from)?;
    let status = source.metadata()?;
    let temporary = to.with_file_name(format!(".clone-floor.{index}"));

    let created = match mode {
        Mode::InPlace => to,
        Mode::Rename => &temporary,
    };
    let mut options = OpenOptions::new();
    options
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW);
    match mode {
        Mode::InPlace => options.create(true).truncate(true),
        Mode::Rename => options.create_new(true),
    };
    let file = options.open(created)?;

    // SAFETY: both fds are open for the call, and FICLONE takes the source
    // fd as its argument.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
        status.mode() & 0o7777,
    ))?;
    let times = std::fs::FileTimes::new()
        .set_accessed(status.accessed()?)
        .set_modified(status.modified()?);
    file.set_times(times)?;
    drop(file);

    if mode == Mode::Rename {
        std::fs::rename(created, to)?;
    }
    Ok(())
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_owned())
}
