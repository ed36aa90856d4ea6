//! The bounded ledger (#10 item 4), one suite for both stores (local folder, Blob container on
//! Azurite): a checkpoint plus the events after it loads to the same history as the whole
//! ledger; pruning by the retention window; a crash after any step of a checkpoint loses
//! nothing and replays nothing twice; appends racing a checkpoint are all kept; a live run
//! over a large ledger leaves a checkpoint and its rerun sends nothing; the insights page's
//! figures do not change after a checkpoint.

use crate::azure_ledger::blob_settings;
use crate::azurite::Azurite;
use chrono::{DateTime, Duration as Days, NaiveDate, TimeZone, Utc};
use lookout_reminders::config::{Config, Env};
use lookout_reminders::domain::{IssueKind, OwnerEmail, Platform, Risk};
use lookout_reminders::insights::Insights;
use lookout_reminders::insights::{DailyAggregate, IssueFacts, Resolution, ResolvedHow};
use lookout_reminders::ledger::{
    BlobLedger, CheckpointDone, CheckpointOptions, CheckpointStep, LedgerEvent, LedgerSnapshot,
    LedgerStore, LocalLedger, MIN_RETENTION_DAYS,
};
use lookout_reminders::plan::{IssueKey, Stage};
use std::sync::Arc;
use std::time::Duration;

/// Either store, as a concrete type (the checkpoint's crash hook is not on the trait).
#[derive(Clone)]
enum Ledger {
    Local(Arc<LocalLedger>),
    Blob(Arc<BlobLedger>),
}

impl Ledger {
    fn store(&self) -> Arc<dyn LedgerStore> {
        match self {
            Ledger::Local(l) => l.clone(),
            Ledger::Blob(b) => b.clone(),
        }
    }

    async fn checkpoint(&self, options: CheckpointOptions) -> Option<CheckpointDone> {
        match self {
            Ledger::Local(l) => l.checkpoint_with(options).await,
            Ledger::Blob(b) => b.checkpoint_with(options).await,
        }
        .expect("the checkpoint works")
    }
}

/// Makes independent instances over one storage (like two function instances).
enum Backend {
    Local(tempfile::TempDir),
    Blob(Box<lookout_reminders::config::AzureSettings>),
}

impl Backend {
    fn local() -> Self {
        Backend::Local(tempfile::tempdir().unwrap())
    }

    async fn blob() -> Self {
        Backend::Blob(Box::new(blob_settings(Azurite::shared().await, &[]).await))
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Blob(_) => "blob",
        }
    }

    fn make(&self) -> Ledger {
        match self {
            Backend::Local(dir) => Ledger::Local(Arc::new(LocalLedger::new(
                dir.path(),
                Duration::from_secs(600),
            ))),
            Backend::Blob(settings) => {
                Ledger::Blob(Arc::new(BlobLedger::from_settings(settings).unwrap()))
            }
        }
    }
}

async fn backends() -> Vec<Backend> {
    vec![Backend::local(), Backend::blob().await]
}

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Days::days(n)
}

fn at(n: i64) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day(n).and_hms_opt(7, 30, 0).unwrap())
}

fn owner(i: usize) -> OwnerEmail {
    OwnerEmail::parse(&format!("owner{i:04}@contoso.com")).unwrap()
}

fn facts(detected: i64, escalated: bool) -> IssueFacts {
    IssueFacts {
        detected_on: day(detected),
        deadline: day(detected + 14),
        kind: IssueKind::OsOutOfDate,
        platform: Platform::Android,
        risk: Risk::High,
        escalated,
    }
}

/// `days` daily runs over `owners` owners: each owner's issue is reminded weekly, then daily
/// once overdue; every day a few issues are resolved (measured) and as many new ones appear;
/// some sends may have been delivered; conversations are cached; managers told; and each
/// run leaves its daily aggregate. Every kind of event the history carries, in run order.
fn simulated_history(days: i64, owners: usize) -> Vec<Vec<LedgerEvent>> {
    // Per owner: (issue generation, detection day, reminders so far).
    let mut open: Vec<(usize, i64, u32)> = (0..owners).map(|_| (0, 0, 0)).collect();
    let mut runs = Vec::new();
    for d in 0..days {
        let mut events = Vec::new();
        let run_id = format!("run-{d:04}");
        for (i, (generation, detected, sent)) in open.iter_mut().enumerate() {
            let issue = IssueKey(format!("dev-{i}/os/{generation}"));
            // A few a day resolved, replaced by a new issue on the same phone.
            if *sent > 0 && (i + d as usize).is_multiple_of(97) {
                events.push(LedgerEvent::Resolved {
                    owner: owner(i),
                    issue: issue.clone(),
                    as_of: day(d),
                    run_id: run_id.clone(),
                    resolution: Some(Resolution::measure(
                        &facts(*detected, *sent > 3),
                        *sent > 3,
                        *sent,
                        day(d - (i % 3) as i64),
                        ResolvedHow::StatusResolved,
                    )),
                });
                *generation += 1;
                *detected = d;
                *sent = 0;
                continue;
            }
            let overdue = d - *detected > 14;
            if *sent == 0 || overdue || (d - *detected) % 7 == 0 {
                events.push(LedgerEvent::Sent {
                    owner: owner(i),
                    issue,
                    lookout_id: Some(format!("dev-{i}")),
                    stage: if *sent == 0 {
                        Stage::First
                    } else if overdue {
                        Stage::Overdue
                    } else {
                        Stage::Repeat
                    },
                    as_of: day(d),
                    sent_at: at(d) + Days::seconds(i as i64),
                    channel: "teams_bot".into(),
                    message_id: Some(format!("m-{d}-{i}")),
                    run_id: run_id.clone(),
                    maybe_delivered: (i + d as usize).is_multiple_of(53),
                    facts: Some(facts(*detected, overdue)),
                });
                *sent += 1;
                if *sent == 1 && *generation == 0 {
                    events.push(LedgerEvent::Conversation {
                        owner: owner(i),
                        conversation_id: format!("a:conv-{i}"),
                        at: at(d),
                    });
                }
            }
        }
        if d % 7 == 0 {
            events.push(LedgerEvent::ManagerTold {
                manager: owner(owners + (d as usize % 3)),
                owners: vec![owner(0), owner(1)],
                as_of: day(d),
                round_started: day(d - d % 21),
                sent_at: at(d),
                run_id: run_id.clone(),
            });
        }
        events.push(LedgerEvent::Daily(DailyAggregate {
            as_of: day(d),
            run_id,
            open: owners as u32,
            overdue: (d % 40) as u32,
            owners_open: owners as u32,
            owners_reached: (owners / 2) as u32,
            resolved_in_run: (owners / 97) as u32,
            ..Default::default()
        }));
        runs.push(events);
    }
    runs
}

fn full_replay(runs: &[Vec<LedgerEvent>]) -> LedgerSnapshot {
    LedgerSnapshot::from_events(runs.iter().flatten())
}

fn forced(as_of: NaiveDate, retention_days: u32) -> CheckpointOptions {
    CheckpointOptions {
        force: true,
        ..CheckpointOptions::when_due(as_of, retention_days)
    }
}

/// Keeps everything: a window longer than any history here.
const KEEP_ALL: u32 = 3650;

async fn append_runs(ledger: &Ledger, runs: &[Vec<LedgerEvent>]) {
    for events in runs {
        ledger.store().append(events).await.unwrap();
    }
}

async fn a_checkpoint_plus_the_events_after_it_loads_as_the_full_replay(backend: &Backend) {
    let runs = simulated_history(60, 40);
    let writer = backend.make();
    append_runs(&writer, &runs[..25]).await;
    let done = writer
        .checkpoint(forced(day(24), KEEP_ALL))
        .await
        .expect("a forced checkpoint is written");
    assert!(done.events_replayed > 0 && done.rows > 0, "{done:?}");
    append_runs(&writer, &runs[25..40]).await;
    // A second checkpoint on top of the first, then more events.
    writer
        .checkpoint(forced(day(39), KEEP_ALL))
        .await
        .expect("a second checkpoint");
    append_runs(&writer, &runs[40..]).await;
    let loaded = backend.make().store().load().await.unwrap();
    assert_eq!(
        loaded,
        full_replay(&runs),
        "{}: checkpoint + tail differs from the full replay",
        backend.name()
    );
}

async fn a_checkpoint_prunes_what_the_retention_window_no_longer_holds(backend: &Backend) {
    let runs = simulated_history(200, 30);
    let ledger = backend.make();
    append_runs(&ledger, &runs).await;
    let full = full_replay(&runs);
    let as_of = day(199);
    let done = ledger
        .checkpoint(forced(as_of, MIN_RETENTION_DAYS))
        .await
        .unwrap();
    assert!(
        done.pruned.issues > 0 && done.pruned.insights > 0,
        "{done:?}"
    );
    let loaded = backend.make().store().load().await.unwrap();
    let cutoff = as_of - Days::days(i64::from(MIN_RETENTION_DAYS));
    // Resolved before the window: gone, with their facts. Everything open: kept as it was.
    for (key, h) in &full.issues {
        let old = h.resolved && h.resolved_on.unwrap() < cutoff;
        assert_eq!(!loaded.issues.contains_key(key), old, "{key:?} {h:?}");
        if !old {
            assert_eq!(loaded.issues.get(key), Some(h));
            assert_eq!(loaded.facts.get(key), full.facts.get(key));
        } else {
            assert!(!loaded.facts.contains_key(key));
        }
    }
    assert_eq!(loaded.conversations, full.conversations);
    assert_eq!(loaded.managers, full.managers);
    // Days before the window: gone, but the last one before it (the look-back figures).
    let daily_days: Vec<NaiveDate> = loaded
        .insights
        .iter()
        .filter_map(|e| match e {
            LedgerEvent::Daily(d) => Some(d.as_of),
            _ => None,
        })
        .collect();
    assert_eq!(daily_days.first(), Some(&(cutoff - Days::days(1))));
    assert_eq!(daily_days.len() as u32, MIN_RETENTION_DAYS + 2);
    assert!(loaded.insights.iter().all(|e| match e {
        LedgerEvent::Resolved { as_of, .. } => *as_of >= cutoff,
        _ => true,
    }));
    // The security team's page reads the same figures as from the whole history.
    let since = as_of - Days::days(lookout_reminders::job::INSIGHTS_PAGE_DAYS);
    let page = |s: &LedgerSnapshot| {
        serde_json::to_value(Insights::compute(&s.insights, None, since, false)).unwrap()
    };
    assert_eq!(page(&loaded), page(&full), "{}", backend.name());
    // The ledger keeps working after a prune: later events fold onto the checkpoint.
    let more = simulated_history(1, 3);
    append_runs(&ledger, &more).await;
    let again = backend.make().store().load().await.unwrap();
    assert!(again.insights.len() == loaded.insights.len() + 1);
}

async fn a_crash_after_any_checkpoint_step_loses_nothing_and_replays_nothing_twice(
    backend_of: impl Fn() -> futures::future::BoxFuture<'static, Backend>,
) {
    let runs = simulated_history(30, 25);
    for step in [
        CheckpointStep::Rolled,
        CheckpointStep::SnapshotWritten,
        CheckpointStep::SegmentsDeleted,
    ] {
        let backend = backend_of().await;
        let ledger = backend.make();
        append_runs(&ledger, &runs[..10]).await;
        // An earlier complete checkpoint, so older checkpoints exist when the crash comes.
        ledger.checkpoint(forced(day(9), KEEP_ALL)).await.unwrap();
        append_runs(&ledger, &runs[10..20]).await;
        let crashed = ledger
            .checkpoint(CheckpointOptions {
                stop_after: Some(step),
                ..forced(day(19), KEEP_ALL)
            })
            .await;
        assert_eq!(crashed.is_some(), step != CheckpointStep::Rolled);
        // The next process reads the ledger as it was left.
        let after_crash = backend.make();
        assert_eq!(
            after_crash.store().load().await.unwrap(),
            full_replay(&runs[..20]),
            "{} after {step:?}",
            backend.name()
        );
        // It appends (to the right segment), checkpoints again, and still nothing is lost
        // or doubled.
        append_runs(&after_crash, &runs[20..25]).await;
        assert_eq!(
            backend.make().store().load().await.unwrap(),
            full_replay(&runs[..25]),
            "{} appending after a crash after {step:?}",
            backend.name()
        );
        after_crash
            .checkpoint(forced(day(24), KEEP_ALL))
            .await
            .unwrap();
        append_runs(&after_crash, &runs[25..]).await;
        assert_eq!(
            backend.make().store().load().await.unwrap(),
            full_replay(&runs),
            "{} after recovering from a crash after {step:?}",
            backend.name()
        );
    }
}

async fn appends_racing_a_checkpoint_are_all_kept_once(backend: &Backend) {
    // Each event its own issue: a duplicate shows as times_sent 2, a loss as a missing key.
    let event = |w: usize, b: usize, k: usize| LedgerEvent::Sent {
        owner: owner(w),
        issue: IssueKey(format!("race-{w}-{b}-{k}")),
        lookout_id: None,
        stage: Stage::First,
        as_of: day(0),
        sent_at: at(0),
        channel: "outbox".into(),
        message_id: None,
        run_id: format!("writer-{w}"),
        maybe_delivered: false,
        facts: None,
    };
    let base = simulated_history(5, 20);
    let checkpointer = backend.make();
    append_runs(&checkpointer, &base).await;
    let writers: Vec<_> = (0..3)
        .map(|w| {
            // Another instance (its own cached tail), appending batches while checkpoints run.
            let ledger = backend.make().store();
            tokio::spawn(async move {
                for b in 0..12 {
                    let batch: Vec<_> = (0..5).map(|k| event(w, b, k)).collect();
                    ledger.append(&batch).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for _ in 0..4 {
        checkpointer.checkpoint(forced(day(5), KEEP_ALL)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let loaded = backend.make().store().load().await.unwrap();
    for w in 0..3 {
        for b in 0..12 {
            for k in 0..5 {
                let key = (owner(w), IssueKey(format!("race-{w}-{b}-{k}")));
                let h = loaded.issues.get(&key);
                assert_eq!(
                    h.map(|h| h.times_sent),
                    Some(1),
                    "{}: {key:?} lost or doubled",
                    backend.name()
                );
            }
        }
    }
    let mut expected = full_replay(&base);
    for w in 0..3 {
        for b in 0..12 {
            for k in 0..5 {
                expected.apply(&event(w, b, k));
            }
        }
    }
    assert_eq!(loaded, expected, "{}", backend.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_plus_the_events_after_it_replays_as_the_whole_ledger_on_both_stores() {
    for backend in backends().await {
        a_checkpoint_plus_the_events_after_it_loads_as_the_full_replay(&backend).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_prunes_resolved_issues_and_past_days_by_retention_on_both_stores() {
    for backend in backends().await {
        a_checkpoint_prunes_what_the_retention_window_no_longer_holds(&backend).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_after_any_checkpoint_step_loses_nothing_and_doubles_nothing_locally() {
    a_crash_after_any_checkpoint_step_loses_nothing_and_replays_nothing_twice(|| {
        Box::pin(async { Backend::local() })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_after_any_checkpoint_step_loses_nothing_and_doubles_nothing_on_blob() {
    a_crash_after_any_checkpoint_step_loses_nothing_and_replays_nothing_twice(|| {
        Box::pin(async { Backend::blob().await })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_from_another_instance_racing_checkpoints_are_kept_exactly_once_on_both_stores() {
    for backend in backends().await {
        appends_racing_a_checkpoint_are_all_kept_once(&backend).await;
    }
}

#[tokio::test]
async fn a_checkpoint_is_written_only_once_the_events_after_the_last_one_are_worth_it() {
    let backend = Backend::local();
    let ledger = backend.make();
    append_runs(&ledger, &simulated_history(3, 10)).await;
    // A few KiB of events: the default trigger leaves them be.
    assert!(ledger.store().checkpoint(day(2)).await.unwrap().is_none());
    // Over a MiB: due.
    append_runs(&ledger, &simulated_history(120, 60)).await;
    let done = ledger.store().checkpoint(day(2)).await.unwrap();
    assert!(done.is_some(), "a MiB of events after no checkpoint is due");
    // Right after, nothing new: not due again.
    assert!(ledger.store().checkpoint(day(2)).await.unwrap().is_none());
}

#[tokio::test]
async fn a_torn_line_at_the_end_of_a_rolled_segment_is_left_out_and_never_corrupts() {
    let backend = Backend::local();
    let Backend::Local(dir) = &backend else {
        unreachable!()
    };
    let ledger = backend.make();
    let runs = simulated_history(4, 5);
    append_runs(&ledger, &runs).await;
    // A crash in the middle of an append leaves half a line at the end of segment 0.
    let path = dir.path().join("ledger.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(br#"{"event":"sent","owner":"ha"#);
    std::fs::write(&path, bytes).unwrap();
    ledger.checkpoint(forced(day(3), KEEP_ALL)).await.unwrap();
    let more = simulated_history(1, 2);
    append_runs(&ledger, &more).await;
    let mut expected = full_replay(&runs);
    for e in more.iter().flatten() {
        expected.apply(e);
    }
    assert_eq!(backend.make().store().load().await.unwrap(), expected);
}

#[tokio::test]
async fn the_ledger_retention_defaults_to_120_days_and_refuses_less_than_the_insights_window() {
    let config = |v: Option<&str>| {
        let mut env = Env::default();
        if let Some(v) = v {
            env.0
                .insert("REMINDERS_LEDGER_RETENTION_DAYS".into(), v.into());
        }
        Config::from_env_map(&env)
    };
    assert_eq!(config(None).unwrap().ledger_retention_days, 120);
    assert_eq!(config(Some("365")).unwrap().ledger_retention_days, 365);
    assert_eq!(
        i64::from(MIN_RETENTION_DAYS),
        lookout_reminders::job::INSIGHTS_PAGE_DAYS,
        "the shortest retention must cover the insights page"
    );
    for bad in ["89", "0", "-5", "lots", "3651"] {
        let e = config(Some(bad)).unwrap_err().to_string();
        assert!(e.contains("REMINDERS_LEDGER_RETENTION_DAYS"), "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_over_a_large_ledger_leaves_a_checkpoint_its_rerun_sends_nothing_and_reports_are_found_by_id(
) {
    use lookout_reminders::deliver::OutboxNotifier;
    use lookout_reminders::job::{self, RunRequest};
    use lookout_reminders::report::Trigger;
    use tokio_util::sync::CancellationToken;
    for backend in backends().await {
        let ledger = backend.make();
        // Over a MiB of other owners' history already there.
        append_runs(&ledger, &simulated_history(120, 60)).await;
        let tmp = tempfile::tempdir().unwrap();
        let export = crate::helpers::fixture("issues-export.csv");
        let mut deps = crate::helpers::local_deps(tmp.path(), &export, &[]);
        deps.notifier = Arc::new(OutboxNotifier::new(tmp.path().join("outbox")));
        deps.ledger = ledger.store();
        deps.reports = match &ledger {
            Ledger::Local(l) => l.clone(),
            Ledger::Blob(b) => b.clone(),
        };
        let request = || {
            let mut r = RunRequest::new(Trigger::Cli);
            r.as_of = Some(NaiveDate::from_ymd_opt(2024, 3, 7).unwrap());
            r
        };
        let first = job::run(&deps, request(), CancellationToken::new())
            .await
            .unwrap();
        assert!(first.counts.sent > 0);
        let checkpoints = match &backend {
            Backend::Local(dir) => std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("checkpoint-") && name.ends_with(".jsonl")
                })
                .count(),
            Backend::Blob(_) => usize::from(
                // A second forced checkpoint numbers after the run's: the run wrote one.
                ledger
                    .checkpoint(forced(day(0), KEEP_ALL))
                    .await
                    .is_some_and(|d| d.through_segment >= 2),
            ),
        };
        assert_eq!(
            checkpoints,
            1,
            "{}: the run left a checkpoint",
            backend.name()
        );
        let second = job::run(&deps, request(), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(second.counts.sent, 0, "{}: nothing twice", backend.name());
        // Reports are found by id through their index: the first one, not the latest.
        let by_id = deps.reports.report(&first.run_id).await.unwrap();
        assert_eq!(by_id.map(|r| r.run_id), Some(first.run_id.clone()));
        if let Backend::Local(dir) = &backend {
            // A report file with no index entry is not found: nothing walks the folders.
            let decoy = dir.path().join("reports/2020/01/01");
            std::fs::create_dir_all(&decoy).unwrap();
            let json = serde_json::to_string(&first)
                .unwrap()
                .replace(&first.run_id, "decoy-run");
            std::fs::write(decoy.join("decoy-run.json"), json).unwrap();
            assert!(deps.reports.report("decoy-run").await.unwrap().is_none());
            assert!(dir
                .path()
                .join(format!("reports/by-id/{}.txt", first.run_id))
                .is_file());
        }
        // Every send of the first run is in the ledger once.
        let snap = backend.make().store().load().await.unwrap();
        let from_first = snap
            .issues
            .iter()
            .filter(|((o, _), _)| o.as_str().ends_with("@engie.com"))
            .count();
        assert!(from_first >= first.counts.sent, "{}", backend.name());
    }
}
