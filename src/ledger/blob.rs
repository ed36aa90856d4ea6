//! The ledger, the run lock and the run reports in an Azure Blob container (the managed
//! identity needs Storage Blob Data Contributor on it).
//!
//! Layout of the state container:
//! - `lock/run.lock`: the run lock is a **blob lease** on this blob (`lease_seconds`, renewed
//!   by the job during the run, released at the end; a crashed run's lease simply expires).
//!   While leased, its content names the holder (run id, since, host) for the "run in
//!   progress" answer.
//! - `ledger/checkpoint-NNNNNN.jsonl`: the fold of every segment up to NNNNNN, pruned to the
//!   retention window (a block blob, written whole or not at all; see [`LedgerStore::checkpoint`]).
//!   `load` reads the newest checkpoint and, of each segment, only the bytes it does not hold,
//!   both as streams (never a whole blob in memory). A checkpoint starts a new segment first,
//!   writes itself, then deletes the segments it holds (each with `If-Match` on the ETag it
//!   read: a segment appended to meanwhile stays, and its new bytes are replayed from the
//!   offset the checkpoint records) and the older checkpoints; a crash between any two steps
//!   loses nothing and replays nothing twice. A deleted segment is never created again.
//! - `ledger/segment-NNNNNN.jsonl`: the ledger, one [`LedgerEvent`] per line, in **append
//!   blobs**. Each `append` is one append-block (atomic: all of the batch's lines or none),
//!   so recording a batch costs the batch's bytes, not a rewrite of the whole ledger: a
//!   growing ledger of 10k+ owners stays O(events) to write, where rewriting one blob per
//!   batch would be O(n²) over a run. A segment is rolled over before the service's limit
//!   of 50,000 blocks per blob; `load` reads the segments in name order.
//! - `reports/YYYY/MM/DD/<run_id>.json` + `.csv`, `reports/latest.json` (a copy of the
//!   newest report) and `reports/by-id/<run_id>.txt` (the report's dated name: a report is
//!   found by id with two reads, never by listing the reports).
//!
//! Concurrency control is optimistic and never loses an update:
//! - segments and `latest.json` are created with `If-None-Match: *` (an existing ledger is
//!   never truncated by a racing writer);
//! - every append carries the expected end of the blob (`x-ms-blob-condition-appendpos`,
//!   the append-blob form of `If-Match`); on 412 the writer re-reads the length and retries.
//!   If the 412 answers an SDK retry of a block that did land (the first response was
//!   lost), the bytes at the expected position are ours: that is recognised, so a block is
//!   never recorded twice;
//! - `latest.json` is replaced with `If-Match: <etag>` and only by a newer report, retried
//!   on 412.
//!
//! Crash bound: `append` returns only once Blob Storage acknowledged the block (durably
//! stored), and the job records completed sends while the others are in flight (see
//! `job::send_all`): a crash or a storage outage can re-send at most
//! `3 × concurrency` owners (REMINDERS_CONCURRENCY), never anything recorded.

use super::{
    checkpoint_due_after, covered_by, replay_tail, write_checkpoint, CheckpointDone,
    CheckpointHeader, CheckpointOptions, CheckpointReader, CheckpointStep, Layout, LedgerError,
    LedgerEvent, LedgerSnapshot, LedgerStore, LineSplitter, ReportStore, RunLock, SegmentFold,
    DEFAULT_RETENTION_DAYS,
};
use crate::azure::storage;
use crate::config::BlobStateSettings;
use crate::report::RunReport;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RequestContent};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientAppendBlockResultHeaders,
    AppendBlobClientCreateOptions, BlobClientAcquireLeaseOptions,
    BlobClientAcquireLeaseResultHeaders, BlobClientDeleteOptions, BlobClientDownloadOptions,
    BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
    BlockBlobClientUploadOptions, HttpRange,
};
use azure_storage_blob::{BlobClient, BlobContainerClient};
use chrono::{Datelike, NaiveDate};
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Mutex, OnceCell};

const LOCK_BLOB: &str = "lock/run.lock";
const LEDGER_PREFIX: &str = "ledger/";
const LATEST_REPORT: &str = "reports/latest.json";
/// Roll to a new segment before the service's hard limit of 50,000 blocks per append blob.
const ROLL_AT_BLOCKS: i64 = 45_000;
/// Roll before a segment gets unwieldy to download in one piece.
const ROLL_AT_BYTES: u64 = 512 * 1024 * 1024;
/// Largest append block accepted by every service version (newer ones take 100 MiB).
const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// Attempts of one append against concurrent writers before giving up.
const APPEND_ATTEMPTS: usize = 200;

/// The ledger, lock and reports in a Blob container.
pub struct BlobLedger {
    container: Arc<BlobContainerClient>,
    location: String,
    lease_seconds: u32,
    retention_days: u32,
    ready: OnceCell<()>,
    // The segment being appended to and its known length: saves a properties call per
    // batch. Stale values are harmless (the append position condition catches them).
    tail: Mutex<Option<Tail>>,
}

#[derive(Clone, Debug)]
struct Tail {
    segment: u32,
    len: u64,
    blocks: i64,
}

impl std::fmt::Debug for BlobLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobLedger")
            .field("location", &self.location)
            .finish()
    }
}

fn segment_name(n: u32) -> String {
    format!("{LEDGER_PREFIX}segment-{n:06}.jsonl")
}

fn segment_number(name: &str) -> Option<u32> {
    name.strip_prefix(LEDGER_PREFIX)?
        .strip_prefix("segment-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn checkpoint_name(n: u32) -> String {
    super::checkpoint_name(LEDGER_PREFIX, n)
}

/// Starts the detail of an error about a blob deleted while it was read (a checkpoint ran
/// meanwhile): `load` starts over from the listing.
const GONE_MARK: &str = "gone while reading";

fn is_gone(e: &LedgerError) -> bool {
    matches!(e, LedgerError::Storage { detail, .. } if detail.starts_with(GONE_MARK))
}

/// What a streamed read of a segment found.
struct SegmentRead {
    /// The offset after its last whole line.
    end: u64,
    /// Its ETag when read (the checkpoint deletes it only if still so).
    etag: Option<String>,
    /// Events applied.
    applied: u64,
}

impl BlobLedger {
    /// A ledger in the container of `settings`. Builds the client only (no request yet).
    pub fn new(
        settings: &BlobStateSettings,
        credential: Arc<dyn TokenCredential>,
        client_options: ClientOptions,
    ) -> Result<Self, LedgerError> {
        let (location, container) = storage::container_at(
            &settings.account_url,
            &settings.container,
            credential,
            client_options,
        );
        let container = container.map_err(|detail| LedgerError::Storage {
            location: location.clone(),
            operation: "creating the Blob client".into(),
            detail,
        })?;
        Ok(Self {
            container: Arc::new(container),
            location,
            lease_seconds: settings.lease_seconds,
            retention_days: DEFAULT_RETENTION_DAYS,
            ready: OnceCell::new(),
            tail: Mutex::new(None),
        })
    }

    /// The ledger configured by `settings` (`REMINDERS_STATE_CONTAINER`…), with the
    /// configured credential.
    pub fn from_settings(
        settings: &crate::config::AzureSettings,
    ) -> Result<Self, crate::azure::BuildError> {
        let credential = crate::azure::credential(settings)?;
        Self::from_settings_with(settings, credential)
    }

    /// The ledger configured by `settings`, authenticating with `credential` (the process's
    /// shared one, see [`crate::azure::SharedCredential`]).
    pub fn from_settings_with(
        settings: &crate::config::AzureSettings,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, crate::azure::BuildError> {
        let state = settings.blob_state().ok_or_else(|| {
            crate::config::not_chosen("REMINDERS_LEDGER", settings.ledger.kind_name(), "blob")
        })?;
        let options = crate::azure::sdk_client_options(settings)?;
        Self::new(state, credential, options)
            .map_err(|e| crate::azure::BuildError::Client(e.to_string()))
    }

    fn blob(&self, name: &str) -> BlobClient {
        self.container.blob_client(name)
    }

    fn at(&self, name: &str) -> String {
        format!("{}/{}", self.location.trim_end_matches('/'), name)
    }

    fn storage_error(&self, name: &str, operation: &str, e: &azure_core::Error) -> LedgerError {
        if storage::is_credential(e) {
            return LedgerError::Credential {
                location: self.at(name),
                operation: operation.into(),
                detail: storage::describe(e),
            };
        }
        let mut detail = storage::describe(e);
        if storage::status(e) == Some(403) {
            detail.push_str(
                "; give the app's managed identity the role Storage Blob Data Contributor on the state container",
            );
        }
        LedgerError::Storage {
            location: self.at(name),
            operation: operation.into(),
            detail,
        }
    }

    /// Creates the container on first use (an existing one, or one the identity may not
    /// create but may use, is fine).
    async fn ensure_container(&self) -> Result<(), LedgerError> {
        self.ready
            .get_or_try_init(|| async {
                match self.container.create(None).await {
                    Ok(_) => {
                        tracing::info!(container = %self.location, "state container created");
                        Ok(())
                    }
                    Err(e) if matches!(storage::status(&e), Some(409) | Some(403)) => Ok(()),
                    Err(e) if storage::is_credential(&e) => Err(LedgerError::Credential {
                        location: self.location.clone(),
                        operation: "creating the state container".into(),
                        detail: storage::describe(&e),
                    }),
                    Err(e) => Err(LedgerError::Storage {
                        location: self.location.clone(),
                        operation: "creating the state container".into(),
                        detail: storage::describe(&e),
                    }),
                }
            })
            .await
            .map(|_| ())
    }

    /// The whole blob and its ETag, or `None` when it does not exist.
    async fn read(&self, name: &str) -> Result<Option<(Vec<u8>, Option<String>)>, LedgerError> {
        match self.blob(name).download(None).await {
            Ok(result) => {
                let etag = result.properties.etag.as_ref().map(|e| e.to_string());
                let bytes = result
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.storage_error(name, "reading", &e))?;
                Ok(Some((bytes.to_vec(), etag)))
            }
            Err(e) if storage::status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.storage_error(name, "reading", &e)),
        }
    }

    async fn write(
        &self,
        name: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), LedgerError> {
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some(content_type.into()),
            ..Default::default()
        };
        self.blob(name)
            .upload(RequestContent::from(bytes), Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.storage_error(name, "writing", &e))
    }

    /// Keeps resolved issues and past runs' figures `days` days (see
    /// [`LedgerSnapshot::prune`]); [`DEFAULT_RETENTION_DAYS`] unless set.
    pub(crate) fn with_retention_days(mut self, days: u32) -> Self {
        self.retention_days = days;
        self
    }

    /// The ledger's segments and checkpoints, from one listing of `ledger/` (it returns
    /// their sizes; a container that does not exist yet holds none).
    async fn layout(&self) -> Result<Layout, LedgerError> {
        const OP: &str = "listing the ledger segments";
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(LEDGER_PREFIX.into()),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.storage_error(LEDGER_PREFIX, OP, &e))?;
        let mut layout = Layout::default();
        loop {
            let item = match pager.try_next().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) if storage::error_code(&e) == Some("ContainerNotFound") => {
                    return Ok(Layout::default())
                }
                Err(e) => return Err(self.storage_error(LEDGER_PREFIX, OP, &e)),
            };
            let Some(name) = item.name else { continue };
            let len = item
                .properties
                .as_ref()
                .and_then(|p| p.content_length)
                .unwrap_or(0);
            if let Some(n) = segment_number(&name) {
                layout.segments.insert(n, len);
            } else if let Some(n) = super::checkpoint_number(LEDGER_PREFIX, &name) {
                layout.checkpoints.insert(n, len);
            }
        }
        Ok(layout)
    }

    /// Streams blob `name` from byte `from`, calling `each` with every whole line (and its
    /// number, counted from `from`); returns the offset after the last whole line, the ETag
    /// and the bytes after the last `\n` (none for a ledger written by appends of whole lines).
    async fn stream_lines(
        &self,
        name: &str,
        from: u64,
        operation: &str,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<(u64, Option<String>, Vec<u8>), LedgerError> {
        let options = BlobClientDownloadOptions {
            range: (from > 0).then(|| HttpRange::from_offset(from)),
            // Two 4 MiB partitions in flight at most: memory stays flat whatever the size.
            parallel: std::num::NonZero::new(2),
            ..Default::default()
        };
        let result = match self.blob(name).download(Some(options)).await {
            Ok(r) => r,
            Err(e) if storage::status(&e) == Some(404) => {
                return Err(LedgerError::Storage {
                    location: self.at(name),
                    operation: operation.into(),
                    detail: format!("{GONE_MARK}: {}", storage::describe(&e)),
                })
            }
            // Nothing at that offset: nothing after what is held.
            Err(e) if storage::status(&e) == Some(416) => return Ok((from, None, Vec::new())),
            Err(e) => return Err(self.storage_error(name, operation, &e)),
        };
        let etag = result.properties.etag.as_ref().map(|e| e.to_string());
        let mut body = result.body;
        let mut lines = LineSplitter::default();
        let (mut end, mut number) = (from, 0u64);
        let corrupt = |detail: String| LedgerError::Corrupt {
            location: self.at(name),
            detail,
        };
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.storage_error(name, operation, &e))?
        {
            lines
                .push(&chunk, |line| {
                    number += 1;
                    end += line.len() as u64 + 1;
                    each(number, line)
                })
                .map_err(corrupt)?;
        }
        Ok((end, etag, lines.rest()))
    }

    /// Replays segment `n` from byte `from` into `snapshot`.
    async fn replay_segment(
        &self,
        n: u32,
        from: u64,
        snapshot: &mut LedgerSnapshot,
    ) -> Result<SegmentRead, LedgerError> {
        let name = segment_name(n);
        let mut applied = 0;
        let (end, etag, rest) = self
            .stream_lines(&name, from, "reading the ledger", |number, line| {
                applied += u64::from(replay_tail(snapshot, from, number, line)?);
                Ok(())
            })
            .await?;
        if !rest.iter().all(u8::is_ascii_whitespace) {
            // Appends are whole blocks of whole lines: a line without its end is damage.
            return Err(LedgerError::Corrupt {
                location: self.at(&name),
                detail: format!("the last line (at byte {end}) has no end"),
            });
        }
        Ok(SegmentRead { end, etag, applied })
    }

    /// The newest checkpoint's header and snapshot (none: an empty snapshot).
    async fn read_checkpoint(
        &self,
        layout: &Layout,
    ) -> Result<(Option<CheckpointHeader>, LedgerSnapshot), LedgerError> {
        let Some((n, _)) = layout.checkpoints.last_key_value() else {
            return Ok((None, LedgerSnapshot::default()));
        };
        let name = checkpoint_name(*n);
        let mut reader = CheckpointReader::default();
        let (_, _, rest) = self
            .stream_lines(&name, 0, "reading the ledger checkpoint", |number, line| {
                reader.line(number, line)
            })
            .await?;
        let (header, snapshot) = (if rest.is_empty() {
            reader.finish()
        } else {
            Err("its last line has no end".to_string())
        })
        .map_err(|detail| LedgerError::Corrupt {
            location: self.at(&name),
            detail,
        })?;
        Ok((Some(header), snapshot))
    }

    /// Just the header of checkpoint `n` (its first line, read in a small range).
    async fn read_checkpoint_header(&self, n: u32) -> Result<CheckpointHeader, LedgerError> {
        let name = checkpoint_name(n);
        let mut header = None;
        let mut first = LineSplitter::default();
        let options = BlobClientDownloadOptions {
            range: Some(HttpRange::new(0, 1024 * 1024)),
            ..Default::default()
        };
        let result = self
            .blob(&name)
            .download(Some(options))
            .await
            .map_err(|e| self.storage_error(&name, "reading the ledger checkpoint", &e))?;
        let mut body = result.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.storage_error(&name, "reading the ledger checkpoint", &e))?
        {
            let _ = first.push(&chunk, |line| {
                if header.is_none() {
                    header = Some(serde_json::from_slice::<CheckpointHeader>(line));
                }
                Err(())
            });
            if header.is_some() {
                break;
            }
        }
        match header {
            Some(Ok(h)) => Ok(h),
            Some(Err(e)) => Err(LedgerError::Corrupt {
                location: self.at(&name),
                detail: format!("line 1 (header): {e}"),
            }),
            None => Err(LedgerError::Corrupt {
                location: self.at(&name),
                detail: "no header line in its first MiB".into(),
            }),
        }
    }

    async fn load_once(&self) -> Result<LedgerSnapshot, LedgerError> {
        let layout = self.layout().await?;
        let (header, mut snapshot) = self.read_checkpoint(&layout).await?;
        let covers = header.map(|h| h.covers).unwrap_or_default();
        for (n, len) in &layout.segments {
            let from = covers.get(n).copied().unwrap_or(0);
            if *len > from {
                self.replay_segment(*n, from, &mut snapshot).await?;
            }
        }
        Ok(snapshot)
    }

    /// Writes a checkpoint as `options` say (see [`LedgerStore::checkpoint`]); `None` when
    /// it was not due or stopped before the checkpoint was durable.
    pub async fn checkpoint_with(
        &self,
        options: CheckpointOptions,
    ) -> Result<Option<CheckpointDone>, LedgerError> {
        self.ensure_container().await?;
        let layout = self.layout().await?;
        let Some((&through, _)) = layout.segments.last_key_value() else {
            return Ok(None);
        };
        let previous = match layout.checkpoints.last_key_value() {
            Some((n, len)) => Some((self.read_checkpoint_header(*n).await?, *len)),
            None => None,
        };
        if !options.force && !checkpoint_due_after(&layout.segments, previous.as_ref()) {
            return Ok(None);
        }

        // 1. Roll: appends from now on go to a new segment, which this checkpoint leaves alone.
        self.create_segment(through + 1).await?;
        *self.tail.lock().await = None;
        if options.stop_after == Some(CheckpointStep::Rolled) {
            return Ok(None);
        }

        // 2. Fold the old checkpoint and every segment up to `through`, then prune.
        let (_, mut snapshot) = self.read_checkpoint(&layout).await?;
        let mut fold = SegmentFold::default();
        let mut etags = BTreeMap::new();
        for n in layout.segments.keys() {
            let from = covered_by(previous.as_ref(), *n);
            match self.replay_segment(*n, from, &mut snapshot).await {
                Ok(read) => {
                    fold.replayed(*n, read.end, read.applied);
                    etags.insert(*n, read.etag);
                }
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let pruned = snapshot.prune(options.as_of, options.retention_days);

        // 3. Write it, whole or not at all, never over another one.
        let header = fold.header(&options);
        let events_replayed = fold.events_replayed();
        let mut bytes = Vec::new();
        let rows =
            write_checkpoint(&mut bytes, &header, &snapshot).expect("writing to memory works");
        drop(snapshot);
        let name = checkpoint_name(through);
        let size = bytes.len() as u64;
        let upload = BlockBlobClientUploadOptions {
            blob_content_type: Some("application/x-ndjson".into()),
            ..BlockBlobClientUploadOptions::default().if_not_exists()
        };
        match self
            .blob(&name)
            .upload(RequestContent::from(bytes), Some(upload))
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(storage::status(&e), Some(409) | Some(412)) => {
                return Err(LedgerError::Storage {
                    location: self.at(&name),
                    operation: "writing a ledger checkpoint".into(),
                    detail: "another checkpoint of the same segments was written first (two runs at once?): left to it".into(),
                })
            }
            Err(e) => return Err(self.storage_error(&name, "writing a ledger checkpoint", &e)),
        }
        tracing::info!(checkpoint = %self.at(&name), rows, bytes = size, events_replayed, pruned_issues = pruned.issues, pruned_insights = pruned.insights, "ledger checkpoint written");
        let done = CheckpointDone {
            location: self.at(&name),
            through_segment: through,
            events_replayed,
            rows,
            bytes: size,
            pruned,
        };
        if options.stop_after == Some(CheckpointStep::SnapshotWritten) {
            return Ok(Some(done));
        }

        // 4. Delete the segments it holds, each only if unchanged since it was read.
        for (n, etag) in etags {
            let seg = segment_name(n);
            let Some(etag) = etag else { continue };
            let options = BlobClientDeleteOptions {
                if_match: Some(etag.into()),
                ..Default::default()
            };
            match self.blob(&seg).delete(Some(options)).await {
                Ok(_) => {}
                Err(e) if storage::status(&e) == Some(412) => {
                    tracing::info!(segment = %seg, "a ledger segment grew after it was read: kept");
                }
                Err(e) if storage::status(&e) == Some(404) => {}
                Err(e) => {
                    tracing::warn!(segment = %seg, error = %storage::describe(&e), "could not delete a ledger segment held by the checkpoint");
                }
            }
        }
        if options.stop_after == Some(CheckpointStep::SegmentsDeleted) {
            return Ok(Some(done));
        }

        // 5. Older checkpoints.
        for n in layout.checkpoints.keys().filter(|n| **n < through) {
            let old = checkpoint_name(*n);
            if let Err(e) = self.blob(&old).delete(None).await {
                if storage::status(&e) != Some(404) {
                    tracing::warn!(checkpoint = %old, error = %storage::describe(&e), "could not delete an older ledger checkpoint");
                }
            }
        }
        Ok(Some(done))
    }

    /// Creates a segment unless it exists (`If-None-Match: *`: never truncates one).
    async fn create_segment(&self, n: u32) -> Result<(), LedgerError> {
        let name = segment_name(n);
        let options = AppendBlobClientCreateOptions {
            if_none_match: Some("*".into()),
            blob_content_type: Some("application/x-ndjson".into()),
            ..Default::default()
        };
        match self
            .blob(&name)
            .append_blob_client()
            .create(Some(options))
            .await
        {
            Ok(_) => {
                tracing::info!(segment = %name, "ledger segment created");
                Ok(())
            }
            // Another writer created it first: use theirs.
            Err(e) if matches!(storage::status(&e), Some(409) | Some(412)) => Ok(()),
            Err(e) => Err(self.storage_error(&name, "creating a ledger segment", &e)),
        }
    }

    async fn measure_segment(&self, n: u32) -> Result<Option<Tail>, LedgerError> {
        let name = segment_name(n);
        match self.blob(&name).get_properties(None).await {
            Ok(props) => Ok(Some(Tail {
                segment: n,
                len: props.content_length().ok().flatten().unwrap_or(0),
                blocks: props
                    .blob_committed_block_count()
                    .ok()
                    .flatten()
                    .unwrap_or(0) as i64,
            })),
            Err(e) if storage::status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.storage_error(&name, "reading a ledger segment's properties", &e)),
        }
    }

    /// The current last segment; created when there is none. A segment a checkpoint
    /// deleted is never created again (its bytes would be taken for ones it holds): when the
    /// listed last segment is gone, the listing is read again.
    async fn discover_tail(&self) -> Result<Tail, LedgerError> {
        for _ in 0..5 {
            let layout = self.layout().await?;
            let last = match (
                layout.segments.last_key_value(),
                layout.checkpoints.last_key_value(),
            ) {
                (Some((n, _)), _) => *n,
                (None, checkpoint) => {
                    let first = checkpoint.map_or(1, |(c, _)| c + 1);
                    self.create_segment(first).await?;
                    first
                }
            };
            if let Some(t) = self.measure_segment(last).await? {
                return Ok(t);
            }
        }
        Err(LedgerError::Storage {
            location: self.at(LEDGER_PREFIX),
            operation: "finding the ledger segment to append to".into(),
            detail: "the last segment disappeared repeatedly".into(),
        })
    }

    /// Whether `chunk` is what the segment holds at `offset` (our own earlier attempt landed).
    async fn landed(&self, tail: &Tail, chunk: &[u8]) -> Result<bool, LedgerError> {
        let name = segment_name(tail.segment);
        let options = BlobClientDownloadOptions {
            range: Some(HttpRange::new(tail.len, chunk.len() as u64)),
            ..Default::default()
        };
        match self.blob(&name).download(Some(options)).await {
            Ok(result) => {
                let bytes = result
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.storage_error(&name, "checking an append", &e))?;
                Ok(bytes.as_ref() == chunk)
            }
            // 416: nothing at that offset yet.
            Err(e) if storage::status(&e) == Some(416) => Ok(false),
            Err(e) => Err(self.storage_error(&name, "checking an append", &e)),
        }
    }

    /// Appends one block (all of it or nothing) at the end of the current segment.
    async fn append_chunk(&self, tail: &mut Option<Tail>, chunk: &[u8]) -> Result<(), LedgerError> {
        for attempt in 0..APPEND_ATTEMPTS {
            let mut t = match tail.take() {
                Some(t) => t,
                None => self.discover_tail().await?,
            };
            if t.blocks >= ROLL_AT_BLOCKS
                || (t.len > 0 && t.len + chunk.len() as u64 > ROLL_AT_BYTES)
            {
                self.create_segment(t.segment + 1).await?;
                t = self.measure_segment(t.segment + 1).await?.unwrap_or(Tail {
                    segment: t.segment + 1,
                    len: 0,
                    blocks: 0,
                });
            }
            let name = segment_name(t.segment);
            let options = AppendBlobClientAppendBlockOptions {
                append_position: Some(t.len as i64),
                ..Default::default()
            };
            let result = self
                .blob(&name)
                .append_blob_client()
                .append_block(
                    RequestContent::from(chunk.to_vec()),
                    chunk.len() as u64,
                    Some(options),
                )
                .await;
            match result {
                Ok(r) => {
                    let blocks = r.blob_committed_block_count().ok().flatten().map(i64::from);
                    *tail = Some(Tail {
                        segment: t.segment,
                        len: t.len + chunk.len() as u64,
                        blocks: blocks.unwrap_or(t.blocks + 1),
                    });
                    return Ok(());
                }
                Err(e) if storage::status(&e) == Some(412) => {
                    if self.landed(&t, chunk).await? {
                        tracing::debug!(segment = %name, "an append retried by the SDK had landed");
                        *tail = self.measure_segment(t.segment).await?;
                        return Ok(());
                    }
                    if attempt % 20 == 19 {
                        tracing::info!(segment = %name, attempt, "ledger append contended; retrying");
                    }
                    // Someone else appended: learn the new end and try again.
                    *tail = self.measure_segment(t.segment).await?;
                    // Spread contending writers a little.
                    let jitter = rand::random::<u64>() % (5 + attempt as u64).min(50);
                    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
                }
                Err(e) if storage::status(&e) == Some(404) => {
                    *tail = None;
                }
                Err(e) if storage::error_code(&e) == Some("BlockCountExceedsLimit") => {
                    *tail = Some(Tail {
                        blocks: ROLL_AT_BLOCKS,
                        ..t
                    });
                }
                Err(e) => return Err(self.storage_error(&name, "appending to the ledger", &e)),
            }
        }
        Err(LedgerError::Storage {
            location: self.at(LEDGER_PREFIX),
            operation: "appending to the ledger".into(),
            detail: format!("still contended after {APPEND_ATTEMPTS} attempts"),
        })
    }

    /// Replaces `latest.json` unless it already holds a newer report.
    async fn update_latest(&self, report: &RunReport, json: &[u8]) -> Result<(), LedgerError> {
        for _ in 0..20 {
            let current = self.read(LATEST_REPORT).await?;
            let condition = match &current {
                None => BlockBlobClientUploadOptions::default().if_not_exists(),
                Some((bytes, etag)) => {
                    if let Ok(existing) = serde_json::from_slice::<RunReport>(bytes) {
                        if existing.started_at > report.started_at
                            && existing.run_id != report.run_id
                        {
                            return Ok(());
                        }
                    }
                    BlockBlobClientUploadOptions {
                        if_match: etag.clone().map(Into::into),
                        ..Default::default()
                    }
                }
            };
            let options = BlockBlobClientUploadOptions {
                blob_content_type: Some("application/json".into()),
                ..condition
            };
            match self
                .blob(LATEST_REPORT)
                .upload(RequestContent::from(json.to_vec()), Some(options))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if matches!(storage::status(&e), Some(409) | Some(412)) => continue,
                Err(e) => {
                    return Err(self.storage_error(LATEST_REPORT, "writing the latest report", &e))
                }
            }
        }
        Err(LedgerError::Storage {
            location: self.at(LATEST_REPORT),
            operation: "writing the latest report".into(),
            detail: "still contended after 20 attempts".into(),
        })
    }

    async fn read_report(&self, name: &str) -> Result<Option<RunReport>, LedgerError> {
        match self.read(name).await? {
            None => Ok(None),
            Some((bytes, _)) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| LedgerError::Corrupt {
                        location: self.at(name),
                        detail: e.to_string(),
                    })
            }
        }
    }
}

struct BlobLock {
    blob: BlobClient,
    location: String,
    lease_id: String,
}

#[async_trait]
impl RunLock for BlobLock {
    async fn renew(&self) -> Result<(), LedgerError> {
        self.blob
            .renew_lease(self.lease_id.clone(), None)
            .await
            .map(|_| ())
            .map_err(|e| LedgerError::Storage {
                location: self.location.clone(),
                operation: "renewing the run lock (blob lease)".into(),
                detail: match storage::status(&e) {
                    Some(409) => format!(
                        "{}: the lease was lost (expired and taken by another run?)",
                        storage::describe(&e)
                    ),
                    _ => storage::describe(&e),
                },
            })
    }

    async fn release(self: Box<Self>) -> Result<(), LedgerError> {
        match self.blob.release_lease(self.lease_id.clone(), None).await {
            Ok(_) => Ok(()),
            Err(e) => Err(LedgerError::Storage {
                location: self.location.clone(),
                operation: "releasing the run lock (blob lease)".into(),
                detail: storage::describe(&e),
            }),
        }
    }
}

/// Who holds the lease, for the Busy message: run id, host, since when, and the bound on
/// how long a crashed holder keeps it (one lease period after its last renewal). Never the
/// raw blob.
fn describe_lease_holder(body: &str, lease_seconds: u32) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let mut out = match text("run_id") {
        Some(run) => format!("run {run}"),
        None => "another run".to_string(),
    };
    if let Some(host) = text("host") {
        out.push_str(&format!(" on {host}"));
    }
    if let Some(since) = text("since") {
        out.push_str(&format!(", since {since}"));
    }
    out.push_str(&format!(
        ", holds the Blob lease; if it crashed, the lease expires within {lease_seconds} s of its last renewal"
    ));
    out
}

fn holder_body(run_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "run_id": run_id,
        "since": chrono::Utc::now().to_rfc3339(),
        "host": std::env::var("WEBSITE_INSTANCE_ID")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default(),
        "pid": std::process::id(),
    }))
    .expect("lock body serialises")
}

#[async_trait]
impl LedgerStore for BlobLedger {
    fn describe(&self) -> String {
        format!("Blob container {}", self.location)
    }

    #[tracing::instrument(skip_all, err)]
    async fn lock(&self, run_id: &str) -> Result<Box<dyn RunLock>, LedgerError> {
        self.ensure_container().await?;
        let blob = self.blob(LOCK_BLOB);
        // The lock blob must exist to be leased; never overwrite one (it may be leased).
        let create = BlockBlobClientUploadOptions::default().if_not_exists();
        match blob
            .upload(RequestContent::from(b"{}".to_vec()), Some(create))
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(storage::status(&e), Some(409) | Some(412)) => {}
            Err(e) => return Err(self.storage_error(LOCK_BLOB, "creating the run lock blob", &e)),
        }
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(uuid::Uuid::new_v4().to_string()),
            ..Default::default()
        };
        let lease_id = match blob
            .acquire_lease(self.lease_seconds as i32, Some(options))
            .await
        {
            Ok(r) => r
                .lease_id()
                .ok()
                .flatten()
                .ok_or_else(|| LedgerError::Storage {
                    location: self.at(LOCK_BLOB),
                    operation: "taking the run lock (blob lease)".into(),
                    detail: "the service returned no lease id".into(),
                })?,
            Err(e) if storage::status(&e) == Some(409) => {
                let holder = match self.read(LOCK_BLOB).await {
                    Ok(Some((bytes, _))) => String::from_utf8_lossy(&bytes).trim().to_string(),
                    _ => String::new(),
                };
                return Err(LedgerError::Busy {
                    holder: describe_lease_holder(&holder, self.lease_seconds),
                });
            }
            Err(e) => {
                return Err(self.storage_error(LOCK_BLOB, "taking the run lock (blob lease)", &e))
            }
        };
        let options = BlockBlobClientUploadOptions {
            lease_id: Some(lease_id.clone()),
            blob_content_type: Some("application/json".into()),
            ..Default::default()
        };
        if let Err(e) = blob
            .upload(RequestContent::from(holder_body(run_id)), Some(options))
            .await
        {
            // Holding the lock without naming the holder is fine; failing to hold it is not.
            tracing::warn!(error = %storage::describe(&e), "could not write the run lock's holder");
        }
        tracing::info!(lock = %self.at(LOCK_BLOB), lease_s = self.lease_seconds, "run lock taken");
        Ok(Box::new(BlobLock {
            blob,
            location: self.at(LOCK_BLOB),
            lease_id,
        }))
    }

    #[tracing::instrument(skip_all, err)]
    async fn load(&self) -> Result<LedgerSnapshot, LedgerError> {
        // A checkpoint may delete what was listed while it is read: start over from the listing.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.load_once().await {
                Err(e) if is_gone(&e) && attempts < 5 => continue,
                other => return other,
            }
        }
    }

    async fn checkpoint(&self, as_of: NaiveDate) -> Result<Option<CheckpointDone>, LedgerError> {
        self.checkpoint_with(CheckpointOptions::when_due(as_of, self.retention_days))
            .await
    }

    #[tracing::instrument(skip_all, fields(events = events.len()), err)]
    async fn append(&self, events: &[LedgerEvent]) -> Result<(), LedgerError> {
        if events.is_empty() {
            return Ok(());
        }
        self.ensure_container().await?;
        // Whole lines per block, each block at most MAX_BLOCK_BYTES.
        let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
        for e in events {
            let mut line = serde_json::to_vec(e).expect("ledger events serialise");
            line.push(b'\n');
            let current = chunks.last_mut().expect("one chunk");
            if !current.is_empty() && current.len() + line.len() > MAX_BLOCK_BYTES {
                chunks.push(line);
            } else {
                current.extend_from_slice(&line);
            }
        }
        let mut tail = self.tail.lock().await;
        for chunk in &chunks {
            if let Err(e) = self.append_chunk(&mut tail, chunk).await {
                // Forget what we knew: the next call re-reads the segment's end.
                *tail = None;
                return Err(e);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ReportStore for BlobLedger {
    async fn save_report(&self, report: &RunReport) -> Result<String, LedgerError> {
        self.ensure_container().await?;
        let d = report.started_at;
        let folder = format!("reports/{:04}/{:02}/{:02}", d.year(), d.month(), d.day());
        let json = serde_json::to_vec_pretty(report).expect("reports serialise");
        let name = format!("{folder}/{}.json", report.run_id);
        self.write(&name, json.clone(), "application/json").await?;
        let csv_name = format!("{folder}/{}.csv", report.run_id);
        self.write(
            &csv_name,
            report.reminders_csv().into_bytes(),
            "text/csv; charset=utf-8",
        )
        .await?;
        // Found by id through this index, never by listing every report.
        self.write(
            &format!("reports/by-id/{}.txt", report.run_id),
            name.clone().into_bytes(),
            "text/plain; charset=utf-8",
        )
        .await?;
        self.update_latest(report, &json).await?;
        Ok(self.at(&name))
    }

    async fn save_report_page(
        &self,
        report: &RunReport,
        html: &str,
    ) -> Result<String, LedgerError> {
        self.ensure_container().await?;
        let d = report.started_at;
        let name = format!(
            "reports/{:04}/{:02}/{:02}/{}.html",
            d.year(),
            d.month(),
            d.day(),
            report.run_id
        );
        let content_type = "text/html; charset=utf-8";
        self.write(&name, html.as_bytes().to_vec(), content_type)
            .await?;
        self.write(
            "reports/latest.html",
            html.as_bytes().to_vec(),
            content_type,
        )
        .await?;
        Ok(self.at(&name))
    }

    async fn last_report(&self) -> Result<Option<RunReport>, LedgerError> {
        self.read_report(LATEST_REPORT).await
    }

    async fn report(&self, run_id: &str) -> Result<Option<RunReport>, LedgerError> {
        if run_id.is_empty()
            || !run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Ok(None);
        }
        if let Some(latest) = self.last_report().await? {
            if latest.run_id == run_id {
                return Ok(Some(latest));
            }
        }
        // The index names the dated blob the report was saved as: two reads, no listing.
        let index = format!("reports/by-id/{run_id}.txt");
        let Some((bytes, _)) = self.read(&index).await? else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&bytes).trim().to_string();
        if !name.starts_with("reports/") || name.split('/').any(|p| p.is_empty() || p == "..") {
            return Err(LedgerError::Corrupt {
                location: self.at(&index),
                detail: "the report index names a blob outside reports/".into(),
            });
        }
        self.read_report(&name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_in_order_and_parse_back() {
        assert_eq!(segment_name(7), "ledger/segment-000007.jsonl");
        assert_eq!(segment_number(&segment_name(123_456)), Some(123_456));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(segment_number("ledger/other.txt"), None);
    }
}
