//! The audit writer: a bounded queue in front of one thread that serializes, chains and writes.
//!
//! Guards against audit I/O slowing requests and against records lost without a trace: a request
//! only hands its record to the queue; when the queue is full it either waits for room
//! (`on_overflow = "block"`) or drops the record, counting it in a metric and in the next written
//! record's `dropped_before` (`"drop"`). The file can be reopened at the same path for log
//! rotation, and with `hash_chain` every line is chained to the one before it ([`super::chain`]).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Stdout, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use super::AuditRecord;
use super::chain::{self, ChainState, Recovered};
use crate::config::{AuditOutput, AuditSettings, OnOverflow};
use crate::metrics::Metrics;

/// How often the writer drains the queue: records reach the output within about this time.
pub const WRITER_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Shortest time between two operational warnings about dropped records.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Size of the writer's output buffer.
const OUTPUT_BUFFER: usize = 64 * 1024;

enum Message {
    Record(Box<AuditRecord>),
    Flush(mpsc::Sender<()>),
}

/// What the senders and the writer share besides the queue.
#[derive(Debug, Default)]
struct Shared {
    /// Records handed to the queue; minus the writer's count of records taken, the queue depth.
    enqueued: AtomicU64,
    /// Records dropped since the writer last reported drops in a written record.
    unreported_drops: AtomicU64,
    /// Set by [`AuditSink::reopen`]; the writer reopens its file before the next record.
    reopen: AtomicBool,
}

/// The sending side of the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: SyncSender<Message>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    on_overflow: OnOverflow,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("on_overflow", &self.on_overflow)
            .finish_non_exhaustive()
    }
}

impl AuditSink {
    /// Opens the output (a file is created with mode 0640 and appended to), recovers the hash
    /// chain from the file's last line when `hash_chain` is on, and starts the writer thread.
    pub fn start(settings: &AuditSettings, metrics: Arc<Metrics>) -> io::Result<AuditSink> {
        let hash_chain = settings.hash_chain;
        let mut chain = ChainState::default();
        let out = match &settings.output {
            AuditOutput::Stdout => {
                Output::Stdout(BufWriter::with_capacity(OUTPUT_BUFFER, io::stdout()))
            }
            AuditOutput::File(path) => {
                let mut file = open_file(path, hash_chain)?;
                if hash_chain {
                    continue_chain(&mut file, path, &mut chain)?;
                }
                Output::File {
                    path: path.clone(),
                    out: BufWriter::with_capacity(OUTPUT_BUFFER, file),
                }
            }
        };
        let (tx, rx) = mpsc::sync_channel(settings.queue_capacity);
        let sink = AuditSink {
            tx,
            shared: Arc::new(Shared::default()),
            metrics,
            on_overflow: settings.on_overflow,
        };
        let writer = Writer::new(out, hash_chain.then_some(chain), &sink);
        std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || writer.run(rx))?;
        Ok(sink)
    }

    /// Queues a record. When the queue is full, waits for room (`on_overflow = "block"`) or
    /// drops the record, counting it (`"drop"`).
    pub fn record(&self, record: AuditRecord) {
        self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(message)) => match self.on_overflow {
                OnOverflow::Block => {
                    self.metrics.audit_queue_full.inc();
                    if self.tx.send(message).is_err() {
                        self.lost();
                    }
                }
                OnOverflow::Drop => {
                    self.shared.enqueued.fetch_sub(1, Ordering::Relaxed);
                    self.shared.unreported_drops.fetch_add(1, Ordering::Relaxed);
                    self.metrics.audit_dropped.inc();
                }
            },
            Err(TrySendError::Disconnected(_)) => {
                self.lost();
                tracing::error!("audit writer has stopped; record lost");
            }
        }
    }

    fn lost(&self) {
        self.shared.enqueued.fetch_sub(1, Ordering::Relaxed);
        self.metrics.audit_write_errors.inc();
    }

    /// Asks the writer to close the audit file and open it again at the same path, for log
    /// rotation that moves the file away and then signals (not copy-and-truncate). Returns at
    /// once; every record queued after this call goes to the new file. With `hash_chain`, the
    /// chain continues from the previous file into a new empty one. Does nothing for stdout.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// Waits until every record queued before this call is written, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = mpsc::channel();
        if self.tx.send(Message::Flush(ack_tx)).is_err() {
            return false;
        }
        ack_rx.recv_timeout(timeout).is_ok()
    }
}

fn open_file(path: &Path, read: bool) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(read)
        .mode(0o640)
        .open(path)
}

/// Sets `chain` from the last line of `file`; a file that holds no line leaves it as it is, so
/// the chain runs on into a fresh file after rotation. Ends a line cut short, so that the next
/// record starts on a line of its own.
fn continue_chain(file: &mut File, path: &Path, chain: &mut ChainState) -> io::Result<()> {
    let (recovered, tail) = chain::recover(file)?;
    match recovered {
        Recovered::Empty => {}
        Recovered::Chained(state) => *chain = state,
        Recovered::Unchained => tracing::warn!(
            path = %path.display(),
            seq = chain.seq + 1,
            "the audit file's last line is not a chained record; the chain continues without it"
        ),
    }
    if tail.partial {
        tracing::warn!(path = %path.display(), "the audit file ends in a cut-short line; ending it");
        file.write_all(b"\n")?;
    }
    Ok(())
}

enum Output {
    Stdout(BufWriter<Stdout>),
    File { path: PathBuf, out: BufWriter<File> },
}

impl Output {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::File { out, .. } => out,
        }
    }
}

/// A hash as the hex text it is written as.
struct Hex<'a>(&'a [u8; 64]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(self.0).map_err(serde::ser::Error::custom)?)
    }
}

/// One written line: the chain fields first, so a reader sees them before the record.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_hash: Option<Hex<'a>>,
    #[serde(flatten)]
    record: &'a AuditRecord,
    /// Records dropped (queue full) since the last written record.
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_before: Option<u64>,
}

struct Writer {
    out: Output,
    /// The line being written, reused so that writing allocates nothing per record.
    line: Vec<u8>,
    chain: Option<ChainState>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    failing: bool,
    /// Records taken from the queue.
    taken: u64,
    drops_since_warning: u64,
    last_drop_warning: Option<Instant>,
}

impl Writer {
    fn new(out: Output, chain: Option<ChainState>, sink: &AuditSink) -> Writer {
        Writer {
            out,
            line: Vec::with_capacity(1024),
            chain,
            shared: sink.shared.clone(),
            metrics: sink.metrics.clone(),
            failing: false,
            taken: 0,
            drops_since_warning: 0,
            last_drop_warning: None,
        }
    }

    fn run(mut self, rx: Receiver<Message>) {
        let mut acks = Vec::new();
        loop {
            self.reopen_if_asked();
            let depth = self
                .shared
                .enqueued
                .load(Ordering::Relaxed)
                .saturating_sub(self.taken);
            self.metrics
                .audit_queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
            // Drain without parking: a writer parked in `recv` must be woken by every record, a
            // context switch per request on the request path. Polling batches many records a wake.
            let mut wrote = false;
            let disconnected = loop {
                match rx.try_recv() {
                    Ok(Message::Record(record)) => {
                        self.taken += 1;
                        wrote = true;
                        // Checked per record: a record queued after `reopen` returned must not
                        // reach the old file.
                        self.reopen_if_asked();
                        if let Err(e) = self.write_record(&record) {
                            self.failed(&e, "cannot write audit record");
                        }
                    }
                    Ok(Message::Flush(ack)) => acks.push(ack),
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            if wrote || !acks.is_empty() {
                match self.out.writer().flush() {
                    Ok(()) => self.failing = false,
                    Err(e) => self.failed(&e, "cannot flush audit log"),
                }
            }
            if !acks.is_empty() {
                let unreported = self.shared.unreported_drops.load(Ordering::Relaxed);
                if unreported > 0 {
                    tracing::warn!(
                        dropped = unreported,
                        "audit records were dropped after the last written record"
                    );
                }
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            self.warn_of_drops();
            if disconnected {
                return;
            }
            std::thread::sleep(WRITER_POLL_INTERVAL);
        }
    }

    /// Serializes `record` into the reused line buffer, chains it, and writes it.
    fn write_record(&mut self, record: &AuditRecord) -> io::Result<()> {
        let dropped = self.shared.unreported_drops.swap(0, Ordering::Relaxed);
        self.drops_since_warning += dropped;
        let dropped_before = (dropped > 0).then_some(dropped);
        self.line.clear();
        match &mut self.chain {
            Some(chain) => {
                let seq = chain.seq + 1;
                serde_json::to_writer(
                    &mut self.line,
                    &Line {
                        seq: Some(seq),
                        prev_hash: Some(Hex(&chain.last_hash)),
                        record,
                        dropped_before,
                    },
                )?;
                chain.advance(seq, &self.line);
            }
            None => serde_json::to_writer(
                &mut self.line,
                &Line {
                    seq: None,
                    prev_hash: None,
                    record,
                    dropped_before,
                },
            )?,
        }
        self.line.push(b'\n');
        self.out.writer().write_all(&self.line)
    }

    fn failed(&mut self, error: &io::Error, what: &'static str) {
        self.metrics.audit_write_errors.inc();
        if !self.failing {
            tracing::error!(error = %error, "{what}");
        }
        self.failing = true;
    }

    fn reopen_if_asked(&mut self) {
        if !self.shared.reopen.load(Ordering::Acquire) {
            return;
        }
        self.shared.reopen.store(false, Ordering::Release);
        let Output::File { path, out } = &mut self.out else {
            return;
        };
        if let Err(e) = out.flush() {
            tracing::error!(error = %e, "cannot flush the audit log before reopening it");
        }
        let reopened = open_file(path, self.chain.is_some()).and_then(|mut file| {
            if let Some(chain) = &mut self.chain {
                continue_chain(&mut file, path, chain)?;
            }
            Ok(file)
        });
        match reopened {
            Ok(file) => {
                *out = BufWriter::with_capacity(OUTPUT_BUFFER, file);
                tracing::info!(path = %path.display(), "audit log reopened");
            }
            Err(e) => {
                self.metrics.audit_write_errors.inc();
                tracing::error!(
                    error = %e,
                    path = %path.display(),
                    "cannot reopen the audit log; still writing to the file open before"
                );
            }
        }
    }

    fn warn_of_drops(&mut self) {
        if self.drops_since_warning == 0
            || self
                .last_drop_warning
                .is_some_and(|at| at.elapsed() < DROP_WARNING_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            dropped = self.drops_since_warning,
            "audit queue full: records dropped (audit.on_overflow = \"drop\"); see dropped_before"
        );
        self.drops_since_warning = 0;
        self.last_drop_warning = Some(Instant::now());
    }
}
