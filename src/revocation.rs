//! Revocation: token ids (`jti`) and subjects (`sub`) refused although their tokens verify.
//!
//! Guards against a leaked token or a compromised account staying usable until expiry: the
//! operator lists them in `[auth] revocation_file`, which is re-read when it changes (and on
//! SIGHUP); the list is checked on every request after the signature, cached or not, so a
//! revocation applies to cached tokens at once. A file that cannot be read or parsed is refused
//! and the list in force kept.
//!
//! The file holds one entry per line, `jti <token id>` or `sub <subject>`; blank lines and lines
//! starting with `#` are ignored.

use std::collections::HashSet;
use std::path::Path;

use crate::file_stamp::WatchedFile;

use crate::principal::Principal;

/// The revoked token ids and subjects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevokedList {
    token_ids: HashSet<Box<str>>,
    subjects: HashSet<Box<str>>,
}

impl RevokedList {
    /// Parses the file format; the error names the first bad line (never its content).
    pub fn parse(text: &str) -> Result<RevokedList, String> {
        let mut list = RevokedList::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kind, value) = line
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))
                .unwrap_or((line, ""));
            let set = match kind {
                "jti" => &mut list.token_ids,
                "sub" => &mut list.subjects,
                _ => {
                    return Err(format!(
                        "line {}: expected `jti <token id>` or `sub <subject>`",
                        number + 1
                    ));
                }
            };
            if value.is_empty() {
                return Err(format!("line {}: {kind} without a value", number + 1));
            }
            set.insert(value.into());
        }
        Ok(list)
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<RevokedList, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Entries in the list.
    pub fn len(&self) -> usize {
        self.token_ids.len() + self.subjects.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn refuses(&self, principal: &Principal) -> bool {
        principal
            .token_id
            .as_deref()
            .is_some_and(|id| self.token_ids.contains(id))
            || principal
                .subject
                .as_deref()
                .is_some_and(|sub| self.subjects.contains(sub))
    }
}

pub use crate::file_stamp::ListUpdate;

/// The revocation list in force, following its file.
#[derive(Debug)]
pub struct Revocations(WatchedFile<RevokedList>);

impl Revocations {
    /// Loads the list from `path`.
    pub fn load(path: &Path) -> Result<Revocations, String> {
        WatchedFile::load(path, RevokedList::read, RevokedList::len).map(Revocations)
    }

    /// Whether `principal`'s token id or subject is revoked.
    pub fn refuses(&self, principal: &Principal) -> bool {
        let list = self.0.current();
        !list.is_empty() && list.refuses(principal)
    }

    /// Re-reads the file if it changed since it was last read.
    pub fn check(&self) -> ListUpdate {
        self.0.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format() {
        let list =
            RevokedList::parse("# incident 42\n\njti abc-123\nsub alice\n  sub bob  \n").unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.token_ids.contains("abc-123"));
        assert!(list.subjects.contains("bob"));
        assert_eq!(
            RevokedList::parse("jti a\nuser alice\n").unwrap_err(),
            "line 2: expected `jti <token id>` or `sub <subject>`"
        );
        assert_eq!(
            RevokedList::parse("sub\n").unwrap_err(),
            "line 1: sub without a value"
        );
    }
}
