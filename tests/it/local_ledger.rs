//! The local-folder ledger under crashes and races: torn last lines, stale run locks taken
//! over once, and locks that were lost while held.

use chrono::{NaiveDate, Utc};
use lookout_reminders::config::{Config, ConfigError, Env, LedgerSettings};
use lookout_reminders::domain::OwnerEmail;
use lookout_reminders::ledger::{LedgerError, LedgerEvent, LedgerStore, LocalLedger};
use lookout_reminders::plan::{IssueKey, Stage};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const TTL: Duration = Duration::from_secs(600);

fn sent(issue: &str) -> LedgerEvent {
    LedgerEvent::Sent {
        owner: OwnerEmail::parse("jane.doe@engie.com").unwrap(),
        issue: IssueKey(issue.into()),
        lookout_id: None,
        stage: Stage::First,
        as_of: NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
        sent_at: Utc::now(),
        channel: "outbox".into(),
        message_id: None,
        run_id: "run-torn".into(),
        maybe_delivered: false,
        facts: None,
    }
}

fn issues(snap: &lookout_reminders::ledger::LedgerSnapshot) -> Vec<String> {
    let mut v: Vec<String> = snap.issues.keys().map(|(_, i)| i.0.to_string()).collect();
    v.sort();
    v
}

/// Writes what a crash in the middle of `append` leaves: whole lines, then part of one.
fn write_torn_ledger(dir: &Path, whole: &[LedgerEvent], torn: &[u8]) {
    let mut bytes = Vec::new();
    for e in whole {
        serde_json::to_writer(&mut bytes, e).unwrap();
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(torn);
    std::fs::write(dir.join("ledger.jsonl"), bytes).unwrap();
}

/// Makes the lock file look left over from a crashed run.
fn age_lock(dir: &Path) {
    let file = std::fs::File::options()
        .write(true)
        .open(dir.join("run.lock"))
        .unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

fn lock_file(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("run.lock")).ok()
}

#[tokio::test]
async fn appends_after_a_torn_last_line_never_turn_it_into_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_torn_ledger(
        dir.path(),
        &[sent("before-1"), sent("before-2")],
        br#"{"event":"sent","owner":"jane.doe@engie.com","iss"#,
    );
    let ledger = LocalLedger::new(dir.path(), TTL);
    assert_eq!(
        issues(&ledger.load().await.unwrap()),
        ["before-1", "before-2"]
    );
    ledger.append(&[sent("after-1")]).await.unwrap();
    ledger
        .append(&[sent("after-2"), sent("after-3")])
        .await
        .unwrap();
    // A fresh instance, like the next run.
    let snap = LocalLedger::new(dir.path(), TTL)
        .load()
        .await
        .expect("the run after next still reads the ledger");
    assert_eq!(
        issues(&snap),
        ["after-1", "after-2", "after-3", "before-1", "before-2"]
    );
    let text = std::fs::read_to_string(dir.path().join("ledger.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 5, "the torn line was cut: {text}");
}

#[tokio::test]
async fn a_torn_line_longer_than_the_tail_chunk_is_cut_back_to_the_last_whole_line() {
    let dir = tempfile::tempdir().unwrap();
    // 200 KiB without a newline: the search for the last '\n' crosses several chunks.
    let torn = vec![b'x'; 200 * 1024];
    write_torn_ledger(dir.path(), &[sent("kept")], &torn);
    let ledger = LocalLedger::new(dir.path(), TTL);
    ledger.append(&[sent("new")]).await.unwrap();
    ledger.append(&[sent("newer")]).await.unwrap();
    assert_eq!(
        issues(&ledger.load().await.unwrap()),
        ["kept", "new", "newer"]
    );
    let len = std::fs::metadata(dir.path().join("ledger.jsonl"))
        .unwrap()
        .len();
    assert!(len < 4096, "the torn bytes are gone ({len} bytes left)");
}

#[tokio::test]
async fn a_ledger_that_is_only_a_torn_line_starts_over_empty() {
    let dir = tempfile::tempdir().unwrap();
    write_torn_ledger(dir.path(), &[], br#"{"event":"se"#);
    let ledger = LocalLedger::new(dir.path(), TTL);
    ledger.append(&[sent("first")]).await.unwrap();
    ledger.append(&[sent("second")]).await.unwrap();
    assert_eq!(issues(&ledger.load().await.unwrap()), ["first", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lock_is_taken_over_by_exactly_one_of_two_racing_runs() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let crashed = LocalLedger::new(dir.path(), TTL);
        let left = crashed.lock("run-crashed").await.unwrap();
        drop(left);
        age_lock(dir.path());
        let b = Arc::new(LocalLedger::new(dir.path(), TTL));
        let c = Arc::new(LocalLedger::new(dir.path(), TTL));
        let (rb, rc) = tokio::join!(
            tokio::spawn({
                let b = b.clone();
                async move { b.lock("run-bbbb").await.map(|_| ()) }
            }),
            tokio::spawn({
                let c = c.clone();
                async move { c.lock("run-cccc").await.map(|_| ()) }
            }),
        );
        let (rb, rc) = (rb.unwrap(), rc.unwrap());
        let winners = [&rb, &rc].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {rb:?} / {rc:?}");
        let winner = if rb.is_ok() { "run-bbbb" } else { "run-cccc" };
        let loser = if rb.is_ok() { &rc } else { &rb };
        assert!(
            matches!(loser, Err(LedgerError::Busy { .. })),
            "round {round}: {loser:?}"
        );
        let body = lock_file(dir.path()).expect("the winner's lock is in place");
        assert!(body.contains(winner), "round {round}: {body}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "run.lock")
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
    }
}

#[tokio::test]
async fn a_fresh_lock_is_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let a = LocalLedger::new(dir.path(), TTL);
    let b = LocalLedger::new(dir.path(), TTL);
    let held = a.lock("run-aaaa").await.unwrap();
    match b.lock("run-bbbb").await {
        Err(LedgerError::Busy { holder }) => assert!(holder.contains("run-aaaa"), "{holder}"),
        other => panic!("expected Busy, got {:?}", other.map(|_| ())),
    }
    assert!(lock_file(dir.path()).unwrap().contains("run-aaaa"));
    held.release().await.unwrap();
    assert!(
        lock_file(dir.path()).is_none(),
        "release deletes its own lock"
    );
}

#[tokio::test]
async fn renewing_a_lock_another_run_took_over_fails_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let a = LocalLedger::new(dir.path(), TTL);
    let b = LocalLedger::new(dir.path(), TTL);
    let old = a.lock("run-aaaa").await.unwrap();
    old.renew().await.expect("the holder renews its own lock");
    age_lock(dir.path());
    let new = b
        .lock("run-bbbb")
        .await
        .expect("a stale lock is taken over");
    let err = old.renew().await.expect_err("the old holder lost its lock");
    let msg = err.to_string();
    assert!(
        msg.contains("lost") && msg.contains("run-bbbb"),
        "error: {msg}"
    );
    assert!(
        lock_file(dir.path()).unwrap().contains("run-bbbb"),
        "a failed renewal leaves the new holder's lock alone"
    );
    new.renew().await.expect("the new holder renews");
    // Releasing the lost lock must not delete the new holder's lock.
    old.release().await.unwrap();
    assert!(lock_file(dir.path()).unwrap().contains("run-bbbb"));
    new.release().await.unwrap();
    assert!(lock_file(dir.path()).is_none());
}

#[tokio::test]
async fn renewing_a_lock_whose_file_is_gone_fails_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let a = LocalLedger::new(dir.path(), TTL);
    let held = a.lock("run-aaaa").await.unwrap();
    std::fs::remove_file(dir.path().join("run.lock")).unwrap();
    let msg = held.renew().await.unwrap_err().to_string();
    assert!(msg.contains("lost") && msg.contains("run.lock"), "{msg}");
    assert!(
        lock_file(dir.path()).is_none(),
        "renew does not recreate it"
    );
}

#[tokio::test]
async fn releasing_does_not_delete_a_lock_held_by_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = LocalLedger::new(dir.path(), TTL);
    let held = a.lock("run-aaaa").await.unwrap();
    // Another run's lock in its place (e.g. after a takeover).
    let other = r#"{"run_id":"run-zzzz","pid":1,"since":"2024-03-07T08:00:00+00:00"}"#;
    std::fs::write(dir.path().join("run.lock"), other).unwrap();
    held.release().await.unwrap();
    assert_eq!(lock_file(dir.path()).as_deref(), Some(other));
}

#[test]
fn a_lock_ttl_under_five_minutes_is_refused_naming_the_setting() {
    for bad in ["0", "4"] {
        let env = Env::from_pairs(&[("REMINDERS_LOCK_TTL_MINUTES", bad)]);
        match Config::from_env_map(&env) {
            Err(e @ ConfigError::Invalid { .. }) => {
                assert!(e.to_string().contains("REMINDERS_LOCK_TTL_MINUTES"), "{e}")
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("REMINDERS_LOCK_TTL_MINUTES={bad} was accepted"),
        }
    }
    let env = Env::from_pairs(&[("REMINDERS_LOCK_TTL_MINUTES", "5")]);
    match Config::from_env_map(&env).unwrap().azure.ledger {
        LedgerSettings::Local { lock_ttl, .. } => assert_eq!(lock_ttl, Duration::from_secs(5 * 60)),
        other => panic!("{other:?}"),
    }
}

/// This machine's name as the lock writes it.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| std::env::var("HOSTNAME").unwrap_or_default())
}

#[tokio::test]
async fn a_lock_whose_process_is_gone_on_this_host_is_taken_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A process that ran and exited: its pid names nobody now (as after `kill -9`).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let crashed = serde_json::json!({
        "run_id": "run-crashed", "pid": pid, "host": this_host(),
        "since": Utc::now().to_rfc3339(),
    });
    std::fs::write(dir.path().join("run.lock"), crashed.to_string()).unwrap();
    // A two-hour TTL: only the dead process makes it stale.
    let ledger = LocalLedger::new(dir.path(), Duration::from_secs(7200));
    let held = ledger
        .lock("run-next")
        .await
        .expect("the dead run's lock is stale");
    assert!(lock_file(dir.path()).unwrap().contains("run-next"));
    held.release().await.unwrap();
}

#[tokio::test]
async fn a_lock_held_by_a_live_run_or_on_another_host_says_who_since_when_and_until_when() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = LocalLedger::new(dir.path(), Duration::from_secs(7200));
    for (run, pid, host) in [
        ("run-live", std::process::id(), this_host()),
        // Another machine's process cannot be checked from here: it waits for the TTL.
        ("run-elsewhere", 999_999, "another-host".to_string()),
    ] {
        let body = serde_json::json!({
            "run_id": run, "pid": pid, "host": host, "since": "2026-12-01T06:00:00+00:00",
        });
        std::fs::write(dir.path().join("run.lock"), body.to_string()).unwrap();
        match ledger.lock("run-next").await {
            Err(LedgerError::Busy { holder }) => {
                assert!(holder.contains(&format!("run {run}")), "{holder}");
                assert!(
                    holder.contains(&format!("process {pid} on {host}")),
                    "{holder}"
                );
                assert!(
                    holder.contains("since 2026-12-01T06:00:00+00:00"),
                    "{holder}"
                );
                assert!(holder.contains("expires at the latest at"), "{holder}");
                assert!(!holder.contains('{'), "raw lock JSON: {holder}");
            }
            other => panic!("expected Busy, got {:?}", other.map(|_| ())),
        }
    }
}
