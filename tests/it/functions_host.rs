//! The custom handler under the host's exact requests: the timer payload byte for byte, the
//! forwarded and wrapped HTTP function, health, and what reaches the logs.

use crate::helpers::{spawn_app, INVOCATION_ID};
use serde_json::{json, Value};

/// The timer request body from `functions-host-contract.md`, byte for byte.
pub const TIMER_PAYLOAD: &str = r#"{
  "Data": {
    "timer": {
      "Schedule": { "AdjustForDST": true },
      "ScheduleStatus": {
        "Last": "2026-11-20T07:00:00.0047471+00:00",
        "Next": "2026-11-23T07:00:00+00:00",
        "LastUpdated": "2026-11-20T07:00:00.0047471+00:00"
      },
      "IsPastDue": false
    }
  },
  "Metadata": {
    "sys": {
      "MethodName": "function_timer",
      "UtcNow": "2026-11-23T07:00:00.0123456Z",
      "RandGuid": "0f4a3a8e-8f5e-4c8b-9a57-0b7c2a1e5d11"
    }
  }
}"#;

fn spans_of(line: &Value) -> Vec<&Value> {
    line["spans"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_hosts_timer_request_is_answered_with_outputs_logs_and_a_summary() {
    let app = spawn_app().await;
    let a = app.timer(TIMER_PAYLOAD).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.json["Outputs"], json!({}), "{}", a.text);
    let logs = a.json["Logs"].as_array().expect("Logs is an array");
    assert!(
        !logs.is_empty() && logs.iter().all(Value::is_string),
        "{}",
        a.text
    );
    let rv = &a.json["ReturnValue"];
    assert_eq!(rv["status"], "done", "{}", a.text);
    assert_eq!(rv["pastDue"], false);
    assert!(
        rv["summary"].as_str().unwrap().contains("reminders sent"),
        "{rv}"
    );
    let sent = rv["counts"]["sent"].as_u64().unwrap();
    assert!(sent > 0, "{rv}");
    assert_eq!(app.outbox_messages().len() as u64, sent);
}

#[tokio::test]
async fn every_log_line_of_a_timer_invocation_carries_the_invocation_id() {
    let app = spawn_app().await;
    let a = app.timer(TIMER_PAYLOAD).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let run_id = a.json["ReturnValue"]["runId"].as_str().unwrap().to_string();
    let lines = app.log_lines();
    // Lines logged inside the run (parsing, each send, the summary) and the request lines.
    let of_run: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            spans_of(l)
                .iter()
                .any(|s| s["name"] == "run" && s["run_id"] == run_id.as_str())
        })
        .collect();
    assert!(of_run.len() >= 3, "too few run lines: {}", app.logs());
    for l in &of_run {
        let inv = spans_of(l).into_iter().find(|s| s["name"] == "invocation");
        assert_eq!(
            inv.map(|s| s["invocation_id"].clone()),
            Some(json!(INVOCATION_ID)),
            "line without the invocation id: {l}"
        );
    }
    let messages: Vec<&str> = lines
        .iter()
        .filter(|l| {
            spans_of(l)
                .iter()
                .any(|s| s["invocation_id"] == INVOCATION_ID)
        })
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    for expected in [
        "invocation started",
        "timer fired",
        "reminder sent",
        "run done",
        "invocation done",
    ] {
        assert!(
            messages.contains(&expected),
            "no '{expected}' line in the invocation: {messages:?}"
        );
    }
    // Owner e-mails are pseudonymised in logs.
    assert!(
        !app.logs().contains("@engie.com"),
        "an e-mail reached the logs:\n{}",
        app.logs()
    );
}

#[tokio::test]
async fn the_start_up_line_gives_the_version_and_the_effective_configuration() {
    let app = spawn_app().await;
    let lines = app.log_lines();
    let start = lines
        .iter()
        .find(|l| l["fields"]["message"] == "custom handler ready")
        .unwrap_or_else(|| panic!("no start-up line:\n{}", app.logs()));
    assert_eq!(start["fields"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        start["fields"]["source"]
            .as_str()
            .unwrap()
            .contains("issues-export.csv"),
        "{start}"
    );
    assert!(
        start["fields"]["channel"]
            .as_str()
            .unwrap()
            .contains("outbox"),
        "{start}"
    );
    assert!(
        start["fields"]["address"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", app.port)),
        "{start}"
    );
}

#[tokio::test]
async fn a_timer_value_sent_as_a_string_with_no_schedule_status_is_accepted() {
    let app = spawn_app().await;
    let payload = json!({
        "Data": { "timer": "{\"Schedule\":{\"AdjustForDST\":true},\"ScheduleStatus\":null,\"IsPastDue\":true}" },
        "Metadata": { "sys": { "MethodName": "function_timer" } }
    });
    let a = app.timer(&payload.to_string()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["ReturnValue"]["pastDue"], true);
    assert_eq!(a.json["ReturnValue"]["status"], "done");
    let logs = a.json["Logs"].to_string();
    assert!(logs.contains("past due"), "{logs}");
}

#[tokio::test]
async fn a_forwarded_dry_run_answers_the_run_report() {
    let app = spawn_app().await;
    let a = app
        .run(&json!({ "dryRun": true, "asOf": "2024-03-07" }))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.headers["content-type"], "application/json");
    let r = &a.json;
    assert_eq!(r["schema"], "lookout-reminders/run-report/v1");
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["trigger"], "http");
    assert_eq!(r["as_of"], "2024-03-07");
    assert_eq!(r["counts"]["planned"], 23, "{}", r["summary"]);
    assert_eq!(r["invocation_id"], INVOCATION_ID);
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .starts_with("dry run: 23 reminders planned"),
        "{}",
        r["summary"]
    );
    assert!(
        app.outbox_messages().is_empty(),
        "a dry run wrote to the outbox"
    );
}

#[tokio::test]
async fn get_answers_health_with_version_source_channel_and_the_last_run() {
    let app = spawn_app().await;
    let h = app.health().await;
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        h.json["source"]
            .as_str()
            .unwrap()
            .contains("issues-export.csv"),
        "{}",
        h.text
    );
    assert_eq!(h.json["channel"], "outbox");
    assert_eq!(h.json["lastRun"], Value::Null);

    let run = app
        .run(&json!({ "dryRun": true, "asOf": "2024-03-07" }))
        .await;
    let h = app.health().await;
    assert_eq!(h.json["lastRun"]["runId"], run.json["run_id"], "{}", h.text);
    assert_eq!(h.json["lastRun"]["summary"], run.json["summary"]);
}

#[tokio::test]
async fn the_wrapped_http_form_is_answered_in_outputs_res() {
    let app = spawn_app().await;
    let payload = json!({
        "Data": { "req": {
            "Url": "http://localhost:7071/api/function_http?code=abc",
            "Method": "POST",
            "Query": { "code": "abc" },
            "Headers": { "Content-Type": ["application/json"] },
            "Params": {},
            "Identities": [],
            "Body": "{\"dryRun\":true,\"asOf\":\"2024-03-07\"}"
        } },
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
    assert_eq!(res["statusCode"], 200, "{}", a.text);
    assert_eq!(res["headers"]["Content-Type"], "application/json");
    let report: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(report["counts"]["planned"], 23);
    assert!(a.json["Logs"].is_array());
}

#[tokio::test]
async fn the_function_key_never_reaches_the_logs() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/api/function_http?code=KEY-IN-QUERY-1234"))
        .header("x-functions-key", "KEY-IN-HEADER-5678")
        .header("X-Azure-Functions-InvocationId", INVOCATION_ID)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .client
        .post(app.url("/api/function_http?code=KEY-IN-QUERY-1234"))
        .header("x-functions-key", "KEY-IN-HEADER-5678")
        .body(r#"{"dryRun": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let logs = app.logs();
    assert!(logs.contains("invocation done"), "{logs}");
    assert!(
        !logs.contains("KEY-IN-QUERY") && !logs.contains("KEY-IN-HEADER"),
        "a key reached the logs:\n{logs}"
    );
}
