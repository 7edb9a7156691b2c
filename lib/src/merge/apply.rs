//! The apply engine: carries out a list of [`Step`]s on a target tree,
//! taking entries from a source tree, as `world merge` does with a child's
//! changes.
//!
//! The caller orders the steps, and [`apply`] carries out each one exactly
//! as given, in order, and stops at the first failure. Removals of a subtree come
//! deepest first, and directories come before their contents. Adding,
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
//! that do not follow it either. A path that crosses a symlink in either
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
//! and the times come last because making the entry moved them.
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
//! - Extended attributes and `lstat` go through `/proc/self/fd`, so procfs
//!   must be mounted at `/proc`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::stat::SFlag;
use nix::sys::time::TimeSpec;

use crate::diff::engine::read_entry;
use crate::diff::{Entry, FileType};
use crate::path::WorldPath;
use crate::sys::beneath::Dir;
use crate::sys::fs as sysfs;

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

/// Applies `steps` in order to the tree at `target`, taking entries from
/// the tree at `source`, and calls `progress` with the number of steps done
/// after each one.
///
/// All step paths are checked first, so an invalid one fails before any
/// step runs. After that the first failing step stops the apply: the steps
/// before it stay applied, and the temporary entry of the failing step, if
/// any, is removed.
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

    let mut applier = Applier {
        target: open_root(Tree::Target, target)?,
        source: open_root(Tree::Source, source)?,
        linked: HashMap::new(),
    };

    for (index, step) in steps.iter().enumerate() {
        tracing::trace!(?step, "apply");
        match step {
            Step::Put(path) => applier.put(path).map_err(|source| ApplyError::Put {
                path: path.clone(),
                source,
            })?,
            Step::Remove(path) => applier.remove(path).map_err(|source| ApplyError::Remove {
                path: path.clone(),
                source,
            })?,
            Step::SetMetadata(path) => {
                applier
                    .set_metadata(path)
                    .map_err(|source| ApplyError::SetMetadata {
                        path: path.clone(),
                        source,
                    })?
            }
        }
        progress(index + 1);
    }
    Ok(())
}

fn open_root(tree: Tree, path: &Path) -> Result<Dir, ApplyError> {
    Dir::open(path).map_err(|source| ApplyError::OpenRoot {
        tree,
        path: path.to_path_buf(),
        source,
    })
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
fn target_type(metadata: &Metadata) -> Result<FileType, StepError> {
    FileType::from_mode(metadata.mode()).ok_or_else(|| StepError::ReadEntry {
        tree: Tree::Target,
        source: io::Error::new(io::ErrorKind::InvalidData, "unknown file type"),
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
    dir: Dir,
    name: OsString,
}

impl Location {
    /// Returns the entry's attributes, not following a symlink, or `None`
    /// when it is missing.
    fn metadata(&self, tree: Tree) -> Result<Option<Metadata>, StepError> {
        self.dir
            .metadata(&self.name)
            .map_err(|source| StepError::ReadEntry { tree, source })
    }

    /// Reads the entry the way the diff does, or returns `None` when it is
    /// missing.
    fn read(&self, tree: Tree) -> Result<Option<(Entry, Metadata)>, StepError> {
        let Some(metadata) = self.metadata(tree)? else {
            return Ok(None);
        };
        let entry = read_entry(&self.dir.proc_path(&self.name), &metadata)
            .map_err(|source| StepError::ReadEntry { tree, source })?;
        Ok(Some((entry, metadata)))
    }
}

/// A file put earlier in this call whose source inode has more links.
struct PutFile {
    path: WorldPath,
    /// Device and inode number of the file made in the target.
    target_inode: (u64, u64),
}

struct Applier {
    target: Dir,
    source: Dir,
    /// Files put so far from source inodes with more than one link, by the
    /// source's device and inode number.
    linked: HashMap<(u64, u64), PutFile>,
}

impl Applier {
    fn locate(&self, tree: Tree, path: &WorldPath) -> Result<Location, StepError> {
        let root = match tree {
            Tree::Target => &self.target,
            Tree::Source => &self.source,
        };
        let (parent, name) = split(path);
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
        Ok(Location {
            dir,
            name: name.to_os_string(),
        })
    }

    fn put(&mut self, path: &WorldPath) -> Result<(), StepError> {
        let source = self.locate(Tree::Source, path)?;
        let target = self.locate(Tree::Target, path)?;
        let (entry, metadata) = source.read(Tree::Source)?.ok_or(StepError::SourceMissing)?;
        let existing = target.metadata(Tree::Target)?;
        let existing_type = existing.as_ref().map(target_type).transpose()?;
        check_replaceable(existing_type, entry.file_type)?;

        // NOTE: only paths put in this call are linked together, so a link
        // to a target file that this call did not put becomes a new file.
        let source_inode = (metadata.dev(), metadata.ino());
        let has_links = entry.file_type != FileType::Directory && metadata.nlink() > 1;
        if has_links {
            if let Some(earlier) = self.linked.get(&source_inode) {
                if self.put_link(earlier, &target, existing.as_ref())? {
                    return Ok(());
                }
            }
        }

        let temporary = match entry.file_type {
            FileType::Directory => {
                return put_directory(&target, &entry, &metadata, existing.is_some());
            }
            FileType::Regular => make_regular(path, &source, &target.dir)?,
            FileType::Symlink => {
                let link_target = entry.target.as_deref().unwrap_or_default();
                let description = || "a symlink".to_owned();
                let make = |name: &OsStr| target.dir.make_symlink(name, link_target);
                Temporary::create(&target.dir, &description, make)?.0
            }
            FileType::Fifo => make_node(&target.dir, &entry, SFlag::S_IFIFO)?,
            FileType::Socket => make_node(&target.dir, &entry, SFlag::S_IFSOCK)?,
            FileType::CharDevice => make_node(&target.dir, &entry, SFlag::S_IFCHR)?,
            FileType::BlockDevice => make_node(&target.dir, &entry, SFlag::S_IFBLK)?,
        };
        set_attributes(&target.dir, temporary.name(), &entry, &metadata)?;
        temporary.place(&target.name)?;

        if has_links {
            let made = target
                .metadata(Tree::Target)?
                .ok_or(StepError::TargetMissing)?;
            let put = PutFile {
                path: path.clone(),
                target_inode: (made.dev(), made.ino()),
            };
            self.linked.insert(source_inode, put);
        }
        Ok(())
    }

    /// Makes `target` a hard link of the file put earlier at
    /// `earlier.path`. Returns false, so that the caller makes a new file,
    /// when that path no longer names the file made then.
    fn put_link(
        &self,
        earlier: &PutFile,
        target: &Location,
        existing: Option<&Metadata>,
    ) -> Result<bool, StepError> {
        let origin = self.locate(Tree::Target, &earlier.path)?;
        let origin_inode = origin
            .metadata(Tree::Target)?
            .map(|metadata| (metadata.dev(), metadata.ino()));
        if origin_inode != Some(earlier.target_inode) {
            tracing::debug!(
                origin = %earlier.path,
                "earlier link replaced or removed, making a new file"
            );
            return Ok(false);
        }
        // rename(2) does nothing when both names are links of one file, so
        // an existing link stays as it is.
        if existing.is_some_and(|existing| (existing.dev(), existing.ino()) == earlier.target_inode)
        {
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
        let Some(existing) = target.metadata(Tree::Target)? else {
            return Ok(());
        };

        if existing.is_dir() {
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
        let (entry, metadata) = source.read(Tree::Source)?.ok_or(StepError::SourceMissing)?;
        let existing = target
            .metadata(Tree::Target)?
            .ok_or(StepError::TargetMissing)?;

        let in_target = target_type(&existing)?;
        if in_target != entry.file_type {
            return Err(StepError::TypeMismatch {
                in_target,
                in_source: entry.file_type,
            });
        }
        set_attributes(&target.dir, &target.name, &entry, &metadata)
    }
}

/// Creates the directory at `target` unless it `exists`, then gives it the
/// source's attributes. A directory created here is removed again when its
/// attributes cannot be set.
fn put_directory(
    target: &Location,
    entry: &Entry,
    metadata: &Metadata,
    exists: bool,
) -> Result<(), StepError> {
    if exists {
        return set_attributes(&target.dir, &target.name, entry, metadata);
    }

    // Closed to others until its own mode is set.
    target
        .dir
        .make_dir(&target.name, 0o700)
        .map_err(StepError::MakeDirectory)?;
    let result = set_attributes(&target.dir, &target.name, entry, metadata);
    if result.is_err() {
        if let Err(error) = target.dir.remove_dir(&target.name) {
            tracing::warn!(name = ?target.name, %error, "could not remove a new directory");
        }
    }
    result
}

/// Makes a temporary regular file in `dir` that shares the data of the
/// source file, or contains a copy of it where sharing is not possible.
fn make_regular<'a>(
    path: &WorldPath,
    source: &Location,
    dir: &'a Dir,
) -> Result<Temporary<'a>, StepError> {
    let from = source
        .dir
        .open_file(&source.name)
        .map_err(StepError::OpenSourceFile)?;
    let from_metadata = from.metadata().map_err(StepError::OpenSourceFile)?;
    if !from_metadata.is_file() {
        return Err(StepError::SourceReplaced);
    }

    let description = || "a regular file".to_owned();
    let (temporary, to) = Temporary::create(dir, &description, |name| dir.create_file(name))?;
    if let Err(error) = match_nocow(&from, &to) {
        tracing::debug!(%path, %error, "could not match the nodatacow flag of the source");
    }
    match sysfs::clone_file(&from, &to) {
        Ok(()) => {}
        Err(error)
            if matches!(
                error.raw_os_error(),
                Some(libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL)
            ) =>
        {
            tracing::debug!(%path, %error, "FICLONE failed, copying the data instead");
            copy_data(&from, &to).map_err(StepError::CopyData)?;
        }
        Err(error) => return Err(StepError::CloneData(error)),
    }
    Ok(temporary)
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

/// Sets the attributes of entry `name` in `dir` to those of the source
/// entry, in the order the module documentation explains.
fn set_attributes(
    dir: &Dir,
    name: &OsStr,
    entry: &Entry,
    metadata: &Metadata,
) -> Result<(), StepError> {
    dir.set_owner(name, entry.uid, entry.gid)
        .map_err(|source| StepError::SetOwner {
            uid: entry.uid,
            gid: entry.gid,
            source,
        })?;

    // Linux gives every symlink mode 0777 and cannot change it.
    if entry.file_type != FileType::Symlink {
        dir.set_mode(name, entry.mode)
            .map_err(|source| StepError::SetMode {
                mode: entry.mode,
                source,
            })?;
    }

    let current = dir.xattrs(name).map_err(StepError::ReadXattrs)?;
    let changes = xattr_changes(&current, &entry.xattrs);
    for attribute in changes.remove {
        dir.remove_xattr(name, attribute)
            .map_err(|source| StepError::RemoveXattr {
                name: String::from_utf8_lossy(attribute).into_owned(),
                source,
            })?;
    }
    for (attribute, value) in changes.set {
        dir.set_xattr(name, attribute, value)
            .map_err(|source| StepError::SetXattr {
                name: String::from_utf8_lossy(attribute).into_owned(),
                source,
            })?;
    }

    let atime = TimeSpec::new(metadata.atime(), metadata.atime_nsec());
    let mtime = TimeSpec::new(metadata.mtime(), metadata.mtime_nsec());
    dir.set_times(name, &atime, &mtime)
        .map_err(StepError::SetTimes)
}

/// Makes a temporary fifo, socket or device node of type `kind` in `dir`
/// with the device number of `entry`.
fn make_node<'a>(dir: &'a Dir, entry: &Entry, kind: SFlag) -> Result<Temporary<'a>, StepError> {
    let rdev = entry.rdev.unwrap_or(0);
    let description = || format!("a {}", entry.file_type.name());
    let make = |name: &OsStr| dir.make_node(name, kind, rdev);
    Ok(Temporary::create(dir, &description, make)?.0)
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
