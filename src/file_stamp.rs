//! Noticing that a watched file changed: certificates, keys and the revocation list.
//!
//! Guards against missing a rotation: the stamp is read through symlinks, so the `..data` link
//! swap Kubernetes uses to update a Secret mount counts as a change, as does an in-place edit.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// What identifies a file's content without reading it: device, inode, size, modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    /// The stamp of an open file.
    pub fn of_file(file: &std::fs::File) -> Option<FileStamp> {
        let meta = file.metadata().ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// Whether both stamps name the same file (whatever its content now).
    pub fn same_file(&self, other: &FileStamp) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// The stamp of the file `path` leads to, or `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}
