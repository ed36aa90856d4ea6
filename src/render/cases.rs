//! Every message an owner can receive, rendered and checked: issue kind × platform × stage ×
//! language, the facts each must state, golden files of the rendered text, and the cards
//! validated by the official Adaptive Cards renderer (npm `adaptivecards`).

use super::{MessageConstants, RenderedMessage, Renderer};
use crate::domain::{IssueKind, OwnerEmail, Platform, Risk};
use crate::plan::{DeviceIssues, IssueKey, IssueLine, PlannedReminder, Stage};
use chrono::{Duration, NaiveDate, TimeZone, Utc};
use std::fmt::Write as _;
use std::path::PathBuf;

const LANGUAGES: [&str; 2] = ["fr", "en"];

/// The stages of a reminder as the owner lives them (days left on the run's date).
const STAGES: [(&str, Stage, i64); 7] = [
    ("first", Stage::First, 12),
    ("repeat", Stage::Repeat, 12),
    ("last days", Stage::Final, 3),
    ("day before", Stage::Final, 1),
    ("last day", Stage::Final, 0),
    ("overdue", Stage::Overdue, -10),
    // Beyond the team-action threshold (30 days by default): the team has been told.
    ("long overdue", Stage::Overdue, -45),
];

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 7).expect("valid date")
}

/// The combinations that occur: an Android security patch never concerns an iPhone.
fn combinations() -> Vec<(IssueKind, Platform)> {
    let mut out = Vec::new();
    for kind in IssueKind::ALL {
        for platform in [Platform::Ios, Platform::Android, Platform::Unknown] {
            if kind == IssueKind::SecurityPatchOutOfDate && platform == Platform::Ios {
                continue;
            }
            out.push((kind, platform));
        }
    }
    out
}

fn reminder(kind: IssueKind, platform: Platform, stage: Stage, days_left: i64) -> PlannedReminder {
    let deadline = as_of() + Duration::days(days_left);
    let detected = Utc.from_utc_datetime(
        &(deadline - Duration::days(30))
            .and_hms_opt(9, 0, 0)
            .unwrap(),
    );
    let (model, issue, app) = match (kind, platform) {
        (IssueKind::VulnerableApp, Platform::Ios) => {
            ("iPhone 13", "Edge(com.microsoft.msedge)", "Edge")
        }
        (IssueKind::VulnerableApp, _) => ("SM-A528B", "Chrome(com.android.chrome)", "Chrome"),
        (_, Platform::Ios) => ("iPhone 13", "Outdated OS", ""),
        _ => ("SM-A528B", "Outdated", ""),
    };
    let model = if platform == Platform::Unknown {
        "Unknown model X1"
    } else {
        model
    };
    PlannedReminder {
        owner: OwnerEmail::parse("owner@example.com").expect("valid"),
        stage,
        escalate: stage == Stage::Overdue,
        team_told: days_left < -30,
        devices: vec![DeviceIssues {
            device_model: model.into(),
            platform,
            lookout_id: Some("device-1".into()),
            issues: vec![IssueLine {
                key: IssueKey("k".into()),
                row: 2,
                lookout_id: Some("device-1".into()),
                device_model: model.into(),
                platform,
                kind,
                issue: issue.into(),
                app_name: (!app.is_empty()).then(|| app.into()),
                // App issues are high risk here, so every card is checked for "high risk".
                risk: if kind == IssueKind::VulnerableApp {
                    Risk::High
                } else {
                    Risk::Moderate
                },
                detected,
                deadline,
                days_left,
                due: true,
                last_os: None,
            }],
        }],
    }
}

fn renderer() -> Renderer {
    Renderer::new(
        None,
        &LANGUAGES.map(String::from),
        MessageConstants {
            contact: "DGP-DSI-PROXIMITE@engie.com".into(),
            signature: "Votre support de proximité DGP/DCP/HQ/EHP/MyPower".into(),
            by_language: [(
                "en".to_string(),
                super::LanguageConstants {
                    contact: "DGP-DSI-PROXIMITE@engie.com".into(),
                    signature: "Your local IT support DGP/DCP/HQ/EHP/MyPower".into(),
                },
            )]
            .into(),
            grace_days: 30,
            time_zone: chrono_tz::Europe::Paris,
        },
    )
    .expect("built-in templates")
}

/// The words of one language that must never appear in the other's message.
fn foreign_words(language: &str) -> &'static [&'static str] {
    match language {
        "fr" => &[
            " the ",
            "Please",
            "Thank you",
            "Hello",
            " days",
            "update:",
            "Your ",
        ],
        _ => &[
            " le ",
            " à ",
            "Bonjour",
            "Votre",
            "jour",
            "mise à jour",
            "Merci",
            "dépass",
        ],
    }
}

/// Every fact a case must state, as a list of broken promises (empty = right).
fn check(
    kind: IssueKind,
    platform: Platform,
    stage: &str,
    days_left: i64,
    msg: &RenderedMessage,
) -> Vec<String> {
    let fr = msg.language == "fr";
    let card = msg.card.to_string();
    let all = format!("{}\n{}\n{}", msg.subject, msg.text, card);
    let mut broken = Vec::new();
    let mut must = |cond: bool, what: &str| {
        if !cond {
            broken.push(what.to_string());
        }
    };
    let app_issue = matches!(kind, IssueKind::VulnerableApp | IssueKind::AgentOutOfDate);
    let (ios_system, android_system, ios_store, android_store) = if fr {
        (
            "MISE À JOUR LOGICIELLE",
            "MISE À JOUR DU LOGICIEL",
            "ouvrir l'App Store",
            "ouvrir Google Play",
        )
    } else {
        (
            "SOFTWARE UPDATE, then",
            "SETTINGS > SOFTWARE UPDATE (or",
            "open the App Store",
            "open Google Play",
        )
    };
    let ios = platform != Platform::Android;
    let android = platform != Platform::Ios;
    // A model Apple no longer updates gets no system step: it would ask the impossible.
    let eos = stage == "end of support";
    for (text, name) in [(&msg.text, "text"), (&card, "card")] {
        must(
            text.contains(ios_system) == (ios && !app_issue && !eos),
            &format!("{name}: iOS system update step shown iff an iOS system issue"),
        );
        must(
            text.contains(android_system) == (android && !app_issue),
            &format!("{name}: Android system update step shown iff an Android system issue"),
        );
        must(
            text.contains(ios_store) == (ios && app_issue),
            &format!("{name}: App Store step shown iff an iOS app issue"),
        );
        must(
            text.contains(android_store) == (android && app_issue),
            &format!("{name}: Google Play step shown iff an Android app issue"),
        );
        let expected_app = match kind {
            IssueKind::AgentOutOfDate => Some("Lookout for Work"),
            IssueKind::VulnerableApp if platform == Platform::Ios => Some("Edge"),
            IssueKind::VulnerableApp => Some("Chrome"),
            _ => None,
        };
        if let Some(app) = expected_app {
            let step = if fr {
                format!("mettre à jour : {app}.")
            } else {
                format!("update: {app}.")
            };
            must(
                text.contains(&step),
                &format!("{name}: the store step names {app}"),
            );
        }
        must(
            text.contains(if fr { "risque élevé" } else { "high risk" })
                == (kind == IssueKind::VulnerableApp),
            &format!("{name}: high risk shown iff the issue is high risk"),
        );
    }
    let deadline = super::format_date(as_of() + Duration::days(days_left), &msg.language);
    must(all.contains(&deadline), "the deadline date is shown");
    let (by, tomorrow, today, passed) = if fr {
        (
            format!("d'ici le {deadline} inclus"),
            "demain",
            "aujourd'hui",
            "date limite",
        )
    } else {
        (format!("by {deadline}"), "tomorrow", "Today", "deadline")
    };
    match stage {
        "first" | "repeat" | "last days" | "end of support" => {
            must(
                msg.subject.contains(&by),
                "the subject gives the last day to act",
            );
            must(msg.text.contains(&by), "the text gives the last day to act");
        }
        "day before" => {
            must(
                msg.subject.to_lowercase().contains(tomorrow),
                "the subject says tomorrow",
            );
            must(msg.text.contains(tomorrow), "the text says tomorrow");
        }
        "last day" => {
            must(
                msg.subject.to_lowercase().contains(&today.to_lowercase()),
                "the subject says today",
            );
            must(msg.text.contains(today), "the text says today");
        }
        _ => {
            must(
                msg.subject.contains(passed),
                "the subject says the deadline passed",
            );
            must(
                msg.text
                    .contains(if fr { "à tout moment" } else { "at any time" }),
                "access can be cut at any time",
            );
        }
    }
    let told = if fr {
        "signalé à l'équipe sécurité"
    } else {
        "reported to the security team"
    };
    must(
        msg.text.contains(told) && card.contains(told) || stage != "long overdue",
        "long overdue: says the security team has been told",
    );
    must(
        !all.contains(told) || stage == "long overdue",
        "says the team has been told only when it has",
    );
    let (cannot, replace) = if fr {
        (
            "ne peut plus être mis à jour au-delà de la version iOS 15",
            "pour le remplacement de ce terminal",
        )
    } else {
        (
            "cannot be updated beyond iOS 15",
            "to have this device replaced",
        )
    };
    for (text, name) in [(&msg.text, "text"), (&card, "card")] {
        must(
            (text.contains(cannot) && text.contains(replace)) == eos,
            &format!(
                "{name}: says the device cannot be updated, and whom to ask, iff end of support"
            ),
        );
    }
    let lower = all.to_lowercase();
    for wrong in [
        "0 jour",
        "0 day",
        "avant le",
        "coupé",
        "is cut",
        "cuts access",
        "jusqu'à que",
        "pouvez vous",
        " la bal ",
    ] {
        must(!lower.contains(wrong), &format!("never says {wrong:?}"));
    }
    must(
        !all.contains("0 jours restants") && !all.contains("(0 days"),
        "never counts 0 days",
    );
    for word in foreign_words(&msg.language) {
        must(
            !msg.text.contains(word) && !card.contains(word),
            &format!("no foreign word {word:?}"),
        );
    }
    let signature = if fr {
        "Votre support de proximité"
    } else {
        "Your local IT support"
    };
    must(
        msg.text.trim_end().ends_with("DGP/DCP/HQ/EHP/MyPower") && msg.text.contains(signature),
        "signed in its own language",
    );
    must(
        card.contains(signature),
        "the card is signed in its own language",
    );
    broken
}

/// The words of a card, one element a line (`title: value` for facts), for golden files.
pub(crate) fn card_text(card: &serde_json::Value) -> String {
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("isVisible") == Some(&serde_json::Value::Bool(false)) {
                    return;
                }
                if let (Some(t), Some(val)) = (map.get("title"), map.get("value")) {
                    let _ = writeln!(
                        out,
                        "{}: {}",
                        t.as_str().unwrap_or(""),
                        val.as_str().unwrap_or("")
                    );
                } else if let Some(serde_json::Value::String(text)) = map.get("text") {
                    let _ = writeln!(out, "{text}");
                }
                for key in ["body", "items", "facts", "columns", "actions"] {
                    if let Some(child) = map.get(key) {
                        walk(child, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(card, &mut out);
    out
}

fn golden_path(language: &str, kind: IssueKind) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("reminder.{language}.{}.txt", kind.as_str()))
}

/// Runs the official Adaptive Cards renderer (npm `adaptivecards`, installed by `npm ci`)
/// on the cards: parse, then `validateProperties()`; returns each card's messages.
pub(crate) fn official_card_messages(cards: &[serde_json::Value]) -> Vec<Vec<String>> {
    use std::io::Write as _;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new("node")
        .arg(root.join("tests/node/validate-cards.js"))
        .current_dir(&root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node (install Node.js, then `npm ci`)");
    let input = serde_json::to_vec(cards).expect("cards serialise");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write cards to node");
    let out = child.wait_with_output().expect("node finishes");
    assert!(
        out.status.success(),
        "the card validator failed (run `npm ci`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("validator prints JSON")
}

#[test]
fn every_kind_platform_stage_and_language_says_what_is_true() {
    let renderer = renderer();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut broken = Vec::new();
    let mut cards = Vec::new();
    let mut names = Vec::new();
    for language in LANGUAGES {
        for kind in IssueKind::ALL {
            let mut golden = String::new();
            for (_, platform) in combinations().into_iter().filter(|(k, _)| *k == kind) {
                // An outdated iOS on a model Apple no longer updates: the end-of-support case.
                let eos = (kind == IssueKind::OsOutOfDate && platform == Platform::Ios)
                    .then_some(("end of support", Stage::First, 12));
                for (stage_name, stage, days_left) in STAGES.into_iter().chain(eos) {
                    let mut r = reminder(kind, platform, stage, days_left);
                    if stage_name == "end of support" {
                        r.devices[0].device_model = "iPhone 7".into();
                        r.devices[0].issues[0].device_model = "iPhone 7".into();
                        r.devices[0].issues[0].last_os = Some("iOS 15".into());
                    }
                    let msg = renderer.render(&r, as_of(), language).expect("renders");
                    let case = format!(
                        "{language} {} {} {stage_name}",
                        kind.as_str(),
                        platform.as_str()
                    );
                    for b in check(kind, platform, stage_name, days_left, &msg) {
                        broken.push(format!("{case}: {b}"));
                    }
                    writeln!(
                        golden,
                        "=== {case}\nSubject: {}\n\n{}",
                        msg.subject, msg.text
                    )
                    .unwrap();
                    writeln!(golden, "--- card\n{}", card_text(&msg.card)).unwrap();
                    cards.push(msg.card);
                    names.push(case);
                }
            }
            let path = golden_path(language, kind);
            if update {
                std::fs::write(&path, &golden).expect("write golden file");
            } else {
                let expected = std::fs::read_to_string(&path).unwrap_or_default();
                if expected != golden {
                    broken.push(format!(
                        "{} differs from the rendered text (review, then UPDATE_GOLDEN=1)",
                        path.display()
                    ));
                }
            }
        }
    }
    for (name, messages) in names.iter().zip(official_card_messages(&cards)) {
        if !messages.is_empty() {
            broken.push(format!("{name}: card: {messages:?}"));
        }
    }
    assert!(cards.len() >= 110, "{} cases", cards.len());
    assert!(
        broken.is_empty(),
        "{} broken:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_official_validator_catches_a_broken_card() {
    let bad = serde_json::json!({
        "type": "AdaptiveCard", "version": "1.5",
        "body": [{ "type": "TextBlock", "text": "x", "color": "Purple" }, { "type": "Nope" }]
    });
    let messages = official_card_messages(&[bad]);
    assert_eq!(messages[0].len(), 2, "{messages:?}");
}

/// An owner with `n` issues over `n / 10` devices of both platforms, every kind, distinct
/// apps with long names, deadlines spread from long past to weeks ahead.
fn owner_with_many_issues(n: usize) -> PlannedReminder {
    let mut devices: Vec<DeviceIssues> = Vec::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let kind = IssueKind::ALL[i % 4];
        let platform = if (i / 10) % 2 == 0 {
            Platform::Android
        } else {
            Platform::Ios
        };
        let days_left = (i as i64 % 60) - 30;
        let mut line =
            reminder(kind, platform, Stage::Overdue, days_left).devices[0].issues[0].clone();
        let device = format!("device-{}", i / 10);
        line.lookout_id = Some(device.as_str().into());
        line.device_model = format!("Model {} {}", i / 10, "X".repeat(300)).into();
        if kind == IssueKind::VulnerableApp {
            let app = format!("App number {i} with a long name {}", "Y".repeat(200));
            line.issue = format!("{app}(com.example.app{i})").into();
            line.app_name = Some(app.into());
        }
        lines.push(line);
    }
    // As the plan orders them: lines most urgent first, devices by their most urgent line.
    lines.sort_by_key(|l| l.days_left);
    for line in lines {
        match devices.iter_mut().find(|d| d.lookout_id == line.lookout_id) {
            Some(d) => d.issues.push(line),
            None => devices.push(DeviceIssues {
                device_model: line.device_model.clone(),
                platform: line.platform,
                lookout_id: line.lookout_id.clone(),
                issues: vec![line],
            }),
        }
    }
    PlannedReminder {
        owner: OwnerEmail::parse("owner@example.com").expect("valid"),
        stage: Stage::Overdue,
        escalate: true,
        team_told: false,
        devices,
    }
}

#[test]
fn an_owner_with_500_issues_fits_every_channel_most_urgent_first() {
    // Documented limits (../shared/docs/teams-delivery.md): a Workflows "Post card" body about
    // 28 KB; a bot message what the bot channel refuses above (`MAX_ACTIVITY_BYTES`, 28 KB);
    // Graph sendMail 4 MB per request.
    const WORKFLOWS_MAX: usize = 28 * 1024;
    const BOT_MAX: usize = crate::deliver::MAX_ACTIVITY_BYTES;
    const MAIL_MAX: usize = 4 * 1024 * 1024;
    let renderer = renderer();
    let r = owner_with_many_issues(500);
    let mut cards = Vec::new();
    for language in LANGUAGES {
        let msg = renderer.render(&r, as_of(), language).expect("renders");
        let workflows = serde_json::to_vec(&crate::deliver::webhook_body(
            Some("owner@example.com"),
            &msg.card,
        ))
        .unwrap()
        .len();
        let bot = serde_json::to_vec(&crate::deliver::activity(&msg))
            .unwrap()
            .len();
        let mail = serde_json::to_vec(&crate::deliver::mail_body(
            "owner@example.com",
            &msg.subject,
            &msg.html,
        ))
        .unwrap()
        .len();
        assert!(
            workflows < WORKFLOWS_MAX,
            "{language}: Workflows body {workflows} bytes"
        );
        assert!(bot < BOT_MAX, "{language}: bot activity {bot} bytes");
        assert!(mail < MAIL_MAX, "{language}: mail {mail} bytes");
        assert!(
            msg.text.len() < WORKFLOWS_MAX,
            "{language}: text {} bytes",
            msg.text.len()
        );
        let more = if language == "fr" {
            "… et 480 autres problèmes"
        } else {
            "… and 480 more issues"
        };
        assert!(msg.text.contains(more), "{}", msg.text);
        assert!(msg.card.to_string().contains(more));
        // The most urgent deadline (30 days past) is among the lines shown.
        let most_urgent = super::format_date(as_of() - Duration::days(30), language);
        assert!(msg.text.contains(&most_urgent), "{}", msg.text);
        let shown = msg.text.lines().filter(|l| l.starts_with("  - ")).count();
        assert_eq!(shown, super::templates::MAX_LINES_SHOWN);
        // Every step is still there, with the apps beyond ten counted.
        let more_apps = if language == "fr" {
            " autres."
        } else {
            " more."
        };
        assert!(msg.text.contains(more_apps), "{}", msg.text);
        println!(
            "{language}: Workflows {workflows} B, bot {bot} B, mail {mail} B, text {} B",
            msg.text.len()
        );
        cards.push(msg.card);
    }
    for messages in official_card_messages(&cards) {
        assert!(messages.is_empty(), "{messages:?}");
    }
}
