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
        renderer: Arc::new(renderer()),
        rules: Rules::default(),
        cadence: Cadence::default(),
        concurrency: 8,
        max_owners_per_run: 2,
        verbose: false,
        lock_renew_every: Duration::from_secs(30),
        digest: None,
        time_budget: None,
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

    req.force = true;
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
