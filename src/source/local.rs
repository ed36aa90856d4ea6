//! A local file: the CLI's and tests' source.

use super::{FetchedExport, Source, SourceError, SourceOrigin};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

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

/// `requested` (relative to `folder`, or absolute) if it names a regular file inside
/// `folder` once links and `..` are resolved; `Err` says why not (never the file's content).
pub(crate) fn confined_path(folder: &Path, requested: &Path) -> Result<PathBuf, String> {
    let root = std::fs::canonicalize(folder).map_err(|e| {
        format!(
            "the export's folder {} cannot be read: {e}",
            folder.display()
        )
    })?;
    let joined = root.join(requested);
    let resolved = match std::fs::canonicalize(&joined) {
        Ok(p) => p,
        // A missing file inside the folder is reported as not found by the source.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let lexically_inside = requested.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
            return if lexically_inside {
                Ok(joined)
            } else {
                Err(outside(folder))
            };
        }
        Err(e) => return Err(format!("cannot resolve the path: {e}")),
    };
    if !resolved.starts_with(&root) {
        return Err(outside(folder));
    }
    if !std::fs::metadata(&resolved).is_ok_and(|m| m.is_file()) {
        return Err("must name a regular file".into());
    }
    Ok(resolved)
}

fn outside(folder: &Path) -> String {
    format!(
        "must name a file in the export's folder ({})",
        folder.display()
    )
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
        // Only a regular file: a directory, a device (`/dev/zero` reports length 0 and never
        // ends) or a pipe is not an export.
        if !meta.is_file() {
            return Err(SourceError::Failed {
                location,
                step: "reading the file".into(),
                detail: "not a regular file".into(),
            });
        }
        if meta.len() > self.max_bytes {
            return Err(SourceError::TooLarge {
                location,
                size: meta.len(),
                limit: self.max_bytes,
            });
        }
        // The limit holds while reading too: the file may grow after the size check.
        let failed = |e: std::io::Error| SourceError::Failed {
            location: location.clone(),
            step: "reading the file".into(),
            detail: e.to_string(),
        };
        let file = tokio::fs::File::open(&self.path).await.map_err(failed)?;
        // One buffer of the file's size (a byte more to see growth): no regrowing and copying
        // of a large export, and no unused capacity held for the whole run.
        let mut bytes = Vec::with_capacity(meta.len().saturating_add(1) as usize);
        file.take(self.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(failed)?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(SourceError::TooLarge {
                location,
                size: bytes.len() as u64,
                limit: self.max_bytes,
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_device_that_reports_no_length_is_refused_not_read_forever() {
        let err = LocalFileSource::new("/dev/zero", 1024)
            .fetch()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_path_out_of_the_exports_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("exports");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("a.csv"), "x").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "x").unwrap();
        assert!(confined_path(&folder, Path::new("a.csv")).is_ok());
        assert!(confined_path(&folder, Path::new("missing.csv")).is_ok());
        for bad in ["../secret.txt", "../missing", "/etc/passwd"] {
            let err = confined_path(&folder, Path::new(bad)).unwrap_err();
            assert!(err.contains("export's folder"), "{bad}: {err}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), folder.join("link.csv"))
                .unwrap();
            assert!(confined_path(&folder, Path::new("link.csv")).is_err());
        }
    }
}
