//! Dates as exports write them: ISO 8601, Excel serial numbers, and the console's
//! `Mar 4, 2024 2:52 PM`.
//!
//! A date or time without a zone (the console's list view, a French Excel's `04/03/2024
//! 14:52`, Excel date cells, which have no zone at all) is a wall time: it is read in the
//! zone the caller gives, `REMINDERS_TIME_ZONE` for a run. A web console shows times in the
//! viewer's zone, so reading them as UTC would move an issue seen at 23:30 in Paris to the
//! next day, and its deadline and stage with it.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// [`parse_date_in`] with zone-less times read as UTC.
pub fn parse_date(raw: &str) -> Option<DateTime<Utc>> {
    parse_date_in(raw, Tz::UTC)
}

/// Reads a date-time in any of the export formats; a date or time without a zone is a wall
/// time in `zone`, a date alone is its midnight there.
///
/// Returns `None` for empty text, `-` (the list view's "not resolved") and anything else
/// that is not a valid date (`31/02/2024` included).
pub fn parse_date_in(raw: &str, zone: Tz) -> Option<DateTime<Utc>> {
    let text = raw.trim();
    if text.is_empty() || text == "-" {
        return None;
    }
    if let Some((wall, utc)) = plain_iso(text) {
        return Some(if utc {
            wall.and_utc()
        } else {
            wall_time_in(wall, zone)
        });
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
            return Some(wall_time_in(dt, zone));
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
            return Some(wall_time_in(d.and_hms_opt(0, 0, 0)?, zone));
        }
    }
    let serial: f64 = text.parse().ok()?;
    Some(wall_time_in(excel_serial_value(serial)?, zone))
}

/// The commonest spellings, read without a format string (chrono parses its format string
/// again on every call, and an export has one or two dates per row): `2024-03-04T14:52:00`
/// (what an Excel date cell becomes) and `2024-03-04T14:52:00Z` (the CSV export). `true`
/// with a `Z`. Anything else (fractions, offsets, a space) goes the general way.
fn plain_iso(text: &str) -> Option<(NaiveDateTime, bool)> {
    let b = text.as_bytes();
    let utc = match b.len() {
        19 => false,
        20 if b[19] == b'Z' || b[19] == b'z' => true,
        _ => return None,
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(number(0, 4)? as i32, number(5, 7)?, number(8, 10)?)?;
    // 23:59:60 (a leap second) is left to chrono's parser.
    let wall = date.and_hms_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?)?;
    Some((wall, utc))
}

/// The instant a wall time in `zone` stands for. In the hour repeated when clocks go back,
/// the first of the two; in the hour skipped when they go forward (a time no clock showed),
/// the offset in force at that instant read as UTC, so the row is still used.
pub fn wall_time_in(wall: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&wall).earliest() {
        Some(at) => at.with_timezone(&Utc),
        None => (wall - zone.offset_from_utc_datetime(&wall).fix()).and_utc(),
    }
}

/// Converts an Excel serial number (days since 1899-12-30, fraction = time of day) to the
/// wall time it shows. Only plausible dates (1990–2200) are accepted so that an id or a count
/// in the wrong column is not taken for a date.
pub fn excel_serial_value(serial: f64) -> Option<NaiveDateTime> {
    if !(32_874.0..=110_000.0).contains(&serial) || !serial.is_finite() {
        return None;
    }
    let epoch = NaiveDate::from_ymd_opt(1899, 12, 30)?.and_hms_opt(0, 0, 0)?;
    let millis = (serial * 86_400_000.0).round() as i64;
    epoch.checked_add_signed(chrono::Duration::milliseconds(millis))
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
    fn zone_less_times_are_wall_times_in_the_given_zone() {
        let paris = chrono_tz::Europe::Paris;
        // Winter (UTC+1) and summer (UTC+2).
        assert_eq!(
            iso(parse_date_in("Mar 4, 2024 11:30 PM", paris).unwrap()),
            "2024-03-04T22:30:00Z"
        );
        assert_eq!(
            iso(parse_date_in("04/07/2024 23:30", paris).unwrap()),
            "2024-07-04T21:30:00Z"
        );
        assert_eq!(
            iso(parse_date_in("2024-03-04", paris).unwrap()),
            "2024-03-03T23:00:00Z"
        );
        assert_eq!(
            iso(parse_date_in("45355.6194444444", paris).unwrap()),
            "2024-03-04T13:52:00Z"
        );
        let new_york = chrono_tz::America::New_York;
        assert_eq!(
            iso(parse_date_in("Mar 4, 2024 9:00 PM", new_york).unwrap()),
            "2024-03-05T02:00:00Z"
        );
    }

    #[test]
    fn times_with_a_zone_ignore_the_given_zone() {
        let paris = chrono_tz::Europe::Paris;
        assert_eq!(
            iso(parse_date_in("2024-03-04T23:30:00Z", paris).unwrap()),
            "2024-03-04T23:30:00Z"
        );
        assert_eq!(
            iso(parse_date_in("2024-03-04T23:30:00-05:00", paris).unwrap()),
            "2024-03-05T04:30:00Z"
        );
    }

    #[test]
    fn wall_times_in_the_daylight_saving_changes_are_still_read() {
        let paris = chrono_tz::Europe::Paris;
        // 2024-10-27: 02:30 happens twice (CEST, then CET); the first is taken.
        assert_eq!(
            iso(parse_date_in("2024-10-27 02:30", paris).unwrap()),
            "2024-10-27T00:30:00Z"
        );
        // 2024-03-31: 02:30 never happens (02:00 → 03:00); the row is not lost.
        let skipped = parse_date_in("2024-03-31 02:30", paris).unwrap();
        assert!(
            ["2024-03-31T00:30:00Z", "2024-03-31T01:30:00Z"].contains(&iso(skipped).as_str()),
            "{skipped}"
        );
    }

    #[test]
    fn the_plain_iso_shortcut_reads_what_the_general_way_reads() {
        let paris = chrono_tz::Europe::Paris;
        for text in [
            "2024-03-04T14:52:00",
            "2024-03-04T14:52:00Z",
            "2024-03-04T14:52:00z",
            "2024-10-27T02:30:00",
            "2024-03-31T02:30:00",
            "2024-02-29T23:59:59",
            "2023-02-29T10:00:00",
            "2024-13-01T10:00:00",
            "2024-03-04T24:00:00",
            "2024-03-04T14:52:60Z",
            "2024-03-04 14:52:00",
            "2024-03-04T14:52:0Z",
            "+024-03-04T14:52:00",
        ] {
            for zone in [Tz::UTC, paris] {
                let general = match DateTime::parse_from_rfc3339(text) {
                    Ok(dt) => Some(dt.with_timezone(&Utc)),
                    Err(_) => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
                        .ok()
                        .map(|wall| wall_time_in(wall, zone)),
                };
                let shortcut = plain_iso(text).map(|(w, utc)| {
                    if utc {
                        w.and_utc()
                    } else {
                        wall_time_in(w, zone)
                    }
                });
                if shortcut.is_some() {
                    assert_eq!(shortcut, general, "{text} in {zone}");
                }
                if general.is_some() {
                    assert_eq!(parse_date_in(text, zone), general, "{text} in {zone}");
                }
            }
        }
        assert_eq!(
            plain_iso("2024-03-04T14:52:00").map(|(_, utc)| utc),
            Some(false)
        );
        assert_eq!(
            plain_iso("2024-03-04T14:52:00Z").map(|(_, utc)| utc),
            Some(true)
        );
        assert_eq!(plain_iso("2024-02-30T10:00:00"), None);
        assert_eq!(parse_date("2024-02-30T10:00:00"), None);
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
