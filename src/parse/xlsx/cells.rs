//! A workbook's cells, streamed from its sheet parts with quick-xml: shared strings held once
//! in one buffer and lent out, styles reduced to "is this number a date", no allocation per
//! cell. calamine's cell reader walks the same XML but allocates twice per value and reads
//! each cell's attributes three times; on a 100k-row export that walk alone cost 23× the
//! inflating of the parts (`examples/bench_xlsx_parse.rs`).
//!
//! The values are the ones calamine 0.31 gives (same style rules, same `_x00HH_` escapes,
//! same number parsing) so the rows read are unchanged.

use quick_xml::{
    escape::resolve_xml_entity,
    events::{BytesRef, BytesStart, Event},
    Reader,
};
use std::io::{BufRead, BufReader, Read, Seek};
use zip::{result::ZipError, ZipArchive};

/// Something in a part that cannot be read: the XML, a value, a reference.
#[derive(Debug)]
pub(super) struct PartError(pub String);

impl std::fmt::Display for PartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn xml_error(part: &str, e: impl std::fmt::Display) -> PartError {
    PartError(format!("{part}: {e}"))
}

/// The part's next XML event, read into `buf` (cleared first: the event borrows it), a
/// malformed part named in the error.
fn next_event<'b, B: BufRead>(
    xml: &mut Reader<B>,
    buf: &'b mut Vec<u8>,
    part: &str,
) -> Result<Event<'b>, PartError> {
    buf.clear();
    xml.read_event_into(buf).map_err(|e| xml_error(part, e))
}

/// An XML reader over one part of the package, as calamine configures it: `<a/>` read as
/// `<a></a>`, text kept as written, end tags not checked against start tags.
pub(super) fn part_reader<'z, R: Read + Seek>(
    zip: &'z mut ZipArchive<R>,
    part: &str,
) -> Result<Option<Reader<BufReader<zip::read::ZipFile<'z, R>>>>, PartError> {
    match zip.by_name(part) {
        Ok(file) => {
            let mut reader = Reader::from_reader(BufReader::with_capacity(64 * 1024, file));
            let config = reader.config_mut();
            config.expand_empty_elements = true;
            config.trim_text(false);
            config.check_end_names = false;
            config.check_comments = false;
            Ok(Some(reader))
        }
        Err(ZipError::FileNotFound) => Ok(None),
        Err(e) => Err(xml_error(part, e)),
    }
}

/// The workbook's shared strings (`xl/sharedStrings.xml`), all in one buffer.
#[derive(Debug, Default)]
pub(super) struct SharedStrings {
    text: String,
    /// End of each string in `text`; string `i` starts where `i - 1` ends.
    ends: Vec<usize>,
}

impl SharedStrings {
    /// Reads the part; a workbook without one (only numbers, or inline strings) has none.
    pub(super) fn read<R: Read + Seek>(
        zip: &mut ZipArchive<R>,
        part: &str,
    ) -> Result<Self, PartError> {
        let mut strings = SharedStrings::default();
        let Some(mut xml) = part_reader(zip, part)? else {
            return Ok(strings);
        };
        let mut buf = Vec::with_capacity(1024);
        let mut inner = Vec::with_capacity(1024);
        loop {
            match next_event(&mut xml, &mut buf, part)? {
                Event::Start(e) if e.local_name().as_ref() == b"si" => {
                    read_rich_text(&mut xml, &mut inner, &mut strings.text, b"si")
                        .map_err(|e| xml_error(part, e))?;
                    strings.ends.push(strings.text.len());
                }
                Event::End(e) if e.local_name().as_ref() == b"sst" => break,
                Event::Eof => return Err(xml_error(part, "ends before </sst>")),
                _ => {}
            }
        }
        Ok(strings)
    }

    pub(super) fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        Some(&self.text[start..end])
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }
}

/// What a cell style makes of a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NumberKind {
    Plain,
    Date,
    Duration,
}

/// The number kind of each cell style (`<cellXfs>` of `xl/styles.xml`), by style index.
pub(super) fn read_styles<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    part: &str,
) -> Result<Vec<NumberKind>, PartError> {
    let mut kinds = Vec::new();
    let Some(mut xml) = part_reader(zip, part)? else {
        return Ok(kinds);
    };
    let mut custom: Vec<(Vec<u8>, NumberKind)> = Vec::new();
    let mut in_cell_xfs = false;
    let mut buf = Vec::with_capacity(1024);
    loop {
        match next_event(&mut xml, &mut buf, part)? {
            Event::Start(e) => match e.local_name().as_ref() {
                b"numFmt" => {
                    let id = attribute(&e, b"numFmtId").unwrap_or_default().to_vec();
                    let code = e
                        .try_get_attribute("formatCode")
                        .ok()
                        .flatten()
                        .and_then(|a| a.decode_and_unescape_value(xml.decoder()).ok())
                        .unwrap_or_default();
                    if !code.is_empty() {
                        custom.push((id, custom_format_kind(&code)));
                    }
                }
                b"cellXfs" => in_cell_xfs = true,
                b"xf" if in_cell_xfs => {
                    let kind = attribute(&e, b"numFmtId").map_or(NumberKind::Plain, |id| {
                        custom
                            .iter()
                            .find(|(c, _)| c == id)
                            .map_or_else(|| builtin_format_kind(id), |(_, k)| *k)
                    });
                    kinds.push(kind);
                }
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == b"cellXfs" => in_cell_xfs = false,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(kinds)
}

/// Excel's built-in number formats that show dates (14–22, 45, 47) or durations (46).
fn builtin_format_kind(id: &[u8]) -> NumberKind {
    match id {
        b"14" | b"15" | b"16" | b"17" | b"18" | b"19" | b"20" | b"21" | b"22" | b"45" | b"47" => {
            NumberKind::Date
        }
        b"46" => NumberKind::Duration,
        _ => NumberKind::Plain,
    }
}

/// Whether a custom format code shows a date (`yyyy-mm-dd hh:mm`), a duration (`[h]:mm`) or
/// a number: its first section's unquoted, unescaped, unbracketed letters decide.
pub(super) fn custom_format_kind(code: &str) -> NumberKind {
    let mut escaped = false;
    let mut quoted = false;
    let mut brackets = 0u8;
    let mut prev = ' ';
    let mut elapsed = false;
    let mut am_pm = false;
    for c in code.chars() {
        match (c, escaped, quoted, am_pm, brackets) {
            (_, true, ..) => escaped = false,
            ('_' | '\\', ..) => escaped = true,
            ('"', _, true, _, _) => quoted = false,
            (_, _, true, _, _) => {}
            ('"', ..) => quoted = true,
            (';', ..) => return NumberKind::Plain,
            ('[', ..) => brackets += 1,
            (']', .., 1) if elapsed => return NumberKind::Duration,
            (']', ..) => brackets = brackets.saturating_sub(1),
            ('a' | 'A', _, _, false, 0) => am_pm = true,
            ('p' | 'm' | '/' | 'P' | 'M', _, _, true, 0) => return NumberKind::Date,
            ('d' | 'm' | 'h' | 'y' | 's' | 'D' | 'M' | 'H' | 'Y' | 'S', _, _, false, 0) => {
                return NumberKind::Date
            }
            _ => {
                if !(elapsed && c.eq_ignore_ascii_case(&prev)) {
                    elapsed = prev == '[' && matches!(c, 'm' | 'h' | 's' | 'M' | 'H' | 'S');
                }
            }
        }
        prev = c;
    }
    NumberKind::Plain
}

/// An attribute's raw value by exact key.
fn attribute<'a>(e: &'a BytesStart<'_>, key: &[u8]) -> Option<&'a [u8]> {
    e.attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .map(|a| match a.value {
            std::borrow::Cow::Borrowed(v) => v,
            // Attributes of a borrowed start tag are borrowed.
            std::borrow::Cow::Owned(_) => &[][..],
        })
}

/// Appends the text of a string item (`<si>`, `<is>`) up to its end tag: plain `<t>` or
/// rich-text runs, without the phonetic guides (`<rPh>`).
fn read_rich_text<B: BufRead>(
    xml: &mut Reader<B>,
    buf: &mut Vec<u8>,
    out: &mut String,
    closing: &[u8],
) -> Result<(), PartError> {
    let mut phonetic = false;
    let mut in_text = false;
    loop {
        buf.clear();
        match xml
            .read_event_into(buf)
            .map_err(|e| PartError(e.to_string()))?
        {
            Event::Start(e) => match e.local_name().as_ref() {
                b"rPh" => phonetic = true,
                b"t" => in_text = !phonetic,
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                b"rPh" => phonetic = false,
                b"t" => in_text = false,
                name if name == closing => return Ok(()),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let text = t.xml10_content().map_err(|e| PartError(e.to_string()))?;
                push_unescaped_ooxml(out, &text);
            }
            Event::GeneralRef(r) if in_text => push_entity(out, &r)?,
            Event::Eof => {
                return Err(PartError(format!(
                    "ends inside <{}>",
                    String::from_utf8_lossy(closing)
                )))
            }
            _ => {}
        }
    }
}

/// `&amp;`, `&#233;`… as the character they stand for.
fn push_entity(out: &mut String, entity: &BytesRef<'_>) -> Result<(), PartError> {
    let name = entity.decode().map_err(|e| PartError(e.to_string()))?;
    if let Some(text) = resolve_xml_entity(&name) {
        out.push_str(text);
        return Ok(());
    }
    match entity.resolve_char_ref() {
        Ok(Some(c)) => {
            out.push(c);
            Ok(())
        }
        _ => Err(PartError(format!("unknown entity &{name};"))),
    }
}

/// Appends string-item text with Excel's `_x00HH_` escapes (control characters) decoded.
fn push_unescaped_ooxml(out: &mut String, text: &str) {
    if !text.contains("_x00") {
        out.push_str(text);
        return;
    }
    let mut rest = text;
    while let Some(at) = rest.find("_x00") {
        let escape = rest.get(at..at + 7).filter(|e| e.as_bytes()[6] == b'_');
        match escape.and_then(|e| u8::from_str_radix(&e[4..6], 16).ok()) {
            Some(byte) => {
                out.push_str(&rest[..at]);
                out.push(char::from(byte));
                rest = &rest[at + 7..];
            }
            None => {
                out.push_str(&rest[..at + 1]);
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
}

/// One cell's value; `'s` borrows the shared strings, `'b` the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Value<'s, 'b> {
    Empty,
    /// A shared string.
    Shared(&'s str),
    /// An inline string or a formula's text result.
    Text(&'b str),
    Number(f64),
    /// A number in a date style: an Excel serial date.
    Date(f64),
    /// A number in an elapsed-time style (`[h]:mm`).
    Duration(f64),
    Bool(bool),
    /// An error value (`#N/A`).
    Error(&'b str),
    /// An ISO 8601 date cell (`t="d"`).
    IsoDate(&'b str),
}

impl Value<'_, '_> {
    /// Empty or only whitespace.
    pub(super) fn is_blank(&self) -> bool {
        match self {
            Value::Empty => true,
            Value::Shared(s) => s.trim().is_empty(),
            Value::Text(s) => s.trim().is_empty(),
            _ => false,
        }
    }
}

/// A cell: 0-based sheet row and column, and its value.
#[derive(Debug)]
pub(super) struct Cell<'s, 'b> {
    pub row: u32,
    pub col: u32,
    pub value: Value<'s, 'b>,
}

/// The `t` attribute of a cell.
#[derive(Clone, Copy)]
enum CellType {
    Unset,
    Shared,
    Bool,
    Error,
    IsoDate,
    FormulaText,
    Inline,
    Number,
    Other,
}

/// Streams one worksheet's cells in the order they are written (row by row).
pub(super) struct SheetCells<'s, B: BufRead> {
    xml: Reader<B>,
    part: String,
    strings: &'s SharedStrings,
    styles: &'s [NumberKind],
    buf: Vec<u8>,
    inner: Vec<u8>,
    skip: Vec<u8>,
    /// The current cell's text (`<v>` or inline string).
    text: String,
    row: u32,
    col: u32,
}

impl<'s, B: BufRead> SheetCells<'s, B> {
    /// Moves to the sheet's `<sheetData>`; `None` if the part has none (a chart sheet, a
    /// dialog sheet).
    pub(super) fn open(
        mut xml: Reader<B>,
        part: &str,
        strings: &'s SharedStrings,
        styles: &'s [NumberKind],
    ) -> Result<Option<Self>, PartError> {
        let mut buf = Vec::with_capacity(1024);
        loop {
            match next_event(&mut xml, &mut buf, part)? {
                Event::Start(e) if e.local_name().as_ref() == b"sheetData" => break,
                Event::Eof => return Ok(None),
                _ => {}
            }
        }
        Ok(Some(Self {
            xml,
            part: part.to_string(),
            strings,
            styles,
            buf,
            inner: Vec::with_capacity(256),
            skip: Vec::new(),
            text: String::with_capacity(256),
            row: 0,
            col: 0,
        }))
    }

    /// The next written cell, or `None` after the last.
    pub(super) fn next_cell(&mut self) -> Result<Option<Cell<'s, '_>>, PartError> {
        loop {
            let event = next_event(&mut self.xml, &mut self.buf, &self.part)?;
            match event {
                Event::Start(e) => match e.local_name().as_ref() {
                    b"c" => {
                        let (position, style, kind) = cell_attributes(&e);
                        let (row, col) = match position {
                            Some(Ok(position)) => position,
                            Some(Err(())) => {
                                return Err(PartError(format!(
                                    "{}: row {}: a cell reference is not a cell",
                                    self.part,
                                    self.row + 1
                                )))
                            }
                            None => (self.row, self.col),
                        };
                        self.col = col + 1;
                        return self.read_value(row, col, style, kind).map(Some);
                    }
                    b"row" => {
                        if let Some(r) = attribute(&e, b"r") {
                            self.row =
                                parse_u32(r).and_then(|r| r.checked_sub(1)).ok_or_else(|| {
                                    PartError(format!(
                                        "{}: row number '{}' is not a row",
                                        self.part,
                                        String::from_utf8_lossy(r)
                                    ))
                                })?;
                        }
                        self.col = 0;
                    }
                    _ => {}
                },
                Event::End(e) => match e.local_name().as_ref() {
                    b"row" => {
                        self.row += 1;
                        self.col = 0;
                    }
                    b"sheetData" => return Ok(None),
                    _ => {}
                },
                Event::Eof => {
                    return Err(PartError(format!("{}: ends inside <sheetData>", self.part)))
                }
                _ => {}
            }
        }
    }

    /// Reads a cell's content up to `</c>` and makes its value.
    fn read_value(
        &mut self,
        row: u32,
        col: u32,
        style: Option<usize>,
        kind: CellType,
    ) -> Result<Cell<'s, '_>, PartError> {
        self.text.clear();
        // Whether the cell has a value (`<v>`) or an inline string (`<is>`); a cell with
        // only a style or a formula is empty.
        let mut content = None;
        let cell_ref = |row: u32, col: u32| cell_name(row, col);
        loop {
            let event = next_event(&mut self.xml, &mut self.inner, &self.part)?;
            match event {
                Event::Start(e) => match e.local_name().as_ref() {
                    b"v" => {
                        self.text.clear();
                        content = Some(b'v');
                        loop {
                            self.skip.clear();
                            match self.xml.read_event_into(&mut self.skip) {
                                Ok(Event::Text(t)) => {
                                    let text = t.xml10_content().map_err(|e| {
                                        xml_error(
                                            &self.part,
                                            format!("{}: {e}", cell_ref(row, col)),
                                        )
                                    })?;
                                    self.text.push_str(&text);
                                }
                                Ok(Event::GeneralRef(r)) => push_entity(&mut self.text, &r)
                                    .map_err(|e| {
                                        xml_error(
                                            &self.part,
                                            format!("{}: {e}", cell_ref(row, col)),
                                        )
                                    })?,
                                Ok(Event::End(_)) => break,
                                Ok(Event::Eof) => {
                                    return Err(xml_error(
                                        &self.part,
                                        format!("{}: ends inside <v>", cell_ref(row, col)),
                                    ))
                                }
                                Ok(_) => {}
                                Err(e) => return Err(xml_error(&self.part, e)),
                            }
                        }
                    }
                    b"is" => {
                        self.text.clear();
                        content = Some(b'i');
                        read_rich_text(&mut self.xml, &mut self.skip, &mut self.text, b"is")
                            .map_err(|e| {
                                xml_error(&self.part, format!("{}: {e}", cell_ref(row, col)))
                            })?;
                    }
                    _ => {
                        // A formula (`<f>`) or an extension: its text is not the value.
                        let name = e.name().as_ref().to_vec();
                        self.xml
                            .read_to_end_into(quick_xml::name::QName(&name), &mut self.skip)
                            .map_err(|e| xml_error(&self.part, e))?;
                    }
                },
                Event::End(e) if e.local_name().as_ref() == b"c" => break,
                Event::Eof => {
                    return Err(xml_error(
                        &self.part,
                        format!("{}: ends inside the cell", cell_ref(row, col)),
                    ))
                }
                _ => {}
            }
        }
        let text = self.text.as_str();
        let value = match (content, kind) {
            (None, _) => Value::Empty,
            (Some(b'i'), _) | (_, CellType::Inline) => Value::Text(text),
            (_, CellType::Shared) => {
                let index = text.trim().parse::<usize>().ok();
                match index.and_then(|i| self.strings.get(i)) {
                    Some(shared) => Value::Shared(shared),
                    None => {
                        return Err(xml_error(
                            &self.part,
                            format!(
                                "{}: shared string '{text}' does not exist (the workbook has {})",
                                cell_ref(row, col),
                                self.strings.len()
                            ),
                        ))
                    }
                }
            }
            (_, CellType::Bool) => Value::Bool(text != "0"),
            (_, CellType::Error) => Value::Error(text),
            (_, CellType::IsoDate) => Value::IsoDate(text),
            (_, CellType::FormulaText) => Value::Text(text),
            (_, CellType::Number) if text.is_empty() => Value::Empty,
            (_, CellType::Number | CellType::Unset) => match text.parse::<f64>() {
                Ok(number) => {
                    // No style is the default style; an unknown one is a plain number.
                    let number_kind = match style {
                        None => NumberKind::Plain,
                        Some(s) => self.styles.get(s).copied().unwrap_or(NumberKind::Plain),
                    };
                    match number_kind {
                        NumberKind::Plain => Value::Number(number),
                        NumberKind::Date => Value::Date(number),
                        NumberKind::Duration => Value::Duration(number),
                    }
                }
                Err(_) if matches!(kind, CellType::Unset) => Value::Text(text),
                Err(e) => {
                    return Err(xml_error(
                        &self.part,
                        format!("{}: '{text}' is not a number ({e})", cell_ref(row, col)),
                    ))
                }
            },
            (_, CellType::Other) => {
                return Err(xml_error(
                    &self.part,
                    format!("{}: unknown cell type", cell_ref(row, col)),
                ))
            }
        };
        Ok(Cell { row, col, value })
    }
}

/// A `<c>`'s position (`r`), style (`s`) and type (`t`), read in one pass.
#[allow(clippy::type_complexity)]
fn cell_attributes(
    e: &BytesStart<'_>,
) -> (Option<Result<(u32, u32), ()>>, Option<usize>, CellType) {
    let mut position = None;
    let mut style = None;
    let mut kind = CellType::Unset;
    for attr in e.attributes().with_checks(false).flatten() {
        match attr.key.as_ref() {
            b"r" => position = Some(cell_position(&attr.value).ok_or(())),
            b"s" => style = parse_u32(&attr.value).map(|s| s as usize),
            b"t" => {
                kind = match &*attr.value {
                    b"s" => CellType::Shared,
                    b"b" => CellType::Bool,
                    b"e" => CellType::Error,
                    b"d" => CellType::IsoDate,
                    b"str" => CellType::FormulaText,
                    b"inlineStr" => CellType::Inline,
                    b"n" => CellType::Number,
                    _ => CellType::Other,
                }
            }
            _ => {}
        }
    }
    (position, style, kind)
}

fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0u32, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

/// `B3` → (2, 1): 0-based row and column.
pub(super) fn cell_position(reference: &[u8]) -> Option<(u32, u32)> {
    let split = reference.iter().position(|b| b.is_ascii_digit())?;
    let (letters, digits) = reference.split_at(split);
    if letters.is_empty() || letters.len() > 3 {
        return None;
    }
    let mut col: u32 = 0;
    for b in letters {
        if !b.is_ascii_alphabetic() {
            return None;
        }
        col = col * 26 + u32::from(b.to_ascii_uppercase() - b'A' + 1);
    }
    let row = parse_u32(digits)?.checked_sub(1)?;
    Some((row, col - 1))
}

/// (2, 1) → `B3`, for messages.
pub(super) fn cell_name(row: u32, col: u32) -> String {
    let mut letters = Vec::new();
    let mut n = col + 1;
    while n > 0 {
        letters.push(b'A' + ((n - 1) % 26) as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    format!("{}{}", String::from_utf8_lossy(&letters), row + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet(xml: &str) -> Vec<(u32, u32, String)> {
        let strings = SharedStrings {
            text: "ab".into(),
            ends: vec![1, 2],
        };
        let styles = [NumberKind::Plain, NumberKind::Date, NumberKind::Duration];
        let mut reader = Reader::from_reader(xml.as_bytes());
        reader.config_mut().expand_empty_elements = true;
        let mut cells = SheetCells::open(reader, "sheet.xml", &strings, &styles)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        while let Some(cell) = cells.next_cell().unwrap() {
            out.push((cell.row, cell.col, format!("{:?}", cell.value)));
        }
        out
    }

    #[test]
    fn cells_without_references_follow_the_previous_cell_and_row() {
        let cells = sheet(
            r#"<worksheet><sheetData><row r="3"><c r="B3" t="s"><v>1</v></c><c t="s"><v>0</v></c></row><row><c><v>7</v></c></row></sheetData></worksheet>"#,
        );
        assert_eq!(
            cells,
            [
                (2, 1, "Shared(\"b\")".to_string()),
                (2, 2, "Shared(\"a\")".to_string()),
                (3, 0, "Number(7.0)".to_string()),
            ]
        );
    }

    #[test]
    fn values_take_their_type_and_style() {
        let cells = sheet(
            r#"<x:worksheet xmlns:x="urn"><x:sheetData><x:row r="1"><x:c r="A1" t="inlineStr"><x:is><x:r><x:t>Rich </x:t></x:r><x:r><x:t>A&amp;B_x000D_</x:t></x:r><x:rPh><x:t>ignored</x:t></x:rPh></x:is></x:c><x:c r="B1" s="1"><x:v>45355.5</x:v></x:c><x:c r="C1" s="2"><x:v>1.5</x:v></x:c><x:c r="D1" s="9"><x:v>2</x:v></x:c><x:c r="E1" t="b"><x:v>1</x:v></x:c><x:c r="F1" t="e"><x:v>#N/A</x:v></x:c><x:c r="G1" t="str"><x:f>A1</x:f><x:v>x</x:v></x:c><x:c r="H1" s="1"/><x:c r="I1" t="d"><x:v>2024-03-04T14:52:00</x:v></x:c><x:c r="J1"><x:v>text</x:v></x:c></x:row></x:sheetData></x:worksheet>"#,
        );
        let values: Vec<&str> = cells.iter().map(|c| c.2.as_str()).collect();
        assert_eq!(
            values,
            [
                "Text(\"Rich A&B\\r\")",
                "Date(45355.5)",
                "Duration(1.5)",
                "Number(2.0)",
                "Bool(true)",
                "Error(\"#N/A\")",
                "Text(\"x\")",
                "Empty",
                "IsoDate(\"2024-03-04T14:52:00\")",
                "Text(\"text\")",
            ]
        );
    }

    #[test]
    fn a_shared_string_index_past_the_end_names_the_cell() {
        let strings = SharedStrings::default();
        let xml = r#"<worksheet><sheetData><row r="4"><c r="C4" t="s"><v>5</v></c></row></sheetData></worksheet>"#;
        let mut reader = Reader::from_reader(xml.as_bytes());
        reader.config_mut().expand_empty_elements = true;
        let mut cells = SheetCells::open(reader, "xl/worksheets/sheet1.xml", &strings, &[])
            .unwrap()
            .unwrap();
        let err = cells.next_cell().unwrap_err().to_string();
        assert!(
            err.contains("xl/worksheets/sheet1.xml: C4: shared string '5' does not exist"),
            "{err}"
        );
    }

    #[test]
    fn a_part_without_sheet_data_is_not_a_worksheet() {
        let reader = Reader::from_reader(&b"<chartsheet><drawing/></chartsheet>"[..]);
        assert!(
            SheetCells::open(reader, "c.xml", &SharedStrings::default(), &[])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn custom_formats_are_dates_durations_or_numbers() {
        assert_eq!(custom_format_kind("yyyy-mm-dd hh:mm:ss"), NumberKind::Date);
        assert_eq!(custom_format_kind("DD/MM/YY"), NumberKind::Date);
        assert_eq!(custom_format_kind("[h]:mm:ss"), NumberKind::Duration);
        assert_eq!(custom_format_kind("0.00\"m\""), NumberKind::Plain);
        assert_eq!(
            custom_format_kind("#,##0\\ [$\\u20bd-46D]"),
            NumberKind::Plain
        );
        assert_eq!(builtin_format_kind(b"22"), NumberKind::Date);
        assert_eq!(builtin_format_kind(b"0"), NumberKind::Plain);
    }

    #[test]
    fn cell_references_and_names_round_trip() {
        for (row, col) in [(0, 0), (9, 26), (99_999, 701), (1_048_575, 16_383)] {
            assert_eq!(
                cell_position(cell_name(row, col).as_bytes()),
                Some((row, col))
            );
        }
        assert_eq!(cell_position(b"12"), None);
        assert_eq!(cell_position(b"A0"), None);
    }
}
