//! The batches that a world's init sends its monitor over a pipe: accesses
//! grouped by directory inode, entry name and operation, and queue
//! overflows. Pure code over bytes.
//!
//! Each message is a tag byte and fixed fields in native byte order (both
//! ends are the same program on the same machine), then the command name
//! and the entry name, each after its length.

use std::collections::HashMap;

use super::Op;

const TAG_ACCESS: u8 = b'A';
const TAG_OVERFLOW: u8 = b'O';
const TAG_RENAME: u8 = b'R';
const TAG_DIR_RENAME: u8 = b'D';
const TAG_FLUSHED: u8 = b'F';
/// Tag, op, directory, first and last time, pid, command length, name
/// length.
const ACCESS_FIXED_LEN: usize = 1 + 1 + 8 + 8 + 8 + 4 + 1 + 2;
const OVERFLOW_LEN: usize = 1 + 8;
/// Tag, old and new directory, old and new name length.
const RENAME_FIXED_LEN: usize = 1 + 8 + 8 + 2 + 2;

/// The first and last sighting of an operation on one entry, and the
/// process that did it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// Milliseconds since the Unix epoch.
    pub first_ms: i64,
    pub last_ms: i64,
    /// The first process that did it, as the world's pid namespace numbers
    /// it, and its command name.
    pub pid: i32,
    pub command: String,
}

/// An entry of a directory: the directory's inode number and the name.
pub type Entry = (u64, Vec<u8>);

/// A message from init to the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Operation `op` on entry `name` of the directory whose inode is `dir`.
    Access {
        dir: u64,
        name: Vec<u8>,
        op: Op,
        seen: Sighting,
    },
    /// The kernel dropped events at `time_ms`.
    Overflow { time_ms: i64 },
    /// A file was renamed: what was written under the old name belongs to
    /// the new one.
    Rename { from: Entry, to: Entry },
    /// A directory was renamed, so paths of directories looked up before
    /// may be stale.
    DirRename,
    /// Every access that happened before `time_ms` has been sent.
    Flushed { time_ms: i64 },
}

/// Accesses gathered since the last send, each operation on each entry
/// once.
#[derive(Debug, Default)]
pub struct Batch {
    /// Sightings by directory and operation, then by entry name, so that a
    /// repeated event is found without allocating its name.
    accesses: HashMap<(u64, Op), HashMap<Vec<u8>, Sighting>>,
    count: usize,
    overflows: Vec<i64>,
    /// Renames, in the order they happened: file renames, and `None` for
    /// a directory rename.
    renames: Vec<Option<(Entry, Entry)>>,
    /// Set when the batch replies to a request to send every access.
    flushed: Option<i64>,
}

impl Batch {
    /// Records operation `op` on entry `name` of directory `dir` at `now_ms`
    /// by `pid`; `command` names the process the first time only.
    pub fn add(
        &mut self,
        dir: u64,
        name: &[u8],
        op: Op,
        now_ms: i64,
        pid: i32,
        command: impl FnOnce() -> String,
    ) {
        let entries = self.accesses.entry((dir, op)).or_default();
        if let Some(seen) = entries.get_mut(name) {
            seen.last_ms = seen.last_ms.max(now_ms);
            return;
        }
        self.count += 1;
        entries.insert(
            name.to_vec(),
            Sighting {
                first_ms: now_ms,
                last_ms: now_ms,
                pid,
                command: command(),
            },
        );
    }

    /// Records that file `from` was renamed to `to`: its writes in this
    /// batch move to the new name, and the monitor moves older ones.
    pub fn rename(&mut self, from: (u64, &[u8]), to: (u64, &[u8])) {
        let moved = self
            .accesses
            .get_mut(&(from.0, Op::Write))
            .and_then(|entries| entries.remove(from.1));
        if let Some(moved) = moved {
            self.count -= 1;
            let entries = self.accesses.entry((to.0, Op::Write)).or_default();
            match entries.get_mut(to.1) {
                Some(seen) => {
                    seen.first_ms = seen.first_ms.min(moved.first_ms);
                    seen.last_ms = seen.last_ms.max(moved.last_ms);
                }
                None => {
                    self.count += 1;
                    entries.insert(to.1.to_vec(), moved);
                }
            }
        }
        self.renames
            .push(Some(((from.0, from.1.to_vec()), (to.0, to.1.to_vec()))));
    }

    /// Marks the batch as holding every access read up to `now_ms`.
    pub fn flushed(&mut self, now_ms: i64) {
        self.flushed = Some(now_ms);
    }

    /// Records that a directory was renamed.
    pub fn dir_rename(&mut self) {
        self.renames.push(None);
    }

    /// Records that the kernel dropped events at `now_ms`.
    pub fn overflow(&mut self, now_ms: i64) {
        self.overflows.push(now_ms);
    }

    /// Returns the number of distinct accesses gathered.
    pub fn len(&self) -> usize {
        self.count + self.overflows.len() + self.renames.len() + usize::from(self.flushed.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes the batch into messages and empties it. Renames come before
    /// accesses, since the accesses of the batch already carry new names.
    pub fn take_encoded(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for time_ms in self.overflows.drain(..) {
            bytes.push(TAG_OVERFLOW);
            bytes.extend_from_slice(&time_ms.to_ne_bytes());
        }
        for rename in self.renames.drain(..) {
            let Some(((from_dir, from_name), (to_dir, to_name))) = rename else {
                bytes.push(TAG_DIR_RENAME);
                continue;
            };
            let from_name = truncate(&from_name, u16::MAX as usize);
            let to_name = truncate(&to_name, u16::MAX as usize);
            bytes.push(TAG_RENAME);
            bytes.extend_from_slice(&from_dir.to_ne_bytes());
            bytes.extend_from_slice(&to_dir.to_ne_bytes());
            bytes.extend_from_slice(&(from_name.len() as u16).to_ne_bytes());
            bytes.extend_from_slice(&(to_name.len() as u16).to_ne_bytes());
            bytes.extend_from_slice(from_name);
            bytes.extend_from_slice(to_name);
        }
        self.count = 0;
        let accesses = self.accesses.drain().flat_map(|((dir, op), entries)| {
            entries
                .into_iter()
                .map(move |(name, seen)| (dir, op, name, seen))
        });
        for (dir, op, name, seen) in accesses {
            let command = truncate(seen.command.as_bytes(), u8::MAX as usize);
            let name = truncate(&name, u16::MAX as usize);
            bytes.push(TAG_ACCESS);
            bytes.push(op.bit());
            bytes.extend_from_slice(&dir.to_ne_bytes());
            bytes.extend_from_slice(&seen.first_ms.to_ne_bytes());
            bytes.extend_from_slice(&seen.last_ms.to_ne_bytes());
            bytes.extend_from_slice(&seen.pid.to_ne_bytes());
            bytes.push(command.len() as u8);
            bytes.extend_from_slice(&(name.len() as u16).to_ne_bytes());
            bytes.extend_from_slice(command);
            bytes.extend_from_slice(name);
        }
        if let Some(time_ms) = self.flushed.take() {
            bytes.push(TAG_FLUSHED);
            bytes.extend_from_slice(&time_ms.to_ne_bytes());
        }
        bytes
    }
}

fn truncate(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// Splits a byte stream into messages, keeping a partial message until the
/// rest arrives.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
}

/// A byte stream that contains something other than messages.
#[derive(Debug, thiserror::Error)]
#[error("malformed access message with tag {tag:#04x}")]
pub struct Malformed {
    pub tag: u8,
}

impl Decoder {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Returns the messages that are complete, in order.
    pub fn messages(&mut self) -> Result<Vec<Message>, Malformed> {
        let mut messages = Vec::new();
        let mut offset = 0;
        while let Some((message, len)) = decode(&self.pending[offset..])? {
            messages.push(message);
            offset += len;
        }
        self.pending.drain(..offset);
        Ok(messages)
    }

    /// Returns whether bytes of an incomplete message are left.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Decodes the message at the start of `bytes` and its length, or `None`
/// when it is not complete yet.
fn decode(bytes: &[u8]) -> Result<Option<(Message, usize)>, Malformed> {
    let Some(&tag) = bytes.first() else {
        return Ok(None);
    };
    let i64_at = |offset: usize| i64::from_ne_bytes(bytes[offset..offset + 8].try_into().unwrap());
    match tag {
        TAG_DIR_RENAME => Ok(Some((Message::DirRename, 1))),
        TAG_FLUSHED => {
            if bytes.len() < 9 {
                return Ok(None);
            }
            Ok(Some((Message::Flushed { time_ms: i64_at(1) }, 9)))
        }
        TAG_RENAME => {
            if bytes.len() < RENAME_FIXED_LEN {
                return Ok(None);
            }
            let from_dir = u64::from_ne_bytes(bytes[1..9].try_into().unwrap());
            let to_dir = u64::from_ne_bytes(bytes[9..17].try_into().unwrap());
            let from_len = u16::from_ne_bytes([bytes[17], bytes[18]]) as usize;
            let to_len = u16::from_ne_bytes([bytes[19], bytes[20]]) as usize;
            let len = RENAME_FIXED_LEN + from_len + to_len;
            if bytes.len() < len {
                return Ok(None);
            }
            let names = &bytes[RENAME_FIXED_LEN..len];
            let message = Message::Rename {
                from: (from_dir, names[..from_len].to_vec()),
                to: (to_dir, names[from_len..].to_vec()),
            };
            Ok(Some((message, len)))
        }
        TAG_OVERFLOW => {
            if bytes.len() < OVERFLOW_LEN {
                return Ok(None);
            }
            Ok(Some((
                Message::Overflow { time_ms: i64_at(1) },
                OVERFLOW_LEN,
            )))
        }
        TAG_ACCESS => {
            if bytes.len() < ACCESS_FIXED_LEN {
                return Ok(None);
            }
            let op = Op::from_bit(bytes[1]).ok_or(Malformed { tag })?;
            let dir = u64::from_ne_bytes(bytes[2..10].try_into().unwrap());
            let pid = i32::from_ne_bytes(bytes[26..30].try_into().unwrap());
            let command_len = bytes[30] as usize;
            let name_len = u16::from_ne_bytes([bytes[31], bytes[32]]) as usize;
            let len = ACCESS_FIXED_LEN + command_len + name_len;
            if bytes.len() < len {
                return Ok(None);
            }
            let command = &bytes[ACCESS_FIXED_LEN..ACCESS_FIXED_LEN + command_len];
            let message = Message::Access {
                dir,
                name: bytes[ACCESS_FIXED_LEN + command_len..len].to_vec(),
                op,
                seen: Sighting {
                    first_ms: i64_at(10),
                    last_ms: i64_at(18),
                    pid,
                    command: String::from_utf8_lossy(command).into_owned(),
                },
            };
            Ok(Some((message, len)))
        }
        _ => Err(Malformed { tag }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_merged_into_one_sighting() {
        let mut batch = Batch::default();
        batch.add(256, b"log", Op::Write, 10, 7, || "sh".into());
        batch.add(256, b"log", Op::Write, 30, 9, || unreachable!("named once"));
        batch.add(256, b"log", Op::Read, 20, 9, || "cat".into());

        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn messages_survive_any_split() {
        let mut batch = Batch::default();
        batch.add(256, b"a\nb", Op::Exec, 5, 3, || "busybox".into());
        batch.overflow(6);
        batch.add(300, b"x", Op::Read, 7, 4, || "cat".into());
        let bytes = batch.take_encoded();
        assert!(batch.is_empty());

        for split in 0..=bytes.len() {
            let mut decoder = Decoder::default();
            decoder.push(&bytes[..split]);
            let mut messages = decoder.messages().unwrap();
            decoder.push(&bytes[split..]);
            messages.extend(decoder.messages().unwrap());
            assert!(!decoder.has_partial());

            assert_eq!(messages.len(), 3, "split at {split}");
            assert_eq!(messages[0], Message::Overflow { time_ms: 6 });
            assert!(messages.contains(&Message::Access {
                dir: 256,
                name: b"a\nb".to_vec(),
                op: Op::Exec,
                seen: Sighting {
                    first_ms: 5,
                    last_ms: 5,
                    pid: 3,
                    command: "busybox".into()
                }
            }));
        }
    }

    #[test]
    fn rename_moves_writes_of_the_batch() {
        let mut batch = Batch::default();
        batch.add(256, b"x.tmp", Op::Write, 10, 7, || "patch".into());
        batch.add(256, b"x.tmp", Op::Read, 11, 7, || "patch".into());
        batch.rename((256, b"x.tmp"), (256, b"x"));
        batch.dir_rename();
        batch.add(256, b"x.tmp", Op::Write, 12, 7, || "patch".into());

        let mut decoder = Decoder::default();
        decoder.push(&batch.take_encoded());
        let messages = decoder.messages().unwrap();

        assert_eq!(
            messages[0],
            Message::Rename {
                from: (256, b"x.tmp".to_vec()),
                to: (256, b"x".to_vec())
            }
        );
        assert_eq!(messages[1], Message::DirRename);
        let mut accesses: Vec<(Vec<u8>, Op)> = messages[2..]
            .iter()
            .map(|message| match message {
                Message::Access { name, op, .. } => (name.clone(), *op),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        accesses.sort();
        assert_eq!(
            accesses,
            [
                (b"x".to_vec(), Op::Write),
                (b"x.tmp".to_vec(), Op::Read),
                (b"x.tmp".to_vec(), Op::Write)
            ]
        );
    }

    #[test]
    fn unknown_tag_rejected() {
        let mut decoder = Decoder::default();
        decoder.push(b"Zjunk");

        assert!(decoder.messages().is_err());
    }
}
