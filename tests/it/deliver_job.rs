//! Delivery through `job::run`: the owner cap refuses a run before anything is sent unless
//! forced, and the Teams conversation ids come back to the ledger for the next run.

use crate::deliver_helpers::*;
use chrono::NaiveDate;
use lookout_reminders::deliver::TeamsBotNotifier;
use lookout_reminders::job::{self, Deps, JobError, RunRequest};
use lookout_reminders::ledger::{LedgerStore, LocalLedger};
use lookout_reminders::plan::Cadence;
use lookout_reminders::policy::Rules;
use lookout_reminders::report::Trigger;
use lookout_reminders::source::LocalFileSource;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HEADER: &str = "Device Owner,Lookout ID,MDM Device ID,Profile,Device Model,Device Platform,Issue Type,Issue,Classifications,Status,Risk,Date Detected,Date Resolved,Resolution Time,Details";

#[tokio::test]
async fn the_owner_cap_refuses_the_run_before_any_send_unless_forced() {
    let (graph, bot) = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let owners = ["a@contoso.com", "b@contoso.com", "c@contoso.com"];
    let mut csv = format!("{HEADER}\n");
    for (i, o) in owners.iter().enumerate() {
        graph.add_user(o, None);
        csv.push_str(&format!(
            "{o},id-{i},mdm-{i},Work,SM-A528B,Android,Application,Chrome(com.android.chrome),Vulnerability,Active,High,2024-03-01T10:00:00Z,,,\n"
        ));
    }
    let export = dir.path().join("export.csv");
    std::fs::write(&export, csv).unwrap();
    let ledger = Arc::new(LocalLedger::new(
        dir.path().join("state"),
        Duration::from_secs(600),
    ));
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        identity_tokens().await,
        reqwest::Client::new(),
    )
    .unwrap();
    let deps = Deps {
        source: Arc::new(LocalFileSource::new(export, 1 << 20)),
        notifier: Arc::new(teams),
        ledger: ledger.clone(),
        reports: ledger.clone(),
        renderer: Arc::new(renderer()),
        rules: Rules::default(),
        cadence: Cadence::default(),
        concurrency: 8,
        max_owners_per_run: 2,
        verbose: false,
        lock_renew_every: Duration::from_secs(30),
        digest: None,
        time_budget: None,
        page_publisher: None,
    };
    let mut req = RunRequest::new(Trigger::Cli);
    req.as_of = Some(NaiveDate::from_ymd_opt(2024, 3, 5).unwrap());

    let err = job::run(&deps, req.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            JobError::TooManyOwners {
                planned: 3,
                limit: 2
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("REMINDERS_MAX_OWNERS_PER_RUN"),
        "{err}"
    );
    assert!(bot.requests().is_empty(), "nothing sent");
    assert!(graph.requests().is_empty(), "nothing even looked up");

    req.max_owners = Some(3);
    let report = job::run(&deps, req, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.counts.sent, 3, "{}", report.summary);
    assert_eq!(bot.accepted().len(), 3);
    let snapshot = ledger.load().await.unwrap();
    for o in owners {
        let owner = lookout_reminders::domain::OwnerEmail::parse(o).unwrap();
        assert_eq!(
            snapshot.conversations.get(&owner),
            Some(&graph.chat_id_for(o)),
            "conversation cached for {o}"
        );
    }
}

#[tokio::test]
async fn a_maybe_delivered_post_is_recorded_as_sent_and_never_sent_again_on_any_channel() {
    use lookout_reminders::deliver::{EmailNotifier, FallbackNotifier, Notifier};
    use lookout_reminders::ledger::LedgerEvent;
    use lookout_reminders::report::ReminderStatus;
    let (graph, bot) = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let owners = ["lost@contoso.com", "fine@contoso.com"];
    let mut csv = format!("{HEADER}\n");
    for (i, o) in owners.iter().enumerate() {
        graph.add_user(o, None);
        graph.preinstall(o);
        csv.push_str(&format!(
            "{o},id-{i},mdm-{i},Work,SM-A528B,Android,Application,Chrome(com.android.chrome),Vulnerability,Active,High,2024-03-01T10:00:00Z,,,\n"
        ));
    }
    let export = dir.path().join("export.csv");
    std::fs::write(&export, csv).unwrap();
    let ledger = Arc::new(LocalLedger::new(
        dir.path().join("state"),
        Duration::from_secs(600),
    ));
    let tokens = identity_tokens().await;
    let teams = TeamsBotNotifier::new(
        &settings(&graph, &bot),
        tokens.clone(),
        reqwest::Client::new(),
    )
    .unwrap()
    .with_policy(fast_policy());
    let email =
        EmailNotifier::new(&settings(&graph, &bot), tokens, reqwest::Client::new()).unwrap();
    let chain: Vec<Arc<dyn Notifier>> = vec![Arc::new(teams), Arc::new(email)];
    let deps = Deps {
        source: Arc::new(LocalFileSource::new(export, 1 << 20)),
        notifier: Arc::new(FallbackNotifier::new(chain)),
        ledger: ledger.clone(),
        reports: ledger.clone(),
        renderer: Arc::new(renderer()),
        rules: Rules::default(),
        cadence: Cadence::default(),
        concurrency: 1,
        max_owners_per_run: 10,
        verbose: false,
        lock_renew_every: Duration::from_secs(30),
        digest: None,
        time_budget: None,
        page_publisher: None,
    };
    // The first post is stored by Teams, then a gateway loses the answer.
    bot.accept_then_fail(502, 1);

    let report = job::run(
        &deps,
        RunRequest::new(Trigger::Cli),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(report.counts.sent, 1, "{}", report.summary);
    assert_eq!(report.counts.maybe_delivered, 1, "{}", report.summary);
    assert!(
        report.summary.contains("maybe delivered"),
        "{}",
        report.summary
    );
    let maybe = report
        .reminders
        .iter()
        .find(|r| r.status == ReminderStatus::MaybeDelivered)
        .expect("a maybe-delivered line");
    assert!(maybe
        .reason
        .as_deref()
        .unwrap()
        .contains("may have been delivered"));
    assert!(
        graph.mails().is_empty(),
        "no fallback e-mail: {:?}",
        graph.mails()
    );
    let events: Vec<LedgerEvent> =
        std::fs::read_to_string(dir.path().join("state").join("ledger.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let recorded: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            LedgerEvent::Sent {
                maybe_delivered, ..
            } => Some(*maybe_delivered),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.len(), 2, "{events:?}");
    assert_eq!(recorded.iter().filter(|m| **m).count(), 1);

    // A rerun the same day (a button press, the timer again) sends nothing to anyone.
    let again = job::run(
        &deps,
        RunRequest::new(Trigger::Timer),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(again.counts.sent, 0, "{}", again.summary);
    let accepted = bot.accepted();
    assert_eq!(accepted.values().sum::<u32>(), 2, "{accepted:?}");
    assert!(accepted.values().all(|c| *c == 1), "{accepted:?}");
    assert!(graph.mails().is_empty());
}
