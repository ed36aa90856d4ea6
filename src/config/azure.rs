//! Settings of the Azure parts: where the export comes from (local / Blob / SharePoint),
//! where the ledger lives (local / Blob), which credential is used and how HTTP clients
//! reach Azure (extra CA bundle, retries).
//!
//! The raw values are read once in [`AzureSettings::from_env`]; the per-kind settings
//! ([`AzureSettings::blob_export`], [`AzureSettings::sharepoint`], [`AzureSettings::blob_state`])
//! are validated there for the kinds chosen, and again when the wiring builds a kind (a CLI
//! flag or an HTTP request may pick another kind than the settings did).

use super::{ConfigError, Env};
use std::path::PathBuf;
use url::Url;

/// Where the export comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A local file (`REMINDERS_EXPORT_PATH`).
    Local,
    /// Azure Blob Storage.
    Blob,
    /// SharePoint / Teams library through Microsoft Graph.
    SharePoint,
}

/// Where the ledger, lock and reports live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerKind {
    /// A local folder (`REMINDERS_STATE_DIR`).
    Local,
    /// An Azure Blob container.
    Blob,
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
pub const DEFAULT_STATE_CONTAINER: &str = "reminders-state";

/// Azure settings.
#[derive(Clone, Debug)]
pub struct AzureSettings {
    /// Export source.
    pub source: SourceKind,
    /// Ledger store.
    pub ledger: LedgerKind,
    /// Credential used for Blob Storage and Graph (`REMINDERS_CREDENTIAL`).
    pub credential: CredentialKind,
    /// Whether [`AzureSettings::credential`] was chosen automatically.
    pub credential_auto: bool,
    /// Client id of a user-assigned managed identity (`REMINDERS_MANAGED_IDENTITY_CLIENT_ID`,
    /// else `AZURE_CLIENT_ID`); `None` = system-assigned.
    pub managed_identity_client_id: Option<String>,
    /// Extra trusted CA certificates, PEM (`REMINDERS_EXTRA_CA_FILE`).
    pub extra_ca_file: Option<PathBuf>,
    /// Retries of a failed Azure / Graph call (`REMINDERS_AZURE_MAX_RETRIES`).
    pub max_retries: u32,
    /// First retry delay, doubled each time (`REMINDERS_AZURE_RETRY_DELAY_MS`).
    pub retry_delay_ms: u64,
    /// Blob account of the export (`REMINDERS_BLOB_ACCOUNT_URL`).
    pub blob_account_url: Option<String>,
    /// Container of the export (`REMINDERS_EXPORT_CONTAINER`).
    pub export_container: Option<String>,
    /// Exact blob name of the export (`REMINDERS_EXPORT_BLOB`).
    pub export_blob: Option<String>,
    /// Prefix: the newest blob under it is the export (`REMINDERS_EXPORT_PREFIX`).
    pub export_prefix: Option<String>,
    /// Blob account of the state (`REMINDERS_STATE_ACCOUNT_URL`, default the export's).
    pub state_account_url: Option<String>,
    /// Container of the ledger, lock and reports (`REMINDERS_STATE_CONTAINER`).
    pub state_container: String,
    /// Run-lock lease length in seconds, 15–60 (`REMINDERS_LOCK_LEASE_SECONDS`).
    pub lock_lease_seconds: u32,
    /// SharePoint site URL (`REMINDERS_SHAREPOINT_SITE_URL`), e.g.
    /// `https://contoso.sharepoint.com/sites/Mobility`.
    pub sharepoint_site_url: Option<String>,
    /// SharePoint host name (`REMINDERS_SHAREPOINT_HOSTNAME`).
    pub sharepoint_hostname: Option<String>,
    /// SharePoint site path (`REMINDERS_SHAREPOINT_SITE_PATH`), e.g. `/sites/Mobility`.
    pub sharepoint_site_path: Option<String>,
    /// Graph site id (`REMINDERS_SHAREPOINT_SITE_ID`), instead of host name + path.
    pub sharepoint_site_id: Option<String>,
    /// Document library name (`REMINDERS_SHAREPOINT_LIBRARY`); default: the site's default drive.
    pub sharepoint_library: Option<String>,
    /// File path inside the library (`REMINDERS_SHAREPOINT_FILE_PATH`).
    pub sharepoint_file_path: Option<String>,
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
    pub selector: BlobSelector,
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
    pub lease_seconds: u32,
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

impl AzureSettings {
    /// Reads `REMINDERS_SOURCE`, `REMINDERS_LEDGER`, the credential and the settings of the
    /// kinds chosen (validated now, so a wrong setting stops start-up).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let source = match env
            .get("REMINDERS_SOURCE")
            .map(str::to_lowercase)
            .as_deref()
        {
            None | Some("local") => SourceKind::Local,
            Some("blob") => SourceKind::Blob,
            Some("sharepoint") => SourceKind::SharePoint,
            Some(v) => {
                return Err(ConfigError::invalid(
                    "REMINDERS_SOURCE",
                    v,
                    "expected local, blob or sharepoint",
                ))
            }
        };
        let ledger = match env
            .get("REMINDERS_LEDGER")
            .map(str::to_lowercase)
            .as_deref()
        {
            None | Some("local") => LedgerKind::Local,
            Some("blob") => LedgerKind::Blob,
            Some(v) => {
                return Err(ConfigError::invalid(
                    "REMINDERS_LEDGER",
                    v,
                    "expected local or blob",
                ))
            }
        };
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
        let owned = |name: &str| env.get(name).map(str::to_string);
        let settings = Self {
            source,
            ledger,
            credential,
            credential_auto,
            managed_identity_client_id,
            extra_ca_file: env.get("REMINDERS_EXTRA_CA_FILE").map(PathBuf::from),
            max_retries,
            retry_delay_ms,
            blob_account_url: owned("REMINDERS_BLOB_ACCOUNT_URL"),
            export_container: owned("REMINDERS_EXPORT_CONTAINER"),
            export_blob: owned("REMINDERS_EXPORT_BLOB"),
            export_prefix: env
                .0
                .get("REMINDERS_EXPORT_PREFIX")
                .map(|v| v.trim().to_string()),
            state_account_url: owned("REMINDERS_STATE_ACCOUNT_URL"),
            state_container: env
                .get("REMINDERS_STATE_CONTAINER")
                .unwrap_or(DEFAULT_STATE_CONTAINER)
                .to_string(),
            lock_lease_seconds,
            sharepoint_site_url: owned("REMINDERS_SHAREPOINT_SITE_URL"),
            sharepoint_hostname: owned("REMINDERS_SHAREPOINT_HOSTNAME"),
            sharepoint_site_path: owned("REMINDERS_SHAREPOINT_SITE_PATH"),
            sharepoint_site_id: owned("REMINDERS_SHAREPOINT_SITE_ID"),
            sharepoint_library: owned("REMINDERS_SHAREPOINT_LIBRARY"),
            sharepoint_file_path: owned("REMINDERS_SHAREPOINT_FILE_PATH"),
            report_sharepoint_folder: report_sharepoint_folder(env, source)?,
        };
        validate_container("REMINDERS_STATE_CONTAINER", &settings.state_container)?;
        match source {
            SourceKind::Blob => drop(settings.blob_export()?),
            SourceKind::SharePoint => drop(settings.sharepoint()?),
            SourceKind::Local => {}
        }
        if ledger == LedgerKind::Blob {
            settings.blob_state()?;
        }
        Ok(settings)
    }

    /// The Blob export's settings, or an error naming the missing / wrong setting.
    pub fn blob_export(&self) -> Result<BlobExportSettings, ConfigError> {
        let because = "when REMINDERS_SOURCE=blob";
        let url = self
            .blob_account_url
            .as_deref()
            .ok_or_else(|| ConfigError::missing("REMINDERS_BLOB_ACCOUNT_URL", because))?;
        let account_url = endpoint_url("REMINDERS_BLOB_ACCOUNT_URL", url, AllowHttp::Never)?;
        let container = self
            .export_container
            .clone()
            .ok_or_else(|| ConfigError::missing("REMINDERS_EXPORT_CONTAINER", because))?;
        validate_container("REMINDERS_EXPORT_CONTAINER", &container)?;
        let selector = match (&self.export_blob, &self.export_prefix) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "REMINDERS_EXPORT_PREFIX",
                    self.export_prefix.as_deref().unwrap_or(""),
                    "set either REMINDERS_EXPORT_BLOB or REMINDERS_EXPORT_PREFIX, not both",
                ))
            }
            // A blob name with a query string is a pasted URL with a SAS token: a secret in
            // the settings, printed in errors. Refused like a SAS on the account URL.
            (Some(name), None)
                if name.contains('?') || name.to_ascii_lowercase().contains("sig=") =>
            {
                return Err(ConfigError::invalid(
                    "REMINDERS_EXPORT_BLOB",
                    "<hidden>",
                    "must be a blob name, without a query string (no SAS token)",
                ))
            }
            (Some(name), None) => BlobSelector::Name(name.trim_start_matches('/').to_string()),
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

    /// The Blob ledger's settings, or an error naming the missing / wrong setting.
    pub fn blob_state(&self) -> Result<BlobStateSettings, ConfigError> {
        let (name, url) = match (&self.state_account_url, &self.blob_account_url) {
            (Some(u), _) => ("REMINDERS_STATE_ACCOUNT_URL", u),
            (None, Some(u)) => ("REMINDERS_BLOB_ACCOUNT_URL", u),
            (None, None) => {
                return Err(ConfigError::missing(
                    "REMINDERS_STATE_ACCOUNT_URL",
                    "(or REMINDERS_BLOB_ACCOUNT_URL) when REMINDERS_LEDGER=blob",
                ))
            }
        };
        Ok(BlobStateSettings {
            account_url: endpoint_url(name, url, AllowHttp::Never)?,
            container: self.state_container.clone(),
            lease_seconds: self.lock_lease_seconds,
        })
    }

    /// The SharePoint source's settings, or an error naming the missing / wrong setting.
    pub fn sharepoint(&self) -> Result<SharePointSettings, ConfigError> {
        let site = if let Some(id) = &self.sharepoint_site_id {
            SiteRef::Id(id.clone())
        } else if let (Some(host), Some(path)) =
            (&self.sharepoint_hostname, &self.sharepoint_site_path)
        {
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
        } else if let Some(url) = &self.sharepoint_site_url {
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
        } else if self.sharepoint_hostname.is_some() {
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
        let file_path = self
            .sharepoint_file_path
            .as_deref()
            .map(|p| p.trim().trim_matches('/').to_string())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                ConfigError::missing(
                    "REMINDERS_SHAREPOINT_FILE_PATH",
                    "when REMINDERS_SOURCE=sharepoint",
                )
            })?;
        Ok(SharePointSettings {
            site,
            library: self.sharepoint_library.clone(),
            file_path,
        })
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

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Whether a URL points at this machine.
pub(crate) fn is_loopback(url: &Url) -> bool {
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
    match (url.scheme(), http) {
        ("https", _) => {}
        ("http", AllowHttp::Loopback) if is_loopback(&url) => {}
        (_, AllowHttp::Never) => {
            return Err(ConfigError::invalid(
                name,
                value,
                "must start with https:// (Entra ID tokens are only sent over HTTPS)",
            ))
        }
        (_, AllowHttp::Loopback) => {
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
fn report_sharepoint_folder(env: &Env, source: SourceKind) -> Result<Option<String>, ConfigError> {
    const NAME: &str = "REMINDERS_REPORT_SHAREPOINT_FOLDER";
    let Some(raw) = env.get(NAME) else {
        return Ok(None);
    };
    let folder = raw.trim().trim_matches('/').to_string();
    if folder.is_empty() {
        return Ok(None);
    }
    if source != SourceKind::SharePoint {
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
        .and_then(|s| s.blob_export().map(|_| s))
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
        let sp = s.sharepoint().unwrap();
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
}
