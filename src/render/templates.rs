//! The template set (minijinja): built-in defaults from `templates/`, each overridable by a
//! file of the same name in the operator's templates folder.

use super::{format_date, RenderedMessage};
use crate::domain::{IssueKind, Platform};
use crate::plan::{IssueLine, PlannedReminder};
use chrono::NaiveDate;
use minijinja::{context, Environment, Value};
use serde::Serialize;
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
    /// Help-desk address.
    pub contact: String,
    /// Signature.
    pub signature: String,
    /// Grace days (shown past the deadline).
    pub grace_days: i64,
    /// Time zone of the dates shown (detection dates are instants).
    #[serde(skip)]
    pub time_zone: chrono_tz::Tz,
}

/// Renders reminders in the configured languages.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    languages: Vec<String>,
    constants: MessageConstants,
}

#[derive(Serialize)]
struct IssueView {
    kind: &'static str,
    label_fr: String,
    label_en: String,
    issue: String,
    app: Option<String>,
    risk: &'static str,
    detected: String,
    deadline: String,
    days_left: i64,
    lookout_id: Option<String>,
}

#[derive(Serialize)]
struct DeviceView {
    model: String,
    platform: &'static str,
    platform_label: &'static str,
    issues: Vec<IssueView>,
}

fn labels(line: &IssueLine) -> (String, String) {
    match line.kind {
        IssueKind::VulnerableApp => {
            let app = line.app_name.clone().unwrap_or_else(|| line.issue.clone());
            (
                format!("Application {app} à mettre à jour (vulnérabilité)"),
                format!("{app} app to update (vulnerability)"),
            )
        }
        IssueKind::OsOutOfDate => (
            "Version du système (OS) à mettre à jour".into(),
            "Operating system version out of date".into(),
        ),
        IssueKind::SecurityPatchOutOfDate => (
            "Correctif de sécurité Android à installer".into(),
            "Android security patch level out of date".into(),
        ),
        IssueKind::AgentOutOfDate => (
            "Application Lookout (antivirus mobile) à mettre à jour".into(),
            "Lookout app (mobile antivirus) out of date".into(),
        ),
    }
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
        let platforms = reminder.platforms();
        let devices: Vec<DeviceView> = reminder
            .devices
            .iter()
            .map(|d| DeviceView {
                model: if d.device_model.is_empty() {
                    "?".into()
                } else {
                    d.device_model.clone()
                },
                platform: d.platform.as_str(),
                platform_label: match d.platform {
                    Platform::Android => "Android",
                    Platform::Ios => "iOS",
                    Platform::Unknown => "",
                },
                issues: d
                    .issues
                    .iter()
                    .map(|i| {
                        let (label_fr, label_en) = labels(i);
                        IssueView {
                            kind: i.kind.as_str(),
                            label_fr,
                            label_en,
                            issue: i.issue.clone(),
                            app: i.app_name.clone(),
                            risk: i.risk.as_str(),
                            detected: format_date(
                                i.detected
                                    .with_timezone(&self.constants.time_zone)
                                    .date_naive(),
                                language,
                            ),
                            deadline: format_date(i.deadline, language),
                            days_left: i.days_left,
                            lookout_id: i.lookout_id.clone(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let earliest = reminder.issues().map(|i| i.deadline).min().unwrap_or(as_of);
        let ctx = context! {
            language => language,
            owner => reminder.owner.as_str(),
            stage => reminder.stage.as_str(),
            escalate => reminder.escalate,
            devices => devices,
            days_left => reminder.min_days_left(),
            deadline => format_date(earliest, language),
            show_ios => platforms.iter().any(|p| matches!(p, Platform::Ios | Platform::Unknown)),
            show_android => platforms.iter().any(|p| matches!(p, Platform::Android | Platform::Unknown)),
            has_app_issue => reminder.issues().any(|i| i.kind == IssueKind::VulnerableApp),
            contact => &self.constants.contact,
            signature => &self.constants.signature,
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
    use crate::domain::{OwnerEmail, Risk};
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
    };
    PlannedReminder {
        owner: OwnerEmail::parse("sample@example.com").unwrap(),
        stage: Stage::Final,
        escalate: true,
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
            "Nous avons une alerte sur nos serveurs indiquant que votre terminal mobile \"SM-A528B\" n'est pas à jour",
            "l'antivirus mobile coupera les accès aux applications d'entreprise (okta, mail, contact, calendrier etc)",
            "Pouvez vous suivre le mode opératoire suivant svp",
            "Android Smartphone/Tablette : les mises à jour se font automatiquement entre 22H & 6H du matin.",
            "n'hésitez pas à contacter la bal help@example.com",
            "En vous remerciant par avance pour votre action.",
            "12 jours restants (avant le 31 mars 2024)",
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
        assert!(msg.text.contains("détectée le 4 mars 2024"), "{}", msg.text);
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
    fn a_language_without_templates_is_refused() {
        let err = Renderer::new(None, &["de".to_string()], constants()).unwrap_err();
        assert!(err.to_string().contains("'de'"), "{err}");
    }
}
