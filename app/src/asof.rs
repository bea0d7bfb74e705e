//! [`AsOf`]: a point of the books, as every adapter reads it from text.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::Failure;

/// A point of the books: now, a global position (the events before it), or a business time
/// (the entries of events that happened at or before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AsOf {
    /// Everything recorded.
    Now,
    /// The events before this global position.
    Position(u64),
    /// The entries of events that happened at or before this business time.
    Time(DateTime<FixedOffset>),
}

impl AsOf {
    /// A position (whole number) or an RFC 3339 time; `field` names the parameter in errors.
    pub fn parse(text: &str, field: &str) -> Result<AsOf, Failure> {
        if let Ok(p) = text.parse::<u64>() {
            return Ok(AsOf::Position(p));
        }
        let time = DateTime::parse_from_rfc3339(text).map_err(|_| {
            Failure::invalid(
                "invalid_as_of",
                format!("{field} {text:?} is neither a position nor an RFC 3339 time like 2026-11-25T23:59:59+08:00"),
            )
            .field(field)
        })?;
        if !crate::dates::in_years(time.date_naive()) || !crate::dates::in_years(time.to_utc().date_naive()) {
            return Err(Failure::invalid(
                "invalid_as_of",
                format!(
                    "{field} {text} is outside the years {} to {}",
                    crate::dates::DATE_YEAR_MIN,
                    crate::dates::DATE_YEAR_END - 1
                ),
            )
            .field(field));
        }
        Ok(AsOf::Time(time))
    }

    /// [`AsOf::parse`] of an optional text: `Now` when absent.
    pub fn parse_optional(text: Option<&str>, field: &str) -> Result<AsOf, Failure> {
        text.map_or(Ok(AsOf::Now), |t| AsOf::parse(t, field))
    }
}
