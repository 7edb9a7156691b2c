//! The store's metadata database: worlds and the operation log, in SQLite
//! (WAL mode, so readers never wait for a writer).
//!
//! `PRAGMA user_version` holds the schema version; `open` applies the
//! migrations that a database lacks, in order, each in one transaction.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::name::WorldName;
use crate::path::WorldPath;

/// Schema migrations; entry `n` moves a database from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1: store facts, worlds and the operation log.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE operations (
        id INTEGER PRIMARY KEY,
        time_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        world TEXT,
        args TEXT NOT NULL
    );
    CREATE TABLE worlds (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        parent_id INTEGER REFERENCES worlds(id),
        created_ms INTEGER NOT NULL,
        created_by INTEGER NOT NULL REFERENCES operations(id),
        source TEXT NOT NULL
    );
    CREATE INDEX worlds_parent ON worlds(parent_id);",
    // Version 2: intents, the subvolumes that a command is about to make or
    // remove, so that a crash leaves nothing that reconcile cannot name.
    "CREATE TABLE intents (
        path TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        time_ms INTEGER NOT NULL
    );",
    // Version 3: the merge journal.
    "CREATE TABLE merges (
        id INTEGER PRIMARY KEY,
        parent TEXT NOT NULL,
        child TEXT NOT NULL,
        state TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        plan TEXT NOT NULL,
        prev_since_world INTEGER,
        prev_since_parent INTEGER,
        next_since_world INTEGER,
        next_since_parent INTEGER
    );
    CREATE INDEX merges_parent ON merges(parent, state);
    ALTER TABLE worlds ADD COLUMN since_world INTEGER;
    ALTER TABLE worlds ADD COLUMN since_parent INTEGER;",
    // Version 4: how each world runs, and which worlds are running. A row
    // of `running` is written by the world's monitor process, and the
    // monitor's boot id, pid and start time tell whether it is still alive.
    "CREATE TABLE world_config (
        world_id INTEGER PRIMARY KEY REFERENCES worlds(id),
        config TEXT NOT NULL
    );
    CREATE TABLE running (
        world_id INTEGER PRIMARY KEY REFERENCES worlds(id),
        boot_id TEXT NOT NULL,
        monitor_pid INTEGER NOT NULL,
        monitor_start INTEGER NOT NULL,
        init_pid INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        config TEXT NOT NULL
    );",
    // v5: access sets. One row per world, world-relative path and operation
    // (1 read, 2 write, 4 exec), with the first process that did it. Gaps
    // are the times the set missed events.
    "CREATE TABLE accesses (
        world_id INTEGER NOT NULL REFERENCES worlds(id),
        path BLOB NOT NULL,
        op INTEGER NOT NULL,
        first_ms INTEGER NOT NULL,
        last_ms INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        command TEXT NOT NULL,
        PRIMARY KEY (world_id, path, op)
    ) WITHOUT ROWID;
    CREATE TABLE access_gaps (
        world_id INTEGER NOT NULL REFERENCES worlds(id),
        time_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL
    );
    CREATE INDEX access_gaps_world ON access_gaps(world_id);
    CREATE TABLE access_flushes (
        world_id INTEGER PRIMARY KEY REFERENCES worlds(id),
        time_ms INTEGER NOT NULL
    );",
];

/// How long a writer waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("open database `{path}`")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database `{path}` is empty or is not a worlds database")]
    NotInitialized { path: PathBuf },
    #[error("database `{path}` has schema version {found}, newer than the {supported} this build knows; upgrade worlds")]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("migrate database `{path}` to schema version {version}")]
    Migrate {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Query(#[from] rusqlite::Error),
    #[error("decode stored JSON")]
    Json(#[from] serde_json::Error),
}

type Result<T, E = DbError> = std::result::Result<T, E>;

/// The origin of a world's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// A minimal root built from the host's static busybox.
    Busybox,
    /// A copy of a host directory.
    Directory { path: PathBuf },
    /// An unpacked tar archive; `-` is standard input.
    Tar { path: PathBuf },
    /// Debian's debootstrap, variant minbase.
    Debootstrap { suite: String },
    /// A writable snapshot of the parent.
    Snapshot,
}

/// A world as the database records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorldRecord {
    pub id: i64,
    pub name: WorldName,
    pub parent: Option<WorldName>,
    pub created: Timestamp,
    /// The operation that created the world.
    pub created_by: i64,
    pub source: Source,
    /// The btrfs transaction after which the world's own changes since its
    /// base must be searched; `None` means the base's creation. A merge
    /// moves it forward.
    #[serde(skip)]
    pub since_world: Option<u64>,
    /// The same for the parent's changes since the world's base; merges
    /// never move it, because the new base is made from the child.
    #[serde(skip)]
    pub since_parent: Option<u64>,
}

/// One entry of the operation log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Operation {
    pub id: i64,
    pub time: Timestamp,
    /// The operation's kind, such as `create` or `delete`.
    pub kind: String,
    /// The world it acted on, if one.
    pub world: Option<String>,
    /// The operation's arguments, as given to it.
    pub args: serde_json::Value,
}

/// A running world as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningRecord {
    pub world_id: i64,
    /// `/proc/sys/kernel/random/boot_id` when the monitor started.
    pub boot_id: String,
    pub monitor_pid: i32,
    /// The monitor's start time in clock ticks after boot (field 22 of
    /// `/proc/PID/stat`), which tells it from a later process with its pid.
    pub monitor_start: u64,
    /// The world's init process, as the host sees it.
    pub init_pid: i32,
    pub started: Timestamp,
    /// How the world runs, as JSON: network, address, limits.
    pub config: serde_json::Value,
}

/// One row of a world's access set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    /// The world-relative path, as raw bytes.
    pub path: Vec<u8>,
    /// 1 read, 2 write, 4 exec.
    pub op: u8,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The first process that did it, as the world numbers it.
    pub pid: i32,
    pub command: String,
}

/// An open metadata database.
#[derive(Debug)]
pub struct Db {
    connection: Connection,
}

impl Db {
    /// Opens the database at `path` and migrates it. With `create`, an
    /// empty or missing database is set up; without it, one is an error,
    /// since an emptied database would make every world look unrecorded.
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        let open_error = |source| DbError::Open {
            path: path.into(),
            source,
        };
        let mut connection = Connection::open(path).map_err(open_error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        connection
            .pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        let version: u32 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_error)?;
        if version == 0 && !create {
            return Err(DbError::NotInitialized { path: path.into() });
        }
        migrate(&mut connection, path)?;
        Ok(Self { connection })
    }

    /// Stops waiting for the disk at each commit of this connection
    /// (`synchronous = NORMAL`). In WAL mode a commit then survives a crash
    /// of the process, though not of the machine; the database stays
    /// consistent either way. For a monitor's frequent batches of accesses.
    pub fn relax_durability(&self) -> Result<()> {
        self.connection
            .pragma_update(None, "synchronous", "NORMAL")?;
        Ok(())
    }

    /// Returns every world, parents before their children.
    pub fn worlds(&self) -> Result<Vec<WorldRecord>> {
        let mut statement = self.connection.prepare(
            "WITH RECURSIVE ordered(id, depth) AS (
                 SELECT id, 0 FROM worlds WHERE parent_id IS NULL
                 UNION ALL
                 SELECT w.id, o.depth + 1 FROM worlds w JOIN ordered o ON w.parent_id = o.id
             )
             SELECT w.id, w.name, p.name, w.created_ms, w.created_by, w.source, w.since_world, w.since_parent
             FROM ordered o JOIN worlds w ON w.id = o.id
             LEFT JOIN worlds p ON p.id = w.parent_id
             ORDER BY o.depth, w.name",
        )?;
        let rows = statement.query_map([], read_world)?;
        rows.map(|row| row?.into_record()).collect()
    }

    /// Returns the world named `name`, if it exists.
    pub fn world(&self, name: &WorldName) -> Result<Option<WorldRecord>> {
        let row = self
            .connection
            .query_row(
                "SELECT w.id, w.name, p.name, w.created_ms, w.created_by, w.source, w.since_world, w.since_parent
                 FROM worlds w LEFT JOIN worlds p ON p.id = w.parent_id
                 WHERE w.name = ?1",
                [name.as_str()],
                read_world,
            )
            .optional()?;
        row.map(RawWorld::into_record).transpose()
    }

    /// Returns the value of `key` in the table of store facts.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .connection
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    }

    /// Returns the intents left by commands that did not finish: pool paths
    /// with the kind of the command.
    pub fn intents(&self) -> Result<Vec<(String, String)>> {
        let mut statement = self
            .connection
            .prepare("SELECT path, kind FROM intents ORDER BY path")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Returns the operation log, newest first, at most `limit` entries.
    pub fn operations(&self, limit: u32) -> Result<Vec<Operation>> {
        let mut statement = self.connection.prepare(
            "SELECT id, time_ms, kind, world, args FROM operations ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (id, time_ms, kind, world, args) = row?;
            Ok(Operation {
                id,
                time: timestamp(time_ms),
                kind,
                world,
                args: serde_json::from_str(&args)?,
            })
        })
        .collect()
    }

    /// Returns the running record of world `world_id`, if it has one.
    pub fn running(&self, world_id: i64) -> Result<Option<RunningRecord>> {
        let row = self
            .connection
            .query_row(
                "SELECT world_id, boot_id, monitor_pid, monitor_start, init_pid, started_ms, config
                 FROM running WHERE world_id = ?1",
                [world_id],
                read_running,
            )
            .optional()?;
        row.map(RawRunning::into_record).transpose()
    }

    /// Returns every running record.
    pub fn all_running(&self) -> Result<Vec<RunningRecord>> {
        let mut statement = self.connection.prepare(
            "SELECT world_id, boot_id, monitor_pid, monitor_start, init_pid, started_ms, config
             FROM running ORDER BY world_id",
        )?;
        let rows = statement.query_map([], read_running)?;
        rows.map(|row| row?.into_record()).collect()
    }

    /// Returns the stored run configuration of world `world_id` as JSON.
    pub fn world_config(&self, world_id: i64) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = self
            .connection
            .query_row(
                "SELECT config FROM world_config WHERE world_id = ?1",
                [world_id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(text.map(|text| serde_json::from_str(&text)).transpose()?)
    }

    /// Returns the access rows of world `world_id` whose last sighting is
    /// at or after `since_ms`, ordered by path and operation.
    pub fn accesses(&self, world_id: i64, since_ms: i64) -> Result<Vec<AccessRow>> {
        let mut statement = self.connection.prepare(
            "SELECT path, op, first_ms, last_ms, pid, command FROM accesses
             WHERE world_id = ?1 AND last_ms >= ?2 ORDER BY path, op",
        )?;
        let rows = statement.query_map(params![world_id, since_ms], |row| {
            Ok(AccessRow {
                path: row.get(0)?,
                op: row.get(1)?,
                first_ms: row.get(2)?,
                last_ms: row.get(3)?,
                pid: row.get(4)?,
                command: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Returns the gaps of world `world_id`'s access set at or after
    /// `since_ms`, oldest first, as time, reason and count.
    pub fn access_gaps(&self, world_id: i64, since_ms: i64) -> Result<Vec<(i64, String, i64)>> {
        let mut statement = self.connection.prepare(
            "SELECT time_ms, reason, count FROM access_gaps
             WHERE world_id = ?1 AND time_ms >= ?2 ORDER BY time_ms",
        )?;
        let rows = statement.query_map(params![world_id, since_ms], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Returns when world `world_id`'s init last sent every access it had
    /// read, on request, in milliseconds since the Unix epoch.
    pub fn access_flush_time(&self, world_id: i64) -> Result<Option<i64>> {
        Ok(self
            .connection
            .query_row(
                "SELECT time_ms FROM access_flushes WHERE world_id = ?1",
                [world_id],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Returns the time of operation `id` of the log, if it exists.
    pub fn operation_time(&self, id: i64) -> Result<Option<Timestamp>> {
        let time: Option<i64> = self
            .connection
            .query_row(
                "SELECT time_ms FROM operations WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(time.map(timestamp))
    }

    /// Starts a write transaction; it takes SQLite's write lock at once.
    pub fn transaction(&mut self) -> Result<Writer<'_>> {
        let transaction = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Ok(Writer { transaction })
    }
}

/// The state of a merge in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergeState {
    /// The pre-merge snapshot is being taken; the parent is untouched.
    Preparing,
    /// Changes are being applied to the parent.
    Applying,
    /// Every change is in the parent; the child's base is being replaced.
    Publishing,
    /// The merge finished.
    Done,
    /// An interrupted merge was rolled back to the pre-merge state.
    RolledBack,
    /// `world undo` is taking the merge back: the parent is going back to
    /// its pre-merge snapshot.
    Undoing,
    /// The merge was taken back by `world undo`.
    Undone,
}

impl MergeState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Applying => "applying",
            Self::Publishing => "publishing",
            Self::Done => "done",
            Self::RolledBack => "rolled-back",
            Self::Undoing => "undoing",
            Self::Undone => "undone",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Preparing,
            Self::Applying,
            Self::Publishing,
            Self::Done,
            Self::RolledBack,
            Self::Undoing,
            Self::Undone,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// One merge in the journal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MergeRecord {
    pub id: i64,
    pub parent: String,
    pub child: String,
    pub state: MergeState,
    pub started: Timestamp,
    /// The child's diff starting points before the merge.
    #[serde(skip)]
    pub previous: Since,
    /// The child's diff starting points after the merge.
    #[serde(skip)]
    pub next: Since,
}

/// The btrfs transactions after which a child's diffs search for changes:
/// its own, and its parent's. `None` means the base's creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Since {
    pub world: Option<u64>,
    pub parent: Option<u64>,
}

impl Db {
    /// Returns the paths that the steps of merge `id` acted on, as its plan
    /// recorded them.
    pub fn merge_step_paths(&self, id: i64) -> Result<Vec<WorldPath>> {
        let plan: String =
            self.connection
                .query_row("SELECT plan FROM merges WHERE id = ?1", [id], |row| {
                    row.get(0)
                })?;
        let plan: serde_json::Value = serde_json::from_str(&plan).unwrap_or_default();
        let steps = plan["steps"].as_array().cloned().unwrap_or_default();
        Ok(steps
            .iter()
            .filter_map(|step| crate::diff::json::read_bytes(&step["path"]))
            .map(|path| WorldPath::from_bytes(&path))
            .collect())
    }

    /// Returns the merges in `states`, oldest first, optionally only those
    /// into `parent`.
    pub fn merges(&self, states: &[MergeState], parent: Option<&str>) -> Result<Vec<MergeRecord>> {
        // The state is filtered in SQL because the columns after `plan` lie
        // behind its overflow pages, which SQLite then reads only for the
        // rows that match.
        let placeholders = vec!["?"; states.len()].join(", ");
        let mut statement = self.connection.prepare(&format!(
            "SELECT id, parent, child, state, started_ms, prev_since_world, prev_since_parent,
                        next_since_world, next_since_parent
                 FROM merges WHERE state IN ({placeholders}) ORDER BY id"
        ))?;
        let names = states.iter().map(|state| state.as_str());
        let rows = statement.query_map(rusqlite::params_from_iter(names), |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                [
                    row.get::<_, Option<i64>>(5)?,
                    row.get::<_, Option<i64>>(6)?,
                    row.get::<_, Option<i64>>(7)?,
                    row.get::<_, Option<i64>>(8)?,
                ],
            ))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (id, parent_name, child, state, started_ms, since) = row?;
            let since = since.map(|value| value.map(|since| since as u64));
            let Some(state) = MergeState::parse(&state) else {
                continue;
            };
            if states.contains(&state) && parent.is_none_or(|wanted| wanted == parent_name) {
                found.push(MergeRecord {
                    id,
                    parent: parent_name,
                    child,
                    state,
                    started: timestamp(started_ms),
                    previous: Since {
                        world: since[0],
                        parent: since[1],
                    },
                    next: Since {
                        world: since[2],
                        parent: since[3],
                    },
                });
            }
        }
        Ok(found)
    }
}

/// A write transaction; dropping it without `commit` rolls it back.
pub struct Writer<'db> {
    transaction: Transaction<'db>,
}

impl Writer<'_> {
    /// Appends an operation to the log and returns its id.
    pub fn log(
        &self,
        kind: &str,
        world: Option<&WorldName>,
        args: &serde_json::Value,
    ) -> Result<i64> {
        self.transaction.execute(
            "INSERT INTO operations (time_ms, kind, world, args) VALUES (?1, ?2, ?3, ?4)",
            params![
                Timestamp::now().as_millisecond(),
                kind,
                world.map(WorldName::as_str),
                args.to_string()
            ],
        )?;
        Ok(self.transaction.last_insert_rowid())
    }

    /// Sets `key` in the table of store facts.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.transaction.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Records a new world, created by operation `operation`, and returns
    /// its id.
    pub fn insert_world(
        &self,
        name: &WorldName,
        parent_id: Option<i64>,
        operation: i64,
        source: &Source,
    ) -> Result<i64> {
        self.transaction.execute(
            "INSERT INTO worlds (name, parent_id, created_ms, created_by, source)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                name.as_str(),
                parent_id,
                Timestamp::now().as_millisecond(),
                operation,
                serde_json::to_string(source)?
            ],
        )?;
        Ok(self.transaction.last_insert_rowid())
    }

    /// Removes the record of world `id` with its run configuration and
    /// running record; its children must be gone first.
    pub fn delete_world(&self, id: i64) -> Result<()> {
        self.clear_accesses(id)?;
        self.transaction
            .execute("DELETE FROM world_config WHERE world_id = ?1", [id])?;
        self.transaction
            .execute("DELETE FROM running WHERE world_id = ?1", [id])?;
        self.transaction
            .execute("DELETE FROM worlds WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records that the command of `kind` is about to make or remove the
    /// subvolume at pool path `path`.
    pub fn add_intent(&self, path: &str, kind: &str) -> Result<()> {
        self.transaction.execute(
            "INSERT OR REPLACE INTO intents (path, kind, time_ms) VALUES (?1, ?2, ?3)",
            params![path, kind, Timestamp::now().as_millisecond()],
        )?;
        Ok(())
    }

    /// Forgets the intent on pool path `path`.
    pub fn clear_intent(&self, path: &str) -> Result<()> {
        self.transaction
            .execute("DELETE FROM intents WHERE path = ?1", [path])?;
        Ok(())
    }

    /// Starts a merge of `child` into `parent` in the journal, in state
    /// `Preparing`, with the child's diff starting points before and after
    /// it, and returns its id.
    pub fn insert_merge(
        &self,
        parent: &WorldName,
        child: &WorldName,
        plan: &serde_json::Value,
        previous: Since,
        next: Since,
    ) -> Result<i64> {
        let as_sql = |since: Option<u64>| since.map(|since| since as i64);
        self.transaction.execute(
            "INSERT INTO merges (parent, child, state, started_ms, plan,
                 prev_since_world, prev_since_parent, next_since_world, next_since_parent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                parent.as_str(),
                child.as_str(),
                MergeState::Preparing.as_str(),
                Timestamp::now().as_millisecond(),
                plan.to_string(),
                as_sql(previous.world),
                as_sql(previous.parent),
                as_sql(next.world),
                as_sql(next.parent),
            ],
        )?;
        Ok(self.transaction.last_insert_rowid())
    }

    /// Sets where the diffs of world `name` start searching.
    pub fn set_since(&self, name: &str, since: Since) -> Result<()> {
        let as_sql = |since: Option<u64>| since.map(|since| since as i64);
        self.transaction.execute(
            "UPDATE worlds SET since_world = ?2, since_parent = ?3 WHERE name = ?1",
            params![name, as_sql(since.world), as_sql(since.parent)],
        )?;
        Ok(())
    }

    /// Moves merge `id` to `state`.
    pub fn set_merge_state(&self, id: i64, state: MergeState) -> Result<()> {
        self.transaction.execute(
            "UPDATE merges SET state = ?2, finished_ms = ?3 WHERE id = ?1",
            params![id, state.as_str(), Timestamp::now().as_millisecond()],
        )?;
        Ok(())
    }

    /// Records that world `record.world_id` runs, replacing an older record.
    pub fn insert_running(&self, record: &RunningRecord) -> Result<()> {
        self.transaction.execute(
            "INSERT OR REPLACE INTO running
             (world_id, boot_id, monitor_pid, monitor_start, init_pid, started_ms, config)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                record.world_id,
                record.boot_id,
                record.monitor_pid,
                record.monitor_start as i64,
                record.init_pid,
                record.started.as_millisecond(),
                record.config.to_string()
            ],
        )?;
        Ok(())
    }

    /// Removes the running record of world `world_id` if monitor
    /// `monitor_pid` wrote it, and returns whether it did.
    pub fn delete_running(&self, world_id: i64, monitor_pid: i32) -> Result<bool> {
        let deleted = self.transaction.execute(
            "DELETE FROM running WHERE world_id = ?1 AND monitor_pid = ?2",
            params![world_id, monitor_pid],
        )?;
        Ok(deleted > 0)
    }

    /// Stores the run configuration of world `world_id`.
    pub fn set_world_config(&self, world_id: i64, config: &serde_json::Value) -> Result<()> {
        self.transaction.execute(
            "INSERT OR REPLACE INTO world_config (world_id, config) VALUES (?1, ?2)",
            params![world_id, config.to_string()],
        )?;
        Ok(())
    }

    /// Adds sightings to world `world_id`'s access set: a new path and
    /// operation keeps its first process, a known one moves its last time.
    pub fn record_accesses(&self, world_id: i64, rows: &[AccessRow]) -> Result<()> {
        let mut statement = self.transaction.prepare_cached(
            "INSERT INTO accesses (world_id, path, op, first_ms, last_ms, pid, command)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (world_id, path, op) DO UPDATE SET
                 first_ms = min(first_ms, excluded.first_ms),
                 last_ms = max(last_ms, excluded.last_ms)",
        )?;
        for row in rows {
            statement.execute(params![
                world_id,
                row.path,
                row.op,
                row.first_ms,
                row.last_ms,
                row.pid,
                row.command
            ])?;
        }
        Ok(())
    }

    /// Moves the writes of path `from` in world `world_id`'s access set to
    /// path `to`, merging them with writes recorded there.
    pub fn move_writes(&self, world_id: i64, from: &[u8], to: &[u8]) -> Result<()> {
        // A patch run renames thousands of files, so the statements are
        // prepared once.
        self.transaction
            .prepare_cached(
                "INSERT INTO accesses (world_id, path, op, first_ms, last_ms, pid, command)
                 SELECT world_id, ?3, op, first_ms, last_ms, pid, command FROM accesses
                 WHERE world_id = ?1 AND path = ?2 AND op = 2
                 ON CONFLICT (world_id, path, op) DO UPDATE SET
                     first_ms = min(first_ms, excluded.first_ms),
                     last_ms = max(last_ms, excluded.last_ms)",
            )?
            .execute(params![world_id, from, to])?;
        self.transaction
            .prepare_cached("DELETE FROM accesses WHERE world_id = ?1 AND path = ?2 AND op = 2")?
            .execute(params![world_id, from])?;
        Ok(())
    }

    /// Records that world `world_id`'s access set missed `count` events
    /// (or runs, or paths) at `time_ms`, for `reason`.
    pub fn add_access_gap(
        &self,
        world_id: i64,
        time_ms: i64,
        reason: &str,
        count: i64,
    ) -> Result<()> {
        self.transaction.execute(
            "INSERT INTO access_gaps (world_id, time_ms, reason, count) VALUES (?1, ?2, ?3, ?4)",
            params![world_id, time_ms, reason, count],
        )?;
        Ok(())
    }

    /// Records that world `world_id`'s init sent every access it had read
    /// at `time_ms`.
    pub fn set_access_flush(&self, world_id: i64, time_ms: i64) -> Result<()> {
        self.transaction.execute(
            "INSERT OR REPLACE INTO access_flushes (world_id, time_ms) VALUES (?1, ?2)",
            params![world_id, time_ms],
        )?;
        Ok(())
    }

    /// Empties world `world_id`'s access set and its gaps.
    pub fn clear_accesses(&self, world_id: i64) -> Result<()> {
        self.transaction
            .execute("DELETE FROM accesses WHERE world_id = ?1", [world_id])?;
        self.transaction
            .execute("DELETE FROM access_gaps WHERE world_id = ?1", [world_id])?;
        self.transaction
            .execute("DELETE FROM access_flushes WHERE world_id = ?1", [world_id])?;
        Ok(())
    }

    /// Makes the changes permanent.
    pub fn commit(self) -> Result<()> {
        self.transaction.commit()?;
        Ok(())
    }
}

/// A row of `worlds` before its JSON and name are decoded.
struct RawWorld {
    id: i64,
    name: String,
    parent: Option<String>,
    created_ms: i64,
    created_by: i64,
    source: String,
    since_world: Option<i64>,
    since_parent: Option<i64>,
}

impl RawWorld {
    fn into_record(self) -> Result<WorldRecord> {
        // Names were validated before they were stored; a row that fails
        // here was written by hand.
        let decode_name = |name: String| {
            WorldName::new(&name).map_err(|error| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    Box::new(error),
                )
            })
        };
        Ok(WorldRecord {
            id: self.id,
            name: decode_name(self.name)?,
            parent: self.parent.map(decode_name).transpose()?,
            created: timestamp(self.created_ms),
            created_by: self.created_by,
            source: serde_json::from_str(&self.source)?,
            since_world: self.since_world.map(|since| since as u64),
            since_parent: self.since_parent.map(|since| since as u64),
        })
    }
}

fn read_world(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawWorld> {
    Ok(RawWorld {
        id: row.get(0)?,
        name: row.get(1)?,
        parent: row.get(2)?,
        created_ms: row.get(3)?,
        created_by: row.get(4)?,
        source: row.get(5)?,
        since_world: row.get(6)?,
        since_parent: row.get(7)?,
    })
}

/// A row of `running` before its JSON is decoded.
struct RawRunning {
    world_id: i64,
    boot_id: String,
    monitor_pid: i32,
    monitor_start: i64,
    init_pid: i32,
    started_ms: i64,
    config: String,
}

impl RawRunning {
    fn into_record(self) -> Result<RunningRecord> {
        Ok(RunningRecord {
            world_id: self.world_id,
            boot_id: self.boot_id,
            monitor_pid: self.monitor_pid,
            monitor_start: self.monitor_start as u64,
            init_pid: self.init_pid,
            started: timestamp(self.started_ms),
            config: serde_json::from_str(&self.config)?,
        })
    }
}

fn read_running(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRunning> {
    Ok(RawRunning {
        world_id: row.get(0)?,
        boot_id: row.get(1)?,
        monitor_pid: row.get(2)?,
        monitor_start: row.get(3)?,
        init_pid: row.get(4)?,
        started_ms: row.get(5)?,
        config: row.get(6)?,
    })
}

fn timestamp(milliseconds: i64) -> Timestamp {
    Timestamp::from_millisecond(milliseconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<()> {
    let supported = MIGRATIONS.len() as u32;
    let found: u32 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| DbError::Open {
            path: path.into(),
            source,
        })?;
    if found > supported {
        return Err(DbError::TooNew {
            path: path.into(),
            found,
            supported,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        let migrate_error = |source| DbError::Migrate {
            path: path.into(),
            version,
            source,
        };
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(migrate_error)?;
        // Another process may have migrated while this one waited for the
        // write lock.
        let current: u32 = transaction
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(migrate_error)?;
        if current >= version {
            continue;
        }
        transaction.execute_batch(sql).map_err(migrate_error)?;
        transaction
            .pragma_update(None, "user_version", version)
            .map_err(migrate_error)?;
        transaction.commit().map_err(migrate_error)?;
        tracing::debug!(version, "database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> WorldName {
        WorldName::new(text).unwrap()
    }

    #[test]
    fn migrate_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worlds.db");
        let db = Db::open(&path, true).unwrap();
        let version: u32 = db
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as u32);
        drop(db);
        // Opening again applies nothing and keeps the data.
        Db::open(&path, false).unwrap();
    }

    #[test]
    fn reject_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worlds.db");
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        drop(connection);
        let error = Db::open(&path, false).unwrap_err();
        assert!(
            matches!(error, DbError::TooNew { found: 99, .. }),
            "{error}"
        );
    }

    #[test]
    fn empty_database_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worlds.db");
        std::fs::write(&path, "").unwrap();
        let error = Db::open(&path, false).unwrap_err();
        assert!(matches!(error, DbError::NotInitialized { .. }), "{error}");
    }

    #[test]
    fn worlds_listed_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("worlds.db"), true).unwrap();
        let writer = db.transaction().unwrap();
        let operation = writer.log("init", None, &serde_json::json!({})).unwrap();
        let root = writer
            .insert_world(&name("zroot"), None, operation, &Source::Busybox)
            .unwrap();
        let child = writer
            .insert_world(&name("a-child"), Some(root), operation, &Source::Snapshot)
            .unwrap();
        writer
            .insert_world(
                &name("grandchild"),
                Some(child),
                operation,
                &Source::Snapshot,
            )
            .unwrap();
        writer.commit().unwrap();

        let names: Vec<_> = db
            .worlds()
            .unwrap()
            .into_iter()
            .map(|world| world.name.to_string())
            .collect();
        assert_eq!(names, ["zroot", "a-child", "grandchild"]);
        let child = db.world(&name("a-child")).unwrap().unwrap();
        assert_eq!(child.parent, Some(name("zroot")));
        assert_eq!(child.source, Source::Snapshot);
    }

    #[test]
    fn parent_with_children_not_deletable() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("worlds.db"), true).unwrap();
        let writer = db.transaction().unwrap();
        let operation = writer.log("init", None, &serde_json::json!({})).unwrap();
        let root = writer
            .insert_world(&name("root"), None, operation, &Source::Busybox)
            .unwrap();
        writer
            .insert_world(&name("child"), Some(root), operation, &Source::Snapshot)
            .unwrap();
        assert!(writer.delete_world(root).is_err());
    }
}
