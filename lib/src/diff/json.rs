//! The JSON form of changes, as `world diff --json` prints it.
//!
//! The output is one object:
//!
//! ```json
//! {"world": "web", "parent": "base", "changes": [CHANGE, ...],
//!  "parent_changes": [CHANGE, ...]}
//! ```
//!
//! where `changes` are the world's changes since its base and
//! `parent_changes`, present only with `--parent`, are the parent's changes
//! since the same base. Each CHANGE is
//!
//! ```json
//! {"path": BYTES, "kind": "added|modified|deleted|type-changed|metadata-only",
//!  "before": ENTRY or null, "after": ENTRY or null}
//! ```
//!
//! An ENTRY is `{"type": "regular|directory|symlink|fifo|socket|char-device|block-device",
//! "size", "mode" (permission bits as a number), "uid", "gid", "mtime_ns",
//! "ino", "nlink", "target": BYTES or null, "rdev": number or null,
//! "xattrs": [{"name": BYTES, "value": BYTES}, ...]}`.
//!
//! BYTES is a JSON string when the bytes are valid UTF-8, and otherwise an
//! object `{"base64": "..."}` holding them in standard base64, so paths and
//! values are never mangled. Paths are absolute inside the world (`/etc`).
//! Readers must ignore fields they do not know.

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use super::model::{Change, Entry};

/// Bytes serialized as a string when they are UTF-8, or as base64.
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &base64(self.0))?;
                map.end()
            }
        }
    }
}

impl Serialize for Change {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = serializer.serialize_struct("Change", 4)?;
        object.serialize_field("path", &Bytes(&self.path.to_absolute_bytes()))?;
        object.serialize_field("kind", &self.kind)?;
        object.serialize_field("before", &self.before)?;
        object.serialize_field("after", &self.after)?;
        object.end()
    }
}

/// One extended attribute, for JSON.
#[derive(Serialize)]
struct Xattr<'a> {
    name: Bytes<'a>,
    value: Bytes<'a>,
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let xattrs: Vec<Xattr<'_>> = self
            .xattrs
            .iter()
            .map(|(name, value)| Xattr {
                name: Bytes(name),
                value: Bytes(value),
            })
            .collect();
        let mut object = serializer.serialize_struct("Entry", 11)?;
        object.serialize_field("type", &self.file_type)?;
        object.serialize_field("size", &self.size)?;
        object.serialize_field("mode", &self.mode)?;
        object.serialize_field("uid", &self.uid)?;
        object.serialize_field("gid", &self.gid)?;
        // Nanoseconds since 1970 exceed i64 only after the year 2262.
        object.serialize_field("mtime_ns", &(self.mtime_ns as i64))?;
        object.serialize_field("ino", &self.ino)?;
        object.serialize_field("nlink", &self.nlink)?;
        object.serialize_field("target", &self.target.as_deref().map(Bytes))?;
        object.serialize_field("rdev", &self.rdev)?;
        object.serialize_field("xattrs", &xattrs)?;
        object.end()
    }
}

/// Encodes `bytes` in standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let value = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= chunk.len() {
                text.push(ALPHABET[(value >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// Reads bytes written by [`Bytes`]: a string, or an object with standard
/// base64 under `base64`. Returns `None` for any other value.
pub fn read_bytes(value: &serde_json::Value) -> Option<Vec<u8>> {
    if let Some(text) = value.as_str() {
        return Some(text.as_bytes().to_vec());
    }
    let encoded = value.get("base64")?.as_str()?.trim_end_matches('=');
    let mut bytes = Vec::with_capacity(encoded.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for digit in encoded.bytes() {
        let value = match digit {
            b'A'..=b'Z' => digit - b'A',
            b'a'..=b'z' => digit - b'a' + 26,
            b'0'..=b'9' => digit - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = buffer << 6 | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(base64(bytes), expected);
            let object = serde_json::json!({ "base64": expected });
            assert_eq!(read_bytes(&object).as_deref(), Some(bytes));
        }
    }

    #[test]
    fn bytes_as_text_or_base64() {
        assert_eq!(
            serde_json::to_string(&Bytes(b"/etc/motd")).unwrap(),
            r#""/etc/motd""#
        );
        assert_eq!(serde_json::to_string(&Bytes(b"a\nb")).unwrap(), r#""a\nb""#);
        assert_eq!(
            serde_json::to_string(&Bytes(b"\xff")).unwrap(),
            r#"{"base64":"/w=="}"#
        );
    }
}
