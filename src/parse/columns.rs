//! The export's columns: matching header names and turning one row of cells into a
//! [`Finding`], shared by the CSV and Excel readers.

use super::{dates::parse_date_in, Finding, RejectedRow};
use crate::domain::{OwnerEmail, Platform, Risk, Text};
use chrono_tz::Tz;
use rustc_hash::{FxHashMap, FxHashSet};

/// The columns of a Lookout issues export that the product reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    /// `Device Owner` (required).
    DeviceOwner,
    /// `Lookout ID`.
    LookoutId,
    /// `MDM Device ID`.
    MdmDeviceId,
    /// `Device Model`.
    DeviceModel,
    /// `Device Platform`.
    DevicePlatform,
    /// `Issue Type`.
    IssueType,
    /// `Issue` (required).
    Issue,
    /// `Classifications`.
    Classifications,
    /// `Status` (required).
    Status,
    /// `Risk`.
    Risk,
    /// `Date Detected` (required).
    DateDetected,
    /// `Date Resolved`.
    DateResolved,
}

impl Column {
    /// Every column read, in the export's order (the order of the variants: `col as usize`
    /// indexes this array).
    pub const ALL: [Column; 12] = [
        Column::DeviceOwner,
        Column::LookoutId,
        Column::MdmDeviceId,
        Column::DeviceModel,
        Column::DevicePlatform,
        Column::IssueType,
        Column::Issue,
        Column::Classifications,
        Column::Status,
        Column::Risk,
        Column::DateDetected,
        Column::DateResolved,
    ];

    /// Columns without which a file is not an issues export.
    pub const REQUIRED: [Column; 4] = [
        Column::DeviceOwner,
        Column::Issue,
        Column::Status,
        Column::DateDetected,
    ];

    /// The header as Lookout writes it.
    pub fn title(self) -> &'static str {
        match self {
            Column::DeviceOwner => "Device Owner",
            Column::LookoutId => "Lookout ID",
            Column::MdmDeviceId => "MDM Device ID",
            Column::DeviceModel => "Device Model",
            Column::DevicePlatform => "Device Platform",
            Column::IssueType => "Issue Type",
            Column::Issue => "Issue",
            Column::Classifications => "Classifications",
            Column::Status => "Status",
            Column::Risk => "Risk",
            Column::DateDetected => "Date Detected",
            Column::DateResolved => "Date Resolved",
        }
    }

    /// Recognises a header cell: case-, space-, underscore- and BOM-insensitive.
    pub fn from_header(cell: &str) -> Option<Column> {
        let key = normalise_header(cell);
        Column::ALL
            .into_iter()
            .find(|c| normalise_header(c.title()) == key)
            .or(match key.as_str() {
                "owner" | "deviceowneremail" | "email" | "owneremail" => Some(Column::DeviceOwner),
                "platform" | "os" => Some(Column::DevicePlatform),
                "model" => Some(Column::DeviceModel),
                "classification" => Some(Column::Classifications),
                "detected" | "datedetectedutc" => Some(Column::DateDetected),
                "resolved" => Some(Column::DateResolved),
                _ => None,
            })
    }
}

fn normalise_header(cell: &str) -> String {
    cell.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The texts of an export's rows read so far: a value repeated on many rows (a model, an
/// issue, a status, a device id, an owner) is stored and validated once, and every finding
/// holding it shares that one copy. Lives as long as one parse.
#[derive(Default)]
pub(crate) struct RowTexts {
    texts: FxHashSet<Text>,
    /// Owner cells as written (trimmed), with what [`OwnerEmail::parse`] made of them.
    owners: FxHashMap<Text, Result<OwnerEmail, String>>,
}

impl RowTexts {
    /// The shared copy of `value`.
    fn text(&mut self, value: &str) -> Text {
        if let Some(text) = self.texts.get(value) {
            return text.clone();
        }
        let text = Text::from(value);
        self.texts.insert(text.clone());
        text
    }

    /// The owner written `raw`, parsed once per distinct spelling.
    fn owner(&mut self, raw: &str) -> Result<OwnerEmail, String> {
        if let Some(parsed) = self.owners.get(raw) {
            return parsed.clone();
        }
        let parsed = OwnerEmail::parse(raw);
        self.owners.insert(Text::from(raw), parsed.clone());
        parsed
    }
}

/// Where each known column sits in a header row. Unknown columns are ignored.
#[derive(Clone, Debug, Default)]
pub struct HeaderMap {
    positions: Vec<(Column, usize)>,
    /// `positions` by column (`Column as usize`), for the per-cell lookups of every row
    /// (`u32`: a header row never has 4 billion cells, and the map stays small).
    by_column: [Option<u32>; Column::ALL.len()],
    /// The zone of zone-less dates in the rows (UTC unless [`HeaderMap::in_zone`]).
    zone: Tz,
}

impl HeaderMap {
    /// Reads the rows' zone-less dates as wall times in `zone`.
    pub fn in_zone(mut self, zone: Tz) -> Self {
        self.zone = zone;
        self
    }

    /// Maps a header row; `Err` lists the required columns that are missing.
    pub fn from_headers<'a>(cells: impl IntoIterator<Item = &'a str>) -> Result<Self, Vec<Column>> {
        let mut positions = Vec::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if let Some(col) = Column::from_header(cell) {
                // The first occurrence wins if a column is repeated.
                if !positions.iter().any(|(c, _)| *c == col) {
                    positions.push((col, i));
                }
            }
        }
        let mut by_column = [None; Column::ALL.len()];
        for (col, i) in &positions {
            by_column[*col as usize] = u32::try_from(*i).ok();
        }
        let map = Self {
            positions,
            by_column,
            zone: Tz::UTC,
        };
        let missing: Vec<Column> = Column::REQUIRED
            .into_iter()
            .filter(|c| map.index(*c).is_none())
            .collect();
        if missing.is_empty() {
            Ok(map)
        } else {
            Err(missing)
        }
    }

    /// What a header candidate held, told in the project's own column names only: the
    /// file's cells are never quoted, so a wrong file (a password file, a key, a private
    /// spreadsheet) cannot leak its content into an error, a log or an HTTP answer.
    pub fn describe_cells<'a>(cells: impl IntoIterator<Item = &'a str>) -> String {
        let cells: Vec<&str> = cells.into_iter().filter(|c| !c.trim().is_empty()).collect();
        let mut recognised: Vec<Column> = Vec::new();
        for col in cells.iter().filter_map(|c| Column::from_header(c)) {
            if !recognised.contains(&col) {
                recognised.push(col);
            }
        }
        let titles = |cols: &[Column]| {
            cols.iter()
                .map(|c| format!("'{}'", c.title()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let count = match cells.len() {
            1 => "1 cell".to_string(),
            n => format!("{n} cells"),
        };
        if recognised.is_empty() {
            return format!("{count}, none of them a known column");
        }
        let missing: Vec<Column> = Column::REQUIRED
            .into_iter()
            .filter(|c| !recognised.contains(c))
            .collect();
        format!(
            "{count}, of which {} known; missing {}",
            titles(&recognised),
            titles(&missing)
        )
    }

    /// The required columns as a readable list, for error messages.
    pub fn expected() -> String {
        Column::REQUIRED
            .iter()
            .map(|c| format!("'{}'", c.title()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Index of a column in the row.
    pub fn index(&self, col: Column) -> Option<usize> {
        self.by_column[col as usize].map(|i| i as usize)
    }

    /// Number of cells a row needs to reach every mapped column.
    pub fn width(&self) -> usize {
        self.positions.iter().map(|(_, i)| i + 1).max().unwrap_or(0)
    }

    /// The highest index among the required columns, +1: a row shorter than this is
    /// rejected as "too few fields".
    pub fn required_width(&self) -> usize {
        Column::REQUIRED
            .iter()
            .filter_map(|c| self.index(*c))
            .map(|i| i + 1)
            .max()
            .unwrap_or(0)
    }

    /// Builds a finding from one data row. `cell(i)` returns the text of cell `i`.
    pub fn finding<'a>(
        &self,
        row: usize,
        cell_count: usize,
        cell: impl Fn(usize) -> &'a str,
    ) -> Result<Finding, RejectedRow> {
        self.finding_in(&mut RowTexts::default(), row, cell_count, cell)
    }

    /// [`HeaderMap::finding`] for one row of many: the texts come from (and go into)
    /// `texts`, so the rows of one export share their repeated values.
    pub(crate) fn finding_in<'a>(
        &self,
        texts: &mut RowTexts,
        row: usize,
        cell_count: usize,
        cell: impl Fn(usize) -> &'a str,
    ) -> Result<Finding, RejectedRow> {
        let reject = |col: Column, reason: String| RejectedRow {
            row,
            field: col.title().to_string(),
            reason,
        };
        let required_width = self.required_width();
        if cell_count < required_width {
            return Err(RejectedRow {
                row,
                field: "row".into(),
                reason: format!(
                    "too few fields: {cell_count} found, at least {required_width} expected"
                ),
            });
        }
        let get = |col: Column| -> &'a str {
            match self.index(col) {
                Some(i) if i < cell_count => trim_cell(cell(i)),
                _ => "",
            }
        };

        let owner_raw = get(Column::DeviceOwner);
        if owner_raw.is_empty() {
            return Err(reject(Column::DeviceOwner, "no owner e-mail".into()));
        }
        let owner = texts
            .owner(owner_raw)
            .map_err(|e| reject(Column::DeviceOwner, e))?;

        let detected_raw = get(Column::DateDetected);
        if detected_raw.is_empty() {
            return Err(reject(Column::DateDetected, "no date".into()));
        }
        let detected = parse_date_in(detected_raw, self.zone).ok_or_else(|| {
            reject(
                Column::DateDetected,
                format!("not a date: '{detected_raw}'"),
            )
        })?;
        // A bad resolution date does not make the row unusable: it is only informative.
        let resolved = parse_date_in(get(Column::DateResolved), self.zone);

        let device_model = get(Column::DeviceModel);
        let platform = match Platform::parse(get(Column::DevicePlatform)) {
            Platform::Unknown => Platform::infer_from_model(device_model),
            known => known,
        };
        let mut opt = |col: Column| -> Option<Text> {
            let v = get(col);
            (!v.is_empty()).then(|| texts.text(v))
        };
        let lookout_id = opt(Column::LookoutId);
        let mdm_device_id = opt(Column::MdmDeviceId);
        Ok(Finding {
            row,
            owner,
            lookout_id,
            mdm_device_id,
            device_model: texts.text(device_model),
            platform,
            issue_type: texts.text(get(Column::IssueType)),
            issue: texts.text(get(Column::Issue)),
            classifications: texts.text(get(Column::Classifications)),
            status: texts.text(get(Column::Status)),
            risk: Risk::parse(get(Column::Risk)),
            detected,
            resolved,
        })
    }
}

/// `cell.trim()`, with the usual cell (ASCII at both ends) trimmed byte-wise: every cell of
/// every row goes through here. The Unicode trim runs only when an end is not plain ASCII
/// (or is the vertical tab, the one ASCII space `trim_ascii` keeps).
fn trim_cell(cell: &str) -> &str {
    let trimmed = cell.trim_ascii();
    let plain = |b: &u8| b.is_ascii() && *b != 0x0B;
    match (trimmed.as_bytes().first(), trimmed.as_bytes().last()) {
        (Some(first), Some(last)) if !(plain(first) && plain(last)) => trimmed.trim(),
        _ => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_trimmed_exactly_as_str_trim_does() {
        let cells = [
            "",
            " ",
            "\t a b \r\n",
            "\u{a0}Chrome\u{a0}",
            " \u{2003}x\u{3000} ",
            "\u{b}agent\u{b}",
            "\u{c}x\u{1f}",
            "é ",
            " Ωmega\u{85}",
            "\u{200b}zero-width\u{200b}",
            "plain",
        ];
        for cell in cells {
            assert_eq!(trim_cell(cell), cell.trim(), "{cell:?}");
        }
    }

    #[test]
    fn headers_match_whatever_the_case_spacing_and_order() {
        let map = HeaderMap::from_headers([
            "date detected",
            "\u{feff}DEVICE OWNER",
            "Extra",
            "issue",
            " Status ",
        ])
        .unwrap();
        assert_eq!(map.index(Column::DateDetected), Some(0));
        assert_eq!(map.index(Column::DeviceOwner), Some(1));
        assert_eq!(map.index(Column::Issue), Some(3));
        assert_eq!(map.index(Column::Status), Some(4));
        assert_eq!(map.index(Column::Risk), None);
    }

    #[test]
    fn every_column_indexes_its_own_place_in_the_list_of_columns() {
        for (i, col) in Column::ALL.into_iter().enumerate() {
            assert_eq!(col as usize, i, "{col:?}");
        }
        let titles: Vec<&str> = Column::ALL.iter().rev().map(|c| c.title()).collect();
        let map = HeaderMap::from_headers(titles).unwrap();
        for (i, col) in Column::ALL.into_iter().rev().enumerate() {
            assert_eq!(map.index(col), Some(i), "{col:?}");
        }
    }

    #[test]
    fn a_header_without_the_owner_column_names_what_is_missing() {
        let missing = HeaderMap::from_headers(["Issue", "Status", "Date Detected"]).unwrap_err();
        assert_eq!(missing, vec![Column::DeviceOwner]);
    }

    #[test]
    fn a_row_with_a_bad_date_is_rejected_naming_the_column_and_value() {
        let map =
            HeaderMap::from_headers(["Device Owner", "Issue", "Status", "Date Detected"]).unwrap();
        let cells = ["a@b.com", "Agent", "Active", "31/02/2024"];
        let err = map.finding(14, cells.len(), |i| cells[i]).unwrap_err();
        assert_eq!(err.row, 14);
        assert_eq!(err.field, "Date Detected");
        assert_eq!(err.reason, "not a date: '31/02/2024'");
    }

    #[test]
    fn a_row_with_too_few_fields_is_rejected() {
        let map =
            HeaderMap::from_headers(["Device Owner", "Issue", "Status", "Date Detected"]).unwrap();
        let cells = ["a@b.com", "Agent"];
        let err = map.finding(3, cells.len(), |i| cells[i]).unwrap_err();
        assert_eq!(err.field, "row");
        assert!(err.reason.contains("too few fields"), "{}", err.reason);
    }

    #[test]
    fn missing_optional_columns_are_tolerated_and_platform_is_inferred() {
        let map = HeaderMap::from_headers([
            "Device Owner",
            "Issue",
            "Status",
            "Date Detected",
            "Device Model",
        ])
        .unwrap();
        let cells = [
            " X@Y.COM ",
            "Agent",
            "Active",
            "2024-01-02T03:04:05Z",
            "iPhone 7",
        ];
        let f = map.finding(2, cells.len(), |i| cells[i]).unwrap();
        assert_eq!(f.owner.as_str(), "x@y.com");
        assert_eq!(f.platform, Platform::Ios);
        assert_eq!(f.risk, Risk::Unknown);
        assert_eq!(f.lookout_id, None);
    }
}
