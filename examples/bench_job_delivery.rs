//! Delivery benchmark through the whole job (`job::run`): a generated export of N owners
//! (default 10,000, one remindable issue each) is read from a local file, parsed, planned,
//! rendered and sent with the real Teams bot notifier to the fake Graph and a fake Bot
//! Connector that allows R requests per second (default 50) and answers 429 with
//! `Retry-After` beyond; every send is recorded in a local ledger in a temporary folder.
//!
//! Reports the run time against the floor N/R, duplicates (activities per conversation in
//! the fake), lost owners (no activity), the ledger's `sent` events, 429s and the peak RSS
//! (`VmHWM`, fakes included), then runs the job a second time to show that nothing is sent
//! again.
//!
//! `cargo run --release --example bench_job_delivery` (about 3.5 minutes).
//! Knobs: `BENCH_OWNERS`, `BENCH_RATE`, `BENCH_CLIENT_RATE` (the bot limiter, default the setting's default, 47.5),
//! `BENCH_CONCURRENCY` (default 32, the setting's default), `BENCH_BOT_LATENCY_MS`,
//! `BENCH_GRAPH_LATENCY_MS`, `BENCH_NEW_OWNERS=1` (a first run: nobody has the app, Graph's
//! Teams endpoints limited to 30/s, conversations created by the Bot Connector; floor 2N/R),
//! `BENCH_BUDGET_SECONDS` (each invocation's time budget: invocations follow one another
//! until one completes; duplicates and losses counted over all of them).

use testkit::bench;

use bench::{env_or, owner, peak_rss_mb, Fakes, Knobs};
use chrono::NaiveDate;
use lookout_reminders::config::DeliverySettings;
use lookout_reminders::deliver::TeamsBotNotifier;
use lookout_reminders::job::{self, Deps, RunRequest};
use lookout_reminders::ledger::{LedgerStore, LocalLedger};
use lookout_reminders::plan::Cadence;
use lookout_reminders::policy::Rules;
use lookout_reminders::report::Trigger;
use lookout_reminders::source::LocalFileSource;
use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A Lookout CSV export: one active high-risk Chrome vulnerability per owner, detected on
/// 2024-03-01, so every owner is due on 2024-03-05.
fn write_export(path: &Path, owners: usize) {
    let mut csv = String::from(
        "Device Owner,Lookout ID,MDM Device ID,Profile,Device Model,Device Platform,Issue Type,Issue,Classifications,Status,Risk,Date Detected,Date Resolved,Resolution Time,Details\r\n",
    );
    for i in 0..owners {
        let _ = write!(
            csv,
            "{},00000000-0000-4000-8000-{i:012},m-{i},Work,SM-A528B,Android,Application,Chrome(com.android.chrome),Vulnerability,Active,High,2024-03-01T10:00:00Z,,,\r\n",
            owner(i)
        );
    }
    std::fs::write(path, csv).expect("write the generated export");
}

/// Reminders the local ledger records as sent (the sum of every issue's count), and the
/// distinct owners they went to: read through the ledger itself, since a checkpoint folds
/// the `sent` events of past segments into its snapshot.
async fn ledger_sent(dir: &Path) -> (usize, usize) {
    let snapshot = LocalLedger::new(dir, Duration::from_secs(60))
        .load()
        .await
        .expect("read the benchmark's ledger");
    let mut owners = std::collections::HashSet::new();
    let mut sent = 0;
    for ((owner, _), history) in &snapshot.issues {
        if history.times_sent > 0 {
            sent += history.times_sent as usize;
            owners.insert(owner.clone());
        }
    }
    (sent, owners.len())
}

#[tokio::main]
async fn main() {
    let knobs = Knobs::from_env();
    let n = knobs.owners;
    // The product's default pace (just under the documented limit), as a user runs it.
    let client_rate: f64 = env_or(
        "BENCH_CLIENT_RATE",
        lookout_reminders::config::DEFAULT_BOT_RATE_PER_SECOND,
    );
    let concurrency: usize = env_or("BENCH_CONCURRENCY", DeliverySettings::default().concurrency);

    let tokens = bench::tokens().await;
    let fakes = Fakes::start(&knobs, 0..n).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let export = dir.path().join("export.csv");
    write_export(&export, n);
    let state = dir.path().join("state");

    let settings = DeliverySettings {
        concurrency,
        max_owners_per_run: n,
        ..fakes.settings(client_rate)
    };
    let teams = Arc::new(TeamsBotNotifier::new(&settings, tokens, reqwest::Client::new()).unwrap());
    let ledger = Arc::new(LocalLedger::new(&state, Duration::from_secs(600)));
    let deps = Deps {
        source: Arc::new(LocalFileSource::new(&export, 1 << 30)),
        notifier: teams.clone(),
        ledger: ledger.clone(),
        reports: ledger,
        renderer: Arc::new(bench::renderer()),
        rules: Rules::default(),
        cadence: Cadence::default(),
        concurrency: settings.concurrency,
        max_owners_per_run: settings.max_owners_per_run,
        verbose: false,
        lock_renew_every: Duration::from_secs(30),
        digest: None,
        time_budget: None,
        page_publisher: None,
    };
    let budget: Option<u64> = std::env::var("BENCH_BUDGET_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok());
    let deps = Deps {
        time_budget: budget.map(Duration::from_secs),
        page_publisher: None,
        ..deps
    };
    let mut req = RunRequest::new(Trigger::Cli);
    req.as_of = Some(NaiveDate::from_ymd_opt(2024, 3, 5).unwrap());

    println!(
        "job::run over {n} owners{}",
        budget
            .map(|b| format!(" in invocations of at most {b} s"))
            .unwrap_or_default()
    );
    println!(
        "  job::run over {n} owners: fake latencies {}; client limiter {client_rate}/s; concurrency {concurrency}; local ledger",
        knobs.describe()
    );
    // With a budget, invocations follow one another (as the schedule's firings would) until
    // one is complete; every invocation reports what it sent and what remains.
    let start = Instant::now();
    let mut invocations = 0;
    let mut sent_in_all = 0;
    let report = loop {
        invocations += 1;
        let at = Instant::now();
        let report = job::run(&deps, req.clone(), CancellationToken::new())
            .await
            .expect("the run completes");
        sent_in_all += report.counts.sent;
        if budget.is_some() {
            println!(
                "  invocation {invocations}: {:.1} s, sent {}, remaining {}",
                at.elapsed().as_secs_f64(),
                report.counts.sent,
                report.incomplete.as_ref().map(|i| i.remaining).unwrap_or(0)
            );
        }
        if report.incomplete.is_none() || invocations >= 100 {
            break report;
        }
    };
    let elapsed = start.elapsed();
    let rss = peak_rss_mb();

    let accepted = fakes.bot.accepted();
    let (duplicates, lost) = fakes.duplicates_and_lost(&accepted);
    let (sent_events, sent_owners) = ledger_sent(&state).await;
    let stats = teams.bot_client().stats();
    let floor = knobs.floor(n);
    let over = (elapsed.as_secs_f64() / floor - 1.0) * 100.0;
    println!(
        "run: {:.1} s ({:.1}/s); report: sent {} failed {} skipped {}; {}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        sent_in_all,
        report.counts.failed,
        report.counts.skipped,
        report.summary
    );
    println!(
        "  floor N/R = {floor:.1} s; overhead {over:+.1}% (target within 15%)\n  bot: 429s answered {} (client saw {}), attempts {}, retries {}; duplicates {duplicates}; lost {lost}\n  ledger: {sent_events} reminders recorded as sent for {sent_owners} owners\n  peak RSS {rss:.1} MB (whole process, fakes and 10,000 fake users included; target < 150 MB)",
        fakes.bot.throttled(),
        stats.throttled.load(Ordering::Relaxed),
        stats.attempts.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
    );

    // A second run the same day: the ledger says everyone was reminded, so nothing goes.
    let start = Instant::now();
    let again = job::run(&deps, req, CancellationToken::new())
        .await
        .expect("the second run completes");
    let resent: u32 = fakes.bot.accepted().values().sum::<u32>() - accepted.values().sum::<u32>();
    println!(
        "second run: {:.1} s; sent {}; activities posted again {resent}",
        start.elapsed().as_secs_f64(),
        again.counts.sent
    );

    let ok = duplicates == 0
        && lost == 0
        && resent == 0
        && sent_in_all == n
        && sent_owners == n
        && sent_events == n
        // Budgeted invocations stop early on purpose: their total is not held to the floor.
        && (budget.is_some() || over <= 15.0)
        && rss < 150.0;
    bench::verdict(ok);
}
