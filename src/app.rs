//! Wiring: builds the run's [`Deps`] from the [`Config`], shared by the CLI and the server.
//! Each source / ledger / channel kind maps to its implementation here and nowhere else.

use crate::config::{ChannelKind, Config, LedgerKind, SourceKind};
use crate::deliver::{DeliveryLimits, Notifier, OutboxNotifier};
use crate::job::Deps;
use crate::ledger::{LedgerStore, LocalLedger, ReportStore};
use crate::render::{MessageConstants, RenderError, Renderer};
use crate::source::{LocalFileSource, Source};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The run's parts could not be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The templates are broken.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Another part failed to start.
    #[error("{0}")]
    Other(String),
}

// The conversion lives with the wiring that needs it: `azure` is plumbing used by the
// wiring and must not depend on it (that edge once closed a cycle through the whole crate).
impl From<crate::azure::BuildError> for WiringError {
    fn from(e: crate::azure::BuildError) -> Self {
        match e {
            crate::azure::BuildError::Config(c) => WiringError::Config(c),
            other => WiringError::Other(other.to_string()),
        }
    }
}

/// Builds the renderer from the message settings.
pub fn renderer(config: &Config) -> Result<Renderer, RenderError> {
    Renderer::new(
        config.message.templates_dir.as_deref(),
        &config.message.languages,
        MessageConstants {
            contact: config.message.contact_email.clone(),
            signature: config.message.signature.clone(),
            by_language: config.message.by_language.clone(),
            grace_days: config.rules.grace_days,
            time_zone: config.rules.time_zone,
        },
    )
}

/// The process's one Azure credential (issue 4), built the first time a part needs it: the
/// Blob source, the Blob ledger, the SharePoint source and the notifier chain of one
/// [`deps`] share it, so a run asks the identity endpoint once per scope. A configuration
/// with only local parts never builds it.
#[derive(Debug)]
pub struct Credentials {
    settings: crate::config::AzureSettings,
    built: std::sync::OnceLock<crate::azure::SharedCredential>,
}

impl Credentials {
    /// Credentials for `config` (nothing built yet).
    pub fn new(config: &Config) -> Self {
        Self {
            settings: config.azure.clone(),
            built: std::sync::OnceLock::new(),
        }
    }

    /// The shared credential, built on first use.
    pub fn shared(&self) -> Result<crate::azure::SharedCredential, WiringError> {
        if let Some(shared) = self.built.get() {
            return Ok(shared.clone());
        }
        let shared = crate::azure::SharedCredential::from_settings(&self.settings)
            .map_err(|e| WiringError::Other(e.to_string()))?;
        Ok(self.built.get_or_init(|| shared).clone())
    }
}

/// Builds the configured export source.
pub fn source(config: &Config) -> Result<Arc<dyn Source>, WiringError> {
    source_with(config, &Credentials::new(config))
}

/// Builds the configured export source with the process's `credentials`.
pub fn source_with(
    config: &Config,
    credentials: &Credentials,
) -> Result<Arc<dyn Source>, WiringError> {
    match config.azure.source {
        SourceKind::Local => {
            let path = config.export_path.clone().ok_or_else(|| {
                crate::config::ConfigError::missing(
                    "REMINDERS_EXPORT_PATH",
                    "when REMINDERS_SOURCE=local (or pass --export)",
                )
            })?;
            Ok(Arc::new(LocalFileSource::new(
                path,
                config.max_export_bytes,
            )))
        }
        SourceKind::Blob => Ok(Arc::new(crate::source::BlobSource::from_settings_with(
            &config.azure,
            credentials.shared()?.credential,
            config.max_export_bytes,
        )?)),
        SourceKind::SharePoint => Ok(Arc::new(
            crate::source::SharePointSource::from_settings_with(
                &config.azure,
                credentials.shared()?.access_tokens(),
                config.max_export_bytes,
            )?,
        )),
    }
}

/// A source chosen for one run by the caller (the HTTP function's `source` field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceOverride {
    /// A local file; accepted only when the configured source is local (`REMINDERS_SOURCE=local`).
    Path(std::path::PathBuf),
    /// A blob name in the configured container.
    Blob(String),
    /// A file path in the configured SharePoint / Teams library.
    SharePointPath(String),
}

/// Builds a per-run source. Each kind needs its own settings; a kind this deployment is not
/// set up for is refused with a message naming the request field, so the caller gets a 400.
pub fn source_override(
    config: &Config,
    spec: &SourceOverride,
) -> Result<Arc<dyn Source>, WiringError> {
    match spec {
        SourceOverride::Path(path) => {
            // A laptop / test feature: in Azure a caller holding a function key must not be
            // able to make the handler read arbitrary files from the app's disk.
            if config.azure.source != SourceKind::Local {
                return Err(WiringError::Other(
                    "source.path is only accepted when REMINDERS_SOURCE=local".into(),
                ));
            }
            // Only files in the configured export's folder (no `..`, no links out of it).
            let folder = config
                .export_path
                .as_deref()
                .and_then(Path::parent)
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let path = crate::source::confined_path(folder, path).map_err(WiringError::Other)?;
            Ok(Arc::new(LocalFileSource::new(
                path,
                config.max_export_bytes,
            )))
        }
        SourceOverride::Blob(name) => {
            let name = name.trim().trim_start_matches('/');
            if name.is_empty() || name.contains("..") {
                return Err(WiringError::Other(
                    "source.blob: expected a blob name in the configured container".into(),
                ));
            }
            let mut azure = config.azure.clone();
            azure.export_blob = Some(name.to_string());
            azure.export_prefix = None;
            Ok(Arc::new(crate::source::BlobSource::from_settings(
                &azure,
                config.max_export_bytes,
            )?))
        }
        SourceOverride::SharePointPath(path) => {
            let path = path.trim().trim_matches('/');
            if path.is_empty() {
                return Err(WiringError::Other(
                    "source.sharepointPath: expected a file path in the configured library".into(),
                ));
            }
            let mut azure = config.azure.clone();
            azure.sharepoint_file_path = Some(path.to_string());
            Ok(Arc::new(crate::source::SharePointSource::from_settings(
                &azure,
                config.max_export_bytes,
            )?))
        }
    }
}

/// The ledger and the report store kept beside it: one store, two seams.
pub struct Stores {
    /// Events and the run lock.
    pub ledger: Arc<dyn LedgerStore>,
    /// Run reports.
    pub reports: Arc<dyn ReportStore>,
}

/// The configured [`Stores`].
pub fn stores(config: &Config) -> Result<Stores, WiringError> {
    stores_with(config, &Credentials::new(config))
}

/// [`stores`] with the process's `credentials`.
pub fn stores_with(config: &Config, credentials: &Credentials) -> Result<Stores, WiringError> {
    match config.azure.ledger {
        LedgerKind::Local => {
            let local = Arc::new(
                LocalLedger::new(
                    config.state_dir.clone(),
                    Duration::from_secs(config.lock_ttl_minutes * 60),
                )
                .with_retention_days(config.ledger_retention_days),
            );
            Ok(Stores {
                ledger: local.clone(),
                reports: local,
            })
        }
        LedgerKind::Blob => {
            let blob = Arc::new(
                crate::ledger::BlobLedger::from_settings_with(
                    &config.azure,
                    credentials.shared()?.credential,
                )?
                .with_retention_days(config.ledger_retention_days),
            );
            Ok(Stores {
                ledger: blob.clone(),
                reports: blob,
            })
        }
    }
}

/// The channels' access tokens, when a channel needs them (`teams_bot`, `email`): one
/// credential for the whole notifier chain (escalation included), rebuilt after a refused
/// token (see [`crate::azure::SharedCredential`]).
pub fn channel_tokens(
    config: &Config,
    channels: &[ChannelKind],
) -> Result<Option<Arc<dyn crate::azure::AccessTokens>>, WiringError> {
    channel_tokens_with(channels, &Credentials::new(config))
}

/// The channels' access tokens from the process's `credentials`, when a channel needs them.
pub fn channel_tokens_with(
    channels: &[ChannelKind],
    credentials: &Credentials,
) -> Result<Option<Arc<dyn crate::azure::AccessTokens>>, WiringError> {
    let needs_tokens = channels
        .iter()
        .any(|c| matches!(c, ChannelKind::TeamsBot | ChannelKind::Email));
    if !needs_tokens {
        return Ok(None);
    }
    Ok(Some(credentials.shared()?.access_tokens()))
}

/// Builds the configured delivery channel(s).
pub fn notifier(
    config: &Config,
    channels: &[ChannelKind],
) -> Result<Arc<dyn Notifier>, WiringError> {
    notifier_with(config, channels, &Credentials::new(config))
}

/// Builds the configured delivery channel(s) with the process's `credentials`.
pub fn notifier_with(
    config: &Config,
    channels: &[ChannelKind],
    credentials: &Credentials,
) -> Result<Arc<dyn Notifier>, WiringError> {
    notifier_with_tokens(
        config,
        channels,
        channel_tokens_with(channels, credentials)?,
    )
}

/// Builds the delivery channel(s) with the given tokens (tests pass their own): the first
/// channel is the primary, the others are tried in order when it cannot reach an owner.
/// All of them (and escalation) share one set of [`DeliveryLimits`]: a service limits each
/// endpoint, however many of our clients call it.
pub fn notifier_with_tokens(
    config: &Config,
    channels: &[ChannelKind],
    tokens: Option<Arc<dyn crate::azure::AccessTokens>>,
) -> Result<Arc<dyn Notifier>, WiringError> {
    let limits = DeliveryLimits::from_settings(&config.delivery);
    notifier_with_limits(config, channels, tokens, &limits)
}

/// Builds the delivery channel(s) with the given tokens and shared `limits`.
pub fn notifier_with_limits(
    config: &Config,
    channels: &[ChannelKind],
    tokens: Option<Arc<dyn crate::azure::AccessTokens>>,
    limits: &DeliveryLimits,
) -> Result<Arc<dyn Notifier>, WiringError> {
    use crate::deliver::{EmailNotifier, FallbackNotifier, TeamsBotNotifier, WorkflowsNotifier};
    let kinds: Vec<ChannelKind> = if channels.is_empty() {
        vec![ChannelKind::Outbox]
    } else {
        channels.to_vec()
    };
    let client =
        || crate::azure::http_client(&config.azure).map_err(|e| WiringError::Other(e.to_string()));
    let tokens = |kind: ChannelKind| {
        tokens.clone().ok_or_else(|| {
            WiringError::Other(format!(
                "channel {} needs an Azure credential",
                kind.as_str()
            ))
        })
    };
    let mut chain: Vec<Arc<dyn Notifier>> = Vec::new();
    for kind in kinds {
        chain.push(match kind {
            ChannelKind::Outbox => Arc::new(OutboxNotifier::new(config.outbox_dir.clone())),
            ChannelKind::TeamsBot => Arc::new(TeamsBotNotifier::new_with_limits(
                &config.delivery,
                tokens(kind)?,
                client()?,
                limits,
            )?),
            ChannelKind::Workflows => Arc::new(WorkflowsNotifier::new_with_limits(
                &config.delivery,
                client()?,
                limits,
            )?),
            ChannelKind::Email => Arc::new(EmailNotifier::new_with_limits(
                &config.delivery,
                tokens(kind)?,
                client()?,
                limits,
            )?),
        });
    }
    Ok(if chain.len() == 1 {
        chain.remove(0)
    } else {
        Arc::new(FallbackNotifier::new(chain))
    })
}

/// The security-team digest sender, when `REMINDERS_DIGEST_WEBHOOK_URL` is set.
pub fn digest(config: &Config) -> Result<Option<crate::deliver::DigestSender>, WiringError> {
    if config.delivery.digest_webhook_url.is_none() {
        return Ok(None);
    }
    let client =
        crate::azure::http_client(&config.azure).map_err(|e| WiringError::Other(e.to_string()))?;
    Ok(crate::deliver::DigestSender::from_settings(
        &config.delivery,
        client,
    ))
}

/// The insights page's publisher (`REMINDERS_REPORT_SHAREPOINT_FOLDER`), `None` when unset.
pub fn page_publisher_with(
    config: &Config,
    credentials: &Credentials,
) -> Result<Option<Arc<dyn crate::ledger::PagePublisher>>, WiringError> {
    if config.azure.report_sharepoint_folder.is_none() {
        return Ok(None);
    }
    let publisher = crate::source::SharePointPagePublisher::from_settings_with(
        &config.azure,
        credentials.shared()?.access_tokens(),
    )
    .map_err(|e| WiringError::Other(e.to_string()))?;
    Ok(publisher.map(|p| Arc::new(p) as Arc<dyn crate::ledger::PagePublisher>))
}

/// Builds everything. `source` is `None` when the caller supplies one per run (CLI `--export`).
pub fn deps(config: &Config, source: Option<Arc<dyn Source>>) -> Result<Deps, WiringError> {
    // One credential for every Azure part of the run (issue 4).
    let credentials = Credentials::new(config);
    let source = match source {
        Some(s) => s,
        None => source_with(config, &credentials)?,
    };
    let Stores { ledger, reports } = stores_with(config, &credentials)?;
    Ok(Deps {
        source,
        notifier: notifier_with(config, &config.delivery.channels, &credentials)?,
        ledger,
        reports,
        renderer: Arc::new(renderer(config)?),
        rules: config.rules.clone(),
        cadence: config.cadence.clone(),
        concurrency: config.delivery.concurrency,
        max_owners_per_run: config.delivery.max_owners_per_run,
        verbose: config.verbose,
        // A third of the lease, each renewal bounded by that period (job.rs): a renewal
        // that fails or hangs stops new sends well before the lease can lapse.
        digest: digest(config)?.map(Arc::new),
        lock_renew_every: Duration::from_secs(
            u64::from(config.azure.lock_lease_seconds / 3).max(5),
        ),
        // The host runs us from the function app's root, where host.json sets the timeout.
        time_budget: Some(match config.delivery.time_budget_seconds {
            Some(seconds) => Duration::from_secs(seconds),
            None => crate::job::default_time_budget(
                std::fs::read_to_string("host.json").ok().as_deref(),
            ),
        }),
        page_publisher: page_publisher_with(config, &credentials)?,
    })
}
