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
use crate::insights::{DailyAggregate, IssueFacts, Resolution};
use crate::plan::{IssueKey, Stage};
use crate::report::RunReport;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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
    /// Stores the insights page of a run beside its JSON report
    /// (`reports/YYYY/MM/DD/<run_id>.html`) and as `reports/latest.html`; returns where.
    async fn save_report_page(&self, report: &RunReport, html: &str)
        -> Result<String, LedgerError>;
    /// The most recently saved report.
    async fn last_report(&self) -> Result<Option<RunReport>, LedgerError>;
    /// A saved report by run id.
    async fn report(&self, run_id: &str) -> Result<Option<RunReport>, LedgerError>;
}
