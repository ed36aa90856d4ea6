//! The console's list view copied from the browser: tab-separated `STATUS ISSUE DEVICE
//! DETECTED RESOLVED DWELL TIME`, owner and model in one cell, risk inside the status.
//!
//! Each row is rewritten into the export's columns (`Device Owner`, `Issue Type`,
//! `Classifications`…) and goes through the same [`HeaderMap::finding`] as the CSV rows, so
//! validation and the policy see the same fields whatever the format.

use super::{columns::HeaderMap, ExportFormat, ParseError, ParsedExport, RejectedRow};
use chrono_tz::Tz;

/// The list view's columns, as the console titles them.
const STATUS: &str = "STATUS";
const ISSUE: &str = "ISSUE";
const DEVICE: &str = "DEVICE";
const DETECTED: &str = "DETECTED";
const RESOLVED: &str = "RESOLVED";

/// How an `ISSUE` cell ends, and what that says: (suffix, classification, issue type,
/// issue text when the suffix is the whole cell). Checked in order, case-insensitively.
const ISSUE_SUFFIXES: [(&str, &str, &str, &str); 4] = [
    ("Vulnerability", "Vulnerability", "Application", ""),
    (
        "OS Out-Of-Date",
        "OS Out-Of-Date",
        "Configuration",
        "Operating System Version",
    ),
    ("ASPL", "ASPL", "Configuration", "Out of Date"),
    ("Outdated", "Outdated", "Configuration", "Agent"),
];

/// Whether the text's first non-empty line is the list view's tab-separated header.
pub(super) fn looks_like_list_view(text: &str) -> bool {
    let Some(first) = text.lines().find(|l| !l.trim().is_empty()) else {
        return false;
    };
    let cells: Vec<String> = first.split('\t').map(normalise).collect();
    [STATUS, ISSUE, DEVICE, DETECTED]
        .iter()
        .all(|want| cells.iter().any(|c| c == want))
}

/// Describes the first non-blank line by the list view's own column names only, never
/// quoting the file (it may be anything a caller pointed the run at).
fn list_header_summary(text: &str) -> String {
    let Some(first) = text.lines().find(|l| !l.trim().is_empty()) else {
        return "no text".into();
    };
    let cells: Vec<String> = first.split('\t').map(normalise).collect();
    let missing: Vec<String> = [STATUS, ISSUE, DEVICE, DETECTED]
        .iter()
        .filter(|want| !cells.iter().any(|c| c == *want))
        .map(|want| format!("'{want}'"))
        .collect();
    format!(
        "a first line of {} tab-separated cells without {}",
        cells.len(),
        missing.join(", ")
    )
}

fn normalise(cell: &str) -> String {
    cell.trim().trim_start_matches('\u{feff}').to_uppercase()
}

/// Where the list view's columns sit in its header.
struct ListColumns {
    status: usize,
    issue: usize,
    device: usize,
    detected: usize,
    resolved: Option<usize>,
}

impl ListColumns {
    fn from_header(line: &str) -> Option<Self> {
        let cells: Vec<String> = line.split('\t').map(normalise).collect();
        let find = |want: &str| cells.iter().position(|c| c == want);
        Some(Self {
            status: find(STATUS)?,
            issue: find(ISSUE)?,
            device: find(DEVICE)?,
            detected: find(DETECTED)?,
            resolved: find(RESOLVED),
        })
    }

    /// Cells a row needs to reach every required column.
    fn required_width(&self) -> usize {
        [self.status, self.issue, self.device, self.detected]
            .into_iter()
            .max()
            .unwrap_or(0)
            + 1
    }
}

/// The export columns a list-view row is rewritten into, in this order.
const EXPORT_COLUMNS: [&str; 9] = [
    "Device Owner",
    "Device Model",
    "Issue Type",
    "Issue",
    "Classifications",
    "Status",
    "Risk",
    "Date Detected",
    "Date Resolved",
];

/// Parses list-view text. `name` is only used in messages.
pub(super) fn parse(text: &str, name: &str, zone: Tz) -> Result<ParsedExport, ParseError> {
    let mut lines = text.lines().enumerate();
    let header = lines
        .by_ref()
        .find(|(_, l)| !l.trim().is_empty())
        .and_then(|(_, l)| ListColumns::from_header(l))
        .ok_or_else(|| ParseError::NoHeader {
            name: name.into(),
            expected: "'STATUS', 'ISSUE', 'DEVICE', 'DETECTED' (tab-separated)".into(),
            found: list_header_summary(text),
        })?;
    let map = HeaderMap::from_headers(EXPORT_COLUMNS)
        .expect("the export columns map themselves")
        .in_zone(zone);

    let mut export = ParsedExport {
        format: Some(ExportFormat::ListView),
        ..ParsedExport::default()
    };
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let row = index + 1;
        export.total_rows += 1;
        match list_row(line, row, &header, &map) {
            Ok(finding) => export.findings.push(finding),
            Err(rejected) => export.rejected.push(rejected),
        }
    }
    Ok(export)
}

/// Turns one list-view line into a finding.
fn list_row(
    line: &str,
    row: usize,
    cols: &ListColumns,
    map: &HeaderMap,
) -> Result<super::Finding, RejectedRow> {
    let cells: Vec<&str> = line.split('\t').map(str::trim).collect();
    if cells.len() < cols.required_width() {
        return Err(RejectedRow {
            row,
            field: "row".into(),
            reason: format!(
                "too few fields: {} found, at least {} expected",
                cells.len(),
                cols.required_width()
            ),
        });
    }
    let device = cells[cols.device];
    let Some((owner, model)) = split_device(device) else {
        return Err(RejectedRow {
            row,
            field: DEVICE.into(),
            reason: format!("no owner e-mail in '{device}'"),
        });
    };
    let status_cell = cells[cols.status];
    let issue = split_issue(cells[cols.issue]);
    let resolved = cols
        .resolved
        .and_then(|i| cells.get(i))
        .copied()
        .unwrap_or("");
    let rewritten: [&str; 9] = [
        owner,
        model,
        issue.issue_type,
        issue.issue,
        issue.classification,
        status_of(status_cell),
        status_cell,
        cells[cols.detected],
        resolved,
    ];
    map.finding(row, rewritten.len(), |i| rewritten[i])
        .map_err(|mut rejected| {
            // Name the column as the list view titles it.
            rejected.field = match rejected.field.as_str() {
                "Device Owner" => DEVICE.into(),
                "Date Detected" => DETECTED.into(),
                "Issue" => ISSUE.into(),
                "Status" => STATUS.into(),
                _ => rejected.field,
            };
            rejected
        })
}

/// `GM6567@engie.com SM-X205` → (`GM6567@engie.com`, `SM-X205`): the first word holding
/// an `@` is the owner, the rest of the cell is the model.
fn split_device(cell: &str) -> Option<(&str, &str)> {
    let owner = cell.split_whitespace().find(|w| w.contains('@'))?;
    let start = cell.find(owner)?;
    let before = cell[..start].trim();
    let after = cell[start + owner.len()..].trim();
    // The model normally follows the owner; text before it is kept if that is all there is.
    let model = if after.is_empty() { before } else { after };
    Some((owner, model))
}

/// `Active Low Risk` → `Active`: the status without the trailing risk words.
fn status_of(cell: &str) -> &str {
    const RISK_WORDS: [&str; 6] = ["low", "moderate", "medium", "high", "critical", "risk"];
    let mut rest = cell.trim();
    while let Some((head, last)) = rest.rsplit_once(char::is_whitespace) {
        if RISK_WORDS.iter().any(|w| last.eq_ignore_ascii_case(w)) {
            rest = head.trim_end();
        } else {
            break;
        }
    }
    rest
}

/// An `ISSUE` cell split into the export's fields.
#[derive(Debug, PartialEq, Eq)]
struct IssueParts<'a> {
    issue_type: &'a str,
    issue: &'a str,
    classification: &'a str,
}

/// `Chrome Vulnerability` → Application / Chrome / Vulnerability;
/// `Operating System Version OS Out-Of-Date` → Configuration / Operating System Version /
/// OS Out-Of-Date. Unknown text is kept whole as the issue, with no classification, so
/// the policy finds it not remindable rather than guessing.
fn split_issue(cell: &str) -> IssueParts<'_> {
    let text = cell.trim();
    for (suffix, classification, issue_type, default_issue) in ISSUE_SUFFIXES {
        let Some(split) = text.len().checked_sub(suffix.len()) else {
            continue;
        };
        if !text.is_char_boundary(split) || !text[split..].eq_ignore_ascii_case(suffix) {
            continue;
        }
        let head = text[..split].trim_end();
        // `Chrome Vulnerability` yes, `ChromeVulnerability` no: the suffix is a whole word.
        if !head.is_empty() && head.len() == split {
            continue;
        }
        let issue = if head.is_empty() { default_issue } else { head };
        if issue.is_empty() {
            continue;
        }
        return IssueParts {
            issue_type,
            issue,
            classification,
        };
    }
    IssueParts {
        issue_type: "",
        issue: text,
        classification: "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IssueKind, Platform, Risk};
    use crate::policy::{evaluate, NotRemindable, Rules};
    use chrono::NaiveDate;

    /// The format's parser with zone-less times as UTC, as these tests were written.
    fn parse(text: &str, name: &str) -> Result<ParsedExport, ParseError> {
        super::parse(text, name, Tz::UTC)
    }

    const HEADER: &str = "STATUS\tISSUE\tDEVICE\tDETECTED\tRESOLVED\tDWELL TIME";

    fn one(line: &str) -> ParsedExport {
        parse(&format!("{HEADER}\n{line}\n"), "list.tsv").unwrap()
    }

    fn kind_of(issue: &str) -> Result<IssueKind, NotRemindable> {
        let p = one(&format!(
            "Active Low Risk\t{issue}\tGM6567@engie.com SM-X205\tMar 4, 2024 2:52 PM\t-\t3 days"
        ));
        let as_of = NaiveDate::from_ymd_opt(2024, 3, 7).unwrap();
        evaluate(&p.findings[0], as_of, &Rules::default()).map(|r| r.kind)
    }

    #[test]
    fn the_list_view_header_is_recognised_in_any_case_and_order() {
        assert!(looks_like_list_view(&format!("\n{HEADER}\nx")));
        assert!(looks_like_list_view("device\tdetected\tstatus\tissue"));
        assert!(!looks_like_list_view("STATUS,ISSUE,DEVICE,DETECTED"));
        assert!(!looks_like_list_view(
            "Device Owner\tIssue\tStatus\tDate Detected"
        ));
        assert!(!looks_like_list_view(""));
    }

    #[test]
    fn a_list_view_row_gives_owner_model_status_risk_and_dates() {
        let p = one("Active Low Risk\tChrome Vulnerability\tGM6567@engie.com SM-X205\tMar 4, 2024 2:52 PM\t-\t3 days");
        assert_eq!(p.format, Some(ExportFormat::ListView));
        assert_eq!(p.total_rows, 1);
        let f = &p.findings[0];
        assert_eq!(f.row, 2);
        assert_eq!(f.owner.as_str(), "gm6567@engie.com");
        assert_eq!(f.device_model, "SM-X205");
        assert_eq!(f.platform, Platform::Android);
        assert_eq!(f.status, "Active");
        assert_eq!(f.risk, Risk::Low);
        assert_eq!(f.issue_type, "Application");
        assert_eq!(f.issue, "Chrome");
        assert_eq!(f.classifications, "Vulnerability");
        assert_eq!(f.detected.to_rfc3339(), "2024-03-04T14:52:00+00:00");
        assert_eq!(f.resolved, None);
        assert_eq!(f.lookout_id, None);
    }

    #[test]
    fn a_model_with_spaces_stays_whole_and_gives_the_platform() {
        let p = one("Active Low Risk\tOperating System Version OS Out-Of-Date\tIU1136@engie.com iPad Air 2\tJan 22, 2024 7:58 PM\t-\ta month");
        let f = &p.findings[0];
        assert_eq!(f.device_model, "iPad Air 2");
        assert_eq!(f.platform, Platform::Ios);
        assert_eq!(f.issue, "Operating System Version");
        assert_eq!(f.classifications, "OS Out-Of-Date");
        assert_eq!(f.issue_type, "Configuration");
    }

    #[test]
    fn columns_are_found_by_name_in_any_order() {
        let text = "DEVICE\tDETECTED\tISSUE\tSTATUS\nGM6567@engie.com SM-X205\tMar 4, 2024 2:52 PM\tEdge Vulnerability\tActive High Risk\n";
        let p = parse(text, "list.tsv").unwrap();
        let f = &p.findings[0];
        assert_eq!(f.issue, "Edge");
        assert_eq!(f.risk, Risk::High);
        assert_eq!(f.status, "Active");
    }

    #[test]
    fn a_resolved_date_is_read_and_a_dash_means_none() {
        let p = one("Resolved Moderate Risk\tAgent Outdated\tA@engie.com SM-G970F\tMar 1, 2024 9:00 AM\tMar 5, 2024 10:30 AM\t4 days");
        let f = &p.findings[0];
        assert_eq!(f.status, "Resolved");
        assert_eq!(f.risk, Risk::Moderate);
        assert_eq!(
            f.resolved.unwrap().to_rfc3339(),
            "2024-03-05T10:30:00+00:00"
        );
    }

    #[test]
    fn issue_cells_split_into_issue_type_issue_and_classification() {
        let parts = |c| {
            let p = split_issue(c);
            (p.issue_type, p.issue, p.classification)
        };
        assert_eq!(
            parts("Chrome Vulnerability"),
            ("Application", "Chrome", "Vulnerability")
        );
        assert_eq!(
            parts("Operating System Version OS Out-Of-Date"),
            (
                "Configuration",
                "Operating System Version",
                "OS Out-Of-Date"
            )
        );
        assert_eq!(
            parts("Agent Outdated"),
            ("Configuration", "Agent", "Outdated")
        );
        assert_eq!(
            parts("Out of Date ASPL"),
            ("Configuration", "Out of Date", "ASPL")
        );
        assert_eq!(parts("ASPL"), ("Configuration", "Out of Date", "ASPL"));
        assert_eq!(parts("Man-In-The-Middle"), ("", "Man-In-The-Middle", ""));
        assert_eq!(parts("Vulnerability"), ("", "Vulnerability", ""));
    }

    #[test]
    fn the_default_policy_classifies_every_list_view_issue_kind() {
        assert_eq!(
            kind_of("Chrome Vulnerability"),
            Ok(IssueKind::VulnerableApp)
        );
        assert_eq!(kind_of("Edge Vulnerability"), Ok(IssueKind::VulnerableApp));
        assert_eq!(
            kind_of("Operating System Version OS Out-Of-Date"),
            Ok(IssueKind::OsOutOfDate)
        );
        assert_eq!(
            kind_of("Out of Date ASPL"),
            Ok(IssueKind::SecurityPatchOutOfDate)
        );
        assert_eq!(kind_of("Agent Outdated"), Ok(IssueKind::AgentOutOfDate));
        assert_eq!(
            kind_of("Man-In-The-Middle"),
            Err(NotRemindable::NotAnUpdateIssue)
        );
    }

    #[test]
    fn the_app_name_of_a_list_view_app_issue_is_the_app() {
        let p = one("Active Low Risk\tChrome Vulnerability\tGM6567@engie.com SM-X205\tMar 4, 2024 2:52 PM\t-\t3 days");
        let as_of = NaiveDate::from_ymd_opt(2024, 3, 7).unwrap();
        let r = evaluate(&p.findings[0], as_of, &Rules::default()).unwrap();
        assert_eq!(r.app_name, Some("Chrome"));
    }

    #[test]
    fn status_loses_its_trailing_risk_words() {
        assert_eq!(status_of("Active Low Risk"), "Active");
        assert_eq!(status_of("Active"), "Active");
        assert_eq!(status_of("Resolved High Risk"), "Resolved");
        assert_eq!(status_of("Open Medium"), "Open");
    }

    #[test]
    fn the_device_cell_splits_into_owner_and_model() {
        assert_eq!(
            split_device("GM6567@engie.com SM-X205"),
            Some(("GM6567@engie.com", "SM-X205"))
        );
        assert_eq!(
            split_device("a@b.com  iPhone SE (2nd generation)"),
            Some(("a@b.com", "iPhone SE (2nd generation)"))
        );
        assert_eq!(split_device("a@b.com"), Some(("a@b.com", "")));
        assert_eq!(split_device("SM-X205"), None);
    }

    #[test]
    fn a_row_with_too_few_fields_is_rejected_with_its_row_number() {
        let text = format!("{HEADER}\nActive Low Risk\tChrome Vulnerability\n\nActive Low Risk\tAgent Outdated\tA@engie.com SM-G970F\tMar 1, 2024 9:00 AM\t-\t6 days\n");
        let p = parse(&text, "list.tsv").unwrap();
        assert_eq!(p.total_rows, 2);
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.findings[0].row, 4);
        assert_eq!(p.rejected[0].row, 2);
        assert_eq!(p.rejected[0].field, "row");
        assert!(p.rejected[0].reason.contains("too few fields"));
    }

    #[test]
    fn a_device_without_owner_and_a_bad_date_are_rejected_naming_the_list_column() {
        let text = format!("{HEADER}\nActive Low Risk\tAgent Outdated\tSM-G970F\tMar 1, 2024 9:00 AM\t-\t6 days\nActive Low Risk\tAgent Outdated\tA@engie.com SM-G970F\tyesterday\t-\t6 days\n");
        let p = parse(&text, "list.tsv").unwrap();
        assert!(p.findings.is_empty());
        assert_eq!(p.rejected[0].field, "DEVICE");
        assert_eq!(p.rejected[0].reason, "no owner e-mail in 'SM-G970F'");
        assert_eq!(p.rejected[1].row, 3);
        assert_eq!(p.rejected[1].field, "DETECTED");
        assert_eq!(p.rejected[1].reason, "not a date: 'yesterday'");
    }
}
