//! Configuration: app settings / environment variables read in one place, validated at
//! start-up with messages that name the setting. Every setting is documented in the README
//! and `local.settings.json.example`.

mod azure;
mod delivery;
mod graph;

pub(crate) use azure::not_chosen;
pub use azure::{AzureSettings, LedgerSettings};
pub use azure::{
    BlobExportSettings, BlobStateSettings, CredentialKind, SharePointSettings, SourceSettings,
};
pub use azure::{BlobSelector, SiteRef};
pub use delivery::{ChannelKind, DeliverySettings, Secret, DEFAULT_BOT_RATE_PER_SECOND};
pub use graph::GraphSettings;

use crate::domain::IssueKind;
use crate::plan::Cadence;
use crate::policy::{KindRule, Rules};
use std::collections::HashMap;
use std::path::PathBuf;

/// The environment as a map, so tests can pass settings without touching the process env.
#[derive(Clone, Debug, Default)]
pub struct Env(pub HashMap<String, String>);

impl Env {
    /// Settings from name/value pairs (tests, tools).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The process environment.
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    /// A setting, trimmed; empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A setting parsed with `FromStr`, or a default.
    pub(crate) fn parse_or<T: std::str::FromStr>(
        &self,
        name: &str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| ConfigError::invalid(name, v, e)),
        }
    }

    /// A boolean setting (`true/false/1/0/yes/no`).
    pub(crate) fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::invalid(name, v, "expected true or false")),
        }
    }

    /// A comma/semicolon separated list.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split([',', ';'])
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A setting is missing or wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("setting {name}: invalid value '{value}': {reason}")]
    Invalid {
        /// Setting name.
        name: String,
        /// The value (never a secret: secret settings report `<hidden>`).
        value: String,
        /// Why.
        reason: String,
    },
    /// A setting required by another one.
    #[error("setting {name} is required {because}")]
    Missing {
        /// Setting name.
        name: String,
        /// Which choice requires it (`when REMINDERS_SOURCE=blob`).
        because: String,
    },
}

impl ConfigError {
    /// An invalid value.
    pub fn invalid(name: &str, value: &str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            name: name.into(),
            value: value.into(),
            reason: reason.to_string(),
        }
    }

    /// A missing value.
    pub fn missing(name: &str, because: &str) -> Self {
        Self::Missing {
            name: name.into(),
            because: because.into(),
        }
    }

    /// Why the value is refused, without the setting's name: for a request field that
    /// went through a setting's rule, so the caller's message names the field instead.
    pub fn reason(&self) -> String {
        match self {
            Self::Invalid { reason, .. } => reason.clone(),
            Self::Missing { because, .. } => format!("required {because}"),
        }
    }
}

/// Message settings.
#[derive(Clone, Debug)]
pub struct MessageSettings {
    /// Default language (`fr`).
    pub default_language: String,
    /// Languages rendered (default first).
    pub languages: Vec<String>,
    /// Folder with template overrides (files of the same names as `templates/`).
    pub(crate) templates_dir: Option<PathBuf>,
    /// Help-desk address shown in the message.
    pub(crate) contact_email: String,
    /// Signature line (default language).
    pub signature: String,
    /// Contact and signature of each rendered language (`REMINDERS_CONTACT_EMAIL_EN`,
    /// `REMINDERS_SIGNATURE_EN`…), so no message ends in another language's signature.
    pub by_language: std::collections::BTreeMap<String, crate::render::LanguageConstants>,
}

/// Built-in signatures by language: the team's French one and its English translation.
const BUILTIN_SIGNATURES: [(&str, &str); 2] = [
    ("fr", "Votre support de proximité DGP/DCP/HQ/EHP/MyPower"),
    ("en", "Your local IT support DGP/DCP/HQ/EHP/MyPower"),
];

/// The contact and signature of each language: `REMINDERS_SIGNATURE` is in the default
/// language; another language takes `REMINDERS_SIGNATURE_<LANG>` or its built-in signature,
/// and a language with neither is refused rather than signed in the wrong language.
fn language_constants(
    env: &Env,
    default_language: &str,
    languages: &[String],
    contact: &str,
    signature: &str,
) -> Result<std::collections::BTreeMap<String, crate::render::LanguageConstants>, ConfigError> {
    let mut out = std::collections::BTreeMap::new();
    for lang in languages {
        let upper = lang.to_uppercase();
        let contact = env
            .get(&format!("REMINDERS_CONTACT_EMAIL_{upper}"))
            .unwrap_or(contact)
            .to_string();
        let own = env.get(&format!("REMINDERS_SIGNATURE_{upper}"));
        let builtin = BUILTIN_SIGNATURES
            .iter()
            .find(|(l, _)| l == lang)
            .map(|(_, s)| *s);
        let signature = match (own, lang == default_language, builtin) {
            (Some(own), _, _) => own.to_string(),
            (None, true, _) => signature.to_string(),
            (None, false, Some(builtin)) => builtin.to_string(),
            (None, false, None) => {
                return Err(ConfigError::invalid(
                    &format!("REMINDERS_SIGNATURE_{upper}"),
                    "",
                    format!(
                        "is required: messages in '{lang}' would otherwise end with the \
                         signature of the default language '{default_language}'"
                    ),
                ))
            }
        };
        out.insert(
            lang.clone(),
            crate::render::LanguageConstants { contact, signature },
        );
    }
    Ok(out)
}

/// All settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Policy rules.
    pub rules: Rules,
    /// Cadence.
    pub cadence: Cadence,
    /// Message settings.
    pub message: MessageSettings,
    /// Source, ledger and identity (Azure) settings.
    pub azure: AzureSettings,
    /// Delivery channel settings.
    pub delivery: DeliverySettings,
    /// Largest export accepted, bytes.
    pub(crate) max_export_bytes: u64,
    /// Local outbox folder.
    pub(crate) outbox_dir: PathBuf,
    /// Show e-mail addresses in logs.
    pub verbose: bool,
    /// Days the ledger keeps resolved issues and past runs' figures
    /// (`REMINDERS_LEDGER_RETENTION_DAYS`, see `LedgerSnapshot::prune`).
    pub ledger_retention_days: u32,
    /// How long a timer invocation waits for a run in progress (a button press) to finish
    /// before giving up with a failure the host's retry policy runs again.
    pub(crate) timer_lock_wait_seconds: u64,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_map(&Env::from_process())
    }

    /// Reads settings from a map.
    pub fn from_env_map(env: &Env) -> Result<Self, ConfigError> {
        let mut rules = Rules {
            allowed_domains: env.list("REMINDERS_ALLOWED_DOMAINS"),
            ..Rules::default()
        };
        for d in &rules.allowed_domains {
            if !d.contains('.') || d.contains('@') && !d.starts_with('@') {
                return Err(ConfigError::invalid(
                    "REMINDERS_ALLOWED_DOMAINS",
                    d,
                    "expected mail domains like engie.com",
                ));
            }
        }
        rules.grace_days = env.parse_or("REMINDERS_GRACE_DAYS", 30i64)?;
        if !(1..=365).contains(&rules.grace_days) {
            return Err(ConfigError::invalid(
                "REMINDERS_GRACE_DAYS",
                &rules.grace_days.to_string(),
                "must be between 1 and 365",
            ));
        }
        if let Some(tz) = env.get("REMINDERS_TIME_ZONE") {
            rules.time_zone = tz.parse().map_err(|_| {
                ConfigError::invalid(
                    "REMINDERS_TIME_ZONE",
                    tz,
                    "not an IANA time zone (e.g. Europe/Paris)",
                )
            })?;
        }
        let statuses = env.list("REMINDERS_ACTIVE_STATUSES");
        if !statuses.is_empty() {
            rules.active_statuses = statuses;
        }
        let kinds = env.list("REMINDERS_KINDS");
        if !kinds.is_empty() {
            let mut wanted = Vec::new();
            for k in &kinds {
                wanted.push(IssueKind::parse(k).ok_or_else(|| {
                    ConfigError::invalid("REMINDERS_KINDS", k, "expected vulnerable_app, os_out_of_date, security_patch_out_of_date or agent_out_of_date")
                })?);
            }
            rules.kinds.retain(|r: &KindRule| wanted.contains(&r.kind));
        }
        if let Some(path) = env.get("REMINDERS_END_OF_SUPPORT_FILE") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::invalid("REMINDERS_END_OF_SUPPORT_FILE", path, e))?;
            rules.end_of_support = crate::end_of_support::EndOfSupport::from_json(&text, path)
                .map_err(|e| ConfigError::invalid("REMINDERS_END_OF_SUPPORT_FILE", path, e))?;
        }
        if let Some(json) = env.get("REMINDERS_KIND_RULES") {
            rules.kinds = serde_json::from_str(json)
                .map_err(|e| ConfigError::invalid("REMINDERS_KIND_RULES", json, e))?;
        }

        let cadence = Cadence {
            remind_every_days: env.parse_or("REMINDERS_REMIND_EVERY_DAYS", 7i64)?,
            daily_in_last_days: env.parse_or("REMINDERS_DAILY_IN_LAST_DAYS", 5i64)?,
            remind_after_deadline: env.flag("REMINDERS_REMIND_AFTER_DEADLINE", true)?,
            daily_after_deadline_days: env.parse_or("REMINDERS_DAILY_AFTER_DEADLINE_DAYS", 7i64)?,
            team_action_after_days: env.parse_or("REMINDERS_TEAM_ACTION_AFTER_DAYS", 30i64)?,
        };
        for (name, value) in [
            (
                "REMINDERS_DAILY_AFTER_DEADLINE_DAYS",
                cadence.daily_after_deadline_days,
            ),
            (
                "REMINDERS_TEAM_ACTION_AFTER_DAYS",
                cadence.team_action_after_days,
            ),
        ] {
            if value < 0 {
                return Err(ConfigError::invalid(
                    name,
                    &value.to_string(),
                    "must be 0 or more",
                ));
            }
        }
        if cadence.remind_every_days < 1 {
            return Err(ConfigError::invalid(
                "REMINDERS_REMIND_EVERY_DAYS",
                &cadence.remind_every_days.to_string(),
                "must be at least 1",
            ));
        }

        let default_language = env.get("REMINDERS_LANGUAGE").unwrap_or("fr").to_lowercase();
        let mut languages = vec![default_language.clone()];
        for l in env
            .list("REMINDERS_LANGUAGES")
            .into_iter()
            .chain(["fr".to_string(), "en".to_string()])
        {
            let l = l.to_lowercase();
            if !languages.contains(&l) {
                languages.push(l);
            }
        }
        let contact_email = env
            .get("REMINDERS_CONTACT_EMAIL")
            .unwrap_or("DGP-DSI-PROXIMITE@engie.com")
            .to_string();
        let signature = env
            .get("REMINDERS_SIGNATURE")
            .map(str::to_string)
            .or_else(|| {
                BUILTIN_SIGNATURES
                    .iter()
                    .find(|(l, _)| *l == default_language)
                    .map(|(_, s)| s.to_string())
            })
            .unwrap_or_else(|| BUILTIN_SIGNATURES[0].1.to_string());
        let by_language = language_constants(
            env,
            &default_language,
            &languages,
            &contact_email,
            &signature,
        )?;
        let message = MessageSettings {
            default_language,
            languages,
            templates_dir: env.get("REMINDERS_TEMPLATES_DIR").map(PathBuf::from),
            contact_email,
            signature,
            by_language,
        };

        let azure = AzureSettings::from_env(env)?;
        let mut delivery = DeliverySettings::from_env(env)?;
        check_bot_identity(&azure, &mut delivery)?;

        Ok(Self {
            rules,
            cadence,
            message,
            azure,
            delivery,
            max_export_bytes: env.parse_or("REMINDERS_MAX_EXPORT_BYTES", 50u64 * 1024 * 1024)?,
            outbox_dir: PathBuf::from(env.get("REMINDERS_OUTBOX_DIR").unwrap_or("outbox")),
            verbose: env.flag("REMINDERS_VERBOSE", false)?,
            timer_lock_wait_seconds: env.parse_or("REMINDERS_TIMER_LOCK_WAIT_SECONDS", 300u64)?,
            // Shorter than the insights page's window would change its figures after a
            // checkpoint; past ten years it is no longer a window.
            ledger_retention_days: match env.parse_or(
                "REMINDERS_LEDGER_RETENTION_DAYS",
                crate::history::DEFAULT_RETENTION_DAYS,
            )? {
                d if !(crate::history::MIN_RETENTION_DAYS..=3650).contains(&d) => {
                    return Err(ConfigError::invalid(
                        "REMINDERS_LEDGER_RETENTION_DAYS",
                        &d.to_string(),
                        format!(
                            "must be from {} (the insights page covers the last {} days) to 3650 (days)",
                            crate::history::MIN_RETENTION_DAYS,
                            crate::history::MIN_RETENTION_DAYS
                        ),
                    ))
                }
                d => d,
            },
        })
    }
}

/// The Bot Connector only accepts tokens of the bot's own identity: with a managed identity
/// that is the user-assigned identity the Azure Bot was created with. Checked at start-up,
/// because otherwise every Teams send fails with 401 (and silently falls back to e-mail).
fn check_bot_identity(
    azure: &AzureSettings,
    delivery: &mut DeliverySettings,
) -> Result<(), ConfigError> {
    if !delivery.channels.contains(&ChannelKind::TeamsBot)
        || azure.credential != CredentialKind::ManagedIdentity
    {
        return Ok(());
    }
    let Some(client_id) = azure.managed_identity_client_id.as_deref() else {
        return Err(ConfigError::missing(
            "REMINDERS_MANAGED_IDENTITY_CLIENT_ID",
            "when REMINDERS_CHANNEL includes teams_bot: the bot authenticates as the user-assigned identity it was created with (or set AZURE_CLIENT_ID)",
        ));
    };
    match delivery.bot_app_id.as_deref() {
        None => delivery.bot_app_id = Some(client_id.to_string()),
        Some(bot) if bot.eq_ignore_ascii_case(client_id) => {}
        Some(bot) => {
            return Err(ConfigError::invalid(
                "REMINDERS_BOT_APP_ID",
                bot,
                format!("must be the managed identity's client id ({client_id}): the Bot Connector only accepts that identity's tokens"),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn defaults_need_no_setting() {
        let c = Config::from_env_map(&Env::default()).unwrap();
        assert_eq!(c.rules.grace_days, 30);
        assert_eq!(c.cadence.remind_every_days, 7);
        assert_eq!(c.message.languages, vec!["fr", "en"]);
        assert!(c.rules.allowed_domains.is_empty());
    }

    #[test]
    fn the_english_message_is_signed_in_english_unless_configured() {
        let c = Config::from_env_map(&env(&[(
            "REMINDERS_SIGNATURE",
            "Votre support de proximité",
        )]))
        .unwrap();
        assert_eq!(
            c.message.by_language["fr"].signature,
            "Votre support de proximité"
        );
        assert_eq!(
            c.message.by_language["en"].signature,
            "Your local IT support DGP/DCP/HQ/EHP/MyPower"
        );
        let c = Config::from_env_map(&env(&[
            ("REMINDERS_SIGNATURE_EN", "The mobile team"),
            ("REMINDERS_CONTACT_EMAIL_EN", "help@example.com"),
        ]))
        .unwrap();
        assert_eq!(c.message.by_language["en"].signature, "The mobile team");
        assert_eq!(c.message.by_language["en"].contact, "help@example.com");
        assert_eq!(
            c.message.by_language["fr"].contact,
            "DGP-DSI-PROXIMITE@engie.com"
        );
    }

    #[test]
    fn a_language_without_a_signature_of_its_own_is_refused() {
        // Built with concat! so the settings-example check does not take this test's
        // made-up language for a setting the deployment needs.
        const SIGNATURE_DE: &str = concat!("REMINDERS_SIGNATURE", "_DE");
        let err = Config::from_env_map(&env(&[("REMINDERS_LANGUAGES", "de")])).unwrap_err();
        assert!(err.to_string().contains(SIGNATURE_DE), "{err}");
        let c = Config::from_env_map(&env(&[
            ("REMINDERS_LANGUAGES", "de"),
            (SIGNATURE_DE, "Ihr IT-Support"),
        ]))
        .unwrap();
        assert_eq!(c.message.by_language["de"].signature, "Ihr IT-Support");
    }

    #[test]
    fn a_negative_post_deadline_window_is_refused() {
        let err = Config::from_env_map(&env(&[("REMINDERS_DAILY_AFTER_DEADLINE_DAYS", "-1")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("REMINDERS_DAILY_AFTER_DEADLINE_DAYS"),
            "{err}"
        );
        let c = Config::from_env_map(&env(&[("REMINDERS_TEAM_ACTION_AFTER_DAYS", "60")])).unwrap();
        assert_eq!(c.cadence.team_action_after_days, 60);
        assert_eq!(c.cadence.daily_after_deadline_days, 7);
    }

    #[test]
    fn an_end_of_support_file_replaces_the_builtin_list_or_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("eos.json");
        std::fs::write(
            &file,
            r#"{"models": [{"model": "Galaxy S8", "last_os": "Android 9"}]}"#,
        )
        .unwrap();
        let path = file.display().to_string();
        let c = Config::from_env_map(&env(&[("REMINDERS_END_OF_SUPPORT_FILE", &path)])).unwrap();
        assert_eq!(
            c.rules.end_of_support.last_os("galaxy s8"),
            Some("Android 9")
        );
        assert_eq!(c.rules.end_of_support.last_os("iPhone 7"), None);
        let missing = dir.path().join("nope.json").display().to_string();
        let err =
            Config::from_env_map(&env(&[("REMINDERS_END_OF_SUPPORT_FILE", &missing)])).unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_END_OF_SUPPORT_FILE"),
            "{err}"
        );
        std::fs::write(&file, "{").unwrap();
        let err =
            Config::from_env_map(&env(&[("REMINDERS_END_OF_SUPPORT_FILE", &path)])).unwrap_err();
        assert!(err.to_string().contains("eos.json"), "{err}");
    }

    #[test]
    fn a_bad_value_names_the_setting() {
        let err = Config::from_env_map(&env(&[("REMINDERS_GRACE_DAYS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("REMINDERS_GRACE_DAYS"), "{err}");
        let err =
            Config::from_env_map(&env(&[("REMINDERS_TIME_ZONE", "Mars/Olympus")])).unwrap_err();
        assert!(err.to_string().contains("REMINDERS_TIME_ZONE"), "{err}");
        let err = Config::from_env_map(&env(&[("REMINDERS_KINDS", "spam")])).unwrap_err();
        assert!(err.to_string().contains("REMINDERS_KINDS"), "{err}");
    }

    #[test]
    fn the_teams_bot_needs_the_user_assigned_identity_it_was_created_with() {
        let base = [
            ("REMINDERS_CHANNEL", "teams_bot"),
            ("REMINDERS_TEAMS_APP_ID", "app"),
            ("REMINDERS_CREDENTIAL", "managed_identity"),
        ];
        let err = Config::from_env_map(&env(&base)).unwrap_err();
        assert!(
            err.to_string()
                .contains("REMINDERS_MANAGED_IDENTITY_CLIENT_ID"),
            "{err}"
        );
        let mut with_id = base.to_vec();
        with_id.push(("REMINDERS_MANAGED_IDENTITY_CLIENT_ID", "abc"));
        let c = Config::from_env_map(&env(&with_id)).unwrap();
        assert_eq!(c.delivery.bot_app_id.as_deref(), Some("abc"));
        with_id.push(("REMINDERS_BOT_APP_ID", "other"));
        let err = Config::from_env_map(&env(&with_id)).unwrap_err();
        assert!(err.to_string().contains("REMINDERS_BOT_APP_ID"), "{err}");
    }

    #[test]
    fn tokens_are_never_sent_over_plain_http_to_another_machine() {
        let err = Config::from_env_map(&env(&[(
            "REMINDERS_GRAPH_BASE_URL",
            "http://graph.contoso.com",
        )]))
        .unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_GRAPH_BASE_URL"),
            "{err}"
        );
        let err = Config::from_env_map(&env(&[(
            "REMINDERS_BOT_SERVICE_URL",
            "http://bot.contoso.com/teams",
        )]))
        .unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_BOT_SERVICE_URL"),
            "{err}"
        );
        assert!(Config::from_env_map(&env(&[(
            "REMINDERS_GRAPH_BASE_URL",
            "http://127.0.0.1:8080"
        )]))
        .is_ok());
        let err = Config::from_env_map(&env(&[("REMINDERS_MAX_OWNERS_PER_RUN", "0")])).unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_MAX_OWNERS_PER_RUN"),
            "{err}"
        );
    }

    #[test]
    fn kinds_can_be_restricted() {
        let c = Config::from_env_map(&env(&[("REMINDERS_KINDS", "os_out_of_date")])).unwrap();
        assert_eq!(c.rules.kinds.len(), 1);
    }
}
