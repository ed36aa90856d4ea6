//! SharePoint / Teams library through Microsoft Graph, with the managed identity's Graph
//! token (application permission `Sites.Selected` with a read grant on the one site).
//!
//! Steps, each named in errors: resolve the site (`GET /v1.0/sites/{host}:/{path}` or a
//! site id), find the library (`GET /v1.0/sites/{id}/drives` by name, or the default
//! `/drive`), read the file's properties (`GET /v1.0/drives/{drive}/root:/{path}`: size
//! checked before downloading), then `GET …/root:/{path}:/content`, whose 302 points to a
//! pre-authenticated download URL that is fetched **without** the bearer token (it is
//! another host; the token must not leak there).
//!
//! Every Graph request goes through the run's one [`GraphClient`]: its base URL and token
//! scope (`REMINDERS_GRAPH_BASE_URL`, `REMINDERS_GRAPH_SCOPE`), Graph's shared pace, and the
//! shared HTTP layer's retries (408 / 429 / 5xx except 501 and 505, `Retry-After` as seconds
//! or an HTTP date, capped backoff with jitter) and one token refresh on a Graph 401.

use super::{FetchedExport, Source, SourceError, SourceOrigin};
use crate::config::{GraphSettings, SharePointSettings, SiteRef};
use crate::graph::{GraphCall, GraphClient, GraphError, GraphLimits, Pace};
use crate::http::{HttpClient, HttpError, Replay, RetryPolicy};
use async_trait::async_trait;
use reqwest::header;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The longest the download may take, from the `/content` request to the last byte, retries
/// included. The client's read timeout only catches a connection that goes silent; a host
/// that trickles a byte now and then would keep a run (and its ledger lock) forever. Fixed
/// rather than a setting: ten minutes fetch the default 50 MiB cap at ~90 KB/s, far below
/// any working link, and stay well inside an Azure Functions run.
pub const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(10 * 60);

/// Reads the export from a SharePoint document library.
pub struct SharePointSource {
    /// Graph calls, with the token, under the source's retry policy.
    graph: GraphClient,
    /// The pre-authenticated download: no token, and an attempt timeout a little past the
    /// deadline (reqwest's request timeout also covers the body being streamed, and the
    /// deadline, which covers everything, is what should end a slow transfer).
    download: HttpClient,
    settings: SharePointSettings,
    max_bytes: u64,
    download_deadline: Duration,
}

impl std::fmt::Debug for SharePointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharePointSource")
            .field("settings", &self.settings)
            .field("download_deadline", &self.download_deadline)
            .finish()
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct Drive {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Drives {
    value: Vec<Drive>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    name: String,
    #[serde(default)]
    size: u64,
    #[serde(default, rename = "eTag")]
    etag: Option<String>,
    #[serde(default, rename = "lastModifiedDateTime")]
    last_modified: Option<String>,
    #[serde(default)]
    folder: Option<serde_json::Value>,
}

impl SharePointSource {
    /// A source for `settings` reading through `graph` (whose client must not follow
    /// redirects: the download redirect is followed by hand, without the token) and
    /// downloading over `client`. `policy` governs the retries of every request;
    /// `download_deadline` bounds the whole download ([`DOWNLOAD_DEADLINE`] in production,
    /// shorter in tests).
    pub fn new(
        graph: GraphClient,
        client: reqwest::Client,
        settings: SharePointSettings,
        max_bytes: u64,
        policy: RetryPolicy,
        download_deadline: Duration,
    ) -> Self {
        let download = HttpClient::new("sharepoint download", client).with_policy(RetryPolicy {
            timeout: download_deadline.saturating_add(Duration::from_secs(1)),
            ..policy.clone()
        });
        Self {
            graph: graph.with_policy(policy),
            download,
            settings,
            max_bytes,
            download_deadline,
        }
    }

    /// The source configured by `settings` (`REMINDERS_SHAREPOINT_*`) at `graph`
    /// (`REMINDERS_GRAPH_*`), with its own credential and pace; the app passes the run's
    /// Graph client with [`from_settings_with`](Self::from_settings_with).
    pub fn from_settings(
        settings: &crate::config::AzureSettings,
        graph: &GraphSettings,
        max_bytes: u64,
    ) -> Result<Self, crate::azure::BuildError> {
        // Built with a factory so that a token Graph refuses (401) is really replaced.
        let tokens = crate::azure::CredentialTokens::from_settings(settings)?;
        let graph = GraphClient::new(
            graph,
            Arc::new(tokens),
            Self::client(settings)?,
            GraphLimits::from_settings(&crate::config::DeliverySettings::default()),
        );
        let sharepoint = configured(settings)?;
        Self::from_settings_with(settings, sharepoint, graph, max_bytes)
    }

    /// The source reading `sharepoint` (the configured one, or a request's
    /// [`SharePointSettings::with_file_path`](crate::config::SharePointSettings::with_file_path))
    /// through the run's `graph` client, with the shared HTTP settings of `settings` (extra
    /// CA), the retries of `REMINDERS_AZURE_MAX_RETRIES` / `REMINDERS_AZURE_RETRY_DELAY_MS`
    /// and the [`DOWNLOAD_DEADLINE`].
    pub fn from_settings_with(
        settings: &crate::config::AzureSettings,
        sharepoint: &SharePointSettings,
        graph: GraphClient,
        max_bytes: u64,
    ) -> Result<Self, crate::azure::BuildError> {
        Ok(Self::new(
            graph,
            Self::client(settings)?,
            sharepoint.clone(),
            max_bytes,
            Self::retry_policy(settings),
            DOWNLOAD_DEADLINE,
        ))
    }

    /// The HTTP client of `settings` (extra CA) that does not follow redirects: Graph's
    /// download redirect is followed by hand, without the token.
    pub fn client(
        settings: &crate::config::AzureSettings,
    ) -> Result<reqwest::Client, crate::azure::BuildError> {
        crate::azure::http_client_builder(settings)?
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::azure::BuildError::Client(e.to_string()))
    }

    /// The retry policy of `settings`: `REMINDERS_AZURE_MAX_RETRIES` retries after the first
    /// attempt, backoff from `REMINDERS_AZURE_RETRY_DELAY_MS`, the shared caps otherwise.
    pub fn retry_policy(settings: &crate::config::AzureSettings) -> RetryPolicy {
        RetryPolicy {
            max_attempts: settings.max_retries.saturating_add(1),
            base_delay: Duration::from_millis(settings.retry_delay_ms),
            ..RetryPolicy::default()
        }
    }

    fn location(&self) -> String {
        let site = match &self.settings.site {
            SiteRef::Path { hostname, path } => format!("{hostname}{path}"),
            SiteRef::Id(id) => format!("site {id}"),
        };
        let library = self
            .settings
            .library
            .as_deref()
            .unwrap_or("(default library)");
        format!("sharepoint://{site}/{library}/{}", self.settings.file_path)
    }

    fn file_segments(&self) -> Vec<&str> {
        self.settings
            .file_path
            .split('/')
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn failed(&self, step: &str, detail: impl Into<String>) -> SourceError {
        SourceError::Failed {
            location: self.location(),
            step: step.into(),
            detail: detail.into(),
        }
    }

    /// Maps a Graph call that failed for good to the step's error: `what` not found, the
    /// `Sites.Selected` hint on 401 / 403, throttling, anything else with the service's words.
    fn graph_failure(&self, step: &str, what: &str, e: GraphError) -> SourceError {
        let e = e.source;
        let said = |e: &HttpError| match e {
            HttpError::Status { code, message, .. } => format!(
                "{}: {}",
                code.as_deref().unwrap_or(""),
                message.as_deref().unwrap_or("")
            ),
            other => other.to_string(),
        };
        match e.status() {
            Some(404) => SourceError::NotFound {
                location: self.location(),
                hint: format!("; {what} not found ({step}: {})", said(&e)),
            },
            Some(status @ (401 | 403)) => SourceError::PermissionDenied {
                location: self.location(),
                hint: format!(
                    "; {step}: HTTP {status} {}; the managed identity needs the Graph application permission Sites.Selected and a read grant on this site",
                    said(&e)
                ),
            },
            Some(429) => self.failed(
                step,
                format!(
                    "throttled by Graph (HTTP 429) after {} attempts: {}",
                    e.attempts(),
                    said(&e)
                ),
            ),
            _ => self.failed(step, e.to_string()),
        }
    }

    /// One Graph GET with the token, parsed as JSON.
    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        step: &str,
        what: &str,
        segments: &[&str],
    ) -> Result<T, SourceError> {
        self.graph
            .get(GraphCall::Files, Pace::Directory, segments, &[])
            .await
            .map_err(|e| match e.source {
                HttpError::Decode { .. } => self.failed(step, e.source.to_string()),
                _ => self.graph_failure(step, what, e),
            })
    }

    async fn site_id(&self) -> Result<String, SourceError> {
        match &self.settings.site {
            SiteRef::Id(id) => Ok(id.clone()),
            SiteRef::Path { hostname, path } => {
                let host = format!("{hostname}:");
                let segments: Vec<&str> = std::iter::once(host.as_str())
                    .chain(path.split('/').filter(|s| !s.is_empty()))
                    .collect();
                let segments: Vec<&str> = std::iter::once("sites").chain(segments).collect();
                let site: IdOnly = self.json("resolving the site", "site", &segments).await?;
                Ok(site.id)
            }
        }
    }

    async fn drive_id(&self, site: &str) -> Result<String, SourceError> {
        match &self.settings.library {
            None => {
                let drive: Drive = self
                    .json(
                        "finding the default library",
                        "default library (drive)",
                        &["sites", site, "drive"],
                    )
                    .await?;
                Ok(drive.id)
            }
            Some(name) => {
                let drives: Drives = self
                    .json(
                        "listing the libraries",
                        "site's libraries",
                        &["sites", site, "drives"],
                    )
                    .await?;
                let found = drives
                    .value
                    .iter()
                    .find(|d| d.name.eq_ignore_ascii_case(name))
                    .map(|d| d.id.clone());
                found.ok_or_else(|| SourceError::NotFound {
                    location: self.location(),
                    hint: format!(
                        "; library '{name}' not found (REMINDERS_SHAREPOINT_LIBRARY); the site has: {}",
                        drives.value.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                })
            }
        }
    }

    /// The file's bytes, within the download deadline.
    async fn download(&self, drive: &str) -> Result<Vec<u8>, SourceError> {
        let step = "downloading the file";
        match tokio::time::timeout(self.download_deadline, self.download_unbounded(step, drive))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(self.failed(
                step,
                format!(
                    "not finished within the download deadline of {} s (the download host is stalled or too slow); run again",
                    self.download_deadline.as_secs_f64()
                ),
            )),
        }
    }

    /// Asks Graph for the content, follows its redirect to the pre-authenticated URL
    /// without the token, and streams the body under the size cap.
    async fn download_unbounded(&self, step: &str, drive: &str) -> Result<Vec<u8>, SourceError> {
        let mut segments = vec!["drives", drive, "root:"];
        let files = self.file_segments();
        let last = files.len() - 1;
        let colon_last = format!("{}:", files[last]);
        segments.extend(&files[..last]);
        segments.push(&colon_last);
        segments.push("content");
        let content_url = self.graph.url(&segments, &[]);
        // Streamed: Graph normally answers 302, but should it serve the bytes itself the
        // cap must hold as well. Redirects are not followed by the client (see `new`).
        let content = self
            .graph
            .send_streaming(GraphCall::Files, |c| c.get(content_url.clone()))
            .await
            .map_err(|e| self.graph_failure(step, "file", e))?;
        let status = content.response.status();
        let response = if status.is_redirection() {
            let location = content
                .response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    self.failed(
                        step,
                        format!("graph: HTTP {} without a Location", status.as_u16()),
                    )
                })?;
            let target = content_url
                .join(location)
                .map_err(|e| self.failed(step, format!("bad download URL: {e}")))?;
            // A fresh request and `auth: None`: no Authorization header goes to the
            // download host (the URL carries its own short-lived authorisation).
            self.download
                .send_streaming(|| self.download.client().get(target.clone()), None)
                .await
                .map_err(|e| self.download_failure(step, e))?
                .response
        } else if status.is_success() {
            content.response
        } else {
            return Err(self.failed(step, format!("graph: unexpected HTTP {}", status.as_u16())));
        };
        if let Some(announced) = response.content_length() {
            if announced > self.max_bytes {
                return Err(SourceError::TooLarge {
                    location: self.location(),
                    size: announced,
                    limit: self.max_bytes,
                });
            }
        }
        // Never trust the announced size alone: stop reading past the cap.
        let mut bytes = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            // Without the URL: a pre-authenticated URL carries a token in its query.
            let e = e.without_url();
            let detail = if e.is_timeout() {
                // The client's read timeout: the host went silent.
                "download stalled: no data within the read timeout".to_string()
            } else {
                format!("download interrupted: {e}")
            };
            self.failed(step, detail)
        })? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > self.max_bytes {
                return Err(SourceError::TooLarge {
                    location: self.location(),
                    size: bytes.len() as u64,
                    limit: self.max_bytes,
                });
            }
        }
        Ok(bytes)
    }

    /// Maps a failed download from the pre-authenticated URL. A 401 / 403 there is the
    /// URL's own authorisation (expired or revoked), not the identity's Graph permission.
    fn download_failure(&self, step: &str, e: HttpError) -> SourceError {
        match e.status() {
            Some(status @ (401 | 403)) => self.failed(
                step,
                format!(
                    "the pre-authenticated download URL was refused (HTTP {status}); it may have expired: run again"
                ),
            ),
            Some(429) => self.failed(
                step,
                format!(
                    "throttled by the download host (HTTP 429) after {} attempts",
                    e.attempts()
                ),
            ),
            _ => self.failed(step, e.to_string()),
        }
    }
}

#[async_trait]
impl Source for SharePointSource {
    fn describe(&self) -> String {
        format!(
            "SharePoint file {} through {}",
            self.location(),
            self.graph.base_url().as_str().trim_end_matches('/')
        )
    }

    #[tracing::instrument(skip_all, err)]
    async fn fetch(&self) -> Result<FetchedExport, SourceError> {
        if self.file_segments().is_empty() {
            return Err(self.failed(
                "reading the settings",
                "REMINDERS_SHAREPOINT_FILE_PATH is empty",
            ));
        }
        let site = self.site_id().await?;
        let drive = self.drive_id(&site).await?;
        let mut segments = vec!["drives", drive.as_str(), "root:"];
        segments.extend(self.file_segments());
        let item: Item = self
            .json("reading the file's properties", "file", &segments)
            .await?;
        if item.folder.is_some() {
            return Err(self.failed(
                "reading the file's properties",
                "this path is a folder, not a file",
            ));
        }
        if item.size > self.max_bytes {
            return Err(SourceError::TooLarge {
                location: self.location(),
                size: item.size,
                limit: self.max_bytes,
            });
        }
        let bytes = self.download(&drive).await?;
        tracing::info!(bytes = bytes.len(), "export downloaded from SharePoint");
        let name = if item.name.is_empty() {
            self.file_segments()
                .last()
                .map(|s| s.to_string())
                .unwrap_or_default()
        } else {
            item.name
        };
        Ok(FetchedExport {
            bytes,
            name,
            origin: SourceOrigin {
                kind: "sharepoint".into(),
                location: self.location(),
                etag: item.etag,
                last_modified: item.last_modified,
            },
        })
    }
}

/// The file name of the published insights page: one file, replaced after each live run, so
/// the digest's link stays the same from day to day.
pub(crate) const PUBLISHED_PAGE_NAME: &str = "lookout-insights.html";

/// Publishes the insights page to a folder of the export's library
/// (`REMINDERS_REPORT_SHAREPOINT_FOLDER`), through the source's own site / library
/// resolution, token and retries. Needs a `write` grant on the site (`Sites.Selected`).
///
/// One `PUT {graph}/v1.0/drives/{drive}/root:/{folder}/{file}:/content` with
/// `Content-Type: text/html`: the simple upload, for files up to 250 MB
/// (<https://learn.microsoft.com/graph/api/driveitem-put-content>); the page is far smaller
/// than the 4 MB above which an upload session is advised. Graph creates missing folders of
/// the path. Replaying the PUT is safe: it replaces the same file with the same bytes.
#[derive(Debug)]
pub struct SharePointPagePublisher {
    source: SharePointSource,
    folder: String,
}

#[derive(Deserialize)]
struct UploadedItem {
    #[serde(default, rename = "webUrl")]
    web_url: Option<String>,
}

/// The configured SharePoint export, or an error naming `REMINDERS_SOURCE`.
fn configured(
    settings: &crate::config::AzureSettings,
) -> Result<&SharePointSettings, crate::config::ConfigError> {
    settings.sharepoint().ok_or_else(|| {
        crate::config::not_chosen(
            "REMINDERS_SOURCE",
            settings.source.kind_name(),
            "sharepoint",
        )
    })
}

impl SharePointPagePublisher {
    /// Publishes to `folder` (a path in the library of `source`).
    pub(crate) fn new(source: SharePointSource, folder: &str) -> Self {
        Self {
            source,
            folder: folder.trim().trim_matches('/').to_string(),
        }
    }

    /// The publisher of `settings` (`REMINDERS_REPORT_SHAREPOINT_FOLDER`), `None` when unset.
    pub fn from_settings_with(
        settings: &crate::config::AzureSettings,
        graph: GraphClient,
    ) -> Result<Option<Self>, crate::azure::BuildError> {
        let Some(folder) = &settings.report_sharepoint_folder else {
            return Ok(None);
        };
        // The size cap is the download's; the publisher downloads nothing.
        let source =
            SharePointSource::from_settings_with(settings, configured(settings)?, graph, 0)?;
        Ok(Some(Self::new(source, folder)))
    }

    async fn upload(&self, html: &str) -> Result<String, SourceError> {
        let site = self.source.site_id().await?;
        let drive = self.source.drive_id(&site).await?;
        let step = "uploading the insights page";
        let target = format!("{PUBLISHED_PAGE_NAME}:");
        let mut segments = vec!["drives", drive.as_str(), "root:"];
        segments.extend(self.folder.split('/').filter(|s| !s.is_empty()));
        segments.push(&target);
        segments.push("content");
        let url = self.source.graph.url(&segments, &[]);
        let body = bytes::Bytes::copy_from_slice(html.as_bytes());
        // Replaying the PUT is safe: it replaces the same file with the same bytes.
        let uploaded = self
            .source
            .graph
            .send(GraphCall::Files, Pace::Directory, Replay::Safe, |c| {
                c.put(url.clone())
                    .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                    .body(body.clone())
            })
            .await
            .map_err(|e| match e.status() {
                Some(status @ (401 | 403)) => self.source.failed(
                    step,
                    format!("HTTP {status}: publishing needs a write grant (not read) on this site for Sites.Selected; see scripts/grant-permissions.sh ({e})"),
                ),
                _ => self.source.graph_failure(step, "folder", e),
            })?;
        let item: UploadedItem = uploaded
            .json("graph")
            .map_err(|e| self.source.failed(step, e.to_string()))?;
        item.web_url
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or_else(|| {
                self.source
                    .failed(step, "graph: the uploaded item has no webUrl")
            })
    }
}

#[async_trait]
impl crate::ledger::PagePublisher for SharePointPagePublisher {
    fn describe(&self) -> String {
        let site = match &self.source.settings.site {
            SiteRef::Path { hostname, path } => format!("{hostname}{path}"),
            SiteRef::Id(id) => format!("site {id}"),
        };
        let library = self
            .source
            .settings
            .library
            .as_deref()
            .unwrap_or("(default library)");
        format!(
            "sharepoint://{site}/{library}/{}/{PUBLISHED_PAGE_NAME}",
            self.folder
        )
    }

    async fn publish_page(&self, html: &str) -> Result<String, String> {
        self.upload(html).await.map_err(|e| {
            // The source's errors name the export's file; say which file this was.
            format!(
                "publishing {}: {e}",
                crate::ledger::PagePublisher::describe(self)
            )
        })
    }
}
