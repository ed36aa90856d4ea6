//! `preview` goes through the run's own planning (issue 9 item 2): what a run refuses,
//! preview refuses the same way.

use std::process::Command;

fn cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout-reminders"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REMINDERS_") || k == "FUNCTIONS_CUSTOMHANDLER_PORT" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

#[test]
fn preview_refuses_an_export_whose_every_row_is_rejected_as_a_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("broken.csv");
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/issues-export.csv"),
    )
    .unwrap();
    let header = good.lines().next().unwrap();
    std::fs::write(
        &export,
        format!("{header}\nwx6278@engie.com,id,mdm,Work,SM-A528B,Android,Application,Chrome,Vulnerability,Active,Moderate,31/02/2024,,,\n"),
    )
    .unwrap();
    let export = export.display().to_string();
    let state = tmp.path().join("state").display().to_string();
    let env = [("REMINDERS_STATE_DIR", state.as_str())];
    let preview = cli(
        &[
            "preview",
            "--export",
            &export,
            "--owner",
            "wx6278@engie.com",
            "--as-of",
            "2024-03-07",
        ],
        &env,
    );
    let run = cli(
        &[
            "run",
            "--dry-run",
            "--export",
            &export,
            "--as-of",
            "2024-03-07",
        ],
        &env,
    );
    let (preview_err, run_err) = (
        String::from_utf8_lossy(&preview.stderr),
        String::from_utf8_lossy(&run.stderr),
    );
    assert_eq!(run.status.code(), Some(3), "{run_err}");
    assert_eq!(preview.status.code(), Some(3), "{preview_err}");
    assert!(preview_err.contains("broken.csv"), "{preview_err}");
    assert!(preview_err.contains("Date Detected"), "{preview_err}");
    assert_eq!(
        preview_err.lines().find(|l| l.starts_with("error:")),
        run_err.lines().find(|l| l.starts_with("error:")),
        "the same refusal"
    );
}
