//! History: what was sent to whom. The ledger's events, the stable issue key, the reminder
//! stage and the snapshot the plan reads, with no storage attached (the ledger stores these;
//! the plan reads them), so the pure core never depends on an I/O module.

use crate::domain::OwnerEmail;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A stable identity for one issue across exports: device + issue + detection time.
///
/// Lookout's id names the device (a device's issues share it), so the issue text and the
/// detection time are part of the key; the list view has no id, so owner + model stand in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IssueKey(pub String);

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
        /// The post failed in a way that may have delivered it (timeout, 5xx after the
        /// request was written): counted as sent all the same, so it is never sent twice.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        maybe_delivered: bool,
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
}

/// The ledger folded into lookup tables: the plan's view of the past.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerSnapshot {
    /// Per owner and issue.
    pub issues: HashMap<(OwnerEmail, IssueKey), IssueHistory>,
    /// Cached Teams conversation ids.
    pub conversations: HashMap<OwnerEmail, String>,
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
                ..
            } => {
                let entry =
                    self.issues
                        .entry((owner.clone(), issue.clone()))
                        .or_insert(IssueHistory {
                            last_sent: *as_of,
                            last_stage: *stage,
                            last_sent_at: *sent_at,
                            times_sent: 0,
                            resolved: false,
                        });
                if *as_of >= entry.last_sent || entry.times_sent == 0 {
                    entry.last_sent = *as_of;
                    entry.last_stage = *stage;
                }
                entry.last_sent_at = entry.last_sent_at.max(*sent_at);
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
        }
    }

    /// History of one owner/issue.
    pub fn history(&self, owner: &OwnerEmail, issue: &IssueKey) -> Option<&IssueHistory> {
        self.issues.get(&(owner.clone(), issue.clone()))
    }
}
