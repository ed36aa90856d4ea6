//! A generator of realistic N-row Lookout exports (CSV and XLSX) for the benchmarks.
//!
//! Deterministic (a fixed xorshift seed) so runs compare. About three issues per owner on
//! average, mostly one device each, with the mix of kinds a real tenant shows: vulnerable
//! apps, OS and patch level out of date, outdated agents, some resolved issues and threats.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use lookout_reminders::ledger::LedgerSnapshot;
use lookout_reminders::parse::Finding;
use lookout_reminders::plan::{self, Plan, PlanOptions};
use lookout_reminders::policy::Rules;
use rust_xlsxwriter::{ExcelDateTime, Format, Table, TableColumn, Workbook};

/// The console export's columns, in its order.
pub const HEADER: [&str; 15] = [
    "Device Owner",
    "Lookout ID",
    "MDM Device ID",
    "Profile",
    "Device Model",
    "Device Platform",
    "Issue Type",
    "Issue",
    "Classifications",
    "Status",
    "Risk",
    "Date Detected",
    "Date Resolved",
    "Resolution Time",
    "Details",
];

/// Index of `Date Detected` in [`HEADER`].
const DETECTED: usize = 11;

/// One generated row: the text cells and the detection time (for real Excel dates).
pub struct Row {
    /// Cells in [`HEADER`] order; `Date Detected` as ISO 8601.
    pub cells: [String; 15],
    /// Detection time.
    pub detected: NaiveDateTime,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-5{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

const ANDROID_MODELS: [&str; 8] = [
    "SM-A528B", "SM-A326B", "SM-A137F", "SM-X205", "SM-G970F", "SM-T725", "moto e32", "SM-S911B",
];
const IOS_MODELS: [&str; 4] = [
    "iPhone 7",
    "iPhone SE (2nd generation)",
    "iPad Air 2",
    "iPhone 12",
];

/// Generates `n` rows.
pub fn rows(n: usize) -> Vec<Row> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let owners = (n / 3).max(1);
    let base = NaiveDate::from_ymd_opt(2022, 5, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    // Devices: one per owner, a tenth of the owners have a second one.
    let mut devices: Vec<(usize, String, String, &str, bool)> = Vec::new();
    for owner in 0..owners {
        for _ in 0..(1 + usize::from(rng.below(10) == 0)) {
            let ios = rng.below(5) == 0;
            let model = if ios {
                IOS_MODELS[rng.below(IOS_MODELS.len() as u64) as usize]
            } else {
                ANDROID_MODELS[rng.below(ANDROID_MODELS.len() as u64) as usize]
            };
            devices.push((owner, rng.uuid(), rng.uuid(), model, ios));
        }
    }
    (0..n)
        .map(|i| {
            // Spread the rows over the devices so every owner gets some.
            let (owner, lookout_id, mdm_id, model, ios) = &devices[(i * 7919) % devices.len()];
            let detected = base + Duration::seconds(rng.below(670 * 86_400) as i64);
            let roll = rng.below(100);
            let (issue_type, issue, class, status, risk) = match roll {
                0..=24 => (
                    "Application",
                    "Chrome(com.android.chrome)",
                    "Vulnerability",
                    "Active",
                    "Moderate",
                ),
                25..=39 => (
                    "Application",
                    "Edge(com.microsoft.emmx)",
                    "Vulnerability",
                    "Active",
                    "Moderate",
                ),
                40..=59 if *ios => (
                    "Configuration",
                    "Operating System Version",
                    "OS Out-Of-Date",
                    "Active",
                    "Low",
                ),
                40..=59 => ("Configuration", "Out of Date", "ASPL", "Active", "Low"),
                60..=74 => (
                    "Configuration",
                    "Operating System Version",
                    "OS Out-Of-Date",
                    "Active",
                    "Low",
                ),
                75..=84 => ("Configuration", "Agent", "Outdated", "Active", "Moderate"),
                85..=94 => (
                    "Application",
                    "Chrome(com.android.chrome)",
                    "Vulnerability",
                    "Resolved",
                    "Moderate",
                ),
                _ => ("Network", "Man-In-The-Middle", "Threat", "Active", "High"),
            };
            let resolved = if status == "Resolved" {
                (detected + Duration::days(4))
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            } else {
                String::new()
            };
            let cells = [
                format!("U{owner:06}@engie.com"),
                lookout_id.clone(),
                mdm_id.clone(),
                if rng.below(2) == 0 {
                    "Work".into()
                } else {
                    String::new()
                },
                model.to_string(),
                if *ios { "iOS".into() } else { "Android".into() },
                issue_type.into(),
                issue.into(),
                class.into(),
                status.into(),
                risk.into(),
                detected.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                resolved.clone(),
                if resolved.is_empty() {
                    String::new()
                } else {
                    "4 days".into()
                },
                String::new(),
            ];
            Row { cells, detected }
        })
        .collect()
}

/// Plans `findings` as both pipeline benchmarks measure it: default rules, an empty ledger,
/// as of 2024-03-07, six days after the last detection [`rows`] can generate (they spread
/// over the 670 days from 2022-05-01).
pub fn plan_findings(findings: &[Finding]) -> Plan {
    let opts = PlanOptions {
        as_of: NaiveDate::from_ymd_opt(2024, 3, 7).unwrap(),
        ..PlanOptions::default()
    };
    plan::build(
        findings,
        &LedgerSnapshot::default(),
        &Rules::default(),
        &opts,
    )
}

/// The rows as the console's CSV export (UTF-8, CRLF, quoted where needed).
pub fn csv(rows: &[Row]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(rows.len() * 220));
    writer.write_record(HEADER).unwrap();
    for row in rows {
        writer.write_record(&row.cells).unwrap();
    }
    writer.into_inner().unwrap()
}

/// The rows as an Excel table on the first sheet, `Date Detected` as real date cells.
pub fn xlsx(rows: &[Row]) -> Vec<u8> {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet().set_name("Feuil1").unwrap();
    let date_format = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
    for (r, row) in rows.iter().enumerate() {
        let r = r as u32 + 1;
        for (c, cell) in row.cells.iter().enumerate() {
            if c == DETECTED {
                let d = row.detected;
                let when =
                    ExcelDateTime::parse_from_str(&d.format("%Y-%m-%dT%H:%M:%S").to_string())
                        .unwrap();
                sheet
                    .write_datetime_with_format(r, c as u16, &when, &date_format)
                    .unwrap();
            } else if !cell.is_empty() {
                sheet.write_string(r, c as u16, cell).unwrap();
            }
        }
    }
    let columns: Vec<TableColumn> = HEADER
        .iter()
        .map(|h| TableColumn::new().set_header(*h))
        .collect();
    let table = Table::new().set_name("Tableau1").set_columns(&columns);
    sheet
        .add_table(0, 0, rows.len() as u32, HEADER.len() as u16 - 1, &table)
        .unwrap();
    workbook.save_to_buffer().unwrap()
}
