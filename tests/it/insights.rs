//! Insights (issue 13): 60 days of live runs over generated exports whose issues appear and
//! are fixed on known days; every headline figure checked against values worked out by hand.

use async_trait::async_trait;
use chrono::{Duration, NaiveDate};
use lookout_reminders::deliver::{Delivery, DeliveryError, Notifier, OutgoingReminder};
use lookout_reminders::insights::{Insights, ResolvedHow};
use lookout_reminders::job::{self, RunRequest};
use lookout_reminders::ledger::{LedgerEvent, LedgerStore, LocalLedger, ReportStore};
use lookout_reminders::report::Trigger;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Delivers everything, except to owners whose address starts with `unreachable`.
struct TestNotifier;

#[async_trait]
impl Notifier for TestNotifier {
    fn channel(&self) -> &str {
        "test"
    }
    fn describe(&self) -> String {
        "test".into()
    }
    async fn send(&self, msg: &OutgoingReminder) -> Result<Delivery, DeliveryError> {
        if msg.reminder.owner.as_str().starts_with("unreachable") {
            let mut e = DeliveryError::permanent(
                "test",
                format!("user '{}' not found in Teams", msg.reminder.owner),
            );
            e.skip = true;
            return Err(e);
        }
        Ok(Delivery {
            channel: "test".into(),
            message_id: Some("m".into()),
            attempts: 1,
            ..Default::default()
        })
    }
}

/// One generated issue: detected on `day` (days after day 0), gone from the export on `gone`.
struct Issue {
    owner: &'static str,
    columns: &'static str,
    detected: i64,
    gone: Option<i64>,
}

const OS: &str = "iPhone 12,iOS,Configuration,Operating System Version,OS Out-Of-Date";
const APP: &str = "SM-A528B,Android,Application,Chrome(com.android.chrome),Vulnerability";
const ASPL: &str = "SM-T725,Android,Configuration,Out of Date,ASPL";
const AGENT: &str = "SM-G970F,Android,Configuration,Agent,Outdated";

/// The fleet's 60 days. Each owner has one issue, all of moderate risk, so escalation only
/// comes from passing the deadline (detection + 30 days).
const FLEET: [Issue; 11] = [
    Issue {
        owner: "a",
        columns: OS,
        detected: 0,
        gone: Some(10),
    },
    Issue {
        owner: "b",
        columns: OS,
        detected: 5,
        gone: Some(45),
    },
    Issue {
        owner: "c",
        columns: APP,
        detected: 2,
        gone: Some(4),
    },
    Issue {
        owner: "d",
        columns: APP,
        detected: 10,
        gone: Some(30),
    },
    Issue {
        owner: "e",
        columns: APP,
        detected: 20,
        gone: Some(59),
    },
    Issue {
        owner: "f",
        columns: ASPL,
        detected: 40,
        gone: None,
    },
    Issue {
        owner: "unreachable-g",
        columns: AGENT,
        detected: 0,
        gone: None,
    },
    Issue {
        owner: "h",
        columns: OS,
        detected: 50,
        gone: Some(53),
    },
    Issue {
        owner: "i",
        columns: APP,
        detected: 31,
        gone: None,
    },
    Issue {
        owner: "j",
        columns: OS,
        detected: 57,
        gone: None,
    },
    Issue {
        owner: "k",
        columns: AGENT,
        detected: 45,
        gone: None,
    },
];

fn day0() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()
}

/// The export of run day `day`: the issues detected by then and not yet fixed.
fn export_on(day: i64) -> String {
    let mut csv = String::from("Device Owner,Lookout ID,Device Model,Device Platform,Issue Type,Issue,Classifications,Status,Risk,Date Detected\n");
    for (n, i) in FLEET.iter().enumerate() {
        if i.detected <= day && i.gone.is_none_or(|g| day < g) {
            let detected = day0() + Duration::days(i.detected);
            csv.push_str(&format!(
                "{}@contoso.com,dev-{n},{},Active,Moderate,{detected}T08:00:00Z\n",
                i.owner, i.columns
            ));
        }
    }
    csv
}

pub(crate) async fn run_sixty_days(state: &Path) -> Arc<LocalLedger> {
    let ledger = Arc::new(LocalLedger::new(state, std::time::Duration::from_secs(600)));
    let export = state.join("export.csv");
    let mut deps = crate::helpers::local_deps(state, &export, &[]);
    deps.notifier = Arc::new(TestNotifier);
    deps.ledger = ledger.clone();
    deps.reports = ledger.clone();
    for day in 0..60 {
        std::fs::write(&export, export_on(day)).unwrap();
        let mut req = RunRequest::new(Trigger::Timer);
        req.as_of = Some(day0() + Duration::days(day));
        job::run(&deps, req, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("day {day}: {e}"));
    }
    ledger
}

#[tokio::test]
async fn sixty_days_of_history_give_the_figures_worked_out_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = run_sixty_days(tmp.path()).await;
    let snapshot = ledger.load().await.unwrap();
    let latest = ledger.last_report().await.unwrap().unwrap();
    let since = day0() - Duration::days(1);
    let i = Insights::compute(&snapshot.insights, Some(&latest), since, false);
    let h = &i.headline;
    let last_day = day0() + Duration::days(59);
    assert_eq!(i.as_of, Some(last_day));

    // Open on day 59: f, g, i, j, k.
    assert_eq!(h.open_now, Some(5));
    // Day 52: e, f, g, h, i, k.
    assert_eq!(h.open_7_days_ago, Some(6));
    assert_eq!(h.change_7_days, Some(-1));
    // Day 29: b, d, e, g.
    assert_eq!(h.open_30_days_ago, Some(4));
    assert_eq!(h.change_30_days, Some(1));
    // Only g (detected day 0, deadline day 30) is past its deadline.
    assert_eq!(h.overdue_now, Some(1));

    // Fixed: a 10 days, b 40, c 2, d 20, e 39, h 3 → sorted 2 3 10 20 39 40.
    assert_eq!(h.resolved, 6);
    assert_eq!(h.median_days_to_remediate, Some(15.0));
    // Nearest rank: ceil(0.9 × 6) = 6th value.
    assert_eq!(h.p90_days_to_remediate, Some(40));
    // b (day 45 > deadline 35) and e (day 59 > deadline 50) were late: 4 of 6 on time.
    let pct = h.fixed_before_deadline_pct.unwrap();
    assert!((pct - 400.0 / 6.0).abs() < 1e-9, "{pct}");
    // Reminders are sent on days +0, +7, +14, +21, then daily from +25 (5 days left) to the
    // deadline (+30) and for 7 days after it (+31 to +37), then weekly (+44): a 2 (0, 7),
    // b 17 (4 + 6 + 7, fixed on +40), c 1, d 3 (0, 7, 14), e 17 (4 + 6 + 7, fixed on +39),
    // h 1 → 41 for 6 fixes.
    let per_fix = h.reminders_per_fix.unwrap();
    assert!((per_fix - 41.0 / 6.0).abs() < 1e-9, "{per_fix}");
    // b and e got overdue (escalated) reminders before they were fixed.
    assert_eq!(h.fixed_after_escalation, 2);

    let kind = |k: &str| i.by_kind.iter().find(|f| f.kind == k).unwrap();
    // OS: a 10, b 40, h 3; open now: j.
    let os = kind("os_out_of_date");
    assert_eq!(
        (
            os.open_now,
            os.resolved,
            os.median_days_to_remediate,
            os.p90_days_to_remediate
        ),
        (1, 3, Some(10.0), Some(40))
    );
    assert!((os.reminders_per_fix.unwrap() - 20.0 / 3.0).abs() < 1e-9);
    // Apps: c 2, d 20, e 39; open now: i.
    let app = kind("vulnerable_app");
    assert_eq!(
        (
            app.open_now,
            app.resolved,
            app.median_days_to_remediate,
            app.p90_days_to_remediate
        ),
        (1, 3, Some(20.0), Some(39))
    );
    assert!((app.fixed_before_deadline_pct.unwrap() - 200.0 / 3.0).abs() < 1e-9);
    let agent = kind("agent_out_of_date");
    assert_eq!((agent.open_now, agent.resolved), (2, 0));
    assert_eq!(agent.median_days_to_remediate, None);
    assert_eq!(kind("security_patch_out_of_date").open_now, 1);

    // The digest's block: open with its 7-day arrow, durations, on-time share.
    assert_eq!(
        i.digest_figures(),
        vec![
            (
                "Open issues".to_string(),
                "5 ▼ -1 vs 7 days ago".to_string()
            ),
            (
                "Time to remediate".to_string(),
                "median 15 d, 90th percentile 40 d".to_string()
            ),
            (
                "Fixed before the deadline".to_string(),
                "67 % of 6".to_string()
            ),
        ]
    );

    // One point per run day, from day 0.
    assert_eq!(i.trend.len(), 60);
    assert_eq!(i.trend[0].as_of, day0());
    // Day 0: a and g.
    assert_eq!(i.trend[0].open, 2);
    assert_eq!(i.trend[59].by_kind.get("agent_out_of_date"), Some(&2));

    // Since day 58: e fixed (app −1), nothing new.
    let c = i.changes.as_ref().unwrap();
    assert_eq!(c.previous_as_of, last_day - Duration::days(1));
    assert_eq!((c.open, c.resolved), (-1, 1));
    assert_eq!(c.by_kind.get("vulnerable_app"), Some(&-1));
    assert_eq!(c.by_kind.get("os_out_of_date"), Some(&0));

    // g: the only overdue issue, 29 days past its deadline, pseudonymised.
    assert_eq!(i.overdue.len(), 1);
    assert_eq!(i.overdue[0].days_overdue, 29);
    assert!(i.overdue[0].owner.starts_with("owner-"));
    // g is not in Teams: unreachable, its address hidden in the reason too.
    assert_eq!(i.unreachable.len(), 1);
    assert!(i.unreachable[0].owner.starts_with("owner-"));
    assert!(
        !i.unreachable[0].reason.contains("contoso"),
        "{}",
        i.unreachable[0].reason
    );
    assert!(i.unreachable[0].reason.contains(&i.unreachable[0].owner));

    // The period bounds the resolutions and the trend: from day 31, c, a and d are out.
    let later = Insights::compute(
        &snapshot.insights,
        Some(&latest),
        day0() + Duration::days(31),
        false,
    );
    assert_eq!(later.headline.resolved, 3);
    assert_eq!(later.trend.len(), 29);
    // "Now" and the comparisons do not depend on the period.
    assert_eq!(later.headline.open_30_days_ago, Some(4));
}

#[tokio::test]
async fn each_resolution_records_its_day_duration_reminders_and_escalation() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = run_sixty_days(tmp.path()).await;
    let snapshot = ledger.load().await.unwrap();
    let resolutions: Vec<_> = snapshot
        .insights
        .iter()
        .filter_map(|e| match e {
            LedgerEvent::Resolved {
                owner, resolution, ..
            } => Some((owner.as_str().to_string(), resolution.clone().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(resolutions.len(), 6);
    let (_, b) = resolutions
        .iter()
        .find(|(o, _)| o == "b@contoso.com")
        .unwrap();
    assert_eq!(b.resolved_on, day0() + Duration::days(45));
    assert_eq!(b.detected_on, day0() + Duration::days(5));
    assert_eq!(b.deadline, day0() + Duration::days(35));
    assert_eq!(b.days_to_remediate, 40);
    assert_eq!(b.reminders_before, 17);
    assert!(!b.before_deadline);
    assert!(b.after_escalation);
    assert_eq!(b.how, ResolvedHow::LeftExport);
    let (_, a) = resolutions
        .iter()
        .find(|(o, _)| o == "a@contoso.com")
        .unwrap();
    assert_eq!((a.days_to_remediate, a.reminders_before), (10, 2));
    assert!(a.before_deadline && !a.after_escalation);

    // One daily aggregate per run day, never for a dry run.
    let dailies = snapshot
        .insights
        .iter()
        .filter(|e| matches!(e, LedgerEvent::Daily(_)))
        .count();
    assert_eq!(dailies, 60);
}

#[tokio::test]
async fn the_page_is_written_beside_the_json_report_and_as_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = run_sixty_days(tmp.path()).await;
    let latest = ledger.last_report().await.unwrap().unwrap();
    let d = latest.started_at;
    let page = tmp.path().join(format!(
        "reports/{}/{}.html",
        d.format("%Y/%m/%d"),
        latest.run_id
    ));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("reports/latest.html")).unwrap(),
        html
    );
    assert!(html.contains("<svg"), "no chart");
    // Owners are pseudonyms: no address of the fleet is on the page.
    assert!(!html.contains("@contoso.com"));
    // Nothing is fetched: no script, no external reference.
    assert!(!html.contains("<script"));
    // The only URL is the SVG namespace plotters declares, which is never fetched.
    assert_eq!(
        html.matches("http://").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
    assert!(!html.contains("https://"));
    assert!(!html.contains("src="));
}
