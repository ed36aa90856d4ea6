//! The shared HTTP layer under faults, through the Teams bot channel: 5xx then success,
//! 429 with `Retry-After` in seconds and as an HTTP date, 4xx not retried, one token refresh
//! on 401, timeouts, and a 429 storm that never sends a reminder twice.

use crate::deliver_helpers::*;
use crate::fake_bot::RetryAfterStyle;
use futures::StreamExt;
use lookout_reminders::deliver::{Notifier, TeamsBotNotifier};
use lookout_reminders::http::RetryPolicy;
use std::time::Duration;

async fn one_owner() -> (
    crate::fake_graph::FakeGraph,
    crate::fake_bot::FakeBot,
    TeamsBotNotifier,
    String,
) {
    let (graph, bot) = fakes().await;
    let owner = "flaky@contoso.com";
    graph.add_user(owner, None);
    graph.preinstall(owner);
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap()
    .with_policy(fast_policy());
    (graph, bot, teams, owner.to_string())
}

#[tokio::test]
async fn server_errors_are_retried_with_growing_backoff_then_succeed() {
    let (_graph, bot, teams, owner) = one_owner().await;
    bot.fail_next(500, 1, "InternalServerError", None);
    bot.fail_next(503, 1, "ServiceUnavailable", None);

    let d = teams.send(&reminder(&owner)).await.unwrap();

    assert_eq!(d.attempts, 3);
    let at: Vec<Duration> = bot.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3);
    // fast_policy: 100 ms base, equal jitter: first wait in [50, 100] ms, second in [100, 200].
    let (w1, w2) = (at[1] - at[0], at[2] - at[1]);
    assert!(
        w1 >= Duration::from_millis(45) && w1 < Duration::from_millis(400),
        "{w1:?}"
    );
    assert!(
        w2 >= Duration::from_millis(95) && w2 < Duration::from_millis(600),
        "{w2:?}"
    );
    assert_eq!(bot.accepted().values().sum::<u32>(), 1);
}

#[tokio::test]
async fn a_429_waits_the_retry_after_seconds() {
    let (_graph, bot, teams, owner) = one_owner().await;
    bot.fail_next(429, 1, "TooManyRequests", Some("1"));
    let d = teams.send(&reminder(&owner)).await.unwrap();
    assert_eq!(d.attempts, 2);
    let at: Vec<Duration> = bot.requests().iter().map(|r| r.at).collect();
    let waited = at[1] - at[0];
    assert!(
        waited >= Duration::from_millis(990) && waited < Duration::from_millis(1800),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_429_waits_until_the_retry_after_http_date() {
    let (graph, bot, teams, owner) = one_owner().await;
    // The conversation is known: only the user lookup comes before the post, so the date
    // below is still ahead when the 429 arrives, even on a loaded machine.
    let mut msg = reminder(&owner);
    msg.cached_conversation = Some(graph.chat_id_for(&owner));
    // HTTP dates have a one-second resolution: ask for two seconds from now.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    bot.fail_next(
        429,
        1,
        "TooManyRequests",
        Some(Box::leak(date.into_boxed_str())),
    );
    let d = teams.send(&msg).await.unwrap();
    assert_eq!(d.attempts, 2);
    let at: Vec<Duration> = bot.requests().iter().map(|r| r.at).collect();
    let waited = at[1] - at[0];
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2600),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_keeps_the_service_code() {
    let (_graph, bot, teams, owner) = one_owner().await;
    bot.fail_next(400, 1, "BadArgument", None);
    let e = teams.send(&reminder(&owner)).await.unwrap_err();
    assert_eq!(bot.requests().len(), 1);
    assert_eq!(e.code.as_deref(), Some("BadArgument"));
    assert!(!e.transient);
    assert!(e.reason.contains("HTTP 400"), "{}", e.reason);
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_succeeds() {
    let (_graph, bot, teams, owner) = one_owner().await;
    bot.fail_next(401, 1, "Unauthorized", None);
    let d = teams.send(&reminder(&owner)).await.unwrap();
    assert_eq!(bot.requests().len(), 2);
    assert_eq!(d.attempts, 1, "the refresh is not a retry");
    // A second 401 in a row is final.
    bot.fail_next(401, 2, "Unauthorized", None);
    let e = teams.send(&reminder(&owner)).await.unwrap_err();
    assert_eq!(bot.requests().len(), 4);
    assert!(e.reason.contains("401"), "{}", e.reason);
}

#[tokio::test]
async fn a_refused_token_is_replaced_by_a_new_one_from_the_identity_endpoint() {
    let (_graph, bot, teams, owner) = one_owner().await;
    let identity = crate::fake_identity::FakeIdentity::shared().await;
    teams.send(&reminder(&owner)).await.unwrap();
    let first = bot.requests()[0].authorization.clone().unwrap();
    // The service refuses the token from now on (the SDK credential still caches it).
    bot.revoke_next_token();

    let d = teams.send(&reminder(&owner)).await.unwrap();

    assert_eq!(d.attempts, 1, "the refresh is not a retry");
    let requests = bot.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![201, 401, 201]
    );
    assert_eq!(requests[1].authorization.as_deref(), Some(first.as_str()));
    let second = requests[2].authorization.clone().unwrap();
    assert_ne!(second, first, "the refused token was sent again");
    assert_eq!(bot.revoked_hits(), 0, "the refused token came back");
    // The new token was minted for the bot's audience and app after the refused one.
    let jti = crate::fake_identity::bearer_jti(&second).unwrap();
    let minted = identity
        .minted()
        .into_iter()
        .find(|m| m.jti == jti)
        .expect("the new token comes from the identity endpoint");
    assert_eq!(minted.request.resource, crate::fake_bot::BOT_AUDIENCE);
    assert_eq!(minted.request.client_id.as_deref(), Some(BOT_APP_ID));
    assert!(jti > crate::fake_identity::bearer_jti(&first).unwrap());
    assert!(bot.violations().is_empty(), "{:?}", bot.violations());
}

#[tokio::test]
async fn a_token_issued_to_another_app_is_refused_by_the_bot_connector() {
    let (graph, _) = fakes().await;
    let bot = crate::fake_bot::FakeBot::start_for_app("another-bot-app-id").await;
    let owner = "other@contoso.com";
    graph.add_user(owner, None);
    graph.preinstall(owner);
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap()
    .with_policy(fast_policy());

    let e = teams.send(&reminder(owner)).await.unwrap_err();

    assert!(e.reason.contains("401"), "{}", e.reason);
    let violations = bot.violations();
    assert!(
        !violations.is_empty() && violations.iter().all(|v| v.contains("appid")),
        "{violations:?}"
    );
}

#[tokio::test]
async fn throttling_past_the_retries_is_a_transient_failure() {
    let (_graph, bot, teams, owner) = one_owner().await;
    bot.fail_next(429, 10, "TooManyRequests", Some("0"));
    let e = teams.send(&reminder(&owner)).await.unwrap_err();
    assert_eq!(bot.requests().len(), 4, "max_attempts");
    assert!(e.transient);
    assert!(
        e.reason.contains("throttled: out of retries"),
        "{}",
        e.reason
    );
}

#[tokio::test]
async fn a_slow_service_times_out_and_is_retried_a_bounded_number_of_times() {
    let (_graph, bot, teams, owner) = one_owner().await;
    let teams = teams.with_policy(RetryPolicy {
        timeout: Duration::from_millis(200),
        max_attempts: 2,
        ..fast_policy()
    });
    bot.set_delay(Some(Duration::from_millis(600)));
    let started = std::time::Instant::now();
    let e = teams.send(&reminder(&owner)).await.unwrap_err();
    assert!(e.transient);
    assert!(e.reason.contains("timed out"), "{}", e.reason);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_429_storm_never_sends_a_reminder_twice_nor_loses_one() {
    let (graph, bot) = fakes().await;
    let owners: Vec<String> = (0..60).map(|i| format!("storm{i}@contoso.com")).collect();
    for o in &owners {
        graph.add_user(o, None);
        graph.preinstall(o);
    }
    // The service allows 20/s and also throttles the first 30 posts outright; the client
    // is configured too fast on purpose, so it meets the 429s and must honour them.
    bot.set_rate_limit(20, RetryAfterStyle::Seconds);
    bot.fail_next(429, 30, "TooManyRequests", Some("1"));
    let policy = RetryPolicy {
        max_attempts: 10,
        ..fast_policy()
    };
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap()
    .with_policy(policy);

    let results: Vec<_> = futures::stream::iter(owners.iter())
        .map(|o| {
            let teams = &teams;
            async move { teams.send(&reminder(o)).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results.iter().filter(|r| r.is_err()).collect::<Vec<_>>()
    );
    let accepted = bot.accepted();
    assert_eq!(accepted.len(), owners.len(), "every owner reached");
    assert!(
        accepted.values().all(|c| *c == 1),
        "duplicates: {accepted:?}"
    );
    assert!(bot.throttled() >= 30);
    assert!(bot.violations().is_empty());
}

#[tokio::test]
async fn the_client_side_limiter_keeps_under_the_service_rate_without_429s() {
    let (graph, bot) = fakes().await;
    let owners: Vec<String> = (0..30).map(|i| format!("paced{i}@contoso.com")).collect();
    for o in &owners {
        graph.add_user(o, None);
        graph.preinstall(o);
    }
    bot.set_rate_limit(20, RetryAfterStyle::Seconds);
    let mut s = settings(&graph, &bot);
    s.rate_per_second = 15.0;
    let teams = TeamsBotNotifier::new(&s, identity_tokens().await, reqwest::Client::new()).unwrap();
    let started = std::time::Instant::now();
    let n = futures::stream::iter(owners.iter())
        .map(|o| {
            let teams = &teams;
            // Conversations known: the bot's pace is under test, not the lookups before it.
            let mut msg = reminder(o);
            msg.cached_conversation = Some(graph.chat_id_for(o));
            async move { teams.send(&msg).await.is_ok() }
        })
        .buffer_unordered(16)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    assert_eq!(n, 30);
    assert_eq!(bot.throttled(), 0);
    // 30 posts at 15/s: about two seconds.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(4),
        "{took:?}"
    );
}
