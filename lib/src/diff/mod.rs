//! Diffs: the changes a world made since its base.
//!
//! [`model`] contains the change model and its rules, [`engine`] the two ways
//! of computing changes, and [`json`] the documented JSON form. The store
//! entry points are [`crate::Store::diff`] and [`crate::Store::diff_parent`].
//!
//! # Limitations
//!
//! - A regular file over 1 MiB whose data was rewritten with the same bytes
//!   counts as modified: its blocks differ from the base's, and larger
//!   files are not read to find out.
//! - Content decides, not identity: a file replaced by another inode with
//!   the same content and attributes (an editor's save, `ln -f` between
//!   equal files, a merge's clone) is no change. A fifo or socket has no
//!   content, so replacing one by an equal one is no change either.

pub mod engine;
pub mod json;
pub mod model;

pub use model::{Change, ChangeKind, Entry, FileType};

use crate::path::WorldPath;

/// How to find the changed paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Visit only what changed since the base, found in the btrfs tree.
    #[default]
    Fast,
    /// Compare every path of both trees; slower, for cross-checks.
    Walk,
}

/// Options of a diff.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    pub method: Method,
    /// Keep only changes at or below these paths; all when empty.
    pub filters: Vec<WorldPath>,
}

/// Keeps the changes that match one of `filters`, or all when it is empty.
pub fn filter(changes: Vec<Change>, filters: &[WorldPath]) -> Vec<Change> {
    if filters.is_empty() {
        return changes;
    }
    changes
        .into_iter()
        .filter(|change| filters.iter().any(|prefix| change.path.starts_with(prefix)))
        .collect()
}
