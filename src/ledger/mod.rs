//! Record: the ledger of sent reminders (so reruns never send twice), the run lock (so two
//! runs never work at once) and the stored run reports.
//!
//! The ledger is an append-only list of [`LedgerEvent`]s; [`LedgerSnapshot`] folds them into
//! "what was last sent to whom for which issue".

mod blob;
mod local;

pub use blob::BlobLedger;
pub use local::LocalLedger;

use crate::domain::OwnerEmail;
use crate::plan::{IssueKey, Stage};
use crate::report::RunReport;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One fact appended to the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    },
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
    /// Reminders sent so far.
    pub times_sent: u32,
    /// Whether it was later recorded as resolved.
    pub resolved: bool,
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
                ..
            } => {
                let entry =
                    self.issues
                        .entry((owner.clone(), issue.clone()))
                        .or_insert(IssueHistory {
                            last_sent: *as_of,
                            last_stage: *stage,
                            times_sent: 0,
                            resolved: false,
                        });
                if *as_of >= entry.last_sent || entry.times_sent == 0 {
                    entry.last_sent = *as_of;
                    entry.last_stage = *stage;
                }
                entry.times_sent += 1;
                entry.resolved = false;
            }
            LedgerEvent::Resolved { owner, issue, .. } => {
                if let Some(h) = self.issues.get_mut(&(owner.clone(), issue.clone())) {
                    h.resolved = true;
                }
            }
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

/// Ledger / lock / report storage failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Another run holds the lock.
    #[error("a run is already in progress ({holder})")]
    Busy {
        /// Who holds it, as far as known (run id, since when).
        holder: String,
    },
    /// The stored ledger cannot be read.
    #[error("{location}: corrupt ledger: {detail}")]
    Corrupt {
        /// File / blob.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// Storage failed.
    #[error("{location}: {operation}: {detail}")]
    Storage {
        /// File / blob / container.
        location: String,
        /// What was being done.
        operation: String,
        /// The underlying message.
        detail: String,
    },
}

/// A held run lock. Dropping it without [`RunLock::release`] leaves it to expire.
#[async_trait]
pub trait RunLock: Send + Sync {
    /// Extends the lock during a long run.
    async fn renew(&self) -> Result<(), LedgerError>;
    /// Gives the lock back.
    async fn release(self: Box<Self>) -> Result<(), LedgerError>;
}

/// Where the ledger, the lock and the run reports live (local folder, Blob container).
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Where it stores, for logs and health (no secrets).
    fn describe(&self) -> String;
    /// Takes the run lock, or fails with [`LedgerError::Busy`].
    async fn lock(&self, run_id: &str) -> Result<Box<dyn RunLock>, LedgerError>;
    /// Reads the whole ledger.
    async fn load(&self) -> Result<LedgerSnapshot, LedgerError>;
    /// Appends events durably: when this returns `Ok`, they survive a crash.
    async fn append(&self, events: &[LedgerEvent]) -> Result<(), LedgerError>;
    /// Stores a run report (JSON, and CSV of its reminders); returns where.
    async fn save_report(&self, report: &RunReport) -> Result<String, LedgerError>;
    /// The most recently saved report.
    async fn last_report(&self) -> Result<Option<RunReport>, LedgerError>;
    /// A saved report by run id.
    async fn report(&self, run_id: &str) -> Result<Option<RunReport>, LedgerError>;
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
