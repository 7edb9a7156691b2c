//! World names.

use std::fmt;

/// The maximum length of a world name, in bytes.
pub const MAX_LEN: usize = 64;

/// A validated world name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
///
/// Names double as directory names in the pool, so the rule keeps out `/`,
/// `.`, `..`, leading dashes and anything a shell would need quoted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct WorldName(String);

/// The reason a string is not a valid world name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("world name is empty")]
    Empty,
    #[error("world name `{name}` is longer than {MAX_LEN} bytes")]
    TooLong { name: String },
    #[error("world name `{name}` must start with an ASCII letter or digit (a-z, A-Z, 0-9)")]
    BadFirst { name: String },
    #[error(
        "world name `{name}` contains {found:?}; use only ASCII letters, digits, `.`, `_` and `-`"
    )]
    BadChar { name: String, found: char },
}

impl WorldName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let Some(first) = name.chars().next() else {
            return Err(InvalidName::Empty);
        };
        if !first.is_ascii_alphanumeric() {
            return Err(InvalidName::BadFirst { name: name.into() });
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if let Some(found) = name.chars().find(|c| !allowed(*c)) {
            return Err(InvalidName::BadChar {
                name: name.into(),
                found,
            });
        }
        if name.len() > MAX_LEN {
            return Err(InvalidName::TooLong { name: name.into() });
        }
        Ok(Self(name.to_owned()))
    }

    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for WorldName {
    type Err = InvalidName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

impl fmt::Display for WorldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for WorldName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "A",
            "0",
            "web",
            "web-1.2_b",
            "9lives",
            &"x".repeat(MAX_LEN),
        ] {
            assert_eq!(WorldName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn invalid_names() {
        let cases: &[(&str, InvalidName)] = &[
            ("", InvalidName::Empty),
            (".", InvalidName::BadFirst { name: ".".into() }),
            ("..", InvalidName::BadFirst { name: "..".into() }),
            ("-rf", InvalidName::BadFirst { name: "-rf".into() }),
            ("_x", InvalidName::BadFirst { name: "_x".into() }),
            (
                "a/b",
                InvalidName::BadChar {
                    name: "a/b".into(),
                    found: '/',
                },
            ),
            (
                "a b",
                InvalidName::BadChar {
                    name: "a b".into(),
                    found: ' ',
                },
            ),
            (
                "café",
                InvalidName::BadChar {
                    name: "café".into(),
                    found: 'é',
                },
            ),
            (
                "a\nb",
                InvalidName::BadChar {
                    name: "a\nb".into(),
                    found: '\n',
                },
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(
                WorldName::new(name).unwrap_err(),
                *expected,
                "name {name:?}"
            );
        }
    }

    #[test]
    fn too_long_name() {
        let name = "x".repeat(MAX_LEN + 1);
        assert_eq!(
            WorldName::new(&name).unwrap_err(),
            InvalidName::TooLong { name }
        );
    }
}
