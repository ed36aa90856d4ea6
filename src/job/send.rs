//! Sending: the planned reminders go out with a bounded number in flight, each outcome is
//! recorded in the ledger while sending goes on, and escalated owners' managers are told once.

use super::{JobError, Run};
use crate::deliver::{Delivery, DeliveryError, EscalatedReport, ManagerSummary, OutgoingReminder};
use crate::domain::OwnerEmail;
use crate::insights::IssueFacts;
use crate::ledger::{LedgerError, LedgerEvent, LedgerSnapshot, ManagerHistory};
use crate::plan::PlannedReminder;
use crate::report::{Incomplete, Receipt, ReminderReport, ReminderStatus, RunReport};
use chrono::Utc;
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn, Instrument};

/// How often a run in progress logs how far it is.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Where the sends of a run are: for the progress log line, the CLI's progress bar and the
/// HTTP status of a run in the background.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    /// Reminders planned.
    pub total: usize,
    /// Reminders whose send ended (sent, failed, skipped or maybe delivered).
    pub done: usize,
    /// Sent.
    pub sent: usize,
    /// Failed.
    pub failed: usize,
    /// Time since sending began, when these figures were taken.
    pub elapsed: Duration,
}

impl Progress {
    /// Reminders not ended yet.
    pub fn remaining(&self) -> usize {
        self.total.saturating_sub(self.done)
    }

    /// Sends ended per second since `elapsed` began, and the seconds left at that pace
    /// (`None` before the first send ends).
    pub fn rate_and_eta(&self, elapsed: Duration) -> (f64, Option<f64>) {
        let secs = elapsed.as_secs_f64();
        if self.done == 0 || secs <= 0.0 {
            return (0.0, None);
        }
        let rate = self.done as f64 / secs;
        (rate, Some(self.remaining() as f64 / rate))
    }

    /// The figures as JSON (`sent, failed, remaining, total, perSecond, etaSeconds`), as
    /// the HTTP status of a run in progress shows them.
    pub fn to_json(&self) -> serde_json::Value {
        let (rate, eta) = self.rate_and_eta(self.elapsed);
        serde_json::json!({
            "total": self.total,
            "sent": self.sent,
            "failed": self.failed,
            "remaining": self.remaining(),
            "perSecond": (rate * 10.0).round() / 10.0,
            "etaSeconds": eta.map(|e| e.round() as u64),
        })
    }

    fn log(&self) {
        let (rate, eta) = self.rate_and_eta(self.elapsed);
        info!(
            sent = self.sent,
            failed = self.failed,
            remaining = self.remaining(),
            per_second = (rate * 10.0).round() / 10.0,
            eta_seconds = eta.map(|e| e.round() as u64),
            "progress"
        );
    }
}

/// Where a run publishes its [`Progress`] (the CLI's bar, the server's run table).
pub type ProgressSender = Arc<watch::Sender<Progress>>;

type SendFuture<'a> =
    Pin<Box<dyn Future<Output = (usize, Option<Result<Delivery, DeliveryError>>)> + Send + 'a>>;

/// Sends with at most `concurrency` sends in flight, streaming: a slow or throttled owner
/// holds up only its own slot. Outcomes flow to a recorder that appends every completed
/// send to the ledger (in groups of what has completed meanwhile) while sending goes on.
/// Returns the escalations (reminder index and the manager its channel found).
///
/// Crash bound: a send not yet in the ledger is either in flight (at most `concurrency`),
/// queued for the recorder (at most `concurrency`) or in the append being written (at most
/// `concurrency`), so a crash can re-send at most `3 × concurrency` owners on the next run.
/// When an append fails, no new send starts (sending more without a record could send
/// twice); the sends in flight finish and the recorder still tries to record them.
///
/// At the time budget's deadline no new send starts either: the sends in flight finish
/// and are recorded, the rest are reported as not attempted and the report is marked
/// [`Incomplete`]; the next run plans them again (the cadence holds back the owners
/// already reminded today), so nothing is sent twice and the partial run's owners never
/// count against the next run's owner cap.
pub(super) async fn send_all(
    run: &Run<'_>,
    reminders: &[PlannedReminder],
    ledger: &LedgerSnapshot,
    report: &mut RunReport,
) -> Result<Vec<(usize, OwnerEmail)>, JobError> {
    let deps = run.deps;
    let concurrency = deps.concurrency.max(1);
    // Stops new sends: shutdown, a lost lock (both through `run.cancel`) or a ledger failure.
    let stop = run.cancel.child_token();
    let (tx, mut rx) = mpsc::channel::<(usize, Result<Delivery, DeliveryError>)>(concurrency);

    // Set by the first send that did not start because the time budget was used up.
    let out_of_time = AtomicBool::new(false);
    // Each send is boxed as `Send` so the whole run future can be spawned (borrowing
    // closures in a stream combinator otherwise trip rust-lang/rust#102211).
    let mut sends: Vec<SendFuture<'_>> = Vec::with_capacity(reminders.len());
    for (i, r) in reminders.iter().enumerate() {
        let stop = &stop;
        let out_of_time = &out_of_time;
        sends.push(Box::pin(async move {
            if stop.is_cancelled() {
                return (i, None);
            }
            if run.out_of_time() {
                out_of_time.store(true, Ordering::Relaxed);
                return (i, None);
            }
            let outcome = send_one(run, r, ledger).await;
            (i, Some(outcome))
        }));
    }
    let producer = async {
        let mut outcomes = futures::stream::iter(sends).buffer_unordered(concurrency);
        while let Some((i, outcome)) = outcomes.next().await {
            let Some(outcome) = outcome else { continue };
            if tx.send((i, outcome)).await.is_err() {
                break;
            }
        }
        drop(tx);
    };

    let recorder = async {
        let mut lines: Vec<Option<ReminderReport>> = vec![None; reminders.len()];
        let mut ledger_error: Option<LedgerError> = None;
        let mut escalations: Vec<(usize, OwnerEmail)> = Vec::new();
        let mut progress = Progress {
            total: reminders.len(),
            ..Default::default()
        };
        let started = tokio::time::Instant::now();
        run.publish(progress);
        // A run of thousands lasts minutes: a line every PROGRESS_EVERY says how far it is
        // (the first tick is immediate and skipped).
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut completed = Vec::with_capacity(concurrency);
        loop {
            let received = tokio::select! {
                // `recv_many` is cancel safe: nothing is lost when the tick wins.
                n = rx.recv_many(&mut completed, concurrency) => n,
                _ = ticker.tick() => {
                    progress.elapsed = started.elapsed();
                    progress.log();
                    run.publish(progress);
                    continue;
                }
            };
            if received == 0 {
                break;
            }
            let mut events = Vec::new();
            for (i, outcome) in completed.drain(..) {
                let r = &reminders[i];
                if let Ok(Delivery {
                    manager: Some(manager),
                    ..
                }) = &outcome
                {
                    escalations.push((i, manager.clone()));
                }
                let (report_line, new_events) = outcome_line(run, r, outcome, ledger);
                progress.done += 1;
                match report_line.status {
                    ReminderStatus::Sent => progress.sent += 1,
                    ReminderStatus::Failed => progress.failed += 1,
                    _ => {}
                }
                events.extend(new_events);
                lines[i] = Some(report_line);
            }
            if let Err(e) = deps.ledger.append(&events).await {
                warn!(error = %e, "cannot record sent reminders: no new send will start");
                stop.cancel();
                ledger_error.get_or_insert(e);
            }
            progress.elapsed = started.elapsed();
            run.publish(progress);
        }
        (lines, ledger_error, progress.sent, escalations)
    };

    let ((), (lines, ledger_error, sent_total, escalations)) = tokio::join!(producer, recorder);
    let budget_reached = out_of_time.load(Ordering::Relaxed);
    let not_attempted = if ledger_error.is_some() {
        "not attempted: the ledger could not be written"
    } else if budget_reached && !stop.is_cancelled() {
        "not attempted: the run's time budget was reached; the next run sends it"
    } else {
        "not attempted: the run was stopped (shutdown or lost run lock)"
    };
    let remaining = lines.iter().filter(|l| l.is_none()).count();
    for (r, l) in reminders.iter().zip(lines) {
        report
            .reminders
            .push(l.unwrap_or_else(|| ReminderReport::not_attempted(r, not_attempted)));
    }
    if budget_reached && ledger_error.is_none() && !stop.is_cancelled() && remaining > 0 {
        let budget_seconds = run.budget().map(|b| b.as_secs()).unwrap_or_default();
        warn!(
            sent = sent_total,
            remaining,
            budget_seconds,
            "time budget reached: no new send started; the next run continues"
        );
        report.incomplete = Some(Incomplete {
            remaining,
            budget_seconds,
        });
    }
    if let Some(e) = ledger_error {
        return Err(JobError::Ledger(e));
    }
    if run.cancel.is_cancelled() && stop.is_cancelled() && remaining > 0 {
        warn!(
            sent = sent_total,
            not_attempted = remaining,
            "run stopped before every reminder was sent"
        );
        return Err(JobError::Cancelled { sent: sent_total });
    }
    Ok(escalations)
}

/// Renders and sends one reminder.
async fn send_one(
    run: &Run<'_>,
    r: &PlannedReminder,
    ledger: &LedgerSnapshot,
) -> Result<Delivery, DeliveryError> {
    let deps = run.deps;
    let messages = deps
        .renderer
        .render_all(r, run.as_of)
        .map_err(|e| DeliveryError::permanent("render", e.to_string()))?;
    let msg = OutgoingReminder {
        run_id: run.id.clone(),
        reminder: r.clone(),
        messages,
        cached_conversation: ledger.conversations.get(&r.owner).cloned(),
        verbose: deps.verbose,
        allowed_domains: deps.rules.allowed_domains.clone(),
    };
    let owner_log = r.owner.for_log(deps.verbose);
    run.notifier
        .send(&msg)
        .instrument(tracing::info_span!("send", owner = %owner_log, stage = r.stage.as_str()))
        .await
}

/// The ledger's `Sent` events of a reminder on `channel` (one per issue): a send that may
/// have been delivered is recorded the same way, so no later run sends it again.
fn sent_events(
    run: &Run<'_>,
    r: &PlannedReminder,
    channel: &str,
    message_id: Option<&str>,
    maybe_delivered: bool,
    sent_at: chrono::DateTime<Utc>,
) -> Vec<LedgerEvent> {
    r.issues()
        .map(|issue| LedgerEvent::Sent {
            owner: r.owner.clone(),
            issue: issue.key.clone(),
            lookout_id: issue.lookout_id.as_deref().map(str::to_string),
            stage: r.stage,
            as_of: run.as_of,
            sent_at,
            channel: channel.to_string(),
            message_id: message_id.map(str::to_string),
            run_id: run.id.clone(),
            maybe_delivered,
            facts: Some(IssueFacts::of(
                issue,
                run.deps.rules.local_date(issue.detected),
                r.escalate,
            )),
        })
        .collect()
}

/// The report line and the ledger events of one outcome.
fn outcome_line(
    run: &Run<'_>,
    r: &PlannedReminder,
    outcome: Result<Delivery, DeliveryError>,
    ledger: &LedgerSnapshot,
) -> (ReminderReport, Vec<LedgerEvent>) {
    let verbose = run.deps.verbose;
    let owner_log = r.owner.for_log(verbose);
    // Services quote the address in their messages ("Resource 'x@y' does not exist"): the
    // log gets the pseudonym in its place unless verbose.
    let reason_log = |reason: &str| {
        if verbose {
            reason.to_string()
        } else {
            crate::domain::replace_address(reason, r.owner.as_str(), &owner_log)
        }
    };
    match outcome {
        Ok(d) => {
            info!(owner = %owner_log, channel = %d.channel, attempts = d.attempts, "reminder sent");
            let now = Utc::now();
            let mut events = sent_events(run, r, &d.channel, d.message_id.as_deref(), false, now);
            if let Some(conv) = &d.conversation_id {
                if ledger.conversations.get(&r.owner) != Some(conv) {
                    events.push(LedgerEvent::Conversation {
                        owner: r.owner.clone(),
                        conversation_id: conv.clone(),
                        at: now,
                    });
                }
            }
            let receipt = Receipt {
                channel: d.channel,
                fell_back: d.fell_back,
                message_id: d.message_id,
                attempts: d.attempts,
                escalated_to: d.escalated_to,
            };
            (ReminderReport::sent(r, &receipt), events)
        }
        Err(e) if e.maybe_delivered => {
            // It may be on the owner's screen: recorded as sent (the cadence counts it), so
            // neither this run's fallback nor a later run sends it again.
            warn!(owner = %owner_log, channel = %e.channel, reason = %reason_log(&e.reason), "reminder maybe delivered: recorded as sent, not re-sent");
            let events = sent_events(run, r, &e.channel, None, true, Utc::now());
            (
                ReminderReport::maybe_delivered(r, &e.channel, &e.reason),
                events,
            )
        }
        Err(e) => {
            warn!(owner = %owner_log, channel = %e.channel, reason = %reason_log(&e.reason), "reminder not sent");
            let line =
                ReminderReport::not_sent(r, &e.channel, &e.reason, e.code.as_deref(), e.skip);
            (line, Vec::new())
        }
    }
}

/// Tells each manager ONCE, listing all their reports escalated in this run (`escalations`:
/// reminder index and the manager its channel found), when the ledger's manager cadence says
/// they are due: daily for `daily_after_deadline_days`, then every `remind_every_days`, at
/// most once a run day. Each summary sent is recorded before the next starts, so a rerun
/// never sends it twice. The outcome goes into each report's `escalated_to`.
pub(super) async fn tell_managers(
    run: &Run<'_>,
    reminders: &[PlannedReminder],
    escalations: Vec<(usize, OwnerEmail)>,
    ledger: &LedgerSnapshot,
    report: &mut RunReport,
) -> Result<(), JobError> {
    let deps = run.deps;
    let mut by_manager: BTreeMap<OwnerEmail, Vec<usize>> = BTreeMap::new();
    for (i, manager) in escalations {
        by_manager.entry(manager).or_default().push(i);
    }
    let language = deps
        .renderer
        .languages()
        .first()
        .cloned()
        .unwrap_or_else(|| "en".into());
    for (manager, indices) in by_manager {
        let manager_log = manager.for_log(deps.verbose);
        let due = ManagerHistory::due(
            ledger.managers.get(&manager),
            run.as_of,
            deps.cadence.daily_after_deadline_days,
            deps.cadence.remind_every_days,
        );
        let note = match due {
            _ if run.cancel.is_cancelled() => "not told: the run was stopped".to_string(),
            None => {
                info!(manager = %manager_log, reports = indices.len(), "manager already told: not due today");
                "not told today: already told (manager cadence)".to_string()
            }
            Some(round_started) => {
                let summary = ManagerSummary {
                    manager: manager.clone(),
                    reports: indices
                        .iter()
                        .map(|&i| EscalatedReport {
                            owner: reminders[i].owner.clone(),
                            stage: reminders[i].stage,
                            issues: reminders[i].issues().count(),
                            days_left: reminders[i].min_days_left(),
                        })
                        .collect(),
                    language: language.clone(),
                };
                tell_one_manager(run, &summary, round_started).await?
            }
        };
        let owners: HashSet<&OwnerEmail> = indices.iter().map(|&i| &reminders[i].owner).collect();
        for l in report
            .reminders
            .iter_mut()
            .filter(|l| l.status == ReminderStatus::Sent && owners.contains(&l.owner))
        {
            l.escalated_to = Some(format!("{manager} ({note})"));
        }
    }
    Ok(())
}

/// Sends one manager's summary and records it; returns the note for the report lines.
async fn tell_one_manager(
    run: &Run<'_>,
    summary: &ManagerSummary,
    round_started: chrono::NaiveDate,
) -> Result<String, JobError> {
    let manager_log = summary.manager.for_log(run.deps.verbose);
    let reports = summary.reports.len();
    Ok(match run.notifier.send_manager_summary(summary).await {
        None => "not told: the channel cannot escalate".to_string(),
        Some(Ok(false)) => "not told: no REMINDERS_SENDER_MAILBOX to send from".to_string(),
        Some(Ok(true)) => {
            info!(manager = %manager_log, reports, "manager's summary sent");
            run.deps
                .ledger
                .append(&[LedgerEvent::ManagerTold {
                    manager: summary.manager.clone(),
                    owners: summary.reports.iter().map(|r| r.owner.clone()).collect(),
                    as_of: run.as_of,
                    round_started,
                    sent_at: Utc::now(),
                    run_id: run.id.clone(),
                }])
                .await?;
            format!("summary e-mailed, {reports} report(s)")
        }
        Some(Err(e)) => {
            warn!(manager = %manager_log, channel = %e.channel, "cannot send the manager's summary");
            format!("summary not sent: {}", e.reason)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_gives_the_remaining_the_pace_and_the_time_left() {
        let mut p = Progress {
            total: 10_000,
            ..Default::default()
        };
        assert_eq!(p.rate_and_eta(Duration::from_secs(10)), (0.0, None));
        p.done = 500;
        p.sent = 480;
        p.failed = 20;
        assert_eq!(p.remaining(), 9_500);
        let (rate, eta) = p.rate_and_eta(Duration::from_secs(20));
        assert_eq!(rate, 25.0);
        assert_eq!(eta, Some(380.0));
        p.done = 10_001;
        assert_eq!(p.remaining(), 0, "never negative");
    }

    #[test]
    fn progress_as_json_carries_the_figures_of_the_log_line() {
        let p = Progress {
            total: 100,
            done: 40,
            sent: 30,
            failed: 10,
            elapsed: Duration::from_secs(8),
        };
        let j = p.to_json();
        assert_eq!(j["sent"], 30);
        assert_eq!(j["failed"], 10);
        assert_eq!(j["remaining"], 60);
        assert_eq!(j["total"], 100);
        assert_eq!(j["perSecond"], 5.0);
        assert_eq!(j["etaSeconds"], 12);
        let j = Progress::default().to_json();
        assert!(
            j["etaSeconds"].is_null(),
            "no pace before the first send: {j}"
        );
    }
}
