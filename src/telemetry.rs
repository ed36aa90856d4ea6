//! Logs through `tracing`: readable text on a terminal, JSON lines under the Functions host
//! (the host captures the handler's output into Application Insights). Level from `RUST_LOG`.
//!
//! Under the host every line of an invocation carries the host's invocation id: the server
//! opens an [`invocation_span`] per request and the JSON lines list every enclosing span's
//! fields, so a line logged deep in a run still names its invocation.

use tracing::Span;
use tracing_subscriber::{fmt, EnvFilter};

/// The header holding the host's invocation id.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// The header holding the host's version.
pub const HOST_VERSION_HEADER: &str = "x-azure-functions-hostversion";

/// Log output style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `REMINDERS_LOG_FORMAT` (`text`/`json`), else JSON under the Functions host
    /// (`FUNCTIONS_CUSTOMHANDLER_PORT` set), else text.
    pub fn from_env() -> Self {
        match std::env::var("REMINDERS_LOG_FORMAT")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            _ if std::env::var_os("FUNCTIONS_CUSTOMHANDLER_PORT").is_some() => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }

    /// `json` or `text`, for the start-up line.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// Installs the global subscriber once; later calls do nothing. Logs go to stderr so that
/// `--json` output on stdout stays clean (the host captures stderr as well).
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr);
}

/// [`init`] with another stderr writer (the CLI's, which keeps its progress bar whole).
pub fn init_with_writer<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,azure_core=warn,azure_identity=warn"));
    let _ = match format {
        // The span list (not only the current span) is what puts the invocation id on a
        // line logged inside the nested `run` and `send` spans.
        LogFormat::Json => fmt()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init(),
        LogFormat::Text => fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_target(false)
            .try_init(),
    };
}

/// Whether a header value can be used as an invocation id: the host sends a GUID; anything
/// long or with odd characters is not copied into logs and reports.
pub fn valid_invocation_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether a host version header is safe to log as is: `4.1037.1.23605` (digits, letters,
/// dots, dashes), at most 32 characters. Anything else is dropped, never logged.
pub fn valid_host_version(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 32
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// The span of one host invocation: `function` is the function's name (`function_timer`,
/// `function_http`); fields left empty are not printed.
pub fn invocation_span(
    invocation_id: Option<&str>,
    function: &str,
    host_version: Option<&str>,
) -> Span {
    let span = tracing::info_span!(
        "invocation",
        invocation_id = tracing::field::Empty,
        function = %function,
        host_version = tracing::field::Empty,
    );
    if let Some(id) = invocation_id {
        span.record("invocation_id", id);
    }
    if let Some(v) = host_version {
        span.record("host_version", v);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotted_host_version_is_kept_and_an_injection_is_not() {
        assert!(valid_host_version("4.1037.1.23605"));
        assert!(!valid_host_version("4.1 x=\"y\""));
        assert!(!valid_host_version(""));
        assert!(!valid_host_version(&"9".repeat(33)));
    }

    #[test]
    fn a_guid_is_a_valid_invocation_id_and_an_injection_is_not() {
        assert!(valid_invocation_id("0f4a3a8e-8f5e-4c8b-9a57-0b7c2a1e5d11"));
        assert!(!valid_invocation_id(""));
        assert!(!valid_invocation_id("abc\ninjected line"));
        assert!(!valid_invocation_id(&"a".repeat(65)));
    }
}
