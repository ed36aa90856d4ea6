//! Parse: a Lookout export (CSV, Excel workbook or console list view) into [`Finding`]s.
//!
//! The format is detected from the content, never from the file name. Parsers take bytes
//! and a display name (for error messages), never a path. A row that cannot be used is
//! rejected with its row number, field and reason while the other rows go on; a file that
//! is not an export at all is a [`ParseError`].

mod columns;
mod csv;
mod dates;
mod list_view;
mod xlsx;

pub use columns::{Column, HeaderMap};
pub use dates::{parse_date, parse_date_in};

use crate::domain::{OwnerEmail, Platform, Risk, Text};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// One issue row of an export, validated. Its texts are shared with the export's other rows
/// holding the same value (see [`Text`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Where the row starts in the source: the 1-based line (CSV, list view) or sheet row
    /// (Excel), the header being line/row 1 in a plain export.
    pub row: usize,
    /// Device owner.
    pub owner: OwnerEmail,
    /// Lookout's device id (one per device, shared by that device's issues).
    pub lookout_id: Option<Text>,
    /// MDM device id.
    pub mdm_device_id: Option<Text>,
    /// Device model as exported (`SM-A528B`, `iPhone 7`), verbatim.
    pub device_model: Text,
    /// Operating system family.
    pub platform: Platform,
    /// `Issue Type` (`Application`, `Configuration`, `Network`…), verbatim.
    pub issue_type: Text,
    /// `Issue` (`Chrome(com.android.chrome)`, `Operating System Version`…), verbatim.
    pub issue: Text,
    /// `Classifications` (`Vulnerability`, `OS Out-Of-Date`, `ASPL`…), verbatim.
    pub classifications: Text,
    /// `Status` (`Active`, `Resolved`…), verbatim.
    pub status: Text,
    /// Risk level.
    pub risk: Risk,
    /// When Lookout detected the issue.
    pub detected: DateTime<Utc>,
    /// When it was resolved, if it was.
    pub resolved: Option<DateTime<Utc>>,
}

/// The export formats understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Lookout console "Export N items" CSV (`,` or `;`, UTF-8 or Windows-1252).
    Csv,
    /// The same columns in an Excel workbook (a table, or the first matching sheet).
    Xlsx,
    /// The console's list view copied from the browser (tab-separated).
    ListView,
}

impl ExportFormat {
    /// The report name (`csv`, `xlsx`, `list_view`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Xlsx => "xlsx",
            ExportFormat::ListView => "list_view",
        }
    }
}

/// A row that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// Row number as in [`Finding::row`].
    pub row: usize,
    /// The column at fault (`Device Owner`, `Date Detected`…), or `row` for the whole row.
    pub field: String,
    /// What is wrong, quoting the value.
    pub reason: String,
}

impl std::fmt::Display for RejectedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "row {}: column '{}': {}",
            self.row, self.field, self.reason
        )
    }
}

/// A parsed export: the good rows and the rejected ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedExport {
    /// Detected format (`None` only for the empty default).
    pub format: Option<ExportFormat>,
    /// Data rows seen (header excluded, blank lines excluded), rejected ones included.
    pub total_rows: usize,
    /// Usable rows.
    pub findings: Vec<Finding>,
    /// Unusable rows with their reasons.
    pub rejected: Vec<RejectedRow>,
    /// Non-fatal remarks about the file (which sheet/table was used, encoding…).
    pub notes: Vec<String>,
}

/// The file is not a usable export. Nothing may be sent from it.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Zero bytes or only whitespace.
    #[error(
        "{name}: the file is empty; expected a Lookout issues export (CSV, XLSX or list view)"
    )]
    Empty {
        /// Display name of the file.
        name: String,
    },
    /// Recognisably something else (PDF, image, other zip…).
    #[error("{name}: {what}; expected a Lookout issues export (CSV, XLSX or list view)")]
    NotAnExport {
        /// Display name of the file.
        name: String,
        /// What it looks like instead.
        what: String,
    },
    /// A workbook that cannot be read.
    #[error("{name}: unreadable Excel workbook: {detail}")]
    BadWorkbook {
        /// Display name of the file.
        name: String,
        /// The reader's message.
        detail: String,
    },
    /// No header row with the required columns.
    #[error("{name}: no header row with the columns {expected}; found {found}")]
    NoHeader {
        /// Display name of the file.
        name: String,
        /// The required columns.
        expected: String,
        /// What the first line / sheets held instead (shortened).
        found: String,
    },
    /// Every data row was rejected: using it would send nothing and mark every open issue
    /// resolved, so the run refuses it instead.
    #[error("{name}: all {rows} data rows were rejected (first: {first}; see the rejected rows)")]
    AllRowsRejected {
        /// Display name of the file.
        name: String,
        /// Data rows.
        rows: usize,
        /// The first rejection.
        first: String,
    },
    /// A header and no data: a live run would record every open issue as resolved.
    #[error(
        "{name}: the export has no data rows; if there really is no open issue, force the run"
    )]
    NoDataRows {
        /// Display name of the file.
        name: String,
    },
    /// Broken CSV structure that the reader cannot get past.
    #[error("{name}: line {line}: {detail}")]
    Malformed {
        /// Display name of the file.
        name: String,
        /// Line where reading stopped.
        line: usize,
        /// The reader's message.
        detail: String,
    },
}

/// [`parse_export_in`] with zone-less times read as UTC (for tools and tests; a run reads
/// them in `REMINDERS_TIME_ZONE`).
pub fn parse_export(bytes: &[u8], name: &str) -> Result<ParsedExport, ParseError> {
    parse_export_in(bytes, name, Tz::UTC)
}

/// Parses an export of any supported format, detected from its content. Times without a
/// zone (the console's list view, Excel date cells, `04/03/2024 14:52`) are wall times in
/// `zone`; times with a zone or a `Z` keep it.
///
/// `name` is only used in messages.
pub fn parse_export_in(bytes: &[u8], name: &str, zone: Tz) -> Result<ParsedExport, ParseError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Empty { name: name.into() });
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return xlsx::parse(bytes, name, zone);
    }
    if let Some(what) = sniff_foreign(bytes) {
        return Err(ParseError::NotAnExport {
            name: name.into(),
            what: what.into(),
        });
    }
    let text = decode_text(bytes);
    if list_view::looks_like_list_view(&text) {
        return list_view::parse(&text, name, zone);
    }
    csv::parse(&text, name, zone)
}

/// Recognises common non-export files by their magic bytes.
fn sniff_foreign(bytes: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 8] = [
        (b"%PDF", "this is a PDF document"),
        (b"\x89PNG", "this is a PNG image"),
        (b"\xFF\xD8\xFF", "this is a JPEG image"),
        (b"GIF8", "this is a GIF image"),
        (
            b"\xD0\xCF\x11\xE0",
            "this is a legacy Office file (.xls/.doc); save it as .xlsx or CSV",
        ),
        (b"\x1F\x8B", "this is a gzip archive"),
        (b"{\\rtf", "this is an RTF document"),
        (b"<?xml", "this is an XML document"),
    ];
    if let Some((_, what)) = MAGIC.iter().find(|(m, _)| bytes.starts_with(m)) {
        return Some(what);
    }
    let head = &bytes[..bytes.len().min(512)];
    let lower = String::from_utf8_lossy(head).to_lowercase();
    if lower.trim_start().starts_with("<!doctype html") || lower.trim_start().starts_with("<html") {
        return Some("this is an HTML page (a sign-in page or an error page?)");
    }
    if head.contains(&0) && !head.starts_with(b"\xFF\xFE") && !head.starts_with(b"\xFE\xFF") {
        return Some("this is a binary file");
    }
    None
}

/// Decodes text: UTF-8 (BOM stripped), UTF-16 with BOM, else Windows-1252 (what a French
/// Excel "save as CSV" writes). UTF-8 is borrowed, not copied: exports can be large.
pub(crate) fn decode_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return String::from_utf8_lossy(rest);
    }
    if bytes.starts_with(b"\xFF\xFE") {
        return encoding_rs::UTF_16LE.decode(bytes).0;
    }
    if bytes.starts_with(b"\xFE\xFF") {
        return encoding_rs::UTF_16BE.decode(bytes).0;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0,
    }
}
