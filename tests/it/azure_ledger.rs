//! One behaviour suite for every [`LedgerStore`]: the local folder and the Blob container
//! (Azurite over HTTPS, real `azure_storage_blob` client, real managed-identity credential
//! fed by the fake identity endpoint). Plus the Blob-only parts: the storage-audience
//! token, the user-assigned client id, and a storage outage in the middle of a run.

use crate::azurite::Azurite;
use crate::fake_identity::{FakeIdentity, TokenRequest};
use crate::outage::StorageOutage;
use chrono::{NaiveDate, Utc};
use lookout_reminders::config::{AzureSettings, Env};
use lookout_reminders::deliver::OutboxNotifier;
use lookout_reminders::domain::OwnerEmail;
use lookout_reminders::job::{self, Deps, JobError, RunRequest};
use lookout_reminders::ledger::{
    BlobLedger, LedgerError, LedgerEvent, LedgerStore, LocalLedger, ReportStore,
};
use lookout_reminders::plan::{IssueKey, Stage};
use lookout_reminders::report::Trigger;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings for a Blob ledger on `azurite` in a fresh container.
pub async fn blob_settings(azurite: &Azurite, extra: &[(&str, &str)]) -> AzureSettings {
    let identity = FakeIdentity::shared().await;
    let mut env = Env::default();
    for (k, v) in azurite.settings().into_iter().chain(identity.env()) {
        env.0.insert(k, v);
    }
    env.0.insert("REMINDERS_LEDGER".into(), "blob".into());
    env.0.insert(
        "REMINDERS_STATE_CONTAINER".into(),
        format!("state-{}", uuid::Uuid::new_v4().simple()),
    );
    for (k, v) in extra {
        env.0.insert(k.to_string(), v.to_string());
    }
    AzureSettings::from_env(&env).unwrap()
}

fn sent(owner: &str, issue: &str, run_id: &str) -> LedgerEvent {
    LedgerEvent::Sent {
        owner: OwnerEmail::parse(owner).unwrap(),
        issue: IssueKey(issue.into()),
        lookout_id: None,
        stage: Stage::First,
        as_of: NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
        sent_at: Utc::now(),
        channel: "outbox".into(),
        message_id: Some(format!("m-{issue}")),
        run_id: run_id.into(),
        maybe_delivered: false,
        facts: None,
    }
}

/// Both seams of one store (the ledger and its reports), as the suite tests them together.
trait Store: LedgerStore + ReportStore {}
impl<T: LedgerStore + ReportStore> Store for T {}

/// Makes independent store instances over the same storage (like two function instances).
type Maker = Box<dyn Fn() -> Arc<dyn Store> + Send + Sync>;

async fn lock_is_exclusive_until_released(make: &Maker) {
    let a = make();
    let b = make();
    let held = a
        .lock("run-aaaa")
        .await
        .expect("the first run takes the lock");
    match b.lock("run-bbbb").await {
        Err(LedgerError::Busy { holder }) => {
            assert!(holder.contains("run run-aaaa"), "holder: {holder}");
            assert!(holder.contains("since "), "holder: {holder}");
            assert!(holder.contains("expires"), "holder: {holder}");
            assert!(!holder.contains('{'), "raw lock JSON: {holder}")
        }
        Err(e) => panic!("expected Busy, got {e}"),
        Ok(_) => panic!("a second run took a held lock ({})", a.describe()),
    }
    held.renew().await.expect("the holder renews its lock");
    held.release().await.expect("the holder releases its lock");
    let again = b
        .lock("run-bbbb")
        .await
        .expect("a released lock can be taken");
    again.release().await.unwrap();
}

async fn appended_events_load_back(make: &Maker) {
    let store = make();
    assert!(
        store.load().await.unwrap().issues.is_empty(),
        "a new ledger is empty"
    );
    store
        .append(&[
            sent("a@engie.com", "i1", "r1"),
            sent("b@engie.com", "i2", "r1"),
        ])
        .await
        .unwrap();
    store
        .append(&[sent("a@engie.com", "i1", "r2")])
        .await
        .unwrap();
    store.append(&[]).await.unwrap();
    let snap = make().load().await.unwrap();
    let a = OwnerEmail::parse("a@engie.com").unwrap();
    assert_eq!(
        snap.history(&a, &IssueKey("i1".into())).unwrap().times_sent,
        2
    );
    assert_eq!(snap.issues.len(), 2);
}

async fn concurrent_appenders_lose_nothing(make: &Maker, writers: usize, batches: usize) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        // Half the writers share an instance, half have their own: both paths race.
        let store = make();
        for half in 0..2 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for b in 0..batches {
                    let events: Vec<_> = (0..3)
                        .map(|k| {
                            sent(
                                &format!("w{w}@engie.com"),
                                &format!("w{w}-h{half}-b{b}-k{k}"),
                                "race",
                            )
                        })
                        .collect();
                    store.append(&events).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let snap = make().load().await.unwrap();
    assert_eq!(
        snap.issues.len(),
        writers * 2 * batches * 3,
        "lost or duplicated updates"
    );
    assert!(
        snap.issues.values().all(|h| h.times_sent == 1),
        "an append was recorded twice"
    );
}

fn deps(ledger: Arc<dyn Store>, outbox: &Path, export: &Path, concurrency: usize) -> Deps {
    let mut d = crate::helpers::local_deps(&outbox.with_extension("state"), export, &[]);
    d.notifier = Arc::new(OutboxNotifier::new(outbox.to_path_buf()));
    d.ledger = ledger.clone();
    d.reports = ledger;
    d.concurrency = concurrency;
    d
}

fn request(day: u32) -> RunRequest {
    let mut r = RunRequest::new(Trigger::Cli);
    r.as_of = Some(NaiveDate::from_ymd_opt(2024, 3, day).unwrap());
    r
}

async fn reports_are_kept_with_the_latest_and_by_id(make: &Maker) {
    let tmp = tempfile::tempdir().unwrap();
    let export = crate::helpers::fixture("issues-export.csv");
    let store = make();
    assert!(store.last_report().await.unwrap().is_none());
    let first = job::run(
        &deps(store.clone(), &tmp.path().join("o1"), &export, 4),
        request(7),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = job::run(
        &deps(store.clone(), &tmp.path().join("o2"), &export, 4),
        request(8),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let last = make().last_report().await.unwrap().expect("a last report");
    assert_eq!(last.run_id, second.run_id);
    let by_id = make()
        .report(&first.run_id)
        .await
        .unwrap()
        .expect("the first report by id");
    assert_eq!(by_id.run_id, first.run_id);
    assert_eq!(by_id.counts.sent, first.counts.sent);
    assert!(make().report("no-such-run").await.unwrap().is_none());
    assert!(make().report("../etc/passwd").await.unwrap().is_none());
    // The second run sent nothing twice: the ledger knew the first run's sends.
    assert!(first.counts.sent > 0);

    // Each live run left its day's aggregate, and the first run's sends their issue facts,
    // which the second run read back (issue 13).
    let snapshot = make().load().await.unwrap();
    let days: Vec<(NaiveDate, String, u32)> = snapshot
        .insights
        .iter()
        .filter_map(|e| match e {
            LedgerEvent::Daily(d) => Some((d.as_of, d.run_id.clone(), d.open)),
            _ => None,
        })
        .collect();
    assert_eq!(
        days,
        vec![
            // 25 remindable rows, one of them a second detection merged into the first.
            (request(7).as_of.unwrap(), first.run_id.clone(), 24),
            (request(8).as_of.unwrap(), second.run_id.clone(), 24),
        ]
    );
    assert!(!snapshot.facts.is_empty());
    // The insights page is stored beside the JSON report.
    let page = make()
        .save_report_page(&second, "<!DOCTYPE html><p>page</p>")
        .await
        .unwrap();
    assert!(
        page.ends_with(&format!("/{}.html", second.run_id)),
        "{page}"
    );
}

async fn behaviour_suite(make: Maker) {
    lock_is_exclusive_until_released(&make).await;
    appended_events_load_back(&make).await;
}

fn local_maker() -> (tempfile::TempDir, Maker) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (
        dir,
        Box::new(move || {
            Arc::new(LocalLedger::new(path.clone(), Duration::from_secs(600))) as Arc<dyn Store>
        }),
    )
}

fn blob_maker(settings: AzureSettings) -> Maker {
    Box::new(move || Arc::new(BlobLedger::from_settings(&settings).unwrap()) as Arc<dyn Store>)
}

#[tokio::test]
async fn the_local_ledger_passes_the_ledger_behaviour_suite() {
    let (_dir, make) = local_maker();
    behaviour_suite(make).await;
    let (_dir, make) = local_maker();
    concurrent_appenders_lose_nothing(&make, 4, 10).await;
    let (_dir, make) = local_maker();
    reports_are_kept_with_the_latest_and_by_id(&make).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_blob_ledger_passes_the_ledger_behaviour_suite_on_azurite() {
    let azurite = Azurite::shared().await;
    behaviour_suite(blob_maker(blob_settings(azurite, &[]).await)).await;
    reports_are_kept_with_the_latest_and_by_id(&blob_maker(blob_settings(azurite, &[]).await))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_blob_ledger_writers_lose_no_update() {
    let azurite = Azurite::shared().await;
    let started = std::time::Instant::now();
    concurrent_appenders_lose_nothing(&blob_maker(blob_settings(azurite, &[]).await), 6, 8).await;
    eprintln!(
        "96 contended appends (6 instances x 2 tasks x 8 batches) in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_started_at_once_on_one_container_run_exactly_once() {
    let azurite = Azurite::shared().await;
    let settings = blob_settings(azurite, &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let export = crate::helpers::fixture("issues-export.csv");
    let a = deps(
        Arc::new(BlobLedger::from_settings(&settings).unwrap()),
        &tmp.path().join("a"),
        &export,
        4,
    );
    let b = deps(
        Arc::new(BlobLedger::from_settings(&settings).unwrap()),
        &tmp.path().join("b"),
        &export,
        4,
    );
    let (ra, rb) = tokio::join!(
        job::run(&a, request(7), CancellationToken::new()),
        job::run(&b, request(7), CancellationToken::new())
    );
    let outcomes = [ra, rb];
    let ran = outcomes.iter().filter(|r| r.is_ok()).count();
    let busy = outcomes
        .iter()
        .filter(|r| matches!(r, Err(JobError::Busy(_))))
        .count();
    // Either one run is refused as busy, or the second started after the first finished
    // and found nothing left to send: never two runs sending the same reminders.
    let total_sent: usize = outcomes
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.counts.sent)
        .sum();
    assert!(ran >= 1, "{outcomes:?}");
    assert_eq!(ran + busy, 2, "{outcomes:?}");
    let ledger = BlobLedger::from_settings(&settings)
        .unwrap()
        .load()
        .await
        .unwrap();
    let recorded: usize = ledger.issues.values().map(|h| h.times_sent as usize).sum();
    assert!(total_sent > 0);
    assert_eq!(
        outcomes
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|r| r.counts.sent > 0)
            .count(),
        1,
        "two runs both sent: {outcomes:?}"
    );
    assert!(recorded >= total_sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_ledger_calls_carry_a_storage_token_for_the_configured_user_assigned_identity() {
    let azurite = Azurite::shared().await;
    let client_id = format!("uami-{}", uuid::Uuid::new_v4().simple());
    let settings = blob_settings(
        azurite,
        &[("REMINDERS_MANAGED_IDENTITY_CLIENT_ID", &client_id)],
    )
    .await;
    let store = BlobLedger::from_settings(&settings).unwrap();
    store
        .append(&[sent("a@engie.com", "i1", "r1")])
        .await
        .unwrap();
    assert_eq!(store.load().await.unwrap().issues.len(), 1);
    let mine: Vec<TokenRequest> = FakeIdentity::shared()
        .await
        .requests()
        .into_iter()
        .filter(|r| r.client_id.as_deref() == Some(client_id.as_str()))
        .collect();
    assert!(
        !mine.is_empty(),
        "no token was asked for the user-assigned identity"
    );
    assert!(
        mine.iter()
            .all(|r| r.resource == "https://storage.azure.com"),
        "storage calls asked for another audience: {mine:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_lost_mid_run_fails_clearly_keeps_the_ledger_and_the_rerun_sends_only_the_rest() {
    // The outage is a relay in front of the shared emulator, cut at a known send and restored
    // (crate::outage): what the client sees of an unreachable service, without stopping and
    // restarting Azurite (about 5 s of start-up) or waiting for anything on the clock.
    let azurite = Azurite::shared().await;
    let outage = StorageOutage::in_front_of(azurite).await;
    let account_url = outage.account_url();
    let settings = blob_settings(
        azurite,
        &[
            ("REMINDERS_LOCK_LEASE_SECONDS", "15"),
            ("REMINDERS_BLOB_ACCOUNT_URL", account_url.as_str()),
        ],
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export.csv");
    crate::helpers::write_export(&export, 40);
    let outbox = tmp.path().join("outbox");

    // A notifier that cuts storage off after the second batch has been sent.
    let stopper = Arc::new(StopAfter {
        inner: OutboxNotifier::new(outbox.clone()),
        sends: std::sync::atomic::AtomicUsize::new(0),
        stop_at: 10,
        stop: std::sync::Mutex::new(None),
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    *stopper.stop.lock().unwrap() = Some(tx);
    let mut d = deps(
        Arc::new(BlobLedger::from_settings(&settings).unwrap()),
        &outbox,
        &export,
        5,
    );
    d.notifier = stopper.clone();
    let control = async {
        rx.await.unwrap();
        outage.cut();
        stopper.resume();
    };
    let (result, ()) = tokio::join!(job::run(&d, request(7), CancellationToken::new()), control);
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, JobError::Ledger(_)), "{text}");
    assert!(text.contains("ledger"), "{text}");
    // Sending stopped once a record failed: the sends in flight finished, no new one began.
    let first_sent = count_outbox(&outbox);
    // Sends may go on while the failing append is retried, within the crash bound.
    assert!(
        (10..=10 + 3 * 5).contains(&first_sent),
        "sent {first_sent} before stopping"
    );

    outage.restore();
    let store: Arc<dyn Store> = Arc::new(BlobLedger::from_settings(&settings).unwrap());
    let recorded = store
        .load()
        .await
        .expect("the ledger is readable after the outage");
    let recorded_owners: HashSet<_> = recorded.issues.keys().map(|(o, _)| o.clone()).collect();
    // What was acknowledged before the outage survived it; nothing else was recorded.
    assert!(
        recorded_owners.len() <= first_sent,
        "recorded {} of {first_sent} sent",
        recorded_owners.len()
    );
    let outbox2 = tmp.path().join("outbox2");
    let d2 = deps(store.clone(), &outbox2, &export, 5);
    // The interrupted run could not release its lease during the outage; it expires 15 s
    // after its last renewal, and a rerun in that window is refused as busy, naming the
    // bound. Rather than wait it out on the clock (the lease-expiry test does that once),
    // break it as an operator would (`az storage blob lease break`) and run again.
    let report = match job::run(&d2, request(7), CancellationToken::new()).await {
        Err(JobError::Busy(holder)) => {
            assert!(holder.contains("15 s"), "{holder}");
            break_run_lock(&settings).await;
            job::run(&d2, request(7), CancellationToken::new())
                .await
                .expect("the rerun completes once the lease is broken")
        }
        other => other.expect("the rerun completes"),
    };
    let resent = count_outbox(&outbox2);
    assert_eq!(report.counts.sent, resent);
    // Everyone recorded is not sent again; only sends that were never recorded are, and
    // there are at most 3 × concurrency of those (the job's documented crash bound).
    assert_eq!(resent, 40 - recorded_owners.len());
    assert!(first_sent + resent <= 40 + 3 * 5, "{first_sent} + {resent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_lock_whose_holder_crashed_is_refused_until_its_lease_expires_then_taken() {
    // The one test that waits on Blob Storage's clock (a lease lasts 15 s at the least): it
    // is the only way to show that a crashed run never blocks the next one for longer.
    let azurite = Azurite::shared().await;
    let settings = blob_settings(azurite, &[("REMINDERS_LOCK_LEASE_SECONDS", "15")]).await;
    let asked_at = tokio::time::Instant::now();
    let crashed = BlobLedger::from_settings(&settings)
        .unwrap()
        .lock("run-crashed")
        .await
        .expect("the first run takes the lock");
    // A crash: the lock is neither renewed nor released.
    drop(crashed);
    let next = BlobLedger::from_settings(&settings).unwrap();
    match next.lock("run-next").await {
        Err(LedgerError::Busy { holder }) => {
            assert!(holder.contains("run run-crashed"), "{holder}");
            assert!(holder.contains("15 s"), "{holder}");
        }
        Err(e) => panic!("expected Busy, got {e}"),
        Ok(_) => panic!("a held lease was taken"),
    }
    // No sooner than 15 s after the request that took it (the lease began later still)…
    tokio::time::sleep_until(asked_at + Duration::from_secs(15)).await;
    // …the lease ends on the emulator's clock; polled, since a loaded machine may serve the
    // first request late. The deadline is a safety net for a hung emulator only.
    let deadline = asked_at + Duration::from_secs(90);
    let taken = loop {
        match next.lock("run-next").await {
            Ok(lock) => break lock,
            Err(LedgerError::Busy { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the expired lease was not taken over: {e}"),
        }
    };
    taken
        .release()
        .await
        .expect("the next run releases its lock");
}

/// Breaks the run lock's Blob lease at once (break period 0), with the SDK.
async fn break_run_lock(settings: &AzureSettings) {
    let state = settings.blob_state().unwrap();
    let client = lookout_reminders::azure::storage::container_client(
        &state.account_url,
        &state.container,
        lookout_reminders::azure::credential(settings).unwrap(),
        lookout_reminders::azure::sdk_client_options(settings).unwrap(),
    )
    .unwrap();
    client
        .blob_client("lock/run.lock")
        .break_lease(Some(
            azure_storage_blob::models::BlobClientBreakLeaseOptions {
                break_period: Some(0),
                ..Default::default()
            },
        ))
        .await
        .expect("break the run lock's lease");
}

/// Messages in an outbox folder (`<run_id>/<message>.json`).
fn count_outbox(dir: &Path) -> usize {
    let mut n = 0;
    for run in std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        n += std::fs::read_dir(run.path())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
    }
    n
}

/// Delivers through the outbox; after `stop_at` sends it signals the test and waits until
/// the test has stopped the storage.
struct StopAfter {
    inner: OutboxNotifier,
    sends: std::sync::atomic::AtomicUsize,
    stop_at: usize,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

static RESUMED: tokio::sync::Notify = tokio::sync::Notify::const_new();

impl StopAfter {
    fn resume(&self) {
        RESUMED.notify_waiters();
        RESUMED.notify_one();
    }
}

#[async_trait::async_trait]
impl lookout_reminders::deliver::Notifier for StopAfter {
    fn channel(&self) -> &str {
        self.inner.channel()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn send(
        &self,
        msg: &lookout_reminders::deliver::OutgoingReminder,
    ) -> Result<lookout_reminders::deliver::Delivery, lookout_reminders::deliver::DeliveryError>
    {
        let n = self.sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let out = self.inner.send(msg).await;
        if n == self.stop_at {
            let tx = self.stop.lock().unwrap().take();
            if let Some(tx) = tx {
                let resumed = RESUMED.notified();
                let _ = tx.send(());
                resumed.await;
            }
        }
        out
    }
}
