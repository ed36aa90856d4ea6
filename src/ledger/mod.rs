//! Record: the ledger of sent reminders (so reruns never send twice), the run lock (so two
//! runs never work at once) and, behind its own trait, the stored run reports.
//!
//! The ledger is an append-only list of [`LedgerEvent`]s; [`LedgerSnapshot`] folds them into
//! "what was last sent to whom for which issue".

mod blob;
mod local;

pub use blob::BlobLedger;
pub use local::LocalLedger;

pub use crate::history::{IssueHistory, LedgerEvent, LedgerSnapshot, ManagerHistory};
use crate::report::RunReport;
use async_trait::async_trait;

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
