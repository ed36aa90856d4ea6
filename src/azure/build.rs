//! Building the Azure-backed parts from the settings: one credential and one set of SDK
//! client options (extra CA, retries) shared by the Blob source, the SharePoint source and
//! the Blob ledger. Nothing here makes a request: clients are built synchronously and fetch
//! their first token when first used.

use super::credential::{credential, CredentialError};
use super::http::HttpClientError;
use super::token::{settings_factory, CredentialTokens};
use crate::config::{AzureSettings, ConfigError};
use azure_core::credentials::TokenCredential;
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

/// The one credential of a process's Azure parts (issue 4): the SDK clients (Blob source,
/// Blob ledger) take [`credential`](Self::credential) directly, the Graph / Bot / mail
/// callers take [`tokens`](Self::tokens), which starts from the same instance. One
/// instance means one token cache: a run asks the identity endpoint once per scope, not
/// once per part.
#[derive(Clone)]
pub(crate) struct SharedCredential {
    /// The credential the SDK clients use.
    pub credential: Arc<dyn TokenCredential>,
    /// Cached tokens from that credential, rebuilt through a factory after a refused token.
    pub tokens: Arc<CredentialTokens>,
}

impl std::fmt::Debug for SharedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCredential").finish_non_exhaustive()
    }
}

impl SharedCredential {
    /// The credential configured by `settings` (nothing is fetched yet).
    pub fn from_settings(settings: &AzureSettings) -> Result<Self, CredentialError> {
        let credential = credential(settings)?;
        let tokens = CredentialTokens::with_first(credential.clone(), settings_factory(settings));
        Ok(Self {
            credential,
            tokens: Arc::new(tokens),
        })
    }

    /// `tokens` as the trait object the HTTP callers take.
    pub(crate) fn access_tokens(&self) -> Arc<dyn super::AccessTokens> {
        self.tokens.clone()
    }
}
