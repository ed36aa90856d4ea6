//! Settings of the delivery channels (outbox, Teams bot, Workflows webhook, e-mail, digest):
//! channel chain, endpoints (national clouds, tests), pacing and the safety cap.

use super::{ConfigError, Env};
use std::fmt;

/// A delivery channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// Local folder.
    Outbox,
    /// Teams bot, proactive 1:1 message.
    TeamsBot,
    /// Power Automate "When a Teams webhook request is received" flow.
    Workflows,
    /// E-mail through Graph `sendMail` from a shared mailbox.
    Email,
}

impl ChannelKind {
    /// Reads a channel name.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_lowercase().replace('-', "_").as_str() {
            "outbox" => Some(ChannelKind::Outbox),
            "teams_bot" | "teams" | "bot" => Some(ChannelKind::TeamsBot),
            "workflows" | "workflow" => Some(ChannelKind::Workflows),
            "email" | "mail" => Some(ChannelKind::Email),
            _ => None,
        }
    }

    /// The channel's name, as in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Outbox => "outbox",
            ChannelKind::TeamsBot => "teams_bot",
            ChannelKind::Workflows => "workflows",
            ChannelKind::Email => "email",
        }
    }
}

/// A secret setting (webhook URL with its signature): `Debug` and `Display` print `<hidden>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret (and of its query string) in `text`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.replace(&self.0, "<hidden>");
        if let Some((_, query)) = self.0.split_once('?') {
            if !query.is_empty() {
                out = out.replace(query, "<hidden>");
            }
        }
        out
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Delivery settings.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Primary channel then fallbacks (`REMINDERS_CHANNEL`, default `outbox`).
    pub channels: Vec<ChannelKind>,
    /// Sends in flight at once (`REMINDERS_CONCURRENCY`, default 32).
    pub concurrency: usize,
    /// Refuse to message more owners than this in one run unless forced
    /// (`REMINDERS_MAX_OWNERS_PER_RUN`, default 2000).
    pub max_owners_per_run: usize,
    /// Microsoft Graph: base URL and token scope (`REMINDERS_GRAPH_BASE_URL`,
    /// `REMINDERS_GRAPH_SCOPE`), the one reading of them, used by the channels, escalation
    /// and the SharePoint source alike.
    pub graph: super::GraphSettings,
    /// Bot Connector service URL (`REMINDERS_BOT_SERVICE_URL`, default
    /// `https://smba.trafficmanager.net/teams/`).
    pub bot_service_url: String,
    /// Token scope for the Bot Connector (`REMINDERS_BOT_SCOPE`, default
    /// `https://api.botframework.com/.default`).
    pub bot_scope: String,
    /// The bot's Microsoft App id (`REMINDERS_BOT_APP_ID`): the managed identity's client id.
    pub bot_app_id: Option<String>,
    /// Tenant id (`REMINDERS_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// The Teams app's id in the org catalog (`REMINDERS_TEAMS_APP_ID`), needed by `teams_bot`.
    pub teams_app_id: Option<String>,
    /// Shared mailbox that sends the e-mails (`REMINDERS_SENDER_MAILBOX`), needed by `email`.
    pub sender_mailbox: Option<String>,
    /// Workflows webhook URL (`REMINDERS_WORKFLOWS_URL`, secret, may be a Key Vault reference).
    pub workflows_url: Option<Secret>,
    /// Security-team digest webhook URL (`REMINDERS_DIGEST_WEBHOOK_URL`, secret); no digest when unset.
    pub digest_webhook_url: Option<Secret>,
    /// Bot Connector / webhook requests per second (`REMINDERS_RATE_PER_SECOND`, default 47.5:
    /// 95 % of Teams' documented 50 per app per tenant; the adaptive pace backs off on 429).
    pub rate_per_second: f64,
    /// Graph requests per second outside the Teams endpoints: user and manager lookups
    /// (`REMINDERS_GRAPH_RATE_PER_SECOND`, default 150).
    pub graph_rate_per_second: f64,
    /// Graph Teams endpoints (`…/teamwork/installedApps` and its chat) requests per second
    /// (`REMINDERS_GRAPH_TEAMS_RATE_PER_SECOND`, default 30: Graph's documented Microsoft
    /// Teams service limit per app per tenant).
    pub graph_teams_rate_per_second: f64,
    /// `sendMail` requests per second (`REMINDERS_MAIL_RATE_PER_SECOND`, default 10: Exchange
    /// allows about 10,000 requests per 10 minutes per mailbox, and 4 concurrent).
    pub mail_rate_per_second: f64,
    /// Show owner e-mails in the digest (`REMINDERS_DIGEST_VERBOSE`, default false).
    pub digest_verbose: bool,
    /// Copy escalated reminders (overdue or high risk) to the owner's manager from Graph
    /// (`REMINDERS_ESCALATE_TO_MANAGER`, default false): `cc` on e-mails; for the Teams bot
    /// a copy e-mailed from `REMINDERS_SENDER_MAILBOX` when set, else only reported.
    pub escalate_to_manager: bool,
    /// Seconds one run may spend before it starts no new send
    /// (`REMINDERS_TIME_BUDGET_SECONDS`; unset: `functionTimeout` from `host.json` minus two
    /// minutes, see `job::default_time_budget`).
    pub time_budget_seconds: Option<u64>,
}

/// The Bot Connector pace by default: 95 % of Teams' documented 50 requests/s per app per
/// tenant (https://learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit).
pub const DEFAULT_BOT_RATE_PER_SECOND: f64 = 47.5;

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            channels: vec![ChannelKind::Outbox],
            concurrency: 32,
            max_owners_per_run: 2000,
            graph: super::GraphSettings::default(),
            bot_service_url: "https://smba.trafficmanager.net/teams/".into(),
            bot_scope: "https://api.botframework.com/.default".into(),
            bot_app_id: None,
            tenant_id: None,
            teams_app_id: None,
            sender_mailbox: None,
            workflows_url: None,
            digest_webhook_url: None,
            // 95 % of the documented 50/s: requests paced exactly at a limit counted over a
            // window arrive bunched (network, scheduling) and draw 429s, and each 429 holds
            // every caller for its Retry-After. Measured (bench_job_delivery, 10,000 new
            // owners, fakes enforcing 50/s): 50/s took 1.20x the 400 s floor with 173 429s,
            // 47.5/s took 1.06x with 9.
            rate_per_second: DEFAULT_BOT_RATE_PER_SECOND,
            graph_rate_per_second: 150.0,
            graph_teams_rate_per_second: 30.0,
            mail_rate_per_second: 10.0,
            digest_verbose: false,
            escalate_to_manager: false,
            time_budget_seconds: None,
        }
    }
}

impl DeliverySettings {
    /// Reads the `REMINDERS_*` delivery settings (see the field docs for names and defaults).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Self::default();
        let mut channels = Vec::new();
        for name in env.list("REMINDERS_CHANNEL") {
            let kind = ChannelKind::parse(&name).ok_or_else(|| {
                ConfigError::invalid(
                    "REMINDERS_CHANNEL",
                    &name,
                    "expected outbox, teams_bot, workflows or email",
                )
            })?;
            if !channels.contains(&kind) {
                channels.push(kind);
            }
        }
        if channels.is_empty() {
            channels.push(ChannelKind::Outbox);
        }
        let concurrency = env.parse_or("REMINDERS_CONCURRENCY", d.concurrency)?;
        if concurrency == 0 {
            return Err(ConfigError::invalid(
                "REMINDERS_CONCURRENCY",
                "0",
                "must be greater than zero",
            ));
        }
        let rate = |name: &str, default: f64| -> Result<f64, ConfigError> {
            let r = env.parse_or(name, default)?;
            if !(r > 0.0 && r.is_finite()) {
                return Err(ConfigError::invalid(
                    name,
                    &r.to_string(),
                    "must be greater than zero",
                ));
            }
            Ok(r)
        };
        let s = Self {
            concurrency,
            max_owners_per_run: match env
                .parse_or("REMINDERS_MAX_OWNERS_PER_RUN", d.max_owners_per_run)?
            {
                0 => {
                    return Err(ConfigError::invalid(
                        "REMINDERS_MAX_OWNERS_PER_RUN",
                        "0",
                        "must be greater than zero (it would refuse every run)",
                    ))
                }
                n => n,
            },
            graph: super::GraphSettings::from_env(env)?,
            bot_service_url: base_url(env, "REMINDERS_BOT_SERVICE_URL", &d.bot_service_url)?,
            bot_scope: env
                .get("REMINDERS_BOT_SCOPE")
                .unwrap_or(&d.bot_scope)
                .to_string(),
            bot_app_id: env.get("REMINDERS_BOT_APP_ID").map(str::to_string),
            tenant_id: env.get("REMINDERS_TENANT_ID").map(str::to_string),
            teams_app_id: env.get("REMINDERS_TEAMS_APP_ID").map(str::to_string),
            sender_mailbox: env.get("REMINDERS_SENDER_MAILBOX").map(str::to_string),
            workflows_url: secret_url(env, "REMINDERS_WORKFLOWS_URL")?,
            digest_webhook_url: secret_url(env, "REMINDERS_DIGEST_WEBHOOK_URL")?,
            rate_per_second: rate("REMINDERS_RATE_PER_SECOND", d.rate_per_second)?,
            graph_rate_per_second: rate(
                "REMINDERS_GRAPH_RATE_PER_SECOND",
                d.graph_rate_per_second,
            )?,
            graph_teams_rate_per_second: rate(
                "REMINDERS_GRAPH_TEAMS_RATE_PER_SECOND",
                d.graph_teams_rate_per_second,
            )?,
            mail_rate_per_second: rate("REMINDERS_MAIL_RATE_PER_SECOND", d.mail_rate_per_second)?,
            digest_verbose: env.flag("REMINDERS_DIGEST_VERBOSE", false)?,
            escalate_to_manager: env
                .flag("REMINDERS_ESCALATE_TO_MANAGER", d.escalate_to_manager)?,
            time_budget_seconds: match env.get("REMINDERS_TIME_BUDGET_SECONDS") {
                None => None,
                Some(raw) => match raw.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(ConfigError::invalid(
                            "REMINDERS_TIME_BUDGET_SECONDS",
                            raw,
                            "must be a whole number of seconds greater than zero",
                        ))
                    }
                },
            },
            channels,
        };
        for kind in &s.channels {
            let because = format!("when REMINDERS_CHANNEL includes {}", kind.as_str());
            match kind {
                ChannelKind::TeamsBot if s.teams_app_id.is_none() => {
                    return Err(ConfigError::missing("REMINDERS_TEAMS_APP_ID", &because))
                }
                ChannelKind::Email if s.sender_mailbox.is_none() => {
                    return Err(ConfigError::missing("REMINDERS_SENDER_MAILBOX", &because))
                }
                ChannelKind::Workflows if s.workflows_url.is_none() => {
                    return Err(ConfigError::missing("REMINDERS_WORKFLOWS_URL", &because))
                }
                _ => {}
            }
        }
        // Only the Teams bot and e-mail channels look managers up; a reminder sent through
        // the Workflows webhook or the outbox would go un-escalated without a word, so the
        // combination is refused rather than quietly ignored. (Escalating through Workflows
        // would need the team's flow to accept a second recipient: a flow change.)
        if s.escalate_to_manager {
            if let Some(kind) = s
                .channels
                .iter()
                .find(|k| matches!(k, ChannelKind::Workflows | ChannelKind::Outbox))
            {
                return Err(ConfigError::invalid(
                    "REMINDERS_ESCALATE_TO_MANAGER",
                    "true",
                    format!(
                        "REMINDERS_CHANNEL includes {}, which cannot escalate to managers; use teams_bot or email, or turn escalation off",
                        kind.as_str()
                    ),
                ));
            }
        }
        Ok(s)
    }
}

/// An endpoint setting by the one URL rule ([`super::azure::endpoint_url`]), kept as text
/// without its trailing slash; the bot service URL keeps its path (`/teams`).
fn base_url(env: &Env, name: &str, default: &str) -> Result<String, ConfigError> {
    let raw = env.get(name).unwrap_or(default);
    // Bearer tokens go to this URL: never in clear text over a network.
    super::azure::endpoint_url(name, raw, super::azure::AllowHttp::Loopback)?;
    Ok(raw.trim_end_matches('/').to_string())
}

/// A secret URL: https (http only to localhost, for tests), never echoed in errors.
fn secret_url(env: &Env, name: &str) -> Result<Option<Secret>, ConfigError> {
    let Some(raw) = env.get(name) else {
        return Ok(None);
    };
    if raw.starts_with("@Microsoft.KeyVault(") {
        // The platform resolves Key Vault references before the process starts; seeing one
        // here means it could not (missing access policy / role, wrong secret name).
        return Err(ConfigError::invalid(
            name,
            "<hidden>",
            "the Key Vault reference was not resolved by the platform (check the app's identity has 'Key Vault Secrets User')",
        ));
    }
    let url =
        url::Url::parse(raw).map_err(|_| ConfigError::invalid(name, "<hidden>", "not a URL"))?;
    // The endpoints' transport rule; the query (the webhook's signature) is the secret here.
    if !super::azure::secure_transport(&url, super::azure::AllowHttp::Loopback) {
        return Err(ConfigError::invalid(
            name,
            "<hidden>",
            "expected an https URL",
        ));
    }
    Ok(Some(Secret::new(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_send_to_the_outbox_at_teams_documented_limits() {
        let s = DeliverySettings::from_env(&Env::default()).unwrap();
        assert_eq!(s.channels, vec![ChannelKind::Outbox]);
        assert_eq!(s.graph.base_url.as_str(), "https://graph.microsoft.com/");
        assert_eq!(s.bot_service_url, "https://smba.trafficmanager.net/teams");
        // https://learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit: 50/s,
        // paced just under it.
        assert_eq!(s.rate_per_second, 47.5);
        // https://learn.microsoft.com/graph/throttling-limits#microsoft-teams-service-limits
        assert_eq!(s.graph_teams_rate_per_second, 30.0);
        let refused =
            DeliverySettings::from_env(&env(&[("REMINDERS_GRAPH_TEAMS_RATE_PER_SECOND", "0")]));
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("REMINDERS_GRAPH_TEAMS_RATE_PER_SECOND"));
        assert!(!s.escalate_to_manager);
    }

    #[test]
    fn the_time_budget_is_whole_seconds_above_zero_or_unset() {
        let s = DeliverySettings::from_env(&Env::default()).unwrap();
        assert_eq!(s.time_budget_seconds, None);
        let s =
            DeliverySettings::from_env(&env(&[("REMINDERS_TIME_BUDGET_SECONDS", "300")])).unwrap();
        assert_eq!(s.time_budget_seconds, Some(300));
        for bad in ["0", "-5", "ten", "1.5"] {
            let err = DeliverySettings::from_env(&env(&[("REMINDERS_TIME_BUDGET_SECONDS", bad)]))
                .unwrap_err();
            assert!(
                err.to_string().contains("REMINDERS_TIME_BUDGET_SECONDS"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn escalation_to_the_manager_is_a_flag_named_in_its_error() {
        let s = DeliverySettings::from_env(&env(&[
            ("REMINDERS_ESCALATE_TO_MANAGER", "true"),
            ("REMINDERS_CHANNEL", "email"),
            ("REMINDERS_SENDER_MAILBOX", "it@contoso.com"),
        ]))
        .unwrap();
        assert!(s.escalate_to_manager);
        let err = DeliverySettings::from_env(&env(&[("REMINDERS_ESCALATE_TO_MANAGER", "maybe")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_ESCALATE_TO_MANAGER"),
            "{err}"
        );
    }

    #[test]
    fn a_channel_chain_needs_the_settings_of_each_channel() {
        let err = DeliverySettings::from_env(&env(&[("REMINDERS_CHANNEL", "teams_bot,email")]))
            .unwrap_err();
        assert!(err.to_string().contains("REMINDERS_TEAMS_APP_ID"), "{err}");
        let err = DeliverySettings::from_env(&env(&[
            ("REMINDERS_CHANNEL", "teams_bot,email"),
            ("REMINDERS_TEAMS_APP_ID", "x"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_SENDER_MAILBOX"),
            "{err}"
        );
        let s = DeliverySettings::from_env(&env(&[
            ("REMINDERS_CHANNEL", "teams_bot, email"),
            ("REMINDERS_TEAMS_APP_ID", "x"),
            ("REMINDERS_SENDER_MAILBOX", "noreply@contoso.com"),
        ]))
        .unwrap();
        assert_eq!(s.channels, vec![ChannelKind::TeamsBot, ChannelKind::Email]);
    }

    #[test]
    fn webhook_urls_never_print_and_unresolved_key_vault_references_are_refused() {
        let url = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=SECRETSIG";
        let s = DeliverySettings::from_env(&env(&[
            ("REMINDERS_CHANNEL", "workflows"),
            ("REMINDERS_WORKFLOWS_URL", url),
        ]))
        .unwrap();
        let shown = format!("{s:?} {}", s.workflows_url.as_ref().unwrap());
        assert!(
            !shown.contains("SECRETSIG") && !shown.contains("logic.azure.com"),
            "{shown}"
        );
        assert_eq!(s.workflows_url.as_ref().unwrap().expose(), url);
        let redacted = s
            .workflows_url
            .unwrap()
            .redact(&format!("error sending to {url}"));
        assert!(!redacted.contains("SECRETSIG"), "{redacted}");

        let kv = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/flow/)";
        let err = DeliverySettings::from_env(&env(&[("REMINDERS_WORKFLOWS_URL", kv)])).unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_WORKFLOWS_URL")
                && err.to_string().contains("Key Vault"),
            "{err}"
        );
        let err = DeliverySettings::from_env(&env(&[(
            "REMINDERS_DIGEST_WEBHOOK_URL",
            "http://example.com/?sig=S",
        )]))
        .unwrap_err();
        assert!(!err.to_string().contains("sig=S"), "{err}");
    }
}
