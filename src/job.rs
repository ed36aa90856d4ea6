//! The job: source → parse → policy/plan → render → deliver → record, once.
//!
//! Shared by the CLI, the timer function and the HTTP function. The I/O parts come in
//! through [`Deps`]; everything else is the pure core.

use crate::deliver::{Delivery, DeliveryError, Notifier, OutgoingReminder};
use crate::domain::OwnerEmail;
use crate::ledger::{LedgerError, LedgerEvent, LedgerSnapshot, LedgerStore, RunLock};
use crate::parse::{self, ParseError};
use crate::plan::{self, Cadence, PlanOptions, PlannedReminder};
use crate::policy::Rules;
use crate::render::Renderer;
use crate::report::{
    OwnerCounts, ReminderReport, ReminderStatus, ReportIssue, RowCounts, RunReport, SourceReport,
    Trigger, SCHEMA,
};
use crate::source::{Source, SourceError};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

/// The run's I/O parts and fixed settings, shared by the CLI and the server.
#[derive(Clone)]
pub struct Deps {
    /// Default export source.
    pub source: Arc<dyn Source>,
    /// Delivery channel (possibly a fallback chain).
    pub notifier: Arc<dyn Notifier>,
    /// Ledger, lock and reports.
    pub ledger: Arc<dyn LedgerStore>,
    /// Message renderer.
    pub renderer: Arc<Renderer>,
    /// Policy rules.
    pub rules: Rules,
    /// Cadence.
    pub cadence: Cadence,
    /// Sends in flight at once; also the ledger's batch size.
    pub concurrency: usize,
    /// Refuse to message more owners than this in one run unless forced.
    pub max_owners_per_run: usize,
    /// Show e-mails in logs.
    pub verbose: bool,
    /// How often the run lock is renewed during a run.
    pub lock_renew_every: Duration,
    /// Where the security-team digest goes after a live run, if anywhere.
    pub digest: Option<Arc<crate::deliver::DigestSender>>,
}

/// What one run should do.
#[derive(Clone)]
pub struct RunRequest {
    /// Who asked.
    pub trigger: Trigger,
    /// Plan and render, send nothing, record nothing.
    pub dry_run: bool,
    /// "Today" (default: today in the rules' time zone).
    pub as_of: Option<NaiveDate>,
    /// Only these owners.
    pub only: Vec<OwnerEmail>,
    /// Ignore the cadence and the owner cap.
    pub force: bool,
    /// Another source for this run.
    pub source: Option<Arc<dyn Source>>,
    /// Another channel for this run.
    pub notifier: Option<Arc<dyn Notifier>>,
    /// Run id (generated when `None`).
    pub run_id: Option<String>,
    /// The host's invocation id.
    pub invocation_id: Option<String>,
}

impl RunRequest {
    /// A request with defaults for a trigger.
    pub fn new(trigger: Trigger) -> Self {
        Self {
            trigger,
            dry_run: false,
            as_of: None,
            only: Vec::new(),
            force: false,
            source: None,
            notifier: None,
            run_id: None,
            invocation_id: None,
        }
    }
}

/// Why a run did not happen or stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Another run holds the lock.
    #[error("a run is already in progress: {0}")]
    Busy(String),
    /// The export could not be fetched.
    #[error("cannot fetch the export: {0}")]
    Source(#[from] SourceError),
    /// The export is not usable; nothing was sent.
    #[error("unusable export: {0}")]
    Unusable(#[from] ParseError),
    /// The ledger could not be read or written.
    #[error("ledger: {0}")]
    Ledger(LedgerError),
    /// A live run may not be dated after today (it would skew the cadence).
    #[error("as-of date {as_of} is after today ({today}): only a dry run may look ahead")]
    AsOfInFuture {
        /// The requested date.
        as_of: NaiveDate,
        /// Today in the configured time zone.
        today: NaiveDate,
    },
    /// The plan would message more owners than allowed.
    #[error("refusing to message {planned} owners in one run (limit {limit}, setting REMINDERS_MAX_OWNERS_PER_RUN); check the export, or force the run")]
    TooManyOwners {
        /// Owners planned.
        planned: usize,
        /// The cap.
        limit: usize,
    },
    /// The run was stopped (shutdown) after recording what it had sent.
    #[error(
        "run stopped (shutdown or lost run lock) after {sent} reminders; what was sent is recorded"
    )]
    Cancelled {
        /// Reminders sent and recorded before stopping.
        sent: usize,
    },
}

impl From<LedgerError> for JobError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Busy { holder } => JobError::Busy(holder),
            other => JobError::Ledger(other),
        }
    }
}

/// A source and a parsed export, for `validate` and `preview`.
pub async fn fetch_and_parse(
    source: &dyn Source,
) -> Result<(SourceReport, parse::ParsedExport), JobError> {
    let fetched = source.fetch().await?;
    let mut source_report = SourceReport::new(&fetched.origin, &fetched.bytes);
    let parsed = parse::parse_export(&fetched.bytes, &fetched.name)?;
    source_report.format = parsed.format.map(|f| f.as_str().to_string());
    Ok((source_report, parsed))
}

/// Today in the rules' time zone.
pub fn today(rules: &Rules) -> NaiveDate {
    rules.local_date(Utc::now())
}

/// Runs the job once. `cancel` stops sending between batches (graceful shutdown).
pub async fn run(
    deps: &Deps,
    req: RunRequest,
    cancel: CancellationToken,
) -> Result<RunReport, JobError> {
    let run_id = req
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span =
        tracing::info_span!("run", run_id = %run_id, trigger = ?req.trigger, dry_run = req.dry_run);
    run_inner(deps, req, run_id, cancel).instrument(span).await
}

async fn run_inner(
    deps: &Deps,
    req: RunRequest,
    run_id: String,
    cancel: CancellationToken,
) -> Result<RunReport, JobError> {
    let started_at = Utc::now();
    let as_of = req.as_of.unwrap_or_else(|| today(&deps.rules));
    // The ledger counts the cadence in run days: a live run dated in the future would hold
    // every owner back until that date.
    let today = today(&deps.rules);
    if !req.dry_run && as_of > today {
        return Err(JobError::AsOfInFuture { as_of, today });
    }
    let source = req.source.clone().unwrap_or_else(|| deps.source.clone());
    let notifier = req
        .notifier
        .clone()
        .unwrap_or_else(|| deps.notifier.clone());

    // The lock comes first: a second run must not even read a ledger the first is writing.
    let lock: Option<Box<dyn RunLock>> = if req.dry_run {
        None
    } else {
        Some(deps.ledger.lock(&run_id).await?)
    };
    // The lock is renewed in the background for the whole run (a slow batch under
    // throttling can outlast a lease); losing it stops the run after the batch in flight.
    let run_cancel = cancel.child_token();
    let done = CancellationToken::new();
    let renew_loop = async {
        let Some(lock) = lock.as_deref() else { return };
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tokio::time::sleep(deps.lock_renew_every) => {
                    // A renewal stuck in retries must not outlive the lease: give it one
                    // renewal period, then stop starting sends (another run may take over).
                    let renewed = tokio::time::timeout(deps.lock_renew_every, lock.renew()).await;
                    let failure = match renewed {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("the renewal did not answer in time".to_string()),
                    };
                    if let Some(why) = failure {
                        warn!(error = %why, "lost the run lock: no new send will start");
                        run_cancel.cancel();
                        break;
                    }
                }
            }
        }
    };
    let work = async {
        let r = run_locked(
            deps,
            &req,
            &run_id,
            as_of,
            started_at,
            source.as_ref(),
            notifier.as_ref(),
            &run_cancel,
        )
        .await;
        done.cancel();
        r
    };
    let (result, ()) = tokio::join!(work, renew_loop);
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            warn!(error = %e, "could not release the run lock; it will expire");
        }
    }
    let report = result?;
    if !req.dry_run {
        match deps.ledger.save_report(&report).await {
            Ok(location) => info!(report = %location, "run report saved"),
            Err(e) => warn!(error = %e, "could not save the run report"),
        }
        // The digest is a courtesy to the security team: its failure never fails the run.
        if let Some(digest) = &deps.digest {
            match crate::deliver::send_digest(&report, &deps.renderer, digest).await {
                Ok(_) => info!("security-team digest sent"),
                Err(e) => warn!(error = %e, "could not send the security-team digest"),
            }
        }
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_locked(
    deps: &Deps,
    req: &RunRequest,
    run_id: &str,
    as_of: NaiveDate,
    started_at: chrono::DateTime<Utc>,
    source: &dyn Source,
    notifier: &dyn Notifier,
    cancel: &CancellationToken,
) -> Result<RunReport, JobError> {
    let (source_report, parsed) = fetch_and_parse(source).await?;
    info!(
        format = source_report.format.as_deref().unwrap_or("?"),
        rows = parsed.total_rows,
        rejected = parsed.rejected.len(),
        bytes = source_report.bytes,
        "export parsed"
    );
    for r in &parsed.rejected {
        // The reason quotes the cell, which may hold a person's address: the report has it,
        // the logs only in verbose mode.
        if deps.verbose {
            warn!(row = r.row, field = %r.field, reason = %r.reason, "row rejected");
        } else {
            warn!(row = r.row, field = %r.field, "row rejected (reason in the run report)");
        }
    }
    if parsed.total_rows > 0 && parsed.findings.is_empty() {
        return Err(JobError::Unusable(ParseError::AllRowsRejected {
            name: source_report.location.clone(),
            rows: parsed.total_rows,
            first: parsed
                .rejected
                .first()
                .map(|r| format!("row {}, column '{}'", r.row, r.field))
                .unwrap_or_default(),
        }));
    }
    if parsed.total_rows == 0 && !req.force {
        return Err(JobError::Unusable(ParseError::NoDataRows {
            name: source_report.location.clone(),
        }));
    }
    let ledger = deps.ledger.load().await?;
    let opts = PlanOptions {
        as_of,
        cadence: deps.cadence.clone(),
        force: req.force,
        only: req.only.iter().cloned().collect::<HashSet<_>>(),
    };
    let plan = plan::build(&parsed.findings, &ledger, &deps.rules, &opts);

    let mut report = RunReport {
        schema: SCHEMA.into(),
        run_id: run_id.to_string(),
        invocation_id: req.invocation_id.clone(),
        trigger: req.trigger,
        dry_run: req.dry_run,
        as_of,
        started_at,
        finished_at: started_at,
        source: source_report,
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
        reminders: Vec::new(),
        counts: Default::default(),
        resolved: 0,
        warnings: parsed.notes.clone(),
        team_action: plan.team_action.iter().map(|o| o.to_string()).collect(),
        summary: String::new(),
    };
    if deps.rules.allowed_domains.is_empty() {
        report.warnings.push(
            "no allowed mail domains configured (REMINDERS_ALLOWED_DOMAINS): every owner may be messaged".into(),
        );
    }
    for held in plan.not_due.iter().chain(plan.excluded.iter()) {
        report.reminders.push(ReminderReport {
            owner: held.owner.to_string(),
            status: ReminderStatus::Skipped,
            reason: Some(held.reason.clone()),
            channel: None,
            stage: None,
            message_id: None,
            attempts: None,
            escalated_to: None,
            issues: held.issues.iter().map(ReportIssue::from).collect(),
        });
    }

    if !req.force && !req.dry_run && plan.reminders.len() > deps.max_owners_per_run {
        return Err(JobError::TooManyOwners {
            planned: plan.reminders.len(),
            limit: deps.max_owners_per_run,
        });
    }

    if req.dry_run {
        for r in &plan.reminders {
            report.reminders.push(line(
                r,
                ReminderStatus::Planned,
                None,
                Some(notifier.channel().to_string()),
                None,
            ));
        }
        report.finish(Utc::now());
        info!(summary = %report.summary, "dry run done");
        return Ok(report);
    }

    // Issues gone from the export are recorded as resolved, so they are not counted as
    // "reminded" any more and a reappearance starts a fresh cycle.
    if !plan.resolved.is_empty() {
        let events: Vec<LedgerEvent> = plan
            .resolved
            .iter()
            .map(|(owner, issue)| LedgerEvent::Resolved {
                owner: owner.clone(),
                issue: issue.clone(),
                as_of,
                run_id: run_id.to_string(),
            })
            .collect();
        deps.ledger.append(&events).await?;
        report.resolved = events.len();
    }

    let sent = send_all(
        deps,
        notifier,
        &plan.reminders,
        &ledger,
        run_id,
        as_of,
        cancel,
        &mut report,
    )
    .await;
    report.finish(Utc::now());
    match sent {
        Ok(()) => {
            info!(summary = %report.summary, "run done");
            Ok(report)
        }
        Err(e) => {
            // A run stopped half-way still leaves its report (who got what, who was not
            // attempted) for the operator; the error says why it stopped.
            report.warnings.push(format!("run stopped: {e}"));
            match deps.ledger.save_report(&report).await {
                Ok(location) => info!(report = %location, "partial run report saved"),
                Err(save) => warn!(error = %save, "could not save the partial run report"),
            }
            Err(e)
        }
    }
}

fn line(
    r: &PlannedReminder,
    status: ReminderStatus,
    reason: Option<String>,
    channel: Option<String>,
    delivery: Option<&Delivery>,
) -> ReminderReport {
    ReminderReport {
        owner: r.owner.to_string(),
        status,
        reason,
        channel,
        stage: Some(r.stage),
        message_id: delivery.and_then(|d| d.message_id.clone()),
        attempts: delivery.map(|d| d.attempts),
        escalated_to: delivery.and_then(|d| d.escalated_to.clone()),
        issues: r.issues().map(ReportIssue::from).collect(),
    }
}

/// Sends with at most `concurrency` sends in flight, streaming: a slow or throttled owner
/// holds up only its own slot. Outcomes flow to a recorder that appends every completed
/// send to the ledger (in groups of what has completed meanwhile) while sending goes on.
///
/// Crash bound: a send not yet in the ledger is either in flight (at most `concurrency`),
/// queued for the recorder (at most `concurrency`) or in the append being written (at most
/// `concurrency`), so a crash can re-send at most `3 × concurrency` owners on the next run.
/// When an append fails, no new send starts (sending more without a record could send
/// twice); the sends in flight finish and the recorder still tries to record them.
#[allow(clippy::too_many_arguments)]
async fn send_all(
    deps: &Deps,
    notifier: &dyn Notifier,
    reminders: &[PlannedReminder],
    ledger: &LedgerSnapshot,
    run_id: &str,
    as_of: NaiveDate,
    cancel: &CancellationToken,
    report: &mut RunReport,
) -> Result<(), JobError> {
    let concurrency = deps.concurrency.max(1);
    // Stops new sends: shutdown, a lost lock (both through `cancel`) or a ledger failure.
    let stop = cancel.child_token();
    let (tx, mut rx) = mpsc::channel::<(usize, Result<Delivery, DeliveryError>)>(concurrency);

    // Each send is boxed as `Send` so the whole run future can be spawned (borrowing
    // closures in a stream combinator otherwise trip rust-lang/rust#102211).
    let mut sends: Vec<SendFuture<'_>> = Vec::with_capacity(reminders.len());
    for (i, r) in reminders.iter().enumerate() {
        let stop = &stop;
        sends.push(Box::pin(async move {
            if stop.is_cancelled() {
                return (i, None);
            }
            let outcome = send_one(deps, notifier, r, ledger, run_id, as_of).await;
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
        let mut sent_total = 0usize;
        let mut completed = Vec::with_capacity(concurrency);
        while rx.recv_many(&mut completed, concurrency).await > 0 {
            let mut events = Vec::new();
            for (i, outcome) in completed.drain(..) {
                let r = &reminders[i];
                let (report_line, new_events) =
                    outcome_line(deps, r, outcome, ledger, run_id, as_of);
                if report_line.status == ReminderStatus::Sent {
                    sent_total += 1;
                }
                events.extend(new_events);
                lines[i] = Some(report_line);
            }
            if let Err(e) = deps.ledger.append(&events).await {
                warn!(error = %e, "cannot record sent reminders: no new send will start");
                stop.cancel();
                ledger_error.get_or_insert(e);
            }
        }
        (lines, ledger_error, sent_total)
    };

    let ((), (lines, ledger_error, sent_total)) = tokio::join!(producer, recorder);
    let not_attempted = if ledger_error.is_some() {
        "not attempted: the ledger could not be written"
    } else {
        "not attempted: the run was stopped (shutdown or lost run lock)"
    };
    for (r, l) in reminders.iter().zip(lines) {
        report.reminders.push(l.unwrap_or_else(|| {
            line(
                r,
                ReminderStatus::Skipped,
                Some(not_attempted.into()),
                None,
                None,
            )
        }));
    }
    report.finish(Utc::now());
    if let Some(e) = ledger_error {
        return Err(JobError::Ledger(e));
    }
    if cancel.is_cancelled() && report.reminders.len() > sent_total && stop.is_cancelled() {
        let attempted = report
            .reminders
            .iter()
            .filter(|l| l.reason.as_deref() == Some(not_attempted))
            .count();
        if attempted > 0 {
            warn!(
                sent = sent_total,
                not_attempted = attempted,
                "run stopped before every reminder was sent"
            );
            return Err(JobError::Cancelled { sent: sent_total });
        }
    }
    Ok(())
}

/// Replaces every occurrence of `address` (any ASCII case) in `text` with `pseudonym`.
fn scrub_address(text: &str, address: &str, pseudonym: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let needle = address.to_ascii_lowercase();
    if needle.is_empty() || !lower.contains(&needle) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    // ASCII lower-casing keeps byte offsets, so positions in `lower` are positions in `text`.
    for (at, _) in lower.match_indices(&needle) {
        out.push_str(&text[rest..at]);
        out.push_str(pseudonym);
        rest = at + needle.len();
    }
    out.push_str(&text[rest..]);
    out
}

type SendFuture<'a> =
    Pin<Box<dyn Future<Output = (usize, Option<Result<Delivery, DeliveryError>>)> + Send + 'a>>;

/// Renders and sends one reminder.
async fn send_one(
    deps: &Deps,
    notifier: &dyn Notifier,
    r: &PlannedReminder,
    ledger: &LedgerSnapshot,
    run_id: &str,
    as_of: NaiveDate,
) -> Result<Delivery, DeliveryError> {
    let messages = deps
        .renderer
        .render_all(r, as_of)
        .map_err(|e| DeliveryError::permanent("render", e.to_string()))?;
    let msg = OutgoingReminder {
        run_id: run_id.to_string(),
        reminder: r.clone(),
        messages,
        cached_conversation: ledger.conversations.get(&r.owner).cloned(),
        verbose: deps.verbose,
    };
    let owner_log = r.owner.for_log(deps.verbose);
    notifier
        .send(&msg)
        .instrument(tracing::info_span!("send", owner = %owner_log, stage = r.stage.as_str()))
        .await
}

/// The report line and the ledger events of one outcome.
fn outcome_line(
    deps: &Deps,
    r: &PlannedReminder,
    outcome: Result<Delivery, DeliveryError>,
    ledger: &LedgerSnapshot,
    run_id: &str,
    as_of: NaiveDate,
) -> (ReminderReport, Vec<LedgerEvent>) {
    let owner_log = r.owner.for_log(deps.verbose);
    match outcome {
        Ok(d) => {
            info!(owner = %owner_log, channel = %d.channel, attempts = d.attempts, "reminder sent");
            let now = Utc::now();
            let mut events: Vec<LedgerEvent> = r
                .issues()
                .map(|issue| LedgerEvent::Sent {
                    owner: r.owner.clone(),
                    issue: issue.key.clone(),
                    lookout_id: issue.lookout_id.clone(),
                    stage: r.stage,
                    as_of,
                    sent_at: now,
                    channel: d.channel.clone(),
                    message_id: d.message_id.clone(),
                    run_id: run_id.to_string(),
                })
                .collect();
            if let Some(conv) = &d.conversation_id {
                if ledger.conversations.get(&r.owner) != Some(conv) {
                    events.push(LedgerEvent::Conversation {
                        owner: r.owner.clone(),
                        conversation_id: conv.clone(),
                        at: now,
                    });
                }
            }
            let l = line(
                r,
                ReminderStatus::Sent,
                d.fell_back.clone(),
                Some(d.channel.clone()),
                Some(&d),
            );
            (l, events)
        }
        Err(e) => {
            let status = if e.skip {
                ReminderStatus::Skipped
            } else {
                ReminderStatus::Failed
            };
            // Services quote the address in their messages ("Resource 'x@y' does not exist"):
            // the log gets the pseudonym in its place unless verbose.
            let reason_log = if deps.verbose {
                e.reason.clone()
            } else {
                scrub_address(&e.reason, r.owner.as_str(), &owner_log)
            };
            warn!(owner = %owner_log, channel = %e.channel, reason = %reason_log, "reminder not sent");
            let reason = match &e.code {
                Some(code) => format!("{} ({code})", e.reason),
                None => e.reason.clone(),
            };
            (
                line(r, status, Some(reason), Some(e.channel.clone()), None),
                Vec::new(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn addresses_in_service_messages_are_replaced_by_the_pseudonym() {
        let text = "Resource 'JM6453@Engie.com' does not exist (jm6453@engie.com)";
        assert_eq!(
            scrub_address(text, "jm6453@engie.com", "owner-abc"),
            "Resource 'owner-abc' does not exist (owner-abc)"
        );
        assert_eq!(
            scrub_address("user not found", "a@b.c", "p"),
            "user not found"
        );
    }

    /// Compiles only if `run`'s future is `Send` (the server spawns it on the runtime).
    #[allow(dead_code)]
    fn the_run_future_can_be_spawned(deps: &Deps) {
        let fut = run(
            deps,
            RunRequest::new(Trigger::Cli),
            CancellationToken::new(),
        );
        assert_send(&fut);
    }
}
