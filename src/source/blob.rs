//! Azure Blob Storage: the export is one blob (by name) or the newest blob under a prefix
//! (by last-modified), read with the managed identity (role Storage Blob Data Reader).
//!
//! The size is checked from the blob's properties before anything is downloaded, and the
//! download is pinned to the ETag that was measured (`If-Match`), so a blob replaced in
//! between is noticed (412) and fetched again instead of mixing two versions.

use super::{FetchedExport, Source, SourceError, SourceOrigin};
use crate::azure::storage;
use crate::config::{BlobExportSettings, BlobSelector};
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobContainerClientListBlobsOptions,
};
use azure_storage_blob::BlobContainerClient;
use futures::TryStreamExt;
use std::sync::Arc;

/// Reads the export from a Blob container.
pub struct BlobSource {
    container: Arc<BlobContainerClient>,
    container_location: String,
    selector: BlobSelector,
    max_bytes: u64,
}

impl std::fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobSource")
            .field("container", &self.container_location)
            .field("selector", &self.selector)
            .finish()
    }
}

/// A blob's properties, as measured before the download.
struct Measured {
    name: String,
    size: u64,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl BlobSource {
    /// A source for `settings`, refusing blobs larger than `max_bytes`. Builds the client
    /// only (no request yet).
    pub fn new(
        settings: &BlobExportSettings,
        credential: Arc<dyn TokenCredential>,
        client_options: ClientOptions,
        max_bytes: u64,
    ) -> Result<Self, SourceError> {
        let (container_location, container) = storage::container_at(
            &settings.account_url,
            &settings.container,
            credential,
            client_options,
        );
        let container = container.map_err(|detail| SourceError::Failed {
            location: container_location.clone(),
            step: "creating the Blob client".into(),
            detail,
        })?;
        Ok(Self {
            container: Arc::new(container),
            container_location,
            selector: settings.selector.clone(),
            max_bytes,
        })
    }

    /// The source configured by `settings` (`REMINDERS_BLOB_ACCOUNT_URL`…), with the
    /// configured credential.
    pub fn from_settings(
        settings: &crate::config::AzureSettings,
        max_bytes: u64,
    ) -> Result<Self, crate::azure::BuildError> {
        let export = settings.blob_export().ok_or_else(|| {
            crate::config::not_chosen("REMINDERS_SOURCE", settings.source.kind_name(), "blob")
        })?;
        let credential = crate::azure::credential(settings)?;
        Self::from_settings_with(settings, export, credential, max_bytes)
    }

    /// The source reading `export` (the configured one, or a request's
    /// [`BlobExportSettings::with_blob`](crate::config::BlobExportSettings::with_blob)) with
    /// the HTTP settings of `settings`, authenticating with `credential` (the process's
    /// shared one, see [`crate::azure::SharedCredential`]).
    pub fn from_settings_with(
        settings: &crate::config::AzureSettings,
        export: &BlobExportSettings,
        credential: Arc<dyn TokenCredential>,
        max_bytes: u64,
    ) -> Result<Self, crate::azure::BuildError> {
        let options = crate::azure::sdk_client_options(settings)?;
        Self::new(export, credential, options, max_bytes)
            .map_err(|e| crate::azure::BuildError::Client(e.to_string()))
    }

    fn location(&self, name: &str) -> String {
        format!("{}/{}", self.container_location.trim_end_matches('/'), name)
    }

    fn failure(&self, location: String, step: &str, e: &azure_core::Error) -> SourceError {
        if storage::is_credential(e) {
            return SourceError::Credential {
                location,
                step: step.into(),
                detail: storage::describe(e),
            };
        }
        match storage::status(e) {
            Some(404) => SourceError::NotFound {
                location,
                hint: match storage::error_code(e) {
                    Some("ContainerNotFound") => "; the container does not exist (REMINDERS_EXPORT_CONTAINER)".into(),
                    _ => String::new(),
                },
            },
            Some(403) => SourceError::PermissionDenied {
                location,
                hint: format!(
                    "; {}: give the app's managed identity the role Storage Blob Data Reader on the container",
                    storage::describe(e)
                ),
            },
            _ => SourceError::Failed {
                location,
                step: step.into(),
                detail: storage::describe(e),
            },
        }
    }

    /// The name of the newest blob under `prefix` (by last-modified, then name).
    async fn newest_under(&self, prefix: &str) -> Result<String, SourceError> {
        let location = format!(
            "{}/{}*",
            self.container_location.trim_end_matches('/'),
            prefix
        );
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.failure(location.clone(), "listing the blobs", &e))?;
        let mut best: Option<(time::OffsetDateTime, String)> = None;
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| self.failure(location.clone(), "listing the blobs", &e))?
        {
            let Some(name) = item.name else { continue };
            // Folder markers (ADLS / Storage Explorer) are not exports.
            if name.ends_with('/') {
                continue;
            }
            let modified = item
                .properties
                .and_then(|p| p.last_modified)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            if best
                .as_ref()
                .is_none_or(|(m, n)| (modified, &name) > (*m, n))
            {
                best = Some((modified, name));
            }
        }
        best.map(|(_, name)| name).ok_or(SourceError::NotFound {
            location,
            hint: "; no blob under this prefix (REMINDERS_EXPORT_PREFIX)".into(),
        })
    }

    async fn measure(&self, name: &str) -> Result<Measured, SourceError> {
        let blob = self.container.blob_client(name);
        let props = blob
            .get_properties(None)
            .await
            .map_err(|e| self.failure(self.location(name), "reading the blob's properties", &e))?;
        let size = props.content_length().ok().flatten().unwrap_or(0);
        let etag = props.etag().ok().flatten().map(|e| e.to_string());
        let last_modified = props.last_modified().ok().flatten().and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
        Ok(Measured {
            name: name.to_string(),
            size,
            etag,
            last_modified,
        })
    }

    async fn download(&self, m: &Measured) -> Result<Option<Vec<u8>>, SourceError> {
        if m.size == 0 {
            return Ok(Some(Vec::new()));
        }
        let blob = self.container.blob_client(&m.name);
        let mut buffer = vec![0u8; m.size as usize];
        let options = BlobClientDownloadOptions {
            if_match: m.etag.clone().map(Into::into),
            ..Default::default()
        };
        match blob.download_into(&mut buffer, Some(options)).await {
            Ok(result) => {
                buffer.truncate(result.len);
                Ok(Some(buffer))
            }
            // Replaced since it was measured: measure again.
            Err(e) if storage::status(&e) == Some(412) => Ok(None),
            Err(e) => Err(self.failure(self.location(&m.name), "downloading the blob", &e)),
        }
    }
}

#[async_trait]
impl Source for BlobSource {
    fn describe(&self) -> String {
        match &self.selector {
            BlobSelector::Name(n) => format!("blob {}", self.location(n)),
            BlobSelector::NewestUnder(p) => format!("newest blob under {}", self.location(p)),
        }
    }

    #[tracing::instrument(skip_all, err)]
    async fn fetch(&self) -> Result<FetchedExport, SourceError> {
        for _attempt in 0..3 {
            let name = match &self.selector {
                BlobSelector::Name(n) => n.clone(),
                BlobSelector::NewestUnder(p) => self.newest_under(p).await?,
            };
            let measured = self.measure(&name).await?;
            if measured.size > self.max_bytes {
                return Err(SourceError::TooLarge {
                    location: self.location(&name),
                    size: measured.size,
                    limit: self.max_bytes,
                });
            }
            let Some(bytes) = self.download(&measured).await? else {
                tracing::info!(blob = %name, "the blob changed during the download; reading it again");
                continue;
            };
            tracing::info!(blob = %name, bytes = bytes.len(), etag = measured.etag.as_deref().unwrap_or(""), "export downloaded");
            let short = name.rsplit('/').next().unwrap_or(&name).to_string();
            return Ok(FetchedExport {
                bytes,
                name: short,
                origin: SourceOrigin {
                    kind: "blob".into(),
                    location: self.location(&name),
                    etag: measured.etag,
                    last_modified: measured.last_modified,
                },
            });
        }
        Err(SourceError::Failed {
            location: self.describe(),
            step: "downloading the blob".into(),
            detail: "the blob kept changing while it was downloaded (3 attempts)".into(),
        })
    }
}
