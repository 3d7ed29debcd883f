//! [`RemotePath`]: a path below a partner's root that cannot leave it.

use std::fmt;

use crate::error::{Error, Result};

/// Longest accepted path, in bytes; servers commonly cap at 4 KiB.
const MAX_LEN: usize = 4096;

/// A normalised, relative path confined to a partner's root.
///
/// Components are separated by `/`; empty and `.` components are dropped. Refused: `..`,
/// absolute paths (leading `/`, `\`, or a drive letter such as `C:`), backslashes, NUL and
/// other control characters (C0, DEL and C1), and paths longer than 4 KiB. The empty path is
/// the root itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RemotePath {
    parts: Vec<String>,
}

fn invalid(path: &str, reason: &'static str) -> Error {
    Error::InvalidPath {
        path: path.to_owned(),
        reason,
    }
}

/// Checks one path component (a single file or directory name).
fn check_name(raw: &str, name: &str) -> Result<()> {
    if name == ".." {
        return Err(invalid(raw, "`..` is not allowed"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(invalid(raw, "control characters are not allowed"));
    }
    if name.contains('\\') {
        return Err(invalid(raw, "backslashes are not allowed"));
    }
    Ok(())
}

impl RemotePath {
    /// The partner root.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses and normalises a relative path; see the type's documentation for what is refused.
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.len() > MAX_LEN {
            return Err(invalid(raw, "path is too long"));
        }
        if raw.starts_with('/') || raw.starts_with('\\') {
            return Err(invalid(raw, "absolute paths are not allowed"));
        }
        let b = raw.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return Err(invalid(raw, "drive-letter paths are not allowed"));
        }
        let mut parts = Vec::new();
        for name in raw.split('/') {
            if name.is_empty() || name == "." {
                continue;
            }
            check_name(raw, name)?;
            parts.push(name.to_owned());
        }
        Ok(Self { parts })
    }

    /// Appends one name (which must not contain `/`); used for names a server lists.
    pub fn join(&self, name: &str) -> Result<Self> {
        if name.is_empty() || name == "." {
            return Err(invalid(name, "empty name"));
        }
        if name.contains('/') {
            return Err(invalid(name, "a name cannot contain `/`"));
        }
        check_name(name, name)?;
        let mut parts = self.parts.clone();
        parts.push(name.to_owned());
        let joined = Self { parts };
        if joined.as_string().len() > MAX_LEN {
            return Err(invalid(name, "path is too long"));
        }
        Ok(joined)
    }

    /// Appends a relative path.
    pub fn join_path(&self, other: &RemotePath) -> Self {
        let mut parts = self.parts.clone();
        parts.extend(other.parts.iter().cloned());
        Self { parts }
    }

    /// Whether this is the partner root.
    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The last component, if any.
    pub fn file_name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    /// The containing directory (the root's parent is `None`).
    pub fn parent(&self) -> Option<Self> {
        if self.parts.is_empty() {
            return None;
        }
        Some(Self {
            parts: self.parts[..self.parts.len() - 1].to_vec(),
        })
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(String::as_str)
    }

    /// The path as `a/b/c` (the root is the empty string).
    pub fn as_string(&self) -> String {
        self.parts.join("/")
    }

    /// This path placed below an absolute server directory `base` (such as `/` or
    /// `/home/partner/in`): what is sent to FTP and SFTP servers.
    pub fn under(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        if self.parts.is_empty() {
            return if base.is_empty() {
                "/".into()
            } else {
                base.into()
            };
        }
        format!("{base}/{}", self.as_string())
    }

    /// A sibling path with the file name wrapped in `prefix`/`suffix` (temporary upload names).
    pub fn with_wrapped_name(&self, prefix: &str, suffix: &str) -> Result<Self> {
        let name = self
            .file_name()
            .ok_or_else(|| invalid("", "the root has no file name"))?;
        self.parent()
            .unwrap_or_default()
            .join(&format!("{prefix}{name}{suffix}"))
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.as_string())
    }
}

impl fmt::Debug for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemotePath({:?})", self.as_string())
    }
}

impl std::str::FromStr for RemotePath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(RemotePath::parse("a//b/./c/").unwrap().as_string(), "a/b/c");
        assert!(RemotePath::parse("").unwrap().is_root());
        assert!(RemotePath::parse("./.").unwrap().is_root());
        assert_eq!(
            RemotePath::parse("in/x.csv").unwrap().under("/"),
            "/in/x.csv"
        );
        assert_eq!(RemotePath::parse("x").unwrap().under("/srv/p/"), "/srv/p/x");
        assert_eq!(RemotePath::root().under("/srv/p"), "/srv/p");
        assert_eq!(RemotePath::root().under("/"), "/");
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "..",
            "a/../b",
            "/etc/passwd",
            "\\x",
            "a\\..\\b",
            "C:/x",
            "a\0b",
            "a\nb",
            "a\rb",
            "a\u{7f}",
            "a\u{85}b",
            "x/..",
        ] {
            assert!(RemotePath::parse(bad).is_err(), "{bad:?} accepted");
        }
        let root = RemotePath::root();
        for bad in ["..", "a/b", "", ".", "x\n"] {
            assert!(root.join(bad).is_err(), "{bad:?} joined");
        }
        assert!(RemotePath::parse(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn wraps_names() {
        let p = RemotePath::parse("out/inv.xml").unwrap();
        assert_eq!(
            p.with_wrapped_name(".", ".part").unwrap().as_string(),
            "out/.inv.xml.part"
        );
        assert!(RemotePath::root().with_wrapped_name("", ".tmp").is_err());
    }
}
