//! The insights page in a real browser: headless Chromium (Debian `chromium`, installed by
//! `scripts/test.sh`) loads it from a file with networking off and must log no console
//! message. In CI a missing Chromium fails the test instead of skipping it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The Chromium binary, or `None` outside CI when it is not installed.
fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name).arg("--version").output().is_ok() {
            return Some(name.to_string());
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Chromium is not installed (scripts/test.sh installs the Debian package)"
    );
    eprintln!("skipping: Chromium is not installed");
    None
}

/// Loads `html` in headless Chromium; returns the console messages and the rendered DOM.
fn open_in_chromium(browser: &str, dir: &Path, html: &str) -> (Vec<String>, String) {
    let page = dir.join("page.html");
    std::fs::write(&page, html).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    // A hung browser must fail the test, not the CI job's clock.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish loading the page in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (console, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn the_insights_page_opens_in_headless_chromium_without_console_messages() {
    let Some(browser) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    super::insights::run_sixty_days(tmp.path()).await;
    let html = std::fs::read_to_string(tmp.path().join("reports/latest.html")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (console, dom) =
        tokio::task::spawn_blocking(move || open_in_chromium(&browser, dir.path(), &html))
            .await
            .unwrap();
    assert!(console.is_empty(), "console messages: {console:#?}");
    // The page was really rendered: its title, its figures and its chart are in the DOM.
    assert!(dom.contains("Is the fleet getting safer?"), "{dom}");
    assert!(dom.contains("<svg"));
    assert!(dom.contains("median time to remediate"));
}

#[tokio::test]
async fn the_browser_check_catches_a_console_error() {
    let Some(browser) = chromium() else { return };
    let html = "<!DOCTYPE html><html><body><p>x</p><script>console.error('broken page')</script></body></html>";
    let dir = tempfile::tempdir().unwrap();
    let (console, _) =
        tokio::task::spawn_blocking(move || open_in_chromium(&browser, dir.path(), html))
            .await
            .unwrap();
    assert!(
        console.iter().any(|l| l.contains("broken page")),
        "{console:#?}"
    );
}
