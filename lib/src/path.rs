//! World-relative paths, kept apart from host paths by their type.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A path inside a world, relative to its root: raw bytes without a leading
/// `/`, components separated by `/`. The root itself is the empty path.
///
/// Names may hold any byte but `/` and NUL, including newlines and invalid
/// UTF-8, so the bytes are kept as they are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WorldPath(Vec<u8>);

impl WorldPath {
    /// Returns the root of a world.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Builds a path from bytes relative to a world's root; leading and
    /// repeated slashes are dropped.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut path = Self::root();
        for component in bytes.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            path = path.join(component);
        }
        path
    }

    /// Parses a path that a user wrote: `.` components and repeated slashes
    /// are dropped, and `..` is rejected because it could leave the world.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidPath> {
        let mut path = Self::root();
        for component in bytes.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => {
                    return Err(InvalidPath {
                        path: String::from_utf8_lossy(bytes).into_owned(),
                    })
                }
                name => path = path.join(name),
            }
        }
        Ok(path)
    }

    /// Returns the path of entry `name` in this directory.
    pub fn join(&self, name: &[u8]) -> Self {
        let mut bytes = self.0.clone();
        if !bytes.is_empty() {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(name);
        Self(bytes)
    }

    /// Returns the raw bytes, without a leading `/`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Returns the raw bytes of the directory that contains this path and
    /// of its last name, or `None` for the root.
    pub fn parent_and_name(&self) -> Option<(&[u8], &[u8])> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&self.0[..slash], &self.0[slash + 1..]),
            None => (&self.0[..0], &self.0[..]),
        })
    }

    /// Returns whether this is a world's root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns whether `self` is `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &WorldPath) -> bool {
        prefix.is_root()
            || (self.0.starts_with(&prefix.0)
                && (self.0.len() == prefix.0.len() || self.0[prefix.0.len()] == b'/'))
    }

    /// Returns the host path of this path under `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.is_root() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&self.0))
        }
    }

    /// Returns the path as absolute bytes inside the world, starting with
    /// `/`.
    pub fn to_absolute_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.0.len() + 1);
        bytes.push(b'/');
        bytes.extend_from_slice(&self.0);
        bytes
    }
}

/// A user-written world path that contains `..`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path `{path}` contains `..`; write it from the world's root, such as `/etc/motd`")]
pub struct InvalidPath {
    path: String,
}

impl fmt::Display for WorldPath {
    /// Shows the absolute path inside the world, with invalid UTF-8 replaced;
    /// use [`WorldPath::to_absolute_bytes`] where bytes matter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_join() {
        assert_eq!(
            WorldPath::from_bytes(b"/etc//nginx/"),
            WorldPath::root().join(b"etc").join(b"nginx")
        );
        assert_eq!(WorldPath::from_bytes(b"").to_absolute_bytes(), b"/");
        assert_eq!(WorldPath::from_bytes(b"a/b").to_string(), "/a/b");
    }

    #[test]
    fn prefix_matches_whole_components() {
        let path = WorldPath::from_bytes(b"etc/nginx/nginx.conf");
        assert!(path.starts_with(&WorldPath::from_bytes(b"etc")));
        assert!(path.starts_with(&WorldPath::from_bytes(b"etc/nginx/nginx.conf")));
        assert!(path.starts_with(&WorldPath::root()));
        assert!(!path.starts_with(&WorldPath::from_bytes(b"et")));
        assert!(!path.starts_with(&WorldPath::from_bytes(b"etc/nginx/nginx.conf.d")));
    }

    #[test]
    fn parse_user_paths() {
        assert_eq!(
            WorldPath::parse(b"./etc/./nginx/").unwrap(),
            WorldPath::from_bytes(b"etc/nginx")
        );
        assert_eq!(WorldPath::parse(b"/").unwrap(), WorldPath::root());
        assert_eq!(WorldPath::parse(b"").unwrap(), WorldPath::root());
        assert!(WorldPath::parse(b"/etc/../bin").is_err());
        assert!(WorldPath::parse(b"../../bin").is_err());
    }

    #[test]
    fn invalid_utf8_kept() {
        let path = WorldPath::from_bytes(b"bad\xff\nname");
        assert_eq!(path.as_bytes(), b"bad\xff\nname");
        assert_eq!(
            path.under(Path::new("/r")).as_os_str().as_bytes(),
            b"/r/bad\xff\nname"
        );
    }
}
