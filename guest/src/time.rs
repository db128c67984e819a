//! The platform's timestamps (microseconds since the Unix epoch, UTC) as text.

use chrono::{DateTime, SecondsFormat};

/// RFC 3339 UTC with milliseconds, as the platform writes times
/// (`2026-01-01T00:00:00.000Z`); `None` beyond what a calendar date can hold.
pub fn rfc3339_millis(micros: i64) -> Option<String> {
    DateTime::from_timestamp_micros(micros).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// RFC 3339 UTC: milliseconds when the time has no finer part (the platform's case), else
/// microseconds, so that no precision is lost either way; `None` beyond what a calendar
/// date can hold.
pub fn rfc3339(micros: i64) -> Option<String> {
    let format = if micros.rem_euclid(1000) == 0 {
        SecondsFormat::Millis
    } else {
        SecondsFormat::Micros
    };
    DateTime::from_timestamp_micros(micros).map(|t| t.to_rfc3339_opts(format, true))
}

/// The UTC calendar day, `YYYY-MM-DD`; `None` beyond what a calendar date can hold.
pub fn day(micros: i64) -> Option<String> {
    DateTime::from_timestamp_micros(micros).map(|t| t.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    #[test]
    fn times_format_as_the_platform_writes_them() {
        assert_eq!(rfc3339_millis(T0).unwrap(), "2026-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(T0 + 86_399_123_456).unwrap(),
            "2026-01-01T23:59:59.123Z"
        );
        assert_eq!(rfc3339_millis(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(T0 + 5_000).unwrap(), "2026-01-01T00:00:00.005Z");
        assert_eq!(rfc3339(T0 + 5).unwrap(), "2026-01-01T00:00:00.000005Z");
        assert_eq!(day(T0 + 86_400_000_000).unwrap(), "2026-01-02");
        assert_eq!(day(0).unwrap(), "1970-01-01");
        assert_eq!(day(951_782_400_000_000).unwrap(), "2000-02-29");
        assert_eq!(day(-1).unwrap(), "1969-12-31");
        assert_eq!(rfc3339_millis(i64::MAX), None);
    }
}
