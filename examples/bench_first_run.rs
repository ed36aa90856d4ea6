//! First-run benchmark: N owners (default 10,000), all new (no app installed, no cached
//! conversation), through the Teams bot channel with the default settings (Bot Connector
//! 50/s, Graph Teams endpoints 30/s, Graph directory 150/s, concurrency 32), against fakes
//! that enforce Microsoft's documented limits: Graph's Teams endpoints 30 requests/s per app
//! (token bucket, 429 + `Retry-After`), the Bot Connector 50 requests/s per app (every
//! operation, conversation creation included) and its per-conversation limits.
//!
//! Calls per new owner: user lookup (Graph directory), `POST installedApps` (Graph Teams),
//! `POST v3/conversations` + the activity (Bot Connector). The floor is the slowest of the
//! limits for those calls: max(N/150, N/30, 2N/50) = 2N/50 (400 s for 10,000: the Bot
//! Connector binds, the Teams endpoints need 333 s).
//!
//! Then the same fakes and limits with today's former call pattern (before issue 10): user
//! lookup, `GET installedApps`, `POST installedApps`, `GET installedApps` again, `GET …/chat`
//! (four Teams calls), all Graph calls paced by one general limiter at 150/s, then the
//! activity at 40/s; measured on fewer owners (`BENCH_OLD_OWNERS`, default 500) and
//! extrapolated. Its floor is 4N/30.
//!
//! `cargo run --release --example bench_first_run` (about 9 minutes).
//! Knobs: `BENCH_OWNERS`, `BENCH_OLD_OWNERS`, `BENCH_CONCURRENCY`, `BENCH_BOT_LATENCY_MS`,
//! `BENCH_GRAPH_LATENCY_MS`.

#[path = "support/bench.rs"]
mod bench;
#[path = "../tests/it/fake_bot.rs"]
mod fake_bot;
#[path = "../tests/it/fake_graph.rs"]
mod fake_graph;
#[path = "../tests/it/fake_identity.rs"]
mod fake_identity;

use bench::{env_or, owner, peak_rss_mb, planned, APP};
use chrono::NaiveDate;
use fake_bot::{FakeBot, RetryAfterStyle};
use fake_graph::FakeGraph;
use futures::StreamExt;
use lookout_reminders::azure::AccessTokens;
use lookout_reminders::config::DeliverySettings;
use lookout_reminders::deliver::{activity, Notifier, OutgoingReminder, TeamsBotNotifier};
use lookout_reminders::http::{encode_segment, HttpClient, RateLimiter};
use lookout_reminders::render::Renderer;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANT: &str = "9d2c6f1a-7b3e-4c5d-8e9f-0a1b2c3d4e5f";
const BOT_RATE: u32 = 50;
const TEAMS_RATE: u32 = 30;

struct Fakes {
    graph: FakeGraph,
    bot: FakeBot,
    owners: Vec<String>,
    /// Owner → object id.
    ids: HashMap<String, String>,
}

async fn fakes(range: std::ops::Range<usize>) -> Fakes {
    let graph = FakeGraph::start(APP).await;
    let bot = FakeBot::start().await;
    bot.set_rate_limit(BOT_RATE, RetryAfterStyle::Seconds);
    bot.set_recording(false);
    bot.set_delay(Some(Duration::from_millis(env_or(
        "BENCH_BOT_LATENCY_MS",
        150,
    ))));
    bot.expect_conversation_creation(fake_identity::SYSTEM_ASSIGNED_ID, TENANT);
    graph.set_recording(false);
    graph.set_delay(Some(Duration::from_millis(env_or(
        "BENCH_GRAPH_LATENCY_MS",
        50,
    ))));
    graph.set_teams_rate_limit(TEAMS_RATE);
    let owners: Vec<String> = range.map(owner).collect();
    let ids = owners
        .iter()
        .map(|o| (o.clone(), graph.add_user(o, Some("en-US"))))
        .collect();
    Fakes {
        graph,
        bot,
        owners,
        ids,
    }
}

impl Fakes {
    /// Owners who got more than one activity, and owners who got none, wherever the
    /// conversation came from (created by the bot connector or Graph's chat).
    fn duplicates_and_lost(&self) -> (usize, usize) {
        let accepted = self.bot.accepted();
        let mut duplicates = 0;
        let mut lost = 0;
        for o in &self.owners {
            let created = self.bot.created_conversation(&self.ids[o]);
            let n = created.and_then(|c| accepted.get(&c).copied()).unwrap_or(0)
                + accepted
                    .get(&self.graph.chat_id_for(o))
                    .copied()
                    .unwrap_or(0);
            if n == 0 {
                lost += 1;
            }
            if n > 1 {
                duplicates += 1;
            }
        }
        (duplicates, lost)
    }

    fn show(&self, label: &str, elapsed: Duration, floor: f64, ok: usize) {
        let n = self.owners.len();
        let (duplicates, lost) = self.duplicates_and_lost();
        let teams_calls: u64 = fake_graph::TEAMS_ROUTES
            .iter()
            .map(|r| self.graph.count(r))
            .sum();
        println!(
            "{label}: {n} owners in {:.1} s ({:.1}/s), {:.2}x its floor of {floor:.1} s; sent {ok}; duplicates {duplicates}; lost {lost}",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() / floor,
        );
        println!(
            "  graph: {} user lookups, {teams_calls} Teams-endpoint requests ({} answered 429); bot connector: {} conversations created, 429s {} ({} per-conversation)",
            self.graph.count("user"),
            self.graph.teams_throttled(),
            self.bot.creations().len(),
            self.bot.throttled(),
            self.bot.thread_throttled(),
        );
    }
}

fn reminder(o: &str, renderer: &Renderer) -> OutgoingReminder {
    let p = planned(o);
    let as_of = NaiveDate::from_ymd_opt(2024, 3, 21).unwrap();
    let messages = renderer.render_all(&p, as_of).unwrap();
    OutgoingReminder {
        run_id: "bench".into(),
        reminder: p,
        messages,
        cached_conversation: None,
        verbose: false,
        allowed_domains: Vec::new(),
    }
}

/// Today's pattern: the new notifier with the default settings.
async fn new_pattern(
    n: usize,
    concurrency: usize,
    tokens: Arc<dyn AccessTokens>,
    renderer: Arc<Renderer>,
) -> (f64, bool) {
    let f = fakes(0..n).await;
    let settings = DeliverySettings {
        graph: lookout_reminders::config::GraphSettings::at(&f.graph.base_url())
            .expect("the fake Graph's URL"),
        bot_service_url: f.bot.service_url(),
        teams_app_id: Some(APP.into()),
        bot_app_id: Some(fake_identity::SYSTEM_ASSIGNED_ID.into()),
        tenant_id: Some(TENANT.into()),
        ..Default::default()
    };
    let teams = TeamsBotNotifier::new(&settings, tokens, reqwest::Client::new()).unwrap();
    let start = Instant::now();
    let ok = futures::stream::iter(f.owners.iter())
        .map(|o| {
            let teams = &teams;
            let renderer = renderer.clone();
            // Rendered lazily, as the job does: 10,000 cards at once would dominate memory.
            async move { teams.send(&reminder(o, &renderer)).await.is_ok() }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    let elapsed = start.elapsed();
    let floor = (n as f64 / 150.0)
        .max(n as f64 / f64::from(TEAMS_RATE))
        .max(2.0 * n as f64 / f64::from(BOT_RATE));
    f.show("new call pattern (default settings)", elapsed, floor, ok);
    let teams_client = teams.graph_teams_client().stats();
    let bot_client = teams.bot_client().stats();
    println!(
        "  client: Teams-endpoint attempts {} (429 {}), bot attempts {} (429 {})",
        teams_client.attempts.load(Ordering::Relaxed),
        teams_client.throttled.load(Ordering::Relaxed),
        bot_client.attempts.load(Ordering::Relaxed),
        bot_client.throttled.load(Ordering::Relaxed),
    );
    let (duplicates, lost) = f.duplicates_and_lost();
    let ratio = elapsed.as_secs_f64() / floor;
    println!(
        "  floor = max(N/150 directory, N/30 Teams, 2N/50 bot) = {floor:.1} s; overhead {:+.1}% (target within 20%)",
        (ratio - 1.0) * 100.0
    );
    (
        elapsed.as_secs_f64(),
        duplicates == 0 && lost == 0 && ok == n && ratio <= 1.2,
    )
}

/// The former pattern, reproduced call for call: everything on Graph paced by one general
/// limiter at 150/s, four calls on the Teams endpoints per owner.
async fn old_pattern(
    n: usize,
    offset: usize,
    concurrency: usize,
    tokens: Arc<dyn AccessTokens>,
    renderer: Arc<Renderer>,
) -> f64 {
    let f = fakes(offset..offset + n).await;
    let client = reqwest::Client::new();
    let graph = HttpClient::new("graph", client.clone())
        .with_rate_limit(Arc::new(RateLimiter::new(150.0, 1)));
    let bot = HttpClient::new("bot connector", client)
        .with_rate_limit(Arc::new(RateLimiter::new(40.0, 1)));
    let base = f.graph.base_url();
    let bot_url = f.bot.service_url();
    let graph_auth = Some((tokens.as_ref(), "https://graph.microsoft.com/.default"));
    let bot_auth = Some((tokens.as_ref(), "https://api.botframework.com/.default"));
    let start = Instant::now();
    let ok = futures::stream::iter(f.owners.iter())
        .map(|o| {
            let (graph, bot, base, bot_url, renderer) = (&graph, &bot, &base, &bot_url, renderer.clone());
            async move {
                let user_url = format!(
                    "{base}/v1.0/users/{}?$select=id,displayName,mail,userPrincipalName,preferredLanguage,accountEnabled",
                    encode_segment(o)
                );
                let user: serde_json::Value = graph
                    .send(|| graph.client().get(&user_url), graph_auth)
                    .await
                    .ok()?
                    .json("graph")
                    .ok()?;
                let id = user["id"].as_str()?.to_string();
                let apps = format!(
                    "{base}/v1.0/users/{id}/teamwork/installedApps?$expand=teamsApp&$filter={}",
                    encode_segment(&format!("teamsApp/id eq '{APP}'"))
                );
                graph.send(|| graph.client().get(&apps), graph_auth).await.ok()?;
                let install = format!("{base}/v1.0/users/{id}/teamwork/installedApps");
                let body = serde_json::json!({"teamsApp@odata.bind": format!("{base}/v1.0/appCatalogs/teamsApps/{APP}")});
                match graph.send(|| graph.client().post(&install).json(&body), graph_auth).await {
                    Ok(_) => {}
                    Err(e) if e.status() == Some(409) => {}
                    Err(_) => return None,
                }
                let list: serde_json::Value = graph
                    .send(|| graph.client().get(&apps), graph_auth)
                    .await
                    .ok()?
                    .json("graph")
                    .ok()?;
                let inst = list["value"][0]["id"].as_str()?.to_string();
                let chat_url = format!("{base}/v1.0/users/{id}/teamwork/installedApps/{inst}/chat");
                let chat: serde_json::Value = graph
                    .send(|| graph.client().get(&chat_url), graph_auth)
                    .await
                    .ok()?
                    .json("graph")
                    .ok()?;
                let conversation = chat["id"].as_str()?.to_string();
                let msg = reminder(o, &renderer);
                let act = activity(msg.message_for(Some("en-US")));
                let url = format!("{bot_url}v3/conversations/{}/activities", encode_segment(&conversation));
                bot.send(|| bot.client().post(&url).json(&act), bot_auth).await.ok()?;
                Some(())
            }
        })
        .buffer_unordered(concurrency)
        .filter(|r| futures::future::ready(r.is_some()))
        .count()
        .await;
    let elapsed = start.elapsed();
    let floor = 4.0 * n as f64 / f64::from(TEAMS_RATE);
    f.show(
        "former call pattern (one Graph limiter at 150/s, 4 Teams calls per owner)",
        elapsed,
        floor,
        ok,
    );
    elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("BENCH_OWNERS", 10_000);
    let old_n: usize = env_or("BENCH_OLD_OWNERS", 500);
    let concurrency: usize = env_or("BENCH_CONCURRENCY", 32);
    let tokens = bench::tokens().await;
    let renderer = Arc::new(bench::renderer());
    println!(
        "fakes: Graph Teams endpoints {TEAMS_RATE}/s (token bucket, 429 + Retry-After: 1), bot connector {BOT_RATE}/s per app and per-conversation limits; concurrency {concurrency}"
    );

    let (new_elapsed, new_ok) = new_pattern(n, concurrency, tokens.clone(), renderer.clone()).await;
    let rss = peak_rss_mb();
    println!("  peak RSS after the first run {rss:.1} MB (target < 150 MB)");

    let old_elapsed = old_pattern(old_n, n, concurrency, tokens, renderer).await;
    let extrapolated = old_elapsed * n as f64 / old_n as f64;
    println!(
        "  former pattern extrapolated to {n} owners: {extrapolated:.0} s ({:.1}x the new pattern; Consumption timeout 600 s)",
        extrapolated / new_elapsed
    );
    bench::verdict(new_ok && rss < 150.0);
}
