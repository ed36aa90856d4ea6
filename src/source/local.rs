//! A local file: the CLI's and tests' source.

use super::{FetchedExport, Source, SourceError, SourceOrigin};
use async_trait::async_trait;
use std::path::PathBuf;

/// Reads the export from a path on disk.
#[derive(Clone, Debug)]
pub struct LocalFileSource {
    path: PathBuf,
    max_bytes: u64,
}

impl LocalFileSource {
    /// A source for `path`, refusing files larger than `max_bytes`.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            path: path.into(),
            max_bytes,
        }
    }
}

#[async_trait]
impl Source for LocalFileSource {
    fn describe(&self) -> String {
        format!("local file {}", self.path.display())
    }

    async fn fetch(&self) -> Result<FetchedExport, SourceError> {
        let location = self.path.display().to_string();
        let meta = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SourceError::NotFound {
                    location: location.clone(),
                    hint: String::new(),
                },
                std::io::ErrorKind::PermissionDenied => SourceError::PermissionDenied {
                    location: location.clone(),
                    hint: String::new(),
                },
                _ => SourceError::Failed {
                    location: location.clone(),
                    step: "reading the file".into(),
                    detail: e.to_string(),
                },
            })?;
        if meta.is_dir() {
            return Err(SourceError::Failed {
                location,
                step: "reading the file".into(),
                detail: "is a directory".into(),
            });
        }
        if meta.len() > self.max_bytes {
            return Err(SourceError::TooLarge {
                location,
                size: meta.len(),
                limit: self.max_bytes,
            });
        }
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| SourceError::Failed {
                location: location.clone(),
                step: "reading the file".into(),
                detail: e.to_string(),
            })?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| location.clone());
        let last_modified = meta
            .modified()
            .ok()
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
        Ok(FetchedExport {
            bytes,
            name,
            origin: SourceOrigin {
                kind: "local".into(),
                location,
                etag: None,
                last_modified,
            },
        })
    }
}
