//! Wiring: builds the run's [`Deps`] from the [`Config`], shared by the CLI and the server.
//! Each source / ledger / channel kind maps to its implementation here and nowhere else.

use crate::config::{ChannelKind, Config, LedgerKind, SourceKind};
use crate::deliver::{Notifier, OutboxNotifier};
use crate::job::Deps;
use crate::ledger::{LedgerStore, LocalLedger};
use crate::render::{MessageConstants, RenderError, Renderer};
use crate::source::{LocalFileSource, Source};
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

/// Builds the renderer from the message settings.
pub fn renderer(config: &Config) -> Result<Renderer, RenderError> {
    Renderer::new(
        config.message.templates_dir.as_deref(),
        &config.message.languages,
        MessageConstants {
            contact: config.message.contact_email.clone(),
            signature: config.message.signature.clone(),
            grace_days: config.rules.grace_days,
        },
    )
}

/// Builds the configured export source.
pub fn source(config: &Config) -> Result<Arc<dyn Source>, WiringError> {
    match config.azure.source {
        SourceKind::Local => {
            let path = config.export_path.clone().ok_or_else(|| {
                crate::config::ConfigError::missing("REMINDERS_EXPORT_PATH", "when REMINDERS_SOURCE=local (or pass --export)")
            })?;
            Ok(Arc::new(LocalFileSource::new(path, config.max_export_bytes)))
        }
        other => Err(WiringError::Other(format!("source {other:?} is not available in this build"))),
    }
}

/// Builds the configured ledger store.
pub fn ledger(config: &Config) -> Result<Arc<dyn LedgerStore>, WiringError> {
    match config.azure.ledger {
        LedgerKind::Local => Ok(Arc::new(LocalLedger::new(
            config.state_dir.clone(),
            Duration::from_secs(config.lock_ttl_minutes * 60),
        ))),
        other => Err(WiringError::Other(format!("ledger {other:?} is not available in this build"))),
    }
}

/// Builds the configured delivery channel(s).
pub fn notifier(config: &Config, channels: &[ChannelKind]) -> Result<Arc<dyn Notifier>, WiringError> {
    match channels.first().copied().unwrap_or(ChannelKind::Outbox) {
        ChannelKind::Outbox => Ok(Arc::new(OutboxNotifier::new(config.outbox_dir.clone()))),
    }
}

/// Builds everything. `source` is `None` when the caller supplies one per run (CLI `--export`).
pub fn deps(config: &Config, source: Option<Arc<dyn Source>>) -> Result<Deps, WiringError> {
    let source = match source {
        Some(s) => s,
        None => self::source(config)?,
    };
    Ok(Deps {
        source,
        notifier: notifier(config, &config.delivery.channels)?,
        ledger: ledger(config)?,
        renderer: Arc::new(renderer(config)?),
        rules: config.rules.clone(),
        cadence: config.cadence.clone(),
        concurrency: config.delivery.concurrency,
        max_owners_per_run: config.delivery.max_owners_per_run,
        verbose: config.verbose,
        lock_renew_every: Duration::from_secs(30),
    })
}
