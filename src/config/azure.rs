//! Settings of the Azure parts: where the export comes from (local / Blob / SharePoint),
//! where the ledger lives (local / Blob) and which credential is used.
//! (Owned by the Azure storage work; the core only needs the kinds.)

use super::{ConfigError, Env};

/// Where the export comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A local file (`REMINDERS_EXPORT_PATH`).
    Local,
    /// Azure Blob Storage.
    Blob,
    /// SharePoint / Teams library through Microsoft Graph.
    SharePoint,
}

/// Where the ledger, lock and reports live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerKind {
    /// A local folder (`REMINDERS_STATE_DIR`).
    Local,
    /// An Azure Blob container.
    Blob,
}

/// Which credential authenticates to Azure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// Managed identity (system- or user-assigned).
    ManagedIdentity,
    /// The developer's tools (Azure CLI / azd).
    Developer,
}

/// Azure settings.
#[derive(Clone, Debug)]
pub struct AzureSettings {
    /// Export source.
    pub source: SourceKind,
    /// Ledger store.
    pub ledger: LedgerKind,
}

impl AzureSettings {
    /// Reads `REMINDERS_SOURCE`, `REMINDERS_LEDGER`…
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let source = match env.get("REMINDERS_SOURCE").map(str::to_lowercase).as_deref() {
            None | Some("local") => SourceKind::Local,
            Some("blob") => SourceKind::Blob,
            Some("sharepoint") => SourceKind::SharePoint,
            Some(v) => return Err(ConfigError::invalid("REMINDERS_SOURCE", v, "expected local, blob or sharepoint")),
        };
        let ledger = match env.get("REMINDERS_LEDGER").map(str::to_lowercase).as_deref() {
            None | Some("local") => LedgerKind::Local,
            Some("blob") => LedgerKind::Blob,
            Some(v) => return Err(ConfigError::invalid("REMINDERS_LEDGER", v, "expected local or blob")),
        };
        Ok(Self { source, ledger })
    }
}
