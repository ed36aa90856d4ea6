//! The Teams bot channel against the fake Graph and Bot Connector, with tokens from the real
//! managed-identity credential: lookups, installs, cached conversations, roster errors,
//! skips and the fallback to e-mail.

use crate::deliver_helpers::*;
use crate::fake_bot::BOT_AUDIENCE;
use crate::fake_graph::GRAPH_AUDIENCE;
use crate::fake_identity::FakeIdentity;
use lookout_reminders::deliver::{EmailNotifier, FallbackNotifier, Notifier, TeamsBotNotifier};
use std::sync::Arc;

#[tokio::test]
async fn the_bot_installs_its_app_finds_the_chat_and_posts_the_card_in_the_owners_language() {
    let (graph, bot) = fakes().await;
    let owner = "Jean.Dupont@contoso.com";
    graph.add_user(owner, Some("en-US"));
    let tokens = identity_tokens().await;
    let teams =
        TeamsBotNotifier::new(&settings(&graph, &bot), tokens, reqwest::Client::new()).unwrap();

    let d = teams.send(&reminder(owner)).await.unwrap();

    let chat = graph.chat_id_for(owner);
    assert_eq!(d.channel, "teams_bot");
    assert_eq!(d.conversation_id.as_deref(), Some(chat.as_str()));
    assert_eq!(d.language.as_deref(), Some("en"));
    assert_eq!(d.attempts, 1);
    assert!(d.message_id.is_some());
    let routes: Vec<&str> = graph.requests().iter().map(|r| r.route).collect();
    assert_eq!(
        routes,
        ["user", "install", "installed_apps", "chat"],
        "install first (no listing before it), then Graph's chat: no tenant id for the bot connector"
    );
    assert!(
        graph.requests()[0]
            .path
            .ends_with("users/jean.dupont@contoso.com"),
        "{}",
        graph.requests()[0].path
    );
    assert!(graph
        .requests()
        .iter()
        .all(|r| r.audience.as_deref() == Some(GRAPH_AUDIENCE)));
    assert_eq!(bot.accepted().get(&chat), Some(&1));
    let sent = bot.requests();
    assert_eq!(sent.len(), 1);
    let activity = sent[0].body.clone().unwrap();
    assert_eq!(activity["attachments"][0]["content"]["version"], "1.5");
    assert!(
        activity["summary"].as_str().unwrap().is_ascii(),
        "English subject expected: {}",
        activity["summary"]
    );
    assert_eq!(
        crate::fake_identity::bearer_audience(sent[0].authorization.as_deref().unwrap()).as_deref(),
        Some(BOT_AUDIENCE)
    );
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
    assert!(bot.violations().is_empty(), "{:?}", bot.violations());
    let resources: Vec<String> = FakeIdentity::shared()
        .await
        .requests()
        .into_iter()
        .map(|r| r.resource)
        .collect();
    assert!(
        resources.iter().any(|r| r == "https://graph.microsoft.com"),
        "{resources:?}"
    );
    assert!(
        resources
            .iter()
            .any(|r| r == "https://api.botframework.com"),
        "{resources:?}"
    );
}

#[tokio::test]
async fn a_cached_conversation_skips_the_install_and_chat_lookups() {
    let (graph, bot) = fakes().await;
    let owner = "cached@contoso.com";
    graph.add_user(owner, None);
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let mut msg = reminder(owner);
    msg.cached_conversation = Some("19:cached@unq.gbl.spaces".into());

    let d = teams.send(&msg).await.unwrap();

    assert_eq!(
        d.conversation_id.as_deref(),
        Some("19:cached@unq.gbl.spaces")
    );
    assert_eq!(
        d.language.as_deref(),
        Some("fr"),
        "no preferred language: the default one"
    );
    let routes: Vec<&str> = graph.requests().iter().map(|r| r.route).collect();
    assert_eq!(routes, ["user"]);
    assert_eq!(bot.accepted().get("19:cached@unq.gbl.spaces"), Some(&1));
}

#[tokio::test]
async fn a_cached_conversation_that_is_gone_is_looked_up_again_and_the_new_id_returned() {
    let (graph, bot) = fakes().await;
    let owner = "moved@contoso.com";
    graph.add_user(owner, None);
    graph.preinstall(owner);
    bot.forget("19:old@unq.gbl.spaces");
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let mut msg = reminder(owner);
    msg.cached_conversation = Some("19:old@unq.gbl.spaces".into());

    let d = teams.send(&msg).await.unwrap();

    let chat = graph.chat_id_for(owner);
    assert_eq!(d.conversation_id.as_deref(), Some(chat.as_str()));
    assert_eq!(bot.accepted().get(&chat), Some(&1));
    assert_eq!(bot.accepted().get("19:old@unq.gbl.spaces"), None);
    let routes: Vec<&str> = graph.requests().iter().map(|r| r.route).collect();
    assert_eq!(
        routes,
        ["user", "installed_apps", "chat"],
        "already installed: no install"
    );
}

#[tokio::test]
async fn an_unknown_owner_fails_with_user_not_found_and_nothing_is_posted() {
    let (graph, bot) = fakes().await;
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let e = teams
        .send(&reminder("nobody@contoso.com"))
        .await
        .unwrap_err();
    assert_eq!(e.reason, "user not found");
    assert_eq!(e.code.as_deref(), Some("Request_ResourceNotFound"));
    assert!(!e.skip && !e.transient);
    assert!(bot.requests().is_empty());
}

#[tokio::test]
async fn a_disabled_account_is_skipped_not_failed() {
    let (graph, bot) = fakes().await;
    graph.add_user("gone@contoso.com", None);
    graph.update_user("gone@contoso.com", |u| u.account_enabled = false);
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let e = teams.send(&reminder("gone@contoso.com")).await.unwrap_err();
    assert!(e.skip, "{e:?}");
    assert_eq!(e.reason, "account disabled");
    assert_eq!(graph.requests().len(), 1);
    assert!(bot.requests().is_empty());
}

#[tokio::test]
async fn bot_not_in_conversation_roster_reinstalls_the_app_once_then_sends() {
    let (graph, bot) = fakes().await;
    let owner = "blocked-once@contoso.com";
    graph.add_user(owner, None);
    graph.preinstall(owner);
    let chat = graph.chat_id_for(owner);
    bot.fail_conversation(&chat, 403, 1, "BotNotInConversationRoster");
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();

    let d = teams.send(&reminder(owner)).await.unwrap();

    assert_eq!(d.attempts, 2);
    assert_eq!(bot.accepted().get(&chat), Some(&1));
    let installs: Vec<u16> = graph
        .requests_to("install")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        installs,
        [409, 409],
        "the first install, then one reinstall; already installed counts as installed"
    );
}

#[tokio::test]
async fn when_the_bot_stays_out_of_the_roster_the_owner_gets_an_email_saying_why() {
    let (graph, bot) = fakes().await;
    let owner = "blocked@contoso.com";
    graph.add_user(owner, None);
    graph.preinstall(owner);
    let chat = graph.chat_id_for(owner);
    bot.fail_conversation(&chat, 403, 5, "BotNotInConversationRoster");
    let s = settings(&graph, &bot);
    let tokens = identity_tokens().await;
    let chain = FallbackNotifier::new(vec![
        Arc::new(TeamsBotNotifier::new(&s, tokens.clone(), reqwest::Client::new()).unwrap()),
        Arc::new(EmailNotifier::new(&s, tokens, reqwest::Client::new()).unwrap()),
    ]);

    let d = chain.send(&reminder(owner)).await.unwrap();

    assert_eq!(d.channel, "email");
    let why = d.fell_back.unwrap();
    assert!(
        why.contains("teams_bot") && why.contains("BotNotInConversationRoster"),
        "{why}"
    );
    assert_eq!(bot.accepted().get(&chat), None);
    assert_eq!(graph.mails().len(), 1);
}

#[tokio::test]
async fn an_owner_without_teams_gets_the_email_instead() {
    let (graph, bot) = fakes().await;
    let owner = "nolicence@contoso.com";
    graph.add_user(owner, None);
    graph.update_user(owner, |u| u.install_forbidden = true);
    let s = settings(&graph, &bot);
    let tokens = identity_tokens().await;
    let chain = FallbackNotifier::new(vec![
        Arc::new(TeamsBotNotifier::new(&s, tokens.clone(), reqwest::Client::new()).unwrap()),
        Arc::new(EmailNotifier::new(&s, tokens, reqwest::Client::new()).unwrap()),
    ]);

    let d = chain.send(&reminder(owner)).await.unwrap();

    assert_eq!(d.channel, "email");
    let why = d.fell_back.unwrap();
    assert!(
        why.contains("cannot install the Teams app") && why.contains("Forbidden"),
        "{why}"
    );
    let mail = &graph.mails()[0];
    assert_eq!(mail["_sender"], SENDER);
    assert_eq!(
        mail["message"]["toRecipients"][0]["emailAddress"]["address"],
        owner
    );
    assert!(bot.requests().is_empty());
}

#[tokio::test]
async fn new_owners_under_graphs_teams_limit_each_get_one_card_and_the_shared_pace_backs_off() {
    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let (graph, bot) = fakes().await;
    bot.expect_conversation_creation(BOT_APP_ID, TENANT);
    // A tenant whose other apps leave only 5 requests/s of the Teams endpoints' 30.
    graph.set_teams_rate_limit(5);
    let owners: Vec<String> = (0..20).map(|i| format!("new{i}@contoso.com")).collect();
    let ids: Vec<String> = owners.iter().map(|o| graph.add_user(o, None)).collect();
    let s = lookout_reminders::config::DeliverySettings {
        tenant_id: Some(TENANT.into()),
        // The default ceiling: the documented 30/s.
        graph_teams_rate_per_second: 30.0,
        ..settings(&graph, &bot)
    };
    let limits = lookout_reminders::deliver::DeliveryLimits::from_settings(&s);
    let teams = TeamsBotNotifier::new_with_limits(
        &s,
        identity_tokens().await,
        reqwest::Client::new(),
        &limits,
    )
    .unwrap()
    .with_policy(fast_policy());

    let results = futures::future::join_all(owners.iter().map(|o| {
        let teams = &teams;
        async move { teams.send(&reminder(o)).await }
    }))
    .await;

    for (r, o) in results.iter().zip(&owners) {
        assert!(r.is_ok(), "{o}: {r:?}");
    }
    for id in &ids {
        let conversation = bot.created_conversation(id).expect("created");
        assert_eq!(
            bot.accepted().get(&conversation),
            Some(&1),
            "exactly one card"
        );
    }
    assert_eq!(bot.accepted().len(), owners.len());
    assert!(graph.teams_throttled() > 0, "the fake throttled");
    assert!(limits.graph_teams.backoffs() > 0, "the pace backed off");
    assert!(limits.graph_teams.current_rate() < 30.0);
    // One Teams-endpoint call per owner plus the refused ones retried, nothing else.
    assert_eq!(
        graph.count("install"),
        owners.len() as u64 + graph.teams_throttled()
    );
    assert_eq!(graph.count("installed_apps") + graph.count("chat"), 0);
    assert!(graph.violations().is_empty(), "{:?}", graph.violations());
    assert!(bot.violations().is_empty(), "{:?}", bot.violations());
}

#[tokio::test]
async fn one_conversation_never_gets_more_than_its_documented_limit() {
    let (graph, bot) = fakes().await;
    let owner = "busy@contoso.com";
    graph.add_user(owner, None);
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let mut msg = reminder(owner);
    msg.cached_conversation = Some("19:busy@unq.gbl.spaces".into());

    // Nine sends to one conversation at once: 7 go at once, the others wait their turn
    // (8 per 2 s documented) instead of drawing 429s.
    let results = futures::future::join_all((0..9).map(|_| teams.send(&msg))).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(bot.accepted().get("19:busy@unq.gbl.spaces"), Some(&9));
    assert_eq!(
        bot.thread_throttled(),
        0,
        "the client paced the conversation"
    );
}
