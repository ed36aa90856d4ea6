//! The e-mail channel writes in the owner's Graph `preferredLanguage` when the reminder is
//! rendered in more than one language, and in the default language (French) otherwise.

use crate::deliver_helpers::*;
use crate::fake_graph::FakeGraph;
use lookout_reminders::deliver::{Delivery, EmailNotifier, Notifier, OutgoingReminder};
use serde_json::Value;

async fn send(graph: &FakeGraph, msg: &OutgoingReminder) -> Delivery {
    let bot = crate::fake_bot::FakeBot::start_for_app(BOT_APP_ID).await;
    let n = EmailNotifier::new(
        &settings(graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap()
    .with_policy(fast_policy());
    n.send(msg).await.expect("the e-mail is sent")
}

fn only_mail(graph: &FakeGraph) -> Value {
    let mails = graph.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    mails[0].clone()
}

#[tokio::test(flavor = "current_thread")]
async fn an_owner_who_prefers_english_gets_the_english_email() {
    let graph = FakeGraph::start(CATALOG_APP_ID).await;
    let owner = "jean.dupont@contoso.com";
    graph.add_user(owner, Some("en-US"));
    let msg = reminder(owner);
    let english = msg.message_for(Some("en"));
    assert_eq!(english.language, "en");
    assert_ne!(english.subject, msg.messages[0].subject, "fr and en differ");

    let d = send(&graph, &msg).await;

    assert_eq!(d.language.as_deref(), Some("en"));
    let m = only_mail(&graph);
    assert_eq!(m["message"]["subject"], english.subject.as_str());
    assert_eq!(m["message"]["body"]["content"], english.html.as_str());
    let lookups = graph.requests_to("user");
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].method, "GET");
    assert_eq!(lookups[0].path, format!("v1.0/users/{owner}"));
    assert_eq!(lookups[0].query, "$select=preferredLanguage");
    assert_eq!(lookups[0].status, 200);
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
}

#[tokio::test(flavor = "current_thread")]
async fn an_owner_unknown_to_the_directory_still_gets_the_french_email_and_is_not_logged() {
    let (logs, _guard) = capture_logs();
    let graph = FakeGraph::start(CATALOG_APP_ID).await;
    let owner = "parti.ailleurs@contoso.com";
    let msg = reminder(owner);

    let d = send(&graph, &msg).await;

    assert_eq!(d.language.as_deref(), Some("fr"));
    let m = only_mail(&graph);
    assert_eq!(m["message"]["subject"], msg.messages[0].subject.as_str());
    assert_eq!(
        m["message"]["body"]["content"],
        msg.messages[0].html.as_str()
    );
    let lookups = graph.requests_to("user");
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].status, 404);
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
    // Graph's 404 message quotes the UPN: only the pseudonym may reach the logs.
    let text = logs.text();
    assert!(
        !text.contains("parti.ailleurs"),
        "owner e-mail in logs:\n{text}"
    );
    assert!(text.contains(&msg.owner().pseudonym()), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_lookup_does_not_stop_the_email_which_goes_out_in_french() {
    let (logs, _guard) = capture_logs();
    let graph = FakeGraph::start(CATALOG_APP_ID).await;
    let owner = "jean.dupont@contoso.com";
    graph.add_user(owner, Some("en-US"));
    // No `User.Read.All` for the identity: the directory read is refused.
    graph.fail_next("user", 403, 1, None, "Authorization_RequestDenied");
    let msg = reminder(owner);

    let d = send(&graph, &msg).await;

    assert_eq!(d.language.as_deref(), Some("fr"));
    assert_eq!(d.attempts, 1, "the sendMail attempts, not the lookup's");
    let m = only_mail(&graph);
    assert_eq!(m["message"]["subject"], msg.messages[0].subject.as_str());
    assert_eq!(graph.requests_to("user")[0].status, 403);
    let text = logs.text();
    assert!(
        text.contains("cannot look the owner's language up")
            && text.contains("Authorization_RequestDenied"),
        "{text}"
    );
    assert!(
        !text.contains("jean.dupont"),
        "owner e-mail in logs:\n{text}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_single_language_setup_does_no_lookup() {
    let graph = FakeGraph::start(CATALOG_APP_ID).await;
    let owner = "jean.dupont@contoso.com";
    // English preferred, but French is the only rendering: nothing to choose.
    graph.add_user(owner, Some("en-US"));
    let mut msg = reminder(owner);
    msg.messages.truncate(1);
    assert_eq!(msg.messages[0].language, "fr");

    let d = send(&graph, &msg).await;

    assert_eq!(d.language.as_deref(), Some("fr"));
    let m = only_mail(&graph);
    assert_eq!(m["message"]["subject"], msg.messages[0].subject.as_str());
    let gets: Vec<String> = graph
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("users/"))
        .map(|r| r.path)
        .collect();
    assert!(gets.is_empty(), "no directory lookup expected: {gets:?}");
    assert_eq!(graph.requests_to("send_mail").len(), 1);
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
}
