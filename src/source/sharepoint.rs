//! SharePoint / Teams library through Microsoft Graph, with the managed identity's Graph
//! token (application permission `Sites.Selected` with a read grant on the one site).
//!
//! Steps, each named in errors: resolve the site (`GET /v1.0/sites/{host}:/{path}` or a
//! site id), find the library (`GET /v1.0/sites/{id}/drives` by name, or the default
//! `/drive`), read the file's properties (`GET /v1.0/drives/{drive}/root:/{path}`: size
//! checked before downloading), then `GET …/root:/{path}:/content`, whose 302 points to a
//! pre-authenticated download URL that is fetched **without** the bearer token (it is
//! another host; the token must not leak there). Graph throttling (429 / 503 with
//! `Retry-After`) and 5xx are retried with bounded waits.

use super::{FetchedExport, Source, SourceError, SourceOrigin};
use crate::azure::{AccessTokens, GRAPH_SCOPE};
use crate::config::{SharePointSettings, SiteRef};
use async_trait::async_trait;
use reqwest::{header, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Reads the export from a SharePoint document library.
pub struct SharePointSource {
    http: reqwest::Client,
    tokens: Arc<dyn AccessTokens>,
    settings: SharePointSettings,
    max_bytes: u64,
    max_retries: u32,
    retry_delay: Duration,
}

impl std::fmt::Debug for SharePointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharePointSource")
            .field("settings", &self.settings)
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
    /// A source for `settings`. `http` must not follow redirects (the download redirect is
    /// followed by hand, without the token); see [`SharePointSource::from_settings`].
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<dyn AccessTokens>,
        settings: SharePointSettings,
        max_bytes: u64,
        max_retries: u32,
        retry_delay: Duration,
    ) -> Self {
        Self {
            http,
            tokens,
            settings,
            max_bytes,
            max_retries,
            retry_delay,
        }
    }

    /// The source configured by `settings` (`REMINDERS_SHAREPOINT_*`, `REMINDERS_GRAPH_BASE_URL`),
    /// with the configured credential and the shared HTTP settings (extra CA).
    pub fn from_settings(
        settings: &crate::config::AzureSettings,
        max_bytes: u64,
    ) -> Result<Self, crate::azure::BuildError> {
        let sp = settings.sharepoint()?;
        // Built with a factory so that a token Graph refuses (401) is really replaced.
        let tokens = crate::azure::CredentialTokens::from_settings(settings)?;
        let http = crate::azure::http_client_builder(settings)?
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::azure::BuildError::Client(e.to_string()))?;
        Ok(Self::new(
            http,
            Arc::new(tokens),
            sp,
            max_bytes,
            settings.max_retries,
            Duration::from_millis(settings.retry_delay_ms),
        ))
    }

    /// The same site and library, another file (a per-run choice).
    pub fn with_file_path(&self, path: &str) -> Self {
        let mut settings = self.settings.clone();
        settings.file_path = path.trim().trim_matches('/').to_string();
        Self {
            http: self.http.clone(),
            tokens: self.tokens.clone(),
            settings,
            max_bytes: self.max_bytes,
            max_retries: self.max_retries,
            retry_delay: self.retry_delay,
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

    /// `{graph}/v1.0/<segments…>`, each segment percent-encoded.
    fn graph_url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.settings.graph_base_url.clone();
        if let Ok(mut s) = url.path_segments_mut() {
            s.pop_if_empty().push("v1.0").extend(segments);
        }
        url
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

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.retry_delay.saturating_mul(1u32 << attempt.min(6));
        let jitter = rand::random::<u64>() % (base.as_millis() as u64 / 4 + 1);
        (base + Duration::from_millis(jitter)).min(MAX_RETRY_AFTER)
    }

    /// One Graph GET with the token: retries 401 once (fresh token), 429 / 503 with
    /// `Retry-After`, other 5xx and transport errors with backoff. Returns the final
    /// response (any status) for the caller to interpret.
    async fn graph_get(&self, step: &str, url: Url) -> Result<reqwest::Response, SourceError> {
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            let token = self
                .tokens
                .token(GRAPH_SCOPE)
                .await
                .map_err(|e| self.failed(step, e.to_string()))?;
            let sent = self.http.get(url.clone()).bearer_auth(token).send().await;
            let response = match sent {
                Ok(r) => r,
                Err(e) if attempt < self.max_retries => {
                    tracing::warn!(step, error = %e, attempt, "Graph request failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(self.failed(step, format!("Graph request failed: {e}"))),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                self.tokens.invalidate(GRAPH_SCOPE);
                refreshed = true;
                continue;
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if retryable && attempt < self.max_retries {
                let wait = retry_after(response.headers()).unwrap_or_else(|| self.backoff(attempt));
                tracing::warn!(
                    step,
                    status = status.as_u16(),
                    wait_ms = wait.as_millis() as u64,
                    attempt,
                    "Graph throttled or failed; retrying"
                );
                tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
                attempt += 1;
                continue;
            }
            return Ok(response);
        }
    }

    /// Maps a non-success Graph answer to the step's error.
    async fn refuse(&self, step: &str, what: &str, response: reqwest::Response) -> SourceError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = v.get("error")?;
                Some(format!(
                    "{}: {}",
                    e.get("code").and_then(|c| c.as_str()).unwrap_or(""),
                    e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                ))
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        match status {
            StatusCode::NOT_FOUND => SourceError::NotFound {
                location: self.location(),
                hint: format!("; {what} not found ({step}: {code})"),
            },
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => SourceError::PermissionDenied {
                location: self.location(),
                hint: format!(
                    "; {step}: HTTP {} {code}; the managed identity needs the Graph application permission Sites.Selected and a read grant on this site",
                    status.as_u16()
                ),
            },
            StatusCode::TOO_MANY_REQUESTS => self.failed(step, format!("throttled by Graph (HTTP 429) after {} retries: {code}", self.max_retries)),
            _ => self.failed(step, format!("HTTP {}: {code}", status.as_u16())),
        }
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        step: &str,
        what: &str,
        url: Url,
    ) -> Result<T, SourceError> {
        let response = self.graph_get(step, url).await?;
        if !response.status().is_success() {
            return Err(self.refuse(step, what, response).await);
        }
        response
            .json::<T>()
            .await
            .map_err(|e| self.failed(step, format!("unexpected Graph answer: {e}")))
    }

    async fn site_id(&self) -> Result<String, SourceError> {
        match &self.settings.site {
            SiteRef::Id(id) => Ok(id.clone()),
            SiteRef::Path { hostname, path } => {
                let host = format!("{hostname}:");
                let segments: Vec<&str> = std::iter::once(host.as_str())
                    .chain(path.split('/').filter(|s| !s.is_empty()))
                    .collect();
                let url = self.graph_url(std::iter::once("sites").chain(segments));
                let site: IdOnly = self.json("resolving the site", "site", url).await?;
                Ok(site.id)
            }
        }
    }

    async fn drive_id(&self, site: &str) -> Result<String, SourceError> {
        match &self.settings.library {
            None => {
                let url = self.graph_url(["sites", site, "drive"]);
                let drive: Drive = self
                    .json(
                        "finding the default library",
                        "default library (drive)",
                        url,
                    )
                    .await?;
                Ok(drive.id)
            }
            Some(name) => {
                let url = self.graph_url(["sites", site, "drives"]);
                let drives: Drives = self
                    .json("listing the libraries", "site's libraries", url)
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

    /// Follows the content redirect to the pre-authenticated URL, without the token.
    async fn download(&self, drive: &str) -> Result<Vec<u8>, SourceError> {
        let step = "downloading the file";
        let mut segments = vec!["drives", drive, "root:"];
        let files = self.file_segments();
        let last = files.len() - 1;
        let colon_last = format!("{}:", files[last]);
        segments.extend(&files[..last]);
        segments.push(&colon_last);
        segments.push("content");
        let response = self.graph_get(step, self.graph_url(segments)).await?;
        let status = response.status();
        let response = if status.is_redirection() {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    self.failed(step, format!("HTTP {} without a Location", status.as_u16()))
                })?;
            let target = response
                .url()
                .join(location)
                .map_err(|e| self.failed(step, format!("bad download URL: {e}")))?;
            let mut attempt = 0;
            loop {
                // A fresh request: no Authorization header goes to the download host.
                match self.http.get(target.clone()).send().await {
                    Ok(r)
                        if (r.status().is_server_error()
                            || r.status() == StatusCode::TOO_MANY_REQUESTS)
                            && attempt < self.max_retries =>
                    {
                        let wait =
                            retry_after(r.headers()).unwrap_or_else(|| self.backoff(attempt));
                        tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
                    }
                    Ok(r) => break r,
                    Err(_) if attempt < self.max_retries => {
                        tokio::time::sleep(self.backoff(attempt)).await
                    }
                    Err(e) => {
                        return Err(self.failed(step, format!("download URL: {}", without_url(&e))))
                    }
                }
                attempt += 1;
            }
        } else {
            response
        };
        if !response.status().is_success() {
            return Err(self.refuse(step, "file", response).await);
        }
        // Never trust the announced size alone: stop reading past the cap.
        let mut bytes = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.failed(step, without_url(&e)))?
        {
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
}

/// The error without its URL (a pre-authenticated URL carries a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<download URL>");
    }
    text
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[async_trait]
impl Source for SharePointSource {
    fn describe(&self) -> String {
        format!(
            "SharePoint file {} through {}",
            self.location(),
            self.settings.graph_base_url
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
            .json(
                "reading the file's properties",
                "file",
                self.graph_url(segments),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        h.insert(
            header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
