//! The writing end of access tracking, run by a world's monitor. It reads
//! init's batches from the pipe and names each directory inode from the
//! world's btrfs tree when a batch arrives. It writes what arrived to the
//! database in one transaction a second, or at once when a command waits
//! for it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::wire::{Decoder, Message};
use super::GapReason;
use crate::db::{AccessRow, Db, DbError};
use crate::path::WorldPath;
use crate::sys::btrfs;

/// How many directory paths the monitor keeps, which bounds its memory.
const MAX_CACHED_DIRS: usize = 65_536;
/// How long received accesses wait before they are written. Each commit
/// rewrites the index pages it touches, so fewer commits write less: with a
/// commit per batch of init, the writes cost a patch run about 5 %.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How many records make a commit due at once, which bounds the monitor's
/// memory.
const MAX_PENDING: usize = 50_000;

/// A record waiting for the next commit.
enum Pending {
    Access(AccessRow),
    /// Writes of the first path move to the second.
    Move(Vec<u8>, Vec<u8>),
    Gap(GapReason, i64, i64),
    /// Init sent every access it had read at this time.
    Flushed(i64),
}

/// The state of tracking in the monitor.
pub(crate) struct Recorder {
    world_id: i64,
    /// The world's subvolume, where directory inodes are looked up.
    world: File,
    pipe: File,
    decoder: Decoder,
    /// Paths of directory inodes; `None` for one that could not be named.
    dirs: HashMap<u64, Option<Vec<u8>>>,
    buffer: Vec<u8>,
    pending: Vec<Pending>,
    /// When the oldest pending record arrived.
    pending_since: Option<Instant>,
    /// Set when a command waits for the pending records.
    commit_now: bool,
}

impl Recorder {
    /// Records into world `world_id`'s access set what arrives on `pipe`,
    /// a non-blocking read end; `world` is the world's subvolume.
    pub(crate) fn new(world_id: i64, world: File, pipe: File) -> Self {
        Self {
            world_id,
            world,
            pipe,
            decoder: Decoder::default(),
            dirs: HashMap::new(),
            buffer: vec![0; 64 * 1024],
            pending: Vec::new(),
            pending_since: None,
            commit_now: false,
        }
    }

    /// Returns the pipe's descriptor, to poll for batches.
    pub(crate) fn pipe(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// Reads the batches waiting in the pipe, names their paths, and writes
    /// them to `db` when a commit is due (see [`Recorder::commit_if_due`]).
    /// Returns `false` once the pipe reached its end.
    pub(crate) fn receive(&mut self, db: &mut Db) -> Result<bool, DbError> {
        let mut open = true;
        loop {
            match self.pipe.read(&mut self.buffer) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(count) => self.decoder.push(&self.buffer[..count]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        match self.decoder.messages() {
            Ok(messages) => self.add(messages),
            Err(error) => {
                // Nothing but init writes to the pipe, so this is a bug;
                // the set is marked incomplete rather than guessed at.
                tracing::warn!(error = %error, "drop a malformed batch of accesses");
                self.decoder = Decoder::default();
                self.push(Pending::Gap(GapReason::BadBatch, super::now_ms(), 1));
            }
        }
        self.commit_if_due(db)?;
        Ok(open)
    }

    /// Names the paths of `messages` now, while their directories exist,
    /// and queues them for the next commit.
    fn add(&mut self, messages: Vec<Message>) {
        let mut unresolved = 0;
        for message in messages {
            match message {
                // Renames come first in a batch and name paths before the
                // batch's own directory renames are applied.
                Message::Rename { from, to } => match (self.resolve(from.0), self.resolve(to.0)) {
                    (Some(from_dir), Some(to_dir)) => self.push(Pending::Move(
                        from_dir.join(&from.1).as_bytes().to_vec(),
                        to_dir.join(&to.1).as_bytes().to_vec(),
                    )),
                    _ => unresolved += 1,
                },
                Message::DirRename => self.dirs.clear(),
                Message::Access {
                    dir,
                    name,
                    op,
                    seen,
                } => {
                    let Some(dir_path) = self.resolve(dir) else {
                        unresolved += 1;
                        continue;
                    };
                    self.push(Pending::Access(AccessRow {
                        path: dir_path.join(&name).as_bytes().to_vec(),
                        op: op.bit(),
                        first_ms: seen.first_ms,
                        last_ms: seen.last_ms,
                        pid: seen.pid,
                        command: seen.command,
                    }));
                }
                Message::Overflow { time_ms } => {
                    self.push(Pending::Gap(GapReason::QueueOverflow, time_ms, 1))
                }
                Message::Flushed { time_ms } => {
                    self.push(Pending::Flushed(time_ms));
                    // A command waits for this one.
                    self.commit_now = true;
                }
            }
        }
        if unresolved > 0 {
            self.push(Pending::Gap(
                GapReason::Unresolved,
                super::now_ms(),
                unresolved,
            ));
        }
    }

    fn push(&mut self, pending: Pending) {
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending.push(pending);
    }

    /// Returns how long the monitor may wait before a commit is due, or
    /// `None` when nothing waits.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.pending_since
            .map(|since| COMMIT_INTERVAL.saturating_sub(since.elapsed()))
    }

    /// Writes what waits to `db` if a command asked for it, if it waited
    /// [`COMMIT_INTERVAL`], or if [`MAX_PENDING`] records wait.
    pub(crate) fn commit_if_due(&mut self, db: &mut Db) -> Result<(), DbError> {
        let due = self.commit_now
            || self.pending.len() >= MAX_PENDING
            || self.timeout() == Some(Duration::ZERO);
        if due {
            self.commit(db)?;
        }
        Ok(())
    }

    /// Writes what waits to `db` in one transaction, in the order it
    /// arrived.
    pub(crate) fn commit(&mut self, db: &mut Db) -> Result<(), DbError> {
        self.commit_now = false;
        self.pending_since = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let writer = db.transaction()?;
        let mut rows = Vec::new();
        for item in &pending {
            match item {
                Pending::Access(row) => rows.push(row.clone()),
                Pending::Move(from, to) => {
                    // The writes before the rename are in place first.
                    writer.record_accesses(self.world_id, &rows)?;
                    rows.clear();
                    writer.move_writes(self.world_id, from, to)?;
                }
                Pending::Gap(reason, time_ms, count) => {
                    writer.add_access_gap(self.world_id, *time_ms, reason.as_str(), *count)?
                }
                Pending::Flushed(time_ms) => writer.set_access_flush(self.world_id, *time_ms)?,
            }
        }
        writer.record_accesses(self.world_id, &rows)?;
        writer.commit()?;
        tracing::trace!(records = pending.len(), "accesses recorded");
        Ok(())
    }

    /// Returns the world-relative path of directory inode `dir`, or `None`
    /// when it has none, such as after its removal.
    ///
    /// Each new directory costs a one-item search of the world's tree for
    /// its name, which holds the tree's locks only briefly while the world's
    /// processes may be writing to the same tree ([`btrfs::directory_path`]).
    fn resolve(&mut self, dir: u64) -> Option<WorldPath> {
        if self.dirs.len() >= MAX_CACHED_DIRS {
            self.dirs.clear();
        }
        let path = btrfs::directory_path(&self.world, dir, &|_| None, &mut self.dirs);
        path.ok().flatten().map(|path| WorldPath::from_bytes(&path))
    }
}
