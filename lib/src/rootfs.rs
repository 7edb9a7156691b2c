//! Filling a new root world's subvolume from one of the supported sources.
//!
//! Bulk copies go through the tools that administrators already trust to
//! keep every attribute: GNU `cp -a --reflink=auto` for directories (owners,
//! modes, times, xattrs, ACLs, hard links and special files, with reflinks
//! when the source is on the same btrfs), GNU `tar` for archives and Debian's
//! `debootstrap`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The suite debootstrap builds when none is named.
pub const DEFAULT_SUITE: &str = "bookworm";

/// The source of a root world's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A minimal root around a statically linked busybox binary.
    Busybox { binary: PathBuf },
    /// A copy of a host directory.
    Directory(PathBuf),
    /// A tar archive, plain or compressed with gzip, bzip2, xz or zstd;
    /// `-` reads standard input.
    Tar(PathBuf),
    /// `debootstrap --variant=minbase SUITE`.
    Debootstrap { suite: String },
}

/// A progress report of a long import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A new step started or a tool printed a status line.
    Message(String),
    /// Bytes of input consumed so far, and the total when known.
    Bytes { done: u64, total: Option<u64> },
}

/// Errors of filling a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("busybox binary `{path}` not found")]
    BusyboxMissing { path: PathBuf },
    #[error("busybox binary `{path}` is dynamically linked and would not run inside a world")]
    BusyboxDynamic { path: PathBuf },
    #[error("source directory `{path}` not found or not a directory")]
    SourceNotDirectory { path: PathBuf },
    #[error(
        "source directory `{path}` contains the store; copying it would copy the store into itself"
    )]
    SourceContainsStore { path: PathBuf },
    #[error("source directory `{path}` is inside the store")]
    SourceInsideStore { path: PathBuf },
    #[error("archive `{path}` not found")]
    ArchiveMissing { path: PathBuf },
    #[error("archive `{path}` is a directory; use --from-dir for directories")]
    ArchiveIsDirectory { path: PathBuf },
    #[error("`{path}` is not a valid tar archive: {detail}")]
    InvalidArchive { path: PathBuf, detail: String },
    #[error("`{tool}` is not installed")]
    ToolMissing { tool: &'static str },
    #[error("`{tool}` failed: {detail}")]
    ToolFailed { tool: &'static str, detail: String },
    #[error("`{tool}` ran out of space in the pool: {detail}")]
    NoSpace { tool: &'static str, detail: String },
    #[error("write `{path}`")]
    Write { path: PathBuf, source: io::Error },
    #[error("read `{path}`")]
    Read { path: PathBuf, source: io::Error },
}

type Result<T, E = RootfsError> = std::result::Result<T, E>;

/// Fills the empty directory `dest` from `source`.
///
/// `store_dir` is the store's directory, which a directory source must not
/// contain.
pub fn fill(
    source: &RootSource,
    dest: &Path,
    store_dir: &Path,
    progress: &dyn Fn(Progress),
) -> Result<()> {
    match source {
        RootSource::Busybox { binary } => build_busybox(binary, dest),
        RootSource::Directory(path) => copy_directory(path, dest, store_dir, progress),
        RootSource::Tar(path) => unpack_tar(path, dest, progress),
        RootSource::Debootstrap { suite } => debootstrap(suite, dest, progress),
    }
}

/// Checks what can be checked before any work: that sources exist.
pub fn check(source: &RootSource, store_dir: &Path) -> Result<()> {
    match source {
        RootSource::Busybox { binary } => check_static(binary),
        RootSource::Directory(path) => {
            if !path.is_dir() {
                return Err(RootfsError::SourceNotDirectory { path: path.clone() });
            }
            let (Ok(source), Ok(store)) = (path.canonicalize(), store_dir.canonicalize()) else {
                return Ok(());
            };
            if store.starts_with(&source) {
                return Err(RootfsError::SourceContainsStore { path: path.clone() });
            }
            if source.starts_with(&store) {
                return Err(RootfsError::SourceInsideStore { path: path.clone() });
            }
            Ok(())
        }
        RootSource::Tar(path) if path.as_os_str() != "-" && path.is_dir() => {
            Err(RootfsError::ArchiveIsDirectory { path: path.clone() })
        }
        // Any readable non-directory will do: files, fifos, `<(...)`.
        RootSource::Tar(path) if path.as_os_str() != "-" && !path.exists() => {
            Err(RootfsError::ArchiveMissing { path: path.clone() })
        }
        RootSource::Tar(_) => Ok(()),
        RootSource::Debootstrap { .. } => find_tool("debootstrap").map(drop),
    }
}

/// Directories of the busybox root, with their modes.
const BUSYBOX_DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("var/log", 0o755),
    ("run", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
];

/// Small files of the busybox root: accounts, a shell profile, and the
/// name and resolver files that a running world gets mounted over its own.
const BUSYBOX_FILES: &[(&str, &str)] = &[
    ("etc/hostname", "localhost\n"),
    ("etc/hosts", "127.0.0.1\tlocalhost\n"),
    ("etc/resolv.conf", ""),
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    (
        "etc/shadow",
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    ),
    (
        "etc/profile",
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
    ),
];

fn build_busybox(binary: &Path, dest: &Path) -> Result<()> {
    check_static(binary)?;
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| RootfsError::Write { path, source }
    };
    for (dir, mode) in BUSYBOX_DIRS {
        let path = dest.join(dir);
        fs::create_dir(&path).map_err(write_error(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
            .map_err(write_error(&path))?;
    }
    for (file, text) in BUSYBOX_FILES {
        let path = dest.join(file);
        fs::write(&path, text).map_err(write_error(&path))?;
    }
    let shadow = dest.join("etc/shadow");
    fs::set_permissions(&shadow, fs::Permissions::from_mode(0o640))
        .map_err(write_error(&shadow))?;

    let installed = dest.join("bin/busybox");
    fs::copy(binary, &installed).map_err(write_error(&installed))?;
    fs::set_permissions(&installed, fs::Permissions::from_mode(0o755))
        .map_err(write_error(&installed))?;

    // One symlink per applet, where busybox puts it
    // (`busybox --list-full` prints paths such as `usr/bin/awk`).
    let output = run_captured("busybox", Command::new(binary).arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&output).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let link = dest.join(applet);
        if link.parent().is_some_and(|parent| !parent.exists()) {
            continue;
        }
        symlink("/bin/busybox", &link).map_err(write_error(&link))?;
    }
    Ok(())
}

/// Fails unless `binary` is an ELF file without a program interpreter, that
/// is, statically linked.
fn check_static(binary: &Path) -> Result<()> {
    let missing = || RootfsError::BusyboxMissing {
        path: binary.into(),
    };
    let mut file = File::open(binary).map_err(|_| missing())?;
    let mut elf = Vec::new();
    // Program headers sit near the start; 64 KiB covers them in practice.
    Read::by_ref(&mut file)
        .take(64 << 10)
        .read_to_end(&mut elf)
        .map_err(|_| missing())?;
    match elf_has_interpreter(&elf) {
        Some(false) => Ok(()),
        _ => Err(RootfsError::BusyboxDynamic {
            path: binary.into(),
        }),
    }
}

/// Returns whether a 64-bit little-endian ELF image has a `PT_INTERP`
/// program header, or `None` when `elf` is not such an image.
fn elf_has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    let is_elf64_le = elf.get(..6)? == b"\x7fELF\x02\x01";
    if !is_elf64_le {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let program_headers = u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?) as usize;
    let entry_size = usize::from(u16_at(0x36)?);
    let count = usize::from(u16_at(0x38)?);
    for index in 0..count {
        let at = program_headers + index * entry_size;
        let kind = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        if kind == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

fn copy_directory(
    source: &Path,
    dest: &Path,
    store_dir: &Path,
    progress: &dyn Fn(Progress),
) -> Result<()> {
    check(&RootSource::Directory(source.into()), store_dir)?;
    progress(Progress::Message(format!("copying {}", source.display())));
    // `SOURCE/.` copies the directory's contents and its own attributes onto
    // the existing destination.
    let mut from = OsString::from(source);
    from.push("/.");
    run_captured(
        "cp",
        Command::new("cp")
            .args(["-a", "--reflink=auto", "--"])
            .arg(from)
            .arg(dest),
    )?;
    Ok(())
}

/// Compression of a tar archive, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    fn detect(magic: &[u8]) -> Self {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if magic.starts_with(b"BZh") {
            Self::Bzip2
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// Returns the GNU tar option that decompresses it.
    fn tar_option(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("--gzip"),
            Self::Bzip2 => Some("--bzip2"),
            Self::Xz => Some("--xz"),
            Self::Zstd => Some("--zstd"),
        }
    }
}

fn unpack_tar(path: &Path, dest: &Path, progress: &dyn Fn(Progress)) -> Result<()> {
    let read_error = |source| RootfsError::Read {
        path: path.into(),
        source,
    };
    let (mut input, total): (Box<dyn Read>, Option<u64>) = if path.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file =
            File::open(path).map_err(|_| RootfsError::ArchiveMissing { path: path.into() })?;
        let total = file.metadata().map_err(read_error)?.len();
        (Box::new(file), Some(total))
    };

    // Read the first block to pick the decompressor, so that standard input
    // and files with any name work alike.
    let mut first = vec![0u8; 64 << 10];
    let mut filled = 0;
    while filled < first.len() {
        let read = input.read(&mut first[filled..]).map_err(read_error)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    first.truncate(filled);
    let compression = Compression::detect(&first);
    progress(Progress::Message(format!("unpacking {}", path.display())));

    let mut command = Command::new("tar");
    command
        .args(["--extract", "--file=-", "--numeric-owner", "--same-owner"])
        .args([
            "--preserve-permissions",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
        ])
        .arg("--directory")
        .arg(dest)
        .args(compression.tar_option())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn("tar", &mut command)?;
    let mut stdin = child.stdin.take().expect("stdin was piped");

    let mut buffer = vec![0u8; 1 << 20];
    let mut done = first.len() as u64;
    let mut pipe_result = stdin.write_all(&first);
    while pipe_result.is_ok() {
        progress(Progress::Bytes { done, total });
        match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                done += read as u64;
                pipe_result = stdin.write_all(&buffer[..read]);
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(read_error(error));
            }
        }
    }
    drop(stdin);
    // A write error means tar stopped reading; its own message explains why.
    match finish("tar", child) {
        Err(RootfsError::ToolFailed { detail, .. }) if is_archive_error(&detail) => {
            Err(RootfsError::InvalidArchive {
                path: path.into(),
                detail,
            })
        }
        result => result,
    }
}

/// Returns whether GNU tar's message (under the C locale) blames the
/// archive itself rather than the system.
fn is_archive_error(detail: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "does not look like a tar archive",
        "Unexpected EOF",
        "Skipping to next header",
        "not in gzip format",
        "File format not recognized",
        "Unknown frame descriptor",
    ];
    SIGNS.iter().any(|sign| detail.contains(sign))
}

fn debootstrap(suite: &str, dest: &Path, progress: &dyn Fn(Progress)) -> Result<()> {
    let tool = find_tool("debootstrap")?;
    // debootstrap takes no `--`; `parse_suite` in the CLI and the check
    // below keep option-like suites out.
    if suite.starts_with('-') {
        return Err(RootfsError::ToolFailed {
            tool: "debootstrap",
            detail: format!("invalid suite `{suite}`"),
        });
    }
    let mut command = Command::new(tool);
    command
        .arg("--variant=minbase")
        .arg(suite)
        .arg(dest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn("debootstrap", &mut command)?;
    // debootstrap reports its steps as `I: ...` lines and some errors as
    // `E: ...` lines on stdout.
    let stdout = child.stdout.take().expect("stdout was piped");
    let mut errors = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(step) = line.strip_prefix("I: ") {
            progress(Progress::Message(step.to_owned()));
        } else if line.starts_with("E: ") || line.starts_with("W: ") {
            errors.push(line);
        }
    }
    match finish("debootstrap", child) {
        Err(RootfsError::ToolFailed { tool, detail }) if !errors.is_empty() => {
            Err(RootfsError::ToolFailed {
                tool,
                detail: format!("{}\n{detail}", errors.join("\n")),
            })
        }
        result => result,
    }
}

fn find_tool(tool: &'static str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(tool);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(RootfsError::ToolMissing { tool })
}

fn spawn(tool: &'static str, command: &mut Command) -> Result<std::process::Child> {
    crate::sys::kill_with_parent(command);
    command
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => RootfsError::ToolMissing { tool },
            _ => RootfsError::ToolFailed {
                tool,
                detail: error.to_string(),
            },
        })
}

/// Waits for `child` and turns a failure into an error that carries the end
/// of its standard error.
fn finish(tool: &'static str, mut child: std::process::Child) -> Result<()> {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|error| RootfsError::ToolFailed {
        tool,
        detail: error.to_string(),
    })?;
    if status.success() {
        return Ok(());
    }
    Err(tool_failed(tool, &stderr, status))
}

/// Builds the error for a tool that exited with `status`, telling a full
/// pool apart because its fix differs.
fn tool_failed(tool: &'static str, stderr: &str, status: std::process::ExitStatus) -> RootfsError {
    let detail = tail(stderr, status);
    // The tools print strerror(ENOSPC), in English under the C locale that
    // `run_captured` and `spawn` give them.
    if stderr.contains("No space left on device") {
        RootfsError::NoSpace { tool, detail }
    } else {
        RootfsError::ToolFailed { tool, detail }
    }
}

fn run_captured(tool: &'static str, command: &mut Command) -> Result<Vec<u8>> {
    crate::sys::kill_with_parent(command);
    let output = command
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => RootfsError::ToolMissing { tool },
            _ => RootfsError::ToolFailed {
                tool,
                detail: error.to_string(),
            },
        })?;
    if !output.status.success() {
        return Err(tool_failed(
            tool,
            &String::from_utf8_lossy(&output.stderr),
            output.status,
        ));
    }
    Ok(output.stdout)
}

/// Returns the last lines of a tool's standard error, or its exit status
/// when it printed nothing.
fn tail(stderr: &str, status: std::process::ExitStatus) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return status.to_string();
    }
    lines[lines.len().saturating_sub(5)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_compression() {
        let cases: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b, 8, 0], Compression::Gzip),
            (b"BZh91AY", Compression::Bzip2),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0, 0], Compression::Xz),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0], Compression::Zstd),
            (b"etc/\0\0\0\0", Compression::None),
            (b"", Compression::None),
        ];
        for (magic, expected) in cases {
            assert_eq!(Compression::detect(magic), *expected, "magic {magic:x?}");
        }
    }

    #[test]
    fn static_and_dynamic_elf() {
        let host_shell = fs::read("/bin/sh").unwrap();
        assert_eq!(elf_has_interpreter(&host_shell), Some(true));
        assert_eq!(elf_has_interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(elf_has_interpreter(b"\x7fELF\x02\x01"), None);
    }
}
