//! A store: the worlds of one machine, their subvolumes and their metadata.
//!
//! # Layout
//!
//! ```text
//! STORE/
//!   worlds.db        metadata in SQLite: worlds, operation log, store facts
//!   lock             flock(2) target of the store-wide write lock
//!   pool.img         sparse btrfs image, only when STORE is not on btrfs
//!   pool/            the pool: the image's mount point, or a plain directory
//!     worlds/NAME    root filesystem of world NAME, a writable subvolume
//!     bases/NAME     base of child world NAME: a read-only snapshot of its
//!                    parent, taken at the instant the child was made
//!     tmp/           root worlds being filled (`import.PID.NAME`),
//!                    snapshots that a diff reads (`diff.PID.NAME`) and
//!                    new bases of merges in progress (`merge.ID.base`)
//!     premerge/ID.parent  read-only snapshot of a parent before merge ID,
//!                    kept for undo
//!     premerge/ID.base    the child's base before merge ID
//!   run/             runtime files of running worlds (see `runtime`)
//!     NAME/          bundle/config.json, hostname, hosts, resolv.conf,
//!                    plan.json; removed when the world stops
//!     containers/ID  libcontainer's state of each running world
//!   logs/NAME.log    the log of world NAME's monitor
//! ```
//!
//! The table `meta` of `worlds.db` stores `layout` = [`LAYOUT_VERSION`]; a
//! store with a newer layout is refused.
//!
//! # Consistency
//!
//! The database is the truth. Every change takes the store-wide lock, makes
//! its subvolumes first and records them last, in one transaction with its
//! entry in the operation log; readers take no lock. A crash in between
//! leaves subvolumes without records, which [`Store::reconcile`] removes
//! under the lock at the start of the next command, and reports.
//!
//! # Limitations
//!
//! - Store paths must not contain symlinks that change while a command runs.
//! - Subvolumes nested inside a world are not part of its snapshots: a
//!   child sees an empty directory where its parent has one, and a diff
//!   shows only the directory. Deleting the world deletes them too.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::db::{Db, DbError, Source, WorldRecord};
use crate::diff::{self, engine, Change, DiffOptions, Method};
use crate::name::WorldName;
use crate::pool::{self, PoolError, PoolInfo};
use crate::rootfs::{self, Progress, RootSource, RootfsError};
use crate::sys::btrfs;

mod merging;

pub use merging::{
    CombineOutcome, MergeOptions, MergeOutcome, MergeProgress, UndoOutcome, KEEP_PREMERGE,
};

/// Version of the on-disk layout described in this module's documentation.
pub const LAYOUT_VERSION: u32 = 1;
/// The store used when none is named.
pub const DEFAULT_DIR: &str = "/var/lib/worlds";

const DB_NAME: &str = "worlds.db";
const LOCK_NAME: &str = "lock";
const WORLDS_DIR: &str = "worlds";
const BASES_DIR: &str = "bases";
const TMP_DIR: &str = "tmp";
const LOGS_DIR: &str = "logs";
/// Prefix of a root world being filled in `tmp/`: `import.PID.NAME`.
const IMPORT_PREFIX: &str = "import.";
/// Prefix of a read-only snapshot that a diff reads: `diff.PID.NAME`.
const DIFF_PREFIX: &str = "diff.";

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("worlds must run as root")]
    NotRoot,
    #[error("no store at `{dir}`")]
    NoStore { dir: PathBuf },
    #[error("create store directory `{path}`")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("let only root enter the pool `{path}`")]
    RestrictPool { path: PathBuf, source: io::Error },
    #[error("store path `{path}` exists and is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("store path `{dir}` is inside the pool of the store `{outer}`")]
    InsideStore { dir: PathBuf, outer: PathBuf },
    #[error("store `{dir}` has layout version {found}, newer than the {LAYOUT_VERSION} this build knows; upgrade worlds")]
    LayoutTooNew { dir: PathBuf, found: String },
    #[error("take the store lock `{path}`")]
    Lock { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("world `{name}` not found")]
    WorldNotFound { name: WorldName },
    #[error("world `{name}` already exists")]
    WorldExists { name: WorldName },
    #[error("world `{child}` is a child of {}, not of `{expected}`", describe_parent(.actual.as_ref()))]
    WrongParent {
        child: WorldName,
        expected: WorldName,
        actual: Option<WorldName>,
    },
    #[error("world `{name}` has children: {}", join_names(.children))]
    HasChildren {
        name: WorldName,
        children: Vec<WorldName>,
    },
    #[error("snapshot world `{parent}` into `{child}`")]
    Snapshot {
        parent: WorldName,
        child: WorldName,
        source: io::Error,
    },
    #[error("create subvolume `{path}`")]
    CreateSubvolume { path: PathBuf, source: io::Error },
    #[error("delete subvolume `{path}`")]
    DeleteSubvolume { path: PathBuf, source: io::Error },
    #[error("`{path}` is not a btrfs subvolume; it is left alone")]
    NotSubvolume { path: PathBuf },
    #[error("fill root world `{name}`")]
    Fill {
        name: WorldName,
        source: RootfsError,
    },
    #[error("move subvolume `{from}` to `{to}`")]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("read store directory `{path}`")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("world `{name}` is a root world and has no base to compare with")]
    NoBase { name: WorldName },
    #[error("merge world `{child}` into `{parent}`")]
    Merge {
        child: WorldName,
        parent: WorldName,
        source: io::Error,
    },
    #[error("apply changes to world `{world}`")]
    Apply {
        world: WorldName,
        source: crate::merge::apply::ApplyError,
    },
    #[error("world `{parent}` has no merge that can be undone")]
    NothingToUndo { parent: WorldName },
    #[error(
        "world `{parent}` changed {count} path{} since merge {merge}, such as `{example}`; undoing the merge would lose {}",
        if *count == 1 { "" } else { "s" },
        if *count == 1 { "that change" } else { "those changes" }
    )]
    UndoLosesChanges {
        parent: WorldName,
        merge: i64,
        count: usize,
        example: crate::path::WorldPath,
    },
    #[error("world `{sibling}` is not a child of `{parent}`, so it cannot be combined into a child of it")]
    NotSibling {
        sibling: WorldName,
        parent: WorldName,
    },
    #[error("compare world `{name}` with the base of `{child}`")]
    Diff {
        name: WorldName,
        child: WorldName,
        source: io::Error,
    },
    #[error("clean up after worlds whose monitor is gone")]
    Reconcile {
        source: Box<crate::runtime::RuntimeError>,
    },
    #[error("world `{name}` is running")]
    WorldRunning { name: WorldName },
    #[error("operation {id} is not in the operation log; `world log` lists them")]
    NoOperation { id: i64 },
    #[error("read the run state of world `{name}`")]
    RunState {
        name: WorldName,
        source: Box<crate::runtime::RuntimeError>,
    },
    #[error("freeze or thaw world `{name}`")]
    Freeze {
        name: WorldName,
        source: Box<crate::runtime::RuntimeError>,
    },
    #[error("stop world `{name}`")]
    Stop {
        name: WorldName,
        source: Box<crate::runtime::RuntimeError>,
    },
}

fn describe_parent(parent: Option<&WorldName>) -> String {
    match parent {
        Some(parent) => format!("`{parent}`"),
        None => "no world (it is a root world)".into(),
    }
}

fn join_names(names: &[WorldName]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    quoted.join(", ")
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Something that [`Store::reconcile`] found and cleaned up or reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cleanup {
    /// A subvolume that an interrupted command made or was removing was
    /// deleted. The path is relative to the pool.
    Removed { path: PathBuf },
    /// A recorded world's subvolume is missing; the record is kept.
    Missing { path: PathBuf },
    /// An entry of the pool that no record or intent claims; it is left
    /// alone.
    Unknown { path: PathBuf },
    /// A leftover that could not be removed; the next command tries again.
    NotRemoved { path: PathBuf, error: String },
    /// An interrupted merge had already changed the parent completely; its
    /// journal entry was finished.
    MergeCompleted {
        merge: i64,
        child: WorldName,
        parent: WorldName,
    },
    /// An interrupted merge was rolled back: the parent is at its pre-merge
    /// state and the child has its old base.
    MergeRolledBack {
        merge: i64,
        child: WorldName,
        parent: WorldName,
    },
    /// An interrupted `world undo` was finished: the parent is at its state
    /// before the merge.
    UndoCompleted { merge: i64, parent: String },
    /// A world that an interrupted merge, undo or recovery had frozen was
    /// thawed.
    Thawed { world: WorldName },
    /// A world was recorded as running, but its monitor was gone after a
    /// crash or a reboot; its processes and runtime files were removed.
    StaleRun { world: WorldName },
}

/// Everything known about one world, for `world show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorldDetails {
    #[serde(flatten)]
    pub record: WorldRecord,
    pub children: Vec<WorldName>,
    /// The root filesystem's subvolume.
    pub path: PathBuf,
    /// The subvolume id of `path`, when readable.
    pub subvolume_id: Option<u64>,
    /// The base snapshot, for a child world.
    pub base: Option<PathBuf>,
    pub base_subvolume_id: Option<u64>,
}

/// The world that a diff compares with a child's base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffSubject {
    /// The child itself: what it changed.
    World,
    /// The child's parent: what it changed since the child was made.
    Parent,
}

/// A diff ready to compute, holding a read-only snapshot of its subject
/// until dropped.
#[derive(Debug)]
pub struct DiffView {
    subject: WorldName,
    child: WorldName,
    base: PathBuf,
    /// The subject's root: a snapshot in `tmp/`, or the world itself.
    world: PathBuf,
    /// Whether `world` is a snapshot that this view removes when dropped.
    snapshot: bool,
    since: u64,
    /// The transaction up to which `world` shows the subject's changes.
    read_at: u64,
}

impl DiffView {
    /// Returns the world whose changes this view shows.
    pub fn subject(&self) -> &WorldName {
        &self.subject
    }

    /// Returns the root of the base snapshot: the "before" side.
    pub fn base_root(&self) -> &Path {
        &self.base
    }

    /// Returns the root of the subject's snapshot: the "after" side.
    pub fn world_root(&self) -> &Path {
        &self.world
    }

    /// Returns the transaction up to which the view shows the subject's
    /// changes: every later change to the subject has a higher transaction
    /// id. For a snapshot it is the snapshot's creation, and for a world
    /// read in place the last commit that wrote it, after the syncfs.
    pub fn read_at(&self) -> u64 {
        self.read_at
    }

    /// Returns whether the view reads a read-only snapshot of its subject
    /// rather than the world in place.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }

    /// Computes the changes.
    pub fn changes(&self, options: &DiffOptions) -> Result<Vec<Change>> {
        let sides = engine::Sides {
            base: &self.base,
            world: &self.world,
        };
        let changes = match options.method {
            Method::Fast => engine::fast(&sides, self.since),
            Method::Walk => engine::walk(&sides),
        };
        let changes = changes.map_err(|source| StoreError::Diff {
            name: self.subject.clone(),
            child: self.child.clone(),
            source,
        })?;
        Ok(diff::filter(changes, &options.filters))
    }
}

impl Drop for DiffView {
    fn drop(&mut self) {
        if self.snapshot {
            remove_quietly(&self.world);
        }
    }
}

/// Options of [`Store::delete`].
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete the world's descendants too instead of refusing.
    pub recursive: bool,
    /// Refuse unless the world is a child of this one.
    pub expected_parent: Option<WorldName>,
    /// Stop running worlds first instead of refusing, giving their
    /// processes this grace period.
    pub force: Option<std::time::Duration>,
}

/// Points where a test can make a command crash, to check recovery.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After a child's snapshots exist and before they are recorded.
    AfterSnapshot,
    /// When a merge is in the journal and has touched nothing yet.
    MergeJournaled,
    /// When a merge has its pre-merge snapshot and the child's new base.
    MergePrepared,
    /// When a merge has applied half of its steps to the parent.
    MidMerge,
    /// When a merge has applied every step and not yet journaled it.
    MergeApplied,
    /// When a merge is journaled as publishing and the base is not swapped.
    MergePublishing,
    /// When a merge has swapped the child's base and not yet recorded it.
    BeforeMergeDone,
    /// When an undo is in the journal and has touched nothing yet.
    UndoJournaled,
    /// When an undo has applied half of its steps to the parent.
    MidUndo,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    pool: PathBuf,
    db: Db,
    crash_point: Option<CrashPoint>,
}

/// The store-wide write lock, held until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _lock: Flock<File>,
}

impl Store {
    /// Returns whether `dir` contains a store.
    pub fn exists(dir: &Path) -> bool {
        dir.join(DB_NAME).is_file()
    }

    /// Creates a store in `dir`, or opens the one there.
    ///
    /// A new store on a filesystem other than btrfs gets a pool image of
    /// `pool_size` bytes, or [`pool::default_size`] when `None`. A failed
    /// creation removes what it made.
    pub fn create(dir: &Path, pool_size: Option<u64>) -> Result<(Self, Vec<Cleanup>)> {
        check_root()?;
        if Self::exists(dir) {
            return Self::open(dir);
        }
        check_store_dir(dir)?;
        let size = match pool_size {
            Some(size) => size,
            None => pool::default_size(dir)?,
        };
        if pool::kind_of(dir)? == pool::PoolKind::Image {
            pool::check_size(dir, size)?;
        }

        let created_dir = !dir.exists();
        let image_existed = dir.join(pool::IMAGE_NAME).exists();
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.into(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        // Another `create` may have finished while this one waited.
        if Self::exists(dir) {
            drop(lock);
            return Self::open(dir);
        }
        let made = create_layout(dir, size);
        drop(lock);
        if let Err(error) = made {
            remove_partial_store(dir, created_dir, image_existed);
            return Err(error);
        }
        tracing::info!(dir = %dir.display(), "store created");
        Self::open(dir)
    }

    /// Opens the store in `dir`, mounting its pool if needed, and cleans up
    /// after interrupted commands when no other command holds the lock.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Cleanup>)> {
        check_root()?;
        if !Self::exists(dir) {
            return Err(StoreError::NoStore { dir: dir.into() });
        }
        let db = Db::open(&dir.join(DB_NAME), false)?;
        let Some(found) = db.meta("layout")? else {
            return Err(StoreError::Db(DbError::NotInitialized {
                path: dir.join(DB_NAME),
            }));
        };
        match found.parse::<u32>() {
            Ok(version) if version <= LAYOUT_VERSION => {}
            Ok(_) => {
                return Err(StoreError::LayoutTooNew {
                    dir: dir.into(),
                    found,
                })
            }
            Err(_) => {
                return Err(StoreError::Db(DbError::NotInitialized {
                    path: dir.join(DB_NAME),
                }))
            }
        }
        let mut store = Self {
            dir: dir.into(),
            pool: dir.join(pool::MOUNT_NAME),
            db,
            crash_point: None,
        };

        if !pool::is_mounted(dir)? {
            let _lock = store.lock()?;
            pool::ensure_mounted(dir)?;
        }
        restrict_to_root(&store.pool)?;
        let cleanups = match store.try_lock()? {
            Some(_lock) => store.reconcile()?,
            None => Vec::new(),
        };
        Ok((store, cleanups))
    }

    /// Returns the store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store-wide write lock, waiting for other writers.
    pub fn lock(&self) -> Result<StoreLock> {
        lock_dir(&self.dir)
    }

    fn try_lock(&self) -> Result<Option<StoreLock>> {
        let path = self.dir.join(LOCK_NAME);
        let file = open_lock_file(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(StoreLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(StoreError::Lock {
                path,
                source: errno.into(),
            }),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn db_mut(&mut self) -> &mut Db {
        &mut self.db
    }

    #[doc(hidden)]
    pub fn set_crash_point(&mut self, point: Option<CrashPoint>) {
        self.crash_point = point;
    }

    /// Returns the root filesystem directory of world `name`.
    pub fn world_path(&self, name: &WorldName) -> PathBuf {
        self.pool.join(WORLDS_DIR).join(name.as_str())
    }

    /// Returns the base snapshot directory of child world `name`.
    pub fn base_path(&self, name: &WorldName) -> PathBuf {
        self.pool.join(BASES_DIR).join(name.as_str())
    }

    /// Returns every world, parents before their children.
    pub fn worlds(&self) -> Result<Vec<WorldRecord>> {
        Ok(self.db.worlds()?)
    }

    /// Returns the record of world `name`.
    pub fn world(&self, name: &WorldName) -> Result<WorldRecord> {
        self.db
            .world(name)?
            .ok_or_else(|| StoreError::WorldNotFound { name: name.clone() })
    }

    /// Returns everything known about world `name`.
    pub fn details(&self, name: &WorldName) -> Result<WorldDetails> {
        let record = self.world(name)?;
        let children = self
            .worlds()?
            .into_iter()
            .filter(|world| world.parent.as_ref() == Some(name))
            .map(|world| world.name)
            .collect();
        let path = self.world_path(name);
        let base = record.parent.as_ref().map(|_| self.base_path(name));
        let subvolume_id = |path: &Path| {
            File::open(path)
                .and_then(|dir| btrfs::subvolume_id(&dir))
                .ok()
        };
        Ok(WorldDetails {
            subvolume_id: subvolume_id(&path),
            base_subvolume_id: base.as_deref().and_then(subvolume_id),
            record,
            children,
            path,
            base,
        })
    }

    /// Returns the operation log, newest first, at most `limit` entries.
    pub fn operations(&self, limit: u32) -> Result<Vec<crate::db::Operation>> {
        Ok(self.db.operations(limit)?)
    }

    /// Returns facts about the pool.
    pub fn pool_info(&self) -> Result<PoolInfo> {
        Ok(pool::info(&self.dir)?)
    }

    /// Grows an image pool to `size` bytes while it stays mounted.
    pub fn grow_pool(&mut self, size: u64) -> Result<()> {
        let _lock = self.lock()?;
        let before = pool::info(&self.dir)?.size;
        pool::grow(&self.dir, size)?;
        let writer = self.db.transaction()?;
        writer.log(
            "store-grow",
            None,
            &serde_json::json!({ "from": before, "to": size }),
        )?;
        writer.commit()?;
        tracing::info!(size, "pool grown");
        Ok(())
    }

    /// Creates root world `name` from `source`.
    ///
    /// The subvolume is filled in `tmp/` without holding the lock, so a long
    /// import does not block other commands, then moved into place and
    /// recorded under the lock.
    pub fn create_root(
        &mut self,
        name: &WorldName,
        source: &RootSource,
        progress: &dyn Fn(Progress),
    ) -> Result<WorldRecord> {
        let fill_error = |source| StoreError::Fill {
            name: name.clone(),
            source,
        };
        rootfs::check(source, &self.dir).map_err(fill_error)?;
        self.check_free(name)?;

        let tmp_name = format!("{IMPORT_PREFIX}{}.{name}", own_token());
        let tmp_path = self.pool.join(TMP_DIR).join(&tmp_name);
        let tmp_dir = open_dir(&self.pool.join(TMP_DIR))?;
        btrfs::create_subvolume(&tmp_dir, OsStr::new(&tmp_name)).map_err(|source| {
            StoreError::CreateSubvolume {
                path: tmp_path.clone(),
                source,
            }
        })?;
        let filled = rootfs::fill(source, &tmp_path, &self.dir, progress).map_err(fill_error);
        if let Err(error) = filled {
            remove_quietly(&tmp_path);
            return Err(error);
        }

        let lock = self.lock()?;
        let published = self.publish_root(name, source, &tmp_path);
        drop(lock);
        if published.is_err() {
            remove_quietly(&tmp_path);
        }
        published
    }

    fn publish_root(
        &mut self,
        name: &WorldName,
        source: &RootSource,
        tmp_path: &Path,
    ) -> Result<WorldRecord> {
        self.check_free(name)?;
        let path = self.world_path(name);
        let intent = pool_relative(WORLDS_DIR, name);
        self.add_intents(&[&intent], "init")?;
        fs::rename(tmp_path, &path).map_err(|source| StoreError::Move {
            from: tmp_path.into(),
            to: path.clone(),
            source,
        })?;

        let source = match source {
            RootSource::Busybox { .. } => Source::Busybox,
            RootSource::Directory(path) => Source::Directory { path: path.clone() },
            RootSource::Tar(path) => Source::Tar { path: path.clone() },
            RootSource::Debootstrap { suite } => Source::Debootstrap {
                suite: suite.clone(),
            },
        };
        let recorded = self.record_world(name, None, &source, "init", &[&intent]);
        if recorded.is_err() {
            remove_quietly(&path);
            self.clear_intents_quietly(&[&intent]);
        }
        let record = recorded?;
        tracing::info!(world = %name, "root world created");
        Ok(record)
    }

    /// Creates `child` as a writable snapshot of `parent`, with a read-only
    /// base snapshot of the same instant.
    ///
    /// The base is taken from the parent first and the child from the base,
    /// so both show the parent as of one instant even while it is written.
    /// Two snapshot ioctls cost the same whatever the parent's size.
    pub fn create_child(&mut self, child: &WorldName, parent: &WorldName) -> Result<WorldRecord> {
        let _lock = self.lock()?;
        self.reconcile()?;
        self.make_child(child, parent)
    }

    /// Does the work of [`Store::create_child`]; the caller holds the lock.
    fn make_child(&mut self, child: &WorldName, parent: &WorldName) -> Result<WorldRecord> {
        let parent_record = self.world(parent)?;
        self.check_free(child)?;

        let snapshot_error = |source| StoreError::Snapshot {
            parent: parent.clone(),
            child: child.clone(),
            source,
        };
        let parent_dir = File::open(self.world_path(parent)).map_err(snapshot_error)?;
        let bases = open_dir(&self.pool.join(BASES_DIR))?;
        let worlds = open_dir(&self.pool.join(WORLDS_DIR))?;
        let base_path = self.base_path(child);
        let child_path = self.world_path(child);
        let intents = [
            pool_relative(BASES_DIR, child),
            pool_relative(WORLDS_DIR, child),
        ];
        let intents: Vec<&str> = intents.iter().map(String::as_str).collect();
        self.add_intents(&intents, "create")?;
        let snapped = btrfs::snapshot(&parent_dir, &bases, OsStr::new(child.as_str()), true);
        if let Err(error) = snapped {
            self.clear_intents_quietly(&intents);
            return Err(snapshot_error(error));
        }
        let made = File::open(&base_path)
            .and_then(|base| btrfs::snapshot(&base, &worlds, OsStr::new(child.as_str()), false));
        if let Err(error) = made {
            remove_quietly(&base_path);
            self.clear_intents_quietly(&intents);
            return Err(snapshot_error(error));
        }
        if self.crash_point == Some(CrashPoint::AfterSnapshot) {
            std::process::abort();
        }

        let recorded = self.record_world(
            child,
            Some(parent_record.id),
            &Source::Snapshot,
            "create",
            &intents,
        );
        if recorded.is_err() {
            remove_quietly(&child_path);
            remove_quietly(&base_path);
            self.clear_intents_quietly(&intents);
        }
        let record = recorded?;
        tracing::info!(world = %child, parent = %parent, "child world created");
        Ok(record)
    }

    fn record_world(
        &mut self,
        name: &WorldName,
        parent_id: Option<i64>,
        source: &Source,
        kind: &str,
        intents: &[&str],
    ) -> Result<WorldRecord> {
        let parent = match parent_id {
            Some(_) => self.worlds()?.into_iter().find(|w| Some(w.id) == parent_id),
            None => None,
        };
        let args = serde_json::json!({
            "world": name,
            "parent": parent.as_ref().map(|p| &p.name),
            "source": source,
        });
        let writer = self.db.transaction()?;
        let operation = writer.log(kind, Some(name), &args)?;
        writer.insert_world(name, parent_id, operation, source)?;
        for intent in intents {
            writer.clear_intent(intent)?;
        }
        writer.commit()?;
        self.world(name)
    }

    /// Thaws the world of thaw intent `intent`, which a command froze and
    /// then died before it could thaw it, and clears the intent.
    fn thaw_after_crash(&mut self, intent: &str) -> Result<Option<Cleanup>> {
        let mut cleanup = None;
        if let Some(world) = merging::thaw_intent_world(intent) {
            // A world deleted since, or stopped, is not frozen.
            let frozen = self
                .status(&world)
                .is_ok_and(|status| status.state == crate::runtime::RunState::Frozen);
            if frozen {
                self.set_frozen(&world, false)
                    .map_err(|error| StoreError::Reconcile {
                        source: Box::new(error),
                    })?;
                tracing::info!(world = %world, "world thawed after an interrupted command");
                cleanup = Some(Cleanup::Thawed { world });
            }
        }
        let writer = self.db.transaction()?;
        writer.clear_intent(intent)?;
        writer.commit()?;
        Ok(cleanup)
    }

    /// Records, before touching the pool, which subvolumes a command is
    /// about to make or remove, so that reconcile may remove exactly those
    /// after a crash.
    fn add_intents(&mut self, paths: &[&str], kind: &str) -> Result<()> {
        let writer = self.db.transaction()?;
        for path in paths {
            writer.add_intent(path, kind)?;
        }
        writer.commit()?;
        Ok(())
    }

    fn clear_intents_quietly(&mut self, paths: &[&str]) {
        let cleared = self.db.transaction().and_then(|writer| {
            for path in paths {
                writer.clear_intent(path)?;
            }
            writer.commit()
        });
        if let Err(error) = cleared {
            tracing::warn!(error = %error, "could not clear intents; the next command removes their subvolumes");
        }
    }

    /// Deletes world `name` with its base and records, and returns the names
    /// of the deleted worlds, deepest first.
    pub fn delete(&mut self, name: &WorldName, options: &DeleteOptions) -> Result<Vec<WorldName>> {
        let _lock = self.lock()?;
        self.reconcile()?;
        self.delete_worlds(name, options)
    }

    /// Does the work of [`Store::delete`]; the caller holds the lock.
    fn delete_worlds(
        &mut self,
        name: &WorldName,
        options: &DeleteOptions,
    ) -> Result<Vec<WorldName>> {
        let all = self.worlds()?;
        let Some(world) = all.iter().find(|world| &world.name == name) else {
            return Err(StoreError::WorldNotFound { name: name.clone() });
        };
        if let Some(expected) = &options.expected_parent {
            if world.parent.as_ref() != Some(expected) {
                return Err(StoreError::WrongParent {
                    child: name.clone(),
                    expected: expected.clone(),
                    actual: world.parent.clone(),
                });
            }
        }
        let doomed = descendants_deepest_first(&all, name);
        let children: Vec<WorldName> = all
            .iter()
            .filter(|other| other.parent.as_ref() == Some(name))
            .map(|other| other.name.clone())
            .collect();
        if !children.is_empty() && !options.recursive {
            return Err(StoreError::HasChildren {
                name: name.clone(),
                children,
            });
        }
        let running: Vec<&WorldName> = doomed
            .iter()
            .filter(|doomed_name| {
                let id = all.iter().find(|w| &w.name == *doomed_name).map(|w| w.id);
                id.is_some_and(|id| matches!(self.db.running(id), Ok(Some(_))))
            })
            .collect();
        if let Some(first) = running.first() {
            let Some(grace) = options.force else {
                return Err(StoreError::WorldRunning {
                    name: (*first).clone(),
                });
            };
            let running: Vec<WorldName> = running.into_iter().cloned().collect();
            for running_name in &running {
                self.stop_locked(running_name, grace)
                    .map_err(|source| StoreError::Stop {
                        name: running_name.clone(),
                        source: Box::new(source),
                    })?;
            }
        }

        // Records go first, with intents for the subvolumes: once they are
        // committed the worlds are gone for every reader, and subvolumes that
        // fail to go are removed by the next command's reconcile.
        let ids: BTreeMap<&WorldName, i64> = all.iter().map(|w| (&w.name, w.id)).collect();
        let mut intents = Vec::new();
        for doomed_name in &doomed {
            intents.push(pool_relative(WORLDS_DIR, doomed_name));
            intents.push(pool_relative(BASES_DIR, doomed_name));
        }
        let writer = self.db.transaction()?;
        for intent in &intents {
            writer.add_intent(intent, "delete")?;
        }
        writer.log(
            "delete",
            Some(name),
            &serde_json::json!({ "world": name, "recursive": options.recursive, "deleted": doomed }),
        )?;
        for doomed_name in &doomed {
            writer.delete_world(ids[doomed_name])?;
        }
        writer.commit()?;

        for doomed_name in &doomed {
            for path in [self.world_path(doomed_name), self.base_path(doomed_name)] {
                if path.exists() {
                    remove_subvolume(&path)?;
                }
            }
            let log = self.dir.join(LOGS_DIR).join(format!("{doomed_name}.log"));
            if let Err(error) = fs::remove_file(&log) {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %log.display(), error = %error, "remove the log of a deleted world");
                }
            }
            tracing::info!(world = %doomed_name, "world deleted");
        }
        let intents: Vec<&str> = intents.iter().map(String::as_str).collect();
        self.clear_intents_quietly(&intents);
        Ok(doomed)
    }

    /// Cleans up after interrupted commands and reports what it found.
    ///
    /// It removes the subvolumes that an interrupted command recorded as
    /// intents, and leftovers in `tmp/` of processes that are gone. Anything
    /// else in the pool that no record claims is reported, never removed:
    /// it may be a world that a database restored from a backup does not
    /// know. A failure to remove one entry is reported too, and does not
    /// stop the command.
    ///
    /// The caller must hold the store lock: without it, a subvolume that
    /// another command is about to record would look orphaned.
    pub fn reconcile(&mut self) -> Result<Vec<Cleanup>> {
        // Worlds whose monitor is gone first, then interrupted merges,
        // which own snapshots in `tmp/` that look orphaned.
        let stale = self.reconcile_running().map_err(|error| match error {
            crate::runtime::RuntimeError::Store(error) => error,
            other => StoreError::Reconcile {
                source: Box::new(other),
            },
        })?;
        let recovered = self.recover_merges()?;
        let mut cleanups = Vec::new();
        let mut removed = Vec::new();

        for (path, kind) in self.db.intents()? {
            if kind == merging::THAW_INTENT {
                cleanups.extend(self.thaw_after_crash(&path)?);
                continue;
            }
            let host = self.pool.join(&path);
            if host.exists() {
                if let Err(error) = remove_subvolume(&host) {
                    cleanups.push(Cleanup::NotRemoved {
                        path: path.into(),
                        error: error_chain(&error),
                    });
                    continue;
                }
                tracing::info!(path = %path, "subvolume of an interrupted command removed");
                removed.push(PathBuf::from(&path));
            }
            let writer = self.db.transaction()?;
            writer.clear_intent(&path)?;
            writer.commit()?;
        }
        for entry in self.list(TMP_DIR)? {
            if in_progress(&entry) {
                continue;
            }
            let path = Path::new(TMP_DIR).join(&entry);
            match remove_subvolume(&self.pool.join(&path)) {
                Ok(()) => removed.push(path),
                Err(error) => cleanups.push(Cleanup::NotRemoved {
                    path,
                    error: error_chain(&error),
                }),
            }
        }

        let worlds = self.worlds()?;
        let names: BTreeSet<&str> = worlds.iter().map(|w| w.name.as_str()).collect();
        let with_base: BTreeSet<&str> = worlds
            .iter()
            .filter(|w| w.parent.is_some())
            .map(|w| w.name.as_str())
            .collect();
        for (dir, claimed) in [(WORLDS_DIR, &names), (BASES_DIR, &with_base)] {
            for entry in self.list(dir)? {
                if !claimed.contains(entry.as_str()) {
                    cleanups.push(Cleanup::Unknown {
                        path: Path::new(dir).join(entry),
                    });
                }
            }
        }
        for world in &worlds {
            let mut expected = vec![Path::new(WORLDS_DIR).join(world.name.as_str())];
            if world.parent.is_some() {
                expected.push(Path::new(BASES_DIR).join(world.name.as_str()));
            }
            for path in expected {
                if !self.pool.join(&path).exists() {
                    cleanups.push(Cleanup::Missing { path });
                }
            }
        }

        if !removed.is_empty() {
            let writer = self.db.transaction()?;
            writer.log(
                "reconcile",
                None,
                &serde_json::json!({ "removed": removed }),
            )?;
            writer.commit()?;
        }
        let mut all = stale;
        all.extend(recovered);
        all.extend(removed.into_iter().map(|path| Cleanup::Removed { path }));
        all.extend(cleanups);
        Ok(all)
    }

    /// Returns the changes that child world `name` made since its base.
    pub fn diff(&self, name: &WorldName, options: &DiffOptions) -> Result<Vec<Change>> {
        self.open_diff(name, DiffSubject::World)?.changes(options)
    }

    /// Returns the changes that the parent of child world `name` made since
    /// the child's base was taken.
    pub fn diff_parent(&self, name: &WorldName, options: &DiffOptions) -> Result<Vec<Change>> {
        self.open_diff(name, DiffSubject::Parent)?.changes(options)
    }

    /// Prepares a diff between the base of child world `child` and the
    /// world or its parent, as `subject` selects.
    ///
    /// A running subject is read through a read-only snapshot taken now, so
    /// it is seen at one instant. A stopped one is read in place after a
    /// syncfs: a fresh snapshot's inodes are not in the kernel's inode cache,
    /// and loading them costs more than the rest of a diff. Either way the
    /// pending changes reach the btrfs tree that the fast path searches.
    pub fn open_diff(&self, child: &WorldName, subject: DiffSubject) -> Result<DiffView> {
        let running = self.is_running(child, subject)?;
        self.open_diff_view(child, subject, running)
    }

    /// Prepares a diff like [`Store::open_diff`] that always reads a
    /// read-only snapshot of the subject, even a stopped one, so that the
    /// tree stays as it was read while the caller copies from it.
    pub fn open_diff_snapshot(&self, child: &WorldName, subject: DiffSubject) -> Result<DiffView> {
        self.open_diff_view(child, subject, true)
    }

    /// Returns whether the subject world of a diff may change while it is
    /// read.
    fn is_running(&self, child: &WorldName, subject: DiffSubject) -> Result<bool> {
        let name = match subject {
            DiffSubject::World => child.clone(),
            DiffSubject::Parent => self.world(child)?.parent.unwrap_or_else(|| child.clone()),
        };
        let state = self.status(&name).map_err(|error| StoreError::RunState {
            name: name.clone(),
            source: Box::new(error),
        })?;
        Ok(state.state != crate::runtime::RunState::Stopped)
    }

    fn open_diff_view(
        &self,
        child: &WorldName,
        subject: DiffSubject,
        snapshot: bool,
    ) -> Result<DiffView> {
        let record = self.world(child)?;
        let Some(parent) = record.parent.clone() else {
            return Err(StoreError::NoBase {
                name: child.clone(),
            });
        };
        let subject_kind = subject;
        let subject = match subject {
            DiffSubject::World => child.clone(),
            DiffSubject::Parent => parent,
        };
        let diff_error = |source| StoreError::Diff {
            name: subject.clone(),
            child: child.clone(),
            source,
        };
        let base = self.base_path(child);
        let base_created = File::open(&base)
            .and_then(|base| btrfs::subvolume_info(&base))
            .map_err(diff_error)?
            .otransid;
        let since = match subject_kind {
            DiffSubject::World => record.since_world,
            DiffSubject::Parent => record.since_parent,
        }
        .unwrap_or(base_created);

        if !snapshot {
            let world = self.world_path(&subject);
            let read_at = File::open(&world)
                .and_then(|dir| {
                    use std::os::fd::AsRawFd;
                    nix::unistd::syncfs(dir.as_raw_fd()).map_err(io::Error::from)?;
                    btrfs::subvolume_info(&dir)
                })
                .map_err(diff_error)?
                .generation;
            return Ok(DiffView {
                subject,
                child: child.clone(),
                base,
                world,
                snapshot: false,
                since,
                read_at,
            });
        }
        let tmp_name = format!("{DIFF_PREFIX}{}.{subject}", own_token());
        let world = self.pool.join(TMP_DIR).join(&tmp_name);
        File::open(self.world_path(&subject))
            .and_then(|source| {
                let tmp = File::open(self.pool.join(TMP_DIR))?;
                btrfs::snapshot(&source, &tmp, OsStr::new(&tmp_name), true)
            })
            .map_err(diff_error)?;
        let mut view = DiffView {
            subject: subject.clone(),
            child: child.clone(),
            base,
            world,
            snapshot: true,
            since,
            read_at: 0,
        };
        // The view owns the snapshot from here, and removes it on an error.
        view.read_at = File::open(&view.world)
            .and_then(|snapshot| btrfs::subvolume_info(&snapshot))
            .map_err(diff_error)?
            .otransid;
        Ok(view)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.pool.join(dir);
        let entries = fs::read_dir(&path).map_err(|source| StoreError::ReadDir {
            path: path.clone(),
            source,
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::ReadDir {
                path: path.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn check_free(&self, name: &WorldName) -> Result<()> {
        if self.db.world(name)?.is_some() {
            return Err(StoreError::WorldExists { name: name.clone() });
        }
        Ok(())
    }
}

/// Returns `name` and all its descendants in `worlds`, each after its own
/// descendants.
fn descendants_deepest_first(worlds: &[WorldRecord], name: &WorldName) -> Vec<WorldName> {
    let mut order = Vec::new();
    let mut stack = vec![(name.clone(), false)];
    while let Some((current, expanded)) = stack.pop() {
        if expanded {
            order.push(current);
            continue;
        }
        stack.push((current.clone(), true));
        for world in worlds {
            if world.parent.as_ref() == Some(&current) {
                stack.push((world.name.clone(), false));
            }
        }
    }
    order
}

/// Returns whether a `tmp/` entry belongs to a live process: a root world
/// it is filling or a snapshot it is diffing. Entries are named
/// `PREFIX.PID-START.NAME` after [`crate::sys::process_token`], so a pid
/// reused by another process does not keep them.
fn in_progress(entry: &str) -> bool {
    let Some(rest) = entry
        .strip_prefix(IMPORT_PREFIX)
        .or_else(|| entry.strip_prefix(DIFF_PREFIX))
    else {
        return false;
    };
    let Some((token, _)) = rest.split_once('.') else {
        return false;
    };
    let Some(pid) = token
        .split_once('-')
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    pid != std::process::id() && crate::sys::process_token(pid).as_deref() == Some(token)
}

/// Returns this process's token for `tmp/` names.
fn own_token() -> String {
    let pid = std::process::id();
    crate::sys::process_token(pid).unwrap_or_else(|| format!("{pid}-0"))
}

/// Returns the pool-relative path of `name` in `dir`, as intents store it.
fn pool_relative(dir: &str, name: &WorldName) -> String {
    format!("{dir}/{name}")
}

/// Returns an error and its causes as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn check_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(StoreError::NotRoot);
    }
    Ok(())
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| StoreError::Lock {
            path: path.into(),
            source,
        })
}

fn lock_dir(dir: &Path) -> Result<StoreLock> {
    let path = dir.join(LOCK_NAME);
    let file = open_lock_file(&path)?;
    let lock =
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Lock {
            path,
            source: errno.into(),
        })?;
    Ok(StoreLock { _lock: lock })
}

fn create_dir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Err(error) if error.kind() != io::ErrorKind::AlreadyExists => Err(StoreError::CreateDir {
            path: path.into(),
            source: error,
        }),
        _ => Ok(()),
    }
}

fn open_dir(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| StoreError::ReadDir {
        path: path.into(),
        source,
    })
}

/// Deletes the subvolume at `path` with any subvolumes nested in it.
///
/// Anything that is not a subvolume is refused, so a stray file or a plain
/// directory is never removed recursively, and nothing mounted inside the
/// subvolume is entered: the deletion then fails with EBUSY.
fn remove_subvolume(path: &Path) -> Result<()> {
    let delete_error = |source| StoreError::DeleteSubvolume {
        path: path.into(),
        source,
    };
    let is_subvolume = btrfs::is_subvolume(path).map_err(delete_error)?;
    if !is_subvolume {
        return Err(StoreError::NotSubvolume { path: path.into() });
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(delete_error(io::Error::from_raw_os_error(libc::EINVAL)));
    };
    let parent_dir = File::open(parent).map_err(delete_error)?;
    match btrfs::delete_subvolume(&parent_dir, name) {
        Err(error) if error.raw_os_error() == Some(libc::ENOTEMPTY) => {
            for nested in nested_subvolumes(path).map_err(delete_error)? {
                remove_subvolume(&nested)?;
            }
            btrfs::delete_subvolume(&parent_dir, name).map_err(delete_error)
        }
        result => result.map_err(delete_error),
    }
}

/// Checks that `dir` can hold a new store: a directory or nothing yet, and
/// not inside the pool of another store.
fn check_store_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(StoreError::NotADirectory { path: dir.into() });
    }
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    for outer in absolute.ancestors().skip(1) {
        if outer.join(DB_NAME).is_file() && absolute.starts_with(outer.join(pool::MOUNT_NAME)) {
            return Err(StoreError::InsideStore {
                dir: dir.into(),
                outer: outer.into(),
            });
        }
    }
    Ok(())
}

/// Lets only root enter the pool at `pool`. Worlds keep setuid programs
/// and device nodes of their own there, which the host's other users must
/// not reach through the pool's path.
fn restrict_to_root(pool: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let restrict = |pool: &Path| -> io::Result<()> {
        if fs::metadata(pool)?.permissions().mode() & 0o777 != 0o700 {
            fs::set_permissions(pool, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    };
    restrict(pool).map_err(|source| StoreError::RestrictPool {
        path: pool.into(),
        source,
    })
}

/// Makes the pool, its directories and the database of a new store. The
/// database is written under another name and renamed last, so its presence
/// marks a finished store.
fn create_layout(dir: &Path, size: u64) -> Result<()> {
    let kind = pool::create(dir, size)?;
    let pool_dir = dir.join(pool::MOUNT_NAME);
    for sub in [WORLDS_DIR, BASES_DIR, TMP_DIR, merging::PREMERGE_DIR] {
        create_dir(&pool_dir.join(sub))?;
    }
    let partial = dir.join(format!("{DB_NAME}.partial"));
    let _ = fs::remove_file(&partial);
    let mut db = Db::open(&partial, true)?;
    let writer = db.transaction()?;
    writer.set_meta("layout", &LAYOUT_VERSION.to_string())?;
    writer.log(
        "store-create",
        None,
        &serde_json::json!({ "dir": dir, "pool": kind, "pool_size": size }),
    )?;
    writer.commit()?;
    // Closing checkpoints the WAL into the file, so the rename moves it all.
    drop(db);
    fs::rename(&partial, dir.join(DB_NAME)).map_err(|source| StoreError::CreateDir {
        path: dir.join(DB_NAME),
        source,
    })
}

/// Removes what a failed `create_layout` made, without touching anything
/// else that may be in the directory.
fn remove_partial_store(dir: &Path, created_dir: bool, image_existed: bool) {
    if image_existed {
        // Not this command's image: leave it and its mount alone.
        let _ = fs::remove_file(dir.join(format!("{DB_NAME}.partial")));
        return;
    }
    let _ = pool::unmount(dir);
    let _ = fs::remove_file(dir.join(pool::IMAGE_NAME));
    for sub in [WORLDS_DIR, BASES_DIR, TMP_DIR, merging::PREMERGE_DIR] {
        let _ = fs::remove_dir(dir.join(pool::MOUNT_NAME).join(sub));
    }
    let _ = fs::remove_dir(dir.join(pool::MOUNT_NAME));
    let _ = fs::remove_file(dir.join(format!("{DB_NAME}.partial")));
    if created_dir {
        let _ = fs::remove_file(dir.join(LOCK_NAME));
        let _ = fs::remove_dir(dir);
    }
}

/// Returns the subvolumes directly nested in the subvolume at `root`,
/// without descending into them or into anything mounted below `root`.
fn nested_subvolumes(root: &Path) -> io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let device = fs::symlink_metadata(root)?.dev();
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if !metadata.is_dir() || crate::sys::fs::is_mount_root(&entry.path())? {
                continue;
            }
            // A nested subvolume is a directory with a device number of its
            // own that is not a mount.
            if metadata.dev() != device {
                if btrfs::is_subvolume(&entry.path())? {
                    found.push(entry.path());
                }
            } else {
                pending.push(entry.path());
            }
        }
    }
    Ok(found)
}

/// Removes what a failed command made; the failure it reports matters more
/// than this one, and reconcile retries anything left.
fn remove_quietly(path: &Path) {
    if let Err(error) = remove_subvolume(path) {
        tracing::warn!(path = %path.display(), error = %error, "could not remove after a failure; the next command retries");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, parent: Option<&str>) -> WorldRecord {
        WorldRecord {
            id: 0,
            name: WorldName::new(name).unwrap(),
            parent: parent.map(|p| WorldName::new(p).unwrap()),
            created: jiff::Timestamp::UNIX_EPOCH,
            created_by: 0,
            source: Source::Snapshot,
            since_world: None,
            since_parent: None,
        }
    }

    #[test]
    fn descendants_come_before_ancestors() {
        let worlds = [
            record("root", None),
            record("a", Some("root")),
            record("b", Some("root")),
            record("a1", Some("a")),
            record("other", None),
        ];
        let order = descendants_deepest_first(&worlds, &WorldName::new("root").unwrap());
        let position = |name: &str| order.iter().position(|n| n.as_str() == name).unwrap();
        assert_eq!(order.len(), 4);
        assert!(position("a1") < position("a"));
        assert!(position("a") < position("root"));
        assert!(position("b") < position("root"));
    }

    #[test]
    fn tmp_entries_of_live_processes_kept() {
        let parent = crate::sys::process_token(std::os::unix::process::parent_id()).unwrap();
        let (parent_pid, _) = parent.split_once('-').unwrap();
        assert!(in_progress(&format!("import.{parent}.web")));
        assert!(in_progress(&format!("diff.{parent}.web")));
        assert!(
            !in_progress(&format!("import.{parent_pid}-1.web")),
            "a reused pid"
        );
        assert!(!in_progress(&format!("import.{}.web", own_token())));
        assert!(!in_progress("import.999999999-5.web"));
        assert!(!in_progress("merge.1.base"));
        assert!(!in_progress("import.x.web"));
    }
}
