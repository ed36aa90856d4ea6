//! Zone-less times (the console's list view, Excel date cells) are wall times in
//! `REMINDERS_TIME_ZONE`; times with a zone keep theirs.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use lookout_reminders::config::{Config, Env};
use lookout_reminders::deliver::OutboxNotifier;
use lookout_reminders::job::{self, RunRequest};
use lookout_reminders::ledger::LocalLedger;
use lookout_reminders::parse::{parse_export, parse_export_in, ParsedExport};
use lookout_reminders::report::Trigger;
use lookout_reminders::source::LocalFileSource;
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn parse_in(name: &str, zone: Tz) -> ParsedExport {
    let bytes = std::fs::read(fixture(name)).unwrap();
    parse_export_in(&bytes, name, zone).unwrap_or_else(|e| panic!("{e}"))
}

/// The zone's offset from UTC at a wall time read as UTC (near enough away from a change).
fn offset_seconds(zone: Tz, at: DateTime<Utc>) -> i64 {
    i64::from(
        zone.offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

#[test]
fn every_list_view_time_moves_by_the_zone_offset_of_its_own_date() {
    let utc = parse_in("issues-list-view.tsv", Tz::UTC);
    for zone in [
        chrono_tz::Europe::Paris,
        chrono_tz::America::New_York,
        chrono_tz::Asia::Kolkata,
    ] {
        let local = parse_in("issues-list-view.tsv", zone);
        assert_eq!(local.findings.len(), utc.findings.len());
        assert!(!local.findings.is_empty());
        for (u, l) in utc.findings.iter().zip(&local.findings) {
            assert_eq!(u.row, l.row);
            // The same wall time, read in `zone`: earlier by the zone's offset that day.
            let shift = (u.detected - l.detected).num_seconds();
            assert_eq!(
                shift,
                offset_seconds(zone, u.detected),
                "row {} in {zone}",
                u.row
            );
            assert_eq!(
                l.detected.with_timezone(&zone).naive_local(),
                u.detected.naive_utc(),
                "row {} in {zone}",
                u.row
            );
        }
    }
    // Paris in winter and in summer: an hour, then two.
    let paris = parse_in("issues-list-view.tsv", chrono_tz::Europe::Paris);
    let first = &paris.findings[0];
    assert_eq!(
        first.detected,
        Utc.with_ymd_and_hms(2024, 3, 4, 13, 52, 0).unwrap(),
        "Mar 4, 2024 2:52 PM in Paris"
    );
}

#[test]
fn times_written_with_a_zone_ignore_the_run_zone() {
    let utc = parse_in("issues-export.csv", Tz::UTC);
    let tokyo = parse_in("issues-export.csv", chrono_tz::Asia::Tokyo);
    assert!(!utc.findings.is_empty());
    assert_eq!(utc, tokyo);
}

#[test]
fn excel_date_cells_are_wall_times_in_the_run_zone() {
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    let headers = ["Device Owner", "Issue", "Status", "Date Detected"];
    for (c, h) in headers.iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    let date_format = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    // Winter, summer, and 23:30 the evening before a date change in Paris.
    let walls = [
        (2024, 1, 15, 9, 0),
        (2024, 7, 15, 9, 0),
        (2024, 3, 4, 23, 30),
    ];
    for (i, (y, mo, d, h, mi)) in walls.iter().enumerate() {
        let row = i as u32 + 1;
        sheet
            .write_string(row, 0, format!("owner{row}@contoso.com"))
            .unwrap();
        sheet.write_string(row, 1, "Agent").unwrap();
        sheet.write_string(row, 2, "Active").unwrap();
        let cell = ExcelDateTime::from_ymd(*y, *mo, *d)
            .unwrap()
            .and_hms(*h, *mi, 0)
            .unwrap();
        sheet
            .write_datetime_with_format(row, 3, &cell, &date_format)
            .unwrap();
    }
    let bytes = book.save_to_buffer().unwrap();
    let paris = chrono_tz::Europe::Paris;
    let parsed = parse_export_in(&bytes, "book.xlsx", paris).unwrap();
    let seen: Vec<NaiveDateTime> = parsed
        .findings
        .iter()
        .map(|f| f.detected.with_timezone(&paris).naive_local())
        .collect();
    let expected: Vec<NaiveDateTime> = walls
        .iter()
        .map(|(y, mo, d, h, mi)| {
            NaiveDate::from_ymd_opt(*y as i32, u32::from(*mo), u32::from(*d))
                .unwrap()
                .and_hms_opt(u32::from(*h), u32::from(*mi), 0)
                .unwrap()
        })
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        parsed.findings[2].detected,
        Utc.with_ymd_and_hms(2024, 3, 4, 22, 30, 0).unwrap()
    );
    // `parse_export` (tools, tests) keeps reading them as UTC.
    let as_utc = parse_export(&bytes, "book.xlsx").unwrap();
    assert_eq!(
        as_utc.findings[2].detected,
        Utc.with_ymd_and_hms(2024, 3, 4, 23, 30, 0).unwrap()
    );
}

#[tokio::test]
async fn a_run_reads_the_list_view_in_reminders_time_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let run_in = |zone: &str| {
        let config =
            Config::from_env_map(&Env::from_pairs(&[("REMINDERS_TIME_ZONE", zone)])).unwrap();
        let mut deps = lookout_reminders::app::deps(
            &config,
            Some(Arc::new(LocalFileSource::new(
                fixture("issues-list-view.tsv"),
                1 << 20,
            ))),
        )
        .unwrap();
        let local = Arc::new(LocalLedger::new(
            tmp.path().join(zone.replace('/', "-")),
            std::time::Duration::from_secs(600),
        ));
        deps.ledger = local.clone();
        deps.reports = local;
        deps.notifier = Arc::new(OutboxNotifier::new(tmp.path().join("outbox")));
        deps
    };
    let mut req = RunRequest::new(Trigger::Cli);
    req.as_of = Some(NaiveDate::from_ymd_opt(2024, 3, 7).unwrap());
    req.dry_run = true;

    let mut detected = Vec::new();
    for zone in ["America/New_York", "Europe/Paris"] {
        let report = job::run(&run_in(zone), req.clone(), CancellationToken::new())
            .await
            .unwrap();
        let owner = report
            .reminders
            .iter()
            .find(|r| r.owner.eq_ignore_ascii_case("gm6567@engie.com"))
            .expect("the list view's first owner has a planned reminder");
        detected.push(owner.issues[0].detected);
    }
    // "Mar 4, 2024 2:52 PM": 19:52 UTC in New York (UTC-5), 13:52 UTC in Paris (UTC+1).
    assert_eq!(
        detected,
        [
            Utc.with_ymd_and_hms(2024, 3, 4, 19, 52, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 3, 4, 13, 52, 0).unwrap(),
        ]
    );
}
