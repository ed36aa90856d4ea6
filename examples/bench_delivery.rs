//! Delivery benchmark: N owners (default 10,000) through the Teams bot channel against the
//! fake Graph and a fake Bot Connector that allows R requests per second (default 50) and
//! answers 429 with `Retry-After` beyond. Reports total time against the floor N/R, 429s,
//! duplicates, losses and peak RSS, then compares with a naive sequential sender (measured
//! on a smaller N and extrapolated) and with an unpaced concurrent sender that relies on 429s.
//!
//! `cargo run --release --example bench_delivery` (about 4-5 minutes).
//! Knobs: `BENCH_OWNERS`, `BENCH_RATE`, `BENCH_CONCURRENCY`, `BENCH_NAIVE_OWNERS`,
//! `BENCH_UNPACED_OWNERS`, `BENCH_BOT_LATENCY_MS`, `BENCH_GRAPH_LATENCY_MS`.

#[path = "../tests/it/fake_bot.rs"]
mod fake_bot;
#[path = "../tests/it/fake_graph.rs"]
mod fake_graph;
#[path = "../tests/it/fake_identity.rs"]
mod fake_identity;

use chrono::{NaiveDate, TimeZone, Utc};
use fake_bot::{FakeBot, RetryAfterStyle};
use fake_graph::FakeGraph;
use futures::StreamExt;
use lookout_reminders::azure::{AccessTokens, CredentialTokens};
use lookout_reminders::config::{AzureSettings, DeliverySettings, Env};
use lookout_reminders::deliver::{Notifier, OutgoingReminder, TeamsBotNotifier};
use lookout_reminders::domain::{IssueKind, OwnerEmail, Platform, Risk};
use lookout_reminders::plan::{DeviceIssues, IssueKey, IssueLine, PlannedReminder, Stage};
use lookout_reminders::render::{MessageConstants, Renderer};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn planned(owner: &str) -> PlannedReminder {
    let line = IssueLine {
        key: IssueKey(format!("{owner}/os")),
        row: 2,
        lookout_id: Some("dev".into()),
        device_model: "SM-A528B".into(),
        platform: Platform::Android,
        kind: IssueKind::OsOutOfDate,
        issue: "Android 12".into(),
        app_name: None,
        risk: Risk::Moderate,
        detected: Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap(),
        deadline: NaiveDate::from_ymd_opt(2024, 3, 31).unwrap(),
        days_left: 10,
        due: true,
    };
    PlannedReminder {
        owner: OwnerEmail::parse(owner).unwrap(),
        stage: Stage::First,
        escalate: false,
        devices: vec![DeviceIssues {
            device_model: "SM-A528B".into(),
            platform: Platform::Android,
            lookout_id: Some("dev".into()),
            issues: vec![line],
        }],
    }
}

struct Outcome {
    elapsed: Duration,
    ok: usize,
    failed: usize,
    duplicates: usize,
    lost: usize,
    throttled: u64,
    client_429: u64,
    attempts: u64,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    n: usize,
    offset: usize,
    rate: u32,
    client_rate: f64,
    concurrency: usize,
    graph_latency: Duration,
    bot_latency: Duration,
    tokens: Arc<dyn AccessTokens>,
    renderer: Arc<Renderer>,
) -> Outcome {
    let graph = FakeGraph::start(APP).await;
    let bot = FakeBot::start().await;
    bot.set_rate_limit(rate, RetryAfterStyle::Seconds);
    bot.set_recording(false);
    bot.set_delay(Some(bot_latency));
    graph.set_recording(false);
    graph.set_delay(Some(graph_latency));
    let owners: Vec<String> = (offset..offset + n).map(owner).collect();
    for o in &owners {
        graph.add_user(o, Some("en-US"));
        graph.preinstall(o);
    }
    let settings = DeliverySettings {
        graph_base_url: graph.base_url(),
        bot_service_url: bot.service_url(),
        teams_app_id: Some(APP.into()),
        rate_per_second: client_rate,
        // Graph is not the resource under test: three lookups per owner must not bound the run.
        graph_rate_per_second: 1000.0,
        ..Default::default()
    };
    let teams = TeamsBotNotifier::new(&settings, tokens, reqwest::Client::new()).unwrap();
    let as_of = NaiveDate::from_ymd_opt(2024, 3, 21).unwrap();
    let start = Instant::now();
    let results: Vec<bool> = futures::stream::iter(owners.iter())
        .map(|o| {
            let teams = &teams;
            let renderer = renderer.clone();
            async move {
                // Rendered lazily, as the job does per batch: 10,000 rendered cards held at
                // once would dominate the memory.
                let p = planned(o);
                let messages = renderer.render_all(&p, as_of).unwrap();
                let msg = OutgoingReminder {
                    run_id: "bench".into(),
                    reminder: p,
                    messages,
                    cached_conversation: None,
                    verbose: false,
                };
                teams.send(&msg).await.is_ok()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let accepted = bot.accepted();
    let stats = teams.bot_client().stats();
    Outcome {
        elapsed,
        ok: results.iter().filter(|r| **r).count(),
        failed: results.iter().filter(|r| !**r).count(),
        duplicates: accepted.values().filter(|c| **c > 1).count(),
        lost: owners
            .iter()
            .filter(|o| !accepted.contains_key(&graph.chat_id_for(o)))
            .count(),
        throttled: bot.throttled(),
        client_429: stats.throttled.load(std::sync::atomic::Ordering::Relaxed),
        attempts: stats.attempts.load(std::sync::atomic::Ordering::Relaxed),
    }
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

fn show(label: &str, n: usize, o: &Outcome) {
    println!(
        "{label}: {n} owners in {:.1} s ({:.1}/s); sent {} failed {}; bot 429s {} (client saw {}); bot attempts {}; duplicates {}; lost {}",
        o.elapsed.as_secs_f64(),
        n as f64 / o.elapsed.as_secs_f64(),
        o.ok,
        o.failed,
        o.throttled,
        o.client_429,
        o.attempts,
        o.duplicates,
        o.lost
    );
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("BENCH_OWNERS", 10_000);
    let rate: u32 = env_or("BENCH_RATE", 50);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let naive_n: usize = env_or("BENCH_NAIVE_OWNERS", 100);
    let unpaced_n: usize = env_or("BENCH_UNPACED_OWNERS", 1000);
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
    let renderer = Arc::new(
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
    );
    println!(
        "fake latencies: graph {} ms, bot {} ms; bot limit {rate}/s (429 + Retry-After: 1 beyond); 3 Graph lookups + 1 post per owner",
        graph_latency.as_millis(),
        bot_latency.as_millis()
    );

    let paced = run(
        n,
        0,
        rate,
        f64::from(rate),
        concurrency,
        graph_latency,
        bot_latency,
        tokens.clone(),
        renderer.clone(),
    )
    .await;
    let floor = n as f64 / f64::from(rate);
    show(
        &format!("paced (limiter {rate}/s, concurrency {concurrency})"),
        n,
        &paced,
    );
    println!(
        "  floor N/R = {floor:.1} s; overhead {:+.1}% (target within 15%)",
        (paced.elapsed.as_secs_f64() / floor - 1.0) * 100.0
    );
    let rss_after_paced = peak_rss_mb();
    println!("  peak RSS so far {rss_after_paced:.1} MB (target < 150 MB)");

    let naive = run(
        naive_n,
        n,
        rate,
        1e6,
        1,
        graph_latency,
        bot_latency,
        tokens.clone(),
        renderer.clone(),
    )
    .await;
    show(
        "naive sequential (no limiter, one at a time)",
        naive_n,
        &naive,
    );
    println!(
        "  extrapolated to {n} owners: {:.0} s ({:.1}x the paced run)",
        naive.elapsed.as_secs_f64() * n as f64 / naive_n as f64,
        naive.elapsed.as_secs_f64() * n as f64 / naive_n as f64 / paced.elapsed.as_secs_f64()
    );

    let unpaced = run(
        unpaced_n,
        n + naive_n,
        rate,
        1e6,
        concurrency,
        graph_latency,
        bot_latency,
        tokens,
        renderer,
    )
    .await;
    show(
        &format!("unpaced concurrent (no limiter, concurrency {concurrency}, relies on 429s)"),
        unpaced_n,
        &unpaced,
    );
    println!(
        "  floor for {unpaced_n} owners = {:.1} s",
        unpaced_n as f64 / f64::from(rate)
    );
    println!(
        "peak RSS (whole process, fakes included): {:.1} MB",
        peak_rss_mb()
    );
    let ok = paced.duplicates == 0
        && paced.lost == 0
        && paced.elapsed.as_secs_f64() <= floor * 1.15
        && rss_after_paced < 150.0;
    println!("{}", if ok { "PASS" } else { "FAIL" });
}
