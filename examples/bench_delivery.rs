//! Delivery benchmark: N owners (default 10,000) through the Teams bot channel against the
//! fake Graph and a fake Bot Connector that allows R requests per second (default 50) and
//! answers 429 with `Retry-After` beyond. Reports total time against the floor N/R, 429s,
//! duplicates, losses and peak RSS, then compares with a naive sequential sender (measured
//! on a smaller N and extrapolated) and with an unpaced concurrent sender that relies on 429s.
//!
//! `cargo run --release --example bench_delivery` (about 4-5 minutes).
//! Knobs: `BENCH_OWNERS`, `BENCH_RATE`, `BENCH_CONCURRENCY`, `BENCH_NAIVE_OWNERS`,
//! `BENCH_UNPACED_OWNERS`, `BENCH_BOT_LATENCY_MS`, `BENCH_GRAPH_LATENCY_MS`.

use testkit::bench;

use bench::{env_or, peak_rss_mb, planned, Fakes, Knobs};
use chrono::NaiveDate;
use futures::StreamExt;
use lookout_reminders::azure::AccessTokens;
use lookout_reminders::deliver::{Notifier, OutgoingReminder, TeamsBotNotifier};
use lookout_reminders::render::Renderer;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Sends to owners `offset..offset + n` against fresh fakes, `concurrency` at a time, the
/// bot limiter at `client_rate` per second.
async fn run(
    knobs: &Knobs,
    n: usize,
    offset: usize,
    client_rate: f64,
    concurrency: usize,
    tokens: Arc<dyn AccessTokens>,
    renderer: Arc<Renderer>,
) -> Outcome {
    let fakes = Fakes::start(knobs, offset..offset + n).await;
    let settings = fakes.settings(client_rate);
    let teams = TeamsBotNotifier::new(&settings, tokens, reqwest::Client::new()).unwrap();
    let as_of = NaiveDate::from_ymd_opt(2024, 3, 21).unwrap();
    let start = Instant::now();
    let results: Vec<bool> = futures::stream::iter(fakes.owners.iter())
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
                    allowed_domains: Vec::new(),
                };
                teams.send(&msg).await.is_ok()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let (duplicates, lost) = fakes.duplicates_and_lost(&fakes.bot.accepted());
    let stats = teams.bot_client().stats();
    Outcome {
        elapsed,
        ok: results.iter().filter(|r| **r).count(),
        failed: results.iter().filter(|r| !**r).count(),
        duplicates,
        lost,
        throttled: fakes.bot.throttled(),
        client_429: stats.throttled.load(std::sync::atomic::Ordering::Relaxed),
        attempts: stats.attempts.load(std::sync::atomic::Ordering::Relaxed),
    }
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
    let knobs = Knobs::from_env();
    let n = knobs.owners;
    let rate = knobs.rate;
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let naive_n: usize = env_or("BENCH_NAIVE_OWNERS", 100);
    let unpaced_n: usize = env_or("BENCH_UNPACED_OWNERS", 1000);

    let tokens = bench::tokens().await;
    let renderer = Arc::new(bench::renderer());
    println!(
        "fake latencies: {}; 3 Graph lookups + 1 post per owner",
        knobs.describe()
    );

    let paced = run(
        &knobs,
        n,
        0,
        f64::from(rate),
        concurrency,
        tokens.clone(),
        renderer.clone(),
    )
    .await;
    let floor = knobs.floor(n);
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

    let naive = run(&knobs, naive_n, n, 1e6, 1, tokens.clone(), renderer.clone()).await;
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
        &knobs,
        unpaced_n,
        n + naive_n,
        1e6,
        concurrency,
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
        knobs.floor(unpaced_n)
    );
    println!(
        "peak RSS (whole process, fakes included): {:.1} MB",
        peak_rss_mb()
    );
    let ok = paced.duplicates == 0
        && paced.lost == 0
        && paced.elapsed.as_secs_f64() <= floor * 1.15
        && rss_after_paced < 150.0;
    bench::verdict(ok);
}
