//! Access tracking: which files the processes of each running world read,
//! wrote and executed, kept per world as its access set.
//!
//! # Model
//!
//! - When a world starts with tracking on, its monitor creates a fanotify
//!   group with a filesystem mark on the pool. The group reports each event
//!   as the file handle of the parent directory plus the entry's name, so
//!   no descriptor is opened per event ([`crate::sys::fanotify`]). The mark
//!   goes on the pool's top-level subvolume: btrfs refuses a mark with file
//!   handles placed through any other subvolume.
//! - Such a mark reports every access to the pool, from any world and from the
//!   host. The world's init reads the group ([`tracer`]). The kernel gives
//!   each event's pid as the reader's pid namespace numbers it, and 0 for a
//!   process outside that namespace. So an event with pid 0 comes from the
//!   host or another world, and init drops it. The btrfs handle names the subvolume, so
//!   accesses to other subvolumes (a sibling, a snapshot) are dropped too.
//! - Init groups what it reads by directory inode, entry name and operation
//!   and sends the groups to the monitor over a pipe every
//!   [`tracer::BATCH_INTERVAL`] ([`wire`]). As a batch arrives, the monitor
//!   turns each directory inode into a path: it reads the directory's name
//!   from the btrfs tree and joins it to its parent's cached path. It
//!   writes what arrived to the database in one transaction a second
//!   ([`recorder`]). A monitor that crashes loses at most that
//!   second, which the next command records as a gap.
//! - Renames are recorded too: a write moves with the file it wrote, and a
//!   directory rename makes the monitor look directory paths up again.
//! - READ is a read of a file's data or the close of a file opened only for
//!   reading (a program may read through `mmap` without a read event);
//!   WRITE is a change of a file's data or size; EXEC is an open to run it.
//!   A file opened for writing and closed unchanged is neither.
//! - The set is complete unless it has gaps: the kernel's queue overflowed,
//!   a run had tracking off, or a monitor or init ended without sending its
//!   last batch. Gaps are stored with the set and reported by `world set`
//!   and merge. Accesses inside a directory that was removed before the
//!   monitor looked its path up (a temporary directory, typically) are
//!   counted as an `unresolved` gap that leaves the set complete: a
//!   directory of the base that the world removed shows in its diff, where
//!   merge finds the conflicts it needs.
//! - A world's set covers every run since its base; a merge that moves the
//!   base empties it.
//!
//! # Limitations
//!
//! - Reads and execs keep the name a file had when it was accessed. Writes
//!   follow a rename of the file (a file written as `x.tmp` and renamed to
//!   `x` shows as a write of `x`), but not of a directory above it, nor a
//!   rename after the world stopped.
//! - The monitor looks directory paths up when a batch arrives, up to a
//!   fifth of a second after the access, so an access just before its
//!   directory was renamed can show under the directory's new name.
//! - Creating, deleting, renaming or changing the metadata of a file
//!   without writing its data is not a WRITE; the diff shows those changes.
//! - Every running world's group gets the events of the whole pool and
//!   drops the others' in its init, so each running world adds work to
//!   every access on the pool.
//! - A frozen world's init reads no events, while the kernel keeps queueing
//!   the pool's: heavy work on the pool meanwhile, such as a large merge
//!   into the frozen world, can overflow the queue, which then shows as a
//!   gap although the world itself did nothing.
//! - Tracking needs the pool's top-level subvolume mounted at the store's
//!   pool directory: always true for an image pool, and for a direct pool
//!   only when the store directory is in the top-level subvolume. Elsewhere
//!   a run is recorded as a gap.

pub mod events;
pub(crate) mod recorder;
pub mod tracer;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::db::{AccessRow, DbError};
use crate::name::WorldName;
use crate::path::WorldPath;
use crate::runtime::RunState;
use crate::store::{Store, StoreError};

/// An operation on a file that the access set records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Op {
    Read,
    Write,
    Exec,
}

impl Op {
    /// Every operation, in the order they are listed.
    pub const ALL: [Op; 3] = [Op::Read, Op::Write, Op::Exec];

    /// Returns the bit that stands for the operation in the database.
    pub fn bit(self) -> u8 {
        match self {
            Op::Read => 1,
            Op::Write => 2,
            Op::Exec => 4,
        }
    }

    /// Returns the operation of database bit `bit`.
    pub fn from_bit(bit: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.bit() == bit)
    }

    /// Returns the operations that fanotify event mask `mask` stands for.
    pub fn from_mask(mask: u64) -> impl Iterator<Item = Op> {
        use crate::sys::fanotify::{EXEC_EVENTS, READ_EVENTS, WRITE_EVENTS};
        [
            (Op::Read, READ_EVENTS),
            (Op::Write, WRITE_EVENTS),
            (Op::Exec, EXEC_EVENTS),
        ]
        .into_iter()
        .filter(move |(_, events)| mask & events != 0)
        .map(|(op, _)| op)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "READ",
            Op::Write => "WRITE",
            Op::Exec => "EXEC",
        })
    }
}

/// One operation on one path of a world's access set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Access {
    pub op: Op,
    /// When the operation was first and last seen.
    pub first: Timestamp,
    pub last: Timestamp,
    /// The first process that did it, as the world numbers it, and its
    /// command name.
    pub pid: i32,
    pub command: String,
}

/// The cause of a gap in an access set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapReason {
    /// The kernel's event queue overflowed and dropped events.
    QueueOverflow,
    /// The world ran with tracking off, or where tracking is unavailable.
    NotRecorded,
    /// The world's monitor ended without sending its last batch.
    MonitorLost,
    /// The world's init ended without sending its last batch, as when
    /// `world stop` kills it with the processes left after the grace period.
    InitLost,
    /// Directories were removed before their paths could be looked up.
    Unresolved,
    /// A batch from init could not be read.
    BadBatch,
}

impl GapReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GapReason::QueueOverflow => "queue-overflow",
            GapReason::NotRecorded => "not-recorded",
            GapReason::MonitorLost => "monitor-lost",
            GapReason::InitLost => "init-lost",
            GapReason::Unresolved => "unresolved",
            GapReason::BadBatch => "bad-batch",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            GapReason::QueueOverflow,
            GapReason::NotRecorded,
            GapReason::MonitorLost,
            GapReason::InitLost,
            GapReason::Unresolved,
            GapReason::BadBatch,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }
}

impl fmt::Display for GapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GapReason::QueueOverflow => "the kernel's event queue overflowed",
            GapReason::NotRecorded => "the world ran without tracking",
            GapReason::MonitorLost => "the world's monitor ended before its last batch",
            GapReason::InitLost => "the world's init ended before it sent its last batch",
            GapReason::Unresolved => "accessed directories were removed before they were named",
            GapReason::BadBatch => "a batch of accesses from init could not be read",
        })
    }
}

/// A time when an access set missed accesses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    pub time: Timestamp,
    pub reason: GapReason,
    /// How many times it happened at that time: overflows, runs or paths.
    pub count: i64,
}

/// The access set of a world: per world-relative path, the operations its
/// processes did, plus the gaps where it may lack some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSet {
    pub paths: BTreeMap<WorldPath, Vec<Access>>,
    pub gaps: Vec<Gap>,
    /// False when the world runs and its init did not send its latest
    /// accesses in time (because the world is frozen, for example).
    pub up_to_date: bool,
}

impl AccessSet {
    /// Returns whether the set may be trusted to hold every access: it is
    /// up to date and has no gaps but unresolved ones.
    pub fn is_complete(&self) -> bool {
        self.up_to_date
            && self
                .gaps
                .iter()
                .all(|gap| gap.reason == GapReason::Unresolved)
    }

    /// Returns the paths that were read or executed: what the world's
    /// results may depend on.
    pub fn reads(&self) -> impl Iterator<Item = &WorldPath> {
        self.paths
            .iter()
            .filter(|(_, accesses)| {
                accesses
                    .iter()
                    .any(|access| matches!(access.op, Op::Read | Op::Exec))
            })
            .map(|(path, _)| path)
    }

    fn from_rows(rows: Vec<AccessRow>, gaps: Vec<(i64, String, i64)>) -> Self {
        let mut paths: BTreeMap<WorldPath, Vec<Access>> = BTreeMap::new();
        for row in rows {
            let Some(op) = Op::from_bit(row.op) else {
                continue;
            };
            paths
                .entry(WorldPath::from_bytes(&row.path))
                .or_default()
                .push(Access {
                    op,
                    first: timestamp(row.first_ms),
                    last: timestamp(row.last_ms),
                    pid: row.pid,
                    command: row.command,
                });
        }
        let gaps = gaps
            .into_iter()
            .filter_map(|(time_ms, reason, count)| {
                Some(Gap {
                    time: timestamp(time_ms),
                    reason: GapReason::parse(&reason)?,
                    count,
                })
            })
            .collect();
        Self {
            paths,
            gaps,
            up_to_date: true,
        }
    }
}

/// How long [`Store::access_set`] waits for a running world's init to send
/// the accesses it has read.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often it checks whether they arrived.
const FLUSH_POLL: Duration = Duration::from_millis(5);

fn timestamp(milliseconds: i64) -> Timestamp {
    Timestamp::from_millisecond(milliseconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Returns the current time in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

impl Store {
    /// Returns the access set of world `name` since its base, or only the
    /// accesses last seen at or after operation `since` of the log. For a
    /// running world it first signals init to send what it has read, so the
    /// set includes every access made before the call.
    pub fn access_set(
        &self,
        name: &WorldName,
        since: Option<i64>,
    ) -> Result<AccessSet, StoreError> {
        let world = self.world(name)?;
        let up_to_date = self.flush_accesses(name, world.id)?;
        let since_ms = match since {
            None => i64::MIN,
            Some(id) => self
                .db()
                .operation_time(id)?
                .ok_or(StoreError::NoOperation { id })?
                .as_millisecond(),
        };
        let rows = self.db().accesses(world.id, since_ms)?;
        let gaps = self.db().access_gaps(world.id, since_ms)?;
        let mut set = AccessSet::from_rows(rows, gaps);
        set.up_to_date = up_to_date;
        Ok(set)
    }

    /// Makes the init of world `name`, if it runs with tracking, send every
    /// access it has read, and waits until the monitor has written them.
    /// Returns false when that did not happen within [`FLUSH_TIMEOUT`].
    fn flush_accesses(&self, name: &WorldName, world_id: i64) -> Result<bool, StoreError> {
        let status = self.status(name).map_err(|source| StoreError::RunState {
            name: name.clone(),
            source: Box::new(source),
        })?;
        let (Some(init_pid), Some(run)) = (status.init_pid, status.run) else {
            return Ok(true);
        };
        if !run.track {
            return Ok(true);
        }
        if status.state == RunState::Frozen {
            return Ok(false);
        }

        let requested = now_ms();
        let init = nix::unistd::Pid::from_raw(init_pid);
        if nix::sys::signal::kill(init, crate::runtime::init::FLUSH_SIGNAL).is_err() {
            return Ok(false);
        }
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while Instant::now() < deadline {
            if self.db().access_flush_time(world_id)? >= Some(requested) {
                return Ok(true);
            }
            std::thread::sleep(FLUSH_POLL);
        }
        Ok(false)
    }

    /// Records a gap in world `name`'s access set now.
    pub(crate) fn add_access_gap(
        &mut self,
        world_id: i64,
        reason: GapReason,
    ) -> Result<(), DbError> {
        let writer = self.db_mut().transaction()?;
        writer.add_access_gap(world_id, now_ms(), reason.as_str(), 1)?;
        writer.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, op: Op) -> AccessRow {
        AccessRow {
            path: path.as_bytes().to_vec(),
            op: op.bit(),
            first_ms: 1,
            last_ms: 2,
            pid: 5,
            command: "cat".into(),
        }
    }

    #[test]
    fn reads_include_execs_not_writes() {
        let set = AccessSet::from_rows(
            vec![
                row("etc/passwd", Op::Read),
                row("bin/sh", Op::Exec),
                row("var/log/x", Op::Write),
            ],
            Vec::new(),
        );

        let reads: Vec<_> = set.reads().map(|path| path.to_string()).collect();

        assert_eq!(reads, ["/bin/sh", "/etc/passwd"]);
        assert!(set.is_complete());
    }

    #[test]
    fn mask_bits_map_to_ops() {
        let ops: Vec<Op> = Op::from_mask(libc::FAN_CLOSE_NOWRITE | libc::FAN_OPEN_EXEC).collect();

        assert_eq!(ops, [Op::Read, Op::Exec]);
        assert_eq!(
            Op::from_mask(libc::FAN_MODIFY).collect::<Vec<_>>(),
            [Op::Write]
        );
        for op in Op::ALL {
            assert_eq!(Op::from_bit(op.bit()), Some(op));
        }
    }

    #[test]
    fn unresolved_gap_leaves_set_complete() {
        let mut set = AccessSet::from_rows(Vec::new(), vec![(1, "unresolved".into(), 3)]);
        assert!(set.is_complete());

        set.up_to_date = false;
        assert!(!set.is_complete());
    }

    #[test]
    fn interpreter_names_recognized() {
        assert!(tracer::is_interpreter(b"ld-linux-x86-64.so.2"));
        assert!(tracer::is_interpreter(b"ld-musl-x86_64.so.1"));
        assert!(!tracer::is_interpreter(b"ld"));
        assert!(!tracer::is_interpreter(b"patch"));
    }

    #[test]
    fn unknown_gap_reason_skipped() {
        let set = AccessSet::from_rows(
            Vec::new(),
            vec![
                (1, "queue-overflow".into(), 2),
                (2, "from-the-future".into(), 1),
            ],
        );

        assert_eq!(set.gaps.len(), 1);
        assert_eq!(set.gaps[0].reason, GapReason::QueueOverflow);
        assert!(!set.is_complete());
    }
}
