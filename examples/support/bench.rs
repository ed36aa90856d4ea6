//! Set-up shared by the delivery benchmarks (`bench_delivery`, `bench_job_delivery`): the
//! knobs read from the environment, the fake Graph and Bot Connector loaded with N owners,
//! managed-identity tokens from the fake identity endpoint, the Teams settings, the renderer,
//! and the measures (duplicates, losses, peak RSS).
//!
//! Included with `#[path = "support/bench.rs"] mod bench;` next to the three
//! `#[path = "../tests/it/fake_*.rs"]` modules, which must sit at the example's root because
//! they name each other through `crate::`. Not an example target itself: it has no `main`
//! and is not `examples/<name>/main.rs`.

use crate::fake_bot::{FakeBot, RetryAfterStyle};
use crate::fake_graph::FakeGraph;
use crate::fake_identity::FakeIdentity;
use lookout_reminders::azure::{AccessTokens, CredentialTokens};
use lookout_reminders::config::{AzureSettings, DeliverySettings, Env};
use lookout_reminders::render::{MessageConstants, Renderer};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// The Teams app id the fake Graph's catalog holds and the settings name.
pub const APP: &str = "5f0b4d2e-3c1a-4b7e-9d8f-1a2b3c4d5e6f";

/// The environment variable `name` parsed, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `i`-th generated owner's address.
pub fn owner(i: usize) -> String {
    format!("owner{i:05}@contoso.com")
}

/// The knobs both benchmarks read: the number of owners, the fake bot's rate limit and the
/// fakes' latencies.
pub struct Knobs {
    /// `BENCH_OWNERS` (default 10,000).
    pub owners: usize,
    /// `BENCH_RATE`: requests per second the fake bot allows (default 50).
    pub rate: u32,
    /// `BENCH_BOT_LATENCY_MS` (default 150).
    pub bot_latency: Duration,
    /// `BENCH_GRAPH_LATENCY_MS` (default 50).
    pub graph_latency: Duration,
}

impl Knobs {
    /// Reads the knobs from the environment.
    pub fn from_env() -> Knobs {
        Knobs {
            owners: env_or("BENCH_OWNERS", 10_000),
            rate: env_or("BENCH_RATE", 50),
            bot_latency: Duration::from_millis(env_or("BENCH_BOT_LATENCY_MS", 150)),
            graph_latency: Duration::from_millis(env_or("BENCH_GRAPH_LATENCY_MS", 50)),
        }
    }

    /// The shortest possible time, in seconds, to send to `n` owners at the bot's rate.
    pub fn floor(&self, n: usize) -> f64 {
        n as f64 / f64::from(self.rate)
    }

    /// The fakes' latencies and limit, for the report's first line.
    pub fn describe(&self) -> String {
        format!(
            "graph {} ms, bot {} ms; bot limit {}/s (429 + Retry-After: 1 beyond)",
            self.graph_latency.as_millis(),
            self.bot_latency.as_millis(),
            self.rate
        )
    }
}

/// The fake Graph and Bot Connector, loaded with the owners they will be asked about.
pub struct Fakes {
    /// The fake Graph: every owner exists (`en-US`) and has the app installed already.
    pub graph: FakeGraph,
    /// The fake Bot Connector, rate-limited, not recording bodies.
    pub bot: FakeBot,
    /// The owners loaded, in order.
    pub owners: Vec<String>,
}

impl Fakes {
    /// Starts both fakes with the knobs' rate and latencies and loads the owners `range`.
    pub async fn start(knobs: &Knobs, range: Range<usize>) -> Fakes {
        let graph = FakeGraph::start(APP).await;
        let bot = FakeBot::start().await;
        bot.set_rate_limit(knobs.rate, RetryAfterStyle::Seconds);
        // Recording 10,000 requests would dominate the memory measured.
        bot.set_recording(false);
        bot.set_delay(Some(knobs.bot_latency));
        graph.set_recording(false);
        graph.set_delay(Some(knobs.graph_latency));
        let owners: Vec<String> = range.map(owner).collect();
        for o in &owners {
            graph.add_user(o, Some("en-US"));
            graph.preinstall(o);
        }
        Fakes { graph, bot, owners }
    }

    /// Teams bot settings aimed at the fakes, the bot limiter at `client_rate` per second.
    pub fn settings(&self, client_rate: f64) -> DeliverySettings {
        DeliverySettings {
            graph_base_url: self.graph.base_url(),
            bot_service_url: self.bot.service_url(),
            teams_app_id: Some(APP.into()),
            rate_per_second: client_rate,
            // Graph is not the resource under test: three lookups per owner must not bound the run.
            graph_rate_per_second: 1000.0,
            ..Default::default()
        }
    }

    /// Conversations that got more than one activity, and owners whose conversation got
    /// none, in `accepted` (the bot's count of activities per conversation).
    pub fn duplicates_and_lost(&self, accepted: &HashMap<String, u32>) -> (usize, usize) {
        let duplicates = accepted.values().filter(|c| **c > 1).count();
        let lost = self
            .owners
            .iter()
            .filter(|o| !accepted.contains_key(&self.graph.chat_id_for(o)))
            .count();
        (duplicates, lost)
    }
}

/// Access tokens from the real managed-identity credential against the shared fake
/// identity endpoint.
pub async fn tokens() -> Arc<dyn AccessTokens> {
    let identity = FakeIdentity::shared().await;
    let env = Env([(
        "REMINDERS_CREDENTIAL".to_string(),
        "managed_identity".to_string(),
    )]
    .into_iter()
    .chain(identity.env())
    .collect());
    let credential =
        lookout_reminders::azure::credential(&AzureSettings::from_env(&env).unwrap()).unwrap();
    Arc::new(CredentialTokens::new(credential))
}

/// The built-in templates, French then English.
pub fn renderer() -> Renderer {
    Renderer::new(
        None,
        &["fr".to_string(), "en".to_string()],
        MessageConstants {
            contact: "help@contoso.com".into(),
            signature: "IT".into(),
            grace_days: 30,
            by_language: Default::default(),
            time_zone: chrono_tz::Europe::Paris,
        },
    )
    .unwrap()
}

/// The process's peak resident set size (`VmHWM`) in MB, NaN where unknown.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Prints the benchmark's verdict, its last line.
pub fn verdict(ok: bool) {
    println!("{}", if ok { "PASS" } else { "FAIL" });
}
