//! The job: source → parse → policy/plan → render → deliver → record, once.
//!
//! Shared by the CLI, the timer function and the HTTP function. The I/O parts come in
//! through [`Deps`]; everything else is the pure core.

use crate::deliver::{
    Delivery, DeliveryError, EscalatedReport, ManagerSummary, Notifier, OutgoingReminder,
};
use crate::domain::OwnerEmail;
use crate::insights::{DailyAggregate, Insights, IssueFacts, Resolution, ResolvedHow};
use crate::ledger::{
    LedgerError, LedgerEvent, LedgerSnapshot, LedgerStore, ManagerHistory, ReportStore, RunLock,
};
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
use std::collections::{BTreeMap, HashSet};
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
    /// Ledger and run lock.
    pub ledger: Arc<dyn LedgerStore>,
    /// Stored run reports (usually the same store as `ledger`).
    pub reports: Arc<dyn ReportStore>,
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
    /// How long one run may spend before it starts no new send
    /// (`REMINDERS_TIME_BUDGET_SECONDS`; default: the host's `functionTimeout` minus a
    /// margin, see [`default_time_budget`]). `None`: no limit.
    pub time_budget: Option<Duration>,
    /// Where the insights page is published after a live run for the digest to link to
    /// (`REMINDERS_REPORT_SHAREPOINT_FOLDER`), if anywhere.
    pub page_publisher: Option<Arc<dyn crate::ledger::PagePublisher>>,
}

/// Time kept between the budget and the host's `functionTimeout`: for the sends in flight
/// at the budget (each bounded by its retries), recording them, the report and the digest.
pub const FUNCTION_TIMEOUT_MARGIN: Duration = Duration::from_secs(120);

/// The Consumption plan's default and maximum `functionTimeout` (10 minutes), used when
/// `host.json` cannot be read.
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(600);

/// `functionTimeout` (`hh:mm:ss`) from a `host.json` text; `None` when absent, unreadable
/// or `-1` (unbounded, Premium/Dedicated plans).
pub fn function_timeout(host_json: &str) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_str(host_json).ok()?;
    let text = v.get("functionTimeout")?.as_str()?;
    let parts: Vec<u64> = text
        .split(':')
        .map(|p| p.trim().parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = parts[..] else {
        return None;
    };
    Some(Duration::from_secs(h * 3600 + m * 60 + sec))
}

/// The default time budget: `functionTimeout` from `host_json` (or the Consumption
/// default) minus [`FUNCTION_TIMEOUT_MARGIN`], at least a minute.
pub fn default_time_budget(host_json: Option<&str>) -> Duration {
    let timeout = host_json
        .and_then(function_timeout)
        .unwrap_or(DEFAULT_FUNCTION_TIMEOUT);
    timeout
        .saturating_sub(FUNCTION_TIMEOUT_MARGIN)
        .max(Duration::from_secs(60))
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
    /// Send again to owners already reminded (the cadence does not hold them back). Only
    /// together with `only`: it can never re-send to everybody.
    pub resend: bool,
    /// The owner cap of this run, instead of `REMINDERS_MAX_OWNERS_PER_RUN` (e.g. to finish
    /// an interrupted large run: the owners it already reached are not due, not re-sent).
    pub max_owners: Option<usize>,
    /// Accept an export with a header and no data row (every issue is then resolved).
    pub allow_empty_export: bool,
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
            resend: false,
            max_owners: None,
            allow_empty_export: false,
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
    #[error("refusing to message {planned} owners in one run (limit {limit}, setting REMINDERS_MAX_OWNERS_PER_RUN); check the export, or raise the cap for this run (--max-owners / \"maxOwners\"); owners already reminded are not counted and never re-sent")]
    TooManyOwners {
        /// Owners planned.
        planned: usize,
        /// The cap.
        limit: usize,
    },
    /// Re-sending is asked for without naming the owners.
    #[error("resend needs the owners it applies to (--only / \"only\"): re-sending to everybody is never allowed")]
    ResendWithoutOnly,
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

/// A source and a parsed export, its zone-less times read in `zone` (the rules' time zone).
pub async fn fetch_and_parse(
    source: &dyn Source,
    zone: chrono_tz::Tz,
) -> Result<(SourceReport, parse::ParsedExport), JobError> {
    let fetched = source.fetch().await?;
    let mut source_report = SourceReport::new(&fetched.origin, &fetched.bytes);
    let parsed = parse::parse_export_in(&fetched.bytes, &fetched.name, zone)?;
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
    // The budget counts from the invocation's start: fetching and parsing use it too.
    let deadline = deps
        .time_budget
        .map(|budget| (tokio::time::Instant::now() + budget, budget));
    let as_of = req.as_of.unwrap_or_else(|| today(&deps.rules));
    // The ledger counts the cadence in run days: a live run dated in the future would hold
    // every owner back until that date.
    let today = today(&deps.rules);
    if !req.dry_run && as_of > today {
        return Err(JobError::AsOfInFuture { as_of, today });
    }
    if req.resend && req.only.is_empty() {
        return Err(JobError::ResendWithoutOnly);
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
            deadline,
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
        match deps.reports.save_report(&report).await {
            Ok(location) => info!(report = %location, "run report saved"),
            Err(e) => warn!(error = %e, "could not save the run report"),
        }
        // The insights page is for people: its failure never fails the run either.
        let insights = match save_insights_page(deps, &report).await {
            Ok((location, insights, html)) => {
                info!(page = %location, "insights page saved");
                // Published for the team to open; if that fails the digest says where the
                // page is stored instead, and the run goes on.
                let link = match &deps.page_publisher {
                    Some(publisher) => match publisher.publish_page(&html).await {
                        Ok(url) => {
                            info!(page = %publisher.describe(), "insights page published");
                            Some(url)
                        }
                        Err(e) => {
                            warn!(error = %e, "could not publish the insights page");
                            None
                        }
                    },
                    None => None,
                };
                Some(crate::deliver::DigestInsights {
                    figures: insights
                        .digest_figures()
                        .into_iter()
                        .map(|(name, value)| crate::deliver::HeadlineFigure { name, value })
                        .collect(),
                    link,
                    stored_at: Some(location),
                })
            }
            Err(e) => {
                warn!(error = %e, "could not save the insights page");
                None
            }
        };
        // The digest is a courtesy to the security team: its failure never fails the run.
        // Only when something happened: a same-day no-op rerun posts nothing.
        let happened = report.counts.sent
            + report.counts.failed
            + report.counts.maybe_delivered
            + report.resolved
            > 0;
        if let (Some(digest), true) = (&deps.digest, happened) {
            let sent = crate::deliver::send_digest_with(
                &report,
                insights.as_ref(),
                &deps.renderer,
                digest,
            );
            match sent.await {
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
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> Result<RunReport, JobError> {
    let (source_report, parsed) = fetch_and_parse(source, deps.rules.time_zone).await?;
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
    if parsed.total_rows == 0 && !req.allow_empty_export {
        return Err(JobError::Unusable(ParseError::NoDataRows {
            name: source_report.location.clone(),
        }));
    }
    let ledger = deps.ledger.load().await?;
    // A run for today also counts sends made today under another run date (hole: a
    // backdated run, then the timer, the same real day).
    let real_today = today(&deps.rules);
    let opts = PlanOptions {
        as_of,
        sent_today: (as_of == real_today).then_some((real_today, deps.rules.time_zone)),
        cadence: deps.cadence.clone(),
        force: req.resend,
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
        incomplete: None,
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

    // Counted on the owners still due: after an interrupted run, those already reminded
    // today are not due, so raising the cap to finish it never re-sends to them.
    let cap = req.max_owners.unwrap_or(deps.max_owners_per_run);
    if !req.dry_run && plan.reminders.len() > cap {
        return Err(JobError::TooManyOwners {
            planned: plan.reminders.len(),
            limit: cap,
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
        // An issue still listed with a resolved status carries its own resolution date.
        let resolved_in_export: std::collections::HashMap<_, NaiveDate> = parsed
            .findings
            .iter()
            .filter_map(|f| {
                let at = f.resolved?;
                Some((
                    (f.owner.clone(), plan::IssueKey::of(f)),
                    deps.rules.local_date(at),
                ))
            })
            .collect();
        let events: Vec<LedgerEvent> = plan
            .resolved
            .iter()
            .map(|(owner, issue)| LedgerEvent::Resolved {
                owner: owner.clone(),
                issue: issue.clone(),
                as_of,
                run_id: run_id.to_string(),
                resolution: measure_resolution(
                    &ledger,
                    owner,
                    issue,
                    as_of,
                    resolved_in_export
                        .get(&(owner.clone(), issue.clone()))
                        .copied(),
                ),
            })
            .collect();
        deps.ledger.append(&events).await?;
        report.resolved = events.len();
    }

    let sent = match send_all(
        deps,
        notifier,
        &plan.reminders,
        &ledger,
        run_id,
        as_of,
        cancel,
        deadline,
        &mut report,
    )
    .await
    {
        Ok(escalations) => {
            tell_managers(
                deps,
                notifier,
                &plan.reminders,
                escalations,
                &ledger,
                run_id,
                as_of,
                cancel,
                &mut report,
            )
            .await
        }
        Err(e) => Err(e),
    };
    report.finish(Utc::now());
    match sent {
        Ok(()) => {
            // The fleet's picture of the day, for the trend; a run restricted to some
            // owners sees only part of the fleet, so it records none.
            if req.only.is_empty() {
                let daily = LedgerEvent::Daily(DailyAggregate::of_run(&report));
                if let Err(e) = deps.ledger.append(&[daily]).await {
                    warn!(error = %e, "could not record the day's aggregate");
                    report
                        .warnings
                        .push(format!("the day's aggregate was not recorded: {e}"));
                }
            }
            // Still under the run lock, every event recorded: fold the ledger into a
            // checkpoint when the events since the last one make it worth it. Its failure
            // loses nothing (the events stay) and never fails the run.
            if !req.dry_run {
                match deps.ledger.checkpoint(as_of).await {
                    Ok(Some(done)) => info!(
                        checkpoint = %done.location,
                        rows = done.rows,
                        bytes = done.bytes,
                        pruned_issues = done.pruned.issues,
                        pruned_insights = done.pruned.insights,
                        "ledger checkpoint written"
                    ),
                    Ok(None) => {}
                    Err(e) => {
                        warn!(error = %e, "could not write a ledger checkpoint; the next run tries again")
                    }
                }
            }
            info!(summary = %report.summary, "run done");
            Ok(report)
        }
        Err(e) => {
            // A run stopped half-way still leaves its report (who got what, who was not
            // attempted) for the operator; the error says why it stopped.
            report.warnings.push(format!("run stopped: {e}"));
            match deps.reports.save_report(&report).await {
                Ok(location) => info!(report = %location, "partial run report saved"),
                Err(save) => warn!(error = %save, "could not save the partial run report"),
            }
            Err(e)
        }
    }
}

/// How many days of history the page written after each run covers.
pub const INSIGHTS_PAGE_DAYS: i64 = 90;

/// Writes the insights page of the ledger's last 90 days beside the run's JSON report.
async fn save_insights_page(
    deps: &Deps,
    report: &RunReport,
) -> Result<(String, Insights, String), LedgerError> {
    let snapshot = deps.ledger.load().await?;
    let since = report.as_of - chrono::Duration::days(INSIGHTS_PAGE_DAYS);
    let insights = Insights::compute(&snapshot.insights, Some(report), since, deps.verbose);
    let html = crate::insights::render_html(
        &insights,
        &report.finished_at.format("%Y-%m-%d %H:%M UTC").to_string(),
    );
    let location = deps.reports.save_report_page(report, &html).await?;
    Ok((location, insights, html))
}

/// The resolution of an issue the ledger reminded about, measured from its recorded facts
/// (`None` for issues reminded before facts were recorded).
fn measure_resolution(
    ledger: &LedgerSnapshot,
    owner: &OwnerEmail,
    issue: &plan::IssueKey,
    as_of: NaiveDate,
    resolved_in_export: Option<NaiveDate>,
) -> Option<Resolution> {
    let (facts, escalated) = ledger.facts.get(&(owner.clone(), issue.clone()))?;
    let reminders = ledger.history(owner, issue).map_or(0, |h| h.times_sent);
    let (resolved_on, how) = match resolved_in_export {
        // A resolved date in the future of the run is a clock problem: the run's day stands.
        Some(day) if day <= as_of => (day, ResolvedHow::StatusResolved),
        Some(_) => (as_of, ResolvedHow::StatusResolved),
        None => (as_of, ResolvedHow::LeftExport),
    };
    Some(Resolution::measure(
        facts,
        *escalated,
        reminders,
        resolved_on,
        how,
    ))
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
///
/// At the time budget's `deadline` no new send starts either: the sends in flight finish
/// and are recorded, the rest are reported as not attempted and the report is marked
/// [`crate::report::Incomplete`]; the next run plans them again (the cadence holds back the
/// owners already reminded today), so nothing is sent twice and the partial run's owners
/// never count against the next run's owner cap.
#[allow(clippy::too_many_arguments)]
async fn send_all(
    deps: &Deps,
    notifier: &dyn Notifier,
    reminders: &[PlannedReminder],
    ledger: &LedgerSnapshot,
    run_id: &str,
    as_of: NaiveDate,
    cancel: &CancellationToken,
    deadline: Option<(tokio::time::Instant, Duration)>,
    report: &mut RunReport,
) -> Result<Vec<(usize, OwnerEmail)>, JobError> {
    let concurrency = deps.concurrency.max(1);
    // Stops new sends: shutdown, a lost lock (both through `cancel`) or a ledger failure.
    let stop = cancel.child_token();
    let (tx, mut rx) = mpsc::channel::<(usize, Result<Delivery, DeliveryError>)>(concurrency);

    // Set by the first send that did not start because the time budget was used up.
    let out_of_time = std::sync::atomic::AtomicBool::new(false);
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
            if deadline.is_some_and(|(at, _)| tokio::time::Instant::now() >= at) {
                out_of_time.store(true, std::sync::atomic::Ordering::Relaxed);
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
        let mut escalations: Vec<(usize, OwnerEmail)> = Vec::new();
        let mut progress = Progress {
            total: reminders.len(),
            ..Default::default()
        };
        let started = tokio::time::Instant::now();
        // A run of thousands lasts minutes: under the host, a line every PROGRESS_EVERY says
        // how far it is (the first tick is immediate and skipped).
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut completed = Vec::with_capacity(concurrency);
        loop {
            let received = tokio::select! {
                // `recv_many` is cancel safe: nothing is lost when the tick wins.
                n = rx.recv_many(&mut completed, concurrency) => n,
                _ = ticker.tick() => {
                    progress.log(started.elapsed());
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
                let (report_line, new_events) =
                    outcome_line(deps, r, outcome, ledger, run_id, as_of);
                progress.done += 1;
                match report_line.status {
                    ReminderStatus::Sent => {
                        sent_total += 1;
                        progress.sent += 1;
                    }
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
        }
        (lines, ledger_error, sent_total, escalations)
    };

    let ((), (lines, ledger_error, sent_total, escalations)) = tokio::join!(producer, recorder);
    let budget_reached = out_of_time.load(std::sync::atomic::Ordering::Relaxed);
    let not_attempted = if ledger_error.is_some() {
        "not attempted: the ledger could not be written"
    } else if budget_reached && !stop.is_cancelled() {
        "not attempted: the run's time budget was reached; the next run sends it"
    } else {
        "not attempted: the run was stopped (shutdown or lost run lock)"
    };
    let remaining = lines.iter().filter(|l| l.is_none()).count();
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
    if budget_reached && ledger_error.is_none() && !stop.is_cancelled() && remaining > 0 {
        let budget_seconds = deadline.map(|(_, b)| b.as_secs()).unwrap_or_default();
        warn!(
            sent = sent_total,
            remaining,
            budget_seconds,
            "time budget reached: no new send started; the next run continues"
        );
        report.incomplete = Some(crate::report::Incomplete {
            remaining,
            budget_seconds,
        });
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
    Ok(escalations)
}

/// Tells each manager ONCE, listing all their reports escalated in this run (`escalations`:
/// reminder index and the manager its channel found), when the ledger's manager cadence says
/// they are due: daily for `daily_after_deadline_days`, then every `remind_every_days`, at
/// most once a run day. Each summary sent is recorded before the next starts, so a rerun
/// never sends it twice. The outcome goes into each report's `escalated_to`.
#[allow(clippy::too_many_arguments)]
async fn tell_managers(
    deps: &Deps,
    notifier: &dyn Notifier,
    reminders: &[PlannedReminder],
    escalations: Vec<(usize, OwnerEmail)>,
    ledger: &LedgerSnapshot,
    run_id: &str,
    as_of: NaiveDate,
    cancel: &CancellationToken,
    report: &mut RunReport,
) -> Result<(), JobError> {
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
            as_of,
            deps.cadence.daily_after_deadline_days,
            deps.cadence.remind_every_days,
        );
        let note = match due {
            _ if cancel.is_cancelled() => "not told: the run was stopped".to_string(),
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
                match notifier.send_manager_summary(&summary).await {
                    None => "not told: the channel cannot escalate".to_string(),
                    Some(Ok(false)) => {
                        "not told: no REMINDERS_SENDER_MAILBOX to send from".to_string()
                    }
                    Some(Ok(true)) => {
                        info!(manager = %manager_log, reports = indices.len(), "manager's summary sent");
                        deps.ledger
                            .append(&[LedgerEvent::ManagerTold {
                                manager: manager.clone(),
                                owners: summary.reports.iter().map(|r| r.owner.clone()).collect(),
                                as_of,
                                round_started,
                                sent_at: Utc::now(),
                                run_id: run_id.to_string(),
                            }])
                            .await?;
                        format!("summary e-mailed, {} report(s)", indices.len())
                    }
                    Some(Err(e)) => {
                        warn!(manager = %manager_log, channel = %e.channel, "cannot send the manager's summary");
                        format!("summary not sent: {}", e.reason)
                    }
                }
            }
        };
        let owners: HashSet<String> = indices
            .iter()
            .map(|&i| reminders[i].owner.to_string())
            .collect();
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

/// How often a run in progress logs how far it is.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Where the sends of a run are: for the progress line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    /// Reminders planned.
    pub total: usize,
    /// Reminders whose send ended (sent, failed or skipped).
    pub done: usize,
    /// Sent.
    pub sent: usize,
    /// Failed.
    pub failed: usize,
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

    fn log(&self, elapsed: Duration) {
        let (rate, eta) = self.rate_and_eta(elapsed);
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
        allowed_domains: deps.rules.allowed_domains.clone(),
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
                    maybe_delivered: false,
                    facts: Some(IssueFacts::of(
                        issue,
                        deps.rules.local_date(issue.detected),
                        r.escalate,
                    )),
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
        Err(e) if e.maybe_delivered => {
            // It may be on the owner's screen: recorded as sent (the cadence counts it), so
            // neither this run's fallback nor a later run sends it again.
            let reason_log = if deps.verbose {
                e.reason.clone()
            } else {
                crate::domain::replace_address(&e.reason, r.owner.as_str(), &owner_log)
            };
            warn!(owner = %owner_log, channel = %e.channel, reason = %reason_log, "reminder maybe delivered: recorded as sent, not re-sent");
            let now = Utc::now();
            let events = r
                .issues()
                .map(|issue| LedgerEvent::Sent {
                    owner: r.owner.clone(),
                    issue: issue.key.clone(),
                    lookout_id: issue.lookout_id.clone(),
                    stage: r.stage,
                    as_of,
                    sent_at: now,
                    channel: e.channel.clone(),
                    message_id: None,
                    run_id: run_id.to_string(),
                    maybe_delivered: true,
                    facts: Some(IssueFacts::of(
                        issue,
                        deps.rules.local_date(issue.detected),
                        r.escalate,
                    )),
                })
                .collect();
            (
                line(
                    r,
                    ReminderStatus::MaybeDelivered,
                    Some(e.reason.clone()),
                    Some(e.channel.clone()),
                    None,
                ),
                events,
            )
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
                crate::domain::replace_address(&e.reason, r.owner.as_str(), &owner_log)
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
    fn addresses_in_service_messages_are_replaced_by_the_pseudonym() {
        let text = "Resource 'JM6453@Engie.com' does not exist (jm6453@engie.com)";
        assert_eq!(
            crate::domain::replace_address(text, "jm6453@engie.com", "owner-abc"),
            "Resource 'owner-abc' does not exist (owner-abc)"
        );
        assert_eq!(
            crate::domain::replace_address("user not found", "a@b.c", "p"),
            "user not found"
        );
    }

    #[test]
    fn a_resolved_status_date_counts_unless_it_is_after_the_run_day() {
        use crate::domain::{IssueKind, Platform, Risk};
        let owner = OwnerEmail::parse("a@contoso.com").unwrap();
        let issue = plan::IssueKey("k".into());
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        let sent = |as_of: NaiveDate, escalated: bool| LedgerEvent::Sent {
            owner: owner.clone(),
            issue: issue.clone(),
            lookout_id: None,
            stage: crate::plan::Stage::First,
            as_of,
            sent_at: Utc::now(),
            channel: "outbox".into(),
            message_id: None,
            run_id: "r".into(),
            maybe_delivered: false,
            facts: Some(IssueFacts {
                detected_on: day(1),
                deadline: day(5),
                kind: IssueKind::OsOutOfDate,
                platform: Platform::Ios,
                risk: Risk::Low,
                escalated,
            }),
        };
        // Escalated once, then a plain reminder: the resolution still came after an escalation.
        let ledger = LedgerSnapshot::from_events(&[sent(day(2), true), sent(day(3), false)]);
        let r = measure_resolution(&ledger, &owner, &issue, day(9), Some(day(4))).unwrap();
        assert_eq!(r.how, ResolvedHow::StatusResolved);
        assert_eq!((r.resolved_on, r.days_to_remediate), (day(4), 3));
        assert_eq!(r.reminders_before, 2);
        assert!(r.before_deadline && r.after_escalation);
        let r = measure_resolution(&ledger, &owner, &issue, day(9), Some(day(20))).unwrap();
        assert_eq!(r.resolved_on, day(9));
        let r = measure_resolution(&ledger, &owner, &issue, day(9), None).unwrap();
        assert_eq!((r.how, r.before_deadline), (ResolvedHow::LeftExport, false));
        // An issue reminded before facts were recorded has no measured resolution.
        let other = plan::IssueKey("old".into());
        assert!(measure_resolution(&ledger, &owner, &other, day(9), None).is_none());
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
