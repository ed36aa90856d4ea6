//! The `lookout-reminders` binary: a thin CLI (`run`, `validate`, `preview`, `serve`) over the
//! library. With `FUNCTIONS_CUSTOMHANDLER_PORT` set and no command, it serves the Azure
//! Functions custom handler.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lookout_reminders::config::{Config, Env};
use lookout_reminders::domain::OwnerEmail;
use lookout_reminders::job::{self, JobError, RunRequest};
use lookout_reminders::ledger::LedgerError;
use lookout_reminders::report::Trigger;
use lookout_reminders::source::{LocalFileSource, SourceError};
use lookout_reminders::{app, telemetry};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

mod progress_bar;

/// Exit codes (a contract for scripts).
mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNUSABLE_EXPORT: u8 = 3;
    pub const PARTIAL_FAILURE: u8 = 4;
    pub const BUSY: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "lookout-reminders",
    version,
    about = "Remind Lookout for Work device owners to update their phones and tablets"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SourceArg {
    Local,
    Blob,
    Sharepoint,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PreviewFormat {
    Text,
    Card,
    Html,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// The export file (CSV, XLSX or list view); sets REMINDERS_SOURCE=local.
    #[arg(long, value_name = "PATH")]
    export: Option<PathBuf>,
    /// Take the export from the configured Azure source instead (settings from the environment).
    #[arg(long, value_enum, conflicts_with = "export")]
    source: Option<SourceArg>,
    /// The run's "today" (YYYY-MM-DD); default: today in REMINDERS_TIME_ZONE.
    #[arg(long, value_name = "YYYY-MM-DD")]
    as_of: Option<chrono::NaiveDate>,
    /// Only message owners of these mail domains (comma-separated); sets REMINDERS_ALLOWED_DOMAINS.
    #[arg(long, value_name = "a.com,b.com")]
    allowed_domains: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the job: plan, send the due reminders, record them.
    Run {
        #[command(flatten)]
        common: Common,
        /// Plan and render, send nothing, record nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only these owners (repeatable).
        #[arg(long, value_name = "EMAIL")]
        only: Vec<String>,
        /// Send again to the --only owners even if already reminded (needs --only).
        #[arg(long, requires = "only")]
        resend: bool,
        /// The owner cap of this run (instead of REMINDERS_MAX_OWNERS_PER_RUN); owners already
        /// reminded are not counted and not re-sent.
        #[arg(long, value_name = "N")]
        max_owners: Option<usize>,
        /// Accept an export with a header and no data row (every issue becomes resolved).
        #[arg(long)]
        allow_empty_export: bool,
        /// Outbox folder (sets REMINDERS_OUTBOX_DIR).
        #[arg(long, value_name = "DIR")]
        outbox: Option<PathBuf>,
        /// State folder: ledger, lock and reports (sets REMINDERS_STATE_DIR).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Delivery channel(s), primary first (sets REMINDERS_CHANNEL).
        #[arg(long, value_name = "CHANNEL")]
        channel: Option<String>,
        /// Print only the run report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Parse an export only: counts, format, rejected rows. Exit 0 when usable.
    Validate {
        /// The export file.
        path: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the reminder one owner would get.
    Preview {
        #[command(flatten)]
        common: Common,
        /// The owner's e-mail.
        #[arg(long, value_name = "EMAIL")]
        owner: String,
        /// Output: plain text, Adaptive Card JSON or HTML e-mail.
        #[arg(long, value_enum, default_value = "text")]
        format: PreviewFormat,
        /// Language (default: REMINDERS_LANGUAGE, fr).
        #[arg(long)]
        language: Option<String>,
    },
    /// The security team's insights from the ledger (local or Blob): open issues and trend,
    /// time to remediate, fixes before the deadline, overdue list, unreachable owners.
    Report {
        /// The period: `90d` (days), `12w` (weeks) or a date (YYYY-MM-DD).
        #[arg(long, value_name = "90d|YYYY-MM-DD", default_value = "90d")]
        since: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "html")]
        format: ReportFormat,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// State folder of a local ledger (sets REMINDERS_STATE_DIR).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Show owners' addresses instead of pseudonyms (sets REMINDERS_VERBOSE).
        #[arg(long)]
        verbose: bool,
    },
    /// Serve the Azure Functions custom handler on FUNCTIONS_CUSTOMHANDLER_PORT.
    Serve,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReportFormat {
    Html,
    Json,
    Csv,
}

/// The first day of `--since`: `90d`, `12w` before `today`, or a date.
fn since_date(raw: &str, today: chrono::NaiveDate) -> Result<chrono::NaiveDate, String> {
    let raw = raw.trim();
    let bad = || {
        format!(
            "--since {raw}: expected a number of days (90d), weeks (12w) or a date (YYYY-MM-DD)"
        )
    };
    if let Ok(date) = raw.parse::<chrono::NaiveDate>() {
        return Ok(date);
    }
    let (number, unit) = raw.split_at(raw.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    if !(0..=36_500).contains(&n) {
        return Err(bad());
    }
    let days = match unit {
        "d" => n,
        "w" => n * 7,
        _ => return Err(bad()),
    };
    Ok(today - chrono::Duration::days(days))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    telemetry::init_with_writer(telemetry::LogFormat::from_env(), || {
        progress_bar::StderrAroundBar
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let command = match cli.command {
        Some(c) => c,
        None if std::env::var_os("FUNCTIONS_CUSTOMHANDLER_PORT").is_some() => Command::Serve,
        None => {
            eprintln!("error: no command given; try `lookout-reminders --help`");
            return ExitCode::from(exit::USAGE);
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Applies CLI flags as settings, so flags and app settings go through one validation.
fn env_with(common: Option<&Common>, extra: &[(&str, Option<String>)]) -> Env {
    let mut env = Env::from_process();
    if let Some(c) = common {
        if let Some(p) = &c.export {
            env.0.insert("REMINDERS_SOURCE".into(), "local".into());
            env.0
                .insert("REMINDERS_EXPORT_PATH".into(), p.display().to_string());
        }
        if let Some(s) = c.source {
            let v = match s {
                SourceArg::Local => "local",
                SourceArg::Blob => "blob",
                SourceArg::Sharepoint => "sharepoint",
            };
            env.0.insert("REMINDERS_SOURCE".into(), v.into());
        }
        if let Some(d) = &c.allowed_domains {
            env.0.insert("REMINDERS_ALLOWED_DOMAINS".into(), d.clone());
        }
    }
    for (k, v) in extra {
        if let Some(v) = v {
            env.0.insert((*k).into(), v.clone());
        }
    }
    env
}

fn config_or_exit(env: &Env) -> Result<Config, u8> {
    Config::from_env_map(env).map_err(|e| {
        eprintln!("error: {e}");
        exit::USAGE
    })
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run {
            common,
            dry_run,
            only,
            resend,
            max_owners,
            allow_empty_export,
            outbox,
            state_dir,
            channel,
            json,
        } => {
            let env = env_with(
                Some(&common),
                &[
                    (
                        "REMINDERS_OUTBOX_DIR",
                        outbox.map(|p| p.display().to_string()),
                    ),
                    (
                        "REMINDERS_STATE_DIR",
                        state_dir.map(|p| p.display().to_string()),
                    ),
                    ("REMINDERS_CHANNEL", channel),
                ],
            );
            let config = match config_or_exit(&env) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let mut owners = Vec::new();
            for o in &only {
                match OwnerEmail::parse(o) {
                    Ok(e) => owners.push(e),
                    Err(e) => {
                        eprintln!("error: --only {o}: {e}");
                        return Ok(exit::USAGE);
                    }
                }
            }
            let deps = match app::deps(&config, None) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::USAGE);
                }
            };
            tracing::info!(
                source = %deps.source.describe(),
                ledger = %deps.ledger.describe(),
                channel = %deps.notifier.describe(),
                credential = %config.azure.describe_credential(),
                "starting"
            );
            let mut req = RunRequest::new(Trigger::Cli);
            req.dry_run = dry_run;
            req.as_of = common.as_of;
            req.only = owners;
            req.resend = resend;
            req.max_owners = max_owners;
            req.allow_empty_export = allow_empty_export;
            let cancel = tokio_util::sync::CancellationToken::new();
            let on_signal = cancel.clone();
            // Ctrl-C and SIGTERM (a service manager, `kill`) stop the run as `serve` does: no
            // new send starts, what was sent is recorded, the lock is released.
            tokio::spawn(async move {
                stop_signal().await;
                eprintln!(
                    "interrupted: finishing the sends in flight, recording them, then stopping"
                );
                on_signal.cancel();
            });
            // A bar on a terminal only, and never with --json (a script reads the output).
            let bar = progress_bar::SendBar::new(progress_bar::show_bar(
                json,
                dry_run,
                std::io::stderr().is_terminal(),
            ));
            req.progress = bar.sender();
            let result = job::run(&deps, req, cancel).await;
            bar.finish().await;
            match result {
                Ok(report) => {
                    if json {
                        // Streamed: the report of a large export is tens of megabytes.
                        report.write_json(std::io::stdout().lock())?;
                    } else {
                        println!("{report}");
                    }
                    let code = if report.partial_failure() {
                        exit::PARTIAL_FAILURE
                    } else {
                        exit::OK
                    };
                    // Written and flushed; the process ends next. Freeing a large export's
                    // tens of thousands of report lines one by one would only cost time:
                    // the system takes the memory back at once (what rustc does too).
                    std::mem::forget(report);
                    Ok(code)
                }
                Err(e) => Ok(report_job_error(&e)),
            }
        }
        Command::Validate { path, json } => validate(path, json).await,
        Command::Report {
            since,
            format,
            out,
            state_dir,
            verbose,
        } => {
            let env = env_with(
                None,
                &[
                    (
                        "REMINDERS_STATE_DIR",
                        state_dir.map(|p| p.display().to_string()),
                    ),
                    ("REMINDERS_VERBOSE", verbose.then(|| "true".to_string())),
                ],
            );
            let config = match config_or_exit(&env) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let since = match since_date(&since, job::today(&config.rules)) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::USAGE);
                }
            };
            let stores = match app::stores(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::USAGE);
                }
            };
            let snapshot = stores.ledger.load().await.context("reading the ledger")?;
            let latest = stores
                .reports
                .last_report()
                .await
                .context("reading the latest run report")?;
            let insights = lookout_reminders::insights::Insights::compute(
                &snapshot.insights,
                latest.as_ref(),
                since,
                config.verbose,
            );
            let text = match format {
                ReportFormat::Html => lookout_reminders::insights::render_html(
                    &insights,
                    &chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
                ),
                ReportFormat::Json => serde_json::to_string_pretty(&insights)? + "\n",
                ReportFormat::Csv => insights.trend_csv(),
            };
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("{}: writing the report", path.display()))?,
                None => print!("{text}"),
            }
            Ok(exit::OK)
        }
        Command::Preview {
            common,
            owner,
            format,
            language,
        } => {
            let env = env_with(Some(&common), &[]);
            let config = match config_or_exit(&env) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            preview(config, common.as_of, owner, format, language).await
        }
        Command::Serve => {
            let config = match config_or_exit(&Env::from_process()) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            lookout_reminders::functions::serve(config)
                .await
                .context("serving the custom handler")?;
            Ok(exit::OK)
        }
    }
}

/// Prints why the run did not happen and returns its exit code.
fn report_job_error(e: &JobError) -> u8 {
    eprintln!("error: {e}");
    exit_code(e)
}

/// The exit code of a run that did not happen (a contract for scripts: every variant is
/// named, so a new one must be given its code here).
fn exit_code(e: &JobError) -> u8 {
    match e {
        JobError::Busy(_) => exit::BUSY,
        // A credential that gets no token is configuration, whichever step meets it first
        // (a dry run fetching the export, a live run taking the lock).
        JobError::Source(SourceError::Credential { .. })
        | JobError::Ledger(LedgerError::Credential { .. }) => exit::USAGE,
        JobError::Source(_) | JobError::Unusable(_) => exit::UNUSABLE_EXPORT,
        JobError::TooManyOwners { .. }
        | JobError::AsOfInFuture { .. }
        | JobError::ResendWithoutOnly => exit::USAGE,
        JobError::Ledger(_) | JobError::Cancelled { .. } | JobError::Internal => exit::FAILURE,
    }
}

async fn validate(path: PathBuf, json: bool) -> anyhow::Result<u8> {
    let source = LocalFileSource::new(&path, u64::MAX);
    // The zone moves zone-less times but decides no row's validity: UTC will do here.
    match job::fetch_and_parse(&source, chrono_tz::Tz::UTC).await {
        Ok((source_report, parsed)) => {
            // Same rule as a run: no usable row (none at all, or all rejected) is not usable.
            let usable = !parsed.findings.is_empty();
            if json {
                let out = serde_json::json!({
                    "file": path.display().to_string(),
                    "usable": usable,
                    "format": source_report.format,
                    "bytes": source_report.bytes,
                    "sha256": source_report.sha256,
                    "rows": { "total": parsed.total_rows, "valid": parsed.findings.len(), "rejected": parsed.rejected.len() },
                    "owners": parsed.findings.iter().map(|f| &f.owner).collect::<std::collections::HashSet<_>>().len(),
                    "rejected": parsed.rejected,
                    "notes": parsed.notes,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "{}: {} export, {} rows, {} valid, {} rejected",
                    path.display(),
                    source_report.format.as_deref().unwrap_or("?"),
                    parsed.total_rows,
                    parsed.findings.len(),
                    parsed.rejected.len()
                );
                for n in &parsed.notes {
                    println!("  note: {n}");
                }
                for r in &parsed.rejected {
                    println!(
                        "  {}:{}: column '{}': {}",
                        path.display(),
                        r.row,
                        r.field,
                        r.reason
                    );
                }
            }
            Ok(if usable {
                exit::OK
            } else {
                exit::UNUSABLE_EXPORT
            })
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "file": path.display().to_string(), "usable": false, "error": e.to_string() })
                );
            }
            eprintln!("error: {e}");
            Ok(exit::UNUSABLE_EXPORT)
        }
    }
}

/// The reminder one owner would get: the run's own planning (a dry run for that owner,
/// cadence ignored, against the configured ledger so the stage is the one the next run
/// would send), then rendered in one language.
async fn preview(
    config: Config,
    as_of: Option<chrono::NaiveDate>,
    owner: String,
    format: PreviewFormat,
    language: Option<String>,
) -> anyhow::Result<u8> {
    let owner = match OwnerEmail::parse(&owner) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: --owner: {e}");
            return Ok(exit::USAGE);
        }
    };
    let deps = match app::deps(&config, None) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let mut req = RunRequest::new(Trigger::Cli);
    req.dry_run = true;
    req.as_of = as_of;
    req.only = vec![owner.clone()];
    req.resend = true;
    let planned = match job::plan(&deps, &req).await {
        Ok(p) => p,
        Err(e) => return Ok(report_job_error(&e)),
    };
    let Some(reminder) = planned.plan.reminders.first() else {
        let why = planned
            .plan
            .excluded
            .first()
            .map(|h| h.reason.clone())
            .unwrap_or_else(|| "no active remindable issue for this owner in the export".into());
        eprintln!("{owner}: no reminder: {why}");
        return Ok(exit::FAILURE);
    };
    let as_of = as_of.unwrap_or_else(|| job::today(&config.rules));
    let lang = language.unwrap_or_else(|| config.message.default_language.clone());
    let msg = match deps.renderer.render(reminder, as_of, &lang) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    match format {
        PreviewFormat::Text => println!("Subject: {}\n\n{}", msg.subject, msg.text),
        PreviewFormat::Card => println!("{}", serde_json::to_string_pretty(&msg.card)?),
        PreviewFormat::Html => println!("{}", msg.html),
    }
    Ok(exit::OK)
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
