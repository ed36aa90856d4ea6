//! The export as an Excel workbook: the first Excel table with the export's columns (any
//! sheet, any position), else the first sheet with a matching header in its first rows.
//!
//! Cells are streamed row by row from the sheet's XML ([`cells`]) rather than loaded as a
//! whole range, so a 100k-row workbook is read in one pass without holding every cell in
//! memory, and only the columns the export's reader uses are turned into text. Which sheets
//! and tables the workbook holds, and where, is read from the package parts directly:
//! calamine only exposes a table's position by loading its whole sheet, and it misses tables
//! whose relationship targets are absolute paths (as openpyxl writes them).

mod cells;

use super::{
    columns::{Column, HeaderMap, RowTexts},
    dates::excel_serial_value,
    ExportFormat, ParseError, ParsedExport,
};
use calamine::{ExcelDateTime, ExcelDateTimeType};
use cells::{NumberKind, PartError, SharedStrings, SheetCells, Value};
use chrono::{Datelike, NaiveDate, NaiveDateTime, SubsecRound, Timelike};
use chrono_tz::Tz;
use std::fmt::Write as _;
use std::io::{BufRead, Cursor, Read, Seek};

/// How many rows of a sheet may precede its header (titles, filters, blank rows).
const HEADER_SEARCH_ROWS: u32 = 20;

const WORKBOOK: &str = "xl/workbook.xml";
const TABLE_RELATIONSHIP: &str = "/relationships/table";
const SHARED_STRINGS_RELATIONSHIP: &str = "/relationships/sharedStrings";
const STYLES_RELATIONSHIP: &str = "/relationships/styles";

type Package<'a> = zip::ZipArchive<Cursor<&'a [u8]>>;
/// A part of the package being inflated as it is read.
type PartXml<'z, 'b> = std::io::BufReader<zip::read::ZipFile<'z, Cursor<&'b [u8]>>>;

/// What every sheet's cells are read with.
struct Book {
    strings: SharedStrings,
    styles: Vec<NumberKind>,
    /// Serial dates count from 1904-01-01 (old Mac workbooks), not 1899-12-30.
    is_1904: bool,
}

/// Parses workbook bytes. `name` is only used in messages.
pub(super) fn parse(bytes: &[u8], name: &str, zone: Tz) -> Result<ParsedExport, ParseError> {
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| ParseError::BadWorkbook {
            name: name.into(),
            detail: format!("the zip archive is damaged or truncated ({e})"),
        })?;
    if zip.index_for_name(WORKBOOK).is_none() {
        return Err(ParseError::NotAnExport {
            name: name.into(),
            what: describe_zip(&zip).into(),
        });
    }
    let structure = read_structure(&mut zip, name)?;
    let book = Book {
        strings: SharedStrings::read(&mut zip, &structure.shared_strings)
            .map_err(|e| bad(name, e))?,
        styles: cells::read_styles(&mut zip, &structure.styles).map_err(|e| bad(name, e))?,
        is_1904: structure.is_1904,
    };
    let sheets = &structure.sheets;

    let mut export = ParsedExport {
        format: Some(ExportFormat::Xlsx),
        ..ParsedExport::default()
    };

    // Tables first, in sheet order.
    let mut unusable_tables = Vec::new();
    for sheet in sheets {
        for table in &sheet.tables {
            let Ok(map) = HeaderMap::from_headers(table.columns.iter().map(String::as_str)) else {
                unusable_tables.push(format!("'{}'", table.name));
                continue;
            };
            let target = Target {
                header_row: None,
                first_data_row: table.first_row + table.header_rows,
                last_row: table.last_row.saturating_sub(table.totals_rows),
                first_col: table.first_col,
                width: table.last_col - table.first_col + 1,
                map: map.in_zone(zone),
            };
            let Some(cells) = open_sheet(&mut zip, sheet, &book).map_err(|e| bad(name, e))? else {
                return Err(bad(
                    name,
                    format!(
                        "sheet '{}' of table '{}' ({}) is missing or not a worksheet",
                        shorten(&sheet.name),
                        table.name,
                        sheet.part
                    ),
                ));
            };
            read_rows(cells, &book, target, &mut export)
                .map_err(|e| bad(name, in_sheet(sheet, e)))?;
            export.notes.push(format!(
                "read the Excel table '{}' on sheet '{}'",
                table.name, sheet.name
            ));
            return Ok(export);
        }
    }
    if !unusable_tables.is_empty() {
        export.notes.push(format!(
            "the workbook's tables ({}) do not have the export's columns; sheets were searched instead",
            unusable_tables.join(", ")
        ));
    }

    let mut first_row_seen: Option<(String, String)> = None;
    for sheet in sheets {
        // A chart sheet, a dialog sheet or a missing part is not a worksheet: look at the
        // next one.
        let Some(cells) = open_sheet(&mut zip, sheet, &book).map_err(|e| bad(name, e))? else {
            continue;
        };
        let found = find_sheet_header(cells, &book).map_err(|e| bad(name, in_sheet(sheet, e)))?;
        match found {
            SheetHeader::Found(mut target) => {
                target.map = std::mem::take(&mut target.map).in_zone(zone);
                let row = target.header_row.unwrap_or(0) + 1;
                let cells = open_sheet(&mut zip, sheet, &book)
                    .map_err(|e| bad(name, e))?
                    .ok_or_else(|| bad(name, format!("sheet '{}' vanished", sheet.name)))?;
                read_rows(cells, &book, target, &mut export)
                    .map_err(|e| bad(name, in_sheet(sheet, e)))?;
                export.notes.push(format!(
                    "no Excel table with the export's columns; read sheet '{}' (header on row {row})",
                    sheet.name
                ));
                return Ok(export);
            }
            SheetHeader::NotFound { first_row } => {
                if first_row_seen.is_none() {
                    first_row_seen = first_row.map(|r| (sheet.name.clone(), r));
                }
            }
        }
    }
    let found = match first_row_seen {
        Some((sheet, row)) => format!("sheet '{}' starts with a row of {row}", shorten(&sheet)),
        None if sheets.is_empty() => "no worksheet".into(),
        None => "only empty sheets".into(),
    };
    Err(ParseError::NoHeader {
        name: name.into(),
        expected: format!(
            "{} (in an Excel table, or in the first {HEADER_SEARCH_ROWS} rows of a sheet)",
            HeaderMap::expected()
        ),
        found,
    })
}

/// A sheet's cells, or `None` if its part is missing or is not a worksheet.
fn open_sheet<'z, 'b: 'z, 's>(
    zip: &'z mut Package<'b>,
    sheet: &SheetPart,
    book: &'s Book,
) -> Result<Option<SheetCells<'s, PartXml<'z, 'b>>>, PartError> {
    let Some(xml) = cells::part_reader(zip, &sheet.part)? else {
        return Ok(None);
    };
    SheetCells::open(xml, &sheet.part, &book.strings, &book.styles)
}

/// A cell error with the sheet's name in front.
fn in_sheet(sheet: &SheetPart, e: PartError) -> String {
    format!("sheet '{}': {e}", shorten(&sheet.name))
}

fn bad(name: &str, e: impl std::fmt::Display) -> ParseError {
    ParseError::BadWorkbook {
        name: name.into(),
        detail: e.to_string(),
    }
}

/// A sheet name as an error may show it: Excel caps names at 31 characters, a hand-made
/// package may not.
fn shorten(text: &str) -> String {
    const MAX: usize = 31;
    if text.chars().count() > MAX {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    } else {
        text.to_string()
    }
}

/// An Excel table as its part (`xl/tables/tableN.xml`) describes it; rows and columns
/// 0-based, inclusive.
#[derive(Debug)]
struct TablePart {
    name: String,
    first_row: u32,
    first_col: u32,
    last_row: u32,
    last_col: u32,
    header_rows: u32,
    totals_rows: u32,
    columns: Vec<String>,
}

/// A worksheet as the workbook lists it.
struct SheetPart {
    name: String,
    /// Its part in the package (`xl/worksheets/sheet1.xml`).
    part: String,
    tables: Vec<TablePart>,
}

/// The workbook's sheets (in workbook order) with their tables, and where its shared
/// strings and styles are.
struct Structure {
    sheets: Vec<SheetPart>,
    shared_strings: String,
    styles: String,
    is_1904: bool,
}

/// Lists each sheet of a workbook package with its tables.
fn read_structure(zip: &mut Package<'_>, name: &str) -> Result<Structure, ParseError> {
    let read = |zip: &mut Package<'_>, part: &str| -> Result<Option<String>, ParseError> {
        let Ok(mut file) = zip.by_name(part) else {
            return Ok(None);
        };
        let mut xml = String::new();
        file.read_to_string(&mut xml)
            .map_err(|e| ParseError::BadWorkbook {
                name: name.into(),
                detail: format!("{part}: {e}"),
            })?;
        Ok(Some(xml))
    };
    let workbook = read(zip, WORKBOOK)?.unwrap_or_default();
    let workbook_rels = read(zip, &rels_path(WORKBOOK))?.unwrap_or_default();
    let workbook_targets = relationships(&workbook_rels);
    let part_of_kind = |kind: &str, default: &str| {
        workbook_targets
            .iter()
            .find(|(_, k, _)| k.ends_with(kind))
            .map_or_else(|| default.to_string(), |(_, _, t)| resolve(WORKBOOK, t))
    };
    let is_1904 = tags(&workbook, "workbookPr")
        .next()
        .map(attributes)
        .is_some_and(|attrs| matches!(lookup(&attrs, "date1904"), Some("1" | "true")));

    let mut sheets = Vec::new();
    for sheet in tags(&workbook, "sheet") {
        let attrs = attributes(sheet);
        let (Some(sheet_name), Some(rid)) = (lookup(&attrs, "name"), lookup_local(&attrs, "id"))
        else {
            continue;
        };
        let Some((_, _, target)) = workbook_targets.iter().find(|(id, _, _)| id == rid) else {
            continue;
        };
        let sheet_path = resolve(WORKBOOK, target);
        let sheet_rels = read(zip, &rels_path(&sheet_path))?.unwrap_or_default();
        let mut tables = Vec::new();
        for (_, kind, target) in relationships(&sheet_rels) {
            if !kind.ends_with(TABLE_RELATIONSHIP) {
                continue;
            }
            // A table part that cannot be understood is skipped: the sheets are still searched.
            if let Some(table) = read(zip, &resolve(&sheet_path, &target))?
                .as_deref()
                .and_then(parse_table_part)
            {
                tables.push(table);
            }
        }
        sheets.push(SheetPart {
            name: sheet_name.to_string(),
            part: sheet_path,
            tables,
        });
    }
    Ok(Structure {
        sheets,
        shared_strings: part_of_kind(SHARED_STRINGS_RELATIONSHIP, "xl/sharedStrings.xml"),
        styles: part_of_kind(STYLES_RELATIONSHIP, "xl/styles.xml"),
        is_1904,
    })
}

/// What a zip that is not a workbook holds, for the error message.
fn describe_zip<R: Read + Seek>(zip: &zip::ZipArchive<R>) -> &'static str {
    if zip.index_for_name("word/document.xml").is_some() {
        "this is a Word document, not an Excel workbook"
    } else if zip.index_for_name("ppt/presentation.xml").is_some() {
        "this is a PowerPoint presentation, not an Excel workbook"
    } else if zip.index_for_name("content.xml").is_some() {
        "this is an OpenDocument file; save it as .xlsx or CSV"
    } else {
        "this is a zip archive but not an Excel workbook"
    }
}

/// `xl/worksheets/sheet1.xml` → `xl/worksheets/_rels/sheet1.xml.rels`.
fn rels_path(part: &str) -> String {
    match part.rsplit_once('/') {
        Some((dir, file)) => format!("{dir}/_rels/{file}.rels"),
        None => format!("_rels/{part}.rels"),
    }
}

/// A relationship target relative to the part that holds it (or absolute, from the root).
fn resolve(from_part: &str, target: &str) -> String {
    if let Some(absolute) = target.strip_prefix('/') {
        return absolute.to_string();
    }
    let mut segments: Vec<&str> = from_part.split('/').collect();
    segments.pop();
    for segment in target.split('/') {
        match segment {
            ".." => {
                segments.pop();
            }
            "." | "" => {}
            s => segments.push(s),
        }
    }
    segments.join("/")
}

/// The `(Id, Type, Target)` of each `<Relationship>` in a `.rels` part.
fn relationships(xml: &str) -> Vec<(String, String, String)> {
    tags(xml, "Relationship")
        .map(|tag| {
            let attrs = attributes(tag);
            let get = |n| lookup(&attrs, n).unwrap_or_default().to_string();
            (get("Id"), get("Type"), get("Target"))
        })
        .collect()
}

/// Reads a table part: `<table displayName=".." ref="A1:O28" headerRowCount=".."
/// totalsRowCount="..">` and its `<tableColumn name="..">`s.
fn parse_table_part(xml: &str) -> Option<TablePart> {
    let attrs = attributes(tags(xml, "table").next()?);
    let name = lookup(&attrs, "displayName")
        .or_else(|| lookup(&attrs, "name"))?
        .to_string();
    let (first, last) = lookup(&attrs, "ref")?.split_once(':')?;
    let (first_row, first_col) = cell_reference(first)?;
    let (last_row, last_col) = cell_reference(last)?;
    let number =
        |n: &str, default: u32| lookup(&attrs, n).map_or(Some(default), |v| v.parse().ok());
    let header_rows = number("headerRowCount", 1)?;
    let totals_rows = number("totalsRowCount", 0)?;
    if header_rows == 0 || last_col < first_col || last_row < first_row {
        return None;
    }
    let columns = tags(xml, "tableColumn")
        .map(|tag| {
            lookup(&attributes(tag), "name")
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    Some(TablePart {
        name,
        first_row,
        first_col,
        last_row,
        last_col,
        header_rows,
        totals_rows,
        columns,
    })
}

/// The insides (`name attr="v" …`) of every start tag with this local name, any prefix.
fn tags<'a>(xml: &'a str, local_name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = xml;
    std::iter::from_fn(move || loop {
        let lt = rest.find('<')?;
        rest = &rest[lt + 1..];
        let end = rest.find('>')?;
        let element = rest[..end].trim_end_matches('/');
        rest = &rest[end..];
        let element_name = element.split_whitespace().next().unwrap_or("");
        if element_name.rsplit(':').next() == Some(local_name) {
            return Some(element);
        }
    })
}

/// A start tag's attributes, values unescaped.
fn attributes(tag: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    // Skip the element name.
    let mut rest = tag.trim_start();
    rest = rest.find(char::is_whitespace).map_or("", |i| &rest[i..]);
    loop {
        rest = rest.trim_start();
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(end) = after[1..].find(quote) else {
            break;
        };
        out.push((key, unescape_xml(&after[1..1 + end])));
        rest = &after[end + 2..];
    }
    out
}

fn lookup<'a>(attrs: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

/// An attribute by local name with any namespace prefix (`r:id`).
fn lookup_local<'a>(attrs: &'a [(&str, String)], local: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k.split_once(':').is_some_and(|(_, l)| l == local))
        .map(|(_, v)| v.as_str())
}

fn unescape_xml(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `B3` → (2, 1): 0-based row and column. `$` anchors are ignored.
fn cell_reference(text: &str) -> Option<(u32, u32)> {
    let text = text.trim().replace('$', "");
    let split = text.find(|c: char| c.is_ascii_digit())?;
    let (letters, digits) = text.split_at(split);
    if letters.is_empty() || !letters.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let mut col: u32 = 0;
    for c in letters.chars() {
        col = col.checked_mul(26)? + (c.to_ascii_uppercase() as u32 - 'A' as u32 + 1);
    }
    let row: u32 = digits.parse().ok()?;
    Some((row.checked_sub(1)?, col - 1))
}

/// Where the data rows are and how to read them.
struct Target {
    /// Sheet row of the header (0-based), for sheets; tables know theirs.
    header_row: Option<u32>,
    /// First sheet row (0-based) that may hold data.
    first_data_row: u32,
    /// Last sheet row (0-based) to read, inclusive.
    last_row: u32,
    /// Sheet column (0-based) of the row's first cell.
    first_col: u32,
    /// Cells per row.
    width: u32,
    map: HeaderMap,
}

enum SheetHeader {
    Found(Target),
    /// `first_row`: the sheet's first non-blank row described by column names only.
    NotFound {
        first_row: Option<String>,
    },
}

/// Looks for a header row among the sheet's first rows.
fn find_sheet_header<B: BufRead>(
    mut reader: SheetCells<'_, B>,
    book: &Book,
) -> Result<SheetHeader, PartError> {
    let mut first_row: Option<String> = None;
    let mut row_index: Option<u32> = None;
    let mut cells: Vec<(u32, String)> = Vec::new();
    let check = |row: u32, cells: &[(u32, String)], first_row: &mut Option<String>| {
        if cells.iter().all(|(_, c)| c.trim().is_empty()) {
            return None;
        }
        let first_col = cells.iter().find(|(_, c)| !c.trim().is_empty())?.0;
        let last_col = cells.iter().rfind(|(_, c)| !c.trim().is_empty())?.0;
        let mut line = vec![String::new(); (last_col - first_col + 1) as usize];
        for (col, text) in cells {
            if (first_col..=last_col).contains(col) {
                line[(col - first_col) as usize] = text.clone();
            }
        }
        if first_row.is_none() {
            *first_row = Some(HeaderMap::describe_cells(line.iter().map(String::as_str)));
        }
        let map = HeaderMap::from_headers(line.iter().map(String::as_str)).ok()?;
        Some(Target {
            header_row: Some(row),
            first_data_row: row + 1,
            last_row: u32::MAX,
            first_col,
            width: last_col - first_col + 1,
            map,
        })
    };
    while let Some(cell) = reader.next_cell()? {
        let (row, col) = (cell.row, cell.col);
        if row_index != Some(row) {
            if let Some(prev) = row_index {
                if let Some(target) = check(prev, &cells, &mut first_row) {
                    return Ok(SheetHeader::Found(target));
                }
            }
            if row >= HEADER_SEARCH_ROWS {
                return Ok(SheetHeader::NotFound { first_row });
            }
            row_index = Some(row);
            cells.clear();
        }
        let mut text = String::new();
        write_cell(&mut text, &cell.value, false, book.is_1904);
        cells.push((col, text));
    }
    if let Some(prev) = row_index {
        if let Some(target) = check(prev, &cells, &mut first_row) {
            return Ok(SheetHeader::Found(target));
        }
    }
    Ok(SheetHeader::NotFound { first_row })
}

/// Streams the target's rows into findings and rejections. Shared strings (most cells) are
/// lent to the row's reader as they are; other cells are written as text into one reused
/// buffer per column; unread columns are only checked for blankness.
fn read_rows<B: BufRead>(
    mut reader: SheetCells<'_, B>,
    book: &Book,
    target: Target,
    export: &mut ParsedExport,
) -> Result<(), PartError> {
    let width = target.width as usize;
    let mut wanted = vec![false; width];
    let mut is_date = vec![false; width];
    for col in Column::ALL {
        if let Some(i) = target.map.index(col).filter(|i| *i < width) {
            wanted[i] = true;
            is_date[i] = matches!(col, Column::DateDetected | Column::DateResolved);
        }
    }
    // Per column: the shared string the cell holds, else its text in the column's buffer.
    let mut lent: Vec<Option<&str>> = vec![None; width];
    let mut texts: Vec<String> = vec![String::new(); width];
    let mut current: Option<u32> = None;
    let mut non_empty = false;

    // A table says how many rows it has: the findings are allocated once, not doubled and
    // copied as they come (an Excel sheet has at most 1,048,576 rows).
    if target.last_row != u32::MAX {
        let rows = target.last_row.saturating_sub(target.first_data_row) as usize + 1;
        export.findings.reserve(rows.min(1 << 20));
    }
    let mut shared = RowTexts::default();
    let mut flush = |row: u32, lent: &mut [Option<&str>], texts: &mut [String], non_empty: bool| {
        if non_empty {
            export.total_rows += 1;
            let cell = |i: usize| lent[i].unwrap_or(texts[i].as_str());
            match target
                .map
                .finding_in(&mut shared, row as usize + 1, width, cell)
            {
                Ok(finding) => export.findings.push(finding),
                Err(rejected) => export.rejected.push(rejected),
            }
        }
        lent.fill(None);
        texts.iter_mut().for_each(String::clear);
    };

    while let Some(cell) = reader.next_cell()? {
        let row = cell.row;
        if row < target.first_data_row {
            continue;
        }
        if row > target.last_row {
            break;
        }
        if current != Some(row) {
            if let Some(prev) = current {
                flush(prev, &mut lent, &mut texts, non_empty);
            }
            current = Some(row);
            non_empty = false;
        }
        let Some(i) = cell.col.checked_sub(target.first_col).map(|i| i as usize) else {
            continue;
        };
        if i >= width {
            continue;
        }
        // Unread columns still make a row non-blank (e.g. only `Details` filled).
        non_empty |= !cell.value.is_blank();
        if !wanted[i] {
            continue;
        }
        match cell.value {
            Value::Shared(text) => lent[i] = Some(text),
            value => {
                lent[i] = None;
                write_cell(&mut texts[i], &value, is_date[i], book.is_1904);
            }
        }
    }
    if let Some(prev) = current {
        flush(prev, &mut lent, &mut texts, non_empty);
    }
    Ok(())
}

/// Writes a cell as the text a CSV export would hold. Numbers that are integers (ids,
/// counts) lose Excel's `.0`; in a date column a number is an Excel serial date.
fn write_cell(out: &mut String, value: &Value<'_, '_>, date_column: bool, is_1904: bool) {
    out.clear();
    match *value {
        Value::Empty => {}
        Value::Shared(s) => out.push_str(s),
        Value::Text(s) | Value::IsoDate(s) | Value::Error(s) => out.push_str(s),
        Value::Number(f) => {
            if date_column {
                if let Some(dt) = excel_serial_value(f) {
                    push_date(out, dt);
                    return;
                }
            }
            if f.fract() == 0.0 && f.abs() < 1e15 {
                let _ = write!(out, "{}", f as i64);
            } else {
                let _ = write!(out, "{f}");
            }
        }
        Value::Date(f) => {
            let serial = ExcelDateTime::new(f, ExcelDateTimeType::DateTime, is_1904);
            match excel_date_time(&serial) {
                Some(wall) => push_date(out, wall),
                None => {
                    let _ = write!(out, "{f}");
                }
            }
        }
        Value::Duration(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Bool(b) => out.push_str(if b { "TRUE" } else { "FALSE" }),
    }
}

/// Writes a date cell as the zone-less ISO wall time it shows: Excel has no zones, so the
/// row's reader applies the run's zone (`REMINDERS_TIME_ZONE`), as for any zone-less time.
/// Written digit by digit: a format string would be parsed again for every cell.
fn push_date(out: &mut String, wall: NaiveDateTime) {
    let year = wall.year();
    if !(0..=9999).contains(&year) {
        let _ = write!(out, "{}", wall.format("%Y-%m-%dT%H:%M:%S"));
        return;
    }
    let digits = |out: &mut String, n: u32, width: usize| {
        let mut buf = [b'0'; 4];
        let mut n = n;
        for slot in buf[..width].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.push_str(std::str::from_utf8(&buf[..width]).unwrap_or("0"));
    };
    digits(out, year as u32, 4);
    let date_time = [
        ('-', wall.month()),
        ('-', wall.day()),
        ('T', wall.hour()),
        (':', wall.minute()),
        (':', wall.second()),
    ];
    for (separator, n) in date_time {
        out.push(separator);
        digits(out, n, 2);
    }
}

/// A date cell's wall time, to the second. Handles the 1904 date system through calamine.
fn excel_date_time(dt: &ExcelDateTime) -> Option<NaiveDateTime> {
    let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
    let millis = ((i64::from(h) * 60 + i64::from(mi)) * 60 + i64::from(s)) * 1000 + i64::from(ms);
    let naive = NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())?.and_hms_opt(0, 0, 0)?
        + chrono::Duration::milliseconds(millis);
    // The float's rounding shows as 14:51:59.999: exports carry whole seconds.
    Some(naive.round_subsecs(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_export;
    use rust_xlsxwriter::{ExcelDateTime, Format, Table, TableColumn, Workbook, Worksheet};

    /// The format's parser with zone-less times as UTC, as these tests were written.
    fn parse(bytes: &[u8], name: &str) -> Result<ParsedExport, ParseError> {
        super::parse(bytes, name, Tz::UTC)
    }

    const HEADERS: [&str; 6] = [
        "Device Owner",
        "Lookout ID",
        "Device Model",
        "Issue",
        "Status",
        "Date Detected",
    ];

    fn write_header(ws: &mut Worksheet, row: u32, col: u16) {
        for (i, h) in HEADERS.iter().enumerate() {
            ws.write_string(row, col + i as u16, *h).unwrap();
        }
    }

    fn write_row(ws: &mut Worksheet, row: u32, col: u16, owner: &str, date: &str) {
        let cells = [owner, "c4b6f57b", "SM-A528B", "Agent", "Active", date];
        for (i, c) in cells.iter().enumerate() {
            ws.write_string(row, col + i as u16, *c).unwrap();
        }
    }

    fn table() -> Table {
        let columns: Vec<TableColumn> = HEADERS
            .iter()
            .map(|h| TableColumn::new().set_header(*h))
            .collect();
        Table::new().set_name("Issues").set_columns(&columns)
    }

    fn save(wb: &mut Workbook) -> Vec<u8> {
        wb.save_to_buffer().unwrap()
    }

    #[test]
    fn a_table_anywhere_is_found_and_rows_keep_sheet_row_numbers() {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet().set_name("Notes").unwrap();
        ws.write_string(0, 0, "nothing here").unwrap();
        let ws = wb.add_worksheet().set_name("Data").unwrap();
        ws.write_string(0, 0, "Report title").unwrap();
        write_header(ws, 4, 2);
        write_row(ws, 5, 2, "A@engie.com", "2024-03-04T14:52:00Z");
        write_row(ws, 6, 2, "b@engie.com", "2024-03-05T14:52:00Z");
        ws.add_table(4, 2, 6, 2 + HEADERS.len() as u16 - 1, &table())
            .unwrap();
        // Below the table: not part of it.
        write_row(ws, 9, 2, "c@engie.com", "2024-03-05T14:52:00Z");
        let p = parse(&save(&mut wb), "book.xlsx").unwrap();
        assert_eq!(p.format, Some(ExportFormat::Xlsx));
        assert_eq!(p.total_rows, 2);
        assert_eq!(p.findings[0].row, 6);
        assert_eq!(p.findings[0].owner.as_str(), "a@engie.com");
        assert_eq!(p.findings[1].row, 7);
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("table 'Issues' on sheet 'Data'")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn without_a_table_the_first_sheet_with_a_header_is_read() {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet().set_name("Empty").unwrap();
        ws.write_string(0, 0, "no header").unwrap();
        let ws = wb.add_worksheet().set_name("Issues").unwrap();
        ws.write_string(0, 0, "Export 2 items").unwrap();
        write_header(ws, 2, 0);
        write_row(ws, 3, 0, "a@engie.com", "2024-03-04T14:52:00Z");
        write_row(ws, 5, 0, "b@engie.com", "Mar 4, 2024 2:52 PM");
        let p = parse(&save(&mut wb), "book.xlsx").unwrap();
        assert_eq!(p.total_rows, 2, "the blank row 5 is not counted");
        assert_eq!(p.findings[0].row, 4);
        assert_eq!(p.findings[1].row, 6);
        assert_eq!(
            p.findings[1].detected.to_rfc3339(),
            "2024-03-04T14:52:00+00:00"
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("sheet 'Issues' (header on row 3)")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn real_excel_dates_and_serial_numbers_in_date_columns_are_dates() {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        write_header(ws, 0, 0);
        write_row(ws, 1, 0, "a@engie.com", "");
        let when = ExcelDateTime::parse_from_str("2024-03-04T14:52:00").unwrap();
        ws.write_datetime_with_format(
            1,
            5,
            &when,
            &Format::new().set_num_format("yyyy-mm-dd hh:mm"),
        )
        .unwrap();
        write_row(ws, 2, 0, "b@engie.com", "");
        ws.write_number(2, 5, 45355.6194444444).unwrap();
        let p = parse(&save(&mut wb), "book.xlsx").unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(
            p.findings[0].detected.to_rfc3339(),
            "2024-03-04T14:52:00+00:00"
        );
        assert_eq!(
            p.findings[1].detected.to_rfc3339(),
            "2024-03-04T14:52:00+00:00"
        );
    }

    #[test]
    fn numeric_ids_come_out_as_text_without_a_decimal_point() {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        write_header(ws, 0, 0);
        write_row(ws, 1, 0, "a@engie.com", "2024-03-04T14:52:00Z");
        ws.write_number(1, 1, 123456789.0).unwrap();
        ws.write_number(1, 2, 7.5).unwrap();
        let p = parse(&save(&mut wb), "book.xlsx").unwrap();
        assert_eq!(p.findings[0].lookout_id.as_deref(), Some("123456789"));
        assert_eq!(p.findings[0].device_model, "7.5");
    }

    #[test]
    fn a_bad_date_in_a_workbook_is_rejected_with_its_sheet_row() {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        write_header(ws, 0, 0);
        write_row(ws, 1, 0, "a@engie.com", "2024-03-04T14:52:00Z");
        write_row(ws, 2, 0, "b@engie.com", "31/02/2024");
        write_row(ws, 3, 0, "", "2024-03-04T14:52:00Z");
        let p = parse(&save(&mut wb), "book.xlsx").unwrap();
        assert_eq!(p.total_rows, 3);
        assert_eq!(p.rejected[0].row, 3);
        assert_eq!(p.rejected[0].field, "Date Detected");
        assert_eq!(p.rejected[1].row, 4);
        assert_eq!(p.rejected[1].field, "Device Owner");
    }

    #[test]
    fn a_table_without_the_export_columns_is_passed_over_for_a_matching_sheet() {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet().set_name("Other").unwrap();
        ws.write_string(0, 0, "Name").unwrap();
        ws.write_string(0, 1, "Count").unwrap();
        ws.write_string(1, 0, "x").unwrap();
        ws.add_table(0, 0, 1, 1, &Table::new().set_name("Counts"))
            .unwrap();
        let ws = wb.add_worksheet().set_name("Issues").unwrap();
        write_header(ws, 0, 0);
        write_row(ws, 1, 0, "a@engie.com", "2024-03-04T14:52:00Z");
        let p = parse(&save(&mut wb), "book.xlsx").unwrap();
        assert_eq!(p.findings.len(), 1);
        assert!(
            p.notes.iter().any(|n| n.contains("'Counts'")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn a_workbook_without_a_header_names_the_file_and_what_it_holds() {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet().set_name("Feuil1").unwrap();
        ws.write_string(0, 0, "Budget").unwrap();
        ws.write_string(0, 1, "2024").unwrap();
        let err = parse(&save(&mut wb), "book.xlsx").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ParseError::NoHeader { .. }));
        assert!(msg.starts_with("book.xlsx: "), "{msg}");
        assert!(msg.contains("'Device Owner'"), "{msg}");
        assert!(
            msg.contains(
                "sheet 'Feuil1' starts with a row of 2 cells, none of them a known column"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_truncated_workbook_is_a_bad_workbook_error() {
        let mut wb = Workbook::new();
        write_header(wb.add_worksheet(), 0, 0);
        let bytes = save(&mut wb);
        let err = parse_export(&bytes[..bytes.len() / 2], "book.xlsx").unwrap_err();
        assert!(matches!(err, ParseError::BadWorkbook { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("book.xlsx: unreadable Excel workbook"),
            "{err}"
        );
    }

    #[test]
    fn a_zip_that_is_not_a_workbook_is_not_an_export() {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            zip.start_file(
                "word/document.xml",
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            std::io::Write::write_all(&mut zip, b"<w:document/>").unwrap();
            zip.finish().unwrap();
        }
        let err = parse_export(buf.get_ref(), "memo.docx").unwrap_err();
        assert!(matches!(err, ParseError::NotAnExport { .. }), "{err}");
        assert!(err.to_string().contains("not an Excel workbook"), "{err}");
    }

    /// A workbook package written by hand, for what no writer library produces: inline
    /// strings, prefixed tags, cells without references, `t="d"` cells, the 1904 system.
    fn package(workbook_pr: &str, sheet_data: &str, styles: Option<&str>) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let mut part = |path: &str, xml: &str| {
                zip.start_file(path, zip::write::SimpleFileOptions::default())
                    .unwrap();
                std::io::Write::write_all(&mut zip, xml.as_bytes()).unwrap();
            };
            part(
                "xl/workbook.xml",
                &format!(
                    r#"<workbook xmlns:r="urn:r">{workbook_pr}<sheets><sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>"#
                ),
            );
            part(
                "xl/_rels/workbook.xml.rels",
                r#"<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="/xl/styles.xml"/></Relationships>"#,
            );
            part(
                "xl/worksheets/sheet1.xml",
                &format!(
                    r#"<x:worksheet xmlns:x="urn:main"><x:sheetData>{sheet_data}</x:sheetData></x:worksheet>"#
                ),
            );
            if let Some(styles) = styles {
                part("xl/styles.xml", styles);
            }
            zip.finish().unwrap();
        }
        buf.into_inner()
    }

    /// An inline-string cell.
    fn inline(reference: &str, text: &str) -> String {
        format!(r#"<x:c r="{reference}" t="inlineStr"><x:is><x:t>{text}</x:t></x:is></x:c>"#)
    }

    fn header_row() -> String {
        let cells: String = ["A", "B", "C", "D", "E", "F"]
            .iter()
            .zip(HEADERS)
            .map(|(col, h)| inline(&format!("{col}1"), h))
            .collect();
        format!(r#"<x:row r="1">{cells}</x:row>"#)
    }

    #[test]
    fn inline_strings_prefixed_tags_and_cells_without_references_are_read() {
        // Row 2: every cell referenced. Row 3: no references at all (cells follow each
        // other). Row 4: only styled, valueless cells: blank, not counted.
        let row2: String = ["A2", "B2", "C2", "D2", "E2", "F2"]
            .iter()
            .zip([
                "a@engie.com",
                "id-1",
                "SM-A528B",
                "Agent",
                "Active",
                "2024-03-04T14:52:00Z",
            ])
            .map(|(r, v)| inline(r, v))
            .collect();
        let row3: String = [
            "b@engie.com",
            "id-2",
            "iPhone &amp; co",
            "Agent",
            "Active",
            "2024-03-05T14:52:00Z",
        ]
        .iter()
        .map(|v| format!(r#"<x:c t="inlineStr"><x:is><x:r><x:t>{v}</x:t></x:r></x:is></x:c>"#))
        .collect();
        let sheet = format!(
            r#"{}<x:row r="2">{row2}</x:row><x:row>{row3}</x:row><x:row r="4"><x:c r="A4" s="0"/><x:c r="B4" t="s"/></x:row>"#,
            header_row()
        );
        let p = parse(&package("", &sheet, None), "book.xlsx").unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.total_rows, 2);
        assert_eq!(p.findings[0].owner.as_str(), "a@engie.com");
        assert_eq!(p.findings[1].row, 3);
        assert_eq!(p.findings[1].lookout_id.as_deref(), Some("id-2"));
        assert_eq!(p.findings[1].device_model, "iPhone & co");
    }

    #[test]
    fn missing_cells_leave_their_field_empty_and_never_shift_the_others() {
        // Lookout ID (B) and Device Model (C) are not written at all on row 2.
        let sheet = format!(
            r#"{}<x:row r="2">{}{}{}{}</x:row>"#,
            header_row(),
            inline("A2", "a@engie.com"),
            inline("D2", "Agent"),
            inline("E2", "Active"),
            inline("F2", "2024-03-04T14:52:00Z"),
        );
        let p = parse(&package("", &sheet, None), "book.xlsx").unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        let f = &p.findings[0];
        assert_eq!(f.lookout_id, None);
        assert_eq!(f.device_model, "");
        assert_eq!(f.issue, "Agent");
        assert_eq!(f.status, "Active");
    }

    #[test]
    fn a_date_as_text_serial_date_cell_or_iso_cell_is_the_same_wall_time_in_the_zone() {
        let styles = r#"<styleSheet><numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy\-mm\-dd hh:mm"/></numFmts><cellStyleXfs count="2"><xf numFmtId="164"/><xf numFmtId="0"/></cellStyleXfs><cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="164" applyNumberFormat="1"/><xf numFmtId="22"/></cellXfs></styleSheet>"#;
        // 45355.6194444444 = 2024-03-04 14:52.
        let dates = [
            inline("F2", "2024-03-04 14:52"),
            inline("F3", "Mar 4, 2024 2:52 PM"),
            r#"<x:c r="F4"><x:v>45355.6194444444</x:v></x:c>"#.to_string(),
            r#"<x:c r="F5" s="1"><x:v>45355.6194444444</x:v></x:c>"#.to_string(),
            r#"<x:c r="F6" s="2"><x:v>45355.6194444444</x:v></x:c>"#.to_string(),
            r#"<x:c r="F7" t="d"><x:v>2024-03-04T14:52:00</x:v></x:c>"#.to_string(),
        ];
        let rows: String = dates
            .iter()
            .enumerate()
            .map(|(i, date)| {
                let r = i + 2;
                format!(
                    r#"<x:row r="{r}">{}{}{}{date}</x:row>"#,
                    inline(&format!("A{r}"), "a@engie.com"),
                    inline(&format!("D{r}"), "Agent"),
                    inline(&format!("E{r}"), "Active"),
                )
            })
            .collect();
        let bytes = package("", &format!("{}{rows}", header_row()), Some(styles));
        let p = super::parse(&bytes, "book.xlsx", chrono_tz::Europe::Paris).unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        let detected: Vec<String> = p.findings.iter().map(|f| f.detected.to_rfc3339()).collect();
        assert_eq!(detected, vec!["2024-03-04T13:52:00+00:00"; dates.len()]);
    }

    #[test]
    fn a_1904_workbook_moves_its_date_cells_by_the_1904_epoch() {
        let styles = r#"<styleSheet><cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="22"/></cellXfs></styleSheet>"#;
        // 43893.6194444444 in the 1904 system = 2024-03-04 14:52 (1462 days fewer).
        let sheet = format!(
            r#"{}<x:row r="2">{}{}{}<x:c r="F2" s="1"><x:v>43893.6194444444</x:v></x:c></x:row>"#,
            header_row(),
            inline("A2", "a@engie.com"),
            inline("D2", "Agent"),
            inline("E2", "Active"),
        );
        let bytes = package(r#"<workbookPr date1904="1"/>"#, &sheet, Some(styles));
        let p = parse(&bytes, "book.xlsx").unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(
            p.findings[0].detected.to_rfc3339(),
            "2024-03-04T14:52:00+00:00"
        );
    }

    #[test]
    fn a_damaged_sheet_is_a_bad_workbook_naming_the_sheet_and_the_cell() {
        let sheet = format!(
            r#"{}<x:row r="2">{}<x:c r="D2" t="s"><x:v>7</x:v></x:c></x:row>"#,
            header_row(),
            inline("A2", "a@engie.com"),
        );
        let err = parse(&package("", &sheet, None), "book.xlsx").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ParseError::BadWorkbook { .. }), "{msg}");
        assert!(
            msg.contains(
                "sheet 'Data': xl/worksheets/sheet1.xml: D2: shared string '7' does not exist"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_very_wide_sheet_reads_the_export_columns_wherever_they_are() {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        // 3,000 columns of other data with the export's columns from column 2,500 on. Row
        // 3 holds one cell among the header's columns: it counts (and is rejected); row 4
        // one cell right of the header, which is not part of the export: it does not.
        for col in 0..3_000u16 {
            ws.write_string(0, col, format!("Other {col}")).unwrap();
            ws.write_number(1, col, f64::from(col)).unwrap();
        }
        write_header(ws, 0, 2_500);
        write_row(ws, 1, 2_500, "a@engie.com", "2024-03-04T14:52:00Z");
        ws.write_string(2, 2_900, "x").unwrap();
        ws.write_string(3, 16_000, "far right").unwrap();
        let p = parse(&save(&mut wb), "book.xlsx").unwrap();
        assert_eq!(p.total_rows, 2);
        assert_eq!(p.findings.len(), 1);
        assert_eq!(p.findings[0].owner.as_str(), "a@engie.com");
        assert_eq!(p.findings[0].lookout_id.as_deref(), Some("c4b6f57b"));
        assert_eq!(p.rejected[0].row, 3);
    }

    #[test]
    fn table_parts_are_read_with_their_range_and_columns() {
        let xml = r#"<?xml version="1.0"?><x:table xmlns:x="urn" id="1" name="T" displayName="Tableau&amp;1" ref="$B$3:D10" totalsRowCount="1"><x:tableColumns count="3"><x:tableColumn id="1" name="Device Owner"/><x:tableColumn id="2" name="Issue"/><x:tableColumn id="3" name="A &lt; B"/></x:tableColumns></x:table>"#;
        let t = parse_table_part(xml).unwrap();
        assert_eq!(t.name, "Tableau&1");
        assert_eq!(
            (t.first_row, t.first_col, t.last_row, t.last_col),
            (2, 1, 9, 3)
        );
        assert_eq!((t.header_rows, t.totals_rows), (1, 1));
        assert_eq!(t.columns, ["Device Owner", "Issue", "A < B"]);
    }

    #[test]
    fn relationship_targets_resolve_relative_and_absolute_paths() {
        assert_eq!(
            resolve("xl/workbook.xml", "worksheets/sheet1.xml"),
            "xl/worksheets/sheet1.xml"
        );
        assert_eq!(
            resolve("xl/workbook.xml", "/xl/worksheets/sheet1.xml"),
            "xl/worksheets/sheet1.xml"
        );
        assert_eq!(
            resolve("xl/worksheets/sheet2.xml", "../tables/table1.xml"),
            "xl/tables/table1.xml"
        );
        assert_eq!(
            rels_path("xl/worksheets/sheet2.xml"),
            "xl/worksheets/_rels/sheet2.xml.rels"
        );
    }

    #[test]
    fn attributes_are_read_with_either_quote_and_prefixes() {
        let tag = tags(
            r#"<x><sheet name='Feuil &amp; 1' sheetId="1" r:id="rId3"/></x>"#,
            "sheet",
        )
        .next()
        .unwrap();
        let attrs = attributes(tag);
        assert_eq!(lookup(&attrs, "name"), Some("Feuil & 1"));
        assert_eq!(lookup_local(&attrs, "id"), Some("rId3"));
        assert_eq!(lookup(&attrs, "id"), None);
    }

    #[test]
    fn cell_references_become_zero_based_positions() {
        assert_eq!(cell_reference("A1"), Some((0, 0)));
        assert_eq!(cell_reference("AA10"), Some((9, 26)));
        assert_eq!(cell_reference("$O$28"), Some((27, 14)));
        assert_eq!(cell_reference("12"), None);
    }
}
