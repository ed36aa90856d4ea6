//! The Workflows webhook, e-mail and digest channels: exact bodies, the webhook secret kept
//! out of errors and logs, and the digest's content.

use crate::deliver_helpers::*;
use crate::fake_bot::check_activity;
use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use chrono::{NaiveDate, Utc};
use lookout_reminders::config::Secret;
use lookout_reminders::deliver::{
    send_digest, DigestSender, EmailNotifier, Notifier, WorkflowsNotifier,
};
use lookout_reminders::report::{ReminderReport, ReminderStatus, ReportIssue, RunReport, Trigger};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const SIG: &str = "Zx9SuperSecretSignature0123";

/// A fake Power Automate trigger: checks the signature, records bodies, can fail.
#[derive(Clone)]
pub(crate) struct FakeWebhook {
    pub(crate) url: String,
    pub(crate) bodies: Arc<Mutex<Vec<Value>>>,
    fail: Arc<Mutex<VecDeque<u16>>>,
}

pub(crate) async fn webhook() -> FakeWebhook {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hook = FakeWebhook {
        url: format!(
            "http://{addr}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig={SIG}"
        ),
        bodies: Arc::default(),
        fail: Arc::default(),
    };
    let h = hook.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
        let h = h.clone();
        async move {
            if uri
                .query()
                .is_none_or(|q| !q.contains(&format!("sig={SIG}")))
            {
                return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
            }
            if let Some(status) = h.fail.lock().unwrap().pop_front() {
                return (
                    StatusCode::from_u16(status).unwrap(),
                    format!(
                        "{{\"error\":{{\"code\":\"Injected\",\"message\":\"failed for {uri}\"}}}}"
                    ),
                )
                    .into_response();
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            h.bodies.lock().unwrap().push(v);
            StatusCode::ACCEPTED.into_response()
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    hook
}

#[tokio::test]
async fn workflows_posts_the_card_with_the_recipient_as_teams_expects() {
    let hook = webhook().await;
    let n =
        WorkflowsNotifier::with_url(Secret::new(hook.url.clone()), 100.0, reqwest::Client::new());
    let d = n.send(&reminder("owner@contoso.com")).await.unwrap();
    assert_eq!(d.channel, "workflows");
    assert!(!n.describe().contains(SIG));
    let body = hook.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["type"], "message");
    assert_eq!(body["recipient"], "owner@contoso.com");
    let a = &body["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    assert!(a.get("contentUrl").is_some_and(Value::is_null));
    assert_eq!(a["content"]["type"], "AdaptiveCard");
    assert_eq!(a["content"]["version"], "1.5");
    assert!(serde_json::to_vec(&body).unwrap().len() < 28 * 1024);
}

#[tokio::test(flavor = "current_thread")]
async fn the_webhook_secret_never_appears_in_errors_or_logs() {
    let (logs, _guard) = capture_logs();
    let hook = webhook().await;
    hook.fail.lock().unwrap().extend([503, 503, 503, 503]);
    let n =
        WorkflowsNotifier::with_url(Secret::new(hook.url.clone()), 100.0, reqwest::Client::new())
            .with_policy(fast_policy());
    let e = n.send(&reminder("owner@contoso.com")).await.unwrap_err();
    assert!(e.transient);
    assert!(e.reason.contains("503"), "{}", e.reason);
    // A closed port: the transport error must not carry the URL either.
    let closed = format!("http://127.0.0.1:9/hook?sig={SIG}");
    let n = WorkflowsNotifier::with_url(Secret::new(closed), 100.0, reqwest::Client::new())
        .with_policy(fast_policy());
    let e2 = n.send(&reminder("owner@contoso.com")).await.unwrap_err();
    assert!(e2.reason.contains("cannot connect"), "{}", e2.reason);
    tracing::warn!(reason = %e.reason, code = ?e.code, "reminder not sent");
    tracing::warn!(reason = %e2.reason, "reminder not sent");
    let text = logs.text();
    assert!(
        text.contains("reminder not sent"),
        "logs were captured: {text}"
    );
    for shown in [format!("{e:?}"), format!("{e2:?}"), text] {
        assert!(!shown.contains(SIG), "secret leaked: {shown}");
        assert!(!shown.contains("/paths/invoke"), "URL leaked: {shown}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn email_goes_through_graph_send_mail_from_the_shared_mailbox_and_no_token_is_logged() {
    let (logs, _guard) = capture_logs();
    let (graph, bot) = fakes().await;
    let n = EmailNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let msg = reminder("owner@contoso.com");

    let d = n.send(&msg).await.unwrap();

    assert_eq!(d.channel, "email");
    assert_eq!(d.attempts, 1);
    let mails = graph.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m["_sender"], SENDER);
    assert_eq!(m["saveToSentItems"], true);
    assert_eq!(m["message"]["subject"], msg.messages[0].subject.as_str());
    assert_eq!(
        m["message"]["body"]["content"],
        msg.messages[0].html.as_str()
    );
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
    let auth = graph.requests()[0].authorization.clone().unwrap();
    let token = auth.trim_start_matches("Bearer ");
    let text = logs.text();
    assert!(!text.contains(token), "token leaked into logs");
    assert!(
        !text.contains(&token[token.len() - 20..]),
        "token signature leaked into logs"
    );
}

fn issue(kind: &str, platform: &str, risk: &str, days_left: i64) -> ReportIssue {
    ReportIssue {
        lookout_id: Some("id".into()),
        device_model: "SM-A528B".into(),
        platform: platform.into(),
        kind: kind.into(),
        issue: "Chrome".into(),
        risk: risk.into(),
        detected: Utc::now(),
        deadline: NaiveDate::from_ymd_opt(2024, 3, 31).unwrap(),
        days_left,
        last_os: None,
    }
}

fn line(
    owner: &str,
    status: ReminderStatus,
    reason: Option<&str>,
    issues: Vec<ReportIssue>,
) -> ReminderReport {
    ReminderReport {
        owner: owner.into(),
        status,
        reason: reason.map(str::to_string),
        channel: Some("teams_bot".into()),
        stage: None,
        message_id: None,
        attempts: None,
        escalated_to: None,
        issues,
    }
}

fn report() -> RunReport {
    let mut r = RunReport {
        schema: lookout_reminders::report::SCHEMA.into(),
        run_id: "run-4242".into(),
        invocation_id: None,
        trigger: Trigger::Timer,
        dry_run: false,
        as_of: NaiveDate::from_ymd_opt(2024, 3, 21).unwrap(),
        started_at: Utc::now(),
        finished_at: Utc::now(),
        source: Default::default(),
        rows: Default::default(),
        rejected: vec![],
        owners: Default::default(),
        reminders: vec![
            line(
                "a@contoso.com",
                ReminderStatus::Sent,
                None,
                vec![issue("vulnerable_app", "android", "high", 5)],
            ),
            line(
                "b@contoso.com",
                ReminderStatus::Sent,
                None,
                vec![issue("os_out_of_date", "ios", "medium", -3)],
            ),
            line(
                "c@contoso.com",
                ReminderStatus::Failed,
                Some("user not found (Request_ResourceNotFound)"),
                vec![issue("vulnerable_app", "android", "high", -1)],
            ),
            line(
                "d@contoso.com",
                ReminderStatus::Skipped,
                Some("account disabled"),
                vec![issue("security_patch_out_of_date", "android", "low", 9)],
            ),
        ],
        counts: Default::default(),
        resolved: 0,
        warnings: vec![],
        incomplete: None,
        team_action: vec![],
        summary: String::new(),
    };
    r.finish(Utc::now());
    r
}

#[tokio::test]
async fn the_digest_sums_up_the_run_with_pseudonymised_owners() {
    let hook = webhook().await;
    let sender = DigestSender::new(Secret::new(hook.url.clone()), false, reqwest::Client::new());
    let report = report();

    send_digest(&report, &renderer(), &sender).await.unwrap();

    let body = hook.bodies.lock().unwrap()[0].clone();
    assert!(body.get("recipient").is_none());
    let wire = serde_json::to_vec(&body).unwrap();
    assert!(wire.len() < 28 * 1024);
    let card = body["attachments"][0]["content"].clone();
    // The same checks the fake Bot Connector applies to a card.
    let as_activity = serde_json::json!({"type": "message", "summary": "d", "text": "d", "attachments": body["attachments"]});
    check_activity(&serde_json::to_vec(&as_activity).unwrap()).unwrap();
    // Values are markdown-escaped in the card (`run\\-4242`): compare without the escapes.
    let text = card.to_string().replace("\\\\", "");
    assert!(text.contains("Run run-4242 (timer)"), "{text}");
    assert!(
        text.contains("2 reminders sent, 1 failed, 1 skipped"),
        "{text}"
    );
    assert!(text.contains("Owners past the deadline: 2"), "{text}");
    assert!(
        text.contains("teams_bot: user not found (Request_ResourceNotFound)"),
        "{text}"
    );
    assert!(
        text.contains(r#"{"title":"Vulnerable app","value":"2"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"title":"Android","value":"3"}"#)
            && text.contains(r#"{"title":"High","value":"2"}"#),
        "{text}"
    );
    let pseudo = lookout_reminders::domain::OwnerEmail::parse("c@contoso.com")
        .unwrap()
        .pseudonym();
    assert!(text.contains(&pseudo), "{text}");
    assert!(
        !text.contains("contoso"),
        "owners must be pseudonymised: {text}"
    );
}

#[tokio::test]
async fn a_verbose_digest_names_the_owners() {
    let hook = webhook().await;
    let sender = DigestSender::new(Secret::new(hook.url.clone()), true, reqwest::Client::new());
    send_digest(&report(), &renderer(), &sender).await.unwrap();
    let text = hook.bodies.lock().unwrap()[0]["attachments"][0]["content"].to_string();
    assert!(text.contains("contoso"), "{text}");
}

#[tokio::test]
async fn the_digest_is_posted_after_a_run_that_sent_and_not_after_a_same_day_no_op_rerun() {
    use lookout_reminders::deliver::OutboxNotifier;
    use lookout_reminders::job::{self, RunRequest};
    use tokio_util::sync::CancellationToken;
    let hook = webhook().await;
    let tmp = tempfile::tempdir().unwrap();
    let export = crate::helpers::fixture("issues-export.csv");
    // Ledger and reports in the test's folder (the reports once went to the working directory).
    let mut deps = crate::helpers::local_deps(&tmp.path().join("state"), &export, &[]);
    deps.notifier = Arc::new(OutboxNotifier::new(tmp.path().join("outbox")));
    deps.digest = Some(Arc::new(DigestSender::new(
        Secret::new(hook.url.clone()),
        false,
        reqwest::Client::new(),
    )));

    let first = job::run(
        &deps,
        RunRequest::new(Trigger::Timer),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(first.counts.sent > 0, "{}", first.summary);
    assert_eq!(
        hook.bodies.lock().unwrap().len(),
        1,
        "a digest after sending"
    );

    let rerun = job::run(
        &deps,
        RunRequest::new(Trigger::Timer),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(rerun.counts.sent, 0, "{}", rerun.summary);
    assert_eq!(
        hook.bodies.lock().unwrap().len(),
        1,
        "no digest for a run that did nothing"
    );
}
