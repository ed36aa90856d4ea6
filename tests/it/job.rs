//! The job through the library API with test notifiers: per-owner failures, the ledger
//! bound on crashes, the owner cap and cancellation.

use async_trait::async_trait;
use lookout_reminders::deliver::{Delivery, DeliveryError, Notifier, OutgoingReminder};
use lookout_reminders::job::{self, Deps, JobError, RunRequest};
use lookout_reminders::ledger::{
    LedgerError, LedgerEvent, LedgerSnapshot, LedgerStore, LocalLedger, ReportStore, RunLock,
};
use lookout_reminders::report::{ReminderStatus, Trigger};
use lookout_reminders::source::LocalFileSource;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Records every send; fails for the owners it is told to.
#[derive(Default)]
struct RecordingNotifier {
    sent: Mutex<Vec<String>>,
    fail_for: HashSet<String>,
    cancel_after: Option<(usize, CancellationToken)>,
    /// How long each send takes.
    delay: Option<std::time::Duration>,
}

#[async_trait]
impl Notifier for RecordingNotifier {
    fn channel(&self) -> &str {
        "test"
    }
    fn describe(&self) -> String {
        "test notifier".into()
    }
    async fn send(&self, msg: &OutgoingReminder) -> Result<Delivery, DeliveryError> {
        let owner = msg.owner().to_string();
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        if self.fail_for.contains(&owner) {
            return Err(DeliveryError::permanent("test", "user not found"));
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(owner.clone());
        if let Some((n, token)) = &self.cancel_after {
            if sent.len() >= *n {
                token.cancel();
            }
        }
        Ok(Delivery {
            channel: "test".into(),
            message_id: Some(format!("m-{owner}")),
            attempts: 1,
            ..Default::default()
        })
    }
}

/// A ledger whose appends fail after N successful calls (a storage outage mid-run).
struct FailingLedger {
    inner: LocalLedger,
    appends_left: Mutex<usize>,
}

#[async_trait]
impl LedgerStore for FailingLedger {
    fn describe(&self) -> String {
        "failing".into()
    }
    async fn lock(&self, run_id: &str) -> Result<Box<dyn RunLock>, LedgerError> {
        self.inner.lock(run_id).await
    }
    async fn load(&self) -> Result<LedgerSnapshot, LedgerError> {
        self.inner.load().await
    }
    async fn append(&self, events: &[LedgerEvent]) -> Result<(), LedgerError> {
        {
            let mut left = self.appends_left.lock().unwrap();
            if *left == 0 {
                return Err(LedgerError::Storage {
                    location: "test".into(),
                    operation: "append".into(),
                    detail: "storage unavailable".into(),
                });
            }
            *left -= 1;
        }
        self.inner.append(events).await
    }
}

fn deps(
    state: &Path,
    notifier: Arc<dyn Notifier>,
    ledger: Option<Arc<dyn LedgerStore>>,
    concurrency: usize,
) -> Deps {
    let export = crate::helpers::fixture("issues-export.csv");
    let mut d = crate::helpers::local_deps(state, &export, &[]);
    d.notifier = notifier;
    let local = Arc::new(LocalLedger::new(state, std::time::Duration::from_secs(600)));
    d.ledger = ledger.unwrap_or_else(|| local.clone());
    d.reports = local;
    d.concurrency = concurrency;
    d
}

fn request() -> RunRequest {
    let mut r = RunRequest::new(Trigger::Cli);
    r.as_of = Some(chrono::NaiveDate::from_ymd_opt(2024, 3, 7).unwrap());
    r
}

#[tokio::test]
async fn one_owners_failure_never_stops_the_others_and_a_rerun_retries_only_the_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let failing = RecordingNotifier {
        fail_for: ["wx6278@engie.com".to_string()].into(),
        ..Default::default()
    };
    let n = Arc::new(failing);
    let report = job::run(
        &deps(tmp.path(), n.clone(), None, 4),
        request(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.counts.sent, 22);
    assert_eq!(report.counts.failed, 1);
    assert!(report.partial_failure());
    let failed = report
        .reminders
        .iter()
        .find(|r| r.status == ReminderStatus::Failed)
        .unwrap();
    assert_eq!(failed.owner, "wx6278@engie.com");
    assert!(failed.reason.as_deref().unwrap().contains("user not found"));

    let ok = Arc::new(RecordingNotifier::default());
    let mut req = request();
    req.as_of = Some(chrono::NaiveDate::from_ymd_opt(2024, 3, 8).unwrap());
    let report = job::run(
        &deps(tmp.path(), ok.clone(), None, 4),
        req,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // Overdue owners are reminded daily; the failed one is retried; nobody twice in one day.
    let sent = ok.sent.lock().unwrap().clone();
    assert!(sent.contains(&"wx6278@engie.com".to_string()));
    let unique: HashSet<_> = sent.iter().collect();
    assert_eq!(unique.len(), sent.len());
    assert_eq!(report.counts.failed, 0);
}

#[tokio::test]
async fn a_ledger_outage_stops_new_sends_and_a_rerun_resends_at_most_the_unrecorded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Arc::new(FailingLedger {
        inner: LocalLedger::new(tmp.path(), std::time::Duration::from_secs(600)),
        appends_left: Mutex::new(2),
    });
    let first = Arc::new(RecordingNotifier::default());
    let err = job::run(
        &deps(tmp.path(), first.clone(), Some(ledger), 5),
        request(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, JobError::Ledger(_)), "{err}");
    // Sending stopped: not everybody was messaged.
    let first_count = first.sent.lock().unwrap().len();
    assert!(
        first_count < 23,
        "sent {first_count}: the outage did not stop the run"
    );
    assert!(
        !tmp.path().join("run.lock").exists(),
        "the lock was not released"
    );

    let second = Arc::new(RecordingNotifier::default());
    let report = job::run(
        &deps(tmp.path(), second.clone(), None, 5),
        request(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // Only unrecorded sends are repeated: at most 3 × concurrency (the documented bound).
    let first_sent: HashSet<String> = first.sent.lock().unwrap().iter().cloned().collect();
    let again: Vec<_> = second
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|o| first_sent.contains(*o))
        .cloned()
        .collect();
    assert!(
        again.len() <= 3 * 5,
        "re-sent {} owners: {again:?}",
        again.len()
    );
    assert_eq!(report.counts.sent + report.owners.not_due, 23);
}

#[tokio::test]
async fn more_owners_than_the_cap_are_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let n = Arc::new(RecordingNotifier::default());
    let mut d = deps(tmp.path(), n.clone(), None, 4);
    d.max_owners_per_run = 10;
    let err = job::run(&d, request(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            JobError::TooManyOwners {
                planned: 23,
                limit: 10
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("REMINDERS_MAX_OWNERS_PER_RUN"));
    assert!(n.sent.lock().unwrap().is_empty());
    let mut req = request();
    req.max_owners = Some(23);
    let report = job::run(&d, req, CancellationToken::new()).await.unwrap();
    assert_eq!(report.counts.sent, 23);
}

#[tokio::test]
async fn a_cancelled_run_records_what_it_sent_and_the_rerun_completes_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let n = Arc::new(RecordingNotifier {
        cancel_after: Some((6, token.clone())),
        ..Default::default()
    });
    let err = job::run(&deps(tmp.path(), n.clone(), None, 3), request(), token)
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Cancelled { sent: 6 }), "{err}");
    // The partial report is kept: who got a reminder, who was not attempted.
    let ledger = LocalLedger::new(tmp.path(), std::time::Duration::from_secs(600));
    let partial = ledger
        .last_report()
        .await
        .unwrap()
        .expect("a partial report");
    assert_eq!(partial.counts.sent, 6);
    assert_eq!(partial.counts.skipped, 23 - 6);
    assert!(partial.warnings.iter().any(|w| w.contains("run stopped")));
    let again = Arc::new(RecordingNotifier::default());
    job::run(
        &deps(tmp.path(), again.clone(), None, 3),
        request(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut all: Vec<String> = n.sent.lock().unwrap().clone();
    all.extend(again.sent.lock().unwrap().iter().cloned());
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 23);
    assert_eq!(unique.len(), 23);
}

#[tokio::test]
async fn a_dry_run_takes_no_lock_and_records_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let n = Arc::new(RecordingNotifier::default());
    let ledger = LocalLedger::new(tmp.path(), std::time::Duration::from_secs(600));
    let _held = ledger.lock("someone-else").await.unwrap();
    let mut req = request();
    req.dry_run = true;
    let report = job::run(
        &deps(tmp.path(), n.clone(), None, 4),
        req,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.counts.planned, 23);
    assert!(n.sent.lock().unwrap().is_empty());
    assert!(!tmp.path().join("ledger.jsonl").exists());
}

#[tokio::test]
async fn an_export_whose_rows_are_all_rejected_is_refused_and_resolves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let n = Arc::new(RecordingNotifier::default());
    job::run(
        &deps(tmp.path(), n.clone(), None, 4),
        request(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "Device Owner,Issue,Status,Date Detected\nnot-an-email,Agent,Active,2024-01-01\n,Agent,Active,2024-01-01\n",
    )
    .unwrap();
    let mut d = deps(tmp.path(), n.clone(), None, 4);
    d.source = Arc::new(LocalFileSource::new(bad, 1 << 20));
    let err = job::run(&d, request(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::Unusable(_)), "{err}");
    assert!(
        err.to_string().contains("all 2 data rows were rejected"),
        "{err}"
    );
    let ledger = std::fs::read_to_string(tmp.path().join("ledger.jsonl")).unwrap();
    assert!(
        !ledger.contains("\"resolved\""),
        "issues were marked resolved"
    );
}

#[tokio::test]
async fn at_the_time_budget_no_new_send_starts_and_the_next_run_sends_the_rest_without_resending() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = Arc::new(RecordingNotifier {
        delay: Some(std::time::Duration::from_millis(300)),
        ..Default::default()
    });
    let mut d = deps(tmp.path(), slow.clone(), None, 2);
    d.time_budget = Some(std::time::Duration::from_secs(1));
    // The cap equals the day's owners: a continuation that counted the partial run's
    // owners against it would be refused.
    d.max_owners_per_run = 23;

    let first = job::run(&d, request(), CancellationToken::new())
        .await
        .unwrap();

    let incomplete = first
        .incomplete
        .clone()
        .expect("the run says it is incomplete");
    let sent_first = slow.sent.lock().unwrap().len();
    assert_eq!(first.counts.sent, sent_first);
    assert!(sent_first > 0 && sent_first < 23, "{sent_first}");
    assert_eq!(incomplete.remaining, 23 - sent_first);
    assert_eq!(incomplete.budget_seconds, 1);
    assert!(first.summary.contains("incomplete"), "{}", first.summary);
    let waiting = first
        .reminders
        .iter()
        .filter(|l| {
            l.reason
                .as_deref()
                .is_some_and(|r| r.contains("time budget"))
        })
        .count();
    assert_eq!(waiting, incomplete.remaining);

    // The next invocation, same day, no budget pressure: only the rest is planned and sent.
    d.time_budget = Some(std::time::Duration::from_secs(60));
    let second = job::run(&d, request(), CancellationToken::new())
        .await
        .unwrap();

    assert!(second.incomplete.is_none());
    assert_eq!(second.owners.planned, incomplete.remaining);
    assert_eq!(second.counts.sent, incomplete.remaining);
    let sent = slow.sent.lock().unwrap().clone();
    let unique: HashSet<&String> = sent.iter().collect();
    assert_eq!(sent.len(), 23, "every owner once");
    assert_eq!(unique.len(), 23, "nobody twice: {sent:?}");
}

#[test]
fn the_default_time_budget_is_the_shipped_host_timeout_minus_the_margin() {
    let host =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("host.json")).unwrap();
    let timeout = job::function_timeout(&host).expect("host.json sets functionTimeout");
    assert_eq!(
        job::default_time_budget(Some(&host)),
        timeout - job::FUNCTION_TIMEOUT_MARGIN
    );
    assert!(job::default_time_budget(Some(&host)) >= std::time::Duration::from_secs(60));
    // Unreadable or unbounded (-1): the Consumption plan's 10 minutes minus the margin.
    for text in [
        "",
        "{}",
        r#"{"functionTimeout": "-1"}"#,
        r#"{"functionTimeout": "ten"}"#,
    ] {
        assert_eq!(
            job::default_time_budget(Some(text)),
            job::DEFAULT_FUNCTION_TIMEOUT - job::FUNCTION_TIMEOUT_MARGIN,
            "{text}"
        );
    }
    assert_eq!(
        job::function_timeout(r#"{"functionTimeout": "00:05:30"}"#),
        Some(std::time::Duration::from_secs(330))
    );
}

#[tokio::test]
async fn a_backdated_live_run_then_the_timer_the_same_real_day_send_each_owner_once() {
    let tmp = tempfile::tempdir().unwrap();
    let notifier = Arc::new(RecordingNotifier::default());
    let d = deps(tmp.path(), notifier.clone(), None, 4);

    let backdated = job::run(&d, request(), CancellationToken::new())
        .await
        .unwrap();
    assert!(backdated.counts.sent > 0, "{}", backdated.summary);
    let timer = job::run(
        &d,
        RunRequest::new(Trigger::Timer),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    let sent = notifier.sent.lock().unwrap().clone();
    let unique: HashSet<&String> = sent.iter().collect();
    assert_eq!(
        unique.len(),
        sent.len(),
        "an owner got two messages the same day: {}",
        timer.summary
    );
    assert!(
        timer.reminders.iter().any(|r| r
            .reason
            .as_deref()
            .is_some_and(|x| x.contains("already reminded today"))),
        "{}",
        timer.summary
    );
}

#[tokio::test]
async fn an_interrupted_run_over_the_cap_is_finished_with_a_raised_cap_without_re_sending() {
    let tmp = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let first = Arc::new(RecordingNotifier {
        cancel_after: Some((6, token.clone())),
        ..Default::default()
    });
    let mut d = deps(tmp.path(), first.clone(), None, 3);
    d.max_owners_per_run = 10;
    let mut req = request();
    req.max_owners = Some(23);
    let err = job::run(&d, req.clone(), token).await.unwrap_err();
    assert!(matches!(err, JobError::Cancelled { sent: 6 }), "{err}");

    let rest = Arc::new(RecordingNotifier::default());
    d.notifier = rest.clone();
    // 17 owners are still due: over the configured cap of 10, so refused as it stands...
    let refused = job::run(&d, request(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            JobError::TooManyOwners {
                planned: 17,
                limit: 10
            }
        ),
        "{refused}"
    );
    // ...and finished with the cap raised for this run: only the owners not yet reached.
    let report = job::run(&d, req, CancellationToken::new()).await.unwrap();
    assert_eq!(report.counts.sent, 17, "{}", report.summary);
    let mut everyone: Vec<String> = first.sent.lock().unwrap().clone();
    everyone.extend(rest.sent.lock().unwrap().iter().cloned());
    let unique: HashSet<&String> = everyone.iter().collect();
    assert_eq!(unique.len(), 23);
    assert_eq!(everyone.len(), 23, "an owner got two messages");
}

#[tokio::test]
async fn resend_without_named_owners_is_refused_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let n = Arc::new(RecordingNotifier::default());
    let d = deps(tmp.path(), n.clone(), None, 3);
    let mut req = request();
    req.resend = true;
    let err = job::run(&d, req, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, JobError::ResendWithoutOnly), "{err}");
    assert!(n.sent.lock().unwrap().is_empty());
}
