//! The Functions app files (`host.json`, both `function.json`, `local.settings.json.example`)
//! against the shapes the host documents, including the six-field NCRONTAB schedule.

use lookout_reminders::config::{Config, Env};
use serde_json::{json, Value};
use std::path::Path;

fn read_json(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: not JSON: {e}"))
}

/// Checks one NCRONTAB field against its range: `*`, `n`, `a-b`, lists, `*/s`, `a-b/s`.
fn field_ok(field: &str, min: u32, max: u32) -> bool {
    field.split(',').all(|part| {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(s) = step {
            if !matches!(s.parse::<u32>(), Ok(n) if n >= 1 && n <= max.max(1)) {
                return false;
            }
        }
        if range == "*" {
            return true;
        }
        let in_range = |v: &str| matches!(v.parse::<u32>(), Ok(n) if (min..=max).contains(&n));
        match range.split_once('-') {
            Some((a, b)) => {
                in_range(a) && in_range(b) && a.parse::<u32>().unwrap() <= b.parse::<u32>().unwrap()
            }
            None => in_range(range),
        }
    })
}

/// A six-field NCRONTAB expression: `{second} {minute} {hour} {day} {month} {day-of-week}`.
fn is_ncrontab(expr: &str) -> bool {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let ranges = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];
    fields.len() == 6
        && fields
            .iter()
            .zip(ranges)
            .all(|(f, (lo, hi))| field_ok(f, lo, hi))
}

#[test]
fn the_ncrontab_check_accepts_six_fields_and_refuses_five() {
    assert!(is_ncrontab("0 0 7 * * 1-5"));
    assert!(is_ncrontab("0 */5 * * * *"));
    assert!(is_ncrontab("0 30 9 * * 1,3,5"));
    assert!(
        !is_ncrontab("0 7 * * 1-5"),
        "five-field cron is not NCRONTAB"
    );
    assert!(!is_ncrontab("0 0 25 * * *"));
    assert!(!is_ncrontab("0 0 7 * * 1-9"));
}

#[test]
fn host_json_declares_the_custom_handler_with_forwarding_and_the_bundle() {
    let host = read_json("host.json");
    assert_eq!(host["version"], "2.0");
    let handler = &host["customHandler"];
    assert_eq!(
        handler["description"]["defaultExecutablePath"],
        "lookout-reminders"
    );
    assert_eq!(handler["description"]["arguments"], json!(["serve"]));
    assert_eq!(handler["enableForwardingHttpRequest"], true);
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    let timeout = host["functionTimeout"].as_str().expect("functionTimeout");
    let parts: Vec<u32> = timeout
        .split(':')
        .map(|p| p.parse().expect("hh:mm:ss"))
        .collect();
    assert_eq!(parts.len(), 3, "{timeout}");
    // Consumption allows at most 10 minutes.
    assert!(
        parts[0] * 3600 + parts[1] * 60 + parts[2] <= 600,
        "{timeout}"
    );
    assert!(host["logging"]["logLevel"]["default"].is_string());
}

#[test]
fn the_timer_function_has_one_timer_trigger_named_timer_on_the_schedule_setting() {
    let f = read_json("function_timer/function.json");
    let bindings = f["bindings"].as_array().expect("bindings");
    assert_eq!(bindings.len(), 1);
    let b = &bindings[0];
    assert_eq!(b["name"], "timer", "the handler reads Data.timer");
    assert_eq!(b["type"], "timerTrigger");
    assert_eq!(b["direction"], "in");
    let schedule = b["schedule"].as_str().unwrap();
    assert!(
        schedule == "%REMINDER_SCHEDULE%" || is_ncrontab(schedule),
        "{schedule}"
    );
    assert_ne!(
        b["runOnStartup"], true,
        "runOnStartup must never be true in production"
    );
}

#[test]
fn the_http_function_has_a_function_key_trigger_for_get_and_post_and_an_http_output() {
    let f = read_json("function_http/function.json");
    let bindings = f["bindings"].as_array().expect("bindings");
    assert_eq!(
        bindings.len(),
        2,
        "forwarding needs exactly an HTTP trigger and an HTTP output"
    );
    let trigger = bindings
        .iter()
        .find(|b| b["direction"] == "in")
        .expect("a trigger");
    assert_eq!(trigger["type"], "httpTrigger");
    assert_eq!(trigger["name"], "req");
    assert_eq!(trigger["authLevel"], "function");
    let mut methods: Vec<String> = trigger["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_lowercase())
        .collect();
    methods.sort();
    assert_eq!(methods, ["get", "post"]);
    assert!(
        trigger.get("route").is_none(),
        "a custom route would move /api/function_http"
    );
    let output = bindings
        .iter()
        .find(|b| b["direction"] == "out")
        .expect("an output");
    assert_eq!(output["type"], "http");
    assert_eq!(output["name"], "res");
}

#[test]
fn local_settings_example_has_a_valid_default_schedule_and_settings_the_handler_accepts() {
    let s = read_json("local.settings.json.example");
    assert_eq!(s["IsEncrypted"], false);
    let values = s["Values"].as_object().expect("Values");
    assert_eq!(values["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert_eq!(values["AzureWebJobsStorage"], "UseDevelopmentStorage=true");
    let schedule = values["REMINDER_SCHEDULE"].as_str().unwrap();
    assert_eq!(
        schedule, "0 */20 7-8 * * 1-5",
        "weekdays every 20 minutes from 07:00 to 08:40: a first run longer than one invocation's time budget completes the same morning"
    );
    assert!(is_ncrontab(schedule));
    let env = Env(values
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_string()))
        .collect());
    let config = Config::from_env_map(&env)
        .unwrap_or_else(|e| panic!("the example settings are refused: {e}"));
    assert_eq!(
        config.azure.export_path(),
        Some(Path::new("fixtures/issues-export.csv"))
    );
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/issues-export.csv")
        .exists());
}

#[test]
fn local_settings_example_lists_every_setting_the_code_reads() {
    let s = read_json("local.settings.json.example");
    let values = s["Values"].as_object().unwrap();
    let mut missing = std::collections::BTreeSet::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (i, _) in text.match_indices("\"REMINDERS_") {
                let name: String = text[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.len() > "REMINDERS_".len()
                    && !name.ends_with('_')
                    && !values.contains_key(&name)
                {
                    missing.insert(name);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "settings missing from local.settings.json.example: {missing:?}"
    );
}
