//! History: what was sent to whom. The ledger's events, the stable issue key, the reminder
//! stage and the snapshot the plan reads, with no storage attached (the ledger stores these;
//! the plan reads them), so the pure core never depends on an I/O module.

use crate::domain::{IssueKind, OwnerEmail, Platform, Risk};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A stable identity for one issue across exports: device + issue + detection time.
///
/// Lookout's id names the device (a device's issues share it), so the issue text and the
/// detection time are part of the key; the list view has no id, so owner + model stand in.
///
/// A derived key is 20 hex digits, held inline (no allocation, a copy to clone): the plan
/// makes, stores and looks up one per export row. Written in ledgers as a plain string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IssueKey(pub smol_str::SmolStr);

/// Where a reminder stands in its lifecycle; shapes wording and escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// First reminder for these issues.
    First,
    /// A repeat, well before the deadline.
    Repeat,
    /// In the last days before the deadline (daily).
    Final,
    /// Past the deadline: access is (about to be) cut.
    Overdue,
}

impl Stage {
    /// The report name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::First => "first",
            Stage::Repeat => "repeat",
            Stage::Final => "final",
            Stage::Overdue => "overdue",
        }
    }
}

/// One fact appended to the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LedgerEvent {
    /// A reminder went out for this owner/issue.
    Sent {
        /// Recipient.
        owner: OwnerEmail,
        /// The issue reminded about.
        issue: IssueKey,
        /// Lookout's device id, for people reading the ledger.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lookout_id: Option<String>,
        /// Reminder stage.
        stage: Stage,
        /// The run's "today" (cadence is counted in these days).
        as_of: NaiveDate,
        /// Wall-clock time of the send.
        sent_at: DateTime<Utc>,
        /// Channel that delivered it (`outbox`, `teams_bot`, `email`…).
        channel: String,
        /// The channel's message id, when it gives one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        /// The run that sent it.
        run_id: String,
        /// The post failed in a way that may have delivered it (timeout, 5xx after the
        /// request was written): counted as sent all the same, so it is never sent twice.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        maybe_delivered: bool,
        /// Detection, deadline, kind… of the issue, so its resolution can be measured later
        /// (absent in ledgers written before issue 13).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        facts: Option<IssueFacts>,
    },
    /// An issue reminded about earlier is no longer in the export (or no longer active).
    Resolved {
        /// Owner.
        owner: OwnerEmail,
        /// The issue.
        issue: IssueKey,
        /// The run's "today".
        as_of: NaiveDate,
        /// The run that noticed.
        run_id: String,
        /// How long it took and how many reminders it needed (absent in older ledgers, or
        /// when the issue's facts were never recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolution: Option<Resolution>,
    },
    /// One run's picture of the fleet (open issues by kind, platform, risk; overdue; owners
    /// reached): the trend the insights report draws. One per live run.
    Daily(DailyAggregate),
    /// A Teams conversation id cached for an owner (skips the Graph lookup next time).
    Conversation {
        /// Owner.
        owner: OwnerEmail,
        /// Bot Connector conversation id.
        conversation_id: String,
        /// When it was learnt.
        at: DateTime<Utc>,
    },
    /// A manager was e-mailed the summary of their escalated reports.
    ManagerTold {
        /// The manager's address.
        manager: OwnerEmail,
        /// The reports listed.
        owners: Vec<OwnerEmail>,
        /// The run's "today" (the manager cadence is counted in these days).
        as_of: NaiveDate,
        /// The first day of this round of summaries (daily, then weekly).
        round_started: NaiveDate,
        /// Wall-clock time of the send.
        sent_at: DateTime<Utc>,
        /// The run that sent it.
        run_id: String,
    },
}

/// When a manager was told about their escalated reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerHistory {
    /// The run date of the first summary of the current round (daily, then weekly).
    pub first_told: NaiveDate,
    /// The run date of the last summary.
    pub last_told: NaiveDate,
}

impl ManagerHistory {
    /// When the manager is due a summary on `as_of`, the first day of its round; `None` when
    /// not due. At most once a run day; daily for `daily_days` after the first summary of a
    /// round, then every `every_days`. A gap longer than `every_days` (no escalated report
    /// meanwhile) starts a new round.
    pub fn due(
        history: Option<&Self>,
        as_of: NaiveDate,
        daily_days: i64,
        every_days: i64,
    ) -> Option<NaiveDate> {
        let every_days = every_days.max(1);
        let Some(h) = history else {
            return Some(as_of);
        };
        let since_last = (as_of - h.last_told).num_days();
        if since_last <= 0 {
            return None;
        }
        if since_last > every_days {
            return Some(as_of);
        }
        let since_first = (as_of - h.first_told).num_days();
        (since_first < daily_days || since_last >= every_days).then_some(h.first_told)
    }
}

/// What the ledger knows about one owner/issue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueHistory {
    /// The run date of the last reminder.
    pub last_sent: NaiveDate,
    /// Its stage.
    pub last_stage: Stage,
    /// The wall-clock time of the latest send (whatever run date it was recorded under):
    /// the cadence's "already sent today" is counted on this real day.
    pub last_sent_at: DateTime<Utc>,
    /// Reminders sent so far.
    pub times_sent: u32,
    /// Whether it was later recorded as resolved.
    pub resolved: bool,
    /// The run day it was recorded as resolved (`None` while open): the retention window
    /// of [`LedgerSnapshot::prune`] counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_on: Option<NaiveDate>,
}

/// The ledger folded into lookup tables: the plan's view of the past.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerSnapshot {
    /// Per owner and issue.
    pub issues: HashMap<(OwnerEmail, IssueKey), IssueHistory>,
    /// Cached Teams conversation ids.
    pub conversations: HashMap<OwnerEmail, String>,
    /// When each manager was told about their escalated reports.
    pub managers: HashMap<OwnerEmail, ManagerHistory>,
    /// The latest recorded facts of each reminded issue, and whether it was ever escalated.
    pub facts: HashMap<(OwnerEmail, IssueKey), (IssueFacts, bool)>,
    /// The insight events (resolutions and daily aggregates), in ledger order.
    pub insights: Vec<LedgerEvent>,
}

impl LedgerSnapshot {
    /// Folds events in order.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a LedgerEvent>) -> Self {
        let mut snap = Self::default();
        for e in events {
            snap.apply(e);
        }
        snap
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &LedgerEvent) {
        match event {
            LedgerEvent::Sent {
                owner,
                issue,
                stage,
                as_of,
                sent_at,
                facts,
                ..
            } => {
                if let Some(facts) = facts {
                    let key = (owner.clone(), issue.clone());
                    let escalated =
                        facts.escalated || self.facts.get(&key).is_some_and(|(_, before)| *before);
                    self.facts.insert(key, (facts.clone(), escalated));
                }
                let entry =
                    self.issues
                        .entry((owner.clone(), issue.clone()))
                        .or_insert(IssueHistory {
                            last_sent: *as_of,
                            last_stage: *stage,
                            last_sent_at: *sent_at,
                            times_sent: 0,
                            resolved: false,
                            resolved_on: None,
                        });
                if *as_of >= entry.last_sent || entry.times_sent == 0 {
                    entry.last_sent = *as_of;
                    entry.last_stage = *stage;
                }
                entry.last_sent_at = entry.last_sent_at.max(*sent_at);
                entry.times_sent += 1;
                entry.resolved = false;
                entry.resolved_on = None;
            }
            LedgerEvent::Resolved {
                owner,
                issue,
                as_of,
                ..
            } => {
                if let Some(h) = self.issues.get_mut(&(owner.clone(), issue.clone())) {
                    h.resolved = true;
                    h.resolved_on = Some(h.resolved_on.map_or(*as_of, |d| d.max(*as_of)));
                }
                self.insights.push(event.clone());
            }
            LedgerEvent::Daily(_) => self.insights.push(event.clone()),
            LedgerEvent::Conversation {
                owner,
                conversation_id,
                ..
            } => {
                self.conversations
                    .insert(owner.clone(), conversation_id.clone());
            }
            LedgerEvent::ManagerTold {
                manager,
                as_of,
                round_started,
                ..
            } => {
                let h = self
                    .managers
                    .entry(manager.clone())
                    .or_insert(ManagerHistory {
                        first_told: *round_started,
                        last_told: *as_of,
                    });
                if *as_of >= h.last_told {
                    h.first_told = *round_started;
                    h.last_told = *as_of;
                }
            }
        }
    }

    /// History of one owner/issue.
    pub fn history(&self, owner: &OwnerEmail, issue: &IssueKey) -> Option<&IssueHistory> {
        self.issues.get(&(owner.clone(), issue.clone()))
    }
}

/// How many days resolved issues and past runs' figures stay in the ledger
/// (`REMINDERS_LEDGER_RETENTION_DAYS`).
pub const DEFAULT_RETENTION_DAYS: u32 = 120;
/// The shortest retention accepted: the insights page written after each run covers the last
/// 90 days (`job::INSIGHTS_PAGE_DAYS`), and its figures must not change after a checkpoint.
pub const MIN_RETENTION_DAYS: u32 = 90;

/// The first line of a checkpoint: what it was written from and which ledger bytes it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    /// Format version (1).
    pub checkpoint: u32,
    /// The run day it was pruned for.
    pub as_of: NaiveDate,
    /// The retention window it was pruned with, days.
    pub retention_days: u32,
    /// When it was written.
    pub written_at: DateTime<Utc>,
    /// Bytes of each ledger segment already folded in, by segment number: a segment's bytes
    /// past this point (appended after the checkpoint read it) are still to be replayed.
    pub covers: BTreeMap<u32, u64>,
}

/// One line of a checkpoint after its header: the snapshot's tables, one entry a line, so a
/// checkpoint is written and read as a stream. The last line is [`CheckpointRow::End`], so a
/// checkpoint cut short is told from a whole one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "row", rename_all = "snake_case")]
pub enum CheckpointRow {
    /// One owner/issue: its history and, when recorded, its facts.
    Issue {
        /// Owner.
        owner: OwnerEmail,
        /// The issue.
        issue: IssueKey,
        /// What was sent.
        history: IssueHistory,
        /// The latest recorded facts and whether a reminder for it was ever escalated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        facts: Option<(IssueFacts, bool)>,
    },
    /// Facts of an owner/issue with no history (not written by this fold; kept for symmetry).
    Facts {
        /// Owner.
        owner: OwnerEmail,
        /// The issue.
        issue: IssueKey,
        /// The facts and whether escalated.
        facts: (IssueFacts, bool),
    },
    /// A cached Teams conversation id.
    Conversation {
        /// Owner.
        owner: OwnerEmail,
        /// Bot Connector conversation id.
        conversation_id: String,
    },
    /// When a manager was told.
    Manager {
        /// The manager.
        manager: OwnerEmail,
        /// Their summary history.
        history: ManagerHistory,
    },
    /// An insight event (resolution, daily aggregate), in ledger order.
    Insight {
        /// The event as it was appended.
        event: LedgerEvent,
    },
    /// The end: how many rows came before it.
    End {
        /// Rows between the header and this line.
        rows: u64,
    },
}

/// What [`LedgerSnapshot::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Owner/issues resolved before the window.
    pub issues: usize,
    /// Resolutions and daily aggregates of days before the window.
    pub insights: usize,
}

impl LedgerSnapshot {
    /// The snapshot as checkpoint rows (without header and end), insights in ledger order.
    pub fn checkpoint_rows(&self) -> impl Iterator<Item = CheckpointRow> + '_ {
        let issues = self.issues.iter().map(|((owner, issue), history)| {
            let key = (owner.clone(), issue.clone());
            CheckpointRow::Issue {
                facts: self.facts.get(&key).cloned(),
                owner: key.0,
                issue: key.1,
                history: history.clone(),
            }
        });
        let orphan_facts = self
            .facts
            .iter()
            .filter(|(key, _)| !self.issues.contains_key(key))
            .map(|((owner, issue), facts)| CheckpointRow::Facts {
                owner: owner.clone(),
                issue: issue.clone(),
                facts: facts.clone(),
            });
        let conversations =
            self.conversations
                .iter()
                .map(|(owner, id)| CheckpointRow::Conversation {
                    owner: owner.clone(),
                    conversation_id: id.clone(),
                });
        let managers = self
            .managers
            .iter()
            .map(|(manager, history)| CheckpointRow::Manager {
                manager: manager.clone(),
                history: *history,
            });
        let insights = self.insights.iter().map(|event| CheckpointRow::Insight {
            event: event.clone(),
        });
        issues
            .chain(orphan_facts)
            .chain(conversations)
            .chain(managers)
            .chain(insights)
    }

    /// Puts back one row of a checkpoint (rows come in the order [`Self::checkpoint_rows`]
    /// wrote them). `End` is the reader's business and changes nothing here.
    pub fn restore(&mut self, row: CheckpointRow) {
        match row {
            CheckpointRow::Issue {
                owner,
                issue,
                history,
                facts,
            } => {
                if let Some(facts) = facts {
                    self.facts.insert((owner.clone(), issue.clone()), facts);
                }
                self.issues.insert((owner, issue), history);
            }
            CheckpointRow::Facts {
                owner,
                issue,
                facts,
            } => {
                self.facts.insert((owner, issue), facts);
            }
            CheckpointRow::Conversation {
                owner,
                conversation_id,
            } => {
                self.conversations.insert(owner, conversation_id);
            }
            CheckpointRow::Manager { manager, history } => {
                self.managers.insert(manager, history);
            }
            CheckpointRow::Insight { event } => self.insights.push(event),
            CheckpointRow::End { .. } => {}
        }
    }

    /// Drops what no plan and no insights page within the window can use any more, as of
    /// the run day `as_of`, keeping `retention_days` days:
    /// - owner/issues recorded as resolved before the window (and their facts): an issue
    ///   that comes back after that is reminded as new;
    /// - resolutions and daily aggregates of days before the window, except the last daily
    ///   aggregate before it (the "open N days ago" figures look back to the latest day on or
    ///   before theirs).
    ///
    /// Open issues, cached conversation ids and manager histories are kept whatever their
    /// age: they are bounded by the people in the tenant, not by the number of runs.
    pub fn prune(&mut self, as_of: NaiveDate, retention_days: u32) -> Pruned {
        let cutoff = as_of - chrono::Days::new(u64::from(retention_days));
        let before = self.issues.len();
        self.issues
            .retain(|_, h| !(h.resolved && h.resolved_on.is_some_and(|day| day < cutoff)));
        let issues = &self.issues;
        self.facts.retain(|key, _| issues.contains_key(key));
        let pruned_issues = before - self.issues.len();

        // The last daily aggregate before the window, the one standing for its day.
        let last_before = self
            .insights
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                LedgerEvent::Daily(d) if d.as_of < cutoff => Some((d.as_of, i)),
                _ => None,
            })
            .max();
        let before = self.insights.len();
        let mut index = 0;
        self.insights.retain(|e| {
            let i = index;
            index += 1;
            match e {
                LedgerEvent::Daily(d) => {
                    d.as_of >= cutoff || last_before.is_some_and(|(_, at)| at == i)
                }
                LedgerEvent::Resolved {
                    as_of, resolution, ..
                } => {
                    let day = resolution
                        .as_ref()
                        .map_or(*as_of, |r| r.resolved_on.max(*as_of));
                    day >= cutoff
                }
                _ => true,
            }
        });
        Pruned {
            issues: pruned_issues,
            insights: before - self.insights.len(),
        }
    }
}

// The facts kept for the security team's insights (computed in `crate::insights`): plain
// data here so the ledger's event model stays pure.

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

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    /// Folds the summaries a manager would get from day 1 to day `last`, one run a day.
    fn told_days(last: u32) -> Vec<u32> {
        let manager = OwnerEmail::parse("boss@contoso.com").unwrap();
        let mut snap = LedgerSnapshot::default();
        let mut told = Vec::new();
        for d in 1..=last {
            for _second_run_same_day in 0..2 {
                if let Some(round) = ManagerHistory::due(snap.managers.get(&manager), day(d), 3, 7)
                {
                    told.push(d);
                    snap.apply(&LedgerEvent::ManagerTold {
                        manager: manager.clone(),
                        owners: vec![],
                        as_of: day(d),
                        round_started: round,
                        sent_at: Utc::now(),
                        run_id: format!("run-{d}"),
                    });
                }
            }
        }
        told
    }

    #[test]
    fn a_manager_is_told_daily_for_the_daily_days_then_weekly_and_once_a_day_at_most() {
        assert_eq!(told_days(25), vec![1, 2, 3, 10, 17, 24]);
    }

    fn sent(owner: &OwnerEmail, issue: &str, d: u32) -> LedgerEvent {
        LedgerEvent::Sent {
            owner: owner.clone(),
            issue: IssueKey(issue.into()),
            lookout_id: None,
            stage: Stage::First,
            as_of: day(d),
            sent_at: Utc::now(),
            channel: "outbox".into(),
            message_id: None,
            run_id: format!("run-{d}"),
            maybe_delivered: d.is_multiple_of(2),
            facts: Some(IssueFacts {
                detected_on: day(1),
                deadline: day(20),
                kind: IssueKind::VulnerableApp,
                platform: Platform::Ios,
                risk: Risk::Low,
                escalated: d > 3,
            }),
        }
    }

    fn resolved(owner: &OwnerEmail, issue: &str, d: u32) -> LedgerEvent {
        LedgerEvent::Resolved {
            owner: owner.clone(),
            issue: IssueKey(issue.into()),
            as_of: day(d),
            run_id: format!("run-{d}"),
            resolution: None,
        }
    }

    #[test]
    fn a_snapshot_written_as_checkpoint_rows_and_restored_is_the_same_snapshot() {
        let jane = OwnerEmail::parse("jane@contoso.com").unwrap();
        let events = [
            sent(&jane, "a", 1),
            sent(&jane, "b", 2),
            sent(&jane, "a", 4),
            resolved(&jane, "b", 5),
            LedgerEvent::Daily(DailyAggregate {
                as_of: day(5),
                ..Default::default()
            }),
            LedgerEvent::Conversation {
                owner: jane.clone(),
                conversation_id: "a:1".into(),
                at: Utc::now(),
            },
        ];
        let snap = LedgerSnapshot::from_events(&events);
        let mut back = LedgerSnapshot::default();
        for row in snap.checkpoint_rows() {
            // Through JSON, as a checkpoint stores it.
            let line = serde_json::to_string(&row).unwrap();
            back.restore(serde_json::from_str(&line).unwrap());
        }
        assert_eq!(back, snap);
        assert_eq!(
            back.history(&jane, &IssueKey("b".into()))
                .unwrap()
                .resolved_on,
            Some(day(5))
        );
    }

    #[test]
    fn pruning_drops_only_issues_resolved_before_the_window() {
        let jane = OwnerEmail::parse("jane@contoso.com").unwrap();
        let events = [
            sent(&jane, "old", 1),
            resolved(&jane, "old", 2),
            sent(&jane, "recent", 1),
            resolved(&jane, "recent", 20),
            sent(&jane, "open", 1),
            // Resolved, then reminded again (it came back): open, kept.
            sent(&jane, "back", 1),
            resolved(&jane, "back", 2),
            sent(&jane, "back", 3),
        ];
        let mut snap = LedgerSnapshot::from_events(&events);
        let pruned = snap.prune(day(25), 10);
        assert_eq!(pruned.issues, 1);
        let mut kept: Vec<&str> = snap.issues.keys().map(|(_, k)| k.0.as_str()).collect();
        kept.sort();
        assert_eq!(kept, ["back", "open", "recent"]);
        assert!(!snap
            .facts
            .contains_key(&(jane.clone(), IssueKey("old".into()))));
        // Resolutions of the window's days kept, older ones dropped.
        assert_eq!(pruned.insights, 2);
        assert_eq!(snap.insights.len(), 1);
    }

    #[test]
    fn after_a_quiet_spell_longer_than_a_week_a_new_daily_round_starts() {
        let manager = OwnerEmail::parse("boss@contoso.com").unwrap();
        let mut snap = LedgerSnapshot::default();
        snap.apply(&LedgerEvent::ManagerTold {
            manager: manager.clone(),
            owners: vec![],
            as_of: day(1),
            round_started: day(1),
            sent_at: Utc::now(),
            run_id: "r".into(),
        });
        let h = snap.managers.get(&manager);
        assert_eq!(ManagerHistory::due(h, day(12), 3, 7), Some(day(12)));
        assert_eq!(ManagerHistory::due(h, day(1), 3, 7), None);
        assert_eq!(ManagerHistory::due(h, day(2), 3, 7), Some(day(1)));
    }
}
