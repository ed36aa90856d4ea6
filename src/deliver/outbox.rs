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
        // File names come from the address: only safe characters, plus a short hash so
        // that `a+b@x` and `a_b@x` (or `josé@x` and `josè@x`) never share a file.
        let safe: String = msg
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
        let stem = if safe == msg.owner().as_str() {
            safe
        } else {
            let hash = msg.owner().pseudonym();
            format!("{safe}-{}", hash.trim_start_matches("owner-"))
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerEmail;
    use crate::plan::{PlannedReminder, Stage};
    use crate::render::RenderedMessage;

    fn reminder_for(owner: &str) -> OutgoingReminder {
        OutgoingReminder {
            run_id: "run".into(),
            reminder: PlannedReminder {
                owner: OwnerEmail::parse(owner).unwrap(),
                stage: Stage::First,
                escalate: false,
                team_told: false,
                devices: Vec::new(),
            },
            messages: vec![RenderedMessage {
                language: "fr".into(),
                subject: "s".into(),
                text: format!("for {owner}"),
                html: String::new(),
                card: serde_json::json!({}),
            }],
            cached_conversation: None,
            verbose: false,
        }
    }

    #[tokio::test]
    async fn owners_whose_addresses_differ_only_in_unsafe_characters_get_separate_files() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxNotifier::new(dir.path());
        let a = outbox.send(&reminder_for("a+b@engie.com")).await.unwrap();
        let b = outbox.send(&reminder_for("a_b@engie.com")).await.unwrap();
        assert_ne!(a.message_id, b.message_id);
        let texts: Vec<String> = std::fs::read_dir(dir.path().join("run"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("txt"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect();
        assert_eq!(texts.len(), 2);
        assert!(texts.iter().any(|t| t.contains("a+b@")));
        assert!(texts.iter().any(|t| t.contains("a_b@")));
    }
}
