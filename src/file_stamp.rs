//! Noticing that a watched file changed: certificates, keys, the revocation list, MCP tool pins.
//!
//! Guards against missing a rotation: the stamp is read through symlinks, so the `..data` link
//! swap Kubernetes uses to update a Secret mount counts as a change, as does an in-place edit.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};

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

/// What a check of a watched file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListUpdate {
    /// The file is as it was.
    Unchanged,
    /// The file was re-read; this many entries are in force.
    Loaded(usize),
    /// The file changed but could not be used; the content in force stays.
    Refused(String),
}

/// A file's parsed content, re-read when the file changes; a change that cannot be read or
/// parsed is refused and the content in force kept.
#[derive(Debug)]
pub struct WatchedFile<T> {
    path: PathBuf,
    value: ArcSwap<T>,
    seen: Mutex<Option<FileStamp>>,
    read: fn(&Path) -> Result<T, String>,
    entries: fn(&T) -> usize,
}

impl<T> WatchedFile<T> {
    /// Reads `path` with `read`; `entries` counts what a reload put in force.
    pub fn load(
        path: &Path,
        read: fn(&Path) -> Result<T, String>,
        entries: fn(&T) -> usize,
    ) -> Result<WatchedFile<T>, String> {
        let seen = FileStamp::of(path);
        let value = read(path)?;
        Ok(WatchedFile {
            path: path.to_owned(),
            value: ArcSwap::from_pointee(value),
            seen: Mutex::new(seen),
            read,
            entries,
        })
    }

    /// The content in force.
    pub fn current(&self) -> Guard<Arc<T>> {
        self.value.load()
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts `value` in force after its owner wrote it to the file, so that the next check does
    /// not read back what it wrote.
    pub fn store_written(&self, value: T) {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = FileStamp::of(&self.path);
        }
        self.value.store(Arc::new(value));
    }

    /// Re-reads the file if it changed since it was last read.
    pub fn check(&self) -> ListUpdate {
        let Ok(mut seen) = self.seen.lock() else {
            return ListUpdate::Unchanged;
        };
        let now = FileStamp::of(&self.path);
        if now == *seen {
            return ListUpdate::Unchanged;
        }
        *seen = now;
        match (self.read)(&self.path) {
            Ok(value) => {
                let entries = (self.entries)(&value);
                self.value.store(Arc::new(value));
                ListUpdate::Loaded(entries)
            }
            Err(reason) => ListUpdate::Refused(reason),
        }
    }
}
