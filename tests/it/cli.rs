//! The command line, end to end: the real binary on the bundled sample exports.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Runs the binary with a clean settings environment and returns its output.
fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout-reminders"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("REMINDERS_") || k == "FUNCTIONS_CUSTOMHANDLER_PORT" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn json_report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

struct Dirs {
    _tmp: tempfile::TempDir,
    outbox: String,
    state: String,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let outbox = tmp.path().join("outbox").display().to_string();
    let state = tmp.path().join("state").display().to_string();
    Dirs {
        _tmp: tmp,
        outbox,
        state,
    }
}

fn run_args<'a>(d: &'a Dirs, export: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "run",
        "--export",
        export,
        "--as-of",
        "2024-03-07",
        "--outbox",
        &d.outbox,
        "--state-dir",
        &d.state,
        "--json",
    ];
    v.extend_from_slice(extra);
    v
}

fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()) == Some(ext) {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_dry_run_on_the_sample_csv_plans_23_reminders_and_sends_nothing() {
    let d = dirs();
    let export = fixture("issues-export.csv").display().to_string();
    let out = cli(&run_args(&d, &export, &["--dry-run"]), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_report(&out);
    assert_eq!(r["schema"], "lookout-reminders/run-report/v1");
    assert_eq!(r["trigger"], "cli");
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["as_of"], "2024-03-07");
    assert_eq!(r["source"]["kind"], "local");
    assert_eq!(r["source"]["format"], "csv");
    assert_eq!(r["source"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r["rows"]["total"], 27);
    assert_eq!(r["rows"]["rejected"], 0);
    assert_eq!(r["rows"]["remindable"], 25);
    assert_eq!(r["rows"]["not_remindable"], 2);
    assert_eq!(r["owners"]["planned"], 23);
    assert_eq!(r["counts"]["planned"], 23);
    assert_eq!(r["counts"]["sent"], 0);
    let wx = r["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["owner"] == "wx6278@engie.com")
        .unwrap();
    assert_eq!(wx["status"], "planned");
    assert_eq!(wx["issues"].as_array().unwrap().len(), 2);
    assert!(
        files_in(&d.outbox, "json").is_empty(),
        "a dry run wrote to the outbox"
    );
    assert!(
        !Path::new(&d.state).join("ledger.jsonl").exists(),
        "a dry run wrote the ledger"
    );
}

#[test]
fn a_run_writes_one_message_per_owner_and_a_rerun_sends_nothing_twice() {
    let d = dirs();
    let export = fixture("issues-export.csv").display().to_string();
    let out = cli(&run_args(&d, &export, &[]), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_report(&out);
    assert_eq!(r["counts"]["sent"], 23);
    assert_eq!(files_in(&d.outbox, "json").len(), 23);
    assert_eq!(files_in(&d.outbox, "txt").len(), 23);
    let ledger = std::fs::read_to_string(Path::new(&d.state).join("ledger.jsonl")).unwrap();
    assert_eq!(
        ledger
            .lines()
            .filter(|l| l.contains("\"event\":\"sent\""))
            .count(),
        // 25 remindable lines, less TM6511's second detection of Edge on the same device,
        // merged into the first (one line, the earliest deadline).
        24
    );
    assert_eq!(
        files_in(&format!("{}/reports", d.state), "json").len(),
        2,
        "report + latest.json"
    );

    let again = cli(&run_args(&d, &export, &[]), &[]);
    assert_eq!(again.status.code(), Some(0));
    let r2 = json_report(&again);
    assert_eq!(r2["counts"]["sent"], 0);
    assert_eq!(r2["owners"]["not_due"], 23);
    assert_eq!(
        files_in(&d.outbox, "json").len(),
        23,
        "the rerun sent again"
    );

    // A week later the cadence makes them due again (the xlsx holds the same issues).
    let xlsx = fixture("issues-export1.xlsx").display().to_string();
    let mut args = run_args(&d, &xlsx, &[]);
    args[4] = "2024-03-14";
    let week = cli(&args, &[]);
    assert_eq!(
        json_report(&week)["counts"]["sent"],
        23,
        "stderr: {}",
        String::from_utf8_lossy(&week.stderr)
    );
}

#[test]
fn resend_applies_only_to_the_named_owners_and_is_refused_without_them() {
    let d = dirs();
    let export = fixture("issues-export.csv").display().to_string();
    assert_eq!(cli(&run_args(&d, &export, &[]), &[]).status.code(), Some(0));
    let refused = cli(&run_args(&d, &export, &["--resend"]), &[]);
    assert_eq!(refused.status.code(), Some(2), "resend without --only");
    let old = cli(&run_args(&d, &export, &["--force"]), &[]);
    assert_eq!(old.status.code(), Some(2), "--force is gone");
    let out = cli(
        &run_args(&d, &export, &["--resend", "--only", "WX6278@engie.com"]),
        &[],
    );
    let r = json_report(&out);
    assert_eq!(r["counts"]["sent"], 1);
    let sent: Vec<_> = r["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["status"] == "sent")
        .collect();
    assert_eq!(sent[0]["owner"], "wx6278@engie.com");
}

#[test]
fn owners_outside_the_allowed_domains_are_excluded_and_reported() {
    let d = dirs();
    let export = fixture("issues-export.csv").display().to_string();
    let out = cli(
        &run_args(
            &d,
            &export,
            &["--dry-run", "--allowed-domains", "contoso.com"],
        ),
        &[],
    );
    let r = json_report(&out);
    assert_eq!(r["owners"]["excluded"], 23);
    assert_eq!(r["counts"]["planned"], 0);
    let reasons: Vec<_> = r["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reason"].as_str().unwrap_or(""))
        .collect();
    assert!(
        reasons.iter().all(|x| x.contains("engie.com")),
        "{reasons:?}"
    );

    let none = cli(&run_args(&d, &export, &["--dry-run"]), &[]);
    let warnings = json_report(&none)["warnings"].to_string();
    assert!(warnings.contains("REMINDERS_ALLOWED_DOMAINS"), "{warnings}");
}

#[test]
fn the_xlsx_export_gives_the_same_plan_as_the_csv() {
    let d = dirs();
    let csv = fixture("issues-export.csv").display().to_string();
    let xlsx = fixture("issues-export1.xlsx").display().to_string();
    let a = json_report(&cli(&run_args(&d, &csv, &["--dry-run"]), &[]));
    let b = json_report(&cli(&run_args(&d, &xlsx, &["--dry-run"]), &[]));
    assert_eq!(b["source"]["format"], "xlsx");
    assert_eq!(a["rows"], b["rows"]);
    assert_eq!(a["owners"], b["owners"]);
    assert_eq!(a["reminders"], b["reminders"]);
}

#[test]
fn the_list_view_gives_six_remindable_issues_for_five_owners() {
    let d = dirs();
    let tsv = fixture("issues-list-view.tsv").display().to_string();
    let r = json_report(&cli(&run_args(&d, &tsv, &["--dry-run"]), &[]));
    assert_eq!(r["source"]["format"], "list_view");
    assert_eq!(r["rows"]["remindable"], 6);
    assert_eq!(r["owners"]["planned"], 5);
}

#[test]
fn validate_accepts_the_samples_and_refuses_what_is_not_an_export() {
    for name in [
        "issues-export.csv",
        "issues-export1.xlsx",
        "issues-list-view.tsv",
    ] {
        let out = cli(
            &["validate", &fixture(name).display().to_string(), "--json"],
            &[],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json_report(&out)["usable"], true);
    }
    let tmp = tempfile::tempdir().unwrap();
    let pdf = tmp.path().join("export.csv");
    std::fs::write(&pdf, b"%PDF-1.7\n%...").unwrap();
    let out = cli(&["validate", &pdf.display().to_string()], &[]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("export.csv") && err.contains("PDF"), "{err}");

    let empty = tmp.path().join("empty.csv");
    std::fs::write(&empty, b"").unwrap();
    let out = cli(&["validate", &empty.display().to_string()], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

#[test]
fn a_bad_row_is_reported_with_its_row_and_field_and_the_others_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.csv");
    let mut text = std::fs::read_to_string(fixture("issues-export.csv")).unwrap();
    text = text.replacen("2023-11-28T14:38:56Z", "31/02/2024", 1);
    std::fs::write(&path, text).unwrap();
    let d = dirs();
    let p = path.display().to_string();
    let r = json_report(&cli(&run_args(&d, &p, &["--dry-run"]), &[]));
    assert_eq!(r["rows"]["total"], 27);
    assert_eq!(r["rows"]["rejected"], 1);
    assert_eq!(r["rejected"][0]["row"], 2);
    assert_eq!(r["rejected"][0]["field"], "Date Detected");
    assert!(r["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("31/02/2024"));
    assert_eq!(r["owners"]["planned"], 22);
}

#[test]
fn preview_shows_the_french_message_with_the_real_model_and_only_the_owners_platform() {
    let export = fixture("issues-export.csv").display().to_string();
    let out = cli(
        &[
            "preview",
            "--export",
            &export,
            "--owner",
            "WX6278@engie.com",
            "--as-of",
            "2024-03-07",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Bonjour,"), "{text}");
    assert!(
        text.contains("votre terminal mobile « SM-A528B » n'est pas à jour"),
        "{text}"
    );
    assert!(text.contains("Application Chrome"), "{text}");
    assert!(text.contains("Application Edge"), "{text}");
    // App issues only: the Google Play step names both apps; no system update step.
    assert!(
        text.contains("Applications sur Android : ouvrir Google Play"),
        "{text}"
    );
    assert!(!text.contains("Apple iPhone/iPad"), "{text}");
    assert!(!text.contains("Smartphone/tablette Android"), "{text}");
    assert!(text.contains("DGP-DSI-PROXIMITE@engie.com"), "{text}");
    // Detected 16 Nov 2022: long past the 30 days.
    assert!(
        text.contains("date limite dépassée (le 16 décembre 2022)"),
        "{text}"
    );

    let ios = cli(
        &[
            "preview",
            "--export",
            &export,
            "--owner",
            "iu1136@engie.com",
            "--as-of",
            "2024-03-07",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&ios.stdout);
    // An iPad Air 2 cannot install a current iPadOS: no update step, a replacement instead.
    assert!(!text.contains("MISE À JOUR LOGICIELLE"), "{text}");
    assert!(!text.contains("Smartphone/tablette Android"), "{text}");
    assert!(
        text.contains(
            "Votre « iPad Air 2 » ne peut plus être mis à jour au-delà de la version iPadOS 15"
        ),
        "{text}"
    );
    // Detected 22 Jan 2024 19:58 UTC → deadline 21 Feb 2024: overdue on 7 March.
    assert!(text.contains("21 février 2024"), "{text}");

    let gm = cli(
        &[
            "preview",
            "--export",
            &export,
            "--owner",
            "gm6567@engie.com",
            "--as-of",
            "2024-03-07",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&gm.stdout);
    assert!(
        text.contains("à faire d'ici le 3 avril 2024 inclus (27 jours restants)"),
        "{text}"
    );
    assert!(
        text.contains("n'est pas faite d'ici le 3 avril 2024 inclus"),
        "{text}"
    );
}

#[test]
fn preview_as_a_card_is_valid_adaptive_card_json_and_english_is_available() {
    let export = fixture("issues-export.csv").display().to_string();
    let out = cli(
        &[
            "preview",
            "--export",
            &export,
            "--owner",
            "tm6511@engie.com",
            "--as-of",
            "2024-03-07",
            "--format",
            "card",
            "--language",
            "en",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.5");
    let text = card.to_string();
    assert!(
        text.contains("SM-A405FN"),
        "the model is shown as is: {text}"
    );
    assert!(text.contains("Edge app to update"), "{text}");
}

#[test]
fn bad_settings_and_arguments_exit_with_code_2_naming_the_problem() {
    let export = fixture("issues-export.csv").display().to_string();
    let out = cli(
        &["run", "--export", &export, "--dry-run"],
        &[("REMINDERS_GRACE_DAYS", "soon")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REMINDERS_GRACE_DAYS"));
    let out = cli(&["run", "--export", &export, "--as-of", "07/03/2024"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli(
        &[
            "run",
            "--export",
            &export,
            "--only",
            "not-an-email",
            "--dry-run",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_export_exits_with_code_3() {
    let d = dirs();
    let out = cli(&run_args(&d, "/nonexistent/export.csv", &[]), &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/export.csv"));
}

#[test]
fn a_run_while_another_holds_the_lock_exits_with_code_5_and_sends_nothing() {
    let d = dirs();
    std::fs::create_dir_all(&d.state).unwrap();
    std::fs::write(
        Path::new(&d.state).join("run.lock"),
        "{\"run_id\":\"other\"}",
    )
    .unwrap();
    let export = fixture("issues-export.csv").display().to_string();
    let out = cli(&run_args(&d, &export, &[]), &[]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in progress"));
    assert!(files_in(&d.outbox, "json").is_empty());
}

#[test]
fn a_live_run_dated_in_the_future_is_refused_but_a_dry_run_may_look_ahead() {
    let d = dirs();
    let export = fixture("issues-export.csv").display().to_string();
    let mut args = run_args(&d, &export, &[]);
    args[4] = "2999-01-01";
    let out = cli(&args, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("after today"));
    assert!(files_in(&d.outbox, "json").is_empty());
    args.push("--dry-run");
    assert_eq!(cli(&args, &[]).status.code(), Some(0));
}

#[test]
fn an_export_with_a_header_and_no_rows_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("empty-export.csv");
    std::fs::write(&path, "Device Owner,Issue,Status,Date Detected\r\n").unwrap();
    let d = dirs();
    let p = path.display().to_string();
    let out = cli(&run_args(&d, &p, &[]), &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no data rows"));
    let forced = cli(&run_args(&d, &p, &["--allow-empty-export"]), &[]);
    assert_eq!(
        forced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
}

#[test]
fn rejected_rows_quote_the_cell_in_the_report_but_not_in_the_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("names.csv");
    let mut text = std::fs::read_to_string(fixture("issues-export.csv")).unwrap();
    text = text.replacen("JM6453@engie.com", "Jean Dupont <jd@engie.com>", 1);
    std::fs::write(&path, text).unwrap();
    let d = dirs();
    let p = path.display().to_string();
    let out = cli(&run_args(&d, &p, &["--dry-run"]), &[("RUST_LOG", "info")]);
    let r = json_report(&out);
    assert!(r["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("Jean Dupont"));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("row rejected"), "{logs}");
    assert!(!logs.contains("jd@engie.com"), "{logs}");
}

/// Messages (`.json` files) under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                usize::from(e.path().extension().is_some_and(|x| x == "json"))
            }
        })
        .sum()
}

#[test]
fn sigterm_stops_a_cli_run_with_what_was_sent_recorded_and_the_lock_released() {
    const OWNERS: usize = 3000;
    let d = dirs();
    let export = Path::new(&d.state).with_file_name("big-export.csv");
    crate::helpers::write_export(&export, OWNERS);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout-reminders"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REMINDERS_") {
            cmd.env_remove(k);
        }
    }
    let export_arg = export.display().to_string();
    cmd.args([
        "run",
        "--export",
        &export_arg,
        "--outbox",
        &d.outbox,
        "--state-dir",
        &d.state,
    ])
    .args(["--max-owners", "100000", "--json"])
    .env("REMINDERS_CONCURRENCY", "1")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while files_under(Path::new(&d.outbox)) < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started sending"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !Path::new(&d.state).join("run.lock").exists(),
        "the lock survived SIGTERM: {stderr}"
    );
    let recorded = std::fs::read_to_string(Path::new(&d.state).join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"event\":\"sent\""))
        .count();
    let sent = files_under(Path::new(&d.outbox));
    assert!(sent < OWNERS, "the run finished before SIGTERM");
    assert_eq!(recorded, sent, "outbox and ledger disagree: {stderr}");
}

#[test]
fn the_report_command_gives_the_insights_as_json_csv_and_html_from_the_state_folder() {
    let d = dirs();
    let export = fixture("issues-export.csv").display().to_string();
    for day in ["2024-03-07", "2024-03-08"] {
        let mut args = run_args(&d, &export, &[]);
        args[4] = day;
        let out = cli(&args, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let since = ["--since", "2024-03-01", "--state-dir", d.state.as_str()];
    let report = |extra: &[&str]| {
        let mut args = vec!["report"];
        args.extend_from_slice(&since);
        args.extend_from_slice(extra);
        cli(&args, &[])
    };

    let out = report(&["--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_report(&out);
    assert_eq!(j["schema"], "lookout-reminders/insights/v1");
    assert_eq!(j["as_of"], "2024-03-08");
    // The sample export's 25 remindable rows, less TM6511's second detection of Edge merged
    // into the first; the 3 detected after 2024-02-07 are not past their deadline yet.
    assert_eq!(j["headline"]["open_now"], 24);
    assert_eq!(j["headline"]["overdue_now"], 22);
    assert_eq!(j["changes"]["previous_as_of"], "2024-03-07");
    assert_eq!(j["changes"]["open"], 0);
    assert_eq!(j["trend"].as_array().unwrap().len(), 2);
    let overdue = j["overdue"].as_array().unwrap();
    assert_eq!(overdue.len(), 22);
    // Worst first, pseudonymised.
    let days: Vec<i64> = overdue
        .iter()
        .map(|o| o["days_overdue"].as_i64().unwrap())
        .collect();
    assert!(days.windows(2).all(|w| w[0] >= w[1]), "{days:?}");
    assert!(!out.stdout.windows(10).any(|w| w == b"@engie.com"));

    let verbose = report(&["--format", "json", "--verbose"]);
    assert!(String::from_utf8_lossy(&verbose.stdout).contains("@engie.com"));

    let csv = report(&["--format", "csv"]);
    let text = String::from_utf8(csv.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("as_of,open,overdue,open_vulnerable_app"));
    assert!(lines[2].starts_with("2024-03-08,24,22,"));

    let page = Path::new(&d.state).join("page.html");
    let out = report(&["--out", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("Is the fleet getting safer?"));
    assert!(!html.contains("@engie.com"));
}

#[test]
fn the_report_command_refuses_a_period_it_cannot_read_and_works_on_an_empty_ledger() {
    let d = dirs();
    let out = cli(
        &["report", "--since", "ninety", "--state-dir", &d.state],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since ninety"));
    let out = cli(
        &[
            "report",
            "--since",
            "12w",
            "--format",
            "json",
            "--state-dir",
            &d.state,
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_report(&out);
    assert_eq!(j["headline"]["open_now"], Value::Null);
    assert_eq!(j["trend"].as_array().unwrap().len(), 0);
}

/// A managed identity the token endpoint refuses (wrong `IDENTITY_HEADER`): a configuration
/// problem, so exit 2 whether the run is a dry run (which meets it fetching the export) or a
/// live one (which meets it first taking the lock in the state container).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_managed_identity_exits_2_on_a_dry_run_and_on_a_live_run() {
    let identity = crate::fake_identity::FakeIdentity::shared().await;
    let d = dirs();
    let endpoint = identity.endpoint();
    let env = [
        ("REMINDERS_SOURCE", "blob"),
        ("REMINDERS_LEDGER", "blob"),
        (
            "REMINDERS_BLOB_ACCOUNT_URL",
            "https://127.0.0.1:9/devstoreaccount1",
        ),
        ("REMINDERS_EXPORT_CONTAINER", "exports"),
        ("REMINDERS_EXPORT_BLOB", "latest.csv"),
        ("REMINDERS_STATE_CONTAINER", "state"),
        ("REMINDERS_CREDENTIAL", "managed_identity"),
        ("REMINDERS_AZURE_MAX_RETRIES", "1"),
        ("REMINDERS_AZURE_RETRY_DELAY_MS", "50"),
        ("REMINDERS_OUTBOX_DIR", d.outbox.as_str()),
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "not-the-secret"),
    ];
    let rejected_before = identity.rejected();
    let args = ["run", "--source", "blob", "--as-of", "2024-03-07"];
    let dry_args = [&args[..], &["--dry-run"]].concat();
    let dry = tokio::task::block_in_place(|| cli(&dry_args, &env));
    let live = tokio::task::block_in_place(|| cli(&args, &env));
    for (what, out) in [("dry", &dry), ("live", &live)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what} run: {stderr}");
        assert!(stderr.contains("credential"), "{what} run: {stderr}");
    }
    assert!(
        identity.rejected() > rejected_before,
        "the endpoint was never asked"
    );
}
