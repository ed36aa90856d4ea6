//! Dates as exports write them: ISO 8601, Excel serial numbers, and the console's
//! `Mar 4, 2024 2:52 PM`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Reads a date-time in any of the export formats; a date or time without a zone is UTC.
///
/// Returns `None` for empty text, `-` (the list view's "not resolved") and anything else
/// that is not a valid date (`31/02/2024` included).
pub fn parse_date(raw: &str) -> Option<DateTime<Utc>> {
    let text = raw.trim();
    if text.is_empty() || text == "-" {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.with_timezone(&Utc));
    }
    const NAIVE: [&str; 8] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
        "%b %d, %Y %I:%M %p",
        "%B %d, %Y %I:%M %p",
        "%d/%m/%Y %H:%M:%S",
        "%d/%m/%Y %H:%M",
    ];
    for fmt in NAIVE {
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(Utc.from_utc_datetime(&dt));
        }
    }
    // `2024-03-04T14:52:00 +01:00` style offsets that RFC 3339 does not accept.
    for fmt in ["%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(text, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%d", "%b %d, %Y", "%B %d, %Y", "%d/%m/%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(text, fmt) {
            return Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
        }
    }
    excel_serial(text)
}

/// Excel's serial date (days since 1899-12-30, fraction = time of day), as a number or text.
pub fn excel_serial(text: &str) -> Option<DateTime<Utc>> {
    let serial: f64 = text.parse().ok()?;
    excel_serial_value(serial)
}

/// Converts an Excel serial number. Only plausible dates (1990–2200) are accepted so that
/// an id or a count in the wrong column is not taken for a date.
pub fn excel_serial_value(serial: f64) -> Option<DateTime<Utc>> {
    if !(32_874.0..=110_000.0).contains(&serial) || !serial.is_finite() {
        return None;
    }
    let epoch = NaiveDate::from_ymd_opt(1899, 12, 30)?.and_hms_opt(0, 0, 0)?;
    let millis = (serial * 86_400_000.0).round() as i64;
    let dt = epoch.checked_add_signed(chrono::Duration::milliseconds(millis))?;
    Some(Utc.from_utc_datetime(&dt))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(d: DateTime<Utc>) -> String {
        d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    #[test]
    fn iso_8601_with_zulu_is_read() {
        assert_eq!(
            iso(parse_date("2023-11-28T14:38:56Z").unwrap()),
            "2023-11-28T14:38:56Z"
        );
    }

    #[test]
    fn iso_8601_with_offset_is_converted_to_utc() {
        assert_eq!(
            iso(parse_date("2024-03-04T15:52:00+01:00").unwrap()),
            "2024-03-04T14:52:00Z"
        );
    }

    #[test]
    fn console_dates_are_read() {
        assert_eq!(
            iso(parse_date("Mar 4, 2024 2:52 PM").unwrap()),
            "2024-03-04T14:52:00Z"
        );
        assert_eq!(
            iso(parse_date("Jan 22, 2024 7:58 AM").unwrap()),
            "2024-01-22T07:58:00Z"
        );
    }

    #[test]
    fn excel_serials_are_read() {
        // 45355.619444 = 2024-03-04 14:52
        assert_eq!(
            iso(parse_date("45355.6194444444").unwrap()),
            "2024-03-04T14:52:00Z"
        );
    }

    #[test]
    fn impossible_dates_and_dashes_are_not_dates() {
        assert_eq!(parse_date("31/02/2024"), None);
        assert_eq!(parse_date("-"), None);
        assert_eq!(parse_date(""), None);
        assert_eq!(parse_date("12"), None);
        assert_eq!(parse_date("yesterday"), None);
    }
}
