//! Logs through `tracing`: readable text on a terminal, JSON lines under the Functions host
//! (the host captures stdout into Application Insights). Level from `RUST_LOG`.

use tracing_subscriber::{fmt, EnvFilter};

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
        match std::env::var("REMINDERS_LOG_FORMAT").ok().as_deref().map(str::trim) {
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            _ if std::env::var_os("FUNCTIONS_CUSTOMHANDLER_PORT").is_some() => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Installs the global subscriber once; later calls do nothing. Logs go to stderr so that
/// `--json` output on stdout stays clean.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,azure_core=warn,azure_identity=warn"));
    let _ = match format {
        LogFormat::Json => fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Text => fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init(),
    };
}
