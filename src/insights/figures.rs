//! The security team's figures, computed from the ledger's insight events and the latest run
//! report: open issues and their trend, time to remediate, fixes before the deadline,
//! reminders per fix, the overdue list, unreachable owners, what changed since the last run.

use super::{is_unreachable, DailyAggregate, Resolution};
use crate::domain::IssueKind;
use crate::history::LedgerEvent;
use crate::report::RunReport;
use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything the insights page shows, as data (the JSON format of `report`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Insights {
    /// Schema id of this JSON.
    pub schema: String,
    /// The day of the latest run the figures describe ("now").
    pub as_of: Option<NaiveDate>,
    /// The first day of the period (resolutions and trend).
    pub since: NaiveDate,
    /// The latest run.
    pub latest_run_id: Option<String>,
    /// The headline figures.
    pub headline: Headline,
    /// The same per kind.
    pub by_kind: Vec<KindFigures>,
    /// Open issues per run day over the period, oldest first.
    pub trend: Vec<TrendPoint>,
    /// Overdue issues of the latest run, worst first.
    pub overdue: Vec<OverdueLine>,
    /// Owners a channel could not reach in the latest run.
    pub unreachable: Vec<UnreachableOwner>,
    /// What changed since the run before the latest.
    pub changes: Option<ChangeSinceLastRun>,
}

/// The schema id of [`Insights`] as JSON.
pub const INSIGHTS_SCHEMA: &str = "lookout-reminders/insights/v1";

/// The figures a manager asks for first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    /// Open remindable issues at the latest run.
    pub open_now: Option<u32>,
    /// Open issues at the last run at least 7 days before the latest.
    pub open_7_days_ago: Option<u32>,
    /// `open_now - open_7_days_ago` (negative: fewer open issues, safer).
    pub change_7_days: Option<i64>,
    /// Open issues at the last run at least 30 days before the latest.
    pub open_30_days_ago: Option<u32>,
    /// `open_now - open_30_days_ago`.
    pub change_30_days: Option<i64>,
    /// Open issues past their deadline at the latest run.
    pub overdue_now: Option<u32>,
    /// Issues resolved in the period (with measured durations).
    pub resolved: u32,
    /// Median days from detection to resolution.
    pub median_days_to_remediate: Option<f64>,
    /// 90th percentile (nearest rank) of days from detection to resolution.
    pub p90_days_to_remediate: Option<i64>,
    /// Percentage of resolutions on or before the deadline.
    pub fixed_before_deadline_pct: Option<f64>,
    /// Reminders sent per resolved issue (before it was resolved).
    pub reminders_per_fix: Option<f64>,
    /// Resolutions that came after an escalation.
    pub fixed_after_escalation: u32,
}

/// Time-to-remediate figures of one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindFigures {
    /// Kind (`os_out_of_date`…).
    pub kind: String,
    /// Open at the latest run.
    pub open_now: u32,
    /// Resolved in the period.
    pub resolved: u32,
    /// Median days to remediate.
    pub median_days_to_remediate: Option<f64>,
    /// 90th percentile days to remediate.
    pub p90_days_to_remediate: Option<i64>,
    /// Percentage fixed on or before the deadline.
    pub fixed_before_deadline_pct: Option<f64>,
    /// Reminders per fix.
    pub reminders_per_fix: Option<f64>,
}

/// One run day of the trend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrendPoint {
    /// Run day.
    pub as_of: NaiveDate,
    /// Open issues.
    pub open: u32,
    /// Of which overdue.
    pub overdue: u32,
    /// Open issues by kind.
    pub by_kind: BTreeMap<String, u32>,
    /// Owners reached that day.
    pub owners_reached: u32,
    /// Owners unreachable that day.
    pub owners_unreachable: u32,
    /// Issues resolved that day.
    pub resolved: u32,
}

/// One overdue issue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueLine {
    /// Owner: the pseudonym unless verbose.
    pub owner: String,
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
    /// Deadline.
    pub deadline: NaiveDate,
    /// Days past the deadline (as of the latest run).
    pub days_overdue: i64,
}

/// An owner no channel could reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreachableOwner {
    /// Owner: the pseudonym unless verbose.
    pub owner: String,
    /// The channel that answered.
    pub channel: String,
    /// Why (addresses replaced by the pseudonym unless verbose).
    pub reason: String,
    /// Open issues of this owner.
    pub issues: usize,
}

/// The latest run against the one before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeSinceLastRun {
    /// The previous run's day.
    pub previous_as_of: NaiveDate,
    /// The latest run's day.
    pub as_of: NaiveDate,
    /// Change in open issues.
    pub open: i64,
    /// Change in overdue issues.
    pub overdue: i64,
    /// Change in open issues per kind (kinds open in either run).
    pub by_kind: BTreeMap<String, i64>,
    /// Issues resolved by the latest run.
    pub resolved: u32,
    /// Owners reached by the latest run.
    pub owners_reached: u32,
}

/// The `p`th percentile of sorted values by the nearest-rank method: the smallest value with at
/// least `p`% of the values at or below it (`None` when empty).
pub fn percentile_nearest_rank(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// The median of sorted values: the middle one, or the mean of the two middle ones.
fn median(sorted: &[i64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    Some(if n % 2 == 1 {
        sorted[n / 2] as f64
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0
    })
}

fn signed(change: i64) -> String {
    if change > 0 {
        format!("+{change}")
    } else {
        change.to_string()
    }
}

fn pct(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

fn ratio(sum: u64, count: usize) -> Option<f64> {
    (count > 0).then(|| sum as f64 / count as f64)
}

struct DurationFigures {
    median: Option<f64>,
    p90: Option<i64>,
    before_deadline_pct: Option<f64>,
    reminders_per_fix: Option<f64>,
}

fn duration_figures(resolutions: &[&Resolution]) -> DurationFigures {
    let mut days: Vec<i64> = resolutions.iter().map(|r| r.days_to_remediate).collect();
    days.sort_unstable();
    let before = resolutions.iter().filter(|r| r.before_deadline).count();
    let reminders: u64 = resolutions
        .iter()
        .map(|r| u64::from(r.reminders_before))
        .sum();
    DurationFigures {
        median: median(&days),
        p90: percentile_nearest_rank(&days, 90.0),
        before_deadline_pct: pct(before, resolutions.len()),
        reminders_per_fix: ratio(reminders, resolutions.len()),
    }
}

impl Insights {
    /// Computes the figures from the ledger's events (any order of kinds; ledger order within
    /// a day decides which run of the day counts) and the latest live run's report.
    ///
    /// Resolutions and the trend count from `since`; "now" is the latest daily aggregate.
    /// Owners are pseudonymised unless `verbose`.
    pub fn compute(
        events: &[LedgerEvent],
        latest: Option<&RunReport>,
        since: NaiveDate,
        verbose: bool,
    ) -> Self {
        // The last run of each day stands for that day.
        let mut by_day: BTreeMap<NaiveDate, &DailyAggregate> = BTreeMap::new();
        let mut resolutions: Vec<&Resolution> = Vec::new();
        for e in events {
            match e {
                LedgerEvent::Daily(d) => {
                    by_day.insert(d.as_of, d);
                }
                LedgerEvent::Resolved {
                    resolution: Some(r),
                    ..
                } if r.resolved_on >= since => resolutions.push(r),
                _ => {}
            }
        }
        let now = by_day.values().next_back().copied();
        let as_of = now.map(|d| d.as_of).or(latest.map(|r| r.as_of));
        let open_on_or_before = |day: NaiveDate| -> Option<u32> {
            by_day.range(..=day).next_back().map(|(_, d)| d.open)
        };

        let mut headline = Headline {
            open_now: now.map(|d| d.open),
            overdue_now: now.map(|d| d.overdue),
            resolved: resolutions.len() as u32,
            fixed_after_escalation: resolutions.iter().filter(|r| r.after_escalation).count()
                as u32,
            ..Default::default()
        };
        if let Some(now) = now {
            headline.open_7_days_ago = open_on_or_before(now.as_of - Duration::days(7));
            headline.open_30_days_ago = open_on_or_before(now.as_of - Duration::days(30));
            headline.change_7_days = headline
                .open_7_days_ago
                .map(|then| i64::from(now.open) - i64::from(then));
            headline.change_30_days = headline
                .open_30_days_ago
                .map(|then| i64::from(now.open) - i64::from(then));
        }
        let all = duration_figures(&resolutions);
        headline.median_days_to_remediate = all.median;
        headline.p90_days_to_remediate = all.p90;
        headline.fixed_before_deadline_pct = all.before_deadline_pct;
        headline.reminders_per_fix = all.reminders_per_fix;

        let by_kind = IssueKind::ALL
            .iter()
            .map(|kind| {
                let of_kind: Vec<&Resolution> = resolutions
                    .iter()
                    .copied()
                    .filter(|r| r.kind == *kind)
                    .collect();
                let f = duration_figures(&of_kind);
                KindFigures {
                    kind: kind.as_str().to_string(),
                    open_now: now
                        .and_then(|d| d.open_by_kind.get(kind.as_str()).copied())
                        .unwrap_or(0),
                    resolved: of_kind.len() as u32,
                    median_days_to_remediate: f.median,
                    p90_days_to_remediate: f.p90,
                    fixed_before_deadline_pct: f.before_deadline_pct,
                    reminders_per_fix: f.reminders_per_fix,
                }
            })
            .collect();

        let trend = by_day
            .range(since..)
            .map(|(day, d)| TrendPoint {
                as_of: *day,
                open: d.open,
                overdue: d.overdue,
                by_kind: d.open_by_kind.clone(),
                owners_reached: d.owners_reached,
                owners_unreachable: d.owners_unreachable,
                resolved: d.resolved_in_run,
            })
            .collect();

        let changes = {
            let mut last_two = by_day.values().rev();
            match (last_two.next(), last_two.next()) {
                (Some(latest), Some(previous)) => {
                    let mut by_kind = BTreeMap::new();
                    for kind in latest
                        .open_by_kind
                        .keys()
                        .chain(previous.open_by_kind.keys())
                    {
                        let now = latest.open_by_kind.get(kind).copied().unwrap_or(0);
                        let then = previous.open_by_kind.get(kind).copied().unwrap_or(0);
                        by_kind.insert(kind.clone(), i64::from(now) - i64::from(then));
                    }
                    Some(ChangeSinceLastRun {
                        previous_as_of: previous.as_of,
                        as_of: latest.as_of,
                        open: i64::from(latest.open) - i64::from(previous.open),
                        overdue: i64::from(latest.overdue) - i64::from(previous.overdue),
                        by_kind,
                        resolved: latest.resolved_in_run,
                        owners_reached: latest.owners_reached,
                    })
                }
                _ => None,
            }
        };

        let (overdue, unreachable) = match latest {
            Some(report) => (
                overdue_lines(report, verbose),
                unreachable_owners(report, verbose),
            ),
            None => (Vec::new(), Vec::new()),
        };

        Insights {
            schema: INSIGHTS_SCHEMA.to_string(),
            as_of,
            since,
            latest_run_id: now
                .map(|d| d.run_id.clone())
                .or(latest.map(|r| r.run_id.clone())),
            headline,
            by_kind,
            trend,
            overdue,
            unreachable,
            changes,
        }
    }

    /// The two or three figures the digest card carries, with their trend arrows:
    /// open issues against 7 days ago, time to remediate, fixes before the deadline.
    pub fn digest_figures(&self) -> Vec<(String, String)> {
        let h = &self.headline;
        let mut figures = Vec::new();
        if let Some(open) = h.open_now {
            let trend = match (h.change_7_days, h.change_30_days) {
                (Some(c), _) => format!(
                    " {} {} vs 7 days ago",
                    super::html::trend_arrow(c),
                    signed(c)
                ),
                (None, Some(c)) => format!(
                    " {} {} vs 30 days ago",
                    super::html::trend_arrow(c),
                    signed(c)
                ),
                _ => String::new(),
            };
            figures.push(("Open issues".to_string(), format!("{open}{trend}")));
        }
        if let (Some(median), Some(p90)) = (h.median_days_to_remediate, h.p90_days_to_remediate) {
            figures.push((
                "Time to remediate".to_string(),
                format!("median {median:.0} d, 90th percentile {p90} d"),
            ));
        }
        if let Some(pct) = h.fixed_before_deadline_pct {
            figures.push((
                "Fixed before the deadline".to_string(),
                format!("{pct:.0} % of {}", h.resolved),
            ));
        }
        figures
    }

    /// The trend as CSV, one line per run day (the `csv` format of `report`).
    pub fn trend_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["as_of".to_string(), "open".into(), "overdue".into()];
        header.extend(
            IssueKind::ALL
                .iter()
                .map(|k| format!("open_{}", k.as_str())),
        );
        header.extend([
            "owners_reached".into(),
            "owners_unreachable".into(),
            "resolved".into(),
        ]);
        let _ = w.write_record(&header);
        for p in &self.trend {
            let mut row = vec![
                p.as_of.to_string(),
                p.open.to_string(),
                p.overdue.to_string(),
            ];
            row.extend(
                IssueKind::ALL
                    .iter()
                    .map(|k| p.by_kind.get(k.as_str()).copied().unwrap_or(0).to_string()),
            );
            row.extend([
                p.owners_reached.to_string(),
                p.owners_unreachable.to_string(),
                p.resolved.to_string(),
            ]);
            let _ = w.write_record(&row);
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }
}

fn overdue_lines(report: &RunReport, verbose: bool) -> Vec<OverdueLine> {
    let mut lines: Vec<OverdueLine> = report
        .reminders
        .iter()
        .flat_map(|r| {
            let owner = r.owner.for_log(verbose);
            r.issues
                .iter()
                .filter(|i| i.days_left < 0)
                .map(move |i| OverdueLine {
                    owner: owner.clone(),
                    device_model: i.device_model.to_string(),
                    platform: i.platform.as_str().to_string(),
                    kind: i.kind.as_str().to_string(),
                    issue: i.issue.to_string(),
                    risk: i.risk.as_str().to_string(),
                    deadline: i.deadline,
                    days_overdue: -i.days_left,
                })
        })
        .collect();
    lines.sort_by(|a, b| {
        b.days_overdue
            .cmp(&a.days_overdue)
            .then_with(|| a.owner.cmp(&b.owner))
            .then_with(|| a.issue.cmp(&b.issue))
    });
    lines
}

fn unreachable_owners(report: &RunReport, verbose: bool) -> Vec<UnreachableOwner> {
    let mut owners: Vec<UnreachableOwner> = report
        .reminders
        .iter()
        .filter(|r| is_unreachable(r.status, r.channel.as_deref()))
        .map(|r| {
            let shown = r.owner.for_log(verbose);
            let reason = r.reason.clone().unwrap_or_default();
            UnreachableOwner {
                reason: if verbose {
                    reason
                } else {
                    crate::domain::replace_address(&reason, r.owner.as_str(), &shown)
                },
                owner: shown,
                channel: r.channel.clone().unwrap_or_default(),
                issues: r.issues.len(),
            }
        })
        .collect();
    owners.sort_by(|a, b| a.owner.cmp(&b.owner));
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentile_picks_an_actual_value() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile_nearest_rank(&v, 90.0), Some(9));
        assert_eq!(percentile_nearest_rank(&v, 100.0), Some(10));
        assert_eq!(percentile_nearest_rank(&[4], 90.0), Some(4));
        assert_eq!(percentile_nearest_rank(&[], 90.0), None);
        assert_eq!(median(&[1, 2, 3, 10]), Some(2.5));
        assert_eq!(median(&[5, 1_000]), Some(502.5));
    }

    #[test]
    fn addresses_quoted_in_reasons_are_replaced_unless_verbose() {
        assert_eq!(
            crate::domain::replace_address("user 'A@B.com' not found", "a@b.com", "owner-x"),
            "user 'owner-x' not found"
        );
    }

    #[test]
    fn without_any_daily_event_the_figures_are_unknown_rather_than_zero() {
        let i = Insights::compute(&[], None, "2026-01-01".parse().unwrap(), false);
        assert_eq!(i.headline.open_now, None);
        assert_eq!(i.headline.median_days_to_remediate, None);
        assert_eq!(i.headline.fixed_before_deadline_pct, None);
        assert!(i.trend.is_empty());
        assert!(i.changes.is_none());
    }
}
