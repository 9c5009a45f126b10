//! [`AuditLog`]: the handle every part records through, and the one writer thread per
//! process behind it.
//!
//! `record` is a `try_send` on a bounded crossbeam queue (`AUDIT_QUEUE_CAPACITY_COUNT`):
//! it never blocks, so executors call it directly; when the queue is full the entry is
//! dropped, counted (`packhunt_audit_dropped_total`) and logged at error. The writer
//! appends each entry as one `write(2)` of one line (at most `MAX_AUDIT_LINE_BYTES`) to
//! its day file opened with `O_APPEND`, so frontends sharing the datastore append without
//! interleaving. It syncs once per batch of up to `AUDIT_BATCH_MAX_COUNT` entries when the
//! datastore's `fsync_documents` is on (docs/security/audit.md says why batched). Day files
//! are created 0640 in a 0750 folder.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::entry::{encode_line, AuditEntry};
use crate::datastore::{Datastore, UtcDay};
use crate::limits::{AUDIT_BATCH_MAX_COUNT, AUDIT_ERROR_LOG_INTERVAL, AUDIT_QUEUE_CAPACITY_COUNT};
use crate::metrics::metrics;

/// Day files: owner reads and writes, the group reads, others nothing.
const AUDIT_FILE_MODE: u32 = 0o640;
/// The `audit/` folder: owner all, the group lists, others nothing.
const AUDIT_DIR_MODE: u32 = 0o750;

/// The audit trail of one datastore. `Clone + Send + Sync`: open it once per process and
/// hand clones to every thread and executor that records.
#[derive(Clone)]
pub struct AuditLog {
    queue: Sender<Message>,
    /// Rate limit of the error logged for dropped entries (shared by the clones).
    drop_logged: Arc<LogLimiter>,
}

enum Message {
    Entry(AuditEntry),
    /// Answered once every entry queued before it is written (and synced, per policy).
    Flush(Sender<()>),
}

impl AuditLog {
    /// Starts the writer thread for `datastore`'s `audit/` folder (made on the first
    /// append). If the thread cannot start, every entry is counted as dropped.
    pub fn open(datastore: &Datastore) -> AuditLog {
        let (queue, entries) = bounded(AUDIT_QUEUE_CAPACITY_COUNT);
        let writer = Writer {
            datastore: datastore.clone(),
            fsync: datastore.fsync_documents(),
            errors_logged: LogLimiter::new(),
            torn: std::cell::Cell::new(false),
        };
        let started = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer.run(entries));
        if let Err(e) = started {
            tracing::error!("cannot start the audit writer thread: {e}; audit entries are dropped");
        }
        AuditLog {
            queue,
            drop_logged: Arc::new(LogLimiter::new()),
        }
    }

    /// Queues `entry` for the writer; never blocks. A full queue (or a writer that could
    /// not start) drops it: counted and logged at error.
    pub fn record(&self, entry: AuditEntry) {
        let dropped = match self.queue.try_send(Message::Entry(entry)) {
            Ok(()) => return,
            Err(TrySendError::Full(Message::Entry(e)))
            | Err(TrySendError::Disconnected(Message::Entry(e))) => e,
            Err(_) => unreachable!("record sends entries only"),
        };
        let total = metrics().audit_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.drop_logged.due() {
            // Debug-quoted: user and target may be whatever a failed login typed.
            tracing::error!(
                "audit entry dropped ({:?} by {:?} on {:?}): the audit queue of \
                 {AUDIT_QUEUE_CAPACITY_COUNT} is full or its writer stopped; {total} dropped \
                 since start",
                dropped.action,
                dropped.user,
                dropped.target
            );
        }
    }

    /// Waits until every entry recorded before this call is appended (and synced when
    /// `fsync_documents` is on), at most `within`. Blocks: call it from a plain thread
    /// (shutdown, a CLI command, a test), never on an executor. `false` if it timed out.
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (done, flushed) = bounded(1);
        if self
            .queue
            .send_deadline(Message::Flush(done), deadline)
            .is_err()
        {
            return false;
        }
        flushed.recv_deadline(deadline).is_ok()
    }
}

struct Writer {
    datastore: Datastore,
    fsync: bool,
    errors_logged: LogLimiter,
    /// An append failed (a full disk can take part of a line): the next line starts with
    /// a `\n`, so it is read whole instead of run into the torn one and skipped with it.
    /// Not cut back: other frontends append to the same day file.
    torn: std::cell::Cell<bool>,
}

/// The day file a batch is appending to.
struct OpenDay {
    day: UtcDay,
    file: File,
    unsynced: bool,
}

impl Writer {
    fn run(self, entries: Receiver<Message>) {
        while let Ok(first) = entries.recv() {
            let mut open: Option<OpenDay> = None;
            let mut flushed = Vec::new();
            let batch = std::iter::once(first).chain(
                std::iter::from_fn(|| entries.try_recv().ok()).take(AUDIT_BATCH_MAX_COUNT - 1),
            );
            for message in batch {
                match message {
                    Message::Entry(entry) => self.append(&mut open, &entry),
                    Message::Flush(done) => flushed.push(done),
                }
            }
            // Files are reopened per batch: a day file moved away or removed by an operator
            // is made anew rather than written to unlinked.
            if let Some(day) = open.take() {
                self.close(day);
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    fn append(&self, open: &mut Option<OpenDay>, entry: &AuditEntry) {
        let day = UtcDay::of_unix_ms(entry.time_ms);
        if open.as_ref().is_some_and(|o| o.day != day) {
            self.close(open.take().expect("checked above"));
        }
        if open.is_none() {
            match self.open_day(day) {
                Ok(file) => {
                    *open = Some(OpenDay {
                        day,
                        file,
                        unsynced: false,
                    })
                }
                Err(e) => return self.failed("open", &self.datastore.audit_day_path(day), &e),
            }
        }
        let current = open.as_mut().expect("opened above");
        let line = encode_line(entry);
        if line.truncated {
            metrics().audit_truncated.fetch_add(1, Ordering::Relaxed);
        }
        // One write(2) of the whole line with O_APPEND: the kernel places it at the end in
        // one piece. write_all loops only on a short write (a full disk); if the rest
        // cannot follow, the torn line is ended by the next one (`torn`).
        let bytes = match self.torn.get() {
            true => [&b"\n"[..], &line.bytes].concat(),
            false => line.bytes,
        };
        match current.file.write_all(&bytes) {
            Ok(()) => {
                self.torn.set(false);
                current.unsynced = true;
                metrics()
                    .audit_entries_written
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.torn.set(true);
                self.failed("append to", &self.datastore.audit_day_path(day), &e)
            }
        }
    }

    /// Opens (creating 0640 if needed) the day file for appending; a new file's folder
    /// entry is synced when documents are.
    fn open_day(&self, day: UtcDay) -> io::Result<File> {
        let dir = self.datastore.audit_dir();
        match DirBuilder::new().mode(AUDIT_DIR_MODE).create(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let path = self.datastore.audit_day_path(day);
        let created = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(AUDIT_FILE_MODE)
            .open(&path);
        match created {
            Ok(file) => {
                if self.fsync {
                    File::open(&dir)?.sync_all()?;
                }
                Ok(file)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().append(true).open(&path)
            }
            Err(e) => Err(e),
        }
    }

    fn close(&self, day: OpenDay) {
        if self.fsync && day.unsynced {
            if let Err(e) = day.file.sync_data() {
                self.failed("sync", &self.datastore.audit_day_path(day.day), &e);
            }
        }
    }

    fn failed(&self, what: &str, path: &Path, e: &io::Error) {
        let total = metrics().audit_write_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if self.errors_logged.due() {
            tracing::error!(
                "audit: cannot {what} {}: {e} ({total} audit write errors since start)",
                path.display()
            );
        }
    }
}

/// Lets one log line through per `AUDIT_ERROR_LOG_INTERVAL`, from any thread.
struct LogLimiter {
    started: Instant,
    /// ms since `started` of the last line let through, + 1 (0: none yet).
    last_ms: AtomicU64,
}

impl LogLimiter {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn due(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        let interval = AUDIT_ERROR_LOG_INTERVAL.as_millis() as u64;
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::audit::{action, outcome, via};

    fn entry(time_ms: u64, target: &str) -> AuditEntry {
        AuditEntry {
            time_ms,
            ..AuditEntry::now("admin", via::CLI, action::USER_ADD, target, outcome::OK)
        }
    }

    // Goal: entries land in the file of their UTC day, either side of midnight, one line
    // each, in the order recorded; folder and files are not world-readable.
    // Method: record around 2024-02-29T24:00Z, flush, read the two day files.
    #[test]
    fn entries_go_to_their_utc_day_file_around_midnight() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), true).unwrap();
        let log = AuditLog::open(&ds);
        let midnight_ms = 1_709_251_200_000; // 2024-03-01T00:00:00Z
        log.record(entry(midnight_ms - 1, "before"));
        log.record(entry(midnight_ms, "at"));
        log.record(entry(midnight_ms + 1, "after"));
        log.record(entry(midnight_ms - 2, "late"));
        assert!(log.flush(Duration::from_secs(10)));
        let read = |name: &str| std::fs::read_to_string(dir.path().join("audit").join(name));
        let feb = read("2024-02-29.jsonl").unwrap();
        let mar = read("2024-03-01.jsonl").unwrap();
        let targets = |text: &str| -> Vec<String> {
            text.lines()
                .map(|l| serde_json::from_str::<AuditEntry>(l).unwrap().target)
                .collect()
        };
        assert_eq!(targets(&feb), ["before", "late"]);
        assert_eq!(targets(&mar), ["at", "after"]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("audit")) & 0o007, 0);
        assert_eq!(mode(&dir.path().join("audit/2024-02-29.jsonl")) & 0o007, 0);
        assert_eq!(
            ds.audit_day_path(UtcDay::of_unix_ms(midnight_ms)),
            dir.path().join("audit/2024-03-01.jsonl")
        );
    }

    // Goal: clones on many threads all land, each as one whole line.
    #[test]
    fn clones_record_from_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open(dir.path().to_path_buf(), false).unwrap();
        let log = AuditLog::open(&ds);
        let now = crate::clock::now_ms();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        log.record(entry(now, &format!("{t}-{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(log.flush(Duration::from_secs(10)));
        let text = std::fs::read_to_string(ds.audit_day_path(UtcDay::of_unix_ms(now))).unwrap();
        assert_eq!(text.lines().count(), 800);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<AuditEntry>(l).is_ok()));
    }
}
