//! Escalation to the owner's manager (`REMINDERS_ESCALATE_TO_MANAGER`) through the e-mail
//! and Teams bot channels, and the Bot Connector's conversation creation when Graph has no
//! 1:1 chat (`REMINDERS_BOT_APP_ID` + `REMINDERS_TENANT_ID`), against the strict fakes.

use crate::deliver_helpers::*;
use crate::fake_bot::FakeBot;
use crate::fake_graph::{FakeGraph, MANAGER_SELECT};
use chrono::NaiveDate;
use lookout_reminders::config::DeliverySettings;
use lookout_reminders::config::{ChannelKind, Env};
use lookout_reminders::deliver::{
    EmailNotifier, EscalatedReport, ManagerSummary, Notifier, OutgoingReminder, TeamsBotNotifier,
};
use lookout_reminders::domain::OwnerEmail;
use lookout_reminders::job::{self, Deps, RunRequest};
use lookout_reminders::ledger::LocalLedger;
use lookout_reminders::plan::{Cadence, Stage};
use lookout_reminders::policy::Rules;
use lookout_reminders::report::{ReminderStatus, Trigger};
use lookout_reminders::source::LocalFileSource;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const HEADER: &str = "Device Owner,Lookout ID,MDM Device ID,Profile,Device Model,Device Platform,Issue Type,Issue,Classifications,Status,Risk,Date Detected,Date Resolved,Resolution Time,Details";

/// Delivery settings pointing at the fakes, escalation on or off.
fn escalating(graph: &FakeGraph, bot: &FakeBot, on: bool) -> DeliverySettings {
    DeliverySettings {
        escalate_to_manager: on,
        ..settings(graph, bot)
    }
}

/// A reminder three days past its deadline (so it escalates), rendered in both languages.
fn overdue(owner: &str) -> OutgoingReminder {
    let planned = planned(owner, -3);
    assert!(planned.escalate);
    let messages = renderer()
        .render_all(&planned, NaiveDate::from_ymd_opt(2024, 4, 3).unwrap())
        .unwrap();
    OutgoingReminder {
        run_id: "run-1".into(),
        reminder: planned,
        messages,
        cached_conversation: None,
        verbose: false,
        allowed_domains: Vec::new(),
    }
}

fn cc_of(mail: &serde_json::Value) -> Option<String> {
    mail["message"].get("ccRecipients").map(|cc| {
        cc[0]["emailAddress"]["address"]
            .as_str()
            .unwrap()
            .to_string()
    })
}

#[tokio::test(flavor = "current_thread")]
async fn an_overdue_reminder_by_email_names_the_manager_found_by_object_id_and_logs_only_pseudonyms(
) {
    let (logs, _guard) = capture_logs();
    let (graph, bot) = fakes().await;
    let owner = "jean.dupont@contoso.com";
    let owner_id = graph.add_user(owner, None);
    graph.set_manager(owner, Some("Marie.Martin@contoso.com"));
    let email = EmailNotifier::new(
        &escalating(&graph, &bot, true),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let msg = overdue(owner);

    let d = email.send(&msg).await.unwrap();

    assert_eq!(d.channel, "email");
    assert_eq!(
        d.escalated_to.as_deref(),
        Some("marie.martin@contoso.com (told in the manager's summary)")
    );
    assert_eq!(
        d.manager.as_ref().map(|m| m.as_str()),
        Some("marie.martin@contoso.com")
    );
    let lookups = graph.requests_to("manager");
    assert_eq!(lookups.len(), 1);
    assert_eq!(lookups[0].path, format!("v1.0/users/{owner_id}/manager"));
    assert_eq!(
        crate::fake_graph::query_pairs(&lookups[0].query)
            .get("$select")
            .map(String::as_str),
        Some(MANAGER_SELECT)
    );
    let mails = graph.mails();
    assert_eq!(
        mails.len(),
        1,
        "one e-mail: the owner's; the manager is told once per run, in a summary"
    );
    let m = &mails[0];
    assert_eq!(m["_sender"], SENDER);
    assert_eq!(
        m["message"]["toRecipients"][0]["emailAddress"]["address"],
        owner
    );
    assert_eq!(cc_of(m), None);
    assert_eq!(m["message"]["subject"], msg.messages[0].subject.as_str());
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());

    let text = logs.text();
    let manager = OwnerEmail::parse("marie.martin@contoso.com").unwrap();
    assert!(
        text.contains("the owner's manager will be told") && text.contains(&manager.pseudonym()),
        "{text}"
    );
    assert!(
        !text.to_lowercase().contains("marie.martin"),
        "manager e-mail in logs"
    );
    assert!(!text.contains("jean.dupont"), "owner e-mail in logs");
}

#[tokio::test]
async fn without_a_manager_the_email_goes_without_cc_and_the_run_report_says_so() {
    let (graph, bot) = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let managed = "a@contoso.com";
    let unmanaged = "b@contoso.com";
    let mut csv = format!("{HEADER}\n");
    for (i, o) in [managed, unmanaged].iter().enumerate() {
        graph.add_user(o, None);
        // High risk: the plan escalates it.
        csv.push_str(&format!(
            "{o},id-{i},mdm-{i},Work,SM-A528B,Android,Application,Chrome(com.android.chrome),Vulnerability,Active,High,2024-03-01T10:00:00Z,,,\n"
        ));
    }
    graph.set_manager(managed, Some("boss@contoso.com"));
    let export = dir.path().join("export.csv");
    std::fs::write(&export, csv).unwrap();
    let email = EmailNotifier::new(
        &escalating(&graph, &bot, true),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let ledger = Arc::new(LocalLedger::new(
        dir.path().join("state"),
        Duration::from_secs(600),
    ));
    let deps = Deps {
        source: Arc::new(LocalFileSource::new(export, 1 << 20)),
        notifier: Arc::new(email),
        ledger: ledger.clone(),
        reports: ledger,
        renderer: Arc::new(renderer()),
        rules: Rules::default(),
        cadence: Cadence::default(),
        concurrency: 4,
        max_owners_per_run: 10,
        verbose: false,
        lock_renew_every: Duration::from_secs(30),
        digest: None,
        time_budget: None,
        page_publisher: None,
    };
    let mut req = RunRequest::new(Trigger::Cli);
    req.as_of = Some(NaiveDate::from_ymd_opt(2024, 3, 5).unwrap());

    let report = job::run(&deps, req, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(report.counts.sent, 2, "{}", report.summary);
    let line = |o: &str| report.reminders.iter().find(|l| l.owner == o).unwrap();
    assert_eq!(line(unmanaged).status, ReminderStatus::Sent);
    assert_eq!(
        line(unmanaged).escalated_to.as_deref(),
        Some("no manager in the directory")
    );
    assert_eq!(
        line(managed).escalated_to.as_deref(),
        Some("boss@contoso.com (summary e-mailed, 1 report(s))")
    );
    let json = serde_json::to_value(line(unmanaged)).unwrap();
    assert_eq!(json["escalated_to"], "no manager in the directory");
    assert!(report
        .reminders_csv()
        .contains("no manager in the directory"));

    let lookups = graph.requests_to("manager");
    assert_eq!(lookups.len(), 2);
    assert!(lookups.iter().any(|r| r.status == 404));
    let mails = graph.mails();
    let mut to: Vec<&str> = mails
        .iter()
        .map(|m| {
            assert_eq!(cc_of(m), None);
            m["message"]["toRecipients"][0]["emailAddress"]["address"]
                .as_str()
                .unwrap()
        })
        .collect();
    to.sort();
    assert_eq!(to, [managed, unmanaged, "boss@contoso.com"]);
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
}

#[tokio::test]
async fn with_escalation_off_no_manager_is_looked_up_on_any_channel() {
    let (graph, bot) = fakes().await;
    let owner = "owner@contoso.com";
    graph.add_user(owner, None);
    graph.set_manager(owner, Some("boss@contoso.com"));
    let off = escalating(&graph, &bot, false);
    let tokens = identity_tokens().await;
    let email = EmailNotifier::new(&off, tokens.clone(), reqwest::Client::new()).unwrap();
    let teams = TeamsBotNotifier::new(&off, tokens, reqwest::Client::new()).unwrap();
    let msg = overdue(owner);

    let by_mail = email.send(&msg).await.unwrap();
    let by_teams = teams.send(&msg).await.unwrap();

    assert_eq!(by_mail.escalated_to, None);
    assert_eq!(by_teams.escalated_to, None);
    assert!(
        graph.requests_to("manager").is_empty(),
        "{:?}",
        graph.requests_to("manager")
    );
    let mails = graph.mails();
    assert_eq!(mails.len(), 1, "only the owner's e-mail");
    assert_eq!(cc_of(&mails[0]), None);
    assert_eq!(bot.accepted().get(&graph.chat_id_for(owner)), Some(&1));
}

#[tokio::test]
async fn a_reminder_that_does_not_escalate_looks_no_manager_up_even_with_escalation_on() {
    let (graph, bot) = fakes().await;
    let owner = "owner@contoso.com";
    graph.add_user(owner, None);
    graph.set_manager(owner, Some("boss@contoso.com"));
    let email = EmailNotifier::new(
        &escalating(&graph, &bot, true),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let msg = reminder(owner);
    assert!(!msg.reminder.escalate);

    let d = email.send(&msg).await.unwrap();

    assert_eq!(d.escalated_to, None);
    assert!(graph.requests_to("manager").is_empty());
    assert_eq!(cc_of(&graph.mails()[0]), None);
}

#[tokio::test]
async fn the_teams_bot_posts_the_card_to_the_owner_then_names_the_manager_found_by_object_id() {
    let (graph, bot) = fakes().await;
    let owner = "jean.dupont@contoso.com";
    let owner_id = graph.add_user(owner, Some("fr-FR"));
    graph.set_manager(owner, Some("boss@contoso.com"));
    let teams = TeamsBotNotifier::new(
        &escalating(&graph, &bot, true),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let msg = overdue(owner);

    let d = teams.send(&msg).await.unwrap();

    assert_eq!(d.channel, "teams_bot");
    assert_eq!(
        d.escalated_to.as_deref(),
        Some("boss@contoso.com (told in the manager's summary)")
    );
    assert_eq!(
        d.manager.as_ref().map(|m| m.as_str()),
        Some("boss@contoso.com")
    );
    let chat = graph.chat_id_for(owner);
    assert_eq!(
        bot.accepted().get(&chat),
        Some(&1),
        "the owner got the card"
    );
    let routes: Vec<&str> = graph.requests().iter().map(|r| r.route).collect();
    assert_eq!(
        routes,
        ["user", "install", "installed_apps", "chat", "manager",],
        "the manager is looked up (by object id) after the owner's card"
    );
    assert_eq!(
        graph.requests_to("manager")[0].path,
        format!("v1.0/users/{owner_id}/manager")
    );
    assert!(
        graph.mails().is_empty(),
        "no per-owner copy: the job sends one summary per manager"
    );
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
    assert!(bot.violations().is_empty(), "{:?}", bot.violations());
}

#[tokio::test]
async fn without_a_sender_mailbox_the_teams_bot_only_reports_the_manager() {
    let (graph, bot) = fakes().await;
    let owner = "owner@contoso.com";
    graph.add_user(owner, Some("en-US"));
    graph.set_manager(owner, Some("boss@contoso.com"));
    let settings = DeliverySettings {
        sender_mailbox: None,
        ..escalating(&graph, &bot, true)
    };
    let teams =
        TeamsBotNotifier::new(&settings, identity_tokens().await, reqwest::Client::new()).unwrap();

    let d = teams.send(&overdue(owner)).await.unwrap();

    assert_eq!(bot.accepted().get(&graph.chat_id_for(owner)), Some(&1));
    let reported = d.escalated_to.unwrap();
    assert!(
        reported.starts_with("boss@contoso.com (not told")
            && reported.contains("REMINDERS_SENDER_MAILBOX"),
        "{reported}"
    );
    assert_eq!(
        d.manager, None,
        "nothing to send the manager's summary from"
    );
    assert_eq!(graph.requests_to("manager").len(), 1);
    assert!(graph.mails().is_empty(), "no copy without a sender mailbox");
}

#[tokio::test]
async fn a_failed_manager_lookup_never_fails_the_owners_reminder() {
    let (graph, bot) = fakes().await;
    let owner = "owner@contoso.com";
    graph.add_user(owner, None);
    graph.set_manager(owner, Some("boss@contoso.com"));
    graph.fail_next("manager", 403, 1, None, "Authorization_RequestDenied");
    let teams = TeamsBotNotifier::new(
        &escalating(&graph, &bot, true),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap()
    .with_policy(fast_policy());

    let d = teams.send(&overdue(owner)).await.unwrap();

    assert_eq!(bot.accepted().get(&graph.chat_id_for(owner)), Some(&1));
    let reported = d.escalated_to.unwrap();
    assert!(
        reported.starts_with("cannot look the manager up") && reported.contains("403"),
        "{reported}"
    );
    assert!(graph.mails().is_empty());
}

#[tokio::test]
async fn with_bot_and_tenant_ids_the_bot_connector_creates_the_conversation_and_graph_chat_is_never_asked(
) {
    let (graph, bot) = fakes().await;
    bot.expect_conversation_creation(BOT_APP_ID, TENANT_ID);
    let settings = DeliverySettings {
        bot_app_id: Some(BOT_APP_ID.into()),
        tenant_id: Some(TENANT_ID.into()),
        ..settings(&graph, &bot)
    };
    let teams = TeamsBotNotifier::new(&settings, identity_tokens().await, reqwest::Client::new())
        .unwrap()
        .with_policy(fast_policy());

    // A new owner and one whose app is already installed (409) both get a created
    // conversation: one Teams-endpoint call each, the install.
    for (owner, preinstalled) in [("a@contoso.com", false), ("b@contoso.com", true)] {
        let user_id = graph.add_user(owner, None);
        if preinstalled {
            graph.preinstall(owner);
        }

        let d = teams.send(&reminder(owner)).await.unwrap();

        let created = bot
            .created_conversation(&user_id)
            .expect("a conversation created for the user's object id");
        assert!(created.starts_with("a:"), "{created}");
        assert_eq!(d.conversation_id.as_deref(), Some(created.as_str()));
        assert_eq!(bot.accepted().get(&created), Some(&1), "card posted there");
        assert_eq!(bot.accepted().get(&graph.chat_id_for(owner)), None);
    }
    let routes: Vec<(&str, u16)> = graph
        .requests()
        .iter()
        .map(|r| (r.route, r.status))
        .collect();
    assert_eq!(
        routes,
        [
            ("user", 200),
            ("install", 201),
            ("user", 200),
            ("install", 409)
        ]
    );
    let creations = bot.creations();
    assert_eq!(creations.len(), 2);
    for (body, status) in &creations {
        assert_eq!(*status, 201, "{body}");
        assert_eq!(body["bot"]["id"], format!("28:{BOT_APP_ID}").as_str());
        assert_eq!(body["isGroup"], false);
        assert_eq!(body["channelData"]["tenant"]["id"], TENANT_ID);
        assert_eq!(body["members"].as_array().unwrap().len(), 1);
    }
    assert!(bot.violations().is_empty(), "{:?}", bot.violations());
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
}

#[tokio::test]
async fn without_bot_and_tenant_ids_a_missing_chat_fails_as_before() {
    let (graph, bot) = fakes().await;
    bot.expect_conversation_creation(BOT_APP_ID, TENANT_ID);
    let owner = "owner@contoso.com";
    graph.add_user(owner, None);
    graph.fail_next("chat", 404, 1, None, "NotFound");
    let settings = DeliverySettings {
        bot_app_id: Some(BOT_APP_ID.into()),
        tenant_id: None,
        ..settings(&graph, &bot)
    };
    let teams =
        TeamsBotNotifier::new(&settings, identity_tokens().await, reqwest::Client::new()).unwrap();

    let e = teams.send(&reminder(owner)).await.unwrap_err();

    assert!(
        e.reason.starts_with("cannot get the 1:1 chat with the bot"),
        "{}",
        e.reason
    );
    assert!(bot.creations().is_empty());
    assert!(bot.accepted().is_empty());
}

#[tokio::test]
async fn the_bot_its_email_fallback_and_the_managers_copies_share_one_mailbox_pace() {
    let (graph, bot) = fakes().await;
    // Teams delivers to these and e-mails their managers a copy (escalation)…
    let reached: Vec<String> = (0..3).map(|i| format!("teams{i}@contoso.com")).collect();
    for (i, o) in reached.iter().enumerate() {
        graph.add_user(o, None);
        graph.preinstall(o);
        graph.set_manager(o, Some(&format!("boss{i}@contoso.com")));
    }
    // …these cannot get the Teams app, so the e-mail channel sends them the reminder.
    let unreachable: Vec<String> = (0..3).map(|i| format!("mail{i}@contoso.com")).collect();
    for o in &unreachable {
        graph.add_user(o, None);
        graph.update_user(o, |u| u.install_forbidden = true);
    }
    let mut config =
        lookout_reminders::config::Config::from_env_map(&lookout_reminders::config::Env::default())
            .unwrap();
    config.delivery = DeliverySettings {
        mail_rate_per_second: 2.0,
        ..escalating(&graph, &bot, true)
    };
    let notifier = lookout_reminders::app::Wiring::with_tokens(config, identity_tokens().await)
        .notifier(&[
            lookout_reminders::config::ChannelKind::TeamsBot,
            lookout_reminders::config::ChannelKind::Email,
        ])
        .unwrap();

    let messages: Vec<OutgoingReminder> = reached
        .iter()
        .map(|o| overdue(o))
        .chain(unreachable.iter().map(|o| reminder(o)))
        .collect();
    let results = futures::future::join_all(messages.iter().map(|m| notifier.send(m))).await;

    for (m, r) in messages.iter().zip(&results) {
        let d = r.as_ref().unwrap_or_else(|e| panic!("{}: {e}", m.owner()));
        let expected = if m.reminder.escalate {
            "teams_bot"
        } else {
            "email"
        };
        assert_eq!(d.channel, expected, "{}", m.owner());
    }
    // The managers' summaries go out through the same chain, on the same mailbox pace.
    for (i, o) in reached.iter().enumerate() {
        let summary = ManagerSummary {
            manager: OwnerEmail::parse(&format!("boss{i}@contoso.com")).unwrap(),
            reports: vec![EscalatedReport {
                owner: OwnerEmail::parse(o).unwrap(),
                stage: Stage::Overdue,
                issues: 1,
                days_left: -3,
            }],
            language: "fr".into(),
        };
        assert!(matches!(
            notifier.send_manager_summary(&summary).await,
            Some(Ok(true))
        ));
    }
    let mails = graph.mails();
    let copies = mails
        .iter()
        .filter(|m| {
            m["message"]["subject"]
                .as_str()
                .unwrap()
                .starts_with("[Copie manager]")
        })
        .count();
    assert_eq!(
        (mails.len(), copies),
        (6, 3),
        "three reminders, three copies"
    );
    // 2/s with a burst of one: every send at least half a second after the one before
    // (a little less for scheduling noise), whichever of the channel or escalation sent it.
    let times = graph.mail_times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(400)),
        "sendMail gaps {gaps:?}"
    );
    let span = *times.last().unwrap() - times[0];
    assert!(span >= Duration::from_millis(2400), "{span:?}");
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
    assert!(bot.violations().is_empty(), "{:?}", bot.violations());
}

#[tokio::test(flavor = "current_thread")]
async fn a_manager_outside_the_allowed_domains_gets_no_cc_and_no_copy_and_the_report_says_so() {
    let (logs, _guard) = capture_logs();
    let (graph, bot) = fakes().await;
    let partner_managed = "a@contoso.com";
    let in_house = "b@contoso.com";
    graph.add_user(partner_managed, None);
    graph.add_user(in_house, None);
    graph.preinstall(partner_managed);
    graph.preinstall(in_house);
    graph.set_manager(partner_managed, Some("boss@partner.example"));
    graph.set_manager(in_house, Some("boss@contoso.com"));
    let settings = escalating(&graph, &bot, true);
    let allowed = vec!["contoso.com".to_string()];
    // Both channels: the e-mail's cc and the Teams bot's e-mailed copy.
    let email =
        EmailNotifier::new(&settings, identity_tokens().await, reqwest::Client::new()).unwrap();
    let teams =
        TeamsBotNotifier::new(&settings, identity_tokens().await, reqwest::Client::new()).unwrap();
    for n in [&email as &dyn Notifier, &teams as &dyn Notifier] {
        for owner in [partner_managed, in_house] {
            let mut msg = overdue(owner);
            msg.allowed_domains = allowed.clone();
            let d = n.send(&msg).await.unwrap();
            let escalated = d.escalated_to.unwrap_or_default();
            if owner == partner_managed {
                assert!(
                    escalated.contains("boss@partner.example held back"),
                    "{}: {escalated}",
                    n.channel()
                );
                assert!(
                    escalated.contains("REMINDERS_ALLOWED_DOMAINS"),
                    "{escalated}"
                );
            } else {
                assert!(escalated.starts_with("boss@contoso.com"), "{escalated}");
            }
        }
    }
    let mails = graph.mails();
    for m in &mails {
        assert!(
            !m.to_string().contains("partner.example"),
            "a partner manager got mail: {m}"
        );
    }
    // Managers are told by one summary per run from the job (never a cc): the in-house one
    // is named above; the partner one is held back before anything could be sent.
    assert!(
        !logs.text().contains("boss@partner.example"),
        "address in logs: {}",
        logs.text()
    );
}

/// A job over an export of `owners` (all high risk, so each escalates) by e-mail.
fn escalating_run(
    graph: &FakeGraph,
    bot: &FakeBot,
    dir: &std::path::Path,
    owners: &[&str],
    tokens: Arc<dyn lookout_reminders::azure::AccessTokens>,
) -> Deps {
    let mut csv = format!("{HEADER}\n");
    for (i, o) in owners.iter().enumerate() {
        csv.push_str(&format!(
            "{o},id-{i},mdm-{i},Work,SM-A528B,Android,Application,Chrome(com.android.chrome),Vulnerability,Active,High,2024-03-01T10:00:00Z,,,\n"
        ));
    }
    let export = dir.join("export.csv");
    std::fs::write(&export, csv).unwrap();
    let email = EmailNotifier::new(
        &escalating(graph, bot, true),
        tokens,
        reqwest::Client::new(),
    )
    .unwrap();
    let ledger = Arc::new(LocalLedger::new(
        dir.join("state"),
        Duration::from_secs(600),
    ));
    Deps {
        source: Arc::new(LocalFileSource::new(export, 1 << 20)),
        notifier: Arc::new(email),
        ledger: ledger.clone(),
        reports: ledger,
        renderer: Arc::new(renderer()),
        rules: Rules::default(),
        cadence: Cadence::default(),
        concurrency: 4,
        max_owners_per_run: 10,
        verbose: false,
        lock_renew_every: Duration::from_secs(30),
        digest: None,
        time_budget: None,
        page_publisher: None,
    }
}

fn summaries(graph: &FakeGraph) -> Vec<serde_json::Value> {
    graph
        .mails()
        .into_iter()
        .filter(|m| {
            m["message"]["toRecipients"][0]["emailAddress"]["address"] == "boss@contoso.com"
        })
        .collect()
}

#[tokio::test]
async fn k_escalated_reports_of_one_manager_give_one_summary_listing_all_k_once_a_day() {
    let (graph, bot) = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let owners = ["a@contoso.com", "b@contoso.com", "c@contoso.com"];
    for o in owners {
        graph.add_user(o, None);
        graph.set_manager(o, Some("Boss@contoso.com"));
    }
    let deps = escalating_run(&graph, &bot, dir.path(), &owners, identity_tokens().await);
    let run = |day: u32, force: bool| {
        let mut req = RunRequest::new(Trigger::Cli);
        req.as_of = Some(NaiveDate::from_ymd_opt(2024, 3, day).unwrap());
        // A same-day rerun for the listed owners only: `resend` goes with `only`.
        if force {
            req.resend = true;
            req.only = owners
                .iter()
                .map(|o| lookout_reminders::domain::OwnerEmail::parse(o).unwrap())
                .collect();
        }
        job::run(&deps, req, CancellationToken::new())
    };

    let first = run(5, false).await.unwrap();

    assert_eq!(first.counts.sent, 3, "{}", first.summary);
    let sent = summaries(&graph);
    assert_eq!(
        sent.len(),
        1,
        "one summary for the manager, not one per report"
    );
    let html = sent[0]["message"]["body"]["content"].as_str().unwrap();
    for o in owners {
        assert_eq!(html.matches(o).count(), 1, "{o} listed once: {html}");
    }
    assert_eq!(html.matches("<li>").count(), 3, "{html}");
    for l in &first.reminders {
        assert_eq!(
            l.escalated_to.as_deref(),
            Some("boss@contoso.com (summary e-mailed, 3 report(s))"),
            "{}",
            l.owner
        );
    }

    // The button pressed the same day (forced rerun): the owners are reminded again, the
    // manager is not told twice in a day.
    let again = run(5, true).await.unwrap();
    assert_eq!(again.counts.sent, 3, "{}", again.summary);
    assert_eq!(summaries(&graph).len(), 1, "no second summary the same day");
    assert!(again.reminders.iter().all(|l| l
        .escalated_to
        .as_deref()
        .unwrap()
        .contains("already told")));

    // The next day (still in the daily days after the deadline) the manager is told again.
    let next = run(6, true).await.unwrap();
    assert_eq!(next.counts.sent, 3, "{}", next.summary);
    assert_eq!(summaries(&graph).len(), 2);
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
}

#[test]
fn workflows_with_escalation_is_refused_at_start_up_naming_the_setting() {
    let url = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=SIG";
    for channels in ["workflows", "workflows,email", "email,workflows", "outbox"] {
        let env = Env::from_pairs(&[
            ("REMINDERS_CHANNEL", channels),
            ("REMINDERS_WORKFLOWS_URL", url),
            ("REMINDERS_SENDER_MAILBOX", SENDER),
            ("REMINDERS_ESCALATE_TO_MANAGER", "true"),
        ]);
        let err = DeliverySettings::from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("REMINDERS_ESCALATE_TO_MANAGER"),
            "{channels}: {err}"
        );
        assert!(!err.contains("SIG"), "{err}");
    }
    let email = DeliverySettings::from_env(&Env::from_pairs(&[
        ("REMINDERS_CHANNEL", "email"),
        ("REMINDERS_SENDER_MAILBOX", SENDER),
        ("REMINDERS_ESCALATE_TO_MANAGER", "true"),
    ]))
    .unwrap();
    assert_eq!(email.channels, vec![ChannelKind::Email]);
    let off = DeliverySettings::from_env(&Env::from_pairs(&[
        ("REMINDERS_CHANNEL", "workflows"),
        ("REMINDERS_WORKFLOWS_URL", url),
    ]));
    assert!(off.is_ok(), "workflows without escalation stays allowed");
}
