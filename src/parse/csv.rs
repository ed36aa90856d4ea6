//! The Lookout console's CSV export: header found among the first lines, `,` `;` or tab
//! detected from it, quoted fields, CRLF or LF, rows turned into findings one by one.

use super::{
    columns::{HeaderMap, RowTexts},
    ExportFormat, ParseError, ParsedExport,
};
use chrono_tz::Tz;

/// How many lines may precede the header (an "Export 27 items" title, a `sep=;` hint…).
const HEADER_SEARCH_LINES: usize = 20;

/// Parses CSV text (already decoded to UTF-8). `name` is only used in messages.
pub(super) fn parse(text: &str, name: &str, zone: Tz) -> Result<ParsedExport, ParseError> {
    let mut header = find_header(text).ok_or_else(|| ParseError::NoHeader {
        name: name.into(),
        expected: HeaderMap::expected(),
        found: header_search_summary(text),
    })?;
    header.map = std::mem::take(&mut header.map).in_zone(zone);

    let mut export = ParsedExport {
        format: Some(ExportFormat::Csv),
        ..ParsedExport::default()
    };
    if header.line > 1 {
        export.notes.push(format!(
            "header found on line {}; the lines above it were skipped",
            header.line
        ));
    }
    if header.delimiter != b',' {
        export.notes.push(format!(
            "fields separated by {}",
            match header.delimiter {
                b';' => "';'",
                b'\t' => "tabs",
                _ => "an unusual character",
            }
        ));
    }

    let body = &text[header.offset..];
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(header.delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(body.as_bytes());
    // The reader's own line count is off by one after CRLF and blank lines, so rows are
    // numbered from the record's byte offset instead: newlines before it, plus the header.
    let mut lines = LineCounter::new(body, header.line);

    let mut record = csv::StringRecord::new();
    let mut texts = RowTexts::default();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) => {
                let line = err
                    .position()
                    .map(|p| lines.line_at(p.byte() as usize))
                    .unwrap_or(header.line);
                return Err(ParseError::Malformed {
                    name: name.into(),
                    line,
                    detail: err.to_string(),
                });
            }
        }
        // A line of only spaces or delimiters is a blank line, not a row.
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let row = record
            .position()
            .map(|p| lines.line_at(p.byte() as usize))
            .unwrap_or(0);
        if swallowed_rows(&record, header.delimiter, header.map.required_width()) {
            // An opening quote that is never closed makes the reader take the rest of the
            // file as one field: the rows after it would silently vanish (and their issues
            // be recorded as resolved), so the file is refused instead.
            return Err(ParseError::Malformed {
                name: name.into(),
                line: row,
                detail: "a quoted field is never closed: the lines after it were read as part of this field".into(),
            });
        }
        export.total_rows += 1;
        match header.map.finding_in(&mut texts, row, record.len(), |i| {
            record.get(i).unwrap_or("")
        }) {
            Ok(finding) => export.findings.push(finding),
            Err(rejected) => export.rejected.push(rejected),
        }
    }
    Ok(export)
}

/// Whether a field holds whole rows: a line break followed by a line with as many
/// separators as a row needs — the mark of an unclosed quote, not of a multi-line cell.
fn swallowed_rows(record: &csv::StringRecord, delimiter: u8, required_width: usize) -> bool {
    let needed = required_width.saturating_sub(1).max(2);
    record.iter().any(|field| {
        field.contains('\n')
            && field
                .lines()
                .skip(1)
                .any(|line| line.bytes().filter(|b| *b == delimiter).count() >= needed)
    })
}

/// Turns byte offsets of record starts (increasing) into 1-based file lines, counting
/// newlines incrementally so the whole file is scanned once.
struct LineCounter<'a> {
    text: &'a [u8],
    offset: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(body: &'a str, first_line: usize) -> Self {
        Self {
            text: body.as_bytes(),
            offset: 0,
            line: first_line,
        }
    }

    fn line_at(&mut self, offset: usize) -> usize {
        // A record's offset may point at the line end left over from the previous record
        // or at blank lines: the record starts after them.
        let mut start = offset.min(self.text.len());
        while start < self.text.len() && matches!(self.text[start], b'\r' | b'\n') {
            start += 1;
        }
        if start >= self.offset {
            self.line += self.text[self.offset..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            self.offset = start;
        }
        self.line
    }
}

/// The header row: where it is and how its fields are separated.
struct Header {
    /// 1-based line number.
    line: usize,
    /// Byte offset of the line in the text.
    offset: usize,
    delimiter: u8,
    map: HeaderMap,
}

/// Looks for the header among the first lines, trying the delimiter each line suggests.
fn find_header(text: &str) -> Option<Header> {
    let mut offset = 0;
    for (index, raw_line) in text
        .split_inclusive('\n')
        .take(HEADER_SEARCH_LINES)
        .enumerate()
    {
        let line = raw_line.trim_end_matches(['\r', '\n']);
        let line_offset = offset;
        offset += raw_line.len();
        if line.trim().is_empty() {
            continue;
        }
        let delimiter = detect_delimiter(line);
        let cells = split_line(line, delimiter);
        if let Ok(map) = HeaderMap::from_headers(cells.iter().map(String::as_str)) {
            return Some(Header {
                line: index + 1,
                offset: line_offset,
                delimiter,
                map,
            });
        }
    }
    None
}

/// The most frequent of `,` `;` and tab outside quotes; `,` when there is none.
fn detect_delimiter(line: &str) -> u8 {
    let (mut commas, mut semicolons, mut tabs) = (0usize, 0usize, 0usize);
    let mut quoted = false;
    for b in line.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semicolons += 1,
            b'\t' if !quoted => tabs += 1,
            _ => {}
        }
    }
    if semicolons > commas && semicolons >= tabs {
        b';'
    } else if tabs > commas && tabs > semicolons {
        b'\t'
    } else {
        b','
    }
}

/// Splits one header line with the CSV reader itself, so quoting rules are the same.
fn split_line(line: &str, delimiter: u8) -> Vec<String> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => record.iter().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// Describes the header candidate nearest to an export's (the line of the search window
/// with the most known columns, else the first non-blank one) by column names only.
fn header_search_summary(text: &str) -> String {
    let mut best: Option<(usize, usize, Vec<String>)> = None;
    for (index, line) in text.lines().take(HEADER_SEARCH_LINES).enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells = split_line(line, detect_delimiter(line));
        let known = cells
            .iter()
            .filter(|c| super::columns::Column::from_header(c).is_some())
            .count();
        if best.as_ref().is_none_or(|(k, _, _)| known > *k) {
            best = Some((known, index + 1, cells));
        }
    }
    match best {
        None => "no text".into(),
        Some((_, line, cells)) => format!(
            "line {line} has {}",
            HeaderMap::describe_cells(cells.iter().map(String::as_str))
        ),
    }
}

#[cfg(test)]
mod unclosed_quote_tests {
    use super::tests::parse;

    const HEADER: &str = "Device Owner,Lookout ID,Device Model,Issue,Status,Date Detected\n";

    #[test]
    fn an_unclosed_quote_is_refused_naming_the_line() {
        let text = format!(
            "{HEADER}a@x.com,1,\"Galaxy,Agent,Active,2024-01-01\nb@x.com,2,SM-A1,Agent,Active,2024-01-02\nc@x.com,3,SM-A2,Agent,Active,2024-01-03\n"
        );
        let err = parse(&text, "broken.csv").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("broken.csv: line 2:"), "{msg}");
        assert!(msg.contains("never closed"), "{msg}");
    }

    #[test]
    fn a_quoted_cell_with_a_line_break_is_still_fine() {
        let text = format!(
            "{HEADER}a@x.com,1,\"Galaxy\nTab S8\",Agent,Active,2024-01-01\nb@x.com,2,SM-A1,Agent,Active,2024-01-02\n"
        );
        let parsed = parse(&text, "ok.csv").unwrap();
        assert_eq!(parsed.findings.len(), 2);
        assert_eq!(parsed.findings[0].device_model, "Galaxy\nTab S8");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Platform, Risk};

    /// The format's parser with zone-less times as UTC, as these tests were written.
    pub(super) fn parse(text: &str, name: &str) -> Result<ParsedExport, ParseError> {
        super::parse(text, name, Tz::UTC)
    }

    const HEADER: &str = "Device Owner,Lookout ID,MDM Device ID,Profile,Device Model,Device Platform,Issue Type,Issue,Classifications,Status,Risk,Date Detected,Date Resolved,Resolution Time,Details";
    const ROW: &str = "JM6453@engie.com,c4b6f57b,f1c13b6f,Work,SM-A326B,Android,Application,Chrome(com.android.chrome),Vulnerability,Active,Moderate,2023-11-28T14:38:56Z,,,";

    fn parse_ok(text: &str) -> ParsedExport {
        parse(text, "issues.csv").unwrap()
    }

    #[test]
    fn rows_sharing_a_value_share_one_copy_and_each_bad_owner_is_named_on_its_own_row() {
        let other = ROW
            .replace("JM6453@engie.com", " jm6453@ENGIE.com ")
            .replace("c4b6f57b", "d5c7a68c");
        let bad = ROW.replace("JM6453@engie.com", "not-an-address");
        let p = parse_ok(&format!("{HEADER}\n{ROW}\n{other}\n{bad}\n{ROW}\n{bad}\n"));
        assert_eq!(p.findings.len(), 3);
        let (a, b, same) = (&p.findings[0], &p.findings[1], &p.findings[2]);
        // Two spellings of one address are one owner; a spelling seen again is the same copy,
        // and so are the values the rows share.
        assert_eq!(a.owner, b.owner);
        assert_eq!(a.owner.as_str(), "jm6453@engie.com");
        assert!(std::ptr::eq(a.owner.as_str(), same.owner.as_str()));
        assert!(std::ptr::eq(
            a.device_model.as_str(),
            b.device_model.as_str()
        ));
        assert!(std::ptr::eq(a.issue.as_str(), b.issue.as_str()));
        assert!(std::ptr::eq(a.status.as_str(), b.status.as_str()));
        assert_eq!(a.lookout_id.as_deref(), Some("c4b6f57b"));
        assert_eq!(b.lookout_id.as_deref(), Some("d5c7a68c"));
        // The owner cell is parsed once, yet every bad row is rejected with its own number.
        let rows: Vec<(usize, &str)> = p
            .rejected
            .iter()
            .map(|r| (r.row, r.field.as_str()))
            .collect();
        assert_eq!(rows, vec![(4, "Device Owner"), (6, "Device Owner")]);
        assert_eq!(p.rejected[0].reason, p.rejected[1].reason);
        assert!(p.rejected[0].reason.contains("not-an-address"));
    }

    #[test]
    fn a_comma_separated_export_gives_one_finding_per_row() {
        let p = parse_ok(&format!("{HEADER}\n{ROW}\n"));
        assert_eq!(p.format, Some(ExportFormat::Csv));
        assert_eq!(p.total_rows, 1);
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        let f = &p.findings[0];
        assert_eq!(f.row, 2);
        assert_eq!(f.owner.as_str(), "jm6453@engie.com");
        assert_eq!(f.lookout_id.as_deref(), Some("c4b6f57b"));
        assert_eq!(f.device_model, "SM-A326B");
        assert_eq!(f.platform, Platform::Android);
        assert_eq!(f.issue_type, "Application");
        assert_eq!(f.issue, "Chrome(com.android.chrome)");
        assert_eq!(f.classifications, "Vulnerability");
        assert_eq!(f.status, "Active");
        assert_eq!(f.risk, Risk::Moderate);
        assert_eq!(f.detected.to_rfc3339(), "2023-11-28T14:38:56+00:00");
        assert_eq!(f.resolved, None);
    }

    #[test]
    fn semicolons_are_detected_as_the_delimiter() {
        let text = format!("{}\n{}\n", HEADER.replace(',', ";"), ROW.replace(',', ";"));
        let p = parse_ok(&text);
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.findings[0].issue, "Chrome(com.android.chrome)");
        assert!(p.notes.iter().any(|n| n.contains("';'")), "{:?}", p.notes);
    }

    #[test]
    fn tabs_are_detected_as_the_delimiter() {
        let text = format!(
            "{}\n{}\n",
            HEADER.replace(',', "\t"),
            ROW.replace(',', "\t")
        );
        assert_eq!(parse_ok(&text).findings.len(), 1);
    }

    #[test]
    fn commas_inside_quotes_do_not_decide_the_delimiter() {
        assert_eq!(detect_delimiter("\"a,b,c,d\";x;y"), b';');
        assert_eq!(detect_delimiter("\"a;b;c;d\",x,y"), b',');
        assert_eq!(detect_delimiter("no delimiter"), b',');
    }

    #[test]
    fn headers_match_in_any_order_and_case_with_extra_columns_ignored() {
        let text = "STATUS,extra,date detected,ISSUE,device owner\nActive,zzz,2024-01-02T03:04:05Z,Agent,a@b.com\n";
        let p = parse_ok(text);
        assert_eq!(p.findings.len(), 1);
        let f = &p.findings[0];
        assert_eq!(f.status, "Active");
        assert_eq!(f.issue, "Agent");
        assert_eq!(f.owner.as_str(), "a@b.com");
        assert_eq!(f.device_model, "");
        assert_eq!(f.platform, Platform::Unknown);
    }

    #[test]
    fn crlf_and_lf_line_ends_give_the_same_findings() {
        let lf = parse_ok(&format!("{HEADER}\n{ROW}\n{ROW}\n"));
        let crlf = parse_ok(&format!("{HEADER}\r\n{ROW}\r\n{ROW}\r\n"));
        assert_eq!(lf, crlf);
        assert_eq!(crlf.findings[1].row, 3);
        assert_eq!(crlf.findings[1].classifications, "Vulnerability");
    }

    #[test]
    fn a_quoted_field_may_hold_the_delimiter_and_a_newline() {
        let row = ROW.replace("SM-A326B", "\"Galaxy, \"\"A32\"\"\nwork\"");
        let p = parse_ok(&format!("{HEADER}\r\n{row}\r\n{ROW}\r\n"));
        assert_eq!(p.findings.len(), 2);
        assert_eq!(p.findings[0].device_model, "Galaxy, \"A32\"\nwork");
        assert_eq!(p.findings[0].row, 2);
        // The second record starts on line 4: the first one spans lines 2 and 3.
        assert_eq!(p.findings[1].row, 4);
    }

    #[test]
    fn title_lines_before_the_header_are_skipped_and_rows_keep_file_line_numbers() {
        let p = parse_ok(&format!("Export 27 items\n{HEADER}\n{ROW}\n"));
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.findings[0].row, 3);
        assert!(
            p.notes.iter().any(|n| n.contains("line 2")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn blank_lines_are_skipped_and_not_counted() {
        let p = parse_ok(&format!("{HEADER}\n\n{ROW}\n   \n,,,\n{ROW}\n\n"));
        assert_eq!(p.total_rows, 2);
        assert_eq!(p.findings.len(), 2);
        assert_eq!(p.findings[0].row, 3);
        assert_eq!(p.findings[1].row, 6);
    }

    #[test]
    fn a_short_row_is_rejected_and_the_others_go_on() {
        let p = parse_ok(&format!("{HEADER}\nJM6453@engie.com,abc,def\n{ROW}\n"));
        assert_eq!(p.total_rows, 2);
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].row, 2);
        assert_eq!(p.rejected[0].field, "row");
        assert!(
            p.rejected[0].reason.contains("too few fields"),
            "{}",
            p.rejected[0].reason
        );
    }

    #[test]
    fn a_bad_date_and_a_missing_owner_are_rejected_with_their_row() {
        let bad_date = ROW.replace("2023-11-28T14:38:56Z", "31/02/2024");
        let no_owner = ROW.replace("JM6453@engie.com", "");
        let p = parse_ok(&format!("{HEADER}\n{ROW}\n{bad_date}\n{no_owner}\n"));
        assert_eq!(p.total_rows, 3);
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.rejected[0].row, 3);
        assert_eq!(p.rejected[0].field, "Date Detected");
        assert_eq!(p.rejected[0].reason, "not a date: '31/02/2024'");
        assert_eq!(p.rejected[1].row, 4);
        assert_eq!(p.rejected[1].field, "Device Owner");
    }

    #[test]
    fn text_without_a_header_is_an_error_naming_the_file_and_the_columns() {
        let err = parse("hello,world\n1,2\n", "notes.csv").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ParseError::NoHeader { .. }));
        assert!(msg.starts_with("notes.csv: "), "{msg}");
        assert!(msg.contains("'Device Owner'"), "{msg}");
        assert!(
            msg.contains("line 1 has 2 cells, none of them a known column"),
            "{msg}"
        );
        assert!(!msg.contains("hello"), "{msg}");
    }

    #[test]
    fn a_long_first_line_is_not_quoted_in_the_error() {
        let line = "x".repeat(500);
        let msg = parse(&line, "f.csv").unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
        assert!(!msg.contains("xxx"), "{msg}");
    }

    #[test]
    fn a_password_file_is_refused_naming_the_columns_without_quoting_it() {
        let text =
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
        let msg = parse(text, "passwd").unwrap_err().to_string();
        assert!(msg.starts_with("passwd: no header row"), "{msg}");
        assert!(
            msg.contains("'Device Owner', 'Issue', 'Status', 'Date Detected'"),
            "{msg}"
        );
        for secret in ["root", "daemon", "/bin/bash", ":x:"] {
            assert!(!msg.contains(secret), "{secret} leaked: {msg}");
        }
    }

    #[test]
    fn a_near_miss_header_names_the_known_and_missing_columns_but_no_other_cell() {
        let text = "Device Owner,Issue,api_key=s3cret\nbob@example.com,Outdated OS,1\n";
        let msg = parse(text, "f.csv").unwrap_err().to_string();
        assert!(
            msg.contains("line 1 has 3 cells, of which 'Device Owner', 'Issue' known; missing 'Status', 'Date Detected'"),
            "{msg}"
        );
        assert!(!msg.contains("s3cret") && !msg.contains("api_key"), "{msg}");
    }

    #[test]
    fn a_header_below_the_search_window_is_not_found() {
        let text = format!("{}{HEADER}\n{ROW}\n", "junk\n".repeat(HEADER_SEARCH_LINES));
        assert!(matches!(
            parse(&text, "f.csv"),
            Err(ParseError::NoHeader { .. })
        ));
    }

    #[test]
    fn a_utf8_byte_order_mark_does_not_hide_the_first_column() {
        let bytes = format!("\u{feff}{HEADER}\r\n{ROW}\r\n");
        let text = crate::parse::decode_text(bytes.as_bytes());
        let p = parse_ok(&text);
        assert_eq!(p.findings[0].owner.as_str(), "jm6453@engie.com");
    }

    #[test]
    fn a_windows_1252_export_with_semicolons_keeps_its_accents() {
        let mut bytes = HEADER.replace(',', ";").into_bytes();
        bytes.extend_from_slice(b"\r\n");
        bytes.extend(
            ROW.replace(',', ";")
                .replace("SM-A326B", "T\u{e9}l\u{e9}phone")
                .chars()
                .map(|c| if c == '\u{e9}' { 0xE9 } else { c as u8 }),
        );
        let text = crate::parse::decode_text(&bytes);
        let p = parse_ok(&text);
        assert_eq!(p.findings[0].device_model, "T\u{e9}l\u{e9}phone");
    }

    #[test]
    fn a_header_only_export_has_no_rows() {
        let p = parse_ok(&format!("{HEADER}\r\n"));
        assert_eq!(p.total_rows, 0);
        assert!(p.findings.is_empty());
    }
}
