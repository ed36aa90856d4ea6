//! Blob Storage helpers shared by the Blob source and the Blob ledger: building SDK clients
//! from an account URL, and reading the SDK's errors (status, service error code, a short
//! message that names the cause without dumping the response).

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, Url};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use std::error::Error as _;
use std::sync::Arc;

/// The container URL under an account URL (`https://acct.blob.core.windows.net` or, for
/// the emulator, `https://127.0.0.1:10000/devstoreaccount1`).
pub(crate) fn container_url(account_url: &Url, container: &str) -> Url {
    let mut url = account_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(container);
    }
    url
}

/// A container client authenticating with `credential`.
pub fn container_client(
    account_url: &Url,
    container: &str,
    credential: Arc<dyn TokenCredential>,
    client_options: ClientOptions,
) -> azure_core::Result<BlobContainerClient> {
    BlobContainerClient::new(
        container_url(account_url, container),
        Some(credential),
        Some(BlobContainerClientOptions {
            client_options,
            ..Default::default()
        }),
    )
}

/// A container client as the Blob source and ledger build it: the container's URL as text
/// (the location their errors name, with or without a client), and the client or, when the
/// SDK refuses to build it, [`describe`] of why, for the caller to wrap in its own error.
pub fn container_at(
    account_url: &Url,
    container: &str,
    credential: Arc<dyn TokenCredential>,
    client_options: ClientOptions,
) -> (String, Result<BlobContainerClient, String>) {
    let location = container_url(account_url, container).to_string();
    let client = container_client(account_url, container, credential, client_options)
        .map_err(|e| describe(&e));
    (location, client)
}

/// The HTTP status of a failed call, when the service answered.
pub fn status(e: &azure_core::Error) -> Option<u16> {
    e.http_status().map(u16::from)
}

/// Whether the call failed getting a token (identity refused, unreachable, misconfigured)
/// rather than at the service: a configuration problem, told apart so every step that meets
/// it reports it the same way.
pub(crate) fn is_credential(e: &azure_core::Error) -> bool {
    matches!(e.kind(), ErrorKind::Credential)
}

/// The service's error code (`BlobNotFound`, `LeaseAlreadyPresent`…), when it gave one.
pub(crate) fn error_code(e: &azure_core::Error) -> Option<&str> {
    match e.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

/// A one-line description: `HTTP 403 AuthorizationPermissionMismatch` or the transport /
/// credential error with its causes (a TLS failure shows up here, not as a hang).
pub fn describe(e: &azure_core::Error) -> String {
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => format!(
            "HTTP {} {}",
            u16::from(*status),
            error_code.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_string(),
        kind => {
            let mut out = format!("{kind:?}: {e}");
            let mut source = e.source();
            let mut depth = 0;
            while let Some(s) = source {
                let text = s.to_string();
                if !out.contains(&text) {
                    out.push_str(": ");
                    out.push_str(&text);
                }
                source = s.source();
                depth += 1;
                if depth > 6 {
                    break;
                }
            }
            out
        }
    }
}
