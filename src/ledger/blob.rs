//! The ledger, the run lock and the run reports in an Azure Blob container (the managed
//! identity needs Storage Blob Data Contributor on it).
//!
//! Layout of the state container:
//! - `lock/run.lock`: the run lock is a **blob lease** on this blob (`lease_seconds`, renewed
//!   by the job during the run, released at the end; a crashed run's lease simply expires).
//!   While leased, its content names the holder (run id, since, host) for the "run in
//!   progress" answer.
//! - `ledger/segment-NNNNNN.jsonl`: the ledger, one [`LedgerEvent`] per line, in **append
//!   blobs**. Each `append` is one append-block (atomic: all of the batch's lines or none),
//!   so recording a batch costs the batch's bytes, not a rewrite of the whole ledger: a
//!   growing ledger of 10k+ owners stays O(events) to write, where rewriting one blob per
//!   batch would be O(n²) over a run. A segment is rolled over before the service's limit
//!   of 50,000 blocks per blob; `load` reads the segments in name order.
//! - `reports/YYYY/MM/DD/<run_id>.json` + `.csv`, and `reports/latest.json` (a copy of the
//!   newest report).
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

use super::{LedgerError, LedgerEvent, LedgerSnapshot, LedgerStore, ReportStore, RunLock};
use crate::azure::storage;
use crate::config::BlobStateSettings;
use crate::report::RunReport;
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RequestContent};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientAppendBlockResultHeaders,
    AppendBlobClientCreateOptions, BlobClientAcquireLeaseOptions,
    BlobClientAcquireLeaseResultHeaders, BlobClientDownloadOptions,
    BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
    BlockBlobClientUploadOptions, HttpRange,
};
use azure_storage_blob::{BlobClient, BlobContainerClient};
use chrono::Datelike;
use futures::TryStreamExt;
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
        let state = settings.blob_state()?;
        let options = crate::azure::sdk_client_options(settings)?;
        Self::new(&state, credential, options)
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

    /// Segment numbers present, in order.
    async fn segments(&self) -> Result<Vec<(u32, String)>, LedgerError> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(LEDGER_PREFIX.into()),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.storage_error(LEDGER_PREFIX, "listing the ledger segments", &e))?;
        let mut out = Vec::new();
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| self.storage_error(LEDGER_PREFIX, "listing the ledger segments", &e))?
        {
            if let Some(name) = item.name {
                if let Some(n) = segment_number(&name) {
                    out.push((n, name));
                }
            }
        }
        out.sort();
        Ok(out)
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

    /// The current last segment, created when there is none.
    async fn discover_tail(&self) -> Result<Tail, LedgerError> {
        let last = self.segments().await?.last().map(|(n, _)| *n).unwrap_or(1);
        for _ in 0..5 {
            if let Some(t) = self.measure_segment(last).await? {
                return Ok(t);
            }
            self.create_segment(last).await?;
        }
        Err(LedgerError::Storage {
            location: self.at(&segment_name(last)),
            operation: "creating a ledger segment".into(),
            detail: "the segment disappeared repeatedly".into(),
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
        let mut snap = LedgerSnapshot::default();
        let segments = match self.segments().await {
            Ok(s) => s,
            Err(LedgerError::Storage { detail, .. }) if detail.contains("ContainerNotFound") => {
                return Ok(snap)
            }
            Err(e) => return Err(e),
        };
        for (_, name) in segments {
            let Some((bytes, _)) = self.read(&name).await? else {
                continue;
            };
            let text = std::str::from_utf8(&bytes).map_err(|e| LedgerError::Corrupt {
                location: self.at(&name),
                detail: format!("not UTF-8: {e}"),
            })?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let event: LedgerEvent =
                    serde_json::from_str(line).map_err(|e| LedgerError::Corrupt {
                        location: self.at(&name),
                        detail: format!("line {}: {e}", i + 1),
                    })?;
                snap.apply(&event);
            }
        }
        Ok(snap)
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
        let wanted = format!("/{run_id}.json");
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some("reports/".into()),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.storage_error("reports/", "listing the reports", &e))?;
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| self.storage_error("reports/", "listing the reports", &e))?
        {
            if let Some(name) = item.name {
                if name.ends_with(&wanted) && name != LATEST_REPORT {
                    return self.read_report(&name).await;
                }
            }
        }
        Ok(None)
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
