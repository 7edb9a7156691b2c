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
//!     tmp/           root worlds being filled: `import.PID.NAME`
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
//! - A world that holds nested subvolumes of its own is deleted with them.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::db::{Db, DbError, Source, WorldRecord};
use crate::name::WorldName;
use crate::pool::{self, PoolError, PoolInfo};
use crate::rootfs::{self, Progress, RootSource, RootfsError};
use crate::sys::btrfs;

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

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("worlds must run as root")]
    NotRoot,
    #[error("no store at `{dir}`")]
    NoStore { dir: PathBuf },
    #[error("create store directory `{path}`")]
    CreateDir { path: PathBuf, source: io::Error },
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
    #[error("clean up after worlds whose monitor is gone")]
    Reconcile {
        source: Box<crate::runtime::RuntimeError>,
    },
    #[error("world `{name}` is running")]
    WorldRunning { name: WorldName },
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
    /// A subvolume without a record, left by an interrupted command, was
    /// deleted. The path is relative to the pool.
    Removed { path: PathBuf },
    /// A recorded world's subvolume is missing; the record is kept.
    Missing { path: PathBuf },
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
    /// Returns whether `dir` holds a store.
    pub fn exists(dir: &Path) -> bool {
        dir.join(DB_NAME).is_file()
    }

    /// Creates a store in `dir`, or opens the one there.
    ///
    /// A new store on a filesystem other than btrfs gets a pool image of
    /// `pool_size` bytes, or [`pool::default_size`] when `None`.
    pub fn create(dir: &Path, pool_size: Option<u64>) -> Result<(Self, Vec<Cleanup>)> {
        check_root()?;
        if Self::exists(dir) {
            return Self::open(dir);
        }
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

        let size = match pool_size {
            Some(size) => size,
            None => pool::default_size(dir)?,
        };
        let kind = pool::create(dir, size)?;
        let pool = dir.join(pool::MOUNT_NAME);
        for sub in [WORLDS_DIR, BASES_DIR, TMP_DIR] {
            create_dir(&pool.join(sub))?;
        }
        // The database is created last: its presence marks a finished store.
        let mut db = Db::open(&dir.join(DB_NAME))?;
        let writer = db.transaction()?;
        writer.set_meta("layout", &LAYOUT_VERSION.to_string())?;
        writer.log(
            "store-create",
            None,
            &serde_json::json!({ "dir": dir, "pool": kind, "pool_size": size }),
        )?;
        writer.commit()?;
        tracing::info!(dir = %dir.display(), "store created");
        drop(lock);
        Self::open(dir)
    }

    /// Opens the store in `dir`, mounting its pool if needed, and cleans up
    /// after interrupted commands when no other command holds the lock.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Cleanup>)> {
        check_root()?;
        if !Self::exists(dir) {
            return Err(StoreError::NoStore { dir: dir.into() });
        }
        let db = Db::open(&dir.join(DB_NAME))?;
        if let Some(found) = db.meta("layout")? {
            if found
                .parse::<u32>()
                .map_or(true, |found| found > LAYOUT_VERSION)
            {
                return Err(StoreError::LayoutTooNew {
                    dir: dir.into(),
                    found,
                });
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

        let tmp_name = format!("{IMPORT_PREFIX}{}.{name}", std::process::id());
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
        let recorded = self.record_world(name, None, &source, "init");
        if recorded.is_err() {
            remove_quietly(&path);
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
        btrfs::snapshot(&parent_dir, &bases, OsStr::new(child.as_str()), true)
            .map_err(snapshot_error)?;
        let made = File::open(&base_path)
            .and_then(|base| btrfs::snapshot(&base, &worlds, OsStr::new(child.as_str()), false));
        if let Err(error) = made {
            remove_quietly(&base_path);
            return Err(snapshot_error(error));
        }
        if self.crash_point == Some(CrashPoint::AfterSnapshot) {
            std::process::abort();
        }

        let recorded =
            self.record_world(child, Some(parent_record.id), &Source::Snapshot, "create");
        if recorded.is_err() {
            remove_quietly(&child_path);
            remove_quietly(&base_path);
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
        writer.commit()?;
        self.world(name)
    }

    /// Deletes world `name` with its base and records, and returns the names
    /// of the deleted worlds, deepest first.
    pub fn delete(&mut self, name: &WorldName, options: &DeleteOptions) -> Result<Vec<WorldName>> {
        let _lock = self.lock()?;
        self.reconcile()?;
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

        // Records go first: once they are committed the worlds are gone for
        // every reader, and subvolumes that fail to go are orphans that the
        // next command's reconcile removes.
        let ids: BTreeMap<&WorldName, i64> = all.iter().map(|w| (&w.name, w.id)).collect();
        let writer = self.db.transaction()?;
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
        Ok(doomed)
    }

    /// Cleans up after interrupted commands: deletes subvolumes that no
    /// record claims, and reports records whose subvolume is missing.
    ///
    /// The caller must hold the store lock: without it, a subvolume that
    /// another command is about to record would look orphaned.
    pub fn reconcile(&mut self) -> Result<Vec<Cleanup>> {
        let mut cleanups = self.reconcile_running().map_err(|error| match error {
            crate::runtime::RuntimeError::Store(error) => error,
            other => StoreError::Reconcile {
                source: Box::new(other),
            },
        })?;
        let worlds = self.worlds()?;
        let names: BTreeSet<&str> = worlds.iter().map(|w| w.name.as_str()).collect();
        let with_base: BTreeSet<&str> = worlds
            .iter()
            .filter(|w| w.parent.is_some())
            .map(|w| w.name.as_str())
            .collect();

        let mut orphans = Vec::new();
        for (dir, claimed) in [(WORLDS_DIR, &names), (BASES_DIR, &with_base)] {
            for entry in self.list(dir)? {
                if !claimed.contains(entry.as_str()) {
                    orphans.push(Path::new(dir).join(entry));
                }
            }
        }
        for entry in self.list(TMP_DIR)? {
            if !import_in_progress(&entry) {
                orphans.push(Path::new(TMP_DIR).join(entry));
            }
        }
        for orphan in orphans {
            remove_subvolume(&self.pool.join(&orphan))?;
            tracing::info!(path = %orphan.display(), "orphaned subvolume removed");
            cleanups.push(Cleanup::Removed { path: orphan });
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

        let removed: Vec<&Cleanup> = cleanups
            .iter()
            .filter(|cleanup| matches!(cleanup, Cleanup::Removed { .. }))
            .collect();
        if !removed.is_empty() {
            let writer = self.db.transaction()?;
            writer.log(
                "reconcile",
                None,
                &serde_json::json!({ "cleaned": removed }),
            )?;
            writer.commit()?;
        }
        Ok(cleanups)
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

/// Returns whether a `tmp/` entry is a root world that a live process is
/// still filling.
fn import_in_progress(entry: &str) -> bool {
    let Some(rest) = entry.strip_prefix(IMPORT_PREFIX) else {
        return false;
    };
    let Some((pid, _)) = rest.split_once('.') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
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

/// Deletes the subvolume at `path` with any subvolumes nested in it, or the
/// plain directory tree there.
fn remove_subvolume(path: &Path) -> Result<()> {
    let delete_error = |source| StoreError::DeleteSubvolume {
        path: path.into(),
        source,
    };
    let is_subvolume = btrfs::is_subvolume(path).map_err(delete_error)?;
    if !is_subvolume {
        return fs::remove_dir_all(path).map_err(delete_error);
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

/// Returns the subvolumes directly nested in the subvolume at `root`,
/// without descending into them.
fn nested_subvolumes(root: &Path) -> io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let device = fs::symlink_metadata(root)?.dev();
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if !metadata.is_dir() {
                continue;
            }
            // Each subvolume has a device number of its own.
            if metadata.dev() != device {
                found.push(entry.path());
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
    fn import_entries_of_live_processes_kept() {
        let parent = std::os::unix::process::parent_id();
        assert!(import_in_progress(&format!("import.{parent}.web")));
        assert!(!import_in_progress(&format!(
            "import.{}.web",
            std::process::id()
        )));
        assert!(!import_in_progress("import.999999999.web"));
        assert!(!import_in_progress("deleted.1.worlds.web"));
        assert!(!import_in_progress("import.x.web"));
    }
}
