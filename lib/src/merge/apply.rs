//! The apply engine: carries out a list of [`Step`]s on a target tree,
//! taking entries from a source tree, as `world merge` does with a child's
//! changes.
//!
//! The caller orders the steps, and [`apply`] carries out each one exactly
//! as given, in order, and stops at the first failure. Long runs of puts
//! run on a few threads, each taking a range of them in order, cut only
//! where no step needs a directory put before the cut. Removals of a
//! subtree come deepest first, and directories come before their contents. Adding,
//! removing or renaming an entry moves its directory's mtime, so a caller
//! that wants the source's directory times gives a [`Step::SetMetadata`]
//! for each such directory after its contents.
//!
//! # Paths
//!
//! Both trees may contain anything a world's processes made, including
//! symlinks such as `etc -> /`. Every step opens the parent directory of
//! its path beneath the tree's root without following symlinks
//! ([`Dir::open_dir`]), then acts on the last component with `*at` calls
//! that do not follow it either. The next steps in the same parent
//! directory reuse it while it is open, until a step removes or replaces
//! that directory or one above it. A path that crosses a symlink in either
//! tree fails with [`StepError::SymlinkInParent`], and one that crosses a
//! mount point fails with [`StepError::MountInParent`], so nothing is
//! written outside the target.
//!
//! # How an entry is put
//!
//! A non-directory is made under a temporary name `.world-merge.<pid>.<n>`
//! in its target directory, given its attributes, then renamed onto its
//! final name. A reader sees the old file or the new one, never a partial
//! one, and a process that has the old file open keeps reading the old
//! data. A regular file shares its data blocks with the source through
//! `FICLONE`, so its size costs no copy and holes stay holes. A directory
//! is created in place, or only given attributes when it exists.
//!
//! Attributes are set in this order: owner, mode, extended attributes,
//! then access and modification times. chown(2) clears the setuid and
//! setgid bits and `security.capability`, so mode and xattrs follow it,
//! and the times come last because making the entry moved them. A regular
//! file is read and given its attributes through open descriptors, and an
//! attribute that already has the source's value is not set again.
//!
//! # Limitations
//!
//! - Hard links are kept only among the paths put in one call: a path whose
//!   source inode has other links that are not put in the same call gets a
//!   file of its own.
//! - Nothing is fsynced: durability is up to the caller, for example with
//!   syncfs(2) on the target before it records the merge as done.
//! - A temporary entry left by a crash (the process died between making
//!   and renaming it) stays in the target until someone removes it.
//! - Of the inode flags that chattr(1) sets, only nodatacow (`+C`) is
//!   copied, because cloning needs it. Others such as immutable (`+i`) or
//!   append-only (`+a`) are not, and the diff does not compare them either.
//! - Extended attributes of entries other than regular files go through
//!   `/proc/self/fd`, so procfs must be mounted at `/proc`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::schedule;
use crate::diff::engine;
use crate::diff::{Entry, FileType};
use crate::path::WorldPath;
use crate::sys::beneath::Dir;
use crate::sys::btrfs;
use crate::sys::fs::{self as sysfs, Status};

/// One step of applying changes to a target tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// Makes `path` in the target what it is in the source: same type,
    /// content and attributes. A directory in the target is kept and given
    /// the source's attributes, and a non-directory is replaced at once. Fails
    /// when one side has a directory and the other does not, because the
    /// caller removes the old entry first.
    Put(WorldPath),
    /// Removes `path` from the target: a file of any type, or an empty
    /// directory. A missing path is no error.
    Remove(WorldPath),
    /// Gives the existing `path` in the target the owner, mode, extended
    /// attributes (with `security.capability` and POSIX ACLs), access time
    /// and modification time of `path` in the source. Both must have the
    /// same file type.
    SetMetadata(WorldPath),
}

impl Step {
    /// Returns the world-relative path the step acts on.
    pub fn path(&self) -> &WorldPath {
        match self {
            Self::Put(path) | Self::Remove(path) | Self::SetMetadata(path) => path,
        }
    }
}

/// One of the two trees of an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    Target,
    Source,
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Target => "target",
            Self::Source => "source",
        })
    }
}

/// Errors of [`apply`]: the step that failed and its path, with the action
/// that failed as the source.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("open the {tree} root `{path}`")]
    OpenRoot {
        tree: Tree,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid path `{path}` in step {index} (counting from 0); no step was applied")]
    InvalidPath {
        index: usize,
        path: WorldPath,
        source: InvalidPath,
    },
    #[error("put `{path}`")]
    Put { path: WorldPath, source: StepError },
    #[error("remove `{path}`")]
    Remove { path: WorldPath, source: StepError },
    #[error("set metadata of `{path}`")]
    SetMetadata { path: WorldPath, source: StepError },
}

/// A reason to reject the path of a step before any step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    #[error("a component is empty, `.` or `..`")]
    BadComponent,
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the root of the target cannot be removed")]
    RemoveRoot,
}

/// The action of a step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("a parent directory in the {tree} is a symlink, which apply does not follow")]
    SymlinkInParent { tree: Tree },
    #[error("a parent directory in the {tree} is a mount point, which apply does not cross")]
    MountInParent { tree: Tree },
    #[error("open the parent directory in the {tree}")]
    OpenParent { tree: Tree, source: io::Error },
    #[error("missing in the source")]
    SourceMissing,
    #[error("missing in the target")]
    TargetMissing,
    #[error("read the {tree} entry")]
    ReadEntry { tree: Tree, source: io::Error },
    #[error(
        "the target has a {} where the source has a {}; remove it first",
        in_target.name(),
        in_source.name()
    )]
    TypeMismatch {
        in_target: FileType,
        in_source: FileType,
    },
    #[error("open the source file")]
    OpenSourceFile(#[source] io::Error),
    #[error("the source is no longer a regular file")]
    SourceReplaced,
    #[error("create {entry} as temporary `{name}`")]
    CreateTemporary {
        entry: String,
        name: String,
        source: io::Error,
    },
    #[error("clone the data with FICLONE")]
    CloneData(#[source] io::Error),
    #[error("copy the data")]
    CopyData(#[source] io::Error),
    #[error("rename temporary `{name}` into place")]
    Rename { name: String, source: io::Error },
    #[error("create the directory")]
    MakeDirectory(#[source] io::Error),
    #[error("set the owner to {uid}:{gid}")]
    SetOwner {
        uid: u32,
        gid: u32,
        source: io::Error,
    },
    #[error("set the mode to {mode:04o}")]
    SetMode { mode: u32, source: io::Error },
    #[error("read the extended attributes")]
    ReadXattrs(#[source] io::Error),
    #[error("set extended attribute `{name}`")]
    SetXattr { name: String, source: io::Error },
    #[error("remove extended attribute `{name}`")]
    RemoveXattr { name: String, source: io::Error },
    #[error("set the access and modification times")]
    SetTimes(#[source] io::Error),
    #[error("remove the directory")]
    RemoveDirectory(#[source] io::Error),
    #[error("remove the file")]
    RemoveFile(#[source] io::Error),
}

/// Runs of puts and metadata steps shorter than this stay on one thread,
/// because starting threads would cost more than they save.
const PARALLEL_MIN_STEPS: usize = 256;
/// The maximum number of threads that one apply uses.
const MAX_THREADS: usize = 4;

/// Applies `steps` in order to the tree at `target`, taking entries from
/// the tree at `source`, and calls `progress` with the number of steps done
/// as they finish.
///
/// Long runs of puts and metadata steps are split among a few threads
/// where no later step needs a directory that an earlier one puts (see
/// [`super::schedule`]), because btrfs creates, clones and renames files in
/// parallel. Removals run in order.
///
/// All step paths are checked first, so an invalid one fails before any
/// step runs. After that the first failing step stops the apply: the steps
/// before it stay applied, and the temporary entry of the failing step, if
/// any, is removed. Other threads stop after their current step, so some
/// steps after the failing one may be applied too.
pub fn apply(
    target: &Path,
    source: &Path,
    steps: &[Step],
    progress: &dyn Fn(usize),
) -> Result<(), ApplyError> {
    for (index, step) in steps.iter().enumerate() {
        check_step(step).map_err(|source| ApplyError::InvalidPath {
            index,
            path: step.path().clone(),
            source,
        })?;
    }

    let roots = Roots {
        target: (target, open_root(Tree::Target, target)?),
        source: (source, open_root(Tree::Source, source)?),
    };
    let linked = Mutex::new(HashMap::new());
    let mut applier = Applier::new(&roots, &linked)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);

    for stage in schedule::stages(steps, threads, PARALLEL_MIN_STEPS) {
        let [range] = stage.as_slice() else {
            apply_parallel(&mut applier, &roots, steps, &stage, progress)?;
            continue;
        };
        for index in range.clone() {
            applier.run(&steps[index])?;
            progress(index + 1);
        }
    }
    Ok(())
}

/// Carries out the ranges of one stage at the same time: the first on this
/// thread with `applier`, each other one on a thread of its own.
fn apply_parallel(
    applier: &mut Applier<'_>,
    roots: &Roots<'_>,
    steps: &[Step],
    stage: &[Range<usize>],
    progress: &dyn Fn(usize),
) -> Result<(), ApplyError> {
    let Some((first, others)) = stage.split_first() else {
        return Ok(());
    };
    let stage_start = first.start;
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let run_range = |applier: &mut Applier<'_>, range: Range<usize>, report: &dyn Fn()| {
        for index in range {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Err(error) = applier.run(&steps[index]) {
                stop.store(true, Ordering::Relaxed);
                return Err((index, error));
            }
            done.fetch_add(1, Ordering::Relaxed);
            report();
        }
        Ok(())
    };

    let linked = applier.linked;
    let failures = std::thread::scope(|scope| {
        let workers: Vec<_> = others
            .iter()
            .map(|range| {
                let range = range.clone();
                let run_range = &run_range;
                scope.spawn(move || {
                    let mut worker =
                        Applier::new(roots, linked).map_err(|error| (range.start, error))?;
                    run_range(&mut worker, range, &|| {})
                })
            })
            .collect();
        let report = || progress(stage_start + done.load(Ordering::Relaxed));
        let mut failures: Vec<(usize, ApplyError)> = run_range(applier, first.clone(), &report)
            .err()
            .into_iter()
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(result) => failures.extend(result.err()),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        failures
    });
    // Another thread may have put a directory that this thread's kept
    // parents do not know about, so they are opened afresh.
    applier.forget_all_parents();
    if let Some((_, error)) = failures.into_iter().min_by_key(|(index, _)| *index) {
        return Err(error);
    }
    progress(stage_start + done.load(Ordering::Relaxed));
    Ok(())
}

fn open_root(tree: Tree, path: &Path) -> Result<Dir, ApplyError> {
    Dir::open(path).map_err(|source| ApplyError::OpenRoot {
        tree,
        path: path.to_path_buf(),
        source,
    })
}

/// The roots of both trees of an apply, each with the path it was opened
/// from, for errors.
struct Roots<'a> {
    target: (&'a Path, Dir),
    source: (&'a Path, Dir),
}

/// Checks that a step's path names an entry beneath the root, or the root
/// itself where the step can act on it.
fn check_step(step: &Step) -> Result<(), InvalidPath> {
    let path = step.path();
    if path.is_root() {
        return match step {
            Step::Remove(_) => Err(InvalidPath::RemoveRoot),
            Step::Put(_) | Step::SetMetadata(_) => Ok(()),
        };
    }
    if path.as_bytes().contains(&0) {
        return Err(InvalidPath::Nul);
    }
    let bad = |component: &[u8]| matches!(component, b"" | b"." | b"..");
    if path.as_bytes().split(|&b| b == b'/').any(bad) {
        return Err(InvalidPath::BadComponent);
    }
    Ok(())
}

/// Splits a checked path into its parent directory and last component. The
/// root is named `.` in itself, so the `*at` calls act on the directory.
fn split(path: &WorldPath) -> (&[u8], &OsStr) {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return (b"", OsStr::new("."));
    }
    match bytes.iter().rposition(|&b| b == b'/') {
        Some(slash) => (&bytes[..slash], OsStr::from_bytes(&bytes[slash + 1..])),
        None => (b"", OsStr::from_bytes(bytes)),
    }
}

/// Returns an error unless an entry of type `in_source` can replace what
/// the target has: rename(2) replaces a non-directory with another one, and
/// a directory is kept and given attributes, but one cannot replace the
/// other.
fn check_replaceable(in_target: Option<FileType>, in_source: FileType) -> Result<(), StepError> {
    let Some(in_target) = in_target else {
        return Ok(());
    };
    let target_is_dir = in_target == FileType::Directory;
    let source_is_dir = in_source == FileType::Directory;
    if target_is_dir != source_is_dir {
        return Err(StepError::TypeMismatch {
            in_target,
            in_source,
        });
    }
    Ok(())
}

/// The extended attributes to remove and to set so that an entry that has
/// `current` ends up with exactly `expected`.
#[derive(Debug, PartialEq, Eq)]
struct XattrChanges<'a> {
    remove: Vec<&'a [u8]>,
    set: Vec<(&'a [u8], &'a [u8])>,
}

fn xattr_changes<'a>(
    current: &'a [(Vec<u8>, Vec<u8>)],
    expected: &'a [(Vec<u8>, Vec<u8>)],
) -> XattrChanges<'a> {
    let remove = current
        .iter()
        .filter(|(name, _)| !expected.iter().any(|(kept, _)| kept == name))
        .map(|(name, _)| name.as_slice())
        .collect();
    let set = expected
        .iter()
        .filter(|attribute| !current.contains(attribute))
        .map(|(name, value)| (name.as_slice(), value.as_slice()))
        .collect();
    XattrChanges { remove, set }
}

/// Returns the file type of a target entry, or an error for a type that
/// Linux does not define.
fn target_type(status: &Status) -> Result<FileType, StepError> {
    engine::file_type(status).map_err(|source| StepError::ReadEntry {
        tree: Tree::Target,
        source,
    })
}

/// Returns the temporary name of entry number `counter` made by process
/// `pid`.
fn temporary_name(pid: u32, counter: u64) -> OsString {
    OsString::from(format!(".world-merge.{pid}.{counter}"))
}

/// Number of temporary entries made by this process so far.
static TEMPORARY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Names to try before giving up when temporary names are taken, which
/// happens only when a crashed process with the same pid left them.
const TEMPORARY_ATTEMPTS: usize = 100;

/// An entry under a temporary name in a target directory, removed on drop
/// unless it was renamed into place.
struct Temporary<'a> {
    dir: &'a Dir,
    name: OsString,
    placed: bool,
}

impl<'a> Temporary<'a> {
    /// Makes a new entry with `make` under a fresh temporary name in `dir`,
    /// describing it with `description` in errors.
    fn create<T>(
        dir: &'a Dir,
        description: &dyn Fn() -> String,
        make: impl Fn(&OsStr) -> io::Result<T>,
    ) -> Result<(Self, T), StepError> {
        let mut attempt = 0;
        loop {
            let counter = TEMPORARY_COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = temporary_name(std::process::id(), counter);
            attempt += 1;
            match make(&name) {
                Ok(made) => {
                    let temporary = Self {
                        dir,
                        name,
                        placed: false,
                    };
                    return Ok((temporary, made));
                }
                Err(error)
                    if error.raw_os_error() == Some(libc::EEXIST)
                        && attempt < TEMPORARY_ATTEMPTS =>
                {
                    tracing::debug!(name = ?name, "temporary name taken, trying the next one");
                }
                Err(source) => {
                    return Err(StepError::CreateTemporary {
                        entry: description(),
                        name: name.to_string_lossy().into_owned(),
                        source,
                    })
                }
            }
        }
    }

    fn name(&self) -> &OsStr {
        &self.name
    }

    /// Renames the entry onto `final_name` in the same directory.
    fn place(mut self, final_name: &OsStr) -> Result<(), StepError> {
        self.dir
            .rename(&self.name, final_name)
            .map_err(|source| StepError::Rename {
                name: self.name.to_string_lossy().into_owned(),
                source,
            })?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Temporary<'_> {
    fn drop(&mut self) {
        if self.placed {
            return;
        }
        if let Err(error) = self.dir.remove_file(&self.name) {
            tracing::warn!(name = ?self.name, %error, "could not remove a temporary entry");
        }
    }
}

/// An entry addressed by its open parent directory and its name there.
struct Location {
    dir: Rc<Dir>,
    name: OsString,
}

impl Location {
    /// Returns the entry's status, not following a symlink, or `None` when
    /// it is missing.
    fn status(&self, tree: Tree) -> Result<Option<Status>, StepError> {
        self.dir
            .stat(&self.name)
            .map_err(|source| StepError::ReadEntry { tree, source })
    }
}

/// A source entry read the way the diff reads it, with its status, and for
/// a regular file the open file that its data is cloned from.
struct SourceEntry {
    entry: Entry,
    status: Status,
    file: Option<File>,
}

/// Reads the source entry at `location`, or returns `None` when it is
/// missing. A regular file is opened and read through its descriptor, so
/// its status, attributes and data all come from the same inode.
fn read_source(location: &Location) -> Result<Option<SourceEntry>, StepError> {
    let read_error = |source| StepError::ReadEntry {
        tree: Tree::Source,
        source,
    };
    let Some(status) = location.status(Tree::Source)? else {
        return Ok(None);
    };
    let file_type = engine::file_type(&status).map_err(read_error)?;
    if file_type == FileType::Regular {
        let file = location
            .dir
            .open_file(&location.name)
            .map_err(StepError::OpenSourceFile)?;
        let status = Status::of_file(&file).map_err(StepError::OpenSourceFile)?;
        if status.mode & libc::S_IFMT != libc::S_IFREG {
            return Err(StepError::SourceReplaced);
        }
        let xattrs = sysfs::file_xattrs(&file).map_err(read_error)?;
        let entry = engine::entry_of(&status, file_type, None, xattrs);
        return Ok(Some(SourceEntry {
            entry,
            status,
            file: Some(file),
        }));
    }

    let target = match file_type {
        FileType::Symlink => Some(location.dir.read_link(&location.name).map_err(read_error)?),
        _ => None,
    };
    let xattrs = location.dir.xattrs(&location.name).map_err(read_error)?;
    let entry = engine::entry_of(&status, file_type, target, xattrs);
    Ok(Some(SourceEntry {
        entry,
        status,
        file: None,
    }))
}

/// The target file that a source inode with more links became: one put
/// earlier in this call, or one that the target has at another name of
/// that inode.
struct PutFile {
    path: WorldPath,
    /// Device and inode number of the file made in the target.
    target_inode: (u64, u64),
}

/// The parent directory of the last step in one tree, kept open for the
/// next steps in the same directory: the steps come sorted by path, so most
/// of them share it.
type OpenParent = RefCell<Option<(Vec<u8>, Rc<Dir>)>>;

/// Files put so far from source inodes with more than one link, by the
/// source's device and inode number. The threads of an apply share it, and
/// a put of such a file holds the lock until the map has it, so that two
/// links of one inode never become two files.
type Linked = Mutex<HashMap<(u64, u64), PutFile>>;

/// The state of one thread of an apply: its descriptors of both roots and
/// the parent directories it keeps open.
struct Applier<'a> {
    target: Dir,
    source: Dir,
    target_parent: OpenParent,
    source_parent: OpenParent,
    linked: &'a Linked,
}

impl<'a> Applier<'a> {
    /// Makes an applier with its own descriptors of both roots.
    fn new(roots: &Roots<'_>, linked: &'a Linked) -> Result<Self, ApplyError> {
        let reopen = |tree, (path, dir): &(&Path, Dir)| {
            dir.open_dir(b"").map_err(|source| ApplyError::OpenRoot {
                tree,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Self {
            target: reopen(Tree::Target, &roots.target)?,
            source: reopen(Tree::Source, &roots.source)?,
            target_parent: RefCell::new(None),
            source_parent: RefCell::new(None),
            linked,
        })
    }

    /// Carries out one step.
    fn run(&mut self, step: &Step) -> Result<(), ApplyError> {
        tracing::trace!(?step, "apply");
        self.forget_parents(step);
        match step {
            Step::Put(path) => self.put(path).map_err(|source| ApplyError::Put {
                path: path.clone(),
                source,
            }),
            Step::Remove(path) => self.remove(path).map_err(|source| ApplyError::Remove {
                path: path.clone(),
                source,
            }),
            Step::SetMetadata(path) => {
                self.set_metadata(path)
                    .map_err(|source| ApplyError::SetMetadata {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    /// Closes every kept parent directory.
    fn forget_all_parents(&self) {
        self.target_parent.replace(None);
        self.source_parent.replace(None);
    }

    fn locate(&self, tree: Tree, path: &WorldPath) -> Result<Location, StepError> {
        let (root, open_parent) = match tree {
            Tree::Target => (&self.target, &self.target_parent),
            Tree::Source => (&self.source, &self.source_parent),
        };
        let (parent, name) = split(path);
        let name = name.to_os_string();
        if let Some((open_path, dir)) = &*open_parent.borrow() {
            if open_path == parent {
                return Ok(Location {
                    dir: Rc::clone(dir),
                    name,
                });
            }
        }

        let dir = root.open_dir(parent).map_err(|source| {
            match source.raw_os_error() {
                // openat2(2) returns ELOOP for a symlink under
                // RESOLVE_NO_SYMLINKS, and EXDEV for a mount point under
                // RESOLVE_NO_XDEV. An escape by `..` also gives EXDEV, but
                // check_step rejects `..` first.
                Some(libc::ELOOP) => StepError::SymlinkInParent { tree },
                Some(libc::EXDEV) => StepError::MountInParent { tree },
                _ => StepError::OpenParent { tree, source },
            }
        })?;
        let dir = Rc::new(dir);
        *open_parent.borrow_mut() = Some((parent.to_vec(), Rc::clone(&dir)));
        Ok(Location { dir, name })
    }

    /// Closes the kept parent directories that `step` may remove or
    /// replace: those at or below its path.
    fn forget_parents(&self, step: &Step) {
        if matches!(step, Step::SetMetadata(_)) {
            return;
        }
        let path = step.path().as_bytes();
        for open_parent in [&self.target_parent, &self.source_parent] {
            let mut open_parent = open_parent.borrow_mut();
            let below = open_parent.as_ref().is_some_and(|(open_path, _)| {
                path.is_empty()
                    || open_path
                        .strip_prefix(path)
                        .is_some_and(|rest| rest.is_empty() || rest.first() == Some(&b'/'))
            });
            if below {
                *open_parent = None;
            }
        }
    }

    fn put(&mut self, path: &WorldPath) -> Result<(), StepError> {
        let source = self.locate(Tree::Source, path)?;
        let target = self.locate(Tree::Target, path)?;
        let SourceEntry {
            entry,
            status,
            file,
        } = read_source(&source)?.ok_or(StepError::SourceMissing)?;
        let existing = target.status(Tree::Target)?;
        let existing_type = existing.as_ref().map(target_type).transpose()?;
        check_replaceable(existing_type, entry.file_type)?;

        // A file with more links becomes a link of the file put earlier for
        // the same source inode, or else of a file that the target already
        // has at another name of that inode, with the same data and
        // attributes.
        let source_inode = (status.dev, status.ino);
        let has_links = entry.file_type != FileType::Directory && status.nlink > 1;
        let mut linked = has_links.then(|| {
            self.linked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        if let Some(earlier) = linked.as_ref().and_then(|map| map.get(&source_inode)) {
            if self.put_link(earlier, &target, existing.as_ref())? {
                return Ok(());
            }
        }
        if let (Some(map), Some(from)) = (linked.as_mut(), &file) {
            if let Some(origin) = self.unchanged_link(path, &entry, &status, from) {
                if self.put_link(&origin, &target, existing.as_ref())? {
                    map.insert(source_inode, origin);
                    return Ok(());
                }
            }
        }

        let temporary = match (entry.file_type, &file) {
            (FileType::Directory, _) => {
                return put_directory(&target, &entry, &status, existing.as_ref());
            }
            (FileType::Regular, Some(from)) => {
                let (temporary, to) = make_regular(path, from, &target.dir)?;
                let current = Status::of_file(&to).map_err(|source| StepError::ReadEntry {
                    tree: Tree::Target,
                    source,
                })?;
                set_attributes(Handle::File(&to), &current, &entry, &status)?;
                temporary
            }
            (FileType::Regular, None) => return Err(StepError::SourceReplaced),
            (FileType::Symlink, _) => {
                let link_target = entry.target.as_deref().unwrap_or_default();
                let description = || "a symlink".to_owned();
                let make = |name: &OsStr| target.dir.make_symlink(name, link_target);
                let temporary = Temporary::create(&target.dir, &description, make)?.0;
                set_new_attributes(&target.dir, temporary.name(), &entry, &status)?;
                temporary
            }
            (FileType::Fifo, _) => make_node(&target.dir, &entry, &status, SFlag::S_IFIFO)?,
            (FileType::Socket, _) => make_node(&target.dir, &entry, &status, SFlag::S_IFSOCK)?,
            (FileType::CharDevice, _) => make_node(&target.dir, &entry, &status, SFlag::S_IFCHR)?,
            (FileType::BlockDevice, _) => make_node(&target.dir, &entry, &status, SFlag::S_IFBLK)?,
        };
        temporary.place(&target.name)?;

        if let Some(map) = linked.as_mut() {
            let made = target
                .status(Tree::Target)?
                .ok_or(StepError::TargetMissing)?;
            let put = PutFile {
                path: path.clone(),
                target_inode: (made.dev, made.ino),
            };
            map.insert(source_inode, put);
        }
        Ok(())
    }

    /// Returns the target's file at another name of the inode of source file
    /// `from` (at `path`, with `entry` and `status`), when it has the same
    /// data, owner, mode, times and xattrs. Linking to it keeps a link that
    /// the source added to a file which the target has unchanged.
    fn unchanged_link(
        &self,
        path: &WorldPath,
        entry: &Entry,
        status: &Status,
        from: &File,
    ) -> Option<PutFile> {
        let names = btrfs::inode_paths(&self.source, status.ino).ok()?;
        for name in names {
            let other = WorldPath::from_bytes(&name);
            if &other == path {
                continue;
            }
            let Ok(origin) = self.locate(Tree::Target, &other) else {
                continue;
            };
            let Ok(file) = origin.dir.open_file(&origin.name) else {
                continue;
            };
            let Ok(found) = Status::of_file(&file) else {
                continue;
            };
            let same_attributes = found.mode & libc::S_IFMT == libc::S_IFREG
                && (found.mode & 0o7777, found.uid, found.gid)
                    == (entry.mode, entry.uid, entry.gid)
                && (found.size, found.mtime) == (status.size, status.mtime)
                && sysfs::file_xattrs(&file).is_ok_and(|xattrs| xattrs == entry.xattrs);
            if same_attributes && engine::same_content(&file, from).unwrap_or(false) {
                return Some(PutFile {
                    path: other,
                    target_inode: (found.dev, found.ino),
                });
            }
        }
        None
    }

    /// Makes `target` a hard link of the file at `earlier.path`. Returns false, so that the caller makes a new file,
    /// when that path no longer names the file made then.
    fn put_link(
        &self,
        earlier: &PutFile,
        target: &Location,
        existing: Option<&Status>,
    ) -> Result<bool, StepError> {
        let origin = self.locate(Tree::Target, &earlier.path)?;
        let origin_inode = origin
            .status(Tree::Target)?
            .map(|status| (status.dev, status.ino));
        if origin_inode != Some(earlier.target_inode) {
            tracing::debug!(
                origin = %earlier.path,
                "earlier link replaced or removed, making a new file"
            );
            return Ok(false);
        }
        // rename(2) does nothing when both names are links of one file, so
        // an existing link stays as it is.
        if existing.is_some_and(|existing| (existing.dev, existing.ino) == earlier.target_inode) {
            return Ok(true);
        }

        let description = || format!("a hard link of `{}`", earlier.path);
        let make = |name: &OsStr| origin.dir.link(&origin.name, &target.dir, name);
        let (temporary, ()) = Temporary::create(&target.dir, &description, make)?;
        temporary.place(&target.name)?;
        Ok(true)
    }

    fn remove(&self, path: &WorldPath) -> Result<(), StepError> {
        let target = match self.locate(Tree::Target, path) {
            Ok(target) => target,
            // A missing parent, or one that is not a directory, contains no
            // entry to remove.
            Err(StepError::OpenParent { source, .. })
                if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
            {
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let Some(existing) = target.status(Tree::Target)? else {
            return Ok(());
        };

        if existing.mode & libc::S_IFMT == libc::S_IFDIR {
            target
                .dir
                .remove_dir(&target.name)
                .map_err(StepError::RemoveDirectory)
        } else {
            target
                .dir
                .remove_file(&target.name)
                .map_err(StepError::RemoveFile)
        }
    }

    fn set_metadata(&self, path: &WorldPath) -> Result<(), StepError> {
        let source = self.locate(Tree::Source, path)?;
        let target = self.locate(Tree::Target, path)?;
        let SourceEntry { entry, status, .. } =
            read_source(&source)?.ok_or(StepError::SourceMissing)?;
        let existing = target
            .status(Tree::Target)?
            .ok_or(StepError::TargetMissing)?;

        let in_target = target_type(&existing)?;
        if in_target != entry.file_type {
            return Err(StepError::TypeMismatch {
                in_target,
                in_source: entry.file_type,
            });
        }
        let handle = Handle::Name(&target.dir, &target.name);
        set_attributes(handle, &existing, &entry, &status)
    }
}

/// Creates the directory at `target` unless it exists (`existing`), then
/// gives it the source's attributes. A directory created here is removed
/// again when its attributes cannot be set.
fn put_directory(
    target: &Location,
    entry: &Entry,
    status: &Status,
    existing: Option<&Status>,
) -> Result<(), StepError> {
    if let Some(existing) = existing {
        let handle = Handle::Name(&target.dir, &target.name);
        return set_attributes(handle, existing, entry, status);
    }

    // Closed to others until its own mode is set.
    target
        .dir
        .make_dir(&target.name, 0o700)
        .map_err(StepError::MakeDirectory)?;
    let result = set_new_attributes(&target.dir, &target.name, entry, status);
    if result.is_err() {
        if let Err(error) = target.dir.remove_dir(&target.name) {
            tracing::warn!(name = ?target.name, %error, "could not remove a new directory");
        }
    }
    result
}

/// Makes a temporary regular file in `dir` that shares the data of the
/// source file `from`, or contains a copy of it where sharing is not
/// possible, and returns it with the new file open for writing.
fn make_regular<'a>(
    path: &WorldPath,
    from: &File,
    dir: &'a Dir,
) -> Result<(Temporary<'a>, File), StepError> {
    let description = || "a regular file".to_owned();
    let (temporary, to) = Temporary::create(dir, &description, |name| dir.create_file(name))?;
    if let Err(error) = match_nocow(from, &to) {
        tracing::debug!(%path, %error, "could not match the nodatacow flag of the source");
    }
    match sysfs::clone_file(from, &to) {
        Ok(()) => {}
        Err(error)
            if matches!(
                error.raw_os_error(),
                Some(libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL)
            ) =>
        {
            tracing::debug!(%path, %error, "FICLONE failed, copying the data instead");
            copy_data(from, &to).map_err(StepError::CopyData)?;
        }
        Err(error) => return Err(StepError::CloneData(error)),
    }
    Ok((temporary, to))
}

/// Gives the empty file `to` the nodatacow flag (`chattr +C`) of `from`:
/// btrfs clones only between files that both have it or both lack it, and
/// sets it only on empty files. A file that keeps another flag than its
/// source is copied by the fallback.
fn match_nocow(from: &File, to: &File) -> io::Result<()> {
    let source_nocow = sysfs::inode_flags(from)? & sysfs::NOCOW_FLAG;
    let current = sysfs::inode_flags(to)?;
    if current & sysfs::NOCOW_FLAG != source_nocow {
        sysfs::set_inode_flags(to, (current & !sysfs::NOCOW_FLAG) | source_nocow)?;
    }
    Ok(())
}

/// Copies all of `from` into the empty file `to`.
// NOTE: the copy writes holes out as zeros, so a sparse file that cannot be
// cloned takes its full size in the target.
fn copy_data(from: &File, to: &File) -> io::Result<()> {
    let mut reader = from;
    let mut writer = to;
    io::copy(&mut reader, &mut writer)?;
    Ok(())
}

/// The target entry whose attributes are set: an open regular file, or a
/// name in a directory for the other types.
#[derive(Clone, Copy)]
enum Handle<'a> {
    File(&'a File),
    Name(&'a Dir, &'a OsStr),
}

impl Handle<'_> {
    fn set_owner(self, uid: u32, gid: u32) -> io::Result<()> {
        match self {
            Self::File(file) => Ok(nix::unistd::fchown(
                file.as_raw_fd(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            )?),
            Self::Name(dir, name) => dir.set_owner(name, uid, gid),
        }
    }

    fn set_mode(self, mode: u32) -> io::Result<()> {
        match self {
            Self::File(file) => {
                let mode = Mode::from_bits_truncate(mode as libc::mode_t);
                Ok(nix::sys::stat::fchmod(file.as_raw_fd(), mode)?)
            }
            Self::Name(dir, name) => dir.set_mode(name, mode),
        }
    }

    fn xattrs(self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self {
            Self::File(file) => sysfs::file_xattrs(file),
            Self::Name(dir, name) => dir.xattrs(name),
        }
    }

    fn set_xattr(self, attribute: &[u8], value: &[u8]) -> io::Result<()> {
        match self {
            Self::File(file) => sysfs::set_file_xattr(file, attribute, value),
            Self::Name(dir, name) => dir.set_xattr(name, attribute, value),
        }
    }

    fn remove_xattr(self, attribute: &[u8]) -> io::Result<()> {
        match self {
            Self::File(file) => sysfs::remove_file_xattr(file, attribute),
            Self::Name(dir, name) => dir.remove_xattr(name, attribute),
        }
    }

    fn set_times(self, atime: &TimeSpec, mtime: &TimeSpec) -> io::Result<()> {
        match self {
            Self::File(file) => Ok(nix::sys::stat::futimens(file.as_raw_fd(), atime, mtime)?),
            Self::Name(dir, name) => dir.set_times(name, atime, mtime),
        }
    }
}

/// Sets the attributes of the entry `name` in `dir`, just made, to those of
/// the source entry.
fn set_new_attributes(
    dir: &Dir,
    name: &OsStr,
    entry: &Entry,
    status: &Status,
) -> Result<(), StepError> {
    let current = dir
        .stat(name)
        .and_then(|current| current.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT)))
        .map_err(|source| StepError::ReadEntry {
            tree: Tree::Target,
            source,
        })?;
    set_attributes(Handle::Name(dir, name), &current, entry, status)
}

/// Sets the attributes of the target entry `handle`, whose status is
/// `current`, to those of the source entry `entry` with status `status`, in
/// the order the module documentation explains. Calls that would change
/// nothing are left out: each one writes the inode in a btrfs transaction.
fn set_attributes(
    handle: Handle<'_>,
    current: &Status,
    entry: &Entry,
    status: &Status,
) -> Result<(), StepError> {
    let owner_changed = (current.uid, current.gid) != (entry.uid, entry.gid);
    if owner_changed {
        handle
            .set_owner(entry.uid, entry.gid)
            .map_err(|source| StepError::SetOwner {
                uid: entry.uid,
                gid: entry.gid,
                source,
            })?;
    }

    // Linux gives every symlink mode 0777 and cannot change it. chown(2)
    // may have cleared the setuid and setgid bits, so the mode is set
    // again after it.
    let mode_differs = current.mode & 0o7777 != entry.mode;
    if entry.file_type != FileType::Symlink && (owner_changed || mode_differs) {
        handle
            .set_mode(entry.mode)
            .map_err(|source| StepError::SetMode {
                mode: entry.mode,
                source,
            })?;
    }

    let existing = handle.xattrs().map_err(StepError::ReadXattrs)?;
    let changes = xattr_changes(&existing, &entry.xattrs);
    for attribute in changes.remove {
        handle
            .remove_xattr(attribute)
            .map_err(|source| StepError::RemoveXattr {
                name: String::from_utf8_lossy(attribute).into_owned(),
                source,
            })?;
    }
    for (attribute, value) in changes.set {
        handle
            .set_xattr(attribute, value)
            .map_err(|source| StepError::SetXattr {
                name: String::from_utf8_lossy(attribute).into_owned(),
                source,
            })?;
    }

    // Owner, mode and xattrs move only the ctime, so the times read in
    // `current` still hold.
    if (current.atime, current.mtime) != (status.atime, status.mtime) {
        let atime = TimeSpec::new(status.atime.0, status.atime.1);
        let mtime = TimeSpec::new(status.mtime.0, status.mtime.1);
        handle
            .set_times(&atime, &mtime)
            .map_err(StepError::SetTimes)?;
    }
    Ok(())
}

/// Makes a temporary fifo, socket or device node of type `kind` in `dir`
/// with the device number and attributes of the source entry.
fn make_node<'a>(
    dir: &'a Dir,
    entry: &Entry,
    status: &Status,
    kind: SFlag,
) -> Result<Temporary<'a>, StepError> {
    let rdev = entry.rdev.unwrap_or(0);
    let description = || format!("a {}", entry.file_type.name());
    let make = |name: &OsStr| dir.make_node(name, kind, rdev);
    let temporary = Temporary::create(dir, &description, make)?.0;
    set_new_attributes(dir, temporary.name(), entry, status)?;
    Ok(temporary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> WorldPath {
        WorldPath::from_bytes(text.as_bytes())
    }

    #[test]
    fn check_step_paths() {
        let dotted = WorldPath::root().join(b"a").join(b"..");
        let cases = [
            (Step::Put(path("etc/passwd")), Ok(())),
            (Step::Put(WorldPath::root()), Ok(())),
            (Step::SetMetadata(WorldPath::root()), Ok(())),
            (
                Step::Remove(WorldPath::root()),
                Err(InvalidPath::RemoveRoot),
            ),
            (Step::Put(dotted.clone()), Err(InvalidPath::BadComponent)),
            (Step::Remove(dotted), Err(InvalidPath::BadComponent)),
            (
                Step::Put(WorldPath::root().join(b"..")),
                Err(InvalidPath::BadComponent),
            ),
            (
                Step::SetMetadata(WorldPath::root().join(b".").join(b"a")),
                Err(InvalidPath::BadComponent),
            ),
            (
                Step::Put(WorldPath::root().join(b"a//b")),
                Err(InvalidPath::BadComponent),
            ),
            (
                Step::Put(WorldPath::root().join(b"nul\0")),
                Err(InvalidPath::Nul),
            ),
            (Step::Put(path("...")), Ok(())),
            (Step::Put(path(".hidden/..x")), Ok(())),
        ];
        for (step, expected) in cases {
            assert_eq!(check_step(&step), expected, "{step:?}");
        }
    }

    #[test]
    fn split_parent_and_name() {
        let cases: [(&str, &[u8], &str); 4] = [
            ("", b"", "."),
            ("etc", b"", "etc"),
            ("etc/passwd", b"etc", "passwd"),
            ("a/b/c", b"a/b", "c"),
        ];
        for (text, parent, name) in cases {
            let path = path(text);
            assert_eq!(split(&path), (parent, OsStr::new(name)), "{text:?}");
        }
    }

    #[test]
    fn replaceable_types() {
        const TYPES: [FileType; 7] = [
            FileType::Regular,
            FileType::Directory,
            FileType::Symlink,
            FileType::Fifo,
            FileType::Socket,
            FileType::CharDevice,
            FileType::BlockDevice,
        ];
        for in_source in TYPES {
            assert!(check_replaceable(None, in_source).is_ok(), "{in_source:?}");
            for in_target in TYPES {
                let dirs = [in_target, in_source]
                    .iter()
                    .filter(|t| **t == FileType::Directory)
                    .count();
                let result = check_replaceable(Some(in_target), in_source);
                assert_eq!(result.is_ok(), dirs != 1, "{in_target:?} -> {in_source:?}");
            }
        }
    }

    #[test]
    fn type_mismatch_message() {
        let error = check_replaceable(Some(FileType::Directory), FileType::Regular).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the target has a directory where the source has a regular file; remove it first"
        );
    }

    fn attributes(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn xattr_changes_cases() {
        let current = attributes(&[("user.keep", "1"), ("user.old", "x"), ("user.edit", "a")]);
        let expected = attributes(&[("user.keep", "1"), ("user.edit", "b"), ("user.new", "y")]);
        let changes = xattr_changes(&current, &expected);
        assert_eq!(changes.remove, [b"user.old".as_slice()]);
        assert_eq!(
            changes.set,
            [
                (b"user.edit".as_slice(), b"b".as_slice()),
                (b"user.new".as_slice(), b"y".as_slice()),
            ]
        );

        let none = xattr_changes(&current, &current);
        assert!(none.remove.is_empty());
        assert!(none.set.is_empty());

        let cleared = xattr_changes(&current, &[]);
        assert_eq!(cleared.remove.len(), 3);
        assert!(cleared.set.is_empty());
    }

    #[test]
    fn temporary_names() {
        assert_eq!(temporary_name(42, 7), ".world-merge.42.7");
    }

    #[test]
    fn error_chain_names_step_and_path() {
        let error = ApplyError::Put {
            path: path("etc/evil"),
            source: StepError::SymlinkInParent { tree: Tree::Target },
        };
        assert_eq!(error.to_string(), "put `/etc/evil`");
        let cause = std::error::Error::source(&error).unwrap().to_string();
        assert_eq!(
            cause,
            "a parent directory in the target is a symlink, which apply does not follow"
        );
    }
}
