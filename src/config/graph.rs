//! Microsoft Graph settings, read once for every part that calls Graph (the Teams bot,
//! e-mail, escalation, the SharePoint source and page publisher): one base URL, one scope.

use super::{ConfigError, Env};
use url::Url;

/// Graph's public endpoint (`REMINDERS_GRAPH_BASE_URL`'s default).
pub(crate) const DEFAULT_GRAPH_BASE_URL: &str = "https://graph.microsoft.com";
/// The Graph token scope (`REMINDERS_GRAPH_SCOPE`'s default).
pub(crate) const DEFAULT_GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Where Graph is and which token it takes, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphSettings {
    /// The base URL (`REMINDERS_GRAPH_BASE_URL`): https, or http to this machine (tests).
    pub base_url: Url,
    /// The token scope (`REMINDERS_GRAPH_SCOPE`).
    pub scope: String,
}

impl Default for GraphSettings {
    fn default() -> Self {
        Self {
            base_url: Url::parse(DEFAULT_GRAPH_BASE_URL).expect("a valid constant URL"),
            scope: DEFAULT_GRAPH_SCOPE.into(),
        }
    }
}

impl GraphSettings {
    /// Reads `REMINDERS_GRAPH_BASE_URL` and `REMINDERS_GRAPH_SCOPE`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let base = env
            .get("REMINDERS_GRAPH_BASE_URL")
            .unwrap_or(DEFAULT_GRAPH_BASE_URL);
        let scope = env
            .get("REMINDERS_GRAPH_SCOPE")
            .unwrap_or(DEFAULT_GRAPH_SCOPE)
            .trim();
        if scope.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "REMINDERS_GRAPH_SCOPE",
                scope,
                "expected one scope like https://graph.microsoft.com/.default",
            ));
        }
        Ok(Self {
            base_url: super::azure::endpoint_url(
                "REMINDERS_GRAPH_BASE_URL",
                base,
                super::azure::AllowHttp::Loopback,
            )?,
            scope: scope.to_string(),
        })
    }

    /// Graph at `base_url` with the default scope (local fakes in tests and benchmarks).
    pub fn at(base_url: &str) -> Result<Self, ConfigError> {
        Self::from_env(&Env([(
            "REMINDERS_GRAPH_BASE_URL".to_string(),
            base_url.to_string(),
        )]
        .into_iter()
        .collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    #[test]
    fn graph_defaults_to_the_public_endpoint_and_its_default_scope() {
        let g = GraphSettings::from_env(&env(&[])).unwrap();
        assert_eq!(g, GraphSettings::default());
        assert_eq!(g.base_url.as_str(), "https://graph.microsoft.com/");
    }

    #[test]
    fn a_graph_url_in_clear_text_to_another_machine_or_with_a_query_is_refused_naming_the_setting()
    {
        for bad in [
            "http://graph.contoso.com",
            "ftp://graph.microsoft.com",
            "https://graph.microsoft.com/?sig=secret",
            "not a url",
        ] {
            let err = GraphSettings::from_env(&env(&[("REMINDERS_GRAPH_BASE_URL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("REMINDERS_GRAPH_BASE_URL"), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let local = GraphSettings::at("http://127.0.0.1:8080/").unwrap();
        assert_eq!(local.base_url.as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn the_graph_scope_is_one_non_empty_scope() {
        let g = GraphSettings::from_env(&env(&[(
            "REMINDERS_GRAPH_SCOPE",
            "https://graph.microsoft.us/.default",
        )]))
        .unwrap();
        assert_eq!(g.scope, "https://graph.microsoft.us/.default");
        // (An empty setting is an unset one: the default.)
        for bad in [
            "a b",
            "https://graph.microsoft.com/.default https://x/.default",
        ] {
            let err = GraphSettings::from_env(&env(&[("REMINDERS_GRAPH_SCOPE", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("REMINDERS_GRAPH_SCOPE"), "{err}");
        }
    }
}
