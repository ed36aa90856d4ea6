//! Outbox: writes each reminder to a local folder (card JSON + rendered text + HTML), the
//! default channel for the CLI and tests.

use super::{Delivery, DeliveryError, Notifier, OutgoingReminder};
use async_trait::async_trait;
use std::path::PathBuf;

/// Writes reminders as files under a folder: `<run_id>/<owner>.json` and `.txt`.
#[derive(Clone, Debug)]
pub struct OutboxNotifier {
    dir: PathBuf,
}

impl OutboxNotifier {
    /// An outbox under `dir` (created when needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait]
impl Notifier for OutboxNotifier {
    fn channel(&self) -> &str {
        "outbox"
    }

    fn describe(&self) -> String {
        format!("outbox folder {}", self.dir.display())
    }

    async fn send(&self, msg: &OutgoingReminder) -> Result<Delivery, DeliveryError> {
        let folder = self.dir.join(&msg.run_id);
        let rendered = msg.message_for(None);
        // File names come from the address: keep only safe characters.
        let stem: String = msg
            .owner()
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let message_id = format!("outbox:{}/{}", msg.run_id, stem);
        let envelope = serde_json::json!({
            "message_id": message_id,
            "to": msg.owner().as_str(),
            "stage": msg.stage(),
            "language": rendered.language,
            "subject": rendered.subject,
            "text": rendered.text,
            "card": rendered.card,
            "reminder": msg.reminder,
        });
        let io_err = |e: std::io::Error| {
            DeliveryError::permanent("outbox", format!("{}: {e}", folder.display()))
        };
        tokio::fs::create_dir_all(&folder).await.map_err(io_err)?;
        let json = serde_json::to_vec_pretty(&envelope).expect("a JSON value always serialises");
        write_file_atomically(&folder.join(format!("{stem}.json")), &json)
            .await
            .map_err(io_err)?;
        write_file_atomically(
            &folder.join(format!("{stem}.txt")),
            rendered.text.as_bytes(),
        )
        .await
        .map_err(io_err)?;
        write_file_atomically(
            &folder.join(format!("{stem}.html")),
            rendered.html.as_bytes(),
        )
        .await
        .map_err(io_err)?;
        Ok(Delivery {
            channel: "outbox".into(),
            message_id: Some(message_id),
            language: Some(rendered.language.clone()),
            attempts: 1,
            ..Default::default()
        })
    }
}

/// Writes to a temporary name then renames, so a crash never leaves half a file.
pub async fn write_file_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}
