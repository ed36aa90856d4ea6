//! Record: the ledger of sent reminders (so reruns never send twice), the run lock (so two
//! runs never work at once) and, behind its own trait, the stored run reports.
//!
//! The ledger is an append-only list of [`LedgerEvent`]s in numbered segments; [`LedgerSnapshot`]
//! folds them into "what was last sent to whom for which issue". A checkpoint (see
//! [`LedgerStore::checkpoint`]) stores that fold, pruned to a retention window, so a run reads
//! the newest checkpoint plus the events after it, as a stream, and never the whole history.

mod blob;
mod local;

pub use blob::BlobLedger;
pub use local::LocalLedger;

pub use crate::history::{LedgerEvent, LedgerSnapshot, MIN_RETENTION_DAYS};

pub(crate) use crate::history::{
    CheckpointHeader, CheckpointRow, ManagerHistory, Pruned, DEFAULT_RETENTION_DAYS,
};
use crate::report::RunReport;
use async_trait::async_trait;
use chrono::NaiveDate;
use serde::Serialize;

/// A checkpoint is written once the events after the last one reach this many bytes and a
/// quarter of the checkpoint's own size: a run then reads at most about 1.25× the folded state
/// plus this, whatever the number of past runs, and the checkpoint is not rewritten for a
/// few events.
pub(crate) const CHECKPOINT_MIN_TAIL_BYTES: u64 = 1024 * 1024;

/// Whether a checkpoint is worth writing for `tail_bytes` of events after one of
/// `checkpoint_bytes`.
pub(crate) fn checkpoint_due(tail_bytes: u64, checkpoint_bytes: u64) -> bool {
    tail_bytes >= CHECKPOINT_MIN_TAIL_BYTES.max(checkpoint_bytes / 4)
}

/// The bytes of segment `n` that the `previous` checkpoint already holds.
pub(crate) fn covered_by(previous: Option<&(CheckpointHeader, u64)>, n: u32) -> u64 {
    previous
        .and_then(|(h, _)| h.covers.get(&n).copied())
        .unwrap_or(0)
}

/// A store's segments and checkpoints by number, with their sizes in bytes, from one listing.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    pub(crate) segments: std::collections::BTreeMap<u32, u64>,
    pub(crate) checkpoints: std::collections::BTreeMap<u32, u64>,
}

/// The name of checkpoint `n` below `prefix` (the folder's or container's ledger prefix).
pub(crate) fn checkpoint_name(prefix: &str, n: u32) -> String {
    format!("{prefix}checkpoint-{n:06}.jsonl")
}

/// The number of the checkpoint called `name` below `prefix`, if it is one.
pub(crate) fn checkpoint_number(prefix: &str, name: &str) -> Option<u32> {
    name.strip_prefix(prefix)?
        .strip_prefix("checkpoint-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// A new checkpoint's fold of the segments, the same in every store: where each segment's
/// replay ended (the header's `covers`: what is replayed from there after it) and how many
/// events the fold applied.
#[derive(Debug, Default)]
pub(crate) struct SegmentFold {
    covers: std::collections::BTreeMap<u32, u64>,
    events_replayed: u64,
}

impl SegmentFold {
    /// Segment `n` was replayed up to byte `end`, applying `applied` events.
    pub(crate) fn replayed(&mut self, n: u32, end: u64, applied: u64) {
        self.covers.insert(n, end);
        self.events_replayed += applied;
    }

    /// Events the fold applied.
    pub(crate) fn events_replayed(&self) -> u64 {
        self.events_replayed
    }

    /// The checkpoint's header: what it covers, for the run day and retention of `options`.
    pub(crate) fn header(&self, options: &CheckpointOptions) -> CheckpointHeader {
        CheckpointHeader {
            checkpoint: 1,
            as_of: options.as_of,
            retention_days: options.retention_days,
            written_at: chrono::Utc::now(),
            covers: self.covers.clone(),
        }
    }
}

/// Whether segments of the given lengths, after the `previous` checkpoint (its header and
/// its length in bytes), hold enough events it does not cover to be worth a new one.
pub(crate) fn checkpoint_due_after(
    segments: &std::collections::BTreeMap<u32, u64>,
    previous: Option<&(CheckpointHeader, u64)>,
) -> bool {
    let tail: u64 = segments
        .iter()
        .map(|(n, len)| len.saturating_sub(covered_by(previous, *n)))
        .sum();
    checkpoint_due(tail, previous.map_or(0, |(_, len)| *len))
}

/// The steps of a checkpoint, in order; each leaves a ledger that loads to the same history
/// (a crash after any of them loses nothing and replays nothing twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointStep {
    /// A new segment was started: appends from now on go there.
    Rolled,
    /// The new checkpoint is durable; the segments it holds and older checkpoints remain.
    SnapshotWritten,
    /// The segments it holds are deleted; older checkpoints remain.
    SegmentsDeleted,
}

/// How to checkpoint.
#[derive(Clone, Debug)]
pub struct CheckpointOptions {
    /// The run day the pruning counts back from.
    pub as_of: NaiveDate,
    /// Days kept (see [`LedgerSnapshot::prune`]).
    pub retention_days: u32,
    /// Write one even when [`checkpoint_due`] says it is not worth it.
    pub force: bool,
    /// Stop after this step, as a crash there would (for tests of the crash guarantees).
    pub stop_after: Option<CheckpointStep>,
}

impl CheckpointOptions {
    /// A checkpoint when due, pruned for `as_of` with `retention_days`.
    pub fn when_due(as_of: NaiveDate, retention_days: u32) -> Self {
        Self {
            as_of,
            retention_days,
            force: false,
            stop_after: None,
        }
    }
}

/// What a checkpoint did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointDone {
    /// Where it is.
    pub location: String,
    /// The last segment it holds.
    pub through_segment: u32,
    /// Events replayed from the segments into it.
    pub events_replayed: u64,
    /// Rows it holds.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// What was pruned.
    pub pruned: Pruned,
}

/// Splits bytes arriving in chunks into lines, holding only the unfinished one.
#[derive(Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; calls `each` for every line it completes (without the `\n`).
    pub(crate) fn push<E>(
        &mut self,
        mut chunk: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                each(&chunk[..i])?;
            } else {
                self.partial.extend_from_slice(&chunk[..i]);
                let line = std::mem::take(&mut self.partial);
                each(&line)?;
            }
            chunk = &chunk[i + 1..];
        }
        self.partial.extend_from_slice(chunk);
        Ok(())
    }

    /// The bytes after the last `\n` (a line cut short, or empty).
    pub(crate) fn rest(self) -> Vec<u8> {
        self.partial
    }
}

/// Replays one line of a segment's uncovered bytes (those from byte `from`, the first a
/// checkpoint does not cover) into `snapshot`, the same way in every store: a blank line is
/// skipped (`Ok(false)`), an event is applied (`Ok(true)`), anything else is the error,
/// naming the line counted from `from`.
pub(crate) fn replay_tail(
    snapshot: &mut LedgerSnapshot,
    from: u64,
    number: u64,
    line: &[u8],
) -> Result<bool, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let event: LedgerEvent = serde_json::from_slice(line).map_err(|e| {
        let at = if from > 0 {
            format!(" (counted from byte {from})")
        } else {
            String::new()
        };
        format!("line {number}{at}: {e}")
    })?;
    snapshot.apply(&event);
    Ok(true)
}

/// Reads a checkpoint line by line into a snapshot.
#[derive(Default)]
pub(crate) struct CheckpointReader {
    header: Option<CheckpointHeader>,
    rows: u64,
    ended: bool,
    snapshot: LedgerSnapshot,
}

impl CheckpointReader {
    /// One line (its number, from 1, for the message).
    pub(crate) fn line(&mut self, number: u64, line: &[u8]) -> Result<(), String> {
        if self.ended {
            return Err(format!("line {number}: rows after the end line"));
        }
        if self.header.is_none() {
            let header: CheckpointHeader =
                serde_json::from_slice(line).map_err(|e| format!("line {number} (header): {e}"))?;
            if header.checkpoint != 1 {
                return Err(format!(
                    "line {number}: checkpoint format {} is not known to this version",
                    header.checkpoint
                ));
            }
            self.header = Some(header);
            return Ok(());
        }
        let row: CheckpointRow =
            serde_json::from_slice(line).map_err(|e| format!("line {number}: {e}"))?;
        match row {
            CheckpointRow::End { rows } if rows == self.rows => self.ended = true,
            CheckpointRow::End { rows } => {
                return Err(format!(
                    "line {number}: the end line counts {rows} rows, {} were read",
                    self.rows
                ))
            }
            row => {
                self.rows += 1;
                self.snapshot.restore(row);
            }
        }
        Ok(())
    }

    /// The header and the snapshot, once the end line was read.
    pub(crate) fn finish(self) -> Result<(CheckpointHeader, LedgerSnapshot), String> {
        match (self.header, self.ended) {
            (Some(header), true) => Ok((header, self.snapshot)),
            (None, _) => Err("empty: no header line".into()),
            (Some(_), false) => Err(format!("cut short: no end line after {} rows", self.rows)),
        }
    }
}

/// Writes a checkpoint (header, rows, end line) to `out`; returns the number of rows.
pub(crate) fn write_checkpoint(
    out: &mut impl std::io::Write,
    header: &CheckpointHeader,
    snapshot: &LedgerSnapshot,
) -> std::io::Result<u64> {
    serde_json::to_writer(&mut *out, header)?;
    out.write_all(b"\n")?;
    let mut rows = 0;
    for row in snapshot.checkpoint_rows() {
        serde_json::to_writer(&mut *out, &row)?;
        out.write_all(b"\n")?;
        rows += 1;
    }
    serde_json::to_writer(&mut *out, &CheckpointRow::End { rows })?;
    out.write_all(b"\n")?;
    Ok(rows)
}

/// Ledger / lock / report storage failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another run holds the lock.
    #[error("a run is already in progress ({holder})")]
    Busy {
        /// Who holds it, as far as known (run id, since when).
        holder: String,
    },
    /// The stored ledger cannot be read.
    #[error("{location}: corrupt ledger: {detail}")]
    Corrupt {
        /// File / blob.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// The app's Azure credential got no token: a configuration problem, not the storage's.
    #[error("{location}: {operation}: the app's Azure credential got no token (check REMINDERS_CREDENTIAL, REMINDERS_MANAGED_IDENTITY_CLIENT_ID and the identity): {detail}")]
    Credential {
        /// File / blob / container.
        location: String,
        /// What was being done.
        operation: String,
        /// The credential's message.
        detail: String,
    },
    /// Storage failed.
    #[error("{location}: {operation}: {detail}")]
    Storage {
        /// File / blob / container.
        location: String,
        /// What was being done.
        operation: String,
        /// The underlying message.
        detail: String,
    },
}

/// A held run lock. Dropping it without [`RunLock::release`] leaves it to expire.
#[async_trait]
pub trait RunLock: Send + Sync {
    /// Extends the lock during a long run.
    async fn renew(&self) -> Result<(), LedgerError>;
    /// Gives the lock back.
    async fn release(self: Box<Self>) -> Result<(), LedgerError>;
}

/// Where the ledger, the lock and the run reports live (local folder, Blob container).
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Where it stores, for logs and health (no secrets).
    fn describe(&self) -> String;
    /// Takes the run lock, or fails with [`LedgerError::Busy`].
    async fn lock(&self, run_id: &str) -> Result<Box<dyn RunLock>, LedgerError>;
    /// Reads the whole ledger.
    async fn load(&self) -> Result<LedgerSnapshot, LedgerError>;
    /// Appends events durably: when this returns `Ok`, they survive a crash.
    async fn append(&self, events: &[LedgerEvent]) -> Result<(), LedgerError>;
    /// Folds the ledger into a new checkpoint pruned for the run day `as_of` with the store's
    /// retention, when the events since the last one make it worth it ([`checkpoint_due`]);
    /// `None` when not. Called by a live run holding the run lock, after its events are
    /// recorded. Stores without checkpoints (test doubles) keep the default: never.
    async fn checkpoint(&self, as_of: NaiveDate) -> Result<Option<CheckpointDone>, LedgerError> {
        let _ = as_of;
        Ok(None)
    }
}

/// Where the insights page is published for people to open (a SharePoint library), apart
/// from where it is stored: publishing is optional and its failure never fails a run.
#[async_trait]
pub trait PagePublisher: Send + Sync {
    /// Where pages go, for logs and the digest (`sharepoint://host/site/library/folder`).
    fn describe(&self) -> String;
    /// Uploads `html` as the page, replacing the previous one; returns the link people open
    /// (the item's `webUrl`), or why not, naming the step.
    async fn publish_page(&self, html: &str) -> Result<String, String>;
}

/// Where the run reports are kept (beside the ledger, in the same folder or container).
///
/// Its own seam, apart from [`LedgerStore`]: the job reads and writes the ledger under the run
/// lock, while reports are also read by the HTTP function with no lock at all.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Stores a run report (JSON, and CSV of its reminders); returns where.
    async fn save_report(&self, report: &RunReport) -> Result<String, LedgerError>;
    /// Stores the insights page of a run beside its JSON report
    /// (`reports/YYYY/MM/DD/<run_id>.html`) and as `reports/latest.html`; returns where.
    async fn save_report_page(&self, report: &RunReport, html: &str)
        -> Result<String, LedgerError>;
    /// The most recently saved report.
    async fn last_report(&self) -> Result<Option<RunReport>, LedgerError>;
    /// A saved report by run id.
    async fn report(&self, run_id: &str) -> Result<Option<RunReport>, LedgerError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerEmail;
    use crate::history::{IssueKey, Stage};

    #[test]
    fn a_segments_tail_is_replayed_line_by_line_skipping_blanks_and_naming_a_bad_line() {
        let owner = OwnerEmail::parse("jm6453@engie.com").unwrap();
        let issue = IssueKey("d1|os_out_of_date".into());
        let event = LedgerEvent::Sent {
            owner: owner.clone(),
            issue: issue.clone(),
            lookout_id: None,
            stage: Stage::First,
            as_of: NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
            sent_at: chrono::Utc::now(),
            channel: "outbox".into(),
            message_id: None,
            run_id: "r1".into(),
            maybe_delivered: false,
            facts: None,
        };
        let line = serde_json::to_vec(&event).unwrap();
        let mut snapshot = LedgerSnapshot::default();
        assert_eq!(replay_tail(&mut snapshot, 0, 1, b"  \r"), Ok(false));
        assert_eq!(
            snapshot,
            LedgerSnapshot::default(),
            "a blank line changes nothing"
        );
        assert_eq!(replay_tail(&mut snapshot, 0, 2, &line), Ok(true));
        assert!(snapshot.history(&owner, &issue).is_some());
        let err = replay_tail(&mut snapshot, 4096, 3, b"{\"kind\": ").unwrap_err();
        assert!(
            err.starts_with("line 3 (counted from byte 4096): "),
            "{err}"
        );
        let err = replay_tail(&mut snapshot, 0, 7, b"not json").unwrap_err();
        assert!(err.starts_with("line 7: "), "{err}");
    }

    #[test]
    fn a_fold_covers_each_segment_up_to_where_its_replay_ended() {
        let mut fold = SegmentFold::default();
        fold.replayed(1, 4096, 10);
        fold.replayed(3, 120, 2);
        let options =
            CheckpointOptions::when_due(NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(), 400);
        let header = fold.header(&options);
        assert_eq!(header.covers, [(1, 4096), (3, 120)].into_iter().collect());
        assert_eq!(
            (header.as_of, header.retention_days, header.checkpoint),
            (options.as_of, 400, 1)
        );
        assert_eq!(fold.events_replayed(), 12);
    }
}
