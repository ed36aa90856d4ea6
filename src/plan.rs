//! Plan: group remindable issues by owner, apply the cadence against the ledger, and decide
//! who gets a reminder in this run.
//!
//! Pure: the findings, the ledger snapshot, the date and the options are all arguments.

use crate::domain::{IssueKind, OwnerEmail, Platform, Risk, Text};
use crate::history::LedgerSnapshot;
pub use crate::history::{IssueKey, Stage};
use crate::parse::Finding;
use crate::policy::{self, NotRemindable, Rules};
use chrono::{DateTime, NaiveDate, Utc};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;

impl IssueKey {
    /// Derives the key of a finding.
    ///
    /// Runs once per remindable row, so it hashes straight from the finding's fields into
    /// one reused buffer: the key (stored in ledgers) is the same as hashing the lower-cased
    /// parts one by one, each followed by a NUL.
    pub fn of(f: &Finding) -> Self {
        let mut h = Sha256::new();
        let part = |text: &str, h: &mut Sha256| {
            if text.is_ascii() {
                // Lower-cased in chunks on the stack: no allocation for ASCII text.
                for chunk in text.as_bytes().chunks(64) {
                    let mut buf = [0u8; 64];
                    let buf = &mut buf[..chunk.len()];
                    buf.copy_from_slice(chunk);
                    buf.make_ascii_lowercase();
                    h.update(&*buf);
                }
            } else {
                h.update(text.to_lowercase().as_bytes());
            }
        };
        match &f.lookout_id {
            Some(id) => part(id.as_str(), &mut h),
            None => {
                h.update(f.owner.as_str().as_bytes());
                h.update(b"|");
                part(f.device_model.as_str(), &mut h);
            }
        }
        h.update([0u8]);
        for text in [&f.issue_type, &f.issue, &f.classifications] {
            part(text.as_str(), &mut h);
            h.update([0u8]);
        }
        let mut timestamp = [0u8; 24];
        let mut cursor = std::io::Cursor::new(&mut timestamp[..]);
        let _ = write!(cursor, "{}", f.detected.timestamp());
        let written = cursor.position() as usize;
        h.update(&timestamp[..written]);
        h.update([0u8]);
        // Hex-encoded on the stack and kept inline: no allocation per row.
        let mut hex_digits = [0u8; 20];
        let encoded = hex::encode_to_slice(&h.finalize()[..10], &mut hex_digits)
            .ok()
            .and_then(|()| std::str::from_utf8(&hex_digits).ok())
            .unwrap_or_default();
        IssueKey(smol_str::SmolStr::new_inline(encoded))
    }
}

/// The reminder cadence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cadence {
    /// Days between reminders for the same issue.
    pub remind_every_days: i64,
    /// In the last N days before the deadline, remind daily.
    pub daily_in_last_days: i64,
    /// Keep reminding after the deadline.
    pub remind_after_deadline: bool,
    /// After the deadline, remind daily for this many days, then every
    /// `remind_every_days`: a daily message nobody acts on becomes noise.
    pub daily_after_deadline_days: i64,
    /// An owner overdue by more than this many days is listed for the security team (the
    /// device may be blocked, lost, or not theirs), and their message says so.
    pub team_action_after_days: i64,
}

impl Default for Cadence {
    fn default() -> Self {
        Self {
            remind_every_days: 7,
            daily_in_last_days: 5,
            remind_after_deadline: true,
            daily_after_deadline_days: 7,
            team_action_after_days: 30,
        }
    }
}

/// Options of one plan.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// The run's "today".
    pub as_of: NaiveDate,
    /// Cadence.
    pub cadence: Cadence,
    /// Ignore the cadence (send even if reminded recently).
    pub force: bool,
    /// The real day the run sends on, in the configured time zone, when it sends for today:
    /// an issue whose latest send fell on this real day is not due, whatever run date that
    /// send was recorded under (a backdated run then the timer must not both send).
    pub sent_today: Option<(NaiveDate, chrono_tz::Tz)>,
    /// Restrict to these owners (empty = everybody).
    pub only: HashSet<OwnerEmail>,
}

/// One issue line of a reminder. Its texts are the export's shared copies (see [`Text`]):
/// a plan line is made for every remindable row, without copying any text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueLine {
    /// Stable key (ledger).
    pub key: IssueKey,
    /// Source row.
    pub row: usize,
    /// Lookout device id.
    pub lookout_id: Option<Text>,
    /// Device model, verbatim.
    pub device_model: Text,
    /// Platform.
    pub platform: Platform,
    /// Kind.
    pub kind: IssueKind,
    /// Issue text, verbatim.
    pub issue: Text,
    /// App name (app issues).
    pub app_name: Option<Text>,
    /// Risk.
    pub risk: Risk,
    /// Detected at.
    pub detected: DateTime<Utc>,
    /// Deadline (local date).
    pub deadline: NaiveDate,
    /// Days left (negative = past).
    pub days_left: i64,
    /// Whether this issue is due by the cadence (or new).
    pub due: bool,
    /// For an outdated OS on a model that can no longer install a current one: the last OS
    /// it supports (`iOS 15`). The owner is told to ask for a replacement, not to update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_os: Option<Text>,
}

/// One device and its issues in a reminder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIssues {
    /// Device model.
    pub device_model: Text,
    /// Platform.
    pub platform: Platform,
    /// Lookout device id.
    pub lookout_id: Option<Text>,
    /// The issues, most urgent first.
    pub issues: Vec<IssueLine>,
}

/// One owner's reminder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedReminder {
    /// Recipient.
    pub owner: OwnerEmail,
    /// Stage (the most urgent of its issues).
    pub stage: Stage,
    /// Whether to escalate (past deadline, or high risk).
    pub escalate: bool,
    /// Overdue beyond the team-action threshold: the owner is listed for the security team,
    /// and the message says the team has been told.
    #[serde(default)]
    pub team_told: bool,
    /// Devices with their issues.
    pub devices: Vec<DeviceIssues>,
}

impl PlannedReminder {
    /// All issue lines.
    pub fn issues(&self) -> impl Iterator<Item = &IssueLine> {
        self.devices.iter().flat_map(|d| d.issues.iter())
    }

    /// Fewest days left among its issues.
    pub fn min_days_left(&self) -> i64 {
        self.issues().map(|i| i.days_left).min().unwrap_or(0)
    }

    /// The distinct platforms of its devices.
    pub fn platforms(&self) -> Vec<Platform> {
        let mut p: Vec<Platform> = self.devices.iter().map(|d| d.platform).collect();
        p.sort();
        p.dedup();
        p
    }
}

/// An owner with remindable issues who is not messaged in this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBack {
    /// Owner.
    pub owner: OwnerEmail,
    /// Why (`reminded on 2024-03-05, next on 2024-03-12`, `domain gmail.com not allowed`…).
    pub reason: String,
    /// Their issues.
    pub issues: Vec<IssueLine>,
}

/// The outcome of planning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Reminders to send, ordered by urgency then owner.
    pub reminders: Vec<PlannedReminder>,
    /// Owners reminded recently enough.
    pub not_due: Vec<HeldBack>,
    /// Owners outside the allowed domains.
    pub excluded: Vec<HeldBack>,
    /// Owners left out by `only`.
    pub filtered_out: usize,
    /// Remindable findings.
    pub remindable: usize,
    /// Findings not remindable, by reason.
    pub not_remindable: BTreeMap<String, usize>,
    /// Issues in the ledger (not resolved) that are no longer remindable in the export.
    pub resolved: Vec<(OwnerEmail, IssueKey)>,
    /// Owners (reminded or not due today) overdue beyond `team_action_after_days`: the
    /// security team's to-do list.
    pub team_action: Vec<OwnerEmail>,
}

/// Builds the plan.
pub fn build(
    findings: &[Finding],
    ledger: &LedgerSnapshot,
    rules: &Rules,
    opts: &PlanOptions,
) -> Plan {
    let mut plan = Plan::default();
    // Owners in first-seen order with their lines, found through a fast (non-SipHash) index:
    // the export is trusted input and this runs once per row. Sorted by owner below.
    let mut owner_index: FxHashMap<&OwnerEmail, usize> = FxHashMap::default();
    let mut by_owner: Vec<(&OwnerEmail, Vec<IssueLine>)> = Vec::new();
    // The issues kept, by owner (their place in `by_owner`) and key.
    let mut seen: FxHashSet<(usize, IssueKey)> =
        FxHashSet::with_capacity_and_hasher(findings.len(), Default::default());
    let mut kinds = policy::KindMemo::default();
    // The end-of-support list is searched once per model, not once per outdated-OS row, and
    // an app name is copied once per issue text: the lines share these copies.
    let mut last_os_by_model: FxHashMap<&str, Option<Text>> = FxHashMap::default();
    let mut app_names: FxHashMap<&str, Text> = FxHashMap::default();

    for f in findings {
        let verdict = match policy::evaluate_with(f, opts.as_of, rules, &mut kinds) {
            Ok(v) => v,
            Err(reason) => {
                let name = match reason {
                    NotRemindable::NotActive => "not_active",
                    NotRemindable::NotAnUpdateIssue => "not_an_update_issue",
                };
                match plan.not_remindable.get_mut(name) {
                    Some(count) => *count += 1,
                    None => {
                        plan.not_remindable.insert(name.to_string(), 1);
                    }
                }
                continue;
            }
        };
        let key = IssueKey::of(f);
        // An owner has a few lines: room for them at once, not grown one by one.
        let slot = *owner_index.entry(&f.owner).or_insert_with(|| {
            by_owner.push((&f.owner, Vec::with_capacity(4)));
            by_owner.len() - 1
        });
        // The same issue twice in one export (a copy-paste) is one issue.
        if !seen.insert((slot, key.clone())) {
            continue;
        }
        plan.remindable += 1;
        let due = opts.force || is_due(ledger, &f.owner, &key, verdict.days_left, opts);
        let app_name = verdict.app_name.map(|name| {
            app_names
                .entry(f.issue.as_str())
                .or_insert_with(|| Text::from(name))
                .clone()
        });
        let last_os = if verdict.kind == IssueKind::OsOutOfDate {
            last_os_by_model
                .entry(f.device_model.as_str())
                .or_insert_with(|| {
                    rules
                        .end_of_support
                        .last_os(&f.device_model)
                        .map(Text::from)
                })
                .clone()
        } else {
            None
        };
        by_owner[slot].1.push(IssueLine {
            key,
            row: f.row,
            lookout_id: f.lookout_id.clone(),
            device_model: f.device_model.clone(),
            platform: f.platform,
            kind: verdict.kind,
            issue: f.issue.clone(),
            app_name,
            risk: f.risk,
            detected: f.detected,
            deadline: verdict.deadline,
            days_left: verdict.days_left,
            due,
            last_os,
        });
    }

    for ((owner, key), history) in &ledger.issues {
        let in_export = owner_index
            .get(owner)
            .is_some_and(|slot| seen.contains(&(*slot, key.clone())));
        if !history.resolved && !in_export {
            plan.resolved.push((owner.clone(), key.clone()));
        }
    }
    plan.resolved.sort();
    drop(seen);
    drop(owner_index);
    by_owner.sort_unstable_by(|a, b| a.0.cmp(b.0));

    for (owner, mut lines) in by_owner {
        lines.sort_by(|a, b| a.days_left.cmp(&b.days_left).then(a.row.cmp(&b.row)));
        let lines = merge_same_issue(lines);
        if !opts.only.is_empty() && !opts.only.contains(owner) {
            plan.filtered_out += 1;
            continue;
        }
        if !rules.domain_allowed(owner) {
            plan.excluded.push(HeldBack {
                owner: owner.clone(),
                reason: format!(
                    "mail domain '{}' is not in the allowed domains",
                    owner.domain()
                ),
                issues: lines,
            });
            continue;
        }
        let min_days = lines.iter().map(|l| l.days_left).min().unwrap_or(0);
        let team_told = min_days < -opts.cadence.team_action_after_days;
        if team_told {
            plan.team_action.push(owner.clone());
        }
        if !lines.iter().any(|l| l.due) {
            let reason = not_due_reason(ledger, owner, &lines, opts);
            plan.not_due.push(HeldBack {
                owner: owner.clone(),
                reason,
                issues: lines,
            });
            continue;
        }
        let reminded_before = lines
            .iter()
            .any(|l| history_of(ledger, owner, &l.key).is_some());
        let stage = if min_days < 0 {
            Stage::Overdue
        } else if min_days <= opts.cadence.daily_in_last_days {
            Stage::Final
        } else if reminded_before {
            Stage::Repeat
        } else {
            Stage::First
        };
        let escalate = stage == Stage::Overdue || lines.iter().any(|l| l.risk == Risk::High);
        plan.reminders.push(PlannedReminder {
            owner: owner.clone(),
            stage,
            escalate,
            team_told,
            devices: group_by_device(lines),
        });
    }
    // Pushed in owner order, so a stable sort on the days left orders by urgency then owner.
    plan.reminders
        .sort_by_cached_key(PlannedReminder::min_days_left);
    plan
}

/// The ledger's history of an issue. A first run's ledger is empty: no lookup (which copies
/// the owner and key) is made for each of its rows.
fn history_of<'l>(
    ledger: &'l LedgerSnapshot,
    owner: &OwnerEmail,
    key: &IssueKey,
) -> Option<&'l crate::history::IssueHistory> {
    if ledger.issues.is_empty() {
        None
    } else {
        ledger.history(owner, key)
    }
}

fn is_due(
    ledger: &LedgerSnapshot,
    owner: &OwnerEmail,
    key: &IssueKey,
    days_left: i64,
    opts: &PlanOptions,
) -> bool {
    let Some(h) = history_of(ledger, owner, key) else {
        return true;
    };
    if sent_on_the_real_day(h, opts) {
        return false;
    }
    let since = (opts.as_of - h.last_sent).num_days();
    let c = &opts.cadence;
    // Never twice on the same day, whatever the cadence: reruns and retries are no-ops.
    if since < 1 {
        return false;
    }
    if days_left < 0 {
        // Daily in the first days past the deadline, then at the normal rhythm.
        return c.remind_after_deadline
            && (-days_left <= c.daily_after_deadline_days || since >= c.remind_every_days);
    }
    if days_left <= c.daily_in_last_days {
        return true;
    }
    since >= c.remind_every_days
}

fn sent_on_the_real_day(h: &crate::history::IssueHistory, opts: &PlanOptions) -> bool {
    opts.sent_today
        .is_some_and(|(today, tz)| h.last_sent_at.with_timezone(&tz).date_naive() >= today)
}

fn not_due_reason(
    ledger: &LedgerSnapshot,
    owner: &OwnerEmail,
    lines: &[IssueLine],
    opts: &PlanOptions,
) -> String {
    if let Some((today, _)) = opts.sent_today {
        if lines
            .iter()
            .filter_map(|l| history_of(ledger, owner, &l.key))
            .any(|h| sent_on_the_real_day(h, opts))
        {
            return format!("already reminded today ({today})");
        }
    }
    let last = lines
        .iter()
        .filter_map(|l| history_of(ledger, owner, &l.key))
        .map(|h| h.last_sent)
        .max();
    match last {
        Some(d) if d >= opts.as_of => format!("already reminded on {d}"),
        Some(d) => {
            let next = d + chrono::Duration::days(opts.cadence.remind_every_days);
            format!("reminded on {d}, next reminder due on {next}")
        }
        None => "not due".to_string(),
    }
}

/// Keeps one line per (device, kind, app): Lookout can detect the same app twice on one
/// device, and the owner should read "Edge" once. `lines` come most urgent first, so the
/// line kept has the earliest deadline, and its cadence decides whether the owner is due.
///
/// An owner has a handful of lines: each is compared with the lines kept, case-blind and
/// without building lower-cased copies (this runs for every remindable row).
fn merge_same_issue(lines: Vec<IssueLine>) -> Vec<IssueLine> {
    let mut kept: Vec<IssueLine> = Vec::with_capacity(lines.len());
    for line in lines {
        if !kept.iter().any(|k| same_issue(k, &line)) {
            kept.push(line);
        }
    }
    kept
}

/// Whether two lines are the same (device, kind, app): the device is its trimmed Lookout id,
/// else `model:` and its trimmed model; the app its trimmed name; all compared lower-cased.
fn same_issue(a: &IssueLine, b: &IssueLine) -> bool {
    fn lower(text: &str) -> impl Iterator<Item = char> + '_ {
        text.trim().chars().flat_map(char::to_lowercase)
    }
    /// Trimmed texts equal lower-cased; byte-wise when both are ASCII (nearly always).
    fn same_text(x: &str, y: &str) -> bool {
        let (x, y) = (x.trim(), y.trim());
        if x.is_ascii() && y.is_ascii() {
            x.eq_ignore_ascii_case(y)
        } else {
            lower(x).eq(lower(y))
        }
    }
    fn device(line: &IssueLine) -> impl Iterator<Item = char> + '_ {
        let (prefix, text) = match &line.lookout_id {
            Some(id) => ("", id.as_str()),
            None => ("model:", line.device_model.as_str()),
        };
        prefix.chars().chain(lower(text))
    }
    fn app_text(line: &IssueLine) -> &str {
        line.app_name.as_deref().unwrap_or_default()
    }
    if a.kind != b.kind {
        return false;
    }
    let same_device = match (&a.lookout_id, &b.lookout_id) {
        (Some(x), Some(y)) => same_text(x, y),
        (None, None) => same_text(&a.device_model, &b.device_model),
        // An id against `model:` and a model.
        _ => device(a).eq(device(b)),
    };
    same_device && same_text(app_text(a), app_text(b))
}

fn group_by_device(lines: Vec<IssueLine>) -> Vec<DeviceIssues> {
    let mut devices: Vec<DeviceIssues> = Vec::new();
    for line in lines {
        let same = |d: &DeviceIssues| match (&d.lookout_id, &line.lookout_id) {
            (Some(a), Some(b)) => a == b,
            _ => d.device_model == line.device_model,
        };
        match devices.iter_mut().find(|d| same(d)) {
            Some(d) => d.issues.push(line),
            None => devices.push(DeviceIssues {
                device_model: line.device_model.clone(),
                platform: line.platform,
                lookout_id: line.lookout_id.clone(),
                issues: vec![line],
            }),
        }
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::LedgerEvent;
    use chrono::TimeZone;

    fn finding(owner: &str, lookout: &str, issue: &str, day: u32) -> Finding {
        Finding {
            row: day as usize,
            owner: OwnerEmail::parse(owner).unwrap(),
            lookout_id: Some(lookout.into()),
            mdm_device_id: None,
            device_model: "SM-A528B".into(),
            platform: Platform::Android,
            issue_type: "Application".into(),
            issue: issue.into(),
            classifications: "Vulnerability".into(),
            status: "Active".into(),
            risk: Risk::Moderate,
            detected: Utc.with_ymd_and_hms(2024, 3, day, 10, 0, 0).unwrap(),
            resolved: None,
        }
    }

    fn opts(day: u32) -> PlanOptions {
        PlanOptions {
            as_of: NaiveDate::from_ymd_opt(2024, 3, day).unwrap(),
            ..Default::default()
        }
    }

    fn sent(f: &Finding, day: u32) -> LedgerEvent {
        LedgerEvent::Sent {
            owner: f.owner.clone(),
            issue: IssueKey::of(f),
            lookout_id: None,
            stage: Stage::First,
            as_of: NaiveDate::from_ymd_opt(2024, 3, day).unwrap(),
            sent_at: Utc::now(),
            channel: "outbox".into(),
            message_id: None,
            run_id: "r".into(),
            maybe_delivered: false,
            facts: None,
        }
    }

    /// The key as earlier versions derived it (and stored it in ledgers), allocation by
    /// allocation: the faster derivation must give the very same keys.
    fn key_as_stored_by_earlier_versions(f: &Finding) -> IssueKey {
        let device = match &f.lookout_id {
            Some(id) => id.to_lowercase(),
            None => format!("{}|{}", f.owner.as_str(), f.device_model.to_lowercase()),
        };
        let mut h = Sha256::new();
        for part in [
            device.as_str(),
            &f.issue_type.to_lowercase(),
            &f.issue.to_lowercase(),
            &f.classifications.to_lowercase(),
            &f.detected.timestamp().to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        IssueKey(hex::encode(&h.finalize()[..10]).into())
    }

    /// `same_issue` as it was written before its byte-wise shortcut: every line compared
    /// char by char, lower-cased.
    fn same_issue_char_by_char(a: &IssueLine, b: &IssueLine) -> bool {
        fn lower(text: &str) -> impl Iterator<Item = char> + '_ {
            text.trim().chars().flat_map(char::to_lowercase)
        }
        fn device(line: &IssueLine) -> impl Iterator<Item = char> + '_ {
            let (prefix, text) = match &line.lookout_id {
                Some(id) => ("", id.as_str()),
                None => ("model:", line.device_model.as_str()),
            };
            prefix.chars().chain(lower(text))
        }
        fn app(line: &IssueLine) -> impl Iterator<Item = char> + '_ {
            lower(line.app_name.as_deref().unwrap_or_default())
        }
        a.kind == b.kind && device(a).eq(device(b)) && app(a).eq(app(b))
    }

    #[test]
    fn lines_are_the_same_issue_exactly_when_the_char_by_char_comparison_says_so() {
        let ids = [
            None,
            Some("C4B6-DEV"),
            Some(" c4b6-dev "),
            Some("MODEL:SM-A528B"),
            Some("ÉCRAN-İ"),
            Some("écran-i\u{307}"),
        ];
        let models = ["SM-A528B", " sm-a528b", "ÉCRAN ΣΟΦΟΣ", "écran σοφος", ""];
        let apps = [
            None,
            Some("Chrome"),
            Some(" CHROME "),
            Some("Edgé"),
            Some("EDGÉ"),
        ];
        let kinds = [IssueKind::VulnerableApp, IssueKind::OsOutOfDate];
        let mut lines = Vec::new();
        for id in ids {
            for model in models {
                for app in apps {
                    for kind in kinds {
                        let f = finding("a@x.com", "dev", "Chrome", 4);
                        lines.push(IssueLine {
                            key: IssueKey::of(&f),
                            row: 2,
                            lookout_id: id.map(Text::from),
                            device_model: model.into(),
                            platform: Platform::Android,
                            kind,
                            issue: "Chrome".into(),
                            app_name: app.map(Text::from),
                            risk: Risk::Low,
                            detected: f.detected,
                            deadline: NaiveDate::from_ymd_opt(2024, 4, 3).unwrap(),
                            days_left: 1,
                            due: true,
                            last_os: None,
                        });
                    }
                }
            }
        }
        let mut same = 0;
        for a in &lines {
            for b in &lines {
                let expected = same_issue_char_by_char(a, b);
                assert_eq!(same_issue(a, b), expected, "{a:?} / {b:?}");
                same += usize::from(expected);
            }
        }
        // Not only "different": case, spaces and the `model:` spelling all meet.
        assert!(same > lines.len() * 2, "{same}");
    }

    #[test]
    fn issue_keys_stay_the_ones_stored_in_existing_ledgers() {
        let mut base = finding("a@x.com", "C4B6F57B-DEV", "Chrome(com.android.chrome)", 4);
        // A fixed value: a change here would make every ledger forget what it sent.
        assert_eq!(
            IssueKey::of(&base).0,
            key_as_stored_by_earlier_versions(&base).0
        );
        let golden = IssueKey::of(&base).0;
        assert_eq!(golden.len(), 20);
        let mut variants = vec![base.clone()];
        base.lookout_id = None;
        base.device_model = "iPhone SE (2nd generation)".into();
        variants.push(base.clone());
        base.device_model = "ÉCRAN ΣΟΦΟΣ İstanbul".into();
        base.issue = "Navigateur Σ(ÉDGE)".into();
        base.classifications = "Vulnérabilité".into();
        variants.push(base.clone());
        base.issue = ("x".repeat(200) + "Ä").into();
        base.issue_type = "A".repeat(130).into();
        base.lookout_id = Some("ID-".repeat(40).into());
        variants.push(base.clone());
        base.detected = Utc.with_ymd_and_hms(1969, 7, 20, 20, 17, 40).unwrap();
        base.issue_type = Default::default();
        variants.push(base);
        for f in &variants {
            assert_eq!(
                IssueKey::of(f),
                key_as_stored_by_earlier_versions(f),
                "{f:?}"
            );
        }
        let distinct: HashSet<_> = variants.iter().map(IssueKey::of).collect();
        assert_eq!(distinct.len(), variants.len());
    }

    #[test]
    fn owners_come_out_sorted_by_urgency_then_address_whatever_the_row_order() {
        let fs = [
            finding("c@x.com", "d3", "Chrome(com.android.chrome)", 1),
            finding("B@x.com", "d2", "Chrome(com.android.chrome)", 1),
            finding("a@x.com", "d1", "Chrome(com.android.chrome)", 2),
            finding("b@x.com", "d2", "Edge(com.microsoft.emmx)", 3),
            finding("d@x.com", "d4", "Chrome(com.android.chrome)", 1),
        ];
        let plan = build(
            &fs,
            &LedgerSnapshot::default(),
            &Rules::default(),
            &opts(20),
        );
        let order: Vec<(&str, i64)> = plan
            .reminders
            .iter()
            .map(|r| (r.owner.as_str(), r.min_days_left()))
            .collect();
        let days = |d: u32| {
            plan.reminders.iter().find_map(|r| {
                r.issues()
                    .find(|i| i.row == d as usize)
                    .map(|i| i.days_left)
            })
        };
        let (day1, day2) = (days(1).unwrap(), days(2).unwrap());
        assert_eq!(
            order,
            vec![
                ("b@x.com", day1),
                ("c@x.com", day1),
                ("d@x.com", day1),
                ("a@x.com", day2)
            ]
        );
        // b's two rows (one written in capitals) are one owner with two issues.
        assert_eq!(plan.reminders[0].issues().count(), 2);
    }

    #[test]
    fn one_reminder_per_owner_groups_issues_by_device() {
        let fs = [
            finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1),
            finding("a@x.com", "dev1", "Edge(com.microsoft.emmx)", 2),
            finding("b@x.com", "dev2", "Chrome(com.android.chrome)", 3),
        ];
        let plan = build(&fs, &LedgerSnapshot::default(), &Rules::default(), &opts(7));
        assert_eq!(plan.reminders.len(), 2);
        let a = plan
            .reminders
            .iter()
            .find(|r| r.owner.as_str() == "a@x.com")
            .unwrap();
        assert_eq!(a.devices.len(), 1);
        assert_eq!(a.devices[0].issues.len(), 2);
        assert_eq!(a.stage, Stage::First);
    }

    #[test]
    fn an_issue_reminded_less_than_seven_days_ago_is_not_due() {
        let f = finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1);
        let ledger = LedgerSnapshot::from_events(&[sent(&f, 2)]);
        let plan = build(
            std::slice::from_ref(&f),
            &ledger,
            &Rules::default(),
            &opts(7),
        );
        assert!(plan.reminders.is_empty());
        assert_eq!(plan.not_due.len(), 1);
        assert!(
            plan.not_due[0].reason.contains("2024-03-09"),
            "{}",
            plan.not_due[0].reason
        );
        let plan = build(
            std::slice::from_ref(&f),
            &ledger,
            &Rules::default(),
            &opts(9),
        );
        assert_eq!(plan.reminders.len(), 1);
        assert_eq!(plan.reminders[0].stage, Stage::Repeat);
    }

    #[test]
    fn a_send_recorded_under_a_past_run_date_today_still_counts_as_sent_today() {
        let f = finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1);
        // A backdated run (as of 7 March) sent today; the timer runs as of today, 20 March.
        let mut event = sent(&f, 7);
        if let LedgerEvent::Sent { sent_at, .. } = &mut event {
            *sent_at = Utc.with_ymd_and_hms(2024, 3, 20, 6, 0, 0).unwrap();
        }
        let ledger = LedgerSnapshot::from_events(&[event]);
        let mut o = opts(20);
        let plan = build(std::slice::from_ref(&f), &ledger, &Rules::default(), &o);
        assert_eq!(
            plan.reminders.len(),
            1,
            "without the real day, 13 days look due"
        );
        o.sent_today = Some((o.as_of, chrono_tz::Europe::Paris));
        let plan = build(std::slice::from_ref(&f), &ledger, &Rules::default(), &o);
        assert!(plan.reminders.is_empty(), "{:?}", plan.reminders);
        assert!(plan.not_due[0].reason.contains("already reminded today"));
        // 23:30 UTC on 19 March is already 20 March in Paris: today too.
        let mut event = sent(&f, 7);
        if let LedgerEvent::Sent { sent_at, .. } = &mut event {
            *sent_at = Utc.with_ymd_and_hms(2024, 3, 19, 23, 30, 0).unwrap();
        }
        let ledger = LedgerSnapshot::from_events(&[event]);
        let plan = build(std::slice::from_ref(&f), &ledger, &Rules::default(), &o);
        assert!(plan.reminders.is_empty(), "{:?}", plan.reminders);
    }

    #[test]
    fn force_sends_even_to_an_owner_reminded_today() {
        let f = finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1);
        let ledger = LedgerSnapshot::from_events(&[sent(&f, 7)]);
        let mut o = opts(7);
        assert!(
            build(std::slice::from_ref(&f), &ledger, &Rules::default(), &o)
                .reminders
                .is_empty()
        );
        o.force = true;
        assert_eq!(
            build(std::slice::from_ref(&f), &ledger, &Rules::default(), &o)
                .reminders
                .len(),
            1
        );
    }

    #[test]
    fn in_the_last_days_reminders_are_daily_and_final() {
        // Detected 1 Feb → deadline 2 March (30 days); as of 28 Feb: 3 days left.
        let mut f = finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1);
        f.detected = Utc.with_ymd_and_hms(2024, 2, 1, 10, 0, 0).unwrap();
        let ledger = LedgerSnapshot::from_events(&[LedgerEvent::Sent {
            owner: f.owner.clone(),
            issue: IssueKey::of(&f),
            lookout_id: None,
            stage: Stage::Repeat,
            as_of: NaiveDate::from_ymd_opt(2024, 2, 27).unwrap(),
            sent_at: Utc::now(),
            channel: "outbox".into(),
            message_id: None,
            run_id: "r".into(),
            maybe_delivered: false,
            facts: None,
        }]);
        let o = PlanOptions {
            as_of: NaiveDate::from_ymd_opt(2024, 2, 28).unwrap(),
            ..Default::default()
        };
        let plan = build(std::slice::from_ref(&f), &ledger, &Rules::default(), &o);
        assert_eq!(plan.reminders.len(), 1);
        assert_eq!(plan.reminders[0].stage, Stage::Final);
    }

    #[test]
    fn past_the_deadline_the_reminder_is_overdue_and_escalates() {
        let mut f = finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1);
        f.detected = Utc.with_ymd_and_hms(2023, 1, 1, 10, 0, 0).unwrap();
        let plan = build(
            std::slice::from_ref(&f),
            &LedgerSnapshot::default(),
            &Rules::default(),
            &opts(7),
        );
        assert_eq!(plan.reminders[0].stage, Stage::Overdue);
        assert!(plan.reminders[0].escalate);
    }

    fn overdue_finding(days_overdue: i64) -> Finding {
        // Deadline = detection + 30 days; as of 7 March 2024.
        let mut f = finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1);
        let deadline =
            NaiveDate::from_ymd_opt(2024, 3, 7).unwrap() - chrono::Duration::days(days_overdue);
        f.detected = Utc.from_utc_datetime(
            &(deadline - chrono::Duration::days(30))
                .and_hms_opt(10, 0, 0)
                .unwrap(),
        );
        f
    }

    #[test]
    fn past_the_deadline_reminders_are_daily_for_a_week_then_weekly() {
        for (days_overdue, last_sent_days_ago, due) in [
            (1, 1, true),
            (7, 1, true),
            (8, 1, false),
            (8, 6, false),
            (8, 7, true),
            (400, 3, false),
            (400, 7, true),
        ] {
            let f = overdue_finding(days_overdue);
            let ledger = LedgerSnapshot::from_events(&[LedgerEvent::Sent {
                owner: f.owner.clone(),
                issue: IssueKey::of(&f),
                lookout_id: None,
                stage: Stage::Overdue,
                as_of: NaiveDate::from_ymd_opt(2024, 3, 7).unwrap()
                    - chrono::Duration::days(last_sent_days_ago),
                sent_at: Utc::now(),
                channel: "outbox".into(),
                message_id: None,
                run_id: "r".into(),
                maybe_delivered: false,
                facts: None,
            }]);
            let plan = build(
                std::slice::from_ref(&f),
                &ledger,
                &Rules::default(),
                &opts(7),
            );
            assert_eq!(
                plan.reminders.len() == 1,
                due,
                "{days_overdue} days overdue, last sent {last_sent_days_ago} days ago: {plan:?}"
            );
        }
    }

    #[test]
    fn an_owner_overdue_beyond_the_threshold_is_listed_for_the_team_and_told_so() {
        let plan = build(
            &[overdue_finding(31)],
            &LedgerSnapshot::default(),
            &Rules::default(),
            &opts(7),
        );
        assert!(plan.reminders[0].team_told);
        assert_eq!(plan.team_action.len(), 1);
        let plan = build(
            &[overdue_finding(30)],
            &LedgerSnapshot::default(),
            &Rules::default(),
            &opts(7),
        );
        assert!(!plan.reminders[0].team_told);
        assert!(plan.team_action.is_empty());
        // Not due today (reminded yesterday, weekly rhythm): still on the team's list.
        let f = overdue_finding(100);
        let ledger = LedgerSnapshot::from_events(&[sent(&f, 6)]);
        let plan = build(
            std::slice::from_ref(&f),
            &ledger,
            &Rules::default(),
            &opts(7),
        );
        assert!(plan.reminders.is_empty());
        assert_eq!(plan.team_action, vec![f.owner.clone()]);
    }

    #[test]
    fn owners_outside_allowed_domains_are_excluded_and_reported() {
        let fs = [finding(
            "a@gmail.com",
            "dev1",
            "Chrome(com.android.chrome)",
            1,
        )];
        let rules = Rules {
            allowed_domains: vec!["engie.com".into()],
            ..Rules::default()
        };
        let plan = build(&fs, &LedgerSnapshot::default(), &rules, &opts(7));
        assert!(plan.reminders.is_empty());
        assert_eq!(plan.excluded.len(), 1);
        assert!(plan.excluded[0].reason.contains("gmail.com"));
    }

    #[test]
    fn only_restricts_the_owners() {
        let fs = [
            finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1),
            finding("b@x.com", "dev2", "Chrome(com.android.chrome)", 1),
        ];
        let mut o = opts(7);
        o.only.insert(OwnerEmail::parse("B@x.com").unwrap());
        let plan = build(&fs, &LedgerSnapshot::default(), &Rules::default(), &o);
        assert_eq!(plan.reminders.len(), 1);
        assert_eq!(plan.reminders[0].owner.as_str(), "b@x.com");
        assert_eq!(plan.filtered_out, 1);
    }

    #[test]
    fn an_issue_gone_from_the_export_is_reported_resolved() {
        let f = finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1);
        let ledger = LedgerSnapshot::from_events(&[sent(&f, 2)]);
        let plan = build(&[], &ledger, &Rules::default(), &opts(7));
        assert_eq!(plan.resolved, vec![(f.owner.clone(), IssueKey::of(&f))]);
    }

    #[test]
    fn without_device_ids_the_same_app_on_one_model_is_one_line_and_other_models_keep_theirs() {
        let mut first = finding("a@x.com", "dev1", "Edge(com.microsoft.emmx)", 1);
        first.lookout_id = None;
        let mut again = first.clone();
        again.device_model = " sm-a528b ".into();
        again.detected = Utc.with_ymd_and_hms(2024, 3, 4, 10, 0, 0).unwrap();
        let mut other_model = first.clone();
        other_model.device_model = "SM-A136B".into();
        let mut with_id = first.clone();
        with_id.lookout_id = Some("dev9".into());
        let plan = build(
            &[again, first.clone(), other_model, with_id],
            &LedgerSnapshot::default(),
            &Rules::default(),
            &opts(7),
        );
        let lines: Vec<_> = plan.reminders[0].issues().collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let kept = lines
            .iter()
            .find(|l| l.lookout_id.is_none() && l.device_model == "SM-A528B");
        assert_eq!(
            kept.expect("the earliest line kept").key,
            IssueKey::of(&first)
        );
        assert!(lines.iter().any(|l| l.device_model == "SM-A136B"));
    }

    #[test]
    fn the_same_app_detected_twice_on_a_device_is_one_line_with_the_earliest_deadline() {
        let first = finding("a@x.com", "dev1", "Edge(com.microsoft.emmx)", 1);
        let mut again = finding("a@x.com", "DEV1", "Edge(com.microsoft.emmx)", 5);
        again.issue = "Edge (com.microsoft.emmx)".into();
        let other_device = finding("a@x.com", "dev2", "Edge(com.microsoft.emmx)", 3);
        let plan = build(
            &[again, first.clone(), other_device],
            &LedgerSnapshot::default(),
            &Rules::default(),
            &opts(7),
        );
        let r = &plan.reminders[0];
        assert_eq!(r.devices.len(), 2, "{r:?}");
        let dev1 = r
            .devices
            .iter()
            .find(|d| d.lookout_id.as_deref() == Some("dev1"));
        let dev1 = dev1.expect("dev1 listed");
        assert_eq!(dev1.issues.len(), 1, "{dev1:?}");
        assert_eq!(dev1.issues[0].key, IssueKey::of(&first));
        assert_eq!(
            dev1.issues[0].deadline,
            NaiveDate::from_ymd_opt(2024, 3, 31).unwrap()
        );
    }

    #[test]
    fn an_outdated_os_on_a_model_apple_no_longer_updates_carries_its_last_os() {
        let mut os = finding("a@x.com", "dev1", "OS", 1);
        os.device_model = "iPad Air 2".into();
        os.platform = Platform::Ios;
        os.issue_type = "OS".into();
        os.classifications = "OS Out-of-date".into();
        let mut app = finding("a@x.com", "dev1", "Chrome(com.google.chrome.ios)", 2);
        app.device_model = "iPad Air 2".into();
        let mut current = os.clone();
        current.lookout_id = Some("dev2".into());
        current.device_model = "iPad Pro 11".into();
        let plan = build(
            &[os, app, current],
            &LedgerSnapshot::default(),
            &Rules::default(),
            &opts(7),
        );
        let lines: Vec<_> = plan.reminders[0].issues().collect();
        let last = |model: &str, kind| {
            lines
                .iter()
                .find(|l| l.device_model == model && l.kind == kind)
                .map(|l| l.last_os.clone())
        };
        assert_eq!(
            last("iPad Air 2", IssueKind::OsOutOfDate),
            Some(Some("iPadOS 15".into()))
        );
        assert_eq!(last("iPad Air 2", IssueKind::VulnerableApp), Some(None));
        assert_eq!(last("iPad Pro 11", IssueKind::OsOutOfDate), Some(None));
    }

    #[test]
    fn a_duplicated_row_is_one_issue() {
        let f = finding("a@x.com", "dev1", "Chrome(com.android.chrome)", 1);
        let plan = build(
            &[f.clone(), f],
            &LedgerSnapshot::default(),
            &Rules::default(),
            &opts(7),
        );
        assert_eq!(plan.remindable, 1);
        assert_eq!(plan.reminders[0].devices[0].issues.len(), 1);
    }
}
