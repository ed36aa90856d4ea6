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
use super::teams_bot::failure_for;
use super::{Delivery, DeliveryError, DeliveryLimits, Notifier, OutgoingReminder};
use crate::azure::AccessTokens;
use crate::config::DeliverySettings;
use crate::http::{encode_segment, HttpClient, HttpError, RetryPolicy};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

const CHANNEL: &str = "email";

/// Sends reminders by e-mail.
#[derive(Clone)]
pub struct EmailNotifier {
    http: HttpClient,
    /// Graph reads (the owner's language), paced with the other Graph reads rather than
    /// with `sendMail`, so a lookup never spends the mailbox's allowance.
    graph: HttpClient,
    tokens: Arc<dyn AccessTokens>,
    graph_base: String,
    graph_scope: String,
    sender: String,
    in_flight: Arc<Semaphore>,
    escalator: Option<Escalator>,
}

impl EmailNotifier {
    /// A notifier from the delivery settings (`REMINDERS_SENDER_MAILBOX` is required), with
    /// limits of its own (a run shares one set: [`Self::new_with_limits`]).
    pub fn new(
        settings: &DeliverySettings,
        tokens: Arc<dyn AccessTokens>,
        client: reqwest::Client,
    ) -> Result<Self, crate::config::ConfigError> {
        let limits = DeliveryLimits::from_settings(settings);
        Self::new_with_limits(settings, tokens, client, &limits)
    }

    /// A notifier paced by `limits`, shared with the other channels of the run.
    pub fn new_with_limits(
        settings: &DeliverySettings,
        tokens: Arc<dyn AccessTokens>,
        client: reqwest::Client,
        limits: &DeliveryLimits,
    ) -> Result<Self, crate::config::ConfigError> {
        let sender = settings.sender_mailbox.clone().ok_or_else(|| {
            crate::config::ConfigError::missing(
                "REMINDERS_SENDER_MAILBOX",
                "when REMINDERS_CHANNEL includes email",
            )
        })?;
        Ok(Self {
            escalator: Escalator::from_settings(settings, tokens.clone(), client.clone(), limits),
            graph: HttpClient::new("graph", client.clone()).with_rate_limit(limits.graph.clone()),
            http: HttpClient::new("graph sendMail", client).with_rate_limit(limits.mail.clone()),
            tokens,
            graph_base: settings.graph_base_url.trim_end_matches('/').to_string(),
            graph_scope: settings.graph_scope.clone(),
            sender,
            in_flight: limits.mail_in_flight.clone(),
        })
    }

    /// Uses `policy` (tests shorten the delays).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.escalator = self.escalator.map(|e| e.with_policy(policy.clone()));
        self.graph = self.graph.with_policy(policy.clone());
        self.http = self.http.with_policy(policy);
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
            (true, true) => "id,preferredLanguage",
            (true, false) => "id",
            (false, true) => "preferredLanguage",
        };
        let url = format!(
            "{}/v1.0/users/{}?$select={select}",
            self.graph_base,
            encode_segment(msg.owner().as_str())
        );
        let looked_up = self
            .graph
            .send(
                || self.graph.client().get(&url),
                Some((self.tokens.as_ref(), self.graph_scope.as_str())),
            )
            .await
            .and_then(|out| out.json::<OwnerEntry>("graph"));
        let owner = msg.owner().for_log(msg.verbose);
        match looked_up {
            Ok(mut entry) => {
                entry.preferred_language =
                    entry.preferred_language.filter(|l| !l.trim().is_empty());
                Ok(entry)
            }
            Err(e) if e.status() == Some(404) => {
                debug!(owner = %owner, "owner not in the directory: e-mail in the default language");
                Err("the owner is not in the directory".into())
            }
            Err(e) => {
                let why = lookup_error(&e);
                warn!(owner = %owner, error = %why, "cannot look the owner's language up: e-mail in the default language");
                Err(format!("cannot look the owner up: {why}"))
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

/// A lookup failure for the logs: status and code only, since Graph's messages quote the
/// UPN asked for (`Resource 'jean.dupont@…' does not exist…`).
fn lookup_error(e: &HttpError) -> String {
    match e {
        HttpError::Status {
            status,
            code,
            attempts,
            ..
        } => format!(
            "graph: HTTP {status}{} after {attempts} attempt(s)",
            code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

/// The `sendMail` body for one recipient.
pub fn mail_body(to: &str, subject: &str, html: &str) -> serde_json::Value {
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
        format!("e-mail from {} via {}", self.sender, self.graph_base)
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
        let url = format!(
            "{}/v1.0/users/{}/sendMail",
            self.graph_base,
            encode_segment(&self.sender)
        );
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| DeliveryError::permanent(CHANNEL, "the sender is shut down"))?;
        let out = self
            .http
            .post_message(
                || self.http.client().post(&url).json(&body),
                Some((self.tokens.as_ref(), self.graph_scope.as_str())),
            )
            .await
            .map_err(|e| failure_for(CHANNEL, "cannot send the e-mail", &e))?;
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
                .map_err(|e| failure_for(CHANNEL, "cannot e-mail the manager's summary", &e)),
        )
    }
}
