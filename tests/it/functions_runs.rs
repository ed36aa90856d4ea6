//! Runs through the handler: overlapping invocations, the run lock, background runs,
//! partial failures, an unusable export, and a SIGTERM in the middle of a run.

use crate::fake_sharepoint::FakeSharePoint;
use crate::fake_webhook::HoldingWebhook;
use crate::functions_host::TIMER_PAYLOAD;
use crate::helpers::{assert_each_once, fixture, spawn_app, write_export, Root, Spawn};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn two_timer_invocations_on_the_same_day_send_each_reminder_once() {
    let app = spawn_app().await;
    let first = app.timer(TIMER_PAYLOAD).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let sent = first.json["ReturnValue"]["counts"]["sent"]
        .as_u64()
        .unwrap();
    assert!(sent > 0);
    // The host re-runs a missed occurrence as past due: same day, nothing new to send.
    let past_due = TIMER_PAYLOAD.replace("\"IsPastDue\": false", "\"IsPastDue\": true");
    let second = app.timer(&past_due).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(
        second.json["ReturnValue"]["counts"]["sent"], 0,
        "{}",
        second.text
    );
    assert_eq!(second.json["ReturnValue"]["pastDue"], true);
    assert!(
        second.json["Logs"].to_string().contains("nothing due"),
        "{}",
        second.text
    );
    let outbox = app.outbox_messages();
    assert_eq!(outbox.len() as u64, sent);
    assert_each_once(&outbox, "outbox");
}

/// Where the timer logs that it waits for the run in progress (a known point of the race).
const TIMER_WAITS: &str = "a run is in progress: the timer waits for it";

#[tokio::test]
async fn a_timer_and_an_http_run_at_the_same_time_never_send_twice_and_the_timer_is_not_lost() {
    const OWNERS: usize = 30;
    // Either may win the lock; both orders are played, each held at a known point.
    // 1. The button's run holds the lock (its 5th send held): the timer waits, then runs.
    let hook = HoldingWebhook::start(5).await;
    let app = app_posting_to(Root::new(), OWNERS, &hook).await;
    let http = app.run(&json!({ "dryRun": false, "wait": false })).await;
    assert_eq!(http.status, 202, "{}", http.text);
    hook.wait_held().await;
    let timer = timer_waiting_for_the_held_run(&app, &hook).await;
    assert!(timer.text.contains("waiting up to"), "{}", timer.text);
    let done = app
        .wait_for_run(
            http.json["runId"].as_str().unwrap(),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(done.json["counts"]["sent"], OWNERS as u64, "{}", done.text);
    assert_sent_once(&app, &hook, OWNERS);

    // 2. The timer's run holds the lock: the button is told a run is in progress.
    let hook = HoldingWebhook::start(5).await;
    let app = app_posting_to(Root::new(), OWNERS, &hook).await;
    let (timer, ()) = tokio::join!(app.timer(TIMER_PAYLOAD), async {
        hook.wait_held().await;
        let http = app.run(&json!({ "dryRun": false })).await;
        assert_eq!(http.status, 409, "{}", http.text);
        assert_eq!(http.json["status"], "in_progress", "{}", http.text);
        hook.release();
    });
    assert_timer_done(&timer);
    assert_eq!(timer.json["ReturnValue"]["counts"]["sent"], OWNERS as u64);
    assert_sent_once(&app, &hook, OWNERS);
}

/// The timer fires while a run holds the lock at `hook`: once the handler logs that the
/// timer waits for that run, the held post is released; the timer's answer once it ran.
async fn timer_waiting_for_the_held_run(
    app: &crate::helpers::TestApp,
    hook: &HoldingWebhook,
) -> crate::helpers::Answer {
    let (timer, ()) = tokio::join!(app.timer(TIMER_PAYLOAD), async {
        app.wait_logged(TIMER_WAITS).await;
        hook.release();
    });
    assert_timer_done(&timer);
    timer
}

/// The host got a 200 whose return value says the timer's run is done.
fn assert_timer_done(timer: &crate::helpers::Answer) {
    assert_eq!(timer.status, 200, "{}", timer.text);
    assert_eq!(
        timer.json["ReturnValue"]["status"], "done",
        "{}",
        timer.text
    );
}

/// Each of `owners` owners was posted and recorded exactly once, and the lock is free.
fn assert_sent_once(app: &crate::helpers::TestApp, hook: &HoldingWebhook, owners: usize) {
    let posted = hook.accepted();
    assert_eq!(posted.len(), owners, "{posted:?}");
    assert_each_once(&posted, "webhook");
    let recorded: Vec<String> = app.ledger_sent().into_iter().map(|(o, _)| o).collect();
    assert_eq!(recorded.len(), owners);
    assert_each_once(&recorded, "ledger");
    assert!(!app.lock_held(), "the run lock was not released");
}

#[tokio::test]
async fn a_run_lock_held_by_another_instance_is_a_409_and_an_in_progress_timer_outcome() {
    let root = Root::new();
    std::fs::create_dir_all(root.path().join("state")).unwrap();
    std::fs::write(
        root.path().join("state/run.lock"),
        r#"{"run_id":"other-instance","pid":1,"since":"2026-11-23T07:00:00Z"}"#,
    )
    .unwrap();
    let app = Spawn::new()
        .env("REMINDERS_TIMER_LOCK_WAIT_SECONDS", "1")
        .start_in(root)
        .await;
    let http = app.run(&json!({ "dryRun": false })).await;
    assert_eq!(http.status, 409, "{}", http.text);
    assert_eq!(http.json["status"], "in_progress");
    let http_error = http.json["error"].as_str().unwrap_or_default();
    assert!(http_error.contains("run other-instance"), "{http_error}");
    assert!(!http_error.contains('{'), "raw lock JSON: {http_error}");
    // The timer waits its bound for the lock, then fails the invocation so the host's
    // retry policy runs it again: the day is not silently lost.
    let started = std::time::Instant::now();
    let timer = app.timer(TIMER_PAYLOAD).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(timer.status, 500, "{}", timer.text);
    assert_eq!(
        timer.json["ReturnValue"]["status"], "in_progress",
        "{}",
        timer.text
    );
    assert!(timer.text.contains("the host retries"), "{}", timer.text);
    assert!(app.outbox_messages().is_empty());
    // A dry run changes nothing and is not blocked.
    let dry = app.run(&json!({ "dryRun": true })).await;
    assert_eq!(dry.status, 200, "{}", dry.text);
}

#[tokio::test]
async fn a_button_press_for_one_owner_does_not_cost_the_timer_its_day() {
    const OWNERS: usize = 30;
    // A live run for one owner holds the lock (its one send held) while the timer fires.
    let hook = HoldingWebhook::start(1).await;
    let app = app_posting_to(Root::new(), OWNERS, &hook).await;
    let one = app
        .run(&json!({ "dryRun": false, "wait": false, "only": ["u000007@engie.com"] }))
        .await;
    assert_eq!(one.status, 202, "{}", one.text);
    hook.wait_held().await;
    let timer = timer_waiting_for_the_held_run(&app, &hook).await;
    assert_eq!(
        timer.json["ReturnValue"]["counts"]["sent"],
        (OWNERS - 1) as u64,
        "{}",
        timer.text
    );
    assert_eq!(hook.accepted()[0], "u000007@engie.com");
    // Every owner reminded that day, once.
    assert_sent_once(&app, &hook, OWNERS);
}

#[tokio::test]
async fn the_timer_function_has_a_retry_policy_that_fits_the_morning() {
    // https://learn.microsoft.com/azure/azure-functions/functions-bindings-error-pages#retries:
    // timer triggers honour a function-level `retry` (fixedDelay / exponentialBackoff).
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("function_timer/function.json");
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let retry = &f["retry"];
    assert_eq!(retry["strategy"], "fixedDelay", "{f}");
    let count = retry["maxRetryCount"].as_u64().unwrap();
    let delay = retry["delayInterval"].as_str().unwrap();
    let parts: Vec<u64> = delay.split(':').map(|p| p.parse().unwrap()).collect();
    let delay_s = parts[0] * 3600 + parts[1] * 60 + parts[2];
    assert!(count >= 2, "{f}");
    assert!(
        count * delay_s <= 4 * 3600,
        "retries must end the same morning: {f}"
    );
}

#[tokio::test]
async fn wait_false_answers_202_with_the_run_id_and_the_report_is_fetched_later() {
    const OWNERS: usize = 30;
    let hook = HoldingWebhook::start(5).await;
    let app = app_posting_to(Root::new(), OWNERS, &hook).await;
    let started = app.run(&json!({ "dryRun": false, "wait": false })).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let run_id = started.json["runId"].as_str().unwrap().to_string();
    let location = format!("/api/function_http?runId={run_id}");
    assert_eq!(started.headers["location"], location.as_str());
    assert_eq!(started.json["statusUrl"], location.as_str());
    // While it runs (its 5th send held), another real run is refused naming the one in
    // progress, and polling says it is still running.
    hook.wait_held().await;
    let again = app.run(&json!({ "dryRun": false })).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.json["runId"], run_id.as_str(), "{}", again.text);
    assert_eq!(app.run_report(&run_id).await.status, 202);
    hook.release();
    let done = app.wait_for_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["run_id"], run_id.as_str());
    assert_eq!(done.json["counts"]["sent"], OWNERS as u64);
    // Real runs are stored: the report is still there after a restart.
    let root = app.root.clone();
    drop(app);
    let app = Spawn::new().start_in(root).await;
    let stored = app.run_report(&run_id).await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(stored.json["counts"]["sent"], OWNERS as u64);
}

#[tokio::test]
async fn a_dry_run_in_the_background_is_fetchable_by_run_id() {
    let app = spawn_app().await;
    let started = app
        .run(&json!({ "wait": false, "dryRun": true, "asOf": "2024-03-07" }))
        .await;
    assert_eq!(started.status, 202, "{}", started.text);
    let done = app
        .wait_for_run(
            started.json["runId"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["counts"]["planned"], 23);
}

#[tokio::test]
async fn failed_deliveries_answer_207_with_the_report() {
    let root = Root::new();
    // An outbox "folder" that is a file: every send fails, the run itself completes.
    std::fs::write(root.path().join("outbox-is-a-file"), b"").unwrap();
    let app = Spawn::new()
        .env(
            "REMINDERS_OUTBOX_DIR",
            root.path().join("outbox-is-a-file").display().to_string(),
        )
        .start_in(root)
        .await;
    let a = app
        .run(&json!({ "dryRun": false, "only": ["JM6453@engie.com"] }))
        .await;
    assert_eq!(a.status, 207, "{}", a.text);
    assert_eq!(a.json["counts"]["failed"], 1, "{}", a.text);
    assert_eq!(a.json["schema"], "lookout-reminders/run-report/v1");
}

#[tokio::test]
async fn an_unusable_export_is_a_422_and_nothing_is_sent() {
    let app = Spawn::new()
        .env(
            "REMINDERS_EXPORT_PATH",
            fixture("README.md").display().to_string(),
        )
        .start()
        .await;
    let a = app.run(&json!({ "dryRun": false })).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains("unusable export"),
        "{}",
        a.text
    );
    assert!(app.outbox_messages().is_empty());
    let missing = app
        .run(&json!({ "dryRun": false, "source": { "path": "no-such-export.csv" } }))
        .await;
    assert_eq!(missing.status, 422, "{}", missing.text);
    assert!(
        missing.json["error"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{}",
        missing.text
    );
}

#[tokio::test]
async fn a_local_source_override_runs_on_a_file_of_the_exports_folder_and_only_there() {
    let app = Spawn::new()
        .env(
            "REMINDERS_EXPORT_PATH",
            fixture("missing.csv").display().to_string(),
        )
        .start()
        .await;
    for path in [
        "issues-export.csv".to_string(),
        fixture("issues-export.csv").display().to_string(),
    ] {
        let a = app
            .run(&json!({ "dryRun": true, "asOf": "2024-03-07", "source": { "path": path } }))
            .await;
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        assert_eq!(a.json["counts"]["planned"], 23);
    }
    // Outside the folder, or not a regular file: refused before anything is read.
    for path in [
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "/dev/zero",
        "../Cargo.toml",
        ".",
    ] {
        let a = app
            .run(&json!({ "dryRun": true, "asOf": "2024-03-07", "source": { "path": path } }))
            .await;
        assert!(a.status == 400 || a.status == 422, "{path}: {}", a.text);
        assert!(
            !a.text.contains("root:"),
            "{path}: file content quoted: {}",
            a.text
        );
        assert!(
            !a.text.contains("[package]"),
            "{path}: file content quoted: {}",
            a.text
        );
    }
    let a = app
        .run(&json!({ "dryRun": true, "source": { "path": "../../../../../../etc/passwd" } }))
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("export's folder"), "{}", a.text);
}

/// A handler on a generated export of `owners` owners, posting one at a time to `hook`.
pub(crate) async fn app_posting_to(
    root: std::sync::Arc<Root>,
    owners: usize,
    hook: &HoldingWebhook,
) -> crate::helpers::TestApp {
    let export = root.path().join("big-export.csv");
    if !export.exists() {
        write_export(&export, owners);
    }
    Spawn::new()
        .env("REMINDERS_EXPORT_PATH", export.display().to_string())
        .env("REMINDERS_CHANNEL", "workflows")
        .env("REMINDERS_WORKFLOWS_URL", hook.url())
        .env("REMINDERS_CONCURRENCY", "1")
        .env("REMINDERS_MAX_OWNERS_PER_RUN", "100000")
        .start_in(root)
        .await
}

#[tokio::test]
async fn sigterm_during_a_run_exits_cleanly_and_a_rerun_sends_each_owner_once() {
    const OWNERS: usize = 60;
    const HELD: usize = 21;
    let root = Root::new();
    let hook = HoldingWebhook::start(HELD).await;
    let mut app = app_posting_to(root.clone(), OWNERS, &hook).await;
    let started = app.run(&json!({ "dryRun": false, "wait": false })).await;
    assert_eq!(started.status, 202, "{}", started.text);
    // The 21st send is in flight and held: stop the instance as the platform does.
    hook.wait_held().await;
    app.sigterm();
    // Only once the handler logs that the run is told to stop does the held send answer.
    app.wait_logged("shutdown requested").await;
    hook.release();
    let status = app.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}:\n{}",
        app.logs()
    );
    assert!(
        app.logs().contains("run stopped by the shutdown"),
        "the run was not stopped between batches:\n{}",
        app.logs()
    );
    assert!(!app.lock_held(), "the run lock survived the shutdown");
    // The send in flight finished and was recorded; nothing after it was attempted.
    assert_eq!(app.ledger_sent().len(), HELD, "{}", app.logs());
    assert_eq!(
        hook.accepted().len(),
        HELD,
        "the webhook and the ledger disagree"
    );
    drop(app);

    let app = app_posting_to(root, OWNERS, &hook).await;
    let rerun = app.run(&json!({ "dryRun": false })).await;
    assert_eq!(rerun.status, 200, "{}", rerun.text);
    assert_eq!(
        rerun.json["counts"]["sent"],
        (OWNERS - HELD) as u64,
        "{}",
        rerun.json["summary"]
    );
    let owners: Vec<String> = app.ledger_sent().into_iter().map(|(o, _)| o).collect();
    assert_eq!(owners.len(), OWNERS);
    assert_each_once(&owners, "ledger");
    let posted = hook.accepted();
    assert_eq!(posted.len(), OWNERS);
    assert_each_once(&posted, "webhook");
}

#[tokio::test]
async fn the_status_url_follows_the_callers_path_and_never_carries_the_key() {
    let app = spawn_app().await;
    let body = json!({ "wait": false, "dryRun": true, "asOf": "2024-03-07" })
        .to_string()
        .into_bytes();
    // The host forwards the path as typed, under whatever routePrefix host.json sets.
    for (path, expected) in [
        (
            "/API/Function_Http/?code=secret-key-1",
            "/api/function_http",
        ),
        (
            "/reminders/function_http?code=secret-key-1",
            "/reminders/function_http",
        ),
    ] {
        let a = app
            .host_request(reqwest::Method::POST, path, Some(body.clone()))
            .await;
        assert_eq!(a.status, 202, "{path}: {}", a.text);
        let run_id = a.json["runId"].as_str().unwrap().to_string();
        let url = format!("{expected}?runId={run_id}");
        assert_eq!(a.json["statusUrl"], url.as_str(), "{}", a.text);
        assert_eq!(a.headers["location"], url.as_str());
        assert!(
            !a.text.contains("secret-key-1"),
            "the key was echoed: {}",
            a.text
        );
        assert!(
            a.json["note"].as_str().unwrap().contains("x-functions-key"),
            "{}",
            a.text
        );
        // Polling on that URL works.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let polled = app.host_request(reqwest::Method::GET, &url, None).await;
            if polled.status != 202 {
                assert_eq!(polled.status, 200, "{}", polled.text);
                assert_eq!(polled.json["counts"]["planned"], 23);
                break;
            }
            assert_eq!(polled.headers["location"], url.as_str());
            assert!(std::time::Instant::now() < deadline, "{url} still running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The wrapped form takes the path from the request's URL.
    let payload = json!({
        "Data": { "req": { "Url": "https://app.azurewebsites.net/Reminders/Function_Http/?code=secret-key-2",
            "Method": "POST", "Query": { "code": "secret-key-2" }, "Headers": {}, "Params": {},
            "Identities": [], "Body": { "wait": false, "dryRun": true, "asOf": "2024-03-07" } } },
        "Metadata": {}
    });
    let a = app
        .host_request(
            reqwest::Method::POST,
            "/function_http",
            Some(payload.to_string().into_bytes()),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let res = &a.json["Outputs"]["res"];
    assert_eq!(res["statusCode"], 202, "{}", a.text);
    assert!(
        res["headers"]["Location"]
            .as_str()
            .unwrap()
            .starts_with("/reminders/function_http?runId="),
        "{}",
        a.text
    );
    assert!(
        !a.text.contains("secret-key-2"),
        "the key was echoed: {}",
        a.text
    );
}

#[tokio::test]
async fn dry_runs_at_once_are_bounded_and_the_one_over_is_told_to_retry() {
    // The export comes from SharePoint, whose download host holds every download: the dry
    // runs that start stay in progress (fetching) until the test lets them go.
    let graph = FakeSharePoint::start(
        std::fs::read(fixture("issues-export1.xlsx")).expect("the sample workbook"),
    )
    .await;
    let release = graph.hold_downloads();
    let mut spawn = Spawn::new();
    for (k, v) in graph.app_env().await {
        spawn = spawn.env(&k, v);
    }
    let app = spawn.start().await;
    let body = json!({ "wait": false, "dryRun": true });
    let mut started = Vec::new();
    for _ in 0..2 {
        let a = app.run(&body).await;
        assert_eq!(a.status, 202, "{}", a.text);
        started.push(a.json["runId"].as_str().unwrap().to_string());
    }
    graph.wait_downloads_held(2).await;
    for _ in 0..2 {
        let a = app.run(&body).await;
        assert_eq!(a.status, 429, "{}", a.text);
        assert_eq!(a.headers["retry-after"], "5");
        assert!(
            a.json["error"]
                .as_str()
                .unwrap()
                .contains("2 dry runs are already in progress"),
            "{}",
            a.text
        );
    }
    release.send_replace(true);
    for run_id in &started {
        let done = app.wait_for_run(run_id, Duration::from_secs(120)).await;
        assert_eq!(done.status, 200, "{}", done.text);
    }
    // The places are given back: another dry run starts.
    let again = app.run(&body).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert!(app.outbox_messages().is_empty());
}
