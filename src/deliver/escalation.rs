//! Escalation to the owner's manager (`REMINDERS_ESCALATE_TO_MANAGER`): for a reminder the
//! plan marks `escalate` (past the deadline or high risk), look the manager up in Graph and
//! tell the channel whom to copy.
//!
//! Escalation is best effort: the owner's reminder is what matters, so a missing manager, a
//! manager without a mailbox or a failed lookup or copy never fails the owner's delivery; the
//! outcome is written in the report line (`escalated_to`) instead.

use super::{DeliveryLimits, OutgoingReminder};
use crate::azure::AccessTokens;
use crate::config::DeliverySettings;
use crate::domain::OwnerEmail;
use crate::http::{encode_segment, HttpClient, HttpError, RetryPolicy};
use crate::render::RenderedMessage;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// The `$select` of the manager lookup.
pub const MANAGER_SELECT: &str = "id,mail,displayName,userPrincipalName";

/// The manager fields Graph returns.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manager {
    /// Entra object id.
    pub id: String,
    /// Primary SMTP address; absent for accounts without a mailbox.
    #[serde(default)]
    pub mail: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// UPN.
    #[serde(default)]
    pub user_principal_name: Option<String>,
}

/// What the manager lookup found for one escalated reminder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Escalation {
    /// The manager's address, to copy.
    Manager(OwnerEmail),
    /// Nobody to copy, and why (`no manager in the directory`…), for the report.
    Nobody(String),
}

impl Escalation {
    /// The report text for this outcome when nothing more happened to it (`Nobody`), or the
    /// address followed by `note` (`boss@contoso.com (cc)`).
    pub fn report(&self, note: &str) -> String {
        match self {
            Escalation::Manager(m) => format!("{m} ({note})"),
            Escalation::Nobody(why) => why.clone(),
        }
    }
}

/// Looks managers up and e-mails them copies; built only when escalation is on.
#[derive(Clone)]
pub(super) struct Escalator {
    graph: HttpClient,
    mail: HttpClient,
    tokens: Arc<dyn AccessTokens>,
    graph_base: String,
    graph_scope: String,
    sender: Option<String>,
    mail_in_flight: Arc<Semaphore>,
}

impl Escalator {
    /// An escalator when `REMINDERS_ESCALATE_TO_MANAGER` is on, else `None`. Its lookups and
    /// copies are paced by the channel's `limits` (the same Graph and mailbox as the
    /// channels'), so escalation never adds its own allowance on top.
    pub(super) fn from_settings(
        settings: &DeliverySettings,
        tokens: Arc<dyn AccessTokens>,
        client: reqwest::Client,
        limits: &DeliveryLimits,
    ) -> Option<Self> {
        if !settings.escalate_to_manager {
            return None;
        }
        Some(Self {
            graph: HttpClient::new("graph", client.clone()).with_rate_limit(limits.graph.clone()),
            mail: HttpClient::new("graph sendMail", client).with_rate_limit(limits.mail.clone()),
            mail_in_flight: limits.mail_in_flight.clone(),
            tokens,
            graph_base: settings.graph_base_url.trim_end_matches('/').to_string(),
            graph_scope: settings.graph_scope.clone(),
            sender: settings.sender_mailbox.clone(),
        })
    }

    /// Uses `policy` (tests shorten the delays).
    pub(super) fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.graph = self.graph.with_policy(policy.clone());
        self.mail = self.mail.with_policy(policy);
        self
    }

    /// Whether a shared mailbox is configured to send copies from.
    pub(super) fn can_mail(&self) -> bool {
        self.sender.is_some()
    }

    fn auth(&self) -> Option<(&dyn AccessTokens, &str)> {
        Some((self.tokens.as_ref(), self.graph_scope.as_str()))
    }

    /// `GET /users/{id-or-upn}/manager`; `None` when the user has no manager (404).
    pub(super) async fn manager(&self, user: &str) -> Result<Option<Manager>, HttpError> {
        let url = format!(
            "{}/v1.0/users/{}/manager?$select={MANAGER_SELECT}",
            self.graph_base,
            encode_segment(user)
        );
        match self
            .graph
            .send(|| self.graph.client().get(&url), self.auth())
            .await
        {
            Ok(out) => out.json("graph").map(Some),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// For an escalated reminder, whom to copy (`user` is the owner's object id or UPN);
    /// `None` when the reminder does not escalate.
    pub(super) async fn find(&self, msg: &OutgoingReminder, user: &str) -> Option<Escalation> {
        if !msg.reminder.escalate {
            return None;
        }
        let owner = msg.owner().for_log(msg.verbose);
        let mut held_back = false;
        let outcome = match self.manager(user).await {
            Ok(None) => Escalation::Nobody("no manager in the directory".into()),
            Ok(Some(m)) => match m.mail.as_deref().map(OwnerEmail::parse) {
                None => Escalation::Nobody("the manager has no e-mail address".into()),
                Some(Err(_)) => {
                    Escalation::Nobody("the manager's e-mail address is not valid".into())
                }
                Some(Ok(address)) if &address == msg.owner() => {
                    Escalation::Nobody("the owner is their own manager".into())
                }
                // The same allow-list as the owners': a wrong directory entry or a partner
                // manager must not receive a copy.
                Some(Ok(address)) if !crate::policy::domain_in(&msg.allowed_domains, &address) => {
                    warn!(owner = %owner, manager = %address.for_log(msg.verbose), "the manager's mail domain is not allowed: not escalated");
                    held_back = true;
                    Escalation::Nobody(format!(
                        "manager {address} held back: mail domain '{}' is not in the allowed domains (REMINDERS_ALLOWED_DOMAINS)",
                        address.domain()
                    ))
                }
                Some(Ok(address)) => Escalation::Manager(address),
            },
            Err(e) => {
                warn!(owner = %owner, error = %e, "cannot look the owner's manager up: sending without escalation");
                Escalation::Nobody(format!("cannot look the manager up: {}", e.reason()))
            }
        };
        match &outcome {
            Escalation::Manager(m) => {
                info!(owner = %owner, manager = %m.for_log(msg.verbose), "escalating to the owner's manager")
            }
            // The held-back reason names the manager: already logged with the pseudonym.
            Escalation::Nobody(_) if held_back => {}
            Escalation::Nobody(why) => info!(owner = %owner, why = %why, "not escalated"),
        }
        Some(outcome)
    }

    /// E-mails `manager` a copy of the owner's message from the shared mailbox.
    pub(super) async fn send_copy(
        &self,
        msg: &OutgoingReminder,
        rendered: &RenderedMessage,
        manager: &OwnerEmail,
    ) -> Result<(), HttpError> {
        let Some(sender) = &self.sender else {
            return Ok(());
        };
        let body = manager_copy(manager.as_str(), msg.owner().as_str(), rendered);
        let url = format!(
            "{}/v1.0/users/{}/sendMail",
            self.graph_base,
            encode_segment(sender)
        );
        // A closed semaphore only happens at shutdown; the copy then goes unthrottled
        // rather than failing a reminder already delivered.
        let _permit = self.mail_in_flight.acquire().await.ok();
        self.mail
            .post_message(|| self.mail.client().post(&url).json(&body), self.auth())
            .await?;
        Ok(())
    }
}

/// Adds `cc` to a `sendMail` body built by [`super::mail_body`].
pub fn with_cc(mut body: serde_json::Value, cc: &str) -> serde_json::Value {
    body["message"]["ccRecipients"] = json!([{ "emailAddress": { "address": cc } }]);
    body
}

/// The subject prefix of a manager's copy, in the message's language.
pub fn copy_prefix(language: &str) -> &'static str {
    if language == "fr" {
        "[Copie manager]"
    } else {
        "[Manager copy]"
    }
}

/// The `sendMail` body of a manager's copy: the owner's subject with a prefix, and the
/// owner's HTML with one line first saying whose reminder it is.
pub fn manager_copy(manager: &str, owner: &str, rendered: &RenderedMessage) -> serde_json::Value {
    let note = if rendered.language == "fr" {
        format!(
            "Copie pour information du rappel envoyé à {}.",
            escape_html(owner)
        )
    } else {
        format!(
            "For your information: a copy of the reminder sent to {}.",
            escape_html(owner)
        )
    };
    let note = format!("<p><em>{note}</em></p>\n");
    let html = &rendered.html;
    // After the `<body …>` tag when there is one, so the document stays well formed.
    let at = html
        .find("<body")
        .and_then(|i| html[i..].find('>').map(|j| i + j + 1));
    let content = match at {
        Some(at) => format!("{}\n{note}{}", &html[..at], &html[at..]),
        None => format!("{note}{html}"),
    };
    let subject = format!("{} {}", copy_prefix(&rendered.language), rendered.subject);
    super::mail_body(manager, &subject, &content)
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(language: &str) -> RenderedMessage {
        RenderedMessage {
            language: language.into(),
            subject: "Mise à jour requise".into(),
            text: "Bonjour".into(),
            html: "<!DOCTYPE html>\n<html><body style=\"x\"><p>Bonjour</p></body></html>".into(),
            card: json!({}),
        }
    }

    #[test]
    fn the_managers_copy_is_prefixed_and_says_whose_reminder_it_is() {
        let body = manager_copy("boss@contoso.com", "a<b@contoso.com", &rendered("fr"));
        let m = &body["message"];
        assert_eq!(m["subject"], "[Copie manager] Mise à jour requise");
        assert_eq!(
            m["toRecipients"][0]["emailAddress"]["address"],
            "boss@contoso.com"
        );
        let html = m["body"]["content"].as_str().unwrap();
        assert!(
            html.starts_with("<!DOCTYPE html>\n<html><body style=\"x\">\n<p><em>Copie"),
            "{html}"
        );
        assert!(html.contains("a&lt;b@contoso.com"), "{html}");
        assert!(html.ends_with("<p>Bonjour</p></body></html>"), "{html}");
        let en = manager_copy("boss@contoso.com", "a@contoso.com", &rendered("en"));
        assert!(en["message"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("[Manager copy] "));
    }

    #[test]
    fn cc_is_added_to_a_mail_body() {
        let body = with_cc(
            super::super::mail_body("a@contoso.com", "s", "<p>x</p>"),
            "boss@contoso.com",
        );
        assert_eq!(
            body["message"]["ccRecipients"][0]["emailAddress"]["address"],
            "boss@contoso.com"
        );
        assert_eq!(
            body["message"]["toRecipients"][0]["emailAddress"]["address"],
            "a@contoso.com"
        );
    }

    #[test]
    fn the_report_names_the_manager_or_says_why_nobody() {
        let m = Escalation::Manager(OwnerEmail::parse("Boss@Contoso.com").unwrap());
        assert_eq!(m.report("cc"), "boss@contoso.com (cc)");
        let n = Escalation::Nobody("no manager in the directory".into());
        assert_eq!(n.report("cc"), "no manager in the directory");
    }
}
