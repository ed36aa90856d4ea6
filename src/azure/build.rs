//! Building the Azure-backed parts from the settings: one credential and one set of SDK
//! client options (extra CA, retries) shared by the Blob source, the SharePoint source and
//! the Blob ledger. Nothing here makes a request: clients are built synchronously and fetch
//! their first token when first used.

use super::credential::{credential, CredentialError};
use super::http::{sdk_client_options, HttpClientError};
use crate::config::{AzureSettings, ConfigError};
use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use std::sync::Arc;

/// An Azure part cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The credential cannot be created.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The HTTP client cannot be built.
    #[error(transparent)]
    Http(#[from] HttpClientError),
    /// The client cannot be built.
    #[error("{0}")]
    Client(String),
}

impl From<BuildError> for crate::app::WiringError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Config(c) => crate::app::WiringError::Config(c),
            other => crate::app::WiringError::Other(other.to_string()),
        }
    }
}

/// The credential and the SDK client options of `settings`.
pub fn sdk_parts(
    settings: &AzureSettings,
) -> Result<(Arc<dyn TokenCredential>, ClientOptions), BuildError> {
    Ok((credential(settings)?, sdk_client_options(settings)?))
}
