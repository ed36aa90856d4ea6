//! Report: what a run did, as JSON (versioned), CSV and a one-line summary. The same struct
//! is printed by the CLI, returned by the HTTP function and stored beside the ledger.

use crate::domain::{IssueKind, OwnerEmail, Platform, Risk, Text};
use crate::parse::{ParsedExport, RejectedRow};
use crate::plan::{HeldBack, IssueLine, Plan, PlannedReminder, Stage};
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

impl Trigger {
    /// The report name (`cli`, `timer`, `http`), as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Timer => "timer",
            Trigger::Http => "http",
        }
    }
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

/// One issue in a reminder line of the report. Typed (the enums serialise as their
/// snake_case names) and sharing the plan's texts: a report line copies no text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportIssue {
    /// Lookout device id.
    pub lookout_id: Option<Text>,
    /// Device model.
    pub device_model: Text,
    /// Platform.
    pub platform: Platform,
    /// Kind.
    pub kind: IssueKind,
    /// Issue text.
    pub issue: Text,
    /// Risk.
    pub risk: Risk,
    /// Detected (RFC 3339).
    pub detected: DateTime<Utc>,
    /// Deadline.
    pub deadline: NaiveDate,
    /// Days left.
    pub days_left: i64,
    /// The model can no longer install a current OS: the last one it supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_os: Option<Text>,
}

impl From<&IssueLine> for ReportIssue {
    fn from(l: &IssueLine) -> Self {
        Self {
            lookout_id: l.lookout_id.clone(),
            device_model: l.device_model.clone(),
            platform: l.platform,
            kind: l.kind,
            issue: l.issue.clone(),
            risk: l.risk,
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
    pub owner: OwnerEmail,
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
    pub team_action: Vec<OwnerEmail>,
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
                    r.owner.as_str(),
                    status_name(r.status),
                    r.reason.as_deref().unwrap_or(""),
                    r.channel.as_deref().unwrap_or(""),
                    r.stage.map(|s| s.as_str()).unwrap_or(""),
                    r.message_id.as_deref().unwrap_or(""),
                    i.lookout_id.as_deref().unwrap_or(""),
                    &i.device_model,
                    i.platform.as_str(),
                    i.kind.as_str(),
                    &i.issue,
                    i.risk.as_str(),
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

/// Who ran what, when: the parts of a report known before the export is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMeta {
    /// Unique run id.
    pub run_id: String,
    /// The host's invocation id, when run as a function.
    pub invocation_id: Option<String>,
    /// What started it.
    pub trigger: Trigger,
    /// Nothing sent, nothing recorded.
    pub dry_run: bool,
    /// The run's "today".
    pub as_of: NaiveDate,
    /// Start.
    pub started_at: DateTime<Utc>,
}

/// What a delivery channel answered for a reminder it sent (the report's part of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The channel that delivered it.
    pub channel: String,
    /// Why an earlier channel of the chain was not used, if one was skipped.
    pub fell_back: Option<String>,
    /// Message id from the channel.
    pub message_id: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The manager's copy, or why nobody was copied.
    pub escalated_to: Option<String>,
}

/// Warning added when no mail domain restricts who may be messaged.
pub const NO_ALLOWED_DOMAINS_WARNING: &str =
    "no allowed mail domains configured (REMINDERS_ALLOWED_DOMAINS): every owner may be messaged";

impl RunReport {
    /// The report of a run that has planned and sent nothing yet: the export's counts, the
    /// owners held back (one skipped line each) and the parse notes as warnings.
    /// `domains_restricted` is false when `REMINDERS_ALLOWED_DOMAINS` is empty.
    pub fn begin(
        meta: &RunMeta,
        source: SourceReport,
        parsed: &ParsedExport,
        plan: &Plan,
        domains_restricted: bool,
    ) -> Self {
        let mut warnings = parsed.notes.clone();
        if !domains_restricted {
            warnings.push(NO_ALLOWED_DOMAINS_WARNING.into());
        }
        Self {
            schema: SCHEMA.into(),
            run_id: meta.run_id.clone(),
            invocation_id: meta.invocation_id.clone(),
            trigger: meta.trigger,
            dry_run: meta.dry_run,
            as_of: meta.as_of,
            started_at: meta.started_at,
            finished_at: meta.started_at,
            source,
            rows: RowCounts {
                total: parsed.total_rows,
                rejected: parsed.rejected.len(),
                remindable: plan.remindable,
                not_remindable: plan.not_remindable.values().sum(),
            },
            rejected: parsed.rejected.clone(),
            owners: OwnerCounts {
                planned: plan.reminders.len(),
                not_due: plan.not_due.len(),
                excluded: plan.excluded.len(),
            },
            reminders: plan
                .not_due
                .iter()
                .chain(plan.excluded.iter())
                .map(ReminderReport::held_back)
                .collect(),
            counts: ReminderCounts::default(),
            resolved: 0,
            warnings,
            incomplete: None,
            team_action: plan.team_action.clone(),
            summary: String::new(),
        }
    }
}

impl ReminderReport {
    /// The line of a reminder with `status`; no channel answer on it.
    fn of(
        r: &PlannedReminder,
        status: ReminderStatus,
        reason: Option<String>,
        channel: Option<String>,
    ) -> Self {
        Self {
            owner: r.owner.clone(),
            status,
            reason,
            channel,
            stage: Some(r.stage),
            message_id: None,
            attempts: None,
            escalated_to: None,
            issues: r.issues().map(ReportIssue::from).collect(),
        }
    }

    /// An owner the plan held back (not due, excluded domain): skipped, with the reason.
    pub fn held_back(h: &HeldBack) -> Self {
        Self {
            owner: h.owner.clone(),
            status: ReminderStatus::Skipped,
            reason: Some(h.reason.clone()),
            channel: None,
            stage: None,
            message_id: None,
            attempts: None,
            escalated_to: None,
            issues: h.issues.iter().map(ReportIssue::from).collect(),
        }
    }

    /// A dry run's reminder: what `channel` would send.
    pub fn planned(r: &PlannedReminder, channel: &str) -> Self {
        Self::of(r, ReminderStatus::Planned, None, Some(channel.into()))
    }

    /// A reminder the channel accepted.
    pub fn sent(r: &PlannedReminder, receipt: &Receipt) -> Self {
        Self {
            message_id: receipt.message_id.clone(),
            attempts: Some(receipt.attempts),
            escalated_to: receipt.escalated_to.clone(),
            ..Self::of(
                r,
                ReminderStatus::Sent,
                receipt.fell_back.clone(),
                Some(receipt.channel.clone()),
            )
        }
    }

    /// A post that failed in a way that may have delivered it (recorded as sent).
    pub fn maybe_delivered(r: &PlannedReminder, channel: &str, reason: &str) -> Self {
        Self::of(
            r,
            ReminderStatus::MaybeDelivered,
            Some(reason.into()),
            Some(channel.into()),
        )
    }

    /// A reminder the channel refused: `skipped` when deliberately not sent (disabled
    /// account…), else failed. The service's code, if any, follows the reason.
    pub fn not_sent(
        r: &PlannedReminder,
        channel: &str,
        reason: &str,
        code: Option<&str>,
        skipped: bool,
    ) -> Self {
        let status = if skipped {
            ReminderStatus::Skipped
        } else {
            ReminderStatus::Failed
        };
        let reason = match code {
            Some(code) => format!("{reason} ({code})"),
            None => reason.to_string(),
        };
        Self::of(r, status, Some(reason), Some(channel.into()))
    }

    /// A reminder whose send never started (stop, time budget, ledger failure): skipped.
    pub fn not_attempted(r: &PlannedReminder, why: &str) -> Self {
        Self::of(r, ReminderStatus::Skipped, Some(why.into()), None)
    }
}

impl std::fmt::Display for RunReport {
    /// The CLI's human report: header, row counts, rejected rows, one line per owner with
    /// their issues, warnings, then the summary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} run {} as of {} — source {} ({}, {} bytes)",
            if self.dry_run { "Dry" } else { "Live" },
            self.run_id,
            self.as_of,
            self.source.location,
            self.source.format.as_deref().unwrap_or("?"),
            self.source.bytes
        )?;
        writeln!(
            f,
            "Rows: {} total, {} rejected, {} remindable, {} not remindable",
            self.rows.total, self.rows.rejected, self.rows.remindable, self.rows.not_remindable
        )?;
        for r in &self.rejected {
            writeln!(
                f,
                "  rejected row {}: column '{}': {}",
                r.row, r.field, r.reason
            )?;
        }
        writeln!(f)?;
        for r in &self.reminders {
            let status = match r.status {
                ReminderStatus::Planned => "PLANNED",
                ReminderStatus::Sent => "SENT",
                ReminderStatus::Skipped => "SKIPPED",
                ReminderStatus::Failed => "FAILED",
                ReminderStatus::MaybeDelivered => "MAYBE",
            };
            let stage = r.stage.map(|s| s.as_str()).unwrap_or("-");
            writeln!(
                f,
                "{status:<8} {:<32} {stage:<8} {}",
                r.owner,
                r.reason.as_deref().unwrap_or("")
            )?;
            for i in &r.issues {
                let what = if i.kind == IssueKind::VulnerableApp {
                    format!("{} ({})", i.kind.as_str(), i.issue)
                } else {
                    i.kind.as_str().to_string()
                };
                writeln!(
                    f,
                    "         - {:<22} {:<8} {:<40} deadline {} ({} days left)",
                    i.device_model,
                    i.platform.as_str(),
                    what,
                    i.deadline,
                    i.days_left
                )?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        write!(f, "\n{}", self.summary)
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
    use crate::domain::{IssueKind, OwnerEmail, Platform, Risk};
    use crate::plan::{DeviceIssues, IssueKey};

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, d).unwrap()
    }

    fn issue(kind: IssueKind, text: &str) -> IssueLine {
        IssueLine {
            key: IssueKey(format!("k-{text}").into()),
            row: 2,
            lookout_id: Some("L1".into()),
            device_model: "iPhone 12".into(),
            platform: Platform::Ios,
            kind,
            issue: text.into(),
            app_name: None,
            risk: Risk::High,
            detected: day(1).and_hms_opt(9, 0, 0).unwrap().and_utc(),
            deadline: day(31),
            days_left: 24,
            due: true,
            last_os: None,
        }
    }

    fn reminder(owner: &str) -> PlannedReminder {
        PlannedReminder {
            owner: OwnerEmail::parse(owner).unwrap(),
            stage: Stage::Repeat,
            escalate: false,
            team_told: false,
            devices: vec![DeviceIssues {
                device_model: "iPhone 12".into(),
                platform: Platform::Ios,
                lookout_id: Some("L1".into()),
                issues: vec![
                    issue(IssueKind::OsOutOfDate, "OS"),
                    issue(IssueKind::VulnerableApp, "Chrome"),
                ],
            }],
        }
    }

    fn meta(dry_run: bool) -> RunMeta {
        RunMeta {
            run_id: "r1".into(),
            invocation_id: Some("inv".into()),
            trigger: Trigger::Timer,
            dry_run,
            as_of: day(7),
            started_at: day(7).and_hms_opt(6, 0, 0).unwrap().and_utc(),
        }
    }

    fn held(owner: &str, reason: &str) -> HeldBack {
        HeldBack {
            owner: OwnerEmail::parse(owner).unwrap(),
            reason: reason.into(),
            issues: vec![issue(IssueKind::AgentOutOfDate, "agent")],
        }
    }

    #[test]
    fn a_begun_report_counts_the_export_and_the_plan_and_lists_the_owners_held_back() {
        let parsed = ParsedExport {
            total_rows: 5,
            rejected: vec![RejectedRow {
                row: 4,
                field: "Date Detected".into(),
                reason: "not a date: 'x'".into(),
            }],
            notes: vec!["sheet 'Issues' used".into()],
            ..Default::default()
        };
        let plan = Plan {
            reminders: vec![reminder("a@contoso.com")],
            not_due: vec![held("b@contoso.com", "reminded on 2024-03-05")],
            excluded: vec![held("c@gmail.com", "domain gmail.com not allowed")],
            remindable: 3,
            not_remindable: [("resolved".to_string(), 1), ("kind".to_string(), 2)]
                .into_iter()
                .collect(),
            team_action: vec![OwnerEmail::parse("b@contoso.com").unwrap()],
            ..Default::default()
        };
        let r = RunReport::begin(&meta(false), SourceReport::default(), &parsed, &plan, true);
        assert_eq!(
            (r.run_id.as_str(), r.trigger, r.dry_run),
            ("r1", Trigger::Timer, false)
        );
        assert_eq!(r.invocation_id.as_deref(), Some("inv"));
        assert_eq!(r.finished_at, r.started_at, "not finished yet");
        assert_eq!(
            r.rows,
            RowCounts {
                total: 5,
                rejected: 1,
                remindable: 3,
                not_remindable: 3
            }
        );
        assert_eq!(
            r.owners,
            OwnerCounts {
                planned: 1,
                not_due: 1,
                excluded: 1
            }
        );
        assert_eq!(r.rejected, parsed.rejected);
        assert_eq!(
            r.team_action,
            vec![OwnerEmail::parse("b@contoso.com").unwrap()]
        );
        // The owners held back are the report's first lines; the planned one is not there yet.
        let owners: Vec<_> = r.reminders.iter().map(|l| l.owner.as_str()).collect();
        assert_eq!(owners, ["b@contoso.com", "c@gmail.com"]);
        assert!(r
            .reminders
            .iter()
            .all(|l| l.status == ReminderStatus::Skipped));
        assert_eq!(
            r.reminders[1].reason.as_deref(),
            Some("domain gmail.com not allowed")
        );
        assert_eq!(r.warnings, vec!["sheet 'Issues' used".to_string()]);

        let open = RunReport::begin(&meta(true), SourceReport::default(), &parsed, &plan, false);
        assert!(open.dry_run);
        assert_eq!(
            open.warnings.last().map(String::as_str),
            Some(NO_ALLOWED_DOMAINS_WARNING)
        );
    }

    #[test]
    fn each_outcome_gives_its_status_channel_reason_and_every_issue() {
        let r = reminder("a@contoso.com");
        let planned = ReminderReport::planned(&r, "outbox");
        assert_eq!(planned.status, ReminderStatus::Planned);
        assert_eq!(planned.channel.as_deref(), Some("outbox"));
        assert_eq!(planned.stage, Some(Stage::Repeat));
        assert_eq!(planned.issues.len(), 2);
        assert_eq!(planned.issues[1].kind, IssueKind::VulnerableApp);

        let receipt = Receipt {
            channel: "email".into(),
            fell_back: Some("teams_bot: no Teams licence".into()),
            message_id: Some("m1".into()),
            attempts: 2,
            escalated_to: Some("boss@contoso.com (cc)".into()),
        };
        let sent = ReminderReport::sent(&r, &receipt);
        assert_eq!(sent.status, ReminderStatus::Sent);
        assert_eq!(sent.channel.as_deref(), Some("email"));
        assert_eq!(sent.reason.as_deref(), Some("teams_bot: no Teams licence"));
        assert_eq!(
            (sent.message_id.as_deref(), sent.attempts),
            (Some("m1"), Some(2))
        );
        assert_eq!(sent.escalated_to.as_deref(), Some("boss@contoso.com (cc)"));

        let maybe = ReminderReport::maybe_delivered(&r, "teams_bot", "timed out after writing");
        assert_eq!(maybe.status, ReminderStatus::MaybeDelivered);
        assert_eq!(maybe.message_id, None);

        let failed =
            ReminderReport::not_sent(&r, "email", "mailbox full", Some("ErrorQuota"), false);
        assert_eq!(failed.status, ReminderStatus::Failed);
        assert_eq!(failed.reason.as_deref(), Some("mailbox full (ErrorQuota)"));
        let skipped = ReminderReport::not_sent(&r, "email", "account disabled", None, true);
        assert_eq!(skipped.status, ReminderStatus::Skipped);
        assert_eq!(skipped.reason.as_deref(), Some("account disabled"));

        let stopped = ReminderReport::not_attempted(&r, "not attempted: stopped");
        assert_eq!(stopped.status, ReminderStatus::Skipped);
        assert_eq!(stopped.channel, None, "no channel was tried");
        assert_eq!(stopped.issues.len(), 2);
    }

    #[test]
    fn the_printed_report_lists_each_owner_with_issues_then_warnings_and_the_summary() {
        let plan = Plan {
            reminders: vec![reminder("a@contoso.com")],
            ..Default::default()
        };
        let mut report = RunReport::begin(
            &meta(true),
            SourceReport::default(),
            &ParsedExport::default(),
            &plan,
            false,
        );
        report
            .reminders
            .push(ReminderReport::planned(&plan.reminders[0], "outbox"));
        report.finish(day(7).and_hms_opt(6, 1, 0).unwrap().and_utc());
        let text = report.to_string();
        assert!(text.starts_with("Dry run r1 as of 2024-03-07"), "{text}");
        // In columns: the owner padded to 32, the model to 22, the platform to 8.
        assert!(
            text.contains(&format!("PLANNED  {:<32} repeat", "a@contoso.com")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "         - {:<22} {:<8} vulnerable_app (Chrome)",
                "iPhone 12", "ios"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("warning: {NO_ALLOWED_DOMAINS_WARNING}")),
            "{text}"
        );
        assert!(text.ends_with(&format!("\n\n{}", report.summary)), "{text}");
        assert_eq!(report.counts.planned, 1);
    }
}

/// The streamed report JSON (issue 9, lean core).
#[cfg(test)]
mod streaming_tests {
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
                owner: OwnerEmail::parse("a@engie.com").unwrap(),
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
            team_action: vec![OwnerEmail::parse("b@engie.com").unwrap()],
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
