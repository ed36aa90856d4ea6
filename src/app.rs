//! Wiring: builds the run's [`Deps`] from the [`Config`], shared by the CLI and the server.
//! Each source / ledger / channel kind maps to its implementation here and nowhere else.

use crate::config::{ChannelKind, Config, LedgerSettings};
use crate::deliver::{DeliveryLimits, Notifier, OutboxNotifier};
use crate::graph::GraphClient;
use crate::http::AccessTokens;
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
    /// A caller's choice of source for one run cannot be honoured; `field` names the
    /// request field (`source.blob`…), so the caller gets a 400 saying which.
    #[error("{field}: {reason}")]
    SourceChoice {
        /// The request field.
        field: &'static str,
        /// Why.
        reason: String,
    },
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

/// The process's wiring: the settings, and the parts every run of the process shares,
/// built once (the server keeps one for its lifetime; per-request overrides call it too):
/// - one Azure credential (issue 4), built the first time a part needs it: the Blob source,
///   the Blob ledger, the SharePoint source and the notifier chain share it, so the process
///   asks the identity endpoint once per scope; a configuration with only local parts never
///   builds it;
/// - one set of [`DeliveryLimits`]: a service limits each endpoint, however many of our
///   clients (channels, escalation, a request's own channel choice) call it;
/// - one [`GraphClient`] over those limits, for every Graph caller.
///
/// Each source / ledger / channel kind maps to its implementation here and nowhere else.
pub struct Wiring {
    config: Arc<Config>,
    credential: std::sync::OnceLock<crate::azure::SharedCredential>,
    /// Tests pass their own tokens instead of the configured credential.
    tokens: Option<Arc<dyn AccessTokens>>,
    limits: DeliveryLimits,
    graph: std::sync::OnceLock<GraphClient>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring")
            .field("credential_built", &self.credential.get().is_some())
            .field("graph", &self.graph.get())
            .finish_non_exhaustive()
    }
}

impl Wiring {
    /// The wiring of `config` (nothing built yet).
    pub fn new(config: Config) -> Self {
        Self {
            limits: DeliveryLimits::from_settings(&config.delivery),
            config: Arc::new(config),
            credential: std::sync::OnceLock::new(),
            tokens: None,
            graph: std::sync::OnceLock::new(),
        }
    }

    /// The wiring of `config` whose Graph and Bot Connector calls take tokens from `tokens`
    /// (tests point them at a local identity endpoint).
    pub fn with_tokens(config: Config, tokens: Arc<dyn AccessTokens>) -> Self {
        Self {
            tokens: Some(tokens),
            ..Self::new(config)
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The process's delivery limits.
    pub fn limits(&self) -> &DeliveryLimits {
        &self.limits
    }

    /// The shared credential, built on first use.
    fn credential(&self) -> Result<crate::azure::SharedCredential, WiringError> {
        if let Some(shared) = self.credential.get() {
            return Ok(shared.clone());
        }
        let shared = crate::azure::SharedCredential::from_settings(&self.config.azure)
            .map_err(|e| WiringError::Other(e.to_string()))?;
        Ok(self.credential.get_or_init(|| shared).clone())
    }

    /// The tokens of the Graph and Bot Connector callers.
    fn tokens(&self) -> Result<Arc<dyn AccessTokens>, WiringError> {
        match &self.tokens {
            Some(t) => Ok(t.clone()),
            None => Ok(self.credential()?.access_tokens()),
        }
    }

    /// The process's one Graph client, built on first use over the shared limits.
    pub fn graph(&self) -> Result<GraphClient, WiringError> {
        if let Some(graph) = self.graph.get() {
            return Ok(graph.clone());
        }
        // Redirects are not followed: the SharePoint download's is followed by hand,
        // without the token; no other Graph call redirects.
        let client = crate::source::SharePointSource::client(&self.config.azure)?;
        let graph = GraphClient::new(
            &self.config.delivery.graph,
            self.tokens()?,
            client,
            self.limits.graph_limits(),
        );
        Ok(self.graph.get_or_init(|| graph).clone())
    }

    /// The configured export source, or the one a caller chose for this run. A caller's
    /// choice is derived from the validated settings of the configured kind, by the same
    /// rule as the setting, and names its request field when refused; the process's
    /// settings are never changed by it.
    pub fn source(&self, choice: Option<&SourceOverride>) -> Result<Arc<dyn Source>, WiringError> {
        use crate::config::SourceSettings;
        let config = &self.config;
        let max_bytes = config.max_export_bytes;
        let refused =
            |field: &'static str, reason: String| WiringError::SourceChoice { field, reason };
        let only_with = |field: &'static str, kind: &str| {
            refused(field, format!("only accepted when REMINDERS_SOURCE={kind}"))
        };
        match (&config.azure.source, choice) {
            (SourceSettings::Local { path }, None) => {
                let path = path.clone().ok_or_else(|| {
                    crate::config::ConfigError::missing(
                        "REMINDERS_EXPORT_PATH",
                        "when REMINDERS_SOURCE=local (or pass --export)",
                    )
                })?;
                Ok(Arc::new(LocalFileSource::new(path, max_bytes)))
            }
            (SourceSettings::Blob(export), None) => Ok(Arc::new(self.blob_source(export)?)),
            (SourceSettings::SharePoint(sharepoint), None) => {
                Ok(Arc::new(self.sharepoint_source(sharepoint)?))
            }
            (SourceSettings::Local { path: configured }, Some(SourceOverride::Path(path))) => {
                // Only files in the configured export's folder (no `..`, no links out of it).
                let folder = configured
                    .as_deref()
                    .and_then(Path::parent)
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let path = crate::source::confined_path(folder, path)
                    .map_err(|reason| refused("source.path", reason))?;
                Ok(Arc::new(LocalFileSource::new(path, max_bytes)))
            }
            // A laptop / test feature: in Azure a caller holding a function key must not be
            // able to make the handler read arbitrary files from the app's disk.
            (_, Some(SourceOverride::Path(_))) => Err(only_with("source.path", "local")),
            (SourceSettings::Blob(export), Some(SourceOverride::Blob(name))) => {
                let export = export
                    .with_blob("source.blob", name)
                    .map_err(|e| refused("source.blob", e.reason()))?;
                Ok(Arc::new(self.blob_source(&export)?))
            }
            (_, Some(SourceOverride::Blob(_))) => Err(only_with("source.blob", "blob")),
            (
                SourceSettings::SharePoint(sharepoint),
                Some(SourceOverride::SharePointPath(path)),
            ) => {
                let sharepoint = sharepoint
                    .with_file_path("source.sharepointPath", path)
                    .map_err(|e| refused("source.sharepointPath", e.reason()))?;
                Ok(Arc::new(self.sharepoint_source(&sharepoint)?))
            }
            (_, Some(SourceOverride::SharePointPath(_))) => {
                Err(only_with("source.sharepointPath", "sharepoint"))
            }
        }
    }

    /// The Blob source reading `export`, with the shared credential.
    fn blob_source(
        &self,
        export: &crate::config::BlobExportSettings,
    ) -> Result<crate::source::BlobSource, WiringError> {
        Ok(crate::source::BlobSource::from_settings_with(
            &self.config.azure,
            export,
            self.credential()?.credential,
            self.config.max_export_bytes,
        )?)
    }

    /// The SharePoint source reading `sharepoint`, through the shared Graph client.
    fn sharepoint_source(
        &self,
        sharepoint: &crate::config::SharePointSettings,
    ) -> Result<crate::source::SharePointSource, WiringError> {
        Ok(crate::source::SharePointSource::from_settings_with(
            &self.config.azure,
            sharepoint,
            self.graph()?,
            self.config.max_export_bytes,
        )?)
    }

    /// The configured [`Stores`].
    pub fn stores(&self) -> Result<Stores, WiringError> {
        let config = &self.config;
        match &config.azure.ledger {
            LedgerSettings::Local { dir, lock_ttl } => {
                let local = Arc::new(
                    LocalLedger::new(dir.clone(), *lock_ttl)
                        .with_retention_days(config.ledger_retention_days),
                );
                Ok(Stores {
                    ledger: local.clone(),
                    reports: local,
                })
            }
            LedgerSettings::Blob(_) => {
                let blob = Arc::new(
                    crate::ledger::BlobLedger::from_settings_with(
                        &config.azure,
                        self.credential()?.credential,
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

    /// The delivery channel(s) `channels`: the first is the primary, the others are tried in
    /// order when it cannot reach an owner. All of them (and escalation) share the process's
    /// limits and Graph client.
    pub fn notifier(&self, channels: &[ChannelKind]) -> Result<Arc<dyn Notifier>, WiringError> {
        use crate::deliver::{
            EmailNotifier, FallbackNotifier, TeamsBotNotifier, WorkflowsNotifier,
        };
        let config = &self.config;
        let kinds: Vec<ChannelKind> = if channels.is_empty() {
            vec![ChannelKind::Outbox]
        } else {
            channels.to_vec()
        };
        let client = || {
            crate::azure::http_client(&config.azure).map_err(|e| WiringError::Other(e.to_string()))
        };
        let mut chain: Vec<Arc<dyn Notifier>> = Vec::new();
        for kind in kinds {
            chain.push(match kind {
                ChannelKind::Outbox => Arc::new(OutboxNotifier::new(config.outbox_dir.clone())),
                ChannelKind::TeamsBot => Arc::new(TeamsBotNotifier::with_graph(
                    &config.delivery,
                    self.graph()?,
                    self.tokens()?,
                    client()?,
                    &self.limits,
                )?),
                ChannelKind::Workflows => Arc::new(WorkflowsNotifier::new_with_limits(
                    &config.delivery,
                    client()?,
                    &self.limits,
                )?),
                ChannelKind::Email => {
                    Arc::new(EmailNotifier::with_graph(&config.delivery, self.graph()?)?)
                }
            });
        }
        Ok(if chain.len() == 1 {
            chain.remove(0)
        } else {
            Arc::new(FallbackNotifier::new(chain))
        })
    }

    /// The security-team digest sender, when `REMINDERS_DIGEST_WEBHOOK_URL` is set.
    fn digest(&self) -> Result<Option<crate::deliver::DigestSender>, WiringError> {
        if self.config.delivery.digest_webhook_url.is_none() {
            return Ok(None);
        }
        let client = crate::azure::http_client(&self.config.azure)
            .map_err(|e| WiringError::Other(e.to_string()))?;
        Ok(crate::deliver::DigestSender::from_settings(
            &self.config.delivery,
            client,
        ))
    }

    /// The insights page's publisher (`REMINDERS_REPORT_SHAREPOINT_FOLDER`), `None` when unset.
    fn page_publisher(&self) -> Result<Option<Arc<dyn crate::ledger::PagePublisher>>, WiringError> {
        if self.config.azure.report_sharepoint_folder.is_none() {
            return Ok(None);
        }
        let publisher = crate::source::SharePointPagePublisher::from_settings_with(
            &self.config.azure,
            self.graph()?,
        )
        .map_err(|e| WiringError::Other(e.to_string()))?;
        Ok(publisher.map(|p| Arc::new(p) as Arc<dyn crate::ledger::PagePublisher>))
    }

    /// Builds every part of a run. `source` is `None` for the configured one, or the one a
    /// caller supplies (CLI `--export`).
    pub fn deps(&self, source: Option<Arc<dyn Source>>) -> Result<Deps, WiringError> {
        let config = &self.config;
        let source = match source {
            Some(s) => s,
            None => self.source(None)?,
        };
        let Stores { ledger, reports } = self.stores()?;
        Ok(Deps {
            source,
            notifier: self.notifier(&config.delivery.channels)?,
            ledger,
            reports,
            renderer: Arc::new(renderer(config)?),
            rules: config.rules.clone(),
            cadence: config.cadence.clone(),
            concurrency: config.delivery.concurrency,
            max_owners_per_run: config.delivery.max_owners_per_run,
            verbose: config.verbose,
            digest: self.digest()?.map(Arc::new),
            // A third of the lease, each renewal bounded by that period (job.rs): a renewal
            // that fails or hangs stops new sends well before the lease can lapse.
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
            page_publisher: self.page_publisher()?,
        })
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

/// The ledger and the report store kept beside it: one store, two seams.
pub struct Stores {
    /// Events and the run lock.
    pub ledger: Arc<dyn LedgerStore>,
    /// Run reports.
    pub reports: Arc<dyn ReportStore>,
}

/// The configured export source (the CLI's one-off wiring).
pub fn source(config: &Config) -> Result<Arc<dyn Source>, WiringError> {
    Wiring::new(config.clone()).source(None)
}

/// The configured [`Stores`] (the CLI's one-off wiring).
pub fn stores(config: &Config) -> Result<Stores, WiringError> {
    Wiring::new(config.clone()).stores()
}

/// Builds everything for one run of `config` (the CLI and tests; the server keeps a
/// [`Wiring`]). `source` is `None` for the configured one.
pub fn deps(config: &Config, source: Option<Arc<dyn Source>>) -> Result<Deps, WiringError> {
    Wiring::new(config.clone()).deps(source)
}

/// Settings of a Blob source reading `issues.csv` of container `exports` (unit tests that
/// build a Blob source without fetching from it).
#[cfg(test)]
pub(crate) const BLOB_SOURCE_SETTINGS: [(&str, &str); 5] = [
    ("REMINDERS_SOURCE", "blob"),
    (
        "REMINDERS_BLOB_ACCOUNT_URL",
        "https://contoso.blob.core.windows.net",
    ),
    ("REMINDERS_EXPORT_CONTAINER", "exports"),
    ("REMINDERS_EXPORT_BLOB", "issues.csv"),
    ("REMINDERS_CREDENTIAL", "developer"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::graph::tests::NoTokens;
    use crate::graph::Pace;

    fn wiring(pairs: &[(&str, &str)]) -> Wiring {
        let config = Config::from_env_map(&Env::from_pairs(pairs)).unwrap();
        Wiring::with_tokens(config, Arc::new(NoTokens))
    }

    #[test]
    fn the_wiring_builds_one_graph_client_over_its_limits_for_every_caller() {
        let w = wiring(&[
            ("REMINDERS_CHANNEL", "email"),
            ("REMINDERS_SENDER_MAILBOX", "reminders@contoso.com"),
        ]);
        let first = w.graph().unwrap();
        // A request's own channel choice, built later, gets the same client: same counters.
        w.notifier(&[ChannelKind::Email]).unwrap();
        let again = w.graph().unwrap();
        for pace in [Pace::Directory, Pace::Teams, Pace::Mail] {
            assert!(
                std::ptr::eq(first.http(pace).stats(), again.http(pace).stats()),
                "{pace:?}"
            );
        }
        assert_eq!(
            first.base_url().as_str(),
            "https://graph.microsoft.com/",
            "one Graph setting"
        );
    }

    #[test]
    fn a_callers_source_choice_is_refused_naming_the_request_field() {
        let w = wiring(&[]);
        for (choice, field) in [
            (SourceOverride::Blob("../x.csv".into()), "source.blob"),
            (
                SourceOverride::SharePointPath(" / ".into()),
                "source.sharepointPath",
            ),
        ] {
            match w.source(Some(&choice)) {
                Err(WiringError::SourceChoice { field: f, .. }) => assert_eq!(f, field),
                Err(other) => panic!("{choice:?}: {other}"),
                Ok(_) => panic!("{choice:?} accepted"),
            }
        }
        let blob = wiring(&[
            ("REMINDERS_SOURCE", "blob"),
            (
                "REMINDERS_BLOB_ACCOUNT_URL",
                "https://contoso.blob.core.windows.net",
            ),
            ("REMINDERS_EXPORT_CONTAINER", "exports"),
            ("REMINDERS_EXPORT_BLOB", "issues.csv"),
        ]);
        let err = blob
            .source(Some(&SourceOverride::Path("issues.csv".into())))
            .err()
            .expect("a local path with a Blob source");
        assert_eq!(
            err.to_string(),
            "source.path: only accepted when REMINDERS_SOURCE=local"
        );
    }

    fn blob_wiring() -> Wiring {
        wiring(&BLOB_SOURCE_SETTINGS)
    }

    #[test]
    fn a_requests_blob_is_read_from_the_configured_container_and_the_process_settings_stay() {
        let w = blob_wiring();
        let before = w.config().azure.source.clone();
        let chosen = w
            .source(Some(&SourceOverride::Blob("/lookout/other.csv".into())))
            .unwrap();
        assert!(
            chosen.describe().contains("/exports/lookout/other.csv"),
            "{}",
            chosen.describe()
        );
        // Neither the settings nor the configured source changed for the next run.
        assert_eq!(w.config().azure.source, before);
        let configured = w.source(None).unwrap();
        assert!(
            configured.describe().contains("/exports/issues.csv"),
            "{}",
            configured.describe()
        );
    }

    #[test]
    fn a_requests_bad_blob_name_is_refused_naming_the_field_and_hiding_a_pasted_token() {
        let w = blob_wiring();
        for bad in [
            "../x.csv",
            " ",
            "a/../../b.csv",
            "x.csv?sv=1&sig=PASTEDSECRET",
        ] {
            match w.source(Some(&SourceOverride::Blob(bad.into()))) {
                Err(
                    e @ WiringError::SourceChoice {
                        field: "source.blob",
                        ..
                    },
                ) => {
                    assert!(!e.to_string().contains("PASTEDSECRET"), "{e}");
                    assert!(e.to_string().starts_with("source.blob: "), "{e}");
                }
                Err(other) => panic!("{bad}: {other}"),
                Ok(_) => panic!("{bad} accepted"),
            }
        }
    }

    #[test]
    fn a_request_can_only_choose_another_file_of_the_configured_kind_of_source() {
        let w = blob_wiring();
        let err = w
            .source(Some(&SourceOverride::SharePointPath(
                "General/a.xlsx".into(),
            )))
            .err()
            .expect("a SharePoint path with a Blob source");
        assert_eq!(
            err.to_string(),
            "source.sharepointPath: only accepted when REMINDERS_SOURCE=sharepoint"
        );
        let err = wiring(&[])
            .source(Some(&SourceOverride::Blob("a.csv".into())))
            .err()
            .expect("a blob with a local source");
        assert_eq!(
            err.to_string(),
            "source.blob: only accepted when REMINDERS_SOURCE=blob"
        );
    }
}
