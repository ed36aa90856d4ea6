//! Device models that can no longer install a current OS (operator-editable data file).

use serde::{Deserialize, Serialize};

/// The built-in list, `data/end-of-support.json`, embedded so every deployment has it.
const BUILTIN: &str = include_str!("../data/end-of-support.json");

/// One model and the last major OS version it supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportEnd {
    /// Model as the export names it (`iPhone 7`).
    pub model: String,
    /// Last OS it can install (`iOS 15`).
    pub last_os: String,
}

/// The list, with where it comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOfSupport {
    /// Where the list comes from.
    #[serde(default)]
    pub source: String,
    /// When it was compiled.
    #[serde(default)]
    pub compiled_on: String,
    /// The models.
    pub models: Vec<SupportEnd>,
}

/// Case-insensitive, spaces ignored: `IPHONE  7` and `iPhone7` are `iPhone 7`. An iterator,
/// compared as it goes: no lower-cased copy of the model or of the list's entries is made.
fn normalised(model: &str) -> impl Iterator<Item = char> + Clone + '_ {
    model
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
}

impl EndOfSupport {
    /// The built-in list.
    pub fn builtin() -> Self {
        Self::from_json(BUILTIN, "data/end-of-support.json").expect("the built-in list parses")
    }

    /// Reads a list; the error names `origin` and the JSON problem.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, String> {
        let list: Self = serde_json::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        if let Some(bad) = list
            .models
            .iter()
            .find(|m| m.model.trim().is_empty() || m.last_os.trim().is_empty())
        {
            return Err(format!(
                "{origin}: an entry has an empty model or last_os: {bad:?}"
            ));
        }
        Ok(list)
    }

    /// The last OS of `model`, when it is on the list.
    pub fn last_os(&self, model: &str) -> Option<&str> {
        let wanted = normalised(model);
        // An empty (or all-space) model names no model of the list.
        wanted.clone().next()?;
        self.models
            .iter()
            .find(|m| normalised(&m.model).eq(wanted.clone()))
            .map(|m| m.last_os.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_list_names_its_source_and_date_and_knows_the_iphone_7() {
        let list = EndOfSupport::builtin();
        assert!(list.source.contains("Apple"), "{}", list.source);
        assert!(!list.compiled_on.is_empty());
        assert_eq!(list.last_os("iPhone 7"), Some("iOS 15"));
        assert_eq!(list.last_os(" IPAD AIR 2 "), Some("iPadOS 15"));
        assert_eq!(list.last_os("iPhone 7 Plus"), Some("iOS 15"));
        assert_eq!(list.last_os("iPhone 13"), None);
        assert_eq!(list.last_os(""), None);
    }

    #[test]
    fn a_broken_list_is_refused_naming_the_file() {
        let err = EndOfSupport::from_json(
            "{\"models\": [{\"model\": \"\", \"last_os\": \"x\"}]}",
            "eos.json",
        )
        .unwrap_err();
        assert!(err.contains("eos.json"), "{err}");
        let err = EndOfSupport::from_json("not json", "eos.json").unwrap_err();
        assert!(err.contains("eos.json"), "{err}");
    }
}
