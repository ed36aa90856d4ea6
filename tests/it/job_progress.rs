//! Progress people can see (issue 10 item 5): the HTTP status of a run in the background
//! carries its figures while it runs, and the CLI's bar shows on a terminal only.

use crate::functions_runs::{app_posting_to, HoldingWebhook};
use crate::helpers::{assert_each_once, Root};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_status_of_a_background_run_shows_sent_failed_remaining_pace_and_eta_while_it_runs() {
    const OWNERS: usize = 30;
    const HELD: usize = 11;
    let hook = HoldingWebhook::start(HELD).await;
    let app = app_posting_to(Root::new(), OWNERS, &hook).await;
    let started = app.run(&json!({ "dryRun": false, "wait": false })).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let run_id = started.json["runId"].as_str().unwrap().to_string();
    // One send at a time: when the 11th is held, 10 have been answered.
    tokio::time::timeout(Duration::from_secs(60), hook.holding.notified())
        .await
        .unwrap_or_else(|_| panic!("the run never reached send {HELD}:\n{}", app.logs()));
    // The recorder publishes once it has recorded them; the run cannot go further, so
    // this waits for a state, not for time to pass.
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let status = app.run_report(&run_id).await;
        assert_eq!(status.status, 202, "{}", status.text);
        assert_eq!(status.json["status"], "running", "{}", status.text);
        let p = status.json["progress"].clone();
        if p["sent"] == 10 {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the status never showed the 10 sends: {}",
            status.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(progress["total"], OWNERS as u64, "{progress}");
    assert_eq!(progress["failed"], 0, "{progress}");
    assert_eq!(progress["remaining"], (OWNERS - 10) as u64, "{progress}");
    assert!(progress["perSecond"].as_f64().unwrap() >= 0.0, "{progress}");
    assert!(
        progress["etaSeconds"].is_u64(),
        "a pace exists once a send ended: {progress}"
    );
    hook.release();
    let done = app.wait_for_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["counts"]["sent"], OWNERS as u64);
    assert!(done.json.get("progress").is_none(), "{}", done.text);
    assert_each_once(&hook.accepted(), "webhook");
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .display()
        .to_string()
}

/// A live CLI run on the sample export into fresh folders; `json` adds `--json`.
fn live_run_args(tmp: &Path, json: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--export",
        &fixture("issues-export.csv"),
        "--as-of",
        "2024-03-07",
        "--outbox",
        &tmp.join("outbox").display().to_string(),
        "--state-dir",
        &tmp.join("state").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if json {
        args.push("--json".into());
    }
    args
}

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout-reminders"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REMINDERS_") || k == "FUNCTIONS_CUSTOMHANDLER_PORT" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs the binary with `args` on a pseudo-terminal (util-linux `script`), as a person
/// at a terminal would; returns what the terminal received.
fn on_a_terminal(args: &[String]) -> Output {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_lookout-reminders").to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    binary()
        .program_args_for_script(&quoted.join(" "))
        .output()
        .expect("`script` (util-linux) runs")
}

trait ScriptCommand {
    fn program_args_for_script(self, command: &str) -> Command;
}

impl ScriptCommand for Command {
    /// The same environment, but the program is `script -qec COMMAND /dev/null`.
    fn program_args_for_script(self, command: &str) -> Command {
        let mut script = Command::new("script");
        script.args(["-q", "-e", "-c", command, "/dev/null"]);
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => script.env(k, v),
                None => script.env_remove(k),
            };
        }
        script
    }
}

/// The bar's figures as the CLI draws them (`sent 23, failed 0, remaining 0`).
const BAR_FIGURES: &str = "failed 0, remaining 0";

#[test]
fn a_live_run_on_a_terminal_shows_the_bar_with_sent_failed_and_remaining() {
    let tmp = tempfile::tempdir().unwrap();
    let out = on_a_terminal(&live_run_args(tmp.path(), false));
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(
        screen.contains(&format!("sent 23, {BAR_FIGURES}")),
        "no progress bar on the terminal:\n{screen}"
    );
    assert!(screen.contains("23 reminders sent"), "{screen}");
}

#[test]
fn the_bar_is_hidden_with_json_even_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let out = on_a_terminal(&live_run_args(tmp.path(), true));
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{screen}");
    assert!(
        !screen.contains(BAR_FIGURES),
        "a bar with --json:\n{screen}"
    );
    assert!(screen.contains("\"schema\""), "{screen}");
}

#[test]
fn the_bar_is_hidden_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let out = binary()
        .args(live_run_args(tmp.path(), false))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(BAR_FIGURES), "a bar in a pipe:\n{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "terminal escapes in a pipe:\n{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("23 reminders sent"));
}

#[test]
fn a_run_refused_before_sending_leaves_no_bar_on_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = live_run_args(tmp.path(), false);
    args.extend(["--max-owners".to_string(), "1".to_string()]);
    let out = on_a_terminal(&args);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{screen}");
    assert!(screen.contains("refusing to message 23 owners"), "{screen}");
    assert!(
        !screen.contains("remaining"),
        "a bar of no sends:\n{screen}"
    );
}
