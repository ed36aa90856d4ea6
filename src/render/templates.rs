//! The template set (minijinja): built-in defaults from `templates/`, each overridable by a
//! file of the same name in the operator's templates folder.

use super::{format_date, RenderedMessage};
use crate::domain::{IssueKind, Platform, Risk};
use crate::plan::{IssueLine, PlannedReminder};
use chrono::NaiveDate;
use minijinja::{context, Environment, Value};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Built-in templates, embedded so the binary works from any folder.
const BUILTIN: [(&str, &str); 8] = [
    (
        "reminder.fr.subject.j2",
        include_str!("../../templates/reminder.fr.subject.j2"),
    ),
    (
        "reminder.en.subject.j2",
        include_str!("../../templates/reminder.en.subject.j2"),
    ),
    (
        "reminder.fr.txt.j2",
        include_str!("../../templates/reminder.fr.txt.j2"),
    ),
    (
        "reminder.en.txt.j2",
        include_str!("../../templates/reminder.en.txt.j2"),
    ),
    (
        "reminder.fr.card.json.j2",
        include_str!("../../templates/reminder.fr.card.json.j2"),
    ),
    (
        "reminder.en.card.json.j2",
        include_str!("../../templates/reminder.en.card.json.j2"),
    ),
    (
        "reminder.html.j2",
        include_str!("../../templates/reminder.html.j2"),
    ),
    (
        "digest.card.json.j2",
        include_str!("../../templates/digest.card.json.j2"),
    ),
];

/// A template problem: names the template and the line.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template failed to load or render.
    #[error("template {name}: {detail}")]
    Template {
        /// Template name.
        name: String,
        /// minijinja's message (with line).
        detail: String,
    },
    /// A card template did not produce valid JSON.
    #[error("template {name}: the output is not valid JSON: {detail}")]
    CardJson {
        /// Template name.
        name: String,
        /// The JSON error.
        detail: String,
    },
    /// No template for a language.
    #[error("no templates for language '{0}' (expected reminder.{0}.txt.j2 and friends)")]
    UnknownLanguage(String),
    /// The templates folder cannot be read.
    #[error("templates folder {path}: {detail}")]
    Folder {
        /// Path.
        path: String,
        /// Error.
        detail: String,
    },
}

/// Static values shown in every message.
#[derive(Clone, Debug, Serialize)]
pub struct MessageConstants {
    /// Help-desk address (languages without their own in `by_language`).
    pub contact: String,
    /// Signature (languages without their own in `by_language`).
    pub signature: String,
    /// Contact and signature per language (`en` → English signature), so an English
    /// message never ends with the French signature.
    #[serde(skip)]
    pub by_language: BTreeMap<String, LanguageConstants>,
    /// Grace days (shown past the deadline).
    pub grace_days: i64,
    /// Time zone of the dates shown (detection dates are instants).
    #[serde(skip)]
    pub time_zone: chrono_tz::Tz,
}

/// The contact and signature of one language.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LanguageConstants {
    /// Help-desk address.
    pub contact: String,
    /// Signature.
    pub signature: String,
}

impl MessageConstants {
    /// The contact and signature shown in `language`.
    pub fn for_language(&self, language: &str) -> LanguageConstants {
        self.by_language
            .get(language)
            .cloned()
            .unwrap_or_else(|| LanguageConstants {
                contact: self.contact.clone(),
                signature: self.signature.clone(),
            })
    }
}

/// Renders reminders in the configured languages.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    languages: Vec<String>,
    constants: MessageConstants,
}

/// Issue lines shown in one message, most urgent first; the rest are counted ("and N more").
/// Twenty lines keep a card far under Teams' limits (about 28 KB for a Workflows post, 40 KB
/// for a bot message) whatever the number of issues, and stay readable on a phone.
pub const MAX_LINES_SHOWN: usize = 20;

/// Apps named in one store step before "and N more".
pub const MAX_APPS_NAMED: usize = 10;

/// Characters kept of one value from the export (model, app name): an absurd value cannot
/// push a message past a channel's size limit.
pub const MAX_VALUE_CHARS: usize = 80;

/// [`clean_text`], then cut to [`MAX_VALUE_CHARS`] with an ellipsis.
fn shown_value(text: &str) -> String {
    let clean = clean_text(text);
    let clean = clean.trim();
    if clean.chars().count() <= MAX_VALUE_CHARS {
        return clean.to_string();
    }
    let mut cut: String = clean.chars().take(MAX_VALUE_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[derive(Serialize)]
struct IssueView {
    kind: &'static str,
    label_fr: String,
    label_en: String,
    issue: String,
    app: Option<String>,
    risk: &'static str,
    high_risk: bool,
    detected: String,
    deadline: String,
    days_left: i64,
    /// `later`, `tomorrow`, `today` or `passed`: which deadline sentence applies.
    due: &'static str,
    /// The model cannot install a current OS: the last one it supports.
    last_os: Option<String>,
    lookout_id: Option<String>,
}

#[derive(Serialize)]
struct DeviceView {
    model: String,
    platform: &'static str,
    platform_label: &'static str,
    issues: Vec<IssueView>,
}

/// One instruction of the message: a system update or app updates, on one platform.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct StepView {
    /// `system` (OS / security patch) or `store` (App Store / Google Play).
    action: &'static str,
    /// `ios` or `android`.
    platform: &'static str,
    /// The apps to update from the store, in order of first mention (at most
    /// [`MAX_APPS_NAMED`]).
    apps: Vec<String>,
    /// Apps not named.
    apps_more: usize,
}

/// The deadline is the last day to act: `today` on that day, `passed` from the next day.
fn due_word(days_left: i64) -> &'static str {
    match days_left {
        d if d < 0 => "passed",
        0 => "today",
        1 => "tomorrow",
        _ => "later",
    }
}

/// The name of the app an app issue is about, as the store shows it.
fn app_of(line: &IssueLine) -> Option<String> {
    match line.kind {
        IssueKind::AgentOutOfDate => Some("Lookout for Work".into()),
        IssueKind::VulnerableApp => Some(shown_value(
            line.app_name.as_deref().unwrap_or(line.issue.as_str()),
        )),
        IssueKind::OsOutOfDate | IssueKind::SecurityPatchOutOfDate => None,
    }
}

/// The instructions an owner needs, each once: system updates first (a current app may
/// need the current system), then the store, each platform in the order its first device
/// appears (most urgent first). A device of unknown platform gets both platforms' steps.
fn steps_for(reminder: &PlannedReminder) -> Vec<StepView> {
    let mut steps: Vec<StepView> = Vec::new();
    for action in ["system", "store"] {
        // A device that cannot install a current OS gets no system step: it would ask the
        // impossible; the message asks for a replacement instead.
        for line in reminder.issues().filter(|l| l.last_os.is_none()) {
            let app = app_of(line);
            if (action == "store") != app.is_some() {
                continue;
            }
            let platforms: &[&'static str] = match line.platform {
                Platform::Ios => &["ios"],
                Platform::Android => &["android"],
                Platform::Unknown => &["ios", "android"],
            };
            for &platform in platforms {
                let step = match steps
                    .iter_mut()
                    .find(|s| s.action == action && s.platform == platform)
                {
                    Some(step) => step,
                    None => {
                        steps.push(StepView {
                            action,
                            platform,
                            apps: Vec::new(),
                            apps_more: 0,
                        });
                        steps.last_mut().expect("just pushed")
                    }
                };
                if let Some(app) = &app {
                    if step.apps.iter().any(|a| a.eq_ignore_ascii_case(app)) {
                        continue;
                    }
                    if step.apps.len() < MAX_APPS_NAMED {
                        step.apps.push(app.clone());
                    } else {
                        step.apps_more += 1;
                    }
                }
            }
        }
    }
    steps
}

fn labels(line: &IssueLine) -> (String, String) {
    match line.kind {
        IssueKind::VulnerableApp => {
            let app = app_of(line).unwrap_or_default();
            (
                format!("Application {app} à mettre à jour (vulnérabilité)"),
                format!("{app} app to update (vulnerability)"),
            )
        }
        IssueKind::OsOutOfDate if line.last_os.is_some() => (
            "Version du système (OS) dépassée, ce modèle n'est plus mis à jour par Apple".into(),
            "Operating system (OS) out of date, and Apple no longer updates this model".into(),
        ),
        IssueKind::OsOutOfDate => (
            "Version du système (OS) à mettre à jour".into(),
            "Operating system (OS) to update".into(),
        ),
        IssueKind::SecurityPatchOutOfDate => (
            "Correctif de sécurité Android à installer".into(),
            "Android security patch to install".into(),
        ),
        IssueKind::AgentOutOfDate => (
            "Application Lookout for Work (antivirus mobile) à mettre à jour".into(),
            "Lookout for Work app (mobile antivirus) to update".into(),
        ),
    }
}

/// Removes what would change how a value from the export reads without being seen:
/// bidirectional controls (an unclosed right-to-left override flips the words after it)
/// and zero-width characters. Other control characters become spaces.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{2064}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{061C}'
                    | '\u{FEFF}'
                    | '\u{00AD}'
            )
        })
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Escapes text for the Adaptive Card markdown subset: it is shown, never interpreted.
pub fn escape_markdown(text: &str) -> String {
    // Only what Teams' markdown subset interprets inside a line is escaped everywhere;
    // block markers (`-`, `+`, `#`, `1.`) only where they start the value. Escaping more
    // (every `-` and `.`) shows stray backslashes on some Teams mobile clients.
    const INLINE: &str = "\\`*_[]<>~";
    let mut out = String::with_capacity(text.len() + 8);
    let trimmed = text.trim_start();
    let lead = text.len() - trimmed.len();
    out.push_str(&text[..lead].replace(['\n', '\r'], " "));
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    for (i, c) in trimmed.chars().enumerate() {
        let block_marker =
            (i == 0 && "-+#>".contains(c)) || (i == digits && digits > 0 && c == '.');
        if INLINE.contains(c) || block_marker {
            out.push('\\');
        }
        // Line breaks in a value would start new markdown blocks.
        out.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
    out
}

impl Renderer {
    /// Loads the templates (built-ins, then overrides from `dir`) and checks that each
    /// language renders, so a broken override fails at start-up, not at send time.
    pub fn new(
        dir: Option<&Path>,
        languages: &[String],
        constants: MessageConstants,
    ) -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_filter("md", |v: String| escape_markdown(&v));
        for (name, source) in BUILTIN {
            env.add_template_owned(name.to_string(), source.to_string())
                .map_err(|e| RenderError::Template {
                    name: name.into(),
                    detail: e.to_string(),
                })?;
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|e| RenderError::Folder {
                path: dir.display().to_string(),
                detail: e.to_string(),
            })?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".j2") {
                    continue;
                }
                let source =
                    std::fs::read_to_string(entry.path()).map_err(|e| RenderError::Folder {
                        path: entry.path().display().to_string(),
                        detail: e.to_string(),
                    })?;
                env.add_template_owned(name.clone(), source).map_err(|e| {
                    RenderError::Template {
                        name,
                        detail: e.to_string(),
                    }
                })?;
            }
        }
        let renderer = Self {
            env,
            languages: languages.to_vec(),
            constants,
        };
        for lang in &renderer.languages {
            for part in ["subject", "txt", "card.json"] {
                let name = format!("reminder.{lang}.{part}.j2");
                if renderer.env.get_template(&name).is_err() {
                    return Err(RenderError::UnknownLanguage(lang.clone()));
                }
            }
            renderer.render(
                &sample_reminder(),
                NaiveDate::from_ymd_opt(2024, 3, 7).expect("valid date"),
                lang,
            )?;
        }
        Ok(renderer)
    }

    /// The languages rendered, default first.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// Renders a reminder in every configured language (default first).
    pub fn render_all(
        &self,
        reminder: &PlannedReminder,
        as_of: NaiveDate,
    ) -> Result<Vec<RenderedMessage>, RenderError> {
        self.languages
            .iter()
            .map(|l| self.render(reminder, as_of, l))
            .collect()
    }

    /// Renders one language.
    pub fn render(
        &self,
        reminder: &PlannedReminder,
        as_of: NaiveDate,
        language: &str,
    ) -> Result<RenderedMessage, RenderError> {
        let _ = as_of;
        // Devices come most urgent first, their lines too: the first lines are the ones to show.
        let mut budget = MAX_LINES_SHOWN;
        let devices: Vec<DeviceView> = reminder
            .devices
            .iter()
            .map(|d| {
                let shown = d.issues.len().min(budget);
                budget -= shown;
                (d, &d.issues[..shown])
            })
            .filter(|(_, lines)| !lines.is_empty())
            .map(|(d, lines)| DeviceView {
                model: match shown_value(&d.device_model).as_str() {
                    "" => "?".into(),
                    model => model.to_string(),
                },
                platform: d.platform.as_str(),
                platform_label: match d.platform {
                    Platform::Android => "Android",
                    Platform::Ios => "iOS",
                    Platform::Unknown => "",
                },
                issues: lines
                    .iter()
                    .map(|i| {
                        let (label_fr, label_en) = labels(i);
                        IssueView {
                            kind: i.kind.as_str(),
                            label_fr,
                            label_en,
                            issue: shown_value(&i.issue),
                            app: app_of(i),
                            risk: i.risk.as_str(),
                            high_risk: i.risk == Risk::High,
                            detected: format_date(
                                i.detected
                                    .with_timezone(&self.constants.time_zone)
                                    .date_naive(),
                                language,
                            ),
                            deadline: format_date(i.deadline, language),
                            days_left: i.days_left,
                            due: due_word(i.days_left),
                            last_os: i.last_os.as_deref().map(shown_value),
                            lookout_id: i.lookout_id.as_deref().map(str::to_string),
                        }
                    })
                    .collect(),
            })
            .collect();
        let more_count = reminder.issues().count() - (MAX_LINES_SHOWN - budget);
        let mut unsupported: Vec<BTreeMap<&str, String>> = Vec::new();
        for d in &reminder.devices {
            if let Some(last_os) = d.issues.iter().find_map(|i| i.last_os.as_deref()) {
                if unsupported.len() < MAX_LINES_SHOWN {
                    unsupported.push(BTreeMap::from([
                        ("model", shown_value(&d.device_model)),
                        ("last_os", shown_value(last_os)),
                    ]));
                }
            }
        }
        let earliest = reminder.issues().map(|i| i.deadline).min().unwrap_or(as_of);
        let days_left = reminder.min_days_left();
        let LanguageConstants { contact, signature } = self.constants.for_language(language);
        let ctx = context! {
            language => language,
            owner => reminder.owner.as_str(),
            stage => reminder.stage.as_str(),
            escalate => reminder.escalate,
            team_told => reminder.team_told,
            devices => devices,
            more_count => more_count,
            unsupported => unsupported,
            days_left => days_left,
            due => due_word(days_left),
            deadline => format_date(earliest, language),
            steps => steps_for(reminder),
            high_risk => reminder.issues().any(|i| i.risk == Risk::High),
            contact => contact,
            signature => signature,
            grace_days => self.constants.grace_days,
        };
        let subject = self
            .render_one(&format!("reminder.{language}.subject.j2"), &ctx)?
            .trim()
            .to_string();
        let ctx = context! { subject => &subject, ..ctx };
        let text = tidy_text(&self.render_one(&format!("reminder.{language}.txt.j2"), &ctx)?);
        let card_name = format!("reminder.{language}.card.json.j2");
        let card_src = self.render_one(&card_name, &ctx)?;
        let card: serde_json::Value =
            serde_json::from_str(&card_src).map_err(|e| RenderError::CardJson {
                name: card_name,
                detail: e.to_string(),
            })?;
        let html = self.render_one(
            "reminder.html.j2",
            &context! { language => language, subject => &subject, blocks => text_blocks(&text) },
        )?;
        Ok(RenderedMessage {
            language: language.to_string(),
            subject,
            text,
            html,
            card,
        })
    }

    /// Renders any named template with a serialisable context (the digest uses it).
    pub fn render_named(&self, name: &str, ctx: Value) -> Result<String, RenderError> {
        self.render_one(name, &ctx)
    }

    fn render_one(&self, name: &str, ctx: &Value) -> Result<String, RenderError> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| RenderError::Template {
                name: name.into(),
                detail: e.to_string(),
            })?;
        tmpl.render(ctx).map_err(|e| {
            let line = e.line().map(|l| format!("line {l}: ")).unwrap_or_default();
            RenderError::Template {
                name: name.into(),
                detail: format!("{line}{e}"),
            }
        })
    }
}

/// Collapses runs of blank lines left by template tags.
fn tidy_text(text: &str) -> String {
    let mut out = String::new();
    let mut blank = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[derive(Serialize)]
struct Block {
    kind: &'static str,
    lines: Vec<String>,
}

/// Splits plain text into paragraphs and `  - ` lists for the HTML body.
fn text_blocks(text: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for para in text.split("\n\n") {
        let mut current: Option<Block> = None;
        for line in para.lines() {
            let (kind, content) = match line.trim_start().strip_prefix("- ") {
                Some(item) if line.starts_with("  ") => ("list", item.to_string()),
                _ => ("p", line.to_string()),
            };
            match &mut current {
                Some(b) if b.kind == kind => b.lines.push(content),
                _ => {
                    if let Some(b) = current.take() {
                        blocks.push(b);
                    }
                    current = Some(Block {
                        kind,
                        lines: vec![content],
                    });
                }
            }
        }
        if let Some(b) = current {
            blocks.push(b);
        }
    }
    blocks
}

/// A reminder with every feature, used to check templates at start-up.
fn sample_reminder() -> PlannedReminder {
    use crate::domain::OwnerEmail;
    use crate::plan::{DeviceIssues, IssueKey, Stage};
    use chrono::{TimeZone, Utc};
    let line = |kind, days_left, platform| IssueLine {
        key: IssueKey("sample".into()),
        row: 2,
        lookout_id: Some("id".into()),
        device_model: "Model <x> *y*".into(),
        platform,
        kind,
        issue: "Chrome(com.android.chrome)".into(),
        app_name: Some("Chrome".into()),
        risk: Risk::High,
        detected: Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap(),
        deadline: NaiveDate::from_ymd_opt(2024, 3, 31).unwrap(),
        days_left,
        due: true,
        last_os: None,
    };
    PlannedReminder {
        owner: OwnerEmail::parse("sample@example.com").unwrap(),
        stage: Stage::Final,
        escalate: true,
        team_told: false,
        devices: vec![
            DeviceIssues {
                device_model: "SM-A528B".into(),
                platform: Platform::Android,
                lookout_id: Some("a".into()),
                issues: IssueKind::ALL
                    .iter()
                    .map(|k| line(*k, 3, Platform::Android))
                    .collect(),
            },
            DeviceIssues {
                device_model: "iPhone 7".into(),
                platform: Platform::Unknown,
                lookout_id: None,
                issues: vec![line(IssueKind::OsOutOfDate, -2, Platform::Unknown)],
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Stage;

    fn constants() -> MessageConstants {
        MessageConstants {
            contact: "c".into(),
            signature: "s".into(),
            grace_days: 30,
            by_language: Default::default(),
            time_zone: chrono_tz::Europe::Paris,
        }
    }

    fn renderer() -> Renderer {
        Renderer::new(
            None,
            &["fr".to_string(), "en".to_string()],
            MessageConstants {
                contact: "help@example.com".into(),
                signature: "Support".into(),
                ..constants()
            },
        )
        .unwrap()
    }

    fn hostile() -> PlannedReminder {
        let mut r = sample_reminder();
        r.devices[0].device_model =
            "\"}]},<script>alert(1)</script> **bold** [x](http://evil)".into();
        r
    }

    #[test]
    fn a_hostile_device_model_stays_data_in_the_card() {
        let msg = renderer()
            .render(
                &hostile(),
                NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
                "fr",
            )
            .unwrap();
        let card = msg.card.to_string();
        assert_eq!(msg.card["type"], "AdaptiveCard");
        assert!(
            card.contains("\\\\*\\\\*bold\\\\*\\\\*"),
            "markdown not escaped: {card}"
        );
        assert!(card.contains("\\\\[x\\\\]"), "{card}");
    }

    #[test]
    fn markdown_escaping_keeps_ordinary_punctuation_readable() {
        assert_eq!(escape_markdown("SM-A528B"), "SM-A528B");
        assert_eq!(
            escape_markdown("DGP-DSI-PROXIMITE@engie.com"),
            "DGP-DSI-PROXIMITE@engie.com"
        );
        assert_eq!(escape_markdown("**x** [y](z)"), "\\*\\*x\\*\\* \\[y\\](z)");
        assert_eq!(escape_markdown("- item"), "\\- item");
        assert_eq!(escape_markdown("12. point"), "12\\. point");
        assert_eq!(escape_markdown("# title"), "\\# title");
        assert_eq!(escape_markdown("a\nb"), "a b");
    }

    #[test]
    fn a_hostile_device_model_is_escaped_in_the_html() {
        let msg = renderer()
            .render(
                &hostile(),
                NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
                "en",
            )
            .unwrap();
        assert!(!msg.html.contains("<script>"), "{}", msg.html);
        assert!(msg.html.contains("&lt;script&gt;"), "{}", msg.html);
    }

    #[test]
    fn the_french_text_keeps_the_current_flow_wording() {
        let mut r = sample_reminder();
        r.devices.truncate(1);
        r.devices[0].issues.truncate(1);
        r.devices[0].issues[0].days_left = 12;
        r.stage = Stage::First;
        let msg = renderer()
            .render(&r, NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(), "fr")
            .unwrap();
        for expected in [
            "Nous avons une alerte sur nos serveurs indiquant que votre terminal mobile « SM-A528B » n'est pas à jour",
            "l'antivirus mobile pourra couper, dès le lendemain, les accès aux applications d'entreprise (Okta, messagerie, contacts, calendrier, etc.)",
            "Pouvez-vous suivre le mode opératoire suivant, s'il vous plaît :",
            "Applications sur Android : ouvrir Google Play > votre photo de profil > Gérer les applications et l'appareil > mettre à jour : Chrome.",
            "n'hésitez pas à écrire à help@example.com.",
            "En vous remerciant par avance pour votre action.",
            "à faire d'ici le 31 mars 2024 inclus (12 jours restants)",
        ] {
            assert!(msg.text.contains(expected), "missing {expected:?} in:\n{}", msg.text);
        }
        assert!(!msg.text.contains("Apple iPhone/iPad"), "{}", msg.text);
        assert!(msg.subject.contains("31 mars 2024"), "{}", msg.subject);
    }

    #[test]
    fn detection_dates_are_shown_in_the_configured_time_zone() {
        use chrono::TimeZone;
        let mut r = sample_reminder();
        r.devices.truncate(1);
        r.devices[0].issues.truncate(1);
        // 23:30 UTC on 3 March is already 4 March in Paris.
        r.devices[0].issues[0].detected =
            chrono::Utc.with_ymd_and_hms(2024, 3, 3, 23, 30, 0).unwrap();
        let msg = renderer()
            .render(&r, NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(), "fr")
            .unwrap();
        assert!(msg.text.contains("alerte du 4 mars 2024"), "{}", msg.text);
    }

    #[test]
    fn an_unknown_platform_gets_both_instructions() {
        let mut r = sample_reminder();
        r.devices.remove(0);
        let msg = renderer()
            .render(&r, NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(), "en")
            .unwrap();
        assert!(msg.text.contains("Apple iPhone/iPad"), "{}", msg.text);
        assert!(msg.text.contains("Android phone/tablet"), "{}", msg.text);
    }

    #[test]
    fn a_broken_override_fails_at_start_up_naming_the_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("reminder.fr.txt.j2"),
            "Bonjour {{ devices[0].model ",
        )
        .unwrap();
        let err = Renderer::new(Some(dir.path()), &["fr".to_string()], constants()).unwrap_err();
        assert!(err.to_string().contains("reminder.fr.txt.j2"), "{err}");
    }

    #[test]
    fn an_override_replaces_the_builtin_wording() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("reminder.fr.subject.j2"),
            "Rappel : {{ devices|length }} terminal",
        )
        .unwrap();
        let r = Renderer::new(Some(dir.path()), &["fr".to_string()], constants()).unwrap();
        let msg = r
            .render(
                &sample_reminder(),
                NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
                "fr",
            )
            .unwrap();
        assert_eq!(msg.subject, "Rappel : 2 terminal");
    }

    #[test]
    fn each_step_is_shown_once_system_first_with_every_app_named() {
        // Sample: an Android device with all four kinds, and a device of unknown platform
        // with an outdated OS.
        let msg = renderer()
            .render(
                &sample_reminder(),
                NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
                "en",
            )
            .unwrap();
        let steps: Vec<&str> = msg
            .text
            .lines()
            .filter(|l| {
                l.starts_with("Apple iPhone")
                    || l.starts_with("Android")
                    || l.starts_with("Apps on")
            })
            .collect();
        assert_eq!(steps.len(), 3, "{}", msg.text);
        assert!(
            steps[0].starts_with("Android phone/tablet: updates install"),
            "{steps:?}"
        );
        assert!(
            steps[1].starts_with("Apple iPhone/iPad: go to SETTINGS"),
            "{steps:?}"
        );
        assert!(
            steps[2].ends_with("update: Chrome, Lookout for Work."),
            "{steps:?}"
        );
    }

    #[test]
    fn bidi_controls_and_zero_width_characters_from_the_export_are_removed() {
        let mut r = sample_reminder();
        r.devices.truncate(1);
        r.devices[0].device_model = "SM-\u{202E}A528B\u{200B}\u{2067}".into();
        r.devices[0].issues[0].app_name = Some("Chr\u{200D}ome\u{202E}".into());
        let msg = renderer()
            .render(&r, NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(), "fr")
            .unwrap();
        let all = format!("{}{}{}", msg.text, msg.html, msg.card);
        for c in ['\u{202E}', '\u{200B}', '\u{2067}', '\u{200D}'] {
            assert!(!all.contains(c), "{c:?} left in {all}");
        }
        assert!(msg.text.contains("« SM-A528B »"), "{}", msg.text);
        assert!(
            msg.text.contains("Application Chrome à mettre à jour"),
            "{}",
            msg.text
        );
    }

    #[test]
    fn the_email_has_a_maximum_width_and_wraps_long_values() {
        let msg = renderer()
            .render(
                &sample_reminder(),
                NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
                "en",
            )
            .unwrap();
        assert!(msg.html.contains("max-width: 640px"), "{}", msg.html);
        assert!(msg.html.contains("overflow-wrap: anywhere"), "{}", msg.html);
    }

    #[test]
    fn each_language_gets_its_own_contact_and_signature() {
        let mut c = constants();
        c.by_language.insert(
            "en".into(),
            LanguageConstants {
                contact: "help-en@example.com".into(),
                signature: "Your support".into(),
            },
        );
        let r = Renderer::new(None, &["fr".to_string(), "en".to_string()], c).unwrap();
        let at = NaiveDate::from_ymd_opt(2024, 3, 7).unwrap();
        let en = r.render(&sample_reminder(), at, "en").unwrap();
        let fr = r.render(&sample_reminder(), at, "fr").unwrap();
        assert!(en.text.ends_with("Your support\n"), "{}", en.text);
        assert!(en.text.contains("help-en@example.com"), "{}", en.text);
        assert!(fr.text.ends_with("\ns\n"), "{}", fr.text);
        assert!(en.card.to_string().contains("Your support"));
    }

    #[test]
    fn a_language_without_templates_is_refused() {
        let err = Renderer::new(None, &["de".to_string()], constants()).unwrap_err();
        assert!(err.to_string().contains("'de'"), "{err}");
    }
}
