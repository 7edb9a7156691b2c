//! The change model: what one path looks like on each side of a diff, and
//! the rules that name the kind of change. Pure data and pure functions.

use crate::path::WorldPath;

/// The type of a file, as `st_mode & S_IFMT` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileType {
    /// Returns the type's name in messages, such as `character device`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Regular => "regular file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::CharDevice => "character device",
            Self::BlockDevice => "block device",
        }
    }

    /// Returns the type encoded in `st_mode`, or `None` for an unknown type.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Self::Regular,
            libc::S_IFDIR => Self::Directory,
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFIFO => Self::Fifo,
            libc::S_IFSOCK => Self::Socket,
            libc::S_IFCHR => Self::CharDevice,
            libc::S_IFBLK => Self::BlockDevice,
            _ => return None,
        })
    }
}

/// One side of a change: a file's type and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub file_type: FileType,
    /// Size in bytes; for a sparse file, the apparent size.
    pub size: u64,
    /// Permission bits, with setuid, setgid and sticky (`st_mode & 07777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Target of a symlink.
    pub target: Option<Vec<u8>>,
    /// Device number of a character or block device.
    pub rdev: Option<u64>,
    /// Extended attributes sorted by name, including `security.capability`
    /// and POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Inode number: equal numbers on one side are hard links of one file.
    pub ino: u64,
    pub nlink: u64,
}

/// The kind of a change of one path between a base and a world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// The path exists only in the world.
    Added,
    /// Same type, other content: data, symlink target or device number.
    Modified,
    /// The path exists only in the base.
    Deleted,
    /// The path exists on both sides with different file types.
    TypeChanged,
    /// Same content; owner, mode, xattrs, ACLs or mtime changed.
    MetadataOnly,
}

impl ChangeKind {
    /// Returns the one-letter status of `world diff`.
    pub fn letter(self) -> char {
        match self {
            Self::Added => 'A',
            Self::Modified => 'M',
            Self::Deleted => 'D',
            Self::TypeChanged => 'T',
            Self::MetadataOnly => 'm',
        }
    }
}

/// The change of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: WorldPath,
    pub kind: ChangeKind,
    /// The path in the base, if it exists there.
    pub before: Option<Entry>,
    /// The path in the world, if it exists there.
    pub after: Option<Entry>,
}

/// Names the change between two sides of one path, or returns `None` when
/// they do not differ.
///
/// `data_changed` is whether a regular file's data differs, and the caller
/// finds it out (sizes, shared extents or bytes). Access times never count,
/// and neither do a directory's size and mtime, which follow its entries.
pub fn classify(
    before: Option<&Entry>,
    after: Option<&Entry>,
    data_changed: bool,
) -> Option<ChangeKind> {
    let (before, after) = match (before, after) {
        (None, None) => return None,
        (None, Some(_)) => return Some(ChangeKind::Added),
        (Some(_), None) => return Some(ChangeKind::Deleted),
        (Some(before), Some(after)) => (before, after),
    };
    if before.file_type != after.file_type {
        return Some(ChangeKind::TypeChanged);
    }

    // Content decides, not the inode: a file replaced by an equal one, as
    // an editor's save or a merge's clone does, is no change.
    let content_changed = match before.file_type {
        FileType::Regular => data_changed || before.size != after.size,
        FileType::Symlink => before.target != after.target,
        FileType::CharDevice | FileType::BlockDevice => before.rdev != after.rdev,
        FileType::Directory | FileType::Fifo | FileType::Socket => false,
    };
    if content_changed {
        return Some(ChangeKind::Modified);
    }

    let times_count = before.file_type != FileType::Directory;
    let metadata_changed = before.mode != after.mode
        || before.uid != after.uid
        || before.gid != after.gid
        || before.xattrs != after.xattrs
        || (times_count && before.mtime_ns != after.mtime_ns);
    metadata_changed.then_some(ChangeKind::MetadataOnly)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file_type: FileType) -> Entry {
        Entry {
            file_type,
            size: 10,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1_000,
            target: (file_type == FileType::Symlink).then(|| b"target".to_vec()),
            rdev: matches!(file_type, FileType::CharDevice | FileType::BlockDevice).then_some(259),
            xattrs: Vec::new(),
            ino: 300,
            nlink: 1,
        }
    }

    /// An edit of one side of a change, for table-driven cases.
    type Edit = fn(&mut Entry);

    const TYPES: [FileType; 7] = [
        FileType::Regular,
        FileType::Directory,
        FileType::Symlink,
        FileType::Fifo,
        FileType::Socket,
        FileType::CharDevice,
        FileType::BlockDevice,
    ];

    #[test]
    fn added_and_deleted_for_every_type() {
        for file_type in TYPES {
            let side = entry(file_type);
            assert_eq!(
                classify(None, Some(&side), false),
                Some(ChangeKind::Added),
                "{file_type:?}"
            );
            assert_eq!(
                classify(Some(&side), None, false),
                Some(ChangeKind::Deleted),
                "{file_type:?}"
            );
            assert_eq!(classify(None, None, false), None);
        }
    }

    #[test]
    fn type_changed_for_every_pair() {
        for before in TYPES {
            for after in TYPES.iter().filter(|after| **after != before) {
                let change = classify(Some(&entry(before)), Some(&entry(*after)), false);
                assert_eq!(
                    change,
                    Some(ChangeKind::TypeChanged),
                    "{before:?} -> {after:?}"
                );
            }
        }
    }

    #[test]
    fn unchanged_for_every_type() {
        for file_type in TYPES {
            let side = entry(file_type);
            assert_eq!(
                classify(Some(&side), Some(&side.clone()), false),
                None,
                "{file_type:?}"
            );
        }
    }

    #[test]
    fn metadata_only_for_every_type() {
        let edits: [(&str, Edit); 4] = [
            ("mode", |e| e.mode = 0o600),
            ("owner", |e| e.uid = 1000),
            ("group", |e| e.gid = 1000),
            ("xattr", |e| {
                e.xattrs = vec![(b"user.note".to_vec(), b"x".to_vec())]
            }),
        ];
        for file_type in TYPES {
            for (what, edit) in edits {
                let before = entry(file_type);
                let mut after = before.clone();
                edit(&mut after);
                let change = classify(Some(&before), Some(&after), false);
                assert_eq!(
                    change,
                    Some(ChangeKind::MetadataOnly),
                    "{file_type:?} {what}"
                );
            }
        }
    }

    #[test]
    fn mtime_counts_except_for_directories() {
        for file_type in TYPES {
            let before = entry(file_type);
            let mut after = before.clone();
            after.mtime_ns += 1;
            let expected = (file_type != FileType::Directory).then_some(ChangeKind::MetadataOnly);
            assert_eq!(
                classify(Some(&before), Some(&after), false),
                expected,
                "{file_type:?}"
            );
        }
    }

    #[test]
    fn content_changes_are_modified() {
        let cases: [(FileType, Edit, bool); 5] = [
            (FileType::Regular, |_| {}, true),
            (FileType::Regular, |e| e.size = 11, false),
            (
                FileType::Symlink,
                |e| e.target = Some(b"elsewhere".to_vec()),
                false,
            ),
            (FileType::CharDevice, |e| e.rdev = Some(1), false),
            (FileType::BlockDevice, |e| e.rdev = Some(1), false),
        ];
        for (file_type, edit, data_changed) in cases {
            let before = entry(file_type);
            let mut after = before.clone();
            edit(&mut after);
            assert_eq!(
                classify(Some(&before), Some(&after), data_changed),
                Some(ChangeKind::Modified),
                "{file_type:?}"
            );
        }
    }

    #[test]
    fn replaced_by_equal_file_is_unchanged() {
        for file_type in TYPES {
            let before = entry(file_type);
            let mut after = before.clone();
            after.ino += 1;
            assert_eq!(
                classify(Some(&before), Some(&after), false),
                None,
                "{file_type:?}"
            );
            assert_eq!(
                classify(Some(&before), Some(&after), true),
                (file_type == FileType::Regular).then_some(ChangeKind::Modified),
                "{file_type:?} with other data"
            );
        }
    }

    #[test]
    fn atime_and_directory_size_ignored() {
        let before = entry(FileType::Directory);
        let mut after = before.clone();
        after.size = 4096;
        after.nlink = 3;
        assert_eq!(classify(Some(&before), Some(&after), false), None);
    }
}
