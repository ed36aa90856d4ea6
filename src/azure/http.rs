//! HTTP clients for everything that leaves the process: one place that adds the optional
//! extra CA bundle (`REMINDERS_EXTRA_CA_FILE`, for TLS-inspecting proxies and local tests)
//! and sensible timeouts, plus the Azure SDK transport and retry options built from it.

use crate::config::AzureSettings;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The extra CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The file cannot be read.
    #[error("setting REMINDERS_EXTRA_CA_FILE: cannot read {path}: {detail}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The file holds no usable PEM certificate.
    #[error("setting REMINDERS_EXTRA_CA_FILE: {path}: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The client cannot be built (TLS back-end).
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Reads a PEM bundle (one or more `CERTIFICATE` blocks).
pub(crate) fn load_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, HttpClientError> {
    let pem = std::fs::read(path).map_err(|e| HttpClientError::Read {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpClientError::Invalid {
            path: path.display().to_string(),
            detail: format!("not a PEM certificate bundle: {e}"),
        })?;
    if certs.is_empty() {
        return Err(HttpClientError::Invalid {
            path: path.display().to_string(),
            detail: "no certificate found (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        });
    }
    Ok(certs)
}

/// A client builder with the extra CA (when set) and timeouts; callers add what they need
/// (e.g. `redirect(Policy::none())`) and build.
pub fn http_client_builder(
    settings: &AzureSettings,
) -> Result<reqwest::ClientBuilder, HttpClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("lookout-reminders/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.extra_ca_file {
        builder = builder.tls_certs_merge(load_ca_bundle(path)?);
    }
    Ok(builder)
}

/// The shared HTTP client (extra CA, timeouts, default redirects).
pub(crate) fn http_client(settings: &AzureSettings) -> Result<reqwest::Client, HttpClientError> {
    http_client_builder(settings)?
        .build()
        .map_err(|e| HttpClientError::Build(e.to_string()))
}

/// The transport of the Azure SDK clients: the shared client without redirects and without
/// automatic decompression (the SDK's partitioned downloads need the raw bytes).
pub(crate) fn sdk_transport(settings: &AzureSettings) -> Result<Transport, HttpClientError> {
    let client = http_client_builder(settings)?
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .no_deflate()
        .build()
        .map_err(|e| HttpClientError::Build(e.to_string()))?;
    Ok(Transport::new(Arc::new(client)))
}

/// Exponential retries from the settings (`REMINDERS_AZURE_MAX_RETRIES`,
/// `REMINDERS_AZURE_RETRY_DELAY_MS`).
pub(crate) fn sdk_retry(settings: &AzureSettings) -> RetryOptions {
    if settings.max_retries == 0 {
        return RetryOptions::none();
    }
    let initial = settings.retry_delay_ms as i64;
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(initial),
        max_retries: settings.max_retries,
        max_total_elapsed: azure_core::time::Duration::milliseconds(
            (initial * 64).clamp(2_000, 120_000),
        ),
        max_delay: azure_core::time::Duration::milliseconds((initial * 16).clamp(1_000, 30_000)),
    })
}

/// Client options for the SDK clients (transport + retries).
pub fn sdk_client_options(settings: &AzureSettings) -> Result<ClientOptions, HttpClientError> {
    Ok(ClientOptions {
        transport: Some(sdk_transport(settings)?),
        retry: sdk_retry(settings),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_ca_bundle_names_the_setting() {
        let err = load_ca_bundle(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("REMINDERS_EXTRA_CA_FILE"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "hello").unwrap();
        let err = load_ca_bundle(&p).unwrap_err();
        assert!(err.to_string().contains("REMINDERS_EXTRA_CA_FILE"), "{err}");
    }
}
