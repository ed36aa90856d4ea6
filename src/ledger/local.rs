//! A ledger in a local folder: the events in segments (`ledger.jsonl`, then
//! `ledger-000001.jsonl`… after checkpoints; append-only, one event per line, synced to disk
//! before `append` returns), checkpoints (`checkpoint-NNNNNN.jsonl`: the fold of every
//! segment up to NNNNNN, pruned), `run.lock` (the run lock) and `reports/` (with
//! `reports/by-id/<run_id>.txt` naming each report's dated path, so a report is found by
//! path, not by walking the folder).
//!
//! A checkpoint never removes what it has not durably replaced: it starts a new segment
//! first, writes the new checkpoint (temporary file, fsync, rename, fsync of the folder), and
//! only then deletes the segments it holds (each only if no append landed after it was
//! read) and the older checkpoints. `load` reads the newest checkpoint and, of each segment,
//! the bytes the checkpoint does not hold, so a crash between any two steps loses nothing and
//! replays nothing twice.

use super::{
    checkpoint_due_after, covered_by, replay_tail, write_checkpoint, CheckpointDone,
    CheckpointHeader, CheckpointOptions, CheckpointReader, CheckpointStep, Layout, LedgerError,
    LedgerEvent, LedgerSnapshot, LedgerStore, ReportStore, RunLock, SegmentFold,
    DEFAULT_RETENTION_DAYS,
};
use crate::report::RunReport;
use async_trait::async_trait;
use chrono::{Datelike, NaiveDate, Utc};
use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// The ledger, lock and reports under one folder.
#[derive(Debug)]
pub struct LocalLedger {
    dir: PathBuf,
    lock_ttl: Duration,
    retention_days: u32,
    // Serialises appends from one process; the run lock keeps other processes out.
    append_guard: Mutex<()>,
}

impl LocalLedger {
    /// A ledger under `dir` (created when needed). A lock older than `lock_ttl` is taken
    /// to be left over from a crashed run and is taken over.
    pub fn new(dir: impl Into<PathBuf>, lock_ttl: Duration) -> Self {
        Self {
            dir: dir.into(),
            lock_ttl,
            retention_days: DEFAULT_RETENTION_DAYS,
            append_guard: Mutex::new(()),
        }
    }

    /// Keeps resolved issues and past runs' figures `days` days (see
    /// [`LedgerSnapshot::prune`]); [`DEFAULT_RETENTION_DAYS`] unless set.
    pub(crate) fn with_retention_days(mut self, days: u32) -> Self {
        self.retention_days = days;
        self
    }

    /// Writes a checkpoint as `options` say (see [`LedgerStore::checkpoint`]); `None` when
    /// it was not due or stopped before the checkpoint was durable.
    pub async fn checkpoint_with(
        &self,
        options: CheckpointOptions,
    ) -> Result<Option<CheckpointDone>, LedgerError> {
        let dir = self.dir.clone();
        let _guard = self.append_guard.lock().await;
        tokio::task::spawn_blocking(move || checkpoint_blocking(&dir, &options))
            .await
            .map_err(|e| storage_error(&self.dir, "writing a ledger checkpoint", e))?
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("run.lock")
    }

    fn storage(&self, path: &Path, operation: &str, e: impl std::fmt::Display) -> LedgerError {
        storage_error(path, operation, e)
    }

    async fn ensure_dir(&self) -> Result<(), LedgerError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| self.storage(&self.dir, "creating the state folder", e))
    }

    /// Moves a lock that looked stale (`seen` is what it held) out of the way. The rename is
    /// atomic, so it cannot delete a lock another process created after the age check: what
    /// was renamed is re-read, and if it is not the stale lock that was seen, it goes back.
    /// Returns whether the stale lock is gone (the caller may now create its own).
    async fn take_over_stale(
        &self,
        path: &Path,
        seen: &str,
        holder_gone: bool,
    ) -> Result<bool, LedgerError> {
        // Cheap re-check first: another process may have taken it over already, and moving
        // its fresh lock aside, even briefly, would make its renewal fail.
        if tokio::fs::read_to_string(path).await.ok().as_deref() != Some(seen) {
            return Ok(!tokio::fs::try_exists(path).await.unwrap_or(true));
        }
        let aside = self
            .dir
            .join(format!("run.lock.stale-{}", uuid::Uuid::new_v4()));
        match tokio::fs::rename(path, &aside).await {
            Ok(()) => {}
            // Someone else took it over or released it first: try again from the start.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(self.storage(path, "taking over a stale run lock", e)),
        }
        let moved = tokio::fs::read_to_string(&aside).await.unwrap_or_default();
        let still_stale = holder_gone
            || lock_age(&aside)
                .await
                .is_some_and(|age| age > self.lock_ttl);
        if moved == seen && still_stale {
            tracing::warn!(lock = %path.display(), holder = %describe_holder(seen, None), "took over a stale run lock");
            if let Err(e) = tokio::fs::remove_file(&aside).await {
                tracing::warn!(file = %aside.display(), error = %e, "could not delete a stale run lock moved aside");
            }
            return Ok(true);
        }
        // It was renewed or replaced by a fresh lock between the check and the rename:
        // give it back untouched.
        tokio::fs::rename(&aside, path)
            .await
            .map_err(|e| self.storage(path, "restoring a run lock taken by mistake", e))?;
        Ok(false)
    }
}

fn storage_error(path: &Path, operation: &str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Storage {
        location: path.display().to_string(),
        operation: operation.into(),
        detail: e.to_string(),
    }
}

/// How long ago the file was last written (`None` when it is gone or unreadable).
async fn lock_age(path: &Path) -> Option<Duration> {
    tokio::fs::metadata(path)
        .await
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
}

/// The fields of `run.lock` this module reads back.
#[derive(serde::Deserialize)]
struct LockBody {
    run_id: String,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    since: Option<String>,
}

/// This machine's name, to tell whether a lock's process can be checked here.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Whether the lock's run is known to be gone: written on this host by a process that no
/// longer exists (a crash, `kill -9`). Unknown (another host, no `/proc`) is not gone.
fn holder_is_gone(body: &str) -> bool {
    let Ok(lock) = serde_json::from_str::<LockBody>(body.trim()) else {
        return false;
    };
    let (Some(pid), Some(host)) = (lock.pid, lock.host) else {
        return false;
    };
    if Some(host) != host_name() || !Path::new("/proc/self").exists() {
        return false;
    }
    !Path::new("/proc").join(pid.to_string()).exists()
}

/// Who holds a lock, for the Busy message: run id, process and host, since when, and when it
/// expires at the latest. Never the raw file (it is not meant for people).
fn describe_holder(body: &str, expires: Option<chrono::DateTime<Utc>>) -> String {
    let Ok(lock) = serde_json::from_str::<LockBody>(body.trim()) else {
        return "an unreadable run lock".into();
    };
    let mut out = format!("run {}", lock.run_id);
    match (lock.pid, lock.host.as_deref()) {
        (Some(pid), Some(host)) => out.push_str(&format!(" (process {pid} on {host})")),
        (Some(pid), None) => out.push_str(&format!(" (process {pid})")),
        _ => {}
    }
    if let Some(since) = lock.since {
        out.push_str(&format!(", since {since}"));
    }
    if let Some(at) = expires {
        out.push_str(&format!(", expires at the latest at {}", at.to_rfc3339()));
    }
    out
}

/// The run id a lock file names (`None` for a file that is not a lock body).
fn lock_holder(body: &str) -> Option<String> {
    serde_json::from_str::<LockBody>(body.trim())
        .ok()
        .map(|b| b.run_id)
}

struct LocalLock {
    path: PathBuf,
    run_id: String,
}

impl LocalLock {
    fn lost(&self, operation: &str, detail: String) -> LedgerError {
        storage_error(&self.path, operation, detail)
    }

    /// Opens the lock file and checks it is still ours: after a takeover another run holds
    /// it, and rewriting (or deleting) it would take that run's lock away.
    async fn open_own(&self, operation: &str) -> Result<Option<tokio::fs::File>, LedgerError> {
        let mut file = match tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage_error(&self.path, operation, e)),
        };
        let mut body = String::new();
        file.read_to_string(&mut body)
            .await
            .map_err(|e| storage_error(&self.path, operation, e))?;
        match lock_holder(&body) {
            Some(holder) if holder == self.run_id => Ok(Some(file)),
            Some(holder) => Err(self.lost(
                operation,
                format!("the run lock was lost: it is now held by run {holder}"),
            )),
            None => Err(self.lost(
                operation,
                "the run lock was lost: the lock file now holds something else".to_string(),
            )),
        }
    }
}

#[async_trait]
impl RunLock for LocalLock {
    async fn renew(&self) -> Result<(), LedgerError> {
        const OP: &str = "renewing the run lock";
        let Some(mut file) = self.open_own(OP).await? else {
            return Err(self.lost(
                OP,
                "the run lock was lost: the lock file is gone".to_string(),
            ));
        };
        // Rewriting the file refreshes its modification time, which the TTL is measured from.
        let body = lock_body(&self.run_id);
        let write = async {
            file.set_len(0).await?;
            file.seek(std::io::SeekFrom::Start(0)).await?;
            file.write_all(body.as_bytes()).await?;
            file.sync_all().await
        };
        write.await.map_err(|e| self.storage_err(OP, e))?;
        // A takeover may have moved the file aside between the check and the write: then
        // the path no longer names the file just written.
        if !same_file(&file, &self.path).await {
            return Err(self.lost(
                OP,
                "the run lock was lost: another run took it over".to_string(),
            ));
        }
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<(), LedgerError> {
        const OP: &str = "releasing the run lock";
        match self.open_own(OP).await {
            Ok(Some(file)) => drop(file),
            // Nothing of ours to delete: the lock expired and was taken over (or is gone).
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "not deleting a run lock this run no longer holds");
                return Ok(());
            }
        }
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.storage_err(OP, e)),
        }
    }
}

impl LocalLock {
    fn storage_err(&self, operation: &str, e: std::io::Error) -> LedgerError {
        storage_error(&self.path, operation, e)
    }
}

/// Whether `path` still names the open `file` (same device and inode). Off Unix there is no
/// inode to compare and the content check before the write has to do.
async fn same_file(file: &tokio::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (Ok(open), Ok(named)) = (file.metadata().await, tokio::fs::metadata(path).await) else {
            return false;
        };
        open.dev() == named.dev() && open.ino() == named.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

fn lock_body(run_id: &str) -> String {
    let mut body = serde_json::json!({
        "run_id": run_id,
        "pid": std::process::id(),
        "since": Utc::now().to_rfc3339(),
    });
    if let Some(host) = host_name() {
        body["host"] = host.into();
    }
    format!("{body}\n")
}

#[async_trait]
impl LedgerStore for LocalLedger {
    fn describe(&self) -> String {
        format!("local folder {}", self.dir.display())
    }

    async fn lock(&self, run_id: &str) -> Result<Box<dyn RunLock>, LedgerError> {
        self.ensure_dir().await?;
        let path = self.lock_path();
        // A few rounds: each lost race (a lock vanishing or appearing between two steps)
        // starts over; a lock that stays held ends in `Busy` on the first round.
        for _ in 0..3 {
            let created = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await;
            match created {
                Ok(mut file) => {
                    file.write_all(lock_body(run_id).as_bytes())
                        .await
                        .map_err(|e| self.storage(&path, "writing the run lock", e))?;
                    file.sync_all()
                        .await
                        .map_err(|e| self.storage(&path, "writing the run lock", e))?;
                    return Ok(Box::new(LocalLock {
                        path,
                        run_id: run_id.to_string(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = match tokio::fs::read_to_string(&path).await {
                        Ok(h) => h,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(self.storage(&path, "reading the run lock", e)),
                    };
                    let age = lock_age(&path).await;
                    let expires = age.and_then(|a| {
                        let left = self.lock_ttl.saturating_sub(a);
                        chrono::Duration::from_std(left)
                            .ok()
                            .map(|l| Utc::now() + l)
                    });
                    let busy = || LedgerError::Busy {
                        holder: describe_holder(&holder, expires),
                    };
                    let gone = holder_is_gone(&holder);
                    match age {
                        Some(_) if gone => {
                            tracing::warn!(lock = %path.display(), "the run lock's process is gone on this host: the lock is stale");
                            if !self.take_over_stale(&path, &holder, true).await? {
                                return Err(busy());
                            }
                        }
                        Some(age) if age > self.lock_ttl => {
                            tracing::warn!(lock = %path.display(), age_s = age.as_secs(), "the run lock looks stale");
                            if !self.take_over_stale(&path, &holder, false).await? {
                                return Err(busy());
                            }
                        }
                        None if !tokio::fs::try_exists(&path).await.unwrap_or(true) => continue,
                        _ => return Err(busy()),
                    }
                }
                Err(e) => return Err(self.storage(&path, "creating the run lock", e)),
            }
        }
        Err(LedgerError::Busy {
            holder: "another run took the lock first".into(),
        })
    }

    async fn load(&self) -> Result<LedgerSnapshot, LedgerError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || load_blocking(&dir))
            .await
            .map_err(|e| storage_error(&self.dir, "reading the ledger", e))?
    }

    async fn append(&self, events: &[LedgerEvent]) -> Result<(), LedgerError> {
        if events.is_empty() {
            return Ok(());
        }
        self.ensure_dir().await?;
        let dir = self.dir.clone();
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e).expect("ledger events serialise");
            buf.push(b'\n');
        }
        let _guard = self.append_guard.lock().await;
        // Blocking std I/O on a blocking thread: the whole batch goes out in one `write` on
        // an append-mode file, so appends from other instances in the folder do not interleave
        // (an advisory file lock makes the torn-line check and the write one step for every appender).
        tokio::task::spawn_blocking(move || append_blocking(&dir, &buf))
            .await
            .map_err(|e| storage_error(&self.dir, "appending to the ledger", e))?
    }

    async fn checkpoint(&self, as_of: NaiveDate) -> Result<Option<CheckpointDone>, LedgerError> {
        self.checkpoint_with(CheckpointOptions::when_due(as_of, self.retention_days))
            .await
    }
}

#[async_trait]
impl ReportStore for LocalLedger {
    async fn save_report(&self, report: &RunReport) -> Result<String, LedgerError> {
        let d = report.started_at;
        let folder = self
            .dir
            .join("reports")
            .join(format!("{:04}", d.year()))
            .join(format!("{:02}", d.month()))
            .join(format!("{:02}", d.day()));
        tokio::fs::create_dir_all(&folder)
            .await
            .map_err(|e| self.storage(&folder, "creating the reports folder", e))?;
        let json = serde_json::to_vec_pretty(report).expect("reports serialise");
        let path = folder.join(format!("{}.json", report.run_id));
        crate::fsutil::write_file_atomically(&path, &json)
            .await
            .map_err(|e| self.storage(&path, "writing the report", e))?;
        let csv_path = folder.join(format!("{}.csv", report.run_id));
        crate::fsutil::write_file_atomically(&csv_path, report.reminders_csv().as_bytes())
            .await
            .map_err(|e| self.storage(&csv_path, "writing the report CSV", e))?;
        // Found by id through this index, never by walking every report.
        let by_id = self.dir.join("reports").join("by-id");
        tokio::fs::create_dir_all(&by_id)
            .await
            .map_err(|e| self.storage(&by_id, "creating the report index folder", e))?;
        let index = by_id.join(format!("{}.txt", report.run_id));
        let relative = format!(
            "{:04}/{:02}/{:02}/{}.json",
            d.year(),
            d.month(),
            d.day(),
            report.run_id
        );
        crate::fsutil::write_file_atomically(&index, relative.as_bytes())
            .await
            .map_err(|e| self.storage(&index, "writing the report index", e))?;
        let latest = self.dir.join("reports").join("latest.json");
        crate::fsutil::write_file_atomically(&latest, &json)
            .await
            .map_err(|e| self.storage(&latest, "writing the latest report", e))?;
        Ok(path.display().to_string())
    }

    async fn save_report_page(
        &self,
        report: &RunReport,
        html: &str,
    ) -> Result<String, LedgerError> {
        let d = report.started_at;
        let folder = self
            .dir
            .join("reports")
            .join(format!("{:04}", d.year()))
            .join(format!("{:02}", d.month()))
            .join(format!("{:02}", d.day()));
        tokio::fs::create_dir_all(&folder)
            .await
            .map_err(|e| self.storage(&folder, "creating the reports folder", e))?;
        let path = folder.join(format!("{}.html", report.run_id));
        crate::deliver::write_file_atomically(&path, html.as_bytes())
            .await
            .map_err(|e| self.storage(&path, "writing the insights page", e))?;
        let latest = self.dir.join("reports").join("latest.html");
        crate::deliver::write_file_atomically(&latest, html.as_bytes())
            .await
            .map_err(|e| self.storage(&latest, "writing the latest insights page", e))?;
        Ok(path.display().to_string())
    }

    async fn last_report(&self) -> Result<Option<RunReport>, LedgerError> {
        read_report(&self.dir.join("reports").join("latest.json")).await
    }

    async fn report(&self, run_id: &str) -> Result<Option<RunReport>, LedgerError> {
        // Run ids are uuids: refuse anything that could walk the file system.
        if run_id.is_empty()
            || !run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Ok(None);
        }
        // The index names the dated path the report was saved under: one read, no walk.
        let index = self
            .dir
            .join("reports")
            .join("by-id")
            .join(format!("{run_id}.txt"));
        let relative = match tokio::fs::read_to_string(&index).await {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.storage(&index, "reading the report index", e)),
        };
        // The index is ours, but a path that climbs out of the reports folder is refused all
        // the same.
        if relative
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(LedgerError::Corrupt {
                location: index.display().to_string(),
                detail: "the report index names a path outside the reports folder".into(),
            });
        }
        read_report(&self.dir.join("reports").join(relative)).await
    }
}

/// How far back the tail is read at a time when looking for the end of the last whole line.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The file name of segment `n` (segment 0 keeps the name ledgers had before checkpoints).
fn segment_file(n: u32) -> String {
    if n == 0 {
        "ledger.jsonl".into()
    } else {
        format!("ledger-{n:06}.jsonl")
    }
}

fn segment_number(name: &str) -> Option<u32> {
    if name == "ledger.jsonl" {
        return Some(0);
    }
    name.strip_prefix("ledger-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

fn checkpoint_file(n: u32) -> String {
    super::checkpoint_name("", n)
}

impl Layout {
    fn read(dir: &Path) -> Result<Self, LedgerError> {
        let mut layout = Self::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(layout),
            Err(e) => return Err(storage_error(dir, "listing the ledger's files", e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| storage_error(dir, "listing the ledger's files", e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let (n, map) = match (segment_number(&name), super::checkpoint_number("", &name)) {
                (Some(n), _) => (n, &mut layout.segments),
                (None, Some(n)) => (n, &mut layout.checkpoints),
                (None, None) => continue,
            };
            // A file deleted since the listing is simply not there.
            if let Ok(meta) = entry.metadata() {
                map.insert(n, meta.len());
            }
        }
        Ok(layout)
    }

    /// The segment appends go to: the newest one; after a checkpoint with none left, the
    /// next number; in a new ledger, segment 0.
    fn active_segment(&self) -> u32 {
        match (
            self.segments.last_key_value(),
            self.checkpoints.last_key_value(),
        ) {
            (Some((n, _)), _) => *n,
            (None, Some((c, _))) => c + 1,
            (None, None) => 0,
        }
    }
}

fn is_not_found(e: &LedgerError) -> bool {
    matches!(e, LedgerError::Storage { detail, .. } if detail.starts_with(NOT_FOUND_MARK))
}

/// Starts the detail of an error about a file that vanished while being read (a checkpoint
/// running meanwhile): `load` starts over from the listing.
const NOT_FOUND_MARK: &str = "gone while reading";

fn open_for_read(path: &Path, operation: &str) -> Result<std::fs::File, LedgerError> {
    std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            storage_error(path, operation, format!("{NOT_FOUND_MARK}: {e}"))
        } else {
            storage_error(path, operation, e)
        }
    })
}

/// The newest checkpoint's header and snapshot (none: an empty snapshot).
fn read_checkpoint(
    dir: &Path,
    layout: &Layout,
) -> Result<(Option<CheckpointHeader>, LedgerSnapshot), LedgerError> {
    let Some((n, _)) = layout.checkpoints.last_key_value() else {
        return Ok((None, LedgerSnapshot::default()));
    };
    let path = dir.join(checkpoint_file(*n));
    let file = open_for_read(&path, "reading the ledger checkpoint")?;
    let mut reader = CheckpointReader::default();
    let mut lines = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = lines
            .read_until(b'\n', &mut line)
            .map_err(|e| storage_error(&path, "reading the ledger checkpoint", e))?;
        if read == 0 {
            break;
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        reader
            .line(number, text)
            .map_err(|detail| LedgerError::Corrupt {
                location: path.display().to_string(),
                detail,
            })?;
    }
    let (header, snapshot) = reader.finish().map_err(|detail| LedgerError::Corrupt {
        location: path.display().to_string(),
        detail,
    })?;
    Ok((Some(header), snapshot))
}

/// Just the header line of the newest checkpoint (what it covers).
fn read_checkpoint_header(dir: &Path, n: u32) -> Result<CheckpointHeader, LedgerError> {
    let path = dir.join(checkpoint_file(n));
    let file = open_for_read(&path, "reading the ledger checkpoint")?;
    let mut line = Vec::new();
    std::io::BufReader::new(file)
        .read_until(b'\n', &mut line)
        .map_err(|e| storage_error(&path, "reading the ledger checkpoint", e))?;
    serde_json::from_slice(line.strip_suffix(b"\n").unwrap_or(&line)).map_err(|e| {
        LedgerError::Corrupt {
            location: path.display().to_string(),
            detail: format!("line 1 (header): {e}"),
        }
    })
}

/// Replays a segment from byte `from` into `snapshot`, line by line; returns the offset
/// after its last whole line and how many events it applied. A last line with no `\n` was
/// never acknowledged (a crash mid-write; the next append cuts it): it is left out.
fn replay_segment(
    path: &Path,
    from: u64,
    snapshot: &mut LedgerSnapshot,
) -> Result<(u64, u64), LedgerError> {
    const OP: &str = "reading the ledger";
    let mut file = open_for_read(path, OP)?;
    file.seek(std::io::SeekFrom::Start(from))
        .map_err(|e| storage_error(path, OP, e))?;
    let mut lines = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::new();
    let (mut end, mut number, mut applied) = (from, 0u64, 0u64);
    loop {
        line.clear();
        let read = lines
            .read_until(b'\n', &mut line)
            .map_err(|e| storage_error(path, OP, e))?;
        if read == 0 {
            break;
        }
        number += 1;
        let Some(text) = line.strip_suffix(b"\n") else {
            tracing::warn!(ledger = %path.display(), line = number, "ignoring a torn last line");
            break;
        };
        end += read as u64;
        applied += u64::from(replay_tail(snapshot, from, number, text).map_err(|detail| {
            LedgerError::Corrupt {
                location: path.display().to_string(),
                detail,
            }
        })?);
    }
    Ok((end, applied))
}

fn load_blocking(dir: &Path) -> Result<LedgerSnapshot, LedgerError> {
    // A checkpoint may delete what was listed while it is read: start over from the listing.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match load_once(dir) {
            Err(e) if is_not_found(&e) && attempts < 5 => continue,
            other => return other,
        }
    }
}

fn load_once(dir: &Path) -> Result<LedgerSnapshot, LedgerError> {
    let layout = Layout::read(dir)?;
    let (header, mut snapshot) = read_checkpoint(dir, &layout)?;
    let covers = header.map(|h| h.covers).unwrap_or_default();
    for (n, len) in &layout.segments {
        let from = covers.get(n).copied().unwrap_or(0);
        if *len > from {
            replay_segment(&dir.join(segment_file(*n)), from, &mut snapshot)?;
        }
    }
    Ok(snapshot)
}

/// Syncs the folder, so a created, renamed or deleted file's name survives a crash.
fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| storage_error(dir, "syncing the state folder", e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Whether `path` still names the open `file` (blocking form of [`same_file`]).
fn still_named(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (Ok(open), Ok(named)) = (file.metadata(), std::fs::metadata(path)) else {
            return false;
        };
        open.dev() == named.dev() && open.ino() == named.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

fn checkpoint_blocking(
    dir: &Path,
    options: &CheckpointOptions,
) -> Result<Option<CheckpointDone>, LedgerError> {
    let layout = Layout::read(dir)?;
    let Some((&through, _)) = layout.segments.last_key_value() else {
        return Ok(None);
    };
    let previous = match layout.checkpoints.last_key_value() {
        Some((n, len)) => Some((read_checkpoint_header(dir, *n)?, *len)),
        None => None,
    };
    if !options.force && !checkpoint_due_after(&layout.segments, previous.as_ref()) {
        return Ok(None);
    }

    // 1. Roll: appends from now on go to a new segment, which this checkpoint leaves alone.
    let next = dir.join(segment_file(through + 1));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&next)
    {
        Ok(f) => f
            .sync_all()
            .map_err(|e| storage_error(&next, "starting a new ledger segment", e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(storage_error(&next, "starting a new ledger segment", e)),
    }
    sync_dir(dir)?;
    if options.stop_after == Some(CheckpointStep::Rolled) {
        return Ok(None);
    }

    // 2. Fold the old checkpoint and every segment up to `through`, then prune.
    let (_, mut snapshot) = read_checkpoint(dir, &layout)?;
    let mut fold = SegmentFold::default();
    for n in layout.segments.keys() {
        let from = covered_by(previous.as_ref(), *n);
        match replay_segment(&dir.join(segment_file(*n)), from, &mut snapshot) {
            Ok((end, applied)) => fold.replayed(*n, end, applied),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let pruned = snapshot.prune(options.as_of, options.retention_days);

    // 3. Write it durably under its final name.
    let header = fold.header(options);
    let events_replayed = fold.events_replayed();
    let path = dir.join(checkpoint_file(through));
    let tmp = dir.join(format!("{}.tmp", checkpoint_file(through)));
    let write = || -> std::io::Result<u64> {
        let file = std::fs::File::create(&tmp)?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        let rows = write_checkpoint(&mut out, &header, &snapshot)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(rows)
    };
    let rows = write().map_err(|e| storage_error(&path, "writing a ledger checkpoint", e))?;
    sync_dir(dir)?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(checkpoint = %path.display(), rows, bytes, events_replayed, pruned_issues = pruned.issues, pruned_insights = pruned.insights, "ledger checkpoint written");
    let done = CheckpointDone {
        location: path.display().to_string(),
        through_segment: through,
        events_replayed,
        rows,
        bytes,
        pruned,
    };
    if options.stop_after == Some(CheckpointStep::SnapshotWritten) {
        return Ok(Some(done));
    }

    // 4. Delete the segments it holds, each only if nothing was appended after it was read
    //    (under the same file lock appends take); what stays is replayed from its offset.
    for (n, end) in &header.covers {
        let seg = dir.join(segment_file(*n));
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
        else {
            continue;
        };
        if file.lock().is_err() {
            continue;
        }
        let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if len == *end && still_named(&file, &seg) {
            if let Err(e) = std::fs::remove_file(&seg) {
                tracing::warn!(segment = %seg.display(), error = %e, "could not delete a ledger segment held by the checkpoint");
            }
        } else {
            tracing::info!(segment = %seg.display(), "a ledger segment grew after it was read: kept");
        }
    }
    sync_dir(dir)?;
    if options.stop_after == Some(CheckpointStep::SegmentsDeleted) {
        return Ok(Some(done));
    }

    // 5. Older checkpoints, and what a crash while writing one left.
    for n in layout.checkpoints.keys().filter(|n| **n < through) {
        let old = dir.join(checkpoint_file(*n));
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(checkpoint = %old.display(), error = %e, "could not delete an older ledger checkpoint");
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("checkpoint-") && name.ends_with(".jsonl.tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    sync_dir(dir)?;
    Ok(Some(done))
}

fn append_blocking(dir: &Path, buf: &[u8]) -> Result<(), LedgerError> {
    // A checkpoint may start a new segment (or delete this one) between choosing a segment
    // and locking it: then choose again.
    for _ in 0..20 {
        let layout = Layout::read(dir)?;
        let n = layout.active_segment();
        let path = dir.join(segment_file(n));
        // Only a ledger with no segment at all creates one here; a segment a checkpoint
        // deleted is never brought back (its bytes would be taken for held ones).
        let mut file = match std::fs::OpenOptions::new()
            .create(layout.segments.is_empty())
            .read(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(storage_error(&path, "opening the ledger", e)),
        };
        // An exclusive advisory lock for check + cut + write: another instance or process
        // appending at the same moment must never see our half-written line as a torn one
        // (released when `file` is dropped).
        file.lock()
            .map_err(|e| storage_error(&path, "locking the ledger for an append", e))?;
        if !still_named(&file, &path) || Layout::read(dir)?.active_segment() != n {
            continue;
        }
        return append_locked(&path, &mut file, buf);
    }
    Err(storage_error(
        dir,
        "appending to the ledger",
        "the ledger's segments kept changing under the append",
    ))
}

fn append_locked(path: &Path, file: &mut std::fs::File, buf: &[u8]) -> Result<(), LedgerError> {
    let len = file
        .metadata()
        .map_err(|e| storage_error(path, "opening the ledger", e))?
        .len();
    // Only the last byte is read, not the ledger: the cost of an append must not grow with it.
    if len > 0 && read_at(file, len - 1, 1).map_err(|e| tail_error(path, e))? != b"\n" {
        // A crash mid-write left a torn last line, never acknowledged as recorded. Appending
        // after it would bury it mid-file, where `load` rightly calls it corruption: cut it.
        let keep = end_of_last_line(file, len).map_err(|e| tail_error(path, e))?;
        tracing::warn!(ledger = %path.display(), bytes = len - keep, "cutting a torn last line before appending");
        file.set_len(keep)
            .map_err(|e| storage_error(path, "cutting a torn last line off the ledger", e))?;
    }
    file.write_all(buf)
        .map_err(|e| storage_error(path, "appending to the ledger", e))?;
    file.sync_data()
        .map_err(|e| storage_error(path, "syncing the ledger", e))
}

fn tail_error(path: &Path, e: std::io::Error) -> LedgerError {
    storage_error(path, "reading the end of the ledger", e)
}

fn read_at(file: &mut std::fs::File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let mut bytes = vec![0; len];
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The length of the file up to and including its last `\n` (0 when it has none), read
/// backwards from `len` in [`TAIL_CHUNK`]s.
fn end_of_last_line(file: &mut std::fs::File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let chunk = read_at(file, start, (end - start) as usize)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

async fn read_report(path: &Path) -> Result<Option<RunReport>, LedgerError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LedgerError::Corrupt {
                location: path.display().to_string(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LedgerError::Storage {
            location: path.display().to_string(),
            operation: "reading the report".into(),
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    fn aged(path: &Path) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }

    #[tokio::test]
    async fn a_lock_renewed_between_the_age_check_and_the_takeover_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LocalLedger::new(dir.path(), TTL);
        let path = ledger.lock_path();
        // What the age check saw: a stale lock.
        let seen = lock_body("run-old");
        // What is there by the time of the rename: the holder renewed it (fresh, new body).
        let fresh = lock_body("run-old").replace("\"pid\":", "\"pid\":0");
        std::fs::write(&path, &fresh).unwrap();
        assert!(!ledger.take_over_stale(&path, &seen, false).await.unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), fresh);
    }

    #[tokio::test]
    async fn a_lock_replaced_by_a_fresh_one_after_the_rename_check_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LocalLedger::new(dir.path(), TTL);
        let path = ledger.lock_path();
        // Same body as seen, but freshly written: it was renewed with identical content, so
        // only its age tells it apart. It must survive, in place.
        let body = lock_body("run-live");
        std::fs::write(&path, &body).unwrap();
        assert!(!ledger.take_over_stale(&path, &body, false).await.unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "nothing left aside");
        // Once it really is stale, it is taken over and deleted.
        aged(&path);
        assert!(ledger.take_over_stale(&path, &body, false).await.unwrap());
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_end_of_the_last_line_is_found_across_tail_chunks() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"a\nbc\n").unwrap();
        f.write_all(&vec![b'x'; (TAIL_CHUNK * 2 + 7) as usize])
            .unwrap();
        drop(f);
        let mut f = std::fs::File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        assert_eq!(end_of_last_line(&mut f, len).unwrap(), 5);
        assert_eq!(end_of_last_line(&mut f, 4).unwrap(), 2);
        assert_eq!(end_of_last_line(&mut f, 1).unwrap(), 0);
    }
}
