//! Settings of the Azure parts: where the export comes from (local / Blob / SharePoint),
//! where the ledger lives (local / Blob), which credential is used and how HTTP clients
//! reach Azure (extra CA bundle, retries).
//!
//! Each setting is read and validated once, in [`AzureSettings::from_env`], into the type
//! of the kind chosen ([`SourceSettings`], [`LedgerSettings`]); nothing downstream sees a raw
//! string. A request's own export is derived from the validated settings
//! ([`BlobExportSettings::with_blob`], [`SharePointSettings::with_file_path`]) by the same
//! rule as the setting, leaving the process's settings untouched.

use super::{ConfigError, Env};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Where the export comes from, validated: the kind and that kind's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSettings {
    /// A local file (`REMINDERS_EXPORT_PATH`); `None` until the CLI's `--export` or a
    /// request's `source.path` names one.
    Local {
        /// The export's path.
        path: Option<PathBuf>,
    },
    /// Azure Blob Storage.
    Blob(BlobExportSettings),
    /// SharePoint / Teams library through Microsoft Graph.
    SharePoint(SharePointSettings),
}

impl SourceSettings {
    /// The value of `REMINDERS_SOURCE` that chose this kind.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            SourceSettings::Local { .. } => "local",
            SourceSettings::Blob(_) => "blob",
            SourceSettings::SharePoint(_) => "sharepoint",
        }
    }
}

/// Where the ledger, lock and reports live, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerSettings {
    /// A local folder.
    Local {
        /// The folder (`REMINDERS_STATE_DIR`, default `state`).
        dir: PathBuf,
        /// Age after which a running run's lock is taken over (`REMINDERS_LOCK_TTL_MINUTES`).
        lock_ttl: Duration,
    },
    /// An Azure Blob container.
    Blob(BlobStateSettings),
}

impl LedgerSettings {
    /// The value of `REMINDERS_LEDGER` that chose this kind.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            LedgerSettings::Local { .. } => "local",
            LedgerSettings::Blob(_) => "blob",
        }
    }
}

/// Which credential authenticates to Azure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// Managed identity (system- or user-assigned).
    ManagedIdentity,
    /// The developer's tools (Azure CLI / azd).
    Developer,
}

/// Default container of the ledger, lock and reports.
pub(crate) const DEFAULT_STATE_CONTAINER: &str = "reminders-state";

/// Azure settings.
#[derive(Clone, Debug)]
pub struct AzureSettings {
    /// Export source (`REMINDERS_SOURCE` and the chosen kind's settings).
    pub source: SourceSettings,
    /// Ledger store (`REMINDERS_LEDGER` and the chosen kind's settings).
    pub ledger: LedgerSettings,
    /// Credential used for Blob Storage and Graph (`REMINDERS_CREDENTIAL`).
    pub credential: CredentialKind,
    /// Whether [`AzureSettings::credential`] was chosen automatically.
    pub(crate) credential_auto: bool,
    /// Client id of a user-assigned managed identity (`REMINDERS_MANAGED_IDENTITY_CLIENT_ID`,
    /// else `AZURE_CLIENT_ID`); `None` = system-assigned.
    pub(crate) managed_identity_client_id: Option<String>,
    /// Extra trusted CA certificates, PEM (`REMINDERS_EXTRA_CA_FILE`).
    pub(crate) extra_ca_file: Option<PathBuf>,
    /// Retries of a failed Azure / Graph call (`REMINDERS_AZURE_MAX_RETRIES`).
    pub(crate) max_retries: u32,
    /// First retry delay, doubled each time (`REMINDERS_AZURE_RETRY_DELAY_MS`).
    pub(crate) retry_delay_ms: u64,
    /// Run-lock lease length in seconds, 15–60 (`REMINDERS_LOCK_LEASE_SECONDS`); also sets
    /// how often a run renews its lock, whichever the ledger.
    pub(crate) lock_lease_seconds: u32,
    /// Folder of the same library the insights page is published to after each live run
    /// (`REMINDERS_REPORT_SHAREPOINT_FOLDER`, e.g. `General/Power Automate/reports`);
    /// only with `REMINDERS_SOURCE=sharepoint`. Trimmed of `/` at both ends.
    pub report_sharepoint_folder: Option<String>,
}

/// Where the Blob export is, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobExportSettings {
    /// `https://<account>.blob.core.windows.net` (no SAS, no path).
    pub account_url: Url,
    /// Container.
    pub container: String,
    /// Exact blob, or the newest under a prefix.
    pub(crate) selector: BlobSelector,
}

impl BlobExportSettings {
    /// The same account and container, reading the blob `name` (a request's `source.blob`):
    /// `name` passes the rule of `REMINDERS_EXPORT_BLOB`, and the error names `field`.
    /// `self` is untouched: the process's settings stay what they were.
    pub(crate) fn with_blob(&self, field: &str, name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            selector: BlobSelector::Name(blob_name(field, name)?),
            ..self.clone()
        })
    }
}

/// Which blob is the export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobSelector {
    /// This exact blob.
    Name(String),
    /// The most recently modified blob whose name starts with this (may be empty).
    NewestUnder(String),
}

/// Where the Blob ledger lives, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobStateSettings {
    /// Account URL.
    pub account_url: Url,
    /// Container.
    pub container: String,
    /// Lease length, seconds.
    pub(crate) lease_seconds: u32,
}

/// How the SharePoint site is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteRef {
    /// Host name and server-relative path (`contoso.sharepoint.com`, `/sites/Mobility`).
    Path {
        /// Host name.
        hostname: String,
        /// Server-relative path, starting with `/`.
        path: String,
    },
    /// A Graph site id.
    Id(String),
}

/// Where the SharePoint export is, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharePointSettings {
    /// The site.
    pub site: SiteRef,
    /// Library name; `None` = the site's default drive.
    pub library: Option<String>,
    /// Path of the file inside the library, without leading `/`.
    pub file_path: String,
}

impl SharePointSettings {
    /// The same site and library, reading the file at `path` (a request's
    /// `source.sharepointPath`): `path` passes the rule of `REMINDERS_SHAREPOINT_FILE_PATH`,
    /// and the error names `field`. `self` is untouched.
    pub(crate) fn with_file_path(&self, field: &str, path: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            file_path: library_path(field, path)?,
            ..self.clone()
        })
    }
}

impl AzureSettings {
    /// Reads `REMINDERS_SOURCE`, `REMINDERS_LEDGER`, the credential and the settings of the
    /// kinds chosen, each validated once into its type (a wrong setting stops start-up).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // Azure Functions (App Service) sets IDENTITY_ENDPOINT; older hosts MSI_ENDPOINT.
        let on_azure = env.get("IDENTITY_ENDPOINT").is_some() || env.get("MSI_ENDPOINT").is_some();
        let (credential, credential_auto) = match env
            .get("REMINDERS_CREDENTIAL")
            .map(|v| v.to_lowercase().replace('-', "_"))
            .as_deref()
        {
            None | Some("auto") => (
                if on_azure {
                    CredentialKind::ManagedIdentity
                } else {
                    CredentialKind::Developer
                },
                true,
            ),
            Some("managed_identity" | "managedidentity" | "msi") => {
                (CredentialKind::ManagedIdentity, false)
            }
            Some("developer" | "azure_cli" | "cli" | "azd") => (CredentialKind::Developer, false),
            Some(v) => {
                return Err(ConfigError::invalid(
                    "REMINDERS_CREDENTIAL",
                    v,
                    "expected auto, managed_identity or developer",
                ))
            }
        };
        let managed_identity_client_id = env
            .get("REMINDERS_MANAGED_IDENTITY_CLIENT_ID")
            .or_else(|| env.get("AZURE_CLIENT_ID"))
            .map(str::to_string);
        let lock_lease_seconds = env.parse_or("REMINDERS_LOCK_LEASE_SECONDS", 60u32)?;
        if !(15..=60).contains(&lock_lease_seconds) {
            return Err(ConfigError::invalid(
                "REMINDERS_LOCK_LEASE_SECONDS",
                &lock_lease_seconds.to_string(),
                "a blob lease lasts between 15 and 60 seconds",
            ));
        }
        let max_retries = env.parse_or("REMINDERS_AZURE_MAX_RETRIES", 4u32)?;
        if max_retries > 20 {
            return Err(ConfigError::invalid(
                "REMINDERS_AZURE_MAX_RETRIES",
                &max_retries.to_string(),
                "must be at most 20",
            ));
        }
        let retry_delay_ms = env.parse_or("REMINDERS_AZURE_RETRY_DELAY_MS", 800u64)?;
        if !(1..=60_000).contains(&retry_delay_ms) {
            return Err(ConfigError::invalid(
                "REMINDERS_AZURE_RETRY_DELAY_MS",
                &retry_delay_ms.to_string(),
                "must be between 1 and 60000",
            ));
        }
        // Checked before the source's own settings: a report folder with another source is
        // the mistake to name first.
        let source_is_sharepoint = env
            .get("REMINDERS_SOURCE")
            .is_some_and(|v| v.eq_ignore_ascii_case("sharepoint"));
        let report_sharepoint_folder = report_sharepoint_folder(env, source_is_sharepoint)?;
        Ok(Self {
            report_sharepoint_folder,
            source: source_settings(env)?,
            ledger: ledger_settings(env, lock_lease_seconds)?,
            credential,
            credential_auto,
            managed_identity_client_id,
            extra_ca_file: env.get("REMINDERS_EXTRA_CA_FILE").map(PathBuf::from),
            max_retries,
            retry_delay_ms,
            lock_lease_seconds,
        })
    }

    /// The Blob export's settings, `None` unless `REMINDERS_SOURCE=blob`.
    pub fn blob_export(&self) -> Option<&BlobExportSettings> {
        match &self.source {
            SourceSettings::Blob(export) => Some(export),
            _ => None,
        }
    }

    /// The SharePoint source's settings, `None` unless `REMINDERS_SOURCE=sharepoint`.
    pub fn sharepoint(&self) -> Option<&SharePointSettings> {
        match &self.source {
            SourceSettings::SharePoint(sharepoint) => Some(sharepoint),
            _ => None,
        }
    }

    /// The Blob ledger's settings, `None` unless `REMINDERS_LEDGER=blob`.
    pub fn blob_state(&self) -> Option<&BlobStateSettings> {
        match &self.ledger {
            LedgerSettings::Blob(state) => Some(state),
            LedgerSettings::Local { .. } => None,
        }
    }

    /// The local export's path (`REMINDERS_EXPORT_PATH`), when the source is local.
    pub fn export_path(&self) -> Option<&std::path::Path> {
        match &self.source {
            SourceSettings::Local { path } => path.as_deref(),
            _ => None,
        }
    }

    /// The credential in words, for start-up logs (never a secret).
    pub fn describe_credential(&self) -> String {
        let how = if self.credential_auto {
            " (chosen automatically; set REMINDERS_CREDENTIAL to override)"
        } else {
            ""
        };
        match (self.credential, &self.managed_identity_client_id) {
            (CredentialKind::ManagedIdentity, None) => {
                format!("system-assigned managed identity{how}")
            }
            (CredentialKind::ManagedIdentity, Some(id)) => {
                format!("user-assigned managed identity, client id {id}{how}")
            }
            (CredentialKind::Developer, _) => {
                format!("developer tools credential (Azure CLI, then azd){how}")
            }
        }
    }
}

/// `REMINDERS_SOURCE` and the chosen kind's settings.
fn source_settings(env: &Env) -> Result<SourceSettings, ConfigError> {
    match env
        .get("REMINDERS_SOURCE")
        .map(str::to_lowercase)
        .as_deref()
    {
        None | Some("local") => Ok(SourceSettings::Local {
            path: env.get("REMINDERS_EXPORT_PATH").map(PathBuf::from),
        }),
        Some("blob") => Ok(SourceSettings::Blob(blob_export(env)?)),
        Some("sharepoint") => Ok(SourceSettings::SharePoint(sharepoint(env)?)),
        Some(v) => Err(ConfigError::invalid(
            "REMINDERS_SOURCE",
            v,
            "expected local, blob or sharepoint",
        )),
    }
}

/// `REMINDERS_LEDGER` and the chosen kind's settings. The state container and the lock
/// TTL are checked whichever the kind: a wrong setting is refused even while unused.
fn ledger_settings(env: &Env, lease_seconds: u32) -> Result<LedgerSettings, ConfigError> {
    let container = env
        .get("REMINDERS_STATE_CONTAINER")
        .unwrap_or(DEFAULT_STATE_CONTAINER)
        .to_string();
    validate_container("REMINDERS_STATE_CONTAINER", &container)?;
    // A running run's lock older than this is taken over: 0 would let runs overlap.
    let lock_ttl_minutes = match env.parse_or("REMINDERS_LOCK_TTL_MINUTES", 120u64)? {
        m if m < 5 => {
            return Err(ConfigError::invalid(
                "REMINDERS_LOCK_TTL_MINUTES",
                &m.to_string(),
                "must be at least 5 (minutes)",
            ))
        }
        m => m,
    };
    match env
        .get("REMINDERS_LEDGER")
        .map(str::to_lowercase)
        .as_deref()
    {
        None | Some("local") => Ok(LedgerSettings::Local {
            dir: PathBuf::from(env.get("REMINDERS_STATE_DIR").unwrap_or("state")),
            lock_ttl: Duration::from_secs(lock_ttl_minutes.saturating_mul(60)),
        }),
        Some("blob") => {
            let (name, url) = match (
                env.get("REMINDERS_STATE_ACCOUNT_URL"),
                env.get("REMINDERS_BLOB_ACCOUNT_URL"),
            ) {
                (Some(u), _) => ("REMINDERS_STATE_ACCOUNT_URL", u),
                (None, Some(u)) => ("REMINDERS_BLOB_ACCOUNT_URL", u),
                (None, None) => {
                    return Err(ConfigError::missing(
                        "REMINDERS_STATE_ACCOUNT_URL",
                        "(or REMINDERS_BLOB_ACCOUNT_URL) when REMINDERS_LEDGER=blob",
                    ))
                }
            };
            Ok(LedgerSettings::Blob(BlobStateSettings {
                account_url: endpoint_url(name, url, AllowHttp::Never)?,
                container,
                lease_seconds,
            }))
        }
        Some(v) => Err(ConfigError::invalid(
            "REMINDERS_LEDGER",
            v,
            "expected local or blob",
        )),
    }
}

/// The Blob export's settings, or an error naming the missing / wrong setting.
fn blob_export(env: &Env) -> Result<BlobExportSettings, ConfigError> {
    let because = "when REMINDERS_SOURCE=blob";
    let url = env
        .get("REMINDERS_BLOB_ACCOUNT_URL")
        .ok_or_else(|| ConfigError::missing("REMINDERS_BLOB_ACCOUNT_URL", because))?;
    let account_url = endpoint_url("REMINDERS_BLOB_ACCOUNT_URL", url, AllowHttp::Never)?;
    let container = env
        .get("REMINDERS_EXPORT_CONTAINER")
        .ok_or_else(|| ConfigError::missing("REMINDERS_EXPORT_CONTAINER", because))?
        .to_string();
    validate_container("REMINDERS_EXPORT_CONTAINER", &container)?;
    // The prefix may be empty ("the newest blob of the container"): read it untrimmed of
    // emptiness, unlike other settings.
    let prefix = env
        .0
        .get("REMINDERS_EXPORT_PREFIX")
        .map(|v| v.trim().to_string());
    let selector = match (env.get("REMINDERS_EXPORT_BLOB"), prefix) {
        (Some(_), Some(prefix)) => {
            return Err(ConfigError::invalid(
                "REMINDERS_EXPORT_PREFIX",
                &prefix,
                "set either REMINDERS_EXPORT_BLOB or REMINDERS_EXPORT_PREFIX, not both",
            ))
        }
        (Some(name), None) => BlobSelector::Name(blob_name("REMINDERS_EXPORT_BLOB", name)?),
        (None, Some(prefix)) => {
            BlobSelector::NewestUnder(prefix.trim_start_matches('/').to_string())
        }
        (None, None) => {
            return Err(ConfigError::missing(
                "REMINDERS_EXPORT_BLOB",
                "(or REMINDERS_EXPORT_PREFIX, possibly empty) when REMINDERS_SOURCE=blob",
            ))
        }
    };
    Ok(BlobExportSettings {
        account_url,
        container,
        selector,
    })
}

/// The one rule for a blob name, from a setting or a request (`field` names it): without
/// leading `/`, not empty, at most 1,024 characters (Blob Storage's limit), no `.` or `..`
/// segment (a client normalises them away and reads another blob), no query string.
fn blob_name(field: &str, raw: &str) -> Result<String, ConfigError> {
    // A blob name with a query string is a pasted URL with a SAS token: a secret in the
    // settings, printed in errors. Refused like a SAS on the account URL, value hidden.
    if raw.contains('?') || raw.to_ascii_lowercase().contains("sig=") {
        return Err(ConfigError::invalid(
            field,
            "<hidden>",
            "must be a blob name, without a query string (no SAS token)",
        ));
    }
    let name = raw.trim().trim_start_matches('/');
    if name.is_empty()
        || name.chars().count() > 1024
        || name.split('/').any(|s| s == "." || s == "..")
    {
        return Err(ConfigError::invalid(
            field,
            raw,
            "expected a blob name in the configured container (1-1024 characters, no '.' or '..' segment)",
        ));
    }
    Ok(name.to_string())
}

/// The one rule for a file path in the SharePoint library, from a setting or a request
/// (`field` names it): trimmed of `/`, not empty, no `.` or `..` segment.
fn library_path(field: &str, raw: &str) -> Result<String, ConfigError> {
    let path = raw.trim().trim_matches('/');
    if path.is_empty() {
        return Err(ConfigError::invalid(
            field,
            raw,
            "expected a file path in the configured library",
        ));
    }
    if path.split('/').any(|s| s.trim() == "." || s.trim() == "..") {
        return Err(ConfigError::invalid(
            field,
            raw,
            "expected a file path in the configured library, without '.' or '..' segments",
        ));
    }
    Ok(path.to_string())
}

/// The SharePoint source's settings, or an error naming the missing / wrong setting.
fn sharepoint(env: &Env) -> Result<SharePointSettings, ConfigError> {
    let hostname = env.get("REMINDERS_SHAREPOINT_HOSTNAME");
    let site = if let Some(id) = env.get("REMINDERS_SHAREPOINT_SITE_ID") {
        SiteRef::Id(id.to_string())
    } else if let (Some(host), Some(path)) = (hostname, env.get("REMINDERS_SHAREPOINT_SITE_PATH")) {
        if host.contains('/') || host.contains(':') {
            return Err(ConfigError::invalid(
                "REMINDERS_SHAREPOINT_HOSTNAME",
                host,
                "expected a host name like contoso.sharepoint.com",
            ));
        }
        SiteRef::Path {
            hostname: host.to_lowercase(),
            path: format!("/{}", path.trim_matches('/')),
        }
    } else if let Some(url) = env.get("REMINDERS_SHAREPOINT_SITE_URL") {
        let parsed = Url::parse(url)
            .map_err(|e| ConfigError::invalid("REMINDERS_SHAREPOINT_SITE_URL", url, e))?;
        let host = parsed
            .host_str()
            .filter(|_| parsed.scheme() == "https")
            .ok_or_else(|| {
                ConfigError::invalid(
                    "REMINDERS_SHAREPOINT_SITE_URL",
                    url,
                    "expected https://<tenant>.sharepoint.com/sites/<site>",
                )
            })?;
        let path = percent_decode(parsed.path().trim_end_matches('/'));
        if path.is_empty() {
            return Err(ConfigError::invalid(
                "REMINDERS_SHAREPOINT_SITE_URL",
                url,
                "the URL has no site path (e.g. /sites/Mobility)",
            ));
        }
        SiteRef::Path {
            hostname: host.to_lowercase(),
            path,
        }
    } else if hostname.is_some() {
        return Err(ConfigError::missing(
            "REMINDERS_SHAREPOINT_SITE_PATH",
            "with REMINDERS_SHAREPOINT_HOSTNAME",
        ));
    } else {
        return Err(ConfigError::missing(
            "REMINDERS_SHAREPOINT_SITE_URL",
            "(or REMINDERS_SHAREPOINT_HOSTNAME + REMINDERS_SHAREPOINT_SITE_PATH, or REMINDERS_SHAREPOINT_SITE_ID) when REMINDERS_SOURCE=sharepoint",
        ));
    };
    let file_path = match env.get("REMINDERS_SHAREPOINT_FILE_PATH") {
        Some(raw) if !raw.trim_matches('/').trim().is_empty() => {
            library_path("REMINDERS_SHAREPOINT_FILE_PATH", raw)?
        }
        _ => {
            return Err(ConfigError::missing(
                "REMINDERS_SHAREPOINT_FILE_PATH",
                "when REMINDERS_SOURCE=sharepoint",
            ))
        }
    };
    Ok(SharePointSettings {
        site,
        library: env.get("REMINDERS_SHAREPOINT_LIBRARY").map(str::to_string),
        file_path,
    })
}

/// The error of a part built for a kind the settings did not choose (`setting` is
/// `REMINDERS_SOURCE` or `REMINDERS_LEDGER`, `wanted` its value for that part).
pub(crate) fn not_chosen(setting: &str, chosen: &str, wanted: &str) -> ConfigError {
    ConfigError::invalid(
        setting,
        chosen,
        format!("this part needs {setting}={wanted}"),
    )
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Whether a URL points at this machine.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether plain `http` is accepted for an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AllowHttp {
    /// Never: Entra ID tokens are only sent over HTTPS (Blob Storage).
    Never,
    /// Only to this machine (local fakes in tests): tokens never cross a network in clear text.
    Loopback,
}

/// Whether a token or secret may travel to `url`: over `https`, or `http` to this machine
/// when `http` allows it (the one loopback rule of the settings).
pub(crate) fn secure_transport(url: &Url, http: AllowHttp) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => http == AllowHttp::Loopback && is_loopback(url),
        _ => false,
    }
}

/// The one rule for an endpoint setting: an absolute URL with a host, without query or
/// fragment, `https` (or `http` to this machine when `http` allows it).
pub(crate) fn endpoint_url(name: &str, value: &str, http: AllowHttp) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim_end_matches('/'))
        .map_err(|e| ConfigError::invalid(name, value, e))?;
    if url.query().is_some() || url.fragment().is_some() {
        // A SAS token in the URL would be a secret in the settings, and is not how the
        // managed identity authenticates.
        return Err(ConfigError::invalid(
            name,
            "<hidden>",
            "must not contain a query string (no SAS token)",
        ));
    }
    match (secure_transport(&url, http), http) {
        (true, _) => {}
        (false, AllowHttp::Never) => {
            return Err(ConfigError::invalid(
                name,
                value,
                "must start with https:// (Entra ID tokens are only sent over HTTPS)",
            ))
        }
        (false, AllowHttp::Loopback) => {
            return Err(ConfigError::invalid(
                name,
                value,
                "must start with https:// (http only for localhost)",
            ))
        }
    }
    if url.host_str().is_none() {
        return Err(ConfigError::invalid(name, value, "has no host"));
    }
    Ok(url)
}

/// Container names: 3–63 characters, lowercase letters, digits and single hyphens.
fn validate_container(name: &str, value: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            name,
            value,
            "a container name has 3-63 lowercase letters, digits or single hyphens",
        ))
    }
}

/// `REMINDERS_REPORT_SHAREPOINT_FOLDER`, validated: only with the SharePoint source (the
/// page goes to the library the export comes from, with the same site grant), a folder path
/// without `..`, `\\` or characters SharePoint refuses in names.
fn report_sharepoint_folder(
    env: &Env,
    source_is_sharepoint: bool,
) -> Result<Option<String>, ConfigError> {
    const NAME: &str = "REMINDERS_REPORT_SHAREPOINT_FOLDER";
    let Some(raw) = env.get(NAME) else {
        return Ok(None);
    };
    let folder = raw.trim().trim_matches('/').to_string();
    if folder.is_empty() {
        return Ok(None);
    }
    if !source_is_sharepoint {
        return Err(ConfigError::invalid(
            NAME,
            raw,
            "the insights page is published to the SharePoint library of the export: set REMINDERS_SOURCE=sharepoint, or leave this setting empty",
        ));
    }
    // SharePoint refuses these in file and folder names; `..` would leave the folder.
    let refused = ['"', '*', ':', '<', '>', '?', '\\', '|', '#', '%'];
    if folder
        .chars()
        .any(|c| refused.contains(&c) || c.is_control())
        || folder
            .split('/')
            .any(|s| s.trim().is_empty() || s == "." || s == "..")
    {
        return Err(ConfigError::invalid(
            NAME,
            raw,
            "expected a folder path in the library such as 'General/Power Automate/reports' (no '..', empty segments or \" * : < > ? \\ | # %)",
        ));
    }
    Ok(Some(folder))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn the_credential_is_the_managed_identity_when_the_host_provides_one() {
        let s = AzureSettings::from_env(&env(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi")]))
            .unwrap();
        assert_eq!(s.credential, CredentialKind::ManagedIdentity);
        assert!(
            s.describe_credential().starts_with("system-assigned"),
            "{}",
            s.describe_credential()
        );
        let s = AzureSettings::from_env(&env(&[])).unwrap();
        assert_eq!(s.credential, CredentialKind::Developer);
        let s = AzureSettings::from_env(&env(&[
            ("REMINDERS_CREDENTIAL", "managed-identity"),
            ("AZURE_CLIENT_ID", "abc"),
        ]))
        .unwrap();
        assert_eq!(s.credential, CredentialKind::ManagedIdentity);
        assert_eq!(
            s.describe_credential(),
            "user-assigned managed identity, client id abc"
        );
    }

    #[test]
    fn the_report_folder_is_refused_naming_it_unless_the_source_is_sharepoint() {
        for source in ["local", "blob"] {
            let err = AzureSettings::from_env(&env(&[
                ("REMINDERS_SOURCE", source),
                (
                    "REMINDERS_BLOB_ACCOUNT_URL",
                    "http://acct.blob.core.windows.net",
                ),
                ("REMINDERS_EXPORT_CONTAINER", "exports"),
                ("REMINDERS_EXPORT_BLOB", "x.csv"),
                ("REMINDERS_REPORT_SHAREPOINT_FOLDER", "General/reports"),
            ]))
            .unwrap_err();
            assert!(
                err.to_string()
                    .contains("REMINDERS_REPORT_SHAREPOINT_FOLDER")
                    && err.to_string().contains("REMINDERS_SOURCE=sharepoint"),
                "{source}: {err}"
            );
        }
        let sharepoint = |folder: &str| {
            AzureSettings::from_env(&env(&[
                ("REMINDERS_SOURCE", "sharepoint"),
                (
                    "REMINDERS_SHAREPOINT_SITE_URL",
                    "https://contoso.sharepoint.com/sites/M",
                ),
                ("REMINDERS_SHAREPOINT_FILE_PATH", "a.xlsx"),
                ("REMINDERS_REPORT_SHAREPOINT_FOLDER", folder),
            ]))
        };
        assert_eq!(
            sharepoint(" /General/Power Automate/reports/ ")
                .unwrap()
                .report_sharepoint_folder
                .as_deref(),
            Some("General/Power Automate/reports")
        );
        assert_eq!(sharepoint("  ").unwrap().report_sharepoint_folder, None);
        for bad in ["General/../secret", "a//b", "re:ports", "a\\b"] {
            let err = sharepoint(bad).unwrap_err().to_string();
            assert!(
                err.contains("REMINDERS_REPORT_SHAREPOINT_FOLDER"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_blob_source_needs_its_settings_and_names_the_missing_one() {
        let err = AzureSettings::from_env(&env(&[("REMINDERS_SOURCE", "blob")])).unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_BLOB_ACCOUNT_URL"),
            "{err}"
        );
        let err = AzureSettings::from_env(&env(&[
            ("REMINDERS_SOURCE", "blob"),
            (
                "REMINDERS_BLOB_ACCOUNT_URL",
                "http://acct.blob.core.windows.net",
            ),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let err = AzureSettings::from_env(&env(&[
            ("REMINDERS_SOURCE", "blob"),
            (
                "REMINDERS_BLOB_ACCOUNT_URL",
                "https://acct.blob.core.windows.net",
            ),
            ("REMINDERS_EXPORT_CONTAINER", "exports"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("REMINDERS_EXPORT_BLOB"), "{err}");
        let err = AzureSettings::from_env(&env(&[
            ("REMINDERS_SOURCE", "blob"),
            (
                "REMINDERS_BLOB_ACCOUNT_URL",
                "https://acct.blob.core.windows.net?sv=2020&sig=SECRET",
            ),
        ]))
        .unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        let err = AzureSettings::from_env(&env(&[
            ("REMINDERS_SOURCE", "blob"),
            (
                "REMINDERS_BLOB_ACCOUNT_URL",
                "https://acct.blob.core.windows.net",
            ),
            ("REMINDERS_EXPORT_CONTAINER", "exports"),
            (
                "REMINDERS_EXPORT_BLOB",
                "today.csv?sv=2022&sig=PASTEDSECRET",
            ),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("REMINDERS_EXPORT_BLOB"), "{err}");
        assert!(!err.to_string().contains("PASTEDSECRET"), "{err}");
        let s = AzureSettings::from_env(&env(&[
            ("REMINDERS_SOURCE", "blob"),
            (
                "REMINDERS_BLOB_ACCOUNT_URL",
                "https://acct.blob.core.windows.net/",
            ),
            ("REMINDERS_EXPORT_CONTAINER", "exports"),
            ("REMINDERS_EXPORT_PREFIX", "lookout/"),
        ]))
        .unwrap();
        assert_eq!(
            s.blob_export().unwrap().selector,
            BlobSelector::NewestUnder("lookout/".into())
        );
    }

    #[test]
    fn a_bad_container_name_is_refused() {
        let err = AzureSettings::from_env(&env(&[("REMINDERS_STATE_CONTAINER", "State_Files")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_STATE_CONTAINER"),
            "{err}"
        );
    }

    #[test]
    fn a_sharepoint_site_url_gives_host_name_and_path() {
        let s = AzureSettings::from_env(&env(&[
            ("REMINDERS_SOURCE", "sharepoint"),
            (
                "REMINDERS_SHAREPOINT_SITE_URL",
                "https://Contoso.sharepoint.com/sites/Mobilit%C3%A9%20DSI/",
            ),
            (
                "REMINDERS_SHAREPOINT_FILE_PATH",
                "/General/Power Automate/issues-export1.xlsx",
            ),
        ]))
        .unwrap();
        let sp = s.sharepoint().unwrap().clone();
        assert_eq!(
            sp.site,
            SiteRef::Path {
                hostname: "contoso.sharepoint.com".into(),
                path: "/sites/Mobilité DSI".into()
            }
        );
        assert_eq!(sp.file_path, "General/Power Automate/issues-export1.xlsx");
        let err = AzureSettings::from_env(&env(&[
            ("REMINDERS_SOURCE", "sharepoint"),
            ("REMINDERS_SHAREPOINT_SITE_ID", "x"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("REMINDERS_SHAREPOINT_FILE_PATH"),
            "{err}"
        );
    }

    #[test]
    fn a_blob_ledger_uses_the_export_account_by_default() {
        let s = AzureSettings::from_env(&env(&[
            ("REMINDERS_LEDGER", "blob"),
            (
                "REMINDERS_BLOB_ACCOUNT_URL",
                "https://acct.blob.core.windows.net",
            ),
        ]))
        .unwrap();
        let st = s.blob_state().unwrap();
        assert_eq!(
            st.account_url.as_str(),
            "https://acct.blob.core.windows.net/"
        );
        assert_eq!(st.container, DEFAULT_STATE_CONTAINER);
        assert_eq!(st.lease_seconds, 60);
    }

    fn blob_source(extra: &[(&str, &str)]) -> Result<AzureSettings, ConfigError> {
        let mut pairs = vec![
            ("REMINDERS_SOURCE", "blob"),
            (
                "REMINDERS_BLOB_ACCOUNT_URL",
                "https://acct.blob.core.windows.net",
            ),
            ("REMINDERS_EXPORT_CONTAINER", "exports"),
        ];
        pairs.extend_from_slice(extra);
        AzureSettings::from_env(&env(&pairs))
    }

    #[test]
    fn a_requests_blob_goes_through_the_settings_rule_naming_the_field_and_changes_nothing_else() {
        let s = blob_source(&[("REMINDERS_EXPORT_PREFIX", "lookout/")]).unwrap();
        let configured = s.blob_export().unwrap().clone();
        let chosen = configured
            .with_blob("source.blob", " /lookout/today.csv")
            .unwrap();
        assert_eq!(
            chosen.selector,
            BlobSelector::Name("lookout/today.csv".into())
        );
        assert_eq!(
            (&chosen.account_url, &chosen.container),
            (&configured.account_url, &configured.container)
        );
        // The settings it came from are still the configured ones.
        assert_eq!(s.blob_export(), Some(&configured));
        assert_eq!(
            configured.selector,
            BlobSelector::NewestUnder("lookout/".into())
        );
        let long = "a".repeat(1025);
        for bad in [
            "",
            " / ",
            "../x.csv",
            "a/./b.csv",
            "a/../../b.csv",
            long.as_str(),
        ] {
            let err = configured.with_blob("source.blob", bad).unwrap_err();
            assert!(err.to_string().contains("source.blob"), "{bad}: {err}");
            assert!(err.reason().contains("blob name"), "{bad}: {err}");
        }
        let err = configured
            .with_blob("source.blob", "x.csv?sv=2022&sig=PASTEDSECRET")
            .unwrap_err();
        assert!(!err.to_string().contains("PASTEDSECRET"), "{err}");
        assert!(err.reason().contains("no SAS token"), "{err}");
        // A name with dots that are not a segment of their own is a name.
        assert!(configured.with_blob("source.blob", "a..b/v1.2.csv").is_ok());
    }

    #[test]
    fn the_export_blob_setting_follows_the_same_rule_as_a_request() {
        let err = blob_source(&[("REMINDERS_EXPORT_BLOB", "exports/../secret.csv")]).unwrap_err();
        assert!(err.to_string().contains("REMINDERS_EXPORT_BLOB"), "{err}");
        let s = blob_source(&[("REMINDERS_EXPORT_BLOB", "/today.csv")]).unwrap();
        assert_eq!(
            s.blob_export().unwrap().selector,
            BlobSelector::Name("today.csv".into())
        );
    }

    #[test]
    fn a_requests_sharepoint_path_goes_through_the_settings_rule_and_changes_nothing_else() {
        let s = AzureSettings::from_env(&env(&[
            ("REMINDERS_SOURCE", "sharepoint"),
            (
                "REMINDERS_SHAREPOINT_SITE_URL",
                "https://contoso.sharepoint.com/sites/M",
            ),
            ("REMINDERS_SHAREPOINT_LIBRARY", "Documents"),
            ("REMINDERS_SHAREPOINT_FILE_PATH", "General/a.xlsx"),
        ]))
        .unwrap();
        let configured = s.sharepoint().unwrap().clone();
        let chosen = configured
            .with_file_path("source.sharepointPath", "/General/b.xlsx/")
            .unwrap();
        assert_eq!(chosen.file_path, "General/b.xlsx");
        assert_eq!(
            (&chosen.site, &chosen.library),
            (&configured.site, &configured.library)
        );
        assert_eq!(s.sharepoint().unwrap().file_path, "General/a.xlsx");
        for bad in ["", " / ", "General/../../x.xlsx", "./x.xlsx"] {
            let err = configured
                .with_file_path("source.sharepointPath", bad)
                .unwrap_err();
            assert!(
                err.to_string().contains("source.sharepointPath"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_part_built_for_a_kind_the_settings_did_not_choose_is_not_there() {
        let s = AzureSettings::from_env(&env(&[])).unwrap();
        assert_eq!(s.source, SourceSettings::Local { path: None });
        assert!(s.blob_export().is_none() && s.sharepoint().is_none() && s.blob_state().is_none());
        assert_eq!(
            s.ledger,
            LedgerSettings::Local {
                dir: PathBuf::from("state"),
                lock_ttl: Duration::from_secs(120 * 60)
            }
        );
        let err = not_chosen("REMINDERS_SOURCE", s.source.kind_name(), "blob").to_string();
        assert!(
            err.contains("REMINDERS_SOURCE") && err.contains("'local'"),
            "{err}"
        );
    }
}
