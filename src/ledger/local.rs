//! A ledger in a local folder: `ledger.jsonl` (append-only, one event per line, synced to
//! disk before `append` returns), `run.lock` (the run lock) and `reports/`.

use super::{LedgerError, LedgerEvent, LedgerSnapshot, LedgerStore, RunLock};
use crate::report::RunReport;
use async_trait::async_trait;
use chrono::{Datelike, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// The ledger, lock and reports under one folder.
#[derive(Debug)]
pub struct LocalLedger {
    dir: PathBuf,
    lock_ttl: Duration,
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
            append_guard: Mutex::new(()),
        }
    }

    fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger.jsonl")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("run.lock")
    }

    fn storage(&self, path: &Path, operation: &str, e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Storage {
            location: path.display().to_string(),
            operation: operation.into(),
            detail: e.to_string(),
        }
    }

    async fn ensure_dir(&self) -> Result<(), LedgerError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| self.storage(&self.dir, "creating the state folder", e))
    }
}

struct LocalLock {
    path: PathBuf,
    run_id: String,
}

#[async_trait]
impl RunLock for LocalLock {
    async fn renew(&self) -> Result<(), LedgerError> {
        // Rewriting the file refreshes its modification time, which the TTL is measured from.
        let body = lock_body(&self.run_id);
        tokio::fs::write(&self.path, body)
            .await
            .map_err(|e| LedgerError::Storage {
                location: self.path.display().to_string(),
                operation: "renewing the run lock".into(),
                detail: e.to_string(),
            })
    }

    async fn release(self: Box<Self>) -> Result<(), LedgerError> {
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LedgerError::Storage {
                location: self.path.display().to_string(),
                operation: "releasing the run lock".into(),
                detail: e.to_string(),
            }),
        }
    }
}

fn lock_body(run_id: &str) -> String {
    format!(
        "{{\"run_id\":\"{run_id}\",\"pid\":{},\"since\":\"{}\"}}\n",
        std::process::id(),
        Utc::now().to_rfc3339()
    )
}

#[async_trait]
impl LedgerStore for LocalLedger {
    fn describe(&self) -> String {
        format!("local folder {}", self.dir.display())
    }

    async fn lock(&self, run_id: &str) -> Result<Box<dyn RunLock>, LedgerError> {
        self.ensure_dir().await?;
        let path = self.lock_path();
        for _ in 0..2 {
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
                    let age = tokio::fs::metadata(&path)
                        .await
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.elapsed().ok());
                    let holder = tokio::fs::read_to_string(&path).await.unwrap_or_default();
                    match age {
                        Some(age) if age > self.lock_ttl => {
                            tracing::warn!(lock = %path.display(), age_s = age.as_secs(), "taking over a stale run lock");
                            let _ = tokio::fs::remove_file(&path).await;
                        }
                        _ => {
                            return Err(LedgerError::Busy {
                                holder: holder.trim().to_string(),
                            })
                        }
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
        let path = self.ledger_path();
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LedgerSnapshot::default())
            }
            Err(e) => return Err(self.storage(&path, "reading the ledger", e)),
        };
        let mut snap = LedgerSnapshot::default();
        let lines: Vec<&str> = text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<LedgerEvent>(line) {
                Ok(event) => snap.apply(&event),
                // A crash in the middle of a write leaves at most a torn last line, which
                // was never acknowledged as recorded: ignore it.
                Err(_) if i == lines.len() - 1 => {
                    tracing::warn!(ledger = %path.display(), line = i + 1, "ignoring a torn last line");
                }
                Err(e) => {
                    return Err(LedgerError::Corrupt {
                        location: path.display().to_string(),
                        detail: format!("line {}: {e}", i + 1),
                    })
                }
            }
        }
        Ok(snap)
    }

    async fn append(&self, events: &[LedgerEvent]) -> Result<(), LedgerError> {
        if events.is_empty() {
            return Ok(());
        }
        self.ensure_dir().await?;
        let path = self.ledger_path();
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e).expect("ledger events serialise");
            buf.push(b'\n');
        }
        let _guard = self.append_guard.lock().await;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| self.storage(&path, "opening the ledger", e))?;
        // If an earlier crash left a torn line, start on a fresh line so it stays isolated.
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            let tail = tokio::fs::read(&path).await.unwrap_or_default();
            if tail.last() != Some(&b'\n') {
                buf.insert(0, b'\n');
            }
        }
        file.write_all(&buf)
            .await
            .map_err(|e| self.storage(&path, "appending to the ledger", e))?;
        file.sync_data()
            .await
            .map_err(|e| self.storage(&path, "syncing the ledger", e))
    }

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
        crate::deliver::write_file_atomically(&path, &json)
            .await
            .map_err(|e| self.storage(&path, "writing the report", e))?;
        let csv_path = folder.join(format!("{}.csv", report.run_id));
        crate::deliver::write_file_atomically(&csv_path, report.reminders_csv().as_bytes())
            .await
            .map_err(|e| self.storage(&csv_path, "writing the report CSV", e))?;
        let latest = self.dir.join("reports").join("latest.json");
        crate::deliver::write_file_atomically(&latest, &json)
            .await
            .map_err(|e| self.storage(&latest, "writing the latest report", e))?;
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
        let reports = self.dir.join("reports");
        let mut stack = vec![reports];
        while let Some(dir) = stack.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().and_then(|n| n.to_str()) == Some(&format!("{run_id}.json"))
                {
                    return read_report(&p).await;
                }
            }
        }
        Ok(None)
    }
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
