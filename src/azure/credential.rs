//! The credential: the managed identity in Azure (system- or user-assigned), the developer's
//! Azure CLI / azd login on a laptop. Chosen by `REMINDERS_CREDENTIAL` (default: the managed
//! identity when the host sets `IDENTITY_ENDPOINT`, as Azure Functions does).

use super::http::{sdk_client_options, HttpClientError};
use crate::config::{AzureSettings, CredentialKind};
use azure_core::credentials::TokenCredential;
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};
use std::sync::Arc;

/// The credential cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The HTTP client for the identity endpoint cannot be built.
    #[error(transparent)]
    Http(#[from] HttpClientError),
    /// The SDK refused the configuration.
    #[error("cannot create the {kind} credential: {detail}")]
    Create {
        /// Which credential.
        kind: String,
        /// The SDK's message.
        detail: String,
    },
}

/// Builds the configured credential. Nothing is fetched yet: the first token is asked for
/// when a source or the ledger first needs one.
pub fn credential(settings: &AzureSettings) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    match settings.credential {
        CredentialKind::ManagedIdentity => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: settings
                    .managed_identity_client_id
                    .clone()
                    .map(UserAssignedId::ClientId),
                client_options: sdk_client_options(settings)?,
            };
            let cred = ManagedIdentityCredential::new(Some(options)).map_err(|e| {
                CredentialError::Create {
                    kind: "managed identity".into(),
                    detail: e.to_string(),
                }
            })?;
            Ok(cred)
        }
        CredentialKind::Developer => {
            let cred =
                DeveloperToolsCredential::new(None).map_err(|e| CredentialError::Create {
                    kind: "developer tools".into(),
                    detail: e.to_string(),
                })?;
            Ok(cred)
        }
    }
}
