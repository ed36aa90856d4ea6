//! The bounded ledger's benchmark (#10 item 4): the cost of a dry run after a simulated year
//! against a dry run after one run, time and peak memory, on both ledgers (local folder; Blob
//! container on Azurite over HTTPS with managed-identity tokens from the fake endpoint).
//!
//! `npm ci` (Azurite), then `cargo run --release --example bench_ledger`.
//! Knobs: `LEDGER_BENCH_OWNERS` (2000), `LEDGER_BENCH_DAYS` (365), `LEDGER_BENCH_REPEATS` (3),
//! `LEDGER_BENCH_BACKENDS` (`local,blob`), `LEDGER_BENCH_BEFORE` (1: also the same year
//! without checkpoints, every event replayed, as the ledger was before them).
//!
//! Each scenario starts from a real live run (`job::run`, outbox channel) on a generated
//! export of N owners; "a year" then adds 364 more daily runs written straight through the
//! ledger API (`LedgerStore::append`, then `LedgerStore::checkpoint` as the job calls it after
//! a live run): each issue reminded weekly, about one in seven daily (final days and overdue),
//! about 1% of the issues resolved each day and replaced by new ones, the day's aggregate,
//! manager summaries, cached conversations. The measured dry run is the job's entry point
//! end to end (`app::deps` from the settings, `job::run` with `dry_run`: read the export,
//! load the ledger, plan, render), each in a child process of its own so its peak RSS
//! (`VmHWM`) is the dry run's alone.

use testkit::{azurite, fake_identity};

use chrono::{Days, NaiveDate, TimeZone, Utc};
use lookout_reminders::config::Config;
use lookout_reminders::domain::OwnerEmail;
use lookout_reminders::insights::{DailyAggregate, IssueFacts, Resolution, ResolvedHow};
use lookout_reminders::job::{self, RunRequest};
use lookout_reminders::ledger::LedgerEvent;
use lookout_reminders::plan::{IssueKey, Stage};
use lookout_reminders::report::Trigger;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The first (real) run's day; the year follows it.
fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 11, 1).unwrap()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.get(1).map(String::as_str) == Some("measure") {
        runtime.block_on(measure(args[2].parse().expect("as_of")));
        return;
    }
    runtime.block_on(bench());
}

/// A Lookout CSV export: `owners` owners, a vulnerable Chrome each, every third an outdated
/// OS too, detected over the two weeks before the first run.
fn write_export(path: &Path, owners: usize) {
    use std::fmt::Write;
    let mut csv = String::from(
        "Device Owner,Lookout ID,MDM Device ID,Profile,Device Model,Device Platform,Issue Type,Issue,Classifications,Status,Risk,Date Detected,Date Resolved,Resolution Time,Details\r\n",
    );
    for i in 0..owners {
        let detected = first_day() - Days::new(1 + (i % 14) as u64);
        let _ = write!(
            csv,
            "u{i:06}@engie.com,00000000-0000-4000-8000-{i:012},m-{i},Work,SM-A528B,Android,Application,Chrome(com.android.chrome),Vulnerability,Active,Moderate,{detected}T10:00:00Z,,,\r\n"
        );
        if i.is_multiple_of(3) {
            let _ = write!(
                csv,
                "u{i:06}@engie.com,00000000-0000-4000-8000-{i:012},m-{i},Work,SM-A528B,Android,OS,Android 12,OS Out of Date,Active,High,{detected}T11:00:00Z,,,\r\n"
            );
        }
    }
    std::fs::write(path, csv).expect("write the generated export");
}

/// One measured scenario.
struct Row {
    backend: String,
    label: &'static str,
    ms: f64,
    cpu: f64,
    peak: f64,
    bytes: u64,
}

/// Where a scenario keeps its ledger: the settings the app reads.
struct Scenario {
    name: String,
    env: Vec<(String, String)>,
}

impl Scenario {
    fn config(&self) -> Config {
        let mut env = lookout_reminders::config::Env::default();
        for (k, v) in &self.env {
            env.0.insert(k.clone(), v.clone());
        }
        Config::from_env_map(&env).expect("bench settings")
    }
}

async fn bench() {
    let owners: usize = env_or("LEDGER_BENCH_OWNERS", 2000);
    let days: u64 = env_or("LEDGER_BENCH_DAYS", 365);
    let repeats: usize = env_or("LEDGER_BENCH_REPEATS", 3);
    let before = env_or("LEDGER_BENCH_BEFORE", 1) == 1;
    let backends: String = env_or("LEDGER_BENCH_BACKENDS", "local,blob".to_string());
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.csv");
    write_export(&export, owners);
    let base = vec![
        (
            "REMINDERS_EXPORT_PATH".to_string(),
            export.display().to_string(),
        ),
        (
            "REMINDERS_OUTBOX_DIR".into(),
            dir.path().join("outbox").display().to_string(),
        ),
        // Every owner of the generated export may be reminded.
        ("REMINDERS_MAX_OWNERS_PER_RUN".into(), "100000".into()),
    ];
    let mut azurite = None;
    let mut rows = Vec::new();
    for backend in backends.split(',') {
        let mut variants = vec![("one run", 1u64, true), ("a year", days, true)];
        if before {
            variants.push(("a year, no checkpoints (before)", days, false));
        }
        for (label, run_days, checkpoints) in variants {
            let mut env = base.clone();
            match backend {
                "local" => {
                    let state = dir.path().join(format!("state-{}", rows.len()));
                    env.push(("REMINDERS_LEDGER".into(), "local".into()));
                    env.push(("REMINDERS_STATE_DIR".into(), state.display().to_string()));
                }
                "blob" => {
                    if azurite.is_none() {
                        azurite = Some(azurite::Azurite::start().await);
                    }
                    let identity = fake_identity::FakeIdentity::shared().await;
                    env.extend(azurite.as_ref().unwrap().settings());
                    env.extend(identity.env());
                    env.push(("REMINDERS_LEDGER".into(), "blob".into()));
                    env.push((
                        "REMINDERS_STATE_CONTAINER".into(),
                        format!("state-{}", uuid::Uuid::new_v4().simple()),
                    ));
                }
                other => panic!("LEDGER_BENCH_BACKENDS: unknown backend {other}"),
            }
            let scenario = Scenario {
                name: format!("{backend}: after {label}"),
                env,
            };
            let started = Instant::now();
            let (ledger_bytes, dry_as_of) = prepare(&scenario, run_days, checkpoints).await;
            eprintln!(
                "{}: prepared in {:.1?} ({:.1} MB stored)",
                scenario.name,
                started.elapsed(),
                ledger_bytes as f64 / 1e6
            );
            let mut times = Vec::new();
            let mut cpus = Vec::new();
            let mut peaks = Vec::new();
            let mut planned = 0;
            for _ in 0..repeats {
                let (ms, cpu, peak, p) = dry_run_in_child(&scenario, dry_as_of);
                times.push(ms);
                cpus.push(cpu);
                peaks.push(peak);
                planned = p;
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (ms, cpu) = (median(&mut times), median(&mut cpus));
            let peak = peaks.iter().copied().fold(0.0, f64::max);
            eprintln!(
                "{}: dry run {ms:.0} ms wall, {cpu:.0} ms CPU (medians of {repeats}), peak RSS {peak:.1} MB, {planned} owners planned",
                scenario.name
            );
            rows.push(Row {
                backend: backend.to_string(),
                label,
                ms,
                cpu,
                peak,
                bytes: ledger_bytes,
            });
        }
    }
    println!(
        "\n| ledger | dry run after | stored ledger MB | wall ms | CPU ms | peak RSS MB | wall ratio | CPU ratio | memory ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut verdicts = Vec::new();
    for r in &rows {
        let floor = rows
            .iter()
            .find(|f| f.backend == r.backend && f.label == "one run")
            .expect("the one-run floor");
        let (wr, cr, mr) = (r.ms / floor.ms, r.cpu / floor.cpu, r.peak / floor.peak);
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {wr:.2} | {cr:.2} | {mr:.2} |",
            r.backend,
            r.label,
            r.bytes as f64 / 1e6,
            r.ms,
            r.cpu,
            r.peak
        );
        if r.label == "a year" {
            verdicts.push(format!(
                "{}: a year costs {wr:.2}x the wall time, {cr:.2}x the CPU time and {mr:.2}x the peak memory of one run (target < 1.5x): {}",
                r.backend,
                if wr < 1.5 && cr < 1.5 && mr < 1.5 { "PASS" } else { "FAIL" }
            ));
        }
    }
    println!();
    for v in verdicts {
        println!("{v}");
    }
}

/// The real first run, then the simulated rest of the year; returns the ledger's stored
/// bytes and the day of the dry run to measure (the day after the last run).
async fn prepare(scenario: &Scenario, days: u64, checkpoints: bool) -> (u64, NaiveDate) {
    let config = scenario.config();
    let deps = lookout_reminders::app::deps(&config, None).expect("bench wiring");
    let mut request = RunRequest::new(Trigger::Cli);
    request.as_of = Some(first_day());
    let report = job::run(&deps, request, CancellationToken::new())
        .await
        .expect("the first run");
    assert!(report.counts.sent > 0, "the first run sent nothing");
    let store = deps.ledger.clone();
    let snapshot = store.load().await.expect("load after the first run");
    // The export's issues as the first run recorded them: the year reminds these.
    let issues: Vec<(OwnerEmail, IssueKey, IssueFacts)> = {
        let mut v: Vec<_> = snapshot
            .facts
            .iter()
            .map(|((o, k), (f, _))| (o.clone(), k.clone(), f.clone()))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    };
    drop(snapshot);
    // Issues that come and go: (owner, key, facts, day sent first).
    let mut churn: BTreeMap<u64, Vec<(OwnerEmail, IssueKey, IssueFacts)>> = BTreeMap::new();
    let per_day = (issues.len() / 100).max(1);
    for d in 1..days {
        let as_of = first_day() + Days::new(d);
        let sent_at = Utc.from_utc_datetime(&as_of.and_hms_opt(7, 0, 0).unwrap());
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut events = Vec::new();
        for (i, (owner, issue, facts)) in issues.iter().enumerate() {
            let weekly = (i as u64 + d).is_multiple_of(7);
            let daily = i % 7 == 3;
            if weekly || daily {
                events.push(LedgerEvent::Sent {
                    owner: owner.clone(),
                    issue: issue.clone(),
                    lookout_id: Some(format!("00000000-0000-4000-8000-{i:012}")),
                    stage: if daily { Stage::Overdue } else { Stage::Repeat },
                    as_of,
                    sent_at,
                    channel: "outbox".into(),
                    message_id: None,
                    run_id: run_id.clone(),
                    maybe_delivered: false,
                    facts: Some(facts.clone()),
                });
            }
        }
        // About 1% of the issues resolved each day (those that appeared five days before)
        // and as many new ones reminded for the first time.
        if let Some(resolved) = d.checked_sub(5).and_then(|from| churn.remove(&from)) {
            for (owner, issue, facts) in resolved {
                events.push(LedgerEvent::Resolved {
                    owner,
                    issue,
                    as_of,
                    run_id: run_id.clone(),
                    resolution: Some(Resolution::measure(
                        &facts,
                        false,
                        1,
                        as_of,
                        ResolvedHow::LeftExport,
                    )),
                });
            }
        }
        let mut new = Vec::new();
        for j in 0..per_day {
            let (owner, _, facts) = &issues[(d as usize * 31 + j * 97) % issues.len()];
            let issue = IssueKey(format!("{}|churn-{d}-{j}", owner.as_str()).into());
            let facts = IssueFacts {
                detected_on: as_of,
                deadline: as_of + Days::new(30),
                ..facts.clone()
            };
            events.push(LedgerEvent::Sent {
                owner: owner.clone(),
                issue: issue.clone(),
                lookout_id: None,
                stage: Stage::First,
                as_of,
                sent_at,
                channel: "outbox".into(),
                message_id: None,
                run_id: run_id.clone(),
                maybe_delivered: false,
                facts: Some(facts.clone()),
            });
            new.push((owner.clone(), issue, facts));
        }
        churn.insert(d, new);
        if d == 1 {
            for (i, (owner, _, _)) in issues.iter().enumerate() {
                events.push(LedgerEvent::Conversation {
                    owner: owner.clone(),
                    conversation_id: format!("a:conversation-{i}"),
                    at: sent_at,
                });
            }
        }
        if d.is_multiple_of(7) {
            for m in 0..20 {
                events.push(LedgerEvent::ManagerTold {
                    manager: OwnerEmail::parse(&format!("manager{m}@engie.com")).unwrap(),
                    owners: issues
                        .iter()
                        .skip(m)
                        .step_by(100)
                        .map(|i| i.0.clone())
                        .collect(),
                    as_of,
                    round_started: as_of,
                    sent_at,
                    run_id: run_id.clone(),
                });
            }
        }
        events.push(LedgerEvent::Daily(DailyAggregate {
            as_of,
            run_id: run_id.clone(),
            open: issues.len() as u32,
            overdue: (issues.len() / 7) as u32,
            owners_open: (issues.len() * 3 / 4) as u32,
            owners_reached: (events.len()) as u32,
            resolved_in_run: per_day as u32,
            ..Default::default()
        }));
        store.append(&events).await.expect("append a simulated day");
        if checkpoints {
            store.checkpoint(as_of).await.expect("checkpoint");
        }
    }
    (
        stored_bytes(scenario, &config).await,
        first_day() + Days::new(days),
    )
}

/// The ledger's stored size: the local folder's ledger files, or the container's `ledger/`
/// blobs.
async fn stored_bytes(scenario: &Scenario, config: &Config) -> u64 {
    let dir = scenario
        .env
        .iter()
        .find(|(k, _)| k == "REMINDERS_STATE_DIR")
        .map(|(_, v)| PathBuf::from(v));
    match dir {
        Some(dir) => std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
            .map(|e| e.metadata().unwrap().len())
            .sum(),
        None => {
            use futures::TryStreamExt;
            let credential = lookout_reminders::azure::credential(&config.azure).unwrap();
            let state = config.azure.blob_state().unwrap();
            let options = lookout_reminders::azure::sdk_client_options(&config.azure).unwrap();
            let (_, container) = lookout_reminders::azure::storage::container_at(
                &state.account_url,
                &state.container,
                credential,
                options,
            );
            let container = container.unwrap();
            let mut pager = container
                .list_blobs(Some(
                    azure_storage_blob::models::BlobContainerClientListBlobsOptions {
                        prefix: Some("ledger/".into()),
                        ..Default::default()
                    },
                ))
                .unwrap();
            let mut total = 0;
            while let Some(item) = pager.try_next().await.unwrap() {
                total += item.properties.and_then(|p| p.content_length).unwrap_or(0);
            }
            total
        }
    }
}

/// Runs [`measure`] in a child process with the scenario's settings; returns its wall and
/// CPU time (ms), peak RSS (MB) and owners planned.
fn dry_run_in_child(scenario: &Scenario, as_of: NaiveDate) -> (f64, f64, f64, usize) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("REMINDERS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "error")
        .envs(scenario.env.iter().map(|(k, v)| (k, v)))
        .arg("measure")
        .arg(as_of.to_string());
    let out = cmd.output().expect("run the measurement");
    assert!(
        out.status.success(),
        "{}: the dry run failed: {}",
        scenario.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("measurement JSON");
    (
        v["ms"].as_f64().unwrap(),
        v["cpu_ms"].as_f64().unwrap_or(f64::NAN),
        v["peak_mb"].as_f64().unwrap(),
        v["planned"].as_u64().unwrap() as usize,
    )
}

/// In the child: one dry run through the job's entry point, wired from the settings.
async fn measure(as_of: NaiveDate) {
    let started = Instant::now();
    let config = Config::from_env().expect("settings");
    let deps = lookout_reminders::app::deps(&config, None).expect("wiring");
    let mut request = RunRequest::new(Trigger::Cli);
    request.dry_run = true;
    request.as_of = Some(as_of);
    let report = job::run(&deps, request, CancellationToken::new())
        .await
        .expect("the dry run");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    // User + system CPU time (fields 14 and 15 of /proc/self/stat, in 1/100 s on Linux):
    // steadier than wall time on a shared machine.
    let cpu_ms = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after_name = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            // Fields counted from 3 (state) after the name.
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) * 10.0)
        })
        .unwrap_or(f64::NAN);
    let json = serde_json::to_string(&report).expect("the report serialises");
    let peak_mb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0);
    println!(
        "{}",
        serde_json::json!({"ms": ms, "cpu_ms": cpu_ms, "peak_mb": peak_mb, "planned": report.owners.planned, "report_bytes": json.len()})
    );
}
