//! Runs through the handler: overlapping invocations, the run lock, background runs,
//! partial failures, an unusable export, and a SIGTERM in the middle of a run.

use crate::functions_host::TIMER_PAYLOAD;
use crate::helpers::{assert_each_once, fixture, spawn_app, write_export, Root, Spawn};
use serde_json::json;
use std::time::Duration;

/// A handler on a generated export of `owners` owners, sending one at a time (slow on purpose).
async fn slow_app(root: std::sync::Arc<Root>, owners: usize) -> crate::helpers::TestApp {
    let export = root.path().join("big-export.csv");
    if !export.exists() {
        write_export(&export, owners);
    }
    Spawn::new()
        .env("REMINDERS_EXPORT_PATH", export.display().to_string())
        .env("REMINDERS_CONCURRENCY", "1")
        .env("REMINDERS_MAX_OWNERS_PER_RUN", "100000")
        .start_in(root)
        .await
}

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

#[tokio::test]
async fn a_timer_and_an_http_run_at_the_same_time_never_send_twice_and_the_timer_is_not_lost() {
    let app = slow_app(Root::new(), 300).await;
    let body = json!({ "dryRun": false });
    let (timer, http) = tokio::join!(app.timer(TIMER_PAYLOAD), app.run(&body));
    // The timer either ran first (the button is told a run is in progress) or waited for
    // the button's run and then ran: it is never the one that gives the day up.
    assert_eq!(timer.status, 200, "{}", timer.text);
    assert_eq!(
        timer.json["ReturnValue"]["status"], "done",
        "{}",
        timer.text
    );
    assert!(
        http.status == 200 || http.status == 409,
        "{} {}",
        http.status,
        http.text
    );
    if http.status == 409 {
        assert_eq!(http.json["status"], "in_progress", "{}", http.text);
    } else {
        assert!(timer.text.contains("waiting up to"), "{}", timer.text);
    }
    let outbox = app.outbox_messages();
    assert_eq!(outbox.len(), 300);
    assert_each_once(&outbox, "outbox");
    let owners: Vec<String> = app.ledger_sent().into_iter().map(|(o, _)| o).collect();
    assert_eq!(owners.len(), 300);
    assert_each_once(&owners, "ledger");
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
        .env("REMINDERS_TIMER_LOCK_WAIT_SECONDS", "3")
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
        started.elapsed() >= Duration::from_secs(3),
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
    let app = slow_app(Root::new(), 300).await;
    // A live run for one owner holds the lock while the timer fires.
    let one = app
        .run(&json!({ "dryRun": false, "wait": false, "only": ["u000007@engie.com"] }))
        .await;
    assert_eq!(one.status, 202, "{}", one.text);
    let timer = app.timer(TIMER_PAYLOAD).await;
    assert_eq!(timer.status, 200, "{}", timer.text);
    assert_eq!(
        timer.json["ReturnValue"]["status"], "done",
        "{}",
        timer.text
    );
    let outbox = app.outbox_messages();
    assert_eq!(outbox.len(), 300, "every owner reminded that day");
    assert_each_once(&outbox, "outbox");
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
    let app = slow_app(Root::new(), 200).await;
    let started = app.run(&json!({ "dryRun": false, "wait": false })).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let run_id = started.json["runId"].as_str().unwrap().to_string();
    let location = format!("/api/function_http?runId={run_id}");
    assert_eq!(started.headers["location"], location.as_str());
    assert_eq!(started.json["statusUrl"], location.as_str());
    // While it runs, another real run is refused and health names the run in progress.
    let again = app.run(&json!({ "dryRun": false })).await;
    if again.status == 409 {
        assert_eq!(again.json["runId"], run_id.as_str());
    }
    let done = app.wait_for_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["run_id"], run_id.as_str());
    assert_eq!(done.json["counts"]["sent"], 200);
    // Real runs are stored: the report is still there after a restart.
    let root = app.root.clone();
    drop(app);
    let app = Spawn::new().start_in(root).await;
    let stored = app.run_report(&run_id).await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(stored.json["counts"]["sent"], 200);
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

/// A fake Workflows trigger that accepts the first `hold_at - 1` posts and holds every later
/// one until [`HoldingWebhook::release`]: the test knows where the run is instead of hoping
/// the machine is slow enough for a signal to land mid-run.
#[derive(Clone)]
pub(crate) struct HoldingWebhook {
    url: String,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub(crate) holding: std::sync::Arc<tokio::sync::Notify>,
    released: tokio::sync::watch::Sender<bool>,
}

impl HoldingWebhook {
    pub(crate) async fn start(hold_at: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = HoldingWebhook {
            url: format!(
                "http://{}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=s3cret",
                listener.local_addr().unwrap()
            ),
            accepted: Default::default(),
            holding: Default::default(),
            released: tokio::sync::watch::channel(false).0,
        };
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hook.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (h, seen) = (h.clone(), seen.clone());
            async move {
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if n >= hold_at {
                    let mut released = h.released.subscribe();
                    h.holding.notify_one();
                    let _ = released.wait_for(|r| *r).await;
                }
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let recipient = body["recipient"].as_str().expect("a recipient").to_string();
                h.accepted.lock().unwrap().push(recipient.to_lowercase());
                axum::http::StatusCode::ACCEPTED
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        hook
    }

    pub(crate) fn release(&self) {
        self.released.send_replace(true);
    }

    pub(crate) fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }
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
        .env("REMINDERS_WORKFLOWS_URL", hook.url.clone())
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
    tokio::time::timeout(Duration::from_secs(60), hook.holding.notified())
        .await
        .unwrap_or_else(|_| panic!("the run never reached send {HELD}:\n{}", app.logs()));
    app.sigterm();
    // Only once the handler logs that the run is told to stop does the held send answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !app.logs().contains("shutdown requested") {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM never reached the handler:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let app = slow_app(Root::new(), 20_000).await;
    let body = json!({ "wait": false, "dryRun": true, "maxOwners": 100000 });
    let mut started = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..4 {
        let a = app.run(&body).await;
        match a.status {
            202 => started.push(a.json["runId"].as_str().unwrap().to_string()),
            429 => refused.push(a),
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    assert!(!refused.is_empty(), "4 dry runs ran at once: {started:?}");
    for a in &refused {
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
    for run_id in &started {
        let done = app.wait_for_run(run_id, Duration::from_secs(120)).await;
        assert_eq!(done.status, 200, "{}", done.text);
    }
    // The places are given back: another dry run starts.
    let again = app.run(&body).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert!(app.outbox_messages().is_empty());
}
