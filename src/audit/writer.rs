//! The audit writer: a bounded queue in front of one thread that serializes, chains and writes.
//!
//! Guards against audit I/O slowing requests and against records lost without a trace: a request
//! only hands its record to the queue; when the queue is full it either waits for room
//! (`on_overflow = "block"`) or drops the record, counting it in a metric and in the next written
//! record's `dropped_before` (`"drop"`). The file can be reopened at the same path for log
//! rotation, and with `hash_chain` every line is chained to the one before it ([`super::chain`]).
//!
//! Guards against a full disk or a deleted file losing records: a line that cannot be written
//! is kept and written first once the output works again (`on_failure = "fail_closed"`, while
//! new requests are refused), or counted as lost in the next written record's `dropped_before`
//! without breaking the hash chain (`"fail_open"`). A file deleted or replaced at its path is
//! noticed within [`PATH_CHECK_INTERVAL`] and reopened, carrying over whatever was still
//! buffered for it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Stdout, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use super::chain::{self, ChainState, Recovered};
use super::{AuditRecord, line};
use crate::config::{AuditOutput, AuditSettings, OnFailure, OnOverflow};
use crate::file_stamp::FileStamp;
use crate::metrics::Metrics;

/// How often a busy writer drains the queue: records reach the output within about this time. A
/// writer that found the queue empty parks instead, and the next record wakes it.
pub const WRITER_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Shortest time between two operational warnings about dropped records.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Size of the writer's output buffer.
const OUTPUT_BUFFER: usize = 64 * 1024;
/// How often the writer checks that its file is still the one at the configured path.
pub const PATH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

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
    /// Set while the output cannot be written.
    failing: AtomicBool,
}

/// The sending side of the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: SyncSender<Message>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    on_overflow: OnOverflow,
    on_failure: OnFailure,
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
            on_failure: settings.on_failure,
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

    /// Queues a record without ever waiting: a full queue drops and counts it. For the records
    /// of requests refused because the log cannot be written, which must not wait on it.
    pub fn record_or_drop(&self, record: AuditRecord) {
        self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Message::Record(Box::new(record))).is_err() {
            self.shared.enqueued.fetch_sub(1, Ordering::Relaxed);
            self.shared.unreported_drops.fetch_add(1, Ordering::Relaxed);
            self.metrics.audit_dropped.inc();
        }
    }

    /// Whether the output cannot be written now.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Relaxed)
    }

    /// Whether `on_failure` is `fail_closed` (the pipeline then checks writability per request).
    pub fn fails_closed(&self) -> bool {
        self.on_failure == OnFailure::FailClosed
    }

    /// Whether requests must be refused now: the output is failing and `on_failure` is
    /// `fail_closed`.
    pub fn refuses_requests(&self) -> bool {
        self.on_failure == OnFailure::FailClosed && self.is_failing()
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

struct Writer {
    out: Output,
    /// The date of the last record's second, reused by the next records of that second.
    timestamps: line::Timestamps,
    /// The line being written, reused so that writing allocates nothing per record.
    line: Vec<u8>,
    chain: Option<ChainState>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    failing: bool,
    on_failure: OnFailure,
    /// A chained line that could not be written (fail_closed): written first on recovery.
    stuck: Option<Vec<u8>>,
    /// The file open now, to notice it being deleted or replaced at its path.
    open_stamp: Option<FileStamp>,
    last_path_check: Instant,
    /// Records taken from the queue.
    taken: u64,
    drops_since_warning: u64,
    last_drop_warning: Option<Instant>,
}

impl Writer {
    fn new(out: Output, chain: Option<ChainState>, sink: &AuditSink) -> Writer {
        Writer {
            out,
            timestamps: line::Timestamps::default(),
            line: Vec::with_capacity(1024),
            chain,
            shared: sink.shared.clone(),
            metrics: sink.metrics.clone(),
            failing: false,
            on_failure: sink.on_failure,
            stuck: None,
            open_stamp: None,
            last_path_check: Instant::now(),
            taken: 0,
            drops_since_warning: 0,
            last_drop_warning: None,
        }
    }

    fn run(mut self, rx: Receiver<Message>) {
        self.open_stamp = self.current_file_stamp();
        let mut acks = Vec::new();
        // A message that woke the writer from parking, handled first in the next drain.
        let mut woken_by: Option<Message> = None;
        loop {
            self.check_path();
            self.reopen_if_asked();
            let depth = self
                .shared
                .enqueued
                .load(Ordering::Relaxed)
                .saturating_sub(self.taken);
            self.metrics
                .audit_queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
            // fail_closed: while the output fails, records stay queued (new requests are refused)
            // and the stuck output is retried every poll.
            let holding = self.failing && self.on_failure == OnFailure::FailClosed;
            if holding && !self.recover() {
                if let Ok(Message::Flush(ack)) = rx.try_recv() {
                    // A flush cannot complete while records cannot be written; say so by not
                    // acknowledging (the caller times out) rather than blocking shutdown forever.
                    drop(ack);
                }
                std::thread::sleep(WRITER_POLL_INTERVAL);
                continue;
            }
            // Drain without parking while records keep coming: a writer parked in `recv` must be
            // woken by every record, a context switch per request on the request path. Polling
            // batches many records a wake; only a writer that found nothing parks (below).
            let mut wrote = false;
            let disconnected = loop {
                let message = match woken_by.take() {
                    Some(message) => Ok(message),
                    None => rx.try_recv(),
                };
                match message {
                    Ok(Message::Record(record)) => {
                        self.taken += 1;
                        wrote = true;
                        // Checked per record: a record queued after `reopen` returned must not
                        // reach the old file.
                        self.reopen_if_asked();
                        if let Err(e) = self.write_record(&record) {
                            self.failed(&e, "cannot write audit record");
                            if self.on_failure == OnFailure::FailClosed {
                                break false;
                            }
                        }
                    }
                    Ok(Message::Flush(ack)) => acks.push(ack),
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            if (wrote || !acks.is_empty()) && !self.failing {
                match self.out.writer().flush() {
                    Ok(()) => {}
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
            if !self.failing {
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
            self.warn_of_drops();
            if disconnected {
                return;
            }
            if wrote || self.failing {
                std::thread::sleep(WRITER_POLL_INTERVAL);
                continue;
            }
            // Nothing came during the last interval: park until a message comes (its sender
            // wakes this thread) or the path check is due. An idle gateway wakes 10 times a
            // second instead of 200; under load the writer keeps polling and no request pays a
            // wake.
            match rx.recv_timeout(PATH_CHECK_INTERVAL) {
                Ok(message) => woken_by = Some(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Serializes `record` into the reused line buffer, chains it, and writes it. A line that
    /// cannot be written is kept to be written first (fail_closed), or counted as lost without
    /// advancing the chain (fail_open).
    fn write_record(&mut self, record: &AuditRecord) -> io::Result<()> {
        if self.failing && self.on_failure == OnFailure::FailOpen && !self.recover() {
            self.shared.unreported_drops.fetch_add(1, Ordering::Relaxed);
            self.metrics.audit_write_errors.inc();
            return Ok(());
        }
        let dropped = self.shared.unreported_drops.swap(0, Ordering::Relaxed);
        self.drops_since_warning += dropped;
        let dropped_before = (dropped > 0).then_some(dropped);
        self.line.clear();
        let seq = self.chain.as_ref().map(|chain| chain.seq + 1);
        line::write(
            &mut self.line,
            &mut self.timestamps,
            seq,
            self.chain.as_ref().map(|chain| &chain.last_hash),
            record,
            dropped_before,
        )?;
        self.line.push(b'\n');
        let written = self.out.writer().write_all(&self.line);
        let keep = written.is_ok() || self.on_failure == OnFailure::FailClosed;
        if keep {
            if let (Some(chain), Some(seq)) = (&mut self.chain, seq) {
                chain.advance(seq, &self.line[..self.line.len() - 1]);
            }
            if written.is_err() {
                self.stuck = Some(self.line.clone());
            }
        } else {
            // Lost: the next written record says so, and the chain skips nothing.
            self.shared
                .unreported_drops
                .fetch_add(dropped + 1, Ordering::Relaxed);
        }
        written
    }

    /// Tries the stuck output again: buffered bytes, then a kept line. True once it works.
    fn recover(&mut self) -> bool {
        let result = self.out.writer().flush().and_then(|()| {
            if let Some(line) = &self.stuck {
                self.out.writer().write_all(line)?;
                self.out.writer().flush()?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.stuck = None;
                self.failing = false;
                self.shared.failing.store(false, Ordering::Relaxed);
                self.metrics.audit_writable.set(1);
                tracing::info!("the audit log can be written again");
                true
            }
            Err(_) => false,
        }
    }

    fn failed(&mut self, error: &io::Error, what: &'static str) {
        self.metrics.audit_write_errors.inc();
        if !self.failing {
            tracing::error!(error = %error, on_failure = ?self.on_failure, "{what}");
        }
        self.failing = true;
        self.shared.failing.store(true, Ordering::Relaxed);
        self.metrics.audit_writable.set(0);
    }

    fn current_file_stamp(&self) -> Option<FileStamp> {
        match &self.out {
            Output::File { out, .. } => FileStamp::of_file(out.get_ref()),
            Output::Stdout(_) => None,
        }
    }

    /// Asks for a reopen when the file at the path is gone or is another file.
    fn check_path(&mut self) {
        let Output::File { path, .. } = &self.out else {
            return;
        };
        if self.last_path_check.elapsed() < PATH_CHECK_INTERVAL {
            return;
        }
        self.last_path_check = Instant::now();
        let at_path = FileStamp::of(path);
        let same = match (&self.open_stamp, &at_path) {
            (Some(open), Some(now)) => open.same_file(now),
            _ => false,
        };
        if !same {
            tracing::warn!(path = %path.display(), "the audit file was deleted or replaced; reopening it");
            self.shared.reopen.store(true, Ordering::Release);
        }
    }

    fn reopen_if_asked(&mut self) {
        if !self.shared.reopen.load(Ordering::Acquire) {
            return;
        }
        self.shared.reopen.store(false, Ordering::Release);
        let Output::File { path, out } = &mut self.out else {
            return;
        };
        let flushed = out.flush();
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "cannot flush the audit log before reopening it; carrying its buffer over");
        }
        let reopened = open_file(path, self.chain.is_some()).and_then(|mut file| {
            if let Some(chain) = &mut self.chain
                && self.stuck.is_none()
                && flushed.is_ok()
            {
                continue_chain(&mut file, path, chain)?;
            }
            Ok(file)
        });
        match reopened {
            Ok(file) => {
                let stamp = FileStamp::of_file(&file);
                let old = std::mem::replace(out, BufWriter::with_capacity(OUTPUT_BUFFER, file));
                // What the old file could not take goes to the new one, in order.
                if let (_, Ok(unwritten)) = old.into_parts()
                    && !unwritten.is_empty()
                {
                    let _ = out.write_all(&unwritten);
                }
                self.open_stamp = stamp;
                tracing::info!(path = %path.display(), "audit log reopened");
                if self.failing {
                    self.recover();
                }
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
