//! Parsing the bundled fixtures and their variants (`tests/data/`, Excel files built here)
//! through the public `parse_export`, with the default policy as of the export's date.

use chrono::NaiveDate;
use lookout_reminders::domain::OwnerEmail;
use lookout_reminders::ledger::LedgerSnapshot;
use lookout_reminders::parse::{parse_export, ExportFormat, Finding, ParseError, ParsedExport};
use lookout_reminders::plan::{self, PlanOptions};
use lookout_reminders::policy::{evaluate, Rules};
use rust_xlsxwriter::{Table, TableColumn, Workbook};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn bytes(relative: &str) -> Vec<u8> {
    std::fs::read(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn parse_file(relative: &str) -> ParsedExport {
    let name = relative.rsplit('/').next().unwrap();
    parse_export(&bytes(relative), name).unwrap_or_else(|e| panic!("{e}"))
}

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 7).unwrap()
}

fn remindable(p: &ParsedExport) -> Vec<&Finding> {
    let rules = Rules::default();
    p.findings
        .iter()
        .filter(|f| evaluate(f, as_of(), &rules).is_ok())
        .collect()
}

fn owners(findings: &[&Finding]) -> BTreeSet<OwnerEmail> {
    findings.iter().map(|f| f.owner.clone()).collect()
}

/// What must be equal whatever the format: owner, issue, status, detection time.
fn essence(p: &ParsedExport) -> Vec<(String, String, String, String, String)> {
    p.findings
        .iter()
        .map(|f| {
            (
                f.owner.to_string(),
                f.issue.to_string(),
                f.classifications.to_string(),
                f.status.to_string(),
                f.detected.to_rfc3339(),
            )
        })
        .collect()
}

/// The fixture's rows as text cells, header first.
fn fixture_rows() -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path("fixtures/issues-export.csv"))
        .unwrap();
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

fn fixture_csv() -> ParsedExport {
    parse_file("fixtures/issues-export.csv")
}

#[test]
fn the_csv_fixture_has_27_rows_25_remindable_for_23_owners() {
    let p = fixture_csv();
    assert_eq!(p.format, Some(ExportFormat::Csv));
    assert_eq!(p.total_rows, 27);
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    assert_eq!(p.findings.len(), 27);
    let remindable = remindable(&p);
    assert_eq!(remindable.len(), 25);
    assert_eq!(owners(&remindable).len(), 23);
    assert_eq!(owners(&p.findings.iter().collect::<Vec<_>>()).len(), 25);
    // Header on line 1: the first data row is row 2, the last row 28.
    assert_eq!(p.findings[0].row, 2);
    assert_eq!(p.findings[26].row, 28);
}

#[test]
fn the_csv_fixture_plans_23_reminders() {
    let p = fixture_csv();
    let opts = PlanOptions {
        as_of: as_of(),
        ..PlanOptions::default()
    };
    let plan = plan::build(
        &p.findings,
        &LedgerSnapshot::default(),
        &Rules::default(),
        &opts,
    );
    assert_eq!(plan.remindable, 25);
    assert_eq!(plan.reminders.len(), 23);
}

#[test]
fn the_xlsx_fixture_gives_the_same_findings_as_the_csv() {
    let xlsx = parse_file("fixtures/issues-export1.xlsx");
    assert_eq!(xlsx.format, Some(ExportFormat::Xlsx));
    assert_eq!(xlsx.total_rows, 27);
    assert!(xlsx.rejected.is_empty(), "{:?}", xlsx.rejected);
    let csv = fixture_csv();
    assert_eq!(essence(&xlsx), essence(&csv));
    let rows: Vec<usize> = xlsx.findings.iter().map(|f| f.row).collect();
    assert_eq!(rows, csv.findings.iter().map(|f| f.row).collect::<Vec<_>>());
    assert_eq!(remindable(&xlsx).len(), 25);
    assert!(
        xlsx.notes
            .iter()
            .any(|n| n.contains("'Tableau1'") && n.contains("'Feuil1'")),
        "{:?}",
        xlsx.notes
    );
}

#[test]
fn the_list_view_fixture_has_6_remindable_issues_for_5_owners() {
    let p = parse_file("fixtures/issues-list-view.tsv");
    assert_eq!(p.format, Some(ExportFormat::ListView));
    assert_eq!(p.total_rows, 6);
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    let remindable = remindable(&p);
    assert_eq!(remindable.len(), 6);
    assert_eq!(owners(&remindable).len(), 5);
    let tm = p
        .findings
        .iter()
        .find(|f| f.owner.as_str() == "tm6511@engie.com")
        .unwrap();
    assert_eq!(tm.device_model, "SM-A405FN");
    assert_eq!(tm.issue, "Edge");
}

#[test]
fn the_list_view_and_the_csv_agree_on_the_shared_issues() {
    let list = parse_file("fixtures/issues-list-view.tsv");
    let csv = fixture_csv();
    for f in &list.findings {
        let same = csv
            .findings
            .iter()
            .find(|c| c.owner == f.owner && c.detected == f.detected)
            .unwrap_or_else(|| panic!("{} not in the CSV", f.owner));
        assert_eq!(same.device_model, f.device_model);
        assert_eq!(same.classifications, f.classifications);
        assert_eq!(same.risk, f.risk);
        assert_eq!(same.platform, f.platform);
    }
}

#[test]
fn variants_of_the_csv_give_the_same_findings() {
    let expected = essence(&fixture_csv());
    for file in [
        "utf8-bom.csv",
        "reordered-extra-column.csv",
        "lf.csv",
        "quoted-newline.csv",
        "title-line.csv",
        "semicolon-windows-1252.csv",
    ] {
        let p = parse_file(&format!("tests/data/{file}"));
        assert_eq!(p.total_rows, 27, "{file}");
        assert!(p.rejected.is_empty(), "{file}: {:?}", p.rejected);
        assert_eq!(essence(&p), expected, "{file}");
        assert_eq!(remindable(&p).len(), 25, "{file}");
    }
}

#[test]
fn a_windows_1252_semicolon_export_keeps_its_accents() {
    let raw = bytes("tests/data/semicolon-windows-1252.csv");
    assert!(
        std::str::from_utf8(&raw).is_err(),
        "the file must not be UTF-8"
    );
    let p = parse_file("tests/data/semicolon-windows-1252.csv");
    assert_eq!(p.findings[0].device_model, "SM-A326B édition Société");
    assert!(p.notes.iter().any(|n| n.contains("';'")), "{:?}", p.notes);
}

#[test]
fn a_quoted_newline_shifts_the_following_row_numbers() {
    let p = parse_file("tests/data/quoted-newline.csv");
    assert_eq!(p.findings[1].row, 3);
    assert_eq!(p.findings[2].row, 5);
    assert_eq!(p.findings[26].row, 29);
}

#[test]
fn a_title_line_above_the_header_shifts_rows_by_one() {
    let p = parse_file("tests/data/title-line.csv");
    assert_eq!(p.findings[0].row, 3);
}

#[test]
fn a_bad_date_rejects_only_its_row_with_a_message_naming_file_row_and_column() {
    let p = parse_file("tests/data/bad-date.csv");
    assert_eq!(p.total_rows, 27);
    assert_eq!(p.findings.len(), 26);
    assert_eq!(p.rejected.len(), 1);
    let r = &p.rejected[0];
    assert_eq!(r.row, 14);
    assert_eq!(r.field, "Date Detected");
    assert_eq!(
        format!("issues.csv: {r}"),
        "issues.csv: row 14: column 'Date Detected': not a date: '31/02/2024'"
    );
}

#[test]
fn a_row_without_owner_is_rejected_and_the_others_are_kept() {
    let p = parse_file("tests/data/missing-owner.csv");
    assert_eq!(p.total_rows, 27);
    assert_eq!(p.findings.len(), 26);
    assert_eq!(p.rejected[0].row, 5);
    assert_eq!(p.rejected[0].field, "Device Owner");
    assert_eq!(remindable(&p).len(), 24);
}

#[test]
fn an_empty_file_is_an_error_naming_the_file() {
    let err = parse_export(&bytes("tests/data/empty.csv"), "empty.csv").unwrap_err();
    assert!(matches!(err, ParseError::Empty { .. }));
    assert!(
        err.to_string().starts_with("empty.csv: the file is empty"),
        "{err}"
    );
}

#[test]
fn a_pdf_is_not_an_export() {
    let err = parse_export(&bytes("tests/data/not-an-export.pdf"), "report.pdf").unwrap_err();
    assert!(matches!(err, ParseError::NotAnExport { .. }));
    assert_eq!(
        err.to_string(),
        "report.pdf: this is a PDF document; expected a Lookout issues export (CSV, XLSX or list view)"
    );
}

#[test]
fn a_csv_without_the_export_header_names_what_was_expected_and_found() {
    let err = parse_export(b"Name,Phone\nBob,123\n", "contacts.csv").unwrap_err();
    assert!(matches!(err, ParseError::NoHeader { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with("contacts.csv: no header row"), "{msg}");
    assert!(
        msg.contains("'Device Owner', 'Issue', 'Status', 'Date Detected'"),
        "{msg}"
    );
    assert!(
        msg.contains("line 1 has 2 cells, none of them a known column"),
        "{msg}"
    );
    assert!(!msg.contains("Phone"), "{msg}");
}

#[test]
fn a_truncated_xlsx_is_an_unreadable_workbook() {
    let full = bytes("fixtures/issues-export1.xlsx");
    let err = parse_export(&full[..full.len() * 2 / 3], "issues-export1.xlsx").unwrap_err();
    assert!(matches!(err, ParseError::BadWorkbook { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("issues-export1.xlsx: unreadable Excel workbook"),
        "{err}"
    );
}

/// Writes the fixture's rows into a workbook: on sheet `sheet_index` (others get filler),
/// starting at `first_row`, as a table or as plain cells.
fn fixture_workbook(sheet_index: usize, first_row: u32, as_table: bool) -> Vec<u8> {
    let rows = fixture_rows();
    let mut wb = Workbook::new();
    for s in 0..=sheet_index {
        let ws = wb.add_worksheet();
        if s != sheet_index {
            ws.write_string(0, 0, "Résumé").unwrap();
            ws.write_string(1, 0, "nothing to see here").unwrap();
            continue;
        }
        if first_row > 0 {
            ws.write_string(0, 0, "Export 27 items").unwrap();
        }
        for (r, row) in rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                if !cell.is_empty() {
                    ws.write_string(first_row + r as u32, c as u16, cell)
                        .unwrap();
                }
            }
        }
        if as_table {
            let columns: Vec<TableColumn> = rows[0]
                .iter()
                .map(|h| TableColumn::new().set_header(h))
                .collect();
            let table = Table::new().set_name("Issues").set_columns(&columns);
            let last_row = first_row + rows.len() as u32 - 1;
            ws.add_table(first_row, 0, last_row, rows[0].len() as u16 - 1, &table)
                .unwrap();
        }
    }
    wb.save_to_buffer().unwrap()
}

#[test]
fn an_xlsx_without_a_table_is_read_from_the_header_on_row_3() {
    let p = parse_export(&fixture_workbook(0, 2, false), "plain.xlsx").unwrap();
    assert_eq!(p.total_rows, 27);
    assert!(p.rejected.is_empty(), "{:?}", p.rejected);
    assert_eq!(essence(&p), essence(&fixture_csv()));
    assert_eq!(p.findings[0].row, 4);
    assert!(
        p.notes.iter().any(|n| n.contains("header on row 3")),
        "{:?}",
        p.notes
    );
}

#[test]
fn an_xlsx_with_its_table_on_the_second_sheet_is_read() {
    let p = parse_export(&fixture_workbook(1, 0, true), "tabled.xlsx").unwrap();
    assert_eq!(p.total_rows, 27);
    assert_eq!(essence(&p), essence(&fixture_csv()));
    assert_eq!(p.findings[0].row, 2);
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("table 'Issues' on sheet 'Sheet2'")),
        "{:?}",
        p.notes
    );
}

#[test]
fn a_password_file_given_as_the_export_is_refused_without_quoting_it() {
    let passwd = b"root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/sbin/nologin\n";
    let err = parse_export(passwd, "/etc/passwd").unwrap_err();
    assert!(matches!(err, ParseError::NoHeader { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with("/etc/passwd: no header row"), "{msg}");
    assert!(
        msg.contains("'Device Owner', 'Issue', 'Status', 'Date Detected'"),
        "{msg}"
    );
    assert!(!msg.contains("root:x") && !msg.contains("nologin"), "{msg}");
}

#[test]
fn a_binary_blob_given_as_the_export_is_refused_without_quoting_it() {
    // Bytes no format sniffer knows, with a secret-looking line buried in them.
    let mut blob: Vec<u8> = (0u8..=255).rev().cycle().take(700).collect();
    blob.splice(40..40, b"root:x:0:0:root:/root:/bin/bash".iter().copied());
    let err = parse_export(&blob, "dump.bin").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("dump.bin: "), "{msg}");
    assert!(msg.contains("'Device Owner'"), "{msg}");
    assert!(!msg.contains("root:x") && !msg.contains("bash"), "{msg}");
    assert!(msg.len() < 300, "{msg}");
}
