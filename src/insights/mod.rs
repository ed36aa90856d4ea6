//! Insights: is the fleet getting safer? The facts the ledger keeps for that (issue facts at
//! send time, resolutions with their durations, one daily aggregate per run) and the pure
//! computation of the security team's figures and report page from them.
//!
//! Pure: no clock, no I/O. Callers pass the ledger's events and the latest run report.

mod figures;
mod html;

pub use figures::{
    percentile_nearest_rank, ChangeSinceLastRun, Headline, Insights, KindFigures, OverdueLine,
    TrendPoint, UnreachableOwner,
};
pub use html::render_html;

use crate::domain::{IssueKind, Platform, Risk};
use crate::plan::IssueLine;
use crate::report::{ReminderStatus, RunReport};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// What the ledger remembers of a reminded issue, recorded with each reminder so the issue can
/// be measured once it is gone from the export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueFacts {
    /// Detection day (local date in the rules' time zone).
    pub detected_on: NaiveDate,
    /// Last day to act.
    pub deadline: NaiveDate,
    /// Kind.
    pub kind: IssueKind,
    /// Platform.
    #[serde(default = "unknown_platform")]
    pub platform: Platform,
    /// Risk.
    #[serde(default = "unknown_risk")]
    pub risk: Risk,
    /// Whether this reminder was escalated (manager / security team copied).
    #[serde(default)]
    pub escalated: bool,
}

fn unknown_platform() -> Platform {
    Platform::Unknown
}

fn unknown_risk() -> Risk {
    Risk::Unknown
}

impl IssueFacts {
    /// The facts of one issue line of a reminder; `detected_on` is the detection's local date.
    pub fn of(line: &IssueLine, detected_on: NaiveDate, escalated: bool) -> Self {
        Self {
            detected_on,
            deadline: line.deadline,
            kind: line.kind,
            platform: line.platform,
            risk: line.risk,
            escalated,
        }
    }
}

/// How an issue stopped being open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedHow {
    /// The issue is no longer in the export.
    LeftExport,
    /// The export still lists it, with a resolved status and date.
    StatusResolved,
}

/// A resolved issue measured: when, how long after detection, after how many reminders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The day it was resolved: the export's `Date Resolved` when given, else the run's day.
    pub resolved_on: NaiveDate,
    /// How the run learnt it.
    pub how: ResolvedHow,
    /// Detection day.
    pub detected_on: NaiveDate,
    /// Deadline.
    pub deadline: NaiveDate,
    /// Kind.
    pub kind: IssueKind,
    /// Platform.
    #[serde(default = "unknown_platform")]
    pub platform: Platform,
    /// Risk.
    #[serde(default = "unknown_risk")]
    pub risk: Risk,
    /// Days from detection to resolution (time to remediate).
    pub days_to_remediate: i64,
    /// Reminders sent for it before it was resolved.
    pub reminders_before: u32,
    /// Resolved on or before its deadline.
    pub before_deadline: bool,
    /// Resolved after one of its reminders was escalated.
    pub after_escalation: bool,
}

impl Resolution {
    /// Measures a resolution from the issue's recorded facts.
    pub fn measure(
        facts: &IssueFacts,
        ever_escalated: bool,
        reminders_before: u32,
        resolved_on: NaiveDate,
        how: ResolvedHow,
    ) -> Self {
        Self {
            resolved_on,
            how,
            detected_on: facts.detected_on,
            deadline: facts.deadline,
            kind: facts.kind,
            platform: facts.platform,
            risk: facts.risk,
            // A resolution dated before detection (clock skew in the export) counts as 0.
            days_to_remediate: (resolved_on - facts.detected_on).num_days().max(0),
            reminders_before,
            before_deadline: resolved_on <= facts.deadline,
            after_escalation: ever_escalated || facts.escalated,
        }
    }
}

/// One live run's picture of the fleet, small enough to keep one per day for years.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyAggregate {
    /// The run's "today".
    pub as_of: NaiveDate,
    /// The run.
    pub run_id: String,
    /// Open remindable issues.
    pub open: u32,
    /// Open issues by kind (`vulnerable_app`…).
    #[serde(default)]
    pub open_by_kind: BTreeMap<String, u32>,
    /// Open issues by platform.
    #[serde(default)]
    pub open_by_platform: BTreeMap<String, u32>,
    /// Open issues by risk.
    #[serde(default)]
    pub open_by_risk: BTreeMap<String, u32>,
    /// Open issues past their deadline.
    #[serde(default)]
    pub overdue: u32,
    /// Owners with at least one open issue.
    #[serde(default)]
    pub owners_open: u32,
    /// Owners a reminder reached in this run.
    #[serde(default)]
    pub owners_reached: u32,
    /// Owners a channel could not reach in this run (not in Teams, no mailbox, disabled…).
    #[serde(default)]
    pub owners_unreachable: u32,
    /// Owners outside the allowed mail domains.
    #[serde(default)]
    pub owners_excluded: u32,
    /// Issues recorded as resolved by this run (not named `resolved`: in the ledger that word
    /// is the event of a resolution, and people and tests search for it).
    #[serde(default)]
    pub resolved_in_run: u32,
    /// Devices that cannot update, when the export says so (Lookout's export does not today).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cannot_update: Option<u32>,
}

/// Whether a report line is an owner a channel could not reach: the channel answered with a
/// refusal (skipped: not in Teams, no mailbox…) or a failure, as opposed to an owner held back
/// by the plan (not due, excluded), which never reached a channel.
pub fn is_unreachable(status: ReminderStatus, channel: Option<&str>) -> bool {
    matches!(status, ReminderStatus::Skipped | ReminderStatus::Failed) && channel.is_some()
}

impl DailyAggregate {
    /// The aggregate of a finished live run. Every remindable issue of the export is in one
    /// of the report's owner lines (sent, failed, not due, excluded), so the counts are the
    /// fleet's, provided the run was not restricted to some owners.
    pub fn of_run(report: &RunReport) -> Self {
        let mut d = DailyAggregate {
            as_of: report.as_of,
            run_id: report.run_id.clone(),
            resolved_in_run: report.resolved as u32,
            owners_excluded: report.owners.excluded as u32,
            ..Default::default()
        };
        let mut owners_open: HashSet<&str> = HashSet::new();
        let mut reached: HashSet<&str> = HashSet::new();
        let mut unreachable: HashSet<&str> = HashSet::new();
        for line in &report.reminders {
            if !line.issues.is_empty() {
                owners_open.insert(&line.owner);
            }
            if line.status == ReminderStatus::Sent {
                reached.insert(&line.owner);
            } else if is_unreachable(line.status, line.channel.as_deref()) {
                unreachable.insert(&line.owner);
            }
            for issue in &line.issues {
                d.open += 1;
                *d.open_by_kind.entry(issue.kind.clone()).or_default() += 1;
                *d.open_by_platform
                    .entry(issue.platform.clone())
                    .or_default() += 1;
                *d.open_by_risk.entry(issue.risk.clone()).or_default() += 1;
                if issue.days_left < 0 {
                    d.overdue += 1;
                }
            }
        }
        d.owners_open = owners_open.len() as u32;
        d.owners_reached = reached.len() as u32;
        d.owners_unreachable = unreachable.len() as u32;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(detected: &str, deadline: &str, escalated: bool) -> IssueFacts {
        IssueFacts {
            detected_on: detected.parse().unwrap(),
            deadline: deadline.parse().unwrap(),
            kind: IssueKind::OsOutOfDate,
            platform: Platform::Ios,
            risk: Risk::High,
            escalated,
        }
    }

    #[test]
    fn a_fix_on_the_deadline_day_counts_as_before_the_deadline() {
        let f = facts("2026-01-01", "2026-01-31", false);
        let r = Resolution::measure(
            &f,
            false,
            3,
            "2026-01-31".parse().unwrap(),
            ResolvedHow::LeftExport,
        );
        assert_eq!(r.days_to_remediate, 30);
        assert!(r.before_deadline);
        assert!(!r.after_escalation);
        let late = Resolution::measure(
            &f,
            true,
            9,
            "2026-02-01".parse().unwrap(),
            ResolvedHow::LeftExport,
        );
        assert!(!late.before_deadline);
        assert!(late.after_escalation);
        assert_eq!(late.reminders_before, 9);
    }

    #[test]
    fn a_resolution_dated_before_its_detection_counts_zero_days() {
        let f = facts("2026-01-10", "2026-02-09", false);
        let r = Resolution::measure(
            &f,
            false,
            1,
            "2026-01-08".parse().unwrap(),
            ResolvedHow::StatusResolved,
        );
        assert_eq!(r.days_to_remediate, 0);
    }

    #[test]
    fn old_resolved_events_without_the_new_fields_still_load() {
        let line = r#"{"event":"resolved","owner":"a@b.com","issue":"k","as_of":"2026-01-01","run_id":"r"}"#;
        let e: crate::ledger::LedgerEvent = serde_json::from_str(line).unwrap();
        assert!(matches!(
            e,
            crate::ledger::LedgerEvent::Resolved {
                resolution: None,
                ..
            }
        ));
        let daily = r#"{"event":"daily","as_of":"2026-01-01","run_id":"r","open":3}"#;
        let e: crate::ledger::LedgerEvent = serde_json::from_str(daily).unwrap();
        let crate::ledger::LedgerEvent::Daily(d) = e else {
            panic!("not a daily event")
        };
        assert_eq!(d.open, 3);
        assert!(d.open_by_kind.is_empty());
    }
}
