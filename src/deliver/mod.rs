//! Deliver: send a rendered reminder through a channel (local outbox, Teams bot, Workflows
//! webhook, e-mail) and say what happened.
//!
//! Building a message (render) is separate from sending it (here). Every channel is a
//! [`Notifier`]; the job calls it once per owner and records each outcome.

mod digest;
mod email;
mod escalation;
mod fallback;
mod limits;
mod outbox;
mod teams_bot;
mod workflows;

pub(crate) use crate::fsutil::write_file_atomically;
pub use digest::{send_digest, DigestSender};
pub(crate) use digest::{send_digest_with, DigestInsights, HeadlineFigure};
pub(crate) use email::mail_body;
pub use email::EmailNotifier;
pub use escalation::{EscalatedReport, Escalation, ManagerSummary};
pub use fallback::FallbackNotifier;
pub use limits::DeliveryLimits;
pub use outbox::OutboxNotifier;
pub use teams_bot::{activity, TeamsBotNotifier};
pub use workflows::WorkflowsNotifier;
// The render tests check a rendered card fits what the channels post.
#[cfg(test)]
pub(crate) use {teams_bot::MAX_ACTIVITY_BYTES, workflows::webhook_body};

/// The content type of the Adaptive Card attachment, for every channel that posts the card
/// (the Teams bot's activity, the Workflows webhook's body).
pub(crate) const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";

/// A report-ready failure from an HTTP error: reason, service code, transient or not, and
/// whether the message may have been delivered all the same (never sent again then).
pub(crate) fn failure_for(
    channel: &str,
    context: &str,
    e: &crate::http::HttpError,
) -> DeliveryError {
    DeliveryError {
        channel: channel.into(),
        reason: format!("{context}: {}", e.reason()),
        code: e
            .code()
            .map(str::to_string)
            .or_else(|| e.status().map(|s| format!("HTTP {s}"))),
        transient: e.is_transient(),
        skip: false,
        maybe_delivered: e.maybe_delivered(),
    }
}

use crate::domain::OwnerEmail;
use crate::plan::{PlannedReminder, Stage};
use crate::render::RenderedMessage;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A reminder ready to send: the plan's content and its renderings.
#[derive(Clone, Debug)]
pub struct OutgoingReminder {
    /// The run sending it.
    pub run_id: String,
    /// The planned reminder (recipient, stage, issues).
    pub reminder: PlannedReminder,
    /// Rendered in each configured language; the first is the default language.
    pub messages: Vec<RenderedMessage>,
    /// A conversation id cached by an earlier run (Teams bot).
    pub cached_conversation: Option<String>,
    /// Whether logs may show the e-mail address (verbose mode).
    pub verbose: bool,
    /// `REMINDERS_ALLOWED_DOMAINS` (empty: any): every recipient of this reminder — the
    /// owner (checked by the plan) and a manager copied on escalation — must be in one.
    pub allowed_domains: Vec<String>,
}

impl OutgoingReminder {
    /// Recipient.
    pub fn owner(&self) -> &OwnerEmail {
        &self.reminder.owner
    }

    /// Stage.
    pub fn stage(&self) -> Stage {
        self.reminder.stage
    }

    /// The rendering for a language tag (`fr-FR`, `en`), falling back to the default.
    pub fn message_for(&self, language: Option<&str>) -> &RenderedMessage {
        let wanted = language.map(|l| l.split(['-', '_']).next().unwrap_or(l).to_lowercase());
        wanted
            .and_then(|w| self.messages.iter().find(|m| m.language == w))
            .unwrap_or(&self.messages[0])
    }
}

/// A successful send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The channel that delivered (`outbox`, `teams_bot`, `workflows`, `email`).
    pub channel: String,
    /// The service's message id, if any.
    pub message_id: Option<String>,
    /// A conversation id to cache for next time (Teams bot).
    pub conversation_id: Option<String>,
    /// The language actually sent.
    pub language: Option<String>,
    /// When a fallback channel delivered: why the primary failed.
    pub fell_back: Option<String>,
    /// Number of attempts it took (retries included).
    pub attempts: u32,
    /// An escalated reminder's copy to the owner's manager: the manager's address and how
    /// they were told (`boss@contoso.com (cc)`), or why nobody was (`no manager in the
    /// directory`). `None` when the reminder did not escalate or escalation is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_to: Option<String>,
    /// The manager found for an escalated reminder, told once per run by
    /// [`Notifier::send_manager_summary`] with all their other escalated reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<OwnerEmail>,
}

/// A failed send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{channel}: {reason}")]
pub struct DeliveryError {
    /// Channel that failed.
    pub channel: String,
    /// Why, for the report (`user not found`, `throttled: out of retries`…). No secrets.
    pub reason: String,
    /// The service's error code, when it gave one.
    pub code: Option<String>,
    /// Whether a later run may succeed (throttling, 5xx) as opposed to a permanent failure.
    pub transient: bool,
    /// The recipient is to be skipped, not failed (disabled account…).
    pub skip: bool,
    /// The message post failed in a way that may have delivered it all the same (timeout,
    /// reset, 5xx after the request was written): the run records it as sent
    /// (`maybe_delivered`) and no channel sends it again.
    #[serde(default)]
    pub maybe_delivered: bool,
}

impl DeliveryError {
    /// A permanent failure.
    pub fn permanent(channel: &str, reason: impl Into<String>) -> Self {
        Self {
            channel: channel.into(),
            reason: reason.into(),
            code: None,
            transient: false,
            skip: false,
            maybe_delivered: false,
        }
    }
}

/// A delivery channel.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The channel's name (`outbox`, `teams_bot`…).
    fn channel(&self) -> &str;
    /// Where it sends, for logs and health (never a secret URL).
    fn describe(&self) -> String;
    /// Sends one reminder.
    async fn send(&self, message: &OutgoingReminder) -> Result<Delivery, DeliveryError>;
    /// E-mails one manager the summary of their escalated reports: `Some(Ok(true))` sent,
    /// `Some(Ok(false))` nothing to send from (no sender mailbox), `None` when this channel
    /// does not escalate.
    async fn send_manager_summary(
        &self,
        _summary: &ManagerSummary,
    ) -> Option<Result<bool, DeliveryError>> {
        None
    }
}
