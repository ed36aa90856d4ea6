//! The shared HTTP layer under faults, through the Teams bot channel: 5xx then success,
//! 429 with `Retry-After` in seconds and as an HTTP date, 4xx not retried, one token refresh
//! on 401, timeouts, and a 429 storm that never sends a reminder twice.

use crate::deliver_helpers::*;
use crate::fake_bot::RetryAfterStyle;
use futures::StreamExt;
use lookout_reminders::deliver::{Notifier, TeamsBotNotifier};
use lookout_reminders::http::{RetryPolicy, Waits};
use std::time::Duration;

async fn one_owner() -> (
    crate::fake_graph::FakeGraph,
    crate::fake_bot::FakeBot,
    TeamsBotNotifier,
    String,
) {
    one_owner_waiting(Waits::default()).await
}

/// [`one_owner`] whose retry waits go to `waits` (recorded ones return at once).
async fn one_owner_waiting(
    waits: Waits,
) -> (
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
    .with_policy(RetryPolicy {
        waits,
        ..fast_policy()
    });
    (graph, bot, teams, owner.to_string())
}

#[tokio::test]
async fn refusals_that_prove_the_message_was_not_taken_are_retried_with_growing_backoff() {
    let waits = Waits::recorded();
    let (_graph, bot, teams, owner) = one_owner_waiting(waits.clone()).await;
    // 412 is transient for Teams (teams-delivery.md); it refuses the post, so a retry
    // cannot make a second message.
    bot.fail_next(412, 2, "PreconditionFailed", None);

    let d = teams.send(&reminder(&owner)).await.unwrap();

    assert_eq!(d.attempts, 3);
    assert_eq!(bot.requests().len(), 3);
    // fast_policy: 100 ms base, equal jitter: first wait in [50, 100] ms, second in [100, 200].
    let taken = waits.taken();
    assert_eq!(taken.len(), 2, "{taken:?}");
    let (w1, w2) = (taken[0], taken[1]);
    assert!(
        w1 >= Duration::from_millis(50) && w1 <= Duration::from_millis(100),
        "{w1:?}"
    );
    assert!(
        w2 >= Duration::from_millis(100) && w2 <= Duration::from_millis(200),
        "{w2:?}"
    );
    assert_eq!(bot.accepted().values().sum::<u32>(), 1);
}

#[tokio::test]
async fn a_429_waits_the_retry_after_seconds() {
    let waits = Waits::recorded();
    let (_graph, bot, teams, owner) = one_owner_waiting(waits.clone()).await;
    bot.fail_next(429, 1, "TooManyRequests", Some("1"));
    let d = teams.send(&reminder(&owner)).await.unwrap();
    assert_eq!(d.attempts, 2);
    assert_eq!(bot.requests().len(), 2);
    // The shared limiter holds every caller (this one included) for what the service asked,
    // not the (shorter) backoff; the retry loop does not sleep on top of it (waiting twice).
    let at: Vec<Duration> = bot.requests().iter().map(|r| r.at).collect();
    assert!(at[1] - at[0] >= Duration::from_millis(950), "{at:?}");
    assert_eq!(waits.taken(), [Duration::ZERO]);
}

#[tokio::test]
async fn a_429_waits_until_the_retry_after_http_date() {
    let waits = Waits::recorded();
    let (graph, bot, teams, owner) = one_owner_waiting(waits.clone()).await;
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
    assert_eq!(bot.requests().len(), 2);
    // Until the date (one-second resolution: at least one of the two seconds asked for),
    // held by the shared limiter, not slept a second time by the retry loop.
    let at: Vec<Duration> = bot.requests().iter().map(|r| r.at).collect();
    assert!(at[1] - at[0] >= Duration::from_millis(900), "{at:?}");
    assert_eq!(waits.taken(), [Duration::ZERO]);
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
async fn a_post_that_times_out_is_maybe_delivered_and_never_posted_again() {
    let waits = Waits::recorded();
    let (_graph, bot, teams, owner) = one_owner().await;
    let teams = teams.with_policy(RetryPolicy {
        timeout: Duration::from_millis(200),
        max_attempts: 6,
        waits: waits.clone(),
        ..fast_policy()
    });
    bot.set_delay(Some(Duration::from_millis(600)));
    let e = teams.send(&reminder(&owner)).await.unwrap_err();
    assert!(e.transient);
    assert!(e.maybe_delivered, "{e:?}");
    assert!(e.reason.contains("timed out"), "{}", e.reason);
    // One attempt, no retry: no wait was ever taken (six attempts would have waited five
    // times). Counted by the policy, not by the clock.
    assert!(waits.taken().is_empty(), "{:?}", waits.taken());
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
        // The attempt timeout is a safety net here, not under test: on a loaded machine a
        // post to the local fake can take over fast_policy's 2 s (seen under `stress`), and
        // a timed-out post is rightly "maybe delivered", which is not this test's subject.
        timeout: Duration::from_secs(60),
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
    // 30 posts at 15/s with a burst of one take about 29/15 s; a slow machine can only
    // make it longer, so there is no upper bound here (the limiter's own unit tests check its
    // spacing on tokio's paused clock).
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1800), "{took:?}");
}

#[tokio::test]
async fn a_message_accepted_then_answered_502_is_maybe_delivered_not_posted_twice() {
    let (_graph, bot, teams, owner) = one_owner().await;
    bot.accept_then_fail(502, 1);

    let e = teams.send(&reminder(&owner)).await.unwrap_err();

    assert!(e.transient, "{e:?}");
    assert!(e.maybe_delivered, "{e:?}");
    assert!(e.reason.contains("may have been delivered"), "{}", e.reason);
    let accepted = bot.accepted();
    assert_eq!(accepted.values().sum::<u32>(), 1, "{accepted:?}");
    assert_eq!(bot.requests().len(), 1, "posted once");
}

#[tokio::test]
async fn a_message_accepted_then_left_unanswered_is_maybe_delivered_not_posted_twice() {
    let (_graph, bot, teams, owner) = one_owner().await;
    let teams = teams.with_policy(RetryPolicy {
        timeout: Duration::from_millis(200),
        ..fast_policy()
    });
    bot.accept_then_hang(Duration::from_millis(800), 1);

    let e = teams.send(&reminder(&owner)).await.unwrap_err();

    assert!(e.maybe_delivered, "{e:?}");
    assert_eq!(bot.accepted().values().sum::<u32>(), 1);
    // Give a wrongly retried post time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bot.requests().len(), 1, "posted once");
}

#[tokio::test]
async fn a_503_with_retry_after_is_a_refusal_and_is_retried() {
    let (_graph, bot, teams, owner) = one_owner().await;
    bot.fail_next(503, 1, "ServiceUnavailable", Some("0"));
    let d = teams.send(&reminder(&owner)).await.unwrap();
    assert_eq!(d.attempts, 2);
    assert_eq!(bot.accepted().values().sum::<u32>(), 1);
}

#[tokio::test]
async fn a_500_on_a_post_is_maybe_delivered_and_not_retried() {
    let (_graph, bot, teams, owner) = one_owner().await;
    bot.fail_next(500, 1, "InternalServerError", None);
    let e = teams.send(&reminder(&owner)).await.unwrap_err();
    assert!(e.maybe_delivered, "{e:?}");
    assert_eq!(bot.requests().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn no_log_line_of_any_delivery_fault_holds_an_address_a_token_or_a_signature() {
    use lookout_reminders::deliver::{EmailNotifier, FallbackNotifier};
    use std::sync::Arc;
    let (logs, _guard) = crate::deliver_helpers::capture_logs();
    let (graph, bot) = fakes().await;
    let tokens = identity_tokens().await;
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        tokens.clone(),
        reqwest::Client::new(),
    )
    .unwrap()
    .with_policy(RetryPolicy {
        timeout: Duration::from_millis(300),
        ..fast_policy()
    });
    let email = EmailNotifier::new(&settings(&graph, &bot), tokens, reqwest::Client::new())
        .unwrap()
        .with_policy(fast_policy());
    let chain = FallbackNotifier::new(vec![Arc::new(teams), Arc::new(email)]);
    let owners: Vec<String> = (0..7)
        .map(|i| format!("Fault.Owner{i}@contoso.com"))
        .collect();
    for o in &owners[1..] {
        graph.add_user(o, None);
        graph.preinstall(o);
    }
    // owners[0]: not in the directory (Graph's 404 repeats the address), e-mailed instead.
    // Then: 5xx after accepting, no answer, 429 then success, a revoked token, a 403.
    bot.accept_then_fail(502, 1);
    let scenarios: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| {}),
        Box::new(|| {}),
        Box::new(|| bot.accept_then_hang(Duration::from_millis(900), 1)),
        Box::new(|| bot.fail_next(429, 2, "TooManyRequests", Some("0"))),
        Box::new(|| bot.revoke_next_token()),
        Box::new(|| bot.fail_next(403, 2, "Forbidden", None)),
        Box::new(|| bot.fail_next(500, 1, "InternalServerError", None)),
    ];
    for (o, prepare) in owners.iter().zip(scenarios) {
        prepare();
        let _ = chain.send(&reminder(o)).await;
    }
    let text = logs.text();
    assert!(text.contains("user not found"), "{text}");
    let header = crate::fake_identity::FakeIdentity::shared().await.header();
    for line in text.lines() {
        assert!(!line.contains('@'), "address in a log line: {line}");
        assert!(
            !line.contains("Bearer"),
            "bearer token in a log line: {line}"
        );
        assert!(!line.contains("eyJ"), "JWT in a log line: {line}");
        assert!(!line.contains("sig="), "signature in a log line: {line}");
        assert!(
            !line.contains(&header),
            "identity header in a log line: {line}"
        );
    }
}
