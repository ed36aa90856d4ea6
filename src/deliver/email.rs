//! E-mail through Graph `sendMail` from a shared mailbox: the HTML body rendered from the
//! same template as the card, as fallback when Teams cannot reach a user or as the channel.
//!
//! Exchange allows about 4 concurrent requests and 10,000 per 10 minutes per mailbox: the
//! sends are paced by the mailbox's rate limiter and at most four are in flight, both shared
//! (see [`DeliveryLimits`]) with the managers' copies the Teams bot e-mails.
//!
//! When `REMINDERS_ESCALATE_TO_MANAGER` is on, an escalated reminder names the owner's
//! manager, looked up by the owner's directory object id; the job then e-mails each manager
//! one summary of all their escalated reports (see `escalation`).
//!
//! When the reminder is rendered in more than one language, the owner's Graph
//! `preferredLanguage` picks the rendering, as the Teams bot does; the lookup is a Graph
//! read, paced with the other Graph reads, and any failure means the default language.

use super::escalation::{Escalation, Escalator, ManagerSummary};
use super::{failure_for, Delivery, DeliveryError, DeliveryLimits, Notifier, OutgoingReminder};
use crate::config::DeliverySettings;
use crate::graph::GraphClient;
use crate::http::{AccessTokens, RetryPolicy};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tracing::{debug, warn};

const CHANNEL: &str = "email";

/// Sends reminders by e-mail.
#[derive(Clone)]
pub struct EmailNotifier {
    /// `sendMail` and the owner's language, through the run's one Graph client: the owner
    /// lookup is paced with the other directory reads, so it never spends the mailbox's
    /// allowance.
    graph: GraphClient,
    sender: String,
    escalator: Option<Escalator>,
}

impl EmailNotifier {
    /// A notifier from the delivery settings (`REMINDERS_SENDER_MAILBOX` is required), with
    /// a Graph client and limits of its own (a run shares one: [`Self::with_graph`]).
    pub fn new(
        settings: &DeliverySettings,
        tokens: Arc<dyn AccessTokens>,
        client: reqwest::Client,
    ) -> Result<Self, crate::config::ConfigError> {
        let limits = DeliveryLimits::from_settings(settings);
        let graph = GraphClient::new(&settings.graph, tokens, client, limits.graph_limits());
        Self::with_graph(settings, graph)
    }

    /// A notifier sending through the run's `graph` client, shared with the other channels.
    pub(crate) fn with_graph(
        settings: &DeliverySettings,
        graph: GraphClient,
    ) -> Result<Self, crate::config::ConfigError> {
        let sender = settings.sender_mailbox.clone().ok_or_else(|| {
            crate::config::ConfigError::missing(
                "REMINDERS_SENDER_MAILBOX",
                "when REMINDERS_CHANNEL includes email",
            )
        })?;
        Ok(Self {
            escalator: Escalator::from_settings(settings, graph.clone()),
            graph,
            sender,
        })
    }

    /// Uses `policy` (tests shorten the delays).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.escalator = self.escalator.map(|e| e.with_policy(policy.clone()));
        self.graph = self.graph.with_policy(policy);
        self
    }

    /// The owner's directory entry: `preferredLanguage` (`en-US`) when the reminder has a
    /// rendering to choose from, and the object id when the reminder escalates (the manager
    /// is looked up by id, since the export's address may not be the sign-in name). Nothing
    /// is looked up when neither is needed. The language is a nicety and never stops the
    /// e-mail: a missing owner or failed lookup means the default language.
    async fn owner_entry(
        &self,
        msg: &OutgoingReminder,
        want_id: bool,
    ) -> Result<OwnerEntry, String> {
        let want_language = msg.messages.len() >= 2;
        let select = match (want_id, want_language) {
            (false, false) => return Ok(OwnerEntry::default()),
            (true, true) => &["id", "preferredLanguage"][..],
            (true, false) => &["id"],
            (false, true) => &["preferredLanguage"],
        };
        let looked_up = self
            .graph
            .user::<OwnerEntry>(msg.owner().as_str(), select)
            .await;
        let owner = msg.owner().for_log(msg.verbose);
        match looked_up {
            Ok(mut entry) => {
                entry.preferred_language =
                    entry.preferred_language.filter(|l| !l.trim().is_empty());
                Ok(entry)
            }
            Err(e) if e.is_not_found() => {
                debug!(owner = %owner, "owner not in the directory: e-mail in the default language");
                Err("the owner is not in the directory".into())
            }
            Err(e) => {
                warn!(owner = %owner, error = %e, "cannot look the owner's language up: e-mail in the default language");
                Err(format!("cannot look the owner up: {e}"))
            }
        }
    }
}

/// The fields of `GET /users/{upn}?$select=id,preferredLanguage` the channel reads.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OwnerEntry {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    preferred_language: Option<String>,
}

/// The `sendMail` body for one recipient.
pub(crate) fn mail_body(to: &str, subject: &str, html: &str) -> serde_json::Value {
    json!({
        "message": {
            "subject": subject,
            "body": { "contentType": "HTML", "content": html },
            "toRecipients": [{ "emailAddress": { "address": to } }],
        },
        "saveToSentItems": true,
    })
}

#[async_trait]
impl Notifier for EmailNotifier {
    fn channel(&self) -> &str {
        CHANNEL
    }

    fn describe(&self) -> String {
        format!(
            "e-mail from {} via {}",
            self.sender,
            self.graph.base_url().as_str().trim_end_matches('/')
        )
    }

    async fn send(&self, msg: &OutgoingReminder) -> Result<Delivery, DeliveryError> {
        let escalator = self.escalator.as_ref().filter(|_| msg.reminder.escalate);
        let entry = self.owner_entry(msg, escalator.is_some()).await;
        let language = entry
            .as_ref()
            .ok()
            .and_then(|e| e.preferred_language.clone());
        let rendered = msg.message_for(language.as_deref());
        let body = mail_body(msg.owner().as_str(), &rendered.subject, &rendered.html);
        let escalation = match (escalator, &entry) {
            (None, _) => None,
            (Some(e), Ok(OwnerEntry { id: Some(id), .. })) => e.find(msg, id).await,
            (Some(_), Ok(_)) => Some(Escalation::Nobody(
                "the directory gave no object id for the owner".into(),
            )),
            (Some(_), Err(why)) => Some(Escalation::Nobody(why.clone())),
        };
        let out = self
            .graph
            .send_mail(&self.sender, &body)
            .await
            .map_err(|e| failure_for(CHANNEL, "cannot send the e-mail", e.http()))?;
        Ok(Delivery {
            channel: CHANNEL.into(),
            // sendMail answers 202 without an id; the request id identifies the call.
            message_id: out
                .headers
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .map(|v| format!("request-id:{v}")),
            language: Some(rendered.language.clone()),
            attempts: out.attempts,
            manager: match &escalation {
                Some(Escalation::Manager(m)) => Some(m.clone()),
                _ => None,
            },
            escalated_to: escalation.map(|e| e.report("told in the manager's summary")),
            ..Default::default()
        })
    }

    async fn send_manager_summary(
        &self,
        summary: &ManagerSummary,
    ) -> Option<Result<bool, DeliveryError>> {
        let escalator = self.escalator.as_ref()?;
        Some(
            escalator
                .send_summary(summary)
                .await
                .map_err(|e| failure_for(CHANNEL, "cannot e-mail the manager's summary", e.http())),
        )
    }
}
