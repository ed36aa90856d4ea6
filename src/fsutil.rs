//! File-system helpers shared by the outbox channel and the local ledger's reports (kept out
//! of both so that neither depends on the other).

/// Writes to a temporary name then renames, so a crash never leaves half a file.
pub async fn write_file_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}
