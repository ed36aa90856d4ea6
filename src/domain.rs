//! Domain newtypes validated once at the edge: owner e-mail, risk, platform, issue kind.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// A device owner's e-mail address, trimmed and lower-cased.
///
/// `Display` and `Debug` print the full address: use [`OwnerEmail::pseudonym`] in logs.
/// Shared, not copied: an owner's many rows, issues and report lines hold one address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct OwnerEmail(Arc<str>);

/// Serialised as the plain address, straight from the shared copy (a report of a large
/// export writes tens of thousands of them).
impl Serialize for OwnerEmail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl OwnerEmail {
    /// Validates and normalises an address (`" JM6453@Engie.com "` → `jm6453@engie.com`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        // Addresses are ASCII nearly always: lower-casing them needs no Unicode tables.
        let email = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            trimmed.to_lowercase()
        };
        if email.is_empty() {
            return Err("empty e-mail address".into());
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err(format!("not an e-mail address: '{}'", raw.trim()));
        };
        if local.is_empty()
            || domain.is_empty()
            || !domain.contains('.')
            || domain.contains('@')
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("not an e-mail address: '{}'", raw.trim()));
        }
        Ok(Self(email.into()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The mail domain (`engie.com`).
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map(|(_, d)| d).unwrap_or("")
    }

    /// A stable pseudonym for logs: `owner-` and the first 12 hex digits of SHA-256.
    ///
    /// Stable across runs so an operator can follow one owner through the logs without
    /// the logs holding personal data.
    pub fn pseudonym(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        format!("owner-{}", &hex::encode(digest)[..12])
    }

    /// The address in logs: the pseudonym, or the address itself in verbose mode.
    pub fn for_log(&self, verbose: bool) -> String {
        if verbose {
            self.0.to_string()
        } else {
            self.pseudonym()
        }
    }
}

/// Reads as the address (`owner.ends_with("@engie.com")`, `owner == "a@b.com"`).
impl std::ops::Deref for OwnerEmail {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for OwnerEmail {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for OwnerEmail {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl TryFrom<String> for OwnerEmail {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<OwnerEmail> for String {
    fn from(value: OwnerEmail) -> Self {
        value.0.to_string()
    }
}

impl fmt::Display for OwnerEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: widths and precisions apply as to a `str` (`{:<32}`).
        f.pad(&self.0)
    }
}

impl fmt::Debug for OwnerEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerEmail({})", self.pseudonym())
    }
}

/// Text read from an export, shared rather than copied: the values that repeat over many
/// rows (a model, an issue, a status, a device id) are one allocation each, and a finding,
/// its plan line and its report line hold the same one. Reads as a `&str`; serialised as a
/// plain JSON string.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Arc<str>);

impl Text {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(value: &str) -> Self {
        Self(value.into())
    }
}

impl From<String> for Text {
    fn from(value: String) -> Self {
        Self(value.into())
    }
}

impl From<&String> for Text {
    fn from(value: &String) -> Self {
        Self(value.as_str().into())
    }
}

impl From<Text> for String {
    fn from(value: Text) -> Self {
        value.0.to_string()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        **self == *other.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: widths and precisions apply as to a `str` (`{:<32}`).
        f.pad(&self.0)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}

/// Whether `hay` contains the lower-case ASCII `needle`, ignoring ASCII case, without
/// allocating (called for every row). The same answer as `hay.to_lowercase().contains(needle)`:
/// the only non-ASCII characters that lower-case into ASCII letters are the Kelvin sign (`k`,
/// in no needle) and `İ` (`i` followed by a combining dot, which breaks the match either way).
pub(crate) fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || hay
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Lookout's risk level of an issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Low risk.
    Low,
    /// Moderate (or "Medium") risk.
    Moderate,
    /// High (or "Critical") risk.
    High,
    /// Missing or unrecognised.
    Unknown,
}

impl Risk {
    /// Reads `High`, `Moderate`/`Medium`, `Low`, case-insensitively, also inside longer
    /// text such as the list view's `Active Low Risk`.
    pub fn parse(raw: &str) -> Self {
        let text = raw;
        if contains_ignore_case(text, "high") || contains_ignore_case(text, "critical") {
            Risk::High
        } else if contains_ignore_case(text, "moderate") || contains_ignore_case(text, "medium") {
            Risk::Moderate
        } else if contains_ignore_case(text, "low") {
            Risk::Low
        } else {
            Risk::Unknown
        }
    }

    /// The name used in reports and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Moderate => "moderate",
            Risk::High => "high",
            Risk::Unknown => "unknown",
        }
    }
}

/// The device's operating system family, which decides the instructions shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Android phones and tablets.
    Android,
    /// iPhone and iPad.
    Ios,
    /// Not known: the message shows the instructions for both.
    Unknown,
}

impl Platform {
    /// Reads the export's `Device Platform` (`Android`, `iOS`, `iPadOS`).
    pub fn parse(raw: &str) -> Self {
        let text = raw.trim();
        if contains_ignore_case(text, "android") {
            Platform::Android
        } else if contains_ignore_case(text, "ios")
            || contains_ignore_case(text, "ipados")
            || contains_ignore_case(text, "apple")
        {
            Platform::Ios
        } else {
            Platform::Unknown
        }
    }

    /// Guesses the platform from a device model when the export has no platform column.
    pub fn infer_from_model(model: &str) -> Self {
        let m = model.trim().as_bytes();
        const APPLE: [&str; 3] = ["iphone", "ipad", "ipod"];
        const ANDROID: [&str; 14] = [
            "sm-", "galaxy", "pixel", "moto", "redmi", "xiaomi", "huawei", "oneplus", "nokia",
            "oppo", "vivo", "honor", "xperia", "cph",
        ];
        let starts_with = |p: &&str| {
            m.get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
        };
        if APPLE.iter().any(starts_with) {
            Platform::Ios
        } else if ANDROID.iter().any(starts_with) {
            Platform::Android
        } else {
            Platform::Unknown
        }
    }

    /// The name used in reports and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Android => "android",
            Platform::Ios => "ios",
            Platform::Unknown => "unknown",
        }
    }
}

/// The kinds of issue a reminder is sent for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// A vulnerable / outdated app (Chrome, Edge…).
    VulnerableApp,
    /// The OS version is out of date.
    OsOutOfDate,
    /// The Android security patch level (ASPL) is out of date.
    SecurityPatchOutOfDate,
    /// The Lookout agent is outdated.
    AgentOutOfDate,
}

impl IssueKind {
    /// All kinds, in display order.
    pub const ALL: [IssueKind; 4] = [
        IssueKind::VulnerableApp,
        IssueKind::OsOutOfDate,
        IssueKind::SecurityPatchOutOfDate,
        IssueKind::AgentOutOfDate,
    ];

    /// The configuration / report name (`vulnerable_app`…).
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::VulnerableApp => "vulnerable_app",
            IssueKind::OsOutOfDate => "os_out_of_date",
            IssueKind::SecurityPatchOutOfDate => "security_patch_out_of_date",
            IssueKind::AgentOutOfDate => "agent_out_of_date",
        }
    }

    /// Reads a configuration name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_emails_are_trimmed_and_lower_cased() {
        let e = OwnerEmail::parse("  JM6453@Engie.COM ").unwrap();
        assert_eq!(e.as_str(), "jm6453@engie.com");
        assert_eq!(e.domain(), "engie.com");
    }

    #[test]
    fn owner_email_without_at_sign_is_refused() {
        assert!(OwnerEmail::parse("JM6453").is_err());
        assert!(OwnerEmail::parse("").is_err());
        assert!(OwnerEmail::parse("a b@c.com").is_err());
        assert!(OwnerEmail::parse("a@b@c.com").is_err());
    }

    #[test]
    fn pseudonym_is_stable_and_hides_the_address() {
        let a = OwnerEmail::parse("jm6453@engie.com").unwrap();
        let b = OwnerEmail::parse("JM6453@engie.com").unwrap();
        assert_eq!(a.pseudonym(), b.pseudonym());
        assert!(!a.pseudonym().contains("jm6453"));
        assert!(!format!("{a:?}").contains("jm6453"));
    }

    #[test]
    fn case_blind_search_agrees_with_lower_casing_on_any_text() {
        let hays = [
            "",
            "HIGH",
            "hIgH risk",
            "Yellow",
            "İOS",
            "\u{212A}ritical",
            "ANDROÏD",
            "iPadOS 17",
            "ŞAMSUNG Android",
            "Ωhigh",
            "hig",
            "ApPlE",
        ];
        for hay in hays {
            for needle in ["high", "critical", "low", "ios", "android", "apple", ""] {
                assert_eq!(
                    contains_ignore_case(hay, needle),
                    hay.to_lowercase().contains(needle),
                    "{hay:?} / {needle:?}"
                );
            }
        }
        assert_eq!(Platform::parse("  İOS "), Platform::Unknown);
        assert_eq!(Platform::parse("IPADOS"), Platform::Ios);
        assert_eq!(Platform::infer_from_model(" IPHONE 7"), Platform::Ios);
        assert_eq!(Platform::infer_from_model("Sm-A528B"), Platform::Android);
        assert_eq!(Platform::infer_from_model("İphone"), Platform::Unknown);
        assert_eq!(
            OwnerEmail::parse("ÉLODIE@Engie.COM").unwrap().as_str(),
            "élodie@engie.com"
        );
    }

    #[test]
    fn addresses_and_texts_are_printed_in_columns_like_any_str() {
        let owner = OwnerEmail::parse("a@b.com").unwrap();
        let model = Text::from("SM-A528B");
        assert_eq!(
            format!("{owner:<10}|{model:>10}|"),
            "a@b.com   |  SM-A528B|"
        );
        assert_eq!(format!("{model:.4}"), "SM-A");
    }

    #[test]
    fn risk_is_read_inside_longer_text() {
        assert_eq!(Risk::parse("Active Low Risk"), Risk::Low);
        assert_eq!(Risk::parse("MODERATE"), Risk::Moderate);
        assert_eq!(Risk::parse("Medium"), Risk::Moderate);
        assert_eq!(Risk::parse("High"), Risk::High);
        assert_eq!(Risk::parse(""), Risk::Unknown);
    }

    #[test]
    fn platform_is_inferred_from_apple_and_android_models() {
        assert_eq!(Platform::infer_from_model("iPad Air 2"), Platform::Ios);
        assert_eq!(Platform::infer_from_model("SM-X205"), Platform::Android);
        assert_eq!(
            Platform::infer_from_model("Unknown thing"),
            Platform::Unknown
        );
        assert_eq!(Platform::parse("iOS"), Platform::Ios);
    }
}

/// Replaces every e-mail address in `text` (a service's error message: Graph repeats the
/// address it was asked for) with its pseudonym, so no address reaches a log or an error.
pub fn scrub_addresses(text: &str) -> String {
    let is_local = |c: char| c.is_ascii_alphanumeric() || "._%+-'".contains(c);
    let is_domain = |c: char| c.is_ascii_alphanumeric() || ".-".contains(c);
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            let mut start = i;
            while start > copied && is_local(chars[start - 1]) {
                start -= 1;
            }
            let mut end = i + 1;
            while end < chars.len() && is_domain(chars[end]) {
                end += 1;
            }
            // Quotes around an address are not part of it.
            while start < i && chars[start] == '\'' {
                start += 1;
            }
            while end > i + 1 && chars[end - 1] == '.' {
                end -= 1;
            }
            let candidate: String = chars[start..end].iter().collect();
            if start < i && end > i + 1 {
                if let Ok(email) = OwnerEmail::parse(&candidate) {
                    out.extend(&chars[copied..start]);
                    out.push_str(&email.pseudonym());
                    copied = end;
                    i = end;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.extend(&chars[copied..]);
    out
}

#[cfg(test)]
mod scrub_tests {
    use super::*;

    #[test]
    fn every_address_in_a_service_message_becomes_its_pseudonym() {
        let text = "Resource 'Jean.Dupont@Engie.com' does not exist or one of its queried reference-property objects are not present (x@y.fr).";
        let scrubbed = scrub_addresses(text);
        assert!(!scrubbed.contains('@'), "{scrubbed}");
        let p = OwnerEmail::parse("jean.dupont@engie.com")
            .unwrap()
            .pseudonym();
        assert!(
            scrubbed.contains(&format!("Resource '{p}' does not exist")),
            "{scrubbed}"
        );
        assert_eq!(scrub_addresses("no address @ here"), "no address @ here");
    }
}

/// Replaces every occurrence of `address` (any ASCII case) in `text` with `shown` (a pseudonym):
/// a channel's error for one owner often quotes that owner's address.
pub fn replace_address(text: &str, address: &str, shown: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let needle = address.to_ascii_lowercase();
    if needle.is_empty() || !lower.contains(&needle) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    // ASCII lower-casing keeps byte offsets, so positions in `lower` are positions in `text`.
    for (at, _) in lower.match_indices(&needle) {
        out.push_str(&text[rest..at]);
        out.push_str(shown);
        rest = at + needle.len();
    }
    out.push_str(&text[rest..]);
    out
}

/// Escapes text for HTML element content and attribute values (export data is never markup).
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
