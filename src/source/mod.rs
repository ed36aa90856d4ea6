//! Source: where the export comes from (local file, Azure Blob Storage, SharePoint / Teams
//! library through Microsoft Graph). Each source fetches bytes; parsing is the next step.

mod blob;
mod local;
mod sharepoint;

pub use blob::BlobSource;
pub(crate) use local::confined_path;
pub use local::LocalFileSource;
pub use sharepoint::{SharePointPagePublisher, SharePointSource};

pub(crate) use crate::report::SourceOrigin;
use async_trait::async_trait;

/// The export's bytes and where they came from.
#[derive(Clone, Debug)]
pub struct FetchedExport {
    /// The file's content.
    pub bytes: Vec<u8>,
    /// A short name for messages (`issues-export.csv`).
    pub name: String,
    /// Provenance recorded in the run report.
    pub origin: SourceOrigin,
}

/// Why an export could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file / blob / item does not exist.
    #[error("{location}: not found{hint}")]
    NotFound {
        /// What was looked for.
        location: String,
        /// Extra help (empty or starting with "; ").
        hint: String,
    },
    /// The identity may not read it.
    #[error("{location}: permission denied{hint}")]
    PermissionDenied {
        /// What was looked for.
        location: String,
        /// Extra help (empty or starting with "; ").
        hint: String,
    },
    /// Bigger than the configured cap.
    #[error("{location}: the export is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was fetched.
        location: String,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// The app's Azure credential got no token: a configuration problem, not the export's.
    #[error("{location}: {step}: the app's Azure credential got no token (check REMINDERS_CREDENTIAL, REMINDERS_MANAGED_IDENTITY_CLIENT_ID and the identity): {detail}")]
    Credential {
        /// What was looked for.
        location: String,
        /// The step that needed the token.
        step: String,
        /// The credential's message.
        detail: String,
    },
    /// Anything else (network, service error…), with the step that failed.
    #[error("{location}: {step}: {detail}")]
    Failed {
        /// What was looked for.
        location: String,
        /// The step (`reading the file`, `resolving the site`…).
        step: String,
        /// The underlying message.
        detail: String,
    },
}

/// A place an export is fetched from.
#[async_trait]
pub trait Source: Send + Sync {
    /// Where it reads from, for start-up logs and health (no secrets).
    fn describe(&self) -> String;
    /// Fetches the current export.
    async fn fetch(&self) -> Result<FetchedExport, SourceError>;
}
