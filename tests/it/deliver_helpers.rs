//! Shared parts of the delivery tests: fake Graph + Bot Connector + identity wiring,
//! rendered reminders, fast retry policies and a log capture.

#![allow(dead_code)]

use crate::fake_bot::FakeBot;
use crate::fake_graph::FakeGraph;
use crate::fake_identity::FakeIdentity;
use chrono::{NaiveDate, TimeZone, Utc};
use lookout_reminders::azure::{AccessTokens, CredentialTokens};
use lookout_reminders::config::{AzureSettings, DeliverySettings, Env};
use lookout_reminders::deliver::OutgoingReminder;
use lookout_reminders::domain::{IssueKind, OwnerEmail, Platform, Risk};
use lookout_reminders::http::RetryPolicy;
use lookout_reminders::plan::{DeviceIssues, IssueKey, IssueLine, PlannedReminder, Stage};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use testkit::delivery::{renderer, CATALOG_APP_ID};
/// The shared mailbox.
pub const SENDER: &str = "reminders@contoso.com";
/// The bot's app id (`REMINDERS_BOT_APP_ID`), which is the client id of the user-assigned
/// managed identity the bot is registered with (`REMINDERS_MANAGED_IDENTITY_CLIENT_ID`): the
/// Bot Connector accepts only tokens issued to it.
pub const BOT_APP_ID: &str = "0b6a7c1e-9a57-4f0e-8d6b-3f2e1d0c9b8a";

/// Azure settings for the user-assigned identity `BOT_APP_ID` at the shared fake endpoint.
pub async fn identity_settings() -> AzureSettings {
    let env = Env([
        ("REMINDERS_CREDENTIAL", "managed_identity"),
        ("REMINDERS_MANAGED_IDENTITY_CLIENT_ID", BOT_APP_ID),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain(FakeIdentity::shared().await.env())
    .collect());
    AzureSettings::from_env(&env).expect("azure settings")
}

/// Tokens through the real managed-identity credential against the shared fake endpoint,
/// wired as the app does (a new credential after a refused token).
pub async fn identity_tokens() -> Arc<dyn AccessTokens> {
    let settings = identity_settings().await;
    Arc::new(CredentialTokens::from_settings(&settings).expect("managed identity credential"))
}

/// Settings pointing at the fakes, with generous pacing.
pub fn settings(graph: &FakeGraph, bot: &FakeBot) -> DeliverySettings {
    DeliverySettings {
        bot_app_id: Some(BOT_APP_ID.into()),
        sender_mailbox: Some(SENDER.into()),
        rate_per_second: 1000.0,
        graph_rate_per_second: 1000.0,
        graph_teams_rate_per_second: 1000.0,
        mail_rate_per_second: 1000.0,
        ..testkit::delivery::aimed_at(graph, bot)
    }
}

/// Short delays so retry tests run in well under a second (Retry-After still honoured).
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        max_retry_after: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        waits: Default::default(),
    }
}

/// The fakes, started.
pub async fn fakes() -> (FakeGraph, FakeBot) {
    (
        FakeGraph::start(CATALOG_APP_ID).await,
        FakeBot::start_for_app(BOT_APP_ID).await,
    )
}

/// A planned reminder for `owner` with one Android app issue `days_left` days from the deadline.
pub fn planned(owner: &str, days_left: i64) -> PlannedReminder {
    let deadline = NaiveDate::from_ymd_opt(2024, 3, 31).unwrap();
    PlannedReminder {
        owner: OwnerEmail::parse(owner).unwrap(),
        stage: if days_left < 0 {
            Stage::Overdue
        } else {
            Stage::First
        },
        escalate: days_left < 0,
        team_told: false,
        devices: vec![DeviceIssues {
            device_model: "SM-A528B".into(),
            platform: Platform::Android,
            lookout_id: Some("dev-1".into()),
            issues: vec![IssueLine {
                key: IssueKey(format!("{owner}/chrome")),
                row: 2,
                lookout_id: Some("dev-1".into()),
                device_model: "SM-A528B".into(),
                platform: Platform::Android,
                kind: IssueKind::VulnerableApp,
                issue: "Chrome(com.android.chrome)".into(),
                app_name: Some("Chrome".into()),
                risk: Risk::High,
                detected: Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap(),
                deadline,
                days_left,
                due: true,
                last_os: None,
            }],
        }],
    }
}

/// A reminder rendered in both languages, ready to send.
pub fn reminder(owner: &str) -> OutgoingReminder {
    let planned = planned(owner, 10);
    let messages = renderer()
        .render_all(&planned, NaiveDate::from_ymd_opt(2024, 3, 21).unwrap())
        .unwrap();
    OutgoingReminder {
        run_id: "run-1".into(),
        reminder: planned,
        messages,
        cached_conversation: None,
        verbose: false,
        allowed_domains: Vec::new(),
    }
}

/// Log lines written while the guard lives (this thread; use current-thread runtimes).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures every log event at TRACE level, spans and fields included.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}
