//! The reading end of access tracking, run by a world's init: it reads the
//! fanotify group, keeps the world's own accesses and sends them to the
//! monitor in batches.
//!
//! Init is pid 1 of the world's pid namespace, so the kernel gives the pid of
//! each event in the world's numbering, and 0 for processes outside the
//! world. Events of pid 1 are dropped too: they come from libcontainer's
//! setup of the container before init runs (it reads `/etc/passwd` for
//! `HOME`), and init itself reads only `/proc`, which the group does not
//! watch.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::events::{self, Event};
use super::wire::Batch;
use super::{now_ms, Op};
use crate::sys::fanotify;

/// How long accesses wait in init before they are sent to the monitor.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// The pause between two reads of the group. Events left in the kernel's
/// queue meanwhile merge there (a file's reads and its close become one
/// event), and init wakes once per pause instead of once per event.
const READ_PAUSE: Duration = Duration::from_millis(50);
/// The number of distinct accesses that makes a batch go at once, which
/// bounds init's memory.
const MAX_BATCH: usize = 4096;
/// How many command names init keeps by pid, which bounds its memory.
const MAX_COMMANDS: usize = 4096;
/// Size of the buffer that one read of the group fills.
const READ_BUFFER: usize = 64 * 1024;

/// The descriptors that the monitor hands to init for tracking.
#[derive(Debug)]
pub struct TrackFds {
    /// The fanotify group with its filesystem mark.
    pub group: OwnedFd,
    /// The write end of the pipe to the monitor.
    pub pipe: File,
    /// The btrfs tree id of the world's subvolume.
    pub root: u64,
}

/// The state of tracking in init.
pub struct Tracer<'fds> {
    group: BorrowedFd<'fds>,
    pipe: &'fds File,
    root: u64,
    batch: Batch,
    /// When the oldest access of the batch was read.
    pending_since: Option<Instant>,
    /// Command names of the world's processes, by pid: from the programs
    /// they ran, or else from `/proc`.
    commands: HashMap<i32, String>,
    buffer: Vec<u8>,
    /// Set once the monitor is gone; accesses are then dropped.
    broken: bool,
    /// When the group was last read.
    last_read: Instant,
}

impl<'fds> Tracer<'fds> {
    /// Starts tracking with the descriptors of `fds`.
    pub fn new(fds: &'fds TrackFds) -> Self {
        Self {
            group: fds.group.as_fd(),
            pipe: &fds.pipe,
            root: fds.root,
            batch: Batch::default(),
            pending_since: None,
            commands: HashMap::new(),
            buffer: vec![0; READ_BUFFER],
            broken: false,
            last_read: Instant::now(),
        }
    }

    /// Returns the group's descriptor to poll for events, or `None` while
    /// reading pauses.
    pub fn group(&self) -> Option<BorrowedFd<'fds>> {
        (self.last_read.elapsed() >= READ_PAUSE).then_some(self.group)
    }

    /// Returns how long init may wait before the batch is due or the pause
    /// ends, or `None` when it may wait for events.
    pub fn timeout(&self) -> Option<Duration> {
        let batch = self
            .pending_since
            .map(|since| BATCH_INTERVAL.saturating_sub(since.elapsed()));
        let pause = READ_PAUSE.checked_sub(self.last_read.elapsed());
        match (batch, pause) {
            (Some(batch), Some(pause)) => Some(batch.min(pause)),
            (batch, pause) => batch.or(pause),
        }
    }

    /// Reads the queued events when poll found the group `readable`, and
    /// sends the batch when it is due.
    pub fn poll_events(&mut self, readable: bool) {
        if readable {
            self.read_events();
        }
        if self
            .pending_since
            .is_some_and(|since| since.elapsed() >= BATCH_INTERVAL)
        {
            self.send();
        }
    }

    /// Reads every queued event and sends the batch when it is full.
    fn read_events(&mut self) {
        self.last_read = Instant::now();
        loop {
            let count = match fanotify::read_events(self.group, &mut self.buffer) {
                Ok(0) => return,
                Ok(count) => count,
                // WouldBlock: the queue is empty. Other errors leave the
                // events queued until the next poll.
                Err(_) => return,
            };
            let now = now_ms();
            for event in events::parse(&self.buffer[..count]) {
                self.add(event, now);
            }
            if self.batch.len() >= MAX_BATCH {
                self.send();
            }
        }
    }

    fn add(&mut self, event: Event, now: i64) {
        match event {
            Event::Access {
                mask,
                pid,
                dir,
                name,
            } if pid > 1 && dir.root == self.root && mask & libc::FAN_ONDIR == 0 => {
                // exec(2) gives the process the program's name. The event
                // comes before that, and the process may be gone before
                // init reads its later events, so the program's file name
                // is kept. The ELF interpreter is opened to run too, but
                // does not name the process.
                if mask & crate::sys::fanotify::EXEC_EVENTS != 0 && !is_interpreter(&name) {
                    if self.commands.len() >= MAX_COMMANDS {
                        self.commands.clear();
                    }
                    self.commands.insert(pid, command_name(&name));
                }
                for op in Op::from_mask(mask) {
                    let commands = &mut self.commands;
                    self.batch.add(dir.ino, &name, op, now, pid, || {
                        commands.entry(pid).or_insert_with(|| command(pid)).clone()
                    });
                }
            }
            Event::Rename {
                pid,
                from,
                to,
                is_dir,
            } if pid > 1 && from.0.root == self.root && to.0.root == self.root => {
                if is_dir {
                    self.batch.dir_rename();
                } else {
                    self.batch.rename((from.0.ino, &from.1), (to.0.ino, &to.1));
                }
            }
            Event::Overflow => self.batch.overflow(now),
            Event::Access { .. } | Event::Rename { .. } | Event::Other => return,
        }
        self.pending_since.get_or_insert_with(Instant::now);
    }

    /// Reads every queued event and sends the batch at once, marked as
    /// complete up to now, so that a command that asked for it can read an
    /// up-to-date access set.
    pub fn flush(&mut self) {
        let now = now_ms();
        self.read_events();
        self.batch.flushed(now);
        self.send();
    }

    /// Reads what is left in the queue and sends it; for the end of the
    /// world, once its other processes are gone.
    pub fn finish(&mut self) {
        self.read_events();
        self.send();
    }

    fn send(&mut self) {
        self.pending_since = None;
        let bytes = self.batch.take_encoded();
        if bytes.is_empty() || self.broken {
            return;
        }
        // A write error means the monitor is gone; the next command
        // records the lost batch as a gap when it cleans up after it.
        let mut pipe = self.pipe;
        if pipe.write_all(&bytes).is_err() {
            self.broken = true;
        }
    }
}

/// Returns the command name that exec(2) gives a program file named
/// `name`: its first 15 bytes (`TASK_COMM_LEN` less the NUL).
fn command_name(name: &[u8]) -> String {
    String::from_utf8_lossy(&name[..name.len().min(15)]).into_owned()
}

/// Returns whether the program file `name` is an ELF interpreter, such as
/// `ld-linux-x86-64.so.2`, which exec(2) opens besides the program.
pub(crate) fn is_interpreter(name: &[u8]) -> bool {
    name.starts_with(b"ld-") && name.windows(3).any(|part| part == b".so")
}

/// Returns the command name of process `pid` of the world, or `?` when it
/// has ended. A process in the middle of exec(2) may still show its
/// previous name.
fn command(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim_end_matches('\n').to_owned())
        .unwrap_or_else(|_| "?".into())
}
