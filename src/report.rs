//! Report: what a run did, as JSON (versioned), CSV and a one-line summary. The same struct
//! is printed by the CLI, returned by the HTTP function and stored beside the ledger.

use crate::parse::RejectedRow;
use crate::plan::{IssueLine, Stage};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::io::Write as _;

/// The report's schema id; bump on breaking changes.
pub const SCHEMA: &str = "lookout-reminders/run-report/v1";

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The command line.
    Cli,
    /// The daily timer function.
    Timer,
    /// The HTTP function.
    Http,
}

/// The outcome of one owner's reminder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderStatus {
    /// Would be sent (dry run).
    Planned,
    /// Sent.
    Sent,
    /// Deliberately not sent (not due, excluded domain, disabled account…).
    Skipped,
    /// Sending failed.
    Failed,
    /// The post failed in a way that may have delivered it all the same (timeout, reset or
    /// 5xx after the request was written): recorded in the ledger as sent, never re-sent.
    MaybeDelivered,
}

/// Provenance of an export, as recorded in the run report's `source`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOrigin {
    /// `local`, `blob` or `sharepoint`.
    pub kind: String,
    /// Path, blob URL (without SAS) or SharePoint path.
    pub location: String,
    /// ETag when the store has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Last-modified time (RFC 3339) when the store has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// The source part of the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    /// `local`, `blob`, `sharepoint`.
    pub kind: String,
    /// Where.
    pub location: String,
    /// Detected format (`csv`, `xlsx`, `list_view`), once parsed.
    pub format: Option<String>,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// ETag (Blob, SharePoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Last modified (Blob, SharePoint, local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl SourceReport {
    /// Builds the source part from provenance and content.
    pub fn new(origin: &SourceOrigin, bytes: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        Self {
            kind: origin.kind.clone(),
            location: origin.location.clone(),
            format: None,
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            etag: origin.etag.clone(),
            last_modified: origin.last_modified.clone(),
        }
    }
}

/// Row counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    /// Data rows (header excluded), rejected included.
    pub total: usize,
    /// Rows that could not be used.
    pub rejected: usize,
    /// Active issues of a remindable kind.
    pub remindable: usize,
    /// Usable rows that need no reminder.
    pub not_remindable: usize,
}

/// Owner counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerCounts {
    /// Owners with a reminder in this run.
    pub planned: usize,
    /// Owners reminded recently enough.
    pub not_due: usize,
    /// Owners outside the allowed domains.
    pub excluded: usize,
}

/// Reminder counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderCounts {
    /// Planned (dry run) reminders.
    pub planned: usize,
    /// Sent.
    pub sent: usize,
    /// Skipped.
    pub skipped: usize,
    /// Failed.
    pub failed: usize,
    /// Maybe delivered (recorded as sent; not re-sent).
    #[serde(default)]
    pub maybe_delivered: usize,
}

/// One issue in a reminder line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportIssue {
    /// Lookout device id.
    pub lookout_id: Option<String>,
    /// Device model.
    pub device_model: String,
    /// Platform.
    pub platform: String,
    /// Kind.
    pub kind: String,
    /// Issue text.
    pub issue: String,
    /// Risk.
    pub risk: String,
    /// Detected (RFC 3339).
    pub detected: DateTime<Utc>,
    /// Deadline.
    pub deadline: NaiveDate,
    /// Days left.
    pub days_left: i64,
    /// The model can no longer install a current OS: the last one it supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_os: Option<String>,
}

impl From<&IssueLine> for ReportIssue {
    fn from(l: &IssueLine) -> Self {
        Self {
            lookout_id: l.lookout_id.clone(),
            device_model: l.device_model.clone(),
            platform: l.platform.as_str().into(),
            kind: l.kind.as_str().into(),
            issue: l.issue.clone(),
            risk: l.risk.as_str().into(),
            detected: l.detected,
            deadline: l.deadline,
            days_left: l.days_left,
            last_os: l.last_os.clone(),
        }
    }
}

/// One owner's line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderReport {
    /// Owner e-mail (the report is for the operator; logs are the pseudonymised place).
    pub owner: String,
    /// Outcome.
    pub status: ReminderStatus,
    /// Why (skipped / failed / fell back), or empty.
    #[serde(default)]
    pub reason: Option<String>,
    /// Channel used or planned.
    pub channel: Option<String>,
    /// Stage.
    pub stage: Option<Stage>,
    /// Message id from the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Attempts made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// An escalated reminder's copy to the owner's manager (`boss@contoso.com (cc)`), or why
    /// nobody was copied (`no manager in the directory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_to: Option<String>,
    /// The issues it covers.
    pub issues: Vec<ReportIssue>,
}

/// A run's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// Unique run id.
    pub run_id: String,
    /// The host's invocation id, when run as a function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// What started it.
    pub trigger: Trigger,
    /// Nothing sent, nothing recorded.
    pub dry_run: bool,
    /// The run's "today".
    pub as_of: NaiveDate,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: DateTime<Utc>,
    /// Source.
    pub source: SourceReport,
    /// Rows.
    pub rows: RowCounts,
    /// Rejected rows.
    pub rejected: Vec<RejectedRow>,
    /// Owners.
    pub owners: OwnerCounts,
    /// Per owner outcomes.
    pub reminders: Vec<ReminderReport>,
    /// Reminder counts.
    pub counts: ReminderCounts,
    /// Issues recorded as resolved in this run.
    #[serde(default)]
    pub resolved: usize,
    /// Warnings for the operator (no allowed domains set…).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Set when the run stopped at its time budget before every planned reminder was
    /// attempted; the next run continues with the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
    /// Owners overdue beyond `REMINDERS_TEAM_ACTION_AFTER_DAYS`: reminders alone have not
    /// worked, the security team should act (device blocked? wrong owner? stale device?).
    #[serde(default)]
    pub team_action: Vec<String>,
    /// One human line (for a Power Automate button).
    pub summary: String,
}

/// A run that reached its time budget (`REMINDERS_TIME_BUDGET_SECONDS`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    /// Planned reminders not attempted: the next run sends them.
    pub remaining: usize,
    /// The budget, in seconds.
    pub budget_seconds: u64,
}

impl RunReport {
    /// Recomputes the counts and the summary from the reminder lines.
    pub fn finish(&mut self, finished_at: DateTime<Utc>) {
        self.finished_at = finished_at;
        let mut c = ReminderCounts::default();
        for r in &self.reminders {
            match r.status {
                ReminderStatus::Planned => c.planned += 1,
                ReminderStatus::Sent => c.sent += 1,
                ReminderStatus::Skipped => c.skipped += 1,
                ReminderStatus::Failed => c.failed += 1,
                ReminderStatus::MaybeDelivered => c.maybe_delivered += 1,
            }
        }
        self.counts = c;
        self.summary = self.summary_line();
    }

    /// `dry run: 23 reminders planned for 25 remindable issues (27 rows, 0 rejected)`.
    pub fn summary_line(&self) -> String {
        let c = &self.counts;
        let head = if self.dry_run {
            format!("dry run: {} reminders planned", c.planned)
        } else {
            let maybe = if c.maybe_delivered > 0 {
                format!(", {} maybe delivered (not re-sent)", c.maybe_delivered)
            } else {
                String::new()
            };
            format!(
                "{} reminders sent, {} failed{maybe}, {} skipped",
                c.sent, c.failed, c.skipped
            )
        };
        let incomplete = match &self.incomplete {
            Some(i) => format!(
                "; incomplete: {} remaining after the {} s time budget, the next run continues",
                i.remaining, i.budget_seconds
            ),
            None => String::new(),
        };
        format!(
            "{head}; {} owners not due, {} excluded; {} remindable issues in {} rows ({} rejected){incomplete}",
            self.owners.not_due,
            self.owners.excluded,
            self.rows.remindable,
            self.rows.total,
            self.rows.rejected
        )
    }

    /// Writes the report as pretty-printed JSON and a newline, streamed through a buffer
    /// (a 100k-row export makes a report of tens of megabytes: no `String` of it is built).
    pub fn write_json(&self, out: impl std::io::Write) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        serde_json::to_writer_pretty(&mut out, self)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Whether some reminders failed (exit code 4 / HTTP 207).
    pub fn partial_failure(&self) -> bool {
        self.counts.failed > 0
    }

    /// The reminders as CSV (one line per owner and issue).
    pub fn reminders_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record([
            "run_id",
            "owner",
            "status",
            "reason",
            "channel",
            "stage",
            "message_id",
            "lookout_id",
            "device_model",
            "platform",
            "kind",
            "issue",
            "risk",
            "detected",
            "deadline",
            "days_left",
            "escalated_to",
        ]);
        for r in &self.reminders {
            for i in &r.issues {
                let _ = w.write_record([
                    self.run_id.as_str(),
                    &r.owner,
                    status_name(r.status),
                    r.reason.as_deref().unwrap_or(""),
                    r.channel.as_deref().unwrap_or(""),
                    r.stage.map(|s| s.as_str()).unwrap_or(""),
                    r.message_id.as_deref().unwrap_or(""),
                    i.lookout_id.as_deref().unwrap_or(""),
                    &i.device_model,
                    &i.platform,
                    &i.kind,
                    &i.issue,
                    &i.risk,
                    &i.detected.to_rfc3339(),
                    &i.deadline.to_string(),
                    &i.days_left.to_string(),
                    r.escalated_to.as_deref().unwrap_or(""),
                ]);
            }
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }
}

fn status_name(s: ReminderStatus) -> &'static str {
    match s {
        ReminderStatus::Planned => "planned",
        ReminderStatus::Sent => "sent",
        ReminderStatus::Skipped => "skipped",
        ReminderStatus::Failed => "failed",
        ReminderStatus::MaybeDelivered => "maybe_delivered",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IssueKind, Platform, Risk};
    use crate::plan::IssueKey;

    fn report() -> RunReport {
        let day = NaiveDate::from_ymd_opt(2024, 3, 7).unwrap();
        let at = day.and_hms_opt(6, 0, 0).unwrap().and_utc();
        let line = IssueLine {
            key: IssueKey("k".into()),
            row: 2,
            lookout_id: Some("dev-1".into()),
            device_model: "SM-A528B \"quoted\" é".into(),
            platform: Platform::Android,
            kind: IssueKind::VulnerableApp,
            issue: "Chrome(com.android.chrome)".into(),
            app_name: Some("Chrome".into()),
            risk: Risk::Moderate,
            detected: at,
            deadline: day,
            days_left: -3,
            due: true,
            last_os: None,
        };
        let mut report = RunReport {
            schema: SCHEMA.into(),
            run_id: "run-1".into(),
            invocation_id: None,
            trigger: Trigger::Cli,
            dry_run: true,
            as_of: day,
            started_at: at,
            finished_at: at,
            source: SourceReport::default(),
            rows: RowCounts::default(),
            rejected: vec![RejectedRow {
                row: 3,
                field: "Device Owner".into(),
                reason: "not an e-mail address: 'x'".into(),
            }],
            owners: OwnerCounts::default(),
            reminders: vec![ReminderReport {
                owner: "a@engie.com".into(),
                status: ReminderStatus::Planned,
                reason: None,
                channel: Some("outbox".into()),
                stage: Some(Stage::Overdue),
                message_id: None,
                attempts: None,
                escalated_to: None,
                issues: vec![ReportIssue::from(&line)],
            }],
            counts: ReminderCounts::default(),
            resolved: 0,
            warnings: vec![],
            incomplete: None,
            team_action: vec!["b@engie.com".into()],
            summary: String::new(),
        };
        report.finish(at);
        report
    }

    #[test]
    fn the_streamed_json_is_the_pretty_printed_report_and_a_newline() {
        let report = report();
        let mut streamed = Vec::new();
        report.write_json(&mut streamed).unwrap();
        let expected = format!("{}\n", serde_json::to_string_pretty(&report).unwrap());
        assert_eq!(String::from_utf8(streamed).unwrap(), expected);
        let back: RunReport = serde_json::from_str(&expected).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn report_issues_name_platform_kind_and_risk_as_before() {
        let json = serde_json::to_value(report()).unwrap();
        let issue = &json["reminders"][0]["issues"][0];
        assert_eq!(issue["platform"], "android");
        assert_eq!(issue["kind"], "vulnerable_app");
        assert_eq!(issue["risk"], "moderate");
        assert_eq!(issue["lookout_id"], "dev-1");
        assert_eq!(issue["days_left"], -3);
    }
}
