//! The writing end of access tracking, run by a world's monitor: it reads
//! init's batches from the pipe, names each directory inode with a btrfs
//! lookup and writes each batch to the database in one transaction.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};

use super::wire::{Decoder, Message};
use super::GapReason;
use crate::db::{AccessRow, Db, DbError};
use crate::path::WorldPath;
use crate::sys::btrfs;

/// The inode number of a btrfs subvolume's root directory.
const SUBVOLUME_ROOT_INO: u64 = 256;
/// How many directory paths the monitor keeps, which bounds its memory.
const MAX_CACHED_DIRS: usize = 65_536;

/// The state of tracking in the monitor.
pub(crate) struct Recorder {
    world_id: i64,
    /// The world's subvolume, where directory inodes are looked up.
    world: File,
    pipe: File,
    decoder: Decoder,
    /// Paths of directory inodes; `None` for one that could not be named.
    dirs: HashMap<u64, Option<WorldPath>>,
    buffer: Vec<u8>,
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
        }
    }

    /// Returns the pipe's descriptor, to poll for batches.
    pub(crate) fn pipe(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// Reads the batches waiting in the pipe and writes them to `db`. Returns `false`
    /// once the pipe reached its end.
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
        let messages = match self.decoder.messages() {
            Ok(messages) => messages,
            Err(error) => {
                // Nothing but init writes to the pipe, so this is a bug;
                // the set is marked incomplete rather than guessed at.
                tracing::warn!(error = %error, "drop a malformed batch of accesses");
                self.decoder = Decoder::default();
                let writer = db.transaction()?;
                writer.add_access_gap(
                    self.world_id,
                    super::now_ms(),
                    GapReason::Unresolved.as_str(),
                    1,
                )?;
                writer.commit()?;
                return Ok(open);
            }
        };
        if !messages.is_empty() {
            self.write(messages, db)?;
        }
        Ok(open)
    }

    fn write(&mut self, messages: Vec<Message>, db: &mut Db) -> Result<(), DbError> {
        let mut rows = Vec::with_capacity(messages.len());
        let mut overflows = Vec::new();
        let mut renames = Vec::new();
        let mut flushed = None;
        let mut unresolved = 0;
        for message in messages {
            match message {
                // Renames come first in a batch and name paths before the
                // batch's own directory renames are applied.
                Message::Rename { from, to } => match (self.resolve(from.0), self.resolve(to.0)) {
                    (Some(from_dir), Some(to_dir)) => renames.push((
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
                    rows.push(AccessRow {
                        path: dir_path.join(&name).as_bytes().to_vec(),
                        op: op.bit(),
                        first_ms: seen.first_ms,
                        last_ms: seen.last_ms,
                        pid: seen.pid,
                        command: seen.command,
                    });
                }
                Message::Overflow { time_ms } => overflows.push(time_ms),
                Message::Flushed { time_ms } => flushed = Some(time_ms),
            }
        }

        let writer = db.transaction()?;
        for (from, to) in &renames {
            writer.move_writes(self.world_id, from, to)?;
        }
        writer.record_accesses(self.world_id, &rows)?;
        for time_ms in &overflows {
            writer.add_access_gap(
                self.world_id,
                *time_ms,
                GapReason::QueueOverflow.as_str(),
                1,
            )?;
        }
        if unresolved > 0 {
            writer.add_access_gap(
                self.world_id,
                super::now_ms(),
                GapReason::Unresolved.as_str(),
                unresolved,
            )?;
        }
        if let Some(time_ms) = flushed {
            writer.set_access_flush(self.world_id, time_ms)?;
        }
        writer.commit()?;
        tracing::trace!(
            accesses = rows.len(),
            overflows = overflows.len(),
            unresolved,
            "batch of accesses recorded"
        );
        Ok(())
    }

    /// Returns the world-relative path of directory inode `dir`.
    fn resolve(&mut self, dir: u64) -> Option<WorldPath> {
        if dir == SUBVOLUME_ROOT_INO {
            return Some(WorldPath::root());
        }
        if let Some(path) = self.dirs.get(&dir) {
            return path.clone();
        }
        if self.dirs.len() >= MAX_CACHED_DIRS {
            self.dirs.clear();
        }
        // A directory has one name, so the first path is the only one.
        let path = btrfs::inode_paths(&self.world, dir)
            .ok()
            .and_then(|paths| paths.into_iter().next())
            .map(|path| WorldPath::from_bytes(&path));
        self.dirs.insert(dir, path.clone());
        path
    }
}
