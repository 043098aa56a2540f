//! The audit log's hash chain: each line carries `seq` and the SHA-256 of the line before it.
//!
//! Guards against a log quietly rewritten after the fact: editing, deleting or reordering a line
//! breaks the chain at the next line, which [`verify`] (`portcullis audit-verify`) names by line
//! number. The chain runs across restarts and rotated files: a writer that opens a file recovers
//! the last `seq` and hash from the file's final line, reading only its tail; a fresh file after
//! rotation continues from the previous file's last line. The newest line can still be changed
//! without a trace unless its hash is kept elsewhere, which is why the summary prints it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record of a chain: 64 zeros.
pub const GENESIS_HASH: [u8; 64] = [b'0'; 64];

/// The first bytes read from the end of a file when looking for its last line.
const TAIL_BLOCK: u64 = 8 * 1024;

/// Where the chain stands: the `seq` and the hash of the last line written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    /// `seq` of the last line; 0 before the first.
    pub seq: u64,
    /// Lowercase hex SHA-256 of the last line (without its newline); genesis before the first.
    pub last_hash: [u8; 64],
}

impl Default for ChainState {
    fn default() -> Self {
        ChainState {
            seq: 0,
            last_hash: GENESIS_HASH,
        }
    }
}

impl ChainState {
    /// Moves the chain past `line` (its bytes without the newline), which carries `seq`.
    pub fn advance(&mut self, seq: u64, line: &[u8]) {
        self.seq = seq;
        self.last_hash = hex_sha256(line);
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 64];
    for (i, byte) in digest.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
    out
}

/// The chain fields of a line; every other field is ignored.
#[derive(Debug, Deserialize)]
struct ChainFields {
    seq: Option<u64>,
    prev_hash: Option<String>,
}

/// What the end of an existing audit file says about the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovered {
    /// The file holds no complete line: the chain continues from where the writer stands.
    Empty,
    /// The last complete line is a chained record.
    Chained(ChainState),
    /// The last complete line carries no `seq` (written without `hash_chain`, or not a record).
    Unchained,
}

/// The end of a file: its last complete line, and whether a partial line follows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Tail {
    /// The last line that ends in a newline, without the newline.
    pub last_line: Option<Vec<u8>>,
    /// Whether the file ends in bytes after the last newline (a write cut short).
    pub partial: bool,
}

/// Reads only as much of the end of `file` as it takes to find its last complete line.
pub fn read_tail(file: &mut File) -> io::Result<Tail> {
    let len = file.metadata()?.len();
    let mut pos = len;
    let mut block = TAIL_BLOCK;
    // `tail` holds the file's bytes from `pos` to its end.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let start = pos.saturating_sub(block);
        let mut chunk = vec![0u8; usize::try_from(pos - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        pos = start;
        let partial = tail.last().is_some_and(|&b| b != b'\n');
        let Some(end) = memchr::memrchr(b'\n', &tail) else {
            if pos == 0 {
                return Ok(Tail {
                    last_line: None,
                    partial,
                });
            }
            block = block.saturating_mul(2);
            continue;
        };
        match memchr::memrchr(b'\n', &tail[..end]) {
            Some(before) => {
                return Ok(Tail {
                    last_line: Some(tail[before + 1..end].to_vec()),
                    partial,
                });
            }
            None if pos == 0 => {
                return Ok(Tail {
                    last_line: Some(tail[..end].to_vec()),
                    partial,
                });
            }
            None => block = block.saturating_mul(2),
        }
    }
}

/// Reads where the chain stands from the last complete line of `file`.
pub fn recover(file: &mut File) -> io::Result<(Recovered, Tail)> {
    let tail = read_tail(file)?;
    let recovered = match &tail.last_line {
        None => Recovered::Empty,
        Some(line) => match serde_json::from_slice::<ChainFields>(line) {
            Ok(ChainFields { seq: Some(seq), .. }) => Recovered::Chained(ChainState {
                seq,
                last_hash: hex_sha256(line),
            }),
            _ => Recovered::Unchained,
        },
    };
    Ok((recovered, tail))
}

/// An intact chain: what was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records checked.
    pub records: u64,
    /// `seq` of the first record, when there was one.
    pub first_seq: Option<u64>,
    /// `seq` of the last record, when there was one.
    pub last_seq: Option<u64>,
    /// Hex SHA-256 of the last line: keep it elsewhere to make the newest record tamper-evident.
    pub last_hash: Option<String>,
}

/// Why a chain could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file could not be read.
    #[error("{file}: cannot read ({source})")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: io::Error,
    },
    /// The chain is broken at a line.
    #[error("{file}: line {line}: {problem}")]
    Broken {
        /// The file holding the line.
        file: String,
        /// 1-based line number within that file.
        line: u64,
        /// What is wrong; never a record's contents.
        problem: String,
    },
}

/// The line before the one being checked.
struct Previous {
    seq: u64,
    hash: [u8; 64],
    file: usize,
    line: u64,
}

/// Checks the chain across `files`, oldest first, and stops at the first broken line.
///
/// Each line must be a JSON record with `seq` one more than the line before and `prev_hash` equal
/// to the SHA-256 of the line before (the genesis value for `seq` 1). The first record may start
/// past 1 when older files are not given; its `prev_hash` cannot be checked then.
pub fn verify(files: &[PathBuf]) -> Result<Summary, VerifyError> {
    let mut previous: Option<Previous> = None;
    let mut records = 0u64;
    let mut first_seq = None;
    let mut line = Vec::with_capacity(1024);
    for (index, path) in files.iter().enumerate() {
        let name = path.display().to_string();
        let read_error = |source| VerifyError::Read {
            file: name.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(read_error)?);
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(read_error)? == 0 {
                break;
            }
            number += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let broken = |problem: String| VerifyError::Broken {
                file: name.clone(),
                line: number,
                problem,
            };
            let fields = match serde_json::from_slice::<ChainFields>(&line) {
                Ok(fields) => fields,
                Err(_) if line.is_empty() => return Err(broken("empty line".into())),
                Err(_) => return Err(broken("not a JSON audit record".into())),
            };
            let (Some(seq), Some(prev_hash)) = (fields.seq, fields.prev_hash) else {
                return Err(broken(
                    "no seq or prev_hash (not written with audit.hash_chain = true)".into(),
                ));
            };
            match &previous {
                None if seq == 0 => return Err(broken("seq 0: the chain starts at 1".into())),
                None if seq == 1 && prev_hash.as_bytes() != GENESIS_HASH => {
                    return Err(broken(
                        "the first record (seq 1) does not carry the genesis prev_hash".into(),
                    ));
                }
                None => first_seq = Some(seq),
                Some(prev) => {
                    if seq > prev.seq.saturating_add(1) {
                        return Err(broken(format!(
                            "seq jumps from {} to {seq} (a line was deleted or moved)",
                            prev.seq
                        )));
                    }
                    if seq <= prev.seq {
                        return Err(broken(format!(
                            "seq goes from {} back to {seq} (lines reordered or repeated)",
                            prev.seq
                        )));
                    }
                    if prev_hash.as_bytes() != prev.hash {
                        let which = if prev.file == index {
                            format!("line {}", prev.line)
                        } else {
                            format!(
                                "the last line ({}) of {}",
                                prev.line,
                                files[prev.file].display()
                            )
                        };
                        return Err(broken(format!(
                            "prev_hash does not match {which} (edited, deleted or reordered)"
                        )));
                    }
                }
            }
            records += 1;
            previous = Some(Previous {
                seq,
                hash: hex_sha256(&line),
                file: index,
                line: number,
            });
        }
    }
    Ok(Summary {
        records,
        first_seq,
        last_seq: previous.as_ref().map(|p| p.seq),
        last_hash: previous.map(|p| String::from_utf8_lossy(&p.hash).into_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail_of(bytes: &[u8]) -> Tail {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        read_tail(&mut file).unwrap()
    }

    #[test]
    fn tail_finds_the_last_complete_line() {
        assert_eq!(
            tail_of(b""),
            Tail {
                last_line: None,
                partial: false
            }
        );
        assert_eq!(tail_of(b"a\nbc\n").last_line.as_deref(), Some(&b"bc"[..]));
        assert_eq!(tail_of(b"only\n").last_line.as_deref(), Some(&b"only"[..]));
        let cut = tail_of(b"a\nbc\nhalf");
        assert_eq!(cut.last_line.as_deref(), Some(&b"bc"[..]));
        assert!(cut.partial);
        assert_eq!(tail_of(b"half").last_line, None);
        // A last line longer than the first block read.
        let long = vec![b'x'; 3 * TAIL_BLOCK as usize];
        let mut file = b"first\n".to_vec();
        file.extend_from_slice(&long);
        file.push(b'\n');
        assert_eq!(tail_of(&file).last_line, Some(long));
    }

    #[test]
    fn hex_is_lowercase_sha256() {
        assert_eq!(
            &hex_sha256(b"abc")[..],
            b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
