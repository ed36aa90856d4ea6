//! Set-up shared by the delivery benchmarks (`bench_delivery`, `bench_job_delivery`,
//! `bench_first_run`): the
//! knobs read from the environment, the fake Graph and Bot Connector loaded with N owners,
//! managed-identity tokens from the fake identity endpoint, the Teams settings, the renderer,
//! and the measures (duplicates, losses, peak RSS).
//!
//! `testkit::bench`, used by the examples beside `testkit::fake_*`.

use crate::fake_bot::{FakeBot, RetryAfterStyle};
use crate::fake_graph::FakeGraph;
use crate::fake_identity::FakeIdentity;
use lookout_reminders::azure::{AccessTokens, CredentialTokens};
use lookout_reminders::config::{AzureSettings, DeliverySettings, Env};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// The Teams app id the fake Graph's catalog holds and the settings name.
pub const APP: &str = crate::delivery::CATALOG_APP_ID;

/// The environment variable `name` parsed, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A first-stage reminder for `owner` with one Android OS issue due.
pub fn planned(owner: &str) -> lookout_reminders::plan::PlannedReminder {
    use chrono::{NaiveDate, TimeZone, Utc};
    use lookout_reminders::domain::{IssueKind, OwnerEmail, Platform, Risk};
    use lookout_reminders::plan::{DeviceIssues, IssueKey, IssueLine, PlannedReminder, Stage};
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
        last_os: None,
    };
    PlannedReminder {
        owner: OwnerEmail::parse(owner).unwrap(),
        stage: Stage::First,
        escalate: false,
        team_told: false,
        devices: vec![DeviceIssues {
            device_model: "SM-A528B".into(),
            platform: Platform::Android,
            lookout_id: Some("dev".into()),
            issues: vec![line],
        }],
    }
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
    /// `BENCH_NEW_OWNERS=1`: a first run. No owner has the app installed; Graph's Teams
    /// endpoints are limited to 30/s; the conversations come from the Bot Connector.
    pub new_owners: bool,
}

/// The tenant the benchmarks' bot creates conversations in.
pub const TENANT: &str = "9d2c6f1a-7b3e-4c5d-8e9f-0a1b2c3d4e5f";

impl Knobs {
    /// Reads the knobs from the environment.
    pub fn from_env() -> Knobs {
        Knobs {
            owners: env_or("BENCH_OWNERS", 10_000),
            rate: env_or("BENCH_RATE", 50),
            bot_latency: Duration::from_millis(env_or("BENCH_BOT_LATENCY_MS", 150)),
            graph_latency: Duration::from_millis(env_or("BENCH_GRAPH_LATENCY_MS", 50)),
            new_owners: env_or("BENCH_NEW_OWNERS", 0u8) == 1,
        }
    }

    /// The shortest possible time, in seconds, to send to `n` owners at the bot's rate: one
    /// activity each, plus the conversation creation for new owners (which also need one
    /// Teams-endpoint call each at 30/s, less binding than 2 bot calls at 50/s).
    pub fn floor(&self, n: usize) -> f64 {
        let calls = if self.new_owners { 2.0 } else { 1.0 };
        let bot = calls * n as f64 / f64::from(self.rate);
        if self.new_owners {
            bot.max(n as f64 / 30.0)
        } else {
            bot
        }
    }

    /// The fakes' latencies and limit, for the report's first line.
    pub fn describe(&self) -> String {
        format!(
            "graph {} ms, bot {} ms; bot limit {}/s (429 + Retry-After: 1 beyond){}",
            self.graph_latency.as_millis(),
            self.bot_latency.as_millis(),
            self.rate,
            if self.new_owners {
                "; new owners: Graph Teams endpoints limited to 30/s, conversations created"
            } else {
                ""
            }
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
    /// Their object ids, in the same order.
    pub ids: Vec<String>,
    /// New owners (see [`Knobs::new_owners`]).
    pub new_owners: bool,
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
        if knobs.new_owners {
            // https://learn.microsoft.com/graph/throttling-limits#microsoft-teams-service-limits
            graph.set_teams_rate_limit(30);
            bot.expect_conversation_creation(crate::fake_identity::SYSTEM_ASSIGNED_ID, TENANT);
        }
        let owners: Vec<String> = range.map(owner).collect();
        let mut ids = Vec::with_capacity(owners.len());
        for o in &owners {
            ids.push(graph.add_user(o, Some("en-US")));
            if !knobs.new_owners {
                graph.preinstall(o);
            }
        }
        Fakes {
            graph,
            bot,
            owners,
            ids,
            new_owners: knobs.new_owners,
        }
    }

    /// Teams bot settings aimed at the fakes, the bot limiter at `client_rate` per second.
    /// New owners: the default Graph paces and the bot's and tenant's ids, so the
    /// conversations come from the Bot Connector.
    pub fn settings(&self, client_rate: f64) -> DeliverySettings {
        let base = DeliverySettings {
            rate_per_second: client_rate,
            ..crate::delivery::aimed_at(&self.graph, &self.bot)
        };
        if self.new_owners {
            return DeliverySettings {
                bot_app_id: Some(crate::fake_identity::SYSTEM_ASSIGNED_ID.into()),
                tenant_id: Some(TENANT.into()),
                ..base
            };
        }
        DeliverySettings {
            // Graph is not the resource under test: the lookups per owner must not bound the run.
            graph_rate_per_second: 1000.0,
            graph_teams_rate_per_second: 1000.0,
            ..base
        }
    }

    /// Owners who got more than one activity, and owners who got none, in `accepted` (the
    /// bot's count of activities per conversation), wherever their conversation came from.
    pub fn duplicates_and_lost(&self, accepted: &HashMap<String, u32>) -> (usize, usize) {
        let (mut duplicates, mut lost) = (0, 0);
        for (o, id) in self.owners.iter().zip(&self.ids) {
            let created = self.bot.created_conversation(id);
            let n = created.and_then(|c| accepted.get(&c).copied()).unwrap_or(0)
                + accepted
                    .get(&self.graph.chat_id_for(o))
                    .copied()
                    .unwrap_or(0);
            match n {
                0 => lost += 1,
                1 => {}
                _ => duplicates += 1,
            }
        }
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

pub use crate::delivery::renderer;

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
