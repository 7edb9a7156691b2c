//! Parsing of the events that a fanotify group with `FAN_REPORT_DFID_NAME`
//! returns from read(2): pure code over bytes, so it is tested without a
//! kernel.
//!
//! Each event is a `struct fanotify_event_metadata` followed by information
//! records; the one this group gets is a directory file handle plus the
//! entry's name (see fanotify(7)).

/// The btrfs file handle types, whose first 16 bytes are the inode number
/// and the subvolume's tree id (`struct btrfs_fid` in the kernel's
/// `fs/btrfs/export.h`).
const BTRFS_HANDLE_TYPES: [i32; 3] = [0x4d, 0x4e, 0x4f];
/// The information record of a directory handle and an entry name.
const INFO_DFID_NAME: u8 = 2;
/// The records of a rename's old and new directory handle and entry name.
const INFO_OLD_DFID_NAME: u8 = 10;
const INFO_NEW_DFID_NAME: u8 = 12;
/// Size of `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;
/// Size of an information record's header plus its fsid.
const FID_HEADER_LEN: usize = 4 + 8;
/// Size of `struct file_handle` before the handle bytes.
const HANDLE_HEADER_LEN: usize = 8;

/// A btrfs inode: its number and the tree id of its subvolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inode {
    pub ino: u64,
    pub root: u64,
}

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An access to entry `name` of directory `dir` by process `pid`, in
    /// the reader's pid namespace: 0 when the process is outside that
    /// namespace.
    Access {
        mask: u64,
        pid: i32,
        dir: Inode,
        name: Vec<u8>,
    },
    /// A rename of entry `from` to `to` by process `pid`, numbered as for
    /// [`Event::Access`]; `is_dir` when a directory moved.
    Rename {
        pid: i32,
        from: (Inode, Vec<u8>),
        to: (Inode, Vec<u8>),
        is_dir: bool,
    },
    /// The queue overflowed and the kernel dropped events.
    Overflow,
    /// An event whose records this parser does not read, such as one on a
    /// filesystem other than btrfs.
    Other,
}

/// Parses the events in `buffer`, as filled by one read(2); a truncated
/// event at the end is ignored.
pub fn parse(buffer: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut rest = buffer;
    while rest.len() >= METADATA_LEN {
        let event_len = u32_at(rest, 0) as usize;
        let metadata_len = u16::from_ne_bytes([rest[6], rest[7]]) as usize;
        if event_len < METADATA_LEN || event_len > rest.len() || metadata_len > event_len {
            break;
        }
        let mask = u64::from_ne_bytes(rest[8..16].try_into().expect("8 bytes"));
        let pid = i32::from_ne_bytes(rest[20..24].try_into().expect("4 bytes"));
        let event = if mask & crate::sys::fanotify::QUEUE_OVERFLOW != 0 {
            Event::Overflow
        } else {
            parse_access(mask, pid, &rest[metadata_len..event_len])
        };
        events.push(event);
        rest = &rest[event_len..];
    }
    events
}

/// Parses the information records of an access or rename event.
fn parse_access(mask: u64, pid: i32, mut records: &[u8]) -> Event {
    let (mut entry, mut old, mut new) = (None, None, None);
    while records.len() >= FID_HEADER_LEN {
        let info_type = records[0];
        let len = u16::from_ne_bytes([records[2], records[3]]) as usize;
        if len < FID_HEADER_LEN || len > records.len() {
            break;
        }
        let parsed = parse_dfid_name(&records[FID_HEADER_LEN..len]);
        match info_type {
            INFO_DFID_NAME => entry = parsed,
            INFO_OLD_DFID_NAME => old = parsed,
            INFO_NEW_DFID_NAME => new = parsed,
            _ => {}
        }
        records = &records[len..];
    }
    if mask & libc::FAN_RENAME != 0 {
        return match (old, new) {
            (Some(from), Some(to)) => Event::Rename {
                pid,
                from,
                to,
                is_dir: mask & libc::FAN_ONDIR != 0,
            },
            _ => Event::Other,
        };
    }
    match entry {
        Some((dir, name)) => Event::Access {
            mask,
            pid,
            dir,
            name,
        },
        None => Event::Other,
    }
}

/// Parses a `struct file_handle` followed by a NUL-terminated name.
fn parse_dfid_name(record: &[u8]) -> Option<(Inode, Vec<u8>)> {
    if record.len() < HANDLE_HEADER_LEN {
        return None;
    }
    let handle_bytes = u32_at(record, 0) as usize;
    let handle_type = i32::from_ne_bytes(record[4..8].try_into().ok()?);
    let handle = record.get(HANDLE_HEADER_LEN..HANDLE_HEADER_LEN + handle_bytes)?;
    if !BTRFS_HANDLE_TYPES.contains(&handle_type) || handle.len() < 16 {
        return None;
    }
    let dir = Inode {
        ino: u64::from_ne_bytes(handle[0..8].try_into().ok()?),
        root: u64::from_ne_bytes(handle[8..16].try_into().ok()?),
    };
    let name = &record[HANDLE_HEADER_LEN + handle_bytes..];
    let end = name.iter().position(|&byte| byte == 0)?;
    Some((dir, name[..end].to_vec()))
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_ne_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds the bytes of one access event as the kernel lays them out.
    pub(crate) fn access_bytes(mask: u64, pid: i32, dir: Inode, name: &[u8]) -> Vec<u8> {
        metadata(mask, pid, record(INFO_DFID_NAME, dir, name))
    }

    /// Builds one directory handle and name record.
    fn record(info_type: u8, dir: Inode, name: &[u8]) -> Vec<u8> {
        let mut handle = Vec::new();
        handle.extend_from_slice(&dir.ino.to_ne_bytes());
        handle.extend_from_slice(&dir.root.to_ne_bytes());
        handle.extend_from_slice(&7u32.to_ne_bytes());
        let mut record = vec![info_type, 0, 0, 0];
        record.extend_from_slice(&[0; 8]);
        record.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        record.extend_from_slice(&0x4di32.to_ne_bytes());
        record.extend_from_slice(&handle);
        record.extend_from_slice(name);
        record.push(0);
        while record.len() % 4 != 0 {
            record.push(0);
        }
        let record_len = record.len() as u16;
        record[2..4].copy_from_slice(&record_len.to_ne_bytes());
        record
    }

    fn metadata(mask: u64, pid: i32, records: Vec<u8>) -> Vec<u8> {
        let mut event = Vec::new();
        event.extend_from_slice(&((METADATA_LEN + records.len()) as u32).to_ne_bytes());
        event.extend_from_slice(&[3, 0]);
        event.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        event.extend_from_slice(&mask.to_ne_bytes());
        event.extend_from_slice(&(-1i32).to_ne_bytes());
        event.extend_from_slice(&pid.to_ne_bytes());
        event.extend(records);
        event
    }

    #[test]
    fn access_and_overflow_events_parsed() {
        let dir = Inode {
            ino: 257,
            root: 260,
        };
        let mut buffer = access_bytes(libc::FAN_ACCESS, 42, dir, b"passwd");
        buffer.extend(metadata(libc::FAN_Q_OVERFLOW, 0, Vec::new()));
        buffer.extend(access_bytes(
            libc::FAN_MODIFY,
            0,
            dir,
            b"name\nwith newline",
        ));

        let events = parse(&buffer);

        assert_eq!(
            events,
            [
                Event::Access {
                    mask: libc::FAN_ACCESS,
                    pid: 42,
                    dir,
                    name: b"passwd".to_vec()
                },
                Event::Overflow,
                Event::Access {
                    mask: libc::FAN_MODIFY,
                    pid: 0,
                    dir,
                    name: b"name\nwith newline".to_vec()
                },
            ]
        );
    }

    #[test]
    fn rename_event_parsed() {
        let from = Inode {
            ino: 300,
            root: 260,
        };
        let to = Inode {
            ino: 301,
            root: 260,
        };
        let mut records = record(INFO_OLD_DFID_NAME, from, b"x.tmp");
        records.extend(record(INFO_NEW_DFID_NAME, to, b"x"));
        let buffer = metadata(libc::FAN_RENAME, 9, records);

        assert_eq!(
            parse(&buffer),
            [Event::Rename {
                pid: 9,
                from: (from, b"x.tmp".to_vec()),
                to: (to, b"x".to_vec()),
                is_dir: false
            }]
        );
    }

    #[test]
    fn truncated_event_ignored() {
        let buffer = access_bytes(libc::FAN_ACCESS, 1, Inode { ino: 1, root: 5 }, b"a");

        assert!(parse(&buffer[..buffer.len() - 3]).is_empty());
        assert!(parse(&buffer[..10]).is_empty());
    }

    #[test]
    fn foreign_handle_type_is_other() {
        let mut buffer = access_bytes(libc::FAN_ACCESS, 1, Inode { ino: 1, root: 5 }, b"a");
        // The handle type sits after the metadata, the record header, the
        // fsid and the handle's length.
        let offset = METADATA_LEN + FID_HEADER_LEN + 4;
        buffer[offset..offset + 4].copy_from_slice(&1i32.to_ne_bytes());

        assert_eq!(parse(&buffer), [Event::Other]);
    }
}
