//! Dates as every adapter reads them, and the one reading of the clock the use cases make:
//! a business date that has not begun cannot be settled or closed.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Utc};

use crate::Failure;

/// The earliest year a date parameter may name (as business times: `ingest::fields`).
pub const DATE_YEAR_MIN: i32 = ingest::fields::TIME_YEAR_MIN;
/// The first year a date parameter may no longer name.
pub const DATE_YEAR_END: i32 = ingest::fields::TIME_YEAR_END;
/// The business time zone's offset from UTC, in seconds (China Standard Time, UTC+08:00): the
/// zone "today" is reckoned in when a date is held against the clock.
pub const BUSINESS_UTC_OFFSET_SECONDS: i32 = 8 * 3600;

/// Whether a date lies in the years every date parameter is bounded by.
pub fn in_years(date: NaiveDate) -> bool {
    (DATE_YEAR_MIN..DATE_YEAR_END).contains(&date.year())
}

/// A `YYYY-MM-DD` date in [`DATE_YEAR_MIN`]..[`DATE_YEAR_END`]; `field` names the parameter.
pub fn parse_date(text: &str, field: &str) -> Result<NaiveDate, Failure> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|_| text.len() == 10)
        .ok_or_else(|| Failure::invalid("invalid_date", format!("{field} {text:?} is not a date (YYYY-MM-DD)")))
        .map_err(|f| f.field(field))?;
    if !in_years(date) {
        return Err(Failure::invalid(
            "invalid_date",
            format!("{field} {text} is outside the years {DATE_YEAR_MIN} to {}", DATE_YEAR_END - 1),
        )
        .field(field));
    }
    Ok(date)
}

/// [`parse_date`] for clap's `value_parser`.
pub fn date_arg(text: &str) -> Result<NaiveDate, String> {
    parse_date(text, "the date").map_err(|f| f.message)
}

/// The business date at `now`, in the business time zone.
pub fn business_today(now: DateTime<Utc>) -> NaiveDate {
    FixedOffset::east_opt(BUSINESS_UTC_OFFSET_SECONDS)
        .map_or_else(|| now.date_naive(), |zone| now.with_timezone(&zone).date_naive())
}

/// Refuses a date after today in the business time zone: settling it would pay a day before it
/// happened and move the paid-through mark past every day still to come, in a log that cannot
/// take it back.
pub fn not_after_today(date: NaiveDate, now: DateTime<Utc>, what: &str, field: &str) -> Result<(), Failure> {
    let today = business_today(now);
    if date > today {
        return Err(Failure::invalid(
            "date_in_future",
            format!(
                "{what} for {date} is refused: today is {today} (UTC{:+03}:00); a day is settled once it has begun",
                BUSINESS_UTC_OFFSET_SECONDS / 3600
            ),
        )
        .field(field));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_bounded_and_exact() {
        assert_eq!(
            parse_date("2026-11-24", "date").map_err(|f| f.message),
            Ok(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap_or_default())
        );
        for bad in
            ["-262143-01-01", "+262142-12-31", "1999-12-31", "2100-01-01", "2026-11-24x", "2026-2-3", "", "20261124"]
        {
            let f = parse_date(bad, "date").expect_err(bad);
            assert_eq!((f.code.as_str(), f.field.as_deref()), ("invalid_date", Some("date")), "{bad}: {}", f.message);
        }
    }

    #[test]
    fn today_is_reckoned_in_the_business_zone() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T16:30:00Z").unwrap_or_default().to_utc();
        // 00:30 on the 5th in UTC+08:00.
        assert_eq!(business_today(now), NaiveDate::from_ymd_opt(2026, 12, 5).unwrap_or_default());
        let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap_or_default();
        assert!(not_after_today(day(5), now, "a settlement", "date").is_ok());
        assert!(not_after_today(day(4), now, "a settlement", "date").is_ok());
        let f = not_after_today(day(6), now, "a settlement", "date").expect_err("tomorrow");
        assert_eq!(f.code, "date_in_future");
        assert!(f.message.contains("today is 2026-12-05 (UTC+08:00)"), "{}", f.message);
    }
}
