//! The deployment (infra/) sets every setting the app needs: each `%SETTING%` a function.json
//! reads (a missing one leaves the timer dead while HTTP keeps working), and, for every channel
//! and source the template can configure, settings that pass the product's own start-up
//! validation (`Config::from_env_map`), read from the `settings*` blocks of
//! infra/resources.bicep.

use lookout_reminders::config::{Config, Env};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `var settingsX = { NAME: value ... }` blocks: block name → (setting, Bicep expression).
fn settings_blocks(bicep: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut blocks = BTreeMap::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    for (n, line) in bicep.lines().enumerate() {
        if let Some((name, entries)) = current.as_mut() {
            if line.trim_start().starts_with('}') {
                let (name, entries) = current.take().unwrap();
                blocks.insert(name, entries);
                continue;
            }
            let text = line.trim();
            if text.is_empty() || text.starts_with("//") {
                continue;
            }
            let (key, value) = text.split_once(':').unwrap_or_else(|| {
                panic!(
                    "infra/resources.bicep line {}: block {name} must be flat `NAME: value` lines",
                    n + 1
                )
            });
            entries.push((key.trim().to_string(), value.trim().to_string()));
        } else if let Some(rest) = line.strip_prefix("var settings") {
            if let Some(name) = rest.strip_suffix(" = {") {
                current = Some((format!("settings{name}"), Vec::new()));
            }
        }
    }
    assert!(current.is_none(), "a settings block is not closed");
    blocks
}

/// `param name type = default` → default (string, int and bool literals).
fn param_defaults(bicep: &str) -> HashMap<String, String> {
    bicep
        .lines()
        .filter_map(|l| l.strip_prefix("param "))
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let name = parts.next()?;
            let _type = parts.next()?;
            let default = parts.next()?.strip_prefix("= ")?;
            let literal = match default.strip_prefix('\'') {
                Some(quoted) => quoted.strip_suffix('\'')?,
                None if default.chars().all(|c| c.is_ascii_alphanumeric()) => default,
                None => return None,
            };
            Some((name.to_string(), literal.to_string()))
        })
        .collect()
}

/// Every `%NAME%` a function.json reads, with its file.
fn function_json_references() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo()).unwrap() {
        let dir = entry.unwrap().path();
        let file = dir.join("function.json");
        if !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find('%') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else { break };
            let name = &after[..end];
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                let rel = file.strip_prefix(repo()).unwrap_or(Path::new(""));
                found.push((rel.display().to_string(), name.to_string()));
            }
            rest = &after[end + 1..];
        }
    }
    found.sort();
    found
}

/// The `%SETTING%` references that settingsCore (set on every deployment) does not set.
fn missing_function_settings(bicep: &str) -> Vec<String> {
    let blocks = settings_blocks(bicep);
    let core: Vec<&str> = blocks
        .get("settingsCore")
        .map(|b| b.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    function_json_references()
        .into_iter()
        .filter(|(_, name)| !core.contains(&name.as_str()))
        .map(|(file, name)| format!("{name} (read by {file})"))
        .collect()
}

/// A value standing for what Azure puts in a setting: a literal as written, a parameter's
/// value (the operator's input, else its default), else a realistic value of the kind the
/// setting holds (a resource property, a Key Vault reference the host resolves).
fn value_of(name: &str, expr: &str, params: &HashMap<String, String>) -> String {
    if let Some(lit) = expr.strip_prefix('\'').and_then(|e| e.strip_suffix('\'')) {
        if !lit.contains("${") {
            return lit.to_string();
        }
    }
    if let Some(value) = params.get(expr) {
        return value.clone();
    }
    // The two conversions the template applies to int / bool parameters.
    if let Some(inner) = expr
        .strip_prefix("toLower(")
        .and_then(|e| e.strip_suffix(')'))
    {
        return value_of(name, inner, params).to_lowercase();
    }
    if let Some(inner) = expr
        .strip_prefix("string(")
        .and_then(|e| e.strip_suffix(')'))
    {
        return value_of(name, inner, params);
    }
    if name.ends_with("_URL") {
        "https://placeholder.example.com/path".into()
    } else if name.ends_with("_ID") {
        "0f4a3a8e-8f5e-4c8b-9a57-0b7c2a1e5d11".into()
    } else if name.contains("MAILBOX") || name.contains("EMAIL") {
        "reminders@contoso.com".into()
    } else if name == "REMINDERS_ALLOWED_DOMAINS" {
        "contoso.com".into()
    } else if name == "REMINDERS_SHAREPOINT_FILE_PATH" {
        "General/issues-export.xlsx".into()
    } else {
        "placeholder".into()
    }
}

/// The app settings a deployment with these blocks gets, as the host would pass them, with
/// the variables Azure Functions itself sets (managed identity endpoint).
fn deployed_env(bicep: &str, block_names: &[&str], overrides: &[(&str, &str)]) -> Env {
    let blocks = settings_blocks(bicep);
    let mut params = param_defaults(bicep);
    // What the operator passes for the optional parts (README, Deploy).
    for (param, value) in OPERATOR_INPUT {
        params.insert(param.to_string(), value.to_string());
    }
    let mut env = HashMap::from([
        (
            "IDENTITY_ENDPOINT".to_string(),
            "http://localhost:8081/msi/token".to_string(),
        ),
        ("IDENTITY_HEADER".to_string(), "header".to_string()),
    ]);
    for block in block_names {
        let entries = blocks
            .get(*block)
            .unwrap_or_else(|| panic!("infra/resources.bicep has no `var {block} = {{` block"));
        for (name, expr) in entries {
            env.insert(name.clone(), value_of(name, expr, &params));
        }
    }
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    Env(env)
}

/// Start-up validation (which validates the chosen source and ledger), and that the chosen
/// kinds are the Azure ones.
fn validate(env: &Env) -> Result<Config, String> {
    let cfg = Config::from_env_map(env).map_err(|e| e.to_string())?;
    match env.get("REMINDERS_SOURCE") {
        Some("blob") => drop(cfg.azure.blob_export().ok_or("not a Blob source")?),
        Some("sharepoint") => drop(cfg.azure.sharepoint().ok_or("not a SharePoint source")?),
        other => {
            return Err(format!(
                "REMINDERS_SOURCE is {other:?}, not blob or sharepoint"
            ))
        }
    }
    cfg.azure.blob_state().ok_or("not a Blob ledger")?;
    Ok(cfg)
}

/// Parameters without a usable default that the operator sets for the parts they use.
const OPERATOR_INPUT: [(&str, &str); 4] = [
    (
        "sharePointSiteUrl",
        "https://contoso.sharepoint.com/sites/Mobility",
    ),
    ("sharePointFilePath", "General/issues-export.xlsx"),
    ("teamsAppId", "1542629c-01b3-4a6d-8f76-1938b779e48d"),
    ("senderMailbox", "reminders@contoso.com"),
];

const SOURCES: [(&str, &str); 2] = [
    ("blob", "settingsBlobSource"),
    ("sharepoint", "settingsSharePointSource"),
];
const CHANNELS: [(&str, &[&str]); 4] = [
    ("teams_bot", &["settingsTeamsBot"]),
    ("workflows", &["settingsWorkflows"]),
    ("email", &["settingsEmail"]),
    ("teams_bot,email", &["settingsTeamsBot", "settingsEmail"]),
];

#[test]
fn every_setting_a_function_json_reads_is_set_on_every_deployment() {
    let refs = function_json_references();
    assert!(
        refs.iter().any(|(_, n)| n == "REMINDER_SCHEDULE"),
        "the timer reads %REMINDER_SCHEDULE%: {refs:?}"
    );
    let missing = missing_function_settings(&read("infra/resources.bicep"));
    assert!(
        missing.is_empty(),
        "infra/resources.bicep settingsCore does not set: {missing:?}"
    );
}

#[test]
fn removing_the_schedule_from_infra_is_caught() {
    let bicep = read("infra/resources.bicep");
    let line = "  REMINDER_SCHEDULE: reminderSchedule\n";
    assert!(bicep.contains(line), "settingsCore sets the schedule");
    let without = bicep.replace(line, "");
    let missing = missing_function_settings(&without);
    assert_eq!(
        missing,
        vec!["REMINDER_SCHEDULE (read by function_timer/function.json)".to_string()]
    );
}

#[test]
fn the_default_schedule_is_a_six_field_ncrontab_expression() {
    let main = param_defaults(&read("infra/main.bicep"));
    let resources = param_defaults(&read("infra/resources.bicep"));
    for defaults in [&main, &resources] {
        let schedule = &defaults["reminderSchedule"];
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        assert_eq!(
            fields.len(),
            6,
            "{schedule}: sec min hour day month weekday"
        );
        assert!(fields
            .iter()
            .all(|f| f.chars().all(|c| c.is_ascii_digit() || "*/,-".contains(c))));
    }
    assert_eq!(main["reminderSchedule"], resources["reminderSchedule"]);
    // The deployed default is the one the README and local settings document: several morning
    // firings, so a first run longer than one invocation's time budget completes the same day.
    let local: serde_json::Value =
        serde_json::from_str(&read("local.settings.json.example")).expect("local settings");
    assert_eq!(
        Some(main["reminderSchedule"].as_str()),
        local["Values"]["REMINDER_SCHEDULE"].as_str(),
        "infra and local.settings.json.example disagree on the default schedule"
    );
    assert!(
        read("infra/main.parameters.json").contains(&format!(
            "REMINDER_SCHEDULE={}",
            main["reminderSchedule"].as_str()
        )),
        "main.parameters.json's azd default differs from the template's"
    );
}

#[test]
fn every_channel_and_source_the_template_offers_passes_start_up_validation() {
    let bicep = read("infra/resources.bicep");
    for (source, source_block) in SOURCES {
        for (channels, channel_blocks) in CHANNELS {
            let mut blocks = vec!["settingsCore", source_block];
            blocks.extend_from_slice(channel_blocks);
            let env = deployed_env(
                &bicep,
                &blocks,
                &[
                    ("REMINDERS_CHANNEL", channels),
                    ("REMINDERS_SOURCE", source),
                ],
            );
            let cfg = validate(&env).unwrap_or_else(|e| {
                panic!("source {source}, channels {channels}: the deployed settings fail: {e}")
            });
            assert_eq!(
                cfg.delivery
                    .channels
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                channels
            );
        }
    }
}

#[test]
fn the_report_folder_the_operator_sets_reaches_the_sharepoint_deployment_and_passes_validation() {
    let bicep = read("infra/resources.bicep");
    let entries = &settings_blocks(&bicep)["settingsSharePointSource"];
    assert!(
        entries
            .iter()
            .any(|(name, expr)| name == "REMINDERS_REPORT_SHAREPOINT_FOLDER"
                && expr == "reportSharePointFolder"),
        "{entries:?}"
    );
    // Unset (the template's default): valid, nothing published.
    let env = deployed_env(
        &bicep,
        &[
            "settingsCore",
            "settingsSharePointSource",
            "settingsWorkflows",
        ],
        &[
            ("REMINDERS_CHANNEL", "workflows"),
            ("REMINDERS_SOURCE", "sharepoint"),
        ],
    );
    assert_eq!(validate(&env).unwrap().azure.report_sharepoint_folder, None);
    let env = deployed_env(
        &bicep,
        &[
            "settingsCore",
            "settingsSharePointSource",
            "settingsWorkflows",
        ],
        &[
            ("REMINDERS_CHANNEL", "workflows"),
            ("REMINDERS_SOURCE", "sharepoint"),
            (
                "REMINDERS_REPORT_SHAREPOINT_FOLDER",
                "General/Power Automate/reports",
            ),
        ],
    );
    assert_eq!(
        validate(&env)
            .unwrap()
            .azure
            .report_sharepoint_folder
            .as_deref(),
        Some("General/Power Automate/reports")
    );
}

#[test]
fn a_channel_block_missing_its_required_setting_is_caught() {
    let bicep = read("infra/resources.bicep");
    for (line, channels, setting) in [
        (
            "  REMINDERS_SENDER_MAILBOX: senderMailbox\n",
            "email",
            "REMINDERS_SENDER_MAILBOX",
        ),
        (
            "  REMINDERS_TEAMS_APP_ID: teamsAppId\n",
            "teams_bot",
            "REMINDERS_TEAMS_APP_ID",
        ),
        (
            "  REMINDERS_EXPORT_CONTAINER: exportsContainerName\n",
            "email",
            "REMINDERS_EXPORT_CONTAINER",
        ),
    ] {
        assert!(bicep.contains(line), "{line}");
        let without = bicep.replace(line, "");
        let env = deployed_env(
            &without,
            &[
                "settingsCore",
                "settingsBlobSource",
                "settingsTeamsBot",
                "settingsEmail",
            ],
            &[
                ("REMINDERS_CHANNEL", channels),
                ("REMINDERS_SOURCE", "blob"),
            ],
        );
        let err = validate(&env).expect_err(setting);
        assert!(err.contains(setting), "{err}");
    }
}

#[test]
fn the_digest_and_workflows_urls_arrive_as_key_vault_references() {
    let bicep = read("infra/resources.bicep");
    let blocks = settings_blocks(&bicep);
    for (block, setting) in [
        ("settingsWorkflows", "REMINDERS_WORKFLOWS_URL"),
        ("settingsDigest", "REMINDERS_DIGEST_WEBHOOK_URL"),
    ] {
        let value = &blocks[block]
            .iter()
            .find(|(k, _)| k == setting)
            .unwrap_or_else(|| panic!("{block} sets {setting}"))
            .1;
        assert!(
            value.starts_with("'@Microsoft.KeyVault("),
            "{setting}: {value}"
        );
    }
    let env = deployed_env(
        &bicep,
        &[
            "settingsCore",
            "settingsBlobSource",
            "settingsEmail",
            "settingsDigest",
        ],
        &[("REMINDERS_CHANNEL", "email"), ("REMINDERS_SOURCE", "blob")],
    );
    let cfg = validate(&env).unwrap();
    assert!(cfg.delivery.digest_webhook_url.is_some());
}

#[test]
fn every_settings_block_is_part_of_the_app_settings() {
    let bicep = read("infra/resources.bicep");
    let union_line = bicep
        .lines()
        .find(|l| l.starts_with("var appSettings = union("))
        .expect("var appSettings = union(...) in infra/resources.bicep");
    let blocks = settings_blocks(&bicep);
    assert!(blocks.len() >= 8, "{:?}", blocks.keys());
    for name in blocks.keys() {
        assert!(
            union_line.contains(name.as_str()),
            "{name} is not in appSettings"
        );
    }
    assert!(
        bicep.contains("appSettings: [for setting in items(appSettings): {"),
        "the site's siteConfig.appSettings is built from appSettings"
    );
}

#[test]
fn every_azd_parameter_is_a_parameter_of_the_template() {
    let params: serde_json::Value =
        serde_json::from_str(&read("infra/main.parameters.json")).unwrap();
    let main = read("infra/main.bicep");
    for name in params["parameters"].as_object().unwrap().keys() {
        assert!(
            main.lines()
                .any(|l| l.starts_with(&format!("param {name} "))),
            "infra/main.parameters.json sets {name}, which infra/main.bicep does not declare"
        );
    }
    let resources = read("infra/resources.bicep");
    for line in main.lines().filter_map(|l| l.strip_prefix("param ")) {
        let name = line.split(' ').next().unwrap();
        assert!(
            resources.contains(&format!("param {name} ")),
            "main.bicep's {name} is not a parameter of resources.bicep"
        );
        assert!(
            main.contains(&format!("    {name}: {name}\n")),
            "main.bicep does not pass {name} to resources.bicep"
        );
    }
}
