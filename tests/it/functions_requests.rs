//! Bad requests to the HTTP function get a 4xx with a clear message, and the handler keeps
//! serving afterwards.

use crate::helpers::spawn_app;
use serde_json::json;

#[tokio::test]
async fn bad_requests_are_refused_with_clear_messages_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (br#"{"dryRun": tru"#.to_vec(), 400, "not valid JSON"),
        (
            br#"{"dryRun": true} trailing"#.to_vec(),
            400,
            "not valid JSON",
        ),
        (
            br#"["dryRun"]"#.to_vec(),
            400,
            "the body must be a JSON object",
        ),
        (
            br#"{"dryRun": "yes"}"#.to_vec(),
            400,
            "dryRun: invalid type",
        ),
        (
            br#"{"only": "a@engie.com"}"#.to_vec(),
            400,
            "only: invalid type",
        ),
        (
            br#"{"dryrun": true}"#.to_vec(),
            400,
            "unknown field `dryrun`",
        ),
        (
            br#"{"dryRun": true, "asOf": "07/03/2024"}"#.to_vec(),
            400,
            "asOf: expected a date as YYYY-MM-DD",
        ),
        (
            br#"{"dryRun": true, "only": ["jm6453@engie.com", "not-an-email"]}"#.to_vec(),
            400,
            "only[1]: not an e-mail address",
        ),
        (
            br#"{"dryRun": true, "source": {"blob": "a.csv", "path": "b.csv"}}"#.to_vec(),
            400,
            "exactly one of",
        ),
        (
            br#"{"source": {"container": "x"}}"#.to_vec(),
            400,
            "unknown field `container`",
        ),
        // Not configured for Blob Storage here: refused, naming the field and the missing setting.
        (
            br#"{"dryRun": true, "source": {"blob": "exports/today.csv"}}"#.to_vec(),
            400,
            "source",
        ),
        (
            br#"{"dryRun": true, "channel": "pigeon"}"#.to_vec(),
            400,
            "channel: unknown channel 'pigeon'",
        ),
        (br#"{"wait": 0}"#.to_vec(), 400, "wait: invalid type"),
        // `force` lifted the cap and the cadence at once: split into maxOwners and resend.
        (
            br#"{"dryRun": false, "force": true}"#.to_vec(),
            400,
            "use maxOwners",
        ),
        (
            br#"{"dryRun": false, "resend": true}"#.to_vec(),
            400,
            "resend: needs only",
        ),
        (vec![b' '; 70 * 1024], 413, "over the limit of 65536 bytes"),
        (
            format!(r#"{{"only": ["{}@engie.com"]}}"#, "a".repeat(1024 * 1024)).into_bytes(),
            413,
            "over the limit",
        ),
    ];
    for (body, status, message) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
        let a = app.run_raw(body).await;
        assert_eq!(a.status, status, "{shown}: {}", a.text);
        let error = a.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{shown}: no error message: {}", a.text));
        assert!(
            error.contains(message),
            "{shown}: '{error}' does not contain '{message}'"
        );
        assert!(
            app.is_serving().await,
            "the handler stopped serving after {shown}"
        );
    }
    // Still fully working: a real request after all that.
    let ok = app
        .run(&json!({ "dryRun": true, "asOf": "2024-03-07" }))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(
        app.outbox_messages().is_empty(),
        "a refused request sent something"
    );
}

#[tokio::test]
async fn a_wrong_method_is_405_with_the_allowed_methods() {
    let app = spawn_app().await;
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let a = app
            .host_request(method.clone(), "/api/function_http", None)
            .await;
        assert_eq!(a.status, 405, "{method}: {}", a.text);
        assert_eq!(a.headers["allow"], "GET, POST");
        assert!(
            a.json["error"].as_str().unwrap().contains(method.as_str()),
            "{}",
            a.text
        );
    }
    let a = app
        .host_request(reqwest::Method::GET, "/function_timer", None)
        .await;
    assert_eq!(a.status, 405, "{}", a.text);
    assert!(app.is_serving().await);
}

#[tokio::test]
async fn an_unknown_or_malformed_run_id_is_404_or_400() {
    let app = spawn_app().await;
    let a = app.run_report("6d1c0e0e-0000-4000-8000-000000000000").await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a = app.run_report("..%2F..%2Fetc%2Fpasswd").await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.json["error"].as_str().unwrap().contains("runId"),
        "{}",
        a.text
    );
}

#[tokio::test]
async fn a_timer_payload_that_is_not_json_is_a_400_in_the_hosts_shape() {
    let app = spawn_app().await;
    let a = app.timer("not json").await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.json["Logs"][0]
            .as_str()
            .unwrap()
            .contains("not the host's JSON"),
        "{}",
        a.text
    );
    assert!(app.is_serving().await);
    assert!(app.outbox_messages().is_empty());
}

#[tokio::test]
async fn a_body_that_is_a_json_array_or_scalar_is_a_400_and_starts_no_run() {
    let app = spawn_app().await;
    // serde reads a sequence as a struct's fields by position: `[]` would be a live run and
    // the second a dry run as of 2024-03-07, had the shape not been checked first.
    for body in [
        &b"[]"[..],
        br#"[true, null, false, "2024-03-07"]"#,
        b"true",
        b"42",
        br#""dryRun""#,
    ] {
        let shown = String::from_utf8_lossy(body).to_string();
        let a = app.run_raw(body.to_vec()).await;
        assert_eq!(a.status, 400, "{shown}: {}", a.text);
        assert!(
            a.json["error"]
                .as_str()
                .unwrap()
                .starts_with("the body must be a JSON object"),
            "{shown}: {}",
            a.text
        );
    }
    let a = app
        .run_raw(br#"{"source": [null, null, "x.csv"]}"#.to_vec())
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.text.contains("source: must be a JSON object"),
        "{}",
        a.text
    );
    let health = app.health().await;
    assert_eq!(
        health.json["lastRun"],
        serde_json::Value::Null,
        "{}",
        health.text
    );
    assert!(
        app.outbox_messages().is_empty(),
        "a refused body sent something"
    );
    assert!(app.ledger_sent().is_empty());
}

#[tokio::test]
async fn a_null_body_is_refused_like_an_empty_one_and_sends_nothing() {
    let app = spawn_app().await;
    let a = app.run_raw(b"null".to_vec()).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(app.outbox_messages().is_empty());
    assert!(app.ledger_sent().is_empty());
}

#[tokio::test]
async fn routes_are_case_insensitive_and_ignore_a_trailing_slash_keeping_the_query() {
    let app = spawn_app().await;
    for path in [
        "/API/Function_Http",
        "/api/function_http/",
        "/Api/FUNCTION_HTTP/",
    ] {
        let a = app.host_request(reqwest::Method::GET, path, None).await;
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        assert_eq!(a.json["status"], "ok", "{path}: {}", a.text);
        let a = app
            .host_request(
                reqwest::Method::GET,
                &format!("{path}?runId=6d1c0e0e-0000-4000-8000-000000000000&code=k"),
                None,
            )
            .await;
        assert_eq!(a.status, 404, "{path}: the query was lost: {}", a.text);
        let body = serde_json::to_vec(&json!({ "dryRun": true, "asOf": "2024-03-07" })).unwrap();
        let a = app
            .host_request(reqwest::Method::POST, path, Some(body))
            .await;
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        assert_eq!(a.json["counts"]["planned"], 23, "{path}: {}", a.text);
    }
    let a = app
        .host_request(reqwest::Method::GET, "/Function_Timer/", None)
        .await;
    assert_eq!(a.status, 405, "{}", a.text);
    let a = app
        .host_request(reqwest::Method::GET, "/api/function_httpx", None)
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
}

#[tokio::test]
async fn a_careless_call_never_starts_a_live_run_and_is_told_what_to_send() {
    let app = spawn_app().await;
    let careless: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("/api/function_http", None),
        ("/api/function_http", Some(Vec::new())),
        ("/api/function_http", Some(b"null".to_vec())),
        ("/api/function_http", Some(b"{}".to_vec())),
        ("/api/function_http", Some(br#"{"dryRun": null}"#.to_vec())),
        (
            "/api/function_http",
            Some(br#"{"only": ["jm6453@engie.com"]}"#.to_vec()),
        ),
    ];
    for (path, body) in careless {
        let shown = format!("{path} {:?}", body.as_deref().map(String::from_utf8_lossy));
        let a = app.host_request(reqwest::Method::POST, path, body).await;
        assert_eq!(a.status, 400, "{shown}: {}", a.text);
        let error = a.json["error"].as_str().unwrap_or_default();
        assert!(error.contains(r#"{"dryRun": false}"#), "{shown}: {error}");
    }
    // A query parameter is never silently ignored: not even one that looks like an option.
    for path in [
        "/api/function_http?dryRun=true",
        "/api/function_http?code=k&force=true",
        "/api/function_http?dryrun",
    ] {
        let a = app
            .host_request(
                reqwest::Method::POST,
                path,
                Some(br#"{"dryRun": true, "asOf": "2024-03-07"}"#.to_vec()),
            )
            .await;
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        let error = a.json["error"].as_str().unwrap_or_default();
        assert!(error.contains("unknown query parameter"), "{path}: {error}");
        assert!(error.contains("code and runId"), "{path}: {error}");
    }
    // asOf is for dry runs: a live run is for today.
    let a = app
        .run(&json!({ "dryRun": false, "asOf": "2024-03-07" }))
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("asOf is for dry runs"), "{}", a.text);
    assert!(app.outbox_messages().is_empty(), "a careless call sent");
    // The key and the run id are still read.
    let ok = app
        .host_request(
            reqwest::Method::POST,
            "/api/function_http?code=k",
            Some(br#"{"dryRun": true, "asOf": "2024-03-07"}"#.to_vec()),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}
