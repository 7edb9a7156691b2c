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
/// Tag, op, directory, first and last time, pid, command length, name
/// length.
const ACCESS_FIXED_LEN: usize = 1 + 1 + 8 + 8 + 8 + 4 + 1 + 2;
const OVERFLOW_LEN: usize = 1 + 8;

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

    /// Records that the kernel dropped events at `now_ms`.
    pub fn overflow(&mut self, now_ms: i64) {
        self.overflows.push(now_ms);
    }

    /// Returns the number of distinct accesses gathered.
    pub fn len(&self) -> usize {
        self.count + self.overflows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes the batch into messages and empties it.
    pub fn take_encoded(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for time_ms in self.overflows.drain(..) {
            bytes.push(TAG_OVERFLOW);
            bytes.extend_from_slice(&time_ms.to_ne_bytes());
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
    fn unknown_tag_rejected() {
        let mut decoder = Decoder::default();
        decoder.push(b"Zjunk");

        assert!(decoder.messages().is_err());
    }
}
