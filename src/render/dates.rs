//! Dates shown to people, in the message's language (`7 mars 2024`, `7 March 2024`).

use chrono::{Datelike, NaiveDate};

const FR_MONTHS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];
const EN_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Formats a date for a language; unknown languages get English.
pub fn format_date(date: NaiveDate, language: &str) -> String {
    let month = date.month0() as usize;
    match language {
        "fr" => {
            let day = if date.day() == 1 {
                "1er".to_string()
            } else {
                date.day().to_string()
            };
            format!("{day} {} {}", FR_MONTHS[month], date.year())
        }
        _ => format!("{} {} {}", date.day(), EN_MONTHS[month], date.year()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_dates_use_french_month_names() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 7).unwrap();
        assert_eq!(format_date(d, "fr"), "7 mars 2024");
        assert_eq!(
            format_date(NaiveDate::from_ymd_opt(2024, 8, 1).unwrap(), "fr"),
            "1er août 2024"
        );
    }

    #[test]
    fn english_dates_use_english_month_names() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 7).unwrap();
        assert_eq!(format_date(d, "en"), "7 March 2024");
    }
}
