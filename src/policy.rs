//! Policy: which findings get a reminder, of which kind, and by when.
//!
//! Pure: everything comes in as arguments (no clock, no settings read here).

use crate::domain::{IssueKind, OwnerEmail};
use crate::parse::Finding;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// How one issue kind is recognised. Every condition that is set must match; matching
/// ignores case, spaces and punctuation and looks for the text anywhere in the field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindRule {
    /// The kind this rule produces.
    pub kind: IssueKind,
    /// Text to find in `Issue Type`.
    #[serde(default)]
    pub issue_type: Option<String>,
    /// Text to find in `Issue`.
    #[serde(default)]
    pub issue: Option<String>,
    /// Text to find in `Classifications`.
    #[serde(default)]
    pub classification: Option<String>,
}

impl KindRule {
    fn matches(&self, f: &Finding) -> bool {
        let ok = |pattern: &Option<String>, field: &str| match pattern {
            None => true,
            Some(p) => squashed_contains(field, p),
        };
        ok(&self.issue_type, f.issue_type.as_str())
            && ok(&self.issue, f.issue.as_str())
            && ok(&self.classification, f.classifications.as_str())
    }
}

/// The text's letters and digits, lower-cased: what matching compares.
fn squashed(text: &str) -> impl Iterator<Item = char> + Clone + '_ {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
}

/// Whether the squashed `needle` occurs in the squashed `hay`, without allocating: this
/// runs for every rule of every row of exports of 100k rows.
fn squashed_contains(hay: &str, needle: &str) -> bool {
    // Every row of the export goes through here a few times: ASCII text (nearly all of it)
    // is squashed on the stack and searched as bytes, with the same answer.
    if let (Some(hay), Some(needle)) = (squashed_ascii(hay), squashed_ascii(needle)) {
        let (hay, needle) = (hay.as_slice(), needle.as_slice());
        return needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle);
    }
    let needle = squashed(needle);
    let mut hay = squashed(hay);
    loop {
        let mut rest = hay.clone();
        if needle.clone().all(|c| rest.next() == Some(c)) {
            return true;
        }
        if hay.next().is_none() {
            return false;
        }
    }
}

/// Short ASCII text squashed like [`squashed`] into a stack buffer; `None` for other text.
fn squashed_ascii(text: &str) -> Option<SquashedAscii> {
    const CAPACITY: usize = 128;
    if text.len() > CAPACITY || !text.is_ascii() {
        return None;
    }
    let mut out = SquashedAscii {
        bytes: [0; CAPACITY],
        len: 0,
    };
    for b in text.bytes().filter(u8::is_ascii_alphanumeric) {
        out.bytes[out.len] = b.to_ascii_lowercase();
        out.len += 1;
    }
    Some(out)
}

struct SquashedAscii {
    bytes: [u8; 128],
    len: usize,
}

impl SquashedAscii {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The policy's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Statuses meaning "open" (any case).
    pub active_statuses: Vec<String>,
    /// Kind rules, first match wins.
    pub kinds: Vec<KindRule>,
    /// Mail domains that may be messaged; empty = all (reported as a warning).
    pub allowed_domains: Vec<String>,
    /// Days between detection and the cut of access.
    pub grace_days: i64,
    /// Time zone of the dates shown to people and of "today".
    pub time_zone: Tz,
    /// Models that can no longer install a current OS (`REMINDERS_END_OF_SUPPORT_FILE`).
    #[serde(default = "crate::end_of_support::EndOfSupport::builtin")]
    pub end_of_support: crate::end_of_support::EndOfSupport,
}

impl Default for Rules {
    fn default() -> Self {
        let rule =
            |kind, issue_type: Option<&str>, issue: Option<&str>, class: Option<&str>| KindRule {
                kind,
                issue_type: issue_type.map(Into::into),
                issue: issue.map(Into::into),
                classification: class.map(Into::into),
            };
        Self {
            active_statuses: vec!["active".into(), "open".into()],
            kinds: vec![
                rule(
                    IssueKind::VulnerableApp,
                    Some("application"),
                    None,
                    Some("vulnerab"),
                ),
                rule(IssueKind::OsOutOfDate, None, None, Some("os out-of-date")),
                rule(IssueKind::SecurityPatchOutOfDate, None, None, Some("aspl")),
                rule(
                    IssueKind::AgentOutOfDate,
                    None,
                    Some("agent"),
                    Some("outdated"),
                ),
            ],
            allowed_domains: Vec::new(),
            grace_days: 30,
            time_zone: chrono_tz::Europe::Paris,
            end_of_support: crate::end_of_support::EndOfSupport::builtin(),
        }
    }
}

/// Whether `address` is in one of the `allowed` mail domains (empty: any). The one check
/// every recipient passes: owners in the plan, managers on escalation.
pub fn domain_in(allowed: &[String], address: &OwnerEmail) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|d| {
            d.trim()
                .trim_start_matches('@')
                .eq_ignore_ascii_case(address.domain())
        })
}

impl Rules {
    /// Whether mail to this owner is allowed by the domain list.
    pub fn domain_allowed(&self, owner: &OwnerEmail) -> bool {
        domain_in(&self.allowed_domains, owner)
    }

    /// The local calendar date of an instant in the configured zone.
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.time_zone).date_naive()
    }
}

/// Why a finding gets no reminder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotRemindable {
    /// Status is not active/open (resolved, dismissed…).
    NotActive,
    /// Active, but not an update issue (threat, network, risky configuration…).
    NotAnUpdateIssue,
}

/// A finding that gets a reminder.
/// Borrows from the finding (this runs for every row: no copy of the app name is made).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Remindable<'f> {
    /// Its kind.
    pub kind: IssueKind,
    /// App name for app issues (`Chrome(com.android.chrome)` → `Chrome`), a slice of the
    /// finding's issue text.
    pub app_name: Option<&'f str>,
    /// Date access is cut (detection + grace days, local date).
    pub deadline: NaiveDate,
    /// Days from `as_of` to the deadline; negative once past.
    pub days_left: i64,
}

/// Decides whether one finding is remindable, as of a local date.
pub fn evaluate<'f>(
    finding: &'f Finding,
    as_of: NaiveDate,
    rules: &Rules,
) -> Result<Remindable<'f>, NotRemindable> {
    evaluate_with(finding, as_of, rules, &mut KindMemo::default())
}

/// The status and kind verdicts of the findings of one export, remembered per distinct
/// (status, issue type, issue, classifications) texts: an export repeats a few dozen
/// combinations over 100k rows, and matching the rules is the costly part of a verdict.
///
/// Keyed by where the texts are: the rows of one parse share one copy of each value (see
/// [`crate::domain::Text`]), so a repeat is found by address without hashing the text. Equal
/// texts at other addresses are only a miss, never a wrong answer. Lives no longer than the
/// findings it was used on (`'f`), so no address is reused meanwhile.
#[derive(Default)]
pub struct KindMemo<'f> {
    verdicts: FxHashMap<[(*const u8, usize); 4], Result<IssueKind, NotRemindable>>,
    findings: std::marker::PhantomData<&'f Finding>,
}

/// [`evaluate`] for one finding of many, with the rules' verdict on its texts remembered.
pub fn evaluate_with<'f>(
    finding: &'f Finding,
    as_of: NaiveDate,
    rules: &Rules,
    memo: &mut KindMemo<'f>,
) -> Result<Remindable<'f>, NotRemindable> {
    let at = |text: &'f str| (text.as_ptr(), text.len());
    let texts = [
        at(finding.status.as_str()),
        at(finding.issue_type.as_str()),
        at(finding.issue.as_str()),
        at(finding.classifications.as_str()),
    ];
    let verdict = *memo
        .verdicts
        .entry(texts)
        .or_insert_with(|| kind_of(finding, rules));
    let kind = verdict?;
    // Local calendar days, not 30 × 24 h: across a daylight-saving change 24 h steps land an
    // hour off, which moves a detection near midnight to another deadline date.
    let deadline = rules.local_date(finding.detected) + Duration::days(rules.grace_days);
    let app_name = (kind == IssueKind::VulnerableApp).then(|| app_name(&finding.issue));
    Ok(Remindable {
        kind,
        app_name,
        deadline,
        days_left: (deadline - as_of).num_days(),
    })
}

/// The rules' verdict on a finding's texts: not active, not an update issue, or its kind.
fn kind_of(finding: &Finding, rules: &Rules) -> Result<IssueKind, NotRemindable> {
    let status = finding.status.trim();
    if !rules
        .active_statuses
        .iter()
        .any(|s| s.eq_ignore_ascii_case(status) || squashed(s).eq(squashed(status)))
    {
        return Err(NotRemindable::NotActive);
    }
    rules
        .kinds
        .iter()
        .find(|r| r.matches(finding))
        .map(|r| r.kind)
        .ok_or(NotRemindable::NotAnUpdateIssue)
}

/// The app's display name from Lookout's `Name(package.id)` issue text: a slice of it.
pub fn app_name(issue: &str) -> &str {
    let name = issue.split('(').next().unwrap_or(issue).trim();
    let name = name
        .strip_suffix("Vulnerability")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(name);
    if name.is_empty() {
        issue.trim()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Platform, Risk};
    use chrono::TimeZone;

    fn finding(issue_type: &str, issue: &str, class: &str, status: &str) -> Finding {
        Finding {
            row: 2,
            owner: OwnerEmail::parse("a@engie.com").unwrap(),
            lookout_id: Some("id".into()),
            mdm_device_id: None,
            device_model: "SM-A528B".into(),
            platform: Platform::Android,
            issue_type: issue_type.into(),
            issue: issue.into(),
            classifications: class.into(),
            status: status.into(),
            risk: Risk::Moderate,
            detected: Utc.with_ymd_and_hms(2024, 3, 4, 14, 52, 0).unwrap(),
            resolved: None,
        }
    }

    fn as_of() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, 7).unwrap()
    }

    #[test]
    fn remembered_verdicts_are_the_verdicts_of_each_row_whatever_texts_the_rows_share() {
        let rules = Rules::default();
        let shared = finding("Application", "Chrome(x)", "Vulnerability", "Active");
        let mut rows = vec![shared.clone(), shared.clone()];
        // The same texts as separate copies, and rows sharing some texts but not others.
        rows.push(finding(
            "Application",
            "Chrome(x)",
            "Vulnerability",
            "Active",
        ));
        let mut resolved = shared.clone();
        resolved.status = "Resolved".into();
        rows.push(resolved);
        let mut os = shared.clone();
        os.classifications = "OS Out-Of-Date".into();
        rows.push(os);
        let mut other_day = shared.clone();
        other_day.detected = Utc.with_ymd_and_hms(2024, 1, 1, 23, 30, 0).unwrap();
        rows.push(other_day);
        rows.push(finding("Network", "Wi-Fi", "Rogue", "Active"));
        rows.push(shared);
        let mut memo = KindMemo::default();
        let remembered: Vec<_> = rows
            .iter()
            .map(|f| evaluate_with(f, as_of(), &rules, &mut memo))
            .collect();
        let fresh: Vec<_> = rows.iter().map(|f| evaluate(f, as_of(), &rules)).collect();
        assert_eq!(remembered, fresh);
        assert_eq!(fresh[3], Err(NotRemindable::NotActive));
        assert_eq!(fresh[4].as_ref().unwrap().kind, IssueKind::OsOutOfDate);
        assert_ne!(
            fresh[5].as_ref().unwrap().deadline,
            fresh[0].as_ref().unwrap().deadline
        );
        assert_eq!(fresh[6], Err(NotRemindable::NotAnUpdateIssue));
    }

    #[test]
    fn an_active_vulnerable_app_is_remindable_with_its_app_name() {
        let f = finding(
            "Application",
            "Chrome(com.android.chrome)",
            "Vulnerability",
            "Active",
        );
        let r = evaluate(&f, as_of(), &Rules::default()).unwrap();
        assert_eq!(r.kind, IssueKind::VulnerableApp);
        assert_eq!(r.app_name, Some("Chrome"));
        assert_eq!(r.deadline, NaiveDate::from_ymd_opt(2024, 4, 3).unwrap());
        assert_eq!(r.days_left, 27);
    }

    #[test]
    fn each_default_kind_is_recognised() {
        let rules = Rules::default();
        let kind = |t, i, c| {
            evaluate(&finding(t, i, c, "Active"), as_of(), &rules)
                .unwrap()
                .kind
        };
        assert_eq!(
            kind(
                "Configuration",
                "Operating System Version",
                "OS Out-Of-Date"
            ),
            IssueKind::OsOutOfDate
        );
        assert_eq!(
            kind("Configuration", "Out of Date", "ASPL"),
            IssueKind::SecurityPatchOutOfDate
        );
        assert_eq!(
            kind("Configuration", "Agent", "Outdated"),
            IssueKind::AgentOutOfDate
        );
    }

    #[test]
    fn open_status_in_any_case_counts_as_active() {
        let f = finding(
            "Application",
            "Edge(com.microsoft.emmx)",
            "Vulnerability",
            "OPEN",
        );
        assert!(evaluate(&f, as_of(), &Rules::default()).is_ok());
    }

    #[test]
    fn resolved_and_threat_issues_are_not_remindable() {
        let rules = Rules::default();
        let resolved = finding(
            "Application",
            "Chrome(com.android.chrome)",
            "Vulnerability",
            "Resolved",
        );
        assert_eq!(
            evaluate(&resolved, as_of(), &rules),
            Err(NotRemindable::NotActive)
        );
        let threat = finding("Network", "Man-In-The-Middle", "Threat", "Active");
        assert_eq!(
            evaluate(&threat, as_of(), &rules),
            Err(NotRemindable::NotAnUpdateIssue)
        );
        let app_not_vulnerable = finding("Application", "Sideloaded app", "Risky", "Active");
        assert_eq!(
            evaluate(&app_not_vulnerable, as_of(), &rules),
            Err(NotRemindable::NotAnUpdateIssue)
        );
    }

    #[test]
    fn days_left_go_negative_past_the_deadline() {
        let mut f = finding("Configuration", "Agent", "Outdated", "Active");
        f.detected = Utc.with_ymd_and_hms(2022, 11, 16, 0, 3, 46).unwrap();
        let r = evaluate(&f, as_of(), &Rules::default()).unwrap();
        assert!(r.days_left < 0);
    }

    #[test]
    fn the_deadline_is_a_date_in_the_configured_time_zone() {
        // 23:30 UTC on 3 March is already 4 March in Paris.
        let mut f = finding("Configuration", "Agent", "Outdated", "Active");
        f.detected = Utc.with_ymd_and_hms(2024, 3, 3, 23, 30, 0).unwrap();
        let r = evaluate(&f, as_of(), &Rules::default()).unwrap();
        assert_eq!(r.deadline, NaiveDate::from_ymd_opt(2024, 4, 3).unwrap());
    }

    #[test]
    fn the_grace_period_counts_local_days_across_a_daylight_saving_change() {
        let rules = Rules::default(); // Europe/Paris, 30 days
        let deadline = |at: DateTime<Utc>| {
            let mut f = finding("Configuration", "Agent", "Outdated", "Active");
            f.detected = at;
            evaluate(&f, as_of(), &rules).unwrap().deadline
        };
        let date = |m, d| NaiveDate::from_ymd_opt(2024, m, d).unwrap();
        // Clocks go forward on 31 March. Detected 10 March 23:30 in Paris (22:30 UTC):
        // 30 × 24 h later is 00:30 on 10 April in Paris, but the 30th day is 9 April.
        assert_eq!(
            deadline(Utc.with_ymd_and_hms(2024, 3, 10, 22, 30, 0).unwrap()),
            date(4, 9)
        );
        // Clocks go back on 27 October. Detected 1 October 00:30 in Paris (30 September
        // 22:30 UTC): 30 × 24 h later is 30 October 23:30 in Paris; the 30th day is 31 October.
        assert_eq!(
            deadline(Utc.with_ymd_and_hms(2024, 9, 30, 22, 30, 0).unwrap()),
            date(10, 31)
        );
        // Away from midnight the change makes no difference.
        assert_eq!(
            deadline(Utc.with_ymd_and_hms(2024, 3, 10, 12, 0, 0).unwrap()),
            date(4, 9)
        );
    }

    #[test]
    fn grace_days_and_kinds_are_configurable() {
        let rules = Rules {
            grace_days: 10,
            kinds: vec![KindRule {
                kind: IssueKind::AgentOutOfDate,
                issue_type: None,
                issue: Some("agent".into()),
                classification: None,
            }],
            ..Rules::default()
        };
        let agent = finding("Configuration", "Agent", "Anything", "Active");
        assert_eq!(evaluate(&agent, as_of(), &rules).unwrap().days_left, 7);
        let app = finding(
            "Application",
            "Chrome(com.android.chrome)",
            "Vulnerability",
            "Active",
        );
        assert!(evaluate(&app, as_of(), &rules).is_err());
    }

    #[test]
    fn domains_outside_the_allowed_list_are_refused() {
        let rules = Rules {
            allowed_domains: vec!["engie.com".into()],
            ..Rules::default()
        };
        assert!(rules.domain_allowed(&OwnerEmail::parse("x@ENGIE.com").unwrap()));
        assert!(!rules.domain_allowed(&OwnerEmail::parse("x@gmail.com").unwrap()));
        assert!(Rules::default().domain_allowed(&OwnerEmail::parse("x@gmail.com").unwrap()));
    }

    #[test]
    fn matching_ignores_case_spaces_and_punctuation() {
        assert!(squashed_contains("OS Out-Of-Date", "os out-of-date"));
        assert!(squashed_contains(
            "Configuration / OS out of date",
            "OS Out-Of-Date"
        ));
        assert!(squashed_contains("anything", ""));
        assert!(!squashed_contains("OS", "os out-of-date"));
        assert!(!squashed_contains("Vulnerab", "vulnerability"));
        assert!(squashed_contains("ÉTAT Périmé", "étatpérimé"));
    }

    #[test]
    fn the_fast_ascii_match_answers_like_the_character_by_character_one() {
        let slow = |hay: &str, needle: &str| {
            let hay: String = squashed(hay).collect();
            let needle: String = squashed(needle).collect();
            hay.contains(&needle)
        };
        let long = "Vulnerability ".repeat(12);
        let texts = [
            "",
            "OS Out-Of-Date",
            "os out-of-date",
            "Application",
            "Vulnerab",
            "ASPL",
            "a-s-p-l!",
            "Outdated",
            "  ",
            long.as_str(),
            "Vulnérabilité",
            "ÉTAT Périmé",
            "Chrome(com.android.chrome)",
        ];
        for hay in texts {
            for needle in texts {
                assert_eq!(
                    squashed_contains(hay, needle),
                    slow(hay, needle),
                    "{hay:?} / {needle:?}"
                );
            }
        }
    }

    #[test]
    fn app_names_drop_the_package_id() {
        assert_eq!(app_name("Chrome(com.android.chrome)"), "Chrome");
        assert_eq!(app_name("Edge (com.microsoft.emmx)"), "Edge");
        assert_eq!(app_name("Chrome Vulnerability"), "Chrome");
        assert_eq!(app_name("Signal"), "Signal");
    }
}
