//! Security-team digest: one Adaptive Card per run to a channel webhook (a Workflows flow
//! that posts to a channel): totals by status, kind, platform and risk, failures with their
//! reasons, owners past the deadline, and the run id.
//!
//! Owners are pseudonymised unless the digest is verbose (`REMINDERS_DIGEST_VERBOSE`): the
//! channel is wider than the operators who read the run report.

use super::workflows::{post_webhook, webhook_body};
use super::{Delivery, DeliveryError};
use crate::config::{DeliverySettings, Secret};
use crate::http::{HttpClient, RateLimiter, RetryPolicy};
use crate::render::Renderer;
use crate::report::{ReminderStatus, RunReport};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const CHANNEL: &str = "digest";

/// The digest template's name.
pub(crate) const DIGEST_TEMPLATE: &str = "digest.card.json.j2";

/// Lines listed in the card before "and N more" (the card must stay under 28 KB).
const MAX_LISTED: usize = 25;

/// Posts the digest card to the security team's webhook.
#[derive(Clone)]
pub struct DigestSender {
    http: HttpClient,
    url: Secret,
    verbose: bool,
}

impl DigestSender {
    /// A sender from the settings, or `None` when `REMINDERS_DIGEST_WEBHOOK_URL` is unset.
    pub fn from_settings(settings: &DeliverySettings, client: reqwest::Client) -> Option<Self> {
        let url = settings.digest_webhook_url.clone()?;
        Some(Self::new(url, settings.digest_verbose, client))
    }

    /// A sender posting to `url`; `verbose` shows owner e-mails instead of pseudonyms.
    pub fn new(url: Secret, verbose: bool, client: reqwest::Client) -> Self {
        let limiter = Arc::new(RateLimiter::new(1.0, 1));
        Self {
            http: HttpClient::new("digest webhook", client).with_rate_limit(limiter),
            url,
            verbose,
        }
    }

    /// Uses `policy` (tests shorten the delays).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.http = self.http.with_policy(policy);
        self
    }
}

/// A name and a count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Count {
    /// Status, kind, platform or risk.
    pub name: String,
    /// How many.
    pub count: usize,
}

/// A titled group of counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct CountGroup {
    /// `Issues by kind`…
    pub title: String,
    /// The counts, largest first.
    pub counts: Vec<Count>,
}

/// An owner whose reminder failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct FailureLine {
    /// Pseudonym (or address when verbose).
    pub owner: String,
    /// Why, with the channel.
    pub reason: String,
}

/// What the digest card shows (the template's context).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct DigestView {
    /// Run id.
    pub run_id: String,
    /// `cli`, `timer`, `http`.
    pub trigger: String,
    /// Dry run.
    pub dry_run: bool,
    /// The run's date.
    pub as_of: String,
    /// The report's summary line.
    pub summary: String,
    /// Reminders by status.
    pub statuses: Vec<Count>,
    /// Open issues by kind, platform and risk (every owner in the report, due or not).
    pub groups: Vec<CountGroup>,
    /// Failed reminders (first [`MAX_LISTED`]).
    pub failures: Vec<FailureLine>,
    /// All failed reminders.
    pub failures_count: usize,
    /// Failures not listed.
    pub failures_more: usize,
    /// Owners with an issue past its deadline.
    pub past_deadline_count: usize,
    /// Those owners (first [`MAX_LISTED`]), pseudonymised unless verbose.
    pub past_deadline: Vec<String>,
    /// Owners past the deadline not listed.
    pub past_deadline_more: usize,
    /// Devices that can no longer install a current OS (`model (last OS), owner`).
    pub unsupported_count: usize,
    /// Those devices (first [`MAX_LISTED`]).
    pub unsupported: Vec<String>,
    /// Those not listed.
    pub unsupported_more: usize,
    /// Owners overdue beyond the team-action threshold.
    pub team_action_count: usize,
    /// Those owners (first [`MAX_LISTED`]), pseudonymised unless verbose.
    pub team_action: Vec<String>,
    /// Those not listed.
    pub team_action_more: usize,
    /// The report's warnings.
    pub warnings: Vec<String>,
    /// The fleet's headline figures with their trend, and where the insights page is.
    pub insights: Option<DigestInsights>,
}

/// The insights block of the digest: two or three headline figures and the page's location.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct DigestInsights {
    /// Label and value (`Open issues`, `5 ▼ −1 vs 7 days ago`).
    pub figures: Vec<HeadlineFigure>,
    /// A link the team can open, when the page is published there.
    pub link: Option<String>,
    /// Otherwise where the page is stored (Blob name, local path).
    pub stored_at: Option<String>,
}

/// A label and a text value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct HeadlineFigure {
    /// Label.
    pub name: String,
    /// Value.
    pub value: String,
}

/// What a person reads for a report name: `security_patch_out_of_date` → `Android security
/// patch`. Unknown names are shown as they are.
fn human_label(name: &str) -> String {
    match name {
        "vulnerable_app" => "Vulnerable app",
        "os_out_of_date" => "OS out of date",
        "security_patch_out_of_date" => "Android security patch",
        "agent_out_of_date" => "Lookout app outdated",
        "android" => "Android",
        "ios" => "iOS / iPadOS",
        "unknown" => "Unknown",
        "high" => "High",
        "moderate" => "Moderate",
        "low" => "Low",
        other => other,
    }
    .to_string()
}

/// One reason, said once: `HTTP 400 (HTTP 400)` → `HTTP 400`, `teams_bot: teams_bot: x` →
/// `teams_bot: x`.
fn one_reason(channel: Option<&str>, reason: &str) -> String {
    let mut reason = reason.trim().to_string();
    if let Some(open) = reason.rfind(" (") {
        if reason.ends_with(')') {
            let inner = reason[open + 2..reason.len() - 1].trim().to_string();
            let outer = reason[..open].trim().to_string();
            if outer.contains(&inner) || inner.contains(&outer) {
                reason = if inner.len() > outer.len() {
                    inner
                } else {
                    outer
                };
            }
        }
    }
    match channel {
        Some(ch) if !reason.starts_with(&format!("{ch}:")) => format!("{ch}: {reason}"),
        _ => reason,
    }
}

fn counts(map: BTreeMap<String, usize>) -> Vec<Count> {
    let mut v: Vec<Count> = map
        .into_iter()
        .map(|(name, count)| Count {
            name: human_label(&name),
            count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    v
}

/// Builds the digest's content from a run report (pure).
pub(crate) fn digest_view(report: &RunReport, verbose: bool) -> DigestView {
    let c = &report.counts;
    let mut statuses = vec![
        Count {
            name: "sent".into(),
            count: c.sent,
        },
        Count {
            name: "failed".into(),
            count: c.failed,
        },
        Count {
            name: "skipped".into(),
            count: c.skipped,
        },
    ];
    if report.dry_run {
        statuses.insert(
            0,
            Count {
                name: "planned".into(),
                count: c.planned,
            },
        );
    }
    let fell_back = report
        .reminders
        .iter()
        .filter(|r| r.status == ReminderStatus::Sent && r.reason.is_some())
        .count();
    if fell_back > 0 {
        statuses.push(Count {
            name: "sent by a fallback channel".into(),
            count: fell_back,
        });
    }
    let (mut kind, mut platform, mut risk) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut past: BTreeSet<String> = BTreeSet::new();
    let mut failures = Vec::new();
    let mut unsupported: BTreeSet<String> = BTreeSet::new();
    for r in &report.reminders {
        for i in &r.issues {
            *kind.entry(i.kind.as_str().to_string()).or_insert(0) += 1;
            *platform.entry(i.platform.as_str().to_string()).or_insert(0) += 1;
            *risk.entry(i.risk.as_str().to_string()).or_insert(0) += 1;
            if i.days_left < 0 {
                past.insert(r.owner.for_log(verbose));
            }
            if let Some(last_os) = &i.last_os {
                unsupported.insert(format!(
                    "{} ({last_os}), {}",
                    i.device_model,
                    r.owner.for_log(verbose)
                ));
            }
        }
        if r.status == ReminderStatus::Failed {
            let reason = one_reason(
                r.channel.as_deref(),
                r.reason.as_deref().unwrap_or("unknown"),
            );
            failures.push(FailureLine {
                owner: r.owner.for_log(verbose),
                reason,
            });
        }
    }
    let failures_count = failures.len();
    failures.truncate(MAX_LISTED);
    let past_deadline_count = past.len();
    let past_deadline: Vec<String> = past.into_iter().take(MAX_LISTED).collect();
    DigestView {
        run_id: report.run_id.clone(),
        trigger: report.trigger.as_str().to_string(),
        dry_run: report.dry_run,
        as_of: report.as_of.to_string(),
        summary: report.summary.clone(),
        statuses,
        groups: vec![
            CountGroup {
                title: "Issues by kind".into(),
                counts: counts(kind),
            },
            CountGroup {
                title: "By platform".into(),
                counts: counts(platform),
            },
            CountGroup {
                title: "By risk".into(),
                counts: counts(risk),
            },
        ],
        failures_more: failures_count - failures.len(),
        failures,
        failures_count,
        past_deadline_more: past_deadline_count - past_deadline.len(),
        past_deadline,
        past_deadline_count,
        unsupported_count: unsupported.len(),
        unsupported_more: unsupported.len().saturating_sub(MAX_LISTED),
        unsupported: unsupported.into_iter().take(MAX_LISTED).collect(),
        team_action_count: report.team_action.len(),
        team_action: report
            .team_action
            .iter()
            .take(MAX_LISTED)
            .map(|o| o.for_log(verbose))
            .collect(),
        team_action_more: report.team_action.len().saturating_sub(MAX_LISTED),
        warnings: report.warnings.clone(),
        insights: None,
    }
}

/// Renders the digest card for a report, with the insights block when given.
pub(crate) fn digest_card_with(
    report: &RunReport,
    insights: Option<&DigestInsights>,
    renderer: &Renderer,
    verbose: bool,
) -> Result<serde_json::Value, DeliveryError> {
    let mut view = digest_view(report, verbose);
    view.insights = insights.cloned();
    let text = renderer
        .render_named(DIGEST_TEMPLATE, minijinja::Value::from_serialize(&view))
        .map_err(|e| DeliveryError::permanent(CHANNEL, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| {
        DeliveryError::permanent(
            CHANNEL,
            format!("template {DIGEST_TEMPLATE}: the output is not valid JSON: {e}"),
        )
    })
}

/// Sends one digest card for `report` to the security team's webhook. Call it once at the
/// end of a run (not for dry runs unless wanted); a failure is for the logs, not the run.
pub async fn send_digest(
    report: &RunReport,
    renderer: &Renderer,
    sender: &DigestSender,
) -> Result<Delivery, DeliveryError> {
    send_digest_with(report, None, renderer, sender).await
}

/// [`send_digest`] with the insights block (headline figures, where the page is).
pub(crate) async fn send_digest_with(
    report: &RunReport,
    insights: Option<&DigestInsights>,
    renderer: &Renderer,
    sender: &DigestSender,
) -> Result<Delivery, DeliveryError> {
    let card = digest_card_with(report, insights, renderer, sender.verbose)?;
    let body = webhook_body(None, &card);
    let attempts = post_webhook(&sender.http, &sender.url, &body, CHANNEL).await?;
    Ok(Delivery {
        channel: CHANNEL.into(),
        attempts,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReminderReport, Trigger};

    fn report_with_failures(n: usize) -> RunReport {
        let mut r: RunReport = serde_json::from_value(serde_json::json!({
            "schema": crate::report::SCHEMA, "run_id": "r1", "trigger": "timer", "dry_run": false,
            "as_of": "2024-03-21", "started_at": "2024-03-21T06:00:00Z", "finished_at": "2024-03-21T06:00:00Z",
            "source": {"kind": "local", "location": "x", "format": null, "bytes": 0, "sha256": ""},
            "rows": {"total": 0, "rejected": 0, "remindable": 0, "not_remindable": 0}, "rejected": [],
            "owners": {"planned": 0, "not_due": 0, "excluded": 0}, "reminders": [],
            "counts": {"planned": 0, "sent": 0, "skipped": 0, "failed": 0}, "summary": ""
        }))
        .unwrap();
        assert_eq!(r.trigger, Trigger::Timer);
        for i in 0..n {
            r.reminders.push(ReminderReport {
                owner: crate::domain::OwnerEmail::parse(&format!("user{i}@contoso.com")).unwrap(),
                status: ReminderStatus::Failed,
                reason: Some("user not found".into()),
                channel: Some("teams_bot".into()),
                stage: None,
                message_id: None,
                attempts: None,
                escalated_to: None,
                issues: vec![],
            });
        }
        r.finish(chrono::Utc::now());
        r
    }

    fn renderer() -> Renderer {
        crate::render::Renderer::new(
            None,
            &["fr".into()],
            crate::render::MessageConstants {
                contact: "c".into(),
                signature: "s".into(),
                grace_days: 30,
                time_zone: chrono_tz::Europe::Paris,
                by_language: Default::default(),
            },
        )
        .unwrap()
    }

    #[test]
    fn the_insights_block_shows_the_figures_and_where_the_page_is_in_its_own_container() {
        let insights = DigestInsights {
            figures: vec![HeadlineFigure {
                name: "Open issues".into(),
                value: "5 ▼ -1 vs 7 days ago".into(),
            }],
            link: None,
            stored_at: Some("state/reports/2026/07/30/r1.html".into()),
        };
        let card = digest_card_with(
            &report_with_failures(1),
            Some(&insights),
            &renderer(),
            false,
        )
        .unwrap();
        let text = card.to_string();
        assert!(text.contains("5 ▼ -1 vs 7 days ago"), "{text}");
        assert!(text.contains("Insights report: state/reports/2026/07/30/r1.html"));
        assert!(!text.contains("Action.OpenUrl"));
        let block = card["body"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "Container")
            .expect("a separate container");
        assert_eq!(block["items"][0]["text"], "Is the fleet getting safer?");

        let linked = DigestInsights {
            link: Some("https://contoso.sharepoint.com/r.html".into()),
            ..insights
        };
        let card =
            digest_card_with(&report_with_failures(1), Some(&linked), &renderer(), false).unwrap();
        assert!(card.to_string().contains("Action.OpenUrl"));
        // Without insights the card has no such block.
        let plain = digest_card_with(&report_with_failures(1), None, &renderer(), false).unwrap();
        assert!(!plain.to_string().contains("Is the fleet getting safer?"));
    }

    #[test]
    fn a_long_failure_list_is_cut_and_counted_so_the_card_stays_small() {
        let view = digest_view(&report_with_failures(400), false);
        assert_eq!(view.failures_count, 400);
        assert_eq!(view.failures.len(), MAX_LISTED);
        assert_eq!(view.failures_more, 400 - MAX_LISTED);
        assert!(view.failures.iter().all(|f| f.owner.starts_with("owner-")));
        let renderer = crate::render::Renderer::new(
            None,
            &["fr".into()],
            crate::render::MessageConstants {
                contact: "c".into(),
                signature: "s".into(),
                grace_days: 30,
                by_language: Default::default(),
                time_zone: chrono_tz::Europe::Paris,
            },
        )
        .unwrap();
        let card = digest_card_with(&report_with_failures(400), None, &renderer, false).unwrap();
        let size = serde_json::to_vec(&webhook_body(None, &card))
            .unwrap()
            .len();
        assert!(size < 28 * 1024, "{size} bytes");
        assert_eq!(card["version"], "1.5");
    }

    #[test]
    fn owners_overdue_beyond_the_threshold_are_listed_for_the_team_and_the_card_validates() {
        let mut report = report_with_failures(2);
        report.reminders[0].issues.push(crate::report::ReportIssue {
            lookout_id: None,
            device_model: "iPhone 7".into(),
            platform: crate::domain::Platform::Ios,
            kind: crate::domain::IssueKind::OsOutOfDate,
            issue: "OS".into(),
            risk: crate::domain::Risk::Moderate,
            detected: chrono::Utc::now(),
            deadline: chrono::NaiveDate::from_ymd_opt(2024, 3, 31).unwrap(),
            days_left: 3,
            last_os: Some("iOS 15".into()),
        });
        report.team_action = (0..40)
            .map(|i| crate::domain::OwnerEmail::parse(&format!("late{i}@contoso.com")).unwrap())
            .collect();
        let view = digest_view(&report, false);
        assert_eq!(view.team_action_count, 40);
        assert_eq!(view.team_action.len(), MAX_LISTED);
        assert_eq!(view.team_action_more, 40 - MAX_LISTED);
        assert!(view.team_action.iter().all(|o| o.starts_with("owner-")));
        let renderer = crate::render::Renderer::new(
            None,
            &["fr".into()],
            crate::render::MessageConstants {
                contact: "c".into(),
                signature: "s".into(),
                grace_days: 30,
                by_language: Default::default(),
                time_zone: chrono_tz::Europe::Paris,
            },
        )
        .unwrap();
        let card = digest_card_with(&report, None, &renderer, false).unwrap();
        let text = card.to_string();
        assert!(text.contains("Needing the team's action"), "{text}");
        assert!(text.contains("and 15 more"), "{text}");
        assert_eq!(view.unsupported_count, 1);
        assert!(
            text.contains("Devices that can no longer be updated (replace them): 1"),
            "{text}"
        );
        assert!(text.contains("iPhone 7 (iOS 15), owner-"), "{text}");
        assert!(!text.contains("contoso.com"), "{text}");
        let messages = crate::render::official_card_messages(&[card]);
        assert!(messages[0].is_empty(), "{messages:?}");
    }

    #[test]
    fn the_digest_shows_human_labels_and_one_reason_per_failure() {
        assert_eq!(
            one_reason(Some("workflows"), "HTTP 400 (HTTP 400)"),
            "workflows: HTTP 400"
        );
        assert_eq!(
            one_reason(Some("teams_bot"), "teams_bot: user not found"),
            "teams_bot: user not found"
        );
        assert_eq!(
            one_reason(None, "refused (HTTP 413 payload too large)"),
            "refused (HTTP 413 payload too large)"
        );
        let mut report = report_with_failures(1);
        report.reminders[0].reason = Some("HTTP 400 (HTTP 400)".into());
        report.reminders[0].channel = Some("workflows".into());
        report.reminders[0].issues.push(crate::report::ReportIssue {
            lookout_id: None,
            device_model: "SM-A528B".into(),
            platform: crate::domain::Platform::Android,
            kind: crate::domain::IssueKind::SecurityPatchOutOfDate,
            issue: "ASPL".into(),
            risk: crate::domain::Risk::High,
            detected: chrono::Utc::now(),
            deadline: chrono::NaiveDate::from_ymd_opt(2024, 3, 31).unwrap(),
            days_left: 3,
            last_os: None,
        });
        let view = digest_view(&report, false);
        assert_eq!(view.failures[0].reason, "workflows: HTTP 400");
        let names: Vec<&str> = view
            .groups
            .iter()
            .flat_map(|g| g.counts.iter().map(|c| c.name.as_str()))
            .collect();
        assert_eq!(names, ["Android security patch", "Android", "High"]);
    }
}
