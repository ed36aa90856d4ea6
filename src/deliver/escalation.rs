//! Escalation to the owner's manager (`REMINDERS_ESCALATE_TO_MANAGER`): for a reminder the
//! plan marks `escalate` (past the deadline or high risk), the channel looks the manager up in
//! Graph by the owner's directory object id (the export's address may differ from the sign-in
//! name) and returns whom it found; after every owner is sent, the job e-mails each manager
//! ONE summary listing all their escalated reports ([`ManagerSummary`]), at the ledger's
//! manager cadence.
//!
//! Escalation is best effort: the owner's reminder is what matters, so a missing manager, a
//! manager without a mailbox or a failed lookup or summary never fails the owner's delivery;
//! the outcome is written in the report line (`escalated_to`) instead.

use super::OutgoingReminder;
use crate::config::DeliverySettings;
use crate::domain::OwnerEmail;
use crate::graph::{GraphClient, GraphError};
use crate::plan::Stage;
use tracing::{info, warn};

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
    graph: GraphClient,
    sender: Option<String>,
}

impl Escalator {
    /// An escalator when `REMINDERS_ESCALATE_TO_MANAGER` is on, else `None`. Its lookups and
    /// copies go through the run's one `graph` client (the same limiters as the channels'),
    /// so escalation never adds its own allowance on top.
    pub(super) fn from_settings(settings: &DeliverySettings, graph: GraphClient) -> Option<Self> {
        settings.escalate_to_manager.then(|| Self {
            graph,
            sender: settings.sender_mailbox.clone(),
        })
    }

    /// Uses `policy` (tests shorten the delays).
    pub(super) fn with_policy(mut self, policy: crate::http::RetryPolicy) -> Self {
        self.graph = self.graph.with_policy(policy);
        self
    }

    /// Whether a shared mailbox is configured to send copies from.
    pub(super) fn can_mail(&self) -> bool {
        self.sender.is_some()
    }

    /// For an escalated reminder, whom to tell (`owner_id` is the owner's directory object
    /// id, never the export's address); `None` when the reminder does not escalate.
    pub(super) async fn find(&self, msg: &OutgoingReminder, owner_id: &str) -> Option<Escalation> {
        if !msg.reminder.escalate {
            return None;
        }
        let owner = msg.owner().for_log(msg.verbose);
        let mut held_back = false;
        let outcome = match self.graph.manager(owner_id).await {
            Ok(None) => Escalation::Nobody("no manager in the directory".into()),
            Ok(Some(m)) => match m.mail.as_deref().map(OwnerEmail::parse) {
                None => Escalation::Nobody("the manager has no e-mail address".into()),
                Some(Err(_)) => {
                    Escalation::Nobody("the manager's e-mail address is not valid".into())
                }
                Some(Ok(address)) if &address == msg.owner() || m.id == owner_id => {
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
                Escalation::Nobody(format!("cannot look the manager up: {}", e.http().reason()))
            }
        };
        match &outcome {
            Escalation::Manager(m) => {
                info!(owner = %owner, manager = %m.for_log(msg.verbose), "the owner's manager will be told")
            }
            // The held-back reason names the manager: already logged with the pseudonym.
            Escalation::Nobody(_) if held_back => {}
            Escalation::Nobody(why) => info!(owner = %owner, why = %why, "not escalated"),
        }
        Some(outcome)
    }

    /// E-mails `summary` to its manager from the shared mailbox; `Ok(false)` when there is
    /// no mailbox to send from (the manager is then only named in the report).
    pub(super) async fn send_summary(&self, summary: &ManagerSummary) -> Result<bool, GraphError> {
        let Some(sender) = &self.sender else {
            return Ok(false);
        };
        self.graph.send_mail(sender, &summary_mail(summary)).await?;
        Ok(true)
    }
}

/// One escalated report in a manager's summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalatedReport {
    /// The owner (the export's address).
    pub owner: OwnerEmail,
    /// Their reminder's stage (`overdue`…).
    pub stage: Stage,
    /// Issues reminded about.
    pub issues: usize,
    /// Fewest days left before the deadline (negative: days overdue).
    pub days_left: i64,
}

/// What one manager is told in a run: every escalated report of theirs, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerSummary {
    /// The manager's address.
    pub manager: OwnerEmail,
    /// Their reports, in the order of the run.
    pub reports: Vec<EscalatedReport>,
    /// The language of the summary (`en`, `fr`): the run's default language.
    pub language: String,
}

/// The `sendMail` body of a manager's summary: one line per report, most overdue first.
pub(crate) fn summary_mail(summary: &ManagerSummary) -> serde_json::Value {
    let fr = summary.language == "fr";
    let mut reports = summary.reports.clone();
    reports.sort_by(|a, b| a.days_left.cmp(&b.days_left).then(a.owner.cmp(&b.owner)));
    let n = reports.len();
    let subject = if fr {
        format!("[Copie manager] {n} collaborateur(s) n'ont pas mis leur téléphone à jour")
    } else {
        format!("[Manager copy] {n} of your reports have not updated their phone")
    };
    let intro = if fr {
        "Pour information : ces collaborateurs ont reçu un rappel de mise à jour de leur appareil et ont dépassé l'échéance (ou présentent un risque élevé)."
    } else {
        "For your information: these people were reminded to update their device and are past the deadline (or at high risk)."
    };
    let items: String = reports
        .iter()
        .map(|r| {
            let when = match (fr, r.days_left) {
                (true, d) if d < 0 => format!("en retard de {} jour(s)", -d),
                (true, d) => format!("échéance dans {d} jour(s)"),
                (false, d) if d < 0 => format!("{} day(s) overdue", -d),
                (false, d) => format!("deadline in {d} day(s)"),
            };
            let issues = if fr {
                format!("{} problème(s)", r.issues)
            } else {
                format!("{} issue(s)", r.issues)
            };
            format!(
                "<li>{} — {when}, {issues}</li>\n",
                crate::domain::escape_html(r.owner.as_str())
            )
        })
        .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p>{intro}</p>\n<ul>\n{items}</ul>\n</body></html>"
    );
    super::mail_body(summary.manager.as_str(), &subject, &html)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(owner: &str, days_left: i64) -> EscalatedReport {
        EscalatedReport {
            owner: OwnerEmail::parse(owner).unwrap(),
            stage: Stage::Overdue,
            issues: 2,
            days_left,
        }
    }

    #[test]
    fn a_managers_summary_lists_every_report_once_most_overdue_first() {
        let summary = ManagerSummary {
            manager: OwnerEmail::parse("boss@contoso.com").unwrap(),
            reports: vec![report("a.b@contoso.com", -2), report("c@contoso.com", -9)],
            language: "en".into(),
        };
        let body = summary_mail(&summary);
        let m = &body["message"];
        assert_eq!(
            m["subject"],
            "[Manager copy] 2 of your reports have not updated their phone"
        );
        assert_eq!(
            m["toRecipients"][0]["emailAddress"]["address"],
            "boss@contoso.com"
        );
        let html = m["body"]["content"].as_str().unwrap();
        let c = html.find("c@contoso.com — 9 day(s) overdue").expect(html);
        let a = html.find("a.b@contoso.com — 2 day(s) overdue").expect(html);
        assert!(c < a, "most overdue first: {html}");
        assert_eq!(html.matches("<li>").count(), 2, "{html}");
        let fr = summary_mail(&ManagerSummary {
            language: "fr".into(),
            ..summary
        });
        let html = fr["message"]["body"]["content"].as_str().unwrap();
        assert!(html.contains("en retard de 9 jour(s)"), "{html}");
        assert!(!html.contains("overdue"), "{html}");
    }

    #[test]
    fn the_report_names_the_manager_or_says_why_nobody() {
        let m = Escalation::Manager(OwnerEmail::parse("Boss@Contoso.com").unwrap());
        assert_eq!(m.report("cc"), "boss@contoso.com (cc)");
        let n = Escalation::Nobody("no manager in the directory".into());
        assert_eq!(n.report("cc"), "no manager in the directory");
    }
}
