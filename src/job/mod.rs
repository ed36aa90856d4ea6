//! The job: source → parse → policy/plan → render → deliver → record, once.
//!
//! Shared by the CLI, the timer function and the HTTP function. The I/O parts come in
//! through [`Deps`]; everything else is the pure core.

mod send;

pub use send::{Progress, ProgressSender, PROGRESS_EVERY};

use crate::deliver::Notifier;
use crate::domain::OwnerEmail;
use crate::insights::{DailyAggregate, Insights, Resolution, ResolvedHow};
use crate::ledger::{LedgerError, LedgerEvent, LedgerSnapshot, LedgerStore, ReportStore, RunLock};
use crate::parse::{self, ParseError, ParsedExport};
use crate::plan::{self, Cadence, Plan, PlanOptions};
use crate::policy::Rules;
use crate::render::Renderer;
use crate::report::{RunMeta, RunReport, SourceReport, Trigger};
use crate::source::{Source, SourceError};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
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
    /// Where the run publishes how far its sends are (CLI progress bar, HTTP status).
    pub progress: Option<ProgressSender>,
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
            progress: None,
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
    /// A part of the run panicked (a bug): the run stopped there, its lock given back; what
    /// it recorded stands. The panic's message is in the logs, never in an answer.
    #[error("the run stopped unexpectedly (see the logs)")]
    Internal,
}

/// The message of a panic's payload, for the log line that reports it.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
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
    // Hashing and parsing a large export is CPU work for a good fraction of a second: it runs
    // on the blocking pool so the runtime's workers keep answering the host meanwhile.
    let parsed = tokio::task::spawn_blocking(move || {
        let mut source_report = SourceReport::new(&fetched.origin, &fetched.bytes);
        let parsed = parse::parse_export_in(&fetched.bytes, &fetched.name, zone)?;
        source_report.format = parsed.format.map(|f| f.as_str().to_string());
        Ok((source_report, parsed))
    })
    .await;
    match parsed {
        Ok(result) => result,
        // A panic in the parser stays a panic, as when it ran on this task.
        Err(join) => match join.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(join) => panic!("the export parser was cancelled: {join}"),
        },
    }
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
    let run = Run::new(deps, &req, cancel)?;
    let span =
        tracing::info_span!("run", run_id = %run.id, trigger = ?req.trigger, dry_run = req.dry_run);
    run.execute_locked().instrument(span).await
}

/// What a run planned from its export, before anything is sent.
pub struct PlannedRun {
    /// Where the export came from.
    pub source: SourceReport,
    /// The parsed export.
    pub parsed: ParsedExport,
    /// The ledger the plan was made against.
    pub ledger: LedgerSnapshot,
    /// The plan.
    pub plan: Plan,
}

/// The first half of a run, shared with `preview`: fetch, parse, refuse an unusable export,
/// read the ledger and plan, exactly as [`run`] does for `req`. Takes no lock, sends and
/// records nothing.
pub async fn plan(deps: &Deps, req: &RunRequest) -> Result<PlannedRun, JobError> {
    Run::new(deps, req, CancellationToken::new())?.plan().await
}

/// One run in progress: what it was asked, its identity and day, and its parts.
struct Run<'a> {
    deps: &'a Deps,
    req: &'a RunRequest,
    /// The run id.
    id: String,
    /// The run's "today".
    as_of: NaiveDate,
    started_at: DateTime<Utc>,
    source: Arc<dyn Source>,
    notifier: Arc<dyn Notifier>,
    /// Stops new sends: the shutdown (its parent) or a lost run lock.
    cancel: CancellationToken,
    /// When no new send may start, and the budget it came from.
    deadline: Option<(tokio::time::Instant, Duration)>,
}

impl<'a> Run<'a> {
    /// Checks the request and fixes the run's id, day and parts.
    fn new(
        deps: &'a Deps,
        req: &'a RunRequest,
        shutdown: CancellationToken,
    ) -> Result<Self, JobError> {
        let started_at = Utc::now();
        // The budget counts from the invocation's start: fetching and parsing use it too.
        let deadline = deps
            .time_budget
            .map(|budget| (tokio::time::Instant::now() + budget, budget));
        let today = today(&deps.rules);
        let as_of = req.as_of.unwrap_or(today);
        // The ledger counts the cadence in run days: a live run dated in the future would
        // hold every owner back until that date.
        if !req.dry_run && as_of > today {
            return Err(JobError::AsOfInFuture { as_of, today });
        }
        if req.resend && req.only.is_empty() {
            return Err(JobError::ResendWithoutOnly);
        }
        Ok(Self {
            deps,
            req,
            id: req
                .run_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            as_of,
            started_at,
            source: req.source.clone().unwrap_or_else(|| deps.source.clone()),
            notifier: req
                .notifier
                .clone()
                .unwrap_or_else(|| deps.notifier.clone()),
            cancel: shutdown.child_token(),
            deadline,
        })
    }

    fn meta(&self) -> RunMeta {
        RunMeta {
            run_id: self.id.clone(),
            invocation_id: self.req.invocation_id.clone(),
            trigger: self.req.trigger,
            dry_run: self.req.dry_run,
            as_of: self.as_of,
            started_at: self.started_at,
        }
    }

    /// Whether the time budget is used up (no new send may start).
    fn out_of_time(&self) -> bool {
        self.deadline
            .is_some_and(|(at, _)| tokio::time::Instant::now() >= at)
    }

    /// The time budget, if any.
    fn budget(&self) -> Option<Duration> {
        self.deadline.map(|(_, budget)| budget)
    }

    /// Tells whoever watches (CLI bar, HTTP status) how far the sends are.
    fn publish(&self, progress: Progress) {
        if let Some(watch) = &self.req.progress {
            watch.send_replace(progress);
        }
    }

    /// Takes the lock (live runs), runs, releases the lock; then a live run's report, page
    /// and digest are saved and sent.
    async fn execute_locked(&self) -> Result<RunReport, JobError> {
        // The lock comes first: a second run must not even read a ledger the first is writing.
        let lock: Option<Box<dyn RunLock>> = if self.req.dry_run {
            None
        } else {
            Some(self.deps.ledger.lock(&self.id).await?)
        };
        let done = CancellationToken::new();
        let work = async {
            // A panic (a bug in a part of the run) must not leave the lock held until it
            // expires (hours for the local ledger): it ends the work like an error, the lock
            // is given back below, and the run reports [`JobError::Internal`].
            let r = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(self.execute()))
                .await
                .unwrap_or_else(|panic| {
                    tracing::error!(panic = %panic_message(panic.as_ref()), "the run panicked: it stops here; what it recorded stands");
                    Err(JobError::Internal)
                });
            done.cancel();
            r
        };
        let (result, ()) = tokio::join!(work, self.keep_lock(lock.as_deref(), &done));
        if let Some(lock) = lock {
            if let Err(e) = lock.release().await {
                warn!(error = %e, "could not release the run lock; it will expire");
            }
        }
        let report = result?;
        if !self.req.dry_run {
            self.publish_report(&report).await;
        }
        Ok(report)
    }

    /// Renews the lock in the background until `done` (a slow batch under throttling can
    /// outlast a lease); losing it stops the run after the sends in flight.
    async fn keep_lock(&self, lock: Option<&dyn RunLock>, done: &CancellationToken) {
        let Some(lock) = lock else { return };
        let every = self.deps.lock_renew_every;
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tokio::time::sleep(every) => {
                    // A renewal stuck in retries must not outlive the lease: give it one
                    // renewal period, then stop starting sends (another run may take over).
                    let failure = match tokio::time::timeout(every, lock.renew()).await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("the renewal did not answer in time".to_string()),
                    };
                    if let Some(why) = failure {
                        warn!(error = %why, "lost the run lock: no new send will start");
                        self.cancel.cancel();
                        break;
                    }
                }
            }
        }
    }

    /// Fetches and parses the export and refuses an unusable one.
    async fn fetch_usable_export(&self) -> Result<(SourceReport, ParsedExport), JobError> {
        let (source_report, parsed) =
            fetch_and_parse(self.source.as_ref(), self.deps.rules.time_zone).await?;
        info!(
            format = source_report.format.as_deref().unwrap_or("?"),
            rows = parsed.total_rows,
            rejected = parsed.rejected.len(),
            bytes = source_report.bytes,
            "export parsed"
        );
        for r in &parsed.rejected {
            // The reason quotes the cell, which may hold a person's address: the report has
            // it, the logs only in verbose mode.
            if self.deps.verbose {
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
        if parsed.total_rows == 0 && !self.req.allow_empty_export {
            return Err(JobError::Unusable(ParseError::NoDataRows {
                name: source_report.location.clone(),
            }));
        }
        Ok((source_report, parsed))
    }

    /// Fetch, parse, read the ledger, plan.
    async fn plan(&self) -> Result<PlannedRun, JobError> {
        let (source, parsed) = self.fetch_usable_export().await?;
        let ledger = self.deps.ledger.load().await?;
        // A run for today also counts sends made today under another run date (hole: a
        // backdated run, then the timer, the same real day).
        let real_today = today(&self.deps.rules);
        let opts = PlanOptions {
            as_of: self.as_of,
            sent_today: (self.as_of == real_today)
                .then_some((real_today, self.deps.rules.time_zone)),
            cadence: self.deps.cadence.clone(),
            force: self.req.resend,
            only: self.req.only.iter().cloned().collect::<HashSet<_>>(),
        };
        let plan = plan::build(&parsed.findings, &ledger, &self.deps.rules, &opts);
        Ok(PlannedRun {
            source,
            parsed,
            ledger,
            plan,
        })
    }

    /// Plans, then (live runs) records the resolved issues, sends and tells managers.
    async fn execute(&self) -> Result<RunReport, JobError> {
        let PlannedRun {
            source,
            parsed,
            ledger,
            plan,
        } = self.plan().await?;
        let domains_restricted = !self.deps.rules.allowed_domains.is_empty();
        let mut report = RunReport::begin(&self.meta(), source, &parsed, &plan, domains_restricted);

        // Counted on the owners still due: after an interrupted run, those already reminded
        // today are not due, so raising the cap to finish it never re-sends to them.
        let cap = self.req.max_owners.unwrap_or(self.deps.max_owners_per_run);
        if !self.req.dry_run && plan.reminders.len() > cap {
            return Err(JobError::TooManyOwners {
                planned: plan.reminders.len(),
                limit: cap,
            });
        }

        if self.req.dry_run {
            let channel = self.notifier.channel();
            report.reminders.extend(
                plan.reminders
                    .iter()
                    .map(|r| crate::report::ReminderReport::planned(r, channel)),
            );
            report.finish(Utc::now());
            info!(summary = %report.summary, "dry run done");
            return Ok(report);
        }

        report.resolved = self.record_resolved(&plan, &parsed, &ledger).await?;
        let sent = match send::send_all(self, &plan.reminders, &ledger, &mut report).await {
            Ok(escalations) => {
                send::tell_managers(self, &plan.reminders, escalations, &ledger, &mut report).await
            }
            Err(e) => Err(e),
        };
        report.finish(Utc::now());
        match sent {
            Ok(()) => {
                // The fleet's picture of the day, for the trend; a run restricted to some
                // owners sees only part of the fleet, so it records none.
                if self.req.only.is_empty() {
                    let daily = LedgerEvent::Daily(DailyAggregate::of_run(&report));
                    if let Err(e) = self.deps.ledger.append(&[daily]).await {
                        warn!(error = %e, "could not record the day's aggregate");
                        report
                            .warnings
                            .push(format!("the day's aggregate was not recorded: {e}"));
                    }
                }
                // Still under the run lock, every event recorded: fold the ledger into a
                // checkpoint when the events since the last one make it worth it. Its failure
                // loses nothing (the events stay) and never fails the run.
                if !self.req.dry_run {
                    match self.deps.ledger.checkpoint(self.as_of).await {
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
                match self.deps.reports.save_report(&report).await {
                    Ok(location) => info!(report = %location, "partial run report saved"),
                    Err(save) => warn!(error = %save, "could not save the partial run report"),
                }
                Err(e)
            }
        }
    }

    /// Records the issues gone from the export (or listed as resolved) as resolved, so they
    /// are not counted as "reminded" any more and a reappearance starts a fresh cycle.
    /// Returns how many.
    async fn record_resolved(
        &self,
        plan: &Plan,
        parsed: &ParsedExport,
        ledger: &LedgerSnapshot,
    ) -> Result<usize, JobError> {
        if plan.resolved.is_empty() {
            return Ok(0);
        }
        let rules = &self.deps.rules;
        // An issue still listed with a resolved status carries its own resolution date.
        let resolved_in_export: HashMap<_, NaiveDate> = parsed
            .findings
            .iter()
            .filter_map(|f| {
                let at = f.resolved?;
                Some((
                    (f.owner.clone(), plan::IssueKey::of(f)),
                    rules.local_date(at),
                ))
            })
            .collect();
        let events: Vec<LedgerEvent> = plan
            .resolved
            .iter()
            .map(|(owner, issue)| LedgerEvent::Resolved {
                owner: owner.clone(),
                issue: issue.clone(),
                as_of: self.as_of,
                run_id: self.id.clone(),
                resolution: measure_resolution(
                    ledger,
                    owner,
                    issue,
                    self.as_of,
                    resolved_in_export
                        .get(&(owner.clone(), issue.clone()))
                        .copied(),
                ),
            })
            .collect();
        self.deps.ledger.append(&events).await?;
        Ok(events.len())
    }

    /// After a live run: the report and the insights page are stored, the page published
    /// and the security team's digest sent. None of these ever fails the run.
    async fn publish_report(&self, report: &RunReport) {
        let deps = self.deps;
        match deps.reports.save_report(report).await {
            Ok(location) => info!(report = %location, "run report saved"),
            Err(e) => warn!(error = %e, "could not save the run report"),
        }
        // The insights page is for people: its failure never fails the run either.
        let insights = match save_insights_page(deps, report).await {
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
            let sent =
                crate::deliver::send_digest_with(report, insights.as_ref(), &deps.renderer, digest);
            match sent.await {
                Ok(_) => info!("security-team digest sent"),
                Err(e) => warn!(error = %e, "could not send the security-team digest"),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insights::IssueFacts;

    fn assert_send<T: Send>(_: &T) {}

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

    /// A source whose export is ready at once: any wait in `fetch_and_parse` is the parse's.
    struct InMemory(Vec<u8>);

    #[async_trait::async_trait]
    impl Source for InMemory {
        fn describe(&self) -> String {
            "in memory".into()
        }
        async fn fetch(&self) -> Result<crate::source::FetchedExport, crate::source::SourceError> {
            Ok(crate::source::FetchedExport {
                bytes: self.0.clone(),
                name: "memory.csv".into(),
                origin: Default::default(),
            })
        }
    }

    #[test]
    fn parsing_an_export_leaves_the_async_worker_free() {
        // One async worker and one blocking thread, the latter held busy by a gate: parsed on
        // the blocking pool, the export waits for the gate and the worker is handed back;
        // parsed on the worker, it would be done in the first poll whatever the gate.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut csv = String::from("Device Owner,Lookout ID,Issue,Status,Date Detected\n");
            for i in 0..2_000 {
                csv.push_str(&format!(
                    "u{i}@engie.com,dev{i},Agent,Active,2024-03-04T14:52:00Z\n"
                ));
            }
            let source = InMemory(csv.into_bytes());
            let (open_gate, gate) = std::sync::mpsc::channel::<()>();
            let held = tokio::task::spawn_blocking(move || gate.recv());
            let parse = fetch_and_parse(&source, chrono_tz::Tz::UTC);
            tokio::pin!(parse);
            assert!(
                futures::poll!(&mut parse).is_pending(),
                "fetch_and_parse parsed on the async worker"
            );
            open_gate.send(()).unwrap();
            let (source_report, parsed) = parse.await.unwrap();
            held.await.unwrap().unwrap();
            assert_eq!(parsed.findings.len(), 2_000);
            assert_eq!(source_report.format.as_deref(), Some("csv"));
            assert_eq!(source_report.bytes as usize, source.0.len());
        });
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unusable_export_is_still_an_error_after_the_blocking_pool() {
        let source = InMemory(b"%PDF-1.7 not an export".to_vec());
        let err = fetch_and_parse(&source, chrono_tz::Tz::UTC)
            .await
            .unwrap_err();
        assert!(
            matches!(err, JobError::Unusable(ParseError::NotAnExport { .. })),
            "{err}"
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
