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
//! Knobs: `BENCH_OWNERS`, `BENCH_RATE`, `BENCH_CLIENT_RATE` (the bot limiter, default R),
//! `BENCH_CONCURRENCY` (default 32, the setting's default), `BENCH_BOT_LATENCY_MS`,
//! `BENCH_GRAPH_LATENCY_MS`.

#[path = "../tests/it/fake_bot.rs"]
mod fake_bot;
#[path = "../tests/it/fake_graph.rs"]
mod fake_graph;
#[path = "../tests/it/fake_identity.rs"]
mod fake_identity;

use chrono::NaiveDate;
use fake_bot::{FakeBot, RetryAfterStyle};
use fake_graph::FakeGraph;
use lookout_reminders::azure::{AccessTokens, CredentialTokens};
use lookout_reminders::config::{AzureSettings, DeliverySettings, Env};
use lookout_reminders::deliver::TeamsBotNotifier;
use lookout_reminders::job::{self, Deps, RunRequest};
use lookout_reminders::ledger::LocalLedger;
use lookout_reminders::plan::Cadence;
use lookout_reminders::policy::Rules;
use lookout_reminders::render::{MessageConstants, Renderer};
use lookout_reminders::report::Trigger;
use lookout_reminders::source::LocalFileSource;
use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const APP: &str = "5f0b4d2e-3c1a-4b7e-9d8f-1a2b3c4d5e6f";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn owner(i: usize) -> String {
    format!("owner{i:05}@contoso.com")
}

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

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// `sent` events in the local ledger, and the distinct owners they name.
fn ledger_sent(dir: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap_or_default();
    let mut owners = std::collections::HashSet::new();
    let mut events = 0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["event"] == "sent" {
            events += 1;
            owners.insert(v["owner"].as_str().unwrap_or("").to_string());
        }
    }
    (events, owners.len())
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("BENCH_OWNERS", 10_000);
    let rate: u32 = env_or("BENCH_RATE", 50);
    let client_rate: f64 = env_or("BENCH_CLIENT_RATE", f64::from(rate));
    let concurrency: usize = env_or("BENCH_CONCURRENCY", DeliverySettings::default().concurrency);
    let bot_latency = Duration::from_millis(env_or("BENCH_BOT_LATENCY_MS", 150));
    let graph_latency = Duration::from_millis(env_or("BENCH_GRAPH_LATENCY_MS", 50));

    let identity = fake_identity::FakeIdentity::shared().await;
    let env = Env([(
        "REMINDERS_CREDENTIAL".to_string(),
        "managed_identity".to_string(),
    )]
    .into_iter()
    .chain(identity.env())
    .collect());
    let credential =
        lookout_reminders::azure::credential(&AzureSettings::from_env(&env).unwrap()).unwrap();
    let tokens: Arc<dyn AccessTokens> = Arc::new(CredentialTokens::new(credential));

    let graph = FakeGraph::start(APP).await;
    let bot = FakeBot::start().await;
    bot.set_rate_limit(rate, RetryAfterStyle::Seconds);
    bot.set_recording(false);
    bot.set_delay(Some(bot_latency));
    graph.set_recording(false);
    graph.set_delay(Some(graph_latency));
    let owners: Vec<String> = (0..n).map(owner).collect();
    for o in &owners {
        graph.add_user(o, Some("en-US"));
        graph.preinstall(o);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let export = dir.path().join("export.csv");
    write_export(&export, n);
    let state = dir.path().join("state");

    let settings = DeliverySettings {
        graph_base_url: graph.base_url(),
        bot_service_url: bot.service_url(),
        teams_app_id: Some(APP.into()),
        rate_per_second: client_rate,
        // Graph is not the resource under test: three lookups per owner must not bound the run.
        graph_rate_per_second: 1000.0,
        concurrency,
        max_owners_per_run: n,
        ..Default::default()
    };
    let teams = Arc::new(TeamsBotNotifier::new(&settings, tokens, reqwest::Client::new()).unwrap());
    let deps = Deps {
        source: Arc::new(LocalFileSource::new(&export, 1 << 30)),
        notifier: teams.clone(),
        ledger: Arc::new(LocalLedger::new(&state, Duration::from_secs(600))),
        renderer: Arc::new(
            Renderer::new(
                None,
                &["fr".to_string(), "en".to_string()],
                MessageConstants {
                    contact: "help@contoso.com".into(),
                    signature: "IT".into(),
                    grace_days: 30,
                    time_zone: chrono_tz::Europe::Paris,
                },
            )
            .unwrap(),
        ),
        rules: Rules::default(),
        cadence: Cadence::default(),
        concurrency: settings.concurrency,
        max_owners_per_run: settings.max_owners_per_run,
        verbose: false,
        lock_renew_every: Duration::from_secs(30),
        digest: None,
    };
    let mut req = RunRequest::new(Trigger::Cli);
    req.as_of = Some(NaiveDate::from_ymd_opt(2024, 3, 5).unwrap());

    println!(
        "job::run over {n} owners: fake latencies graph {} ms, bot {} ms; bot limit {rate}/s (429 + Retry-After: 1 beyond); client limiter {client_rate}/s; concurrency {concurrency}; local ledger",
        graph_latency.as_millis(),
        bot_latency.as_millis()
    );
    let start = Instant::now();
    let report = job::run(&deps, req.clone(), CancellationToken::new())
        .await
        .expect("the run completes");
    let elapsed = start.elapsed();
    let rss = peak_rss_mb();

    let accepted = bot.accepted();
    let duplicates = accepted.values().filter(|c| **c > 1).count();
    let lost = owners
        .iter()
        .filter(|o| !accepted.contains_key(&graph.chat_id_for(o)))
        .count();
    let (sent_events, sent_owners) = ledger_sent(&state);
    let stats = teams.bot_client().stats();
    let floor = n as f64 / f64::from(rate);
    let over = (elapsed.as_secs_f64() / floor - 1.0) * 100.0;
    println!(
        "run: {:.1} s ({:.1}/s); report: sent {} failed {} skipped {}; {}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        report.counts.sent,
        report.counts.failed,
        report.counts.skipped,
        report.summary
    );
    println!(
        "  floor N/R = {floor:.1} s; overhead {over:+.1}% (target within 15%)\n  bot: 429s answered {} (client saw {}), attempts {}, retries {}; duplicates {duplicates}; lost {lost}\n  ledger: {sent_events} sent events for {sent_owners} owners\n  peak RSS {rss:.1} MB (whole process, fakes and 10,000 fake users included; target < 150 MB)",
        bot.throttled(),
        stats.throttled.load(Ordering::Relaxed),
        stats.attempts.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
    );

    // A second run the same day: the ledger says everyone was reminded, so nothing goes.
    let start = Instant::now();
    let again = job::run(&deps, req, CancellationToken::new())
        .await
        .expect("the second run completes");
    let resent: u32 = bot.accepted().values().sum::<u32>() - accepted.values().sum::<u32>();
    println!(
        "second run: {:.1} s; sent {}; activities posted again {resent}",
        start.elapsed().as_secs_f64(),
        again.counts.sent
    );

    let ok = duplicates == 0
        && lost == 0
        && resent == 0
        && report.counts.sent == n
        && sent_owners == n
        && over <= 15.0
        && rss < 150.0;
    println!("{}", if ok { "PASS" } else { "FAIL" });
}
