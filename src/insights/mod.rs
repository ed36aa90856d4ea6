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

use crate::plan::IssueLine;
use crate::report::{ReminderStatus, RunReport};
use chrono::NaiveDate;

pub use crate::history::{DailyAggregate, IssueFacts, Resolution, ResolvedHow};
use std::collections::HashSet;

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
                owners_open.insert(line.owner.as_str());
            }
            if line.status == ReminderStatus::Sent {
                reached.insert(line.owner.as_str());
            } else if is_unreachable(line.status, line.channel.as_deref()) {
                unreachable.insert(line.owner.as_str());
            }
            for issue in &line.issues {
                d.open += 1;
                *d.open_by_kind
                    .entry(issue.kind.as_str().to_string())
                    .or_default() += 1;
                *d.open_by_platform
                    .entry(issue.platform.as_str().to_string())
                    .or_default() += 1;
                *d.open_by_risk
                    .entry(issue.risk.as_str().to_string())
                    .or_default() += 1;
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
    use crate::domain::{IssueKind, Platform, Risk};

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
